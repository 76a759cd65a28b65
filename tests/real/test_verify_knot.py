"""`mailhost verify` against a real authoritative server: Knot on 127.0.0.1, a free port.

One good zone set (every check passes, in recursive and authoritative mode) and one broken
variant per check; each must be reported as exactly the checks a receiver would trip on,
with the right status, and nothing else.  Also the CLI contract: exit codes and JSON shape.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.resolver
import pytest
import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from typer.testing import CliRunner

from mailhost.cli import verify as cli_verify
from mailhost.lab.knot import Knot, KnotError, free_port
from mailhost.records import dkim, dnstext
from mailhost.verify import run as verify_mod
from mailhost.verify.checks import CheckResult
from mailhost.verify.dnsquery import ResolverSpec
from mailhost.verify.run import Report, VerifyOptions, run
from tests.fixtures.zones.verify_world import DOMAIN, OTHER_DOMAIN, SELECTOR, World, lab_host

UNSIGNED = ("zone example.com is not signed (no DNSKEY at its apex): receivers see its answers unvouched, and "
            "its MX could not use DANE (TLSA records need a signed zone)")
pytestmark = [
    pytest.mark.real,
    pytest.mark.filterwarnings("ignore:please use dns.resolver.resolve:DeprecationWarning"),  # pyspf's call
]

ROOT = Path(__file__).resolve().parents[2]
V4, V6 = "198.51.100.10", "2001:db8:5100::a"
JIRA = "jira.example.com"
DKIM_NAME = f"{SELECTOR}._domainkey"
_serial = itertools.count(2)


def _p(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def key() -> str:
    return _p(2048)


@pytest.fixture(scope="module")
def knot(key: str) -> Iterator[Knot]:
    zones = World([lab_host(1)], key).zones()
    zones["bl.test"] = (
        "$ORIGIN bl.test.\n$TTL 60\n@ SOA ns1.example.com. h.example.com. 1 3600 600 86400 60\n"
        "@ NS ns1.example.com.\n10.100.51.198 A 127.0.0.2\n10.100.51.198 TXT \"listed: spam trap hits\"\n"
    )
    zones["clean.test"] = "$TTL 60\n@ SOA ns1.example.com. h.example.com. 1 3600 600 86400 60\n@ NS ns1.example.com.\n"
    server = Knot(zones=zones)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def serve(knot: Knot, world: World) -> None:
    for name, text in world.zones(next(_serial)).items():
        knot.set_zone(name, text)


def options(knot: Knot, authoritative: bool = False, dnsbl: tuple[str, ...] = ()) -> VerifyOptions:
    return VerifyOptions(ResolverSpec(("127.0.0.1",), knot.port, authoritative, 2.0), dnsbl)


def flagged(report: Report) -> dict[str, str]:
    """The judged checks that did not pass (info is reported, never judged)."""
    return {check.id: check.status for check in report.checks if check.status not in ("pass", "info")}


def result(report: Report, check_id: str) -> CheckResult:
    return next(check for check in report.checks if check.id == check_id)


def marks(report: Report) -> dict[str, str]:
    return {item.requirement.text: item.mark for item in report.requirements}


def detail(report: Report, check_id: str) -> str:
    return next(check.detail for check in report.checks if check.id == check_id)


# -- the good zone -------------------------------------------------------------------------------
@pytest.mark.parametrize("authoritative", [False, True], ids=["recursive", "authoritative"])
def test_good_zone_has_no_false_alarm(knot: Knot, key: str, authoritative: bool) -> None:
    world = World([lab_host(1)], key)
    serve(knot, world)
    started = time.monotonic()
    report = run(world.expected(), options(knot, authoritative, dnsbl=("clean.test",)))
    elapsed = time.monotonic() - started
    assert flagged(report) == {}, [c for c in report.checks if c.status != "pass"]
    ids = {check.id for check in report.checks}
    assert {
        f"a:{JIRA}", f"aaaa:{JIRA}", f"ptr:{V4}", f"fcrdns:{V4}", f"helo:{V4}", f"ptr:{V6}", f"fcrdns:{V6}",
        f"helo:{V6}", "spf:count", "spf:syntax", "spf:split", f"spf:eval:{V4}", f"spf:eval:{V6}", "spf:lookups",
        "spf:voids", "spf:all", f"spf:helo:{JIRA}", f"dkim:{SELECTOR}", "dmarc", "dmarc:tags", "dmarc:rua", "mx",
        "dnssec", f"dnsbl:clean.test:{V4}",
    } <= ids
    assert report.exit_code == 0
    assert "matches the signing key" in detail(report, f"dkim:{SELECTOR}")
    assert "2 string(s)" in detail(report, f"dkim:{SELECTOR}")  # the 2048-bit key really is split
    assert "organizational domain example.com (DNS tree walk: _dmarc.example.com, _dmarc.com)" in detail(
        report, "dmarc")
    assert "example.com in the organization of example.com" in detail(report, "dmarc:rua")
    assert "0 void DNS lookups" in detail(report, "spf:voids") and "MX 10 mx1.example.com" in detail(report, "mx")
    assert (result(report, "dnssec").status, detail(report, "dnssec")) == (
        "info", UNSIGNED)
    assert set(marks(report).values()) == {"pass", "not checkable from DNS"}
    assert {(r.provider, r.tier, r.mark) for r in report.receivers} == {
        ("Gmail", "all", "pass"), ("Gmail", "bulk", "pass"), ("Yahoo", "all", "pass"), ("Yahoo", "bulk", "pass"),
        ("Microsoft", "bulk", "pass")}
    print(f"good zone ({'authoritative' if authoritative else 'recursive'}): {elapsed:.3f}s")


# -- one broken zone per check --------------------------------------------------------------------
def _spf(world: World, record: str) -> None:
    world.forward["@"] = [rr for rr in world.forward["@"] if "v=spf1" not in rr] + [
        f"TXT {dnstext.zone_value(record)}"
    ]


def _eleven_lookups(world: World) -> None:
    _spf(world, f"v=spf1 ip4:{V4} ip6:{V6} include:_a.example.com include:_b.example.com ~all")
    world.forward["_a"] = ['TXT "v=spf1 ' + " ".join(f"a:h{i}.example.com" for i in range(1, 6)) + ' -all"']
    world.forward["_b"] = ['TXT "v=spf1 ' + " ".join(f"a:h{i}.example.com" for i in range(6, 10)) + ' -all"']
    for i in range(1, 10):  # each name exists: too many lookups, but none of them void
        world.forward[f"h{i}"] = [f"A 198.51.100.{100 + i}", f"AAAA 2001:db8:5100::{100 + i:x}"]


def _three_void_lookups(world: World) -> None:
    """An include of a name that is gone, an a: without A, an mx: without MX: 3 voids for IPv4 senders."""
    _spf(world, f"v=spf1 ip4:{V4} ip6:{V6} include:_gone.example.com a:old.example.com mx:old.example.com ~all")
    world.forward["old"] = ['TXT "a name without A or MX"']


def _dmarc(world: World, record: str) -> None:
    world.forward["_dmarc"] = [f'TXT "{record}"']


def _dmarc_from_the_public_suffix(world: World) -> None:
    """No record of the domain's own; `com` publishes one as a public suffix (psd=y), as RFC 9989 allows."""
    del world.forward["_dmarc"]
    world.others["com"]["_dmarc"] = ['TXT "v=DMARC1; p=reject; psd=y"']


