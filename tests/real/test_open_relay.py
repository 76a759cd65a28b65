"""The pushed Postfix config is never an open relay, seen from another host on the same network.

Only Jira on the host itself may submit.  The rendered config keeps smtpd on loopback, so
from outside no mail port even accepts a connection.  In case someone (or a later
template) opens smtpd to every address, the restrictions alone must still refuse every
classic relay trick, over IPv4 and IPv6, and nothing may enter the queue or leave the
host.  Meanwhile a local non-root user (what Jira runs as) can still submit.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mailhost.lab.netns import Host, Topology
from mailhost.lab.sshhost import SshHost
from mailhost.publish.bundle import RenderedFile
from mailhost.publish.render import HostSecrets, render_host
from mailhost.publish.stack import parse_settings
from tests.real.test_push_scripts import FQDN, assert_serving, edit, out, push, queue_ids, remote

pytestmark = [pytest.mark.real]

PROBE = Path(__file__).with_name("relayprobe.py")
OUTSIDE_INDEX = 20  # jmp-relaytest: 203.0.113.20, 2001:db8:203::14
DOMAIN = "lab.example"
MAIN_CF = "/etc/postfix/main.cf"
MAIL_PORTS = (25, 465, 587, 2525)
RELAY_PASSWORD = "lab-" + secrets.token_urlsafe(18)
MODES: dict[str, dict[str, Any]] = {
    # opportunistic: this host has no DNS for DANE's resolver check; the DANE modes add only loopback
    # listeners (127.0.0.1:8462 in master.cf, tests/real/test_render_real.py), no mail port.
    "production-direct": {"environment": "production", "delivery": {"mode": "direct", "outboundTls": "opportunistic"}},
    "staging-relay": {"environment": "staging", "rerouteTo": f"qa@{DOMAIN}",
                      "delivery": {"mode": "relay",
                                   "relay": {"host": f"smarthost.{DOMAIN}", "port": 587, "username": "jira"}}},
}
QUEUED = re.compile(r"postfix/(cleanup\[\d+\]: \w+: message-id=|qmgr\[\d+\]: \w+: from=)")


def rendered(host: SshHost, dkim_pem: str, mode: str) -> list[RenderedFile]:
    """The config a stack of this mode gets, with both addresses sending (inet_protocols = all)."""
    existing = {"ipv4": host.address, "ipv6": host.host.ipv6, "ipv4Ptr": "external", "ipv6Ptr": "external",
                "hostKey": host.host_key}
    values = {"domain": DOMAIN, "hosts": [{"name": "jira", "existing": existing}], "drainSeconds": 3,
              "maillogFile": "/var/log/mail.log", **MODES[mode]}
    settings = parse_settings(values, {"sshPrivateKey", "relayPassword"})
    files = render_host(settings, settings.hosts[0], HostSecrets(dkim_pem, RELAY_PASSWORD), stack="lab")
    main_cf = next(f.content for f in files if f.path == MAIN_CF)
    assert "\ninet_interfaces = loopback-only\n" in main_cf and "\ninet_protocols = all\n" in main_cf
    return files


def listening_everywhere(files: list[RenderedFile]) -> list[RenderedFile]:
    """The one edit an admin might make: smtpd on every address (apply.sh accepts it: same parameters)."""
    loopback, everywhere = "\ninet_interfaces = loopback-only\n", "\ninet_interfaces = all\n"
    opened = edit(files, MAIN_CF, lambda c: c.replace(loopback, everywhere))
    assert everywhere in next(f.content for f in opened if f.path == MAIN_CF)
    return opened


@pytest.fixture(scope="module")
def outside(jmp_topology: Topology) -> Host:
    """Another host on the bridge, not in mynetworks: where a spammer would connect from."""
    return jmp_topology.add("relaytest", OUTSIDE_INDEX)


def attempt(name: str, address: str, rcpt: str, mail: str = "<spammer@outside.test>",
            greeting: str = "EHLO relaytest.outside.test", port: int = 25) -> dict[str, Any]:
    return {"name": name, "address": address, "port": port, "greeting": greeting, "mail": mail, "rcpt": rcpt}


def relay_tricks(address: str, host: Host, other: Host) -> list[dict[str, Any]]:
    """Classic ways to make a server relay, aimed at one of the host's addresses."""
    v4, v6 = f"[{host.ipv4}]", f"[IPv6:{host.ipv6}]"
    return [
        attempt("plain foreign domain", address, "<user@victim.test>"),
        attempt("null sender", address, "<user@victim.test>", mail="<>"),
        attempt("sender spoofed as the host's domain", address, "<user@victim.test>", mail=f"<jira@{DOMAIN}>"),
        attempt("EHLO as the host, sender as the host", address, "<user@victim.test>", mail=f"<root@{FQDN}>",
                greeting=f"EHLO {FQDN}"),
        attempt("EHLO localhost, sender root@localhost", address, "<user@victim.test>", mail="<root@localhost>",
                greeting="EHLO localhost"),
        attempt("HELO as the host's IP literal", address, "<user@victim.test>", greeting=f"HELO {v4}"),
        attempt("percent hack", address, f"<user%victim.test@{FQDN}>"),
        attempt("percent hack via localhost", address, "<user%victim.test@localhost>"),
        attempt("percent hack via the host's IP literal", address, f"<user%victim.test@{v4}>"),
        attempt("bang path", address, "<victim.test!user>"),
        attempt("bang path at the host", address, f"<victim.test!user@{FQDN}>"),
        attempt("quoted local part", address, f'<"user@victim.test"@{FQDN}>'),
        attempt("quoted percent local part", address, f'<"user%victim.test"@{FQDN}>'),
        attempt("source route", address, f"<@{FQDN}:user@victim.test>"),
        attempt("source route via the host's IP literal", address, f"<@{v4}:user@victim.test>"),
        attempt("IP literal of the host", address, f"<user@{v4}>"),
        attempt("IPv6 literal of the host", address, f"<user@{v6}>"),
        attempt("IP literal of the host, an existing user", address, f"<root@{v4}>"),
        attempt("IPv6 literal of the host, an existing user", address, f"<root@{v6}>"),
        attempt("IP literal of another host", address, f"<user@[{other.ipv4}]>"),
        attempt("IPv6 literal of another host", address, f"<user@[IPv6:{other.ipv6}]>"),
        attempt("unqualified recipient", address, "<user>"),
        attempt("bare postmaster", address, "<postmaster>"),
        attempt("the host's own domain", address, f"<jira@{DOMAIN}>"),
        attempt("the host's FQDN", address, f"<postmaster@{FQDN}>"),
        attempt("the staging reroute address", address, f"<qa@{DOMAIN}>"),
        attempt("localhost", address, "<root@localhost>"),
        attempt("null sender to the host's IP literal, EHLO as the host", address, f"<postmaster@{v4}>", mail="<>",
                greeting=f"EHLO {FQDN}"),
        # RFC 5321 4.5.1: Postfix accepts a bare <postmaster> before any restriction; its bounce would carry
        # the message to whatever sender was given (backscatter), here the sink on the other host.
        attempt("bounce via bare postmaster to another host (backscatter)", address, "<postmaster>",
                mail=f"<victim@[{other.ipv4}]>"),
    ]


