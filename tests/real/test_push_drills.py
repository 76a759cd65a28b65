"""Fault drills for the push: the SSH session dies during the switch, or the apply itself is killed.

The rule: the host ends on the old or the new config, never a mix, and the next push completes.
A dropped session (client killed, or its stderr closed) must not stop the remote run; a run
killed outright mid-switch leaves a journal, and the next run first puts the backup back.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from components.postfix import apply_command, readable_config
from mailhost.lab.sshhost import SshHost
from mailhost.ops import sshexec
from mailhost.publish import bundle
from mailhost.publish.bundle import RenderedFile
from tests.real.test_push_scripts import assert_serving, edit, files_for, hold_port, out, push, remote

pytestmark = [pytest.mark.real]
JOURNAL = "/var/lib/jira-mailhost/journal"


def start_push(host: SshHost, files: list[RenderedFile], known_hosts: Path) -> subprocess.Popen[str]:
    """The push as the program runs it, but as a process the drill can kill while it runs."""
    known_hosts.write_text(f"{sshexec.HOST_ALIAS} {host.host_key}\n")
    argv = [*sshexec.ssh_argv(host.address, host.port, host.user, host.client_key_path, known_hosts,
                              host.host_key.split()[0]), apply_command(readable_config(files))]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdin is not None
    proc.stdin.write(bundle.pack(files))
    proc.stdin.close()
    return proc


def finished(proc: subprocess.Popen[str]) -> str:
    """The push's stderr once it has ended by itself (the caller kills it in its `finally`)."""
    proc.wait(timeout=120)
    assert proc.stderr is not None
    return proc.stderr.read()


def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.002)


def apply_pids(host: SshHost, pattern: str = "jira-mailhost-apply") -> list[int]:
    """The apply processes of this host only (pgrep alone would see every host's: nsenter keeps the PID ns)."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split()
    pids = []
    for pid in found:
        try:
            if os.readlink(f"/proc/{pid}/ns/mnt") == host.mount_ns:
                pids.append(int(pid))
        except OSError:
            continue  # gone meanwhile
    return pids


def apply_running(host: SshHost) -> bool:
    return bool(apply_pids(host))


def live_digest(host: SshHost, files: list[RenderedFile]) -> str:
    """sha256 of the non-secret managed files as the host has them, in bundle order."""
    result = remote(host, "cat " + " ".join(f.path for f in files if not f.secret) + " | sha256sum")
    assert result.ok, out(result)
    return result.stdout.split()[0]


def digest(files: list[RenderedFile]) -> str:
    return hashlib.sha256("".join(f.content for f in files if not f.secret).encode()).hexdigest()


def bigger(files: list[RenderedFile]) -> list[RenderedFile]:
    """The same config with a changed main.cf and opendkim.conf: a switch of several files."""
    files = edit(files, "/etc/postfix/main.cf", lambda c: re.sub(r"(?m)^message_size_limit = .*$",
                                                                  "message_size_limit = 52428800", c))
    changed = edit(files, "/etc/opendkim.conf", lambda c: re.sub(r"(?m)^(SyslogSuccess +)yes$", r"\1no", c))
    return changed


def drop_session_during_switch(host: SshHost, files: list[RenderedFile], drop: str, known_hosts: Path) -> None:
    """Push, drop the SSH session (kill the client, or close its stdout/stderr) once the switch has begun,
    then wait for the remote run, which must still have been going, to end by itself."""
    proc = start_push(host, files, known_hosts)
    try:
        wait_for(lambda: host.upper(JOURNAL).exists() or proc.poll() is not None, 60, "the switch to start")
        assert proc.poll() is None, "the push ended before its switch: " + (proc.stderr.read() if proc.stderr else "")
        if drop == "client killed":
            proc.kill()
        else:
            assert proc.stderr is not None and proc.stdout is not None
            proc.stderr.close()
            proc.stdout.close()
        assert apply_running(host), "the drill must drop the session while the remote run is still going"
    finally:
        proc.kill()
        proc.wait(10)
    wait_for(lambda: not apply_running(host), 60, "the remote apply to finish")


@pytest.mark.parametrize("drop", ["client killed", "client stderr closed"])
def test_dropped_session_during_the_switch_still_ends_on_the_new_config(ssh_host: SshHost, dkim_private_key_pem: str,
                                                                        drop: str, tmp_path: Path) -> None:
    old = files_for(ssh_host, dkim_private_key_pem)
    assert push(ssh_host, old).ok
    new = bigger(old)
    assert len({f.content for f in new} - {f.content for f in old}) == 2, "two files change"
    drop_session_during_switch(ssh_host, new, drop, tmp_path / "known_hosts")
    assert not ssh_host.upper(JOURNAL).exists(), "the run finished its switch and confirmed it"
    assert live_digest(ssh_host, new) == digest(new), "all of the new config"
    assert_serving(ssh_host)
    again = push(ssh_host, new)
    assert again.ok and again.stdout.startswith("jira-mailhost: unchanged"), out(again)


def test_apply_killed_mid_switch_is_rolled_back_by_the_next_run(ssh_host: SshHost, dkim_private_key_pem: str,
                                                                 tmp_path: Path) -> None:
    old = files_for(ssh_host, dkim_private_key_pem)
    assert push(ssh_host, old).ok
    proc = start_push(ssh_host, bigger(old), tmp_path / "known_hosts")
    try:
        wait_for(lambda: ssh_host.upper(JOURNAL).exists() or proc.poll() is not None, 60, "the switch to start")
        for pid in apply_pids(ssh_host):
            os.kill(pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(10)
    assert ssh_host.upper(JOURNAL).exists(), "a run killed mid-switch leaves its journal"
    # The next run is refused (a broken bundle), yet first puts the whole old config back.
    broken = edit(old, "/etc/postfix/main.cf", lambda c: c + "jira_mailhost_typo = yes\n")
    refused = push(ssh_host, broken)
    assert refused.rc == 1 and "stopped during its switch" in refused.stderr, out(refused)
    assert not ssh_host.upper(JOURNAL).exists()
    assert live_digest(ssh_host, old) == digest(old), "all of the old config, no mix"
    assert_serving(ssh_host)
    done = push(ssh_host, bigger(old))
    assert done.ok, out(done)
    assert live_digest(ssh_host, bigger(old)) == digest(bigger(old))


def main_apply_pid(host: SshHost) -> int:
    """The apply script itself (`bash -c SCRIPT jira-mailhost-apply`): not the login shell that started it
    (its command line only mentions the name), nor one of the script's own $(...) subshells."""
    scripts = []
    for pid in apply_pids(host):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        if argv[-2:] == [b"jira-mailhost-apply", b""]:
            scripts.append((pid, int(stat.rsplit(")", 1)[1].split()[1])))
    ids = {pid for pid, _ in scripts}
    found = [pid for pid, parent in scripts if parent not in ids]
    assert len(found) == 1, f"one apply script expected, found {scripts}"
    return found[0]


