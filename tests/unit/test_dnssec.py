"""The sender zone's DNSSEC state: always info, in words for each state a sender must know about."""

from __future__ import annotations

from mailhost.verify.checks import Answer
from mailhost.verify.dnssec import check_dnssec, ds_tags, key_tags

# A key-signing key Knot made (public half only); its DS key tag, as `keymgr ... ds` printed it, is 35406.
KSK = "257 3 13 iA6JTI9m9HUeQS/sXeMchnRKMmhxK91wqX4/qKvB0vgzjx2Apmf17Z01a4zScCwQGDZlBcYfd94ECkmDABXNvQ=="
ZSK = "256 3 13 lxaiv9g0GknezQj4pqAqy9NZIYRz0893Sk1h9Lhefo37da5CpOd2F8/DwCI+0RZdZ9PEF8ah88g7ly4kB+LTeA=="
DS = "35406 13 2 f85fbbd785a8b03f87f4f75e432cceb750d074ffa90a20b91ebfb0ca85e1dd40"


def ok(rdtype: str, *values: str) -> Answer:
    return Answer("example.com", rdtype, "ok" if values else "nodata", values)


FAILED = Answer("example.com", "DS", "error", error="127.0.0.1 answered REFUSED")


def test_key_tags_of_dnskeys_and_ds() -> None:
    assert 35406 in key_tags(ok("DNSKEY", KSK, ZSK)) and len(key_tags(ok("DNSKEY", KSK, ZSK))) == 2
    assert key_tags(ok("DNSKEY", "not a key")) == set()
    assert ds_tags(ok("DS", DS, "x y")) == {35406}
    assert ds_tags(ok("DS", "2371 RSASHA256 2 ABCD")) == {2371}, "only the key tag (the first field) is read"


def test_every_state_is_info_and_says_what_it_means() -> None:
    states = {
        "unsigned": check_dnssec("example.com", "example.com", ok("DNSKEY"), ok("DS")),
        "unsigned, DS not asked": check_dnssec("example.com", "example.com", ok("DNSKEY"), FAILED),
        "bogus: DS without keys": check_dnssec("example.com", "example.com", ok("DNSKEY"), ok("DS", DS)),
        "island": check_dnssec("example.com", "example.com", ok("DNSKEY", KSK, ZSK), ok("DS")),
        "secure": check_dnssec("jira.example.com", "example.com", ok("DNSKEY", KSK, ZSK), ok("DS", DS)),
        "stale DS": check_dnssec("example.com", "example.com", ok("DNSKEY", KSK), ok("DS", "1 13 2 " + "ab" * 32)),
        "DS unknown": check_dnssec("example.com", "example.com", ok("DNSKEY", KSK), FAILED),
        "DS not asked": check_dnssec("example.com", "example.com", ok("DNSKEY", KSK), None),
        "no zone": check_dnssec("example.com", None, None, None, "no answer within 2s"),
        "DNSKEY failed": check_dnssec("example.com", "example.com", FAILED, None),
    }
    assert {r.id for r in states.values()} == {"dnssec"}
    assert {r.status for r in states.values()} == {"info"} and not any(r.lookup_error for r in states.values())
    assert states["unsigned"].detail == ("zone example.com is not signed (no DNSKEY at its apex): receivers see its "
                                         "answers unvouched, and its MX could not use DANE (TLSA records need a "
                                         "signed zone)")
    assert states["unsigned"].fix.startswith("optional: sign it")
    assert states["unsigned, DS not asked"].detail == states["unsigned"].detail
    assert states["bogus: DS without keys"].detail.endswith(
        "but its parent publishes a DS (key tag 35406): validating resolvers answer SERVFAIL for every name in it")
    assert states["island"].detail.endswith("but its parent has no DS for it: validators treat it as unsigned")
    assert states["secure"].detail.startswith("zone example.com is signed (2 DNSKEY, key tag ")
    assert states["secure"].detail.endswith("and its parent's DS (key tag 35406) vouches for it: validating "
                                            "receivers check it, and its MX hosts could publish TLSA records (DANE) "
                                            "so that DANE senders reach them only over TLS they verify")
    assert states["secure"].fix == ""
    assert (states["stale DS"].detail, states["stale DS"].fix) == (
        "zone example.com is signed (1 DNSKEY, key tag 35406) but no DS at its parent matches its keys (DS key tag "
        "1): validating resolvers answer SERVFAIL for every name in it",
        "replace the DS of example.com at the parent by the one of its current key-signing key")
    assert states["DS unknown"].detail.endswith("its parent's DS could not be asked (127.0.0.1 answered REFUSED)")
    assert states["DS not asked"].detail.endswith("could not be asked (not asked)")
    assert states["no zone"].detail == ("DNSSEC of example.com not determined: could not find its zone "
                                        "(no answer within 2s)")
    assert states["DNSKEY failed"].detail == ("DNSSEC of zone example.com not determined: DNSKEY lookup failed "
                                              "(127.0.0.1 answered REFUSED)")


