"""`mailhost canary`: does Jira's mail reach the inbox?  A probe from each host to each mailbox of
`canary.mailboxes`, read back over IMAP: inbox, Junk or missing, with the receiver's verdicts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from mailhost.canary import export
from mailhost.canary.causes import UNREACHABLE
from mailhost.canary.run import run
from mailhost.ops.hosts import StatusInputError, admin_key, load_stack, read_outputs, targets
from mailhost.publish.mailstats import write_atomic
from mailhost.reports.credential import secret_from
from mailhost.settings.config import CanaryMailbox, Settings


def _addresses(settings: Settings, outputs: dict[str, object] | None) -> dict[str, list[str]]:
    """Every address each host may send from, to find the hop from it in the receiver's Received lines."""
    found: dict[str, list[str]] = {}
    hosts = outputs.get("hosts") if isinstance(outputs, dict) else None
    for host in settings.hosts:
        out = hosts.get(host.name) if isinstance(hosts, dict) else None
        values = [out.get("ipv4"), out.get("ipv6")] if isinstance(out, dict) else []
        if host.existing is not None:
            values += [host.existing.ipv4, host.existing.ipv6]
        found[host.name] = sorted({str(v) for v in values if isinstance(v, str) and v})
    return found


def canary(
    stack: Annotated[str, typer.Option(help="stack name (Pulumi.NAME.yaml) or a stack file: canary.mailboxes")],
    outputs: Annotated[Path | None, typer.Option(help="`pulumi stack output --json` (EC2 hosts)")] = None,
    key: Annotated[Path | None, typer.Option(help="the admin SSH private key (default: the SSH agent)")] = None,
    wait: Annotated[float, typer.Option("--timeout", min=5, max=3600, help="seconds to wait for the probes")] = 300,
    late: Annotated[float, typer.Option(min=1, max=3600, help="a probe slower than this is late (exit 1)")] = 120,
    keep: Annotated[bool, typer.Option(help="leave the probes in the mailboxes")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
    metrics: Annotated[Path | None, typer.Option(help="write node_exporter textfile metrics here")] = None,
) -> None:
    """Send a probe through each host to each canary mailbox and see where it lands, with the verdicts.

    Exit code: 0 inbox everywhere, 1 late, 2 junk, missing or an authentication failure, 3 unreachable."""
    try:
        settings = load_stack(stack)
        boxes = settings.canary.mailboxes
        if not boxes:
            raise StatusInputError("the stack has no canary.mailboxes: add at least one (address, imapHost, user, "
                                   "passwordCommand or tokenCommand); see the README, 'Does the mail reach the inbox?'")
        if settings.rerouted:
            astray = [b.address for b in boxes if b.address != settings.reroute_to]
            if astray:
                raise StatusInputError(f"this stack reroutes all mail to {settings.reroute_to}, so a probe to "
                                       f"{', '.join(astray)} would land there: make that mailbox the canary's, or "
                                       "run the canary on a stack that mails real users")
        data = read_outputs(outputs) if outputs else None
        found = targets(data, settings, Path(stack).stem.removeprefix("Pulumi."))
        secret = admin_key(key)
    except StatusInputError as error:
        typer.echo(f"mailhost canary: {error}", err=True)
        raise typer.Exit(UNREACHABLE) from None

    def secret_for(box: CanaryMailbox) -> str:
        index = boxes.index(box)
        field = "tokenCommand" if box.token_command else "passwordCommand"
        return secret_from(str(box.token_command or box.password_command), f"canary.mailboxes[{index}].{field}")

    results = run(found, _addresses(settings, data), boxes, settings.sender, settings.domain, secret, secret_for,
                  wait, keep)
    now = time.time()
    if metrics is not None:
        write_atomic(str(metrics), export.metrics(results, late, now, export.previous_successes(metrics)))
    if as_json:
        typer.echo(json.dumps(export.as_data(results, settings.domain, late), indent=2))
    else:
        for line in export.text_lines(results, settings.domain, late):
            typer.echo(line)
    raise typer.Exit(max((r.code(late) for r in results), default=0))


def register(app: typer.Typer) -> None:
    app.command("canary")(canary)
