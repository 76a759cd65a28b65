"""delivery.outboundTls: dane+mta-sts in the lab: MTA-STS decides where DANE does not, and DANE wins where both are.

The lab's second MX (mx2, on the smarthost's addresses) presents a certificate from the lab CA for mx2 and mxb;
the jira host trusts that CA as a Debian host trusts a public one.  An HTTPS server (mailhost.lab.mtasts) is the
policy host of four recipient domains, all in the signed recipient zone:
  - sts:      enforce, mx: mx2 (its MX, named in the certificate)          -> delivered, Verified;
  - stswrong: enforce, mx: mxw (its MX; the certificate does not name it)  -> held, 0 at the MX;
  - ststest:  testing, mx: mxw (the same mismatch)                         -> delivered (testing never holds);
  - both:     enforce, mx: mxb (named in the certificate), and mxb has a TLSA record: while the TLSA names
              another key, the mail waits although the MTA-STS policy alone would let it through (RFC 8461
              section 2: DANE first); once it names the right key, a flush delivers it all, Verified.
With the policy host gone, the cached policies still decide (the enforce domain's mail still waits).  The
teardown stops the policy daemon the push started.

The jira host's /etc/mta-sts-daemon.yml is Debian's with one lab change, cache_grace: 1 (seconds; Debian: 60),
so a test need not wait a minute before the daemon asks the policy host again.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailhost.lab import dnsupdate, jirahost, mtasts, ops, receiver, tlscert, zones
from mailhost.lab.lab import Lab
from mailhost.publish import render
from tests.real.conftest import lab_in_tmp, until
from tests.real.test_lab_drills import rerun_push
from tests.real.test_outbound_tls import path_to_mx2
from tests.real.test_status_lab import status

pytestmark = [pytest.mark.real]
NET = zones.RECIPIENT_DOMAIN
STS, WRONG, TESTING, BOTH = (f"{label}.{NET}" for label in ("sts", "stswrong", "ststest", "both"))
MX2, MXW, MXB = (f"{label}.{NET}" for label in ("mx2", "mxw", "mxb"))
VENDOR = zones.SECOND_MX_DOMAINS[1]  # mx2's too: no policy, no TLSA
POLICIES = {STS: ("enforce", MX2, MX2), WRONG: ("enforce", MXW, MXW), TESTING: ("testing", MXW, MXW),
            BOTH: ("enforce", MXB, MXB)}  # domain -> (mode, the policy's mx, the domain's MX record)
SETTINGS = {"delivery": {"outboundTls": "dane+mta-sts", "dnssecBogusName": zones.BOGUS_ZONE}}
UNVERIFIED = "Server certificate not verified"
COUNT = 8
DAEMON_CONF = """\
cache:
  type: sqlite
  options:
    filename: "/var/lib/mta-sts/cache.db"
