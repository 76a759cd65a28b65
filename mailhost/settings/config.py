"""Stack settings: one validated model for everything a stack file may say.

Every rule lives here, and every failure names the stack-file key and the fix, so a
bad value stops `pulumi preview` before any resource is touched.  Secrets are not
part of the model: only whether they are set (the values stay Pulumi secrets).
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mailhost.records import grammar, spf
from mailhost.settings.keys import load_private_key

PROJECT = "jira-mailhost"
SECRET_KEYS = ("sshPrivateKey", "relayPassword")

MAX_SSH_COVERAGE = {4: 2 ** (32 - 8), 6: 2 ** (128 - 8)}  # all sshCidrs together: at most a /8 per family


class ConfigError(Exception):
    """A stack-file problem: which key, what is wrong, and how to fix it."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        lines = [f"{PROJECT}:{key}: {message}" for key, message in problems]
        super().__init__("invalid stack configuration:\n  " + "\n  ".join(lines))


ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


class Model(BaseModel):
    # coerce_numbers_to_str: `dkimSelector: 2025` is a name, not a number.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, coerce_numbers_to_str=True)


class PtrSource(StrEnum):
    """Who publishes the PTR record of a sending address."""

    EIP = "eip"  # aws.ec2.EipDomainName on the Elastic IP (IPv4 of EC2 hosts)
    ZONE = "zone"  # a record in the Route53 reverse zone named in reverseZones
    EXTERNAL = "external"  # the address owner (hosting provider) publishes it; we only check it
    NONE = "none"  # nobody: Postfix must not send from this address


