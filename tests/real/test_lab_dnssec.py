"""delivery.outboundTls: dane in the lab: the validating resolver the push sets up, and DANE decided by the MX's TLSA.

Knot signs the lab root and the recipient zone; the root publishes the recipient zone's DS, and the MX's
certificate has its `TLSA 3 1 1`.  The jira host has Debian's unbound with the lab root's DS as its trust
anchor instead of the real root's key.  The stack says outboundTls: dane, with the lab's deliberately broken
zone as the name the push must see refused.  Then:
  - the push started unbound; it vouches (AD) for the MX and its TLSA, refuses the broken zone (SERVFAIL), and
    answers the unsigned sender zone without AD; Postfix's master, and only Postfix, resolves through it;
  - a burst to the MX arrives whole, every delivery Verified (DANE), and `status` counts it so;
  - once the TLSA names another key, a burst waits whole: 0 reach the MX, `status` names cert_unverified and
    the fix; with the TLSA fixed, one flush delivers every message, Verified, none twice;
  - with the resolver stopped, mail waits (nothing goes unchecked) and all of it arrives once it is back;
  - a push whose broken name validates is refused before the switch; back to opportunistic, Postfix is
    restarted on the host's own resolver.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from mailhost.lab import dnsupdate, jirahost, ops, receiver, tlscert, zones
from mailhost.lab.lab import Lab
from mailhost.publish import render
from tests.real.conftest import lab_in_tmp, until
from tests.real.test_status_lab import status

pytestmark = [pytest.mark.real]
MX = f"mx.{zones.RECIPIENT_DOMAIN}"
TLSA_NAME = f"_25._tcp.{MX}"
DANE = {"delivery": {"outboundTls": "dane", "dnssecBogusName": zones.BOGUS_ZONE}}
COUNT = 12
# Postfix's own words when a certificate is not the one the TLSA records name (dsn 4.7.5).
UNVERIFIED = "Server certificate not verified"


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("dane", mode=None) as the_lab:
        ops.up(the_lab, "direct", DANE)
        yield the_lab


def dig(lab: Lab, name: str, rtype: str) -> str:
    done = jirahost.run(lab.info(), ["kdig", "@127.0.0.1", "+dnssec", "+timeout=5", "+retry=0", name, rtype])
    return done.stdout


def header(answer: str) -> tuple[str, bool]:
    """(rcode, whether the resolver vouched for it: the AD flag) from kdig's header lines."""
    status_line = next(line for line in answer.splitlines() if line.startswith(";; ->>HEADER<<-"))
    flags = next(line for line in answer.splitlines() if line.startswith(";; Flags:"))
    return status_line.split("status: ")[1].split(";")[0], "ad" in flags.split("Flags:")[1].split(";")[0].split()


def records(answer: str, rtype: str) -> list[str]:
    out = []
    for line in answer.splitlines():
        fields = line.split()
        if len(fields) > 4 and not line.startswith(";") and fields[3] == rtype:
            out.append(" ".join(fields[4:]).lower())
    return out


def master_resolv_conf(lab: Lab) -> str:
    """/etc/resolv.conf as Postfix's master process sees it (its own mount namespace)."""
    script = 'pid=$(tr -dc 0-9 < /var/spool/postfix/pid/master.pid) && cat "/proc/$pid/root/etc/resolv.conf"'
    done = jirahost.run(lab.info(), ["sh", "-c", script])
    assert done.returncode == 0, done.stderr
    return done.stdout


def set_tlsa(lab: Lab, data: str) -> None:
    """Publish this TLSA for the MX, and make the jira host see it now: unbound's cache flushed, and Postfix's
    delivery processes, which keep the TLSA records they looked up for their TTL, restarted by a reload."""
    dnsupdate.upsert(lab.world.dns.v4, zones.RECIPIENT_DOMAIN, TLSA_NAME, "TLSA", 60, [data])
    flushed = jirahost.run(lab.info(), ["unbound-control", "flush_zone", zones.RECIPIENT_DOMAIN])
    assert flushed.returncode == 0, flushed.stderr
    until(lambda: records(dig(lab, TLSA_NAME, "TLSA"), "TLSA") == [data], 30, "the new TLSA served")
    assert jirahost.run(lab.info(), ["postfix", "reload"]).returncode == 0


def published(lab: Lab) -> str:
    return tlscert.tlsa_3_1_1(lab.cert_paths("mx")[0].read_bytes())


