"""Rendering a host's files from files/templates: pure, deterministic, no Pulumi.

The Pulumi component, `mailhost render` and the lab all call `render_host`, so what a
user reads is exactly what is pushed.  Secret files are marked so that nothing shows
them in a diff or an output.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import jinja2

from mailhost.publish import allowlist, danefirst, mailstats
from mailhost.publish.bundle import RenderedFile
from mailhost.publish.plan import inet_protocols
from mailhost.records import grammar
from mailhost.settings.config import Host, Settings


def files_dir(package_dir: Path | None = None) -> Path:
    """files/ beside the package in a checkout (Pulumi runs the program there); in an installed wheel
    the same directory ships as the data package `mailhost_files` (pyproject.toml package-dir)."""
    checkout = (package_dir or Path(__file__).resolve().parents[1]).parent / "files"
    if checkout.is_dir():
        return checkout
    spec = importlib.util.find_spec("mailhost_files")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the templates are missing: reinstall jira-mailhost (files/ or mailhost_files)")
    return Path(next(iter(spec.submodule_search_locations)))


TEMPLATES = files_dir() / "templates"
SCRIPTS = files_dir() / "scripts"

# A unix socket, not TCP: over 127.0.0.1 each message waited ~90 ms on the milter (delayed ACKs),
# over the socket ~4 ms (measured in the lab). Postfix joins the opendkim group to reach it.
MILTER_SOCKET = "/run/opendkim/opendkim.sock"
MAIN_CF = "/etc/postfix/main.cf"
MASTER_CF = "/etc/postfix/master.cf"
SASL_PASSWD = "/etc/postfix/sasl_passwd"
REROUTE_MAP = "/etc/postfix/jira-mailhost-reroute"
TLS_POLICY_MAP = "/etc/postfix/jira-mailhost-tls-policy"
OPENDKIM_CONF = "/etc/opendkim.conf"
DKIM_KEY_DIR = "/etc/opendkim/keys"
SETTINGS_ENV = "/var/lib/jira-mailhost/settings.env"
SHAPED_PATHS = {"main.cf": MAIN_CF, "opendkim.conf": OPENDKIM_CONF, "reroute": REROUTE_MAP, "sasl_passwd": SASL_PASSWD,
                "tls_policy": TLS_POLICY_MAP}
# Beside settings.env in the push's own directory: root-only, and removed with it by the teardown.
COLLECTOR = "/var/lib/jira-mailhost/mailstats.py"
METRICS_SERVICE = "/etc/systemd/system/jira-mailhost-metrics.service"
METRICS_TIMER = "/etc/systemd/system/jira-mailhost-metrics.timer"
# node_exporter's textfile directory as Debian's prometheus-node-exporter package sets it.
METRICS_TEXTFILE = "/var/lib/prometheus/node-exporter/jira_mailhost.prom"
METRICS_WINDOW_HOURS = 1  # the recent_* metrics count the last hour of the mail log
METRICS_EVERY_MINUTES = 5
PACKAGES = ("postfix", "opendkim", "opendkim-tools", "libsasl2-modules", "ca-certificates")
# delivery.outboundTls: dane.  The resolv.conf Postfix alone sees (apply.sh binds it over /etc/resolv.conf for
# Postfix's processes only), and the systemd drop-in that does it on systemd hosts.
RESOLVER_PACKAGES = ("unbound",)
RESOLV_CONF = "/etc/jira-mailhost/resolv.conf"
POSTFIX_RESOLVER_DROPIN = "/etc/systemd/system/postfix@-.service.d/jira-mailhost-resolver.conf"
# delivery.outboundTls: dane+mta-sts.  Postfix asks its TLS policy tables in order: delivery.tlsPolicy's table,
# our DANE-first socketmap (mailhost/publish/danefirst.py, a spawn service in master.cf, run as nobody), then
# postfix-mta-sts-resolver's daemon as Debian's package configures it (127.0.0.1:8461, zone "postfix", an
# SQLite policy cache that survives restarts, so a cached policy outlives its host being down).
MTA_STS_PACKAGES = ("postfix-mta-sts-resolver", "python3-dnspython")
DANE_FIRST = "/usr/local/lib/jira-mailhost/dane-first.py"
DANE_FIRST_PORT = 8462
DANE_FIRST_MAP = f"socketmap:inet:127.0.0.1:{DANE_FIRST_PORT}:dane"
MTA_STS_MAP = "socketmap:inet:127.0.0.1:8461:postfix"

_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    autoescape=False,  # config files, not HTML
)


@dataclass(frozen=True)
class HostSecrets:
    """Secret inputs of a host's config; only ever handled inside a Pulumi secret Output."""

    dkim_private_key_pem: str
    relay_password: str | None = None


PLACEHOLDERS = HostSecrets(dkim_private_key_pem="<secret: DKIM private key>", relay_password="<secret: relayPassword>")


def _template(name: str, **values: object) -> str:
    return _env.get_template(name).render(**values)


def dkim_key_path(settings: Settings, host: Host) -> str:
    return f"{DKIM_KEY_DIR}/{settings.selector(host)}.private"


def push_id(stack: str, host: Host) -> str:
    """Which push a host's live config came from (settings.env PUSH): a teardown run for another push,
    e.g. the old name's after a rename, finds the host taken over and leaves it alone."""
    return f"{stack}/{host.name}"