def _dkim_separate_records(world: World, key: str) -> None:
    world.forward[DKIM_NAME] = [f'TXT "{chunk}"' for chunk in dnstext.split_txt(dkim.txt_value(key))]


def _ptr_to_other_name(world: World) -> None:
    world.reverse4["10"] = ["PTR mail.example.com."]
    world.forward["mail"] = [f"A {V4}"]  # forward-confirmed, but not the name Postfix greets with


def _set(section: str, owner: str, *rrs: str) -> Callable[[World], None]:
    def apply(world: World) -> None:
        getattr(world, section)[owner] = list(rrs)

    return apply


def _drop(section: str, owner: str) -> Callable[[World], None]:
    return lambda world: getattr(world, section).pop(owner)


CASES: dict[str, tuple[Callable[[World], None], dict[str, str], str]] = {
    # name: (break the world, the non-pass checks expected, a phrase of the first one's detail)
    "missing PTR": (_drop("reverse4", "10"), {f"ptr:{V4}": "fail"}, "no PTR record"),
    "PTR not forward-confirmed": (
        _set("reverse4", "10", "PTR stale.example.com."),
        {f"fcrdns:{V4}": "fail", f"helo:{V4}": "fail"},
        "not forward-confirmed",
    ),
    "PTR is not the HELO name": (
        _ptr_to_other_name,
        {f"helo:{V4}": "fail"},
        "Postfix says HELO jira.example.com",
    ),
    "two SPF records": (
        lambda w: w.forward["@"].append('TXT "v=spf1 include:_spf.example.net -all"'),
        {"spf:count": "fail", f"spf:eval:{V4}": "fail", f"spf:eval:{V6}": "fail"},
        "2 SPF records",
    ),
    "IP not in SPF": (
        lambda w: _spf(w, f"v=spf1 ip4:198.51.100.99 ip6:{V6} ~all"),
        {f"spf:eval:{V4}": "fail"},
        "softfail",
    ),
    "11 SPF lookups": (_eleven_lookups, {"spf:lookups": "fail"}, "include:_a.example.com costs 6"),
    "+all": (lambda w: _spf(w, f"v=spf1 ip4:{V4} ip6:{V6} +all"), {"spf:all": "fail"}, "every host"),
    "?all": (lambda w: _spf(w, f"v=spf1 ip4:{V4} ip6:{V6} ?all"), {"spf:all": "warn"}, "neutral"),
    "+all before ~all": (lambda w: _spf(w, f"v=spf1 ip4:{V4} ip6:{V6} +all ~all"), {"spf:breadth": "fail"}, "/8"),
    "whole IPv4 Internet": (lambda w: _spf(w, f"v=spf1 ip4:{V4} ip6:{V6} ip4:0.0.0.0/0 ~all"),
                            {"spf:breadth": "fail"}, "ip4:0.0.0.0/0"),
    "half the IPv6 Internet": (lambda w: _spf(w, f"v=spf1 ip4:{V4} ip6:{V6} ?ip6:8000::/1 -all"),
                               {"spf:breadth": "fail"}, "?ip6:8000::/1"),
    "SPF cut into separate records": (
        lambda w: w.forward["@"].__setitem__(
            slice(2, 3), [f'TXT "v=spf1 ip4:{V4}"', f'TXT "ip6:{V6} ~all"']
        ),
        {"spf:split": "fail", f"spf:eval:{V6}": "fail", "spf:all": "warn"},
        "separate TXT records",
    ),
    "no SPF for the HELO name": (
        _set("forward", "jira", f"A {V4}", f"AAAA {V6}"), {f"spf:helo:{JIRA}": "warn"}, "no SPF record"
    ),
    "DKIM missing": (_drop("forward", DKIM_NAME), {f"dkim:{SELECTOR}": "fail"}, "NXDOMAIN"),
    "no DMARC": (_drop("forward", "_dmarc"), {"dmarc": "fail"}, "no DMARC record"),
    "two DMARC records": (
        lambda w: w.forward["_dmarc"].append('TXT "v=DMARC1; p=none"'), {"dmarc": "fail"}, "2 DMARC records"
    ),
    "DMARC p=none in production": (
        _set("forward", "_dmarc", 'TXT "v=DMARC1; p=none"'), {"dmarc": "warn"}, "p=none"
    ),
    "no MX and no address": (lambda w: w.forward["@"].remove("MX 10 mx1"), {"mx": "fail"}, "no MX and no A/AAAA"),
    "null MX": (lambda w: w.forward["@"].__setitem__(1, "MX 0 ."), {"mx": "fail"}, "null MX (RFC 7505"),
    "3 SPF void lookups": (_three_void_lookups, {"spf:voids": "fail"},
                           "3 void DNS lookups for IPv4 senders (limit 2): a:old.example.com (no A), "
                           "mx:old.example.com (no MX), _gone.example.com (no TXT)"),
    "DMARC with RFC 7489's pct and ri": (
        lambda w: _dmarc(w, f"v=DMARC1; p=quarantine; pct=50; ri=3600; rua=mailto:dmarc-reports@{DOMAIN}"),
        {"dmarc:tags": "warn"}, "pct=50, ri=3600 were removed by RFC 9989"),
    "DMARC t=y the stack does not ask for": (
        lambda w: _dmarc(w, "v=DMARC1; p=quarantine; t=y"), {"dmarc:tags": "warn"},
        "the record has t=y but the stack's dmarc.testing is false"),
    "DMARC only from the public suffix (psd=y)": (
        _dmarc_from_the_public_suffix, {"dmarc": "warn"},
        "_dmarc.example.com has no record of its own; receivers use _dmarc.com: p=reject"),
    "DMARC reports to another organization that did not agree": (
        lambda w: _dmarc(w, f"v=DMARC1; p=quarantine; rua=mailto:reports@{OTHER_DOMAIN}"), {"dmarc:rua": "warn"},
        f"example.net did not agree (no v=DMARC1 TXT at example.com._report._dmarc.{OTHER_DOMAIN})"),
    "wrong A": (
        _set("forward", "jira", "A 198.51.100.77", f"AAAA {V6}", 'TXT "v=spf1 a -all"'),
        {f"a:{JIRA}": "fail", f"fcrdns:{V4}": "fail", f"spf:helo:{JIRA}": "fail"},
        "expected 198.51.100.10",
    ),
    "wrong AAAA": (
        _set("forward", "jira", f"A {V4}", "AAAA 2001:db8:5100::77", 'TXT "v=spf1 a -all"'),
        {f"aaaa:{JIRA}": "fail", f"fcrdns:{V6}": "fail", f"spf:helo:{JIRA}": "fail"},
        "expected 2001:db8:5100::a",
    ),
    "IPv6 without PTR while Postfix sends over IPv6": (
        _drop("reverse6", "a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0"), {f"ptr:{V6}": "fail"}, "550-5.7.25"
    ),
}


