"""The canary's judgement without a network: what receivers write (Gmail-, Microsoft- and hostile-shaped
headers) read into verdicts, the causes and exit codes, the remote submission's reply, the Junk folder
found the way servers announce it, the metrics, and the settings and CLI refusals before anything is sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from mailhost.canary import causes, export, probe, readback, verdicts
from mailhost.canary.run import Result
from mailhost.cli import app as cli_app
from mailhost.publish.stack import parse_settings
from mailhost.settings.config import ConfigError

OURS = ["203.0.113.10", "2001:db8:5100::10"]

GMAIL = (
    "Delivered-To: canary@gmail.com\r\n"
    "Received: by 2002:a05:6a10:1234:b0:5ee:1111:2222 with SMTP id abc; Mon, 7 Dec 2026 03:00:05 -0800 (PST)\r\n"
    "ARC-Authentication-Results: i=1; mx.google.com; dkim=pass header.i=@example.com header.s=jm1-jira\r\n"
    "Authentication-Results: mx.google.com;\r\n"
    "       dkim=pass header.i=@example.com header.s=jm1-jira header.b=AbCd;\r\n"
    "       spf=pass (google.com: domain of jira@example.com designates 203.0.113.10 as permitted sender)"
    " smtp.mailfrom=jira@example.com;\r\n"
    "       dmarc=pass (p=QUARANTINE sp=QUARANTINE dis=NONE) header.from=example.com\r\n"
    "Received: from jira.example.com (jira.example.com. [203.0.113.10])\r\n"
    "        by mx.google.com with ESMTPS id x1si123.2026.12.07.03.00.04\r\n"
    "        for <canary@gmail.com>\r\n"
    "        (version=TLS1_3 cipher=TLS_AES_256_GCM_SHA384 bits=256/256);\r\n"
    "        Mon, 07 Dec 2026 03:00:04 -0800 (PST)\r\n"
    "Subject: jira-mailhost canary jmc-0123456789abcdef01234567\r\n\r\n")

MICROSOFT = (
    "Authentication-Results: spf=pass (sender IP is 203.0.113.10) smtp.mailfrom=example.com; dkim=fail "
    "(signature did not verify) header.d=example.com;dmarc=pass action=none header.from=example.com;"
    "compauth=pass reason=100\r\n"
    "Received: from jira.example.com (203.0.113.10) by AM0PR01MB1234.outlook.office365.com (10.1.2.3) "
    "with Microsoft SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384) id 15.20.1; "
    "Mon, 7 Dec 2026 11:00:09 +0000\r\n\r\n")


def test_gmail_shaped_headers_give_every_verdict_the_tls_hop_and_its_time() -> None:
    v = verdicts.read(GMAIL.encode(), OURS)
    assert v.results == {"dkim": "pass", "spf": "pass", "dmarc": "pass"}
    assert (v.dkim_domain, v.dkim_selector, v.authserv) == ("example.com", "jm1-jira", "mx.google.com")
    assert v.tls is True, "the hop from our address, not Google's internal SMTP hop on top"
    assert v.received_at == 1796641204.0


def test_microsoft_shaped_headers_without_authserv_id_still_read() -> None:
    """Outlook.com writes no authserv-id (RFC 8601 wants one): its results are read all the same."""
    v = verdicts.read(MICROSOFT.encode(), OURS)
    assert v.tls is True and v.received_at == 1796641209.0
    assert v.results == {"spf": "pass", "dkim": "fail", "dmarc": "pass"}
    assert (v.dkim_domain, v.authserv) == ("example.com", verdicts.UNNAMED)


@pytest.mark.parametrize(("first", "word"), [("spf=fail", "fail"), ("dkim=none", "none")])
def test_a_first_clause_without_properties_is_a_verdict_not_the_authserv_id(first: str, word: str) -> None:
    """Without an authserv-id, authres would read a bare leading `spf=fail` as the id and drop that failure."""
    method = first.split("=")[0]
    rest = {"spf": "dkim=pass header.d=example.com header.s=jm1; dmarc=pass header.from=example.com",
            "dkim": "spf=pass smtp.mailfrom=example.com; dmarc=pass header.from=example.com"}[method]
    v = verdicts.read(f"Authentication-Results: {first}; {rest}\r\n\r\n".encode(), OURS)
    assert v.results[method] == word and v.authserv == verdicts.UNNAMED, v
    assert causes.exit_code("inbox", v, False) != 0, "a failing verdict is never an OK run"


def test_the_topmost_parseable_header_is_the_receivers_own() -> None:
    forged_below = ("Authentication-Results: mx.example.net; dkim=fail header.d=example.com\r\n"
                    "Authentication-Results: attacker.example; dkim=pass header.d=example.com; dmarc=pass\r\n\r\n")
    assert verdicts.read(forged_below.encode(), OURS).results == {"dkim": "fail"}


@pytest.mark.parametrize("value", [
    "mx.example.net; dkim=pa\x1bss header.d=example.com",
    "mx.example.net; dkim=passpasspasspasspasspass header.d=example.com",
    "mx.example.net; dkim=pass header.d=ex\x1b[2Jample.com header.s=s\x07",
    "; ; ;",
    "x" * 20_000,
])
def test_hostile_authentication_results_never_reach_the_verdicts_unchecked(value: str) -> None:
    v = verdicts.read(f"Authentication-Results: {value}\r\n\r\n".encode(errors="surrogateescape"), OURS)
    assert all(verdicts.WORD.fullmatch(w) for w in v.results.values())
    assert v.dkim_domain is None or verdicts.NAME.fullmatch(v.dkim_domain)
    assert v.dkim_selector is None or verdicts.SELECTOR.fullmatch(v.dkim_selector)
    assert "pass" not in v.results.values() or "\x1b" not in value, "text with escape codes is not a verdict"


@pytest.mark.parametrize(("received", "tls"), [
    ("from jira (jira [203.0.113.10]) by mx.example.net with ESMTPS; Mon, 7 Dec 2026 03:00:00 +0000", True),
    ("from jira (jira [203.0.113.10]) by mx.example.net with ESMTPSA; Mon, 7 Dec 2026 03:00:00 +0000", True),
    ("from jira (jira [203.0.113.10]) by mx.example.net with ESMTP; Mon, 7 Dec 2026 03:00:00 +0000", False),
    ("from jira (jira [203.0.113.10]) by mx.example.net with ESMTPA; Mon, 7 Dec 2026 03:00:00 +0000", False),
    ("from jira (jira [2001:db8:5100::10]) by mx.example.net with UTF8SMTPS; Mon, 7 Dec 2026 03:00:00 +0000", True),
    ("from other (other [203.0.113.100]) by mx.example.net with ESMTPS; Mon, 7 Dec 2026 03:00:00 +0000", None),
    ("from jira (jira [203.0.113.10]) by mx.example.net with ESMTPS; not a date", True),
])
def test_the_hop_from_our_address_says_whether_tls_carried_it(received: str, tls: bool | None) -> None:
    v = verdicts.read(f"Received: {received}\r\n\r\n".encode(), OURS)
    assert v.tls is tls
    assert (v.received_at is not None) is (tls is not None and "not a date" not in received)


def judged(results: dict[str, str], tls: bool | None = True, dkim_domain: str | None = "example.com"
           ) -> verdicts.Verdicts:
    return verdicts.Verdicts(results, dkim_domain, "jm1", "mx", tls, None)


ALL_PASS = {"spf": "pass", "dkim": "pass", "dmarc": "pass"}


@pytest.mark.parametrize(("placement", "v", "late", "code", "fix"), [
    ("inbox", judged(ALL_PASS), False, causes.OK, None),
    ("inbox", judged(ALL_PASS), True, causes.LATE, None),
    ("inbox", judged(ALL_PASS | {"arc": "none"}), False, causes.OK, None),
    ("inbox", judged(ALL_PASS | {"dkim": "fail"}), False, causes.BAD, "mailhost verify --only dkim"),
    ("inbox", judged(ALL_PASS | {"spf": "softfail"}), False, causes.BAD, "mailhost verify --only spf"),
    ("inbox", judged(ALL_PASS | {"dmarc": "fail"}), False, causes.BAD, "fromAddress"),
    ("inbox", judged(ALL_PASS | {"arc": "fail"}), False, causes.BAD, "forwarding address"),
    ("inbox", judged(ALL_PASS, dkim_domain="other.example"), False, causes.OK, "dkimSelector"),
    ("inbox", judged(ALL_PASS, tls=False), False, causes.OK, "TLS ratio"),
    ("junk", judged(ALL_PASS), False, causes.BAD, "blocklists"),
    ("junk", judged(ALL_PASS | {"dkim": "none"}), False, causes.BAD, "is opendkim up?"),
    ("missing", None, False, causes.BAD, "mailhost status"),
    ("inbox", None, False, causes.BAD, "mailhost status"),  # no headers were read: nothing says it passed
])
def test_each_placement_and_verdict_gives_its_exit_code_and_fix(placement: str, v: verdicts.Verdicts | None,
                                                                late: bool, code: int, fix: str | None) -> None:
    assert causes.exit_code(placement, v, late) == code
    found = causes.causes(placement, v, "example.com")
    if fix is None:
        assert found == []
    else:
        assert any(fix in c.fix for c in found), found


def test_every_cause_in_the_table_names_a_fix() -> None:
    for (method, result), cause in causes.VERDICT_CAUSES.items():
        assert cause.what and cause.fix, (method, result)
        assert causes.causes("inbox", judged({method: result}), "example.com")[0] == cause


@pytest.mark.parametrize(("rc", "stdout", "ok", "detail"), [
    (0, '{"step": "data", "code": 250, "reply": "2.0.0 Ok: queued as 4XyZ12abCd"}\n', True, "queued as 4XyZ12abCd"),
    (2, '{"step": "rcpt", "code": 554, "reply": "5.7.1 <x@y>: Relay access denied"}\n', False,
     "Postfix refused at rcpt: 554 5.7.1"),
    (1, "Traceback (most recent call last):\n  ConnectionRefusedError\n", False, "did not run the submission"),
    (0, '{"step": "data", "code": "250", "reply": 1}\n', False, "did not run the submission"),
    (255, "", False, "(exit 255)"),
    # a refusal is a refusal whatever the exit code says: the step and code decide, both at once
    (0, '{"step": "rcpt", "code": 554, "reply": "5.7.1 <x@y>: Relay access denied"}\n', False,
     "Postfix refused at rcpt: 554 5.7.1"),
    (0, '{"step": "data", "code": 451, "reply": "4.7.1 Service unavailable - try again later"}\n', False,
     "Postfix refused at data: 451 4.7.1"),
])
def test_the_hosts_reply_is_read_at_its_known_place(rc: int, stdout: str, ok: bool, detail: str) -> None:
    got = probe.read_reply(rc, stdout)
    assert got.ok is ok and detail in got.detail
    assert (got.queue_id == "4XyZ12abCd") is ok


def test_the_probe_carries_its_token_and_the_command_quotes_every_address() -> None:
    made = probe.probe("jira", "jira@example.com", "canary@gmail.com", "example.com", now=1_800_000_000)
    assert probe.TOKEN.fullmatch(made.token)
    text = made.message.decode()
    head = text.split("\n\n", 1)[0].splitlines()
    assert head[:5] == ["From: Jira <jira@example.com>", "To: canary@gmail.com",
                        f"Subject: jira-mailhost canary {made.token}", "Date: Fri, 15 Jan 2027 08:00:00 -0000",
                        f"Message-ID: <{made.token}@example.com>"], "each header as Jira writes it, name case too"
    command = probe.submit_command("jira@example.com", "canary@gmail.com")
    assert command.startswith("/usr/bin/python3 -I -c ") and command.endswith(" jira@example.com canary@gmail.com")
    assert probe.new_token() != probe.new_token()


class FakeImap:
    def __init__(self, lines: list[Any]):
        self.lines = lines

    def list(self) -> tuple[str, list[Any]]:
        return "OK", self.lines


@pytest.mark.parametrize(("lines", "junk"), [
    ([b'(\\HasNoChildren) "/" INBOX', b'(\\HasNoChildren \\Junk) "/" "Courrier ind&AOk-sirable"'],
     "Courrier ind&AOk-sirable"),
    ([b'(\\HasNoChildren) "/" INBOX', b'(\\HasChildren \\Noselect) "/" "[Gmail]"',
      b'(\\HasNoChildren) "/" "[Gmail]/Spam"'], "[Gmail]/Spam"),
    ([b'(\\HasNoChildren) "/" INBOX', b'(\\HasNoChildren) "/" "Junk Email"'], "Junk Email"),
    ([b'(\\HasNoChildren) "." INBOX', b'(\\HasNoChildren) "." INBOX.spam'], None),
    ([b'(\\HasNoChildren) "/" INBOX', (b'(\\Junk) "/" {5}', b"Spam\x1b")], None),
])
def test_the_junk_folder_is_the_one_the_server_flags_or_a_usual_name(lines: list[Any], junk: str | None) -> None:
    assert readback.junk_folder(FakeImap(lines)) == junk  # type: ignore[arg-type]
    assert readback.junk_folder(FakeImap(lines), "Quarantine") == "Quarantine"  # type: ignore[arg-type]


def test_metrics_keep_the_last_success_across_runs(tmp_path: Path) -> None:
    good = Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", 4.0, judged(ALL_PASS))
    junk = Result("jira", "canary@outlook.com", "t", causes.JUNK, "Junk", 9.04, judged(ALL_PASS))
    first = export.metrics([good, junk], 120, 1_800_000_000, {})
    path = tmp_path / "canary.prom"
    path.write_text(first)
    assert export.previous_successes(path) == {("jira", "canary@gmail.com"): 1_800_000_000}
    later = Result("jira", "canary@gmail.com", problem="mailbox canary@gmail.com: cannot connect")
    second = export.metrics([later, junk], 120, 1_800_003_600, export.previous_successes(path))
    lines = second.splitlines()
    assert 'jira_mailhost_canary_last_success_timestamp_seconds{host="jira",mailbox="canary@gmail.com"} 1800000000' \
        in lines, "an unreachable run keeps the old success: the staleness alert sees its age"
    assert 'jira_mailhost_canary_reachable{host="jira",mailbox="canary@gmail.com"} 0' in lines
    assert 'jira_mailhost_canary_placement{host="jira",mailbox="canary@outlook.com",folder="junk"} 1' in lines
    assert "jira_mailhost_canary_last_run_timestamp_seconds 1800003600" in lines
    assert 'jira_mailhost_canary_delay_seconds{host="jira",mailbox="canary@outlook.com"} 9' in lines, \
        "the delay of each mailbox reached, to a tenth of a second, labelled as the delay alert reads it"



def test_auth_failures_count_the_failing_verdicts_and_leave_arc_none_out() -> None:
    """Most receivers write arc=none for mail that no forwarder touched: that is no failure."""
    mixed = Result("jira", "a@example.org", "t", causes.INBOX, "INBOX", 1.0,
                   judged({"spf": "softfail", "dkim": "fail", "dmarc": "pass", "arc": "none"}))
    clean = Result("jira", "b@example.org", "t", causes.INBOX, "INBOX", 1.0, judged(ALL_PASS | {"arc": "none"}))
    lines = export.metrics([mixed, clean], 120, 1_800_000_000, {}).splitlines()
    assert 'jira_mailhost_canary_auth_failures{host="jira",mailbox="a@example.org"} 2' in lines
    assert 'jira_mailhost_canary_auth_failures{host="jira",mailbox="b@example.org"} 0' in lines


BOX = {"address": "canary@gmail.com", "imapHost": "imap.gmail.com", "user": "canary@gmail.com",
       "passwordCommand": "pass show mail/canary"}


def production(**extra: Any) -> dict[str, Any]:
    return {"domain": "example.com", "environment": "production", "hosts": [{"name": "jira", "existing": {
        "ipv4": "198.51.100.10", "ipv4Ptr": "external",
        "hostKey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBxq7Z4jFPcNFkx+1udVSIvOMuXHTPCLKklOXNlryv7"}}], **extra}


@pytest.mark.parametrize(("box", "words"), [
    (BOX | {"tokenCommand": "az account get-access-token"}, "give exactly one of passwordCommand"),
    ({k: v for k, v in BOX.items() if k != "passwordCommand"}, "give exactly one of passwordCommand"),
    (BOX | {"imapHost": "-oProxyCommand=x"}, "canary.mailboxes[0].imapHost"),
    (BOX | {"address": "a b@gmail.com"}, "canary.mailboxes[0].address"),
    (BOX | {"passwordCommand": "pass\nshow"}, "canary.mailboxes[0].passwordCommand"),
    (BOX | {"imapPort": 0}, "canary.mailboxes[0].imapPort"),
    (BOX | {"junkFolder": ""}, "canary.mailboxes[0].junkFolder"),
])
def test_a_bad_canary_mailbox_is_refused_naming_the_setting(box: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=r"(?s)jira-mailhost:canary\.mailboxes") as error:
        parse_settings(production(canary={"mailboxes": [box]}), require_secrets=False)
    assert words in str(error.value)


def test_a_good_canary_mailbox_is_read() -> None:
    box = parse_settings(production(canary={"mailboxes": [BOX | {"imapHost": "2001:DB8::25"}]}),
                         require_secrets=False).canary.mailboxes[0]
    assert (box.imap_host, box.imap_port, box.password_command) == ("2001:db8::25", 993, "pass show mail/canary")


def stack_file(tmp_path: Path, values: dict[str, Any]) -> Path:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(yaml.safe_dump({"config": {f"jira-mailhost:{k}": v for k, v in values.items()}}))
    return path


@pytest.mark.parametrize(("values", "words"), [
    (production(), "the stack has no canary.mailboxes"),
    (production(environment="staging", rerouteTo="qa@example.com", canary={"mailboxes": [BOX]}),
     "this stack reroutes all mail to qa@example.com, so a probe to canary@gmail.com would land there"),
])
def test_the_cli_refuses_before_sending(tmp_path: Path, values: dict[str, Any], words: str) -> None:
    cli_app._register()
    result = CliRunner().invoke(cli_app.app, ["canary", "--stack", str(stack_file(tmp_path, values)),
                                              "--key", "/dev/null"])
    assert result.exit_code == 3 and words in result.stderr, result.stderr


def test_each_metric_family_says_what_it_is_once() -> None:
    """HELP and TYPE of every family, exactly: what node_exporter serves and an operator reads in Grafana."""
    good = Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", 4.0, judged(ALL_PASS))
    headers = [ln for ln in export.metrics([good], 120, 1_800_000_000, {}).splitlines() if ln.startswith("#")]
    assert headers == [
        "# HELP jira_mailhost_canary_reachable 1 when the host took the probe and the mailbox could be read.",
        "# TYPE jira_mailhost_canary_reachable gauge",
        "# HELP jira_mailhost_canary_placement 1 for where the last probe landed: inbox, junk or missing.",
        "# TYPE jira_mailhost_canary_placement gauge",
        "# HELP jira_mailhost_canary_delay_seconds Seconds from submission on the host to arrival in the mailbox.",
        "# TYPE jira_mailhost_canary_delay_seconds gauge",
        "# HELP jira_mailhost_canary_auth_failures Verdicts other than pass in the receiver's Authentication-Results.",
        "# TYPE jira_mailhost_canary_auth_failures gauge",
        "# HELP jira_mailhost_canary_last_success_timestamp_seconds When a probe last reached the inbox with every "
        "verdict passing.",
        "# TYPE jira_mailhost_canary_last_success_timestamp_seconds gauge",
        "# HELP jira_mailhost_canary_last_run_timestamp_seconds When the canary last ran (Unix time).",
        "# TYPE jira_mailhost_canary_last_run_timestamp_seconds gauge",
    ]



def test_the_text_says_where_each_probe_landed_how_late_and_why() -> None:
    inbox = Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", 4.0, judged(ALL_PASS))
    late = Result("jira", "canary@outlook.com", "t", causes.JUNK, "Junk", 200.0, judged(ALL_PASS))
    gone = Result("jira", "canary@yahoo.com", problem="mailbox canary@yahoo.com: cannot connect")
    lines = export.text_lines([inbox, late, gone], "example.com", 120)
    assert lines[0].startswith("jira → canary@gmail.com: inbox after 4 s") and "(late)" not in lines[0]
    assert lines[1].startswith("jira → canary@outlook.com: junk (Junk) after 200 s (late)")
    assert lines[-1] == "jira → canary@yahoo.com: unreachable: mailbox canary@yahoo.com: cannot connect"


def test_the_json_holds_each_probe_with_its_verdicts_and_the_causes_for_the_stacks_domain() -> None:
    """`mailhost canary --json`: the causes are judged against the stack's domain (DKIM under another
    domain is named), an unreachable probe has none, and each row carries its exit code."""
    other = Result("jira", "canary@gmail.com", "t", causes.JUNK, "Junk", 4.04,
                   judged(ALL_PASS, dkim_domain="mailer.example"), queue_id="4Xyz")
    gone = Result("jira", "canary@yahoo.com", problem="mailbox canary@yahoo.com: cannot connect")
    data = export.as_data([other, gone], "example.com", 120)
    assert data == {"results": [
        {"host": "jira", "mailbox": "canary@gmail.com", "placement": "junk", "folder": "Junk", "delay_seconds": 4.0,
         "queue_id": "4Xyz", "verdicts": {**ALL_PASS, "dkim_domain": "mailer.example", "dkim_selector": "jm1",
                                         "tls": True},
         "causes": [{"what": causes.UNALIGNED.what, "fix": causes.UNALIGNED.fix}],
         "unreachable": None, "deleted": False, "exit": causes.BAD},
        {"host": "jira", "mailbox": "canary@yahoo.com", "placement": None, "folder": None, "delay_seconds": None,
         "queue_id": None, "verdicts": None, "causes": [], "unreachable": "mailbox canary@yahoo.com: cannot connect",
         "deleted": False, "exit": causes.UNREACHABLE}]}
    aligned = export.as_data([other], "mailer.example", 120)["results"][0]
    assert aligned["causes"] == [{"what": causes.REPUTATION.what, "fix": causes.REPUTATION.fix}]
