"""The change matrix: from a deployed state of each shipped stack shape, change one thing and plan.

    python -m mailhost.lab.engine.matrix            print the README table "What a change does"
    python -m mailhost.lab.engine.matrix --check    exit 1 when the README's table is not current

Shapes: `Pulumi.production.yaml` (EC2, direct, protected), `Pulumi.staging.yaml` (adopted host,
relay) and the lab stack (`mailhost.lab.stack`).  Each change is planned by the simulated engine
(simulate.py: the same plan rules as the lab runner); a cell names the operations it plans.
"""

from __future__ import annotations

import copy
import datetime
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from mailhost.lab.engine import plan
from mailhost.lab.engine.plan import StepFailed
from mailhost.lab.engine.simulate import AMI, REPO, Simulator
from mailhost.publish import sshkeys
from mailhost.publish.stack import values_from_stack_file
from mailhost.settings.config import ConfigError

Values = dict[str, Any]
Secrets = dict[str, str]
Change = Callable[[Values, Secrets, Simulator], None]  # edits in place; raises NotApplicable
SHAPES = ("production", "staging", "lab")
BEGIN, END = "<!-- change-matrix:begin -->", "<!-- change-matrix:end -->"
SKIP_BEGIN, SKIP_END = "<!-- skip-preview:begin -->", "<!-- skip-preview:end -->"
OP_MARK = {"create": "+", "update": "~", "replace": "+-", "delete": "-"}


class NotApplicable(Exception):
    pass


@cache
def _keys() -> tuple[str, str, str]:
    """(admin private key in OpenSSH form, a host public key, another host public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    def public(key: ed25519.Ed25519PrivateKey) -> str:
        return key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH).decode()

    return _new_admin_key(), public(ed25519.Ed25519PrivateKey.generate()), \
        public(ed25519.Ed25519PrivateKey.generate())


def _new_admin_key() -> str:
    """A fresh Ed25519 key as the OpenSSH private-key text `sshPrivateKey` holds."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode()


def shape(name: str) -> tuple[Values, Secrets, str]:
    """(settings, secrets, stack name) of a shipped shape; secrets are placeholders made here."""
    from mailhost.lab.stack import lab_stack

    secrets = {"sshPrivateKey": _keys()[0]}
    if name == "lab":
        values = lab_stack("direct", "198.51.100.10", "2001:db8:5100::10", _keys()[1], "root", 22,
                               "198.51.100.53", ("198.51.100.25", "2001:db8:5100::25"))
        return values, secrets, "lab"
    values, _ = values_from_stack_file(REPO / f"Pulumi.{name}.yaml")
    if values.get("delivery", {}).get("mode") == "relay":
        secrets["relayPassword"] = "matrix-relay-Passw0rd"
    return values, secrets, name


# -- the changes -----------------------------------------------------------------------------
def _at(values: Values, path: str) -> tuple[Any, str]:
    """The container and last key of a dotted path (`hosts.0.ec2.ami`); NotApplicable if absent."""
    parts = path.split(".")
    node: Any = values
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError):
            raise NotApplicable(path) from None
    return node, parts[-1]


def setting(path: str, new: Callable[[Any, Values], Any]) -> Change:
    def change(values: Values, secrets: Secrets, sim: Simulator) -> None:
        node, key = _at(values, path)
        node[key] = new(node.get(key), values)
    return change


def secret(key: str, value: str) -> Change:
    def change(values: Values, secrets: Secrets, sim: Simulator) -> None:
        if key not in secrets:
            raise NotApplicable(key)
        secrets[key] = value
    return change


def _environment(values: Values, secrets: Secrets, sim: Simulator) -> None:
    if values.get("environment") == "production":
        values.update(environment="staging", rerouteTo="qa@example.com")
    else:
        values.update(environment="production")
        values.pop("rerouteTo", None)
        values.pop("rerouteOptOut", None)


def _domain(values: Values, secrets: Secrets, sim: Simulator) -> None:
    values["domain"] = "mail." + values["domain"]
    if "fromAddress" in values:
        values["fromAddress"] = "jira@" + values["domain"]