def run_attempts(outside: Host, specs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    done = subprocess.run(outside.argv([sys.executable, str(PROBE), "attempts"]), input=json.dumps(specs),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    results: list[dict[str, Any]] = json.loads(done.stdout)
    return results


def refused(result: dict[str, Any]) -> bool:
    """No connection, or a 4xx/5xx at or before RCPT.  One exception: Postfix accepts a bare <postmaster>
    before any restriction (RFC 5321 4.5.1; smtpd_check_rcpt), so for it a refused DATA is the refusal."""
    if result["error"] == "connection refused":
        return True
    codes = result["codes"]
    if any(400 <= code < 600 for step, code in codes.items() if step != "data"):
        return True
    return result["rcpt"].lower() == "<postmaster>" and 400 <= codes.get("data", 0) < 600


def describe(result: dict[str, Any]) -> str:
    codes = " ".join(f"{step}={code}" for step, code in result["codes"].items())
    return (f"{result['name']:<55} [{result['address']}]:{result['port']:<5} {result['mail']} -> {result['rcpt']}: "
            f"{result['error'] or codes} {result.get('reply', '')}")


class Sink:
    """Listens on the outside host; a relayed message or a bounce aimed there would show up as a connection."""

    def __init__(self, host: Host, ports: tuple[int, ...]):
        self.process = subprocess.Popen(host.argv([sys.executable, str(PROBE), "sink", *map(str, ports)]),
                                        stdout=subprocess.PIPE, text=True, start_new_session=True)
        if self.process.stdout is None or self.process.stdout.readline().strip() != "ready":
            self.process.kill()
            self.process.wait(timeout=10)
            raise AssertionError("the sink did not start on the outside host")

    def stop(self) -> list[str]:
        """Stop the sink; every connection it saw."""
        self.process.terminate()
        seen, _ = self.process.communicate(timeout=10)
        return seen.splitlines()


@contextlib.contextmanager
def sink(host: Host, ports: tuple[int, ...]) -> Iterator[Sink]:
    listening = Sink(host, ports)
    try:
        yield listening
    finally:
        if listening.process.poll() is None:
            listening.stop()


def maillog(host: SshHost) -> str:
    result = remote(host, "cat /var/log/mail.log")
    assert result.ok, out(result)
    return result.stdout


@pytest.mark.parametrize("mode", sorted(MODES))
def test_rendered_config_takes_no_connection_from_outside(ssh_host: SshHost, outside: Host, dkim_private_key_pem: str,
                                                          mode: str) -> None:
    result = push(ssh_host, rendered(ssh_host, dkim_private_key_pem, mode))
    assert result.ok, out(result)
    assert_serving(ssh_host)  # Postfix is up, on loopback
    addresses = (ssh_host.host.ipv4, ssh_host.host.ipv6)
    specs = [attempt("plain foreign domain", a, "<user@victim.test>", port=p) for a in addresses for p in MAIL_PORTS]
    specs += [attempt("control: sshd answers", a, "<user@victim.test>", port=22) for a in addresses]
    started = time.monotonic()
    results = run_attempts(outside, specs)
    print(f"timing {mode} loopback-only probes: {time.monotonic() - started:.2f}s")
    probes, controls = results[:-2], results[-2:]
    for probe in probes:
        print(describe(probe))
    # The host is reachable (sshd takes the connection), so a refusal on the mail ports is Postfix's absence.
    assert [control["codes"].get("connect") for control in controls] == [-1, -1], controls
    assert {(p["address"], p["port"]): p["error"] for p in probes} == {
        (a, p): "connection refused" for a in addresses for p in MAIL_PORTS}
    print(f"open relay ({mode}, loopback-only): {len(probes)} attempts, "
          f"{sum(p['error'] == 'connection refused' for p in probes)} connections refused")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_listening_everywhere_still_relays_nothing(ssh_host: SshHost, outside: Host, dkim_private_key_pem: str,
                                                   mode: str) -> None:
    result = push(ssh_host, listening_everywhere(rendered(ssh_host, dkim_private_key_pem, mode)))
    assert result.ok, out(result)
    assert_serving(ssh_host)
    listeners = remote(ssh_host, "ss -Hltn 'sport = :25'").stdout.split()
    assert "0.0.0.0:25" in listeners and "[::]:25" in listeners, listeners
    addresses = (ssh_host.host.ipv4, ssh_host.host.ipv6)
    specs = [spec for a in addresses for spec in relay_tricks(a, ssh_host.host, outside)]
    specs += [attempt("plain foreign domain", a, "<user@victim.test>", port=p) for a in addresses
              for p in MAIL_PORTS[1:]]
    with sink(outside, (25, 465, 587)) as listening:
        started = time.monotonic()
        results = run_attempts(outside, specs)
        elapsed = time.monotonic() - started
        time.sleep(2)  # time for an accepted message to be picked up, delivered or bounced
        queued = remote(ssh_host, "postqueue -j").stdout
        log = maillog(ssh_host)
        reached = listening.stop()
    for each in results:
        print(describe(each))
    accepted = [describe(r) for r in results if not refused(r)]
    rejected_in_log = log.count("NOQUEUE: reject:")
    print(f"open relay ({mode}, inet_interfaces = all): {len(results)} attempts, {len(results) - len(accepted)} "
          f"refused, {len(accepted)} accepted; {rejected_in_log} NOQUEUE rejects logged; {elapsed:.2f}s")
    # smtpd itself answered on port 25 at both addresses (220, or 554 to a client it refuses outright):
    # every refusal there is its decision, not a dead port.
    assert {r["codes"].get("connect") for r in results if r["port"] == 25} <= {220, 554}, results
    problems = [f"accepted: {each}" for each in accepted]
    problems += [f"queued: {line}" for line in queued.splitlines() if line.strip()]
    problems += [f"in the mail log: {line}" for line in log.splitlines() if QUEUED.search(line)]
    problems += [f"the other host was contacted: {line}" for line in reached]
    assert problems == [], "\n".join(problems)


def test_local_user_submits_like_jira(ssh_host: SshHost, dkim_private_key_pem: str) -> None:
    """Jira is not root: sendmail and SMTP to 127.0.0.1:25 must both work for an ordinary user."""
    result = push(ssh_host, rendered(ssh_host, dkim_private_key_pem, "production-direct"))
    assert result.ok, out(result)
    user = "jirauser"
    assert remote(ssh_host, f"useradd -M -d /nonexistent -s /bin/bash {user} && usermod -p '*' {user}").ok
    as_user = replace(ssh_host, user=user)
    assert remote(as_user, "id -u").stdout.strip() not in ("", "0")
    message = "Subject: from Jira\n\nqueued, the resolver points nowhere\n"
    sent = remote(as_user, f"/usr/sbin/sendmail -f jira@{DOMAIN} someone@example.org", stdin=message)
    assert sent.ok, out(sent)
    smtp = remote(as_user, f"swaks --server 127.0.0.1 --port 25 --helo localhost --from jira@{DOMAIN} "
                  "--to someone@example.org --timeout 20")
    assert smtp.ok and re.search(r"<- {1,2}250 2\.0\.0 Ok: queued as \w+", smtp.stdout), out(smtp)
    deadline = time.monotonic() + 20
    while len(queue_ids(ssh_host)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    queue = [json.loads(line) for line in remote(ssh_host, "postqueue -j").stdout.splitlines() if line.strip()]
    assert sorted((m["sender"], [r["address"] for r in m["recipients"]]) for m in queue) == [
        (f"jira@{DOMAIN}", ["someone@example.org"])] * 2, queue
    print(f"local submission as {user}: sendmail and SMTP 127.0.0.1:25 queued {len(queue)} messages")
    assert remote(ssh_host, "postsuper -d ALL").ok
    assert queue_ids(ssh_host) == []


def test_the_readme_counts_the_relay_attempts_this_file_makes() -> None:
    """The README's numbers come from here: tricks per address, addresses, other ports, attempts per mode."""
    host = Host("jira", "unused", "198.51.100.10", "2001:db8::10")
    tricks = len(relay_tricks(host.ipv4, host, Host("other", "unused", "198.51.100.11", "2001:db8::11")))
    addresses, other_ports = 2, len(MAIL_PORTS) - 1
    total = addresses * (tricks + other_ports)
    readme = " ".join((Path(__file__).resolve().parents[2] / "README.md").read_text().split())
    assert (f"runs {total} relay attempts per mode: {tricks} tricks" in readme
            and f"at each of the host's {addresses} addresses on port 25, and a plain attempt on the "
                f"{other_ports} other mail ports of each: {total}/{total} refused in both modes" in readme)
