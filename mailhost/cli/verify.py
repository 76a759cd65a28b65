"""`mailhost verify`: what a strict receiver will think of this host's DNS, and how to fix it.

Exit codes: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage error or DNS
could not be asked.  The post-deploy step runs this same command, so `pulumi up` fails
with the same lines an administrator sees here.
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from mailhost.publish.plan import expected_from_settings
from mailhost.records.expected import Expected, ExpectedError, ExpectedHost, expected_from_outputs
from mailhost.verify.dnsquery import ResolverSpec
from mailhost.verify.requirements import PROVIDERS
from mailhost.verify.run import Report, VerifyOptions, run

_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "info": "cyan",
          "not checkable from DNS": "dim", "not checked": "yellow"}
_TIER = {"all": "all senders", "bulk": "bulk"}


class UsageError(Exception):
    pass


def _ip(value: str | None, version: int, flag: str) -> str | None:
    if value is None:
        return None
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not an IP address") from None
    if address.version != version:
        raise UsageError(f"{flag} {value!r} is not an IPv{version} address")
    return str(address)


def _public_key(value: str | None) -> str | None:
    """The p= value from a base64 string, or @FILE holding base64 or a PEM public key."""
    if value is None:
        return None
    if value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as error:
            raise UsageError(f"--dkim-public-key: cannot read {value[1:]}: {error}") from None
    from mailhost.verify.checks import key_der

    der = key_der(value)
    if der is None:
        raise UsageError("--dkim-public-key is neither base64 nor a PEM public key")
    import base64

    return base64.b64encode(der).decode()


def _from_flags(
    domain: str | None, host: str | None, ipv4: str | None, ipv6: str | None, helo: str | None,
    selector: str | None, dkim_public_key: str | None, sends_ipv6: bool | None, staging: bool,
) -> Expected:
    if not domain or not host or not (ipv4 or ipv6):
        raise UsageError(
            "say what DNS should show: --domain and --host with --ipv4/--ipv6, "
            "or --outputs FILE (pulumi stack output --json), or --stack NAME"
        )
    return Expected(
        domain=domain.rstrip(".").lower(),
        hosts=(
            ExpectedHost(
                fqdn=host.rstrip(".").lower(),
                ipv4=_ip(ipv4, 4, "--ipv4"),
                ipv6=_ip(ipv6, 6, "--ipv6"),
                sends_ipv4=ipv4 is not None,
                sends_ipv6=(ipv6 is not None) if sends_ipv6 is None else sends_ipv6,
                dkim_selector=selector,
                dkim_public_key=_public_key(dkim_public_key),
                helo=helo.rstrip(".").lower() if helo else None,
            ),
        ),
        production=not staging,
    )


def _from_outputs(path: str) -> Expected:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        data = json.loads(text)
    except (OSError, ValueError) as error:
        raise UsageError(f"--outputs {path}: {error}") from None
    if not isinstance(data, dict):
        raise UsageError(f"--outputs {path}: expected the JSON object of `pulumi stack output --json`")
    return expected_from_outputs(data)


def _from_stack(name: str) -> Expected:
    from mailhost.publish.stack import load_stack_file
    from mailhost.settings.config import ConfigError

    path = Path(name) if name.endswith((".yaml", ".yml")) else Path(f"Pulumi.{name}.yaml")
    if not path.exists():
        raise UsageError(f"--stack {name}: {path} not found (run in the project directory)")
    try:
        return expected_from_settings(load_stack_file(path, require_secrets=False))  # DNS needs no secret
    except ConfigError as error:
        raise UsageError(str(error)) from None


def _from_env(var: str) -> Expected:
    text = os.environ.get(var)
    if not text:
        raise UsageError(f"--expected-env {var}: the variable is not set")
    try:
        return Expected.from_json(text)
    except (ValueError, TypeError, KeyError) as error:
        raise UsageError(f"--expected-env {var}: not an expected-state JSON: {error}") from None


def _nameservers(values: list[str]) -> tuple[str, ...]:
    out = []
    for value in values:
        try:
            out.append(str(ipaddress.ip_address(value)))
        except ValueError:
            raise UsageError(f"--nameserver {value!r} is not an IP address") from None
    return tuple(out)


def print_report(report: Report, console: Console) -> None:
    """A table on a terminal; one line per check elsewhere (CI logs, `pulumi up` errors)."""
    counts = {s: sum(1 for c in report.checks if c.status == s) for s in ("pass", "warn", "fail", "info")}
    summary = f"{counts['pass']} pass, {counts['warn']} warn, {counts['fail']} fail, {counts['info']} info"
    if console.is_terminal:
        table = Table(title="mailhost verify", show_lines=False)
        table.add_column("check", no_wrap=True)
        table.add_column("status")
        table.add_column("found")
        table.add_column("fix")
        for check in report.checks:
            table.add_row(Text(check.id), Text(check.status, style=_STYLE[check.status]), Text(check.detail),
                          Text(check.fix))
        console.print(table)
        _print_requirements(report, console, terminal=True)
        console.print(summary)
        return
    for check in report.checks:
        line = f"{check.status.upper():4} {check.id}: {check.detail}"
        if check.fix and check.status != "pass":
            line += f"\n     fix: {check.fix}"
        console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
    _print_requirements(report, console, terminal=False)
    console.print(summary, markup=False, highlight=False)


def _print_requirements(report: Report, console: Console, terminal: bool) -> None:
    """The receivers' sender requirements, marked from the checks above (README: sources)."""
    judged, receivers = report.requirements, report.receivers
    if not judged:
        return
    tiers = " · ".join(f"{r.provider} {_TIER[r.tier]}: {r.mark}" for r in receivers)
    if terminal:
        table = Table(title="receiver requirements (from the checks above; bulk: 5,000+ messages a day)")
        table.add_column("requirement")
        table.add_column("status")
        for provider in PROVIDERS:
            table.add_column(provider)
        for item in judged:
            tiers_of = [_TIER[t] if (t := item.requirement.tiers.get(p)) else "–" for p in PROVIDERS]
            table.add_row(Text(item.requirement.text), Text(item.mark, style=_STYLE[item.mark]), *map(Text, tiers_of))
        console.print(table)
        console.print(tiers, markup=False, highlight=False)
        return
    console.print("receiver requirements (from the checks above; bulk: 5,000+ messages a day):", markup=False,
                  highlight=False)
    width = max(len(item.mark) for item in judged)
    for item in judged:
        who = ", ".join(f"{p} {_TIER[t]}" for p in PROVIDERS if (t := item.requirement.tiers.get(p)))
        console.print(f"  {item.mark.upper():{width}} {item.requirement.text} [{who}]", markup=False,
                      highlight=False, emoji=False, soft_wrap=True)
    console.print(f"  {tiers}", markup=False, highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add `verify` to the mailhost command."""

    @app.command("verify")
    def verify(
        domain: Annotated[str | None, typer.Option(help="sender domain, e.g. example.com")] = None,
        host: Annotated[str | None, typer.Option("--host", help="host FQDN (also its HELO name)")] = None,
        ipv4: Annotated[str | None, typer.Option(help="the host's public IPv4")] = None,
        ipv6: Annotated[str | None, typer.Option(help="the host's public IPv6")] = None,
        selector: Annotated[str | None, typer.Option(help="DKIM selector, e.g. jm1-jira")] = None,
        dkim_public_key: Annotated[
            str | None, typer.Option(help="expected DKIM p= value (base64), or @FILE with it or a PEM")
        ] = None,
        helo: Annotated[str | None, typer.Option(help="Postfix myhostname if not --host")] = None,
        sends_ipv6: Annotated[
            bool | None,
            typer.Option("--sends-ipv6/--no-sends-ipv6", help="Postfix sends over IPv6 [default: if --ipv6]"),
        ] = None,
        staging: Annotated[bool, typer.Option(help="not production: p=none is fine")] = False,
        outputs: Annotated[
            str | None, typer.Option(help="JSON of `pulumi stack output --json` ('-': stdin)")
        ] = None,
        stack: Annotated[str | None, typer.Option(help="read Pulumi.NAME.yaml (adopted hosts only)")] = None,
        expected_env: Annotated[
            str | None, typer.Option(help="environment variable holding the expected-state JSON (post-deploy)")
        ] = None,
        nameserver: Annotated[
            list[str] | None, typer.Option(help="ask this server (repeatable) [default: system resolver]")
        ] = None,
        port: Annotated[int, typer.Option(help="DNS port of the servers asked (labs)", min=1, max=65535)] = 53,
        authoritative: Annotated[
            bool, typer.Option(help="find each zone's own servers and ask them, not a cache")
        ] = False,
        wait: Annotated[float, typer.Option(help="retry failing checks for up to SECONDS (propagation)", min=0)] = 0,
        timeout: Annotated[float, typer.Option(help="seconds per lookup", min=0.1)] = 5.0,
        dnsbl: Annotated[
            list[str] | None, typer.Option(help="DNS blocklist zone to check each IP on (repeatable)")
        ] = None,
        json_out: Annotated[bool, typer.Option(
            "--json", help="print {ok, checks:[{id,status,detail,fix}], requirements:[...], receivers:[...]}")] = False,
        only: Annotated[
            list[str] | None, typer.Option(help="judge only this check family, e.g. dkim (repeatable)")
        ] = None,
    ) -> None:
        """Check the published DNS (A/AAAA, PTR, FCrDNS, HELO, SPF, DKIM, DMARC, MX, DNSSEC) like a strict receiver."""
        err = Console(stderr=True, emoji=False, highlight=False)
        try:
            sources = [s for s in (outputs, stack, expected_env) if s is not None]
            if len(sources) > 1 or (sources and (domain or host)):
                raise UsageError("give the expected state one way: flags, --outputs, --stack or --expected-env")
            expected: Expected
            if outputs is not None:
                expected = _from_outputs(outputs)
            elif stack is not None:
                expected = _from_stack(stack)
            elif expected_env is not None:
                expected = _from_env(expected_env)
            else:
                expected = _from_flags(
                    domain, host, ipv4, ipv6, helo, selector, dkim_public_key, sends_ipv6, staging
                )
            options = VerifyOptions(
                ResolverSpec(_nameservers(nameserver or []), port, authoritative, timeout),
                tuple(z.rstrip(".").lower() for z in dnsbl or []),
                tuple(only or []),
            )
        except (UsageError, ExpectedError) as error:
            err.print(f"mailhost verify: {error}", markup=False, highlight=False)
            raise typer.Exit(2) from None

        def on_retry(report: Report, pause: float) -> None:
            failing = ", ".join(check.id for check in report.failures)
            err.print(f"still failing: {failing}; retrying in {pause:.0f}s", markup=False, highlight=False)

        report = run(expected, options, wait, on_retry)
        if json_out:
            typer.echo(report.to_json())
        else:
            print_report(report, Console(emoji=False, highlight=False))
        raise typer.Exit(report.exit_code)


def main(argv: list[str] | None = None) -> Any:
    """Run `verify` alone (tests, and when the main CLI cannot load another part)."""
    app = typer.Typer(add_completion=False)
    register(app)

    @app.callback()
    def _root() -> None:
        """mailhost"""

    return app(argv)