def _add_host(values: Values, secrets: Secrets, sim: Simulator) -> None:
    host = copy.deepcopy(values["hosts"][0])
    host["name"] = "wiki"
    host.pop("fqdn", None)
    if "existing" in host:
        host["existing"].update(ipv4="198.51.100.30", ipv6="2001:db8:5100::30", hostKey=_keys()[2])
    values["hosts"].append(host)


def _rename(fqdn_kept: bool) -> Change:
    def change(values: Values, secrets: Secrets, sim: Simulator) -> None:
        host = values["hosts"][0]
        if fqdn_kept:
            host.setdefault("fqdn", f"{host['name']}.{values['domain']}")
        host.update(name="jira2", previousName=host["name"])
    return change


def _remove_host(values: Values, secrets: Secrets, sim: Simulator) -> None:
    if len(values["hosts"]) < 2:
        raise NotApplicable("one host only")
    values["hosts"].pop()


def _relay_mode(values: Values, secrets: Secrets, sim: Simulator) -> None:
    delivery = values.setdefault("delivery", {})
    if delivery.get("mode") == "relay":
        values["delivery"] = {"mode": "direct"}
        values.pop("spfExtra", None)
        secrets.pop("relayPassword", None)
    else:
        values["delivery"] = {"mode": "relay", "relay": {"host": "smtp.relay.example.net", "username": "jira"}}
        secrets["relayPassword"] = "matrix-relay-Passw0rd"


def _moved_by_hand(values: Values, secrets: Secrets, sim: Simulator) -> None:
    """The last step of moving an EC2 host's SSH port by hand (sshkeys.check_login): the stack follows."""
    host = values["hosts"][0]
    if "ec2" not in host:
        raise NotApplicable
    host["sshPort"] = 2222
    host["ec2"]["sshMovedByHand"] = True


def _new_ami(values: Values, secrets: Secrets, sim: Simulator) -> None:
    if not any("ec2" in h for h in values["hosts"]):
        raise NotApplicable("no EC2 host")
    sim.ami = {"id": "ami-0fedcba9876543210", "name": "debian-12-amd64-20261201"}


def _rotate(values: Values, secrets: Secrets, sim: Simulator) -> None:
    """What the README tells a user to do: the new generation signs, the old one is retired today."""
    old = values.get("dkimSelector", "jm1")
    values["dkimSelector"] = "jm2"
    values["dkimRetired"] = [{"selector": old, "retiredOn": _today().isoformat()}]


def _retired_base(values: Values, secrets: Secrets, sim: Simulator, days_ago: int) -> None:
    """A stack rotated `days_ago` days ago (deployed that way in `sim`), then planned again today."""
    values["dkimSelector"] = "jm2"
    values["dkimRetired"] = [{"selector": "jm1", "retiredOn": (_today() - datetime.timedelta(days=days_ago))
                              .isoformat()}]
    rotated = copy.deepcopy(values)
    rotated["dkimRetired"] = [{"selector": "jm1", "retiredOn": _today().isoformat()}]
    sim.run(rotated, secrets, sim.stack, preview=False)  # the rotation's own `up`, on the deployed stack


def _retention_over(values: Values, secrets: Secrets, sim: Simulator) -> None:
    _retired_base(values, secrets, sim, days_ago=7)


def _retention_shortened(values: Values, secrets: Secrets, sim: Simulator) -> None:
    _retired_base(values, secrets, sim, days_ago=2)
    values["dkimRetentionDays"] = 2


def _today() -> datetime.date:
    return datetime.datetime.now(datetime.UTC).date()


def _toggle(a: Any, b: Any) -> Callable[[Any, Values], Any]:
    return lambda old, values: b if old == a else a


def _relay_only(path: str, new: Callable[[Any, Values], Any]) -> Change:
    inner = setting(path, new)

    def change(values: Values, secrets: Secrets, sim: Simulator) -> None:
        if values.get("delivery", {}).get("mode") != "relay":
            raise NotApplicable("relay mode only")
        inner(values, secrets, sim)
    return change


def _tls_policy(values: Values, secrets: Secrets, sim: Simulator) -> None:
    """A partner domain that must never get Jira's mail in clear (direct mode only)."""
    delivery = values.setdefault("delivery", {})
    if delivery.get("mode", "direct") != "direct":
        raise NotApplicable("direct mode only")
    delivery["tlsPolicy"] = {**delivery.get("tlsPolicy", {}), "partner.example.net": "encrypt"}