def signal_until_gone(pid: int, sig: signal.Signals, seconds: float = 60) -> None:
    """Signals, 1 ms apart, until the process is gone: one lands in every moment of its end."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(0.001)
    pytest.fail(f"{pid} still runs after {seconds:.0f} s of {sig.name}")


def signal_burst(pid: int, sig: signal.Signals, count: int = 40) -> None:
    """An admin's kill, repeated: a second signal must land while the first is being handled, and one may
    land while the apply expands a $(...) (bash 5.2 garbled its trap there, and the run ended 0 mid-switch)."""
    for _ in range(count):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        time.sleep(0.003)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_term_or_int_during_the_switch_puts_the_old_config_back(ssh_host: SshHost, dkim_private_key_pem: str,
                                                                sig: signal.Signals, tmp_path: Path) -> None:
    """An admin's kill, or a shutdown, mid-switch: the run ends on one whole configuration, the previous
    one, from the journal's backup, and says so (exit 2); the next push starts clean."""
    old = files_for(ssh_host, dkim_private_key_pem)
    assert push(ssh_host, old).ok
    proc = start_push(ssh_host, bigger(old), tmp_path / "known_hosts")
    try:
        wait_for(lambda: ssh_host.upper(JOURNAL).exists() or proc.poll() is not None, 60, "the switch to start")
        assert proc.poll() is None, "the push ended before its switch"
        signal_burst(main_apply_pid(ssh_host), sig)
        stderr = finished(proc)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == 2, stderr
    assert f"stopped by {sig.name} during the switch" in stderr and "previous configuration is live again" in stderr
    assert not ssh_host.upper(JOURNAL).exists()
    assert live_digest(ssh_host, old) == digest(old), "all of the old config, no mix"
    assert_serving(ssh_host)
    done = push(ssh_host, bigger(old))
    assert done.ok and "stopped during its switch" not in done.stderr, out(done)
    assert live_digest(ssh_host, bigger(old)) == digest(bigger(old))


