"""The scripts pushed over SSH run as `bash -c SCRIPT`, which bash parses one command at a time while it
runs them.  Each script is therefore one `{ ... }` block, parsed whole before any of it runs:

- a script cut off anywhere runs nothing (without the block, everything before the cut would run);
- a TERM/INT trap never fires while bash is still parsing: bash 5.2.15 then garbles the trap and the rest
  of the script ("unexpected EOF while looking for matching `)'") and the push ended with exit 0 in the
  middle of its switch (seen once in CI's signal drill).

A DEBUG trap set before the script makes its first command exit 97 instead of running, so these runs
touch nothing on the machine, whatever the script would have done.
"""

import subprocess

import pytest

from mailhost.publish import render

SCRIPTS = sorted(p.name for p in render.SCRIPTS.glob("*.sh"))
FIRST_COMMAND_RAN = 97


def run_until_first_command(text: str) -> subprocess.CompletedProcess[str]:
    guarded = f"trap 'exit {FIRST_COMMAND_RAN}' DEBUG\n{text}"
    return subprocess.run(["bash", "-c", guarded, "jira-mailhost-test"], env={"PATH": "/usr/bin:/bin"},
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30, check=False)


def test_there_are_scripts_to_check() -> None:
    assert {"apply.sh", "teardown.sh"} <= set(SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_the_whole_script_does_run(name: str) -> None:
    """The guard itself: an intact script reaches its first command."""
    assert run_until_first_command(render.script(name)).returncode == FIRST_COMMAND_RAN


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_cut_off_anywhere_runs_nothing(name: str) -> None:
    lines = render.script(name).splitlines(keepends=True)
    body = next(n for n, line in enumerate(lines) if not line.startswith("#") and line.strip())
    ran = []
    for cut in range(body + 1, len(lines)):
        half_line = lines[cut][: len(lines[cut]) // 2] if cut < len(lines) - 1 else ""  # half of '}\n' is '}'
        for text in ("".join(lines[:cut]), "".join(lines[:cut]) + half_line):
            result = run_until_first_command(text)
            if result.returncode == FIRST_COMMAND_RAN:
                ran.append(cut + 1)
            else:
                # bash's parse error (its status varies with where the cut falls: 0 for a cut [[ ]], 1, 2, 127)
                assert ": -c: line " in result.stderr, (cut, result)
    assert not ran, f"{name} cut off at these lines runs what came before: {ran[:10]}"
