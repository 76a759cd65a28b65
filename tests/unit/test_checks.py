"""Verdicts from hand-made answers: each check's pass, warn and fail, with no DNS at all."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailhost.verify import checks as c
from mailhost.verify.checks import Answer


def txt(name: str, *records: str | tuple[str, ...]) -> Answer:
    strings = tuple(r if isinstance(r, tuple) else (r,) for r in records)
    return Answer(name, "TXT", "ok" if records else "nodata", tuple("".join(s) for s in strings), strings)


def ok(name: str, rdtype: str, *values: str) -> Answer:
    return Answer(name, rdtype, "ok", values)


NX = Answer("x", "A", "nxdomain")
TIMEOUT = Answer("x.example.com", "TXT", "error", error="no answer within 2s")


@pytest.fixture(scope="module")
def key2048() -> str:
    return _p(2048)


def _p(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


# -- addresses and reverse DNS -------------------------------------------------------------------
def test_address_pass_wrong_missing_extra() -> None:
    assert c.check_address("jira.example.com", "198.51.100.10", ok("jira", "A", "198.51.100.10")).status == "pass"
    wrong = c.check_address("jira.example.com", "198.51.100.10", ok("jira", "A", "198.51.100.99"))
    assert (wrong.id, wrong.status) == ("a:jira.example.com", "fail") and "198.51.100.99" in wrong.detail
    assert c.check_address("jira.example.com", "198.51.100.10", NX).status == "fail"
    extra = c.check_address("jira.example.com", "198.51.100.10", ok("j", "A", "198.51.100.10", "198.51.100.11"))
    assert extra.status == "warn"
    v6 = c.check_address("jira.example.com", "2001:db8:5100::a", ok("j", "AAAA", "2001:db8:5100:0::a"))
    assert (v6.id, v6.status) == ("aaaa:jira.example.com", "pass")


def test_ptr_missing_is_fail_when_sending_and_warn_otherwise() -> None:
    v6 = "2001:db8:5100::a"
    sending = c.check_ptr(v6, Answer("r", "PTR", "nxdomain"), "jira.example.com", required=True)
    assert (sending.id, sending.status) == (f"ptr:{v6}", "fail")
    assert "ip6.arpa. PTR jira.example.com." in sending.fix
    idle = c.check_ptr(v6, Answer("r", "PTR", "nxdomain"), "jira.example.com", required=False)
    assert idle.status == "warn" and "inet_protocols" in idle.fix


def test_ptr_two_names_fails() -> None:
    result = c.check_ptr("198.51.100.10", ok("r", "PTR", "a.example.com", "b.example.com"), "a.example.com", True)
    assert result.status == "fail" and "2 PTR names" in result.detail


def test_fcrdns_and_helo() -> None:
    assert c.check_fcrdns("198.51.100.10", "jira.example.com", ok("j", "A", "198.51.100.10"), True).status == "pass"
    other = c.check_fcrdns("198.51.100.10", "old.example.com", ok("o", "A", "198.51.100.7"), True)
    assert (other.id, other.status) == ("fcrdns:198.51.100.10", "fail") and "not forward-confirmed" in other.detail
    assert c.check_fcrdns("198.51.100.10", "old.example.com", NX, False).status == "warn"
    assert c.check_helo("198.51.100.10", "JIRA.example.com", "jira.example.com.", True).status == "pass"
    mismatch = c.check_helo("198.51.100.10", "mail.example.com", "jira.example.com", True)
    assert (mismatch.id, mismatch.status) == ("helo:198.51.100.10", "fail")


def test_lookup_failure_is_marked_not_guessed() -> None:
    result = c.check_address("jira.example.com", "198.51.100.10", TIMEOUT)
    assert result.status == "fail" and result.lookup_error and "could not look up" in result.detail


# -- SPF -------------------------------------------------------------------------------------------
def test_spf_parse_accepts_real_records_and_names_errors() -> None:
    good = c.parse_spf("v=spf1 ip4:198.51.100.0/24 ip6:2001:db8::/32 a mx:example.com/24 include:_spf.x.org "
                       "exists:%{i}.x.org -ptr redirect=_spf.example.com exp=explain.example.com")
    assert good.errors == ()
    bad = c.parse_spf("v=spf1 ip4:198.51.100.300 ip6:198.51.100.1 foo:bar include -all")
    assert len(bad.errors) == 4
    assert c.parse_spf("v=spf10 -all").errors


def test_spf_count() -> None:
    assert c.check_spf_count("example.com", txt("e", "v=spf1 -all", "google-site-verification=x")).status == "pass"
    two = c.check_spf_count("example.com", txt("e", "v=spf1 -all", "v=spf1 ip4:198.51.100.10 -all"))
    assert two.status == "fail" and "2 SPF records" in two.detail
    assert c.check_spf_count("example.com", txt("e")).status == "fail"


def test_spf_all_qualifiers() -> None:
    def verdict(record: str) -> str:
        return c.check_spf_all("example.com", c.parse_spf(record)).status

    assert verdict("v=spf1 ip4:198.51.100.10 -all") == "pass"
    assert verdict("v=spf1 ip4:198.51.100.10 ~all") == "pass"
    assert verdict("v=spf1 ip4:198.51.100.10 +all") == "fail"
    assert verdict("v=spf1 ip4:198.51.100.10 all") == "fail"
    assert verdict("v=spf1 ip4:198.51.100.10 ?all") == "warn"
    assert verdict("v=spf1 ip4:198.51.100.10") == "warn"
    assert verdict("v=spf1 redirect=_spf.example.com") == "pass"


def test_spf_lookup_cost_follows_includes_and_names_the_cost() -> None:
    tree = {
        "example.com": txt("e", "v=spf1 ip4:198.51.100.10 a mx include:_a.example.com include:_b.example.com ~all"),
        "_a.example.com": txt("a", "v=spf1 a:h1 a:h2 a:h3 include:_c.example.com -all"),
        "_b.example.com": txt("b", "v=spf1 exists:h4 ptr -all"),
        "_c.example.com": txt("c", "v=spf1 mx:h5 -all"),
    }
    cost = c.spf_lookup_cost("example.com", tree)
    assert cost.total == 4 + 3 + 1 + 1 + 2  # own 4, _a 3+include, _c 1, _b 2
    assert dict(cost.includes) == {"include:_a.example.com": 6, "include:_b.example.com": 3}
    assert c.check_spf_lookups("example.com", cost).status == "fail"
    assert "include:_a.example.com costs 6" in c.check_spf_lookups("example.com", cost).detail
    small = c.spf_lookup_cost("example.com", {"example.com": txt("e", "v=spf1 a mx -all")})
    assert (small.total, c.check_spf_lookups("example.com", small).status) == (2, "pass")


def test_spf_lookup_cost_survives_loops_and_missing_targets() -> None:
    tree = {
        "example.com": txt("e", "v=spf1 include:_a.example.com include:_gone.example.com -all"),
        "_a.example.com": txt("a", "v=spf1 include:example.com -all"),
        "_gone.example.com": txt("g"),
    }
    cost = c.spf_lookup_cost("example.com", tree)
    assert any("loop" in p for p in cost.problems) and any("no SPF record" in p for p in cost.problems)


def test_spf_split() -> None:
    long_ok = ("v=spf1 " + "ip4:198.51.100.1 " * 14, "ip4:198.51.100.2 ~all")
    assert c.check_spf_split("example.com", txt("e", long_ok)).status == "pass"
    spaces_lost = ("v=spf1 ip4:198.51.100.1", "ip4:198.51.100.2 ~all")
    assert c.check_spf_split("example.com", txt("e", spaces_lost)).status == "fail"
    separate = txt("e", "v=spf1 ip4:198.51.100.1", "ip4:198.51.100.2 ~all")
    result = c.check_spf_split("example.com", separate)
    assert result.status == "fail" and "separate TXT records" in result.detail


def test_spf_eval_verdicts() -> None:
    assert c.check_spf_eval("198.51.100.10", "example.com", "pass", "", True).status == "pass"
    soft = c.check_spf_eval("198.51.100.10", "example.com", "softfail", "", True)
    assert (soft.id, soft.status) == ("spf:eval:198.51.100.10", "fail") and "ip4:198.51.100.10" in soft.fix
    assert c.check_spf_eval("2001:db8::1", "example.com", "fail", "", False).status == "warn"
    temp = c.check_spf_eval("198.51.100.10", "example.com", "temperror", "DNS timeout", True)
    assert temp.lookup_error


def test_spf_helo() -> None:
    assert c.check_spf_helo("jira.example.com", txt("j"), None).status == "warn"
    assert c.check_spf_helo("jira.example.com", txt("j", "v=spf1 a -all"), "pass").status == "pass"
    assert c.check_spf_helo("jira.example.com", txt("j", "v=spf1 -all"), "fail").status == "fail"


# -- DKIM ------------------------------------------------------------------------------------------
def _dkim(p: str) -> tuple[str, ...]:
    text = f"v=DKIM1; h=sha256; k=rsa; p={p}"
    return tuple(text[i : i + 255] for i in range(0, len(text), 255))


def test_dkim_good_wrong_key_missing_and_split(key2048: str) -> None:
    name = "jm1-jira._domainkey.example.com"
    good = c.check_dkim("jm1-jira", "example.com", txt(name, _dkim(key2048)), key2048)
    assert (good.id, good.status) == ("dkim:jm1-jira", "pass") and "2048" in good.detail
    wrong = c.check_dkim("jm1-jira", "example.com", txt(name, _dkim(key2048)), _p(2048))
    assert wrong.status == "fail" and "different key" in wrong.detail
    missing = c.check_dkim("jm1-jira", "example.com", Answer(name, "TXT", "nxdomain"), key2048)
    assert missing.status == "fail"
    separate = c.check_dkim("jm1-jira", "example.com", txt(name, *_dkim(key2048)), key2048)
    assert separate.status == "fail" and "separate records" in separate.detail
    assert '"…rest"' in separate.fix


def test_dkim_key_sizes_and_syntax() -> None:
    small = _p(1024)
    assert c.check_dkim("s", "example.com", txt("n", _dkim(small)), None).status == "warn"
    revoked = c.check_dkim("s", "example.com", txt("n", "v=DKIM1; k=rsa; p="), None)
    assert revoked.status == "fail" and "revoked" in revoked.detail
    assert c.check_dkim("s", "example.com", txt("n", "v=DKIM1; k=dsa; p=AAAA"), None).status == "fail"
    assert c.check_dkim("s", "example.com", txt("n", "k=rsa; v=DKIM1; p=AAAA"), None).status == "fail"
    assert c.check_dkim("s", "example.com", txt("n", "v=DKIM1; k=rsa; p=!!!"), None).status == "fail"


def test_dkim_whitespace_is_dropped_inside_p_only(key2048: str) -> None:
    """RFC 6376 3.6.1: folding whitespace may split the base64 of p=, nothing else; `v=DKIM 1` or `k=rs a`
    is a broken record that receivers refuse, so verify must too."""
    spaced = " ".join(key2048[i:i + 64] for i in range(0, len(key2048), 64))
    assert c.check_dkim("s", "example.com", txt("n", f"v=DKIM1; k=rsa; p={spaced}"), key2048).status == "pass"
    broken_v = c.check_dkim("s", "example.com", txt("n", f"v=DKIM 1; k=rsa; p={key2048}"), key2048)
    assert broken_v.status == "fail" and "v=" in broken_v.detail
    broken_k = c.check_dkim("s", "example.com", txt("n", f"v=DKIM1; k=rs a; p={key2048}"), key2048)
    assert broken_k.status == "fail" and "k=rs a is not rsa or ed25519" in broken_k.detail


# -- MX, DNSBL (DMARC: test_dmarc.py) --------------------------------------------------------------
def test_mx_or_an_address_takes_bounces_and_a_null_mx_or_nothing_fails() -> None:
    nodata = Answer("e", "MX", "nodata")
    assert c.check_mx("example.com", ok("e", "MX", "10 mx.example.com")).status == "pass"
    assert c.check_mx("example.com", ok("e", "MX", "0 .")).status == "fail"
    assert c.check_mx("example.com", Answer("e", "MX", "nxdomain")).status == "fail"
    assert c.check_mx("example.com", nodata).status == "fail"
    assert c.check_mx("example.com", nodata, Answer("e", "A", "nodata"), Answer("e", "AAAA", "nodata")).status == "fail"
    implicit = c.check_mx("example.com", nodata, Answer("e", "A", "nodata"), ok("e", "AAAA", "2001:db8::5"))
    assert implicit.status == "pass" and "implicit MX, RFC 5321 5.1" in implicit.detail
    unknown = c.check_mx("example.com", nodata, ok("e", "A", "198.51.100.5"), TIMEOUT)
    assert unknown.lookup_error and "(the implicit MX: the domain's own address)" in unknown.detail


def test_dnsbl() -> None:
    assert c.dnsbl_name("198.51.100.10", "bl.example.") == "10.100.51.198.bl.example"
    assert c.dnsbl_name("2001:db8::1", "bl.example").endswith(".8.b.d.0.1.0.0.2.bl.example")
    listed = c.check_dnsbl("198.51.100.10", "bl.example", ok("n", "A", "127.0.0.2"), txt("n", "spam seen"))
    assert (listed.id, listed.status) == ("dnsbl:bl.example:198.51.100.10", "fail") and "spam seen" in listed.detail
    assert c.check_dnsbl("198.51.100.10", "bl.example", Answer("n", "A", "nxdomain"), None).status == "pass"
    assert c.check_dnsbl("198.51.100.10", "bl.example", ok("n", "A", "198.51.100.1"), None).status == "warn"
    assert c.check_dnsbl("198.51.100.10", "bl.example", ok("n", "A", "127.255.255.254"), None).status == "warn"


def test_json_shape_of_a_result() -> None:
    result = c.check_mx("example.com", ok("e", "MX", "10 mx.example.com"))
    assert set(result.to_dict()) == {"id", "status", "detail", "fix"}


def test_spf_breadth_fails_whatever_lets_the_internet_send() -> None:
    def status(record: str) -> str:
        return c.check_spf_breadth("example.com", c.parse_spf(record)).status

    assert status("v=spf1 ip4:198.51.100.7 ip6:2001:db8::/32 include:_spf.x.example a/24 ~all") == "pass"
    assert status("v=spf1 ip4:10.0.0.0/8 -ip4:0.0.0.0/0 -all") == "pass"  # a failing wide term protects
    for wide in ("+all ~all", "ip4:0.0.0.0/0 ~all", "ip6:::/0 -all", "?ip4:0.0.0.0/1 -all", "a/0 -all",
                 "mx//7 ~all", "ip4:128.0.0.0/1 ip4:0.0.0.0/1 ~all"):
        assert status(f"v=spf1 {wide}") == "fail", wide


# -- SPF void lookups (RFC 7208 4.6.4), counted by the lookup-cost walk -----------------------------
VOID_RECORD = ("v=spf1 ip4:198.51.100.10 a a:gone.example.com mx:mail.example.com exists:%{i}.x.example "
               "exists:bl.example.com include:_inc.example.com redirect=_spf.example.com")


def test_spf_term_lookups_name_what_a_mx_and_exists_ask() -> None:
    asked = c.spf_term_lookups("example.com", c.parse_spf(VOID_RECORD))
    assert asked == [("example.com", "A"), ("example.com", "AAAA"), ("gone.example.com", "A"),
                     ("gone.example.com", "AAAA"), ("mail.example.com", "MX"), ("bl.example.com", "A")]
    assert c.spf_term_lookups("Example.COM.", c.parse_spf("v=spf1 a/24 mx//64 -all")) == [
        ("example.com", "A"), ("example.com", "AAAA"), ("example.com", "MX")]


def test_mx_hosts_are_the_exchanges_by_preference_at_most_ten() -> None:
    answer = ok("e", "MX", "20 b.example.com", "10 a.example.com", "0 .", *(f"30 m{i}.example.com" for i in range(12)))
    hosts = c.mx_hosts(answer)
    assert hosts[:2] == ["a.example.com", "b.example.com"] and len(hosts) == 10


def test_void_lookups_per_family_through_terms_mx_hosts_and_includes() -> None:
    records = {"example.com": txt("e", VOID_RECORD),
               "_inc.example.com": Answer("_inc.example.com", "TXT", "nxdomain"),
               "_spf.example.com": txt("s", "v=spf1 a:v6only.example.com -all")}
    answers = {
        ("example.com", "A"): ok("e", "A", "198.51.100.10"), ("example.com", "AAAA"): Answer("e", "AAAA", "nodata"),
        ("gone.example.com", "A"): Answer("g", "A", "nxdomain"),
        ("gone.example.com", "AAAA"): Answer("g", "AAAA", "nxdomain"),
        ("mail.example.com", "MX"): ok("m", "MX", "10 mx1.example.com"),
        ("mx1.example.com", "A"): ok("x", "A", "198.51.100.20"), ("mx1.example.com", "AAAA"): TIMEOUT,
        ("bl.example.com", "A"): Answer("b", "A", "nodata"),
        ("v6only.example.com", "A"): Answer("v", "A", "nodata"),
        ("v6only.example.com", "AAAA"): ok("v", "AAAA", "2001:db8::6"),
    }
    cost = c.spf_lookup_cost("example.com", records, answers)
    assert cost.void_lookups(4) == ["a:gone.example.com (no A)", "exists:bl.example.com (no A)",
                                    "_inc.example.com (no TXT)", "a:v6only.example.com (no A)"]
    assert cost.void_lookups(6) == ["a:example.com (no AAAA)", "a:gone.example.com (no AAAA)",
                                    "exists:bl.example.com (no A)", "_inc.example.com (no TXT)"]
    assert "mx:mail.example.com: could not look up AAAA mx1.example.com" in cost.problems
    four = c.check_spf_voids("example.com", cost, (4,))
    assert (four.id, four.status) == ("spf:voids", "fail") and "4 void DNS lookups for IPv4 senders" in four.detail
    assert "receivers that enforce the limit answer permerror" in four.detail and "remove the" in four.fix
    assert c.check_spf_voids("example.com", cost, (6,)).detail.startswith("SPF of example.com makes 4 void")
    # without the term answers (older callers) only the include targets count
    assert c.spf_lookup_cost("example.com", records).void_lookups(4) == ["_inc.example.com (no TXT)"]


def test_void_lookup_limit_is_two_and_the_worse_family_is_reported() -> None:
    record = "v=spf1 mx:a.example.com mx:b.example.com a:c.example.com -all"
    empty = {(n, "MX"): Answer(n, "MX", "nodata") for n in ("a.example.com", "b.example.com")}
    has_a = {("c.example.com", "A"): ok("c", "A", "198.51.100.9"), ("c.example.com", "AAAA"): Answer("c", "AAAA",
                                                                                                       "nodata")}
    cost = c.spf_lookup_cost("example.com", {"example.com": txt("e", record)}, {**empty, **has_a})
    assert c.check_spf_voids("example.com", cost, (4,)).status == "pass"  # exactly 2 is within the limit
    both = c.check_spf_voids("example.com", cost, (4, 6))
    assert both.status == "fail" and "3 void DNS lookups for IPv6 senders" in both.detail
    assert c.check_spf_voids("example.com", c.SpfCost(0, 0), ()).detail == (
        "SPF of example.com makes 0 void DNS lookups for IPv4 senders (limit 2)")
    assert c.spf_lookup_cost("example.com", {"example.com": txt("e", "v=spf1 -all")}, {}).voids == ()
    top = c.spf_lookup_cost("example.com", {"example.com": Answer("example.com", "TXT", "nodata")})
    assert top.voids == (), "the domain's own missing record is spf:count's, not a void of the evaluation"
