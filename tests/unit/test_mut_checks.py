"""`mailhost verify` promises: every check has a stable id, says what a strict receiver will think,
and gives the fix for each problem (README, "The `mailhost` command"; --json shows all four fields).

Two kinds of test, both found necessary by mutation testing (bench/mutation.sh):
- rules that must hold for every verdict (a lookup failure is never a verdict; every problem has a fix
  naming what to publish; a pass needs no fix);
- the whole report of every branch of every check, compared with tests/unit/check_reports.json.  The
  report is what the administrator reads, so a change to it must be deliberate: after changing a
  message on purpose, regenerate the file with `UPDATE_GOLDEN=1 .venv/bin/python -m pytest
  tests/unit/test_mut_checks.py` and review the diff.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailhost.verify import checks as c
from mailhost.verify import dmarc as dm
from mailhost.verify.checks import Answer, CheckResult
from mailhost.verify.dnssec import check_dnssec

REPORTS = Path(__file__).with_name("check_reports.json")
DOMAIN = "example.com"
IP4, IP6 = "198.51.100.10", "2001:db8::10"
HELO = "jira.example.com"


def txt(name: str, *records: str | tuple[str, ...]) -> Answer:
    strings = tuple(r if isinstance(r, tuple) else (r,) for r in records)
    return Answer(name, "TXT", "ok" if records else "nodata", tuple("".join(s) for s in strings), strings)


def ok(name: str, rdtype: str, *values: str) -> Answer:
    return Answer(name, rdtype, "ok", values)


def failed(name: str, rdtype: str) -> Answer:
    return Answer(name, rdtype, "error", error="SERVFAIL from 192.0.2.53")


@cache
def rsa_p(bits: int) -> str:
    if bits < 1024:  # too weak for cryptography to generate; a public key needs only its numbers
        public = rsa.RSAPublicNumbers(65537, (1 << (bits - 1)) | 1).public_key()
    else:
        public = rsa.generate_private_key(public_exponent=65537, key_size=bits).public_key()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


@cache
def ed25519_p() -> str:
    der = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


def pkcs1_p() -> str:
    """A bare PKCS#1 RSAPublicKey, as some generators publish it."""
    key = serialization.load_der_public_key(base64.b64decode(rsa_p(2048)))
    der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
    return base64.b64encode(der).decode()


def dkim_strings(text: str) -> tuple[str, ...]:
    return tuple(text[i:i + 255] for i in range(0, len(text), 255))


DKIM_NAME = f"jm1-jira._domainkey.{DOMAIN}"
DMARC_NAME = f"_dmarc.{DOMAIN}"


def dkim(record: str | tuple[str, ...] | None, expected: str | None = None, *more: str) -> CheckResult:
    answer = txt(DKIM_NAME, *((record,) if record is not None else ()), *more)
    return c.check_dkim("jm1-jira", DOMAIN, answer, expected)


def walk(own: Answer, parent: Answer | None = None) -> dm.TreeWalk:
    return dm.TreeWalk(DOMAIN, ((DOMAIN, own), ("com", parent or Answer("_dmarc.com", "TXT", "nxdomain"))))


def dmarc(*records: str, production: bool = True, expected: str | None = None) -> CheckResult:
    return dm.check_dmarc(DOMAIN, walk(txt(DMARC_NAME, *records)), production, expected)


def dmarc_tags(record: str, production: bool = True, expected: bool | None = None) -> CheckResult:
    result = dm.check_dmarc_tags(DOMAIN, walk(txt(DMARC_NAME, record)), production, expected)
    assert result is not None
    return result


REPORT_NAME = dm.report_name(DOMAIN, "example.net")


def spf(record: str) -> c.SpfRecord:
    return c.parse_spf(record)


LOOKUP_TREE: dict[str, Answer] = {
    "example.com": txt("e", "v=spf1 ip4:198.51.100.10 a mx include:_a.example.com include:_b.example.com ~all"),
    "_a.example.com": txt("a", "v=spf1 a:h1 a:h2 a:h3 include:_c.example.com -all"),
    "_b.example.com": txt("b", "v=spf1 exists:h4 ptr -all"),
    "_c.example.com": txt("c", "v=spf1 mx:h5 -all"),
}
LOOP_TREE: dict[str, Answer] = {
    "example.com": txt("e", "v=spf1 include:_a.example.com include:_gone.example.com include:%{d}.x.example "
                            "include:_two.example.com include:_missing.example.com -all"),
    "_a.example.com": txt("a", "v=spf1 include:Example.COM. include:_a.example.com -all"),
    "_gone.example.com": txt("g"),
    "_two.example.com": txt("t", "v=spf1 -all", "v=spf1 a -all"),
}

