"""The canary's survivors of the mutation run, pinned by what a user sees: the exact text lines of
`mailhost canary`, its JSON, its Prometheus metrics, the verdicts read from a receiver's headers, the
probe message and the host's reply, and the DKIM alignment that decides the UNALIGNED cause."""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
import time
from pathlib import Path

import pytest

from mailhost.canary import causes, export, probe, verdicts
from mailhost.canary.run import Result

OURS = ["203.0.113.10", "2001:db8:5100::10"]
ALL_PASS = {"spf": "pass", "dkim": "pass", "dmarc": "pass"}


def judged(results: dict[str, str], tls: bool | None = True, dkim_domain: str | None = "example.com",
           selector: str | None = "jm1") -> verdicts.Verdicts:
    return verdicts.Verdicts(results, dkim_domain, selector, "mx.example.net", tls, None)


def read(headers: str) -> verdicts.Verdicts:
    return verdicts.read(headers.encode(), OURS)


def cause_lines(*found: causes.Cause) -> list[str]:
    return [line for c in found for line in (f"  cause: {c.what}", f"  fix:   {c.fix}")]


# --- causes: DKIM alignment with the stack's domain -------------------------------------------------


@pytest.mark.parametrize(("dkim_domain", "domain", "aligned"), [
    ("example.com", "example.com", True),
    ("mail.example.com", "example.com", True),  # a subdomain of the From domain signs: relaxed alignment
    ("example.com", "jira.example.com", True),  # the organisational domain signs for a subdomain stack
    ("badexample.com", "example.com", False),  # a suffix without the dot is another domain
    ("example.com", "notexample.com", False),
    ("mailer.example", "example.com", False),
])
def test_dkim_passing_for_a_parent_or_subdomain_is_aligned(dkim_domain: str, domain: str, aligned: bool) -> None:
    found = causes.causes(causes.INBOX, judged(ALL_PASS, dkim_domain=dkim_domain), domain)
    assert found == ([] if aligned else [causes.UNALIGNED])


# --- export: the text lines -------------------------------------------------------------------------


def test_the_text_shows_every_verdict_in_a_fixed_order_with_the_dkim_identity_and_tls() -> None:
    v = judged({"arc": "none", "dmarc": "pass", "dkim": "pass", "spf": "pass"})
    inbox = Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", 4.0, v)
    assert export.text_lines([inbox], "example.com", 120) == [
        "jira → canary@gmail.com: inbox after 4 s; spf=pass dkim=pass (example.com, s=jm1) dmarc=pass arc=none; TLS"]


def test_a_dkim_identity_without_a_selector_shows_the_domain_alone() -> None:
    """Microsoft names the signing domain but no selector: no `s=None` in what the admin reads."""
    v = judged({"dkim": "fail"}, selector=None)
    junk = Result("jira", "canary@outlook.com", "t", causes.JUNK, "Junk Email", 4.0, v)
    assert export.text_lines([junk], "example.com", 120)[0] == (
        "jira → canary@outlook.com: junk (Junk Email) after 4 s; dkim=fail (example.com); TLS")


def test_the_text_of_an_unreachable_probe_does_not_stop_the_ones_after_it() -> None:
    gone = Result("edge", "canary@yahoo.com", problem="mailbox canary@yahoo.com: cannot connect")
    inbox = Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", 3.0, judged(ALL_PASS))
    assert export.text_lines([gone, inbox], "example.com", 120) == [
        "edge → canary@yahoo.com: unreachable: mailbox canary@yahoo.com: cannot connect",
        "jira → canary@gmail.com: inbox after 3 s; spf=pass dkim=pass (example.com, s=jm1) dmarc=pass; TLS"]


@pytest.mark.parametrize(("delay", "shown"), [
    (120.0, " after 120 s"),  # exactly at the threshold is not late
    (120.4, " after 120 s (late)"),
    (4.0, " after 4 s"),
])
def test_late_is_only_said_past_the_threshold(delay: float, shown: str) -> None:
    inbox = Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", delay, judged(ALL_PASS))
    assert export.text_lines([inbox], "example.com", 120) == [
        f"jira → canary@gmail.com: inbox{shown}; spf=pass dkim=pass (example.com, s=jm1) dmarc=pass; TLS"]


