"""Hostile stack values: each is refused with a message naming its key, before anything renders.

Every case here once passed validation (or ended in a traceback) and changed Postfix or DNS
beyond its own setting; see issue 9.  The allowlist tests prove the second line of defence
holds even when a value gets past the grammars.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailhost.publish import allowlist, render
from mailhost.publish.stack import load_stack_file, parse_settings
from mailhost.settings.config import ConfigError
from tests.unit.test_config import SECRETS, base, existing

RELAY = {"host": "smtp.relay.example.net", "port": 587, "username": "jira"}
EC2 = {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"]}


def relay(**over: Any) -> dict[str, Any]:
    return {"mode": "relay", "relay": {**RELAY, **over}}


def ec2(**over: Any) -> list[dict[str, Any]]:
    return [{"name": "jira", "ec2": {**EC2, **over}}]


def staging(**over: Any) -> dict[str, Any]:
    return base(**{"environment": "staging", "rerouteTo": "qa@example.com", **over})


HOSTILE: dict[str, tuple[dict[str, Any], str, str]] = {
    "$ in rerouteTo": (staging(rerouteTo="qa$@example.com"), "rerouteTo", "special meanings"),
    "percent hack in rerouteTo": (staging(rerouteTo="qa%other.example@example.com"), "rerouteTo", "special"),
    "newline after rerouteTo": (staging(rerouteTo="qa@example.com\n"), "rerouteTo", "one line"),
    "newline in maillogFile": (base(maillogFile="/var/log/x.log\nalways_bcc = spy@elsewhere.test"), "maillogFile",
                               "one line"),
    "dot-dot in maillogFile": (base(maillogFile="/var/log/../../etc/postfix/main.cf"), "maillogFile", "no '..'"),
    "space in maillogFile": (base(maillogFile="/var/log/a b.log"), "maillogFile", "no spaces"),
    "newline in relay username": (base(delivery=relay(username="jira\n[evil.test]:587 x")), "delivery.relay.username",
                                  "without spaces"),
    "colon in relay username": (base(delivery=relay(username="ji:ra")), "delivery.relay.username", "':'"),
    "newline after host name": (base(hosts=[{"name": "jira\n", "existing": existing()["existing"]}]), "hosts[0].name",
                                "DNS label"),
    "newline after selector": (base(dkimSelector="jm1\n"), "dkimSelector", "DNS label"),
    "newline after environment": (base(environment="production\n"), "environment", "DNS label"),
    "newline after domain": (base(domain="example.com\n"), "domain", "one line"),
    "newline after address": (base(hosts=[existing(ipv4="198.51.100.20\n")]), "hosts[0].existing.ipv4", "one line"),
    "+all with a space": (base(spfExtra=["+all "]), "spfExtra", "whitespace"),
    "+all": (base(spfExtra=["+all"]), "spfExtra", "come from spfAll"),
    "?all": (base(spfExtra=["?all"]), "spfExtra", "come from spfAll"),
    "whole IPv4 Internet": (base(spfExtra=["ip4:0.0.0.0/0"]), "spfExtra", "more than a /8"),
    "whole IPv6 Internet": (base(spfExtra=["ip6:::/0"]), "spfExtra", "more than a /8"),
    "a /7 network": (base(spfExtra=["ip4:2.0.0.0/7"]), "spfExtra", "more than a /8"),
    "a/0": (base(spfExtra=["a/0"]), "spfExtra", "more than a /8"),
    "redirect": (base(spfExtra=["redirect=_spf.evil.test"]), "spfExtra", "redirect="),
    "two terms in one": (base(spfExtra=["include:_spf.x.test ip4:0.0.0.0/1"]), "spfExtra", "not one SPF term"),
    "numeric top-level label": (base(spfExtra=["include:_spf.a.0"]), "spfExtra", "not a fully qualified"),
    "numeric domain": (base(domain="example.123"), "domain", "not a fully qualified"),
    "macro": (base(spfExtra=["exists:%{i}.evil.test"]), "spfExtra", "macros"),
    "11 lookups": (base(spfExtra=[f"include:s{i}.example.net" for i in range(11)]), "spfExtra", "11 DNS lookups"),
    "quote in an SPF term": (base(spfExtra=['include:x"y.test']), "spfExtra", "not a fully qualified"),
    "non-ASCII SPF term": (base(spfExtra=["include:bücher.example"]), "spfExtra", "plain ASCII"),
    "DMARC tag injection": (base(dmarc={"rua": "x@example.com;p=none"}), "dmarc.rua", "not a fully qualified"),
    "DMARC second address": (base(dmarc={"rua": "x@example.com,mailto:y@evil.test"}), "dmarc.rua", "special"),
    "loopback address": (base(hosts=[existing(ipv4="127.0.0.1")]), "hosts[0].existing.ipv4", "public unicast"),
    "private address": (base(hosts=[existing(ipv4="10.1.2.3")]), "hosts[0].existing.ipv4", "public unicast"),
    "shared address": (base(hosts=[existing(ipv4="100.64.1.1")]), "hosts[0].existing.ipv4", "public unicast"),
    "link-local IPv6": (base(hosts=[existing(ipv6="fe80::1", ipv6Ptr="external")]), "hosts[0].existing.ipv6",
                        "public unicast"),
    "unique-local IPv6": (base(hosts=[existing(ipv6="fd00::1", ipv6Ptr="external")]), "hosts[0].existing.ipv6",
                          "public unicast"),
    "mapped IPv4 in IPv6": (base(hosts=[existing(ipv6="::ffff:198.51.100.20", ipv6Ptr="external")]),
                            "hosts[0].existing.ipv6", "public unicast"),
    "multicast IPv6": (base(hosts=[existing(ipv6="ff02::1", ipv6Ptr="external")]), "hosts[0].existing.ipv6",
                       "public unicast"),
    "SSH open to half the Internet twice": (base(hosts=ec2(sshCidrs=["0.0.0.0/1", "128.0.0.0/1"])),
                                            "hosts[0].ec2.sshCidrs", "wider than /8"),
    "SSH /8s adding up": (base(hosts=ec2(sshCidrs=["10.0.0.0/8", "11.0.0.0/8"])), "hosts[0].ec2.sshCidrs",
                          "more than a /8"),
    "SSH range with host bits": (base(hosts=ec2(sshCidrs=["203.0.113.7/8"])), "hosts[0].ec2.sshCidrs",
                                 "host bits set"),
    "AMI with a newline": (base(hosts=ec2(ami="ami-0123456789abcdef0\n")), "hosts[0].ec2.ami", "not an AMI id"),
    "instance type with a space": (base(hosts=ec2(instanceType="t3.small x")), "hosts[0].ec2.instanceType",
                                   "instance type"),
    "zone id with a slash": (base(zoneId="/hostedzone/Z123"), "zoneId", "hosted zone id"),
    "fingerprint of the wrong length": (base(delivery=relay(tlsFingerprint="AB:CD")), "delivery.relay.tlsFingerprint",
                                        "SHA-256"),
    "SSH user with a space": (base(hosts=[{**existing(), "sshUser": "root -oProxyCommand=x"}]), "hosts[0].sshUser",
                              "Unix user name"),
    "host key with a newline": (base(hosts=[existing(hostKey=existing()["existing"]["hostKey"] + "\nevil")]),
                                "hosts[0].existing.hostKey", "one line"),
    "selector too long for DNS": (base(dkimSelector="s" * 60), "dkimSelector", "longer than a DNS label"),
    "a list where a mapping belongs": (base(delivery=["relay"]), "delivery", "valid dictionary"),
    "a mapping where a list belongs": (base(spfExtra={"include": "x.test"}), "spfExtra", "valid list"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_value_is_refused_naming_its_key(case: str) -> None:
    values, key, fix = HOSTILE[case]
    with pytest.raises(ConfigError) as caught:
        parse_settings(values, SECRETS)
    found = dict(caught.value.problems)
    assert key in found, found
    assert fix in found[key], found[key]


@pytest.mark.parametrize("password", ["two\nlines", "tab\tinside", " leading", "trailing ", "ünicode", ""])
def test_unusable_relay_password_is_refused_without_echo(password: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings({**base(delivery=relay()), "relayPassword": password or " "}, {"sshPrivateKey"})
    assert "relayPassword" in dict(caught.value.problems)
    if password.strip():
        assert password.strip() not in str(caught.value)


def test_numeric_looking_names_stay_names() -> None:
    settings = parse_settings(base(dkimSelector=2025), SECRETS)
    assert settings.dkim_selector == "2025" and settings.selector(settings.hosts[0]) == "2025-jira"


def test_accepted_values_keep_their_meaning() -> None:
    good = staging(rerouteTo="qa.team+jira@example.com", maillogFile="/var/log/postfix/jira.log",
                   spfExtra=["include:_spf.relay.example.net", "ip4:198.51.100.0/24", "~mx", "a//64"],
                   dmarc={"rua": "mailto:dmarc@example.com"}, delivery=relay(username="apikey@relay.example",
                                                                             tlsFingerprint="ab" * 32))
    settings = parse_settings(good, SECRETS)
    assert settings.reroute_to == "qa.team+jira@example.com" and settings.dmarc.rua == "dmarc@example.com"
    assert settings.delivery.relay is not None
    assert settings.delivery.relay.tls_fingerprint == ":".join(["AB"] * 32)


def test_documentation_addresses_are_public_for_examples_and_the_lab() -> None:
    for address in ("192.0.2.7", "198.51.100.20", "203.0.113.9"):
        assert parse_settings(base(hosts=[existing(ipv4=address)]), SECRETS).hosts[0].existing is not None


def test_stack_file_that_is_not_a_mapping_is_a_message(tmp_path: Path) -> None:
    for text in ("- a\n- b\n", "config: [1, 2]\n", "config:\n  jira-mailhost:hosts: 5\n", "\xff\xfe"):
        path = tmp_path / "Pulumi.x.yaml"
        path.write_bytes(text.encode("latin-1"))
        with pytest.raises(ConfigError):
            load_stack_file(path, require_secrets=False)


# ---------- the allowlist: a second line of defence behind the grammars ----------

def rendered(values: dict[str, Any]) -> dict[str, str]:
    settings = parse_settings(values, SECRETS)
    return {f.path: f.content for f in render.render_host(settings, settings.hosts[0], render.PLACEHOLDERS)}


SHAPES = {
    "direct": base(),
    "relay pinned, rerouted, own log": staging(delivery=relay(tlsFingerprint="ab" * 32),
                                              maillogFile="/var/log/postfix.log"),
    "relay verified": base(delivery=relay()),
}


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_every_shipped_shape_passes_its_own_allowlist(shape: str) -> None:
    settings = parse_settings(SHAPES[shape], SECRETS)
    files = rendered(SHAPES[shape])
    assert set(allowlist.parse_main_cf(files[render.MAIN_CF])) == allowlist.main_cf_parameters(settings)


@pytest.mark.parametrize(("path", "change", "why"), [
    (render.MAIN_CF, lambda c: c + "always_bcc = spy@elsewhere.test\n", "extra ['always_bcc']"),
    (render.MAIN_CF, lambda c: c.replace("virtual_alias_maps = regexp:/etc/postfix/jira-mailhost-reroute\n", ""),
     "missing ['virtual_alias_maps']"),
    (render.MAIN_CF, lambda c: c + "myhostname = evil.test\n", "twice"),
    (render.MAIN_CF, lambda c: c.replace("maillog_file = /var/log/postfix.log",
                                         "maillog_file = /var/log/postfix.log\n  always_bcc = x@y.test"),
     "continuation"),
    (render.REROUTE_MAP, lambda c: c.replace("qa@example.com", "qa$@example.com"), "exactly one rule"),
    (render.REROUTE_MAP, lambda c: c + "/^x/ y@evil.test\n", "exactly one rule"),
    (render.SASL_PASSWD, lambda c: c + "[evil.test]:587 jira:pw\n", "exactly one entry"),
    (render.SASL_PASSWD, lambda c: c.replace("[smtp.relay.example.net]", "[evil.test]"), "exactly one entry"),
    (render.OPENDKIM_CONF, lambda c: c + "KeyTable /tmp/x\n", "options differ"),
])
def test_allowlist_refuses_a_file_changed_behind_the_grammars(path: str, change: Any, why: str) -> None:
    values = staging(delivery=relay(), maillogFile="/var/log/postfix.log")
    settings = parse_settings(values, SECRETS)
    files = rendered(values)
    allowlist.check_files(settings, files, render.SHAPED_PATHS)  # as rendered: accepted
    files[path] = change(files[path])
    with pytest.raises(allowlist.RenderRefused, match=why.replace("[", r"\[").replace("$", r"\$")):
        allowlist.check_files(settings, files, render.SHAPED_PATHS)


def test_settings_env_tells_the_host_what_to_check() -> None:
    values = staging(delivery=relay())
    settings = parse_settings(values, SECRETS)
    env = dict(line.split("=", 1) for line in rendered(values)[render.SETTINGS_ENV].splitlines()
               if line and not line.startswith("#"))
    assert env["MAIN_CF_PARAMETERS"].strip('"').split() == sorted(allowlist.main_cf_parameters(settings))
    assert env["REROUTE_TO"] == "qa@example.com" and env["REROUTE_MAP"] == render.REROUTE_MAP
    assert env["RELAY_KEY"] == "[smtp.relay.example.net]:587"


def test_direct_mode_renders_no_relay_even_with_relay_settings_built_past_the_model() -> None:
    """The mode alone decides: relay settings that reached a direct-mode model (the model refuses them, so only
    a copy made past validation holds them) give no relayhost and no password file."""
    relayed = parse_settings(staging(delivery=relay(), hosts=[existing(ipv4Ptr=None)]), SECRETS)
    assert relayed.delivery.relay is not None
    smuggled = relayed.model_copy(update={"delivery": relayed.delivery.model_copy(update={"mode": "direct"})})
    files = {f.path: f.content for f in render.render_host(smuggled, smuggled.hosts[0], render.PLACEHOLDERS)}
    assert render.SASL_PASSWD not in files
    assert allowlist.parse_main_cf(files[render.MAIN_CF])["relayhost"] == ""


def test_the_allowlist_refuses_a_reroute_it_did_not_ask_for_even_past_the_grammar() -> None:
    """Defence in depth, exercised: a reroute target holding `$` (which the grammar refuses, so only a model
    built past validation can hold it) and a reroute rule in a stack without rerouteTo are both refused."""
    settings = parse_settings(staging(), SECRETS)
    assert settings.reroute_to == "qa@example.com"
    smuggled = settings.model_copy(update={"reroute_to": "qa$1@example.com"})
    with pytest.raises(allowlist.RenderRefused, match=r"^the reroute map must be exactly one rule '/@/ rerouteTo'$"):
        allowlist.check_reroute(smuggled, "/@/ qa$1@example.com\n")
    unrouted = settings.model_copy(update={"reroute_to": None})
    for text in ("/@/ XXXX\n", "/@/\n"):
        with pytest.raises(allowlist.RenderRefused, match=r"^the reroute map must be exactly one rule"):
            allowlist.check_reroute(unrouted, text)
