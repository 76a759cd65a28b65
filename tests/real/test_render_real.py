"""Rendered config parsed by the real tools: postconf, postfix check, postmap, opendkim -n."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailhost.publish import render
from mailhost.publish.stack import parse_settings
from tests.real.postfixdir import materialise, postconf_n, postfix_check, tool
from tests.unit.test_config import SECRETS, base, existing

pytestmark = pytest.mark.real
RELAY = {"mode": "relay", "relay": {"host": "smtp.relay.example.net", "port": 587, "username": "jira@example.com"}}


@pytest.fixture(scope="module")
def dkim_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption()).decode()


def shapes() -> dict[str, dict[str, Any]]:
    return {
        "direct-production": base(),
        "relay-staging": base(environment="staging", rerouteTo="qa@example.com", delivery=RELAY,
                              maillogFile="/var/log/postfix.log"),
        "direct-dualstack": base(hosts=[existing(ipv6="2001:db8::5", ipv6Ptr="external")], messageSizeLimit=52428800),
    }


@pytest.mark.parametrize("shape", list(shapes()))
def test_postfix_accepts_the_rendered_config(shape: str, tmp_path: Path, dkim_pem: str) -> None:
    settings = parse_settings(shapes()[shape], SECRETS)
    files = render.render_host(settings, settings.hosts[0], render.HostSecrets(dkim_pem, "pa:ss word"))
    confdir = materialise(tmp_path, files)
    conf = postconf_n(confdir)
    assert conf["myhostname"] == "jira.example.com"
    assert conf["inet_interfaces"] == "loopback-only" and conf["mydestination"] == ""
    assert conf["smtp_tls_connection_reuse"] == "yes"
    assert conf["message_size_limit"] == str(settings.message_size_limit)
    assert conf["smtpd_milters"] == "unix:/run/opendkim/opendkim.sock" and conf["non_smtpd_milters"] == "$smtpd_milters"
    relay = settings.delivery.mode == "relay"
    # TLS in both modes (Oefenweb trap); direct mode's default checks DANE, then MTA-STS
    assert conf["smtp_tls_security_level"] == ("secure" if relay else "dane"), "TLS in both modes (Oefenweb trap)"
    if relay:  # the relay's certificate is checked against its name: no password for a man in the middle
        assert conf["smtp_tls_secure_cert_match"] == "nexthop" and conf["smtp_tls_CApath"] == "/etc/ssl/certs"
    assert conf["relayhost"] == ("[smtp.relay.example.net]:587" if relay else "")
    assert conf["inet_protocols"] == ("all" if shape == "direct-dualstack" else "ipv4")
    assert ("virtual_alias_maps" in conf) == settings.rerouted
    services = tool("postconf", "-c", str(confdir), "-M")
    assert services.returncode == 0 and "warning" not in services.stderr, services.stderr
    entries = {tuple(line.split()[:2]) for line in services.stdout.splitlines()}
    assert ("tlsproxy", "unix") in entries and ("smtp", "inet") in entries and ("postlog", "unix-dgram") in entries
    check = postfix_check(confdir)
    assert check.returncode == 0 and "warning" not in check.stderr, check.stderr


def test_dane_asks_postfix_for_validated_dns_and_binds_its_resolver_in_a_unit_systemd_accepts(
        tmp_path: Path, dkim_pem: str) -> None:
    """outboundTls: dane: postconf reads the DANE level with DNSSEC lookups, postfix check is silent, and the
    drop-in that gives Postfix alone the loopback resolver parses for systemd over Debian's postfix@.service."""
    settings = parse_settings(base(delivery={"outboundTls": "dane"}), SECRETS)
    files = render.render_host(settings, settings.hosts[0], render.HostSecrets(dkim_pem, "pw"))
    confdir = materialise(tmp_path, files)
    conf = postconf_n(confdir)
    assert (conf["smtp_tls_security_level"], conf["smtp_dns_support_level"]) == ("dane", "dnssec")
    check = postfix_check(confdir)
    assert check.returncode == 0 and "warning" not in check.stderr, check.stderr
    by_path = {f.path: f.content for f in files}
    resolv = [line for line in by_path[render.RESOLV_CONF].splitlines() if line and not line.startswith("#")]
    assert resolv == ["nameserver 127.0.0.1", "options trust-ad"]
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd (setup.sh does)"
    base_unit = Path("/lib/systemd/system/postfix@.service")
    assert base_unit.exists(), "Debian's postfix package ships postfix@.service"
    units = tmp_path / "units"
    (units / "postfix@-.service.d").mkdir(parents=True)
    shutil.copy(base_unit, units / "postfix@.service")
    dropin = units / "postfix@-.service.d" / Path(render.POSTFIX_RESOLVER_DROPIN).name
    dropin.write_text(by_path[render.POSTFIX_RESOLVER_DROPIN])
    done = tool(analyze, "verify", "--man=no", "--recursive-errors=no", str(units / "postfix@-.service"))
    problems = [line for line in (done.stdout + done.stderr).splitlines()
                if "jira-mailhost" in line or "BindReadOnlyPaths" in line or "Unknown" in line]
    assert problems == [], done.stdout + done.stderr
    binds = [line.split("=", 1)[1] for line in dropin.read_text().splitlines() if line.startswith("BindReadOnlyPaths=")]
    assert binds == [f"{render.RESOLV_CONF}:/etc/resolv.conf"], "source:destination, as systemd.exec reads it"


