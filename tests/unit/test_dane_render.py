"""delivery.outboundTls: dane, without a host: what the push carries and what status says of a held message."""

from __future__ import annotations

import re
from typing import Any

from mailhost.ops import status
from mailhost.publish import allowlist, mailstats, render
from mailhost.publish.stack import parse_settings
from tests.unit.test_config import SECRETS, base
from tests.unit.test_ops_hosts import report


def files(**delivery: Any) -> dict[str, str]:
    settings = parse_settings(base(delivery=delivery), SECRETS)
    return {f.path: f.content for f in render.render_host(settings, settings.hosts[0], render.PLACEHOLDERS)}


def env(rendered: dict[str, str]) -> dict[str, str]:
    lines = [line for line in rendered[render.SETTINGS_ENV].splitlines() if line and not line.startswith("#")]
    return {key: value.strip('"') for key, value in (line.split("=", 1) for line in lines)}


def test_apply_sh_binds_the_file_the_render_writes() -> None:
    """One path on both sides: apply.sh's PF_RESOLV is render.RESOLV_CONF (what the drop-in binds too)."""
    found = re.findall(r"^PF_RESOLV=(\S+)$", render.script("apply.sh"), re.MULTILINE)
    assert found == [render.RESOLV_CONF]
    # teardown.sh restarts Postfix on the same file while a refused teardown leaves the config live
    assert re.findall(r"mount --bind (\S+) /etc/resolv.conf", render.script("teardown.sh")) == [render.RESOLV_CONF]


def test_dane_adds_the_resolver_files_packages_and_checks_and_opportunistic_none_of_them() -> None:
    dane, plain = files(outboundTls="dane"), files(outboundTls="opportunistic")
    assert set(dane) - set(plain) == {render.RESOLV_CONF, render.POSTFIX_RESOLVER_DROPIN}
    both = files(outboundTls="dane+mta-sts")
    assert both == files(), "dane+mta-sts is direct mode's default: the same files, byte for byte"
    assert set(both) - set(dane) == {render.DANE_FIRST} and set(plain) <= set(dane)
    assert env(both)["PACKAGES"].split() == [*render.PACKAGES, "unbound", *render.MTA_STS_PACKAGES]
    assert (env(both)["MTA_STS"], env(both)["DANE_FIRST"]) == ("1", render.DANE_FIRST)
    assert "MTA_STS" not in env(dane) and "TLS_POLICY_MAPS" not in env(dane)
    dane_env, plain_env = env(dane), env(plain)
    assert (dane_env["RESOLVER"], dane_env["DNSSEC_BOGUS_NAME"]) == ("unbound", "dnssec-failed.org")
    assert "RESOLVER" not in plain_env and "DNSSEC_BOGUS_NAME" not in plain_env
    assert dane_env["PACKAGES"].split() == [*render.PACKAGES, "unbound"]
    assert plain_env["PACKAGES"].split() == list(render.PACKAGES)
    assert "smtp_dns_support_level" in dane_env["MAIN_CF_PARAMETERS"].split()
    assert "smtp_dns_support_level" not in plain_env["MAIN_CF_PARAMETERS"].split()
    assert env(files(outboundTls="dane", dnssecBogusName="Broken.Example."))["DNSSEC_BOGUS_NAME"] == "broken.example"
    main = allowlist.parse_main_cf(dane[render.MAIN_CF])
    assert (main["smtp_tls_security_level"], main["smtp_dns_support_level"]) == ("dane", "dnssec")
    assert allowlist.parse_main_cf(plain[render.MAIN_CF])["smtp_tls_security_level"] == "may"


def test_a_message_held_by_dane_is_counted_and_named_with_its_fix() -> None:
    held = {"queue_id": "A1", "queue": "deferred", "age_seconds": 4000, "domain": "example.net",
            "cause": "cert_unverified", "reason": "Server certificate not verified"}
    queue = report()["queue"] | {"deferred": 1, "tls_held": 1, "tls_held_oldest_age_seconds": 4000, "stuck": [held]}
    findings = [(f.level, f.what, f.fix) for f in status.assess(report(queue=queue)) if "certificate" in f.what]
    assert findings == [(status.WARNING, "1 message(s) wait because the receiver's certificate could not be "
                         "verified (DANE's TLSA records, or the smarthost's); the oldest for 66 min. Nothing "
                         "was sent unchecked", mailstats.cause("cert_unverified").fix)]
    assert "cert_unverified" in mailstats.TLS_HELD and "tls_required" in mailstats.TLS_HELD
