"""files/scripts/apply.sh and teardown.sh against Debian's Postfix + OpenDKIM, over real SSH.

Each test gets a fresh namespace host (tests/real/conftest.py: ssh_host) whose /etc, /var
and /run are private, and talks to it only as the program does: the exact command
strings of components/postfix.py, the bundle on stdin, the host key pinned.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import re
import secrets
import shlex
import subprocess
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import dkim
import pytest

from components.postfix import apply_command, readable_config, teardown_command
from mailhost.lab.sshhost import SshHost
from mailhost.ops import hosts, sshexec
from mailhost.ops.status import Target
from mailhost.publish import bundle, render
from mailhost.publish.bundle import RenderedFile
from mailhost.publish.render import SCRIPTS, TLS_POLICY_MAP, HostSecrets, render_host
from mailhost.publish.stack import parse_settings
from mailhost.records.dkim import public_key_b64
from mailhost.records.dkim import txt_value as dkim_txt
from mailhost.settings.config import Settings

pytestmark = [pytest.mark.real]

RELAY_PASSWORD = "lab-" + secrets.token_urlsafe(18)  # generated per run
FQDN = "jira.lab.example"
TIMINGS: dict[str, float] = {}


RELAY = {"mode": "relay", "relay": {"host": "smarthost.lab.example", "port": 587, "username": "jira"}}


def settings_for(host: SshHost, direct: bool = False, **overrides: Any) -> Settings:
    existing = {"ipv4": host.address, "hostKey": host.host_key, **({"ipv4Ptr": "external"} if direct else {})}
    delivery = overrides.pop("delivery", {"mode": "direct"} if direct else RELAY)
    if delivery.get("mode", "direct") == "direct":
        # These hosts have no DNS (no lab root for a validating resolver): the DANE modes are pushed by
        # tests/real/test_lab_dnssec.py and test_lab_mta_sts.py, in the lab that has it.
        delivery = {"outboundTls": "opportunistic", **delivery}
    values: dict[str, Any] = {
        "environment": "staging",
        "domain": "lab.example",
        "hosts": [{"name": "jira", "existing": existing}],
        "delivery": delivery,
        "rerouteTo": "qa@lab.example",
        "drainSeconds": 3,
        "maillogFile": "/var/log/mail.log",
        **overrides,
    }
    return parse_settings(values, {"sshPrivateKey", "relayPassword"})


def files_for(host: SshHost, dkim_pem: str, direct: bool = False, **overrides: Any) -> list[RenderedFile]:
    settings = settings_for(host, direct, **overrides)
    return render_host(settings, settings.hosts[0], HostSecrets(dkim_pem, RELAY_PASSWORD), stack="lab")


def edit(files: list[RenderedFile], path: str, change: Any) -> list[RenderedFile]:
    return [replace(f, content=change(f.content)) if f.path == path else f for f in files]


def remote(host: SshHost, command: str, stdin: str | None = None, timeout: float = 120) -> sshexec.Result:
    return sshexec.run(host.address, host.port, host.user, host.private_key, host.host_key, command, stdin,
                       timeout=timeout)


def push(host: SshHost, files: list[RenderedFile]) -> sshexec.Result:
    """As the program pushes: the script, the readable config as comment lines, the bundle on stdin."""
    return remote(host, apply_command(readable_config(files)), bundle.pack(files))


def lab_teardown_command(settings: Settings) -> str:
    """The teardown of the (first) host's push in stack "lab", as the program's delete runs it."""
    return teardown_command(settings, settings.hosts[0], "lab")


def teardown(host: SshHost, settings: Settings) -> sshexec.Result:
    return remote(host, lab_teardown_command(settings))


def timed(name: str, action: Any) -> Any:
    started = time.monotonic()
    result = action()
    TIMINGS[name] = round(time.monotonic() - started, 2)
    print(f"timing {name}: {TIMINGS[name]}s")
    return result


def out(result: sshexec.Result) -> str:
    return result.stdout + result.stderr


def live(host: SshHost, parameter: str) -> str:
    result = remote(host, f"postconf -h {shlex.quote(parameter)}")
    assert result.ok, out(result)
    return result.stdout.strip()


def stats(host: SshHost, paths: list[str]) -> dict[str, str]:
    """inode, mtime, mode and owner of each live file, read on the host."""
    result = remote(host, "stat -c '%n %i %Y.%y %a %U %G' " + " ".join(paths))
    assert result.ok, out(result)
    return {line.split()[0]: line for line in result.stdout.splitlines()}


def smtp_banner(host: SshHost) -> str:
    probe = ("exec 3<>/dev/tcp/127.0.0.1/25 && IFS= read -r -t 5 line <&3 && echo \"$line\" && "
             "printf 'QUIT\\r\\n' >&3")
    result = remote(host, f"timeout 8 bash -c {shlex.quote(probe)}")
    return result.stdout.strip()


def listener_process(host: SshHost, port: int) -> str:
    result = remote(host, f"ss -Hltnp 'sport = :{port}'")
    return result.stdout


def assert_serving(host: SshHost, fqdn: str = FQDN) -> None:
    status = remote(host, "postfix status")
    assert status.ok, out(status)
    assert smtp_banner(host).startswith(f"220 {fqdn} ESMTP"), smtp_banner(host)
    milter = remote(host, "stat -c '%U %a' /run/opendkim/opendkim.sock; id -nG postfix")
    owner_mode, groups = milter.stdout.splitlines()
    assert owner_mode == "opendkim 770" and "opendkim" in groups.split(), milter.stdout


def master_pid(host: SshHost) -> str:
    return remote(host, "cat /var/spool/postfix/pid/master.pid").stdout.strip()


def test_first_push_makes_postfix_and_opendkim_live(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    files = files_for(ssh_host, dkim_private_key_pem)
    result = timed("first push", lambda: push(ssh_host, files))
    assert result.rc == 0, out(result)
    assert "applied config" in result.stdout
    shown = remote(ssh_host, "postconf -n")
    assert shown.ok
    values = dict(line.split(" = ", 1) for line in shown.stdout.splitlines() if " = " in line)
    assert values["myhostname"] == FQDN
    assert values["relayhost"] == "[smarthost.lab.example]:587"
    assert values["smtpd_milters"] == "unix:/run/opendkim/opendkim.sock"
    assert values["inet_interfaces"] == "loopback-only"
    assert_serving(ssh_host)
    # opendkim really signs with the pushed key: its own key test reads the config and the key.
    dkim = remote(ssh_host, "opendkim -n -x /etc/opendkim.conf && echo config-ok")
    assert dkim.stdout.strip() == "config-ok", out(dkim)


def test_same_bundle_again_changes_nothing(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    files = files_for(ssh_host, dkim_private_key_pem)
    assert push(ssh_host, files).ok
    paths = [f.path for f in files] + ["/etc/postfix/sasl_passwd.db"]
    before, pid_before = stats(ssh_host, paths), master_pid(ssh_host)
    result = timed("no-op push", lambda: push(ssh_host, files))
    assert result.rc == 0, out(result)
    assert "unchanged" in result.stdout and "applied" not in result.stdout
    assert stats(ssh_host, paths) == before
    assert master_pid(ssh_host) == pid_before
    assert_serving(ssh_host)
    # A run cut off after the switch left the files but never confirmed them live: reload, touch nothing.
    assert remote(ssh_host, "rm /var/lib/jira-mailhost/applied").ok
    resumed = push(ssh_host, files)
    assert resumed.rc == 0, out(resumed)
    assert "was already on disk" in resumed.stdout and "reloaded" in resumed.stdout
    assert stats(ssh_host, paths) == before
    assert master_pid(ssh_host) == pid_before
    assert push(ssh_host, files).stdout.startswith("jira-mailhost: unchanged")


def test_changed_value_is_live_and_the_rest_untouched(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    files = files_for(ssh_host, dkim_private_key_pem)
    assert push(ssh_host, files).ok
    others = ["/etc/opendkim.conf", "/etc/postfix/master.cf", "/etc/postfix/sasl_passwd"]
    before = stats(ssh_host, others)
    dkim_pid = remote(ssh_host, "cat /run/opendkim/opendkim.pid").stdout
    changed = files_for(ssh_host, dkim_private_key_pem, messageSizeLimit=10_485_760)
    result = timed("changed push", lambda: push(ssh_host, changed))
    assert result.rc == 0, out(result)
    assert "1 file(s) changed: /etc/postfix/main.cf" in result.stdout
    assert live(ssh_host, "message_size_limit") == "10485760"
    assert live(ssh_host, "relayhost") == "[smarthost.lab.example]:587"
    assert stats(ssh_host, others) == before
    assert remote(ssh_host, "cat /run/opendkim/opendkim.pid").stdout == dkim_pid  # not restarted
    assert_serving(ssh_host)


FOREIGN_INET, INET_99 = re.compile(r"(?m)^inet_interfaces = .*$"), "inet_interfaces = 203.0.113.99"
BAD_STATIC = {
    "unknown main.cf parameter": ("/etc/postfix/main.cf", lambda c: c + "jira_mailhost_typo = yes\n",
                                  "main.cf is not valid"),
    "bad master.cf line": ("/etc/postfix/master.cf", lambda c: c + "broken inet n - n - - nosuchdaemon\n",
                           "master.cf is not valid"),
    "bad opendkim.conf": ("/etc/opendkim.conf", lambda c: c + "NoSuchOpendkimSetting yes\n",
                          "opendkim.conf is not valid"),
    # Postfix's tools refuse an address the host does not have, so this never reaches the switch.
    "inet_interfaces not on the host": ("/etc/postfix/main.cf", lambda c: FOREIGN_INET.sub(INET_99, c),
                                        "no local interface found for 203.0.113.99"),
    # What a value that slipped past the grammars could do; the host refuses it by itself.
    "a parameter the templates do not write": ("/etc/postfix/main.cf",
                                               lambda c: c + "always_bcc = spy@elsewhere.test\n",
                                               "main.cf sets other parameters than the templates write"),
    "reroute off": ("/etc/postfix/main.cf", lambda c: c.replace("virtual_alias_maps = regexp:", "virtual_alias_maps = "
                                                                "hash:"), "virtual_alias_maps is not the reroute map"),
    "$ in the reroute address": ("/etc/postfix/jira-mailhost-reroute", lambda c: c.replace("qa@", "qa$@"),
                                 "the reroute map sends"),
    "reroute rule that misses addresses": ("/etc/postfix/jira-mailhost-reroute", lambda c: c.replace("/@/", "/^qa@/"),
                                           "the reroute map sends"),
    "a second password entry": ("/etc/postfix/sasl_passwd", lambda c: c + "[other.test]:587 jira:pw\n",
                                "sasl_passwd must hold exactly one entry"),
}


@pytest.fixture(scope="module")
def pushed_shared_host(ssh_host_shared: SshHost, dkim_private_key_pem: str) -> SshHost:
    result = push(ssh_host_shared, files_for(ssh_host_shared, dkim_private_key_pem))
    assert result.ok, out(result)
    return ssh_host_shared


@pytest.mark.parametrize("case", sorted(BAD_STATIC))
def test_invalid_bundle_is_rejected_before_anything_changes(pushed_shared_host: SshHost, dkim_private_key_pem: str,
                                                            case: str) -> None:
    host = pushed_shared_host
    files = files_for(host, dkim_private_key_pem)
    path, change, message = BAD_STATIC[case]
    managed = [f.path for f in files]
    before, pid_before = stats(host, managed), master_pid(host)
    result = push(host, edit(files, path, change))
    assert result.rc == 1, out(result)
    assert message in result.stderr
    assert "the previous configuration is still live" in result.stderr
    assert stats(host, managed) == before
    assert master_pid(host) == pid_before
    assert_serving(host)
    assert push(host, files).stdout.startswith("jira-mailhost: unchanged")


def hold_port(host: SshHost, port: int) -> None:
    """Something else listens on 127.0.0.1:port inside the host (killed with the host)."""
    ready = f"/run/holder-{port}.ready"
    holder = (f"import socket,time;s=socket.socket();s.bind(('127.0.0.1',{port}));s.listen();"
              f"open('{ready}','w').close();time.sleep(600)")
    subprocess.Popen(host.nsenter(["python3", "-c", holder]), start_new_session=True)
    deadline = time.monotonic() + 10
    while not host.upper(ready).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert host.upper(ready).exists()


def _milter_port_taken(host: SshHost, dkim_pem: str) -> list[RenderedFile]:
    hold_port(host, 8892)
    return edit(files_for(host, dkim_pem), "/etc/opendkim.conf",
                lambda c: c.replace("local:/run/opendkim/opendkim.sock", "inet:8892@127.0.0.1"))


def _smtpd_port_taken(host: SshHost, dkim_pem: str) -> list[RenderedFile]:
    hold_port(host, 2525)
    return edit(files_for(host, dkim_pem), "/etc/postfix/master.cf",
                lambda c: re.sub(r"(?m)^smtp +inet ", "127.0.0.1:2525 inet ", c))


BAD_RUNTIME = {
    "milter port already taken": (_milter_port_taken,
                                  "opendkim is not running (port 8892 is already in use by python3)"),
    "smtpd port already taken": (_smtpd_port_taken,
                                 "postfix is not running (port 2525 is already in use by python3)"),
}


@pytest.mark.parametrize("case", sorted(BAD_RUNTIME))
def test_failure_after_the_switch_rolls_back(ssh_host: SshHost, dkim_private_key_pem: str, case: str) -> None:
    files = files_for(ssh_host, dkim_private_key_pem)
    assert push(ssh_host, files).ok
    managed = [f.path for f in files]
    hashes = remote(ssh_host, "sha256sum " + " ".join(managed)).stdout
    make_bad, reason = BAD_RUNTIME[case]
    bad = make_bad(ssh_host, dkim_private_key_pem)
    result = timed(f"rollback ({case})", lambda: push(ssh_host, bad))
    assert result.rc == 2, out(result)
    assert f"the new configuration failed on {FQDN}: {reason}" in result.stderr
    assert "the previous configuration is live again" in result.stderr
    assert remote(ssh_host, "sha256sum " + " ".join(managed)).stdout == hashes
    assert live(ssh_host, "inet_interfaces") == "loopback-only"
    assert_serving(ssh_host)
    assert push(ssh_host, files).stdout.startswith("jira-mailhost: unchanged")


def assert_signed_with_pushed_key(host: SshHost, queue_id: str, dkim_pem: str) -> None:
    """The queued message carries a DKIM signature that verifies against the pushed key's public half."""
    shown = remote(host, f"postcat -bh -q {queue_id}")
    assert shown.ok, out(shown)
    message = "\r\n".join(line for line in shown.stdout.splitlines() if not line.startswith("*** ")).encode()
    assert b"DKIM-Signature:" in message and b"d=lab.example" in message and b"s=jm1-jira" in message
    record = dkim_txt(public_key_b64(dkim_pem)).encode()
    assert dkim.verify(message, dnsfunc=lambda name, timeout=5: record if name == b"jm1-jira._domainkey.lab.example."
                       else None)


