"""The Jira host: provisioned on EC2 (instance, Elastic IP, IPv6, security group) or adopted."""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls

from mailhost.publish import sshkeys
from mailhost.settings.config import Host, Settings

from . import renamed, secret_str
from .settings import preview_stopped

DEBIAN_OWNER = "136693071363"  # Debian's AWS account, publisher of the official AMIs
DEBIAN_AMI_NAME = "debian-12-amd64-*"


class JiraHost(pulumi.ComponentResource):
    """Addresses, SSH user and pinned host key of one host, however it came to exist."""

    ipv4: pulumi.Output[str]
    ipv6: pulumi.Output[str | None]
    host_key: pulumi.Output[str]
    allocation_id: pulumi.Output[str] | None
    instance_id: pulumi.Output[str] | None  # EC2 only: a new instance must get the push again

    def __init__(self, settings: Settings, host: Host, admin_public: pulumi.Input[str],
                 opts: pulumi.ResourceOptions | None = None):
        super().__init__("jira-mailhost:index:Host", host.name, None, renamed(host, lambda h: h.name, opts))
        self.user = host.user
        self.port = host.ssh_port
        if host.ec2:
            self._provision(settings, host, admin_public)
        else:
            assert host.existing is not None
            self.ipv4 = pulumi.Output.from_input(host.existing.ipv4)
            self.ipv6 = pulumi.Output.from_input(host.existing.ipv6)
            self.host_key = pulumi.Output.from_input(host.existing.host_key)
            self.allocation_id = None
            self.instance_id = None
        self.register_outputs({"ipv4": self.ipv4, "ipv6": self.ipv6, "hostKey": self.host_key})

    def _provision(self, settings: Settings, host: Host, admin_public: pulumi.Input[str]) -> None:
        ec2 = host.ec2
        assert ec2 is not None
        child = pulumi.ResourceOptions(parent=self)
        kept = pulumi.ResourceOptions(parent=self, protect=settings.production)
        # The description names the host and forces a replace: a rename (previousName) must not replace it.
        group_opts = renamed(host, lambda h: f"{h.name}-ssh",
                             pulumi.ResourceOptions.merge(kept, pulumi.ResourceOptions(ignore_changes=["description"])))
        subnet = aws.ec2.get_subnet_output(id=ec2.subnet_id, opts=pulumi.InvokeOptions(parent=self))
        ami = ec2.ami or aws.ec2.get_ami_output(
            owners=[DEBIAN_OWNER],
            most_recent=True,
            filters=[aws.ec2.GetAmiFilterArgs(name="name", values=[DEBIAN_AMI_NAME])],
            opts=pulumi.InvokeOptions(parent=self),
        ).id
        v4_cidrs = [c for c in ec2.ssh_cidrs if ":" not in c]
        v6_cidrs = [c for c in ec2.ssh_cidrs if ":" in c]
        group = aws.ec2.SecurityGroup(
            f"{host.name}-ssh",
            description=f"jira-mailhost {host.name}: SSH from admin networks only; no inbound SMTP",
            vpc_id=subnet.vpc_id,
            ingress=[aws.ec2.SecurityGroupIngressArgs(
                protocol="tcp", from_port=host.ssh_port, to_port=host.ssh_port,
                cidr_blocks=v4_cidrs, ipv6_cidr_blocks=v6_cidrs, description="admin SSH",
            )],
            egress=[aws.ec2.SecurityGroupEgressArgs(
                protocol="-1", from_port=0, to_port=0,
                cidr_blocks=["0.0.0.0/0"], ipv6_cidr_blocks=["::/0"], description="outbound mail, packages",
            )],
            opts=group_opts,
        )
        host_key = tls.PrivateKey(f"{host.name}-ssh-host-key", algorithm="ED25519",
                                  opts=renamed(host, lambda h: f"{h.name}-ssh-host-key", child))
        keys = pulumi.Output.all(host_key.private_key_openssh, host_key.public_key_openssh, admin_public)
        user_data: pulumi.Output[str] = keys.apply(lambda k: sshkeys.cloud_init(k[0], k[1], k[2], host.user,
                                                                                 host.ssh_port))
        # The login cloud-init sets up, as a tag kept from the instance's creation (ignored changes), so a
        # later sshUser/sshPort change is seen and refused before it locks SSH out; sshMovedByHand lets it follow.
        login_ignored = [] if ec2.ssh_moved_by_hand else [f'tags["{sshkeys.LOGIN_TAG}"]']
        instance = aws.ec2.Instance(
            host.name,
            ami=ami,
            instance_type=ec2.instance_type,
            subnet_id=ec2.subnet_id,
            vpc_security_group_ids=[group.id],
            ipv6_address_count=1 if ec2.ipv6 else 0,
            user_data=secret_str(user_data),
            user_data_replace_on_change=False,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(http_tokens="required"),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(volume_size=ec2.root_volume_gb, encrypted=True),
            tags={"Name": settings.fqdn(host), "jira-mailhost:stack": pulumi.get_stack(),
                  sshkeys.LOGIN_TAG: sshkeys.login(host.user, host.ssh_port)},
            # A looked-up AMI is pinned at creation: `ami` forces a replace, and Debian publishes new
            # images monthly, so without this every later `up` would replace (or, protected, refuse).
            # An AMI given in the stack (ec2.ami) is a deliberate choice: changing it replaces the host.
            # userData only matters at first boot (cloud-init runs it once), and the provider stops and starts
            # the instance to change it: a rotated admin key must never restart Jira's host (README: rotation).
            opts=renamed(host, lambda h: h.name,
                         pulumi.ResourceOptions(parent=self, protect=settings.production,
                                                additional_secret_outputs=["userData"],
                                                ignore_changes=(["userData"] if ec2.ami else ["ami", "userData"])
                                                + login_ignored)),
        )
        eip = aws.ec2.Eip(f"{host.name}-eip", domain="vpc", instance=instance.id,
                          tags={"Name": settings.fqdn(host)}, opts=renamed(host, lambda h: f"{h.name}-eip", kept))
        self.ipv4 = eip.public_ip
        self.ipv6 = instance.ipv6_addresses.apply(lambda a: a[0] if a else None)
        where = f"hosts[{settings.hosts.index(host)}]"

        def checked_pin(args: list[Any]) -> str:
            tags, key = args
            if not ec2.ssh_moved_by_hand:
                try:
                    sshkeys.check_login((tags or {}).get(sshkeys.LOGIN_TAG), host.user, host.ssh_port, where)
                except sshkeys.LoginChanged:
                    preview_stopped()
                    raise
            return " ".join(key.split()[:2])

        # The pin the push and `status` connect with: it waits for the login check, so a refused change stops here.
        self.host_key = pulumi.Output.all(instance.tags, host_key.public_key_openssh).apply(checked_pin)
        self.allocation_id = eip.allocation_id
        self.instance_id = instance.id