def _outbound_tls(values: Values, secrets: Secrets, sim: Simulator) -> None:
    """DANE for receivers that publish TLSA records, through the host's validating resolver (direct mode only)."""
    delivery = values.setdefault("delivery", {})
    if delivery.get("mode", "direct") != "direct":
        raise NotApplicable("direct mode only")
    delivery["outboundTls"] = "dane"


def _outbound_tls_opportunistic(values: Values, secrets: Secrets, sim: Simulator) -> None:
    """Back from direct mode's default (DANE, then MTA-STS) to TLS when offered, nothing checked."""
    _outbound_tls(values, secrets, sim)
    values["delivery"]["outboundTls"] = "opportunistic"


def _dnssec_bogus_name(values: Values, secrets: Secrets, sim: Simulator) -> None:
    """Another deliberately broken name for the resolver check (it goes with outboundTls: dane, direct mode)."""
    _outbound_tls(values, secrets, sim)
    values["delivery"]["dnssecBogusName"] = "bogus.dnssec.example.org"


def _max_connections(values: Values, secrets: Secrets, sim: Simulator) -> None:
    """Twice the default: a stack whose receivers take more connections at once (either mode)."""
    values.setdefault("delivery", {})["maxConnections"] = 10


def _only_if_set(path: str, new: Callable[[Any, Values], Any]) -> Change:
    inner = setting(path, new)

    def change(values: Values, secrets: Secrets, sim: Simulator) -> None:
        node, key = _at(values, path)
        if key not in node:
            raise NotApplicable(path)
        inner(values, secrets, sim)
    return change


@cache
def _rotated_admin_key() -> str:
    return _new_admin_key()


@dataclass(frozen=True)
class Row:
    label: str  # the README config key (or event) it exercises
    change: Change
    deliberate: str = ""  # production refuses it (protected replace/delete): how to do it on purpose


