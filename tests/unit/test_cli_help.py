"""Every help text shows its words as written: a bracketed word such as [secret] or [diff: ...] is text
here, never markup that rich would swallow."""

from __future__ import annotations

import re
from typing import Any

import typer
from typer.testing import CliRunner

from mailhost.cli.app import _register, app

BRACKETED = re.compile(r"\[[^\]\n]{1,60}\]")


def commands() -> list[tuple[list[str], Any]]:
    """Every command and group with its path (typer builds them on its own copy of click)."""
    _register()
    root = typer.main.get_command(app)
    found: list[tuple[list[str], Any]] = []

    def walk(path: list[str], command: Any) -> None:
        found.append((path, command))
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk([*path, name], sub)

    walk([], root)
    return found


def flat(text: str) -> str:
    return " ".join(text.split())


def test_the_help_of_every_command_shows_each_bracketed_word_of_its_text() -> None:
    checked = []
    for path, command in commands():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        words = {flat(w) for text in texts for w in BRACKETED.findall(text)}
        if not words:
            continue
        shown = flat(CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "100"}).output)
        missing = sorted(w for w in words if w not in shown)
        assert not missing, f"mailhost {' '.join(path)} --help lost {missing}"
        checked.append(" ".join(path))
    assert "lab preview" in checked, "the lab preview's help names [secret]: the case this test exists for"
