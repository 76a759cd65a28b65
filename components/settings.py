"""Reading the stack's config through Pulumi into the pure Settings model."""

from __future__ import annotations

import json
from typing import Any

import pulumi
from pulumi.runtime import config as runtime_config

from mailhost.publish.stack import parse_settings
from mailhost.settings.config import PROJECT, SECRET_KEYS, ConfigError, Settings


def _value(raw: str) -> Any:
    """Structured values (objects, lists) arrive as JSON text; everything else stays the string it was.

    Decoding scalars too would turn `dkimSelector: "2025"` into a number; the settings model
    converts "120" or "true" itself where a field wants a number or a flag."""
    if raw.lstrip().startswith(("{", "[")):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def stack_values() -> dict[str, Any]:
    """Every `jira-mailhost:*` key of the stack (so typos are reported, not ignored)."""
    prefix = f"{PROJECT}:"
    # The language host may pass config either way: explicitly set, or the PULUMI_CONFIG bag.
    everything = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {key[len(prefix):]: _value(raw) for key, raw in everything.items() if key.startswith(prefix)}


def load_settings() -> Settings:
    """Validated settings, or a RunError listing each bad key and its fix (no traceback, no resources)."""
    values = stack_values()
    try:
        return parse_settings(values)
    except ConfigError as error:
        raise pulumi.RunError(str(error)) from None


def secret(key: str) -> pulumi.Output[str] | None:
    assert key in SECRET_KEYS
    return pulumi.Config(PROJECT).get_secret(key)


__all__ = ["Settings", "load_settings", "secret"]
