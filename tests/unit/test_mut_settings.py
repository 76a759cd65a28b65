"""The README's configuration table, key by key: each default, bound and rule has a test here.

mutmut cannot mutate pydantic validators, Field defaults or bounds (decorated methods and class
bodies are outside its reach), so these rules are guarded by hand: each test was checked to fail
when the rule it names is broken in mailhost/settings/config.py.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from mailhost.publish.stack import load_stack_file, parse_settings, stack_file, values_from_stack_file
from mailhost.settings import config
from mailhost.settings.config import ConfigError, PtrSource, Settings
from tests.unit.test_config import HOST_KEY, SECRETS, base, existing

EC2 = {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"]}
RELAY_HOST = {"host": "smtp.relay.example.net", "username": "jira"}
RELAY: dict[str, Any] = {"mode": "relay", "relay": RELAY_HOST}


def ec2_host(name: str = "jira", **over: Any) -> dict[str, Any]:
    return {"name": name, "ec2": {**EC2, **over}}


def problems(values: dict[str, Any], secrets: set[str] = SECRETS) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(values, secrets)
    return dict(caught.value.problems)


def accepted(values: dict[str, Any]) -> Settings:
    return parse_settings(values, SECRETS)


def set_path(values: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """base(...) with one dotted key set, e.g. 'hosts.0.ec2.rootVolumeGb'."""
    node: Any = values
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = value
    return values


def test_documented_defaults_of_every_key() -> None:
    s = accepted(base(environment="staging", rerouteTo="qa@example.com",
                      hosts=[ec2_host(), {**existing(), "name": "wiki"}]))
    ec2, adopted = s.hosts
    assert (s.zone_id, s.reverse_zones.ipv4, s.reverse_zones.ipv6) == (None, None, None)
    assert ec2.fqdn is None and s.fqdn(ec2) == "jira.example.com"
    assert (ec2.user, adopted.user, ec2.ssh_port, adopted.ssh_port) == ("admin", "root", 22, 22)
    assert ec2.ec2 is not None
    assert (ec2.ec2.instance_type, ec2.ec2.ami, ec2.ec2.root_volume_gb, ec2.ec2.ipv6) == ("t3.small", None, 20, True)
    assert adopted.existing is not None and adopted.existing.ipv6 is None
    assert s.delivery.mode == "direct" and s.delivery.relay is None
    assert s.dkim_selector == "jm1" and s.selector(ec2) == "jm1-jira"
    assert s.message_size_limit == 26_214_400
    assert s.spf_extra == [] and s.spf_all == "~all"
    assert (s.dmarc.policy, s.dmarc.rua, s.dmarc.testing, s.dmarc.pct) == ("quarantine", None, False, None)
    assert s.from_address is None and s.sender == "jira@example.com"
    assert s.reroute_opt_out is False and s.rerouted and not s.production
    assert s.drain_seconds == 120 and s.maillog_file is None
    assert (s.verify.enabled, s.verify.nameserver, s.verify.authoritative, s.verify.wait_seconds) == (
        True, None, True, 300)
    relay = accepted(base(delivery=RELAY, hosts=[existing(ipv4Ptr=None)]))
    assert relay.delivery.relay is not None and relay.delivery.relay.port == 587
    assert relay.delivery.relay.tls_fingerprint is None


def test_environment_defaults_to_staging_which_reroutes() -> None:
    values = base()
    del values["environment"]
    found = problems(values)
    assert "stack environment 'staging' is not production" in found["rerouteTo"]
    assert accepted({**values, "rerouteTo": "qa@example.com"}).environment == "staging"


def test_only_production_is_production() -> None:
    assert accepted(base()).production
    for name in ("prod", "production1", "staging"):
        assert not accepted(base(environment=name, rerouteOptOut=True)).production, name


@pytest.mark.parametrize(("path", "low", "high"), [
    ("hosts.0.ec2.rootVolumeGb", 8, 2048),
    ("hosts.0.sshPort", 1, 65535),
    ("messageSizeLimit", 1_048_576, 1_073_741_824),
    ("drainSeconds", 0, 3600),
    ("verify.waitSeconds", 0, 3600),
    ("delivery.relay.port", 1, 65535),
])
def test_documented_bounds_accept_the_edges_and_refuse_past_them(path: str, low: int, high: int) -> None:
    def values(number: int) -> dict[str, Any]:
        start = base(hosts=[ec2_host()])
        if path.startswith("delivery"):
            start["delivery"] = {"mode": "relay", "relay": dict(RELAY_HOST)}
        return set_path(start, path, number)

    key = path.replace(".0.", "[0].")
    for edge in (low, high):
        accepted(values(edge))
    for past in (low - 1, high + 1):
        found = problems(values(past))
        assert key in found, (past, found)


@pytest.mark.parametrize(("path", "allowed", "refused"), [
    ("delivery.mode", ["direct"], ["smtp", "Relay"]),
    ("spfAll", ["~all", "-all"], ["+all", "?all", "all"]),
    ("dmarc.policy", ["none", "quarantine", "reject"], ["block", "Reject"]),
    ("hosts.0.existing.ipv4Ptr", ["zone", "external", "none"], ["eip", "yes"]),
])
def test_enumerated_settings_take_only_the_documented_values(path: str, allowed: list[str],
                                                             refused: list[str]) -> None:
    def values(choice: str) -> dict[str, Any]:
        start = base(reverseZones={"ipv4": "ZREV4"}, hosts=[existing()])
        if path.startswith("hosts"):  # ipv4Ptr: none is refused for direct delivery, a rule of its own
            start["delivery"] = RELAY
        return set_path(start, path, choice)

    for choice in allowed:
        accepted(values(choice))
    key = path.replace(".0.", "[0].")
    for choice in refused:
        assert key in problems(values(choice)), choice


@pytest.mark.parametrize(("values", "key", "fix"), [
    ({"hosts": [existing()]}, "domain", "pulumi config set domain"),
    ({"domain": "example.com"}, "hosts", "at least one host"),
    (base(hosts=[{"name": "j", "ec2": {"sshCidrs": ["203.0.113.0/24"]}}]), "hosts[0].ec2.subnetId",
     "subnet to launch in"),
    (base(hosts=[{"name": "j", "ec2": {"subnetId": "subnet-0123abcd"}}]), "hosts[0].ec2.sshCidrs",
     "networks allowed to SSH in"),
    (base(hosts=[{"name": "j", "existing": {"ipv4": "198.51.100.20"}}]), "hosts[0].existing.hostKey",
     "ssh-keyscan -t ed25519"),
    (base(hosts=[{"name": "j", "existing": {"hostKey": HOST_KEY}}]), "hosts[0].existing.ipv4", "public IPv4"),
    (base(hosts=[{"existing": existing()["existing"]}]), "hosts[0].name", "short name"),
    (base(delivery={"mode": "relay", "relay": {"host": "smtp.x.net"}}), "delivery.relay.username", "SASL user"),
    (base(delivery={"mode": "relay", "relay": {"username": "u"}}), "delivery.relay.host", "smarthost name"),
    (base(verify={"enabled": True, "extra": 1}), "verify.extra", "not a known setting"),
])
def test_each_required_key_says_how_to_give_it(values: dict[str, Any], key: str, fix: str) -> None:
    found = problems(values)
    assert key in found, found
    assert found[key].startswith("is required; ") or "not a known" in found[key], found[key]
    assert fix in found[key], found[key]


def test_a_value_of_the_wrong_type_shows_what_was_given_cut_short() -> None:
    found = problems(base(drainSeconds="soon", verify={"waitSeconds": ["x" * 100]}))
    assert "(got 'soon')" in found["drainSeconds"]
    assert found["verify.waitSeconds"].endswith("...(cut))")
    assert "x" * 61 not in found["verify.waitSeconds"]


def test_bad_values_are_reported_before_the_rules_across_keys() -> None:
    # fromAddress outside the domain is a cross-key rule: it waits until the values themselves are valid.
    both = problems(base(fromAddress="jira@other.example", dmarc={"pct": 500}))
    assert set(both) == {"dmarc.pct"}
    assert "fromAddress" in problems(base(fromAddress="jira@other.example"))


def test_host_names_and_fqdns_must_be_unique() -> None:
    found = problems(base(hosts=[existing(), {"name": "wiki", "fqdn": "Jira.Example.com.",
                                              "existing": existing()["existing"]}]))
    assert "'jira.example.com' is used twice" in found["hosts[1].fqdn"]
    assert "hosts[1].name" not in found
    names = problems(base(hosts=[existing(), existing(), existing()]))
    assert {"hosts[1].name", "hosts[2].name"} <= set(names) and "hosts[0].name" not in names


def test_fqdn_overrides_the_default_and_is_normalised() -> None:
    s = accepted(base(hosts=[{**existing(), "fqdn": "Mail.Example.COM."}]))
    assert s.fqdn(s.hosts[0]) == "mail.example.com"
    assert "hosts[0].fqdn" in problems(base(hosts=[{**existing(), "fqdn": "mail"}]))


def test_ssh_user_and_port_override_the_defaults() -> None:
    s = accepted(base(hosts=[{**existing(), "sshUser": "deploy", "sshPort": 2222}, ec2_host("wiki", ipv6=False)]))
    assert (s.hosts[0].user, s.hosts[0].ssh_port, s.hosts[1].user) == ("deploy", 2222, "admin")
    for bad in ("Root", "9user", "a" * 33, "root\n"):
        assert "hosts[0].sshUser" in problems(base(hosts=[{**existing(), "sshUser": bad}])), bad


def test_from_address_must_be_in_the_sender_domain_in_any_case() -> None:
    assert accepted(base(fromAddress="Jira@EXAMPLE.com")).sender == "Jira@example.com"
    for outside in ("jira@sub.example.com", "jira@notexample.com", "jira@example.com.evil.test"):
        assert "fromAddress" in problems(base(fromAddress=outside)), outside


def test_reroute_is_required_outside_production_unless_opted_out() -> None:
    assert "rerouteTo" in problems(base(environment="qa"))
    assert accepted(base(environment="qa", rerouteTo="qa@example.com")).reroute_to == "qa@example.com"
    opted = accepted(base(environment="qa", rerouteOptOut=True))
    assert not opted.rerouted and not opted.production
    assert "production must mail real users" in problems(base(rerouteTo="qa@example.com"))["rerouteTo"]


def test_relay_password_is_needed_in_relay_mode_only() -> None:
    relay = base(delivery=RELAY, hosts=[existing(ipv4Ptr=None)])
    assert "relayPassword" in problems(relay, {"sshPrivateKey"})
    assert "relayPassword" not in problems(base(dmarc={"pct": 101}), {"sshPrivateKey"})
    accepted(base())
    parse_settings(base(), {"sshPrivateKey"})


def test_dkim_selector_is_one_label_and_prefixes_each_hosts_selector() -> None:
    s = accepted(base(dkimSelector="2026a", hosts=[existing(), {**existing(), "name": "wiki"}]))
    assert [s.selector(h) for h in s.hosts] == ["2026a-jira", "2026a-wiki"]
    for bad in ("jm.1", "JM1", "-jm1", ""):
        assert "dkimSelector" in problems(base(dkimSelector=bad)), bad


def test_ssh_cidrs_open_at_most_a_slash_8_per_family_in_all() -> None:
    ok = accepted(base(hosts=[ec2_host(sshCidrs=["10.0.0.0/8", "2000::/8"])]))
    assert ok.hosts[0].ec2 is not None and ok.hosts[0].ec2.ssh_cidrs == ["10.0.0.0/8", "2000::/8"]
    v6 = problems(base(hosts=[ec2_host(sshCidrs=["2400::/16", "2000::/8"])]))
    assert "more than a /8" in v6["hosts[0].ec2.sshCidrs"] and "IPv6" in v6["hosts[0].ec2.sshCidrs"]
    v4 = problems(base(hosts=[ec2_host(sshCidrs=["10.0.0.0/8", "11.0.0.0/9"])]))
    assert "IPv4" in v4["hosts[0].ec2.sshCidrs"]
    same = accepted(base(hosts=[ec2_host(sshCidrs=["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"])]))
    assert same.hosts[0].ec2 is not None
    assert same.hosts[0].ec2.ssh_cidrs == ["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"], "overlaps count once"
    assert "hosts[0].ec2.sshCidrs" in problems(base(hosts=[ec2_host(sshCidrs=[])]))


def test_aws_ids_follow_their_formats() -> None:
    s = accepted(base(zoneId="Z0123456789ABCDEFGHIJ", reverseZones={"ipv4": "ZREV4", "ipv6": "ZREV6"},
                      hosts=[ec2_host(subnetId="subnet-0123456789abcdef0", ami="ami-0123456789abcdef0",
                                      instanceType="m6i.large")]))
    assert s.zone_id == "Z0123456789ABCDEFGHIJ" and s.reverse_zones.ipv6 == "ZREV6"
    for key, values in (
        ("zoneId", base(zoneId="z123")),
        ("reverseZones.ipv4", base(reverseZones={"ipv4": "/hostedzone/Z1"})),
        ("reverseZones.ipv6", base(reverseZones={"ipv6": "Z-1"})),
        ("hosts[0].ec2.subnetId", base(hosts=[ec2_host(subnetId="subnet-12")])),
        ("hosts[0].ec2.ami", base(hosts=[ec2_host(ami="ami-XYZ01234")])),
        ("hosts[0].ec2.instanceType", base(hosts=[ec2_host(instanceType="large")])),
    ):
        assert key in problems(values), key


def test_existing_host_addresses_are_public_and_canonical() -> None:
    s = accepted(base(hosts=[existing(ipv6="2001:DB8:0:0::20", ipv6Ptr="external")]))
    assert s.hosts[0].existing is not None and s.hosts[0].existing.ipv6 == "2001:db8::20"
    assert "hosts[0].existing.ipv6" in problems(base(hosts=[existing(ipv6="198.51.100.21")]))
    assert "hosts[0].existing.ipv4" in problems(base(hosts=[existing(ipv4="2001:db8::20")]))


def test_host_key_accepts_each_openssh_type_and_pins_two_fields() -> None:
    s = accepted(base(hosts=[existing(hostKey=f"{HOST_KEY} root@jira")]))
    assert s.hosts[0].existing is not None and s.hosts[0].existing.host_key == HOST_KEY
    assert "hosts[0].existing.hostKey" in problems(base(hosts=[existing(hostKey="ssh-dss " + HOST_KEY.split()[1])]))


def test_ptr_source_of_each_address_follows_the_table() -> None:
    zones = {"ipv4": "ZREV4", "ipv6": "ZREV6"}
    adopted = accepted(base(reverseZones=zones, hosts=[existing(ipv4Ptr=None, ipv6="2001:db8::20")]))
    host = adopted.hosts[0]
    assert (adopted.ptr_source(host, 4), adopted.ptr_source(host, 6)) == (PtrSource.ZONE, PtrSource.ZONE)
    declared = accepted(base(reverseZones=zones, hosts=[existing(ipv4Ptr="external", ipv6="2001:db8::20",
                                                                 ipv6Ptr="none")]))
    host = declared.hosts[0]
    assert (declared.ptr_source(host, 4), declared.ptr_source(host, 6)) == (PtrSource.EXTERNAL, PtrSource.NONE)
    assert declared.sends_over(host, 4) and not declared.sends_over(host, 6)
    no_v6 = accepted(base(reverseZones=zones, hosts=[existing()]))
    assert no_v6.ptr_source(no_v6.hosts[0], 6) is PtrSource.NONE and not no_v6.has_ipv6(no_v6.hosts[0])
    ec2 = accepted(base(reverseZones=zones, hosts=[ec2_host(ipv6=False)]))
    assert ec2.ptr_source(ec2.hosts[0], 6) is PtrSource.NONE and not ec2.has_ipv6(ec2.hosts[0])
    assert ec2.ptr_source(ec2.hosts[0], 4) is PtrSource.EIP


def test_tls_fingerprint_is_normalised_to_colon_pairs() -> None:
    digits = "ab" * 32
    for given in (digits, digits.upper(), ":".join(digits[i:i + 2] for i in range(0, 64, 2))):
        relay = {"mode": "relay", "relay": {**RELAY_HOST, "tlsFingerprint": given}}
        s = accepted(base(delivery=relay, hosts=[existing(ipv4Ptr=None)]))
        assert s.delivery.relay is not None and s.delivery.relay.tls_fingerprint == ":".join(["AB"] * 32)
    for bad in ("ab" * 31, "ab:" * 31 + "abab", "zz" * 32):
        relay = {"mode": "relay", "relay": {**RELAY_HOST, "tlsFingerprint": bad}}
        assert "delivery.relay.tlsFingerprint" in problems(base(delivery=relay, hosts=[existing(ipv4Ptr=None)]))


def test_dmarc_pct_of_rfc_7489_is_accepted_only_as_its_old_default_and_testing_replaces_it() -> None:
    """RFC 9989 removed pct: 100 (the old default, the whole policy) still reads and changes nothing; any other
    value is refused with the way out, since it meant something RFC 9989 receivers no longer do."""
    for same in (100, "100"):
        assert accepted(base(dmarc={"pct": same})) == accepted(base())
    for gone in (0, 50, 99, 101, "50", True, [100]):
        found = problems(base(dmarc={"pct": gone}))
        assert set(found) == {"dmarc.pct"}, gone
        assert "RFC 9989 (DMARCbis) removed pct; remove dmarc.pct from the stack" in found["dmarc.pct"]
        assert "set dmarc.testing: true (publishes t=y" in found["dmarc.pct"]
    with pytest.raises(ConfigError) as caught:
        parse_settings(base(dmarc={"pct": 50}), SECRETS)
    assert "\n  jira-mailhost:dmarc.pct: 50: RFC 9989 (DMARCbis) removed pct;" in str(caught.value)
    assert accepted(base(dmarc={"testing": True})).dmarc.testing is True
    assert "dmarc.testing" in problems(base(dmarc={"testing": "sometimes"}))


def test_dmarc_report_address_may_carry_mailto() -> None:
    assert accepted(base(dmarc={"rua": "mailto:Reports@Example.com"})).dmarc.rua == "Reports@example.com"


def test_verify_nameserver_is_an_ip_address_normalised() -> None:
    assert accepted(base(verify={"nameserver": "2001:DB8::53"})).verify.nameserver == "2001:db8::53"
    assert "verify.nameserver" in problems(base(verify={"nameserver": " 192.0.2.53"}))


def test_stack_file_keys_secrets_and_other_namespaces(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.qa.yaml"
    path.write_text("config:\n  aws:region: eu-west-1\n  jira-mailhost:sshPrivateKey:\n    secure: AAEAAQ==\n"
                    "  jira-mailhost:domain: example.com\n  other:domain: x.example\n")
    values, secure = values_from_stack_file(path)
    assert values == {"domain": "example.com"} and secure == {"sshPrivateKey"}
    assert stack_file("qa", tmp_path) == path and stack_file(str(path)) == path
    assert stack_file("/srv/stacks/qa.yml") == Path("/srv/stacks/qa.yml")
    assert stack_file("qa") == Path.cwd() / "Pulumi.qa.yaml"
    empty = tmp_path / "Pulumi.empty.yaml"
    empty.write_text("")
    assert values_from_stack_file(empty) == ({}, set())
    with pytest.raises(ConfigError) as unreadable:
        values_from_stack_file(tmp_path / "Pulumi.missing.yaml")
    assert list(dict(unreadable.value.problems)) == ["(stack file)"]
    assert dict(unreadable.value.problems)["(stack file)"].startswith(f"cannot read {tmp_path}/Pulumi.missing.yaml: ")
    listed = tmp_path / "Pulumi.list.yaml"
    listed.write_text("config:\n  - jira-mailhost:domain\n")
    with pytest.raises(ConfigError) as not_mapping:
        values_from_stack_file(listed)
    assert dict(not_mapping.value.problems)["(stack file)"].endswith("lines, as `pulumi config set` writes it")
    with pytest.raises(ConfigError) as caught:
        load_stack_file(path)
    assert "hosts" in dict(caught.value.problems)


def test_a_stack_file_without_the_ssh_key_is_refused_unless_secrets_are_not_needed(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.production.yaml"
    path.write_text("config:\n  jira-mailhost:environment: production\n  jira-mailhost:domain: example.com\n"
                    "  jira-mailhost:hosts:\n    - name: jira\n"
                    f"      existing: {{ipv4: 198.51.100.20, ipv4Ptr: external, hostKey: '{HOST_KEY}'}}\n")
    with pytest.raises(ConfigError) as caught:
        load_stack_file(path)
    assert set(dict(caught.value.problems)) == {"sshPrivateKey"}
    assert load_stack_file(path, require_secrets=False).domain == "example.com", "mailhost render needs no secret"


def test_config_error_lists_each_key_with_the_project_prefix() -> None:
    error = ConfigError([("domain", "is required"), ("hosts[0].name", "is bad")])
    assert str(error) == ("invalid stack configuration:\n  jira-mailhost:domain: is required\n"
                          "  jira-mailhost:hosts[0].name: is bad")


def test_a_rule_message_is_exactly_the_fix_in_words() -> None:
    found = problems(base(domain="localhost", colour="blue"))
    assert found["domain"] == "'localhost' is not a fully qualified domain name; give the sender domain such as " \
                              "'example.com'"
    assert found["colour"] == "is not a known setting; check the spelling against the README's config table"


def test_a_value_shown_back_is_cut_after_60_characters() -> None:
    exact = "x" * 58  # repr adds two quotes: 60 characters, shown whole
    assert f"(got '{exact}')" in problems(base(drainSeconds=exact))["drainSeconds"]
    longer = "x" * 59
    assert f"(got '{longer[:59]}...(cut))" in problems(base(drainSeconds=longer))["drainSeconds"]


@pytest.mark.parametrize(("value", "ok"), [
    ("/var/log/mail.log", True),
    ("/var/log/postfix/mail.log", True),
    ("/var/log/" + "m" * 95 + "/" + "m" * 95, True),  # 200 characters
    ("/var/log/" + "m" * 95 + "/" + "m" * 96, False),
    ("var/log/mail.log", False),
    ("/var/log/", False),
    ("/var/log/.hidden", False),
    ("/var/log//mail.log", False),
])
def test_maillog_file_is_a_plain_file_under_var_log(value: str, ok: bool) -> None:
    if ok:
        assert accepted(base(maillogFile=value)).maillog_file == value
    else:
        assert "must be a file under /var/log/" in problems(base(maillogFile=value))["maillogFile"]


def test_maillog_file_with_a_control_character_names_the_key() -> None:
    assert problems(base(maillogFile="/var/log/a\tb"))["maillogFile"].startswith("maillogFile must be plain ASCII")


def _required_names(model: type[BaseModel]) -> set[str]:
    """The key (alias) of every required field of the model and of the models nested in it."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        if field.is_required():
            names.add(field.alias or name)
        for arg in (*typing.get_args(field.annotation), field.annotation):
            inner = typing.get_args(arg) or (arg,)
            for candidate in inner:
                if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                    names |= _required_names(candidate)
    return names