def at_mx(lab: Lab, *bursts: str) -> list[dict[str, Any]]:
    return [r for r in receiver.read_records(lab.receiver_log) if r.get("burst") in bursts]


def waiting(lab: Lab, words: str) -> list[dict[str, Any]]:
    return [m for m in ops.queue(lab) for r in m.get("recipients", []) if words in str(r.get("delay_reason", ""))]


def verified_lines(lab: Lab) -> int:
    log = jirahost.run(lab.info(), ["cat", "/var/log/mail.log"]).stdout
    return sum(1 for line in log.splitlines() if "postfix/smtp[" in line
               and f"Verified TLS connection established to {MX}[" in line)


def test_the_push_starts_a_resolver_that_validates_and_postfix_alone_uses_it(lab: Lab) -> None:
    address = dig(lab, MX, "A")
    assert header(address) == ("NOERROR", True) and records(address, "A") == [lab.world.mx.v4]
    tlsa = dig(lab, TLSA_NAME, "TLSA")
    assert header(tlsa) == ("NOERROR", True) and records(tlsa, "TLSA") == [published(lab)]
    assert header(dig(lab, zones.BOGUS_ZONE, "A"))[0] == "SERVFAIL"
    assert header(dig(lab, f"ns.{zones.SENDER_DOMAIN}", "A")) == ("NOERROR", False)  # unsigned: insecure
    assert header(dig(lab, f"nosuch.{zones.RECIPIENT_DOMAIN}", "A")) == ("NXDOMAIN", True)  # proven absent
    ours = jirahost.run(lab.info(), ["cat", render.RESOLV_CONF]).stdout
    assert master_resolv_conf(lab) == ours and "nameserver 127.0.0.1" in ours.splitlines()
    host_own = jirahost.run(lab.info(), ["cat", "/etc/resolv.conf"]).stdout
    assert f"nameserver {lab.world.dns.v4}" in host_own.splitlines(), "the rest of the host keeps its resolver"
    conf = jirahost.run(lab.info(), ["postconf", "-h", "smtp_dns_support_level", "smtp_tls_security_level"])
    assert conf.stdout.split() == ["dnssec", "dane"]
    before = jirahost.run(lab.info(), ["cat", "/var/lib/jira-mailhost/original/UNBOUND"]).stdout
    assert before == "stopped\n", "the teardown learns unbound was not running before the push"


def test_a_matching_tlsa_delivers_every_message_verified(lab: Lab) -> None:
    before = verified_lines(lab)
    burst = ops.send(lab, COUNT, big_every=0, recipients=[f"bob@{zones.RECIPIENT_DOMAIN}"])
    got = until(lambda: len(found := at_mx(lab, burst.name)) >= COUNT and found, 90, "the burst at the MX")
    assert len(got) == COUNT and all(r["tls"] for r in got)
    assert verified_lines(lab) > before, "Postfix verified the MX by its TLSA (DANE)"
    trust = status(lab)[1]["hosts"]["jira"]["report"]["tls"]["sent_by_trust"]
    assert trust["verified"] >= COUNT and trust["none"] == 0, trust


def test_a_tlsa_naming_another_key_holds_the_burst_and_a_fixed_one_delivers_it_all(lab: Lab) -> None:
    good = published(lab)
    set_tlsa(lab, good[:-8] + ("0" * 8 if not good.endswith("0" * 8) else "1" * 8))
    try:
        first = ops.send(lab, 1, big_every=0, recipients=[f"carol@{zones.RECIPIENT_DOMAIN}"])
        until(lambda: waiting(lab, UNVERIFIED), 90, "the first message held for its certificate")
        rest = ops.send(lab, COUNT - 1, big_every=0, recipients=[f"carol@{zones.RECIPIENT_DOMAIN}"])
        until(lambda: len(waiting(lab, UNVERIFIED)) >= COUNT, 90, "the whole burst held")
        assert at_mx(lab, first.name, rest.name) == [], "not one message went to a certificate DANE refused"
        rc, data = status(lab)
        host = data["hosts"]["jira"]
        assert host["report"]["queue"]["tls_held"] == COUNT
        causes = {(c["cause"], c["status"]) for c in host["report"]["causes"]}
        assert ("cert_unverified", "deferred") in causes, causes
        held = [f for f in host["findings"] if "certificate could not be verified" in f["what"]]
        assert held and held[0]["fix"].startswith("the mail waits in the queue, nothing is lost or sent unchecked")
        assert rc >= 1
    finally:
        set_tlsa(lab, good)
    assert jirahost.run(lab.info(), ["postqueue", "-f"]).returncode == 0
    until(lambda: len(at_mx(lab, first.name, rest.name)) >= COUNT and not waiting(lab, UNVERIFIED), 90,
          "the held burst at the MX")
    time.sleep(1)  # anything arriving twice would show up now
    ids = [r["message_id"] for r in at_mx(lab, first.name, rest.name)]
    assert len(ids) == COUNT and len(set(ids)) == COUNT, "0 lost, 0 twice"


