"""The lab's engine model decides as the Pulumi engine and the providers do (facts in engine/providers.py)."""

from __future__ import annotations

import pytest

from mailhost.lab.engine import plan, providers
from mailhost.lab.engine.plan import Deployed, Registration
from mailhost.lab.engine.providers import UNKNOWN

RECORD = "aws:route53/record:Record"
REMOTE = "command:remote:Command"
KEY = "tls:index/privateKey:PrivateKey"


def reg(resource: str, type_: str = RECORD, **inputs: object) -> Registration:
    return Registration(urn=f"urn::{type_}::{resource}", type=type_, name=resource, inputs=inputs)


def dep(r: Registration, outputs: dict[str, object] | None = None, **options: object) -> Deployed:
    return Deployed(r.urn, r.type, r.name, r.inputs, outputs or {}, **options)  # type: ignore[arg-type]


A = reg("a", name="jira.example.com", type="A", zoneId="Z1", records=["203.0.113.5"], ttl=300)


def test_same_create_update_and_a_force_new_replace() -> None:
    assert plan.plan_one(A, None).op == "create"
    assert plan.plan_one(A, dep(A)).op == "same"
    moved = reg("a", name="jira.example.com", type="A", zoneId="Z1", records=["203.0.113.6"], ttl=300)
    step = plan.plan_one(moved, dep(A))
    assert (step.op, step.changed) == ("update", ("records[0]",))
    renamed = reg("a", name="mail.example.com", type="A", zoneId="Z1", records=["203.0.113.5"], ttl=300)
    step = plan.plan_one(renamed, dep(A))
    assert (step.op, step.replace_because, step.delete_first) == ("replace", ("name",), False)


def test_an_unknown_force_new_input_at_preview_plans_a_replace_and_an_unknown_other_input_an_update() -> None:
    unknown_name = reg("a", name=UNKNOWN, type="A", zoneId="Z1", records=["203.0.113.5"], ttl=300)
    assert plan.plan_one(unknown_name, dep(A)).op == "replace"
    unknown_value = reg("a", name="jira.example.com", type="A", zoneId="Z1", records=[UNKNOWN], ttl=300)
    assert plan.plan_one(unknown_value, dep(A)).op == "update"


def test_ignore_changes_keeps_the_old_value_and_replace_on_changes_turns_an_update_into_a_replace() -> None:
    old = reg("push", REMOTE, create="x", triggers=["1"])
    new = Registration(old.urn, REMOTE, "push", {"create": "y", "triggers": ["1"]}, ignore_changes=("create",))
    assert plan.plan_one(new, dep(old)).op == "same"
    changed = Registration(old.urn, REMOTE, "push", {"create": "x", "triggers": ["2"]},
                           replace_on_changes=("triggers[*]",))
    assert plan.plan_one(changed, dep(old)).op == "replace"
    # the provider's own fact: a Command's `triggers` is replaceOnChanges in its schema
    assert plan.plan_one(reg("push", REMOTE, create="x", triggers=["2"]), dep(old)).op == "replace"
    assert plan.plan_one(reg("push", REMOTE, create="y", triggers=["1"]), dep(old)).op == "update"


def test_delete_before_replace_from_the_option() -> None:
    old = reg("k", KEY, algorithm="RSA", rsaBits=2048)
    new = Registration(old.urn, KEY, "k", {"algorithm": "RSA", "rsaBits": 4096}, delete_before_replace=True)
    step = plan.plan_one(new, dep(old))
    assert (step.op, step.delete_first) == ("replace", True)


def test_protect_refuses_a_replace_only_when_state_and_program_both_protect_it() -> None:
    renamed = Registration(A.urn, RECORD, "a", {**A.inputs, "name": "mail.example.com"}, protect=True)
    with pytest.raises(plan.ProtectedError, match="unable to replace resource \"urn::aws:route53/record:Record::a\""):
        plan.plan([renamed], {A.urn: dep(A, protect=True)})
    unprotected = Registration(A.urn, RECORD, "a", {**A.inputs, "name": "mail.example.com"}, protect=False)
    assert plan.plan([unprotected], {A.urn: dep(A, protect=True)}).step("a").op == "replace"


def test_a_protected_resource_left_out_of_the_program_is_refused_even_when_retained() -> None:
    with pytest.raises(plan.ProtectedError, match="cannot be deleted\nbecause it is protected"):
        plan.plan([], {A.urn: dep(A, protect=True, retain_on_delete=True)})
    steps = plan.plan([], {A.urn: dep(A, retain_on_delete=True)}).steps
    assert [(s.op, s.retain) for s in steps] == [("delete", True)]