def test_every_required_setting_has_its_fix() -> None:
    """A missing key's message comes from _REQUIRED_FIXES alone: a required field without an entry
    there would end `pulumi up` in a KeyError instead of a message naming the key."""
    required = _required_names(Settings)
    assert {"domain", "hosts", "hostKey", "ipv4", "subnetId", "username"} <= required  # the walk finds nesting
    assert required <= set(config._REQUIRED_FIXES), required - set(config._REQUIRED_FIXES)


def test_retired_dkim_generations_are_checked_with_their_keys() -> None:
    """dkimRetired: a retired generation must not be the signing one, nor listed twice, nor retired in the
    future; its day is a calendar day written YYYY-MM-DD (a YAML date is taken as that day)."""
    import datetime

    today = datetime.datetime.now(datetime.UTC).date()
    day = today.isoformat()
    found = problems(base(dkimSelector="jm2", dkimRetired=[{"selector": "jm2", "retiredOn": day},
                                                            {"selector": "jm1", "retiredOn": day},
                                                            {"selector": "jm1", "retiredOn": day}]))
    assert found["dkimRetired[0].selector"] == ("'jm2' is the dkimSelector that signs now; list only the "
                                                "generations it replaced")
    assert found["dkimRetired[2].selector"] == "'jm1' is listed twice"
    future = (today + datetime.timedelta(days=2)).isoformat()
    found = problems(base(dkimSelector="jm2", dkimRetired=[{"selector": "jm1", "retiredOn": future}]))
    assert found["dkimRetired[0].retiredOn"] == (f"{future} is in the future; give the day the new dkimSelector "
                                                 "went live (today when you rotate)")
    tomorrow = (today + datetime.timedelta(days=1)).isoformat()  # a day's slack for time zones
    accepted(base(dkimSelector="jm2", dkimRetired=[{"selector": "jm1", "retiredOn": tomorrow}]))
    for bad in ("27.11.2026", "2026-13-01", 20261127):
        found = problems(base(dkimSelector="jm2", dkimRetired=[{"selector": "jm1", "retiredOn": bad}]))
        assert "dkimRetired[0].retiredOn" in found, bad
    accepted(base(dkimSelector="jm2", dkimRetired=[{"selector": "jm1", "retiredOn": today}]))  # a YAML date


def test_retired_generations_stay_published_for_the_retention_days_only() -> None:
    import datetime

    today = datetime.date(2026, 11, 27)
    s = parse_settings(base(dkimSelector="jm3", dkimRetentionDays=3, dkimRetired=[
        {"selector": "jm1", "retiredOn": "2026-11-24"}, {"selector": "jm2", "retiredOn": "2026-11-25"}]), SECRETS)
    assert s.dkim_generations(today) == ["jm2", "jm3"], "jm1's 3 days are over; jm2 has one left"
    assert s.dkim_generations(datetime.date(2026, 11, 24)) == ["jm1", "jm2", "jm3"]
    assert parse_settings(base(), SECRETS).dkim_generations(today) == ["jm1"]
    for bad in (0, 91):
        assert "dkimRetentionDays" in problems(base(dkimRetentionDays=bad))
