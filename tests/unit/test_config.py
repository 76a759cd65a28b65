"""Settings validation: every rule, good and bad; each error names the key and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailhost.publish.stack import load_stack_file, parse_settings
from mailhost.settings.config import ConfigError, PtrSource, Settings

ROOT = Path(__file__).resolve().parents[2]
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBxq7Z4jFPcNFkx+1udVSIvOMuXHTPCLKklOXNlryv7"
SECRETS = {"sshPrivateKey", "relayPassword"}


def existing(**over: Any) -> dict[str, Any]:
    return {"name": "jira", "existing": {"ipv4": "198.51.100.20", "hostKey": HOST_KEY, "ipv4Ptr": "external", **over}}


def base(**over: Any) -> dict[str, Any]:
    return {"environment": "production", "domain": "example.com", "hosts": [existing()], **over}


def problems(values: dict[str, Any], secrets: set[str] = SECRETS) -> dict[str, str]:
    with pytest.raises(ConfigError) as caught:
        parse_settings(values, secrets)
    return dict(caught.value.problems)


def test_minimal_production_stack_gets_documented_defaults() -> None:
    s = parse_settings(base(), SECRETS)
    host = s.hosts[0]
    assert s.fqdn(host) == "jira.example.com" and s.sender == "jira@example.com"
    assert s.delivery.mode == "direct" and s.message_size_limit == 26_214_400
    assert s.selector(host) == "jm1-jira" and s.dmarc.policy == "quarantine" and s.spf_all == "~all"
    assert host.user == "root" and host.ssh_port == 22 and s.production and not s.rerouted


def test_tls_policy_takes_up_to_500_domains_lowercased_in_order() -> None:
    many = {f"D{i}.example.": "encrypt" if i % 2 else "may" for i in range(500)}
    policy = parse_settings(base(delivery={"tlsPolicy": many}), SECRETS).delivery.tls_policy
    assert list(policy) == [f"d{i}.example" for i in range(500)] and policy["d1.example"] == "encrypt"
    assert "delivery.tlsPolicy" in problems(base(delivery={"tlsPolicy": {**many, "one.more.example": "may"}}))


def test_shipped_stack_files_are_valid() -> None:
    staging = load_stack_file(ROOT / "Pulumi.staging.yaml", require_secrets=False)
    production = load_stack_file(ROOT / "Pulumi.production.yaml", require_secrets=False)
    assert staging.rerouted and staging.delivery.mode == "relay" and not staging.production
    assert production.production and len(production.hosts) == 2 and production.hosts[0].user == "admin"
    assert production.delivery.tls_policy == {"example.com": "encrypt"}


@pytest.mark.parametrize(("values", "key", "fix"), [
    (base(domain="localhost"), "domain", "fully qualified"),
    (base(hosts=[]), "hosts", "at least 1"),
    (base(hosts=[{"name": "jira"}]), "hosts[0]", "exactly one of 'ec2'"),
    (base(hosts=[existing(hostKey="AAAA")]), "hosts[0].existing.hostKey", "ssh-keyscan"),
    (base(hosts=[existing(hostKey="ssh-ed25519 " + "A" * 60)]), "hosts[0].existing.hostKey", "ssh-keyscan"),
    (base(hosts=[existing(ipv4="300.1.1.1")]), "hosts[0].existing.ipv4", "IPv4"),
    (base(hosts=[existing(ipv6="2001:db8::zz")]), "hosts[0].existing.ipv6", "IPv6"),
    (base(hosts=[{"name": "Jira_1", "existing": existing()["existing"]}]), "hosts[0].name", "lowercase DNS label"),
    (base(hosts=[existing(), existing()]), "hosts[1].name", "used twice"),
    (base(hosts=[{**existing(), "previousName": "Jira_1"}]), "hosts[0].previousName", "lowercase DNS label"),
    (base(hosts=[{**existing(), "previousName": "jira"}]), "hosts[0].previousName", "remove previousName"),
    (base(hosts=[existing(), {**existing(ipv4="198.51.100.21"), "name": "wiki", "previousName": "jira"}]),
     "hosts[1].previousName", "still in the stack"),
    (base(hosts=[{**existing(), "previousName": "old"},
                 {**existing(ipv4="198.51.100.21"), "name": "wiki", "previousName": "old"}]),
     "hosts[1].previousName", "given twice"),
    (base(hosts=[{"name": "j", "ec2": {"subnetId": "sn-1", "sshCidrs": ["10.0.0.0/8"]}}]),
     "hosts[0].ec2.subnetId", "subnet-"),
    (base(hosts=[{"name": "j", "ec2": {"subnetId": "subnet-0123abcd", "sshCidrs": ["0.0.0.0/0"]}}]),
     "hosts[0].ec2.sshCidrs", "wider than /8"),
    (base(hosts=[{"name": "j", "ec2": {"subnetId": "subnet-0123abcd"}}]), "hosts[0].ec2.sshCidrs", "required"),
    (base(delivery={"mode": "relay"}), "delivery", "add relay"),
    (base(delivery={"maxConnections": 0}), "delivery.maxConnections", "greater than or equal to 1"),
    (base(delivery={"maxConnections": 101}), "delivery.maxConnections", "less than or equal to 100"),
    (base(delivery={"maxConnections": 5.5}), "delivery.maxConnections", "valid integer"),
    (base(delivery={"mode": "relay", "relay": {"host": "smtp.x.net", "username": "u", "maxPerMinute": 0}}),
     "delivery.relay.maxPerMinute", "greater than or equal to 1"),
    (base(delivery={"mode": "relay", "relay": {"host": "smtp.x.net", "username": "u", "maxPerMinute": 120}}),
     "delivery.relay.maxPerMinute", "less than or equal to 60"),
    (base(delivery={"mode": "relay", "relay": {"host": "smtp.x.net", "username": "u", "maxPerDay": 0}}),
     "delivery.relay.maxPerDay", "greater than or equal to 1"),
    (base(delivery={"mode": "relay", "relay": {"host": "smtp.x.net", "username": "u", "maxPerDay": 10_000_001}}),
     "delivery.relay.maxPerDay", "less than or equal to 10000000"),
    (base(delivery={"mode": "relay", "relay": {"host": "smtp.x.net", "username": "u", "maxPerDay": "10k"}}),
     "delivery.relay.maxPerDay", "integer"),
    (base(delivery={"mode": "direct", "relay": {"host": "smtp.x.net", "username": "u"}}), "delivery", "mode: relay"),
    (base(spfExtra=["+all"]), "spfExtra", "mechanisms"),
    (base(spfExtra=["v=spf1 ip4:1.2.3.4"]), "spfExtra", "come from spfAll"),
    (base(spfAll="+all"), "spfAll", "~all"),
    (base(messageSizeLimit=1000), "messageSizeLimit", "greater than or equal"),
    (base(dmarc={"policy": "block"}), "dmarc.policy", "quarantine"),
    (base(dmarc={"rua": "not an address"}), "dmarc.rua", "e-mail address"),
    (base(dmarc={"pct": 25}), "dmarc.pct", "dmarc.testing: true"),
    (base(rerouteTo="qa@example.com"), "rerouteTo", "production must mail real users"),
    (base(environment="staging"), "rerouteTo", "rerouteOptOut"),
    (base(fromAddress="jira@other.org"), "fromAddress", "jira@example.com"),
    (base(maillogFile="/tmp/x"), "maillogFile", "/var/log/"),
    (base(verify={"nameserver": "dns.example"}), "verify.nameserver", "IP address"),
    (base(colour="blue"), "colour", "spelling"),
    (base(hosts=[existing(ipv4Ptr=None)]), "hosts[0].existing.ipv4Ptr", "reverseZones.ipv4"),
    (base(hosts=[existing(ipv6Ptr="zone", ipv6="2001:db8::5")]), "hosts[0].existing.ipv6Ptr", "reverseZones.ipv6"),
    (base(hosts=[existing(ipv6Ptr="external")]), "hosts[0].existing.ipv6Ptr", "no ipv6"),
])
def test_each_bad_value_names_its_key_and_the_fix(values: dict[str, Any], key: str, fix: str) -> None:
    found = problems(values)
    assert key in found, found
    assert fix in found[key], found[key]


def test_missing_secrets_are_reported_with_the_command_to_set_them() -> None:
    found = problems(base(delivery={"mode": "relay", "relay": {"host": "smtp.x.net", "username": "u"}}), set())
    assert "pulumi config set --secret sshPrivateKey" in found["sshPrivateKey"]
    assert "pulumi config set --secret relayPassword" in found["relayPassword"]


def test_all_problems_are_reported_at_once() -> None:
    found = problems(base(domain="x", hosts=[existing(ipv4="nope")], dmarc={"policy": "block"}))
    assert {"domain", "hosts[0].existing.ipv4", "dmarc.policy"} <= set(found)


def test_known_hosts_line_is_accepted_and_pinned_without_the_name() -> None:
    s = parse_settings(base(hosts=[existing(hostKey=f"jira.example.com {HOST_KEY}")]), SECRETS)
    assert s.hosts[0].existing is not None and s.hosts[0].existing.host_key == HOST_KEY


def test_staging_opt_out_mails_real_users() -> None:
    s = parse_settings(base(environment="staging", rerouteOptOut=True), SECRETS)
    assert not s.production and not s.rerouted


def ec2_settings(**over: Any) -> Settings:
    ec2 = {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"]}
    return parse_settings(base(hosts=[{"name": "jira", "ec2": ec2}], **over), SECRETS)


def test_ptr_sources_follow_where_the_ptr_can_be_published() -> None:
    s = ec2_settings()
    host = s.hosts[0]
    assert s.ptr_source(host, 4) is PtrSource.EIP and s.ptr_source(host, 6) is PtrSource.NONE
    assert not s.sends_over(host, 6), "EC2 has no IPv6 reverse DNS"
    s6 = ec2_settings(reverseZones={"ipv6": "Z6"})
    assert s6.ptr_source(s6.hosts[0], 6) is PtrSource.ZONE and s6.sends_over(s6.hosts[0], 6)
    adopted = parse_settings(base(hosts=[existing(ipv4Ptr=None)], reverseZones={"ipv4": "Z4"}), SECRETS)
    assert adopted.ptr_source(adopted.hosts[0], 4) is PtrSource.ZONE


def test_relay_mode_needs_no_ptr() -> None:
    relay = {"mode": "relay", "relay": {"host": "smtp.x.net", "username": "u"}}
    s = parse_settings(base(hosts=[existing(ipv4Ptr=None)], delivery=relay), SECRETS)
    assert s.ptr_source(s.hosts[0], 4) is PtrSource.NONE


def test_a_renamed_host_names_its_resources_as_before() -> None:
    """previousName gives the host as it was named, for aliases; without it there is none."""
    settings = parse_settings(base(hosts=[{**existing(), "name": "jira2", "previousName": "jira"}]), SECRETS)
    (host,) = settings.hosts
    previous = host.previous()
    assert previous is not None and previous.name == "jira" and previous.previous() is None
    assert settings.selector(previous, "jm1") == "jm1-jira" and settings.selector(host, "jm1") == "jm1-jira2"
    assert parse_settings(base(), SECRETS).hosts[0].previous() is None
