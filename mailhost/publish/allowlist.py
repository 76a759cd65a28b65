"""Defence behind the grammars: the rendered files must have exactly the shape the templates give them.

The grammars in config.py keep hostile values out; this module checks the result, so a
value that slipped through (or a template bug) cannot add a main.cf parameter, a second
lookup-table line or an OpenDKIM option.  It runs on every render, with placeholders,
before any resource exists; apply.sh repeats the main.cf check with real `postconf -n`
and probes the tables with `postmap -q` on the host before switching.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from mailhost.settings.config import DANE_MODES, Relay, Settings

COMMON = frozenset({
    "compatibility_level", "biff", "append_dot_mydomain", "readme_directory",
    "myhostname", "mydomain", "myorigin", "smtpd_banner",
    "inet_interfaces", "inet_protocols", "mynetworks", "mydestination", "local_transport", "alias_maps",
    "alias_database", "smtpd_relay_restrictions", "smtpd_recipient_restrictions", "smtpd_data_restrictions",
    "message_size_limit", "notify_classes",
    "mailbox_size_limit", "relayhost", "smtp_tls_security_level", "smtp_tls_CApath", "smtp_tls_loglevel",
    "smtp_tls_session_cache_database", "smtp_tls_connection_reuse", "smtp_connection_cache_destinations",
    "smtp_connection_cache_time_limit",
    "smtpd_milters", "non_smtpd_milters", "milter_default_action", "milter_protocol",
})
RELAY = frozenset({"smtp_sasl_auth_enable", "smtp_sasl_password_maps", "smtp_sasl_security_options",
                   "smtp_sasl_tls_security_options", "smtp_tls_mandatory_protocols"})
RELAY_CA = frozenset({"smtp_tls_secure_cert_match"})
RELAY_PINNED = frozenset({"smtp_tls_fingerprint_digest", "smtp_tls_fingerprint_cert_match"})
RELAY_PACED = frozenset({"smtp_destination_rate_delay", "smtp_destination_concurrency_failed_cohort_limit"})
REROUTE = frozenset({"virtual_alias_maps"})
TLS_POLICY = frozenset({"smtp_tls_policy_maps"})
DANE = frozenset({"smtp_dns_support_level"})
MAILLOG = frozenset({"maillog_file"})
OPENDKIM = frozenset({"Syslog", "SyslogSuccess", "UMask", "UserID", "Mode", "Domain", "Selector", "KeyFile",
                      "Canonicalization", "SignatureAlgorithm", "OversignHeaders", "Socket", "PidFile"})
REROUTE_PATTERN = "/@/"

_PARAMETER = re.compile(r"([a-z][A-Za-z0-9_]*) = ?([^\s].*)?")
_OPTION = re.compile(r"([A-Za-z]+) +(\S+)")


class RenderRefused(ValueError):
    """A rendered file does not have the shape its template gives it: nothing may be pushed."""


def relay_of(settings: Settings) -> Relay | None:
    return settings.delivery.relay if settings.delivery.mode == "relay" else None


def dane(settings: Settings) -> bool:
    """Direct delivery with DANE: Postfix resolves through the host's validating resolver (relay mode refuses it)."""
    return settings.delivery.mode == "direct" and settings.delivery.outbound_tls in DANE_MODES


def mta_sts(settings: Settings) -> bool:
    """Direct delivery with DANE first, then MTA-STS: two socketmaps behind delivery.tlsPolicy's table."""
    return settings.delivery.mode == "direct" and settings.delivery.outbound_tls == "dane+mta-sts"


def main_cf_parameters(settings: Settings) -> frozenset[str]:
    """The parameter names main.cf.j2 writes for these settings: the set `postconf -n` must show."""
    names = set(COMMON)
    relay = relay_of(settings)
    if relay:
        names |= RELAY | (RELAY_PINNED if relay.tls_fingerprint else RELAY_CA)
        if relay.max_per_minute is not None:
            names |= RELAY_PACED
    if settings.reroute_to:
        names |= REROUTE
    if settings.delivery.tls_policy or mta_sts(settings):
        names |= TLS_POLICY
    if dane(settings):
        names |= DANE
    if settings.maillog_file:
        names |= MAILLOG
    return frozenset(names)


