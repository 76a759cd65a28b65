"""Loading a stack: read its file or Pulumi config, validate, then build what it adds up to (preflight).

Above planning and rendering on purpose: the settings model judges each value alone, and the
preflight renders every host's files and names every record with placeholders, so a stack that
cannot be published fails here, with a keyed message, before any resource is touched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from mailhost.publish import preflight
from mailhost.settings.config import PROJECT, ConfigError, Settings, secret_problems, validate_settings


def parse_settings(values: Mapping[str, Any], secrets_set: set[str] | frozenset[str] = frozenset(),
                   require_secrets: bool = True) -> Settings:
    """Validate raw stack values (keys without the project prefix); raise ConfigError listing every problem.

    `require_secrets=False` is for reading a stack without its secrets (`mailhost render`).
    """
    settings = validate_settings(values, secrets_set, require_secrets)
    if problems := secret_problems(values) + preflight.problems(settings):
        raise ConfigError(problems)
    return settings


def config_value(raw: str) -> Any:
    """A value as Pulumi hands it to the program: structured values (objects, lists) arrive as JSON text;
    everything else stays the string it was.

    Decoding scalars too would turn `dkimSelector: "2025"` into a number; the settings model
    converts "120" or "true" itself where a field wants a number or a flag."""
    if raw.lstrip().startswith(("{", "[")):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw
    return raw


def values_from_config(config: Mapping[str, str]) -> dict[str, Any]:
    """Our keys of the program's config (`jira-mailhost:<key>` → value), decoded as the program reads them."""
    prefix = f"{PROJECT}:"
    return {key[len(prefix):]: config_value(raw) for key, raw in config.items() if key.startswith(prefix)}


def values_from_stack_file(path: Path) -> tuple[dict[str, Any], set[str]]:
    """Read Pulumi.<stack>.yaml: our keys without the prefix, and which of them are secure."""
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ConfigError([("(stack file)", f"cannot read {path}: {error}")]) from None
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict | None):
        raise ConfigError([("(stack file)", f"{path}: 'config:' must be a mapping of 'jira-mailhost:<key>: value' "
                            "lines, as `pulumi config set` writes it")])
    values: dict[str, Any] = {}
    secure: set[str] = set()
    for full_key, value in (config or {}).items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != PROJECT:
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            secure.add(key)
            continue
        values[key] = value
    return values, secure


def load_stack_file(path: Path, require_secrets: bool = True) -> Settings:
    values, secure = values_from_stack_file(path)
    return parse_settings(values, secure, require_secrets)


def stack_file(stack: str, directory: Path | None = None) -> Path:
    """Pulumi.<stack>.yaml next to Pulumi.yaml (a path is taken as is)."""
    if stack.endswith((".yaml", ".yml")):
        return Path(stack)
    return (directory or Path.cwd()) / f"Pulumi.{stack}.yaml"
