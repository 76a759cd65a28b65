"""Reading the stack's config through Pulumi into the pure Settings model."""

from __future__ import annotations

from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from mailhost.publish import previewed
from mailhost.publish.stack import parse_settings, values_from_config
from mailhost.settings.config import PROJECT, SECRET_KEYS, ConfigError, Settings


def stack_values() -> dict[str, Any]:
    """Every `jira-mailhost:*` key of the stack (so typos are reported, not ignored)."""
    # The language host may pass config either way: explicitly set, or the PULUMI_CONFIG bag.
    return values_from_config({**runtime_config.get_config_env(), **runtime_config.CONFIG.get()})


def load_settings() -> Settings:
    """Validated settings, or a RunError listing each bad key and its fix (no traceback, no resources).
    A production update stops here too unless a preview of the same settings ran (publish/previewed.py)."""
    values = stack_values()
    try:
        settings = parse_settings(values)
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None
    if settings.production:
        stack = pulumi.get_stack()
        digest = previewed.settings_digest(PROJECT, stack, values)
        if pulumi.runtime.is_dry_run():
            previewed.note_preview(digest)
        elif not previewed.was_previewed(digest):
            raise pulumi.RunError(previewed.not_previewed_message(stack))
    return settings


def preview_stopped() -> None:
    """A check that needs the state refused this preview: an `up --skip-preview` of the same settings must not
    pass the production guard on its strength."""
    previewed.forget_preview(previewed.settings_digest(PROJECT, pulumi.get_stack(), stack_values()))


def secret(key: str) -> pulumi.Output[str] | None:
    assert key in SECRET_KEYS
    return pulumi.Config(PROJECT).get_secret(key)


__all__ = ["Settings", "load_settings", "secret"]