@pytest.mark.parametrize("authoritative", [False, True], ids=["recursive", "authoritative"])
@pytest.mark.parametrize("case", list(CASES))
def test_broken_zone_is_reported_as_the_right_check(knot: Knot, key: str, case: str, authoritative: bool) -> None:
    breaker, expected, phrase = CASES[case]
    world = World([lab_host(1)], key)
    breaker(world)
    serve(knot, world)
    report = run(world.expected(), options(knot, authoritative))
    assert flagged(report) == expected, [c for c in report.checks if c.status != "pass"]
    first = next(iter(expected))
    assert phrase in detail(report, first)
    assert report.exit_code == (1 if "fail" in expected.values() else 0)
    assert not any(check.lookup_error for check in report.checks)


@pytest.mark.parametrize(
    "case, expected_status, phrase",
    [("wrong key", "fail", "different key"), ("separate records", "fail", "separate records"),
     ("1024 bits", "warn", "RSA 1024 bits"), ("cut at 255 characters", "fail", "p= is not")],
)
def test_dkim_record_problems(knot: Knot, key: str, case: str, expected_status: str, phrase: str) -> None:
    world = World([lab_host(1)], key)
    if case == "wrong key":
        world.forward[DKIM_NAME] = [f"TXT {dnstext.zone_value(dkim.txt_value(_p(2048)))}"]
    elif case == "separate records":
        _dkim_separate_records(world, key)
    elif case == "cut at 255 characters":  # what is left when a tool drops all but the first string
        world.forward[DKIM_NAME] = [f'TXT "{dkim.txt_value(key)[:255]}"']
    else:
        world.dkim_p = _p(1024)
        world.forward[DKIM_NAME] = [f"TXT {dnstext.zone_value(dkim.txt_value(world.dkim_p))}"]
    serve(knot, world)
    report = run(world.expected(), options(knot))
    assert flagged(report) == {f"dkim:{SELECTOR}": expected_status}
    assert phrase in detail(report, f"dkim:{SELECTOR}")


