"""The Pulumi program under mocks: what it asks the engine to create, with which values and options."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pulumi
import pytest

from components.postfix import apply_command
from mailhost.publish import bundle, render
from mailhost.records.expected import Expected
from tests.program import stacks
from tests.program.harness import (
    ROOT,
    Run,
    admin_key_openssh,
    configure,
    execute,
    has_unknown,
    is_secret,
    run_program,
    unwrap,
)

SECRETS = {"sshPrivateKey": admin_key_openssh(), "relayPassword": stacks.RELAY_PASSWORD}
TXT = "aws:route53/record:Record"

# The staging stack's host records: named after their record sets (the HELO name, the address a PTR maps).
ST_A, ST_AAAA, ST_SPF = "jira.staging.example.com-a", "jira.staging.example.com-aaaa", "jira.staging.example.com-spf"
ST_PTR4, ST_PTR6 = "198.51.100.20-ptr", "2001-db8-5100--20-ptr"
ST_RECORDS = (ST_A, ST_AAAA, ST_PTR4, ST_PTR6, ST_SPF)


def txt_values(run: Run) -> list[str]:
    return [v for r in run.all(TXT) if r.inputs["type"] == "TXT" for v in r.inputs["records"]]


def records_by_name(run: Run) -> dict[str, dict]:
    return {r.name: unwrap(r.inputs) for r in run.all(TXT)}


@pytest.fixture(scope="module")
def staging() -> Run:
    return run_program(stacks.existing_relay_staging(), SECRETS)


@pytest.fixture(scope="module")
def production() -> Run:
    return run_program(stacks.ec2_direct_production(), {"sshPrivateKey": SECRETS["sshPrivateKey"]},
                       stack="production")


def test_existing_host_records_carry_the_configured_addresses(staging: Run) -> None:
    recs = records_by_name(staging)
    assert recs[ST_A]["records"] == ["198.51.100.20"] and recs[ST_A]["name"] == "jira.staging.example.com"
    assert recs["jira.staging.example.com-aaaa"]["records"] == ["2001:db8:5100::20"]
    assert recs["198.51.100.20-ptr"]["zoneId"] == "ZREV4"
    assert recs["198.51.100.20-ptr"]["name"] == "20.100.51.198.in-addr.arpa"
    assert recs["198.51.100.20-ptr"]["records"] == ["jira.staging.example.com."]
    assert recs[ST_PTR6]["zoneId"] == "ZREV6" and recs[ST_PTR6]["name"].endswith("ip6.arpa")


def spf_by_name(run: Run) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in run.all(TXT):
        for value in unwrap(r.inputs)["records"]:
            if "v=spf1" in value:
                out.setdefault(unwrap(r.inputs)["name"], []).append(value)
    return out


def test_exactly_one_spf_record_covering_each_sending_address_and_the_relay(staging: Run) -> None:
    spf = spf_by_name(staging)
    assert spf["staging.example.com"] == [
        "v=spf1 ip4:198.51.100.20 ip6:2001:db8:5100::20 include:_spf.relay.example.net ~all"]
    assert spf["jira.staging.example.com"] == ["v=spf1 ip4:198.51.100.20 ip6:2001:db8:5100::20 -all"], "HELO SPF"
    assert set(spf) == {"staging.example.com", "jira.staging.example.com"}, "never a second v=spf1 at one name"


def test_dkim_record_is_one_value_split_in_strings_and_matches_the_signing_key(staging: Run) -> None:
    dkim = records_by_name(staging)["jira-dkim-jm1"]
    assert dkim["name"] == "jm1-jira._domainkey.staging.example.com"
    assert len(dkim["records"]) == 1, "a list would make separate records; Route53 wants one value"
    strings = dkim["records"][0].split('""')
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    published_p = "".join(strings).split("p=")[1]
    key_file = next(f for f in pushed_files(staging) if f.endswith(".private"))
    from mailhost.records import dkim as dkim_core

    assert dkim_core.public_key_b64(pushed_files(staging)[key_file]) == published_p


def pushed_files(run: Run, host: str = "jira") -> dict[str, str]:
    payload = unwrap(run.one(f"{host}-push").inputs["stdin"])
    return {name.removeprefix("files"): data.decode() for name, data in bundle.unpack(payload).items()
            if name.startswith("files/")}


def test_relay_config_is_pushed_with_sasl_map_and_verified_relay_tls(staging: Run) -> None:
    files = pushed_files(staging)
    assert files["/etc/postfix/sasl_passwd"] == f"[smtp.relay.example.net]:587 jira:{stacks.RELAY_PASSWORD}\n"
    main = files["/etc/postfix/main.cf"]
    assert "relayhost = [smtp.relay.example.net]:587" in main
    assert "smtp_tls_security_level = secure\nsmtp_tls_secure_cert_match = nexthop\n" in main, "verify the relay"
    assert "virtual_alias_maps = regexp:/etc/postfix/jira-mailhost-reroute" in main
    assert "inet_protocols = all" in main  # both addresses have PTRs in Route53 reverse zones


def test_secrets_stay_secret_everywhere(staging: Run) -> None:
    push = staging.one("jira-push")
    assert is_secret(push.inputs["stdin"]), "the payload must be a secret input"
    assert is_secret(push.inputs["connection"]), "the SSH key makes the connection secret"
    assert "stdin" in push.secret_outputs
    dkim_pem = pushed_files(staging)["/etc/opendkim/keys/jm1-jira.private"]
    for reg in staging.monitor.registrations:
        visible = json.dumps({k: v for k, v in reg.inputs.items() if not is_secret(v)}, default=str)
        assert stacks.RELAY_PASSWORD not in visible, reg.name
        assert "PRIVATE KEY" not in visible, reg.name
        assert dkim_pem.splitlines()[1] not in visible, reg.name
    # The readable config in the command names the secret files but never shows them.
    readable = push.inputs["update"]
    assert "# ==> /etc/postfix/sasl_passwd (secret: not shown)\n# ==> " in readable
    assert "#   relayhost = [smtp.relay.example.net]:587\n" in readable
    assert stacks.RELAY_PASSWORD not in readable and "PRIVATE KEY" not in readable


def test_push_command_line_holds_only_the_script(staging: Run) -> None:
    push = unwrap(staging.one("jira-push").inputs)
    assert push["create"] == push["update"], "an update must re-run apply, never replace (replace = teardown)"
    assert push["create"].startswith("bash -c ") and "jira-mailhost-apply" in push["create"]
    assert "MAILHOST_DRAIN_SECONDS=120 " in push["delete"]
    assert push["connection"]["hostKey"] == stacks.pinned_host_key().strip()
    assert push["connection"]["host"] == "198.51.100.20" and push["connection"]["user"] == "admin"
    assert push["connection"]["dialErrorLimit"] > 1, "wait for SSH with a bounded retry"


def test_push_waits_for_its_host_records_and_the_domain_records(staging: Run) -> None:
    push = staging.one("jira-push")
    for name in (*ST_RECORDS, "jira-dkim-jm1", "spf", "dmarc"):
        assert staging.urn(name) in push.dependencies, name


def test_staging_push_is_not_protected_and_drains_before_replacing(staging: Run) -> None:
    push = staging.one("jira-push")
    assert push.protect is False and push.delete_before_replace is True
    assert not any(r.protect for r in staging.monitor.registrations)


def test_verify_step_runs_after_records_and_push_with_the_expected_state(staging: Run) -> None:
    verify = staging.one("verify-dns")
    needed = {staging.urn(n) for n in (ST_A, ST_AAAA, ST_PTR4, ST_PTR6, "jira-dkim-jm1", "spf", "dmarc",
                                       "jira-push")}
    assert needed <= set(verify.dependencies)
    inputs = unwrap(verify.inputs)
    expected = Expected.from_json(inputs["environment"]["MAILHOST_EXPECTED"])
    assert expected.domain == "staging.example.com" and not expected.production
    (host,) = expected.hosts
    assert (host.fqdn, host.ipv4, host.ipv6, host.sends_ipv6) == (
        "jira.staging.example.com", "198.51.100.20", "2001:db8:5100::20", True)
    assert host.dkim_public_key and host.dkim_public_key in records_by_name(staging)["jira-dkim-jm1"]["records"][0] \
        .replace('""', "")
    # The program's own interpreter (Pulumi's project venv), not whatever python3 is first on PATH: named from
    # the project directory, where the provider runs local commands.
    interpreter, rest = inputs["create"].split(" ", 1)
    assert os.path.normpath(ROOT / interpreter) == sys.executable
    assert rest.startswith("-m mailhost verify --expected-env MAILHOST_EXPECTED")


def test_production_ec2_is_protected_and_firewalled(production: Run) -> None:
    for name in ("jira", "jira-eip", "jira-ssh", "jira-push", "jira.example.com-a", "spf", "dmarc", "jira-ptr4"):
        assert production.one(name).protect, name
    group = unwrap(production.one("jira-ssh").inputs)
    (rule,) = group["ingress"]
    assert (rule["fromPort"], rule["toPort"]) == (22, 22)
    assert rule["cidrBlocks"] == ["203.0.113.0/24"] and rule["ipv6CidrBlocks"] == ["2001:db8:ad::/48"]
    instance = production.one("jira")
    assert is_secret(instance.inputs["userData"]) and "userData" in instance.secret_outputs
    user_data = unwrap(instance.inputs["userData"])
    host_key_line = unwrap(production.one("jira-push").inputs["connection"])["hostKey"]
    assert host_key_line.split()[1] in user_data, "the pinned key is the one cloud-init installs"
    assert unwrap(instance.inputs)["ipv6AddressCount"] == 1
    assert unwrap(production.one("confluence").inputs)["ipv6AddressCount"] == 0


def test_eip_ptr_waits_for_the_a_record(production: Run) -> None:
    ptr = production.one("jira-ptr4")
    assert ptr.type == "aws:ec2/eipDomainName:EipDomainName"
    assert production.urn("jira.example.com-a") in ptr.dependencies
    assert unwrap(ptr.inputs)["domainName"] == "jira.example.com"
    eip = production.mocks.created["jira-eip"]
    assert unwrap(ptr.inputs)["allocationId"] == eip["allocationId"]
    assert records_by_name(production)["jira.example.com-a"]["records"] == [eip["publicIp"]]


def test_ipv6_without_ptr_is_not_used_for_sending(production: Run) -> None:
    jira_main = pushed_files(production, "jira")["/etc/postfix/main.cf"]
    confluence_main = pushed_files(production, "confluence")["/etc/postfix/main.cf"]
    assert "inet_protocols = all" in jira_main  # IPv6 PTR in the Route53 reverse zone
    assert "inet_protocols = ipv4" in confluence_main  # no IPv6 address
    spf = spf_by_name(production)["example.com"]
    assert len(spf) == 1
    assert spf[0].count("ip4:") == 2 and spf[0].count("ip6:") == 1 and spf[0].endswith(" ~all")
    assert all(len(values) == 1 for values in spf_by_name(production).values())
    # direct mode's default outbound TLS: DANE, then MTA-STS
    assert "smtp_tls_security_level = dane" in jira_main and "relayhost =\n" in jira_main


def test_production_without_reroute_mails_real_users(production: Run) -> None:
    assert "/etc/postfix/jira-mailhost-reroute" not in pushed_files(production)
    assert "virtual_alias_maps" not in pushed_files(production)["/etc/postfix/main.cf"]


def test_preview_of_new_ec2_stack_shows_config_but_not_unknown_values() -> None:
    run = run_program(stacks.ec2_direct_production(), {"sshPrivateKey": SECRETS["sshPrivateKey"]},
                      preview=True, stack="production")
    recs = {r.name: r.inputs for r in run.all(TXT)}
    assert has_unknown(recs["jira.example.com-a"]["records"]), "the EIP is only known after up"
    assert has_unknown(recs["spf"]["records"]), "SPF needs the EIPs: unknown until up"
    assert recs["dmarc"]["records"] == ["v=DMARC1; p=reject; rua=mailto:dmarc@example.com; adkim=r; aspf=r"]
    push = run.one("jira-push")
    assert "\n#   myhostname = jira.example.com\n" in push.inputs["update"], "preview diff shows the config"
    assert has_unknown(push.inputs["stdin"]), "the payload waits for the generated DKIM key"
    assert has_unknown(run.one("verify-dns").inputs["environment"])
    assert not has_unknown(recs["dmarc"]), "what depends on settings alone is known in preview"
    # Route53 replaces a record whose name changes or is unknown at preview: names come from settings.
    names = {key: inputs["name"] for key, inputs in recs.items()}
    assert names["jira.example.com-a"] == "jira.example.com" and names["spf"] == "example.com"
    assert names["jira-dkim-jm1"] == "jm1-jira._domainkey.example.com"
    assert names["jira.example.com-spf"] == "jira.example.com"
    assert not any(has_unknown(r.inputs["name"]) for r in run.all(TXT) if r.inputs["type"] != "PTR")


def test_preview_and_up_of_an_unchanged_stack_give_the_same_push_inputs() -> None:
    first = run_program(stacks.existing_relay_staging(), SECRETS)
    second = run_program(stacks.existing_relay_staging(), SECRETS)
    a, b = first.one("jira-push").inputs, second.one("jira-push").inputs
    assert unwrap(a["stdin"]) == unwrap(b["stdin"]) and a["update"] == b["update"] and a["create"] == b["create"]
    changed = stacks.existing_relay_staging() | {"messageSizeLimit": 40_000_000}
    third = run_program(changed, SECRETS)
    c = third.one("jira-push").inputs
    removed = set(a["update"].splitlines()) - set(c["update"].splitlines())
    added = set(c["update"].splitlines()) - set(a["update"].splitlines())
    assert {line for line in removed if not line.startswith("# jira-mailhost config ")} == {
        "#   message_size_limit = 26214400"}
    assert {line for line in added if not line.startswith("# jira-mailhost config ")} == {
        "#   message_size_limit = 40000000"}


def test_a_config_change_updates_the_push_in_place_never_replaces_it() -> None:
    """pulumi-command's SDK makes any change of `triggers` a replace (teardown + apply; refused when protected)."""
    run = run_program(stacks.existing_relay_staging(), SECRETS)
    push = run.one("jira-push")
    assert push.inputs["triggers"] == ["198.51.100.20"], "only the host's address (a move) may sit in triggers"
    assert push.inputs["update"] == push.inputs["create"], "an update runs the same apply"
    assert push.inputs["update"].startswith(apply_command() + "\n"), "the script first, then only comments"
    comments = push.inputs["update"][len(apply_command()) + 1:].split("\n")
    assert len(comments) > 50 and all(line.startswith("#") for line in comments)


