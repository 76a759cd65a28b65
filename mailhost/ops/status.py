"""`mailhost status`: judge what the collector found on each host, and say what to do.

Pure: the SSH call is in ops/hosts.py.  The host side is mailhost/publish/mailstats.py, sent over the
same pinned-key SSH client as the push and run once with --json; this module turns its
report into findings (level, what, fix) and an exit code fit for monitoring:
0 ok, 1 warning, 2 critical, 3 unreachable.
"""

from __future__ import annotations

import json
import shlex
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mailhost.publish import mailstats

OK, WARNING, CRITICAL, UNREACHABLE = 0, 1, 2, 3
LEVEL_NAMES = {OK: "ok", WARNING: "warning", CRITICAL: "critical", UNREACHABLE: "unreachable"}
OLDEST_CRITICAL = 3600  # seconds: Jira users notice an hour-old notification
# An `up` with unchanged settings runs no remote command, so the push must be asked for.
REPUSH = "put the stack's files back: raise the stack setting pushSerial by one and run `pulumi up`"
HARMLESS_BOUNCES = frozenset({"user_unknown", "mailbox_full"})  # the recipient's side, not ours
DAILY_CAP_WARN = 0.8  # share of delivery.relay.maxPerDay used in the last 24 h that warns (as the alert does)

# Runs the collector (argument 1) with python3 -I (isolated: no PYTHON* variables, no user site, no cwd on
# sys.path) as root: directly when the SSH user is root, else with
# sudo -n like the push.  The script travels as an argument, so stdin stays free and nothing is installed.
_WRAPPER = (
    's=$1; shift; command -v python3 >/dev/null 2>&1 || { echo "jira-mailhost: python3 is not installed on '
    '$(hostname)" >&2; exit 97; }; if [ "$(id -u)" -eq 0 ]; then exec python3 -I -c "$s" "$@"; fi; '
    'sudo -n true 2>/dev/null || { echo "jira-mailhost: user $(id -un) is not root and cannot run sudo without a '
    'password; status needs what the push needs (sshUser root, or passwordless sudo)" >&2; exit 97; }; '
    'exec sudo -n python3 -I -c "$s" "$@"'
)


@dataclass(frozen=True)
class Target:
    """One host to ask: where it is and the key it must present."""

    name: str
    address: str
    port: int
    user: str
    host_key: str
    expected: dict[str, str] = field(default_factory=dict)  # path → sha256 of the non-secret files of the stack


@dataclass(frozen=True)
class Finding:
    level: int
    what: str
    fix: str = ""


def remote_command(hours: float, expected: dict[str, str]) -> str:
    """The one command line run on the host (no secrets in it: only our code and public digests)."""
    args = ["--json", "--hours", f"{hours:g}"]
    for path, digest in sorted(expected.items()):
        args += ["--expect", f"{path}={digest}"]
    script = mailstats.own_source()
    return " ".join(["sh", "-c", shlex.quote(_WRAPPER), "jira-mailhost-status", shlex.quote(script),
                     *map(shlex.quote, args)])


def shown(text: str) -> str:
    """Text fit for a terminal: every control, format (bidi overrides included) or unassigned character, C1
    controls such as CSI (U+009B) among them, is written as an escape; receivers chose much of this text."""
    return "".join(c if c == " " or not unicodedata.category(c).startswith(("C", "Z")) else
                   f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}" for c in text)


def parse_report(stdout: str) -> dict[str, Any]:
    """The collector prints one JSON object; anything else means it did not run as ours."""
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise ValueError("the host printed no report")
    report = json.loads(lines[-1])
    if not isinstance(report, dict) or "queue" not in report:
        raise ValueError("the host's report has no queue")
    return report


def _age(seconds: float) -> str:
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds / 3600:.1f} h"


