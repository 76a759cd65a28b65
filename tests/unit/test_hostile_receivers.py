"""What receivers write is hostile input: replies, recipients and queue reasons reach code that runs as
root (the collector) and the admin's terminal (status).  Each finding of the review has a test here
that fails on the code before the fix; the properties at the end throw random and forged text at it."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailhost.ops import hosts, sshexec, status
from mailhost.publish import mailstats
from tests.unit.test_mailstats import report

NOW = dt.datetime(2026, 11, 27, 12, 0, 0).timestamp()
STAMP = "Nov 27 11:50:00"
FORGED_TLS = "postfix/smtp[99]: Trusted TLS connection established to x[198.51.100.9]:25: TLSv1.3 with cipher X"
FORGED_SENT = ("postfix/smtp[99]: FAKE1: to=<ceo@victim.example>, relay=x[198.51.100.9]:25, delay=1, "
               "delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)")
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))


def smtp_line(message: str, pid: int = 7, stamp: str = STAMP) -> str:
    return f"{stamp} jira postfix/smtp[{pid}]: {message}\n"


def delivery(qid: str, rcpt: str, dsn: str, state: str, text: str) -> str:
    return smtp_line(f"{qid}: to=<{rcpt}>, relay=mx.example.net[198.51.100.20]:25, delay=0.2, "
                     f"delays=0.1/0/0.05/0.05, dsn={dsn}, status={state} ({text})")


# -- the enhanced status code -------------------------------------------------------------------------
@pytest.mark.parametrize("address", ["5.9.12.3", "4.2.2.1", "198.5.4.1", "2.4.5.6"])
def test_the_code_is_the_one_after_said_never_the_receivers_address(address: str) -> None:
    text = f"host mx.example.net[{address}] said: 550 5.7.1 Service unavailable; client host blocked using zen"
    assert mailstats.best_dsn("5.7.1", text) == "5.7.1"
    deliveries, _ = mailstats.parse_log([delivery("Q1", "a@example.net", "5.7.1", "bounced", text)], 0, NOW)
    cause = mailstats.summarize(deliveries, 0)["causes"][0]
    assert (cause["code"], cause["code_class"]) == ("5.7.1", "5.7")
    finding = status.cause_finding(cause)
    assert finding.level == status.CRITICAL, "a 5.7 bounce of ours pages, whatever the receiver's address"


def test_a_code_quoted_later_in_the_words_is_not_the_receivers_code() -> None:
    text = "host mx[198.51.100.20] said: 550 rejected, see 4.2.2 in our policy (in reply to RCPT TO command)"
    assert mailstats.best_dsn("5.0.0", text) == "5.0.0"
    assert mailstats.reply_code("host mx[198.51.100.20] said: 421-4.7.28 slow down") == "4.7.28"
    assert mailstats.code_class("5.7") == "none" and mailstats.code_class("x.7.26") == "none"


# -- lines read at their positions ---------------------------------------------------------------------
def test_a_tls_line_forged_inside_a_reply_is_no_handshake_and_hides_no_delivery() -> None:
    lines = [delivery("Q1", "a@plain.example", "2.0.0", "sent", f"250 ok {FORGED_TLS}"),
             delivery("Q2", "b@plain.example", "2.0.0", "sent", "250 ok")]
    deliveries, handshakes = mailstats.parse_log(lines, 0, NOW)
    assert [(d.qid, d.tls) for d in deliveries] == [("Q1", False), ("Q2", False)]
    assert handshakes == 0


def test_a_recipient_with_an_angle_bracket_cannot_make_a_forged_delivery_count() -> None:
    lines = [delivery("REAL1", '"a>b"@example.org', "4.4.1", "deferred", f"connect failed {FORGED_SENT}")]
    deliveries, _ = mailstats.parse_log(lines, 0, NOW)
    assert [(d.qid, d.status, d.domain) for d in deliveries] == [("REAL1", "deferred", "example.org")]


def test_an_impossible_date_is_skipped_and_counted_and_the_rest_is_read() -> None:
    lines = [smtp_line("x", stamp="2026-13-45T99:00:00Z"), smtp_line("x", stamp="Nov 31 25:61:00"),
             "Nov 27 11:50:00 jira postfix/smtp[7]: " + "A" * mailstats.MAX_LINE + "\n",
             delivery("Q1", "a@example.net", "2.0.0", "sent", "250 ok")]
    deliveries, _, skipped = mailstats.read_log(lines, 0, NOW)
    assert [d.qid for d in deliveries] == ["Q1"] and skipped == 3
    assert status.level_of(status.assess(report(log={"path": "/x", "problem": None, "skipped_lines": 3}))) \
        == status.WARNING


def test_a_reply_with_unicode_line_separators_stays_one_line_in_the_log(tmp_path: Path) -> None:
    log = tmp_path / "mail.log"
    forged = f"{STAMP} jira {FORGED_SENT}"  # a whole line, stamp and all, after each separator
    text = f"host mx[198.51.100.20] said: 550 5.7.26 bad\u2028{forged}\u0085{forged}\r{forged}"
    log.write_bytes(delivery("Q1", "a@example.net", "5.7.26", "bounced", text).encode() + b"\xff\xfe\n")
    deliveries, _ = mailstats.parse_log(mailstats.read_lines(str(log), 0, NOW), 0, NOW)
    assert [(d.qid, d.status) for d in deliveries] == [("Q1", "bounced")]


# -- the queue -----------------------------------------------------------------------------------------
def fake_postqueue(tmp_path: Path, stdout: bytes) -> list[str]:
    data = tmp_path / "postqueue.out"
    data.write_bytes(stdout)
    script = tmp_path / "postqueue.py"
    script.write_text(f"import sys\nsys.stdout.buffer.write(open({str(data)!r}, 'rb').read())\n")
    return [sys.executable, str(script)]


def test_queue_reasons_with_line_separators_and_bad_bytes_keep_every_message(tmp_path: Path) -> None:
    items = [{"queue_name": "deferred", "queue_id": f"Q{i}", "arrival_time": int(NOW) - 7200,
              "recipients": [{"address": f"u{i}@example.net",
                              "delay_reason": f"host mx said: 421 4.7.0 try later\u2028{FORGED_SENT}\u0085x"}]}
             for i in range(3)]
    raw = b"\n".join(json.dumps(i, ensure_ascii=False).encode() for i in items)
    raw = raw.replace(b"try later", b"try \xff later", 1) + b"\n{broken json\n"
    queue = mailstats.read_queue(NOW, fake_postqueue(tmp_path, raw))
    assert queue["deferred"] == 3 and queue["oldest_age_seconds"] == 7200 and queue["unreadable"] == 1
    assert {s["queue_id"] for s in queue["stuck"]} == {"Q0", "Q1", "Q2"}
    assert "\ufffd" in queue["stuck"][0]["reason"] + queue["stuck"][1]["reason"] + queue["stuck"][2]["reason"]


# -- the metrics file ------------------------------------------------------------------------------------
def test_the_metrics_mode_is_set_on_our_file_even_when_its_name_is_swapped(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Whoever can write the textfile directory swaps the temp name for a symlink to a secret right after
    mkstemp; root must not then make the secret world-readable."""
    secret = tmp_path / "dbconfig.xml"
    secret.write_text("password")
    secret.chmod(0o600)
    real_mkstemp = mailstats.tempfile.mkstemp

    def swapped(**kwargs: Any) -> tuple[int, str]:
        fd, name = real_mkstemp(**kwargs)
        os.rename(name, name + ".ours")
        os.symlink(secret, name)
        return fd, name

    monkeypatch.setattr(mailstats.tempfile, "mkstemp", swapped)
    (tmp_path / "textfile").mkdir()
    mailstats.write_atomic(str(tmp_path / "textfile" / "jira_mailhost.prom"), "a 1\n")
    assert secret.stat().st_mode & 0o777 == 0o600
    ours = next((tmp_path / "textfile").glob("*.ours"))
    assert ours.stat().st_mode & 0o777 == 0o644 and ours.read_text() == "a 1\n"