def test_exports_give_jira_settings_and_no_secret() -> None:
    run = configure(stacks.existing_relay_staging(), SECRETS, preview=False)

    @pulumi.runtime.test
    def check() -> pulumi.Output[None]:
        dns = execute(run).program["dns"]

        def verify(values: list) -> None:
            expected, spf = values
            assert expected.hosts[0].sends_ipv4 and expected.spf_includes == ("include:_spf.relay.example.net",)
            assert spf.startswith("v=spf1 ip4:198.51.100.20")

        return pulumi.Output.all(dns.expected, dns.spf_value).apply(verify)

    check()


@pytest.mark.parametrize(("change", "key"), [
    ({"environment": "staging", "rerouteTo": None}, "jira-mailhost:rerouteTo"),
    ({"hosts": [{"name": "jira", "existing": {"ipv4": "198.51.100.20"}}]}, "hosts[0].existing.hostKey"),
    ({"delivery": {"mode": "relay"}}, "delivery"),
    ({"spfExtra": ["v=spf1 include:x.example"]}, "spfExtra"),
    ({"mesageSizeLimit": 5}, "mesageSizeLimit"),
])
def test_bad_config_stops_before_any_resource(change: dict, key: str) -> None:
    values = {k: v for k, v in (stacks.existing_relay_staging() | change).items() if v is not None}
    message = refused(values, SECRETS)
    assert key in message
    assert re.search(r"set|give|add|remove|check|list|pin|write", message), "the fix is named"


