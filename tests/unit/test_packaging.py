"""`pip install .` (or pipx) gives a working `mailhost`: the wheel declares requirements.txt's dependencies
and ships the templates and pushed scripts, so `mailhost render` works from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_wheel_declares_the_dependencies_and_renders_away_from_the_checkout(tmp_path: Path) -> None:
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w",
                            str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("jira_mailhost-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = archive.read(next(n for n in names if n.endswith("/METADATA"))).decode()
        archive.extractall(tmp_path / "site")
    wanted = [line.strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    declared = [line.removeprefix("Requires-Dist: ") for line in metadata.splitlines()
                if line.startswith("Requires-Dist: ")]
    assert len(declared) == len(wanted) and all(d.split("<")[0].split(">")[0].split("=")[0] in "".join(wanted)
                                                 for d in declared), (declared, wanted)
    assert {"mailhost_files/templates/main.cf.j2", "mailhost_files/scripts/apply.sh",
            "mailhost/lab/engine/plan.py"} <= names
    # The installed code alone (no checkout on the path): render a shipped stack file elsewhere.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    out = tmp_path / "render"
    run = subprocess.run([sys.executable, "-c", "import sys, mailhost.publish.render as r; "
                          "assert str(r.TEMPLATES).startswith(sys.argv[1]), r.TEMPLATES; "
                          "from mailhost.cli.app import main; "
                          "sys.argv = ['mailhost', 'render', '--stack', sys.argv[2], "
                          "'--out', sys.argv[3]]; main()", str(tmp_path / "site"),
                          str(ROOT / "Pulumi.staging.yaml"), str(out)],
                         capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "smtp_connection_cache_destinations = static:all" in (out / "jira" / "etc/postfix/main.cf").read_text()

