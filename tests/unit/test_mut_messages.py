"""README: "a bad value stops `pulumi preview` with the key and the fix".  The fix is the words, so
the message of every rule this program writes itself is compared with the reviewed one in
tests/unit/settings_messages.json (found necessary by mutation testing: tests that look for one
word in a message let the rest of it change unnoticed).

pydantic's own messages ("Input should be ...", shown with "(got ...)") are left out: their
wording belongs to pydantic.  After changing a message on purpose, regenerate the file with
`UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/unit/test_mut_messages.py` and review
the diff.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from mailhost.publish.stack import parse_settings
from mailhost.records import grammar, spf
from mailhost.settings.config import ConfigError
from tests.unit.test_config import SECRETS, base, existing
from tests.unit.test_hostile_values import HOSTILE

MESSAGES = Path(__file__).with_name("settings_messages.json")
EC2 = {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"]}
RELAY = {"host": "smtp.relay.example.net", "username": "jira"}


def ec2(**over: Any) -> list[dict[str, Any]]:
    return [{"name": "jira", "ec2": {**EC2, **over}}]


def relay(**over: Any) -> dict[str, Any]:
    return {"mode": "relay", "relay": {**RELAY, **over}}


STACKS: dict[str, dict[str, Any]] = {
    **{f"hostile: {label}": values for label, (values, _, _) in HOSTILE.items()},
    "domain one label": base(domain="localhost"),
    "no hosts": base(hosts=[]),
    "host of neither kind": base(hosts=[{"name": "jira"}]),
    "host of both kinds": base(hosts=[{"name": "jira", "ec2": EC2, "existing": existing()["existing"]}]),
    "host key not a key": base(hosts=[existing(hostKey="AAAA")]),
    "host key bad base64": base(hosts=[existing(hostKey="ssh-ed25519 " + "A" * 60)]),
    "host key dss": base(hosts=[existing(hostKey="ssh-dss " + "A" * 60)]),
    "ipv4 not an address": base(hosts=[existing(ipv4="300.1.1.1")]),
    "ipv6 not an address": base(hosts=[existing(ipv6="2001:db8::zz", ipv6Ptr="external")]),
    "host name": base(hosts=[{"name": "Jira_1", "existing": existing()["existing"]}]),
    "host fqdn": base(hosts=[{**existing(), "fqdn": "jira"}]),
    "names twice": base(hosts=[existing(), existing()]),
    "fqdns twice": base(hosts=[existing(), {**existing(), "name": "wiki", "fqdn": "jira.example.com"}]),
    "ssh user": base(hosts=[{**existing(), "sshUser": "Root"}]),
    "subnet": base(hosts=ec2(subnetId="sn-1")),
    "ami": base(hosts=ec2(ami="ami-XYZ01234")),
    "instance type": base(hosts=ec2(instanceType="large")),
    "ssh open to all": base(hosts=ec2(sshCidrs=["0.0.0.0/0"])),
    "ssh not a cidr": base(hosts=ec2(sshCidrs=["admins"])),
    "ssh v6 too wide in all": base(hosts=ec2(sshCidrs=["2400::/16", "2000::/8"])),
    "relay without settings": base(delivery={"mode": "relay"}),
    "relay settings in direct mode": base(delivery={"mode": "direct", "relay": RELAY}),
    "relay host": base(delivery=relay(host="smtp"), hosts=[existing(ipv4Ptr=None)]),
    "relay fingerprint": base(delivery=relay(tlsFingerprint="zz" * 32), hosts=[existing(ipv4Ptr=None)]),
    "relay without password": base(delivery=relay(), hosts=[existing(ipv4Ptr=None)]),
    "dmarc rua": base(dmarc={"rua": "not an address"}),
    "dmarc pct of RFC 7489": base(dmarc={"pct": 50}),
    "reroute in production": base(rerouteTo="qa@example.com"),
    "staging without reroute": base(environment="staging"),
    "from outside the domain": base(fromAddress="jira@other.org"),
    "from not an address": base(fromAddress="jira"),
    "maillog outside /var/log": base(maillogFile="/tmp/x"),
    "nameserver name": base(verify={"nameserver": "dns.example"}),
    "zone id": base(zoneId="z123"),
    "reverse zone id": base(reverseZones={"ipv6": "Z-1"}),
    "environment": base(environment="Prod"),
    "unknown key": base(colour="blue"),
    "ptr zone without zone": base(hosts=[existing(ipv4Ptr="zone")]),
    "ptr none in direct mode": base(hosts=[existing(ipv4Ptr="none")]),
    "ipv6 ptr zone without zone": base(hosts=[existing(ipv6Ptr="zone", ipv6="2001:db8::5")]),
    "ipv6 ptr without ipv6": base(hosts=[existing(ipv6Ptr="external")]),
    "missing keys": {"hosts": [{"existing": {}}, {"name": "x", "ec2": {}}], "delivery": {"mode": "relay",
                                                                                         "relay": {}}},
    "selector and name too long": base(dkimSelector="s" * 40, hosts=[{**existing(), "name": "h" * 30}]),
    "from local part too long": base(fromAddress="j" * 65 + "@example.com"),
    "from too long": base(fromAddress="j." * 60 + "j@" + "d" * 60 + "." + "e" * 60 + ".example.com"),
    "from bad domain": base(fromAddress="jira@bad..example.com"),
    "reroute bad domain": base(environment="qa", rerouteTo="qa@localhost"),
    "DEL in the reroute address": base(environment="qa", rerouteTo="q\x7fa@example.com"),
    "6to4 address": base(hosts=[existing(ipv6="2002:c633:6414::1", ipv6Ptr="external")]),
    "service label in the domain": base(domain="_spf.example.com"),
    "tls policy not a mapping": base(delivery={"tlsPolicy": ["partner.example"]}),
    "tls policy level": base(delivery={"tlsPolicy": {"partner.example": "secure"}}),
    "tls policy domain": base(delivery={"tlsPolicy": {"partner": "encrypt"}}),
    "tls policy domain not text": base(delivery={"tlsPolicy": {7: "encrypt"}}),
    "tls policy domain twice": base(delivery={"tlsPolicy": {"partner.example": "may", "Partner.Example.": "may"}}),
    "tls policy too long": base(delivery={"tlsPolicy": {f"d{i}.example": "may" for i in range(501)}}),
    "tls policy in relay mode": base(delivery={**relay(), "tlsPolicy": {"partner.example": "encrypt"}},
                                     hosts=[existing(ipv4Ptr=None)]),
    "outbound tls unknown": base(delivery={"outboundTls": "mta-sts"}),
    "outbound tls not text": base(delivery={"outboundTls": ["dane"]}),
    "dane in relay mode": base(delivery={**relay(), "outboundTls": "dane"}, hosts=[existing(ipv4Ptr=None)]),
    "bogus name without dane": base(delivery={"dnssecBogusName": "dnssec-failed.org", "outboundTls": "opportunistic"}),
    "bogus name not a name": base(delivery={"outboundTls": "dane", "dnssecBogusName": "dnssec failed.org"}),
}

PASSWORDS = ["", "two\nlines", "t\x7fb", "ünicode", " leading", "trailing ", "x" * 512, "x" * 513, "fine-Pa55"]

SPF_TERMS = [
    "all", "+all", "-all", "v", "v=spf1", "redirect=_spf.x.example", "exp=x.example", "ip4", "ip6", "ip4:x",
    "ip4:198.51.100.1/24", "ip6:2001:db8::1/32", "ip4:2001:db8::/32", "ip6:198.51.100.0/24", "ip4:10.0.0.0/7",
    "include", "include:", "include:x..example", "exists", "exists:%{i}.x.example", "a:bad..domain", "mx:x/7",
    "a/x", "mxfoo", "ptr", "ptr:x.example", "foo:bar", "include:a b", "", " a", "a\n",
    # accepted
    "ip4:10.0.0.0/8", "ip6:2001:db8::/32", "exists:_spf.x.example", "include:x.example", "~include:x.example",
    "a:_hosts.example.com", "mx:mail.example.com/24//64", "a", "-mx",
]


LONG = "x" * 70


def allowlist_results() -> dict[str, Any]:
    """The last line of defence: what each check says about a file of the wrong shape."""
    from mailhost.publish import allowlist, render

    staging = parse_settings(base(environment="staging", rerouteTo="qa@example.com"), SECRETS)
    relay_settings = parse_settings(base(hosts=[existing(ipv4Ptr=None)], delivery=relay()), SECRETS)
    tls_settings = parse_settings(base(environment="staging", rerouteTo="qa@example.com",
                                       delivery={"tlsPolicy": {"partner.example": "encrypt"}}), SECRETS)
    files = {f.path: f.content for f in render.render_host(staging, staging.hosts[0], render.PLACEHOLDERS)}
    tls_files = {f.path: f.content for f in render.render_host(tls_settings, tls_settings.hosts[0],
                                                               render.PLACEHOLDERS)}
    relay_files = {f.path: f.content for f in render.render_host(relay_settings, relay_settings.hosts[0],
                                                                 render.PLACEHOLDERS)}
    cases: dict[str, Any] = {
        "main.cf parsed": lambda: allowlist.parse_main_cf("a = 1\nmydestination =\n# note\n\nb = x y"),
        "main.cf twice": lambda: allowlist.parse_main_cf("biff = no\nbiff = yes"),
        "main.cf not a parameter": lambda: allowlist.parse_main_cf(f"{LONG} is not = a parameter"),
        "continuation": lambda: allowlist.parse_main_cf(f"biff = no\n  {LONG}"),
        "carriage return": lambda: allowlist.parse_main_cf(f"biff = no\r{LONG}"),
        "main.cf extra": lambda: allowlist.check_main_cf(staging, files[render.MAIN_CF] + "always_bcc = x@y.z\n"),
        "opendkim line": lambda: allowlist.check_opendkim_conf(f"Syslog yes\n{LONG} {LONG} {LONG}"),
        "opendkim options": lambda: allowlist.check_opendkim_conf("Syslog yes\nMode sv\n"),
        "reroute two rules": lambda: allowlist.check_reroute(staging, "/@/ qa@example.com\n/x/ y@example.com\n"),
        "reroute other target": lambda: allowlist.check_reroute(staging, "/@/ qb@example.com\n"),
        "sasl other user": lambda: allowlist.check_sasl_passwd(relay_settings.delivery.relay,  # type: ignore[arg-type]
                                                               "[smtp.relay.example.net]:587 other:pw\n"),
        "reroute map without rerouteTo": lambda: allowlist.check_files(
            relay_settings, {**relay_files, render.REROUTE_MAP: "/@/ qa@example.com\n"}, render.SHAPED_PATHS),
        "sasl_passwd in direct mode": lambda: allowlist.check_files(
            staging, {**files, render.SASL_PASSWD: "[x]:587 u:p\n"}, render.SHAPED_PATHS),
        "shipped staging files": lambda: allowlist.check_files(staging, files, render.SHAPED_PATHS),
        "tls policy without the setting": lambda: allowlist.check_files(
            staging, {**files, render.TLS_POLICY_MAP: "partner.example encrypt\n"}, render.SHAPED_PATHS),
        "tls policy missing": lambda: allowlist.check_files(tls_settings, files, render.SHAPED_PATHS),
        "tls policy table dropped": lambda: allowlist.check_files(
            tls_settings, {path: text for path, text in tls_files.items() if path != render.TLS_POLICY_MAP},
            render.SHAPED_PATHS),
        "tls policy files as rendered": lambda: allowlist.check_files(tls_settings, tls_files, render.SHAPED_PATHS),
        "tls policy other level": lambda: allowlist.check_tls_policy(tls_settings, "partner.example may\n"),
        "tls policy extra line": lambda: allowlist.check_tls_policy(
            tls_settings, "partner.example encrypt\nevil.example may\n"),
        "tls policy option": lambda: allowlist.check_tls_policy(
            tls_settings, "partner.example encrypt protocols=!TLSv1.2\n"),
        "tls policy as rendered": lambda: allowlist.check_tls_policy(tls_settings, "# note\npartner.example encrypt\n"),
        "tls policy two spaces": lambda: allowlist.check_tls_policy(tls_settings, "partner.example  encrypt\n"),
    }
    out: dict[str, Any] = {}
    for label, run in cases.items():
        try:
            out[label] = {"accepted": run()}
        except allowlist.RenderRefused as error:
            out[label] = {"refused": str(error)}
    return out


def settings_problems(values: dict[str, Any]) -> dict[str, str]:
    try:
        parse_settings(values, {"sshPrivateKey"})
    except ConfigError as error:
        return {key: message for key, message in error.problems if "(got " not in message}
    return {}


def term_message(term: str) -> str:
    try:
        return "accepted: " + spf.check_term(term)
    except ValueError as error:
        return str(error)


def test_every_message_of_a_refused_value_is_the_reviewed_one() -> None:
    got: dict[str, dict[str, Any]] = {
        "stacks": {label: settings_problems(values) for label, values in STACKS.items()},
        "spfExtra terms": {term: term_message(term) for term in SPF_TERMS},
        "allowlist": allowlist_results(),
        "relayPassword": {repr(p): grammar.sasl_password_problem(p) for p in PASSWORDS},
    }
    if os.environ.get("UPDATE_GOLDEN"):
        MESSAGES.write_text(json.dumps(got, indent=1, ensure_ascii=False, sort_keys=True) + "\n")
    want = json.loads(MESSAGES.read_text())
    for part in got:
        assert set(got[part]) == set(want[part]), f"{part}: cases added or removed: regenerate the reviewed file"
        changed = {k: (want[part][k], got[part][k]) for k in got[part] if got[part][k] != want[part][k]}
        assert not changed, json.dumps(changed, indent=1, ensure_ascii=False)


def test_every_refused_stack_here_is_refused() -> None:
    assert all(settings_problems(values) or _refused_by_pydantic(values) for values in STACKS.values())
    assert settings_problems(base()) == {} and SECRETS


def _refused_by_pydantic(values: dict[str, Any]) -> bool:
    try:
        parse_settings(values, {"sshPrivateKey"})
    except ConfigError:
        return True
    return False