def refused(values: dict, secrets: dict[str, str]) -> str:
    """Run the program expecting a settings error; prove nothing was registered first."""
    run = configure(values, secrets, preview=True)

    @pulumi.runtime.test
    def program() -> None:
        execute(run)

    with pytest.raises(pulumi.RunError) as caught:
        program()
    assert run.monitor.registrations == [], "a bad setting must stop the program before any resource"
    return str(caught.value)


def test_unusable_secrets_are_refused_without_showing_them() -> None:
    bad = {"sshPrivateKey": "-----BEGIN OPENSSH PRIVATE KEY-----\nnot really\n-----END OPENSSH PRIVATE KEY-----",
           "relayPassword": "line one\nline two"}
    message = refused(stacks.existing_relay_staging(), bad)
    assert "jira-mailhost:sshPrivateKey: is not a private key without passphrase" in message
    assert "jira-mailhost:relayPassword: must be printable ASCII on one line" in message
    assert "not really" not in message and "line two" not in message


def test_stack_outputs_tell_the_admin_what_to_enter_and_hold_no_secret() -> None:
    run = configure(stacks.existing_relay_staging(), SECRETS, preview=False)
    seen: dict = {}

    @pulumi.runtime.test
    def check() -> pulumi.Output[None]:
        execute(run)
        outputs = pulumi.runtime.settings.get_root_resource().outputs  # type: ignore[union-attr]
        names = sorted(outputs)
        values = [pulumi.Output.from_input(outputs[n]) for n in names]
        secrecy = [v.is_secret() for v in values]

        def collect(resolved: list) -> None:
            seen.update(zip(names, resolved, strict=True))

        return pulumi.Output.all(pulumi.Output.all(*values).apply(collect), *secrecy).apply(
            lambda flags: seen.update(secret_flags=flags[1:]))

    check()
    assert not any(seen.pop("secret_flags")), "no stack output may be a secret"
    jira = seen["hosts"]["jira"]
    assert (jira["fqdn"], jira["ipv4"], jira["sendingProtocols"], jira["dkimSelector"]) == (
        "jira.staging.example.com", "198.51.100.20", "all", "jm1-jira")
    assert seen["jiraOutgoingMail"]["host"] == "localhost" and seen["jiraOutgoingMail"]["port"] == 25
    assert seen["jiraOutgoingMail"]["from"] == "jira@staging.example.com"
    assert seen["deliveryMode"] == "relay" and seen["rerouteTo"] == "qa@example.com"
    assert seen["spf"].startswith("v=spf1 ip4:198.51.100.20") and seen["dkim"]["jira"].startswith("v=DKIM1;")
    assert Expected.from_json(seen["verification"]).hosts[0].fqdn == "jira.staging.example.com"
    # what `mailhost status --outputs` connects with: the stack's pinned host key, its user and port
    adopted = stacks.existing_relay_staging()["hosts"][0]
    assert (jira["sshUser"], jira["sshPort"]) == (adopted.get("sshUser", "root"), adopted.get("sshPort", 22))
    assert jira["sshHostKey"].split()[:2] == adopted["existing"]["hostKey"].split()[:2]
    everything = json.dumps(seen)
    assert stacks.RELAY_PASSWORD not in everything and "PRIVATE KEY" not in everything