@pytest.mark.parametrize("authoritative", [False, True], ids=["recursive", "authoritative"])
def test_sender_domain_without_mx_but_with_an_address_takes_bounces(knot: Knot, key: str,
                                                                     authoritative: bool) -> None:
    world = World([lab_host(1)], key)
    world.forward["@"] = [rr for rr in world.forward["@"] if not rr.startswith("MX")] + ["A 198.51.100.5"]
    serve(knot, world)
    report = run(world.expected(), options(knot, authoritative))
    assert flagged(report) == {}
    assert detail(report, "mx") == ("example.com has no MX; mail to it goes to its own address 198.51.100.5 "
                                    "(implicit MX, RFC 5321 5.1)")


@pytest.mark.parametrize("authoritative", [False, True], ids=["recursive", "authoritative"])
def test_dmarc_reports_to_another_organization_that_agreed(knot: Knot, key: str, authoritative: bool) -> None:
    world = World([lab_host(1)], key)
    world.forward["_dmarc"] = [f'TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc-reports@{DOMAIN},'
                               f'mailto:reports@{OTHER_DOMAIN}"']
    world.others[OTHER_DOMAIN][f"{DOMAIN}._report._dmarc"] = ['TXT "v=DMARC1"']
    serve(knot, world)
    report = run(world.expected(), options(knot, authoritative))
    assert flagged(report) == {}
    assert detail(report, "dmarc:rua") == (
        "report destinations of _dmarc.example.com: example.com in the organization of example.com; example.net "
        "agreed (example.com._report._dmarc.example.net)")


def test_a_parent_zone_that_refuses_leaves_the_organizational_domain_open_and_nothing_fails(key: str) -> None:
    """Like the lab's own server: it serves example.com but refuses _dmarc.com (a zone it does not have)."""
    world = World([lab_host(1)], key)
    world.others.clear()
    server = Knot(zones=world.zones())
    server.start()
    try:
        for authoritative in (False, True):
            report = run(world.expected(), options(server, authoritative))
            assert flagged(report) == {} and report.exit_code == 0, authoritative
            assert not any(check.lookup_error for check in report.checks)
            assert "organizational domain not determined (_dmarc.com: " in detail(report, "dmarc")
            assert detail(report, "dnssec") == UNSIGNED
    finally:
        server.stop()


