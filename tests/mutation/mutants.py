"""Helper of bench/mutation.sh, run inside its copy of the repository (the directory holding mutants/).

    python -m tests.mutation.mutants generate          create mutants/ and print every mutant name
    python -m tests.mutation.mutants select PATTERN... the names matching fnmatch patterns, one a line
    python -m tests.mutation.mutants sample N SEED [PATTERN...]   N of them, reproducibly
    python -m tests.mutation.mutants gate BASE SEED N ROOT    the CI draw: N mutants on the lines changed since
                                                         BASE, and of the modules the changed tests import
    python -m tests.mutation.mutants score NAMES_FILE [SURVIVORS_MD] [--strict]  killed/total of those names
    python -m tests.mutation.mutants check [SURVIVORS_MD]             exit 1 on an entry no mutant matches
    python -m tests.mutation.mutants rekey [SURVIVORS_MD]             write each entry's diff hash (migration)
    python -m tests.mutation.mutants survivors [PATTERN...]  each survivor SURVIVORS.md does not explain, with
                                                         its diff hash and changed lines (after a run)

A SURVIVORS.md entry excuses the mutant whose whole diff (the changed lines with their context in the
function, file names left out) hashes to the entry's `diff:` key, whatever that mutant is numbered now;
an edit of the function changes the diff, and the entry then matches nothing and is reported stale.

Generation uses mutmut's own steps (the ones `mutmut run` starts with), so the names are exactly
the ones `mutmut run NAME...` then tests; results are read from mutmut's meta files (JSON).  Pinned
to the mutmut version in requirements-dev.txt.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import hashlib
import io
import json
import random
import re
import sys
from collections import Counter
from pathlib import Path

# mutmut's exit-code meaning (mutmut/stats.py status_by_exit_code, 3.8.1)
KILLED = {1, 3}
TIMEOUT = {36, -24, 24, 152, 255}
SURVIVED = {0}
NO_TESTS = {5, 33}


def generate() -> list[str]:
    from mutmut.__main__ import (  # the steps `mutmut run` starts with
        copy_also_copy_files,
        copy_src_dir,
        create_mutants,
        setup_source_paths,
        store_lines_covered_by_tests,
    )
    from mutmut.mutation.trampoline import set_mutant_under_test

    set_mutant_under_test("mutant_generation")
    Path("mutants").mkdir(exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):  # mutmut reports each file it copies
        copy_src_dir()
        copy_also_copy_files()
        setup_source_paths()
        store_lines_covered_by_tests()
        create_mutants(1)
    return sorted(results())


def results() -> dict[str, int | None]:
    """Every mutant name of the mutated files with its exit code (None: not run yet)."""
    from mutmut.configuration import config

    out: dict[str, int | None] = {}
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        source = meta.relative_to("mutants").with_suffix("")
        if not config().should_mutate(str(source)):
            continue
        out.update(json.loads(meta.read_text())["exit_code_by_key"])
    return out


def select(patterns: list[str]) -> list[str]:
    return sorted(n for n in results() if any(fnmatch.fnmatchcase(n, p) for p in patterns))


def status(code: int | None) -> str:
    if code in KILLED:
        return "killed"
    if code in TIMEOUT:
        return "timeout"
    if code in SURVIVED:
        return "survived"
    if code in NO_TESTS:
        return "no tests"
    return "not checked" if code is None else f"other ({code})"


ENTRY = re.compile(r"^- `(?P<name>[A-Za-z0-9_.ǁ]+__mutmut_[0-9]+)` `diff:(?P<hash>[0-9a-f]{16})`:.*\n  `(?P<line>.*)`$",
                   re.MULTILINE)


def listed_survivors(path: Path) -> dict[str, str]:
    """Diff hash -> the mutant name recorded with it in SURVIVORS.md (the name is for people; the hash decides)."""
    if not path.exists():
        return {}
    return {m["hash"]: m["name"] for m in ENTRY.finditer(path.read_text())}


@functools.cache
def diff_of(name: str) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    return str(get_diff_for_mutant(name))


def diff_hash(diff: str) -> str:
    """16 hex digits of sha256 over the diff without its file-name lines (a module move keeps the hash)."""
    body = "\n".join(line for line in diff.splitlines() if not line.startswith(("--- ", "+++ ")))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def mutated_lines(diff: str) -> list[str]:
    """The lines a mutant adds."""
    return [line[1:].strip() for line in diff.splitlines() if line.startswith("+") and not line.startswith("+++")]


def explained(name: str, listed: dict[str, str]) -> bool:
    """An entry excuses this mutant only while the mutant's diff is the one the entry was written for."""
    return diff_hash(diff_of(name)) in listed


def function_of(name: str) -> str:
    return name.rsplit("__mutmut_", 1)[0]


