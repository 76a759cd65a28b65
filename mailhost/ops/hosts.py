"""Asking each host how its mail is doing: where the hosts are, one SSH call each, verdicts printed.

Where the hosts are: the stack outputs (`pulumi stack output --json`: addresses and host keys of
every host, EC2 ones included) and/or the stack's settings (adopted hosts' addresses, and the files
the stack would push, to tell "changed on the host" from "not pushed yet").  Read-only, over SSH
with the pinned host key (the push's own client, ops/sshexec).  `mailhost status` and
`mailhost lab status` share it.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from mailhost.ops import sshexec
from mailhost.ops.status import (
    LEVEL_NAMES,
    UNREACHABLE,
    Target,
    assess,
    exit_code,
    level_of,
    parse_report,
    remote_command,
    shown,
    summary_lines,
)
from mailhost.publish import render
from mailhost.publish.stack import load_stack_file, stack_file
from mailhost.records import grammar
from mailhost.settings.config import ConfigError, Host, Settings


class StatusInputError(Exception):
    """The options do not say where a host is or how to log in; the message says what to give."""


def load_stack(stack: str) -> Settings:
    """The stack file's settings (no secrets needed), or the reason it cannot be read, for `--stack`."""
    try:
        return load_stack_file(stack_file(stack), require_secrets=False)
    except ConfigError as error:  # a file that cannot be read is one too, naming it and the reason
        raise StatusInputError(str(error)) from error


def stack_expected(settings: Settings, host: Host, stack: str) -> dict[str, str]:
    """sha256 of each non-secret file the stack would push to this host (the secret ones are not known here)."""
    return {f.path: f.digest for f in render.render_host(settings, host, render.PLACEHOLDERS, stack) if not f.secret}


def targets(outputs: dict[str, Any] | None, settings: Settings | None, stack: str) -> list[Target]:
    """Each host with its address and pinned key: from the outputs when given, else from the stack file."""
    in_stack = {h.name: h for h in settings.hosts} if settings else {}
    names = list(outputs["hosts"]) if outputs else list(in_stack)
    found = []
    for name in names:
        host = in_stack.get(name)
        expected = stack_expected(settings, host, stack) if settings and host else {}
        if outputs:
            found.append(output_target(name, outputs["hosts"][name], expected))
            continue
        assert host is not None  # without outputs the names are the stack's own
        if host.existing is None:
            raise StatusInputError(f"host {name} is an EC2 host: its address and host key are stack outputs; run "
                                   f"`pulumi stack output --json --stack {stack} > outputs.json` and add "
                                   "--outputs outputs.json")
        found.append(Target(name, host.existing.ipv4, host.ssh_port, host.user, host.existing.host_key, expected))
    if not found:
        raise StatusInputError("no host to ask: give --outputs FILE (pulumi stack output --json) or --stack NAME")
    return found


def output_target(name: Any, out: Any, expected: dict[str, str]) -> Target:
    """One host of the stack outputs, every value checked with the grammar that checks the stack: these
    values reach ssh's arguments, so an address such as `-oProxyCommand=...` must stop here."""
    shown_name = shown(str(name))[:80]
    if not isinstance(out, dict):
        raise StatusInputError(f"the outputs of host {shown_name} are not an object: is the file "
                               "`pulumi stack output --json` of a jira-mailhost stack?")
    missing = [k for k in ("ipv4", "sshUser", "sshPort", "sshHostKey") if not out.get(k)]
    if missing:
        raise StatusInputError(f"the outputs of host {shown_name} lack {', '.join(missing)}: run `pulumi up` once "
                               "with this version (it exports them), then `pulumi stack output --json`")
    port = out["sshPort"]
    problems = []
    try:
        grammar.label(str(name), "the host name", "jira")
    except ValueError:
        problems.append("its name is not a host name")
    try:
        address = grammar.public_address(str(out["ipv4"]), 4, "ipv4")
    except ValueError:
        address = ""
        problems.append("ipv4 is not a public IPv4 address")
    if not isinstance(out["sshUser"], str) or not grammar.SSH_USER.fullmatch(out["sshUser"]):
        problems.append("sshUser is not a Unix user name")
    # ASCII digits only: True, 22.0 and '²²' (which str.isdigit accepts and int refuses) are no port
    if not re.fullmatch(r"[0-9]{1,5}", str(port)) or not 1 <= int(port) <= 65535:
        problems.append("sshPort is not a port number")
    pinned = " ".join(out["sshHostKey"].split()[:2]) if isinstance(out["sshHostKey"], str) else ""
    if not grammar.HOST_KEY.fullmatch(pinned):
        problems.append("sshHostKey is not an OpenSSH public key")
    if problems:
        raise StatusInputError(f"the outputs of host {shown_name} are not what this program exports "
                               f"({'; '.join(problems)}); write them again with `pulumi stack output --json`")
    return Target(str(name), address, int(port), out["sshUser"], pinned, expected)


