"""Property with real Postfix: every accepted stack renders files Postfix reads exactly as meant.

For each generated stack the settings model accepts: `postconf -n` shows no warning and exactly
the allowlisted parameters, `postfix check` is silent, the SASL map holds one entry whose
lookup gives back user:password unchanged, and the reroute map rewrites any address to
rerouteTo.  FUZZ_EXAMPLES examples (200 in CI); bench/fuzz_nightly.sh runs more, with new examples.
"""

from __future__ import annotations

import secrets
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from mailhost.publish import allowlist, render
from mailhost.publish.stack import parse_settings
from mailhost.settings.config import ConfigError
from tests.fuzz_strategies import EXAMPLES, stacks, valid_stacks
from tests.real.postfixdir import materialise, postconf_n, postfix_check, tool

pytestmark = pytest.mark.real


def check_with_postfix(values: dict[str, Any]) -> None:
    parsed = parse_settings(values, {"sshPrivateKey"})
    password = values.get("relayPassword")
    files = render.render_host(parsed, parsed.hosts[0], render.HostSecrets("KEY", password))
    # ignore_cleanup_errors: 1 run in ~10,000 met "Directory not empty" removing the tree (a Postfix
    # tool still writing into it); what Postfix read was already checked by then.
    with tempfile.TemporaryDirectory(prefix="mailhost-fuzz-", ignore_cleanup_errors=True) as tmp:
        confdir = materialise(Path(tmp), files)
        conf = postconf_n(confdir)
        assert set(conf) == allowlist.main_cf_parameters(parsed)
        check = postfix_check(confdir)
        assert check.returncode == 0 and not check.stderr.strip(), check.stderr
        relay = allowlist.relay_of(parsed)
        if relay:
            built = tool("postmap", "-c", str(confdir), f"hash:{confdir}/sasl_passwd")
            assert built.returncode == 0 and not built.stderr, built.stderr
            key = f"[{relay.host}]:{relay.port}"
            got = tool("postmap", "-c", str(confdir), "-q", key, f"hash:{confdir}/sasl_passwd")
            assert got.stdout == f"{relay.username}:{password}\n", "the password must come back unchanged"
            entries = tool("postmap", "-c", str(confdir), "-s", f"hash:{confdir}/sasl_passwd").stdout.splitlines()
            assert [line.split()[0] for line in entries] == [key]
        if parsed.reroute_to:
            probe = f"x{secrets.token_hex(4)}.y+z@{secrets.token_hex(3)}.example"
            got = tool("postmap", "-c", str(confdir), "-q", probe, f"regexp:{confdir}/jira-mailhost-reroute")
            assert got.stdout.strip() == parsed.reroute_to and not got.stderr, got.stderr


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_stacks())
def test_every_accepted_stack_is_read_by_postfix_as_meant(values: dict[str, Any]) -> None:
    check_with_postfix(values)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stacks())
def test_hostile_stacks_that_are_accepted_are_read_by_postfix_as_meant(values: dict[str, Any]) -> None:
    try:
        parse_settings(values, {"sshPrivateKey"})
    except ConfigError:
        return  # refusals are the unit property's business
    check_with_postfix(values)
