"""Pure-core promises that mutation testing (bench/mutation.sh) found unguarded, one test each."""

from __future__ import annotations

import pytest

from mailhost.publish import plan
from mailhost.publish.stack import parse_settings
from mailhost.records import dnstext, spf
from mailhost.records.expected import Expected, ExpectedHost
from tests.unit.test_config import SECRETS, base, existing

# --- spfExtra: "a"/"mx" CIDR suffixes authorise at most a /8, and only real prefix lengths ---

@pytest.mark.parametrize("term", ["a/8", "a/32", "mx//8", "mx//128", "a:mail.example.com/24//64", "a/8//8"])
def test_spf_extra_accepts_prefix_lengths_from_8_to_the_family_size(term: str) -> None:
    assert spf.check_term(term) == term


@pytest.mark.parametrize(("term", "why"), [
    ("a/7", "covers more than a /8"),
    ("a/33", "covers more than a /8"),
    ("mx//7", "covers more than a /8"),
    ("mx//129", "covers more than a /8"),
    ("a/24//200", "covers more than a /8"),
    ("a/x", "bad CIDR suffix '/x'"),
    ("mx/24/", "bad CIDR suffix '/24/'"),
])
def test_spf_extra_refuses_other_prefix_lengths_naming_the_term(term: str, why: str) -> None:
    with pytest.raises(ValueError) as caught:
        spf.check_term(term)
    assert str(caught.value).startswith(f"{term!r}") and why in str(caught.value)


# --- the lab's DNS reads Route53 TXT values back ("" joins) as zone-file strings ---

@pytest.mark.parametrize(("value", "zone"), [
    ('"one"', '"one"'),  # outer quotes some tools add
    ('part1""part2', '"part1" "part2"'),
    ('"part1""part2"', '"part1" "part2"'),
    ('"', '"\\""'),  # a lone quote is data, not a pair of outer quotes
    ('""', '""'),
    ('x"', '"x\\""'),
    ('"x', '"\\"x"'),
    ("back\\slash", '"back\\\\slash"'),
])
def test_route53_txt_value_becomes_zone_strings_with_escapes(value: str, zone: str) -> None:
    assert dnstext.route53_to_zone(value) == zone


# --- stack output `verification` is the input of `mailhost verify --outputs` ---

def test_verification_output_round_trips_into_mailhost_verify() -> None:
    expected = Expected(
        domain="example.com",
        hosts=(ExpectedHost("jira.example.com", "198.51.100.20", "2001:db8::20", True, True, "jm1-jira", "MIIB",
                            "helo.example.com"),
               ExpectedHost("wiki.example.com", "198.51.100.21", None, True, False, "jm1-wiki", None)),
        production=False,
        spf_includes=("include:_spf.relay.example.net", "ip4:203.0.113.0/24"),
        dmarc_policy="reject",
        dmarc_testing=True,
    )
    assert Expected.from_json(expected.to_json()) == expected


def test_an_older_verification_output_is_read_with_the_strict_defaults() -> None:
    """Keys a verification output lacks are read as the stricter case: production, nothing extra, no policy."""
    read = Expected.from_dict({"domain": "example.com", "hosts": [{"fqdn": "jira.example.com"}]})
    assert read == Expected("example.com", (ExpectedHost("jira.example.com"),), True, (), None, None)
    assert read.production is True and read.spf_includes == ()
    assert Expected.from_dict({"domain": "example.com"}).hosts == ()


# --- `mailhost render` writes every record the stack publishes into dns.zone ---

def test_zone_text_lists_every_record_with_the_dkim_key_when_known() -> None:
    s = parse_settings(base(hosts=[existing(), {**existing(), "name": "wiki"}]), SECRETS)
    text = plan.zone_text(s, plan.placeholder_addresses(s), {"jira": "MIIBjira"})
    lines = [line for line in text.splitlines() if not line.startswith(";")]
    assert 'jm1-jira._domainkey.example.com. 300 IN TXT "v=DKIM1; h=sha256; k=rsa; p=MIIBjira"' in lines
    assert 'jm1-wiki._domainkey.example.com. 300 IN TXT "v=DKIM1; h=sha256; k=rsa; p="' in lines, "key not known yet"
    assert text.count("; forward\n") == len(lines) == 3 + 3 + 2
    assert '_dmarc.example.com. 300 IN TXT "v=DMARC1; p=quarantine; adkim=r; aspf=r"' in lines
    testing = parse_settings(base(dmarc={"testing": True, "rua": "d@example.com", "pct": 100}), SECRETS)
    assert plan.dmarc_record(testing).value == "v=DMARC1; p=quarantine; t=y; rua=mailto:d@example.com; adkim=r; aspf=r"