# Every branch of every check, by a readable label.  Values that differ per run (generated keys)
# never appear in a report, so the file stays stable.
SCENARIOS: dict[str, Callable[[], CheckResult]] = {
    # A / AAAA
    "a pass": lambda: c.check_address(HELO, IP4, ok(HELO, "A", IP4)),
    "a missing": lambda: c.check_address(HELO, IP4, Answer(HELO, "A", "nxdomain")),
    "a nodata": lambda: c.check_address(HELO, IP4, Answer(HELO, "A", "nodata")),
    "a wrong": lambda: c.check_address(HELO, IP4, ok(HELO, "A", "198.51.100.99", "198.51.100.98")),
    "a extra": lambda: c.check_address(HELO, IP4, ok(HELO, "A", IP4, "198.51.100.98", "198.51.100.97")),
    "aaaa canonical": lambda: c.check_address(HELO, "2001:db8:0::10", ok(HELO, "AAAA", "2001:0db8::10")),
    "aaaa lookup error": lambda: c.check_address(HELO, IP6, failed(HELO, "AAAA")),
    # PTR
    "ptr pass": lambda: c.check_ptr(IP4, ok("r", "PTR", "Jira.Example.com."), HELO, True),
    "ptr missing required": lambda: c.check_ptr(IP4, Answer("r", "PTR", "nxdomain"), HELO, True),
    "ptr missing v6 idle": lambda: c.check_ptr(IP6, Answer("r", "PTR", "nxdomain"), HELO, False),
    "ptr missing v4 idle": lambda: c.check_ptr(IP4, Answer("r", "PTR", "nodata"), HELO, False),
    "ptr two names": lambda: c.check_ptr(IP4, ok("r", "PTR", "b.example.com", "a.example.com."), HELO, True),
    "ptr two names idle": lambda: c.check_ptr(IP6, ok("r", "PTR", "b.example.com", "a.example.com"), HELO, False),
    "ptr same name twice": lambda: c.check_ptr(IP4, ok("r", "PTR", "jira.example.com", "JIRA.example.com."), HELO,
                                               True),
    "ptr lookup error": lambda: c.check_ptr(IP4, failed("10.100.51.198.in-addr.arpa", "PTR"), HELO, True),
    # FCrDNS
    "fcrdns pass": lambda: c.check_fcrdns(IP4, HELO, ok(HELO, "A", "198.51.100.7", IP4), True),
    "fcrdns pass v6": lambda: c.check_fcrdns("2001:db8::0:10", HELO, ok(HELO, "AAAA", "2001:db8::10"), True),
    "fcrdns empty required": lambda: c.check_fcrdns(IP4, HELO, Answer(HELO, "A", "nxdomain"), True),
    "fcrdns empty idle": lambda: c.check_fcrdns(IP6, HELO, Answer(HELO, "AAAA", "nodata"), False),
    "fcrdns other": lambda: c.check_fcrdns(IP4, HELO, ok(HELO, "A", "198.51.100.9", "198.51.100.8"), True),
    "fcrdns other idle": lambda: c.check_fcrdns(IP6, HELO, ok(HELO, "AAAA", "2001:db8::9"), False),
    "fcrdns lookup error": lambda: c.check_fcrdns(IP4, HELO, failed(HELO, "A"), True),
    # HELO = PTR
    "helo pass upper x": lambda: c.check_helo(IP4, "MAIL.EXAMPLE.BOX.", "mail.example.box", True),
    "helo pass": lambda: c.check_helo(IP4, "JIRA.example.com.", " jira.example.com", True),
    "helo mismatch": lambda: c.check_helo(IP4, "host-10.isp.example", HELO, True),
    "helo mismatch idle": lambda: c.check_helo(IP6, "host-10.isp.example", HELO, False),
    # SPF count
    "spf count pass": lambda: c.check_spf_count(DOMAIN, txt(DOMAIN, "v=spf1 -all", "google-site-verification=x")),
    "spf count bare": lambda: c.check_spf_count(DOMAIN, txt(DOMAIN, "V=SPF1")),
    "spf count none": lambda: c.check_spf_count(DOMAIN, txt(DOMAIN, "v=spf10 -all", "spf1 -all")),
    "spf count two": lambda: c.check_spf_count(DOMAIN, txt(DOMAIN, "v=spf1 -all", "v=spf1 ip4:198.51.100.10 ~all")),
    "spf count lookup error": lambda: c.check_spf_count(DOMAIN, failed(DOMAIN, "TXT")),
    # SPF syntax and parsing
    "spf syntax pass": lambda: c.check_spf_syntax(DOMAIN, spf(
        "v=spf1  ip4:198.51.100.1/24 ip6:2001:db8::/32 a mx:example.com/24 a/24//64 include:_spf.x.org "
        "exists:%{i}.x.org -ptr ?mx Include:y.org redirect=_spf.example.com exp=explain.example.com")),
    "spf syntax not spf": lambda: c.check_spf_syntax(DOMAIN, spf("spf1 -all")),
    "spf syntax errors": lambda: c.check_spf_syntax(DOMAIN, spf(
        "v=spf1 ip4:198.51.100.300 ip6:198.51.100.1 ip4:2001:db8::1 foo:bar include include:a!b exists "
        "a:bad!domain mx/abc all:x all/24 redirect= exp=a!b redirect=a.example redirect=b.example *x -all")),
    "spf syntax odd terms": lambda: c.check_spf_syntax(DOMAIN, spf("v=spf1 XA a/X24 exp=a.example exp=b.example -all")),
    "spf syntax tab": lambda: c.check_spf_syntax(DOMAIN, spf("v=spf1\tip4:198.51.100.1 -all")),
    "spf syntax modifier case": lambda: c.check_spf_syntax(DOMAIN, spf("v=spf1 -all Exp=explain.example.com")),
    "spf all double space": lambda: c.check_spf_all(DOMAIN, spf("v=spf1  -all")),
    "spf all not spf": lambda: c.check_spf_all(DOMAIN, spf("spf1 -all")),
    "spf includes not spf": lambda: c.check_spf_includes(DOMAIN, spf("spf1 include:x.example"), ["include:x.example"]),
    "spf syntax ip4 bad prefix": lambda: c.check_spf_syntax(DOMAIN, spf("v=spf1 a:x.example/2a mx//64x -all")),
    # spfExtra kept
    "spf includes pass": lambda: c.check_spf_includes(DOMAIN, spf(
        "v=spf1 ip4:198.51.100.10 include:_spf.Relay.example ~all"), ["include:_spf.relay.example",
                                                                      "+ip4:198.51.100.10"]),
    "spf includes qualified": lambda: c.check_spf_includes(DOMAIN, spf(
        "v=spf1 +a ~include:_spf.relay.example -include:_spf.other.example -all"), [
        "+a", "~include:_spf.relay.example", "include:_spf.other.example"]),
    "spf includes missing": lambda: c.check_spf_includes(DOMAIN, spf("v=spf1 ip4:198.51.100.10 ~all"), [
        "include:_spf.relay.example", "ip4:198.51.100.10", "mx:gone.example"]),
    # SPF split
    "spf split one string": lambda: c.check_spf_split(DOMAIN, txt(DOMAIN, "v=spf1 -all")),
    "spf split strings": lambda: c.check_spf_split(DOMAIN, txt(DOMAIN, "other", (
        "v=spf1 " + "ip4:198.51.100.1 " * 14, "ip4:198.51.100.2 ~all"))),
    "spf split no strings": lambda: c.check_spf_split(DOMAIN, Answer(DOMAIN, "TXT", "ok", ("x", "v=spf1 -all"))),
    "spf split only values": lambda: c.check_spf_split(DOMAIN, Answer(DOMAIN, "TXT", "ok", ("v=spf1 -all",))),
    "spf split second record": lambda: c.check_spf_split(DOMAIN, txt(DOMAIN, "v=spf1 -all", (
        "v=spf1 ip4:198.51.100.1", "ip4:198.51.100.2 ~all"))),
    "spf split spaces lost long": lambda: c.check_spf_split(DOMAIN, txt(DOMAIN, (
        "v=spf1 ip4:198.51.100.1 ip4:198.51.100.2 ip4:198.51.100.3 ip4:198.51.100.4 ip4:198.51.100.5",
        "ip4:198.51.100.6 ~all"))),
    "spf split spaces lost": lambda: c.check_spf_split(DOMAIN, txt(DOMAIN, (
        "v=spf1 ip4:198.51.100.1", "ip4:198.51.100.2 ~all"))),
    "spf split separate": lambda: c.check_spf_split(DOMAIN, txt(
        DOMAIN, "v=spf1 ip4:198.51.100.1", "ip4:198.51.100.2 include:_spf.relay.example.net ~all")),
    "spf split fragment all": lambda: c.check_spf_split(DOMAIN, txt(DOMAIN, "v=spf1 ip4:198.51.100.1", "-all")),
    "spf split unrelated txt": lambda: c.check_spf_split(DOMAIN, txt(DOMAIN, "v=spf1 -all", "site-verification")),
    "spf split none": lambda: c.check_spf_split(DOMAIN, txt(DOMAIN)),
    "spf split lookup error": lambda: c.check_spf_split(DOMAIN, failed(DOMAIN, "TXT")),
    # SPF evaluation
    "spf eval pass": lambda: c.check_spf_eval(IP4, DOMAIN, "pass", "", True),
    "spf eval fail": lambda: c.check_spf_eval(IP4, DOMAIN, "fail", "not listed", True),
    "spf eval softfail v6": lambda: c.check_spf_eval(IP6, DOMAIN, "softfail", "", True),
    "spf eval softfail v4": lambda: c.check_spf_eval(IP4, DOMAIN, "softfail", "", True),
    "spf eval fail v6": lambda: c.check_spf_eval(IP6, DOMAIN, "fail", "", True),
    "spf eval neutral v4": lambda: c.check_spf_eval(IP4, DOMAIN, "neutral", "", True),
    "spf eval neutral idle": lambda: c.check_spf_eval(IP6, DOMAIN, "neutral", "", False),
    "spf eval none helo": lambda: c.check_spf_eval(IP4, HELO, "none", "", True, "HELO"),
    "spf eval permerror": lambda: c.check_spf_eval(IP4, DOMAIN, "permerror", "too many DNS lookups", True),
    "spf eval unknown": lambda: c.check_spf_eval(IP4, DOMAIN, "ambiguous", "", True),
    "spf eval temperror": lambda: c.check_spf_eval(IP4, DOMAIN, "temperror", "DNS timeout", False),
    # SPF lookups
    "spf lookups pass": lambda: c.check_spf_lookups(DOMAIN, c.spf_lookup_cost(DOMAIN, {
        DOMAIN: txt(DOMAIN, "v=spf1 a mx -all")})),
    "spf lookups breakdown": lambda: c.check_spf_lookups(DOMAIN, c.spf_lookup_cost("Example.com.", LOOKUP_TREE)),
    "spf lookups problems": lambda: c.check_spf_lookups(DOMAIN, c.spf_lookup_cost(DOMAIN, LOOP_TREE)),
    "spf lookups redirect": lambda: c.check_spf_lookups(DOMAIN, c.spf_lookup_cost(DOMAIN, {
        DOMAIN: txt(DOMAIN, "v=spf1 ip4:198.51.100.1 redirect=_spf.example.com"),
        "_spf.example.com": txt("s", "v=spf1 mx a -all")})),
    "spf lookups redirect ignored": lambda: c.check_spf_lookups(DOMAIN, c.spf_lookup_cost(DOMAIN, {
        DOMAIN: txt(DOMAIN, "v=spf1 a redirect=_spf.example.com -all")})),
    "spf lookups ten": lambda: c.check_spf_lookups(DOMAIN, c.SpfCost(10, 10)),
    "spf lookups eleven": lambda: c.check_spf_lookups(DOMAIN, c.SpfCost(11, 1, (("include:x.example", 11),))),
    # SPF all
    "spf all minus": lambda: c.check_spf_all(DOMAIN, spf("v=spf1 ip4:198.51.100.10 -all")),
    "spf all tilde": lambda: c.check_spf_all(DOMAIN, spf("v=spf1 ip4:198.51.100.10 ~all")),
    "spf all plus": lambda: c.check_spf_all(DOMAIN, spf("v=spf1 ip4:198.51.100.10 all")),
    "spf all question": lambda: c.check_spf_all(DOMAIN, spf("v=spf1 -all ?all")),
    "spf all missing": lambda: c.check_spf_all(DOMAIN, spf("v=spf1 ip4:198.51.100.10 exp=x.example")),
    "spf all redirect": lambda: c.check_spf_all(DOMAIN, spf("v=spf1 redirect=_spf.example.com")),
    # SPF breadth
    "spf breadth pass": lambda: c.check_spf_breadth(DOMAIN, spf(
        "v=spf1 ip4:198.51.100.7 ip6:2001:db8::/32 ip4:10.0.0.0/8 include:_spf.x.example a/24 -ip4:0.0.0.0/0 "
        "~mx/0 +all")),
    "spf breadth wide": lambda: c.check_spf_breadth(DOMAIN, spf(
        "v=spf1 +all ip4:0.0.0.0/0 ?ip6:::/7 a/0 mx:x.example/7 a:y.example//0 ~all")),
    "spf breadth empty": lambda: c.check_spf_breadth(DOMAIN, spf("v=spf1")),
    # SPF of the HELO name
    "spf helo present": lambda: c.check_spf_helo(HELO, txt(HELO, "v=spf1 a -all"), None),
    "spf helo pass": lambda: c.check_spf_helo(HELO, txt(HELO, "v=spf1 a -all"), "pass"),
    "spf helo missing": lambda: c.check_spf_helo(HELO, txt(HELO, "not spf"), "none"),
    "spf helo fail": lambda: c.check_spf_helo(HELO, txt(HELO, "v=spf1 -all"), "fail", "no match"),
    "spf helo softfail": lambda: c.check_spf_helo(HELO, txt(HELO, "v=spf1 ~all"), "softfail"),
    "spf helo lookup error": lambda: c.check_spf_helo(HELO, failed(HELO, "TXT"), None),
    # DKIM
    "dkim pass split": lambda: dkim(dkim_strings(f"v=DKIM1; h=sha256; k=rsa; p={rsa_p(2048)}"), rsa_p(2048)),
    "dkim pass no expectation": lambda: dkim(f"v=DKIM1; k=rsa; p={rsa_p(2048)}"),
    "dkim pass pem expectation": lambda: dkim(f"p={rsa_p(2048)}", "-----BEGIN PUBLIC KEY-----\n"
                                              + rsa_p(2048) + "\n-----END PUBLIC KEY-----\n"),
    "dkim pass no strings": lambda: c.check_dkim("jm1-jira", DOMAIN, Answer(
        DKIM_NAME, "TXT", "ok", (f"v=DKIM1; p={rsa_p(2048)}",)), None),
    "dkim pass pkcs1": lambda: dkim(f"v=DKIM1; p={pkcs1_p()}"),
    "dkim pass ed25519": lambda: dkim(f"v=DKIM1; k=ed25519; p={ed25519_p()}"),
    "dkim weak": lambda: dkim(f"v=DKIM1; k=rsa; p={rsa_p(1024)}", rsa_p(1024)),
    "dkim too weak": lambda: dkim(f"v=DKIM1; k=rsa; p={rsa_p(512)}"),
    "dkim wrong key": lambda: dkim(f"v=DKIM1; k=rsa; p={rsa_p(2048)}", rsa_p(1024)),
    "dkim not rsa": lambda: dkim(f"v=DKIM1; k=rsa; p={ed25519_p()}"),
    "dkim garbage key": lambda: dkim("v=DKIM1; k=rsa; p=AAAAB3Nz"),
    "dkim missing": lambda: c.check_dkim("jm1-jira", DOMAIN, Answer(DKIM_NAME, "TXT", "nxdomain"), None),
    "dkim nodata": lambda: dkim(None),
    "dkim split records": lambda: c.check_dkim("jm1-jira", DOMAIN, txt(
        DKIM_NAME, *dkim_strings(f"v=DKIM1; k=rsa; p={rsa_p(2048)}")), None),
    "dkim two keys": lambda: dkim(f"v=DKIM1; p={rsa_p(2048)}", None, f"v=DKIM1; p={rsa_p(1024)}"),
    "dkim two p records": lambda: dkim(f"p={rsa_p(2048)}", None, f"v=DKIM1; p={rsa_p(1024)}"),
    "dkim revoked": lambda: dkim("v=DKIM1; k=rsa; p="),
    "dkim bad base64": lambda: dkim("v=DKIM1; k=rsa; p=!!!!"),
    "dkim bad tags": lambda: dkim("v=DKIM2; k=dsa; t=y; t=s; =x; 9a=1; flag"),
    "dkim version late": lambda: dkim("k=rsa; v=DKIM1; p=AAAA"),
    "dkim version spaced": lambda: dkim(" v=DKIM1; p=AAAA"),
    "dkim no p": lambda: dkim("v=DKIM1; k=rsa"),
    "dkim unknown": c.check_dkim_unknown,
    "dkim empty tags and spaced key": lambda: dkim(f"v=DKIM1;; k=rsa; H=sha256; p={rsa_p(2048)[:100]} "
                                                   f"{rsa_p(2048)[100:]}", rsa_p(2048)),
    "dkim long bad tag": lambda: dkim("v=DKIM1; " + "x" * 40 + "; p=AAAA"),
    "dkim reordered without key": lambda: dkim("k=rsa; v=DKIM1", None, f"v=DKIM1; p={rsa_p(2048)}"),
    "dkim reordered with key": lambda: dkim(f"k=rsa; v=DKIM1; p={rsa_p(1024)}", None, f"v=DKIM1; p={rsa_p(2048)}"),
    "dkim spaced without key": lambda: dkim(" v=DKIM1; k=rsa", None, f"v=DKIM1; p={rsa_p(2048)}"),
    "dkim two without key": lambda: dkim("v=DKIM1; k=rsa", None, f"v=DKIM1; p={rsa_p(2048)}"),
    "dkim record and stray text": lambda: dkim(f" v=DKIM1; p={rsa_p(2048)}", None, "google-site-verification=x"),
    "dkim lookup error": lambda: c.check_dkim("jm1-jira", DOMAIN, failed(DKIM_NAME, "TXT"), None),
    # DMARC (RFC 9989)
    "dmarc pass": lambda: dmarc("v=DMARC1; p=reject; rua=mailto:d@example.com,mailto:e@example.net; ruf=mailto:"
                                "f@example.com; sp=quarantine; np=reject; adkim=s; aspf=r; fo=1"),
    "dmarc pass testing": lambda: dmarc("v=DMARC1; p=reject; t=y", "other text"),
    "dmarc none production": lambda: dmarc("v=DMARC1; p=none"),
    "dmarc none staging": lambda: dmarc("v=DMARC1; p=none", production=False),
    "dmarc none expected": lambda: dmarc("v=DMARC1; p=none", production=False, expected="none"),
    "dmarc other than stack": lambda: dmarc("v=DMARC1; p=none; rua=mailto:d@example.com", expected="reject"),
    "dmarc missing": lambda: dmarc("v=spf1 -all"),
    "dmarc nxdomain": lambda: dm.check_dmarc(DOMAIN, walk(Answer(DMARC_NAME, "TXT", "nxdomain")), True),
    "dmarc two": lambda: dmarc("v=DMARC1; p=none", "v=DMARC1; p=reject"),
    "dmarc errors": lambda: dmarc("v=DMARC1; p=maybe; sp=all; t=x; adkim=x; aspf=; rua=d@example.com, "
                                  "mailto:nobody; ruf=http://x"),
    "dmarc no policy": lambda: dmarc("v=DMARC1; rua=mailto:d@example.com"),
    "dmarc lookup error": lambda: dm.check_dmarc(DOMAIN, walk(failed(DMARC_NAME, "TXT")), True),
    "dmarc parent refused": lambda: dm.check_dmarc(DOMAIN, walk(txt(DMARC_NAME, "v=DMARC1; p=reject"),
                                                                failed("_dmarc.com", "TXT")), True),
    "dmarc from the public suffix": lambda: dm.check_dmarc(DOMAIN, walk(
        Answer(DMARC_NAME, "TXT", "nxdomain"), txt("_dmarc.com", "v=DMARC1; p=reject; sp=quarantine; psd=y")), True),
    "dmarc from the public suffix, stack's own missing": lambda: dm.check_dmarc(DOMAIN, walk(
        Answer(DMARC_NAME, "TXT", "nxdomain"), txt("_dmarc.com", "v=DMARC1; p=reject; psd=y")), True, "reject"),
    # DMARC tags RFC 9989 removed or does not know, and t=y
    "dmarc tags pass": lambda: dmarc_tags("v=DMARC1; p=reject"),
    "dmarc tags pct": lambda: dmarc_tags("v=DMARC1; p=reject; pct=50"),
    "dmarc tags pct 100 rf ri": lambda: dmarc_tags("v=DMARC1; p=reject; pct=100; rf=afrf; ri=86400"),
    "dmarc tags unknown and sized": lambda: dmarc_tags("v=DMARC1; p=reject; adkmi=s; rua=mailto:d@example.com!10m"),
    "dmarc tags testing as the stack says": lambda: dmarc_tags("v=DMARC1; p=reject; t=y", expected=True),
    "dmarc tags testing the stack does not": lambda: dmarc_tags("v=DMARC1; p=reject; t=y", expected=False),
    "dmarc tags stack testing, record not": lambda: dmarc_tags("v=DMARC1; p=reject", expected=True),
    "dmarc tags testing in production": lambda: dmarc_tags("v=DMARC1; p=quarantine; t=y"),
    # DMARC report destinations (RFC 9990)
    "dmarc rua inside": lambda: dm.check_dmarc_rua(DOMAIN, [dm.Destination(DOMAIN, False)]),
    "dmarc rua agreed": lambda: dm.check_dmarc_rua(DOMAIN, [
        dm.Destination("reports.example.com", False), dm.Destination("example.net", True,
                                                                      txt(REPORT_NAME, "v=DMARC1"))]),
    "dmarc rua not agreed": lambda: dm.check_dmarc_rua(DOMAIN, [
        dm.Destination("example.net", True, Answer(REPORT_NAME, "TXT", "nxdomain")),
        dm.Destination("example.org", True, txt("x", "v=DMARC2"))]),
    "dmarc rua lookup error": lambda: dm.check_dmarc_rua(DOMAIN, [dm.Destination("example.net", True,
                                                                                  failed(REPORT_NAME, "TXT"))]),
    # MX, or the implicit MX
    "mx pass": lambda: c.check_mx(DOMAIN, ok(DOMAIN, "MX", "20 mx2.example.com", "10 mx1.example.com")),
    "mx missing": lambda: c.check_mx(DOMAIN, Answer(DOMAIN, "MX", "nodata")),
    "mx and address missing": lambda: c.check_mx(DOMAIN, Answer(DOMAIN, "MX", "nodata"),
                                                 Answer(DOMAIN, "A", "nodata"), Answer(DOMAIN, "AAAA", "nodata")),
    "mx implicit": lambda: c.check_mx(DOMAIN, Answer(DOMAIN, "MX", "nodata"), ok(DOMAIN, "A", IP4),
                                      ok(DOMAIN, "AAAA", IP6)),
    "mx implicit lookup error": lambda: c.check_mx(DOMAIN, Answer(DOMAIN, "MX", "nodata"), failed(DOMAIN, "A"),
                                                   ok(DOMAIN, "AAAA", IP6)),
    "mx nxdomain": lambda: c.check_mx(DOMAIN, Answer(DOMAIN, "MX", "nxdomain")),
    "mx null": lambda: c.check_mx(DOMAIN, ok(DOMAIN, "MX", "0 .")),
    "mx null and real": lambda: c.check_mx(DOMAIN, ok(DOMAIN, "MX", "0 .", "10 mx.example.com")),
    "mx lookup error": lambda: c.check_mx(DOMAIN, failed(DOMAIN, "MX")),
    # SPF void lookups
    "spf voids none": lambda: c.check_spf_voids(DOMAIN, c.SpfCost(0, 0)),
    "spf voids two": lambda: c.check_spf_voids(DOMAIN, c.SpfCost(2, 2, voids=(("a:x.example (no A)", 4),
                                                                              ("mx:y.example (no MX)", 0)))),
    "spf voids three for ipv6": lambda: c.check_spf_voids(DOMAIN, c.SpfCost(3, 3, voids=(
        ("a:x.example (no AAAA)", 6), ("a:z.example (no AAAA)", 6), ("_gone.example (no TXT)", 0))), (4, 6)),
    # DNSSEC (info only)
    "dnssec unsigned": lambda: check_dnssec(DOMAIN, DOMAIN, Answer(DOMAIN, "DNSKEY", "nodata"),
                                            Answer(DOMAIN, "DS", "nodata")),
    "dnssec no zone": lambda: check_dnssec(DOMAIN, None, None, None, "SERVFAIL"),
    # DNSBL
    "dnsbl listed": lambda: c.check_dnsbl(IP4, "bl.example.", ok("n", "A", "127.0.0.4", "127.0.0.2"),
                                          txt("n", "spam seen", "see https://bl.example")),
    "dnsbl listed no reason": lambda: c.check_dnsbl(IP4, "bl.example", ok("n", "A", "127.0.0.2"),
                                                    failed("n", "TXT")),
    "dnsbl listed empty reason": lambda: c.check_dnsbl(IP4, "bl.example", ok("n", "A", "127.0.0.2"), txt("n")),
    "dnsbl listed reason not asked": lambda: c.check_dnsbl(IP4, "bl.example", ok("n", "A", "127.0.0.2"), None),
    "dnsbl clean": lambda: c.check_dnsbl(IP6, "BL.example", Answer("n", "A", "nxdomain"), None),
    "dnsbl odd code": lambda: c.check_dnsbl(IP4, "bl.example", ok("n", "A", "127.0.0.2", "198.51.100.1"), None),
    "dnsbl refused": lambda: c.check_dnsbl(IP4, "bl.example", ok("n", "A", "127.255.255.254"), None),
    "dnsbl lookup error": lambda: c.check_dnsbl(IP4, "bl.example", failed("n", "A"), None),
}