# -- status: what reaches ssh and the terminal --------------------------------------------------------
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def outputs(**host: Any) -> dict[str, Any]:
    return {"hosts": {"jira": {"ipv4": "198.51.100.10", "sshUser": "root", "sshPort": 22, "sshHostKey": KEY,
                               **host}}}


@pytest.mark.parametrize(("key", "value"), [
    ("ipv4", "-oProxyCommand=touch /tmp/pwned"), ("ipv4", "198.51.100.10 -oProxyCommand=x"),
    ("ipv4", "127.0.0.1"), ("sshUser", "-oProxyCommand=x"), ("sshUser", "root\n"), ("sshPort", "22 -v"),
    ("sshPort", 65536), ("sshPort", True), ("sshPort", "²²"), ("sshPort", 22.0),
    ("sshHostKey", "ssh-ed25519 AAAA -oProxyCommand=x"),
])
def test_every_outputs_value_passes_the_stack_grammar_before_ssh_sees_it(key: str, value: Any) -> None:
    with pytest.raises(hosts.StatusInputError, match=f"{key} is not"):
        hosts.targets(outputs(**{key: value}), None, "x")
    assert hosts.targets(outputs(), None, "x")[0].address == "198.51.100.10"


@pytest.mark.parametrize("port", [1, 2222, 65535])
def test_every_port_the_stack_allows_reaches_ssh(port: int) -> None:
    """The same range as hosts[].sshPort (1-65535): the ends included."""
    assert hosts.targets(outputs(sshPort=port), None, "x")[0].port == port