def test_term_before_the_switch_changes_nothing(ssh_host: SshHost, dkim_private_key_pem: str, tmp_path: Path) -> None:
    """A kill while the apply still waits for the host's lock (another apply or teardown holds it): the run
    stops at its next stop point, before anything changed (exit 1), and the next push starts clean."""
    old = files_for(ssh_host, dkim_private_key_pem)
    assert push(ssh_host, old).ok
    holder = subprocess.Popen(ssh_host.nsenter(["flock", "/var/lib/jira-mailhost/lock", "sleep", "600"]),
                              start_new_session=True)
    try:
        wait_for(lambda: subprocess.run(ssh_host.nsenter(["flock", "-n", "/var/lib/jira-mailhost/lock", "true"]),
                                        check=False).returncode != 0, 10, "the test to hold the lock")
        proc = start_push(ssh_host, bigger(old), tmp_path / "known_hosts")
        try:
            wait_for(lambda: apply_pids(ssh_host, "^flock -w 300 9$") != [] or proc.poll() is not None, 60,
                     "the apply to wait for the lock")
            assert proc.poll() is None, "the push ended without waiting for the lock"
            signal_burst(main_apply_pid(ssh_host), signal.SIGTERM)
            time.sleep(0.5)
            assert proc.poll() is None, "the stop waits for a stop point; the lock is still held"
            os.killpg(holder.pid, signal.SIGKILL)  # flock and its sleep, which shares the locked file
            stderr = finished(proc)
        finally:
            proc.kill()
            proc.wait(10)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(10)
    assert proc.returncode == 1, stderr
    assert "stopped by SIGTERM before anything changed" in stderr, stderr
    assert not ssh_host.upper(JOURNAL).exists()
    assert live_digest(ssh_host, old) == digest(old)
    assert_serving(ssh_host)
    done = push(ssh_host, bigger(old))
    assert done.ok, out(done)
    assert live_digest(ssh_host, bigger(old)) == digest(bigger(old))


def test_term_after_the_switch_is_confirmed_lets_the_run_finish(ssh_host: SshHost, dkim_private_key_pem: str,
                                                                tmp_path: Path) -> None:
    """Signals that land once the new config is confirmed (its journal removed), until the apply is gone,
    undo nothing and kill nothing: exit 0, the new config live."""
    old = files_for(ssh_host, dkim_private_key_pem)
    assert push(ssh_host, old).ok
    proc = start_push(ssh_host, bigger(old), tmp_path / "known_hosts")
    try:
        wait_for(lambda: ssh_host.upper(JOURNAL).exists() or proc.poll() is not None, 60, "the switch to start")
        supervisor = main_apply_pid(ssh_host)
        wait_for(lambda: not ssh_host.upper(JOURNAL).exists(), 60, "the switch to be confirmed")
        signal_until_gone(supervisor, signal.SIGTERM)
        stderr = finished(proc)
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == 0, stderr
    assert "putting back" not in stderr
    assert live_digest(ssh_host, bigger(old)) == digest(bigger(old))
    assert_serving(ssh_host)


@pytest.mark.parametrize("drop", ["client killed", "client stderr closed"])
def test_dropped_session_during_a_failing_switch_still_rolls_back(ssh_host: SshHost, dkim_private_key_pem: str,
                                                                  drop: str, tmp_path: Path) -> None:
    """The rollback writes its story to stderr: with the session gone that write must not kill the run."""
    old = files_for(ssh_host, dkim_private_key_pem)
    assert push(ssh_host, old).ok
    hold_port(ssh_host, 2525)
    failing = edit(old, "/etc/postfix/master.cf", lambda c: re.sub(r"(?m)^smtp +inet ", "127.0.0.1:2525 inet ", c))
    drop_session_during_switch(ssh_host, failing, drop, tmp_path / "known_hosts")
    assert not ssh_host.upper(JOURNAL).exists(), "the rollback ran to its end"
    assert live_digest(ssh_host, old) == digest(old), "all of the old config, no mix"
    assert_serving(ssh_host)
    assert push(ssh_host, old).stdout.startswith("jira-mailhost: unchanged")