def test_deletes_run_dependents_first() -> None:
    key = reg("key", KEY, algorithm="RSA")
    record = reg("dkim", RECORD, name="s._domainkey.example.com")
    state = {key.urn: dep(key), record.urn: Deployed(record.urn, RECORD, "dkim", record.inputs, {},
                                                     dependencies=(key.urn,))}
    assert [s.name for s in plan.deletions(state, [])] == ["dkim", "key"]


def test_preview_outputs_as_the_engine_hands_them() -> None:
    old = reg("push", REMOTE, create="x")
    outputs: dict[str, object] = {"create": "x", "stdout": "done"}
    assert plan.preview_outputs(plan.Step("same", old.urn, REMOTE, "push"), old, outputs) == outputs
    new = reg("push", REMOTE, create="y", stdin=UNKNOWN)
    updated = plan.preview_outputs(plan.plan_one(new, dep(old, outputs)), new, outputs)
    assert updated == {"create": "y"}, "stdout is recomputed by the update; an unknown input stays unknown"
    assert plan.preview_outputs(plan.Step("create", new.urn, REMOTE, "push"), new, None) == {"create": "y"}


def test_every_resource_type_the_program_registers_has_its_facts() -> None:
    from mailhost.lab.engine import simulate
    from mailhost.lab.engine.matrix import deployed

    types = {entry.type for entry in deployed("production").state.values()} | {
        entry.type for entry in deployed("staging").state.values()}
    listed = set(providers.PROVIDERS)
    assert {t for t in types if not t.startswith("jira-mailhost:")} <= listed, types - listed
    assert simulate.AMI["id"].startswith("ami-")


def test_the_runner_runs_a_command_step_where_the_provider_would() -> None:
    """Update: new inputs (the new host); replace with deleteBeforeReplace: old delete on the old host first;
    a create-before-delete replace only creates here (the old one's delete comes with the `up`'s deletes)."""
    from mailhost.lab.runner import command_step

    old = {"connection": {"host": "198.51.100.20"}, "create": "apply", "delete": "teardown"}
    new = {"connection": {"host": "198.51.100.77"}, "create": "apply", "update": "apply2", "delete": "teardown"}
    ran: list[tuple[str, str | None]] = []

    def run(inputs: dict[str, object], script: str | None, stdin: str | None) -> tuple[str, str]:
        ran.append((str(inputs["connection"]["host"]), script))  # type: ignore[index]
        return "", ""

    command_step("push", new, old, plan.Step("update", "u", REMOTE, "push"), run)
    assert ran == [("198.51.100.77", "apply2")]
    ran.clear()
    command_step("push", new, old, plan.Step("replace", "u", REMOTE, "push", delete_first=True), run)
    assert ran == [("198.51.100.20", "teardown"), ("198.51.100.77", "apply")]
    ran.clear()
    command_step("push", new, old, plan.Step("replace", "u", REMOTE, "push", delete_first=False), run)
    assert ran == [("198.51.100.77", "apply")]


def test_runner_events_stay_one_per_line_from_many_threads() -> None:
    """The runner's stdout is a pipe its caller reads line by line; resources register on worker threads."""
    import json
    import subprocess
    import sys

    code = ("import threading\nfrom mailhost.lab.runner import emit\n"
            "ts = [threading.Thread(target=lambda i=i: [emit('resource', n=i, k=k) for k in range(3000)])"
            " for i in range(8)]\n[t.start() for t in ts]\n[t.join() for t in ts]\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 24000 and all(json.loads(line)["event"] == "resource" for line in lines)


def test_ignore_changes_on_one_map_key_keeps_only_that_key() -> None:
    """ignoreChanges `tags["k"]` (PropertyPath.Reset): the old value stands at that key, the other keys follow
    the program, and a key the old inputs lack is deleted from the new ones."""
    old = {"tags": {"Name": "a", "k": "admin@22"}, "ami": "ami-1"}
    new = {"tags": {"Name": "b", "k": "admin@2222"}, "ami": "ami-2"}
    assert plan.with_ignored_kept(new, old, ['tags["k"]']) == {"tags": {"Name": "b", "k": "admin@22"}, "ami": "ami-2"}
    assert plan.with_ignored_kept(new, {"tags": {"Name": "a"}}, ['tags["k"]'])["tags"] == {"Name": "b"}
    assert plan.with_ignored_kept(new, old, ["tags"])["tags"] == old["tags"]
    kept = reg("i", "aws:ec2/instance:Instance", tags={"Name": "a", "k": "admin@2222"})
    before = dep(reg("i", "aws:ec2/instance:Instance", tags={"Name": "a", "k": "admin@22"}))
    assert plan.plan_one(kept, before).op == "update"
    from dataclasses import replace
    assert plan.plan_one(replace(kept, ignore_changes=('tags["k"]',)), before).op == "same"