def test_a_new_host_leaves_the_other_hosts_records_known_at_preview() -> None:
    """Each host's records come from its own values: adding an EC2 host plans nothing for an adopted one."""
    values = stacks.existing_relay_staging()
    ec2 = {"subnetId": "subnet-0123456789abcdef0", "sshCidrs": ["203.0.113.0/24"], "ipv6": False}
    values["hosts"] = [*values["hosts"], {"name": "confluence", "ec2": ec2}]
    run = run_program(values, SECRETS, preview=True)
    recs = {r.name: r.inputs for r in run.all(TXT)}
    assert has_unknown(recs["confluence.staging.example.com-a"]["records"]), "its address is known only after up"
    for key in ("jira.staging.example.com-a", "jira.staging.example.com-aaaa", "198.51.100.20-ptr",
                "2001-db8-5100--20-ptr", "jira.staging.example.com-spf"):
        assert not has_unknown(recs[key]), f"{key} must not wait for another host"


def test_a_newly_published_ami_never_replaces_a_running_host() -> None:
    """`ami` forces a replace: a looked-up image is pinned at creation; one given in the stack is deliberate."""
    looked_up = run_program(stacks.ec2_direct_production(), SECRETS, stack="production")
    assert looked_up.one("jira").ignore_changes == ["ami", "userData", 'tags["jira-mailhost:ssh-login"]']
    assert unwrap(looked_up.one("jira").inputs)["ami"] == "ami-0123456789abcdef0"
    chosen = stacks.ec2_direct_production()
    chosen["hosts"][0]["ec2"] = {**chosen["hosts"][0]["ec2"], "ami": "ami-0fedcba9876543210"}
    pinned = run_program(chosen, SECRETS, stack="production")
    assert pinned.one("jira").ignore_changes == ["userData", 'tags["jira-mailhost:ssh-login"]'], \
        "a chosen AMI's change is a deliberate replacement"