def test_dane_then_mta_sts_gives_postfix_the_policy_tables_in_order_and_a_spawn_service_it_accepts(
        tmp_path: Path, dkim_pem: str) -> None:
    """outboundTls: dane+mta-sts: postconf reads the three tables in order, the DANE-first service as a spawn
    service of nobody on loopback running the pushed map with Debian's python3, and postfix check is silent."""
    settings = parse_settings(base(delivery={"outboundTls": "dane+mta-sts", "tlsPolicy": {"partner.example": "may"}}),
                              SECRETS)
    files = render.render_host(settings, settings.hosts[0], render.HostSecrets(dkim_pem, "pw"))
    confdir = materialise(tmp_path, files)
    conf = postconf_n(confdir)
    first, *then = conf["smtp_tls_policy_maps"].split(", ")  # materialise moved the table into tmp_path
    assert first == f"texthash:{tmp_path}{render.TLS_POLICY_MAP}"
    assert then == ["socketmap:inet:127.0.0.1:8462:dane", "socketmap:inet:127.0.0.1:8461:postfix"]
    assert (conf["smtp_tls_security_level"], conf["smtp_dns_support_level"]) == ("dane", "dnssec")
    fields = {name: tool("postconf", "-c", str(confdir), "-Fh", f"127.0.0.1:8462/inet/{name}").stdout.strip()
              for name in ("private", "unprivileged", "chroot", "command")}
    assert fields == {"private": "n", "unprivileged": "n", "chroot": "n",
                      "command": f"spawn user=nobody argv=/usr/bin/python3 -I {render.DANE_FIRST}"}
    check = postfix_check(confdir)
    assert check.returncode == 0 and "warning" not in check.stderr, check.stderr
    program = next(f for f in files if f.path == render.DANE_FIRST)
    assert (program.mode, program.owner) == (0o644, "root"), "readable by nobody, writable by root alone"
    # Debian's python3 (the one master.cf names) runs the pushed map: it frames its answers and needs no DNS
    # for a key that is not a domain.
    done = tool("/usr/bin/python3", "-I", "-c", program.content.replace("__main__", "__never__")
                + "\nimport io,sys\nserve(io.BytesIO(b'13:dane .example,'), sys.stdout.buffer, dns_lookup)")
    assert done.returncode == 0 and done.stdout == "9:NOTFOUND ,", done.stderr


@pytest.mark.parametrize(("per_minute", "delay", "at_most"),
                         [(30, "2s", 30), (45, "2s", 30), (60, "1s", 60), (1, "60s", 1)])
def test_a_paced_relay_gets_a_rate_delay_that_never_passes_its_limit(per_minute: int, delay: str, at_most: int,
                                                                     tmp_path: Path, dkim_pem: str) -> None:
    """delivery.relay.maxPerMinute: whole seconds between deliveries, rounded up; a dead-relay verdict only
    after 10 failed connections (at concurrency 1 a single one would defer the whole queue)."""
    paced = {"mode": "relay", "relay": {"host": "smtp.relay.example.net", "port": 587, "username": "jira@example.com",
                                        "maxPerMinute": per_minute}}
    settings = parse_settings(base(environment="staging", rerouteTo="qa@example.com", delivery=paced), SECRETS)
    confdir = materialise(tmp_path, render.render_host(settings, settings.hosts[0],
                                                       render.HostSecrets(dkim_pem, "pw")))
    conf = postconf_n(confdir)
    assert conf["smtp_destination_rate_delay"] == delay and 60 // int(delay[:-1]) == at_most <= per_minute
    assert conf["smtp_destination_concurrency_failed_cohort_limit"] == "10"
    check = postfix_check(confdir)
    assert check.returncode == 0 and "warning" not in check.stderr, check.stderr
    unpaced = parse_settings(base(environment="staging", rerouteTo="qa@example.com", delivery=RELAY), SECRETS)
    plain = postconf_n(materialise(tmp_path / "plain", render.render_host(unpaced, unpaced.hosts[0],
                                                                          render.HostSecrets(dkim_pem, "pw"))))
    assert "smtp_destination_rate_delay" not in plain


