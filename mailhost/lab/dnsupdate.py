"""Change records in the lab DNS the way Route53 changes a record set: RFC 2136 updates with knsupdate.

One call replaces (or deletes) a whole RRset atomically, like a Route53 UPSERT/DELETE.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from mailhost.lab.zones import route53_to_rdata


class DnsUpdateError(RuntimeError):
    pass


def _fqdn(name: str) -> str:
    return name.rstrip(".") + "."


def _send(server: str, port: int, zone: str, lines: Sequence[str]) -> None:
    script = [f"server {server} {port}", f"zone {_fqdn(zone)}", "origin " + _fqdn(zone), *lines, "send", "quit"]
    proc = subprocess.run(["knsupdate", "-t", "10"], input="\n".join(script) + "\n",
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0 or "error" in proc.stderr.lower():
        raise DnsUpdateError(f"knsupdate for {zone} failed: {(proc.stderr or proc.stdout).strip()}")


def upsert(server: str, zone: str, name: str, rtype: str, ttl: int, values: Sequence[str], port: int = 53) -> None:
    """Make the RRset name/type exactly `values` (Route53 form, TXT chunks joined by "")."""
    lines = [f"del {_fqdn(name)} {rtype}"]
    lines += [f"add {_fqdn(name)} {ttl} {rtype} {route53_to_rdata(rtype, v)}" for v in values]
    _send(server, port, zone, lines)


def delete(server: str, zone: str, name: str, rtype: str, port: int = 53) -> None:
    _send(server, port, zone, [f"del {_fqdn(name)} {rtype}"])


def create(server: str, zone: str, name: str, rtype: str, ttl: int, values: Sequence[str], port: int = 53) -> None:
    """Route53's CREATE (what the provider sends when allowOverwrite is false): refused when the RRset
    exists, with Route53's words; an RFC 2136 prerequisite makes the check and the add one atomic update."""
    lines = [f"prereq nxrrset {_fqdn(name)} {rtype}"]
    lines += [f"add {_fqdn(name)} {ttl} {rtype} {route53_to_rdata(rtype, v)}" for v in values]
    try:
        _send(server, port, zone, lines)
    except DnsUpdateError as error:
        if "yxrrset" not in str(error).lower():
            raise
        raise DnsUpdateError(
            f"InvalidChangeBatch: [Tried to create resource record set [name='{_fqdn(name)}', type='{rtype}'] "
            "but it already exists] (allowOverwrite is false: import the record or delete it first)") from None