def assess(report: dict[str, Any]) -> list[Finding]:
    """Every problem in one host's report, worst first."""
    findings: list[Finding] = []
    for service, up in sorted(report["services"].items()):
        if up is False:
            findings.append(Finding(CRITICAL, f"{service} is not running: no mail leaves this host",
                                    f"start it (systemctl start {service}) and read why it stopped "
                                    f"(journalctl -u {service}); `pulumi up` also starts it"))
    queue = report["queue"]
    if queue["problem"]:
        findings.append(Finding(WARNING, f"the queue could not be read: {queue['problem']}",
                                "check that Postfix is installed and running"))
    oldest = queue["oldest_age_seconds"]
    if oldest >= OLDEST_CRITICAL:
        findings.append(Finding(CRITICAL, f"the oldest queued message waits for {_age(oldest)}",
                                "see the causes below; `postqueue -p` shows each message's reason"))
    if queue["deferred"]:
        findings.append(Finding(WARNING, f"{queue['deferred']} message(s) deferred (Postfix retries them)",
                                "see the causes below"))
    if queue["tls_held"]:
        oldest_held = _age(queue["tls_held_oldest_age_seconds"])
        if any(s.get("cause") == "cert_unverified" for s in queue["stuck"]):
            findings.append(Finding(WARNING, f"{queue['tls_held']} message(s) wait because the receiver's certificate "
                                    f"could not be verified (DANE's TLSA records, or the smarthost's); the oldest "
                                    f"for {oldest_held}. Nothing was sent unchecked",
                                    mailstats.cause("cert_unverified").fix))
        else:
            findings.append(Finding(WARNING, f"{queue['tls_held']} message(s) wait because their domain requires TLS "
                                    f"(delivery.tlsPolicy: encrypt) and its MX offered none; the oldest for "
                                    f"{oldest_held}. Nothing was sent in clear", mailstats.cause("tls_required").fix))
    if queue["hold"]:
        findings.append(Finding(WARNING, f"{queue['hold']} message(s) on hold: Postfix will not send them",
                                "release with `postsuper -H ALL` once the reason is gone"))
    config = report["config"]
    if not config["pushed"]:
        findings.append(Finding(WARNING, "no push of jira-mailhost is recorded on this host",
                                "run `pulumi up` for this stack"))
    for path in config["changed"]:
        findings.append(Finding(WARNING, f"drift: {path} was changed on the host after the last push",
                                f"{REPUSH}; to keep the change, make it a stack setting instead"))
    for path in config["missing"]:
        findings.append(Finding(WARNING, f"drift: {path} was removed from the host after the last push", REPUSH))
    for path in config.get("stack_changed", []):
        if path not in config["changed"]:
            findings.append(Finding(WARNING, f"not live yet: the stack would push a different {path}",
                                    "run `pulumi up` for this stack"))
    if queue.get("unreadable"):
        findings.append(Finding(WARNING, f"{queue['unreadable']} queue entries could not be read and were not "
                                "counted", "compare with `postqueue -p` on the host"))
    log = report.get("log", {})
    if log.get("problem"):
        findings.append(Finding(WARNING, log["problem"], "set maillogFile in the stack and run `pulumi up`"))
    if log.get("forged_lines"):
        findings.append(Finding(WARNING, f"{log['forged_lines']} journal entr(ies) name a Postfix delivery agent but "
                                "came from another user's process; not counted", "find who writes them: "
                                "`journalctl -o verbose SYSLOG_FACILITY=2` on the host shows each entry's _UID "
                                "and _COMM"))
    if log.get("skipped_lines"):
        findings.append(Finding(WARNING, f"{log['skipped_lines']} line(s) of the mail log could not be read (an "
                                "impossible time stamp, or far too long) and were skipped",
                                "check the host's clock and what writes the mail log"))
    findings += daily_cap_findings(report.get("relay_day"))
    for cause in report["causes"]:
        findings.append(cause_finding(cause))
    return sorted(findings, key=lambda f: -f.level)


def relay_day(value: Any) -> tuple[int, int] | None:
    """(sent, cap) from the report's relay_day, None without delivery.relay.maxPerDay; the host wrote it, so
    anything but two non-negative integers (cap ≥ 1) is refused."""
    if value is None:
        return None
    if not isinstance(value, dict) or not all(type(value.get(k)) is int for k in ("sent", "cap")):
        raise ValueError("the host's report has a malformed relay_day")
    sent, cap = value["sent"], value["cap"]
    if sent < 0 or cap < 1:
        raise ValueError("the host's report has a malformed relay_day")
    return sent, cap


