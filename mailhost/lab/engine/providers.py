"""What each provider decides, as data: which inputs force a replace, which updates stop and start
the resource, and which outputs stay unknown until the provider has acted.

Read from the providers' sources (named per entry, with the version read); the plan (plan.py)
and the preview outputs (runner.preview_outputs) use nothing else.  Paths use the engine's
property-path syntax with `[*]` for any element.  A type that is not listed here is planned as
if it had no force-new input, and `facts_for` says so by returning UNLISTED (tests check that
every type the program registers is listed).
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"  # the engine's marker for a value known only after `up`


@dataclass(frozen=True)
class ProviderFacts:
    force_new: tuple[str, ...] = ()  # a change (or an unknown at preview) here makes a replace
    restart_on: tuple[str, ...] = ()  # in-place updates for which the provider stops and starts it
    unknown_after_create: tuple[str, ...] = ()  # computed outputs: unknown at preview of a create/replace
    unknown_after_update: tuple[str, ...] = ()  # outputs the provider recomputes on any update
    delete_before_replace: bool = False  # the provider's Diff asks for it (else create-before-delete)
    source: str = ""


COMMAND = ProviderFacts(
    # The provider's schema marks only `triggers` replaceOnChanges (common/inputs.go); the SDK adds
    # replace_on_changes=["triggers[*]"] to every Command (python remote/command.py:455, local/command.py:807).
    # Everything else (create, update, delete, stdin, environment, connection...) updates in place: Update runs
    # `update`, or `create` when `update` is empty, with the new inputs (so on the new host); delete runs the
    # old stored inputs' `delete`.  On create and update stdout/stderr are computed (go-provider infer markComputed).
    force_new=("triggers",),
    unknown_after_create=("stdout", "stderr"),
    unknown_after_update=("stdout", "stderr"),
    source="pulumi-command v1.2.1 provider/pkg/provider/{common/inputs.go,remote/commandController.go,"
           "local/commandController.go}; pulumi-go-provider v1.3.0 infer/resource.go (Diff, markComputed); "
           "installed SDK pulumi_command 1.2.1",
)

# The installed SDK is pulumi_aws 7.51.1, bridged from terraform-provider-aws 6.x.  The AWS repositories are
# too large to mirror here: route53/eip/security group/eip domain name were read as v6 files from the source
# index (commits named below); aws_instance's code from upstream 1a5174b1 (v5.45.0+main), checked against the
# v6 docs (website/docs/r/instance.html.markdown @00d98e75), which say the same on replace and stop/start.
# pulumi-aws provider/resources.go (@00ba5ea5, v6 line) adds no force-new or delete-before-replace override for
# these five; the bridge (pulumi-terraform-bridge v3.136.0 pkg/tfbridge/provider.go Diff) replaces create-first
# unless the resource schema or an explicitly set autonamed field asks otherwise, and an unknown ForceNew value
# at preview is a replace (terraform-plugin-sdk schema.go finalizeDiff: RequiresNew = Old != New || NewComputed).
AWS = "terraform-provider-aws 6.x via pulumi-aws 7.51.1; "

PROVIDERS: dict[str, ProviderFacts] = {
    "aws:route53/record:Record": ProviderFacts(
        # name (StateFunc: trimmed, lowercased) and zone_id are ForceNew; `type` and `set_identifier` changes are
        # one DELETE+CREATE change batch inside Update; everything else is an UPSERT.  allow_overwrite=false makes
        # a new record a CREATE, which Route53 refuses when the record set exists.
        force_new=("name", "zoneId"),
        unknown_after_create=("fqdn", "id"),
        source=AWS + "internal/service/route53/record.go @00655c16 (resourceRecordCreate, resourceRecordUpdate)",
    ),
    "aws:ec2/instance:Instance": ProviderFacts(
        force_new=("ami", "associatePublicIpAddress", "availabilityZone", "subnetId", "keyName", "ipv6Addresses",
                   "privateIp", "placementGroup", "tenancy", "ebsOptimized", "hibernation", "securityGroups",
                   "launchTemplate", "rootBlockDevice.encrypted", "rootBlockDevice.kmsKeyId", "ebsBlockDevices",
                   "cpuCoreCount", "cpuThreadsPerCore"),
        # resourceInstanceUpdate: instance_type, user_data and user_data_base64 go through
        # modifyInstanceAttributeWithStopStart (stopInstance, ModifyInstanceAttribute, startInstance);
        # metadata_options, root volume size, security groups, ipv6_address_count and tags do not stop it.
        restart_on=("instanceType", "userData", "userDataBase64"),
        unknown_after_create=("id", "arn", "publicIp", "publicDns", "privateDns", "privateIp", "ipv6Addresses",
                              "primaryNetworkInterfaceId", "instanceState", "availabilityZone"),
        source=AWS + "internal/service/ec2/ec2_instance.go @1a5174b1 (schema, CustomizeDiff, "
                     "resourceInstanceUpdate); user_data is ForceNew only with user_data_replace_on_change",
    ),
    "aws:ec2/eip:Eip": ProviderFacts(
        # instance / network_interface are updated in place (disassociate, then associate)
        force_new=("address", "domain", "ipamPoolId", "networkBorderGroup", "publicIpv4Pool"),
        unknown_after_create=("id", "allocationId", "publicIp", "publicDns", "privateIp", "privateDns",
                              "associationId", "arn", "ptrRecord"),
        source=AWS + "internal/service/ec2/ec2_eip.go @01606926 (schema, resourceEIPUpdate)",
    ),
    "aws:ec2/securityGroup:SecurityGroup": ProviderFacts(
        force_new=("name", "namePrefix", "description", "vpcId"),  # ingress/egress: revoke + authorize in place
        unknown_after_create=("id", "arn", "ownerId", "name"),
        source=AWS + "internal/service/ec2/vpc_security_group.go @01606926 (schema, updateSecurityGroupRules)",
    ),
    "aws:ec2/eipDomainName:EipDomainName": ProviderFacts(
        force_new=("allocationId",),  # domain_name: ModifyAddressAttribute in place
        unknown_after_create=("id", "ptrRecord"),
        source=AWS + "internal/service/ec2/ec2_eip_domain_name.go @11ab4cf8 (framework schema, RequiresReplace)",
    ),
    "command:remote:Command": COMMAND,
    "command:local:Command": COMMAND,
    "tls:index/privateKey:PrivateKey": ProviderFacts(
        force_new=("algorithm", "rsaBits", "ecdsaCurve"),  # RequiresReplace plan modifiers; Update is a no-op
        unknown_after_create=("privateKeyPem", "privateKeyOpenssh", "privateKeyPemPkcs8", "publicKeyPem",
                              "publicKeyOpenssh", "publicKeyFingerprintMd5", "publicKeyFingerprintSha256", "id"),
        source="terraform-provider-tls v4.2.1 internal/provider/resource_private_key.go (pulumi-tls 5.5.x pins "
               "v4.3.0, same schema); installed pulumi_tls 5.6.2",
    ),
}

UNLISTED = ProviderFacts(source="not listed: planned with no force-new input")


def facts_for(type_: str) -> ProviderFacts:
    if type_.startswith("jira-mailhost:"):
        return ProviderFacts(source="component resource: no provider, never replaced by a diff")
    return PROVIDERS.get(type_, UNLISTED)
