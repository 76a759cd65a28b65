"""A lab "existing host": a network namespace with its own sshd and a private /etc, /var and /run.

The pushed scripts must be proven against the real Debian packages over real SSH, but
must never touch the machine's own /etc/postfix, spool or logs.  So sshd starts inside
`unshare --mount --propagation private` in the host's namespace, after overlay mounts
over /etc, /var and /run whose upper layers live in a temp dir: every file the scripts
(or Postfix, OpenDKIM) write lands there, the machine's files stay the read-only lower
layer, and nothing needs creating on the machine (not even a missing /etc/opendkim or
/var/lib/jira-mailhost mountpoint).  Processes started over SSH inherit the namespaces,
so stop() finds them all by network and mount namespace.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailhost.lab import freshetc
from mailhost.lab.netns import Host, LabError, sh

# /usr/local too: a push installs programs there (the DANE-first map), never onto the machine itself.
PRIVATE_ROOTS = ("/etc", "/var", "/run", "/usr/local")
SSHD = "/usr/sbin/sshd"
JOURNALD = "/lib/systemd/systemd-journald"

_SSHD_CONFIG = """\
# lab sshd for {name}: root by key only, nothing else
Port {port}
ListenAddress 0.0.0.0
ListenAddress ::
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {dir}/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
PermitUserEnvironment no
LogLevel VERBOSE
"""

# Runs as root inside the host's network namespace and a fresh private mount namespace;
# $1 is the temp dir.  The resolv.conf that `ip netns exec` bound from /etc/netns is
# copied before /etc is covered, then written into the private /etc.
_SETUP = """\
set -eu
dir=$1
cp /etc/resolv.conf "$dir/resolv.conf" 2>/dev/null || : > "$dir/resolv.conf"
for root in {roots}; do
  name=$(echo "$root" | tr / _)
  mkdir -p "$dir/overlay/$name/upper" "$dir/overlay/$name/work"
  layers="lowerdir=$root,upperdir=$dir/overlay/$name/upper,workdir=$dir/overlay/$name/work"
  mount -t overlay "jmp-lab$name" -o "$layers" "$root"
