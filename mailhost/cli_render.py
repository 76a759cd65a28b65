"""`mailhost render`: every file that would be pushed and every record that would be published.

Reads the stack file only (no AWS, no host, no secrets): secret files show placeholders,
and addresses that only a deploy can know (EC2) show documentation placeholders.
"""

from __future__ import annotations

from pathlib import Path

import typer

from mailhost import plan, render
from mailhost.config import ConfigError, Settings, load_stack_file, stack_file

PLACEHOLDER_DKIM_P = "GENERATED-AT-DEPLOY"


def placeholder_addresses(settings: Settings) -> dict[str, plan.Addresses]:
    """Known addresses for adopted hosts; 192.0.2.x / 2001:db8::x stand-ins for EC2 ones."""
    out = plan.stated_addresses(settings)
    for index, host in enumerate(settings.hosts, start=1):
        if host.name not in out:
            ipv6 = f"2001:db8::{index}" if settings.has_ipv6(host) else None
            out[host.name] = plan.Addresses(f"192.0.2.{index}", ipv6)
    return out


def write_tree(settings: Settings, out: Path, stack: str) -> list[Path]:
    """Write OUT/<host>/<absolute path> for each file, OUT/<host>/scripts/*, OUT/dns.zone."""
    written = []
    for host in settings.hosts:
        base = out / host.name
        for f in render.render_host(settings, host, render.PLACEHOLDERS, stack):
            target = base / f.path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.content)
            target.chmod(0o600 if f.secret else 0o644)
            written.append(target)
        for name in ("apply.sh", "teardown.sh"):
            target = base / "scripts" / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(render.script(name))
            written.append(target)
    addresses = placeholder_addresses(settings)
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
    zone.write_text("\n".join(header) + "\n" + plan.zone_text(settings, addresses, dkim))
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
        files = write_tree(settings, out, name)
        for f in files:
            typer.echo(str(f))
