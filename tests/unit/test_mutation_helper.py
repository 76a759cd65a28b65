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


def _repo(tmp_path: Path) -> tuple[Path, str]:
    """A git repository with a module, a test of it, and another module; returns it and its first commit."""
    import subprocess

    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(tmp_path), *args], capture_output=True, text=True, check=True,
                              env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "PATH": "/usr/bin:/bin",
                                   "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
                                   "HOME": str(tmp_path)}).stdout.strip()

    (tmp_path / "mailhost" / "records").mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    (tmp_path / "mailhost" / "records" / "grammar.py").write_text(
        "def fqdn(name):\n    labels = name.split('.')\n    if len(name) > 253:\n        raise ValueError(name)\n")
    (tmp_path / "mailhost" / "records" / "other.py").write_text("def f():\n    return 1\n")
    (tmp_path / "tests" / "test_other.py").write_text("from mailhost.records import other\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "base")
    return tmp_path, git("rev-parse", "HEAD")


def test_the_ci_draw_takes_mutants_on_changed_lines_and_of_modules_whose_tests_changed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    root, base = _repo(tmp_path)
    grammar = root / "mailhost" / "records" / "grammar.py"
    grammar.write_text(grammar.read_text().replace("> 253", ">= 254"))
    (root / "tests" / "test_other.py").write_text("from mailhost.records import other  # weakened\n")
    assert mutants.changed_lines(root, base) == {"mailhost/records/grammar.py": {"if len(name) >= 254:"}}
    assert mutants.tested_modules(root, base) == {"mailhost.records.other"}
    on_line = "-    if len(name) >= 254:\n+    if len(name) >= 255:\n"
    off_line = "-    labels = name.split('.')\n+    labels = None\n"
    diffs = {"mailhost.records.grammar.x_fqdn__mutmut_1": on_line,
             "mailhost.records.grammar.x_fqdn__mutmut_2": off_line,
             "mailhost.records.other.x_f__mutmut_1": "-    return 1\n+    return 2\n",
             "mailhost.records.untouched.x_g__mutmut_1": "-    return 1\n+    return 2\n"}
    monkeypatch.setattr(mutants, "results", lambda: dict.fromkeys(diffs))
    monkeypatch.setattr(mutants, "diff_of", diffs.__getitem__)
    drawn = mutants.gate(root, base, "seed", 30)
    assert drawn == ["mailhost.records.grammar.x_fqdn__mutmut_1", "mailhost.records.other.x_f__mutmut_1"]
    assert "1 mutants on changed lines, 1 more in 1 module(s)" in capsys.readouterr().err
    assert mutants.source_file("mailhost.records.grammar.x_fqdn__mutmut_1") == "mailhost/records/grammar.py"


def test_the_ci_draw_is_at_least_what_detects_a_tenth_surviving_and_is_seeded() -> None:
    assert 0.9 ** mutants.DETECT_N < 0.1 <= 0.9 ** (mutants.DETECT_N - 1)


def test_strict_scoring_fails_on_one_unexplained_survivor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"mailhost.records.grammar.x_fqdn__mutmut_{i}" for i in range(30)]
    codes = dict.fromkeys(names, 1) | {names[0]: 0}  # 29 killed, one survived: 96.7 %
    monkeypatch.setattr(mutants, "results", lambda: codes)
    monkeypatch.setattr(mutants, "diff_of", lambda name: name)
    md = tmp_path / "SURVIVORS.md"
    md.write_text("")
    assert mutants.score(names, md) == 0, "the sample gate passes at 90 %"
    assert mutants.score(names, md, strict=True) == 1, "the CI gate does not"
    excuse = f"- `{names[0]}` `diff:{mutants.diff_hash(names[0])}`: equivalent\n  `x`\n"
    md.write_text(excuse)
    assert mutants.score(names, md, strict=True) == 0


def test_survivors_lists_only_the_unexplained_ones_with_their_hash_and_changed_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = tmp_path / "SURVIVORS.md"
    md.write_text(ENTRY)
    other = DIFF.replace("254", "252")
    names = {"mailhost.records.grammar.x_fqdn__mutmut_7": DIFF,  # survived, explained
             "mailhost.records.grammar.x_fqdn__mutmut_8": other,  # survived, not explained
             "mailhost.records.grammar.x_fqdn__mutmut_9": DIFF.replace("254", "0"),  # killed
             "mailhost.records.spf.x_fqdn__mutmut_1": other}  # survived, another module
    codes = {"mailhost.records.grammar.x_fqdn__mutmut_9": 1}
    monkeypatch.setattr(mutants, "results", lambda: {n: codes.get(n, 0) for n in names})
    monkeypatch.setattr(mutants, "diff_of", names.__getitem__)
    assert mutants.survivors(["mailhost.records.grammar.*"], md) == [
        f"mailhost.records.grammar.x_fqdn__mutmut_8 diff:{mutants.diff_hash(other)}\n"
        "    -    if len(name) > 253 or not all(LABEL.fullmatch(p) for p in parts):\n"
        "    +    if len(name) > 252 or not all(LABEL.fullmatch(p) for p in parts):"]
    assert len(mutants.survivors(["*"], md)) == 2
