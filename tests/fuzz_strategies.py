"""Hypothesis strategies for stack values: well-formed ones of every shape, and hostile variants of each.

`stacks()` starts from a valid relay+reroute staging stack or a direct production one and
replaces a few settings, each with a good value, a good value with something spliced in
($, newline, space, ;, %, quotes, non-ASCII...) or junk of another type.  `valid_stacks()`
only ever uses good values, with the awkward-but-legal ones (maximum lengths, every allowed
character) well represented, so the real-Postfix property sees accepted configs.
"""

from __future__ import annotations

import datetime as dt
import os
import string
from typing import Any

from hypothesis import strategies as st

from mailhost.settings.config import OUTBOUND_TLS, SECRET_KEYS, TLS_LEVELS, Settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBxq7Z4jFPcNFkx+1udVSIvOMuXHTPCLKklOXNlryv7"
SPLICE = ["\n", "\r\n", " ", "\t", "$", "$(id)", "${x}", "%", "!", ";", ",", "#", '"', "'", "\\", "ü", "\x00",
          "/", "..", "@", ":", "[", "]", "=", "*", "{", "}", "\x7f", "\u2028", "-", "_", ".", "+all", "/0"]
KNOWN_KEYS = {field.alias or name for name, field in Settings.model_fields.items()} | set(SECRET_KEYS) | {
    "(stack file)"}

_label_chars = string.ascii_lowercase + string.digits


@st.composite
def labels(draw: st.DrawFn, max_size: int = 63, min_size: int = 1) -> str:
    size = draw(st.integers(min_size, max_size))
    body = draw(st.text(_label_chars + "-", min_size=size, max_size=size))
    edge = draw(st.sampled_from(_label_chars))
    return (edge + body[1:-1] + edge)[:size] if size > 1 else edge


@st.composite
def fqdns(draw: st.DrawFn, max_size: int = 253) -> str:
    """A name of 2+ labels, its total length drawn up to `max_size` (253 is DNS's limit), labels up to 63."""
    # Half the names are drawn near the limit, where length checks and DNS splitting have their edges.
    total = draw(st.one_of(st.integers(3, max_size), st.integers(max(3, max_size - 8), max_size)))
    sizes: list[int] = []
    while sum(sizes) + len(sizes) < total:  # labels plus the dots between them
        sizes.append(min(draw(st.integers(1, 63)), max(total - sum(sizes) - len(sizes), 1)))
    if len(sizes) < 2:
        sizes = [max(sizes[0] - 2, 1), 1]
    parts = [draw(labels(max_size=s, min_size=s)) for s in sizes]
    if parts[-1].isdigit():
        parts[-1] = "x" + parts[-1][1:]  # a top-level label needs a letter (RFC 7208 §7.1)
    return ".".join(parts)


# delivery.tlsPolicy: recipient domains up to DNS's limits, each with a level Postfix's policy table knows.
TLS_POLICIES = st.dictionaries(fqdns(), st.sampled_from(TLS_LEVELS), max_size=4)


@st.composite
def mailboxes(draw: st.DrawFn, domain: str | None = None) -> str:
    domain = domain or draw(fqdns(max_size=200))
    room = min(64, 254 - 1 - len(domain))  # RFC 5321: local part <= 64, the whole path <= 254
    size = draw(st.integers(1, max(room, 1)))
    atoms = draw(st.lists(st.text(string.ascii_letters + string.digits + "_+=-", min_size=1, max_size=size),
                          min_size=1, max_size=3))
    local = ".".join(atoms)[:size].strip(".") or "x"
    return local + "@" + domain


def spf_terms() -> st.SearchStrategy[str]:
    return st.one_of(
        fqdns(max_size=248).map(lambda d: f"include:_spf.{d}"),  # the whole name: 253 at most
        st.tuples(st.sampled_from(["", "+", "~", "?", "-"]), st.integers(8, 32), st.integers(1, 223)).map(
            lambda t: f"{t[0]}ip4:{t[2]}.0.0.0/8" if t[1] == 8 else f"{t[0]}ip4:198.51.100.0/24"),
        st.sampled_from(["a", "mx", "~mx", "a//64", "mx/24", "ip6:2001:db8::/32", "ip6:2001:db8:5::1"]),
        fqdns().map(lambda d: f"exists:{d}"),
    )