# --- the expected DNS state (`verification` output) says what each host sends over ---

def test_expected_state_follows_ptr_coverage_and_the_stack() -> None:
    ec2 = {"name": "jira", "ec2": {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"], "ipv6": False}}
    adopted = {**existing(ipv6="2001:db8::21", ipv6Ptr="none"), "name": "wiki"}
    s = parse_settings(base(environment="qa", rerouteOptOut=True, hosts=[ec2, adopted],
                            spfExtra=["include:_spf.relay.example.net"], dmarc={"policy": "reject", "testing": True}),
                       SECRETS)
    addresses = {"jira": plan.Addresses("203.0.113.10", "2001:db8::10"), "wiki": plan.Addresses("198.51.100.20",
                                                                                                "2001:db8::21")}
    got = plan.expected(s, addresses, {"jira": "MIIBjira"})
    assert got == Expected(
        domain="example.com",
        hosts=(ExpectedHost("jira.example.com", "203.0.113.10", None, True, False, "jm1-jira", "MIIBjira"),
               ExpectedHost("wiki.example.com", "198.51.100.20", "2001:db8::21", True, False, "jm1-wiki", None)),
        production=False,
        spf_includes=("include:_spf.relay.example.net",),
        dmarc_policy="reject",
        dmarc_testing=True,
    )
    six = parse_settings(base(reverseZones={"ipv6": "ZREV6"}, hosts=[existing(ipv6="2001:db8::21", ipv6Ptr="zone")]),
                         SECRETS)
    host = plan.expected(six, {"jira": plan.Addresses("198.51.100.20", "2001:db8::21")}, {}).hosts[0]
    assert (host.sends_ipv4, host.sends_ipv6) == (True, True)
    assert plan.expected(six, {"jira": plan.Addresses("198.51.100.20", "2001:db8::21")}, {}).production is True


# --- messages a bad value gets, word for word where the words are the fix ---

def test_ssh_range_messages_name_the_network_to_write() -> None:
    from mailhost.records import grammar

    with pytest.raises(ValueError) as host_bits:
        grammar.network("203.0.113.7/8", "SSH")
    assert str(host_bits.value) == "'203.0.113.7/8' has host bits set; write the network 203.0.0.0/8 or the host " \
                                   "203.0.113.7/32"
    with pytest.raises(ValueError) as not_cidr:
        grammar.network("admin-net", "the networks allowed to SSH in")
    assert str(not_cidr.value) == "'admin-net' is not a CIDR; write e.g. '203.0.113.7/32' for the networks allowed " \
                                  "to SSH in"
    with pytest.raises(ValueError) as control:
        grammar.network("203.0.113.0/24\n", "the networks allowed to SSH in")
    assert str(control.value).startswith("the networks allowed to SSH in must be plain ASCII")


def test_a_dkim_key_that_is_not_rsa_is_refused_with_the_reason() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from mailhost.records import dkim

    pem = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(ValueError) as caught:
        dkim.public_key_b64(pem)
    assert str(caught.value) == "DKIM keys must be RSA (ed25519 DKIM is not verified by major receivers)"


def test_an_unreadable_ssh_key_says_how_to_set_it() -> None:
    from mailhost.publish import sshkeys

    with pytest.raises(ValueError) as caught:
        sshkeys.public_openssh("not a key")
    message = str(caught.value)
    assert message.startswith("jira-mailhost:sshPrivateKey: not a readable private key without passphrase (")
    assert message.endswith("); set it with `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`")


# --- sshPrivateKey: "ed25519 or RSA, no passphrase", in OpenSSH or PEM form ---

@pytest.mark.parametrize("form", ["openssh", "pem-pkcs8", "pem-traditional"])
def test_ssh_private_key_is_read_in_openssh_and_pem_form(form: str) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from mailhost.publish import sshkeys
    from mailhost.settings import keys

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    fmt = {"openssh": serialization.PrivateFormat.OpenSSH, "pem-pkcs8": serialization.PrivateFormat.PKCS8,
           "pem-traditional": serialization.PrivateFormat.TraditionalOpenSSL}[form]
    text = key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()
    loaded = keys.load_private_key("\n  " + text.strip() + "  \n")  # pasted with blanks around it
    assert loaded.private_numbers() == key.private_numbers()
    assert sshkeys.public_openssh(text).startswith("ssh-rsa AAAA")


def test_a_private_key_with_a_passphrase_is_refused_with_the_reason() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from mailhost.settings import keys

    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")).decode()
    with pytest.raises(ValueError) as caught:
        keys.load_private_key(encrypted)
    assert "encrypted" in str(caught.value).lower() or "password" in str(caught.value).lower()
    with pytest.raises(ValueError) as garbage:
        keys.load_private_key("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----")
    assert str(garbage.value) not in ("", "None")


# --- stack values arrive from Pulumi as text: JSON for structures, scalars as they are ---

@pytest.mark.parametrize(("raw", "value"), [
    ('[{"name": "jira"}]', [{"name": "jira"}]),
    (' {"mode": "relay"}', {"mode": "relay"}),
    ("2025", "2025"),
    ("true", "true"),
    ("[not json", "[not json"),
    ("jira.example.com", "jira.example.com"),
])
def test_stack_values_decode_structures_and_keep_scalars_as_text(raw: str, value: object) -> None:
    from mailhost.publish.stack import config_value

    assert config_value(raw) == value


# --- addresses: the stack's own for adopted hosts, 192.0.2.x stand-ins for EC2 ones (README: render) ---

def test_render_addresses_are_the_stated_ones_or_documentation_stand_ins() -> None:
    ec2 = {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"]}
    s = parse_settings(base(hosts=[{"name": "a", "ec2": ec2}, {**existing(ipv6="2001:db8::20", ipv6Ptr="external"),
                                                                  "name": "b"},
                                   {"name": "c", "ec2": {**ec2, "ipv6": False}}]), SECRETS)
    assert plan.stated_addresses(s) == {"b": plan.Addresses("198.51.100.20", "2001:db8::20")}
    assert plan.placeholder_addresses(s) == {
        "a": plan.Addresses("192.0.2.1", "2001:db8::1"),
        "b": plan.Addresses("198.51.100.20", "2001:db8::20"),
        "c": plan.Addresses("192.0.2.3", None),
    }


def test_a_host_sends_over_ipv6_alone_when_only_its_ipv6_has_a_ptr() -> None:
    relay = {"mode": "relay", "relay": {"host": "smtp.relay.example.net", "username": "jira"}}
    s = parse_settings(base(delivery=relay, reverseZones={"ipv6": "ZREV6"},
                            hosts=[existing(ipv4Ptr="none", ipv6="2001:db8::20", ipv6Ptr="zone")]), SECRETS)
    assert plan.inet_protocols(s, s.hosts[0]) == "ipv6"


def test_spf_lists_only_the_addresses_a_host_has() -> None:
    ec2 = {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"], "ipv6": False}
    s = parse_settings(base(hosts=[{"name": "jira", "ec2": ec2}]), SECRETS)
    record = plan.spf_record(s, {"jira": plan.Addresses("203.0.113.10", "2001:db8::10")})
    assert record.value == "v=spf1 ip4:203.0.113.10 ~all", "an instance without IPv6 never sends from one"


def test_only_lookup_terms_are_counted_and_each_one_is() -> None:
    assert spf.lookup_terms("v=spf1 include:a.example ip4:198.51.100.1 mx redirect=b.example ~all") == [
        "include:a.example", "mx", "redirect=b.example"]


def test_txt_values_are_split_only_when_dns_can_carry_them() -> None:
    assert dnstext.split_txt("") == [""]
    for bad, why in (("caf\u00e9", "TXT values must be ASCII"),
                     ('say "hi"', "TXT values must not contain quotes or backslashes"),
                     ("back\\slash", "TXT values must not contain quotes or backslashes")):
        with pytest.raises(ValueError) as caught:
            dnstext.split_txt(bad)
        assert str(caught.value) == why


def test_dkim_key_bits_refuses_what_is_not_rsa() -> None:
    import base64

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from mailhost.records import dkim

    der = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ValueError) as caught:
        dkim.key_bits(base64.b64encode(der).decode())
    assert str(caught.value) == "not an RSA key"


def test_a_host_without_ipv6_gets_no_aaaa_record_whatever_the_addresses_say() -> None:
    ec2 = {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"], "ipv6": False}
    s = parse_settings(base(hosts=[{"name": "jira", "ec2": ec2}]), SECRETS)
    records = plan.host_records(s, s.hosts[0], plan.Addresses("203.0.113.10", "2001:db8::10"))
    assert [(r.key, r.type) for r in records] == [("jira.example.com-a", "A"), ("jira.example.com-spf", "TXT")]
    assert plan.dkim_record(s, s.hosts[0], "jm1", "MIIB").key == "jira-dkim-jm1"


def test_dkim_selector_label_up_to_62_is_accepted_and_past_63_refused_per_host() -> None:
    fits = parse_settings(base(dkimSelector="s" * 57, hosts=[existing()]), SECRETS)  # 57 + "-jira" = 62
    assert fits.selector(fits.hosts[0]) == "s" * 57 + "-jira"
    with pytest.raises(Exception) as caught:
        parse_settings(base(dkimSelector="s" * 59, hosts=[existing()]), SECRETS)
    assert "longer than a DNS label (63)" in str(caught.value)
    two = base(dkimSelector="s" * 59, hosts=[existing(), {**existing(), "name": "wiki"}])
    with pytest.raises(Exception) as both:
        parse_settings(two, SECRETS)
    assert "hosts[0]" in str(both.value) and "hosts[1]" in str(both.value), "every host is reported"


def test_dkim_selector_may_fill_a_dns_label_exactly() -> None:
    """Found by mutation testing: SERVICE_LABEL allowed 62 characters, preflight 63, so a 63-character
    selector label was refused as 'longer than DNS allows (253)'."""
    fits = parse_settings(base(dkimSelector="s" * 58, hosts=[existing()]), SECRETS)  # 58 + "-jira" = 63
    assert fits.selector(fits.hosts[0]) == "s" * 58 + "-jira"


def test_a_record_name_longer_than_dns_allows_is_refused_by_key() -> None:
    from mailhost.settings.config import ConfigError

    domain = ".".join(["d" * 60] * 4)[:240] + ".example"  # 248 characters: the domain itself fits
    with pytest.raises(ConfigError) as caught:
        parse_settings(base(domain=domain, hosts=[{**existing(), "name": "jiraserver"}]), SECRETS)
    found = dict(caught.value.problems)
    assert found["hosts[0].name"].endswith("is longer than DNS allows (253); shorten it or the domain")
    assert found["dkimSelector"] == (f"'jm1-jiraserver._domainkey.{domain}' is longer than DNS allows (253); "
                                     "shorten it or the domain")


def test_an_empty_ssh_key_is_reported_once_as_not_set() -> None:
    from mailhost.settings.config import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_settings({**base(), "sshPrivateKey": ""})
    assert [k for k, _ in caught.value.problems] == ["sshPrivateKey"]


def test_expected_state_of_a_host_sending_over_ipv6_only() -> None:
    relay = {"mode": "relay", "relay": {"host": "smtp.relay.example.net", "username": "jira"}}
    s = parse_settings(base(delivery=relay, reverseZones={"ipv6": "ZREV6"},
                            hosts=[existing(ipv4Ptr="none", ipv6="2001:db8::20", ipv6Ptr="zone")]), SECRETS)
    host = plan.expected(s, {"jira": plan.Addresses("198.51.100.20", "2001:db8::20")}, {}).hosts[0]
    assert (host.sends_ipv4, host.sends_ipv6) == (False, True)


def test_ipv6_ptr_zone_is_the_ipv6_reverse_zone_only() -> None:
    s = parse_settings(base(reverseZones={"ipv4": "ZREV4"}, hosts=[existing(ipv4Ptr=None, ipv6="2001:db8::20")]),
                       SECRETS)
    from mailhost.settings.config import PtrSource

    assert s.ptr_source(s.hosts[0], 4) is PtrSource.ZONE and s.ptr_source(s.hosts[0], 6) is PtrSource.NONE
    assert parse_settings(base(zoneId=None, reverseZones={"ipv4": None}), SECRETS).zone_id is None


def test_names_and_addresses_at_their_length_limits_are_accepted() -> None:
    from mailhost.records import grammar

    name = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 57, "com"])  # 253 characters
    assert len(name) == 253 and grammar.fqdn(name, "x") == name
    with pytest.raises(ValueError):
        grammar.fqdn("_spf.example.com", "x")
    local = "j" * 64
    assert grammar.mailbox(f"{local}@example.com", "x") == f"{local}@example.com"
    longest = "j" * 64 + "@" + ".".join(["d" * 63, "e" * 63, "f" * 57, "com"])  # 254 characters
    assert len(longest) == 254 and grammar.mailbox(longest, "x") == longest


def test_the_secret_key_problem_ends_with_how_to_set_it() -> None:
    from mailhost.settings.config import secret_problems

    ((key, message),) = secret_problems({"sshPrivateKey": "garbage"})
    assert key == "sshPrivateKey"
    assert message.endswith("set it with `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519` "
                            "(no passphrase)")


def test_bundle_members_belong_to_root_by_name_too() -> None:
    import base64
    import gzip
    import io
    import tarfile

    from mailhost.publish import bundle

    payload = bundle.pack([bundle.RenderedFile("/etc/x", "x\n")])
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(base64.b64decode(payload)))) as tar:
        assert {(m.uname, m.gname) for m in tar.getmembers()} == {("root", "root")}