def read_outputs(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StatusInputError(f"--outputs {path}: {error}; write it with `pulumi stack output --json > {path}`") \
            from error
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), dict):
        raise StatusInputError(f"--outputs {path} has no 'hosts' output: is it `pulumi stack output --json` of a "
                               "jira-mailhost stack?")
    return data


def admin_key(key_file: Path | None) -> str | None:
    """The admin key from a file, or None for the SSH agent (which must then be running)."""
    if key_file is not None:
        try:
            return key_file.read_text()
        except OSError as error:
            raise StatusInputError(f"--key {key_file}: {error.strerror}") from error
    if not os.environ.get("SSH_AUTH_SOCK"):
        raise StatusInputError("no admin key: give --key FILE (the sshPrivateKey of the stack) or start an SSH "
                               "agent holding it (SSH_AUTH_SOCK)")
    return None


def ask(target: Target, key: str | None, hours: float, timeout: float = 120) -> dict[str, Any]:
    """One host's report, or {"error": ...} when it cannot be reached or the collector fails."""
    try:
        result = sshexec.run(target.address, target.port, target.user, key, target.host_key,
                             remote_command(hours, target.expected), timeout=timeout, attempts=3)
    except (sshexec.HostKeyMismatch, FileNotFoundError, ValueError, OSError) as error:
        return {"error": str(error)}
    if not result.ok:
        why = result.stderr.strip().splitlines()[-1:] or [f"exit {result.rc}"]
        return {"error": f"{target.user}@{target.address}:{target.port}: {why[0]}"}
    try:
        return parse_report(result.stdout)
    except ValueError as error:
        return {"error": f"{target.name}: {error}"}


def judge(target: Target, key: str | None, hours: float) -> dict[str, Any]:
    """One host's entry of the run: its report and findings, or why it could not be judged.  Whatever
    goes wrong with one host (a report of an unexpected shape included) stays that host's."""
    try:
        report = ask(target, key, hours)
        if "error" in report:
            return {"level": UNREACHABLE, "error": str(report["error"])}
        findings = assess(report)
        return {"level": level_of(findings), "report": report, "findings": findings,
                "lines": summary_lines(target.name, report)}
    except Exception as error:  # any failure of one host must not hide the others
        return {"level": UNREACHABLE, "error": f"{target.name}: could not judge the report ({type(error).__name__}: "
                                              f"{error})"}


def run_status(targets_: list[Target], key: str | None, hours: float, as_json: bool,
               echo: Any = print, dmarc: tuple[dict[str, Any], list[str]] | None = None) -> int:
    """Ask every host, print each one's lines (made printable) or one JSON document; the worst host decides.
    `dmarc`: what the DMARC report database says (its data and its lines), shown after the hosts."""
    def say(line: str) -> None:
        echo(shown(line))

    hosts: dict[str, Any] = {}
    levels = []
    for target in targets_:
        entry = judge(target, key, hours)
        level = entry["level"]
        levels.append(level)
        if "error" in entry:
            hosts[target.name] = {"level": "unreachable", "error": entry["error"]}
            if not as_json:
                say(f"{target.name}: UNREACHABLE: {entry['error']}")
            continue
        findings = entry["findings"]
        hosts[target.name] = {"level": LEVEL_NAMES[level], "report": entry["report"],
                              "findings": [{"level": LEVEL_NAMES[f.level], "what": f.what, "fix": f.fix}
                                           for f in findings]}
        if not as_json:
            for line in entry["lines"]:
                say(line)
            for f in findings:
                say(f"  {LEVEL_NAMES[f.level].upper()}: {f.what}")
                if f.fix:
                    say(f"    fix: {f.fix}")
            say(f"  => {LEVEL_NAMES[level]}")
    code = exit_code(levels)
    if as_json:  # json.dumps escapes every control and non-ASCII character
        document = {"level": LEVEL_NAMES[code], "exit_code": code, "hosts": hosts}
        if dmarc is not None:
            document["dmarc"] = dmarc[0]
        echo(json.dumps(document, indent=2, sort_keys=True))
    elif dmarc is not None:
        for line in dmarc[1]:
            say(line)
    return code