def addresses4() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(1, 254).map(lambda i: f"198.51.100.{i}"),
                     st.integers(1, 254).map(lambda i: f"203.0.113.{i}"), st.just("8.8.4.4"))


def passwords() -> st.SearchStrategy[str]:
    printable = "".join(chr(c) for c in range(0x21, 0x7F))
    return st.text(printable + " ", min_size=1, max_size=64).filter(lambda p: p == p.strip())


DAY = st.dates(dt.date(2020, 1, 1), dt.date.today()).map(dt.date.isoformat)
ZONE_IDS = st.text(string.ascii_uppercase + string.digits, min_size=1, max_size=31).map(lambda s: "Z" + s)
SSH_USERS = st.tuples(st.sampled_from(string.ascii_lowercase + "_"),
                      st.text(string.ascii_lowercase + string.digits + "_-", max_size=31)).map("".join)
_SASL = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != ":")
SASL_USERS = st.one_of(st.text(_SASL, min_size=1, max_size=40), st.text(_SASL, min_size=230, max_size=256))
CIDRS = st.lists(st.sampled_from(["203.0.113.0/24", "198.51.100.0/28", "198.51.100.128/25", "2001:db8::/48",
                                  "2001:db8:ff::/64", "8.8.4.0/24"]), min_size=1, max_size=3, unique=True)


def addresses6() -> st.SearchStrategy[str]:
    return st.integers(1, 0xFFFF).map(lambda i: f"2001:db8:5::{i:x}")


def good_values(domain: str) -> dict[str, st.SearchStrategy[Any]]:
    """Path → strategy of well-formed values (paths as the stack file writes them), every settings key."""
    return {
        "environment": labels(),
        "zoneId": ZONE_IDS,
        "reverseZones.ipv4": ZONE_IDS,
        "reverseZones.ipv6": ZONE_IDS,
        "dkimSelector": st.one_of(labels(max_size=40), st.integers(0, 99999)),
        "dkimRetired[0].selector": labels(max_size=40),
        "dkimRetired[0].retiredOn": DAY,
        "dkimRetentionDays": st.integers(1, 90),
        "messageSizeLimit": st.integers(1_048_576, 1_073_741_824),
        "spfExtra": st.lists(spf_terms(), max_size=6),
        "spfAll": st.sampled_from(["~all", "-all"]),
        "dmarc.policy": st.sampled_from(["none", "quarantine", "reject"]),
        "dmarc.rua": mailboxes().map(lambda m: "mailto:" + m),
        "dmarc.testing": st.booleans(),
        "dmarc.pct": st.sampled_from([100, "100"]),
        "fromAddress": mailboxes(domain),
        "rerouteTo": mailboxes(),
        "rerouteOptOut": st.booleans(),
        "drainSeconds": st.integers(0, 3600),
        "pushSerial": st.integers(0, 1_000_000),
        "maillogFile": st.lists(st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=40),
                                min_size=1, max_size=4).map(lambda p: ("/var/log/" + "/".join(p))[:196] + ".log"),
        "verify.enabled": st.booleans(),
        "verify.nameserver": st.one_of(addresses4(), addresses6(), st.just("::1")),
        "verify.authoritative": st.booleans(),
        "verify.waitSeconds": st.integers(0, 3600),
        "hosts[0].name": labels(max_size=20),
        "hosts[0].previousName": labels(max_size=20),
        "hosts[0].fqdn": fqdns(),
        "hosts[0].sshUser": SSH_USERS,
        "hosts[0].sshPort": st.integers(1, 65535),
        "hosts[0].existing.ipv4": addresses4(),
        "hosts[0].existing.ipv6": addresses6(),
        "hosts[0].existing.ipv4Ptr": st.sampled_from(["zone", "external", "none"]),
        "hosts[0].existing.ipv6Ptr": st.sampled_from(["zone", "external", "none"]),
        "hosts[1].name": labels(max_size=20),
        "hosts[1].ec2.subnetId": st.text("0123456789abcdef", min_size=8, max_size=17).map(lambda s: "subnet-" + s),
        "hosts[1].ec2.sshCidrs": CIDRS,
        "hosts[1].ec2.instanceType": st.sampled_from(["t3.small", "m7g.large", "c6in.32xlarge"]),
        "hosts[1].ec2.ami": st.text("0123456789abcdef", min_size=8, max_size=17).map(lambda s: "ami-" + s),
        "hosts[1].ec2.rootVolumeGb": st.integers(8, 2048),
        "hosts[1].ec2.ipv6": st.booleans(),
        "hosts[1].ec2.sshMovedByHand": st.booleans(),
        "delivery.relay.host": fqdns(),
        "delivery.relay.port": st.integers(1, 65535),
        "delivery.relay.username": SASL_USERS,
        "delivery.relay.tlsFingerprint": st.binary(min_size=32, max_size=32).map(lambda b: b.hex(":")),
        "delivery.relay.maxPerMinute": st.integers(1, 60),
        "delivery.relay.maxPerDay": st.integers(1, 10_000_000),
        "delivery.tlsPolicy": TLS_POLICIES,
        "delivery.maxConnections": st.integers(1, 100),
        "delivery.outboundTls": st.sampled_from(OUTBOUND_TLS),
        "delivery.dnssecBogusName": fqdns(),
        "relayPassword": passwords(),
        "canary.mailboxes[0].address": mailboxes(),
        "canary.mailboxes[0].imapHost": st.one_of(fqdns(), addresses4(), addresses6()),
        "canary.mailboxes[0].imapPort": st.integers(1, 65535),
        "canary.mailboxes[0].user": st.one_of(mailboxes(), SASL_USERS),
        "canary.mailboxes[0].passwordCommand": COMMANDS,
        "canary.mailboxes[0].tokenCommand": COMMANDS,
        "canary.mailboxes[0].caFile": st.text(string.ascii_letters + string.digits + "/._-", min_size=1,
                                             max_size=200).map(lambda p: "/" + p),
        "canary.mailboxes[0].junkFolder": st.text(string.ascii_letters + string.digits + " /[]._-", min_size=1,
                                                  max_size=60).map(str.strip).filter(bool),
    }