@pytest.mark.parametrize(("given", "maxproc"), [(None, "5"), (1, "1"), (100, "100")])
def test_max_connections_is_the_smtp_clients_process_limit_as_postfix_reads_master_cf(
        given: int | None, maxproc: str, tmp_path: Path, dkim_pem: str) -> None:
    """delivery.maxConnections bounds the smtp service (every outgoing connection, whatever the domain), not
    the relay service or the SMTP server Jira submits to; default 5."""
    values = base() if given is None else base(delivery={"maxConnections": given})
    settings = parse_settings(values, SECRETS)
    confdir = materialise(tmp_path, render.render_host(settings, settings.hosts[0], render.HostSecrets(dkim_pem)))
    fields = tool("postconf", "-c", str(confdir), "-F", "smtp/unix/process_limit", "smtp/unix/command",
                  "relay/unix/process_limit", "smtp/inet/process_limit")
    assert fields.returncode == 0 and "warning" not in fields.stderr, fields.stderr
    assert dict(line.split(" = ", 1) for line in fields.stdout.splitlines()) == {
        "smtp/unix/process_limit": maxproc, "smtp/unix/command": "smtp", "relay/unix/process_limit": "-",
        "smtp/inet/process_limit": "-"}, fields.stdout
    check = postfix_check(confdir)
    assert check.returncode == 0 and "warning" not in check.stderr, check.stderr

def test_relay_password_map_is_built_and_looked_up_by_postmap(tmp_path: Path, dkim_pem: str) -> None:
    settings = parse_settings(shapes()["relay-staging"], SECRETS)
    files = render.render_host(settings, settings.hosts[0], render.HostSecrets(dkim_pem, "pa:ss word"))
    confdir = materialise(tmp_path, files)
    sasl = next(f for f in files if f.path == render.SASL_PASSWD)
    assert sasl.secret and sasl.mode == 0o600 and sasl.postmap
    built = tool("postmap", "-c", str(confdir), str(confdir / "sasl_passwd"))
    assert built.returncode == 0, built.stderr
    query = tool("postmap", "-c", str(confdir), "-q", "[smtp.relay.example.net]:587", f"hash:{confdir}/sasl_passwd")
    assert query.stdout.strip() == "jira@example.com:pa:ss word"
    expanded = tool("postconf", "-c", str(confdir), "-x", "smtp_sasl_password_maps").stdout.strip()
    assert expanded == f"smtp_sasl_password_maps = hash:{confdir}/sasl_passwd"


def test_reroute_map_sends_every_recipient_to_the_one_address(tmp_path: Path, dkim_pem: str) -> None:
    settings = parse_settings(shapes()["relay-staging"], SECRETS)
    confdir = materialise(tmp_path, render.render_host(settings, settings.hosts[0], render.HostSecrets(dkim_pem, "x")))
    for recipient in ("ceo@customer.example", "qa@example.com", "x+tag@sub.example.org"):
        query = tool("postmap", "-c", str(confdir), "-q", recipient, f"regexp:{confdir}/jira-mailhost-reroute")
        assert query.stdout.strip() == "qa@example.com", recipient


@pytest.fixture()
def safe_dir() -> Iterator[Path]:
    """opendkim refuses keys below a world-writable directory such as /tmp: use one under /run."""
    path = Path(tempfile.mkdtemp(prefix="jm-render-", dir="/run"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_opendkim_accepts_the_rendered_config_and_key(safe_dir: Path, dkim_pem: str) -> None:
    tmp_path = safe_dir
    settings = parse_settings(base(), SECRETS)
    files = render.render_host(settings, settings.hosts[0], render.HostSecrets(dkim_pem))
    materialise(tmp_path, files)
    conf = tmp_path / "etc/opendkim.conf"
    checked = tool("opendkim", "-n", "-x", str(conf))
    assert checked.returncode == 0, checked.stderr
    key = next(f for f in files if f.path.endswith(".private"))
    assert key.secret and key.mode == 0o600 and key.owner == "opendkim"
    broken = conf.read_text().replace("Mode                    s", "Mode                    q")
    conf.write_text(broken)
    assert tool("opendkim", "-n", "-x", str(conf)).returncode != 0, "the check must be able to fail"