def report(result: CheckResult) -> dict[str, object]:
    return {**result.to_dict(), "lookup_error": result.lookup_error}


def test_every_check_report_is_the_reviewed_one() -> None:
    """Id, status, detail, fix and lookup_error of every branch, as the administrator reads them."""
    got = {label: report(make()) for label, make in SCENARIOS.items()}
    if os.environ.get("UPDATE_GOLDEN"):
        REPORTS.write_text(json.dumps(got, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    want = json.loads(REPORTS.read_text())
    assert set(got) == set(want), "scenarios added or removed: regenerate the reviewed reports"
    changed = {label: (want[label], got[label]) for label in got if got[label] != want[label]}
    assert not changed, json.dumps(changed, indent=1, ensure_ascii=False)


@pytest.mark.parametrize("label", sorted(SCENARIOS))
def test_every_problem_comes_with_a_fix_and_a_pass_needs_none(label: str) -> None:
    result = SCENARIOS[label]()
    assert result.status in ("pass", "warn", "fail", "info")
    assert result.id and result.detail
    if result.status == "pass":
        assert result.fix == "" and not result.lookup_error
    elif result.status == "info":  # reported, never judged: a fix is advice, and DNS not answering is no error
        assert not result.lookup_error
    else:
        assert len(result.fix) > 10, "a problem without the fix in words"


LOOKUP_FAILURES: dict[str, tuple[Callable[[Answer], CheckResult], str]] = {
    "a": (lambda a: c.check_address(HELO, IP4, a), f"a:{HELO}"),
    "aaaa": (lambda a: c.check_address(HELO, IP6, a), f"aaaa:{HELO}"),
    "ptr": (lambda a: c.check_ptr(IP4, a, HELO, True), f"ptr:{IP4}"),
    "fcrdns": (lambda a: c.check_fcrdns(IP4, HELO, a, True), f"fcrdns:{IP4}"),
    "spf count": (lambda a: c.check_spf_count(DOMAIN, a), "spf:count"),
    "spf split": (lambda a: c.check_spf_split(DOMAIN, a), "spf:split"),
    "spf helo": (lambda a: c.check_spf_helo(HELO, a, "pass"), f"spf:helo:{HELO}"),
    "dkim": (lambda a: c.check_dkim("jm1-jira", DOMAIN, a, None), "dkim:jm1-jira"),
    "dmarc": (lambda a: dm.check_dmarc(DOMAIN, walk(a), True), "dmarc"),
    "dmarc rua": (lambda a: dm.check_dmarc_rua(DOMAIN, [dm.Destination("example.net", True, a)]), "dmarc:rua"),
    "mx": (lambda a: c.check_mx(DOMAIN, a), "mx"),
    "dnsbl": (lambda a: c.check_dnsbl(IP4, "Bl.Example.", a, None), f"dnsbl:bl.example:{IP4}"),
}


@pytest.mark.parametrize("check", sorted(LOOKUP_FAILURES))
def test_a_failed_lookup_is_never_a_verdict(check: str) -> None:
    """DNS that did not answer gives 'could not look up' (exit 2, retried by --wait), never a pass or a guess."""
    run, check_id = LOOKUP_FAILURES[check]
    result = run(Answer("q.example.com", "TXT", "error", error="timed out after 2s"))
    assert (result.id, result.status, result.lookup_error) == (check_id, "fail", True)
    assert result.detail == "could not look up TXT q.example.com: timed out after 2s"
    assert "--nameserver" in result.fix and "--wait" in result.fix
    silent = run(Answer("q.example.com", "TXT", "error"))
    assert silent.lookup_error and silent.detail.endswith(": no answer")


def test_spf_lookup_cost_counts_own_terms_and_what_cannot_be_counted() -> None:
    assert c.spf_lookup_cost("gone.example", {}) == c.SpfCost(0, 0, (), ("gone.example: not fetched",))
    two = c.spf_lookup_cost("e.example", {"e.example": txt("e", "v=spf1 -all", "v=spf1 a -all")})
    assert two == c.SpfCost(0, 0, (), ("e.example: 2 SPF records (permerror where included)",))
    redirect = c.spf_lookup_cost("e.example", {"e.example": txt("e", "v=spf1 a mx redirect=r.example"),
                                                "r.example": txt("r", "v=spf1 a -all")})
    assert redirect == c.SpfCost(4, 3, (("redirect=r.example", 2),), ())


def test_lookup_error_names_why_when_told() -> None:
    result = c.lookup_error("x", Answer("n.example", "A", "error", error="REFUSED"), "while following include")
    assert result.detail == "could not look up A n.example: REFUSED (while following include)"
