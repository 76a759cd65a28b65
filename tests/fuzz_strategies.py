"""Hypothesis strategies for stack values: well-formed ones of every shape, and hostile variants of each.

`stacks()` starts from a valid relay+reroute staging stack or a direct production one and
replaces a few settings, each with a good value, a good value with something spliced in
($, newline, space, ;, %, quotes, non-ASCII...) or junk of another type.  `valid_stacks()`
only ever uses good values, with the awkward-but-legal ones (maximum lengths, every allowed
character) well represented, so the real-Postfix property sees accepted configs.
"""

from __future__ import annotations

import os
import string
from typing import Any

from hypothesis import strategies as st

from mailhost.settings.config import SECRET_KEYS, Settings

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "200"))
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBBxq7Z4jFPcNFkx+1udVSIvOMuXHTPCLKklOXNlryv7"
SPLICE = ["\n", "\r\n", " ", "\t", "$", "$(id)", "${x}", "%", "!", ";", ",", "#", '"', "'", "\\", "ü", "\x00",
          "/", "..", "@", ":", "[", "]", "=", "*", "{", "}", "\x7f", "\u2028", "-", "_", ".", "+all", "/0"]
KNOWN_KEYS = {field.alias or name for name, field in Settings.model_fields.items()} | set(SECRET_KEYS) | {
    "(stack file)"}

_label_chars = string.ascii_lowercase + string.digits


@st.composite
def labels(draw: st.DrawFn, max_size: int = 63) -> str:
    size = draw(st.integers(1, max_size))
    body = draw(st.text(_label_chars + "-", min_size=size, max_size=size))
    edge = draw(st.sampled_from(_label_chars))
    return (edge + body[1:-1] + edge)[:size] if size > 1 else edge


@st.composite
def fqdns(draw: st.DrawFn) -> str:
    parts = draw(st.lists(labels(max_size=20), min_size=2, max_size=4))
    if parts[-1].isdigit():
        parts[-1] += "x"  # a top-level label needs a letter (RFC 7208 §7.1)
    return ".".join(parts)


@st.composite
def mailboxes(draw: st.DrawFn, domain: str | None = None) -> str:
    atoms = draw(st.lists(st.text(string.ascii_letters + string.digits + "_+=-", min_size=1, max_size=12),
                          min_size=1, max_size=3))
    return ".".join(atoms) + "@" + (domain or draw(fqdns()))


def spf_terms() -> st.SearchStrategy[str]:
    return st.one_of(
        fqdns().map(lambda d: f"include:_spf.{d}"),
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


def good_values(domain: str) -> dict[str, st.SearchStrategy[Any]]:
    """Path → strategy of well-formed values (paths as the stack file writes them)."""
    return {
        "environment": st.sampled_from(["staging", "qa-2"]),
        "dkimSelector": st.one_of(labels(max_size=20), st.integers(0, 99999)),
        "messageSizeLimit": st.integers(1_048_576, 1_073_741_824),
        "spfExtra": st.lists(spf_terms(), max_size=6),
        "spfAll": st.sampled_from(["~all", "-all"]),
        "dmarc.policy": st.sampled_from(["none", "quarantine", "reject"]),
        "dmarc.rua": mailboxes().map(lambda m: "mailto:" + m),
        "dmarc.testing": st.booleans(),
        "fromAddress": mailboxes(domain),
        "rerouteTo": mailboxes(),
        "drainSeconds": st.integers(0, 3600),
        "maillogFile": st.lists(st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=10),
                                min_size=1, max_size=3).map(lambda p: "/var/log/" + "/".join(p) + ".log"),
        "hosts[0].name": labels(max_size=30),
        "hosts[0].fqdn": fqdns(),
        "hosts[0].sshPort": st.integers(1, 65535),
        "hosts[0].existing.ipv4": addresses4(),
        "delivery.relay.host": fqdns(),
        "delivery.relay.port": st.integers(1, 65535),
        "delivery.relay.username": st.text("".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != ":"),
                                           min_size=1, max_size=40),
        "delivery.relay.tlsFingerprint": st.binary(min_size=32, max_size=32).map(lambda b: b.hex(":")),
        "relayPassword": passwords(),
    }


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
    """Set a dotted/indexed path ('hosts[0].existing.ipv4') in nested dicts, creating dicts on the way."""
    node: Any = values
    parts = path.replace("[0]", ".0").split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
    node[parts[-1]] = value


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
    domain = draw(fqdns())
    values = starting_point(relay, domain)
    good = good_values(domain)
    paths = draw(st.lists(st.sampled_from(sorted(good)), min_size=1, max_size=5, unique=True))
    for path in paths:
        if path.startswith("delivery.relay") and not relay:
            continue
        if path in ("environment", "rerouteTo") and not relay:
            continue  # production mails real users: no reroute, by rule
        strategy = good[path]
        if hostile_share and draw(st.booleans()):
            strategy = hostile(strategy) if path != "relayPassword" else spliced(strategy)
        put(values, path, draw(strategy))
    return values


def valid_stacks() -> st.SearchStrategy[dict[str, Any]]:
    return stacks(hostile_share=False)
