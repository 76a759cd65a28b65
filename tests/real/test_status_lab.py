"""`mailhost status` and the metrics collector on the lab: real Postfix, real queue, real log, real SSH.

The lab MX judges mail to strict.example.net and strict6.example.net the way Gmail, Yahoo and
Microsoft do (mailhost/lab/receiver.py).  Each rejection is induced the way it happens to a
Jira administrator, never by editing logs:
- a Jira user whose mailbox is gone (5.1.1) or full (5.2.2),
- Jira's From address set to a domain we do not sign for (5.7.26),
- the host's IPv6 PTR gone while Postfix still sends over IPv6 (5.7.25; strict6's MX is IPv6-only),
- a burst above the receiver's rate (421 4.7.28, deferred and retried),
- main.cf edited by hand on the host (drift), then put back by the next `up`.
`status` must name each cause with its fix, and exit 0/1/2/3 as documented; the collector's
textfile output must pass `promtool check metrics`.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from mailhost.lab import dnsupdate, jirahost, ops, zones
from mailhost.lab.lab import REPO, Lab
from mailhost.lab.runner import stack_path
from mailhost.publish import render
from tests.real.conftest import lab_in_tmp, until

pytestmark = [pytest.mark.real, pytest.mark.lab, pytest.mark.usefixtures("jm_lab_lock")]


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("status") as the_lab:
        yield the_lab


def status(lab: Lab, *extra: str) -> tuple[int, dict[str, Any]]:
    """`mailhost status --json` as an administrator runs it: outputs file, stack file, admin key file."""
    key = lab.info().jira["client_key_path"]
    done = subprocess.run(
        [sys.executable, "-m", "mailhost", "status", "--outputs", str(lab.state_dir / "stack-outputs.json"),
         "--stack", str(stack_path(lab.state_dir)), "--key", key, "--hours", "1", "--json", *extra],
        capture_output=True, text=True, timeout=180, cwd=REPO, env={**os.environ, "SSH_AUTH_SOCK": ""})
    assert done.stdout.strip(), done.stderr
    return done.returncode, json.loads(done.stdout)


def host_report(data: dict[str, Any]) -> dict[str, Any]:
    return data["hosts"]["jira"]


def maillog(lab: Lab) -> str:
    return jirahost.run(lab.info(), ["cat", ops.MAILLOG]).stdout


def until_logged(lab: Lab, codes: tuple[str, ...], seconds: float) -> None:
    """Wait for every status code in the jira host's log; a timeout names the missing ones and the log's end."""
    deadline = time.monotonic() + seconds
    while missing := [c for c in codes if f"dsn={c}" not in (log := maillog(lab))]:
        if time.monotonic() > deadline:
            tail = "\n".join(line for line in log.splitlines() if "status=" in line)[-3000:]
            pytest.fail(f"after {seconds:.0f}s the jira host's log lacks dsn={missing}; its deliveries:\n{tail}")
        time.sleep(0.5)


def test_a_healthy_host_is_ok(lab: Lab) -> None:
    burst = ops.send(lab, 6, big_every=0)
    got, _ = ops.wait_delivered(lab, burst, timeout=60)
    assert len({r["message_id"] for r in got}) == 6
    code, data = status(lab)
    report = host_report(data)
    assert code == 0 and data["level"] == "ok", report.get("findings")
    facts = report["report"]
    assert facts["services"] == {"postfix": True, "opendkim": True}
    assert facts["deliveries"]["sent"] >= 6 and facts["deliveries"]["bounced"] == 0
    assert facts["tls"]["ratio"] == 1.0  # the lab MX offers STARTTLS; every delivery used it
    assert facts["config"]["pushed"] and facts["config"]["changed"] == [] and facts["config"]["stack_changed"] == []
    assert facts["config"]["stack_checked"] >= 5  # main.cf, master.cf, opendkim.conf, the collector, its units
    assert facts["queue"]["deferred"] == 0


def test_a_hand_edit_is_drift_naming_the_file_until_the_next_up(lab: Lab) -> None:
    edit = jirahost.run(lab.info(), ["sh", "-c", "echo 'always_bcc = audit@example.org' >> /etc/postfix/main.cf"])
    assert edit.returncode == 0, edit.stderr
    code, data = status(lab)
    findings = host_report(data)["findings"]
    assert code == 1, findings
    assert any("drift: /etc/postfix/main.cf" in f["what"] and "pushSerial" in f["fix"] for f in findings)
    assert host_report(data)["report"]["config"]["stack_changed"] == ["/etc/postfix/main.cf"]
    ops.up(lab, "direct")  # nothing changed in the stack: no remote command runs, the edit stays
    assert status(lab)[0] == 1
    ops.up(lab, "direct", overrides={"pushSerial": 1})  # the fix status gives: the push runs again, in place
    code, data = status(lab)
    assert code == 0, host_report(data)["findings"]
    assert "always_bcc" not in jirahost.run(lab.info(), ["cat", "/etc/postfix/main.cf"]).stdout


def test_every_induced_rejection_is_named_with_its_cause_and_fix(lab: Lab) -> None:
    info = lab.info()
    strict, strict6 = zones.STRICT_DOMAIN, zones.STRICT6_DOMAIN
    ops.send(lab, 1, recipients=[f"gone-ann@{strict}"], big_every=0)
    ops.send(lab, 1, recipients=[f"full-bo@{strict}"], big_every=0)
    ops.send(lab, 1, recipients=[f"cy@{strict}"], big_every=0, sender=f"jira@{zones.RECIPIENT_DOMAIN}")
    # These three must be answered before the PTR goes: strict's MX has an IPv6 address too, and a
    # message still queued then is refused for the PTR (5.7.25) instead of its own cause (CI saw that).
    until_logged(lab, ("5.1.1", "5.2.2", "5.7.26"), 90)
    # The IPv6 PTR disappears behind the program's back; strict6's MX has only an IPv6 address.
    v6 = lab.host("jira").ipv6
    ptr = ipaddress.ip_address(v6).reverse_pointer
    dnsupdate.delete(lab.world.dns.v4, lab.world.reverse6, ptr, "PTR")
    try:
        ops.send(lab, 1, recipients=[f"di@{strict6}"], big_every=0)
        until_logged(lab, ("5.7.25",), 60)
    finally:
        dnsupdate.upsert(lab.world.dns.v4, lab.world.reverse6, ptr, "PTR", 60, [f"jira.{zones.SENDER_DOMAIN}."])
    ops.send(lab, 40, recipients=[f"u{i}@{strict}" for i in range(40)], big_every=0)
    until_logged(lab, ("5.1.1", "5.2.2", "5.7.26", "5.7.25", "4.7.28"), 90)

    code, data = status(lab)
    report = host_report(data)
    assert code == 2 and data["level"] == "critical"
    causes = {(c["cause"], c["code"]): c for c in report["report"]["causes"]}
    for key, state in [(("ptr", "5.7.25"), "bounced"), (("auth", "5.7.26"), "bounced"),
                       (("rate_limit", "4.7.28"), "deferred"), (("user_unknown", "5.1.1"), "bounced"),
                       (("mailbox_full", "5.2.2"), "bounced")]:
        assert key in causes, f"{key} missing from {sorted(causes)}"
        assert causes[key]["status"] == state
    by_cause = {f["what"].split("(", 1)[1].split(")")[0]: f for f in report["findings"] if "(" in f["what"]}
    assert by_cause["5.7.25, ptr"]["level"] == "critical" and "inet_protocols" in by_cause["5.7.25, ptr"]["fix"]
    assert by_cause["5.7.26, auth"]["level"] == "critical" and "From address" in by_cause["5.7.26, auth"]["fix"]
    assert by_cause["4.7.28, rate_limit"]["level"] == "warning" and "delivery.maxConnections" in \
        by_cause["4.7.28, rate_limit"]["fix"]
    assert by_cause["5.1.1, user_unknown"]["level"] == "warning"
    assert by_cause["5.2.2, mailbox_full"]["level"] == "warning"
    stuck = report["report"]["queue"]["stuck"]
    assert report["report"]["queue"]["deferred"] >= 1 and {s["cause"] for s in stuck} >= {"rate_limit"}

    # The same in plain text, as an administrator reads it.
    text = subprocess.run(
        [sys.executable, "-m", "mailhost", "status", "--outputs", str(lab.state_dir / "stack-outputs.json"),
         "--key", info.jira["client_key_path"], "--hours", "1"],
        capture_output=True, text=True, timeout=180, cwd=REPO)
    assert text.returncode == 2
    assert "CRITICAL: " in text.stdout and "fix: publish the PTR" in text.stdout and "=> critical" in text.stdout

    # The deferred mail is not lost: retried (as Postfix does after its backoff; here flushed at the
    # receiver's pace), all of it is delivered.
    deadline = time.monotonic() + 120
    while ops.queue(lab) and time.monotonic() < deadline:
        jirahost.run(info, ["postqueue", "-f"])
        time.sleep(11)
    assert not ops.queue(lab), json.dumps(ops.queue(lab))[:2000]


def test_the_collector_writes_metrics_promtool_accepts(lab: Lab) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: run ./setup.sh (Debian's prometheus package ships it)"
    out = "/var/lib/jira-mailhost/metrics-test.prom"
    done = jirahost.run(lab.info(), ["python3", render.COLLECTOR, "--hours", "1", "--textfile", out], timeout=120)
    assert done.returncode == 0, done.stderr
    text = jirahost.run(lab.info(), ["cat", out]).stdout
    jirahost.run(lab.info(), ["rm", "-f", out])
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    samples = {ln.rsplit(" ", 1)[0]: float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln[:1] != "#"}
    assert samples['jira_mailhost_up{service="postfix"}'] == 1
    assert abs(samples["jira_mailhost_collector_last_run_timestamp_seconds"] - time.time()) < 120
    assert samples["jira_mailhost_config_digest_match"] == 1
    assert samples['jira_mailhost_recent_deliveries{status="sent",cause="ok",code_class="2.0"}'] >= 6
    assert any(k.startswith('jira_mailhost_recent_deliveries{status="bounced",cause="auth"') for k in samples)


def test_an_unreachable_host_exits_3_and_bad_options_name_the_fix(lab: Lab, tmp_path: Path) -> None:
    outputs = json.loads((lab.state_dir / "stack-outputs.json").read_text())
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.OpenSSH, PublicFormat.OpenSSH)
    outputs["hosts"]["jira"]["sshHostKey"] = other.decode()  # the host presents its own key, not this one
    bad = tmp_path / "outputs.json"
    bad.write_text(json.dumps(outputs))
    done = subprocess.run([sys.executable, "-m", "mailhost", "status", "--outputs", str(bad), "--key",
                           lab.info().jira["client_key_path"], "--json"],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert done.returncode == 3
    assert "host key" in json.loads(done.stdout)["hosts"]["jira"]["error"]
    none = subprocess.run([sys.executable, "-m", "mailhost", "status", "--outputs", str(bad)],
                          capture_output=True, text=True, timeout=60, cwd=REPO, env={**os.environ, "SSH_AUTH_SOCK": ""})
    assert none.returncode == 3 and "--key FILE" in none.stderr


def test_the_admin_key_can_come_from_the_ssh_agent(lab: Lab, tmp_path: Path) -> None:
    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        until(sock.exists, 10, "ssh-agent's socket")
        env = {**os.environ, "SSH_AUTH_SOCK": str(sock)}
        added = subprocess.run(["ssh-add", "-q", lab.info().jira["client_key_path"]], env=env, capture_output=True,
                               text=True, timeout=30)
        assert added.returncode == 0, added.stderr
        done = subprocess.run([sys.executable, "-m", "mailhost", "status", "--outputs",
                               str(lab.state_dir / "stack-outputs.json"), "--json"],
                              capture_output=True, text=True, timeout=180, cwd=REPO, env=env)
        assert done.returncode in (0, 1, 2), done.stdout + done.stderr  # reached the host: not 3
        assert "report" in json.loads(done.stdout)["hosts"]["jira"]
    finally:
        agent.terminate()
        agent.wait(timeout=10)


def test_without_a_mail_log_file_status_counts_deliveries_from_the_journal(lab: Lab) -> None:
    """A Debian cloud image has no rsyslog: with no maillogFile, Postfix logs to journald alone (the lab's
    jira host runs its own, behind a private /dev/log), and status and the metrics read it there."""
    info = lab.info()
    assert jirahost.run(info, ["mv", ops.MAILLOG, ops.MAILLOG + ".file"]).returncode == 0
    try:
        ops.up(lab, "direct", overrides={"maillogFile": None, "pushSerial": 7})
        assert jirahost.run(info, ["postconf", "-h", "maillog_file"]).stdout.strip() == ""
        burst = ops.send(lab, 3, big_every=0)
        got, _ = ops.wait_delivered(lab, burst, timeout=60)
        assert len({r["message_id"] for r in got}) == 3
        # An unprivileged process can log as postfix/smtp; journald records its real _UID, so it is not counted.
        forged = ("FAKE1: to=<x@example.org>, relay=none, delay=1, delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)")
        assert jirahost.run(info, ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "logger",
                                   "-p", "mail.info", "-t", "postfix/smtp", forged]).returncode == 0
        assert jirahost.run(info, ["test", "-e", ops.MAILLOG]).returncode == 1, "no file log on the jira host"

        deadline = time.monotonic() + 30
        while True:
            _, data = status(lab)
            facts = host_report(data)["report"]
            if facts["log"]["path"] == "journald" and facts["deliveries"]["sent"] >= 3:
                break
            if time.monotonic() > deadline:
                journal = jirahost.run(info, ["journalctl", "-q", "--no-pager", "-n", "20", "-o", "short-iso"])
                pytest.fail(f"status read {facts['log']}, {facts['deliveries']}; the host's journal ends:\n"
                            f"{journal.stdout[-3000:]}{journal.stderr[-500:]}")
            time.sleep(1)
        assert facts["log"]["problem"] is None
        assert facts["deliveries"]["sent"] == 3 and facts["log"]["forged_lines"] == 1, facts["log"]
        assert facts["log"]["skipped_lines"] == 0, facts["log"]
        assert facts["tls"]["ratio"] == 1.0
    finally:
        ops.up(lab, "direct")
        jirahost.run(info, ["sh", "-c", f"cat {ops.MAILLOG}.file {ops.MAILLOG} > {ops.MAILLOG}.new 2>/dev/null; "
                            f"mv {ops.MAILLOG}.new {ops.MAILLOG}; rm -f {ops.MAILLOG}.file"])
