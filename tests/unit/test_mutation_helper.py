"""bench/mutation.sh's scorer: a SURVIVORS.md entry excuses a survivor only while it names that mutant's line."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutation import mutants

ENTRY = """## mailhost.records.grammar

- `mailhost.records.grammar.x_fqdn__mutmut_7`: equivalent: the length check runs first
  `if len(name) > 254 or not all(LABEL.fullmatch(p) for p in parts):`
"""


def test_an_entry_explains_its_mutant_only_while_the_recorded_line_matches(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = tmp_path / "SURVIVORS.md"
    md.write_text(ENTRY)
    listed = mutants.listed_survivors(md)
    assert listed == {"mailhost.records.grammar.x_fqdn__mutmut_7":
                      "if len(name) > 254 or not all(LABEL.fullmatch(p) for p in parts):"}
    same = ["if len(name) > 254 or not all(LABEL.fullmatch(p) for p in parts): # more"]
    monkeypatch.setattr(mutants, "mutated_lines", lambda name: same)
    assert mutants.explained("mailhost.records.grammar.x_fqdn__mutmut_7", listed)
    assert not mutants.explained("mailhost.records.grammar.x_fqdn__mutmut_8", listed)  # not listed
    monkeypatch.setattr(mutants, "mutated_lines", lambda name: ["if len(name) > 253 or not parts:"])
    assert not mutants.explained("mailhost.records.grammar.x_fqdn__mutmut_7", listed)  # renumbered: stale


def test_the_recorded_file_parses_whole() -> None:
    """Every bullet of the real SURVIVORS.md yields its name and line (a format slip would excuse nothing)."""
    path = Path(__file__).parents[1] / "mutation" / "SURVIVORS.md"
    assert len(mutants.listed_survivors(path)) == path.read_text().count("\n- `") > 100
