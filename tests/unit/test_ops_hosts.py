"""`status` across hosts without SSH: where the hosts are (outputs, stack), the command sent, the admin
key, and what is printed for each host (the SSH call itself is stood in for; tests/real makes it)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import pytest

from mailhost.ops import hosts, status
from mailhost.publish import mailstats, plan, render
from mailhost.publish.stack import load_stack_file
from mailhost.records.expected import ExpectedError
from tests.unit.test_mailstats import report as collector_report

ROOT = Path(__file__).resolve().parents[2]
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
OUT = {"ipv4": "198.51.100.10", "sshUser": "admin", "sshPort": 2222, "sshHostKey": KEY + " comment"}


def staging() -> Any:
    return load_stack_file(ROOT / "Pulumi.staging.yaml", require_secrets=False)


def production() -> Any:
    return load_stack_file(ROOT / "Pulumi.production.yaml", require_secrets=False)


def test_outputs_give_each_host_with_its_pinned_key_and_the_stack_its_digests() -> None:
    found = hosts.targets({"hosts": {"jira": OUT}}, None, "x")
    assert found == [status.Target("jira", "198.51.100.10", 2222, "admin", KEY, {})]
    settings = staging()
    name = settings.hosts[0].name
    with_stack = hosts.targets({"hosts": {name: OUT}}, settings, "staging")[0]
    wanted = {f.path: f.digest for f in render.render_host(settings, settings.hosts[0], render.PLACEHOLDERS,
                                                           "staging") if not f.secret}
    assert with_stack.expected == wanted and render.COLLECTOR in wanted
    assert render.SETTINGS_ENV in wanted and not any(p.startswith("/etc/opendkim/keys") for p in wanted)


def test_a_stack_alone_names_its_adopted_hosts_and_refuses_ec2_ones() -> None:
    settings = staging()
    host = settings.hosts[0]
    assert host.existing is not None
    found = hosts.targets(None, settings, "staging")
    assert [(t.name, t.address, t.port, t.user, t.host_key) for t in found] == \
        [(host.name, host.existing.ipv4, host.ssh_port, host.user, host.existing.host_key)]
    wanted = {f.path: f.digest for f in render.render_host(settings, host, render.PLACEHOLDERS, "staging")
              if not f.secret}
    assert found[0].expected == wanted, "the stack alone still says what each file should hold (drift)"
    ec2 = production()
    with pytest.raises(hosts.StatusInputError, match=r"^host .+ is an EC2 host: its address and host key are "
                                                     r"stack outputs; run `pulumi stack output --json --stack "
                                                     r"production > outputs.json` and add --outputs outputs.json$"):
        hosts.targets(None, ec2, "production")
    with pytest.raises(hosts.StatusInputError, match=r"^no host to ask: give --outputs FILE"):
        hosts.targets({"hosts": {}}, None, "x")


@pytest.mark.parametrize(("out", "message"), [
    ("not an object", r"^the outputs of host jira are not an object"),
    ({**OUT, "sshHostKey": ""}, r"^the outputs of host jira lack sshHostKey: run `pulumi up` once"),
    ({k: v for k, v in OUT.items() if k != "ipv4"}, r"^the outputs of host jira lack ipv4:"),
    ({**OUT, "sshPort": "22"}, None),
])
def test_an_outputs_host_is_whole_or_refused_with_the_fix(out: Any, message: str | None) -> None:
    if message is None:
        assert hosts.targets({"hosts": {"jira": out}}, None, "x")[0].port == 22
        return
    with pytest.raises(hosts.StatusInputError, match=message):
        hosts.targets({"hosts": {"jira": out}}, None, "x")


def test_the_outputs_file_is_read_or_refused_with_how_to_write_it(tmp_path: Path) -> None:
    good = tmp_path / "out.json"
    good.write_text(json.dumps({"hosts": {"jira": OUT}, "verification": "{}"}))
    assert hosts.read_outputs(good)["hosts"]["jira"]["sshPort"] == 2222
    missing = tmp_path / "missing.json"
    with pytest.raises(hosts.StatusInputError, match=r"^--outputs .*missing\.json: .*; write it with `pulumi stack "
                                                     r"output --json > .*missing\.json`$"):
        hosts.read_outputs(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(hosts.StatusInputError, match=r"^--outputs .*broken\.json: Expecting"):
        hosts.read_outputs(broken)
    for text in ("[]", '{"hosts": []}', '{"other": 1}'):
        broken.write_text(text)
        with pytest.raises(hosts.StatusInputError, match=r"has no 'hosts' output: is it `pulumi stack output "
                                                         r"--json` of a jira-mailhost stack\?$"):
            hosts.read_outputs(broken)


def test_the_admin_key_comes_from_the_file_or_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = tmp_path / "id"
    key.write_text("KEY")
    assert hosts.admin_key(key) == "KEY"
    with pytest.raises(hosts.StatusInputError, match=r"^--key .*nothing: No such file or directory$"):
        hosts.admin_key(tmp_path / "nothing")
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    with pytest.raises(hosts.StatusInputError, match=r"^no admin key: give --key FILE"):
        hosts.admin_key(None)
    monkeypatch.setenv("SSH_AUTH_SOCK", "/run/agent")
    assert hosts.admin_key(None) is None


def test_the_command_sent_runs_the_collector_isolated_with_the_window_and_the_digests(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The collector's own text goes whole; it is checked quoted (a cheap search: shlex.split takes minutes
    # on the megabytes of mutmut's copy), and a small script with every shell-special character stands in
    # for it when the command is split back into its words.
    assert " " + shlex.quote(mailstats.own_source()) + " --json " in status.remote_command(1, {})
    script = "print('it''s')\n$HOME `id` \"q\" \\ ; exit 1 # & |\n"
    monkeypatch.setattr(mailstats, "own_source", lambda: script)
    command = status.remote_command(1.5, {"/etc/b": "b" * 64, "/etc/a": "a" * 64})
    argv = shlex.split(command)
    assert argv[:2] == ["sh", "-c"] and argv[3] == "jira-mailhost-status" and argv[4] == script
    assert argv[5:] == ["--json", "--hours", "1.5", "--expect", "/etc/a=" + "a" * 64, "--expect", "/etc/b=" + "b" * 64]
    wrapper = argv[2]
    assert 'exec python3 -I -c "$s" "$@"' in wrapper and 'exec sudo -n python3 -I -c "$s" "$@"' in wrapper
    assert "python3 -c" not in wrapper


def report(**changes: Any) -> dict[str, Any]:
    """A healthy host's report as the collector writes it today (the queue and log counts included)."""
    base = collector_report()
    base["queue"] = base["queue"] | {"unreadable": 0}
    base["log"] = base["log"] | {"skipped_lines": 0}
    return base | changes