class Ec2Host(Model):
    subnet_id: str = Field(alias="subnetId")
    ssh_cidrs: list[str] = Field(alias="sshCidrs", min_length=1)
    instance_type: str = Field("t3.small", alias="instanceType")
    ami: str | None = None
    root_volume_gb: int = Field(20, alias="rootVolumeGb", ge=8, le=2048)
    ipv6: bool = True
    # Set for one `up` after sshUser/sshPort were changed on the host by hand (sshkeys.check_login's steps).
    ssh_moved_by_hand: bool = Field(False, alias="sshMovedByHand")

    @field_validator("subnet_id")
    @classmethod
    def _subnet(cls, value: str) -> str:
        return grammar.aws_id(value, grammar.SUBNET_ID, "a subnet id", "subnet-0123abcd")

    @field_validator("ami")
    @classmethod
    def _ami(cls, value: str | None) -> str | None:
        return None if value is None else grammar.aws_id(value, grammar.AMI_ID, "an AMI id", "ami-0123456789abcdef0")

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str) -> str:
        return grammar.aws_id(value, grammar.INSTANCE_TYPE, "an EC2 instance type", "t3.small")

    @field_validator("ssh_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        nets = [grammar.network(cidr, "the networks allowed to SSH in") for cidr in value]
        for version, limit in MAX_SSH_COVERAGE.items():
            family = [n for n in nets if n.version == version]
            covered = sum(n.num_addresses for n in ipaddress.collapse_addresses(family))  # type: ignore[type-var,misc]
            if covered > limit:
                raise ValueError(f"together these IPv{version} ranges open SSH to more than a /8; "
                                 "list only your admin networks")
        return [str(n) for n in nets]


class ExistingHost(Model):
    ipv4: str
    ipv6: str | None = None
    host_key: str = Field(alias="hostKey")
    ipv4_ptr: Literal["zone", "external", "none"] | None = Field(None, alias="ipv4Ptr")
    ipv6_ptr: Literal["zone", "external", "none"] | None = Field(None, alias="ipv6Ptr")

    @field_validator("ipv4")
    @classmethod
    def _v4(cls, value: str) -> str:
        return grammar.public_address(value, 4, "the host's public IPv4")

    @field_validator("ipv6")
    @classmethod
    def _v6(cls, value: str | None) -> str | None:
        return None if value is None else grammar.public_address(value, 6, "the host's public IPv6 or leave it out")

    @field_validator("host_key")
    @classmethod
    def _host_key(cls, value: str) -> str:
        grammar.printable(value, "hostKey")
        parts = value.split()
        if len(parts) >= 3 and not parts[0].startswith(("ssh-", "ecdsa-")):
            parts = parts[1:]  # a known_hosts line: drop the host name
        pinned = " ".join(parts[:2])
        try:
            if not grammar.HOST_KEY.fullmatch(pinned):
                raise ValueError
            serialization.load_ssh_public_key(pinned.encode())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise ValueError(
                "is not an OpenSSH public host key; pin it with the line from "
                "`ssh-keyscan -t ed25519 HOST` without the host name (e.g. 'ssh-ed25519 AAAA...')"
            ) from None
        return pinned


class Host(Model):
    name: str
    previous_name: str | None = Field(None, alias="previousName")
    fqdn: str | None = None
    ssh_user: str | None = Field(None, alias="sshUser")
    ssh_port: int = Field(22, alias="sshPort", ge=1, le=65535)
    ec2: Ec2Host | None = None
    existing: ExistingHost | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return grammar.label(value, "the host (its DNS name and resources)", "jira")

    @field_validator("previous_name")
    @classmethod
    def _previous(cls, value: str | None) -> str | None:
        return None if value is None else grammar.label(value, "the host's resources before a rename", "jira")

    def previous(self) -> Host | None:
        """The host as it was named before a rename (hosts[].previousName), to name its resources' aliases:
        the rename then moves each resource's state and updates it in place, not create anew and delete."""
        return None if self.previous_name is None else self.model_copy(update={"name": self.previous_name,
                                                                                 "previous_name": None})

    @field_validator("ssh_user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None and not grammar.SSH_USER.fullmatch(value):
            raise ValueError(f"{value!r} is not a Unix user name; give the SSH login, e.g. 'admin' or 'root'")
        return value

    @field_validator("fqdn")
    @classmethod
    def _fqdn(cls, value: str | None) -> str | None:
        return None if value is None else grammar.fqdn(value, "the host's FQDN")

    @model_validator(mode="after")
    def _one_kind(self) -> Host:
        if (self.ec2 is None) == (self.existing is None):
            raise ValueError("give exactly one of 'ec2' (provision on AWS) or 'existing' (adopt a host by address)")
        return self

    @property
    def user(self) -> str:
        """Debian's cloud images log in as 'admin'; adopted hosts default to root."""
        if self.ssh_user:
            return self.ssh_user
        return "admin" if self.ec2 else "root"


MAX_PER_DAY = 10_000_000  # recipients a day; far above any relay's cap (Microsoft 365: 10,000)


class Relay(Model):
    host: str
    port: int = Field(587, ge=1, le=65535)
    username: str = Field(max_length=256)
    tls_fingerprint: str | None = Field(None, alias="tlsFingerprint")
    max_per_minute: int | None = Field(None, alias="maxPerMinute", ge=1, le=60)
    # Recipients the relay takes in 24 h (Microsoft 365: 10,000); `status` and an alert watch the last day.
    max_per_day: int | None = Field(None, alias="maxPerDay", ge=1, le=MAX_PER_DAY)

    @property
    def rate_delay_seconds(self) -> int | None:
        """Postfix's smtp_destination_rate_delay for maxPerMinute: whole seconds between deliveries to the relay,
        rounded up so the relay's limit is never passed (45 a minute → 2 s → 30 a minute)."""
        return None if self.max_per_minute is None else -(-60 // self.max_per_minute)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return grammar.fqdn(value, "the smarthost name")

    @field_validator("username")
    @classmethod
    def _username(cls, value: str) -> str:
        return grammar.sasl_username(value)

    @field_validator("tls_fingerprint")
    @classmethod
    def _fingerprint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digits = value.replace(":", "").upper()
        paired = re.fullmatch(r"(?:[0-9A-Fa-f]{2}:){31}[0-9A-Fa-f]{2}", value)
        if not re.fullmatch(r"[0-9A-F]{64}", digits) or (":" in value and not paired):
            raise ValueError("is not a SHA-256 certificate fingerprint; take it from `openssl s_client -starttls smtp "
                             "-connect HOST:587 | openssl x509 -noout -fingerprint -sha256` (64 hex digits)")
        return ":".join(digits[i:i + 2] for i in range(0, 64, 2))


# Per-domain outbound TLS levels (delivery.tlsPolicy), as Postfix's smtp_tls_policy_maps spells them:
# 'encrypt' refuses to send without TLS (mail waits), 'may' sends with TLS when offered and checks nothing (the
# table is asked before DANE and MTA-STS: an override for a receiver whose records are broken).
TLS_LEVELS = ("encrypt", "may")
MAX_TLS_POLICY_DOMAINS = 500


# Outgoing SMTP connections at once, to all receivers together (the smtp service's process limit).  Big
# receivers refuse a sending address above a handful of concurrent connections (421 4.7.0 at the greeting);
# Postfix takes that as a failed site and defers the rest of the burst for its backoff (5 minutes or more).
# Several recipient domains often share one receiver (every Google-hosted domain, Microsoft 365's pools), so
# Postfix's per-domain limits cannot keep under such a cap; one limit over all connections can.
MAX_CONNECTIONS = 5
MAX_CONNECTIONS_LIMIT = 100  # Postfix's own default process limit


# delivery.outboundTls, direct mode.  'dane': a validating resolver (Debian's unbound, loopback only) answers
# Postfix alone, and a receiver whose DNSSEC-signed zone publishes TLSA records gets mail only over TLS with a
# certificate those records name (RFC 7672); every other receiver gets today's TLS-when-offered.  Mail waits,
# never goes weaker, when a TLSA does not match or the resolver cannot answer.  'opportunistic': TLS when
# offered, nothing checked (Postfix's 'may').  'dane+mta-sts': 'dane', and a receiver without TLSA records that
# publishes an MTA-STS policy in enforce mode (RFC 8461) gets mail only over TLS with a certificate from a trusted
# CA for an MX name its policy lists (postfix-mta-sts-resolver, Debian's); a receiver's TLSA wins over its policy.
OUTBOUND_TLS = ("opportunistic", "dane", "dane+mta-sts")
DANE_MODES = ("dane", "dane+mta-sts")


# Direct mode protects what receivers ask for without a setting.  The cost, measured in the lab: under Postfix's
# 'dane' and 'secure' levels a cached TLS connection is reused only for the recipient domain it was made for, so
# a DANE or MTA-STS receiver that serves several of your recipient domains sees one cached connection per domain
# beside delivery.maxConnections' active ones (4 domains on one DANE MX that refuses a sixth connection, RTT
# 50 ms, 60 messages: 19 connections, 9 refused, 47 delivered in 42 s, the rest after Postfix's backoff;
# opportunistic: 5, none refused, 60 in 5 s).  A per-domain concurrency limit would bound it, but halves a
# burst to one domain (400 messages: 54.8 s at 2 per domain against 23.7 s).
DIRECT_DEFAULT_OUTBOUND_TLS = "dane+mta-sts"


def default_outbound_tls(mode: str) -> str:
    """The outbound TLS mode a stack gets when it names none (relay mode verifies its smarthost anyway)."""
    return DIRECT_DEFAULT_OUTBOUND_TLS if mode == "direct" else "opportunistic"
# A name whose DNSSEC is broken on purpose (its parent's DS names no key of it): the push checks the host's
# resolver answers SERVFAIL for it, i.e. refuses what it cannot validate.  Comcast's long-standing test name.
DNSSEC_BOGUS_NAME = "dnssec-failed.org"


class Delivery(Model):
    mode: Literal["direct", "relay"] = "direct"
    relay: Relay | None = None
    max_connections: int = Field(MAX_CONNECTIONS, alias="maxConnections", ge=1, le=MAX_CONNECTIONS_LIMIT)
    tls_policy: dict[str, str] = Field(default_factory=dict, alias="tlsPolicy")
    outbound_tls: str = Field("", alias="outboundTls")  # "": not given, the mode's default (_defaults)
    dnssec_bogus_name: str = Field(DNSSEC_BOGUS_NAME, alias="dnssecBogusName")

    @field_validator("outbound_tls", mode="before")
    @classmethod
    def _outbound_tls(cls, value: Any) -> str:
        if value not in OUTBOUND_TLS:
            raise ValueError(f"{_shown(value)} is not an outbound TLS mode; use 'dane+mta-sts' (receivers that "
                             "publish TLSA records or an MTA-STS policy get mail only over TLS they vouch for), "
                             "'dane' (TLSA records only) or 'opportunistic' (TLS when offered)")
        return str(value)

    @field_validator("dnssec_bogus_name")
    @classmethod
    def _bogus_name(cls, value: str) -> str:
        return grammar.fqdn(value, "the deliberately broken DNSSEC name")

    @field_validator("tls_policy", mode="before")
    @classmethod
    def _tls_policy(cls, value: Any) -> dict[str, str]:
        """Recipient domain → level, each side by its full grammar; one line each in the policy table."""
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of recipient domain to TLS level, e.g. {partner.example: encrypt}")
        if len(value) > MAX_TLS_POLICY_DOMAINS:
            raise ValueError(f"lists {len(value)} domains; at most {MAX_TLS_POLICY_DOMAINS}")
        policy: dict[str, str] = {}
        for domain, level in value.items():
            if not isinstance(domain, str):
                raise ValueError(f"{_shown(domain)} is not a domain name; give the recipient domain, e.g. "
                                 "'partner.example'")
            name = grammar.fqdn(domain, "the recipient domain")
            if level not in TLS_LEVELS:
                raise ValueError(f"{_shown(level)} for {name} is not a TLS level; use 'encrypt' (TLS required: mail "
                                 "waits rather than go in clear) or 'may' (TLS when offered)")
            if name in policy:
                raise ValueError(f"{name} is listed twice (names are compared lowercase, without a final dot)")
            policy[name] = level
        return policy

    @model_validator(mode="after")
    def _defaults(self) -> Delivery:
        if not self.outbound_tls:
            object.__setattr__(self, "outbound_tls", default_outbound_tls(self.mode))
        return self

    @model_validator(mode="after")
    def _relay_given(self) -> Delivery:
        if self.mode == "relay" and self.relay is None:
            raise ValueError("mode 'relay' needs the smarthost: add relay: {host, port, username} and set the secret "
                             "relayPassword")
        if self.mode == "direct" and self.relay is not None:
            raise ValueError("relay settings are given but mode is 'direct'; set mode: relay or remove relay")
        if self.mode == "relay" and self.tls_policy:
            raise ValueError("tlsPolicy applies to direct delivery only: in relay mode every message goes to the "
                             "smarthost over verified TLS; remove delivery.tlsPolicy or set mode: direct")
        if self.mode == "relay" and self.outbound_tls != "opportunistic":
            raise ValueError(f"outboundTls: {self.outbound_tls} applies to direct delivery only: in relay mode every "
                             "message goes to the smarthost over verified TLS; remove delivery.outboundTls or set "
                             "mode: direct")
        if "dnssec_bogus_name" in self.model_fields_set and self.outbound_tls not in DANE_MODES:
            raise ValueError("dnssecBogusName is used only to check the resolver of outboundTls: dane or "
                             "dane+mta-sts; remove it or set delivery.outboundTls")
        return self


class Dmarc(Model):
    """The `_dmarc` record, by RFC 9989 (DMARCbis): `testing` publishes t=y; RFC 7489's pct is gone."""

    policy: Literal["none", "quarantine", "reject"] = "quarantine"
    rua: str | None = None
    testing: bool = False
    pct: None = Field(None, exclude=True)  # RFC 7489 only: 100 (its default) is accepted and dropped

    @field_validator("rua")
    @classmethod
    def _rua(cls, value: str | None) -> str | None:
        if value is None:
            return None
        return grammar.mailbox(value.removeprefix("mailto:"), "the DMARC report address (rua)")

    @field_validator("pct", mode="before")
    @classmethod
    def _pct(cls, value: Any) -> None:
        """pct: 100 meant 'the whole policy', the same as no pct, so an old stack keeps working unchanged."""
        if value is None or value in (100, "100"):
            return None
        raise ValueError(f"{_shown(value)}: RFC 9989 (DMARCbis) removed pct; remove dmarc.pct from the stack, and "
                         "for a test phase set dmarc.testing: true (publishes t=y: receivers apply the policy one "
                         "step milder)")


def _zone_id(value: str | None) -> str | None:
    return None if value is None else grammar.aws_id(value, grammar.ZONE_ID, "a Route53 hosted zone id",
                                                     "Z0123456789ABCDEFGHIJ")


class ReverseZones(Model):
    ipv4: str | None = None
    ipv6: str | None = None

    _ids = field_validator("ipv4", "ipv6")(_zone_id)


class RetiredSelector(Model):
    """A DKIM key generation no longer signing: its key and record stay published for the retention days
    from `retiredOn`, so mail signed with it (queued, or in transit) still passes DKIM."""

    selector: str
    retired_on: str = Field(alias="retiredOn")

    @field_validator("selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return grammar.label(value, "a retired DKIM key generation (the dkimSelector it replaced)", "jm1")

    @field_validator("retired_on", mode="before")
    @classmethod
    def _day(cls, value: Any) -> str:
        if isinstance(value, datetime.date) and not isinstance(value, datetime.datetime):
            value = value.isoformat()  # YAML reads an unquoted 2026-11-27 as a date
        if not isinstance(value, str) or not ISO_DAY.fullmatch(value):
            raise ValueError(f"{_shown(value)} is not a day; write the day the new selector went live, "
                             "e.g. '2026-11-27'")
        try:
            datetime.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a calendar day; e.g. '2026-11-27'") from None
        return value

    @property
    def day(self) -> datetime.date:
        return datetime.date.fromisoformat(self.retired_on)


class Verify(Model):
    enabled: bool = True
    nameserver: str | None = None
    authoritative: bool = True
    wait_seconds: int = Field(300, alias="waitSeconds", ge=0, le=3600)

    @field_validator("nameserver")
    @classmethod
    def _ns(cls, value: str | None) -> str | None:
        if value is None:
            return None
        grammar.printable(value, "verify.nameserver")
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address; give the resolver's address, e.g. '1.1.1.1'") from None


class CanaryMailbox(Model):
    """A real mailbox the canary sends to and reads back (mailhost canary); nothing is deployed for it."""

    address: str
    imap_host: str = Field(alias="imapHost")
    imap_port: int = Field(993, alias="imapPort", ge=1, le=65535)
    user: str = Field(max_length=320)
    password_command: str | None = Field(None, alias="passwordCommand", max_length=1000)
    token_command: str | None = Field(None, alias="tokenCommand", max_length=1000)
    ca_file: str | None = Field(None, alias="caFile", max_length=1000)
    junk_folder: str | None = Field(None, alias="junkFolder", max_length=200)

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        return grammar.mailbox(value, "the canary mailbox (canary.mailboxes[].address)")

    @field_validator("imap_host")
    @classmethod
    def _imap_host(cls, value: str) -> str:
        grammar.printable(value, "canary.mailboxes[].imapHost")
        try:
            return str(ipaddress.ip_address(value))
        except ValueError:
            return grammar.fqdn(value, "the IMAP server's name or IP address (canary.mailboxes[].imapHost)")

    @field_validator("user", "password_command", "token_command", "ca_file", "junk_folder")
    @classmethod
    def _plain(cls, value: str | None, info: Any) -> str | None:
        if value is not None:
            grammar.printable(value, f"canary.mailboxes[].{_ALIASES.get(info.field_name, info.field_name)}")
            if not value:
                raise ValueError("must not be empty")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> CanaryMailbox:
        if (self.password_command is None) == (self.token_command is None):
            raise ValueError(f"{self.address}: give exactly one of passwordCommand (a command printing the password "
                             "or app password) or tokenCommand (a command printing an OAuth2 access token: Microsoft "
                             "365 accepts only that)")
        return self


_ALIASES = {"password_command": "passwordCommand", "token_command": "tokenCommand", "ca_file": "caFile",
            "junk_folder": "junkFolder"}


class Canary(Model):
    mailboxes: list[CanaryMailbox] = Field(default_factory=list, max_length=20)


class Settings(Model):
    """Everything a stack says, validated; secrets appear only as 'is it set'."""

    environment: str = "staging"
    domain: str
    zone_id: str | None = Field(None, alias="zoneId")
    reverse_zones: ReverseZones = Field(default_factory=ReverseZones, alias="reverseZones")
    hosts: list[Host] = Field(min_length=1)
    delivery: Delivery = Field(default_factory=Delivery)
    dkim_selector: str = Field("jm1", alias="dkimSelector")
    dkim_retired: list[RetiredSelector] = Field(default_factory=list, alias="dkimRetired")
    dkim_retention_days: int = Field(7, alias="dkimRetentionDays", ge=1, le=90)
    message_size_limit: int = Field(26_214_400, alias="messageSizeLimit", ge=1_048_576, le=1_073_741_824)
    spf_extra: list[str] = Field(default_factory=list, alias="spfExtra")
    spf_all: Literal["~all", "-all"] = Field("~all", alias="spfAll")
    dmarc: Dmarc = Field(default_factory=Dmarc)
    from_address: str | None = Field(None, alias="fromAddress")
    reroute_to: str | None = Field(None, alias="rerouteTo")
    reroute_opt_out: bool = Field(False, alias="rerouteOptOut")
    drain_seconds: int = Field(120, alias="drainSeconds", ge=0, le=3600)
    # Bumped by hand to push every file again (an update in place), e.g. to undo a hand edit on the host.
    push_serial: int = Field(0, alias="pushSerial", ge=0, le=1_000_000)
    maillog_file: str | None = Field(None, alias="maillogFile")
    verify: Verify = Field(default_factory=Verify)
    canary: Canary = Field(default_factory=Canary)
    secrets_set: frozenset[str] = Field(default_factory=frozenset, alias="secretsSet")

    _zone = field_validator("zone_id")(_zone_id)

    @field_validator("environment")
    @classmethod
    def _env(cls, value: str) -> str:
        return grammar.label(value, "the stack's environment", "staging")

    @field_validator("domain")
    @classmethod
    def _domain(cls, value: str) -> str:
        return grammar.fqdn(value, "the sender domain")

    @field_validator("dkim_selector")
    @classmethod
    def _selector(cls, value: str) -> str:
        return grammar.label(value, "the DKIM key generation; change it to rotate the keys", "jm1")

    @field_validator("spf_extra")
    @classmethod
    def _spf_extra(cls, value: list[str]) -> list[str]:
        terms = [spf.check_term(term) for term in value]
        lookups = [t for t in terms if spf.costs_lookup(t)]
        if len(lookups) > spf.MAX_LOOKUPS:
            raise ValueError(f"these terms cost {len(lookups)} DNS lookups before any include is followed; receivers "
                             f"allow {spf.MAX_LOOKUPS}: replace includes by the ip4:/ip6: ranges they stand for")
        return terms

    @field_validator("from_address")
    @classmethod
    def _from(cls, value: str | None) -> str | None:
        return None if value is None else grammar.mailbox(value, "the sender address (fromAddress)")

    @field_validator("reroute_to")
    @classmethod
    def _reroute(cls, value: str | None) -> str | None:
        return None if value is None else grammar.mailbox(value, "the staging reroute address (rerouteTo)")

    @field_validator("maillog_file")
    @classmethod
    def _maillog(cls, value: str | None) -> str | None:
        return None if value is None else grammar.log_file(value)

    @model_validator(mode="after")
    def _cross_checks(self) -> Settings:
        problems: list[tuple[str, str]] = []
        names = [host.name for host in self.hosts]
        for index, name in enumerate(names):
            if names.index(name) != index:
                problems.append((f"hosts[{index}].name", f"'{name}' is used twice; give each host its own name"))
        for index, host in enumerate(self.hosts):
            if host.previous_name is None:
                continue
            if host.previous_name == host.name:
                problems.append((f"hosts[{index}].previousName", "is the host's own name; remove previousName"))
            elif host.previous_name in names:
                problems.append((f"hosts[{index}].previousName", f"'{host.previous_name}' is another host's name "
                                 "now; a renamed host cannot take over a host that is still in the stack"))
            elif [h.previous_name for h in self.hosts].count(host.previous_name) > 1:
                problems.append((f"hosts[{index}].previousName", f"'{host.previous_name}' is given twice; one host "
                                 "takes over the old one's resources"))
        fqdns = [self.fqdn(host) for host in self.hosts]
        for index, fqdn in enumerate(fqdns):
            if fqdns.index(fqdn) != index:
                problems.append((f"hosts[{index}].fqdn", f"'{fqdn}' is used twice; each host needs its own name"))
        if self.production and self.reroute_to:
            problems.append(("rerouteTo", "production must mail real users; remove rerouteTo from this stack"))
        if not self.production and not self.reroute_to and not self.reroute_opt_out:
            problems.append((
                "rerouteTo",
                f"stack environment '{self.environment}' is not production, so all its mail is rerouted to one "
                "address: set rerouteTo: qa@example.com, or rerouteOptOut: true to mail real users from it",
            ))
        if self.from_address and not self.from_address.lower().endswith("@" + self.domain):
            problems.append((
                "fromAddress",
                f"must be an address in {self.domain}: OpenDKIM signs only that domain and DMARC needs the "
                f"From domain aligned; use e.g. jira@{self.domain}",
            ))
        if "sshPrivateKey" not in self.secrets_set:
            problems.append((
                "sshPrivateKey",
                "is not set; run `pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519`",
            ))
        if self.delivery.mode == "relay" and "relayPassword" not in self.secrets_set:
            problems.append((
                "relayPassword",
                "relay mode needs the SASL password; run `pulumi config set --secret relayPassword`",
            ))
        for index, host in enumerate(self.hosts):
            problems.extend(self._ptr_problems(index, host))
        problems.extend(self._retired_problems())
        if problems:
            raise _Problems(problems)
        return self

    def _retired_problems(self) -> list[tuple[str, str]]:
        problems = []
        seen: set[str] = set()
        tomorrow = datetime.datetime.now(datetime.UTC).date() + datetime.timedelta(days=1)
        for index, retired in enumerate(self.dkim_retired):
            key = f"dkimRetired[{index}]"
            if retired.selector == self.dkim_selector:
                problems.append((f"{key}.selector", f"'{retired.selector}' is the dkimSelector that signs now; list "
                                 "only the generations it replaced"))
            if retired.selector in seen:
                problems.append((f"{key}.selector", f"'{retired.selector}' is listed twice"))
            seen.add(retired.selector)
            if retired.day > tomorrow:
                problems.append((f"{key}.retiredOn", f"{retired.retired_on} is in the future; give the day the new "
                                 "dkimSelector went live (today when you rotate)"))
        return problems

    def _ptr_problems(self, index: int, host: Host) -> list[tuple[str, str]]:
        key = f"hosts[{index}].existing"
        problems = []
        if host.existing:
            if host.existing.ipv4_ptr == "zone" and not self.reverse_zones.ipv4:
                problems.append((f"{key}.ipv4Ptr", "is 'zone' but reverseZones.ipv4 is not set; give the zone id"))
            if host.existing.ipv6_ptr == "zone" and not self.reverse_zones.ipv6:
                problems.append((f"{key}.ipv6Ptr", "is 'zone' but reverseZones.ipv6 is not set; give the zone id"))
            if host.existing.ipv6_ptr and not host.existing.ipv6:
                problems.append((f"{key}.ipv6Ptr", "is set but the host has no ipv6; add existing.ipv6 or remove it"))
        if self.delivery.mode == "direct" and self.ptr_source(host, 4) is PtrSource.NONE:
            problems.append((
                f"{key}.ipv4Ptr",
                f"direct delivery from {self.fqdn(host)} needs a PTR for its IPv4: set reverseZones.ipv4 to the "
                "Route53 reverse zone, or ipv4Ptr: external once your provider publishes "
                f"PTR → {self.fqdn(host)}, or use delivery.mode: relay",
            ))
        return problems

    # Derived facts: one place each.
    @property
    def production(self) -> bool:
        return self.environment == "production"

    @property
    def rerouted(self) -> bool:
        return self.reroute_to is not None

    @property
    def sender(self) -> str:
        return self.from_address or f"jira@{self.domain}"

    def fqdn(self, host: Host) -> str:
        return host.fqdn or f"{host.name}.{self.domain}"

    def selector(self, host: Host, generation: str | None = None) -> str:
        """Each host signs with its own key, so one compromised host is revoked alone."""
        return f"{generation or self.dkim_selector}-{host.name}"

    def dkim_generations(self, today: datetime.date) -> list[str]:
        """The key generations still published: retired ones inside their retention, oldest first, then
        the one that signs (last).  After the retention a retired one is left out, and so deleted."""
        window = datetime.timedelta(days=self.dkim_retention_days)
        kept = [r for r in sorted(self.dkim_retired, key=lambda r: r.day) if today < r.day + window]
        return [*(r.selector for r in kept), self.dkim_selector]

    def has_ipv6(self, host: Host) -> bool:
        return bool(host.ec2.ipv6) if host.ec2 else bool(host.existing and host.existing.ipv6)

    def ptr_source(self, host: Host, family: Literal[4, 6]) -> PtrSource:
        """Who publishes the PTR for the host's address of this family (NONE: do not send from it)."""
        if family == 6 and not self.has_ipv6(host):
            return PtrSource.NONE
        if host.ec2:
            if family == 4:
                return PtrSource.EIP
            return PtrSource.ZONE if self.reverse_zones.ipv6 else PtrSource.NONE
        assert host.existing is not None
        declared = host.existing.ipv4_ptr if family == 4 else host.existing.ipv6_ptr
        zone = self.reverse_zones.ipv4 if family == 4 else self.reverse_zones.ipv6
        if declared is None:
            return PtrSource.ZONE if zone else PtrSource.NONE
        return PtrSource(declared)

    def sends_over(self, host: Host, family: Literal[4, 6]) -> bool:
        """Postfix sends over a family only from an address with forward-confirmed PTR."""
        return self.ptr_source(host, family) is not PtrSource.NONE


class _Problems(ValueError):
    """Carries several (key, message) problems out of a pydantic validator."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems  # BaseException.__new__ keeps the arguments as .args already


_REQUIRED_FIXES = {
    "domain": "set the sender domain, e.g. `pulumi config set domain jira.example.com`",
    "hosts": "list at least one host under hosts: (see Pulumi.staging.yaml)",
    "subnetId": "give the subnet to launch in (subnet-...), one with an IPv6 CIDR if ipv6 is on",
    "sshCidrs": "list the networks allowed to SSH in, e.g. ['203.0.113.7/32']",
    "hostKey": "pin the host key: the 'ssh-ed25519 AAAA...' part of `ssh-keyscan -t ed25519 HOST`",
    "ipv4": "give the host's public IPv4",
    "name": "give the host a short name such as 'jira'",
    "username": "give the SASL user name for the relay",
    "host": "give the smarthost name, e.g. 'smtp.relay.example'",
    "selector": "name the retired key generation (the dkimSelector it replaced), e.g. 'jm1'",
    "retiredOn": "give the day the new dkimSelector went live, e.g. '2026-11-27'",
    "address": "give the canary mailbox's address, e.g. 'jira-canary@gmail.com'",
    "imapHost": "give the mailbox's IMAP server, e.g. 'imap.gmail.com' or 'outlook.office365.com'",
    "user": "give the mailbox's IMAP login (usually its address)",
}


def _key(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _shown(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...(cut)"


def _problems_from(error: ValidationError) -> list[tuple[str, str]]:
    return [problem for item in error.errors() for problem in _item_problems(item)]


def _item_problems(item: Any) -> list[tuple[str, str]]:
    """(key, message) for one pydantic error; the top-level validator's _Problems carry whole keys."""
    loc = tuple(item["loc"])
    inner = (item.get("ctx") or {}).get("error")
    if isinstance(inner, _Problems):
        return inner.problems
    key = _key(loc)
    kind = item["type"]
    if kind == "missing":  # every required field has its fix (tests/unit/test_mut_settings.py checks)
        return [(key, f"is required; {_REQUIRED_FIXES[str(loc[-1])]}")]
    if kind == "extra_forbidden":
        return [(key, "is not a known setting; check the spelling against the README's config table")]
    if kind == "value_error":
        return [(key, str(inner))]  # pydantic keeps the validator's ValueError in ctx
    return [(key, f"{item['msg']} (got {_shown(item.get('input'))})")]


def secret_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Check the secret values that are at hand (never echoing them), before anything is created."""
    problems = []
    ssh_key = values.get("sshPrivateKey")
    if isinstance(ssh_key, str) and ssh_key:
        try:
            load_private_key(ssh_key)
        except ValueError as error:
            problems.append(("sshPrivateKey", f"is not a private key without passphrase ({error}); set it with "
                             "`pulumi config set --secret sshPrivateKey < ~/.ssh/id_ed25519` (no passphrase)"))
    password = values.get("relayPassword")
    if isinstance(password, str) and password and (why := grammar.sasl_password_problem(password)):
        problems.append(("relayPassword", f"{why}; set it again with `pulumi config set --secret relayPassword`"))
    return problems


def validate_settings(values: Mapping[str, Any], secrets_set: set[str] | frozenset[str] = frozenset(),
                      require_secrets: bool = True) -> Settings:
    """The model alone: every value on its own; raise ConfigError listing every problem.

    What the values add up to (rendered files, record names) is checked a stage up, by
    mailhost.publish.stack.parse_settings, which every caller uses.
    `require_secrets=False` is for reading a stack without its secrets (`mailhost render`).
    """
    data = {k: v for k, v in values.items() if k not in SECRET_KEYS}
    present = set(SECRET_KEYS) if not require_secrets else {k for k in SECRET_KEYS if values.get(k) not in (None, "")}
    data["secretsSet"] = frozenset(secrets_set) | present
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_problems_from(error) + secret_problems(values)) from None
