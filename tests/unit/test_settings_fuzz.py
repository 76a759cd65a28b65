"""Property: any stack either renders safely or is refused with keyed messages, never a traceback.

Runs FUZZ_EXAMPLES examples (200 in CI); `bench/fuzz_settings.sh` runs 10,000.  The real-Postfix
half of the property is tests/real/test_settings_fuzz_real.py.
"""

from __future__ import annotations

import re
from typing import Any

import dns.zone
import spf
from hypothesis import HealthCheck, given, settings

from mailhost.publish import allowlist, plan, render
from mailhost.publish.stack import parse_settings
from mailhost.settings.config import ConfigError, Settings
from tests.fuzz_strategies import EXAMPLES, KNOWN_KEYS, stacks

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