def test_unreadable_queue_entries_and_log_lines_are_warnings_that_say_so() -> None:
    findings = status.assess(report(queue=report()["queue"] | {"unreadable": 2},
                                    log=report()["log"] | {"skipped_lines": 5}))
    assert [(f.level, f.what, f.fix) for f in findings] == [
        (status.WARNING, "2 queue entries could not be read and were not counted",
         "compare with `postqueue -p` on the host"),
        (status.WARNING, "5 line(s) of the mail log could not be read (an impossible time stamp, or far too long) "
                         "and were skipped", "check the host's clock and what writes the mail log"),
    ]
    assert status.assess(report()) == []


def test_each_host_is_asked_for_the_window_with_the_key_given(monkeypatch: pytest.MonkeyPatch) -> None:
    """--hours and --key reach every host's question as given (the window the collector counts over)."""
    asked: list[tuple[str, str | None, float]] = []

    def ask(target: hosts.Target, key: str | None, hours: float) -> dict[str, Any]:
        asked.append((target.name, key, hours))
        return report()

    monkeypatch.setattr(hosts, "ask", ask)
    found = hosts.targets({"hosts": {name: OUT for name in ("a", "b")}}, None, "x")
    assert hosts.run_status(found, "/keys/admin", 2.5, True, lambda _: None) == status.OK
    assert sorted(asked) == [("a", "/keys/admin", 2.5), ("b", "/keys/admin", 2.5)]


def test_what_is_printed_per_host_and_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"a": report(), "b": {"error": "b@198.51.100.11:22: Connection refused"},
               "c": report(services={"postfix": False, "opendkim": True})}
    monkeypatch.setattr(hosts, "ask", lambda target, key, hours: answers[target.name])
    found = hosts.targets({"hosts": {name: OUT for name in answers}}, None, "x")
    printed: list[str] = []
    assert hosts.run_status(found, None, 1, False, printed.append) == status.UNREACHABLE
    assert printed[0].startswith("a (jira): opendkim running, postfix running")
    assert "  => ok" in printed and "b: UNREACHABLE: b@198.51.100.11:22: Connection refused" in printed
    assert "  CRITICAL: postfix is not running: no mail leaves this host" in printed
    assert "    fix: start it (systemctl start postfix) and read why it stopped (journalctl -u postfix); " \
           "`pulumi up` also starts it" in printed
    assert printed[-1] == "  => critical"
    printed.clear()
    assert hosts.run_status(found, None, 1, True, printed.append) == status.UNREACHABLE
    assert len(printed) == 1
    document = json.loads(printed[0])
    assert (document["level"], document["exit_code"]) == ("unreachable", 3)
    assert document["hosts"]["a"] == {"level": "ok", "report": report(), "findings": []}
    assert document["hosts"]["b"] == {"level": "unreachable", "error": "b@198.51.100.11:22: Connection refused"}
    assert document["hosts"]["c"]["level"] == "critical"
    assert document["hosts"]["c"]["findings"][0] == {
        "level": "critical", "what": "postfix is not running: no mail leaves this host",
        "fix": "start it (systemctl start postfix) and read why it stopped (journalctl -u postfix); "
               "`pulumi up` also starts it"}


