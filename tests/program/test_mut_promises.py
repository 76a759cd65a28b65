"""README promises about what the program asks AWS for, each in a test named after it.

Found unguarded by mutation testing (bench/mutation.sh): each test fails when its promise
breaks.  Assertions are on the inputs the engine receives from the program (or on values
the program carried from one resource to another), never on a constant of this file that
a mock merely echoed back.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import threading
from pathlib import Path
from typing import Any

import pulumi
import pytest

from components.host import DEBIAN_AMI_NAME, DEBIAN_OWNER
from mailhost.lab.engine.program import stack_config, usable_event_loop
from mailhost.publish import bundle
from tests.program import stacks
from tests.program.harness import (
    ROOT,
    EngineMocks,
    RecordingMonitor,
    Run,
    admin_key_openssh,
    execute,
    note_up_preview,
    unwrap,
)

SECRETS = {"sshPrivateKey": admin_key_openssh(), "relayPassword": stacks.RELAY_PASSWORD}
RECORD = "aws:route53/record:Record"
INSTANCE = "aws:ec2/instance:Instance"
TLS_KEY = "tls:index/privateKey:PrivateKey"


class InvokeRecordingMocks(EngineMocks):
    """The harness's engine mocks, also keeping every provider function call and its answer."""

    def __init__(self, preview: bool):
        super().__init__(preview)
        self.calls: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        self.call_lock = threading.Lock()

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]
        answer = super().call(args)
        with self.call_lock:
            self.calls.append((args.token, dict(args.args), answer))
        return answer

    def invoked(self, token: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [(args, answer) for t, args, answer in self.calls if t == token]


def run_recorded(values: dict[str, Any], secrets: dict[str, str] | None = None, stack: str = "staging",
                 preview: bool = False) -> tuple[Run, InvokeRecordingMocks]:
    """harness.run_program, with the invokes (getZone, getAmi, …) recorded as well."""
    mocks = InvokeRecordingMocks(preview)
    monitor = RecordingMonitor(mocks)
    usable_event_loop()
    pulumi.runtime.set_mocks(mocks, project="jira-mailhost", stack=stack, preview=preview, monitor=monitor)
    secrets = SECRETS if secrets is None else secrets
    config, secret_keys = stack_config("jira-mailhost", values, secrets)
    pulumi.runtime.set_all_config(config, secret_keys)
    if not preview:
        note_up_preview(stack, config)
    run = Run(monitor, mocks, {})

    @pulumi.runtime.test
    def program() -> None:
        execute(run)

    program()
    return run, mocks


def production() -> dict[str, Any]:
    return stacks.ec2_direct_production()


def staging(**over: Any) -> dict[str, Any]:
    return stacks.existing_relay_staging() | over


PRODUCTION_SECRETS = {"sshPrivateKey": SECRETS["sshPrivateKey"]}


@pytest.fixture(scope="module")
def prod() -> tuple[Run, InvokeRecordingMocks]:
    return run_recorded(production(), PRODUCTION_SECRETS, stack="production")


@pytest.fixture(scope="module")
def stage() -> tuple[Run, InvokeRecordingMocks]:
    return run_recorded(staging())


# --- Route53: "The program never overwrites an existing record (`allowOverwrite: false`)" ---

def records_never_overwrite(run: Run) -> None:
    records = run.all(RECORD)
    assert len(records) >= 5, [r.name for r in records]
    for record in records:
        assert unwrap(record.inputs).get("allowOverwrite") is False, record.name


def test_route53_records_carry_the_plans_ttl(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    from mailhost.publish.plan import DEFAULT_TTL

    records = prod[0].all(RECORD)
    assert records and all(unwrap(r.inputs)["ttl"] == DEFAULT_TTL == 300 for r in records)


def test_route53_records_never_overwrite_an_existing_record(prod: tuple[Run, InvokeRecordingMocks],
                                                            stage: tuple[Run, InvokeRecordingMocks]) -> None:
    records_never_overwrite(prod[0])
    records_never_overwrite(stage[0])


# --- DKIM: "DKIM keys are generated per host by `pulumi_tls` (RSA 2048)" ---

def test_dkim_keys_are_rsa_2048_one_per_host_and_selector(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = prod
    dkim_keys = {r.name: unwrap(r.inputs) for r in run.all(TLS_KEY) if "-dkim-" in r.name}
    assert set(dkim_keys) == {"jira-dkim-jm1-jira", "confluence-dkim-jm1-confluence"}
    for name, inputs in dkim_keys.items():
        assert inputs["algorithm"] == "RSA", name
        assert inputs["rsaBits"] == 2048, name


def test_a_new_dkim_selector_is_a_new_key_resource() -> None:
    run, _ = run_recorded(staging(dkimSelector="jm2"))
    names = {r.name for r in run.all(TLS_KEY)}
    assert "jira-dkim-jm2-jira" in names and "jira-dkim-jm1-jira" not in names
    dkim = unwrap(run.one("jira-dkim-jm2").inputs)
    assert dkim["name"] == "jm2-jira._domainkey.staging.example.com"


# --- EC2: "encrypted root volume", IMDSv2, "newest Debian 12 from Debian's account", instance type ---

def test_ec2_root_volume_is_encrypted_with_the_configured_size(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = prod
    for name in ("jira", "confluence"):
        device = unwrap(run.one(name).inputs)["rootBlockDevice"]
        assert device["encrypted"] is True, name
        assert device["volumeSize"] == 20, f"{name}: the documented default rootVolumeGb"
    values = production()
    values["hosts"][0]["ec2"]["rootVolumeGb"] = 64
    bigger, _ = run_recorded(values, PRODUCTION_SECRETS, stack="production")
    device = unwrap(bigger.one("jira").inputs)["rootBlockDevice"]
    assert (device["volumeSize"], device["encrypted"]) == (64, True)


def test_ec2_instance_metadata_requires_imdsv2_tokens(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = prod
    for name in ("jira", "confluence"):
        assert unwrap(run.one(name).inputs)["metadataOptions"]["httpTokens"] == "required", name


def test_ec2_ami_is_the_newest_debian_12_from_debians_account(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    run, mocks = prod
    lookups = mocks.invoked("aws:ec2/getAmi:getAmi")
    assert len(lookups) == 2, "one lookup per EC2 host without an ami override"
    for args, _ in lookups:
        assert args["owners"] == [DEBIAN_OWNER] and DEBIAN_OWNER == "136693071363"
        assert args["mostRecent"] is True
        assert args["filters"] == [{"name": "name", "values": [DEBIAN_AMI_NAME]}]
        assert DEBIAN_AMI_NAME.startswith("debian-12-")
    found = lookups[0][1]["id"]
    for name in ("jira", "confluence"):
        assert unwrap(run.one(name).inputs)["ami"] == found, "the instance boots the AMI the lookup found"


def test_ec2_ami_override_is_used_without_a_lookup() -> None:
    values = production()
    values["hosts"][0]["ec2"]["ami"] = "ami-0fedcba9876543210"
    run, mocks = run_recorded(values, PRODUCTION_SECRETS, stack="production")
    assert unwrap(run.one("jira").inputs)["ami"] == "ami-0fedcba9876543210"
    assert len(mocks.invoked("aws:ec2/getAmi:getAmi")) == 1, "only confluence looks its AMI up"


def test_ec2_instance_type_subnet_and_ssh_port_come_from_the_stack(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    run, mocks = prod
    jira = unwrap(run.one("jira").inputs)
    assert jira["instanceType"] == "t3.small", "the documented default instanceType"
    assert jira["subnetId"] == "subnet-0123456789abcdef0"
    (subnet_args, subnet), *_ = mocks.invoked("aws:ec2/getSubnet:getSubnet")
    assert subnet_args["id"] == "subnet-0123456789abcdef0"
    assert unwrap(run.one("jira-ssh").inputs)["vpcId"] == subnet["vpcId"], "the group lives in the subnet's VPC"
    values = production()
    values["hosts"][0]["ec2"]["instanceType"] = "m6i.large"
    values["hosts"][0]["sshPort"] = 2222
    values["hosts"][0]["sshUser"] = "deploy"
    assert unwrap(run.one("jira-push").inputs)["connection"]["user"] == "admin", "Debian AMI login"
    changed, _ = run_recorded(values, PRODUCTION_SECRETS, stack="production")
    assert unwrap(changed.one("jira").inputs)["instanceType"] == "m6i.large"
    (rule,) = unwrap(changed.one("jira-ssh").inputs)["ingress"]
    assert (rule["protocol"], rule["fromPort"], rule["toPort"]) == ("tcp", 2222, 2222), "no inbound port 25, ever"
    assert unwrap(changed.one("jira-push").inputs)["connection"]["port"] == 2222
    assert unwrap(changed.one("jira-push").inputs)["connection"]["user"] == "deploy"
    user_data = unwrap(changed.one("jira").inputs)["userData"]
    assert "  - name: deploy\n" in user_data, "cloud-init sets up the login the push will use"


def test_ec2_host_key_is_generated_and_pinned(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = prod
    key = unwrap(run.one("jira-ssh-host-key").inputs)
    assert key["algorithm"] == "ED25519"
    pinned = unwrap(run.one("jira-push").inputs)["connection"]["hostKey"]
    made = run.mocks.created["jira-ssh-host-key"]["publicKeyOpenssh"]
    assert pinned == " ".join(made.split()[:2]), "the push pins the key the program generated"


# --- zoneId: "looked up by `domain`" ---

def test_zone_is_looked_up_by_domain_when_zone_id_is_not_given() -> None:
    values = {k: v for k, v in staging().items() if k != "zoneId"}
    run, mocks = run_recorded(values)
    (args, answer), = mocks.invoked("aws:route53/getZone:getZone")
    assert args["name"] == "staging.example.com", "the zone of the sender domain"
    assert args["privateZone"] is False, "the public zone, the one receivers ask"
    forward = [r for r in run.all(RECORD) if unwrap(r.inputs)["name"].endswith("staging.example.com")]
    assert len(forward) >= 4
    for record in forward:
        assert unwrap(record.inputs)["zoneId"] == answer["zoneId"], record.name
    reverse = unwrap(run.one("198.51.100.20-ptr").inputs)
    assert reverse["zoneId"] == "ZREV4", "reverse records stay in their reverse zone"


def test_a_given_zone_id_is_used_and_nothing_is_looked_up(stage: tuple[Run, InvokeRecordingMocks]) -> None:
    run, mocks = stage
    assert mocks.invoked("aws:route53/getZone:getZone") == []
    assert unwrap(run.one("spf").inputs)["zoneId"] == "ZFORWARD"
    assert unwrap(run.one("2001-db8-5100--20-ptr").inputs)["zoneId"] == "ZREV6"


# --- verify.enabled, verify.authoritative, verify.nameserver, verify.waitSeconds ---

def verify_command(run: Run) -> list[str]:
    """The command, its interpreter resolved from the project directory (where the provider runs it)."""
    command = shlex.split(unwrap(run.one("verify-dns").inputs)["create"])
    return [os.path.normpath(ROOT / command[0]), *command[1:]]


def test_verify_enabled_by_default_asks_the_zones_own_servers(stage: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = stage
    command = verify_command(run)
    assert command[:4] == [sys.executable, "-m", "mailhost", "verify"], "the venv running the program"
    assert "--authoritative" in command and "--nameserver" not in command
    assert command[command.index("--wait") + 1] == "300", "the documented default waitSeconds"
    assert [r.type for r in run.monitor.registrations].count("jira-mailhost:index:Verify") == 1
    inputs = unwrap(run.one("verify-dns").inputs)
    expected_json = inputs["environment"]["MAILHOST_EXPECTED"]
    push_stdout = run.mocks.created["jira-push"]["stdout"]
    assert inputs["triggers"] == [expected_json, push_stdout], "re-verify when the expected DNS or a push changes"


def test_verify_disabled_registers_no_verification() -> None:
    run, _ = run_recorded(staging(verify={"enabled": False}))
    assert [r.name for r in run.monitor.registrations if r.type == "command:local:Command"] == []
    assert not [r for r in run.monitor.registrations if r.type == "jira-mailhost:index:Verify"]
    assert run.one("jira-push"), "everything else is still deployed"


def test_verify_not_authoritative_uses_the_default_resolver() -> None:
    run, _ = run_recorded(staging(verify={"authoritative": False, "waitSeconds": 30}))
    command = verify_command(run)
    assert "--authoritative" not in command and "--nameserver" not in command
    assert command[command.index("--wait") + 1] == "30"


def test_verify_nameserver_wins_over_authoritative() -> None:
    run, _ = run_recorded(staging(verify={"nameserver": "2001:db8:0:0::53", "authoritative": True}))
    command = verify_command(run)
    assert command[:4] == [sys.executable, "-m", "mailhost", "verify"], "the venv running the program"
    assert command[command.index("--nameserver") + 1] == "2001:db8::53", "the address, normalised"
    assert "--authoritative" not in command


# --- the resource tree: each resource under its component, so URNs (and state) stay put ---

PARENT = {  # resource name -> the component it belongs to (part of its URN)
    "jira": "Host", "jira-eip": "Host", "jira-ssh": "Host", "jira-ssh-host-key": "Host",
    "jira-dkim-jm1-jira": "DkimKey",
    "jira.example.com-a": "MailDns", "jira.example.com-aaaa": "MailDns", "jira.example.com-spf": "MailDns",
    "jira.staging.example.com-a": "MailDns", "jira.staging.example.com-aaaa": "MailDns",
    "jira.staging.example.com-spf": "MailDns", "198.51.100.20-ptr": "MailDns", "2001-db8-5100--20-ptr": "MailDns",
    "jira-ptr4": "MailDns",
    "jira-ptr6": "MailDns", "jira-dkim-jm1": "MailDns", "spf": "MailDns", "dmarc": "MailDns",
    "jira-push": "Postfix",
    "verify-dns": "Verify",
}


def resources_under_components(run: Run) -> int:
    by_urn = {r.urn: r for r in run.monitor.registrations}
    checked = 0
    for r in run.monitor.registrations:
        parent = by_urn.get(r.parent)
        if r.type.startswith("jira-mailhost:"):
            assert parent is None and "pulumi:pulumi:Stack" in r.parent, f"{r.name}: components hang off the stack"
            continue
        assert parent is not None and parent.type.startswith("jira-mailhost:index:"), f"{r.name} has no component"
        assert r.urn.endswith(f"{parent.type}${r.type}::{r.name}"), r.urn
        if r.name in PARENT:
            assert parent.type == f"jira-mailhost:index:{PARENT[r.name]}", r.name
            checked += 1
    return checked


def test_every_resource_sits_under_its_component(prod: tuple[Run, InvokeRecordingMocks],
                                                 stage: tuple[Run, InvokeRecordingMocks]) -> None:
    assert resources_under_components(prod[0]) == len(PARENT) - 5, "an EC2 host has no staging records"
    assert resources_under_components(stage[0]) == len(PARENT) - 4 - 3 - 2, \
        "an adopted host has no EC2 resources, nor production's records; its PTRs are named after its addresses"


Prod = tuple[Run, InvokeRecordingMocks]


def test_ec2_firewall_is_ssh_from_the_admin_networks_in_and_anything_out(prod: Prod) -> None:
    run, _ = prod
    group = unwrap(run.one("jira-ssh").inputs)
    assert group["description"] == "jira-mailhost jira: SSH from admin networks only; no inbound SMTP", \
        "a changed description replaces the (protected) group"
    assert group["ingress"] == [{"protocol": "tcp", "fromPort": 22, "toPort": 22, "cidrBlocks": ["203.0.113.0/24"],
                                 "ipv6CidrBlocks": ["2001:db8:ad::/48"], "description": "admin SSH"}]
    assert group["egress"] == [{"protocol": "-1", "fromPort": 0, "toPort": 0, "cidrBlocks": ["0.0.0.0/0"],
                                "ipv6CidrBlocks": ["::/0"], "description": "outbound mail, packages"}], \
        "the provider drops AWS's default egress rule: without this no mail leaves"
    instance = unwrap(run.one("jira").inputs)
    assert instance["vpcSecurityGroupIds"] == ["jira-ssh-id"], "the instance is in the group made for it"


def test_ec2_host_keeps_its_address_and_is_never_replaced_for_user_data(prod: Prod) -> None:
    run, _ = prod
    instance = unwrap(run.one("jira").inputs)
    assert instance["userDataReplaceOnChange"] is False, "a changed user data must not replace the host"
    assert instance["tags"] == {"Name": "jira.example.com", "jira-mailhost:stack": "production",
                                "jira-mailhost:ssh-login": "admin@22"}
    eip = unwrap(run.one("jira-eip").inputs)
    assert eip["domain"] == "vpc" and eip["tags"] == {"Name": "jira.example.com"}
    assert eip["instance"] == "jira-id", "the Elastic IP is attached to this host's instance"
    assert run.one("jira-eip").protect and run.one("jira-ssh").protect


# --- the push: "its command line is only the script"; SSH waits up to 10 minutes for a new host ---

SCRIPTS = Path(__file__).resolve().parents[2] / "files" / "scripts"


def test_push_runs_exactly_the_shipped_scripts(stage: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = stage
    push = unwrap(run.one("jira-push").inputs)
    apply = shlex.split(push["create"], comments=True)
    assert apply == ["bash", "-c", (SCRIPTS / "apply.sh").read_text(), "jira-mailhost-apply"]
    teardown = shlex.split(push["delete"])
    assert teardown == ["MAILHOST_PUSH=staging/jira", "MAILHOST_DRAIN_SECONDS=120", "bash", "-c",
                        (SCRIPTS / "teardown.sh").read_text(), "jira-mailhost-teardown"]
    assert push["addPreviousOutputInEnv"] is False, "the previous run's output is not handed to the next"


def test_push_readable_config_marks_only_secret_files_and_has_no_trailing_blanks(
        stage: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = stage
    lines = unwrap(run.one("jira-push").inputs)["create"].split("\n")
    headers = [line for line in lines if line.startswith("# ==> ")]
    assert "# ==> /etc/postfix/main.cf" in headers and "# ==> /etc/postfix/sasl_passwd (secret: not shown)" in headers
    assert sum(h.endswith("(secret: not shown)") for h in headers) == 2, headers  # DKIM key and SASL password
    comments = lines[lines.index(headers[0]) - 1:]
    assert all(line.startswith("#") and line == line.rstrip() for line in comments)
    assert "#" in comments, "a blank line of a file stays a bare comment"
    digest = run.program["pushes"]["jira"].digest
    assert comments[0] == f"# jira-mailhost config {digest}", "stack output configDigest is the pushed config's"


def test_push_logs_in_with_the_stack_key_and_retries_for_ten_minutes(stage: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = stage
    connection = unwrap(run.one("jira-push").inputs)["connection"]
    assert connection["privateKey"] == SECRETS["sshPrivateKey"]
    assert connection["dialErrorLimit"] * connection["perDialTimeout"] == 600


def test_pushed_files_name_the_stack_they_belong_to() -> None:
    run, _ = run_recorded(production(), PRODUCTION_SECRETS, stack="eu-production")
    payload = bundle.unpack(unwrap(run.one("jira-push").inputs)["stdin"])
    main_cf = payload["files/etc/postfix/main.cf"].decode()
    assert 'Managed by jira-mailhost, stack "eu-production"' in main_cf, "the stack, not the environment"
    assert '# Managed by jira-mailhost, stack "eu-production"' in unwrap(run.one("jira-push").inputs)["create"]


def test_production_protects_what_it_lists_and_lets_dkim_keys_rotate(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    """README: production protects host, EIP, group, A/AAAA/PTR/SPF/DMARC records and the push; DKIM rotates."""
    run, _ = prod
    protected = {r.name for r in run.monitor.registrations if r.protect}
    for name in ("jira", "jira-eip", "jira-ssh", "jira.example.com-a", "jira.example.com-aaaa", "jira-ptr4",
                 "jira-ptr6", "jira.example.com-spf", "spf", "dmarc", "jira-push"):
        assert name in protected, name
    assert "jira-dkim-jm1" not in protected and "jira-dkim-jm1-jira" not in protected, "a new selector replaces them"


def test_each_record_has_the_planned_type(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = prod
    types = {r.name: unwrap(r.inputs)["type"] for r in run.all(RECORD)}
    assert {k: v for k, v in types.items() if k.startswith(("jira-", "jira.", "spf", "dmarc"))} == {
        "jira.example.com-a": "A", "jira.example.com-aaaa": "AAAA", "jira.example.com-spf": "TXT", "jira-ptr6": "PTR",
        "jira-dkim-jm1": "TXT", "spf": "TXT", "dmarc": "TXT"}


def test_cloud_init_lets_the_admin_key_in(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    from mailhost.publish import sshkeys

    run, _ = prod
    user_data = unwrap(run.one("jira").inputs)["userData"]
    admin = sshkeys.public_openssh(SECRETS["sshPrivateKey"])
    assert admin.split()[1] in user_data, "the key the push logs in with is authorised on the new host"
    assert "sshd_config.d" not in user_data and "Port " not in user_data, "sshPort 22 is sshd's own: no drop-in"


def test_cloud_init_installs_the_generated_host_key_pair(prod: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = prod
    user_data = unwrap(run.one("jira").inputs)["userData"]
    made = run.mocks.created["jira-ssh-host-key"]
    private_body = made["privateKeyOpenssh"].strip().splitlines()[1]
    assert private_body in user_data, "the host's own private key, the half its pinned public key belongs to"
    assert made["publicKeyOpenssh"].split()[1] in user_data


# --- DKIM rotation: "Postfix signs with a new key only once its record is visible"; retired keys stay ---

def test_the_push_waits_for_the_dkim_gate_and_the_gate_for_every_dkim_record(
        stage: tuple[Run, InvokeRecordingMocks]) -> None:
    run, _ = stage
    gate = run.one("dkim-published")
    assert run.urn("jira-dkim-jm1") in gate.dependencies
    assert gate.urn in run.one("jira-push").dependencies
    create = unwrap(gate.inputs)["create"]
    interpreter, *rest = shlex.split(create)
    assert os.path.normpath(ROOT / interpreter) == sys.executable and rest[:3] == ["-m", "mailhost", "verify"]
    assert "--only dkim" in create
    expected = json.loads(unwrap(gate.inputs)["environment"]["MAILHOST_EXPECTED"])
    assert [(h["dkim_selector"], h["ipv4"]) for h in expected["hosts"]] == [("jm1-jira", None)], \
        "the gate checks DKIM alone, so an address change does not re-run it"
    assert expected["hosts"][0]["dkim_public_key"], "the key it waits for"


def test_without_verification_there_is_no_gate() -> None:
    run, _ = run_recorded(staging(verify={"enabled": False}))
    assert not [r for r in run.monitor.registrations if r.name == "dkim-published"]


def test_retired_generations_keep_their_key_and_record_inside_the_retention() -> None:
    import datetime

    today = datetime.datetime.now(datetime.UTC).date()
    inside = (today - datetime.timedelta(days=6)).isoformat()
    run, _ = run_recorded(staging(dkimSelector="jm3", dkimRetired=[
        {"selector": "jm1", "retiredOn": (today - datetime.timedelta(days=7)).isoformat()},
        {"selector": "jm2", "retiredOn": inside}]))
    keys = {r.name for r in run.all(TLS_KEY)}
    assert {"jira-dkim-jm2-jira", "jira-dkim-jm3-jira"} <= keys and "jira-dkim-jm1-jira" not in keys
    names = {r.name: unwrap(r.inputs)["name"] for r in run.all(RECORD) if r.name.startswith("jira-dkim-")}
    assert names == {"jira-dkim-jm2": "jm2-jira._domainkey.staging.example.com",
                     "jira-dkim-jm3": "jm3-jira._domainkey.staging.example.com"}
    push = unwrap(run.one("jira-push").inputs)["update"]
    assert "jm3-jira" in push and "jm2-jira" not in push, "only the newest generation signs"
    alias_holder = run.one("jira-dkim-jm2")
    assert alias_holder.aliases and alias_holder.aliases[0].endswith("::jira-dkim")
    assert not run.one("jira-dkim-jm3").aliases, "only the oldest takes over the pre-generation record"


@pytest.mark.parametrize("stack", ["staging", "production"])
def test_a_rename_with_previous_name_aliases_every_resource_named_after_the_host(stack: str) -> None:
    """hosts[].previousName: each resource (components included) whose name carries the host's name also
    answers to that name with the old host's, so the engine moves its state instead of creating it anew."""
    values = staging() if stack == "staging" else production()
    values["hosts"][0] = {**values["hosts"][0], "name": "jira2", "previousName": "jira"}
    run, _ = run_recorded(values, PRODUCTION_SECRETS, stack=stack) if stack == "production" else run_recorded(values)
    renamed = [r for r in run.monitor.registrations if "jira2" in r.name]
    assert len(renamed) >= 8, [r.name for r in renamed]
    for r in renamed:
        old = r.name.replace("jira2", "jira")
        assert any(a.endswith(f"::{old}") for a in r.aliases), f"{r.type} {r.name}: no alias to {old}: {r.aliases}"