def test_a_replaced_instance_gets_the_push_again() -> None:
    """The Elastic IP survives a replacement, so the push names the instance: a new one is an update."""
    run = run_program(stacks.ec2_direct_production(), SECRETS, stack="production")
    update = unwrap(run.one("jira-push").inputs)["update"]
    assert update.startswith(apply_command() + "\n# host instance jira-id\n")
    assert unwrap(run.one("jira-push").inputs)["create"] == update
    adopted = run_program(stacks.existing_relay_staging(), SECRETS)
    assert "# host instance" not in unwrap(adopted.one("jira-push").inputs)["update"]


@pytest.mark.parametrize(("template", "smuggled"), [
    ("main.cf.j2", "always_bcc = audit@elsewhere.example\n"),  # a parameter no template writes
    ("reroute.j2", "/@/ someone@elsewhere.example\n"),  # a second reroute rule
])
def test_a_rendered_file_outside_its_allowlist_stops_the_program_before_any_resource(
        monkeypatch: pytest.MonkeyPatch, template: str, smuggled: str) -> None:
    """Defence behind the grammars (README "What a stack value can change"): a value or template bug that
    adds a line is refused at render, with the host's key named, before anything (DNS included) exists."""
    original = render._template

    def tampered(name: str, **values: object) -> str:
        text = original(name, **values)
        return text + smuggled if name == template else text

    monkeypatch.setattr(render, "_template", tampered)
    message = refused(stacks.existing_relay_staging(), SECRETS)
    assert "jira-mailhost:hosts[0]: the rendered config was refused" in message and "no file was pushed" in message


