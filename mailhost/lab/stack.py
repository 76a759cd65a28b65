"""The lab stack's settings, from the lab's addresses: what `mailhost lab up` deploys, and the lab shape
of the change matrix (mailhost/lab/engine/matrix.py).  Pure data; no lab needed."""

from __future__ import annotations

from typing import Any

from mailhost.lab import zones
from mailhost.lab.lab import RELAY_USER, SMARTHOST_NAME, LabError

DEFAULT_LIMIT = 2 * 1024 * 1024  # small, so attachments near the limit stay quick
MAILLOG = "/var/log/mail.log"


def lab_stack(mode: str, ipv4: str, ipv6: str, host_key: str, user: str, port: int, nameserver: str,
              smarthost: tuple[str, str]) -> dict[str, Any]:
    """The lab stack's settings from the lab's addresses (also the lab shape of the change matrix)."""
    values: dict[str, Any] = {
        # Not production: its resources are protected (like a real production stack, `down` would refuse).
        # No reroute either, so the MX sees each recipient; tests switch to staging/production as needed.
        "environment": "lab",
        "rerouteOptOut": True,
        "domain": zones.SENDER_DOMAIN,
        "zoneId": zones.FORWARD_ID,
        "reverseZones": {"ipv4": zones.REVERSE4_ID, "ipv6": zones.REVERSE6_ID},
        "hosts": [{
            "name": "jira",
            "sshUser": user,
            "sshPort": port,
            "existing": {"ipv4": ipv4, "ipv6": ipv6, "hostKey": host_key, "ipv4Ptr": "zone", "ipv6Ptr": "zone"},
        }],
        "messageSizeLimit": DEFAULT_LIMIT,
        "dmarc": {"policy": "reject"},
        "drainSeconds": 20,
        "maillogFile": MAILLOG,  # no syslog in the namespace; `lab status` shows its tail
        "verify": {"nameserver": nameserver, "authoritative": True, "waitSeconds": 30},
    }
    if mode == "relay":
        values["delivery"] = {"mode": "relay", "relay": {"host": SMARTHOST_NAME, "port": 587,
                                                         "username": RELAY_USER}}
        values["spfExtra"] = [f"ip4:{smarthost[0]}", f"ip6:{smarthost[1]}"]
    elif mode != "direct":
        raise LabError(f"mode must be direct or relay, not {mode!r}")
    return values
