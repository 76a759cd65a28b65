"""`mailhost render`: every file that would be pushed and every record that would be published.

Reads the stack file only (no AWS, no host, no secrets): secret files show placeholders,
and addresses that only a deploy can know (EC2) show documentation placeholders.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer

from mailhost.publish import plan, render
from mailhost.publish.stack import load_stack_file, stack_file
from mailhost.settings.config import ConfigError, Settings

PLACEHOLDER_DKIM_P = "GENERATED-AT-DEPLOY"


MARKER = ".mailhost-render"  # names a directory this command wrote, so it may replace it whole


class OutDirError(Exception):
    """--out cannot be written safely; the message says why and what to give instead."""


def prepare_out(out: Path) -> None:
    """A fresh OUT: refuse links and foreign content; an earlier render is replaced whole, never merged."""
    if out.is_symlink():
        raise OutDirError(f"{out} is a symbolic link; give the real directory, so nothing is written elsewhere")
    if out.exists():
        if not out.is_dir():
            raise OutDirError(f"{out} is not a directory; give a new or empty directory")
        marker = out / MARKER
        if any(out.iterdir()) and (marker.is_symlink() or not marker.is_file()):
            raise OutDirError(f"{out} is not empty and holds no earlier render ({MARKER}); give a new or empty "
                              "directory")
        shutil.rmtree(out)  # removes links inside, never what they point to
    out.mkdir(mode=0o755, parents=True)
    _write(out / MARKER, "written by `mailhost render`; the next render replaces this directory\n", 0o644)


def _write(target: Path, content: str, mode: int) -> None:
    """Create a new file only: never through a link, never over something already there."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chmod(target, mode)


def write_tree(settings: Settings, out: Path, stack: str) -> list[Path]:
    """Write OUT/<host>/<absolute path> for each file, OUT/<host>/scripts/*, OUT/dns.zone into a fresh OUT."""
    prepare_out(out)
    written = []
    for host in settings.hosts:
        base = out / host.name
        for f in render.render_host(settings, host, render.PLACEHOLDERS, stack):
            target = base / f.path.lstrip("/")
            _write(target, f.content, 0o600 if f.secret else 0o644)
            written.append(target)
        for name in ("apply.sh", "teardown.sh"):
            target = base / "scripts" / name
            _write(target, render.script(name), 0o644)
            written.append(target)
    addresses = plan.placeholder_addresses(settings)
    header = [f"; DNS records of stack {stack} for {settings.domain}"]
    for host in settings.hosts:
        if host.ec2:
            a = addresses[host.name]
            header.append(f"; {host.name} is on EC2: {a.ipv4}{' / ' + a.ipv6 if a.ipv6 else ''} stand in for its "
                          "Elastic IP and IPv6, known after deploy; its IPv4 PTR is set on the Elastic IP")
        header.append(f"; {host.name}: Postfix inet_protocols = {plan.inet_protocols(settings, host)}")
    header.append("; DKIM public keys are generated at deploy (p=GENERATED-AT-DEPLOY)")
    zone = out / "dns.zone"
    dkim = {host.name: PLACEHOLDER_DKIM_P for host in settings.hosts}
    _write(zone, "\n".join(header) + "\n" + plan.zone_text(settings, addresses, dkim), 0o644)
    written.append(zone)
    return written


def register(app: typer.Typer) -> None:
    @app.command("render")
    def render_command(
        stack: str = typer.Option(..., "--stack", help="stack name (reads Pulumi.<stack>.yaml) or a stack file path"),
        out: Path = typer.Option(..., "--out", help="directory to write the files into"),
        project_dir: Path = typer.Option(Path("."), "--project-dir", help="where Pulumi.<stack>.yaml lives"),
    ) -> None:
        """Write every file that would be pushed and every DNS record that would be published."""
        path = stack_file(stack, project_dir)
        try:
            settings = load_stack_file(path, require_secrets=False)
        except ConfigError as error:
            typer.echo(f"{path}: {error}", err=True)
            raise typer.Exit(2) from None
        name = path.name.removeprefix("Pulumi.").removesuffix(".yaml")
        try:
            files = write_tree(settings, out, name)
        except OutDirError as error:
            typer.echo(f"--out: {error}", err=True)
            raise typer.Exit(2) from None
        for f in files:
            typer.echo(str(f))