def test_a_missing_probe_shows_no_delay_no_verdicts_and_the_missing_cause() -> None:
    gone = Result("jira", "canary@outlook.com", "t", causes.MISSING)
    assert export.text_lines([gone], "example.com", 120) == [
        "jira → canary@outlook.com: missing", *cause_lines(causes.MISSING_CAUSE)]


def test_junk_with_every_check_passing_names_the_reputation_cause_and_unknown_tls() -> None:
    junk = Result("jira", "canary@outlook.com", "t", causes.JUNK, "Junk Email", 9.0, judged(ALL_PASS, tls=None))
    assert export.text_lines([junk], "example.com", 120) == [
        "jira → canary@outlook.com: junk (Junk Email) after 9 s; spf=pass dkim=pass (example.com, s=jm1) "
        "dmarc=pass; TLS unknown", *cause_lines(causes.REPUTATION)]


def test_a_probe_without_authentication_results_over_plain_smtp_says_both() -> None:
    plain = Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", 2.0, judged({}, tls=False))
    assert export.text_lines([plain], "example.com", 120) == [
        "jira → canary@gmail.com: inbox after 2 s; no Authentication-Results; no TLS", *cause_lines(causes.NO_TLS)]


def test_a_failing_dkim_without_a_signing_domain_shows_no_identity() -> None:
    v = judged({"spf": "pass", "dkim": "fail"}, dkim_domain=None, selector=None)
    inbox = Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", 1.0, v)
    assert export.text_lines([inbox], "example.com", 120) == [
        "jira → canary@gmail.com: inbox after 1 s; spf=pass dkim=fail; TLS",
        *cause_lines(causes.VERDICT_CAUSES[("dkim", "fail")])]


# --- export: JSON and metrics -----------------------------------------------------------------------


