"""`mailhost status` pinned down where mutation testing found it loose: the arguments of the one SSH call
(address, port, user, admin key, pinned host key, command, time limit, attempts), the exact messages a user
reads for bad outputs and unreachable hosts, and the exact findings and summary lines of a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mailhost.ops import hosts, sshexec, status
from mailhost.publish import mailstats, render
from mailhost.publish.stack import load_stack_file
from tests.unit.test_mailstats import report as collector_report

ROOT = Path(hosts.__file__).resolve().parents[2]  # the project, wherever this file is run from
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
OUT = {"ipv4": "198.51.100.10", "sshUser": "admin", "sshPort": 2222, "sshHostKey": KEY + " comment"}
TARGET = status.Target("jira", "198.51.100.20", 2222, "admin", KEY, {"/etc/postfix/main.cf": "a" * 64})


def report(**changes: Any) -> dict[str, Any]:
    """A healthy host's report as the collector writes it today (the queue and log counts included)."""
    base = collector_report()
    base["queue"] = base["queue"] | {"unreadable": 0}
    base["log"] = base["log"] | {"skipped_lines": 0, "forged_lines": 0}
    return base | changes


# --- hosts.ask: the SSH call carries the target's address, login and pinned key -------------------------------


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Each sshexec.run call as (args, kwargs); the answers are queued in calls[0] (a list)."""
    monkeypatch.setattr(mailstats, "own_source", lambda: "print('collector')")  # a small stand-in script
    answers: list[Any] = []
    recorded: list[Any] = [answers]

    def fake_run(*args: Any, **kwargs: Any) -> sshexec.Result:
        recorded.append((args, kwargs))
        return answers.pop(0)

    monkeypatch.setattr(sshexec, "run", fake_run)
    return recorded


def test_ask_dials_the_target_with_its_pinned_key_three_times_at_most_within_two_minutes(calls: list[Any]) -> None:
    calls[0].append(sshexec.Result(0, json.dumps(report()) + "\n", ""))
    assert hosts.ask(TARGET, "PRIVATE KEY", 1.5) == report()
    command = status.remote_command(1.5, {"/etc/postfix/main.cf": "a" * 64})
    assert calls[1:] == [(("198.51.100.20", 2222, "admin", "PRIVATE KEY", KEY, command),
                          {"timeout": 120, "attempts": 3})]
    assert "--hours 1.5 --expect /etc/postfix/main.cf=" + "a" * 64 in command


def test_ask_passes_its_time_limit_and_the_agent_choice(calls: list[Any]) -> None:
    calls[0].append(sshexec.Result(0, json.dumps(report()) + "\n", ""))
    hosts.ask(TARGET, None, 24, timeout=30)
    assert calls[1:] == [(("198.51.100.20", 2222, "admin", None, KEY, status.remote_command(24, TARGET.expected)),
                          {"timeout": 30, "attempts": 3})]


def test_ask_names_the_last_stderr_line_or_the_exit_code(calls: list[Any]) -> None:
    calls[0].extend([sshexec.Result(1, "", "one\ntwo\nsudo: a password is required\n"),
                     sshexec.Result(1, "", "Permission denied (publickey).\n"),
                     sshexec.Result(97, "", "  \n")])
    assert hosts.ask(TARGET, None, 1) == {"error": "admin@198.51.100.20:2222: sudo: a password is required"}
    assert hosts.ask(TARGET, None, 1) == {"error": "admin@198.51.100.20:2222: Permission denied (publickey)."}
    assert hosts.ask(TARGET, None, 1) == {"error": "admin@198.51.100.20:2222: exit 97"}


def test_a_report_that_cannot_be_judged_names_the_host_and_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosts, "ask", lambda target, key, hours: {"queue": {}})
    assert hosts.judge(TARGET, None, 1) == {"level": status.UNREACHABLE,
                                            "error": "jira: could not judge the report (KeyError: 'services')"}


# --- the admin key ---------------------------------------------------------------------------------------------


def test_without_key_file_or_agent_the_message_names_both(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(hosts.StatusInputError) as error:
        hosts.admin_key(None)
    assert str(error.value) == ("no admin key: give --key FILE (the sshPrivateKey of the stack) or start an SSH "
                                "agent holding it (SSH_AUTH_SOCK)")


# --- output_target: every value of the outputs checked, every problem named ----------------------------------


def refused(name: Any, out: Any) -> str:
    with pytest.raises(hosts.StatusInputError) as error:
        hosts.output_target(name, out, {})
    return str(error.value)


def test_outputs_that_are_not_an_object_are_refused_with_the_host_name_cut_at_80() -> None:
    assert refused("jira", ["not", "an", "object"]) == (
        "the outputs of host jira are not an object: is the file `pulumi stack output --json` of a jira-mailhost "
        "stack?")
    long_name = "n" * 79 + "\x1b" + "m" * 20  # escaped first (\x1b is 4 characters), then cut
    assert refused(long_name, None) == (
        "the outputs of host " + "n" * 79 + "\\" + " are not an object: is the file `pulumi stack output --json` of "
        "a jira-mailhost stack?")
    assert refused("x" * 81, None).startswith("the outputs of host " + "x" * 80 + " are not an object")


def test_outputs_lacking_several_values_name_each() -> None:
    assert refused("jira", {"sshUser": "admin", "sshPort": 22}) == (
        "the outputs of host jira lack ipv4, sshHostKey: run `pulumi up` once with this version (it exports them), "
        "then `pulumi stack output --json`")


def test_outputs_with_every_value_wrong_list_every_problem() -> None:
    bad = {"ipv4": "10.0.0.1", "sshUser": "Root", "sshPort": "99999", "sshHostKey": "not a key"}
    assert refused("Jira_1", bad) == (
        "the outputs of host Jira_1 are not what this program exports (its name is not a host name; ipv4 is not a "
        "public IPv4 address; sshUser is not a Unix user name; sshPort is not a port number; sshHostKey is not an "
        "OpenSSH public key); write them again with `pulumi stack output --json`")


@pytest.mark.parametrize(("change", "problem"), [
    ({"ipv4": "-oProxyCommand=sh"}, "ipv4 is not a public IPv4 address"),
    ({"sshUser": ["admin"]}, "sshUser is not a Unix user name"),
    ({"sshPort": 65536}, "sshPort is not a port number"),
    ({"sshHostKey": 12345}, "sshHostKey is not an OpenSSH public key"),  # not text at all: refused, not a crash
    ({"sshHostKey": ["ssh-ed25519", KEY.split()[1]]}, "sshHostKey is not an OpenSSH public key"),
])
def test_one_wrong_output_value_is_named_alone(change: dict[str, Any], problem: str) -> None:
    assert refused("jira", OUT | change) == (
        f"the outputs of host jira are not what this program exports ({problem}); write them again with "
        "`pulumi stack output --json`")


def test_a_host_name_that_is_no_dns_label_is_named_alone() -> None:
    assert refused("-jira", OUT) == (
        "the outputs of host -jira are not what this program exports (its name is not a host name); write them "
        "again with `pulumi stack output --json`")


def test_good_outputs_give_the_pinned_key_without_its_comment() -> None:
    assert hosts.output_target("jira", OUT, {"/a": "b"}) == status.Target("jira", "198.51.100.10", 2222, "admin",
                                                                          KEY, {"/a": "b"})


# --- targets: the stack named on the command line decides the files expected ---------------------------------


def test_the_stack_name_given_decides_the_expected_files_and_unknown_hosts_expect_none() -> None:
    settings = load_stack_file(ROOT / "Pulumi.staging.yaml", require_secrets=False)
    host = settings.hosts[0]
    assert settings.environment == "staging"
    found = hosts.targets({"hosts": {host.name: OUT}}, settings, "blue")[0]
    wanted = {f.path: f.digest for f in render.render_host(settings, host, render.PLACEHOLDERS, "blue")
              if not f.secret}
    assert found.expected == wanted
    assert wanted != hosts.stack_expected(settings, host, "staging"), "the push id names the stack"
    stranger = hosts.targets({"hosts": {"other": OUT}}, settings, "staging")
    assert stranger == [status.Target("other", "198.51.100.10", 2222, "admin", KEY, {})]


# --- run_status --json: one stable document ----------------------------------------------------------------------


def test_the_json_document_is_indented_by_two_with_sorted_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hosts, "ask", lambda target, key, hours: {"error": "a@198.51.100.10:2222: refused"})
    printed: list[str] = []
    found = hosts.targets({"hosts": {"a": OUT}}, None, "x")
    assert hosts.run_status(found, None, 1, True, printed.append, dmarc=({"z": 1, "b": 2}, [])) == status.UNREACHABLE
    assert printed == ['{\n'
                       '  "dmarc": {\n'
                       '    "b": 2,\n'
                       '    "z": 1\n'
                       '  },\n'
                       '  "exit_code": 3,\n'
                       '  "hosts": {\n'
                       '    "a": {\n'
                       '      "error": "a@198.51.100.10:2222: refused",\n'
                       '      "level": "unreachable"\n'
                       '    }\n'
                       '  },\n'
                       '  "level": "unreachable"\n'
                       '}']


# --- status: findings and lines --------------------------------------------------------------------------------


def test_ages_past_two_hours_are_tenths_of_an_hour() -> None:
    queue = report()["queue"] | {"oldest_age_seconds": 7381}
    [finding] = status.assess(report(queue=queue))
    assert finding.what == "the oldest queued message waits for 2.1 h"
    assert status.summary_lines("j", report(queue=queue))[1] == "  queue: 0 active, 0 deferred, 0 hold; oldest 2.1 h"


def test_a_report_without_a_log_section_is_judged_on_the_rest() -> None:
    without_log = {k: v for k, v in report().items() if k != "log"}
    assert status.assess(without_log) == []
    queue = report()["queue"] | {"hold": 1}
    assert [f.what for f in status.assess(without_log | {"queue": queue})] == [
        "1 message(s) on hold: Postfix will not send them"]


def test_forged_journal_entries_say_where_to_look() -> None:
    findings = status.assess(report(log=report()["log"] | {"forged_lines": 3}))
    assert findings == [status.Finding(
        status.WARNING, "3 journal entr(ies) name a Postfix delivery agent but came from another user's process; "
                        "not counted",
        "find who writes them: `journalctl -o verbose SYSLOG_FACILITY=2` on the host shows each entry's _UID and "
        "_COMM")]


def cause(domains: list[str], requirement: str = "", example: str = "said: no") -> dict[str, Any]:
    return {"status": "bounced", "cause": "ptr", "code": "5.7.25", "code_class": "5.7", "count": 2,
            "domains": domains, "example": example, "requirement": requirement, "fix": "add a PTR record"}


def test_a_cause_names_three_domains_then_dots() -> None:
    three = ["a.net", "b.net", "c.net"]
    assert status.cause_finding(cause(["a.net"])) == status.Finding(
        status.CRITICAL, "2 bounced (5.7.25, ptr) to a.net: said: no", "add a PTR record")
    assert status.cause_finding(cause(three)).what == "2 bounced (5.7.25, ptr) to a.net, b.net, c.net: said: no"
    assert status.cause_finding(cause([*three, "d.net"])).what == \
        "2 bounced (5.7.25, ptr) to a.net, b.net, c.net ...: said: no"


def test_a_cause_shows_its_example_cut_at_160_and_its_requirement_when_known() -> None:
    example = "".join(f"{i % 10}" for i in range(200))
    assert status.cause_finding(cause(["a.net"], example=example)).what == \
        "2 bounced (5.7.25, ptr) to a.net: " + example[:160]
    assert len(example[:160]) == 160
    assert status.cause_finding(cause(["a.net"], requirement="a PTR naming the host")).what == \
        "2 bounced (5.7.25, ptr) to a.net: said: no | requirement: a PTR naming the host"


def test_a_report_without_a_queue_is_refused_by_name() -> None:
    with pytest.raises(ValueError) as error:
        status.parse_report('motd\n{"host": "jira"}\n')
    assert str(error.value) == "the host's report has no queue"


@pytest.mark.parametrize("value", [{"sent": "1", "cap": 5}, {"sent": 1}, [1, 5], {"sent": -1, "cap": 5},
                                   {"sent": 1, "cap": 0}])
def test_a_malformed_relay_day_is_refused_by_name(value: Any) -> None:
    with pytest.raises(ValueError) as error:
        status.relay_day(value)
    assert str(error.value) == "the host's report has a malformed relay_day"


def stuck(n: int, reason: str) -> dict[str, Any]:
    return {"queue_id": f"Q{n}", "queue": "deferred", "age_seconds": 600 - n, "domain": "example.net",
            "cause": "waiting", "reason": reason}


def test_at_most_five_stuck_messages_are_shown_with_their_reason_cut_at_120_or_their_queue() -> None:
    reason = "".join(f"{i % 10}" for i in range(130))
    six = [stuck(0, reason), stuck(1, "")] + [stuck(n, "421 busy") for n in (2, 3, 4, 5)]
    queue = report()["queue"] | {"stuck": six}
    lines = status.summary_lines("j", report(queue=queue))
    assert lines[5:] == [
        "  queued Q0 to example.net for 10 min: " + reason[:120],
        "  queued Q1 to example.net for 9 min: deferred",
        "  queued Q2 to example.net for 9 min: 421 busy",
        "  queued Q3 to example.net for 9 min: 421 busy",
        "  queued Q4 to example.net for 9 min: 421 busy",
    ]


def test_tls_without_any_trust_count_shows_no_parentheses() -> None:
    tls = report()["tls"] | {"ratio": 0.5, "messages_per_handshake": None,
                             "sent_by_trust": dict.fromkeys(mailstats.TRUST_LEVELS, 0)}
    assert status.summary_lines("j", report(tls=tls))[4] == "  TLS: 50 % of sent mail"
