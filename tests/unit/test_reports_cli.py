"""`mailhost reports` as the admin runs it: a directory of saved reports and the stack file in, the
summary, the flagged sources, the ramp line, JSON, metrics and the exit code out; the credential
command's output is used and never shown."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailhost.cli import app as cli_app
from mailhost.lab.dmarcreport import Judged, aggregate_xml
from mailhost.lab.lab import REPO as REPO_ROOT
from mailhost.reports import sources
from mailhost.reports.credential import CredentialError, secret_from

DOMAIN = "staging.jira.example.com"  # Pulumi.staging.yaml
HOST = "198.51.100.20"
RELAY = "203.0.113.25"
STRANGER = "198.51.100.99"
DAY = 86400


def write_reports(folder: Path, now: float, ours_fail: int = 0, stranger: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    good = Judged(HOST, DOMAIN, DOMAIN, "pass", "pass", DOMAIN, "jm1", "pass", "none")
    bad = Judged(HOST, DOMAIN, DOMAIN, "fail", "fail", DOMAIN, "jm1", "fail", "none")
    relayed = Judged(RELAY, DOMAIN, DOMAIN, "pass", "pass", DOMAIN, "jm1", "pass", "none")
    spoof = Judged(STRANGER, DOMAIN, "evil.example", "fail", "none", None, None, "fail", "none")
    for org in ("google.com", "outlook.com"):
        for day in range(14):
            begin = int(now // DAY - 14 + day) * DAY
            groups = {good: 100, relayed: 10}
            if day == 13:
                groups |= {bad: ours_fail, spoof: stranger}
            groups = {g: n for g, n in groups.items() if n}
            (folder / f"{org}-{day}.xml").write_bytes(
                aggregate_xml(org, f"dmarc@{org}", f"{org}-{day}", DOMAIN, "none", begin, begin + DAY - 1, groups))


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    asked: list[tuple[str, set[str]]] = []

    def authorized(domain: str, ips: object, spec: object) -> set[str]:
        asked.append((domain, set(ips)))  # type: ignore[call-overload]
        return {RELAY} & set(ips)  # type: ignore[call-overload]

    monkeypatch.setattr(sources, "spf_authorized", authorized)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    cli_app._register()

    def invoke(*args: str) -> tuple[int, str, str]:
        result = CliRunner().invoke(cli_app.app, ["reports", "--stack", str(REPO_ROOT / "Pulumi.staging.yaml"),
                                                  *args])
        return result.exit_code, result.stdout, result.stderr

    invoke.asked = asked  # type: ignore[attr-defined]
    return invoke


def test_a_healthy_history_gives_the_summary_the_ramp_and_exit_0(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_reports(tmp_path / "in", time.time())
    code, out, err = run("--dir", str(tmp_path / "in"), "--metrics", str(tmp_path / "m.prom"))
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0] == "reports: 28 read, 28 new, 0 already stored, 0 refused"
    assert f"  {HOST} (ours)" in out and f"  {RELAY} (authorized)" in out
    assert lines[-1] == "DMARC ramp: ready to move dmarc.policy from none to quarantine"
    assert run.asked == [(DOMAIN, {RELAY})], "SPF is asked about every source but our own hosts"
    metrics = (tmp_path / "m.prom").read_text()
    assert 'jira_mailhost_dmarc_pass_ratio{class="ours"} 1\n' in metrics
    assert (tmp_path / "state" / "jira-mailhost" / "dmarc-reports.sqlite").exists(), "the per-user default"
    code, out, _ = run("--dir", str(tmp_path / "in"))
    assert out.splitlines()[0] == "reports: 28 read, 0 new, 28 already stored, 0 refused" and code == 0


def test_a_stranger_sending_as_the_domain_is_flagged_with_exit_1(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_reports(tmp_path / "in", time.time(), stranger=40)
    code, out, _ = run("--dir", str(tmp_path / "in"), "--json")
    data = json.loads(out)
    assert code == 1
    assert data["flagged"] == [{"source_ip": STRANGER, "class": "unknown", "messages": 80}]
    assert data["sources"][STRANGER]["class"] == "unknown"
    assert not data["ramp"]["ready"] and "unknown source" in data["ramp"]["line"]


def test_our_hosts_failing_dmarc_is_critical(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_reports(tmp_path / "in", time.time(), ours_fail=20)
    code, out, _ = run("--dir", str(tmp_path / "in"))
    assert code == 2
    assert f"flagged: our host {HOST} had 40 messages fail DMARC: run `mailhost verify`" in out


def test_a_refused_report_is_named_and_warns(run, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write_reports(tmp_path / "in", time.time())
    (tmp_path / "in" / "zz.xml").write_bytes(b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]><feedback/>')
    code, out, _ = run("--dir", str(tmp_path / "in"))
    assert code == 1
    assert "  refused zz.xml: not a DMARC aggregate report: a DOCTYPE (entities are refused)" in out


@pytest.mark.parametrize(("args", "words"), [
    (["--imap-host", "imap.example.com", "--imap-user", "u"], "one of --password-command or --token-command"),
    (["--imap-host", "imap.example.com", "--password-command", "true"], "needs --imap-user"),
    (["--dir", "/nonexistent/dir"], "not a directory"),
])
def test_bad_options_are_named_before_anything_is_read(run, args: list[str], words: str) -> None:  # type: ignore[no-untyped-def]
    code, _, err = run(*args)
    assert code == 3 and words in err


def test_the_credential_command_gives_the_first_line_and_its_failures_never_show_output() -> None:
    printer = shlex.join([sys.executable, "-c", "print('s3cret-token'); print('second line')"])
    assert secret_from(printer, "--password-command") == "s3cret-token"
    failing = shlex.join([sys.executable, "-c", "print('s3cret-token'); raise SystemExit(4)"])
    with pytest.raises(CredentialError, match="--password-command: the command exited 4") as error:
        secret_from(failing, "--password-command")
    assert "s3cret" not in str(error.value)
    # Each refusal whole, as the admin reads it; the missing program named as the shell would quote it.
    refusals = {
        "'/nonexistent/my pass' show x": "--token-command: '/nonexistent/my pass' is not installed or not on PATH",
        shlex.join([sys.executable, "-c", "print()"]):
            "--token-command: the command printed no secret on its first line",
        "  ": "--token-command is empty: give a command that prints the secret, e.g. `pass show mail/dmarc`",
        "pass 'show": "--token-command: not a command line (No closing quotation)",
    }
    for command, words in refusals.items():
        with pytest.raises(CredentialError) as refused:
            secret_from(command, "--token-command")
        assert str(refused.value) == words
    # A command that never ends (a password manager waiting for a PIN nobody types) is stopped at the timeout.
    with pytest.raises(CredentialError) as hung:
        secret_from(shlex.join([sys.executable, "-c", "import time; time.sleep(30)"]), "--token-command", timeout=1)
    assert str(hung.value) == "--token-command: the command did not finish within 1 s"


def test_status_shows_unknown_senders_and_the_ramp_when_a_report_database_exists(tmp_path: Path) -> None:
    """`mailhost status` reads the database read-only (never creating one) and adds two lines, or a JSON key."""
    from mailhost.ops.hosts import run_status
    from mailhost.publish.plan import expected_from_settings
    from mailhost.publish.stack import load_stack_file
    from mailhost.reports import brief, ingest, store
    from mailhost.verify.dnsquery import ResolverSpec

    expected = expected_from_settings(load_stack_file(REPO_ROOT / "Pulumi.staging.yaml", require_secrets=False))
    spec = ResolverSpec(("127.0.0.1",), port=9, timeout=0.5)  # nothing answers there: SPF authorizes nobody
    missing = tmp_path / "none.sqlite"
    assert brief.brief(missing, expected, spec) is None and not missing.exists()
    write_reports(tmp_path / "in", time.time(), stranger=6)
    db = store.connect(tmp_path / "r.sqlite")
    ingest.from_directory(db, tmp_path / "in", DOMAIN, time.time())
    db.close()
    data = brief.brief(tmp_path / "r.sqlite", expected, spec)
    assert data is not None
    assert (data["unknown_sources"], data["unknown_source_messages"]) == (2, 2 * 10 * 14 + 12)  # relay + stranger
    lines = brief.lines(data)
    assert lines[0].endswith("2 unknown source(s) sent 292 message(s) as the domain: see `mailhost reports`")
    assert lines[1].startswith("DMARC ramp: not yet dmarc.policy from none to quarantine")
    printed: list[str] = []
    assert run_status([], None, 1.0, False, printed.append, (data, lines)) == 0
    assert printed == lines
    printed.clear()
    run_status([], None, 1.0, True, printed.append, (data, lines))
    assert json.loads(printed[0])["dmarc"]["unknown_source_messages"] == 292


def test_the_status_line_counts_reports_that_end_inside_its_14_days_to_the_second(tmp_path: Path) -> None:
    """A report ending exactly 14 days back is in the window; one ending a second earlier is not."""
    from mailhost.publish.plan import expected_from_settings
    from mailhost.publish.stack import load_stack_file
    from mailhost.reports import brief, ingest, store
    from mailhost.verify.dnsquery import ResolverSpec

    now = 1_796_600_000
    edge = now - 14 * DAY
    spoof = Judged(STRANGER, DOMAIN, "evil.example", "fail", "none", None, None, "fail", "none")
    folder = tmp_path / "in"
    folder.mkdir()
    for org, end, count in (("inside.example", edge, 3), ("outside.example", edge - 1, 5)):
        (folder / f"{org}.xml").write_bytes(
            aggregate_xml(org, f"dmarc@{org}", org, DOMAIN, "none", end - DAY + 1, end, {spoof: count}))
    db = store.connect(tmp_path / "r.sqlite")
    assert ingest.from_directory(db, folder, DOMAIN, now).new == 2
    db.close()
    expected = expected_from_settings(load_stack_file(REPO_ROOT / "Pulumi.staging.yaml", require_secrets=False))
    data = brief.brief(tmp_path / "r.sqlite", expected, ResolverSpec(("127.0.0.1",), port=9, timeout=0.5), now=now)
    assert data is not None and (data["unknown_sources"], data["unknown_source_messages"]) == (1, 3)
