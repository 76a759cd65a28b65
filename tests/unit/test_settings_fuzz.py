"""Property: any stack either renders safely or is refused with keyed messages, never a traceback.

Runs FUZZ_EXAMPLES examples (200 in CI); `bench/fuzz_nightly.sh` runs more, with new examples.  The real-Postfix
half of the property is tests/real/test_settings_fuzz_real.py.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import dns.zone
import spf
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel

from mailhost.publish import allowlist, plan, render
from mailhost.publish.stack import parse_settings
from mailhost.settings.config import ConfigError, Settings
from tests.fuzz_strategies import EXAMPLES, KNOWN_KEYS, good_values, stacks, valid_stacks

SSH = frozenset({"sshPrivateKey"})
_FIRST = re.compile(r"[^.\[]+")


def check_accepted(settings: Settings, password: str | None) -> None:
    """What an accepted stack must give: shaped files, one-line tables, parseable DNS and SPF."""
    for host in settings.hosts:
        files = render.render_host(settings, host, render.HostSecrets("KEY", password))
        by_path = {f.path: f.content for f in files}
        allowlist.check_files(settings, by_path, render.SHAPED_PATHS)
        for f in files:
            assert "\r" not in f.content and all(line == line.rstrip() or line.startswith("#")
                                                 for line in f.content.splitlines() if f.path != render.SASL_PASSWD)
    addresses = plan.placeholder_addresses(settings)
    zone_text = plan.zone_text(settings, addresses, {h.name: "A" * 392 for h in settings.hosts})
    zone = dns.zone.from_text("$ORIGIN .\n@ 300 IN SOA ns. h. 1 1 1 1 1\n@ 300 IN NS ns.\n" + zone_text,
                              check_origin=False, relativize=False)
    assert zone.get_rdataset(settings.domain + ".", "TXT") is not None
    record = plan.spf_record(settings, addresses).value
    query = spf.query("198.51.100.1", settings.sender, settings.domain)
    for term in record.split()[1:]:
        query.validate_mechanism(term)  # raises spf.PermError on anything pyspf would not parse


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks())
def test_any_stack_renders_safely_or_is_refused_by_key(values: dict[str, Any]) -> None:
    password = values.get("relayPassword")
    try:
        parsed = parse_settings(values, SSH)
    except ConfigError as error:
        assert error.problems, "a refusal lists its problems"
        for key, message in error.problems:
            first = _FIRST.match(key)
            assert first and first.group(0) in KNOWN_KEYS, key
            assert message.strip(), key
        return
    check_accepted(parsed, password if isinstance(password, str) else None)


def model_paths(model: Any, prefix: str = "") -> list[str]:
    """Every leaf key of the settings model as the stack file writes it ('hosts[].existing.ipv4')."""
    paths = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        inner = [a for a in typing.get_args(field.annotation) or (field.annotation,) if isinstance(a, type)]
        listed = [a for arg in typing.get_args(field.annotation) for a in typing.get_args(arg)]
        nested = [a for a in (*inner, *listed) if isinstance(a, type) and issubclass(a, BaseModel)]
        if typing.get_origin(field.annotation) is list and nested:
            paths += model_paths(nested[0], key + "[].")
        elif nested:
            paths += model_paths(nested[0], key + ".")
        else:
            paths.append(key)
    return paths


def test_the_valid_stacks_reach_every_key_and_the_limits() -> None:
    """The generator the real-Postfix property uses is only as good as what it draws: every settings key,
    several hosts, EC2 and adopted ones, retired DKIM generations, and names at their limits."""
    seen: dict[str, Any] = {"keys": set(), "label": 0, "selector": 0, "name": 0, "sasl": 0, "hosts": 0, "ec2": 0,
                            "retired": 0}

    def walk(value: Any, path: str) -> None:
        seen["keys"].add(path)  # a mapping is a key too (delivery.tlsPolicy: its keys are domains)
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{path}.{key}" if path else key)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            for inner in value:
                walk(inner, path + "[]")
        else:
            seen["keys"].add(path)

    @settings(max_examples=600, deadline=None, suppress_health_check=list(HealthCheck))
    @given(valid_stacks())
    def draw(values: dict[str, Any]) -> None:
        parsed = parse_settings(values, SSH)
        walk(values, "")
        names = [parsed.domain, *(parsed.fqdn(h) for h in parsed.hosts)]
        if parsed.delivery.relay:
            names.append(parsed.delivery.relay.host)
            seen["sasl"] = max(seen["sasl"], len(parsed.delivery.relay.username))
        seen["name"] = max(seen["name"], *map(len, names))
        seen["label"] = max(seen["label"], *(len(label) for n in names for label in n.split(".")))
        seen["selector"] = max(seen["selector"], *(len(parsed.selector(h)) for h in parsed.hosts))
        seen["hosts"] = max(seen["hosts"], len(parsed.hosts))
        seen["ec2"] += any(h.ec2 for h in parsed.hosts) and any(h.existing for h in parsed.hosts)
        seen["retired"] += bool(parsed.dkim_retired)

    draw()
    drawn = seen.pop("keys")
    every = set(model_paths(Settings)) - {"secretsSet"} | {"relayPassword"}
    assert every <= drawn, f"never drawn: {sorted(every - drawn)}"
    assert seen["label"] == 63 and seen["selector"] == 63 and seen["name"] >= 250 and seen["sasl"] >= 230, seen
    assert seen["hosts"] == 3 and seen["ec2"] > 0 and seen["retired"] > 0, seen


def test_the_hostile_stacks_can_reach_every_key() -> None:
    """Each key of the model is a path the hostile generator replaces (hosts by their first adopted host and
    a second EC2 host)."""
    paths = {re.sub(r"\[\d\]", "[]", path) for path in good_values("example.com")}
    fixed = {"secretsSet", "delivery.mode", "domain", "hosts[].existing.hostKey"}  # chosen by the starting point
    assert set(model_paths(Settings)) - fixed <= paths
