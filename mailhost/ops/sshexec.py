"""Run one remote command over SSH the way pulumi-command's remote.Command does, for real.

The lab runner executes the program's remote commands with this instead of a Pulumi
provider.  It uses the OpenSSH client so host-key pinning is OpenSSH's own: a private
known_hosts holding exactly the pinned key and StrictHostKeyChecking=yes, so a host
presenting any other key is refused before the command runs.  The private key never
touches a disk: it lives in a 0600 memfd of this process that ssh opens through
/proc/<pid>/fd, closed when the call returns (and gone with the process if it is killed,
where a temp file would have stayed behind).  It is never on a command line and never
in a Result or an exception.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSH = "ssh"
HOST_ALIAS = "pinned-host"  # known_hosts entry name; independent of address family and port
DIAL_ATTEMPTS = 10  # like pulumi-command's dialErrorLimit default
DIAL_PAUSE = 0.5  # seconds between attempts, doubled up to MAX_PAUSE
MAX_PAUSE = 5.0
TIMEOUT_RC = 124  # what timeout(1) returns; the command was killed

# ssh's own connection errors (exit 255) that mean the command never started, so retrying is safe.
_DIAL_ERRORS = re.compile(
    r"Connection refused|Connection timed out|No route to host|Network is unreachable|"
    r"Connection reset|Connection closed by .* port|kex_exchange_identification|"
    r"Could not resolve hostname|Temporary failure in name resolution|operation timed out",
    re.IGNORECASE,
)
_HOST_KEY_ERRORS = re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED", re.IGNORECASE)


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class HostKeyMismatch(RuntimeError):
    """The host answered with a key other than the pinned one: never run anything there."""


def _key_type(host_key: str) -> str:
    parts = host_key.split()
    if len(parts) < 2 or not parts[0].startswith(("ssh-", "ecdsa-")):
        raise ValueError("host_key must be an OpenSSH public key line such as 'ssh-ed25519 AAAA...'")
    return parts[0]


def host_key_algorithms(key_type: str) -> str:
    """What ssh may accept for a pinned key type: an RSA key signs with SHA-2 (rsa-sha2-512/256), as OpenSSH
    8.8 and later require; the SHA-1 `ssh-rsa` signature is never offered."""
    return "rsa-sha2-512,rsa-sha2-256" if key_type == "ssh-rsa" else key_type


def _memfile(name: str, content: str) -> int:
    """An anonymous in-memory 0600 file (close-on-exec); ssh reads it by path, see _fd_path."""
    fd = os.memfd_create(name)
    os.fchmod(fd, 0o600)
    os.write(fd, content.encode())
    return fd


def _fd_path(fd: int) -> Path:
    # Not /dev/fd/N: ssh closes inherited descriptors at start, so it opens ours via /proc.
    return Path(f"/proc/{os.getpid()}/fd/{fd}")


def ssh_argv(host: str, port: int, user: str, key_file: Path | None, known_hosts: Path, key_type: str,
             connect_timeout: int = 10) -> list[str]:
    """The ssh client invocation; no user or system ssh_config is read (-F /dev/null).

    Without key_file the keys come from the SSH agent (SSH_AUTH_SOCK) and from nowhere else."""
    identity = ["-i", str(key_file), "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"] if key_file else [
        "-o", "IdentityAgent=SSH_AUTH_SOCK", "-o", "IdentityFile=none", "-o", "IdentitiesOnly=no"]
    return [
        SSH, "-F", "/dev/null",
        *identity,
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"HostKeyAlias={HOST_ALIAS}",
        "-o", f"HostKeyAlgorithms={host_key_algorithms(key_type)}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UpdateHostKeys=no",
        "-o", "CheckHostIP=no",
        "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
        "-o", "KbdInteractiveAuthentication=no",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "ServerAliveInterval=15",
        "-o", "LogLevel=ERROR",
        "-p", str(port),
        "-l", user,
        "--",  # whatever the host value is, ssh reads it as the destination, never as an option
        host,
    ]


def run(host: str, port: int, user: str, private_key: str | None, host_key: str, command: str,
        stdin: str | None = None, timeout: float = 600, attempts: int = DIAL_ATTEMPTS) -> Result:
    """Run `command` on the host after checking its key against `host_key`; retry only dial errors.

    Raises HostKeyMismatch if the host presents another key.  A command still running after
    `timeout` seconds is killed and reported with rc 124.
    """
    if shutil.which(SSH) is None:
        raise FileNotFoundError("the OpenSSH client (ssh) is not installed; apt-get install openssh-client")
    key_type = _key_type(host_key)
    pinned = " ".join(host_key.split()[:2])
    key_fd = None if private_key is None else \
        _memfile("mailhost-ssh-key", private_key if private_key.endswith("\n") else private_key + "\n")
    known_fd = _memfile("mailhost-known-hosts", f"{HOST_ALIAS} {pinned}\n")
    try:
        key_path = None if key_fd is None else _fd_path(key_fd)
        argv = [*ssh_argv(host, port, user, key_path, _fd_path(known_fd), key_type), command]
        pause = DIAL_PAUSE
        deadline = time.monotonic() + timeout
        for attempt in range(1, max(attempts, 1) + 1):
            left = max(deadline - time.monotonic(), 1.0)
            try:
                proc = subprocess.run(argv, input=stdin if stdin is not None else "", capture_output=True,
                                      text=True, timeout=left)
            except subprocess.TimeoutExpired as expired:
                out = expired.stdout.decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
                err = expired.stderr.decode() if isinstance(expired.stderr, bytes) else (expired.stderr or "")
                killed = f"\nmailhost: the remote command was killed after {timeout:.0f}s\n"
                return Result(TIMEOUT_RC, out, err + killed)
            if proc.returncode == 255 and _HOST_KEY_ERRORS.search(proc.stderr):
                raise HostKeyMismatch(
                    f"{user}@{host}:{port} presented a host key other than the pinned {key_type} key; "
                    "nothing was run. If the host was rebuilt, pin its new key (ssh-keyscan -t ed25519 HOST)."
                )
            dial_error = proc.returncode == 255 and _DIAL_ERRORS.search(proc.stderr) is not None
            if not dial_error or attempt == attempts or time.monotonic() + pause >= deadline:
                return Result(proc.returncode, proc.stdout, proc.stderr)
            time.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
        raise AssertionError("unreachable")
    finally:
        if key_fd is not None:
            os.close(key_fd)
        os.close(known_fd)