def render_host(settings: Settings, host: Host, secrets: HostSecrets, stack: str = "") -> list[RenderedFile]:
    """Every file the host gets, in MANIFEST order; secret files carry the given secrets."""
    stack = stack or settings.environment
    relay = settings.delivery.relay if settings.delivery.mode == "relay" else None
    tls_policy = settings.delivery.tls_policy
    tls_policy_map = TLS_POLICY_MAP if tls_policy else ""
    dane = allowlist.dane(settings)
    mta_sts = allowlist.mta_sts(settings)
    policy_maps = policy_map_list(settings)
    common: dict[str, str] = {"stack": stack, "domain": settings.domain, "fqdn": settings.fqdn(host)}
    files = [
        RenderedFile(
            MAIN_CF,
            _template(
                "main.cf.j2",
                **common,
                inet_protocols=inet_protocols(settings, host),
                message_size_limit=settings.message_size_limit,
                relay=relay,
                milter=f"unix:{MILTER_SOCKET}",
                reroute_to=settings.reroute_to,
                maillog_file=settings.maillog_file,
                tls_policy_map=tls_policy_map,
                policy_maps=policy_maps,
                mta_sts=mta_sts,
                dane=dane,
            ),
        ),
        RenderedFile(MASTER_CF, _template("master.cf.j2", **common,
                                          max_connections=settings.delivery.max_connections,
                                          dane_first=DANE_FIRST if mta_sts else "", dane_first_port=DANE_FIRST_PORT)),
        RenderedFile(
            OPENDKIM_CONF,
            _template(
                "opendkim.conf.j2",
                **common,
                selector=settings.selector(host),
                key_file=dkim_key_path(settings, host),
                socket=f"local:{MILTER_SOCKET}",
            ),
        ),
        RenderedFile(
            dkim_key_path(settings, host),
            secrets.dkim_private_key_pem.strip() + "\n",
            mode=0o600,
            owner="opendkim",
            group="opendkim",
            secret=True,
        ),
        RenderedFile(
            SETTINGS_ENV,
            _template(
                "settings.env.j2",
                **common,
                push=push_id(stack, host),
                production=settings.production,
                packages=PACKAGES + (RESOLVER_PACKAGES if dane else ()) + (MTA_STS_PACKAGES if mta_sts else ()),
                drain_seconds=settings.drain_seconds,
                main_cf_parameters=sorted(allowlist.main_cf_parameters(settings)),
                reroute_to=settings.reroute_to or "",
                reroute_map=REROUTE_MAP if settings.reroute_to else "",
                relay_key=f"[{relay.host}]:{relay.port}" if relay else "",
                tls_policy_map=tls_policy_map,
                tls_policy=[f"{domain}={level}" for domain, level in tls_policy.items()],
                policy_maps=policy_maps,
                dane_first=DANE_FIRST if mta_sts else "",
                dane_first_port=DANE_FIRST_PORT,
                relay_max_per_day=relay.max_per_day if relay else None,
                dnssec_bogus_name=settings.delivery.dnssec_bogus_name if dane else "",
                metrics_textfile=METRICS_TEXTFILE,
            ),
            mode=0o600,
        ),
    ]
    files += metrics_files(settings, host, common)
    if settings.reroute_to:
        files.append(RenderedFile(REROUTE_MAP, _template("reroute.j2", **common, reroute_to=settings.reroute_to)))
    if tls_policy:
        files.append(RenderedFile(TLS_POLICY_MAP, _template("tls-policy.j2", **common, policy=tls_policy)))
    if dane:
        files.append(RenderedFile(RESOLV_CONF, _template("resolv.conf.j2", **common)))
        files.append(RenderedFile(POSTFIX_RESOLVER_DROPIN,
                                  _template("postfix-resolver.conf.j2", **common, resolv_conf=RESOLV_CONF)))
    if mta_sts:
        files.append(RenderedFile(DANE_FIRST, danefirst.own_source(), mode=0o644, code=True))
    if relay:
        password = secrets.relay_password or ""
        if why := grammar.sasl_password_problem(password):
            raise ValueError(f"jira-mailhost:relayPassword: {why}; set it again with "
                             "`pulumi config set --secret relayPassword`")
        files.append(
            RenderedFile(
                SASL_PASSWD,
                f"[{relay.host}]:{relay.port} {relay.username}:{password}\n",
                mode=0o600,
                secret=True,
                postmap=True,
            )
        )
    allowlist.check_files(settings, {f.path: f.content for f in files}, SHAPED_PATHS)
    return sorted(files, key=lambda f: f.path)


def policy_map_list(settings: Settings) -> list[str]:
    """smtp_tls_policy_maps in the order Postfix asks them: the first table that knows a domain decides it."""
    maps = [f"texthash:{TLS_POLICY_MAP}"] if settings.delivery.tls_policy else []
    if allowlist.mta_sts(settings):
        maps += [DANE_FIRST_MAP, MTA_STS_MAP]
    return maps


def metrics_files(settings: Settings, host: Host, common: dict[str, str]) -> list[RenderedFile]:
    """The collector (mailhost/publish/mailstats.py itself) and, on systemd hosts, the timer that runs it."""
    values = {**common, "collector": COLLECTOR, "maillog_file": settings.maillog_file, "textfile": METRICS_TEXTFILE,
              "textfile_dir": str(PurePosixPath(METRICS_TEXTFILE).parent),
              "window_hours": METRICS_WINDOW_HOURS, "every_minutes": METRICS_EVERY_MINUTES}
    return [
        RenderedFile(COLLECTOR, mailstats.own_source(), mode=0o755, code=True),
        RenderedFile(METRICS_SERVICE, _template("metrics.service.j2", **values)),
        RenderedFile(METRICS_TIMER, _template("metrics.timer.j2", **values)),
    ]


def script(name: str) -> str:
    return (SCRIPTS / name).read_text()