def daily_cap_findings(value: Any) -> list[Finding]:
    """The relay refuses everything past its daily cap for up to a day: warn at 80 %, critical at the cap."""
    day = relay_day(value)
    if day is None:
        return []
    sent, cap = day
    fix = mailstats.cause("relay_daily_cap").fix
    if sent >= cap:
        return [Finding(CRITICAL, f"the relay's daily cap is reached: {sent} recipients in the last 24 h, "
                                  f"delivery.relay.maxPerDay is {cap}; the relay refuses more until the day is over",
                        fix)]
    if sent >= DAILY_CAP_WARN * cap:
        return [Finding(WARNING, f"{sent} of the relay's {cap} recipients a day used in the last 24 h "
                                 f"({sent * 100 // cap} %): past the cap it refuses Jira's mail for up to a day",
                        fix)]
    return []


def cause_finding(cause: dict[str, Any]) -> Finding:
    """A bounce of ours (5.7.x: authentication, PTR, policy) is critical; a gone mailbox is a warning."""
    count, status, code = cause["count"], cause["status"], cause["code"]
    level = WARNING
    if status == "bounced" and cause["cause"] not in HARMLESS_BOUNCES and cause["code_class"] == "5.7":
        level = CRITICAL
    where = ", ".join(cause["domains"][:3]) + (" ..." if len(cause["domains"]) > 3 else "")
    what = (f"{count} {status} ({code}, {cause['cause']}) to {where}: {cause['example'][:160]}"
            + (f" | requirement: {cause['requirement']}" if cause["requirement"] else ""))
    return Finding(level, what, cause["fix"])


def level_of(findings: Iterable[Finding]) -> int:
    return max((f.level for f in findings), default=OK)


def exit_code(levels: Sequence[int]) -> int:
    """The worst host decides: one unreachable host makes the run 3, like a monitoring plugin."""
    return max(levels, default=OK)


def summary_lines(name: str, report: dict[str, Any]) -> list[str]:
    """What mail is doing on one host, in a few plain lines."""
    queue, deliveries, tls = report["queue"], report["deliveries"], report["tls"]
    services = ", ".join(f"{s} {'running' if up else 'STOPPED'}" for s, up in sorted(report["services"].items())
                         if up is not None)
    config = report["config"]
    drifted = len(config["changed"]) + len(config["missing"])
    state = ("not pushed" if not config["pushed"] else f"{drifted} file(s) changed since the last push" if drifted
             else f"as pushed ({config['files']} files)")
    if config.get("stack_checked"):
        state += f"; {len(config['stack_changed'])} of {config['stack_checked']} differ from the stack"
    hours = report["window_seconds"] / 3600
    lines = [
        f"{name} ({report['host']}): {services}",
        f"  queue: {queue['active']} active, {queue['deferred']} deferred, {queue['hold']} hold; "
        f"oldest {_age(queue['oldest_age_seconds'])}",
        f"  config: {state}",
        f"  last {hours:g} h: {deliveries['sent']} sent, {deliveries['deferred']} deferred, "
        f"{deliveries['bounced']} bounced",
    ]
    if tls["ratio"] is not None:
        per = tls["messages_per_handshake"]
        trust = ", ".join(f"{n} {'in clear' if level == 'none' else level}"
                          for level, n in tls["sent_by_trust"].items() if n)
        lines.append(f"  TLS: {tls['ratio'] * 100:.0f} % of sent mail"
                     + (f", {per:g} messages per TLS handshake" if per is not None else "")
                     + (f" ({trust})" if trust else ""))
    day = relay_day(report.get("relay_day"))
    if day is not None:
        lines.append(f"  relay: {day[0]} of {day[1]} recipients a day used (last 24 h)")
    for stuck in queue["stuck"][:5]:
        lines.append(f"  queued {stuck['queue_id']} to {stuck['domain']} for {_age(stuck['age_seconds'])}: "
                     f"{stuck['reason'][:120] or stuck['queue']}")
    return lines
