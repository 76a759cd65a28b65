"""`pip install .` (or pipx) gives a working `mailhost`: the wheel declares requirements.txt's dependencies
and ships the templates and pushed scripts, so `mailhost render` works from any directory."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(ROOT), "-w", str(dist)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-2000:]
    return next(dist.glob("jira_mailhost-*.whl"))


def test_the_wheel_declares_the_dependencies_and_renders_away_from_the_checkout(wheel: Path, tmp_path: Path) -> None:
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



def test_the_installed_command_prints_nothing_of_other_libraries_on_stderr(wheel: Path, tmp_path: Path) -> None:
    """A fresh venv with the wheel installed (its dependencies reached through a .pth to this venv's, so no
    download): `--help`, `render` and a `verify` run write nothing to stderr (no library warnings)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    installed = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                                "--no-index", str(wheel)], capture_output=True, text=True, timeout=300)
    assert installed.returncode == 0, installed.stderr[-2000:]
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    mailhost = str(venv / "bin" / "mailhost")
    runs = {
        "--help": [mailhost, "--help"],
        "verify --help": [mailhost, "verify", "--help"],
        "render": [mailhost, "render", "--stack", str(ROOT / "Pulumi.staging.yaml"), "--out", str(tmp_path / "r")],
        # the DNS asked is a closed port on loopback: every check fails fast, on stdout, with its fix
        "verify": [mailhost, "verify", "--stack", str(ROOT / "Pulumi.staging.yaml"), "--nameserver", "127.0.0.1",
                   "--port", "9"],
    }
    where = subprocess.run([str(python), "-c", "import mailhost; print(mailhost.__file__)"], capture_output=True,
                           text=True, env=env, cwd=tmp_path).stdout
    assert where.startswith(site), f"the wheel's code runs, not the checkout's: {where}"
    for name, argv in runs.items():
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
        assert done.stderr == "", f"mailhost {name} wrote to stderr:\n{done.stderr[:2000]}"
        assert done.stdout, name
        assert done.returncode == (2 if name == "verify" else 0), (name, done.returncode)