@pytest.mark.parametrize(("record_type", "zone", "key"), [
    ("A", "forward", "jira-a"), ("AAAA", "forward", "jira-aaaa"), ("TXT", "forward", "jira-spf"),
    ("PTR", "reverse4", "jira-ptr4"), ("PTR", "reverse6", "jira-ptr6"),
])
def test_each_record_keeps_the_name_its_resource_had_before_record_sets(record_type: str, zone: str, key: str) -> None:
    """A stack deployed before records were named after their sets keeps each record's state through this
    alias: a wrong old name would make `pulumi up` delete and create the record instead."""
    s = parse_settings(base(hosts=[existing()]), SECRETS)
    assert plan.legacy_record_key(s.hosts[0], record_type, zone) == key  # type: ignore[arg-type]


@pytest.mark.parametrize("over", [0, 1])
def test_a_retired_selector_fits_up_to_a_253_character_record_name(over: int) -> None:
    """A retired key's record `SELECTOR-HOST._domainkey.DOMAIN` of 253 characters can have been published;
    one more cannot, and the stack names the retired selector to remove."""
    import datetime

    from mailhost.publish import preflight
    from mailhost.settings.config import ConfigError

    domain = "a" * 63 + "." + "b" * 63 + "." + "c" * 40 + ".example.com"
    selector = "r" * (253 - len("-jira._domainkey.") - len(domain) + over)
    retired = [{"selector": selector, "retiredOn": (datetime.date.today() - datetime.timedelta(days=3)).isoformat()}]
    values = base(domain=domain, hosts=[existing()], dkimSelector="k", dkimRetired=retired)
    if not over:
        settings = parse_settings(values, SECRETS)
        assert len(f"{selector}-jira._domainkey.{domain}") == 253 and preflight.problems(settings) == []
    else:
        with pytest.raises(ConfigError, match=r"jira-mailhost:dkimRetired\[0\]\.selector: .r+-jira. does not fit"):
            parse_settings(values, SECRETS)