def queue_ids(host: SshHost) -> list[str]:
    result = remote(host, "postqueue -j")
    assert result.ok, out(result)
    return [json.loads(line)["queue_id"] for line in result.stdout.splitlines() if line.strip()]


def test_teardown_keeps_queued_mail_then_restores_the_original(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    # The host starts as a fresh Debian install ("No configuration"): no main.cf, whatever the machine has.
    original = remote(ssh_host, "sha256sum /etc/postfix/main.cf 2>/dev/null || echo absent").stdout.split()[0]
    assert original == "absent"
    watched = [Path("/etc/postfix/main.cf"), Path("/etc/postfix/master.cf"), Path("/etc/opendkim.conf")]
    machine_before = {p: p.read_bytes() if p.exists() else None for p in watched}
    machine_absent = [p for p in (Path("/etc/opendkim"), Path("/var/lib/jira-mailhost")) if not p.exists()]
    machine_spool = sorted(str(p) for p in Path("/var/spool/postfix").rglob("*"))
    settings = settings_for(ssh_host)
    assert push(ssh_host, files_for(ssh_host, dkim_private_key_pem)).ok
    # What the metrics timer does every 5 minutes: its file must go with the teardown (else the
    # collector-stale alert fires for ever on a host that no longer runs the collector).
    collected = remote(ssh_host, f"python3 -I {render.COLLECTOR} --hours 1 --textfile {render.METRICS_TEXTFILE}"
                                 f" && test -s {render.METRICS_TEXTFILE}")
    assert collected.ok, out(collected)
    message = "Subject: drain test\n\nthe smarthost is unreachable, so this waits\n"
    sent = remote(ssh_host, "sendmail -f jira@lab.example someone@example.org", stdin=message)
    assert sent.ok, out(sent)
    deadline = time.monotonic() + 20
    while not queue_ids(ssh_host) and time.monotonic() < deadline:
        time.sleep(0.2)
    queued = queue_ids(ssh_host)
    assert len(queued) == 1, remote(ssh_host, "postqueue -p; tail -n 30 /var/log/mail.log").stdout
    assert_signed_with_pushed_key(ssh_host, queued[0], dkim_private_key_pem)

    refused = timed("teardown refusing (3 s drain)", lambda: teardown(ssh_host, settings))
    assert refused.rc == 1, out(refused)
    assert (f"1 messages still queued on {FQDN}; they were not dropped: fix delivery (postqueue -p, "
            "/var/log/mail.log) and run the destroy again") in refused.stderr
    assert queue_ids(ssh_host) == queued
    assert live(ssh_host, "myhostname") == FQDN  # nothing was changed
    assert_serving(ssh_host)

    # With postfix stopped nothing can drain: still refused, and told why.
    assert remote(ssh_host, "postfix stop").ok
    stopped = teardown(ssh_host, settings)
    assert stopped.rc == 1, out(stopped)
    assert "1 messages still queued" in stopped.stderr and "postfix is not running" in stopped.stderr

    assert remote(ssh_host, "postfix start && postsuper -d ALL").ok  # the admin decides to drop it
    done = timed("teardown", lambda: teardown(ssh_host, settings))
    assert done.rc == 0, out(done)
    assert "the original mail configuration is back" in done.stdout
    after = remote(ssh_host, "{ sha256sum /etc/postfix/main.cf 2>/dev/null || echo absent; };"
                   " test -e /var/lib/jira-mailhost || echo no-state;"
                   " test -e /etc/opendkim || echo no-opendkim-dir; postfix status 2>&1 || echo postfix-stopped;"
                   f" test -e {render.METRICS_TEXTFILE} || echo no-metrics-file;"
                   " ss -Hlx src /run/opendkim/opendkim.sock | wc -l")
    assert after.stdout.split()[0] == original
    assert "no-state" in after.stdout and "postfix-stopped" in after.stdout and "no-metrics-file" in after.stdout
    assert ("no-opendkim-dir" in after.stdout) == (not Path("/etc/opendkim").exists())
    assert after.stdout.strip().endswith("0")  # opendkim stopped
    again = teardown(ssh_host, settings)
    assert again.rc == 0 and "nothing to restore" in again.stdout
    # All of it happened in the host's private tree: the machine's own files never changed.
    assert {p: p.read_bytes() if p.exists() else None for p in watched} == machine_before
    assert [p for p in machine_absent if p.exists()] == []
    assert sorted(str(p) for p in Path("/var/spool/postfix").rglob("*")) == machine_spool


def test_secrets_stay_private(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    files = files_for(ssh_host, dkim_private_key_pem)
    key_path = next(f.path for f in files if f.path.startswith("/etc/opendkim/keys/"))
    result = push(ssh_host, files)
    assert result.ok, out(result)
    modes = stats(ssh_host, [key_path, "/etc/postfix/sasl_passwd", "/etc/postfix/sasl_passwd.db"])
    assert modes[key_path].split()[-3:] == ["600", "opendkim", "opendkim"]
    assert modes["/etc/postfix/sasl_passwd"].split()[-3:] == ["600", "root", "root"]
    assert modes["/etc/postfix/sasl_passwd.db"].split()[-3:] == ["600", "root", "root"]
    state = stats(ssh_host, ["/var/lib/jira-mailhost"])["/var/lib/jira-mailhost"]
    assert state.split()[-3:] == ["700", "root", "root"]
    key_body = "".join(dkim_private_key_pem.strip().splitlines()[1:-1])
    for text in (apply_command(), lab_teardown_command(settings_for(ssh_host)), result.stdout, result.stderr):
        assert RELAY_PASSWORD not in text
        assert key_body[:40] not in text and "PRIVATE KEY" not in text
    # Nothing the scripts leave behind outside the root-only state dir holds the password.
    leak = remote(ssh_host, f"grep -rlF {shlex.quote(RELAY_PASSWORD)} /etc /var/log /run /tmp 2>/dev/null"
                  " | grep -v -e '^/etc/postfix/sasl_passwd' -e '-sshhost-' || true")
    assert leak.stdout.strip() == ""


def test_pinned_key_mismatch_runs_nothing(ssh_host: SshHost) -> None:
    temp_before = set(Path(tempfile.gettempdir()).iterdir())
    other = ssh_host.workdir / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = " ".join(Path(f"{other}.pub").read_text().split()[:2])
    with pytest.raises(sshexec.HostKeyMismatch):
        sshexec.run(ssh_host.address, ssh_host.port, "root", ssh_host.private_key, wrong,
                    "touch /var/lib/mismatch-ran", timeout=30)
    assert not ssh_host.upper("/var/lib/mismatch-ran").exists()
    assert remote(ssh_host, "echo reached").stdout.strip() == "reached"
    # The client key never touched the disk (memfd), so nothing new can be left in /tmp.
    assert {p for p in set(Path(tempfile.gettempdir()).iterdir()) - temp_before if "ssh" in p.name} == set()


def test_dial_retries_are_bounded(ssh_host: SshHost) -> None:
    started = time.monotonic()
    result = sshexec.run(ssh_host.address, 2222, "root", ssh_host.private_key, ssh_host.host_key, "true",
                         timeout=30, attempts=3)
    assert result.rc == 255 and "Connection refused" in result.stderr
    assert 1.4 < time.monotonic() - started < 10  # two pauses (0.5 s, 1 s), then it gives up


def test_relay_to_direct_retires_the_relay_password(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    assert push(ssh_host, files_for(ssh_host, dkim_private_key_pem)).ok
    result = push(ssh_host, files_for(ssh_host, dkim_private_key_pem, direct=True))
    assert result.rc == 0, out(result)
    gone = remote(ssh_host, "ls /etc/postfix/sasl_passwd /etc/postfix/sasl_passwd.db 2>&1 | grep -c 'No such file'")
    assert gone.stdout.strip() == "2"  # the machine's original had neither, so neither stays
    assert live(ssh_host, "relayhost") == ""
    assert_serving(ssh_host)


TLS_POLICY = {"partner.example": "encrypt", "legacy.example": "may"}
BAD_TLS_POLICY = {
    "a weaker level for an encrypt domain": (TLS_POLICY_MAP, lambda c: c.replace("partner.example encrypt",
                                                                                "partner.example may"),
                                             "the TLS policy table gives partner.example 'may', not encrypt"),
    "an encrypt domain missing": (TLS_POLICY_MAP, lambda c: c.replace("partner.example encrypt\n", ""),
                                  "the TLS policy table gives partner.example 'nothing', not encrypt"),
    "another table": ("/etc/postfix/main.cf", lambda c: c.replace("smtp_tls_policy_maps = texthash:",
                                                                 "smtp_tls_policy_maps = texthash:/dev/null,texthash:"),
                      f"smtp_tls_policy_maps is not texthash:{TLS_POLICY_MAP}, the policy tables of these settings"),
}


def test_the_host_checks_each_tls_policy_domain_before_the_switch(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    """A bundle past the allowlist whose table would let an encrypt domain go in clear is refused by the
    host itself (postmap -q on the staged table), with nothing changed; the good one is live; dropping the
    setting retires the table."""
    files = files_for(ssh_host, dkim_private_key_pem, direct=True, delivery={"tlsPolicy": TLS_POLICY})
    result = push(ssh_host, files)
    assert result.rc == 0, out(result)
    assert live(ssh_host, "smtp_tls_policy_maps") == f"texthash:{TLS_POLICY_MAP}"
    looked_up = remote(ssh_host, f"for d in partner.example legacy.example other.example; do "
                                 f"echo \"$d=$(postmap -q $d texthash:{TLS_POLICY_MAP})\"; done")
    assert looked_up.stdout.split() == ["partner.example=encrypt", "legacy.example=may", "other.example="]
    managed = [f.path for f in files]
    before = stats(ssh_host, managed)
    for path, change, message in BAD_TLS_POLICY.values():
        refused = push(ssh_host, edit(files, path, change))
        assert refused.rc == 1 and message in refused.stderr, out(refused)
        assert stats(ssh_host, managed) == before
    assert push(ssh_host, files).stdout.startswith("jira-mailhost: unchanged")
    plain = push(ssh_host, files_for(ssh_host, dkim_private_key_pem, direct=True))
    assert plain.rc == 0, out(plain)
    assert live(ssh_host, "smtp_tls_policy_maps") == ""
    assert remote(ssh_host, f"test -e {TLS_POLICY_MAP}").rc == 1, "the table goes with the setting"
    assert_serving(ssh_host)


def _payload_with(members: dict[str, bytes]) -> str:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return base64.b64encode(gzip.compress(raw.getvalue())).decode()


def _corrupted(files: list[RenderedFile]) -> str:
    members = bundle.unpack(bundle.pack(files))
    members["files/etc/postfix/main.cf"] += b"# changed in transit\n"
    return _payload_with(members)


def _unsafe(files: list[RenderedFile]) -> str:
    members = bundle.unpack(bundle.pack(files))
    members["files/etc/postfix/../../root/.ssh/authorized_keys"] = b"x\n"
    return _payload_with(members)


BROKEN_PAYLOADS = {
    "empty stdin": (lambda files: "", "no bundle on stdin"),
    "not base64": (lambda files: "this is not a bundle\n", "not valid base64"),
    "checksum mismatch": (_corrupted, "the checksum of /etc/postfix/main.cf does not match MANIFEST"),
    "unsafe member name": (_unsafe, "unsafe name"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_PAYLOADS))
def test_broken_payload_changes_nothing(ssh_host: SshHost, dkim_private_key_pem: str, case: str) -> None:
    make, message = BROKEN_PAYLOADS[case]
    result = remote(ssh_host, apply_command(), make(files_for(ssh_host, dkim_private_key_pem)))
    assert result.rc == 1, out(result)
    assert message in result.stderr and "nothing was changed" in result.stderr
    assert not ssh_host.upper("/etc/postfix/main.cf").exists()  # the private /etc/postfix was never written
    assert remote(ssh_host, "postfix status").rc != 0


def _add_user(host: SshHost, name: str, sudo: bool) -> None:
    """A login user inside the host's private /etc only (no home on the machine)."""
    setup = f"useradd -M -d /nonexistent -s /bin/bash {name} && usermod -p '*' {name}"
    if sudo:
        rule = f"/etc/sudoers.d/{name}"
        setup += f" && echo '{name} ALL=(ALL) NOPASSWD: ALL' > {rule} && chmod 0440 {rule}"
    assert remote(host, setup).ok


def test_sudo_user_pushes_and_tears_down(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    _add_user(ssh_host, "admin", sudo=True)
    admin = replace(ssh_host, user="admin")
    assert remote(admin, "id -un").stdout.strip() == "admin"
    result = remote(admin, apply_command(), bundle.pack(files_for(ssh_host, dkim_private_key_pem)))
    assert result.rc == 0, out(result)
    assert_serving(ssh_host)
    owners = stats(ssh_host, ["/etc/postfix/main.cf", "/var/lib/jira-mailhost"])
    assert owners["/etc/postfix/main.cf"].split()[-2:] == ["root", "root"]
    # `mailhost status` needs no more than the push: the same sudo user reads queue, manifest and files
    report = hosts.ask(status_target(admin), admin.private_key, 1.0)
    assert report.get("services", {}).get("postfix") is True, report
    assert report["config"]["pushed"] and report["config"]["changed"] == [] and report["config"]["missing"] == []
    done = remote(admin, lab_teardown_command(settings_for(ssh_host)))
    assert done.rc == 0, out(done)
    assert remote(ssh_host, "test -e /var/lib/jira-mailhost").rc == 1


def test_user_without_sudo_is_told_why(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    _add_user(ssh_host, "jira", sudo=False)
    result = remote(replace(ssh_host, user="jira"), apply_command(),
                    bundle.pack(files_for(ssh_host, dkim_private_key_pem)))
    assert result.rc == 1
    assert "user jira is not root and cannot run sudo without a password" in result.stderr
    assert not ssh_host.upper("/var/lib/jira-mailhost").exists()
    jira = replace(ssh_host, user="jira")
    refused = hosts.ask(status_target(jira), jira.private_key, 1.0)
    assert "user jira is not root and cannot run sudo without a password" in refused["error"]


def status_target(host: SshHost) -> Target:
    return Target("jira", host.address, host.port, host.user, host.host_key)


def test_scripts_pass_shellcheck_and_fit_one_argument() -> None:
    scripts = [str(Path(SCRIPTS) / name) for name in ("apply.sh", "teardown.sh")]
    lint = subprocess.run(["shellcheck", "-s", "bash", "-S", "warning", *scripts], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout
    # sshd hands the command to the login shell as one argument: Linux caps one at 128 KiB.
    assert len(apply_command()) < 100 * 1024 and len(lab_teardown_command(settings_for_lint())) < 128 * 1024
    big = apply_command(readable_config(render_host(settings_for_lint(), settings_for_lint().hosts[0],
                                                    HostSecrets("KEY", "pw"))))
    assert len(big) < 128 * 1024, "with the readable config as comments"


def settings_for_lint() -> Settings:
    host_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGx9uXrkiAd4Wm2N3vSHTA+Xo3L1ohHeBBuXk3zCQLqt"
    return parse_settings({"domain": "lab.example", "rerouteTo": "qa@lab.example", "delivery": RELAY,
                           "hosts": [{"name": "jira", "existing": {"ipv4": "203.0.113.10", "hostKey": host_key}}]},
                          {"sshPrivateKey", "relayPassword"})


def test_a_teardown_for_another_push_leaves_the_host_to_it(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    """A plain rename: the new name's push applies first, and the old name's delete, which Pulumi runs last,
    must not give the host its original config back under the new push."""
    settings = settings_for(ssh_host)
    old_host = settings.hosts[0]
    new_host = old_host.model_copy(update={"name": "jira2"})
    secrets = HostSecrets(dkim_private_key_pem, RELAY_PASSWORD)
    assert push(ssh_host, render_host(settings, old_host, secrets, stack="lab")).ok
    assert push(ssh_host, render_host(settings, new_host, secrets, stack="lab")).ok
    left = remote(ssh_host, teardown_command(settings, old_host, "lab"))
    assert left.ok and "came from lab/jira2 since (a rename?), not lab/jira: left as it is" in left.stdout, out(left)
    assert live(ssh_host, "myhostname") == settings.fqdn(new_host)
    assert_serving(ssh_host, settings.fqdn(new_host))
    removed = remote(ssh_host, teardown_command(settings, new_host, "lab"))
    assert removed.ok and "the original mail configuration is back" in removed.stdout, out(removed)
    assert remote(ssh_host, "test -e /var/lib/jira-mailhost").rc == 1