class SigningKnot(Knot):
    """Knot signing the sender zone itself (dnssec-signing: on, with Knot's default policy and keys)."""

    def _render_conf(self) -> str:
        zone = f'  - domain: "{DOMAIN}."\n'
        conf = super()._render_conf()
        assert zone in conf
        return conf.replace(zone, zone + "    dnssec-signing: on\n")

    def ds_records(self) -> list[str]:
        """The DS records of the zone's key-signing key, as the parent would publish them."""
        argv = ["keymgr", "-c", str(self.conf), f"{DOMAIN}.", "ds"]
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
        return [line.split(" DS ", 1)[1] for line in out.splitlines() if " DS " in line]


@pytest.fixture(scope="module")
def signing_knot(key: str) -> Iterator[SigningKnot]:
    server = SigningKnot(zones=World([lab_host(1)], key).zones())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _dnssec(server: Knot, world: World, authoritative: bool) -> CheckResult:
    serve(server, world)
    report = run(world.expected(), options(server, authoritative))
    assert flagged(report) == {} and report.exit_code == 0  # reported, never a failure
    return result(report, "dnssec")


@pytest.mark.parametrize("authoritative", [False, True], ids=["recursive", "authoritative"])
def test_dnssec_of_a_signed_zone_with_and_without_the_parents_ds(signing_knot: SigningKnot, key: str,
                                                                 authoritative: bool) -> None:
    world = World([lab_host(1)], key)
    signed = _dnssec(signing_knot, world, authoritative)
    assert signed.status == "info" and "zone example.com is signed (2 DNSKEY, key tag " in signed.detail
    assert signed.detail.endswith("but its parent has no DS for it: validators treat it as unsigned")
    world.others["com"]["example"] = ["NS ns1.example.com.", *(f"DS {ds}" for ds in signing_knot.ds_records())]
    vouched = _dnssec(signing_knot, world, authoritative)
    assert "and its parent's DS (key tag " in vouched.detail and vouched.fix == ""
    world.others["com"]["example"] = ["NS ns1.example.com.", "DS 1 13 2 " + "ab" * 32]
    stale = _dnssec(signing_knot, world, authoritative)
    assert "but no DS at its parent matches its keys (DS key tag 1)" in stale.detail


def test_authoritative_mode_asks_the_parents_own_servers_for_the_ds(signing_knot: SigningKnot, key: str) -> None:
    """The DS lives on the parent's side of the zone cut.  Here `com` is delegated to a second server (on
    127.0.0.2) that has the DS; the first server's own copy of `com` has none, so asking the child's
    servers, or anyone but the parent's, would say 'no DS'."""
    world = World([lab_host(1)], key)
    world.forward["ns-com"] = ["A 127.0.0.2"]
    world.others["com"] = {"@": ["NS ns-com.example.com."]}
    delegation = ["@ NS ns-com.example.com.", "example NS ns1.example.com.",
                  *(f"example DS {ds}" for ds in signing_knot.ds_records())]
    parent = Knot(listen=("127.0.0.2",), port=signing_knot.port, zones={"com": _zone_text("com", delegation)})
    parent.start()
    try:
        vouched = _dnssec(signing_knot, world, authoritative=True)
    finally:
        parent.stop()
    assert "and its parent's DS (key tag " in vouched.detail, vouched.detail


def _zone_text(origin: str, lines: list[str]) -> str:
    head = [f"$ORIGIN {origin}.", "$TTL 60", f"@ SOA ns1.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 60"]
    return "\n".join(head + lines) + "\n"


@pytest.mark.parametrize("authoritative", [False, True], ids=["recursive", "authoritative"])
def test_dnssec_of_an_unsigned_zone_whose_parent_publishes_a_ds(knot: Knot, key: str, authoritative: bool) -> None:
    world = World([lab_host(1)], key)
    world.others["com"]["example"] = ["NS ns1.example.com.", "DS 1 13 2 " + "ab" * 32]
    bogus = _dnssec(knot, world, authoritative)
    assert bogus.detail == ("zone example.com is not signed (no DNSKEY) but its parent publishes a DS (key tag 1): "
                            "validating resolvers answer SERVFAIL for every name in it")


