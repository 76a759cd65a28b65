"""bench/mutation.sh's scorer: a SURVIVORS.md entry excuses a survivor only while its diff hash matches."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.mutation import mutants

DIFF = """--- mailhost/records/grammar.py
+++ mailhost/records/grammar.py
@@ -3,3 +3,3 @@
     labels = name.split(".")
-    if len(name) > 253 or not all(LABEL.fullmatch(p) for p in parts):
+    if len(name) > 254 or not all(LABEL.fullmatch(p) for p in parts):
         raise ValueError(what)
"""
KEY = mutants.diff_hash(DIFF)
ENTRY = f"""## mailhost.records.grammar

- `mailhost.records.grammar.x_fqdn__mutmut_7` `diff:{KEY}`: equivalent: the length check runs first
  `if len(name) > 254 or not all(LABEL.fullmatch(p) for p in parts):`
"""


def test_an_entry_explains_the_mutant_with_its_diff_whatever_its_number(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = tmp_path / "SURVIVORS.md"
    md.write_text(ENTRY)
    listed = mutants.listed_survivors(md)
    assert listed == {KEY: "mailhost.records.grammar.x_fqdn__mutmut_7"}
    diffs = {"mailhost.records.grammar.x_fqdn__mutmut_9": DIFF,  # renumbered: the same mutant
             "mailhost.records.grammar.x_fqdn__mutmut_7": DIFF.replace("254", "252"),  # another one now
             "mailhost.records.other.x_fqdn__mutmut_9": DIFF.replace("grammar.py", "other.py")}  # moved module
    monkeypatch.setattr(mutants, "diff_of", diffs.__getitem__)
    assert mutants.explained("mailhost.records.grammar.x_fqdn__mutmut_9", listed)
    assert not mutants.explained("mailhost.records.grammar.x_fqdn__mutmut_7", listed)
    assert mutants.explained("mailhost.records.other.x_fqdn__mutmut_9", listed), "file names are not hashed"
    context = DIFF.replace("labels = name.split", "parts = name.split")
    assert mutants.diff_hash(context) != KEY, "a change of the function around the mutant makes the entry stale"


def test_check_reports_an_entry_no_mutant_matches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    md = tmp_path / "SURVIVORS.md"
    md.write_text(ENTRY)
    names = {"mailhost.records.grammar.x_fqdn__mutmut_1": DIFF, "mailhost.records.grammar.x_label__mutmut_1": ""}
    monkeypatch.setattr(mutants, "results", lambda: dict.fromkeys(names))
    monkeypatch.setattr(mutants, "diff_of", names.__getitem__)
    assert mutants.check(md) == 0
    names["mailhost.records.grammar.x_fqdn__mutmut_1"] = DIFF.replace("254", "255")
    assert mutants.check(md) == 1
    assert "stale: mailhost.records.grammar.x_fqdn__mutmut_7" in capsys.readouterr().out


def test_the_recorded_file_parses_whole() -> None:
    """Every bullet of the real SURVIVORS.md yields its hash (a format slip would excuse nothing)."""
    path = Path(__file__).parents[1] / "mutation" / "SURVIVORS.md"
    assert len(mutants.listed_survivors(path)) == path.read_text().count("\n- `") > 100