def check(survivors_md: Path) -> int:
    """Every entry must match a mutant of its function by diff hash; a stale one is printed, and 1 returned."""
    entries = list(ENTRY.finditer(survivors_md.read_text()))
    by_function: dict[str, set[str]] = {}
    all_names = list(results())
    for m in entries:
        function = function_of(m["name"])
        if function not in by_function:
            by_function[function] = {diff_hash(diff_of(n)) for n in all_names if function_of(n) == function}
    stale = [m for m in entries if m["hash"] not in by_function[function_of(m["name"])]]
    for m in stale:
        print(f"stale: {m['name']} diff:{m['hash']} (`{m['line'][:80]}`): no mutant of that function has this diff "
              "any more; re-examine it (kill it with a test, or write its entry again)")
    print(f"SURVIVORS.md: {len(entries)} entries, {len(stale)} stale")
    return 1 if stale else 0


def rekey(survivors_md: Path) -> int:
    """Migration from name + line entries: find each entry's mutant (by name when its added line still
    matches, else the mutant of the same function that adds that line), write its diff hash, and drop the
    entries whose mutant no longer exists."""
    old = re.compile(r"^- `(?P<name>[A-Za-z0-9_.ǁ]+__mutmut_[0-9]+)`(?: `diff:[0-9a-f]{16}`)?:(?P<why>.*)\n"
                     r"  `(?P<line>.*)`\n", re.MULTILINE)
    text = survivors_md.read_text()
    all_names = list(results())
    dropped = []

    taken: set[str] = set()

    def key(m: re.Match[str]) -> str:
        recorded = m["line"].strip()
        same_function = sorted(n for n in all_names if function_of(n) == function_of(m["name"]))
        candidates = [m["name"], *same_function] if m["name"] in all_names else same_function
        for exact in (True, False):  # the named mutant first, an exact line before a prefix
            for name in candidates:
                lines = mutated_lines(diff_of(name))
                if name not in taken and any(line == recorded if exact else line.startswith(recorded)
                                             for line in lines):
                    taken.add(name)
                    return f"- `{name}` `diff:{diff_hash(diff_of(name))}`:{m['why']}\n  `{lines[0]}`\n"
        dropped.append(m["name"])
        return ""

    survivors_md.write_text(old.sub(key, text))
    for name in dropped:
        print(f"dropped (no such mutant any more): {name}")
    return 0


# -- the CI draw -------------------------------------------------------------------------------------
# With every unexplained survivor failing the gate, N mutants detect a true 10 % survival rate with 90 %
# confidence when 0.9 ** N <= 0.1, that is N >= 22 (bash bench/mutation.sh draws 30 in CI: 0.9 ** 30 = 4 %).
DETECT_N = 22


def _git(root: Path, *args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True).stdout


def changed_lines(root: Path, base: str) -> dict[str, set[str]]:
    """Per source file under mailhost/ and components/: the stripped lines added or changed since `base`
    (every line of a new file)."""
    out: dict[str, set[str]] = {}
    current = ""
    for line in _git(root, "diff", "-U0", base, "--", "mailhost", "components").splitlines():
        if line.startswith("+++ "):
            current = line[6:] if line.startswith("+++ b/") else ""
        elif line.startswith("+") and current.endswith(".py") and line[1:].strip():
            out.setdefault(current, set()).add(line[1:].strip())
    for path in _git(root, "ls-files", "--others", "--exclude-standard", "--", "mailhost", "components").split():
        if path.endswith(".py"):
            out.setdefault(path, set()).update(x.strip() for x in (root / path).read_text().splitlines() if x.strip())
    return out


def source_file(name: str) -> str:
    """mailhost.publish.mailstats.x_write_atomic__mutmut_20 -> mailhost/publish/mailstats.py"""
    return name.split(".x", 1)[0].replace(".", "/") + ".py" if ".x" in name else ""


def original_lines(name: str) -> list[str]:
    """The lines a mutant removes: where it sits in the original source."""
    return [line[1:].strip() for line in diff_of(name).splitlines()
            if line.startswith("-") and not line.startswith("---")]


_IMPORT = re.compile(r"^\s*(?:from\s+((?:mailhost|components)[\w.]*)\s+import\s+([\w\s,()]+)|"
                     r"import\s+((?:mailhost|components)[\w.]*))", re.MULTILINE)


def tested_modules(root: Path, base: str) -> set[str]:
    """The mailhost/components modules that the test files changed since `base` import: a commit that
    only weakens a test draws mutants of what that test guards."""
    changed = _git(root, "diff", "--name-only", base, "--", "tests").split()
    changed += _git(root, "ls-files", "--others", "--exclude-standard", "--", "tests").split()
    modules: set[str] = set()
    for path in changed:
        file = root / path
        if not path.endswith(".py") or not file.exists():
            continue
        for m in _IMPORT.finditer(file.read_text()):
            package = m[1] or m[3]
            names = [n.strip() for n in (m[2] or "").replace("(", " ").replace(")", " ").split(",") if n.strip()]
            for candidate in [package, *(f"{package}.{n.split()[0]}" for n in names)]:
                if (root / (candidate.replace(".", "/") + ".py")).exists():
                    modules.add(candidate)
    return modules