def _lines(text: str) -> list[str]:
    """Meaningful lines; a continuation line (leading whitespace) would extend the line above."""
    out = []
    for line in text.split("\n"):
        if not line or line.startswith("#"):
            continue
        if line[0].isspace() or "\r" in line:
            raise RenderRefused(f"continuation or control character in line {line[:40]!r}")
        out.append(line)
    return out


def parse_main_cf(text: str) -> dict[str, str]:
    """name → value of a main.cf written one parameter per line, each name once."""
    found: dict[str, str] = {}
    for line in _lines(text):
        match = _PARAMETER.fullmatch(line)
        if not match:
            raise RenderRefused(f"main.cf line is not 'name = value': {line[:60]!r}")
        if match.group(1) in found:
            raise RenderRefused(f"main.cf sets {match.group(1)} twice")
        found[match.group(1)] = match.group(2) or ""
    return found


def check_main_cf(settings: Settings, text: str) -> None:
    names = set(parse_main_cf(text))
    wanted = main_cf_parameters(settings)
    if names != wanted:
        extra, missing = sorted(names - wanted), sorted(wanted - names)
        raise RenderRefused(f"main.cf parameters differ from the template's for this mode (extra {extra}, "
                            f"missing {missing})")


def check_opendkim_conf(text: str) -> None:
    keys = []
    for line in _lines(text):
        match = _OPTION.fullmatch(line)
        if not match:
            raise RenderRefused(f"opendkim.conf line is not 'Option value': {line[:60]!r}")
        keys.append(match.group(1))
    if sorted(keys) != sorted(OPENDKIM):
        raise RenderRefused(f"opendkim.conf options differ from the template's: {sorted(keys)}")


def check_reroute(settings: Settings, text: str) -> None:
    """One rule that rewrites every address to rerouteTo, with nothing Postfix would expand."""
    rules = _lines(text)
    target = settings.reroute_to or ""
    if len(rules) != 1 or rules[0].split() != [REROUTE_PATTERN, target] or "$" in target:
        raise RenderRefused("the reroute map must be exactly one rule '/@/ rerouteTo'")


def check_sasl_passwd(relay: Relay, text: str) -> None:
    """One entry, for the relay, with the user name from the settings (the password is not inspected)."""
    lines = _lines(text)
    key = f"[{relay.host}]:{relay.port}"
    if len(lines) != 1 or not lines[0].startswith(f"{key} {relay.username}:"):
        raise RenderRefused("sasl_passwd must hold exactly one entry, for the relay and its user")


def check_tls_policy(settings: Settings, text: str) -> None:
    """Exactly the stack's delivery.tlsPolicy, one 'domain level' line each, in its order."""
    wanted = [[domain, level] for domain, level in settings.delivery.tls_policy.items()]
    if [line.split(" ") for line in _lines(text)] != wanted:
        raise RenderRefused("the TLS policy table must hold exactly delivery.tlsPolicy, one 'domain level' line each")


def check_files(settings: Settings, files: Mapping[str, str], paths: Mapping[str, str]) -> None:
    """Check each rendered file that has a shape to check; `paths` maps role → path on the host."""
    check_main_cf(settings, files[paths["main.cf"]])
    check_opendkim_conf(files[paths["opendkim.conf"]])
    reroute = files.get(paths["reroute"])
    if (reroute is None) != (settings.reroute_to is None):
        raise RenderRefused("the reroute map must exist exactly when rerouteTo is set")
    if reroute is not None:
        check_reroute(settings, reroute)
    tls_policy = files.get(paths["tls_policy"])
    if (tls_policy is None) == bool(settings.delivery.tls_policy):
        raise RenderRefused("the TLS policy table must exist exactly when delivery.tlsPolicy lists a domain")
    if tls_policy is not None:
        check_tls_policy(settings, tls_policy)
    relay = relay_of(settings)
    sasl = files.get(paths["sasl_passwd"])
    if (sasl is None) != (relay is None):
        raise RenderRefused("sasl_passwd must exist exactly in relay mode")
    if relay is not None and sasl is not None:
        check_sasl_passwd(relay, sasl)
