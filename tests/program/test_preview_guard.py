"""A production update runs only after a preview of the same settings (mailhost/publish/previewed.py):
`pulumi up --skip-preview` and the Automation API's up would otherwise meet a protected resource's refusal
only at its own step, after other steps ran (README: "Production changes go through a preview")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pulumi
import pytest

from mailhost.publish import previewed
from tests.program import stacks
from tests.program.harness import Run, admin_key_openssh, configure, execute, run_program

SECRETS = {"sshPrivateKey": admin_key_openssh()}


@pytest.fixture(autouse=True)
def no_earlier_previews(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no preview noted (other tests in this process preview production too)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def update_without_preview(values: dict[str, Any], stack: str) -> Run:
    secrets = {**SECRETS, "relayPassword": stacks.RELAY_PASSWORD} if "relay" in str(values.get("delivery")) else SECRETS
    run = configure(values, secrets, preview=False, stack=stack, skip_preview=True)

    @pulumi.runtime.test
    def program() -> None:
        execute(run)

    program()
    return run


def test_a_production_update_nobody_previewed_stops_before_registering_anything() -> None:
    values = stacks.ec2_direct_production()
    run = configure(values, SECRETS, preview=False, stack="production", skip_preview=True)

    @pulumi.runtime.test
    def program() -> None:
        execute(run)

    with pytest.raises(Exception, match="no preview of these settings ran in the last hour") as caught:
        program()
    assert "Run `pulumi up` (it previews first)" in str(caught.value)
    assert [r for r in run.monitor.registrations if not r.type.startswith("pulumi:")] == []


def test_a_previewed_production_update_runs_and_other_settings_need_their_own_preview() -> None:
    values = stacks.ec2_direct_production()
    run_program(values, SECRETS, preview=True, stack="production")
    done = update_without_preview(values, "production")
    assert done.one("jira-push").protect
    changed = {**values, "messageSizeLimit": 20971520}
    with pytest.raises(Exception, match="no preview of these settings ran"):
        update_without_preview(changed, "production")
    with pytest.raises(Exception, match="no preview of these settings ran"):  # another stack's preview
        update_without_preview(values, "production-2")


def test_a_staging_update_needs_no_preview() -> None:
    run = update_without_preview(stacks.existing_relay_staging(), "staging")
    assert run.one("jira-push").protect is False


def test_the_note_is_of_the_settings_without_secrets_and_lasts_an_hour(tmp_path: Path) -> None:
    values = {"environment": "production", "domain": "example.com", "relayPassword": "one"}
    digest = previewed.settings_digest("jira-mailhost", "production", values)
    assert digest == previewed.settings_digest("jira-mailhost", "production", {**values, "relayPassword": "two"})
    assert digest != previewed.settings_digest("jira-mailhost", "production", {**values, "domain": "example.org"})
    assert digest != previewed.settings_digest("jira-mailhost", "prod", values)
    assert not previewed.was_previewed(digest, directory=tmp_path)
    previewed.note_preview(digest, directory=tmp_path)
    now = time.time()
    assert previewed.was_previewed(digest, now=now, directory=tmp_path)
    assert previewed.was_previewed(digest, now=now + previewed.VALID_SECONDS - 5, directory=tmp_path)
    assert not previewed.was_previewed(digest, now=now + previewed.VALID_SECONDS + 5, directory=tmp_path)


def test_a_stopped_preview_forgets_the_note_of_this_stack_and_these_settings_only() -> None:
    """components.settings.preview_stopped, as the EC2 login check calls it: the note of these settings on
    this stack goes, a note of the same settings on another stack stays."""
    from components.settings import preview_stopped
    from mailhost.lab.engine.program import stack_config

    values = stacks.ec2_direct_production()
    configure(values, SECRETS, preview=True, stack="production")
    config, _ = stack_config("jira-mailhost", values, SECRETS)
    here, elsewhere = (previewed.config_digest("jira-mailhost", s, config) for s in ("production", "production-eu"))
    previewed.note_preview(here)
    previewed.note_preview(elsewhere)
    preview_stopped()
    assert not previewed.was_previewed(here) and previewed.was_previewed(elsewhere)