AFTER_ASYNCIO_RUN = {
    "harness": ("from tests.program.harness import run_program\n"
                "print(records_by_name(run_program(stacks.existing_relay_staging(), SECRETS))[ST_A]['records'])\n"),
    "recorder": ("from tests.program.test_mut_promises import run_recorded\n"
                 "recorded = run_recorded(stacks.existing_relay_staging(), SECRETS)[0]\n"
                 "print(records_by_name(recorded)[ST_A]['records'])\n"),
    "simulator": ("from mailhost.lab.engine import matrix\n"
                  "from mailhost.lab.engine.simulate import Simulator\n"
                  "values, secrets, stack = matrix.shape('staging')\n"
                  "regs = Simulator(stack=stack).run(values, secrets, stack, preview=True)[1]\n"
                  "print(sum(r.name == 'jira-push' for r in regs.values()))\n"),
}


@pytest.mark.parametrize("path", list(AFTER_ASYNCIO_RUN))
def test_the_program_runs_after_an_asyncio_run_in_the_same_process(path: str) -> None:
    """asyncio.run() (verify's lookups do it) leaves no current event loop; every path that installs Pulumi's
    mocks (this harness, test_mut_promises' recorder, the lab engine's simulator) must still run the program.
    The mutation gate's clean run failed on this three times.  Each in a fresh process, as the gate's forked
    runs are: in this one, earlier tests leave a loop behind."""
    script = ("import asyncio\n"
              "from tests.program import stacks\n"
              "from tests.program.test_program import SECRETS, ST_A, records_by_name\n"
              "asyncio.run(asyncio.sleep(0))\n" + AFTER_ASYNCIO_RUN[path])
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == ("1\n" if path == "simulator" else "['198.51.100.20']\n")
