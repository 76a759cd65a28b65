"""`mailhost status`: is mail leaving each host, what is stuck and why, and has anyone hand-edited it.

Read-only, over SSH with the pinned host key (mailhost/ops/hosts.py does the asking).
Where the hosts are: `--outputs FILE` (`pulumi stack output --json > FILE`: addresses and
host keys of every host, EC2 ones included) and/or `--stack NAME` (the stack file: adopted
hosts' addresses, and the files the stack would push, to tell "changed on the host" from
"not pushed yet").  No Pulumi CLI and no AWS credentials are needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mailhost.ops.hosts import StatusInputError, admin_key, load_stack, read_outputs, run_status, targets
from mailhost.ops.status import UNREACHABLE
from mailhost.settings.config import Settings


def status(
    stack: Annotated[str | None, typer.Option(help="stack name (Pulumi.NAME.yaml) or a stack file")] = None,
    outputs: Annotated[Path | None, typer.Option(help="`pulumi stack output --json` of the stack")] = None,
    key: Annotated[Path | None, typer.Option(help="the admin SSH private key (default: the SSH agent)")] = None,
    hours: Annotated[float, typer.Option(min=0.1, max=24 * 31, help="how far back to read the mail log")] = 24.0,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
    reports_db: Annotated[Path | None, typer.Option(
        help="DMARC report database of `mailhost reports` (default: its per-user one, when it exists)")] = None,
) -> None:
    """Mail on each host: daemons, queue, drift, deliveries and their causes with fixes.

    Exit code: 0 ok, 1 warning, 2 critical, 3 a host unreachable."""
    try:
        settings = load_stack(stack) if stack else None
        data = read_outputs(outputs) if outputs else None
        found = targets(data, settings, Path(stack).stem.removeprefix("Pulumi.") if stack else "")
        secret = admin_key(key)
    except StatusInputError as error:
        typer.echo(f"mailhost status: {error}", err=True)
        raise typer.Exit(UNREACHABLE) from None
    dmarc = _dmarc(reports_db, data, settings)
    raise typer.Exit(run_status(found, secret, hours, as_json, typer.echo, dmarc))


def _dmarc(db: Path | None, outputs: dict[str, Any] | None, settings: Settings | None
           ) -> tuple[dict[str, Any], list[str]] | None:
    """The report database's word on unknown senders and the ramp, when there is a database."""
    from mailhost.publish.plan import expected_from_settings
    from mailhost.records.expected import ExpectedError, expected_from_outputs
    from mailhost.reports import brief, store
    from mailhost.verify.dnsquery import ResolverSpec

    try:
        expected = expected_from_outputs(outputs) if outputs else expected_from_settings(settings) if settings \
            else None
    except ExpectedError:
        expected = None
    if expected is None:
        return None
    data = brief.brief(db or store.default_db(), expected, ResolverSpec(timeout=3.0))
    return None if data is None else (data, brief.lines(data))


def register(app: typer.Typer) -> None:
    app.command("status")(status)
