"""jira-mailhost: a Jira/Confluence host whose outgoing mail arrives.

Load and validate the stack's settings (nothing is created if they are wrong), then per
host: the machine, its DKIM key and its pushed Postfix config; then the domain's mail
DNS; then, on `pulumi up`, a DNS verification of what the world now sees.
"""

from __future__ import annotations

import datetime

import pulumi
import pulumi_aws as aws

from components.dkim import DkimKey
from components.host import JiraHost
from components.mail_dns import MailDns
from components.postfix import PostfixConfig
from components.settings import load_settings, secret
from components.verify import DkimGate, DnsVerification
from mailhost.publish import plan, sshkeys

settings = load_settings()
ssh_private_key = secret("sshPrivateKey")
relay_password = secret("relayPassword") if settings.delivery.mode == "relay" else None
assert ssh_private_key is not None  # load_settings has checked it is set
admin_public = pulumi.Output.unsecret(ssh_private_key.apply(sshkeys.public_openssh))

zone_id = settings.zone_id or aws.route53.get_zone_output(name=settings.domain, private_zone=False).zone_id
zone_ids: dict[plan.Zone, pulumi.Input[str]] = {"forward": zone_id}
if settings.reverse_zones.ipv4:
    zone_ids["reverse4"] = settings.reverse_zones.ipv4
if settings.reverse_zones.ipv6:
    zone_ids["reverse6"] = settings.reverse_zones.ipv6

hosts = {host.name: JiraHost(settings, host, admin_public) for host in settings.hosts}
# Key generations still published (retired ones inside dkimRetentionDays, then the signing one), by UTC day.
generations = settings.dkim_generations(datetime.datetime.now(datetime.UTC).date())
all_keys = {host.name: {g: DkimKey(settings, host, g) for g in generations} for host in settings.hosts}
keys = {name: by_generation[settings.dkim_selector] for name, by_generation in all_keys.items()}
dns = MailDns(settings, zone_ids, hosts,
              {name: {g: key.public_p for g, key in by_generation.items()} for name, by_generation in all_keys.items()})
# Postfix signs with a new key only once the world sees its record (DkimGate), never before.
gate = [DkimGate(settings, dns.expected, dns.dkim_records).check] if settings.verify.enabled else []
pushes = {
    host.name: PostfixConfig(settings, host, hosts[host.name], ssh_private_key, keys[host.name].private_key_pem,
                             relay_password, after=[*dns.by_host[host.name], *dns.domain_records, *gate])
    for host in settings.hosts
}

if settings.verify.enabled:
    DnsVerification(
        settings,
        dns.expected,
        after=[*dns.records.values(), *(p.push for p in pushes.values())],
        pushed=[p.push.stdout for p in pushes.values()],
    )

pulumi.export("environment", settings.environment)
pulumi.export("deliveryMode", settings.delivery.mode)
pulumi.export("hosts", {
    host.name: {
        "fqdn": settings.fqdn(host),
        "ipv4": hosts[host.name].ipv4,
        "ipv6": hosts[host.name].ipv6,
        "ptrName": settings.fqdn(host),
        "sendingProtocols": plan.inet_protocols(settings, host),
        "dkimSelector": settings.selector(host),
        "configDigest": pushes[host.name].digest,
        # what `mailhost status --outputs` needs to reach the host (public: the pinned key is the host's public key)
        "sshUser": host.user,
        "sshPort": host.ssh_port,
        "sshHostKey": hosts[host.name].host_key,
    }
    for host in settings.hosts
})
pulumi.export("spf", dns.spf_value)
pulumi.export("dkim", {name: key.public_p.apply(lambda p: plan.dkim.txt_value(p)) for name, key in keys.items()})
pulumi.export("dmarc", plan.dmarc_record(settings).value)
pulumi.export("rerouteTo", settings.reroute_to)
pulumi.export("jiraOutgoingMail", {
    "protocol": "SMTP",
    "host": "localhost",
    "port": 25,
    "tls": False,
    "from": settings.sender,
    "usernamePassword": "leave empty: Postfix accepts mail from this host only",
})
pulumi.export("verification", dns.expected.apply(lambda e: e.to_json()))