def test_ipv6_without_ptr_is_only_a_warning_when_postfix_sends_ipv4_only(knot: Knot, key: str) -> None:
    world = World([lab_host(1)], key)
    world.reverse6.clear()
    serve(knot, world)
    report = run(world.expected(sends_ipv6=False), options(knot))
    assert flagged(report) == {f"ptr:{V6}": "warn"}
    assert report.exit_code == 0


def test_listed_address_fails_the_dnsbl_check(knot: Knot, key: str) -> None:
    world = World([lab_host(1)], key)
    serve(knot, world)
    report = run(world.expected(), options(knot, dnsbl=("bl.test",)))
    assert flagged(report) == {f"dnsbl:bl.test:{V4}": "fail"}
    assert "spam trap hits" in detail(report, f"dnsbl:bl.test:{V4}")


def test_unreachable_nameserver_is_a_resolution_error(key: str) -> None:
    world = World([lab_host(1)], key)
    dead = VerifyOptions(ResolverSpec(("127.0.0.1",), free_port(), False, 0.5))
    started = time.monotonic()
    report = run(world.expected(), dead)
    assert time.monotonic() - started < 10  # bounded, not hung
    assert report.exit_code == 2
    assert all(check.lookup_error for check in report.failures) and report.failures


def test_wait_retries_until_the_fix_has_propagated(knot: Knot, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_mod, "RETRY_INTERVAL", 0.3)
    broken = World([lab_host(1)], key)
    broken.reverse4.clear()
    serve(knot, broken)
    fixer = threading.Timer(1.0, serve, (knot, World([lab_host(1)], key)))
    fixer.start()
    try:
        report = run(broken.expected(), options(knot), wait=20)
    finally:
        fixer.join()
    assert report.ok and report.attempts >= 2, report.failures
    assert report.seconds < 10


