"""The lab's pure pieces: secret unwrapping, the stack it writes, TXT conversion, merges, verdict tables."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import yaml

from mailhost.lab import ops, runner, verdicts, zones
from mailhost.lab.ops import Burst, Row

SIG = runner.SECRET_SIG


def wrapped(value: object) -> dict[str, object]:
    return {SIG: "1b47061264138c4ac30d75fd1eb44270", "value": value}


def test_unwrap_removes_nested_secret_wrappers() -> None:
    inputs = {"connection": wrapped({"host": "198.51.100.10", "privateKey": wrapped("KEY")}), "stdin": wrapped("x"),
              "triggers": ["a", wrapped("b")]}
    assert runner.unwrap(inputs) == {"connection": {"host": "198.51.100.10", "privateKey": "KEY"}, "stdin": "x",
                                     "triggers": ["a", "b"]}
    again = runner.unwrap(json.loads(json.dumps(inputs)))
    assert runner.fingerprint(runner.unwrap(inputs)) == runner.fingerprint(again)


def test_stack_file_holds_no_secret_and_the_secret_file_is_private(tmp_path: Path) -> None:
    runner.write_stack(tmp_path, {"domain": "example.com", "hosts": [{"name": "jira"}], "messageSizeLimit": 2097152},
                       {"sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"})
    text = runner.stack_path(tmp_path).read_text()
    assert "abc" not in text and "PRIVATE KEY" not in text
    assert yaml.safe_load(text)["config"]["jira-mailhost:sshPrivateKey"].keys() == {"secure"}
    assert stat.S_IMODE(runner.secrets_path(tmp_path).stat().st_mode) == 0o600
    config, secret_keys = runner.read_stack(tmp_path)
    assert secret_keys == ["jira-mailhost:sshPrivateKey"]
    assert config["jira-mailhost:domain"] == "example.com"
    assert json.loads(config["jira-mailhost:hosts"]) == [{"name": "jira"}]
    assert config["jira-mailhost:sshPrivateKey"].startswith("-----BEGIN")


def test_route53_txt_chunks_become_one_record_of_several_strings() -> None:
    assert zones.route53_to_rdata("TXT", 'v=DKIM1; k=rsa; p=AAA""BBB') == '"v=DKIM1; k=rsa; p=AAA" "BBB"'
    assert zones.route53_to_rdata("TXT", "v=spf1 -all") == '"v=spf1 -all"'
    assert zones.route53_to_rdata("A", "198.51.100.10") == "198.51.100.10"


def test_lab_world_reverse_zones() -> None:
    from mailhost.lab.lab import Lab

    world = Lab(Path("/nonexistent")).world
    assert world.reverse4 == "100.51.198.in-addr.arpa"
    assert world.reverse6 == "0.0.0.0.0.0.1.5.8.b.d.0.1.0.0.2.ip6.arpa"
    assert set(world.zones()) == {"example.com", "example.net", zones.BOGUS_ZONE, world.reverse4, world.reverse6}


def test_overrides_merge_hosts_by_name() -> None:
    base = {"hosts": [{"name": "jira", "existing": {"ipv4": "198.51.100.10", "ipv6Ptr": "zone"}}], "dmarc": {"p": 1}}
    merged = ops.merge(base, {"hosts": [{"name": "jira", "existing": {"ipv6Ptr": "none"}}], "rerouteTo": "q@x.net"})
    assert merged["hosts"] == [{"name": "jira", "existing": {"ipv4": "198.51.100.10", "ipv6Ptr": "none"}}]
    assert merged["rerouteTo"] == "q@x.net" and merged["dmarc"] == {"p": 1}
    assert "dmarc" not in ops.merge(base, {"dmarc": None})


def test_org_domain_and_address_domain() -> None:
    assert verdicts.org_domain("jira.mail.example.com.") == "example.com"
    assert verdicts.domain_of("<Jira@Example.COM>") == "example.com"


def record(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {"message_id": "<1@x>", "spf": "pass", "spf_helo": "none", "dkim": "pass",
                               "dmarc": "pass", "fcrdns": "pass", "helo_matches_ptr": True, "helo": "jira.example.com",
                               "tls": True, "tls_version": "TLSv1.3", "family": 4, "ip": "198.51.100.10",
                               "rcpt_to": ["a@example.net"]}
    return {**base, **changes}


def test_assess_flags_what_is_wrong() -> None:
    burst = Burst("b", 2, [], 1.0)
    good = ops.assess({}, burst, [record(), record(message_id="<2@x>")], 0.5)
    assert all(row.ok for row in good), good
    bad = ops.assess({"rerouteTo": "qa@example.net"}, burst, [record(dkim="fail")], 0.5)
    failed = {row.check for row in bad if not row.ok}
    assert failed == {"delivered", "DKIM", "rerouting"}
    assert isinstance(bad[0], Row) and "1/2" in bad[0].result


def test_the_lab_receivers_spf_uses_resolve_so_no_warning_can_become_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    """aiosmtpd turns every warning into an error for a moment on its own thread; pyspf's own DNS hook calls
    the deprecated dns.resolver.query(), whose warning then failed a delivery with "500 Error"."""
    import types
    import warnings

    import dns.resolver
    import spf

    def deprecated(*args: object, **kwargs: object) -> None:
        raise AssertionError("pyspf went through dns.resolver.query()")

    txt = types.SimpleNamespace(strings=(b"v=spf1 ip4:198.51.100.10 -all",))
    asked: list[tuple[str, str]] = []

    def resolve(name: str, qtype: str, lifetime: float = 0) -> list[object]:
        asked.append((str(name), qtype))
        if qtype == "TXT" and str(name).rstrip(".") == "example.com":
            return [txt]
        raise dns.resolver.NoAnswer()

    monkeypatch.setattr(dns.resolver, "query", deprecated)
    monkeypatch.setattr(dns.resolver, "resolve", resolve)
    assert spf.DNSLookup is verdicts._spf_lookup
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert spf.check2(i="198.51.100.10", s="jira@example.com", h="jira.example.com")[0] == "pass"
        assert spf.check2(i="198.51.100.11", s="jira@example.com", h="jira.example.com")[0] == "fail"
    assert ("example.com", "TXT") in asked


@pytest.mark.parametrize("delivery", [{}, {"outboundTls": "dane"}, {"outboundTls": "dane+mta-sts",
                                                                   "tlsPolicy": {"partner.example": "encrypt"}},
                                      {"mode": "relay", "relay": {"host": "smtp.example.net", "port": 587,
                                                                  "username": "jira@example.com"}}])
def test_every_file_a_push_writes_lands_in_the_lab_hosts_private_roots(delivery: dict[str, object]) -> None:
    """A lab host shares the machine's /usr and /lib: a pushed file outside its overlays would be written onto
    the machine itself (and found there by the next run's push as the host's 'original')."""
    from mailhost.lab.sshhost import PRIVATE_ROOTS
    from mailhost.publish import render
    from mailhost.publish.stack import parse_settings
    from tests.unit.test_config import SECRETS, base

    settings = parse_settings(base(delivery=delivery), SECRETS)
    paths = [f.path for f in render.render_host(settings, settings.hosts[0], render.PLACEHOLDERS)]
    outside = [p for p in paths if not any(p.startswith(root + "/") for root in PRIVATE_ROOTS)]
    assert outside == []
    assert (render.DANE_FIRST in paths) == (settings.delivery.outbound_tls == "dane+mta-sts")
    assert settings.delivery.outbound_tls == ("opportunistic" if delivery.get("mode") == "relay"
                                              else delivery.get("outboundTls", "dane+mta-sts"))


@pytest.mark.parametrize(("delivery", "bogus"), [
    ({}, zones.BOGUS_ZONE),  # direct mode's default: dane+mta-sts
    ({"outboundTls": "dane"}, zones.BOGUS_ZONE),
    ({"outboundTls": "dane", "dnssecBogusName": "broken.example.org"}, "broken.example.org"),
    ({"outboundTls": "opportunistic"}, None),
    ({"mode": "relay"}, None),
])
def test_every_lab_stack_that_pushes_dane_names_the_labs_own_broken_zone(delivery: dict[str, str],
                                                                         bogus: str | None) -> None:
    values = {"domain": "example.com", "delivery": delivery}
    got = ops.with_lab_bogus_name(values)
    assert got.get("delivery", {}).get("dnssecBogusName") == bogus
    assert values == {"domain": "example.com", "delivery": delivery}, "the caller's values are left alone"