def test_a_stack_file_gives_verify_its_expectations_for_adopted_hosts_only() -> None:
    settings = staging()
    assert plan.expected_from_settings(settings) == plan.expected(settings, plan.stated_addresses(settings), {})
    with pytest.raises(ExpectedError, match=r"^host\(s\) .+ are EC2 instances whose addresses exist only after "
                                            r"deploy; use `pulumi stack output --json > out.json` and "
                                            r"`mailhost verify --outputs out.json`$"):
        plan.expected_from_settings(production())


def test_queue_findings_say_what_waits_and_what_to_do() -> None:
    queue = report()["queue"] | {"deferred": 4, "hold": 1, "oldest_age_seconds": 3600, "problem": "postqueue: down"}
    assert [(f.level, f.what, f.fix) for f in status.assess(report(queue=queue))] == [
        (status.CRITICAL, "the oldest queued message waits for 60 min",
         "see the causes below; `postqueue -p` shows each message's reason"),
        (status.WARNING, "the queue could not be read: postqueue: down", "check that Postfix is installed and running"),
        (status.WARNING, "4 message(s) deferred (Postfix retries them)", "see the causes below"),
        (status.WARNING, "1 message(s) on hold: Postfix will not send them",
         "release with `postsuper -H ALL` once the reason is gone"),
    ]


def test_ask_turns_each_way_a_host_fails_into_its_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    """`status` reports an unreachable host with why: the SSH error, the remote's last stderr line, or what
    was wrong with what it printed; a report comes back parsed."""
    from mailhost.ops import sshexec

    target = status.Target("jira", "198.51.100.20", 2222, "admin", "ssh-ed25519 AAAA", {})
    outcomes: list[Any] = []

    def fake_run(*args: Any, **kwargs: Any) -> sshexec.Result:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    monkeypatch.setattr(sshexec, "run", fake_run)
    outcomes.append(sshexec.HostKeyMismatch("198.51.100.20 presented another host key"))
    assert hosts.ask(target, None, 1) == {"error": "198.51.100.20 presented another host key"}
    outcomes.append(FileNotFoundError(2, "No such file or directory", "/home/a/.ssh/id"))
    assert hosts.ask(target, None, 1) == {"error": "[Errno 2] No such file or directory: '/home/a/.ssh/id'"}
    outcomes.append(sshexec.Result(1, "", "warning\npython3: not found\n"))
    assert hosts.ask(target, None, 1) == {"error": "admin@198.51.100.20:2222: python3: not found"}
    outcomes.append(sshexec.Result(255, "", ""))
    assert hosts.ask(target, None, 1) == {"error": "admin@198.51.100.20:2222: exit 255"}
    outcomes.append(sshexec.Result(0, "Welcome!\n", ""))
    assert hosts.ask(target, None, 1) == {"error": "jira: the host printed no report"}
    report = collector_report()
    outcomes.append(sshexec.Result(0, "motd\n" + json.dumps(report) + "\n", ""))
    assert hosts.ask(target, None, 1) == json.loads(json.dumps(report))


def test_a_stack_that_cannot_be_read_is_named_with_the_reason(tmp_path: Path) -> None:
    load_stack, StatusInputError = hosts.load_stack, hosts.StatusInputError
    missing = tmp_path / "Pulumi.gone.yaml"
    with pytest.raises(StatusInputError) as error:
        load_stack(str(missing))
    assert f"jira-mailhost:(stack file): cannot read {missing}: [Errno 2] No such file or directory" in str(error.value)
    broken = tmp_path / "Pulumi.broken.yaml"
    broken.write_text("config:\n  jira-mailhost:hosts: []\n")
    with pytest.raises(StatusInputError, match="jira-mailhost:domain: is required"):
        load_stack(str(broken))
    shipped = Path(__file__).resolve().parents[2] / "Pulumi.staging.yaml"
    assert load_stack(str(shipped)).domain == "staging.jira.example.com"


def test_outputs_of_an_older_version_name_what_they_lack_and_the_fix() -> None:
    with pytest.raises(hosts.StatusInputError) as error:
        hosts.output_target("jira", {"ipv4": "198.51.100.10", "sshUser": "admin", "sshPort": 22}, {})
    assert str(error.value) == ("the outputs of host jira lack sshHostKey: run `pulumi up` once with this version "
                                "(it exports them), then `pulumi stack output --json`")
