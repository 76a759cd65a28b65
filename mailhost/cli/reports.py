"""`mailhost reports`: read DMARC aggregate reports, keep them, and say who sends as the domain.

Sources: `--dir` (saved report files: XML, .gz, .zip or whole mails) and/or an IMAP mailbox
(`--imap-host`, `--imap-user`, and `--password-command` or `--token-command`).  The stack
(`--outputs` or `--stack`) gives the domain, the policy and our hosts' addresses.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from mailhost.cli.verify import UsageError, _from_outputs, _from_stack
from mailhost.ops.status import shown
from mailhost.publish.mailstats import write_atomic
from mailhost.records.expected import ExpectedError
from mailhost.reports import export, ingest, judge, store
from mailhost.reports.credential import CredentialError, secret_from
from mailhost.reports.mailbox import Account, MailboxError, connect
from mailhost.reports.sources import summarize
from mailhost.verify.dnsquery import ResolverSpec

OK, WARNING, CRITICAL, UNREACHABLE = 0, 1, 2, 3


def reports(
    stack: Annotated[str | None, typer.Option(help="stack name (Pulumi.NAME.yaml) or a stack file")] = None,
    outputs: Annotated[str | None, typer.Option(help="`pulumi stack output --json` of the stack")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="a directory of saved reports")] = None,
    imap_host: Annotated[str | None, typer.Option(help="IMAP server of the report mailbox (TLS, port 993)")] = None,
    imap_port: Annotated[int, typer.Option(min=1, max=65535, help="IMAP port (implicit TLS)")] = 993,
    imap_user: Annotated[str | None, typer.Option(help="login of the report mailbox")] = None,
    folder: Annotated[str, typer.Option(help="folder the reports arrive in")] = "INBOX",
    password_command: Annotated[str | None, typer.Option(help="command printing the mailbox password")] = None,
    token_command: Annotated[str | None, typer.Option(help="command printing an OAuth2 access token")] = None,
    cafile: Annotated[Path | None, typer.Option(help="CA certificate for the IMAP server (default: system)")] = None,
    db: Annotated[Path | None, typer.Option(
        help="report database (default: jira-mailhost/dmarc-reports.sqlite in $XDG_STATE_HOME or ~/.local/state)",
    )] = None,
    days: Annotated[float, typer.Option(min=1, max=366, help="the window summarized, in days")] = 14,
    nameserver: Annotated[list[str] | None, typer.Option(help="DNS server for SPF (repeatable)")] = None,
    port: Annotated[int, typer.Option(min=1, max=65535, help="DNS port (labs)")] = 53,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document")] = False,
    metrics: Annotated[Path | None, typer.Option(help="write node_exporter textfile metrics here")] = None,
) -> None:
    """Read DMARC aggregate reports and summarize them: per reporter, per source, the policy ramp.

    Exit code: 0 ok, 1 a report refused or an unknown source, 2 our hosts fail DMARC, 3 bad input."""
    now = time.time()
    try:
        if (stack is None) == (outputs is None):
            raise UsageError("give the stack one way: --outputs FILE (`pulumi stack output --json`) or --stack NAME")
        expected = _from_outputs(outputs) if outputs is not None else _from_stack(str(stack))
        if imap_host and (password_command is None) == (token_command is None):
            raise UsageError("--imap-host needs one of --password-command or --token-command")
        if imap_host and not imap_user:
            raise UsageError("--imap-host needs --imap-user")
        if directory is not None and not directory.is_dir():
            raise UsageError(f"--dir {shown(str(directory))}: not a directory")
        database = store.connect(db or store.default_db())
        outcome = ingest.Outcome()
        if directory is not None:
            outcome = ingest.from_directory(database, directory, expected.domain, now)
        if imap_host and imap_user:
            account = Account(imap_host, imap_port, imap_user, folder, token_command is not None, cafile)
            setting = "--token-command" if token_command else "--password-command"
            imap = connect(account, secret_from(str(token_command or password_command), setting))
            try:
                read = ingest.from_mailbox(database, imap, account, expected.domain, now)
            finally:
                imap.logout()
            outcome.read += read.read
            outcome.new += read.new
            outcome.duplicate += read.duplicate
            outcome.refused += read.refused
    except (UsageError, ExpectedError, CredentialError, MailboxError) as error:
        typer.echo(f"mailhost reports: {error}", err=True)
        raise typer.Exit(UNREACHABLE) from None
    since = now - days * 86400
    rows = list(store.rows_since(database, since))
    summary = summarize(rows, expected, ResolverSpec(tuple(nameserver or ()), port), since, now)
    if metrics is not None:
        write_atomic(str(metrics), export.metrics(summary, len(outcome.refused), now))
    if as_json:
        data = export.as_data(summary)
        data["intake"] = {"read": outcome.read, "new": outcome.new, "duplicate": outcome.duplicate,
                          "refused": [{"what": w, "why": y} for w, y in outcome.refused]}
        typer.echo(json.dumps(data, indent=2))
    else:
        for line in text_lines(summary, outcome):
            typer.echo(line)
    raise typer.Exit(exit_code(summary, outcome))


def exit_code(summary: judge.Summary, outcome: ingest.Outcome) -> int:
    ours = summary.classes[judge.OURS]
    if ours.messages and ours.dmarc_pass < judge.RAMP_PASS_RATIO * ours.messages:
        return CRITICAL
    if outcome.refused or any(kind == judge.UNKNOWN for _ip, kind, _n in summary.flagged()):
        return WARNING
    return OK


def _row(name: str, tally: judge.Tally) -> str:
    dispositions = ", ".join(f"{k} {v}" for k, v in sorted(tally.dispositions.items()))
    return (f"  {name:<40} {tally.messages:>9} {tally.spf_aligned:>9} {tally.dkim_aligned:>9} "
            f"{tally.dmarc_pass:>9}  {dispositions}")


def text_lines(summary: judge.Summary, outcome: ingest.Outcome) -> list[str]:
    lines = [f"reports: {outcome.read} read, {outcome.new} new, {outcome.duplicate} already stored, "
             f"{len(outcome.refused)} refused"]
    lines += [f"  refused {what}: {why}" for what, why in outcome.refused]
    head = f"  {'':<40} {'messages':>9} {'spf-align':>9} {'dkim-alig':>9} {'dmarc-ok':>9}  disposition"
    lines += [f"window: the last {(summary.until - summary.since) / 86400:g} days, {summary.days} with reports",
              "by reporter:", head]
    lines += [_row(org, tally) for org, tally in sorted(summary.reporters.items())]
    lines += ["by source:", head]
    lines += [_row(f"{ip} ({summary.source_class[ip]})", tally) for ip, tally in
              sorted(summary.sources.items(), key=lambda item: (-item[1].messages, item[0]))]
    for ip, kind, count in summary.flagged():
        if kind == judge.UNKNOWN:
            lines.append(f"flagged: {ip} sent {count} messages as the domain and is neither our host nor in SPF: "
                         "if it is yours, add it to spfExtra and sign its mail; if not, someone spoofs the domain")
        else:
            lines.append(f"flagged: our host {ip} had {count} messages fail DMARC: run `mailhost verify` "
                         "(SPF and DKIM) and `mailhost status`")
    lines.append(summary.ramp.line())
    return lines


def register(app: typer.Typer) -> None:
    app.command("reports")(reports)
