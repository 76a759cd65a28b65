"""What the world should see in DNS after a deploy: the contract between plan and checks.

The Pulumi program exports it (stack output `verification`), the post-deploy step passes
it to `mailhost verify`, and an administrator can rebuild it from flags; all three meet here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExpectedHost:
    fqdn: str  # also the HELO name (Postfix myhostname) and the PTR target
    ipv4: str | None = None
    ipv6: str | None = None
    sends_ipv4: bool = True  # Postfix sends over IPv4 from this host (inet_protocols)
    sends_ipv6: bool = False
    dkim_selector: str | None = None
    dkim_public_key: str | None = None  # base64 DER SubjectPublicKeyInfo, the p= value
    helo: str | None = None  # Postfix myhostname when it differs from fqdn (rare; None: fqdn)

    @property
    def helo_name(self) -> str:
        return self.helo or self.fqdn


@dataclass(frozen=True)
class Expected:
    domain: str
    hosts: tuple[ExpectedHost, ...]
    production: bool = True
    spf_includes: tuple[str, ...] = field(default_factory=tuple)  # user mechanisms merged into SPF
    dmarc_policy: str | None = None  # p= the stack asks for (None: not checked against anything)
    dmarc_testing: bool | None = None  # t=y the stack asks for (None: not checked against anything)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def dkim_only(self) -> Expected:
        """The DKIM part alone (what the DKIM gate checks), so it changes only when a key or selector does."""
        hosts = tuple(ExpectedHost(fqdn=h.fqdn, dkim_selector=h.dkim_selector, dkim_public_key=h.dkim_public_key)
                      for h in self.hosts)
        return Expected(domain=self.domain, hosts=hosts)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Expected:
        hosts = tuple(ExpectedHost(**host) for host in data.get("hosts", ()))
        return cls(
            domain=data["domain"],
            hosts=hosts,
            production=bool(data.get("production", True)),
            spf_includes=tuple(data.get("spf_includes", ())),
            dmarc_policy=data.get("dmarc_policy"),
            dmarc_testing=data.get("dmarc_testing"),
        )

    @classmethod
    def from_json(cls, text: str) -> Expected:
        return cls.from_dict(json.loads(text))


class ExpectedError(ValueError):
    """The expected state could not be built from what the user gave (exit code 2)."""


def expected_from_outputs(outputs: dict[str, Any]) -> Expected:
    """From `pulumi stack output --json`: the `verification` output, a JSON string or an object."""
    if "verification" not in outputs:
        raise ExpectedError("the outputs have no 'verification' key; was the stack deployed with this program?")
    value = outputs["verification"]
    if value == "[secret]":
        raise ExpectedError("'verification' is shown as [secret]; run `pulumi stack output --json --show-secrets`")
    try:
        data = json.loads(value) if isinstance(value, str) else value
        return Expected.from_dict(data)
    except (ValueError, TypeError, KeyError) as error:
        raise ExpectedError(f"'verification' is not an expected-state object: {error}") from None