cache_grace: 1
"""


def _publish(lab: Lab, name: str, rtype: str, values: list[str]) -> None:
    dnsupdate.upsert(lab.world.dns.v4, NET, name, rtype, 60, values)


def _addresses(lab: Lab, name: str) -> None:
    _publish(lab, name, "A", [lab.world.smarthost.v4])
    _publish(lab, name, "AAAA", [lab.world.smarthost.v6])


def mx2_tlsa(lab: Lab) -> str:
    return tlscert.tlsa_3_1_1(lab.cert_paths("mx2")[0].read_bytes())


def set_tlsa(lab: Lab, data: str) -> None:
    """The TLSA of mxb, seen at once by the jira host (unbound's cache flushed; Postfix reloaded)."""
    _publish(lab, f"_25._tcp.{MXB}", "TLSA", [data])
    assert jirahost.run(lab.info(), ["unbound-control", "flush_zone", NET]).returncode == 0
    assert jirahost.run(lab.info(), ["postfix", "reload"]).returncode == 0


def wrong(data: str) -> str:
    return data[:-8] + ("0" * 8 if not data.endswith("0" * 8) else "1" * 8)


def build(lab: Lab) -> None:
    """The lab, mx2 with its CA certificate, the policy host, the four domains' records; then the push."""
    lab.build()
    info = lab.info()
    ca = lab.lab_ca()
    cert, key = lab.cert_paths("mx2")
    ca.issue(MX2, also=[MXB]).write(cert, key)
    path_to_mx2(lab, strip=False)  # first: start_second_mx waits for port 25, which the path holds
    lab.start_second_mx(lab.info(), extra=["--port", "2525", "--cert", str(cert), "--key", str(key),
                                           *(arg for d in POLICIES for arg in ("--domain", d))])
    info = lab.info()
    policy_dir = lab.state_dir / "mta-sts"
    policy_dir.mkdir()
    for domain, (mode, policy_mx, _) in POLICIES.items():
        (policy_dir / f"{domain}.txt").write_text(mtasts.policy(mode, [policy_mx]))
    web_cert, web_key = lab.cert_paths("mta-sts")
    ca.issue(f"mta-sts.{STS}", also=[f"mta-sts.{d}" for d in POLICIES if d != STS]).write(web_cert, web_key)
    lab._spawn(info, "mtasts", "smarthost", [
        "mailhost.lab.mtasts", "--listen", lab.world.smarthost.v4, "--listen", lab.world.smarthost.v6,
        "--cert", str(web_cert), "--key", str(web_key), "--policies", str(policy_dir),
        "--log", str(policy_log(lab))])
    for name in (MXW, MXB):
        _addresses(lab, name)
    for domain, (_, _, mx) in POLICIES.items():
        _publish(lab, domain, "MX", [f"10 {mx}."])
        _publish(lab, f"_mta-sts.{domain}", "TXT", [f'"{mtasts.txt("1")}"'])
        _addresses(lab, f"mta-sts.{domain}")
    _publish(lab, f"_25._tcp.{MXB}", "TLSA", [wrong(mx2_tlsa(lab))])
    written = jirahost.run(lab.info(), ["sh", "-c", 'printf "%s" "$1" > /etc/mta-sts-daemon.yml', "conf",
                                        DAEMON_CONF])
    assert written.returncode == 0, written.stderr
    ops.up(lab, "direct", SETTINGS)


def policy_log(lab: Lab) -> Path:
    return lab.state_dir / "mta-sts-requests.jsonl"


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("mtasts", mode=None) as the_lab:
        build(the_lab)
        yield the_lab


def at_mx2(lab: Lab, *bursts: str) -> list[dict[str, Any]]:
    return [r for r in receiver.read_records(lab.second_mx_log) if r.get("burst") in bursts]


def waiting(lab: Lab, domain: str, words: str) -> list[dict[str, Any]]:
    return [m for m in ops.queue(lab) for r in m.get("recipients", [])
            if r.get("address", "").endswith("@" + domain) and words in str(r.get("delay_reason", ""))]


def ask(lab: Lab, port: str, request: str, *argv: str) -> str:
    """One socketmap request inside the jira host, as Postfix asks it (apply.sh's own probe)."""
    probe = render.script("apply.sh").split("SOCKETMAP_PROBE='", 1)[1].split("\n'\n", 1)[0]
    done = jirahost.run(lab.info(), ["python3", "-I", "-c", probe, port, request, *argv])
    assert done.returncode == 0, done.stderr
    return done.stdout.strip("\n")


def verified_to(lab: Lab, mx: str) -> int:
    log = jirahost.run(lab.info(), ["cat", "/var/log/mail.log"]).stdout
    return sum(1 for line in log.splitlines() if f"Verified TLS connection established to {mx}[" in line)


def send(lab: Lab, domain: str, count: int = COUNT) -> ops.Burst:
    return ops.send(lab, count, big_every=0, recipients=[f"bob@{domain}"])


def test_the_push_starts_the_policy_daemon_and_the_tables_answer_in_order(lab: Lab) -> None:
    maps = jirahost.run(lab.info(), ["postconf", "-h", "smtp_tls_policy_maps"]).stdout.strip()
    assert maps == f"{render.DANE_FIRST_MAP}, {render.MTA_STS_MAP}"
    assert jirahost.run(lab.info(), ["cat", "/var/lib/jira-mailhost/original/MTA_STS"]).stdout == "stopped\n"
    # MTA-STS alone: the enforce policies' MX names; testing mode is no policy to Postfix.
    assert ask(lab, "8461", f"postfix {STS}") == f"OK secure match={MX2} servername=hostname"
    assert ask(lab, "8461", f"postfix {BOTH}") == f"OK secure match={MXB} servername=hostname"
    assert ask(lab, "8461", f"postfix {TESTING}") == "NOTFOUND "
    # DANE first, through Postfix's own spawn service: only the domain whose MX has a TLSA is DANE's.
    dane_port = str(render.DANE_FIRST_PORT)
    assert ask(lab, dane_port, f"dane {BOTH}") == "OK dane"
    assert ask(lab, dane_port, f"dane {NET}") == "OK dane"  # the lab MX's TLSA (the DANE module's case)
    assert [ask(lab, dane_port, f"dane {d}") for d in (STS, WRONG, TESTING)] == ["NOTFOUND "] * 3
    assert ask(lab, dane_port, f"dane ns.{zones.SENDER_DOMAIN}") == "NOTFOUND "  # unsigned zone
    assert ask(lab, dane_port, f"dane {zones.BOGUS_ZONE}").startswith("TEMP the validating resolver gave no answer")
    assert ask(lab, dane_port, "dane [198.51.100.1]") == "NOTFOUND "


def test_an_enforce_policy_delivers_only_to_a_certificate_it_names(lab: Lab) -> None:
    before = verified_to(lab, MX2)
    good = send(lab, STS)
    held = send(lab, WRONG)
    testing = send(lab, TESTING)
    got = until(lambda: len(found := at_mx2(lab, good.name)) >= COUNT and found, 90, "the sts burst at mx2")
    assert len(got) == COUNT and all(r["tls"] for r in got)
    assert verified_to(lab, MX2) > before, "Postfix checked mx2's certificate (MTA-STS: secure)"
    until(lambda: len(at_mx2(lab, testing.name)) >= COUNT, 90, "the testing-mode burst at mx2")
    assert all(r["tls"] for r in at_mx2(lab, testing.name))
    until(lambda: len(waiting(lab, WRONG, UNVERIFIED)) >= COUNT, 90, "the stswrong burst held")
    assert at_mx2(lab, held.name) == [], "not one message to a certificate the policy does not name"
    rc, data = status(lab)
    report = data["hosts"]["jira"]["report"]
    assert report["queue"]["tls_held"] == COUNT
    assert ("cert_unverified", "deferred") in {(c["cause"], c["status"]) for c in report["causes"]}
    assert rc >= 1


def test_where_both_are_published_dane_decides(lab: Lab) -> None:
    burst = send(lab, BOTH)
    until(lambda: len(waiting(lab, BOTH, UNVERIFIED)) >= COUNT, 90, "the both burst held by its TLSA")
    assert at_mx2(lab, burst.name) == [], "the MTA-STS policy would accept mx2's certificate; DANE refuses it"
    before = verified_to(lab, MXB)
    set_tlsa(lab, mx2_tlsa(lab))
    assert jirahost.run(lab.info(), ["postqueue", "-f"]).returncode == 0
    until(lambda: len(at_mx2(lab, burst.name)) >= COUNT and not waiting(lab, BOTH, ""), 90, "the both burst at mx2")
    time.sleep(1)  # anything arriving twice would show up now
    ids = [r["message_id"] for r in at_mx2(lab, burst.name)]
    assert len(ids) == COUNT and len(set(ids)) == COUNT, "0 lost, 0 twice"
    assert verified_to(lab, MXB) > before


def test_with_the_policy_host_gone_the_cached_policy_still_holds(lab: Lab) -> None:
    os.kill(lab.info().pids["mtasts"], signal.SIGTERM)
    until(lambda: not _answers(lab.world.smarthost.v4, 443), 10, "the policy host gone")
    asked = len(policy_log(lab).read_text().splitlines())
    for domain in (STS, WRONG):  # a new policy id: the daemon must fetch the policy again, and cannot
        _publish(lab, f"_mta-sts.{domain}", "TXT", [f'"{mtasts.txt("2")}"'])
    time.sleep(2)  # past cache_grace
    held = send(lab, WRONG, 3)
    good = send(lab, STS, 3)
    until(lambda: len(at_mx2(lab, good.name)) >= 3, 90, "the sts burst at mx2 on the cached policy")
    until(lambda: len(waiting(lab, WRONG, UNVERIFIED)) >= COUNT + 3, 90, "the stswrong burst held on its cache")
    assert at_mx2(lab, held.name) == [], "a policy host that is down does not turn a cached policy off"
    assert ask(lab, "8461", f"postfix {WRONG}") == f"OK secure match={MXW} servername=hostname"
    assert len(policy_log(lab).read_text().splitlines()) == asked


def _answers(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=1).close()
    except OSError:
        return False
    return True


def test_stripped_starttls_holds_the_dane_and_mta_sts_domains_and_only_the_others_go_in_clear(lab: Lab) -> None:
    """Something on the path removes mx2's STARTTLS offer: the domains whose receivers asked for TLS (an enforce
    policy; a TLSA, fixed by now) wait, the domain that asked for nothing gets its mail in clear, counted so."""
    path_to_mx2(lab, strip=True)
    try:
        vendor = send(lab, VENDOR)
        held = [send(lab, STS), send(lab, BOTH)]
        until(lambda: len(at_mx2(lab, vendor.name)) >= COUNT, 90, "the vendor burst at mx2, in clear")
        assert not any(r["tls"] for r in at_mx2(lab, vendor.name))
        for domain in (STS, BOTH):
            until(lambda d=domain: len(waiting(lab, d, "TLS is required, but was not offered")) >= COUNT, 90,  # type: ignore[misc]
                  f"the {domain} burst held for TLS")
        assert at_mx2(lab, *(b.name for b in held)) == [], "not one message in clear to a receiver that asked for TLS"
        trust = status(lab)[1]["hosts"]["jira"]["report"]["tls"]["sent_by_trust"]
        assert trust["none"] >= COUNT, trust
    finally:
        path_to_mx2(lab, strip=False)
    assert jirahost.run(lab.info(), ["postqueue", "-f"]).returncode == 0
    until(lambda: len(at_mx2(lab, *(b.name for b in held))) >= 2 * COUNT, 90, "the held bursts at mx2")
    time.sleep(1)
    got = at_mx2(lab, *(b.name for b in held))
    assert len({r["message_id"] for r in got}) == len(got) == 2 * COUNT and all(r["tls"] for r in got)


def test_the_push_run_again_starts_the_resolver_and_the_policy_daemon_when_they_are_down(lab: Lab) -> None:
    """A host without systemd after a reboot: the config is unchanged, but mail waits (TEMP) until unbound and
    the policy daemon run again; the push, run again, starts them."""
    stop = "kill $(cat /run/unbound.pid) $(cat /run/jira-mailhost-mta-sts.pid)"
    assert jirahost.run(lab.info(), ["sh", "-c", stop]).returncode == 0
    # the policy daemon lets its clients (Postfix's cached socketmap connections) finish first: up to 20 s
    gone = ["sh", "-c", "! kill -0 $(cat /run/unbound.pid) 2>/dev/null && "
                        "! kill -0 $(cat /run/jira-mailhost-mta-sts.pid) 2>/dev/null"]
    until(lambda: jirahost.run(lab.info(), gone).returncode == 0, 40, "unbound and the policy daemon stopped")
    pushed = rerun_push(lab)
    assert pushed.ok and "(started unbound postfix-mta-sts-resolver)" in pushed.stdout, pushed.stdout + pushed.stderr
    assert ask(lab, "8461", f"postfix {STS}") == f"OK secure match={MX2} servername=hostname"
    assert ask(lab, str(render.DANE_FIRST_PORT), f"dane {NET}") == "OK dane"


def test_the_teardown_stops_the_policy_daemon_it_started(lab: Lab) -> None:
    alive = ["sh", "-c", "test -r /run/jira-mailhost-mta-sts.pid && kill -0 $(cat /run/jira-mailhost-mta-sts.pid)"]
    assert jirahost.run(lab.info(), alive).returncode == 0
    assert jirahost.run(lab.info(), ["postsuper", "-d", "ALL"]).returncode == 0  # the held stswrong mail
    ops.deploy(lab, action="down")
    until(lambda: jirahost.run(lab.info(), alive).returncode != 0, 30, "postfix-mta-sts-resolver stopped")
    assert jirahost.run(lab.info(), ["test", "-e", render.DANE_FIRST]).returncode == 1