CANARY_BOX = {"address": "canary@example.org", "imapHost": "imap.example.org", "user": "canary@example.org",
              "passwordCommand": "pass show mail/canary"}


COMMANDS = st.lists(st.text(string.ascii_letters + string.digits + "/._-=", min_size=1, max_size=30), min_size=1,
                    max_size=6).map(" ".join)


def spliced(good: st.SearchStrategy[Any]) -> st.SearchStrategy[str]:
    """A good value with something spliced in at the start, the end or the middle."""
    return st.tuples(good.map(str), st.sampled_from(SPLICE), st.sampled_from(["start", "end", "middle"])).map(
        lambda t: t[1] + t[0] if t[2] == "start" else t[0] + t[1] if t[2] == "end"
        else t[0][: len(t[0]) // 2] + t[1] + t[0][len(t[0]) // 2:])


def hostile(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly spliced good values; sometimes junk of another type."""
    junk = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30), st.lists(st.text(max_size=5)),
                     st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
    return st.one_of(spliced(good), spliced(good), junk)


def put(values: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted/indexed path ('hosts[0].existing.ipv4') in nested dicts, creating dicts on the way
    (an index one past a list's end appends)."""
    node: Any = values
    parts = path.replace("[", ".").replace("]", "").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    last = parts[-1]
    if last.isdigit() and int(last) == len(node):
        node.append(value)
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value


def starting_point(relay: bool, domain: str) -> dict[str, Any]:
    base: dict[str, Any] = {
        "domain": domain,
        "hosts": [{"name": "jira", "existing": {"ipv4": "198.51.100.20", "hostKey": HOST_KEY, "ipv4Ptr": "external"}}],
    }
    if relay:
        base.update(environment="staging", rerouteTo="qa@example.com",
                    delivery={"mode": "relay", "relay": {"host": "smtp.relay.example.net", "username": "jira"}},
                    relayPassword="pass word-1")
    else:
        base.update(environment="production")
    return base


@st.composite
def stacks(draw: st.DrawFn, hostile_share: bool = True) -> dict[str, Any]:
    relay = draw(st.booleans())
    domain = draw(fqdns(max_size=170))
    values = starting_point(relay, domain)
    with_ec2 = draw(st.booleans())
    if with_ec2:  # a second host, provisioned on EC2
        values["hosts"].append({"name": "jira2",
                                "ec2": {"subnetId": "subnet-0123abcd", "sshCidrs": ["203.0.113.0/24"]}})
    if draw(st.booleans()):  # a retired key generation
        values["dkimRetired"] = [{"selector": "jm0", "retiredOn": "2026-01-05"}]
    good = good_values(domain)
    paths = draw(st.lists(st.sampled_from(sorted(good)), min_size=1, max_size=5, unique=True))
    if any(p.startswith("canary.") for p in paths):  # one whole mailbox first, so each path replaces one key
        values["canary"] = {"mailboxes": [dict(CANARY_BOX)]}
    if "canary.mailboxes[0].tokenCommand" in paths and "canary.mailboxes[0].passwordCommand" not in paths:
        del values["canary"]["mailboxes"][0]["passwordCommand"]  # exactly one of the two
    for path in paths:
        if path.startswith("delivery.relay") and not relay:
            continue
        if path.startswith("hosts[1]") and not with_ec2:
            continue
        if path.startswith("dkimRetired") and "dkimRetired" not in values:
            continue
        if path in ("environment", "rerouteTo") and not relay:
            continue  # production mails real users: no reroute, by rule
        strategy = good[path]
        if hostile_share and draw(st.booleans()):
            strategy = hostile(strategy) if path != "relayPassword" else spliced(strategy)
        put(values, path, draw(strategy))
    return values


@st.composite
def ec2_hosts(draw: st.DrawFn, name: str) -> dict[str, Any]:
    ec2: dict[str, Any] = {
        "subnetId": "subnet-" + draw(st.text("0123456789abcdef", min_size=8, max_size=17)),
        "sshCidrs": draw(CIDRS),
    }
    if draw(st.booleans()):
        ec2["instanceType"] = draw(st.tuples(labels(max_size=16).filter(lambda s: s[0].isalpha()),
                                             st.text(string.ascii_lowercase + string.digits, min_size=1,
                                                     max_size=16)).map(".".join))
    if draw(st.booleans()):
        ec2["ami"] = "ami-" + draw(st.text("0123456789abcdef", min_size=8, max_size=17))
    if draw(st.booleans()):
        ec2["rootVolumeGb"] = draw(st.integers(8, 2048))
    if draw(st.booleans()):
        ec2["ipv6"] = draw(st.booleans())
    if draw(st.booleans()):
        ec2["sshMovedByHand"] = draw(st.booleans())
    return {"name": name, "ec2": ec2}


@st.composite
def existing_hosts(draw: st.DrawFn, name: str, relay: bool, zones: dict[str, str]) -> dict[str, Any]:
    existing: dict[str, Any] = {"ipv4": draw(addresses4()), "hostKey": HOST_KEY}
    v4_ptrs = ["external"] + (["zone"] if "ipv4" in zones else []) + (["none"] if relay else [])
    if "ipv4" not in zones or draw(st.booleans()):
        existing["ipv4Ptr"] = draw(st.sampled_from(v4_ptrs))
    if draw(st.booleans()):
        existing["ipv6"] = draw(addresses6())
        if draw(st.booleans()):
            existing["ipv6Ptr"] = draw(st.sampled_from(["external", "none"] + (["zone"] if "ipv6" in zones else [])))
    return {"name": name, "existing": existing}


@st.composite
def valid_stacks(draw: st.DrawFn) -> dict[str, Any]:
    """A stack the model must accept, every key drawn (or left to its default), lengths up to their limits:
    labels 63, the DKIM selector plus '-' plus a host name 63, names 253, mailboxes 254, SASL users 256."""
    relay = draw(st.booleans())
    selector = draw(labels(max_size=40))
    names = draw(st.lists(labels(max_size=62 - len(selector)), min_size=1, max_size=3, unique=True))
    # the DKIM record name: <selector>-<host>._domainkey.<domain>, at most 253
    domain = draw(fqdns(max_size=253 - len("._domainkey.") - 63))  # a retired generation may reach 63 too
    zones = draw(st.fixed_dictionaries({}, optional={"ipv4": ZONE_IDS, "ipv6": ZONE_IDS}))
    hosts = []
    previous: set[str] = set()
    for name in names:
        host = draw(ec2_hosts(name)) if draw(st.integers(0, 3)) == 0 else \
            draw(existing_hosts(name, relay, zones))
        if draw(st.booleans()):  # a rename: the old name, unused now, its selector within the label limit
            old = draw(labels(max_size=62 - len(selector)))
            if old not in names and old not in previous:
                host["previousName"] = old
                previous.add(old)
        if draw(st.booleans()):
            host["fqdn"] = f"{name}.mail.{domain}" if len(name) + 6 + len(domain) <= 253 else None
            host = {k: v for k, v in host.items() if v is not None}
        if draw(st.booleans()):
            host["sshUser"] = draw(SSH_USERS)
        if draw(st.booleans()):
            host["sshPort"] = draw(st.integers(1, 65535))
        hosts.append(host)
    environment = draw(st.one_of(st.just("production"), labels()))
    values: dict[str, Any] = {"domain": domain, "hosts": hosts, "environment": environment,
                              "dkimSelector": selector}
    if zones:
        values["reverseZones"] = zones
    if environment != "production":
        if draw(st.booleans()):
            values["rerouteTo"] = draw(mailboxes())
        else:
            values["rerouteOptOut"] = True
    if relay:
        relay_values: dict[str, Any] = {"host": draw(fqdns()), "username": draw(SASL_USERS)}
        if draw(st.booleans()):
            relay_values["port"] = draw(st.integers(1, 65535))
        if draw(st.booleans()):
            relay_values["tlsFingerprint"] = draw(st.binary(min_size=32, max_size=32).map(lambda b: b.hex(":")))
        if draw(st.booleans()):
            relay_values["maxPerMinute"] = draw(st.sampled_from([1, 60])) if draw(st.booleans()) else \
                draw(st.integers(1, 60))
        if draw(st.booleans()):
            relay_values["maxPerDay"] = draw(st.sampled_from([1, 10_000_000])) if draw(st.booleans()) else \
                draw(st.integers(1, 10_000_000))
        values["delivery"] = {"mode": "relay", "relay": relay_values}
        values["relayPassword"] = draw(passwords())
    retired = draw(st.lists(labels(max_size=62 - max(len(n) for n in names)).filter(lambda s: s != selector),
                            max_size=2, unique=True))
    if retired:
        values["dkimRetired"] = [{"selector": s, "retiredOn": draw(DAY)} for s in retired]
    good = good_values(domain)
    optional = ["zoneId", "dkimRetentionDays", "messageSizeLimit", "spfExtra", "spfAll", "dmarc.policy", "dmarc.rua",
                "dmarc.testing", "dmarc.pct", "fromAddress", "drainSeconds", "pushSerial", "maillogFile",
                "verify.enabled", "verify.nameserver", "verify.authoritative", "verify.waitSeconds"]
    for path in draw(st.lists(st.sampled_from(optional), unique=True)):
        put(values, path, draw(good[path]))
    if not relay and draw(st.booleans()):
        values.setdefault("delivery", {})["tlsPolicy"] = draw(TLS_POLICIES.filter(bool))
    if not relay and draw(st.booleans()):
        delivery = values.setdefault("delivery", {})
        delivery["outboundTls"] = draw(st.sampled_from(OUTBOUND_TLS))
        if delivery["outboundTls"] == "dane" and draw(st.booleans()):
            delivery["dnssecBogusName"] = draw(fqdns())
    if draw(st.booleans()):
        values.setdefault("delivery", {})["maxConnections"] = draw(st.sampled_from([1, 100])) if draw(st.booleans()) \
            else draw(st.integers(1, 100))
    if draw(st.booleans()):
        box = {key: draw(good[f"canary.mailboxes[0].{key}"]) for key in ("address", "imapHost", "user")}
        secret = draw(st.sampled_from(["passwordCommand", "tokenCommand"]))
        box[secret] = draw(good[f"canary.mailboxes[0].{secret}"])
        for key in ("imapPort", "caFile", "junkFolder"):
            if draw(st.booleans()):
                box[key] = draw(good[f"canary.mailboxes[0].{key}"])
        values["canary"] = {"mailboxes": [box]}
    return values