REPLACE_STEP = "a deliberate step: see “Changes that replace protected resources”"
ROWS: tuple[Row, ...] = (
    Row("environment", _environment),
    Row("domain", _domain, REPLACE_STEP),
    Row("zoneId", setting("zoneId", lambda old, v: "Z0NEWZONE000000001"), REPLACE_STEP),
    Row("reverseZones.ipv4", setting("reverseZones.ipv4", lambda old, v: "Z0NEWREVERSE00004")),
    Row("reverseZones.ipv6", setting("reverseZones.ipv6", lambda old, v: "Z0NEWREVERSE00006"), REPLACE_STEP),
    Row("hosts[] (add a host)", _add_host),
    Row("hosts[] (remove a host)", _remove_host, REPLACE_STEP),
    Row("hosts[].name (rename)", setting("hosts.0.name", lambda old, v: "jira2"), REPLACE_STEP),
    Row("hosts[].previousName (rename, default fqdn)", _rename(fqdn_kept=False), REPLACE_STEP),
    Row("hosts[].previousName (rename, fqdn kept)", _rename(fqdn_kept=True)),
    Row("hosts[].fqdn", setting("hosts.0.fqdn", lambda old, v: "mail." + v["domain"]), REPLACE_STEP),
    Row("hosts[].sshUser", setting("hosts.0.sshUser", lambda old, v: "deploy")),
    Row("hosts[].sshPort", setting("hosts.0.sshPort", lambda old, v: 2222)),
    Row("hosts[].ec2.sshMovedByHand (with the new sshPort)", _moved_by_hand),
    Row("hosts[].ec2.subnetId", setting("hosts.0.ec2.subnetId", lambda old, v: "subnet-0fedcba9876543210"),
        REPLACE_STEP),
    Row("hosts[].ec2.sshCidrs", setting("hosts.0.ec2.sshCidrs", lambda old, v: ["198.51.100.0/24"])),
    Row("hosts[].ec2.instanceType", setting("hosts.0.ec2.instanceType", lambda old, v: "t3.xlarge")),
    Row("hosts[].ec2.ami (chosen)", setting("hosts.0.ec2.ami", lambda old, v: "ami-0fedcba9876543210"),
        REPLACE_STEP),
    Row("a new Debian AMI is published", _new_ami),
    Row("hosts[].ec2.rootVolumeGb", setting("hosts.0.ec2.rootVolumeGb", lambda old, v: 40)),
    Row("hosts[].ec2.ipv6", setting("hosts.0.ec2.ipv6", lambda old, v: old is False), REPLACE_STEP),
    Row("hosts[].existing.ipv4 (host moves)", setting("hosts.0.existing.ipv4", lambda old, v: "198.51.100.77"),
        REPLACE_STEP),
    Row("hosts[].existing.ipv6", setting("hosts.0.existing.ipv6", lambda old, v: "2001:db8:5100::77"),
        REPLACE_STEP),
    Row("hosts[].existing.hostKey", setting("hosts.0.existing.hostKey", lambda old, v: _keys()[2])),
    Row("hosts[].existing.ipv4Ptr", setting("hosts.0.existing.ipv4Ptr",
                                            lambda old, v: "external" if old == "zone" else "zone"), REPLACE_STEP),
    Row("hosts[].existing.ipv6Ptr", setting("hosts.0.existing.ipv6Ptr",
                                            lambda old, v: "none" if old == "zone" else "zone"), REPLACE_STEP),
    Row("delivery.mode", _relay_mode),
    Row("delivery.relay.host", _relay_only("delivery.relay.host", lambda old, v: "smtp2.relay.example.net")),
    Row("delivery.relay.port", _relay_only("delivery.relay.port", lambda old, v: 2525)),
    Row("delivery.relay.username", _relay_only("delivery.relay.username", lambda old, v: "jira-2")),
    Row("delivery.relay.maxPerMinute", _relay_only("delivery.relay.maxPerMinute", lambda old, v: 30)),
    Row("delivery.relay.maxPerDay", _relay_only("delivery.relay.maxPerDay", lambda old, v: 10000)),
    Row("delivery.relay.tlsFingerprint", _relay_only("delivery.relay.tlsFingerprint", lambda old, v: "ab" * 32)),
    Row("delivery.tlsPolicy", _tls_policy),
    Row("delivery.maxConnections", _max_connections),
    Row("delivery.outboundTls", _outbound_tls),
    Row("delivery.outboundTls: opportunistic", _outbound_tls_opportunistic),
    Row("delivery.outboundTls: dane + delivery.dnssecBogusName", _dnssec_bogus_name),
    Row("relayPassword (secret)", secret("relayPassword", "another-Relay-passw0rd")),
    Row("sshPrivateKey (secret)", lambda values, secrets, sim: secrets.update(
        sshPrivateKey=_rotated_admin_key())),
    Row("dkimSelector (alone: the old key goes at once)", setting("dkimSelector", lambda old, v: "jm2")),
    Row("dkimSelector + dkimRetired (two-phase rotation)", _rotate),
    Row("dkimRetired (its dkimRetentionDays are over)", _retention_over),
    Row("dkimRetentionDays (shortened past a retired key)", _retention_shortened),
    Row("messageSizeLimit", setting("messageSizeLimit", lambda old, v: 20971520)),
    Row("spfExtra", setting("spfExtra", lambda old, v: [*(old or []), "include:_spf.other.example.net"])),
    Row("spfAll", setting("spfAll", lambda old, v: "-all" if old != "-all" else "~all")),
    Row("dmarc.policy", setting("dmarc.policy", lambda old, v: "none" if old != "none" else "quarantine")),
    Row("dmarc.rua", setting("dmarc.rua", lambda old, v: "reports@" + v["domain"])),
    Row("dmarc.testing", setting("dmarc.testing", lambda old, v: not old)),
    Row("fromAddress", setting("fromAddress", lambda old, v: "noreply@" + v["domain"])),
    Row("rerouteTo", _only_if_set("rerouteTo", lambda old, v: "other-inbox@example.com")),
    Row("rerouteOptOut", _only_if_set("rerouteOptOut", lambda old, v: False)),
    Row("drainSeconds", setting("drainSeconds", lambda old, v: 60)),
    Row("pushSerial", setting("pushSerial", lambda old, v: (old or 0) + 1)),
    Row("maillogFile", setting("maillogFile", lambda old, v: "/var/log/jira-mail.log")),
    Row("verify.enabled", lambda values, secrets, sim: values.setdefault("verify", {}).update(enabled=False)),
    Row("verify.nameserver", lambda values, secrets, sim: values.setdefault("verify", {}).update(
        nameserver="198.51.100.99")),
    Row("verify.authoritative", lambda values, secrets, sim: values.setdefault("verify", {}).update(
        authoritative=not values["verify"].get("authoritative", True))),
    Row("verify.waitSeconds", lambda values, secrets, sim: values.setdefault("verify", {}).update(waitSeconds=60)),
    Row("canary.mailboxes", setting("canary", lambda old, v: {"mailboxes": [{
        "address": "jira-canary@example.org", "imapHost": "imap.example.org", "user": "jira-canary@example.org",
        "passwordCommand": "pass show mail/jira-canary"}]})),
)