done
# A fresh Debian install's /etc/postfix ("No configuration"), whatever the machine's own holds.
rm -rf /etc/postfix
cp -a "$dir/fresh-postfix" /etc/postfix
if [ -n "${{RESOLVER:-}}" ]; then printf 'nameserver %s\\n' "$RESOLVER" > "$dir/resolv.conf"; fi
rm -f /etc/resolv.conf
cat "$dir/resolv.conf" > /etc/resolv.conf
mkdir -p /run/sshd
chmod 0755 /run/sshd
if [ -n "${{JOURNALD:-}}" ]; then
  # The host's own journald, as on a Debian cloud image without rsyslog. Its log socket is reached as
  # /dev/log, and the machine's /dev is shared: the host gets a private /dev that links it to its /run.
  mkdir -p "$dir/dev"
  mount -t tmpfs -o mode=0755,nosuid jm-lab-dev "$dir/dev"
  for node in null zero full random urandom tty; do
    if [ -e "/dev/$node" ]; then : > "$dir/dev/$node"; mount --bind "/dev/$node" "$dir/dev/$node"; fi
  done
  mkdir "$dir/dev/pts" "$dir/dev/shm"
  if [ -d /dev/pts ]; then mount --rbind /dev/pts "$dir/dev/pts"; fi
  mount -t tmpfs -o mode=1777,nosuid,nodev jm-lab-shm "$dir/dev/shm"
  ln -s /proc/self/fd "$dir/dev/fd"
  ln -s /proc/self/fd/0 "$dir/dev/stdin"
  ln -s /proc/self/fd/1 "$dir/dev/stdout"
  ln -s /proc/self/fd/2 "$dir/dev/stderr"
  ln -s /run/systemd/journal/dev-log "$dir/dev/log"
  mount --move "$dir/dev" /dev
  # journald names its files after the machine id; a fresh container may have none (private /etc).
  if [ ! -s /etc/machine-id ]; then od -An -N16 -tx1 /dev/urandom | tr -d ' \n' > /etc/machine-id; fi
  # journald finds its cgroup under /sys/fs/cgroup, which `ip netns exec`'s fresh /sys lacks.
  if ! mountpoint -q /sys/fs/cgroup; then mount -t cgroup2 jm-lab-cgroup /sys/fs/cgroup; fi
  mkdir -p /run/systemd/journal
  {journald} < /dev/null >> "$dir/journald.log" 2>&1 &
  i=0
  while [ ! -S /run/systemd/journal/dev-log ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fi
exec {sshd} -D -f "$dir/sshd_config" -E "$dir/sshd.log"
"""


@dataclass
class SshHost:
    """A running lab host reachable over SSH as root with a pinned ed25519 host key."""

    host: Host
    workdir: Path
    host_key: str  # "ssh-ed25519 AAAA..." to pin
    client_key_path: Path  # 0600, generated at start
    port: int = 22
    user: str = "root"
    process: subprocess.Popen[bytes] | None = None
    mount_ns: str = ""
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> str:
        return self.host.ipv4

    @property
    def private_key(self) -> str:
        return self.client_key_path.read_text()

    def upper(self, path: str) -> Path:
        """Where a file written inside the host lands in this temp dir (for the test's own checks)."""
        root = next(r for r in PRIVATE_ROOTS if path == r or path.startswith(r + "/"))
        return self.workdir / "overlay" / root.replace("/", "_") / "upper" / path[len(root) + 1:]

    def nsenter(self, argv: list[str]) -> list[str]:
        """argv run in this host's network and mount namespaces without SSH (test setup only)."""
        if self.process is None:
            raise LabError("the host is not running")
        pid = self.process.pid
        return ["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt", "--", *argv]

    def log(self) -> str:
        return (self.workdir / "sshd.log").read_text(errors="replace") if (self.workdir / "sshd.log").exists() else ""

    def stop(self) -> None:
        """Kill everything in the host's network and mount namespaces; remove the temp dir. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        try:
            if self.process is not None:  # reap sshd first, or it lingers as a zombie in the netns
                self.process.terminate()
                try:
                    self.process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=5)
            _kill_all(lambda: _netns_pids(self.host.netns))
            if self.mount_ns:
                _kill_all(lambda: _mount_namespace_pids(self.mount_ns))
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _mount_namespace_pids(ns_id: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / "mnt") == ns_id:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _netns_pids(netns: str) -> list[int]:
    return [int(p) for p in sh(["ip", "netns", "pids", netns], check=False).split()]


def _kill_all(list_pids: Callable[[], list[int]], timeout: float = 5) -> None:
    """SIGKILL at once: a lab host has nothing to save, and opendkim takes ~6 s to honour TERM."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = list_pids()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    raise LabError(f"processes {list_pids()} survived SIGKILL for {timeout:.0f}s")


def _keygen(path: Path, comment: str) -> str:
    sh(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])
    os.chmod(path, 0o600)
    return Path(f"{path}.pub").read_text().strip()


def _wait_for_sshd(address: str, port: int, process: subprocess.Popen[bytes], workdir: Path,
                   timeout: float = 15) -> None:
    """Poll until sshd sends its banner; fail early if the setup process died."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            setup = (workdir / "setup.log").read_text(errors="replace") if (workdir / "setup.log").exists() else ""
            raise LabError(f"lab sshd exited ({process.returncode}): {setup.strip()} {_tail(workdir / 'sshd.log')}")
        try:
            with socket.create_connection((address, port), timeout=1) as conn:
                conn.settimeout(2)
                if conn.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError as error:
            last = str(error)
        time.sleep(0.05)
    raise LabError(f"lab sshd on {address}:{port} did not answer within {timeout:.0f}s ({last})")


def _tail(path: Path) -> str:
    return path.read_text(errors="replace")[-2000:] if path.exists() else ""


def start_ssh_host(host: Host, resolver: str | None = None, port: int = 22, journald: bool = False) -> SshHost:
    """Start sshd in `host`'s namespace over private /etc, /var, /run; return once it answers.
    journald: also its own systemd-journald behind a private /dev/log (the host then logs as a cloud image does)."""
    for tool in ("unshare", "nsenter", "ssh-keygen", SSHD, *((JOURNALD,) if journald else ())):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is missing; install util-linux, openssh-server and systemd (run ./setup.sh)")
    workdir = Path(tempfile.mkdtemp(prefix=f"{host.netns}-sshhost-"))
    started: SshHost | None = None
    try:
        host_pub = _keygen(workdir / "ssh_host_ed25519_key", f"lab-host-{host.name}")
        client_pub = _keygen(workdir / "client_key", "lab-client")
        # sshd reads authorized_keys as the logging-in user: a public file under a traversable dir.
        workdir.chmod(0o711)
        (workdir / "authorized_keys").write_text(client_pub + "\n")
        (workdir / "authorized_keys").chmod(0o644)
        (workdir / "sshd_config").write_text(_SSHD_CONFIG.format(name=host.name, port=port, dir=workdir))
        freshetc.build(workdir / "fresh-postfix")
        script = _SETUP.format(roots=" ".join(PRIVATE_ROOTS), sshd=SSHD, journald=JOURNALD)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **({"RESOLVER": resolver} if resolver else {}),
               **({"JOURNALD": "1"} if journald else {})}
        with open(workdir / "setup.log", "ab") as log:
            process = subprocess.Popen(
                host.argv(["unshare", "--mount", "--propagation", "private", "--",
                           "/bin/sh", "-c", script, "lab-sshhost", str(workdir)]),
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env,
            )
        started = SshHost(
            host=host, workdir=workdir, host_key=" ".join(host_pub.split()[:2]),
            client_key_path=workdir / "client_key", port=port, process=process,
        )
        _wait_for_sshd(host.ipv4, port, process, workdir)
        started.mount_ns = os.readlink(f"/proc/{process.pid}/ns/mnt")
        return started
    except BaseException:
        if started is not None:
            started.stop()
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        raise


def describe(ssh_host: SshHost) -> str:
    """One line for logs: how to reach the host by hand (no key material)."""
    return (f"ssh -i {shlex.quote(str(ssh_host.client_key_path))} -p {ssh_host.port} "
            f"{ssh_host.user}@{ssh_host.address}  # host key {ssh_host.host_key.split()[0]}")
