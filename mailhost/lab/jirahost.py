"""The lab's jira host: `mailhost.lab.sshhost` started in the jira namespace, remembered across processes.

The lab is driven by several short-lived commands (up, send, status, down), so what
SshHost holds in memory is kept in lab.json (paths, pid, pinned key; never key
material) and rebuilt from there.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any, Protocol

from mailhost.lab import sshhost
from mailhost.lab.netns import Host


class JiraState(Protocol):
    """What this module needs of the lab's saved state (lab.LabInfo): the record `start` returned."""

    jira: dict[str, Any]


def start(host: Host, resolver: str) -> dict[str, Any]:
    """sshd in the jira namespace, resolving through the lab DNS; the record to keep in lab.json."""
    started = sshhost.start_ssh_host(host, resolver=resolver, journald=True)
    assert started.process is not None
    return {
        "workdir": str(started.workdir),
        "host_key": started.host_key,
        "client_key_path": str(started.client_key_path),
        "port": started.port,
        "user": started.user,
        "pid": started.process.pid,
        "mount_ns": started.mount_ns,
        "address": started.address,
    }


# Run inside the host: what `update-ca-certificates` does for a CA under /usr/local/share, done
# in the host's private /etc (its /usr is the machine's own): the PEM, its `<subject hash>.N`
# link for CApath users (Postfix: smtp_tls_CApath = /etc/ssl/certs), and the bundle for CAfile users.
_TRUST = """\
set -eu
cd /etc/ssl/certs
cat > {name}
chmod 0644 {name}
n=0
while [ -e "$1.$n" ]; do n=$((n + 1)); done
ln -s {name} "$1.$n"
cat {name} >> ca-certificates.crt
"""
CA_FILE = "jira-mailhost-lab-ca.pem"


def trust_ca(info: JiraState, ca_pem: bytes) -> None:
    """Make the jira host trust the lab CA as a Debian host trusts a public CA; never the machine's /etc/ssl."""
    subject_hash = subprocess.run(["openssl", "x509", "-noout", "-subject_hash"], input=ca_pem,
                                  capture_output=True, check=True, timeout=10).stdout.decode().strip()
    done = subprocess.run(nsenter(info, ["/bin/sh", "-c", _TRUST.format(name=CA_FILE), "trust-ca", subject_hash]),
                          input=ca_pem, capture_output=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"installing the lab CA in the jira host failed: {done.stderr.decode().strip()}")


# Run inside the host: Debian's unbound as installed (unbound.conf reads every file in unbound.conf.d, and
# remote-control.conf lets root's unbound-control in through a unix socket), with
# the package's root-auto-trust-anchor-file.conf, which points at the real root's key, replaced by the lab
# root's DS and hints.  The lab's addresses are documentation ranges, whose reverse zones unbound answers
# itself by default; here the lab DNS serves them.  $1: the hints, $2: the DS line, then the reverse zones.
_LAB_ROOT = """\
set -eu
rm -rf /etc/unbound
mkdir -p /etc/unbound/unbound.conf.d
printf 'include-toplevel: "/etc/unbound/unbound.conf.d/*.conf"\\n' > /etc/unbound/unbound.conf
printf 'remote-control:\\n  control-enable: yes\\n  control-interface: /run/unbound.ctl\\n' \\
  > /etc/unbound/unbound.conf.d/remote-control.conf
printf '%s' "$1" > /etc/unbound/lab-root.hints
printf '%s\\n' "$2" > /etc/unbound/lab-root.ds
shift 2
{
  echo 'server:'
  echo '  root-hints: "/etc/unbound/lab-root.hints"'
  echo '  trust-anchor-file: "/etc/unbound/lab-root.ds"'
  for zone in "$@"; do echo "  local-zone: \"$zone.\" nodefault"; done
} > /etc/unbound/unbound.conf.d/root-auto-trust-anchor-file.conf
chmod -R a+rX /etc/unbound
"""


def trust_lab_root(info: JiraState, hints: str, anchor: str, reverse_zones: list[str]) -> None:
    """Make the jira host's unbound start from the lab root (hints and trust anchor) instead of the real one."""
    argv = ["/bin/sh", "-c", _LAB_ROOT, "trust-lab-root", hints, anchor.strip(), *reverse_zones]
    done = subprocess.run(nsenter(info, argv), capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"giving the jira host the lab root failed: {done.stderr.strip()}")


def stop(host: Host, prefix: str, jira: dict[str, Any]) -> None:
    """Kill everything in the host's namespaces and remove its temp dir (also leftovers of a crash)."""
    if jira:
        sshhost.SshHost(host=host, workdir=Path(jira["workdir"]), host_key=jira["host_key"],
                        client_key_path=Path(jira["client_key_path"]), mount_ns=jira.get("mount_ns", "")).stop()
    for leftover in Path("/tmp").glob(f"{prefix}-jira-sshhost-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def nsenter(info: JiraState, argv: list[str]) -> list[str]:
    """argv run inside the jira host (its network and private mount namespace), as the lab's own tooling."""
    pid = info.jira["pid"]
    return ["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt", "--", *argv]


def run(info: JiraState, argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(nsenter(info, argv), capture_output=True, text=True, timeout=timeout)