# -- planning ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    # "plan", "fails" (the preview passes, the `up` stops at a step), "refused" (protect), "stopped" (the
    # program's login check), "invalid" (the settings check), "n/a"
    outcome: str
    plan: plan.Plan | None = None
    message: str = ""
    failed: StepFailed | None = None


@cache
def deployed(shape_name: str) -> Simulator:
    values, secrets, stack = shape(shape_name)
    sim = Simulator()
    sim.run(values, secrets, stack, preview=False)
    return sim


def plan_change(shape_name: str, row: Row) -> Cell:
    values, secrets, stack = shape(shape_name)
    base = deployed(shape_name)
    sim = Simulator(state=dict(base.state), generations=dict(base.generations), stack=stack)
    try:
        row.change(values, secrets, sim)
    except NotApplicable:
        return Cell("n/a")
    try:
        planned, _, _ = sim.run(values, secrets, stack, preview=True)
    except plan.ProtectedError as error:
        return Cell("refused", message=str(error))
    except ConfigError as error:
        return Cell("invalid", message=str(error))
    except Exception as error:  # the SDK wraps what the program raised
        if "invalid stack configuration" in str(error):
            return Cell("invalid", message=str(error))
        if login := caused_by(error, sshkeys.LoginChanged):
            return Cell("stopped", message=str(login))
        raise
    if any(s.op in ("create", "replace") and s.type == plan.RECORD for s in planned.steps):
        # Only a record create can fail at its step on what the preview showed: apply the plan to a copy.
        trial = Simulator(state=dict(sim.state), generations=dict(sim.generations), ami=dict(sim.ami), stack=stack)
        try:
            trial.run(values, secrets, stack, preview=False)
        except StepFailed as failure:
            return Cell("fails", planned, str(failure), failure)
    return Cell("plan", planned)


def caused_by(error: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The exception of `kind` in error's chain: the SDK re-raises what an apply raised as a ValueError."""
    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, kind):
        seen = seen.__cause__ or seen.__context__
    return seen


@cache
def matrix() -> dict[tuple[str, str], Cell]:
    return {(row.label, name): plan_change(name, row) for row in ROWS for name in SHAPES}


def describe(cell: Cell) -> str:
    if cell.outcome == "n/a":
        return "–"
    if cell.outcome == "invalid":
        return "refused by the settings check"
    if cell.outcome == "stopped":
        return "**stopped at preview**: differs from the host's first boot (steps by hand, then `sshMovedByHand`)"
    if cell.outcome == "refused":
        names = sorted({line.split('"')[1].rsplit("::", 1)[-1] for line in cell.message.splitlines()
                        if line.startswith(("unable to replace", "resource "))})
        return "**refused** (protected): " + ", ".join(names)
    assert cell.plan is not None
    if cell.outcome == "fails":
        assert cell.failed is not None
        mark = OP_MARK[cell.failed.step.op]
        return (f"**fails at** {mark}{cell.failed.step.name}: Route53 still holds its record set (the old "
                f"resource is deleted only at the end of the `up`); done before: "
                + (" ".join(sorted(f"{OP_MARK[s.op]}{s.name}" for s in cell.failed.done
                                   if not s.type.startswith("jira-mailhost:"))) or "nothing"))
    parts = []
    for step in cell.plan.changes():
        if step.type.startswith("jira-mailhost:"):
            continue  # components: no provider, nothing happens to them but their children
        why = ""
        if step.op == "replace":
            why = f" ({', '.join(sorted({p.split('.')[0].split('[')[0] for p in step.replace_because}))})"
        elif step.restarts:
            why = " (stops and starts it)"
        parts.append(f"{OP_MARK[step.op]}{step.name}{why}")
    return "no change" if not parts else " ".join(sorted(parts, key=lambda p: p.lstrip("+-~")))