def test_several_key_tags_are_listed_in_order_with_commas() -> None:
    """A zone has a KSK and a ZSK, and a parent may publish a DS per key (a key rollover): each tag named."""
    other_ds = "1 13 2 " + "ab" * 32
    bogus = check_dnssec("example.com", "example.com", ok("DNSKEY"), ok("DS", DS, other_ds))
    assert "but its parent publishes a DS (key tag 1, 35406): validating" in bogus.detail
    tags = sorted(key_tags(ok("DNSKEY", KSK, ZSK)))
    secure = check_dnssec("example.com", "example.com", ok("DNSKEY", KSK, ZSK), ok("DS", DS, other_ds))
    assert secure.detail.startswith(f"zone example.com is signed (2 DNSKEY, key tag {tags[0]}, {tags[1]})")
    stale = check_dnssec("example.com", "example.com", ok("DNSKEY", KSK), ok("DS", other_ds, "2 13 2 " + "cd" * 32))
    assert "no DS at its parent matches its keys (DS key tag 1, 2)" in stale.detail
    zsk_tag = (set(tags) - {35406}).pop()
    both = check_dnssec("example.com", "example.com", ok("DNSKEY", KSK, ZSK),
                        ok("DS", DS, f"{zsk_tag} 13 2 " + "ef" * 32))
    assert f"and its parent's DS (key tag {tags[0]}, {tags[1]}) vouches for it" in both.detail


def test_each_state_that_needs_a_registrar_names_the_step_and_the_others_none() -> None:
    fixes = {
        "bogus": check_dnssec("example.com", "example.com", ok("DNSKEY"), ok("DS", DS)).fix,
        "island": check_dnssec("example.com", "example.com", ok("DNSKEY", KSK, ZSK), ok("DS")).fix,
        "stale": check_dnssec("example.com", "example.com", ok("DNSKEY", KSK), ok("DS", "1 13 2 " + "ab" * 32)).fix,
        "secure": check_dnssec("example.com", "example.com", ok("DNSKEY", KSK, ZSK), ok("DS", DS)).fix,
        "DS unknown": check_dnssec("example.com", "example.com", ok("DNSKEY", KSK), FAILED).fix,
        "no zone": check_dnssec("example.com", None, None, None, "timeout").fix,
        "DNSKEY failed": check_dnssec("example.com", "example.com", FAILED, None).fix,
    }
    assert fixes == {
        "bogus": "remove the DS of example.com at the parent (the registrar), or sign the zone with that key",
        "island": "add the DS of example.com's key-signing key at the parent (the registrar)",
        "stale": "replace the DS of example.com at the parent by the one of its current key-signing key",
        "secure": "", "DS unknown": "", "no zone": "", "DNSKEY failed": "",
    }
    failed_no_text = Answer("example.com", "DNSKEY", "error")
    assert check_dnssec("example.com", "example.com", failed_no_text, None).detail.endswith("failed (no answer)")