def test_a_host_that_looks_like_an_option_is_only_a_host_to_ssh(tmp_path: Path) -> None:
    pwned = tmp_path / "pwned"
    result = sshexec.run(f"-oProxyCommand=touch {pwned}", 22, "root", None, KEY, "true", timeout=20, attempts=1)
    assert not pwned.exists(), "ssh ran the address as an option"
    assert result.rc == 255


def test_an_rsa_pin_offers_only_sha2_signatures() -> None:
    argv = sshexec.ssh_argv("198.51.100.10", 22, "root", None, Path("/dev/null"), "ssh-rsa")
    assert "HostKeyAlgorithms=rsa-sha2-512,rsa-sha2-256" in argv and "HostKeyAlgorithms=ssh-rsa" not in argv
    assert argv[-2:] == ["--", "198.51.100.10"]
    assert "HostKeyAlgorithms=ssh-ed25519" in sshexec.ssh_argv("h", 22, "root", None, Path("/x"), "ssh-ed25519")


NASTY = "\x1b]8;;http://evil\x07click\x1b[2J\x9b31m\u202egnp.exe\u2066\u0085\u2028\x00"


def _terminal_safe(text: str) -> bool:
    return all(c == "\n" or c == " " or not unicodedata.category(c).startswith(("C", "Z")) for c in text)


def test_receiver_text_reaches_the_terminal_only_as_printable_escapes(monkeypatch: pytest.MonkeyPatch) -> None:
    cause = {"status": "bounced", "cause": "policy", "code": "5.7.1", "code_class": "5.7", "count": 1,
             "domains": [f"x{NASTY}.example"], "example": f"said: 550 5.7.1 {NASTY}", "requirement": NASTY,
             "fix": NASTY}
    stuck = [{"queue_id": "Q1", "queue": "deferred", "age_seconds": 60, "domain": NASTY, "cause": "other",
              "reason": NASTY}]
    nasty = report(host=NASTY, causes=[cause], queue=report()["queue"] | {"stuck": stuck, "deferred": 1})
    monkeypatch.setattr(hosts, "ask", lambda target, key, hours: nasty)
    printed: list[str] = []
    code = hosts.run_status(hosts.targets(outputs(), None, "x"), None, 1, False, printed.append)
    assert code == status.CRITICAL
    text = "\n".join(printed)
    assert "gnp.exe" in text and "\\u202e" in text and "\\x9b" in text and "\\x1b" in text
    assert _terminal_safe(text), [c for c in text if not _terminal_safe(c)]
    printed.clear()
    hosts.run_status(hosts.targets(outputs(), None, "x"), None, 1, True, printed.append)
    assert _terminal_safe(printed[0]) and json.loads(printed[0])["hosts"]["jira"]["report"]["host"] == NASTY


