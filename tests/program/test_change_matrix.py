"""The change matrix (mailhost/lab/engine/matrix.py): every setting changed alone on each shipped shape,
planned by the engine model; the policies the README promises, and its table kept current."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mailhost.lab.engine import matrix
from mailhost.lab.engine.matrix import ROWS, SHAPES, Cell
from mailhost.lab.engine.plan import Deployed
from mailhost.lab.engine.simulate import Simulator

# Changes that must reach every host's Postfix: each host's push is updated in place, exactly once.
CONFIG_ROWS = ("messageSizeLimit", "drainSeconds", "maillogFile", "dkimSelector + dkimRetired (two-phase rotation)",
               "dkimSelector (alone: the old key goes at once)", "delivery.mode", "environment",
               "delivery.relay.host", "delivery.relay.port", "delivery.relay.username",
               "delivery.relay.tlsFingerprint", "relayPassword (secret)", "rerouteTo",
               "sshPrivateKey (secret)")
HOST_SET_CHANGES = ("hosts[] (remove a host)", "hosts[].name (rename)")  # the push of a host that goes is deleted
HOST_MOVES = "hosts[].existing.ipv4 (host moves)"  # a new machine: the old one is torn down
LOGIN_ROWS = ("hosts[].sshUser", "hosts[].sshPort")  # cloud-init set them up at an EC2 host's first boot


@pytest.fixture(scope="module")
def cells() -> dict[tuple[str, str], Cell]:
    return matrix.matrix()


def pushes(cell: Cell) -> dict[str, str]:
    assert cell.plan is not None
    return {s.name: s.op for s in cell.plan.steps if s.type == "command:remote:Command"}


def test_every_key_of_the_readme_config_table_has_a_row() -> None:
    import re

    from mailhost.lab.engine.simulate import REPO

    text = REPO.joinpath("README.md").read_text()
    table = text.split("## Configuration (", 1)[1].split("### What a stack value can change", 1)[0]
    keys = set()
    for cell in re.findall(r"^\| ((?:`[^`]+`(?:, )?)+)", table, re.MULTILINE):
        for key in re.findall(r"`([^`]+)`", cell):
            keys.add(key)
    labels = " ".join(row.label for row in ROWS)
    missing = sorted(k for k in keys if k.lstrip(".").removesuffix("[]") not in labels)
    assert len(keys) > 30 and not missing, missing


def test_production_refuses_exactly_the_documented_deliberate_steps(cells: dict[tuple[str, str], Cell]) -> None:
    for row in ROWS:
        cell = cells[(row.label, "production")]
        if cell.outcome == "n/a":
            continue
        assert cell.outcome != "invalid", (row.label, cell.message)
        if row.label in LOGIN_ROWS:
            assert cell.outcome == "stopped", f"{row.label}: an EC2 host's login change must stop at preview"
        elif row.deliberate:
            assert cell.outcome == "refused", f"{row.label}: documented as a deliberate step but planned"
        else:
            assert cell.outcome == "plan", f"{row.label}: production refuses it:\n{cell.message}"


def test_no_settings_change_runs_teardown_outside_production(cells: dict[tuple[str, str], Cell]) -> None:
    """Teardown is the push's delete: it runs on a replace or a delete of the push, and only a host that
    leaves the stack may see it."""
    for row in ROWS:
        for shape in ("staging", "lab"):
            cell = cells[(row.label, shape)]
            if cell.outcome != "plan" or row.label in (*HOST_SET_CHANGES, HOST_MOVES):
                continue
            torn = {n: op for n, op in pushes(cell).items() if op in ("replace", "delete")}
            assert not torn, f"{shape}: {row.label} tears down {torn}"


def test_config_changes_update_each_push_in_place_once(cells: dict[tuple[str, str], Cell]) -> None:
    checked = 0
    for label in CONFIG_ROWS:
        for shape in SHAPES:
            cell = cells[(label, shape)]
            if cell.outcome != "plan":
                continue
            ops = pushes(cell)
            assert ops and set(ops.values()) == {"update"}, f"{shape}: {label}: {ops}"
            checked += 1
    assert checked >= 25  # 27 today: the relay rows apply to staging only


def test_nothing_restarts_an_instance_but_its_instance_type(cells: dict[tuple[str, str], Cell]) -> None:
    for row in ROWS:
        cell = cells[(row.label, "production")]
        if cell.outcome != "plan":
            continue
        assert cell.plan is not None
        restarted = [s.name for s in cell.plan.steps if s.restarts]
        assert restarted == ([] if row.label != "hosts[].ec2.instanceType" else ["jira"]), (row.label, restarted)


def test_a_newly_published_ami_changes_nothing_and_a_chosen_one_is_a_deliberate_replace(
        cells: dict[tuple[str, str], Cell]) -> None:
    assert matrix.describe(cells[("a new Debian AMI is published", "production")]) == "no change"
    chosen = cells[("hosts[].ec2.ami (chosen)", "production")]
    assert chosen.outcome == "refused" and 'unable to replace resource "' in chosen.message


def test_the_readme_table_is_current() -> None:
    assert matrix.readme_section() == matrix.table(), (
        "run `.venv/bin/python -m mailhost.lab.engine.matrix` and paste it between the change-matrix markers")


def test_the_readme_table_without_a_preview_is_current() -> None:
    assert matrix.readme_section(begin=matrix.SKIP_BEGIN, end=matrix.SKIP_END) == matrix.skip_preview_table(), (
        "run `.venv/bin/python -m mailhost.lab.engine.matrix` and paste it between the skip-preview markers")


def test_without_a_preview_removing_a_host_would_drop_it_from_spf_and_then_stop() -> None:
    """Why production updates need their preview: the engine would update the domain's SPF (the host's
    address gone) and only then refuse the protected push, leaving that host running and failing SPF."""
    row = next(r for r in ROWS if r.label == "hosts[] (remove a host)")
    failure = matrix.without_preview(row)
    assert failure is not None and (failure.step.op, failure.step.name) == ("delete", "confluence-push")
    assert ("update", "spf") in {(s.op, s.name) for s in failure.done}
    assert "cannot be deleted" in str(failure) and "because it is protected" in str(failure)


def test_a_two_phase_rotation_keeps_the_old_record_and_the_retention_then_removes_it(
        cells: dict[tuple[str, str], Cell]) -> None:
    for shape in SHAPES:
        rotation = cells[("dkimSelector + dkimRetired (two-phase rotation)", shape)]
        assert rotation.plan is not None
        ops = {(s.name, s.op) for s in rotation.plan.changes()}
        assert ("jira-dkim-jm2", "create") in ops and ("jira-push", "update") in ops, ops
        assert not any(op in ("delete", "replace") and "dkim" in name for name, op in ops), ops
        over = cells[("dkimRetired (its dkimRetentionDays are over)", shape)]
        assert over.plan is not None
        assert {(s.name, s.op) for s in over.plan.changes()} >= {("jira-dkim-jm1", "delete"),
                                                                 ("jira-dkim-jm1-jira", "delete")}
        assert all(s.op == "delete" for s in over.plan.changes()), "nothing else moves when a retired key goes"


def test_a_stack_deployed_before_key_generations_keeps_its_dkim_record() -> None:
    """Releases before dkimRetired named the one DKIM record `<host>-dkim`; the alias takes its state over."""
    import dataclasses

    from mailhost.lab.engine.simulate import Simulator

    values, secrets, stack = matrix.shape("staging")
    base = matrix.deployed("staging")
    state = {}
    for urn, entry in base.state.items():
        if urn.endswith("::jira-dkim-jm1"):
            urn = urn.removesuffix("-jm1")
            entry = dataclasses.replace(entry, urn=urn, name="jira-dkim")
        state[urn] = entry
    planned, _, _ = Simulator(state=state, generations=dict(base.generations), stack=stack).run(
        values, secrets, stack, preview=True)
    assert planned.changes() == (), [(s.name, s.op) for s in planned.changes()]


def test_a_host_that_moves_is_torn_down_at_its_old_address_first(cells: dict[tuple[str, str], Cell]) -> None:
    for shape in ("staging", "lab"):
        cell = cells[(HOST_MOVES, shape)]
        assert cell.plan is not None
        push = cell.plan.step("jira-push")
        assert (push.op, push.replace_because, push.delete_first) == ("replace", ("triggers[0]",), True), push


def test_lab_preview_of_a_shipped_stack_file_without_a_lab(tmp_path: Path) -> None:
    """`mailhost lab preview --stack Pulumi.production.yaml`: the plan of a first deploy, secrets hidden."""
    from typer.testing import CliRunner

    from mailhost.lab.cli import lab_app
    from mailhost.lab.engine.simulate import REPO

    result = CliRunner().invoke(lab_app, ["preview", "--stack", str(REPO / "Pulumi.production.yaml"),
                                          "--state", str(tmp_path / "no-lab")])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Previewing update (production):"
    assert any(re.fullmatch(r"\+\s+aws:ec2/instance:Instance\s+confluence\s+create", line) for line in lines)
    assert re.search(r"\+ \d+ to create", result.output) and "to update" not in result.output
    assert "PRIVATE KEY" not in result.output and not (tmp_path / "no-lab").exists()


def test_the_lab_cli_prints_progress_and_plans_as_text() -> None:
    """`lab up` prints the plan through the progress callback: brackets must survive (rich markup is off)."""
    from mailhost.lab import cli

    _status, update = cli._progress()
    with cli.console.capture() as captured:
        update("plan:\n~  command:remote:Command  jira-push  update  [diff: ~update]\n"
               "    ~ stdin: [secret] => [secret]")
    text = captured.get()
    assert "[diff: ~update]" in text and "[secret] => [secret]" in text, text


def test_the_same_stack_from_another_checkout_plans_no_change(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """`pulumi up` from a second clone (or a moved project), each with its own venv inside it: the local
    commands name the interpreter from the project directory, so nothing is updated."""
    from mailhost.lab.engine.simulate import REPO, Simulator

    values, secrets, stack = matrix.shape("staging")
    sim = Simulator(stack=stack)
    plans = []
    for checkout in ("first-clone", "elsewhere/second-clone"):
        root = tmp_path / checkout
        (root / ".venv" / "bin").mkdir(parents=True)
        (root / "__main__.py").write_text((REPO / "__main__.py").read_text())
        monkeypatch.setattr("sys.executable", str(root / ".venv" / "bin" / "python"))
        plans.append(sim.run(values, secrets, stack, preview=False, program=root / "__main__.py")[0])
    first, second = plans
    assert {s.name for s in first.steps if s.op == "create"} >= {"verify-dns", "dkim-published"}
    assert second.changes() == (), [(s.op, s.name, s.changed) for s in second.changes()]


PLAIN_RENAME, RENAME_KEPT = "hosts[].name (rename)", "hosts[].previousName (rename, fqdn kept)"


def test_no_row_of_the_matrix_stops_mid_up(cells: dict[tuple[str, str], Cell]) -> None:
    """Every record's resource is named after its record set, so no rename or move makes Route53 see a
    CREATE for a set that a resource deleted at the end of the `up` still holds."""
    failing = {key: cell.message for key, cell in cells.items() if cell.outcome == "fails"}
    assert failing == {}
    plain = cells[(PLAIN_RENAME, "lab")]
    assert plain.outcome == "plan" and plain.plan is not None
    ptrs = {s.name: s.op for s in plain.plan.steps if s.name.endswith("-ptr")}
    assert ptrs == {"198.51.100.10-ptr": "update", "2001-db8-5100--10-ptr": "update"}, \
        "a plain rename points the address's PTR at the new name, in place"


def _orphaned(shape: str, suffix: str) -> tuple[dict[str, Any], dict[str, str], str, Simulator]:
    """The shape deployed, with the record whose name ends with `suffix` held by a resource the program no
    longer declares (as after a hand edit of the state): the next `up` creates the set again."""
    import dataclasses

    values, secrets, stack = matrix.shape(shape)
    base = matrix.deployed(shape)
    state = {}
    for urn, entry in base.state.items():
        if entry.name.endswith(suffix):
            urn, entry = urn + "-orphan", dataclasses.replace(entry, urn=urn + "-orphan", name=entry.name + "-orphan")
        state[urn] = entry
    return values, secrets, stack, Simulator(state=state, generations=dict(base.generations), stack=stack)


def test_route53_refuses_a_set_another_resource_holds_and_the_up_stops_there() -> None:
    from mailhost.lab.engine.plan import StepFailed

    values, secrets, stack, sim = _orphaned("lab", "198.51.100.10-ptr")
    with pytest.raises(StepFailed) as caught:
        sim.run(values, secrets, stack, preview=False)
    assert caught.value.step.name == "198.51.100.10-ptr" and "type='PTR'] but it already exists" in str(caught.value)
    assert not any(s.op == "delete" for s in caught.value.done), "deletes come last: the orphan still holds the set"


def test_a_failed_up_keeps_what_ran_and_every_old_resource() -> None:
    from mailhost.lab.engine.plan import StepFailed

    values, secrets, stack, sim = _orphaned("lab", "198.51.100.10-ptr")
    values["messageSizeLimit"] = 20971520  # an update of the push, which waits for the host's records
    with pytest.raises(StepFailed):
        sim.run(values, secrets, stack, preview=False)
    names = {d.name for d in sim.state.values()}
    assert {"198.51.100.10-ptr-orphan", "jira-push", "jira.example.com-a"} <= names
    assert "198.51.100.10-ptr" not in names


@pytest.mark.parametrize("shape", SHAPES)
def test_a_stack_deployed_with_records_named_after_hosts_keeps_every_record(shape: str) -> None:
    """Releases before record-set names called a host's records `<host>-a`, `-aaaa`, `-spf`, `-ptr4`, `-ptr6`;
    their aliases take each state over, so upgrading plans no change."""
    import dataclasses

    from mailhost.publish import plan as records_plan
    from mailhost.publish.stack import parse_settings

    values, secrets, stack = matrix.shape(shape)
    settings = parse_settings(values, set(secrets))
    legacy = {key: records_plan.legacy_record_key(host, rtype, zone)
              for host in settings.hosts for key, zone, rtype, _ in records_plan.record_keys(settings, host)}
    base = matrix.deployed(shape)
    state = {}
    for urn, entry in base.state.items():
        if entry.name in legacy and legacy[entry.name] != entry.name:
            old = legacy[entry.name]
            urn, entry = urn.removesuffix(entry.name) + old, dataclasses.replace(
                entry, urn=urn.removesuffix(entry.name) + old, name=old)
        state[urn] = entry
    assert {e.name for e in state.values()} >= {"jira-a", "jira-spf"}
    planned, _, _ = Simulator(state=state, generations=dict(base.generations), stack=stack).run(
        values, secrets, stack, preview=True)
    assert planned.changes() == (), [(s.name, s.op) for s in planned.changes()]


def test_a_rename_with_previous_name_moves_every_resource(cells: dict[tuple[str, str], Cell]) -> None:
    """Nothing of the host is created or deleted but what is named after it; its push re-applies in place."""
    for shape in SHAPES:
        cell = cells[(RENAME_KEPT, shape)]
        assert cell.outcome == "plan" and cell.plan is not None, (shape, cell.message)
        assert {n: op for n, op in pushes(cell).items() if op != "same"} == {"jira2-push": "update"}, shape
        for step in cell.plan.changes():
            if step.op in ("create", "delete"):
                raise AssertionError(f"{shape}: {step.op} {step.name}")
            if step.op == "replace":
                assert step.name == "jira2-dkim-jm1" or step.name == "verify-dns", (shape, step)


def _ec2_sim() -> tuple[dict[str, Any], dict[str, str], str, Simulator]:
    values, secrets, stack = matrix.shape("production")
    base = matrix.deployed("production")
    return values, secrets, stack, Simulator(state=dict(base.state), generations=dict(base.generations),
                                             ami=dict(base.ami), stack=stack)


def _instance(sim: Simulator, name: str = "jira") -> Deployed:
    return next(d for d in sim.state.values() if d.type == "aws:ec2/instance:Instance" and d.name == name)


def _group_port(sim: Simulator, name: str = "jira-ssh") -> int:
    group = next(d for d in sim.state.values() if d.type == "aws:ec2/securityGroup:SecurityGroup" and d.name == name)
    return int(group.inputs["ingress"][0]["fromPort"])


def test_a_login_change_on_an_ec2_host_stops_at_preview_and_only_there(cells: dict[tuple[str, str], Cell]) -> None:
    stopped = {key for key, cell in cells.items() if cell.outcome == "stopped"}
    assert stopped == {(row, "production") for row in LOGIN_ROWS}
    assert "hosts[0].sshUser/sshPort: " in cells[("hosts[].sshPort", "production")].message
    assert "admin@2222" in cells[("hosts[].sshPort", "production")].message
    for shape in ("staging", "lab"):  # adopted hosts: the admin changed sshd; the push follows at once
        assert cells[("hosts[].sshPort", shape)].outcome == "plan"


def test_moving_the_ssh_port_by_hand_then_the_stack_follows_and_keeps_the_new_login() -> None:
    from mailhost.lab.engine.program import stack_config
    from mailhost.publish import previewed, sshkeys

    values, secrets, stack, sim = _ec2_sim()
    assert _instance(sim).inputs["tags"][sshkeys.LOGIN_TAG] == "admin@22"
    values["hosts"][0]["sshPort"] = 2222
    with pytest.raises(Exception) as caught:
        sim.run(values, secrets, stack, preview=True)
    assert matrix.caused_by(caught.value, sshkeys.LoginChanged) is not None
    config, _ = stack_config("jira-mailhost", values, secrets)
    assert not previewed.was_previewed(previewed.config_digest("jira-mailhost", stack, config)), \
        "a stopped preview must not let an `up --skip-preview` of the same settings past the production guard"
    assert _group_port(sim) == 22 and _instance(sim).inputs["tags"][sshkeys.LOGIN_TAG] == "admin@22"

    values["hosts"][0]["ec2"]["sshMovedByHand"] = True  # after the steps on the host
    planned, _, _ = sim.run(values, secrets, stack, preview=False)
    assert {s.name: s.op for s in planned.changes() if s.name in ("jira", "jira-ssh")} == {
        "jira": "update", "jira-ssh": "update"}
    assert not any(s.restarts for s in planned.steps), "a tag change never stops the instance"
    assert _group_port(sim) == 2222 and _instance(sim).inputs["tags"][sshkeys.LOGIN_TAG] == "admin@2222"

    del values["hosts"][0]["ec2"]["sshMovedByHand"]
    planned, _, _ = sim.run(values, secrets, stack, preview=True)
    assert {s.name: s.op for s in planned.steps if s.name in ("jira", "jira-ssh")} == {"jira": "same",
                                                                                       "jira-ssh": "same"}
    values["hosts"][0]["sshPort"] = 22  # back, without the steps: the host listens on 2222 now
    with pytest.raises(Exception) as caught:
        sim.run(values, secrets, stack, preview=True)
    assert "sshd was last set up for admin@2222" in str(matrix.caused_by(caught.value, sshkeys.LoginChanged))
