"""The mail DNS of a sender domain in Route53: A/AAAA, PTR, SPF, DKIM, DMARC.

Which records exist, and their names, follow from the settings alone: `name` and `zoneId` force
a replace in the Route53 provider, so an unknown name at preview would plan to replace (and, in
production, refuse to touch) a protected record.  Only a PTR's name comes from its own host's
address.  Values come from mailhost.publish.plan through one apply per host over that host's own
addresses and key, so adding a host or rotating one key never touches another host's records.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import pulumi
import pulumi_aws as aws

from mailhost.publish import plan
from mailhost.records.expected import Expected
from mailhost.settings.config import Host, PtrSource, Settings

from . import renamed
from .host import JiraHost


def _host_addresses(host: JiraHost) -> pulumi.Output[plan.Addresses]:
    return pulumi.Output.all(host.ipv4, host.ipv6).apply(lambda p: plan.Addresses(ipv4=p[0], ipv6=p[1]))


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


def _host_records(settings: Settings, host: Host) -> Callable[[plan.Addresses], dict[str, plan.Record]]:
    def records(addresses: plan.Addresses) -> dict[str, plan.Record]:
        return {r.key: r for r in plan.host_records(settings, host, addresses)}

    return records


def _dkim_record(settings: Settings, host: Host, generation: str) -> Callable[[str], plan.Record]:
    return lambda p: plan.dkim_record(settings, host, generation, p)


def _pick(key: str) -> Callable[[dict[str, plan.Record]], plan.Record]:
    return lambda records: records[key]


def _record_key(settings: Settings, index: int) -> Callable[[Host], str]:
    """The resource name of a host's index-th record (the same record of the same host under another name)."""
    return lambda h: plan.record_keys(settings, h)[index][0]


def _dkim_key(generation: str) -> Callable[[Host], str]:
    return lambda h: plan.dkim_key(h, generation)


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
                 hosts: Mapping[str, JiraHost], dkim_p: Mapping[str, Mapping[str, pulumi.Output[str]]],
                 opts: pulumi.ResourceOptions | None = None):
        """dkim_p: per host, each published key generation's p= value (oldest first, the signing one last)."""
        super().__init__("jira-mailhost:index:MailDns", settings.domain, None, opts)
        kept = pulumi.ResourceOptions(parent=self, protect=settings.production)
        rotated = pulumi.ResourceOptions(parent=self)  # DKIM keys are replaced on selector change
        addresses = _addresses(hosts)
        keys = pulumi.Output.all(**{name: generations[settings.dkim_selector] for name, generations in dkim_p.items()})
        self.records = {}
        self.by_host = {host.name: [] for host in settings.hosts}

        def record(r: pulumi.Output[plan.Record], key: str, zone: plan.Zone, rtype: str,
                   opts: pulumi.ResourceOptions, name: str | None = None) -> aws.route53.Record:
            """Route53 record from a plan.Record; the name given when known from settings (force-new input)."""
            resource = aws.route53.Record(
                key,
                zone_id=zone_ids[zone],
                name=name if name is not None else r.apply(_name),
                type=rtype,
                ttl=r.apply(_ttl),
                records=r.apply(_values),
                allow_overwrite=False,  # never silently take over a record someone else made
                opts=opts,
            )
            self.records[key] = resource
            return resource

        self.dkim_records: list[pulumi.Resource] = []
        for host in settings.hosts:
            by_address = _host_addresses(hosts[host.name]).apply(_host_records(settings, host))
            for index, (key, zone, rtype, name) in enumerate(plan.record_keys(settings, host)):
                before = [host, *filter(None, [host.previous()])]
                old_names = {plan.legacy_record_key(h, rtype, zone) for h in before} - {key}
                opts = renamed(host, _record_key(settings, index), pulumi.ResourceOptions.merge(
                    kept, pulumi.ResourceOptions(aliases=[pulumi.Alias(name=n) for n in sorted(old_names)])))
                self.by_host[host.name].append(record(by_address.apply(_pick(key)), key, zone, rtype, opts, name))
            # One record per key generation; the oldest takes over the state of the single DKIM record that
            # releases before generations had (an alias), so upgrading replaces nothing.
            for index, (generation, p) in enumerate(dkim_p[host.name].items()):
                legacy = [pulumi.Alias(name=plan.LEGACY_DKIM_KEY.format(host=host.name))] if index == 0 else []
                dkim_record = p.apply(_dkim_record(settings, host, generation))
                made = record(dkim_record, plan.dkim_key(host, generation), "forward", "TXT",
                              renamed(host, _dkim_key(generation),
                                      pulumi.ResourceOptions.merge(rotated, pulumi.ResourceOptions(aliases=legacy))),
                              plan.dkim_record_name(settings, host, generation))
                self.by_host[host.name].append(made)
                self.dkim_records.append(made)
            if settings.ptr_source(host, 4) is PtrSource.EIP:
                jira = hosts[host.name]
                assert jira.allocation_id is not None
                # AWS only sets reverse DNS for a name that already resolves to the EIP: A record first.
                ptr = aws.ec2.EipDomainName(
                    f"{host.name}-ptr4",
                    allocation_id=jira.allocation_id,
                    domain_name=settings.fqdn(host),
                    opts=renamed(host, lambda h: f"{h.name}-ptr4",
                                 pulumi.ResourceOptions(parent=self, protect=settings.production,
                                                        depends_on=[self.records[f"{settings.fqdn(host)}-a"]])),
                )
                self.records[f"{host.name}-ptr4"] = ptr  # type: ignore[assignment]
                self.by_host[host.name].append(ptr)

        spf = addresses.apply(lambda a: plan.spf_record(settings, a))
        dmarc = plan.dmarc_record(settings)
        self.domain_records = [
            record(spf, "spf", "forward", "TXT", kept, settings.domain),
            record(pulumi.Output.from_input(dmarc), "dmarc", "forward", "TXT", kept, dmarc.name),
        ]
        self.expected = pulumi.Output.all(addresses, keys).apply(lambda v: plan.expected(settings, v[0], v[1]))
        self.spf_value = spf.apply(lambda r: r.value)
        self.register_outputs({"spf": self.spf_value})