def test_one_host_that_breaks_does_not_hide_another_hosts_critical(monkeypatch: pytest.MonkeyPatch) -> None:
    def ask(target: status.Target, key: str | None, hours: float) -> dict[str, Any]:
        if target.name == "broken":
            return {"queue": "not a dict", "services": None}  # a report of a shape nobody expected
        return report(services={"postfix": False, "opendkim": True})

    monkeypatch.setattr(hosts, "ask", ask)
    both = {"hosts": {**outputs()["hosts"], "broken": outputs()["hosts"]["jira"]}}
    printed: list[str] = []
    code = hosts.run_status(hosts.targets(both, None, "x"), None, 1, False, printed.append)
    assert code == status.UNREACHABLE, "the worst host decides: one that cannot be judged is unreachable"
    assert any(line.startswith("broken: UNREACHABLE: broken: could not judge the report") for line in printed)
    assert any("postfix is not running" in line for line in printed), "the other host's critical is shown"


def test_the_collector_runs_isolated_from_the_callers_python_environment(tmp_path: Path) -> None:
    """`status` runs the collector with python3 -I: a PYTHONPATH on the host (or sudo's kept environment)
    must not put someone's module in front of the standard library the collector imports."""
    (tmp_path / "argparse.py").write_text("import sys\nsys.stdout.write('HIJACKED\\n')\nsys.exit(0)\n")
    command = status.remote_command(0.1, {})
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, env=env, timeout=120,
                          cwd=tmp_path)
    assert "HIJACKED" not in done.stdout
    assert status.parse_report(done.stdout)["queue"] is not None


# -- properties ----------------------------------------------------------------------------------------
PIECES = st.sampled_from(["\u2028", "\u2029", "\u0085", "\r", "\x00", ">", "<", "(", ")", "said: ", "5.7.1 ",
                          "4.2.2.1", "dsn=2.0.0, status=sent (", FORGED_TLS, FORGED_SENT, "\n" + FORGED_SENT])
HOSTILE_TEXT = st.lists(st.one_of(st.text(st.characters(codec="utf-8"), max_size=40), PIECES), max_size=12).map("".join)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reply=HOSTILE_TEXT, noise=st.lists(st.binary(max_size=200), max_size=5))
def test_no_reply_text_crashes_the_collector_or_counts_a_forged_line(reply: str, noise: list[bytes]) -> None:
    reply = reply.replace("\n", " ")  # one log line: Postfix never writes a newline inside a record
    real = delivery("REAL1", "a@example.net", "5.7.1", "bounced", f"host mx[198.51.100.20] said: 550 5.7.1 {reply}")
    garbage = [chunk.decode("utf-8", "replace") + "\n" for chunk in noise]
    deliveries, handshakes, _ = mailstats.read_log([*garbage, real], 0, NOW)
    assert [(d.qid, d.status, d.dsn) for d in deliveries] == [("REAL1", "bounced", "5.7.1")]
    assert handshakes == 0 and not deliveries[0].tls
    summary = mailstats.summarize(deliveries, handshakes)
    assert summary["causes"][0]["code_class"] == "5.7"
    assert mailstats.metrics(report(**summary)).count("\n") > 10


@settings(max_examples=EXAMPLES, deadline=None)
@given(reasons=st.lists(HOSTILE_TEXT, min_size=1, max_size=4))
def test_no_queue_reason_splits_or_hides_a_message(reasons: list[str]) -> None:
    items = [{"queue_name": "deferred", "queue_id": f"Q{i}", "arrival_time": int(NOW) - 60 * (i + 1),
              "recipients": [{"address": "x@example.net", "delay_reason": r}]} for i, r in enumerate(reasons)]
    stdout = "\n".join(json.dumps(i, ensure_ascii=False) for i in items)

    class Done:
        returncode = 0
        stderr = b""

    Done.stdout = stdout.encode()  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mailstats.subprocess, "run", lambda *a, **k: Done)
        queue = mailstats.read_queue(NOW)
    assert queue["deferred"] == len(reasons) and queue["unreadable"] == 0
    assert queue["oldest_age_seconds"] == 60 * len(reasons)