def gate(root: Path, base: str, seed: str, count: int) -> list[str]:
    """The CI draw, seeded by the commit: half from mutants on lines changed since `base`, half from the
    modules the changed tests import (each half topped up from the other when short), at least DETECT_N
    when the pools hold that many."""
    count = max(count, DETECT_N)
    names = list(results())
    lines = changed_lines(root, base)
    on_changed = sorted(n for n in names if (added := lines.get(source_file(n)))
                        and any(line in added for line in original_lines(n)))
    modules = tested_modules(root, base)
    guarded = sorted(n for n in names if n.split(".x", 1)[0] in modules and n not in on_changed)
    rng = random.Random(seed)
    first = rng.sample(on_changed, min(len(on_changed), count - min(len(guarded), count // 2)))
    rest = rng.sample(guarded, min(len(guarded), count - len(first)))
    print(f"draw: {len(on_changed)} mutants on changed lines, {len(guarded)} more in {len(modules)} module(s) the "
          f"changed tests import; drawing {len(first)} + {len(rest)} (seed {seed[:12]})", file=sys.stderr)
    return sorted(first + rest)


def score(names: list[str], survivors_md: Path, strict: bool = False) -> int:
    """Killed + timeout over the mutants run, leaving out the survivors SURVIVORS.md explains as harmless
    (equivalent mutants cannot be killed); 0 when that is at least 90 % and every mutant was checked."""
    codes = results()
    tally = Counter(status(codes.get(n)) for n in names)
    detected = tally["killed"] + tally["timeout"]
    per_module: dict[str, Counter[str]] = {}
    for n in names:
        module = n.split(".x")[0]
        per_module.setdefault(module, Counter())[status(codes.get(n))] += 1
    for module, counts in sorted(per_module.items()):
        done = counts["killed"] + counts["timeout"]
        print(f"  {module:28} {done:4}/{sum(counts.values()):<4} "
              + " ".join(f"{k}={v}" for k, v in sorted(counts.items()) if k != "killed"))
    listed = listed_survivors(survivors_md)
    undetected = sorted(n for n in names if status(codes.get(n)) not in ("killed", "timeout"))
    harmless = [n for n in undetected if explained(n, listed)]
    unexplained = [n for n in undetected if n not in harmless]
    if unexplained:
        print(f"undetected and not explained in {survivors_md} ({len(unexplained)}); see each with `mutmut show NAME`:")
        for n in unexplained:
            print(f"  {n}: {status(codes.get(n))}")
    counted = len(names) - len(harmless)
    pct = 100.0 * detected / counted if counted else 100.0
    print(f"mutants: {len(names)}  killed: {tally['killed']}  timeout: {tally['timeout']}  "
          f"survived: {tally['survived']} ({len(harmless)} explained as harmless)  "
          f"no tests: {tally['no tests']}  not checked: {tally['not checked']}")
    print(f"score: {detected}/{counted} = {pct:.1f} % (killed + timeout over the mutants run, "
          "less the explained survivors)")
    if strict:  # the CI gate: any survivor not explained fails it (see DETECT_N)
        return 0 if not unexplained and not tally["not checked"] else 1
    return 0 if pct >= 90.0 and not tally["not checked"] else 1


def survivors(patterns: list[str], survivors_md: Path) -> list[str]:
    """The unexplained survivors among the names matching `patterns`: name, diff hash, and the lines it changes."""
    listed, codes = listed_survivors(survivors_md), results()
    out = []
    for name in select(patterns):
        if status(codes.get(name)) != "survived" or explained(name, listed):
            continue
        diff = diff_of(name)
        changed = [line for line in diff.splitlines()
                   if line.startswith(("+", "-")) and not line.startswith(("+++", "---"))]
        out.append(f"{name} diff:{diff_hash(diff)}\n" + "\n".join(f"    {line}" for line in changed))
    return out


def main(argv: list[str]) -> int:
    command, args = argv[0], argv[1:]
    if command == "generate":
        print("\n".join(generate()))
    elif command == "select":
        print("\n".join(select(args)))
    elif command == "sample":
        count, seed, patterns = int(args[0]), args[1], args[2:] or ["*"]
        pool = select(patterns)
        print("\n".join(sorted(random.Random(seed).sample(pool, min(count, len(pool))))))
    elif command == "check":
        return check(Path(args[0]) if args else Path("tests/mutation/SURVIVORS.md"))
    elif command == "rekey":
        return rekey(Path(args[0]) if args else Path("tests/mutation/SURVIVORS.md"))
    elif command == "gate":
        print("\n".join(gate(Path(args[3]), args[0], args[1], int(args[2]))))
    elif command == "survivors":
        print("\n".join(survivors(args or ["*"], Path("tests/mutation/SURVIVORS.md"))))
    elif command == "score":
        strict = "--strict" in args
        args = [a for a in args if a != "--strict"]
        names = [n for n in Path(args[0]).read_text().split() if n]
        return score(names, Path(args[1]) if len(args) > 1 else Path("tests/mutation/SURVIVORS.md"), strict)
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
