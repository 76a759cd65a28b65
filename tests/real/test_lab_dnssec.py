"""The lab's DNSSEC world, as a DANE sender's validating resolver sees it.

Knot signs the lab root and the recipient zone; the root publishes the recipient zone's DS; the jira host's
unbound (Debian's, with the lab root's DS as its trust anchor instead of the real root's key) must then:
  - vouch (AD) for the MX's address and for its TLSA record, which names the key the MX presents;
  - answer SERVFAIL for the zone whose parent publishes a DS for no key of it;
  - answer the unsigned sender zone without AD (insecure, not bogus).
Postfix's own DANE client (posttls-finger) through that resolver then calls the MX's certificate Verified,
and, once the TLSA names another key, refuses it: what `smtp_tls_security_level = dane` will do.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest

from mailhost.lab import dnsupdate, jirahost, tlscert, zones
from mailhost.lab.lab import Lab
from tests.real.conftest import lab_in_tmp, until

pytestmark = [pytest.mark.real]
MX = f"mx.{zones.RECIPIENT_DOMAIN}"
TLSA_NAME = f"_25._tcp.{MX}"
# A resolv.conf for the tools run below only, in their own mount namespace: the validating resolver, and
# glibc's trust-ad, without which it clears the AD bit before any program sees it.
# posttls-finger reads main.cf; the host has none yet (nothing deployed), so an empty one of its own.
_WITH_UNBOUND = ('printf "nameserver 127.0.0.1\\noptions trust-ad\\n" > /run/jm-unbound-resolv.conf && '
                 'mount --bind /run/jm-unbound-resolv.conf /etc/resolv.conf && '
                 'mkdir -p /run/jm-finger && : > /run/jm-finger/main.cf && MAIL_CONFIG=/run/jm-finger exec "$@"')


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("dnssec", mode=None) as the_lab:
        info = the_lab.build()
        started = jirahost.run(info, ["unbound", "-c", "/etc/unbound/unbound.conf"])
        assert started.returncode == 0, started.stderr
        until(lambda: "NOERROR" in dig(the_lab, ".", "SOA"), 30, "the jira host's unbound answering")
        yield the_lab


def dig(lab: Lab, name: str, rtype: str) -> str:
    done = jirahost.run(lab.info(), ["kdig", "@127.0.0.1", "+dnssec", "+timeout=5", "+retry=0", name, rtype])
    return done.stdout


def header(answer: str) -> tuple[str, bool]:
    """(rcode, whether the resolver vouched for it: the AD flag) from kdig's header lines."""
    status = next(line for line in answer.splitlines() if line.startswith(";; ->>HEADER<<-"))
    flags = next(line for line in answer.splitlines() if line.startswith(";; Flags:"))
    return status.split("status: ")[1].split(";")[0], "ad" in flags.split("Flags:")[1].split(";")[0].split()


def records(answer: str, rtype: str) -> list[str]:
    out = []
    for line in answer.splitlines():
        fields = line.split()
        if len(fields) > 4 and not line.startswith(";") and fields[3] == rtype:
            out.append(" ".join(fields[4:]).lower())
    return out


def test_the_resolver_vouches_for_the_mx_and_its_tlsa_and_refuses_the_bogus_zone(lab: Lab) -> None:
    mx_cert = lab.cert_paths("mx")[0].read_bytes()
    address = dig(lab, MX, "A")
    assert header(address) == ("NOERROR", True) and records(address, "A") == [lab.world.mx.v4]
    tlsa = dig(lab, TLSA_NAME, "TLSA")
    assert header(tlsa) == ("NOERROR", True)
    assert records(tlsa, "TLSA") == [tlscert.tlsa_3_1_1(mx_cert)]
    assert header(dig(lab, zones.BOGUS_ZONE, "A"))[0] == "SERVFAIL"
    assert header(dig(lab, f"ns.{zones.SENDER_DOMAIN}", "A")) == ("NOERROR", False)  # unsigned: insecure
    assert header(dig(lab, f"nosuch.{zones.RECIPIENT_DOMAIN}", "A")) == ("NXDOMAIN", True)  # proven absent


def finger(lab: Lab) -> subprocess.CompletedProcess[str]:
    """posttls-finger at DANE level against the recipient domain's MX, resolving through the jira host's unbound."""
    argv = ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", _WITH_UNBOUND, "with-unbound",
            "posttls-finger", "-c", "-l", "dane", "-t", "10", "-T", "20", zones.RECIPIENT_DOMAIN]
    return jirahost.run(lab.info(), argv, timeout=60)


def test_postfix_calls_the_mx_verified_by_its_tlsa_and_refuses_it_once_the_tlsa_names_another_key(lab: Lab) -> None:
    done = finger(lab)
    assert f"Verified TLS connection established to {MX}" in done.stdout + done.stderr, done.stdout + done.stderr
    published = tlscert.tlsa_3_1_1(lab.cert_paths("mx")[0].read_bytes())
    wrong = published[:-8] + ("0" * 8 if not published.endswith("0" * 8) else "1" * 8)
    dnsupdate.upsert(lab.world.dns.v4, zones.RECIPIENT_DOMAIN, TLSA_NAME, "TLSA", 60, [wrong])
    try:
        flushed = jirahost.run(lab.info(), ["unbound-control", "flush_zone", zones.RECIPIENT_DOMAIN])
        assert flushed.returncode == 0, flushed.stderr
        until(lambda: records(dig(lab, TLSA_NAME, "TLSA"), "TLSA") == [wrong], 30, "the wrong TLSA served")
        refused = finger(lab)
        text = refused.stdout + refused.stderr
        assert "Verified TLS connection established" not in text, text
        assert "certificate verification failed" in text or "not verified" in text.lower(), text
    finally:
        dnsupdate.upsert(lab.world.dns.v4, zones.RECIPIENT_DOMAIN, TLSA_NAME, "TLSA", 60, [published])
