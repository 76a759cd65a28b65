"""Stack settings used by the program tests: one per shape a user may deploy."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives import serialization

from tests.program.harness import ed_key

RELAY_PASSWORD = "s3cr3t-Relay-Pa55word-9f4e"


def pinned_host_key() -> str:
    public = ed_key("adopted-host").public_key()
    return public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def existing_relay_staging() -> dict[str, Any]:
    return {
        "environment": "staging",
        "domain": "staging.example.com",
        "zoneId": "ZFORWARD",
        "reverseZones": {"ipv4": "ZREV4", "ipv6": "ZREV6"},
        "hosts": [{
            "name": "jira",
            "existing": {"ipv4": "198.51.100.20", "ipv6": "2001:db8:5100::20", "hostKey": pinned_host_key()},
            "sshUser": "admin",
        }],
        "delivery": {"mode": "relay", "relay": {"host": "smtp.relay.example.net", "port": 587, "username": "jira"}},
        "spfExtra": ["include:_spf.relay.example.net"],
        "rerouteTo": "qa@example.com",
    }


def ec2_direct_production() -> dict[str, Any]:
    ec2 = {"subnetId": "subnet-0123456789abcdef0", "sshCidrs": ["203.0.113.0/24", "2001:db8:ad::/48"]}
    return {
        "environment": "production",
        "domain": "example.com",
        "zoneId": "ZFORWARD",
        "reverseZones": {"ipv6": "ZREV6"},
        "hosts": [{"name": "jira", "ec2": ec2}, {"name": "confluence", "ec2": {**ec2, "ipv6": False}}],
        "messageSizeLimit": 52428800,
        "dmarc": {"policy": "reject", "rua": "dmarc@example.com"},
    }
