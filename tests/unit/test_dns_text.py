"""SPF building and lookup counting, TXT splitting, DKIM TXT, inet_protocols derivation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailhost.publish import plan
from mailhost.publish.stack import parse_settings
from mailhost.records import dkim, dnstext, spf
from tests.unit.test_config import HOST_KEY, SECRETS, base, existing


def test_split_txt_keeps_every_string_within_255_and_joins_back() -> None:
    text = "v=DKIM1; k=rsa; p=" + "A" * 600
    chunks = dnstext.split_txt(text)
    assert [len(c) for c in chunks] == [255, 255, 108]
    assert dnstext.join_strings(chunks) == text
    assert dnstext.route53_value(text) == '""'.join(chunks)
    assert dnstext.zone_value(text) == " ".join(f'"{c}"' for c in chunks)
    assert dnstext.split_txt("short") == ["short"]
    with pytest.raises(ValueError):
        dnstext.split_txt('has "quotes"')


def test_spf_lists_each_address_once_then_user_terms_then_all() -> None:
    record = spf.build_spf(["198.51.100.20", "2001:db8::5", "198.51.100.3", "198.51.100.20"],
                           ["include:_spf.relay.example.net", "ip4:203.0.113.0/24"], "-all")
    assert record == ("v=spf1 ip4:198.51.100.3 ip4:198.51.100.20 ip6:2001:db8::5 "
                      "include:_spf.relay.example.net ip4:203.0.113.0/24 -all")


@pytest.mark.parametrize(("term", "costs"), [
    ("include:x.example", True), ("a", True), ("a:mail.example", True), ("a/24", True), ("mx", True),
    ("-mx:x.example", True), ("ptr", True), ("exists:%{i}.x.example", True), ("redirect=x.example", True),
    ("ip4:198.51.100.1", False), ("ip6:2001:db8::1", False), ("~all", False), ("all", False), ("exp=x", False),
])
def test_lookup_counting_per_term(term: str, costs: bool) -> None:
    assert spf.costs_lookup(term) is costs


def test_more_than_ten_lookups_is_an_error_that_names_them() -> None:
    extra = [f"include:_spf{i}.example.net" for i in range(11)]
    assert len(spf.lookup_terms(spf.build_spf(["198.51.100.1"], extra[:10], "~all"))) == 10
    with pytest.raises(ValueError, match=r"11 DNS lookups.*include:_spf10.example.net.*allow 10"):
        spf.build_spf(["198.51.100.1"], extra, "~all")


def test_dkim_txt_derives_from_the_private_key() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption()).decode()
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    p = dkim.public_key_b64(pem)
    assert p == dkim.public_key_b64(public_pem) and dkim.key_bits(p) == 2048
    value = dkim.txt_value(p)
    assert len(value) > 255 and len(dnstext.split_txt(value)) == 2
    assert dkim.record_name("jm1-jira", "example.com") == "jm1-jira._domainkey.example.com"


@pytest.mark.parametrize(("over", "protocols"), [
    ({"ipv4Ptr": "external"}, "ipv4"),
    ({"ipv4Ptr": "external", "ipv6": "2001:db8::5"}, "all"),  # reverse zone given: PTR published there
    ({"ipv4Ptr": "external", "ipv6": "2001:db8::5", "ipv6Ptr": "none"}, "ipv4"),
    ({"ipv4Ptr": "external", "ipv6": "2001:db8::5", "ipv6Ptr": "external"}, "all"),
    ({"ipv4Ptr": "zone", "ipv6": "2001:db8::5", "ipv6Ptr": "zone"}, "all"),
])
def test_inet_protocols_only_covers_addresses_with_ptr(over: dict, protocols: str) -> None:
    s = parse_settings(base(hosts=[existing(**over)], reverseZones={"ipv4": "Z4", "ipv6": "Z6"}), SECRETS)
    host = s.hosts[0]
    assert plan.inet_protocols(s, host) == protocols
    addresses = plan.Addresses("198.51.100.20", over.get("ipv6"))
    sending = plan.sending_addresses(s, host, addresses)
    assert ("2001:db8::5" in sending) == (protocols == "all")
    spf_value = plan.spf_record(s, {"jira": addresses}).value
    assert ("ip6:2001:db8::5" in spf_value) == ("ipv6" in over), "SPF lists every address, sending or not yet"


def test_two_hosts_share_one_spf_record_and_get_own_dkim_selectors() -> None:
    hosts = [existing(), {"name": "confluence", "existing": {"ipv4": "198.51.100.21", "hostKey": HOST_KEY,
                                                            "ipv4Ptr": "external"}}]
    s = parse_settings(base(hosts=hosts), SECRETS)
    addresses = {"jira": plan.Addresses("198.51.100.20"), "confluence": plan.Addresses("198.51.100.21")}
    spf_rec = plan.spf_record(s, addresses)
    assert spf_rec.value == "v=spf1 ip4:198.51.100.20 ip4:198.51.100.21 ~all" and spf_rec.name == "example.com"
    txt = [(r.name, r.value) for h in s.hosts
           for r in [*plan.host_records(s, h, addresses[h.name]), plan.dkim_record(s, h, s.dkim_selector, "P")]
           if r.type == "TXT"]
    assert [n for n, v in txt if "DKIM1" in v] == ["jm1-jira._domainkey.example.com",
                                                   "jm1-confluence._domainkey.example.com"]
    assert [(n, v) for n, v in txt if "spf1" in v] == [("jira.example.com", "v=spf1 ip4:198.51.100.20 -all"),
                                                      ("confluence.example.com", "v=spf1 ip4:198.51.100.21 -all")]
    zone = plan.zone_text(s, addresses, {"jira": "P", "confluence": "Q"})
    assert zone.count("\nexample.com. 300 IN TXT \"v=spf1") == 1 and zone.count("v=DMARC1") == 1


def test_a_host_at_the_apex_gets_no_second_spf_record() -> None:
    s = parse_settings(base(hosts=[{**existing(), "fqdn": "example.com"}]), SECRETS)
    records = plan.host_records(s, s.hosts[0], plan.Addresses("198.51.100.20"))
    names = [r.name for r in records if "spf1" in r.value] + [plan.spf_record(s, {"jira": plan.Addresses(
        "198.51.100.20")}).name]
    assert names == ["example.com"]


def test_route53_value_reads_back_as_the_same_zone_strings() -> None:
    text = "v=DKIM1; k=rsa; p=" + "B" * 400
    assert dnstext.route53_to_zone(dnstext.route53_value(text)) == dnstext.zone_value(text)
    assert dnstext.route53_to_zone('"quoted by a tool"') == '"quoted by a tool"'
