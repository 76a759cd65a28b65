"""The mail DNS of a sender domain in Route53: A/AAAA, PTR, SPF, DKIM, DMARC.

Which records exist follows from the settings alone, so `pulumi preview` lists them all;
their values come from mailhost.plan through one apply over the addresses and keys.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pulumi
import pulumi_aws as aws

from mailhost import plan
from mailhost.config import Host, PtrSource, Settings
from mailhost.expected import Expected

from .host import JiraHost


def _addresses(hosts: Mapping[str, JiraHost]) -> pulumi.Output[dict[str, plan.Addresses]]:
    names = list(hosts)
    parts = [pulumi.Output.all(hosts[n].ipv4, hosts[n].ipv6) for n in names]
    return pulumi.Output.all(*parts).apply(
        lambda pairs: {n: plan.Addresses(ipv4=p[0], ipv6=p[1]) for n, p in zip(names, pairs, strict=True)}
    )


def _name(r: plan.Record) -> str:
    return r.name


def _ttl(r: plan.Record) -> int:
    return r.ttl


def _values(r: plan.Record) -> list[str]:
    return r.route53_records


def _host_records(settings: Settings, host: Host) -> Callable[[list[Any]], dict[str, plan.Record]]:
    def records(values: list[Any]) -> dict[str, plan.Record]:
        addresses, keys = values
        return {r.key: r for r in plan.host_records(settings, host, addresses[host.name], keys[host.name])}

    return records


def _pick(key: str) -> Callable[[dict[str, plan.Record]], plan.Record]:
    return lambda records: records[key]


class MailDns(pulumi.ComponentResource):
    """All records of the stack; `expected` is what `mailhost verify` should then find.

    Pushes depend on their host's records (`by_host`) and the domain's: a new PTR, AAAA or
    DKIM key is published before Postfix uses it, and one that goes away is deleted only
    after the push that stopped using it (Pulumi deletes removed resources last).
    """

    records: dict[str, aws.route53.Record]
    by_host: dict[str, list[pulumi.Resource]]
    domain_records: list[pulumi.Resource]
    expected: pulumi.Output[Expected]

    def __init__(self, settings: Settings, zone_ids: Mapping[plan.Zone, pulumi.Input[str]],
                 hosts: Mapping[str, JiraHost], dkim_p: Mapping[str, pulumi.Output[str]],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("jira-mailhost:index:MailDns", settings.domain, None, opts)
        kept = pulumi.ResourceOptions(parent=self, protect=settings.production)
        rotated = pulumi.ResourceOptions(parent=self)  # DKIM keys are replaced on selector change
        addresses = _addresses(hosts)
        keys = pulumi.Output.all(**dkim_p)
        self.records = {}
        self.by_host = {host.name: [] for host in settings.hosts}

        def record(r: pulumi.Output[plan.Record], key: str, zone: plan.Zone, rtype: str,
                   opts: pulumi.ResourceOptions) -> aws.route53.Record:
            resource = aws.route53.Record(
                key,
                zone_id=zone_ids[zone],
                name=r.apply(_name),
                type=rtype,
                ttl=r.apply(_ttl),
                records=r.apply(_values),
                allow_overwrite=False,  # never silently take over a record someone else made
                opts=opts,
            )
            self.records[key] = resource
            return resource

        for host in settings.hosts:
            host_plan = pulumi.Output.all(addresses, keys).apply(_host_records(settings, host))
            for key, zone, rtype in plan.record_keys(settings, host):
                is_dkim = key.endswith("-dkim")
                made = record(host_plan.apply(_pick(key)), key, zone, rtype, rotated if is_dkim else kept)
                self.by_host[host.name].append(made)
            if settings.ptr_source(host, 4) is PtrSource.EIP:
                jira = hosts[host.name]
                assert jira.allocation_id is not None
                # AWS only sets reverse DNS for a name that already resolves to the EIP: A record first.
                ptr = aws.ec2.EipDomainName(
                    f"{host.name}-ptr4",
                    allocation_id=jira.allocation_id,
                    domain_name=settings.fqdn(host),
                    opts=pulumi.ResourceOptions(parent=self, protect=settings.production,
                                                depends_on=[self.records[f"{host.name}-a"]]),
                )
                self.records[f"{host.name}-ptr4"] = ptr  # type: ignore[assignment]
                self.by_host[host.name].append(ptr)

        spf = addresses.apply(lambda a: plan.spf_record(settings, a))
        self.domain_records = [
            record(spf, "spf", "forward", "TXT", kept),
            record(pulumi.Output.from_input(plan.dmarc_record(settings)), "dmarc", "forward", "TXT", kept),
        ]
        self.expected = pulumi.Output.all(addresses, keys).apply(lambda v: plan.expected(settings, v[0], v[1]))
        self.spf_value = spf.apply(lambda r: r.value)
        self.register_outputs({"spf": self.spf_value})