def test_the_json_delay_is_kept_to_a_tenth_of_a_second() -> None:
    row = export.as_data([Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", 4.44, judged(ALL_PASS))],
                         "example.com", 120)["results"][0]
    assert row["delay_seconds"] == 4.4
    assert json.dumps(row["delay_seconds"]) == "4.4"


def test_the_metrics_of_a_run_with_a_missing_and_an_unreachable_probe() -> None:
    """Every sample, exactly: the delay to a tenth of a second, a missing probe with no verdicts counts no
    authentication failure, an unreachable one is only 'not reachable', earlier successes are kept."""
    good = Result("jira", "canary@gmail.com", "t", causes.INBOX, "INBOX", 9.44, judged(ALL_PASS))
    missing = Result("jira", "canary@outlook.com", "t", causes.MISSING)
    gone = Result("edge", "canary@yahoo.com", problem="mailbox canary@yahoo.com: cannot connect")
    text = export.metrics([good, missing, gone], 120, 1_800_000_000.7, {("old", "x@example.org"): 5})
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    p = "jira_mailhost_canary"
    assert samples == [
        f'{p}_reachable{{host="jira",mailbox="canary@gmail.com"}} 1',
        f'{p}_reachable{{host="jira",mailbox="canary@outlook.com"}} 1',
        f'{p}_reachable{{host="edge",mailbox="canary@yahoo.com"}} 0',
        f'{p}_placement{{host="jira",mailbox="canary@gmail.com",folder="inbox"}} 1',
        f'{p}_placement{{host="jira",mailbox="canary@gmail.com",folder="junk"}} 0',
        f'{p}_placement{{host="jira",mailbox="canary@gmail.com",folder="missing"}} 0',
        f'{p}_placement{{host="jira",mailbox="canary@outlook.com",folder="inbox"}} 0',
        f'{p}_placement{{host="jira",mailbox="canary@outlook.com",folder="junk"}} 0',
        f'{p}_placement{{host="jira",mailbox="canary@outlook.com",folder="missing"}} 1',
        f'{p}_delay_seconds{{host="jira",mailbox="canary@gmail.com"}} 9.4',
        f'{p}_auth_failures{{host="jira",mailbox="canary@gmail.com"}} 0',
        f'{p}_auth_failures{{host="jira",mailbox="canary@outlook.com"}} 0',
        f'{p}_last_success_timestamp_seconds{{host="jira",mailbox="canary@gmail.com"}} 1800000000',
        f'{p}_last_success_timestamp_seconds{{host="old",mailbox="x@example.org"}} 5',
        f"{p}_last_run_timestamp_seconds 1800000000",
    ]


def test_previous_successes_read_only_the_first_million_characters(tmp_path: Path) -> None:
    line = 'jira_mailhost_canary_last_success_timestamp_seconds{host="jira",mailbox="canary@gmail.com"} 1800000000'
    padding = "# x\n" * ((1_000_000 - len(line)) // 4)
    head = padding + "#" * (1_000_000 - len(padding) - len(line) - 1) + "\n" + line
    assert len(head) == 1_000_000
    path = tmp_path / "canary.prom"
    path.write_text(head + "7\n")  # the 1,000,001st character is never read
    assert export.previous_successes(path) == {("jira", "canary@gmail.com"): 1_800_000_000}


# --- probe: the message and the host's reply ----------------------------------------------------------


def test_the_probe_carries_its_fields_and_the_notification_text() -> None:
    before = time.time()
    made = probe.probe("jira", "jira@example.com", "canary@gmail.com", "example.com")
    after = time.time()
    assert (made.host, made.mailbox, made.sender) == ("jira", "canary@gmail.com", "jira@example.com")
    assert isinstance(made.sent_at, float) and before <= made.sent_at <= after, "sent now when no time is given"
    message = email.message_from_bytes(made.message, policy=email.policy.default)
    assert message.get_content() == (  # type: ignore[attr-defined]
        "A test notification from jira-mailhost on jira, to see whether Jira's mail reaches this mailbox's inbox. "
        "It is deleted automatically; nothing needs doing.\n")
    assert abs(email.utils.parsedate_to_datetime(message["Date"]).timestamp() - made.sent_at) < 2


def test_a_given_time_is_the_probes_send_time() -> None:
    made = probe.probe("jira", "jira@example.com", "canary@gmail.com", "example.com", now=1_800_000_000.5)
    assert made.sent_at == 1_800_000_000.5


def test_an_accepted_probe_without_a_queue_id_is_still_accepted() -> None:
    got = probe.read_reply(0, '{"step": "data", "code": 250, "reply": "2.0.0 Ok"}\n')
    assert got == probe.Submitted(True, None, "2.0.0 Ok")


@pytest.mark.parametrize("reply", ['["2.0.0 Ok: queued as 4XyZ12abCd"]', "1", "null"])
def test_a_reply_that_is_not_text_is_no_submission(reply: str) -> None:
    got = probe.read_reply(0, f'{{"step": "data", "code": 250, "reply": {reply}}}\n')
    assert got == probe.Submitted(False, None, "the host did not run the submission (exit 0)")


def test_a_refusal_shows_at_most_300_characters_of_the_reply_and_8_of_the_step() -> None:
    reply = "4.7.1 " + "y" * 394
    stdout = json.dumps({"step": "123456789", "code": 451, "reply": reply}) + "\n"
    got = probe.read_reply(2, stdout)
    assert got == probe.Submitted(False, None, f"Postfix refused at 12345678: 451 {reply[:300]}")
    assert len(got.detail) == len("Postfix refused at 12345678: 451 ") + 300


def _reply_line(length: int) -> str:
    base = json.dumps({"step": "data", "code": 250, "reply": "2.0.0 Ok: queued as 4XyZ12abCd "})
    line = json.dumps({"step": "data", "code": 250,
                       "reply": "2.0.0 Ok: queued as 4XyZ12abCd " + "x" * (length - len(base))})
    assert len(line) == length
    return line


def test_the_replys_json_line_is_read_up_to_2000_characters() -> None:
    assert probe.read_reply(0, _reply_line(2000) + "\n").queue_id == "4XyZ12abCd"
    assert probe.read_reply(0, _reply_line(2001) + "\n") == probe.Submitted(
        False, None, "the host did not run the submission (exit 0)"), "a longer line is cut, so it is no JSON"


# --- verdicts: what the receiver wrote ---------------------------------------------------------------


@pytest.mark.parametrize(("clauses", "identity"), [
    ("dkim=pass header.d=; spf=pass", (None, None)),  # an empty header.d is no signing domain
    ("spf=pass; dkim=pass header.d=example.com header.s=", ("example.com", None)),  # an empty selector is none
])
def test_empty_dkim_identity_properties_are_not_shown(clauses: str, identity: tuple[str | None, str | None]
                                                      ) -> None:
    v = read(f"Authentication-Results: mx.example.net; {clauses}\r\n\r\n")
    assert (v.results, (v.dkim_domain, v.dkim_selector)) == ({"dkim": "pass", "spf": "pass"}, identity)


def test_a_trailing_none_clause_is_no_verdict() -> None:
    v = read("Authentication-Results: mx.example.net; spf=pass smtp.mailfrom=example.com; none\r\n\r\n")
    assert (v.results, v.authserv) == ({"spf": "pass"}, "mx.example.net")


def test_an_authserv_id_outside_the_name_grammar_is_not_kept() -> None:
    v = read("Authentication-Results: mx!example.net; spf=pass\r\n\r\n")
    assert (v.results, v.authserv) == ({"spf": "pass"}, None)


def test_only_a_header_that_opens_with_a_verdict_is_read_as_an_unnamed_receivers() -> None:
    """Outlook's header opens with spf=…; one that opens with anything else and does not parse is skipped,
    and the next header down is the receiver's."""
    v = read("Authentication-Results: iprev=pass policy.iprev=203.0.113.10; dkim=pass header.d=example.com\r\n"
             "Authentication-Results: mx.example.net; dkim=fail header.d=example.com\r\n\r\n")
    assert (v.results, v.authserv, v.dkim_domain) == ({"dkim": "fail"}, "mx.example.net", "example.com")


def test_methods_the_canary_does_not_judge_and_bad_words_are_skipped_not_the_end() -> None:
    v = read("Authentication-Results: mx.example.net; compauth=pass reason=100; spf=passpasspasspasspasspass; "
             "dkim=pass header.d=example.com header.s=jm1; spf=fail smtp.mailfrom=example.com\r\n\r\n")
    assert (v.results, v.dkim_domain, v.dkim_selector) == ({"dkim": "pass", "spf": "fail"}, "example.com", "jm1")


@pytest.mark.parametrize("clauses", [
    "dkim=pass header.d=example.com header.s=jm1; dkim=fail header.d=other.example header.s=x",
    "dkim=fail header.d=other.example header.s=x; dkim=pass header.d=example.com header.s=jm1",
])
def test_of_several_dkim_signatures_a_passing_one_counts_with_its_identity(clauses: str) -> None:
    v = read(f"Authentication-Results: mx.example.net; {clauses}\r\n\r\n")
    assert (v.results, v.dkim_domain, v.dkim_selector) == ({"dkim": "pass"}, "example.com", "jm1")


def test_a_semicolon_inside_the_received_line_does_not_hide_its_date() -> None:
    v = read("Received: from jira (jira [203.0.113.10]) (envelope-from <jira@example.com>; helo jira) by "
             "mx.example.net with ESMTPS id 4Abc; Mon, 7 Dec 2026 03:00:00 +0000\r\n\r\n")
    assert (v.tls, v.received_at) == (True, 1796612400.0)


def test_our_hop_without_a_with_clause_is_not_tls() -> None:
    v = read("Received: from jira (jira [203.0.113.10]) by mx.example.net id 4Abc; "
             "Mon, 7 Dec 2026 03:00:00 +0000\r\n\r\n")
    assert (v.tls, v.received_at) == (False, 1796612400.0)


def test_our_ipv6_address_is_found_whatever_case_the_receiver_writes_it_in() -> None:
    v = read("Received: from jira (jira [2001:DB8:5100::10]) by mx.example.net with ESMTPS; "
             "Mon, 7 Dec 2026 03:00:00 +0000\r\n\r\n")
    assert (v.tls, v.received_at) == (True, 1796612400.0)