def test_with_the_resolver_stopped_mail_waits_and_arrives_once_it_is_back(lab: Lab) -> None:
    stopped = jirahost.run(lab.info(), ["sh", "-c", "kill $(cat /run/unbound.pid) && sleep 1"])
    assert stopped.returncode == 0, stopped.stderr
    try:
        assert jirahost.run(lab.info(), ["postfix", "reload"]).returncode == 0  # no cached MX or TLSA answers
        burst = ops.send(lab, 6, big_every=0, recipients=[f"dave@{zones.RECIPIENT_DOMAIN}"])
        until(lambda: len(waiting(lab, "")) >= 6 and all(m["queue_name"] == "deferred" for m in ops.queue(lab)),
              120, "the burst deferred without a resolver")
        assert at_mx(lab, burst.name) == [], "without a validating answer nothing is sent"
    finally:
        started = jirahost.run(lab.info(), ["unbound", "-c", "/etc/unbound/unbound.conf"])
        assert started.returncode == 0, started.stderr
    until(lambda: header(dig(lab, MX, "A")) == ("NOERROR", True), 30, "the resolver back")
    assert jirahost.run(lab.info(), ["postqueue", "-f"]).returncode == 0
    until(lambda: len(at_mx(lab, burst.name)) >= 6 and not ops.queue(lab), 120, "the burst at the MX")
    assert len({r["message_id"] for r in at_mx(lab, burst.name)}) == 6


def test_a_resolver_that_does_not_refuse_the_broken_name_is_refused_and_opportunistic_restores_the_host_resolver(
        lab: Lab) -> None:
    live = jirahost.run(lab.info(), ["cat", "/etc/postfix/main.cf"]).stdout
    with pytest.raises(ops.DeployError) as refused:
        # A name that validates fine: the check must see it answered, and stop the push before the switch.
        ops.up(lab, "direct", {"delivery": {"outboundTls": "dane", "dnssecBogusName": zones.RECIPIENT_DOMAIN}})
    assert f"unbound answered {zones.RECIPIENT_DOMAIN}, whose DNSSEC is broken on purpose" in str(refused.value)
    assert jirahost.run(lab.info(), ["cat", "/etc/postfix/main.cf"]).stdout == live, "nothing changed"
    ops.up(lab, "direct", {"delivery": {"outboundTls": "opportunistic"}})
    conf = jirahost.run(lab.info(), ["postconf", "-h", "smtp_tls_security_level", "smtp_dns_support_level"])
    assert conf.stdout.split() == ["may"], conf.stdout
    assert jirahost.run(lab.info(), ["test", "-e", render.RESOLV_CONF]).returncode == 1
    assert f"nameserver {lab.world.dns.v4}" in master_resolv_conf(lab).splitlines(), \
        "restarted on the host's own resolver, not reloaded in the old namespace"
    burst = ops.send(lab, 3, big_every=0, recipients=[f"erin@{zones.RECIPIENT_DOMAIN}"])
    until(lambda: len(at_mx(lab, burst.name)) >= 3, 90, "mail after the switch back")


def test_the_teardown_stops_the_resolver_it_started_and_unbinds_postfix(lab: Lab) -> None:
    ops.up(lab, "direct", DANE)
    alive = ["sh", "-c", "test -r /run/unbound.pid && kill -0 $(cat /run/unbound.pid)"]
    assert jirahost.run(lab.info(), alive).returncode == 0
    ops.deploy(lab, action="down")  # the program's delete path (teardown.sh), the lab kept for a look
    assert jirahost.run(lab.info(), ["test", "-e", render.RESOLV_CONF]).returncode == 1
    assert jirahost.run(lab.info(), ["test", "-e", render.POSTFIX_RESOLVER_DROPIN]).returncode == 1
    until(lambda: jirahost.run(lab.info(), alive).returncode != 0, 30, "unbound stopped, as it was before the push")
