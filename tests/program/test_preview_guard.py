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


def test_the_note_is_of_the_settings_not_of_the_order_they_came_in() -> None:
    """Pulumi hands the config over as a map: the preview and the update must note the same digest whatever
    the order of its keys, nested ones included."""
    one = {"domain": "example.com", "delivery": {"mode": "direct", "maxConnections": 5}, "environment": "production"}
    other = {"environment": "production", "delivery": {"maxConnections": 5, "mode": "direct"}, "domain": "example.com"}
    assert previewed.settings_digest("jira-mailhost", "production", one) == \
        previewed.settings_digest("jira-mailhost", "production", other)


def test_a_note_lasts_from_the_instant_it_is_written_to_just_before_the_hour(tmp_path: Path) -> None:
    import os

    digest = "d" * 64
    previewed.note_preview(digest, directory=tmp_path)
    noted = 1_800_000_000.0
    os.utime(tmp_path / digest, (noted, noted))
    assert previewed.was_previewed(digest, now=noted, directory=tmp_path), "the preview that just ran"
    assert previewed.was_previewed(digest, now=noted + previewed.VALID_SECONDS - 1, directory=tmp_path)
    assert not previewed.was_previewed(digest, now=noted + previewed.VALID_SECONDS, directory=tmp_path)
    assert not previewed.was_previewed(digest, now=noted - 1, directory=tmp_path), "a note from the future"


def test_forgetting_a_note_that_was_never_written_is_no_error(tmp_path: Path) -> None:
    previewed.forget_preview("e" * 64, directory=tmp_path)  # a preview stopped before its note
    previewed.note_preview("e" * 64, directory=tmp_path)
    previewed.forget_preview("e" * 64, directory=tmp_path)
    assert not previewed.was_previewed("e" * 64, directory=tmp_path)


def test_the_refusal_says_what_happened_why_it_matters_and_what_to_run() -> None:
    assert previewed.not_previewed_message("production") == (
        "stack 'production' is production, and no preview of these settings ran in the last hour on this machine "
        "(pulumi up --skip-preview, or the Automation API's up without preview). Without a preview a refused "
        "change to a protected resource stops only at its own step, after other steps ran. Run `pulumi up` (it "
        "previews first), or `pulumi preview` and then the update. Nothing was changed.")
