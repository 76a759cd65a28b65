"""One DKIM key per host and selector; the private half only ever exists as a Pulumi secret."""

from __future__ import annotations

import pulumi
import pulumi_tls as tls

from mailhost.records import dkim
from mailhost.settings.config import Host, Settings

from . import renamed


class DkimKey(pulumi.ComponentResource):
    """One key generation of one host: a new dkimSelector makes a new key (a new resource name), and a
    retired generation keeps its key (same name) while its record stays published."""

    private_key_pem: pulumi.Output[str]
    public_p: pulumi.Output[str]

    def __init__(self, settings: Settings, host: Host, generation: str,
                 opts: pulumi.ResourceOptions | None = None):
        selector = settings.selector(host, generation)
        super().__init__("jira-mailhost:index:DkimKey", f"{host.name}-{selector}", None,
                         renamed(host, lambda h: f"{h.name}-{settings.selector(h, generation)}", opts))
        key = tls.PrivateKey(f"{host.name}-dkim-{selector}", algorithm="RSA", rsa_bits=2048,
                             opts=renamed(host, lambda h: f"{h.name}-dkim-{settings.selector(h, generation)}",
                                          pulumi.ResourceOptions(parent=self)))
        self.private_key_pem = pulumi.Output.secret(key.private_key_pem)
        # The public half is not secret: it is published in DNS.
        self.public_p = pulumi.Output.unsecret(key.public_key_pem.apply(dkim.public_key_b64))
        self.register_outputs({"selector": selector, "publicKey": self.public_p})
