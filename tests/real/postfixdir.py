"""A rendered config laid out in a temp dir and read back by the real Postfix tools (always with -c).

The support files come from a fresh Debian install's /etc/postfix (mailhost.lab.freshetc),
never from this machine's own, so what passes here passes on a brand-new machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from mailhost.lab import freshetc
from mailhost.publish.bundle import RenderedFile


def tool(*argv: str) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        pytest.fail(f"{argv[0]} is not installed: run setup.sh (Debian packages postfix, opendkim)")
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def postfix_check(confdir: Path) -> subprocess.CompletedProcess[str]:
    """`postfix check` of confdir alone: its helper scripts also read /etc/postfix/main.cf whatever -c says,
    so it runs in a private mount namespace where /etc/postfix is confdir."""
    script = 'mount --bind "$1" /etc/postfix && exec postfix -c "$1" check'
    return tool("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script, "postfix-check",
                str(confdir))


def materialise(tmp: Path, files: list[RenderedFile]) -> Path:
    """Lay the files out under tmp/<path>, paths in their contents (config, keys, log) rewritten to the temp tree."""
    confdir = freshetc.build(tmp / "etc/postfix")
    (tmp / "var/log").mkdir(parents=True)
    for f in files:
        target = tmp / f.path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        content = f.content.replace("/etc/postfix/", f"{confdir}/").replace("/etc/opendkim/", f"{tmp}/etc/opendkim/")
        # Postfix's tools log to maillog_file themselves: keep that in the temp tree, not the machine's /var/log.
        if "\nmaillog_file = /var/log/" in content:
            content = content.replace("\nmaillog_file = /var/log/", f"\nmaillog_file = {tmp}/var/log/")
            content += f"maillog_file_prefixes = {tmp}/var/log\n"
        target.write_text(content)
        target.chmod(f.mode)
        # Postfix re-reads a file modified this very second until it is older (~1.5 s per call): date it back.
        os.utime(target, (time.time() - 2, time.time() - 2))
    return confdir


# What the harness itself adds (postconf -c shows the directory; the log stays in the temp tree).
HARNESS_PARAMETERS = ("config_directory", "maillog_file_prefixes")


def postconf_n(confdir: Path) -> dict[str, str]:
    """`postconf -n` as a mapping without the harness's own parameters; any warning fails the test."""
    done = tool("postconf", "-c", str(confdir), "-n")
    assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
    values = {}
    for line in done.stdout.splitlines():
        name, _, value = line.partition(" =")
        if name not in HARNESS_PARAMETERS:
            values[name] = value.strip()
    return values
