"""RFC 9989 DMARC without DNS: the record grammar, the tree walk's names, the organizational domain,
policy discovery, and the verdicts (dmarc, dmarc:tags, dmarc:rua)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from mailhost.verify import dmarc as dm
from mailhost.verify.checks import Answer, AnswerStatus

NX: AnswerStatus = "nxdomain"


def txt(name: str, *records: str) -> Answer:
    return Answer(name, "TXT", "ok" if records else "nodata", records, tuple((r,) for r in records))


def walk(start: str, records: Mapping[str, str | tuple[str, ...] | Answer]) -> dm.TreeWalk:
    """A finished walk from `start`: each name of walk_names() answers its records, or NXDOMAIN."""
    levels = []
    for name in dm.walk_names(start):
        given = records.get(name)
        if isinstance(given, Answer):
            answer = given
        elif given is None:
            answer = Answer(f"_dmarc.{name}", "TXT", NX)
        else:
            answer = txt(f"_dmarc.{name}", *((given,) if isinstance(given, str) else given))
        levels.append((name, answer))
    return dm.TreeWalk(start, tuple(levels))


REFUSED = Answer("_dmarc.com", "TXT", "error", error="127.0.0.1 answered REFUSED")


# -- the record --------------------------------------------------------------------------------------
def test_only_a_record_starting_with_v_dmarc1_is_one() -> None:
    for text in ("v=DMARC1; p=none", "V = DMARC1 ;p=none", "v=DMARC1", "v=DMARC1\t;"):
        assert dm.is_dmarc(text), text
    for text in ("v=dmarc1; p=none", "p=none; v=DMARC1", " v=DMARC1", "v=DMARC10; p=none", "v=spf1 -all"):
        assert not dm.is_dmarc(text), text


def test_parse_reads_rfc_9989_tags_with_caseless_names_and_values() -> None:
    record = dm.parse("v=DMARC1; P=Reject; SP=quarantine; np=reject; psd=N; t=Y; adkim=S; aspf=r; fo=0:d; "
                      "rua=mailto:Reports@Example.com, mailto:x@other.example!10m;;")
    assert record.errors == ()
    assert (record.policy, record.get("sp"), record.get("np"), record.get("psd")) == ("reject", "quarantine",
                                                                                     "reject", "n")
    assert record.testing and record.get("adkim") == "s" and record.get("fo") == "0:d"
    assert record.uris("rua") == ("mailto:Reports@Example.com", "mailto:x@other.example!10m")
    assert record.report_domains() == ("example.com", "other.example")
    assert dm.parse("v=DMARC1; p=none; rua=mailto:d@Reports.Example.COM.").report_domains() == \
        ("reports.example.com",), "a root dot and the case are not part of the domain"
    assert record.removed == () and record.unknown == ()


def test_parse_names_removed_and_unknown_tags_and_every_error() -> None:
    old = dm.parse("v=DMARC1; p=none; pct=50; rf=afrf; ri=86400; adkmi=s")
    assert old.errors == () and old.removed == ("pct=50", "rf=afrf", "ri=86400") and old.unknown == ("adkmi",)
    bad = dm.parse("v=DMARC1; p=maybe; sp=all; np=; t=maybe; psd=x; adkim=x; aspf=; fo=2; rua=d@example.com, "
                   "mailto:nobody; ruf=http://x; p=none; flag; =x")
    assert bad.errors == (
        "tag p given twice", "'flag' is not tag=value", "'=x' is not tag=value",
        "p=maybe is not none, quarantine or reject", "sp=all is not none, quarantine or reject",
        "np= is not none, quarantine or reject", "adkim=x is not r or s", "aspf= is not r or s",
        "t=maybe is not y or n", "psd=x is not y or n or u", "fo=2 is not a list of 0, 1, d, s",
        "rua: 'd@example.com' is not a mailto: address", "rua: 'mailto:nobody' is not a mailto: address",
        "ruf: 'http://x' is not a mailto: address")
    assert dm.parse("v=DMARC1; rua=mailto:d@example.com").errors == ("no p= policy",)
    assert dm.parse("spf1").errors == ("does not start with v=DMARC1",) and dm.parse("v=DMARC1; p=x").policy is None
    not_dmarc = dm.parse("v=spf1 -all")
    assert not_dmarc.tags == () and not_dmarc.policy is None and not_dmarc.removed == ()


# -- the DNS tree walk ----------------------------------------------------------------------------------
@pytest.mark.parametrize(("start", "names"), [
    ("example.com", ["example.com", "com"]),
    ("Mail.Example.COM.", ["mail.example.com", "example.com", "com"]),
    ("a.b.c.d.e.f.example.com", ["a.b.c.d.e.f.example.com", "b.c.d.e.f.example.com", "c.d.e.f.example.com",
                                 "d.e.f.example.com", "e.f.example.com", "f.example.com", "example.com", "com"]),
    # 8 labels or more: after the name itself straight to its last 7, never more than 8 queries
    ("x.y.a.b.c.d.e.example.com", ["x.y.a.b.c.d.e.example.com", "a.b.c.d.e.example.com", "b.c.d.e.example.com",
                                   "c.d.e.example.com", "d.e.example.com", "e.example.com", "example.com", "com"]),
    ("l1.l2.l3.l4.l5.l6.l7.l8.l9.l10.com", ["l1.l2.l3.l4.l5.l6.l7.l8.l9.l10.com", "l5.l6.l7.l8.l9.l10.com",
                                           "l6.l7.l8.l9.l10.com", "l7.l8.l9.l10.com", "l8.l9.l10.com",
                                           "l9.l10.com", "l10.com", "com"]),
])
def test_walk_names(start: str, names: list[str]) -> None:
    assert dm.walk_names(start) == names and len(names) <= dm.MAX_WALK


def test_organizational_domain_is_the_highest_record_without_psd() -> None:
    found = walk("jira.corp.example.com", {"corp.example.com": "v=DMARC1; p=none", "example.com": "v=DMARC1; p=reject"})
    assert found.org_domain == "example.com" and found.error is None
    policy = found.policy
    assert policy is not None and (policy.domain, policy.record.policy) == ("example.com", "reject")
    assert walk("jira.example.com", {}).org_domain == "jira.example.com", "no record anywhere: the start itself"
    assert walk("jira.example.com", {}).policy is None


def test_psd_n_and_psd_y_end_the_walk() -> None:
    psd_n = walk("a.b.example.com", {"b.example.com": "v=DMARC1; p=none; psd=n", "example.com": "v=DMARC1; p=reject"})
    assert psd_n.org_domain == "b.example.com"
    assert psd_n.policy is not None and psd_n.policy.domain == "b.example.com"
    psd_y = walk("mail.example.gov.xx", {"gov.xx": "v=DMARC1; p=reject; psd=y", "xx": "v=DMARC1; p=none"})
    assert psd_y.org_domain == "example.gov.xx", "one label below the public suffix's record"
    assert psd_y.policy is not None and psd_y.policy.domain == "gov.xx", "the PSD's policy applies"
    own_psd_y = walk("gov.xx", {"gov.xx": "v=DMARC1; p=reject; psd=y", "xx": "v=DMARC1; p=none"})
    assert own_psd_y.org_domain == "gov.xx", "psd=y at the start itself is not a boundary below it"


def test_a_set_of_records_counts_as_none_and_foreign_text_is_ignored() -> None:
    two = walk("example.com", {"example.com": ("v=DMARC1; p=none", "v=DMARC1; p=reject"),
                               "com": ("google-site-verification=x",)})
    assert two.policy is None and two.org_domain == "example.com"


def test_a_failed_lookup_leaves_the_org_domain_open_but_not_the_starts_own_policy() -> None:
    own = walk("example.com", {"example.com": "v=DMARC1; p=reject", "com": REFUSED})
    assert own.error is REFUSED and own.org_domain is None
    assert own.policy is not None and own.policy.domain == "example.com"
    inherited = walk("jira.example.com", {"example.com": REFUSED})
    assert inherited.policy is None and inherited.error is REFUSED
    early = walk("jira.example.com", {"jira.example.com": REFUSED, "example.com": "v=DMARC1; p=reject"})
    assert early.policy is None, "nothing above a lookup that failed counts"


def test_same_organization_by_org_domains_or_by_name_when_a_walk_is_open() -> None:
    ours = walk("example.com", {"example.com": "v=DMARC1; p=reject"})
    assert dm.same_organization(ours, walk("reports.example.com", {"example.com": "v=DMARC1; p=reject"}))
    assert not dm.same_organization(ours, walk("example.net", {"example.net": "v=DMARC1; p=none"}))
    assert not dm.same_organization(ours, walk("reports.example.com", {})), "its own org domain: itself"
    open_walk = walk("example.com", {"example.com": "v=DMARC1; p=reject", "com": REFUSED})
    assert dm.same_organization(open_walk, walk("reports.example.com", {}))
    assert not dm.same_organization(open_walk, walk("example.net", {}))
    assert dm.report_name("example.com", "example.net") == "example.com._report._dmarc.example.net"


# -- verdicts -----------------------------------------------------------------------------------------
def check(records: Mapping[str, str | tuple[str, ...] | Answer], production: bool = True,
          expected: str | None = None, start: str = "example.com") -> tuple[str, str, str]:
    result = dm.check_dmarc(start, walk(start, records), production, expected)
    return result.status, result.detail, result.fix


def test_check_dmarc_verdicts() -> None:
    status, detail, _ = check({"example.com": "v=DMARC1; p=reject; rua=mailto:d@example.com"})
    assert status == "pass" and detail == ("_dmarc.example.com: p=reject, reports to mailto:d@example.com; "
                                           "organizational domain example.com (DNS tree walk: _dmarc.example.com, "
                                           "_dmarc.com)")
    assert check({})[0] == "fail" and "no parent has one (_dmarc.example.com, _dmarc.com)" in check({})[1]
    assert check({"example.com": ("v=DMARC1; p=none", "v=DMARC1; p=reject")})[1].startswith(
        "_dmarc.example.com has 2 DMARC records; receivers then use none of them")
    none = check({"example.com": "v=DMARC1; p=none"})
    assert none[0] == "warn" and "dmarc.testing: true (t=y)" in none[2]
    assert check({"example.com": "v=DMARC1; p=none"}, production=False)[0] == "pass"
    assert check({"example.com": "v=DMARC1; p=none"}, production=False, expected="reject")[0] == "warn"
    testing = check({"example.com": "v=DMARC1; p=reject; t=y"})
    assert testing[0] == "pass" and "p=reject, t=y (testing: receivers apply quarantine)" in testing[1]
    no_p = check({"example.com": "v=DMARC1; rua=mailto:d@example.com"})
    assert no_p[0] == "fail" and "receivers treat it as p=none (it asks for reports)" in no_p[1]
    assert "receivers ignore it" in check({"example.com": "v=DMARC1; p=maybe"})[1]
    assert "receivers ignore it" in check({"example.com": "v=DMARC1; p=x; rua=d@example.com"})[1], "not a URI"
    open_org = check({"example.com": "v=DMARC1; p=reject", "com": REFUSED})
    assert open_org[0] == "pass" and "organizational domain not determined (_dmarc.com: 127.0.0.1 answered REFUSED)" \
        in open_org[1]


def test_check_dmarc_of_a_subdomain_that_inherits_its_parents_record() -> None:
    parent = {"example.com": "v=DMARC1; p=reject; sp=quarantine"}
    status, detail, _ = check(parent, start="jira.example.com")
    assert status == "pass" and detail.startswith("_dmarc.example.com: p=quarantine (sp= of the parent, for "
                                                  "jira.example.com)")
    stack = check(parent, start="jira.example.com", expected="quarantine")
    assert stack[0] == "warn" and stack[1].startswith("_dmarc.jira.example.com has no record of its own")
    broken = check({"example.com": "v=DMARC1; p=x"}, start="jira.example.com")
    assert broken[0] == "fail" and broken[2].startswith("repair the record at _dmarc.example.com, or publish")


def test_check_dmarc_lookup_errors_are_never_verdicts() -> None:
    start = dm.check_dmarc("example.com", walk("example.com", {"example.com": REFUSED}), True)
    assert start.lookup_error and start.id == "dmarc"
    above = dm.check_dmarc("jira.example.com", walk("jira.example.com", {"example.com": REFUSED}), True)
    assert above.lookup_error and above.id == "dmarc" and "while walking up the DNS tree" in above.detail


def tags(record: str, production: bool = True, expected: bool | None = None) -> tuple[str, str, str]:
    result = dm.check_dmarc_tags("example.com", walk("example.com", {"example.com": record}), production, expected)
    assert result is not None and result.id == "dmarc:tags"
    return result.status, result.detail, result.fix


def test_check_dmarc_tags_warns_on_removed_unknown_and_obsolete_syntax() -> None:
    assert tags("v=DMARC1; p=reject") == ("pass", "_dmarc.example.com uses only RFC 9989 tags", "")
    pct = tags("v=DMARC1; p=reject; pct=25")
    assert pct[0] == "warn" and "pct=25 was removed by RFC 9989: its receivers ignore it" in pct[1]
    assert pct[2] == "remove pct; for a test phase publish t=y instead of pct (dmarc.testing: true)"
    assert tags("v=DMARC1; p=reject; pct=100; rf=afrf; ri=3600")[2] == "remove pct, rf, ri"
    assert "unknown tag(s) aspf2" in tags("v=DMARC1; p=reject; aspf2=s")[1]
    sized = tags("v=DMARC1; p=reject; rua=mailto:d@example.com!10m")
    assert "size limits on report addresses (mailto:d@example.com!10m) are obsolete" in sized[1]


def test_check_dmarc_tags_compares_t_with_the_stack() -> None:
    assert tags("v=DMARC1; p=reject; t=y", expected=True)[:2] == (
        "pass", "_dmarc.example.com uses only RFC 9989 tags, t=y as the stack says (a test phase)")
    assert "has t=y but the stack's dmarc.testing is false" in tags("v=DMARC1; p=reject; t=y", expected=False)[1]
    assert "the stack says dmarc.testing: true but the record has no t=y" in tags("v=DMARC1; p=reject",
                                                                                  expected=True)[1]
    outside = tags("v=DMARC1; p=quarantine; t=y")
    assert outside[0] == "warn" and "t=y: receivers apply none instead of p=quarantine" in outside[1]
    assert tags("v=DMARC1; p=quarantine; t=y", production=False)[0] == "pass"
    assert dm.check_dmarc_tags("example.com", walk("example.com", {}), True) is None
    assert dm.check_dmarc_tags("example.com", walk("example.com", {"example.com": "v=DMARC1; p=x"}), True) is None


def test_check_dmarc_rua_wants_an_external_destinations_agreement() -> None:
    name = "example.com._report._dmarc.example.net"
    inside = dm.Destination("example.com", False)
    agreed = dm.Destination("example.net", True, txt(name, "v=DMARC1"))
    assert dm.check_dmarc_rua("example.com", [inside, agreed]).detail == (
        "report destinations of _dmarc.example.com: example.com in the organization of example.com; example.net "
        f"agreed ({name})")
    refused = dm.check_dmarc_rua("example.com", [dm.Destination("example.net", True, txt(name, "v=spf1 -all"))])
    assert refused.status == "warn" and f"no v=DMARC1 TXT at {name}" in refused.detail
    assert refused.fix.startswith(f'have the owner of example.net publish TXT "v=DMARC1" at {name}')
    gone = dm.check_dmarc_rua("example.com", [dm.Destination("example.net", True, Answer(name, "TXT", NX))])
    assert gone.status == "warn"
    failed = dm.check_dmarc_rua("example.com", [dm.Destination("example.net", True, REFUSED)])
    assert failed.lookup_error and failed.id == "dmarc:rua"
    never = dm.check_dmarc_rua("example.com", [dm.Destination("example.net", True)])
    assert never.lookup_error and "not asked" in never.detail, "never asked"