def test_wait_gives_up_after_the_time_given(knot: Knot, key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(verify_mod, "RETRY_INTERVAL", 0.3)
    world = World([lab_host(1)], key)
    world.reverse4.clear()
    serve(knot, world)
    report = run(world.expected(), options(knot), wait=1.0)
    assert not report.ok and report.attempts >= 2 and 1.0 <= report.seconds < 5


def test_many_hosts_concurrently_without_false_alarm(knot: Knot, key: str) -> None:
    world = World([lab_host(i) for i in range(1, 101)], key)
    serve(knot, world)
    report = run(world.expected(), options(knot, authoritative=True))
    assert flagged(report) == {}
    assert sum(1 for c in report.checks if c.id.startswith("ptr:")) == 200


# -- the command ----------------------------------------------------------------------------------
def _app() -> typer.Typer:
    app = typer.Typer()
    cli_verify.register(app)

    @app.callback()
    def _root() -> None:
        """test root"""

    return app


def _cli(knot: Knot, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(
        _app(), ["verify", "--nameserver", "127.0.0.1", "--port", str(knot.port), "--timeout", "2", *args], env=env
    )
    return result.exit_code, result.output


def _flags(key: str) -> list[str]:
    return ["--domain", "example.com", "--host", JIRA, "--ipv4", V4, "--ipv6", V6, "--selector", SELECTOR,
            "--dkim-public-key", key]


def test_cli_flags_exit_zero_and_json_shape(knot: Knot, key: str) -> None:
    serve(knot, World([lab_host(1)], key))
    code, out = _cli(knot, *_flags(key), "--json")
    assert code == 0, out
    data = json.loads(out)
    assert set(data) == {"ok", "checks", "requirements", "receivers"} and data["ok"] is True
    assert all(set(check) == {"id", "status", "detail", "fix"} for check in data["checks"])
    assert {check["status"] for check in data["checks"]} == {"pass", "info"}
    assert all(set(item) == {"requirement", "status", "required_by", "checks"} for item in data["requirements"])
    spf_or_dkim = data["requirements"][0]
    assert spf_or_dkim["requirement"] == "SPF or DKIM passes" and spf_or_dkim["status"] == "pass"
    assert spf_or_dkim["required_by"] == {"gmail": "all", "yahoo": "all", "microsoft": None}
    assert spf_or_dkim["checks"] == [f"spf:eval:{V4}", f"spf:eval:{V6}", "spf:count", "spf:syntax", "spf:lookups",
                                     "spf:voids", f"dkim:{SELECTOR}"]
    assert {item["status"] for item in data["requirements"]} == {"pass", "not checkable from DNS"}
    assert data["receivers"] == [
        {"provider": "gmail", "tier": "all", "status": "pass", "not_checkable_from_dns": [
            "TLS in transit", "spam complaint rate under 0.3%", "RFC 5322 message format"]},
        {"provider": "gmail", "tier": "bulk", "status": "pass", "not_checkable_from_dns": [
            "TLS in transit", "spam complaint rate under 0.3%", "RFC 5322 message format",
            "one-click unsubscribe (RFC 8058) on marketing mail"]},
        {"provider": "yahoo", "tier": "all", "status": "pass", "not_checkable_from_dns": [
            "spam complaint rate under 0.3%"]},
        {"provider": "yahoo", "tier": "bulk", "status": "pass", "not_checkable_from_dns": [
            "spam complaint rate under 0.3%", "one-click unsubscribe (RFC 8058) on marketing mail"]},
        {"provider": "microsoft", "tier": "bulk", "status": "pass", "not_checkable_from_dns": []},
    ]


def test_cli_exit_one_on_a_failing_check_and_says_the_fix(knot: Knot, key: str) -> None:
    world = World([lab_host(1)], key)
    world.reverse4.clear()
    serve(knot, world)
    code, out = _cli(knot, *_flags(key))
    assert code == 1
    assert f"FAIL ptr:{V4}: {V4} has no PTR record" in out
    assert "fix: publish 10.100.51.198.in-addr.arpa. PTR jira.example.com." in out
    assert "  FAIL                   PTR for each sending IP, forward-confirmed [Gmail all senders]\n" in out
    assert ("  Gmail all senders: fail · Gmail bulk: fail · Yahoo all senders: pass · Yahoo bulk: pass · "
            "Microsoft bulk: pass\n") in out
    code, out = _cli(knot, *_flags(key), "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False
    assert [c["id"] for c in data["checks"] if c["status"] == "fail"] == [f"ptr:{V4}"]
    assert [r["requirement"] for r in data["requirements"] if r["status"] == "fail"] == [
        "PTR for each sending IP, forward-confirmed"]
    assert [(r["provider"], r["tier"]) for r in data["receivers"] if r["status"] == "fail"] == [
        ("gmail", "all"), ("gmail", "bulk")]


def test_cli_usage_errors_exit_two(knot: Knot) -> None:
    assert _cli(knot)[0] == 2
    assert _cli(knot, "--domain", "example.com", "--host", JIRA, "--ipv4", "not-an-ip")[0] == 2
    assert _cli(knot, "--domain", "example.com", "--host", JIRA, "--ipv4", V6)[0] == 2
    assert _cli(knot, "--outputs", "/nonexistent/out.json")[0] == 2
    assert _cli(knot, "--expected-env", "MAILHOST_TEST_UNSET_VAR")[0] == 2


def test_cli_resolution_error_exits_two(key: str) -> None:
    result = CliRunner().invoke(
        _app(), ["verify", "--nameserver", "127.0.0.1", "--port", str(free_port()), "--timeout", "0.5", *_flags(key)]
    )
    assert result.exit_code == 2, result.output
    assert "could not look up" in result.output


def test_cli_outputs_file_string_or_object(knot: Knot, key: str, tmp_path: Path) -> None:
    world = World([lab_host(1)], key)
    serve(knot, world)
    as_string = tmp_path / "out.json"
    as_string.write_text(json.dumps({"verification": world.expected().to_json(), "other": 1}))
    assert _cli(knot, "--outputs", str(as_string))[0] == 0
    as_object = tmp_path / "out2.json"
    as_object.write_text(json.dumps({"verification": json.loads(world.expected().to_json())}))
    assert _cli(knot, "--outputs", str(as_object), "--authoritative")[0] == 0
    secret = tmp_path / "out3.json"
    secret.write_text(json.dumps({"verification": "[secret]"}))
    code, out = _cli(knot, "--outputs", str(secret))
    assert code == 2 and "--show-secrets" in out


def _stack(tmp_path: Path, host: str) -> Path:
    path = tmp_path / "Pulumi.verifytest.yaml"
    path.write_text(
        "config:\n"
        "  jira-mailhost:environment: production\n"
        "  jira-mailhost:domain: example.com\n"
        "  jira-mailhost:dkimSelector: jm1\n"
        "  jira-mailhost:dmarc:\n    policy: quarantine\n"
        "  jira-mailhost:sshPrivateKey:\n    secure: AAABAKZpbmUK\n"
        f"  jira-mailhost:hosts:\n{host}"
    )
    return path


def test_cli_stack_file_for_an_adopted_host(knot: Knot, key: str, tmp_path: Path) -> None:
    serve(knot, World([lab_host(1)], key))
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    host_key = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    path = _stack(tmp_path, f"    - name: jira\n      existing:\n        ipv4: {V4}\n        ipv6: {V6}\n"
                            f"        hostKey: {host_key}\n        ipv4Ptr: external\n        ipv6Ptr: external\n")
    code, out = _cli(knot, "--stack", str(path))
    assert code == 0, out
    assert f"dkim:{SELECTOR}" in out


def test_cli_stack_file_with_ec2_host_points_to_outputs(knot: Knot, tmp_path: Path) -> None:
    path = _stack(tmp_path, "    - name: jira\n      ec2:\n        subnetId: subnet-0123abcd\n"
                            "        sshCidrs: ['203.0.113.7/32']\n")
    code, out = _cli(knot, "--stack", str(path))
    assert code == 2 and "--outputs" in out


def test_post_deploy_command_fails_with_the_same_lines(knot: Knot, key: str) -> None:
    """What the program's local.Command runs: `python -m mailhost verify --expected-env ...`."""
    world = World([lab_host(1)], key)
    world.reverse4.clear()
    serve(knot, world)
    env = {**os.environ, "MAILHOST_EXPECTED": world.expected().to_json(), "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "mailhost", "verify", "--expected-env", "MAILHOST_EXPECTED",
            "--nameserver", "127.0.0.1", "--port", str(knot.port), "--authoritative", "--wait", "0"]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert f"FAIL ptr:{V4}: {V4} has no PTR record" in proc.stdout
    serve(knot, World([lab_host(1)], key))
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_two_verifications_at_once_each_ask_their_own_server(knot: Knot, key: str) -> None:
    """pyspf's resolver is process-wide: two runs against different servers must not mix answers."""
    good = World([lab_host(1)], key)
    serve(knot, good)
    bad = World([lab_host(1)], key)
    _spf(bad, f"v=spf1 ip4:198.51.100.99 ip6:{V6} -all")
    other = Knot(zones=bad.zones())
    other.start()
    previous = dns.resolver.default_resolver
    try:
        reports: dict[str, Report] = {}

        def verify(label: str, server: Knot) -> None:
            for _ in range(5):
                reports[label] = run(good.expected(), options(server))
                if flagged(reports[label]) != ({} if label == "good" else {f"spf:eval:{V4}": "fail"}):
                    return

        threads = [threading.Thread(target=verify, args=a) for a in (("good", knot), ("bad", other))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        other.stop()
    assert flagged(reports["good"]) == {}
    assert flagged(reports["bad"]) == {f"spf:eval:{V4}": "fail"}
    assert dns.resolver.default_resolver is previous  # restored once nobody verifies


# -- the Knot runner itself -----------------------------------------------------------------------
def _kdig(knot: Knot, *args: str) -> str:
    argv = ["kdig", f"@{knot.address}", "-p", str(knot.port), "+short", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def test_knot_adds_replaces_and_updates_zones_and_leaves_nothing() -> None:
    soa = "$TTL 60\n@ SOA ns1.example.com. h.example.com. {serial} 3600 600 86400 60\n@ NS ns1.example.com.\n"
    server = Knot(zones={"one.test": soa.format(serial=1) + "a A 198.51.100.1\n"}, update_from=["127.0.0.1"])
    server.start()
    try:
        assert _kdig(server, "a.one.test") == "198.51.100.1"
        server.set_zone("one.test", soa.format(serial=2) + "a A 198.51.100.2\n")
        assert _kdig(server, "a.one.test") == "198.51.100.2"
        server.set_zone("two.test", soa.format(serial=1) + "b TXT \"hello\"\n")
        assert _kdig(server, "TXT", "b.two.test") == '"hello"'
        update = f"server 127.0.0.1 {server.port}\nzone one.test.\nupdate add c.one.test. 60 A 198.51.100.3\nsend\n"
        subprocess.run(["knsupdate"], input=update, text=True, capture_output=True, timeout=30, check=True)
        assert _kdig(server, "c.one.test") == "198.51.100.3"
        with pytest.raises(KnotError, match=r"three\.test"):
            server.set_zone("three.test", soa.format(serial=1) + "x BADTYPE y\n")
        assert _kdig(server, "a.one.test") == "198.51.100.2"  # a bad zone does not take the others down
        assert "three.test" not in server.zones
        server.reload()  # and does not linger to break the next reload
    finally:
        server.stop()
    assert not server.dir.exists() and server.process is None


def test_knot_that_cannot_start_cleans_up() -> None:
    server = Knot(zones={"bad.test": "$TTL 60\n@ SOA ns1 h 1 1 1 1 1\nx BADTYPE y\n"})
    with pytest.raises(KnotError, match=r"bad\.test"):
        server.start()
    assert not server.dir.exists() and server.process is None