def table() -> str:
    lines = ["| change | production (EC2, direct) | staging (adopted, relay) | lab |", "|---|---|---|---|"]
    cells = matrix()
    for row in ROWS:
        lines.append(f"| `{row.label}` | " + " | ".join(describe(cells[(row.label, s)]) for s in SHAPES) + " |")
    return "\n".join(lines)


def without_preview(row: Row, shape_name: str = "production") -> StepFailed | None:
    """What `pulumi up --skip-preview` would do for a change the preview refuses, were the program's own
    check (publish/previewed.py) not there: the step the engine stops at, and what ran before it."""
    values, secrets, stack = shape(shape_name)
    base = deployed(shape_name)
    sim = Simulator(state=dict(base.state), generations=dict(base.generations), ami=dict(base.ami), stack=stack)
    row.change(values, secrets, sim)
    from mailhost.lab.engine.program import stack_config
    from mailhost.publish import previewed

    config, _ = stack_config("jira-mailhost", values, secrets)
    previewed.note_preview(previewed.config_digest("jira-mailhost", stack, config))  # the check passed
    try:
        sim.run(values, secrets, stack, preview=False, skip_preview=True)
    except StepFailed as failure:
        return failure
    return None


def skip_preview_table() -> str:
    lines = ["| change refused by the preview (production) | without a preview the engine stops at | "
             "steps that ran before it |", "|---|---|---|"]
    for row in ROWS:
        if matrix()[(row.label, "production")].outcome != "refused":
            continue
        failure = without_preview(row)
        assert failure is not None, f"{row.label}: refused by the preview, but an up without one went through"
        ran = " ".join(sorted(f"{OP_MARK[s.op]}{s.name}" for s in failure.done
                              if not s.type.startswith("jira-mailhost:"))) or "nothing"
        lines.append(f"| `{row.label}` | {OP_MARK[failure.step.op]}{failure.step.name} | {ran} |")
    return "\n".join(lines)


def readme_section(readme: Path = REPO / "README.md", begin: str = BEGIN, end: str = END) -> str:
    text = readme.read_text()
    return text.split(begin, 1)[1].split(end, 1)[0].strip() if begin in text else ""


def main(argv: list[str]) -> int:
    sections = {(BEGIN, END): table(), (SKIP_BEGIN, SKIP_END): skip_preview_table()}
    if argv[:1] == ["--check"]:
        for (begin, end), current in sections.items():
            if readme_section(begin=begin, end=end) != current:
                print(f"README.md's table between {begin} and {end} is not current: run `python -m "
                      "mailhost.lab.engine.matrix` and paste each table between its markers", file=sys.stderr)
                return 1
        return 0
    for (begin, end), current in sections.items():
        print(f"{begin}\n{current}\n{end}\n")
    return 0


def preview_file(path: Path, secrets: Secrets | None = None) -> str:
    """Without a lab: the plan of a first `pulumi up` of a stack file (every resource a create), from the
    simulated engine; secrets the file only marks `secure` get placeholders (shown as [secret])."""
    from mailhost.lab.engine import show

    values, secure = values_from_stack_file(path)
    placeholders = shape("production")[1]
    given = {**{k: placeholders.get(k, "preview-placeholder-Secret1") for k in secure | {"sshPrivateKey"}},
             **(secrets or {})}
    if values.get("delivery", {}).get("mode") == "relay":
        given.setdefault("relayPassword", "preview-placeholder-Secret1")
    stack = path.stem.removeprefix("Pulumi.")
    planned, regs, _ = Simulator(stack=stack).run(values, given, stack, preview=True)
    return show.render(planned, regs, {}, stack)


__all__ = ["AMI", "ROWS", "SHAPES", "matrix", "plan_change", "preview_file", "table"]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
