"""Fault drills in the lab: what happens to Jira's mail when something breaks while it flows.

The rule for every drill: each Message-ID Postfix accepted arrives at the MX, and no copy
fails DKIM.  "Accepted" is read from both sides: the submitter's 250s and the jira host's
mail log (cleanup's `message-id=`, then qmgr taking that queue file).  A refused submission
(4xx, refused or cut connection) is not accepted: Jira keeps it and retries, and so does
each drill once the fault is over (the same bytes, so the same Message-ID), counting it in.

Exactly once, except where SMTP itself cannot promise it (RFC 1047): a delivery cut
between the receiver taking a message and its 250 reaching the sender is retried, so the
receiver has it twice.  A second copy passes only with Postfix's own log as evidence for
that queue file: "message may be sent more than once" (the smarthost killed mid-reply), or
a delivery attempt that ended with no result at all across a Postfix restart (`postfix
stop` kills the delivery agents, which then log nothing); and no queue file may be logged
as sent twice.  A message Postfix took twice (two queue files) passes only if the submitter
was not told 250 the first time.  Any other copy, and any accepted message missing, fails.

The drills share one lab and run in file order; each prints its numbers (-s).  The SSH
session dropped mid-push is drilled in test_push_drills.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

from mailhost.lab import jirahost, ops, zones
from mailhost.lab.lab import REPO, Lab, LabBusy
from mailhost.ops import sshexec
from tests.real.conftest import lab_in_tmp, until

pytestmark = [pytest.mark.real, pytest.mark.lab, pytest.mark.usefixtures("jm_lab_lock")]
NO_V6_PTR = {"hosts": [{"name": "jira", "existing": {"ipv6Ptr": "none"}}]}
CLEAN_ENV = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]  # as an admin's shell, not pytest's environment
SMARTHOST_DOWN = 120.0
SPOOL = "/var/spool/postfix"
CLEANUP = re.compile(r"postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=(<[^>\s]*>)")
QUEUED = re.compile(r"postfix/qmgr\[\d+\]: ([0-9A-F]+): from=<")
SENT = re.compile(r"postfix/[\w/-]+\[\d+\]: ([0-9A-F]+): to=<[^>]*>, .*status=sent ")
MAYBE_TWICE = re.compile(r"postfix/[\w/-]+\[\d+\]: ([0-9A-F]+): .*message may be sent more than once")
RESULT = re.compile(r"postfix/[\w/-]+\[\d+\]: ([0-9A-F]+): to=<[^>]*>, .*status=")
MASTER_STARTED = re.compile(r"postfix/master\[\d+\]: daemon started")


@pytest.fixture(scope="module")
def lab(jm_lab_lock: None) -> Iterator[Lab]:
    with lab_in_tmp("drill") as the_lab:
        yield the_lab


def host(lab: Lab, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return jirahost.run(lab.info(), [*CLEAN_ENV, *argv], timeout=timeout)


def maillog(lab: Lab) -> str:
    return jirahost.run(lab.info(), ["cat", ops.MAILLOG]).stdout


@dataclass
class Account:
    """One drill's numbers (the README row)."""

    drill: str
    accepted: int  # distinct Message-IDs Postfix took: 250 at submission, or queued per its log
    delivered: int  # distinct Message-IDs at the MX
    copies: int  # messages at the MX, duplicates included
    cut_in_flight: int  # second copies of deliveries cut after the MX took them (Postfix's log shows it)
    refused: int  # submissions refused (each is retried until accepted)
    retried: int
    dkim_fail: int
    seconds: float

    @property
    def duplicates(self) -> int:
        return self.copies - self.delivered


class Drill:
    """One drill's ledger: every submission and refusal, the mail log from its start."""

    def __init__(self, lab: Lab, name: str):
        self.lab = lab
        self.name = name
        self.bursts: list[ops.Burst] = []
        self.retried = 0
        log = maillog(lab)
        self.log_mark = log.rfind("\n") + 1  # a line being written now is read whole later
        self.started = time.monotonic()
        self._lock = threading.Lock()

    def send(self, count: int, **kwargs: Any) -> ops.Burst:
        burst = ops.send(self.lab, count, keep_refused=True, big_every=0, **kwargs)
        with self._lock:
            self.bursts.append(burst)
        return burst

    def burst_count(self) -> int:
        with self._lock:
            return len(self.bursts)

    def acked(self) -> set[str]:
        with self._lock:
            return {mid for b in self.bursts for mid in b.message_ids}

    def refusals(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for b in self.bursts for r in b.refused]

    def pending(self) -> list[dict[str, Any]]:
        """Refused and not accepted since: what Jira still holds (the latest refusal of each)."""
        acked = self.acked()
        return list({r["message_id"]: r for r in self.refusals() if r["message_id"] not in acked}.values())

    def retry(self) -> ops.Burst | None:
        pending = self.pending()
        if not pending:
            return None
        burst = ops.retry(self.lab, pending)
        with self._lock:
            self.bursts.append(burst)
        self.retried += len(pending)
        return burst

    @contextlib.contextmanager
    def timed(self, what: str) -> Iterator[None]:
        start = time.monotonic()
        yield
        print(f"\nDRILL {self.name}: {what} took {time.monotonic() - start:.2f}s")

    def names(self) -> set[str]:
        with self._lock:
            return {name for b in self.bursts for name in b.name.split(",")}

    def arrived(self) -> list[dict[str, Any]]:
        names = self.names()
        return [r for r in ops.records(self.lab) if r["burst"] in names]

    def queued(self) -> dict[str, list[str]]:
        """Message-ID → the queue files Postfix made of it (cleanup saw it, qmgr took it), from the log."""
        log = maillog(self.lab)[self.log_mark:]
        taken = {m.group(1) for m in QUEUED.finditer(log)}
        out: dict[str, list[str]] = {}
        for m in CLEANUP.finditer(log):
            if m.group(1) in taken:
                out.setdefault(m.group(2), []).append(m.group(1))
        return out

    def account(self, timeout: float = 90) -> Account:
        """Wait for every accepted message at the MX, then apply the rule; return the numbers."""
        attempted = {r["message_id"] for r in self.refusals()} | self.acked()
        accepted = self.acked() | (set(self.queued()) & attempted)
        deadline = time.monotonic() + timeout  # on time-out, the check below names what is missing
        while not accepted <= {r["message_id"] for r in self.arrived()} and time.monotonic() < deadline:
            time.sleep(0.25)
        time.sleep(2)  # a second copy would show up now
        records, queued = self.arrived(), self.queued()
        log = maillog(self.lab)[self.log_mark:]
        sent = Counter(m.group(1) for m in SENT.finditer(log))
        cut_files = cut_deliveries(log)
        copies = Counter(r["message_id"] for r in records)
        refused_ids = {r["message_id"] for r in self.refusals()}
        accepted = self.acked() | (set(queued) & attempted)
        problems = [f"lost: {mid}" for mid in sorted(accepted - set(copies))]
        problems += [f"from nowhere: {mid}" for mid in sorted(set(copies) - accepted)]
        problems += [f"queue file {qid} logged as sent {n} times" for qid, n in sent.items() if n > 1]
        cut = 0
        for mid, n in copies.items():
            files = max(len(queued.get(mid, [])), 1)
            if files > 1 and mid not in refused_ids:
                problems.append(f"{mid}: queued {files} times though the submitter got 250 every time")
            extra = n - files
            if extra < 0:
                problems.append(f"{mid}: {files} queue files, {n} copies at the MX")
            elif extra == 1 and cut_files & set(queued.get(mid, [])):
                cut += 1
            elif extra:
                lines = [line for q in queued.get(mid, []) for line in log.splitlines() if f" {q}: " in line]
                problems.append(f"{mid}: {n} copies at the MX from {files} queue file(s), and Postfix's log shows no "
                                "cut delivery; its log:\n" + "\n".join(lines))
        account = Account(
            drill=self.name, accepted=len(accepted), delivered=len(copies), copies=len(records), cut_in_flight=cut,
            refused=len(self.refusals()), retried=self.retried,
            dkim_fail=sum(1 for r in records if r["dkim"] != "pass"),
            seconds=round(time.monotonic() - self.started, 1))
        print(f"\nDRILL {self.name}: {json.dumps(asdict(account))}")
        assert not problems, "\n".join(problems[:20])
        assert account.dkim_fail == 0, [r for r in records if r["dkim"] != "pass"][:3]
        assert not self.pending(), "every refused message must have been retried until accepted"
        return account


def cut_deliveries(log: str) -> set[str]:
    """Queue files whose delivery may have reached the MX without Postfix hearing its 250: Postfix says so,
    or an attempt (qmgr made the file active) got no result before a Postfix restart killed its agent."""
    cut = {m.group(1) for m in MAYBE_TWICE.finditer(log)}
    open_since: dict[str, int] = {}  # queue file → master generation its unfinished attempt started in
    generation = 0
    for line in log.splitlines():
        if MASTER_STARTED.search(line):
            generation += 1
        elif activated := QUEUED.search(line):
            qid = activated.group(1)
            if open_since.get(qid, generation) < generation:
                cut.add(qid)
            open_since[qid] = generation
        elif result := RESULT.search(line):
            open_since.pop(result.group(1), None)
    return cut


class Traffic:
    """Jira mail flowing during a fault: a burst of `count` every `pause` seconds or so, on a thread,
    until the block ends (about 6 messages a second: small drills, still mid-traffic)."""

    def __init__(self, drill: Drill, count: int = 5, pause: float = 0.5, **kwargs: Any):
        self.drill = drill
        self.count = count
        self.pause = pause
        self.kwargs = kwargs
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "the traffic thread did not stop"
        if self.error is not None and exc[0] is None:
            raise self.error

    def _run(self) -> None:
        try:
            while not self.stop.is_set():
                self.drill.send(self.count, **self.kwargs)
                self.stop.wait(self.pause)
        except BaseException as error:  # handed to the test thread in __exit__
            self.error = error

    def wait_arrived(self, n: int, seconds: float = 30) -> None:
        until(lambda: len(self.drill.arrived()) >= n, seconds, f"{n} messages of the traffic at the MX", pause=0.05)

    def wait_bursts(self, more: int, seconds: float = 60) -> None:
        target = self.drill.burst_count() + more
        until(lambda: self.drill.burst_count() >= target or self.error is not None, seconds, f"{more} more bursts",
              pause=0.05)


@contextlib.contextmanager
def held_in_host(lab: Lab, python: str, ready: str) -> Iterator[None]:
    """A python3 process inside the jira host (started here, killed by its pid), once `ready` exists there."""
    proc = subprocess.Popen(jirahost.nsenter(lab.info(), ["python3", "-c", python]), start_new_session=True)
    try:
        until(lambda: host(lab, "test", "-e", ready).returncode == 0 or proc.poll() is not None, 10, ready, pause=0.05)
        assert proc.poll() is None, f"the holder exited ({proc.returncode})"
        yield
    finally:
        proc.kill()
        proc.wait(10)
        host(lab, "rm", "-f", ready)


def holding_port(lab: Lab, address: str, port: int) -> contextlib.AbstractContextManager[None]:
    """Something else listening on [address]:port inside the jira host (IPv6 only, so 127.0.0.1 stays free)."""
    ready = f"/run/mailhost-drill-port-{port}.ready"
    python = (f"import socket,time\ns=socket.socket(socket.AF_INET6)\ns.setsockopt(socket.IPPROTO_IPV6,"
              f"socket.IPV6_V6ONLY,1)\ns.bind(('{address}',{port}))\ns.listen()\nopen('{ready}','w').close()\n"
              "time.sleep(600)")
    return held_in_host(lab, python, ready)


def holding_apply_lock(lab: Lab) -> contextlib.AbstractContextManager[None]:
    """apply.sh's own lock on the host held, so a push waits there (mid-`up`) until it is let go."""
    ready = "/run/mailhost-drill-apply-lock.ready"
    python = ("import fcntl,time\nf=open('/var/lib/jira-mailhost/lock','a')\nfcntl.flock(f,fcntl.LOCK_EX)\n"
              f"open('{ready}','w').close()\ntime.sleep(600)")
    return held_in_host(lab, python, ready)


def lab_cli(lab: Lab, *argv: str, timeout: float = 30) -> tuple[int, str]:
    """`mailhost lab …` as a user runs it; one that hangs (waits instead of being refused) is killed, whole."""
    proc = subprocess.Popen([sys.executable, "-m", "mailhost", "lab", *argv, "--state", str(lab.state_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                            env={**os.environ, "COLUMNS": "300"}, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the runner and ssh it started go with it
        proc.communicate()
        pytest.fail(f"`mailhost lab {' '.join(argv)}` still ran after {timeout:.0f}s instead of being refused")
    return proc.returncode, out


def apply_waiting(lab: Lab) -> bool:
    """apply.sh runs on the jira host (only its own processes: the PID namespace is the machine's)."""
    mnt = os.readlink(f"/proc/{lab.info().jira['pid']}/ns/mnt")
    found = subprocess.run(["pgrep", "-f", "jira-mailhost-apply"], capture_output=True, text=True).stdout.split()
    return any(_in_mount_ns(pid, mnt) for pid in found)


def _in_mount_ns(pid: str, mnt: str) -> bool:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt") == mnt
    except OSError:
        return False


def rerun_push(lab: Lab) -> sshexec.Result:
    """What `pulumi up` would run if the push Command ran again: its command and bundle, from the runner's state."""
    entries = json.loads((lab.state_dir / "runner-state.json").read_text())
    push = next(e for e in entries.values() if e["name"] == "jira-push")["inputs"]
    conn = push["connection"]
    return sshexec.run(str(conn["host"]), int(conn.get("port") or 22), str(conn.get("user") or "root"),
                       str(conn["privateKey"]), str(conn["hostKey"]), str(push["update"]), str(push["stdin"]),
                       timeout=120)


def opendkim_pid(lab: Lab) -> int:
    return int(host(lab, "cat", "/run/opendkim/opendkim.pid").stdout.strip())


def flush(lab: Lab) -> None:
    assert host(lab, "postqueue", "-f").returncode == 0


def drill_mail_queued(lab: Lab) -> list[dict[str, Any]]:
    return [q for q in ops.queue(lab) if q.get("sender", "").startswith("jira@")]


def free_bytes(lab: Lab) -> int:
    out = host(lab, "df", "-B1", "--output=avail", SPOOL).stdout.split()
    return int(out[-1])


def row(account: Account, what: str) -> None:
    """The README row: drill | what was done | messages in | messages out | duplicates."""
    dup = f"{account.duplicates}" + (f" (cut in flight by the fault: {account.cut_in_flight})"
                                     if account.cut_in_flight else "")
    print(f"\nROW | {account.drill} | {what} | {account.accepted} | {account.delivered} | {dup} |")


# -- 6. two ups at once ----------------------------------------------------------------------
def test_a_second_up_while_one_runs_is_refused_naming_it(lab: Lab) -> None:
    """The first up waits mid-push (apply.sh's host lock held); a second up or down meanwhile is refused at
    once with the first one's pid, changes nothing, and the first completes with its own settings."""
    result: dict[str, Any] = {}
    first_lab = Lab(lab.state_dir)  # its own lock handle, as another process would have

    def first_up() -> None:
        try:
            result["done"] = ops.up(first_lab, "direct", NO_V6_PTR)
        except BaseException as error:
            result["error"] = error

    thread = threading.Thread(target=first_up)
    try:
        with holding_apply_lock(lab):
            thread.start()
            holder = f"`mailhost lab up` (pid {os.getpid()}"
            until(lambda: holder in (lab.lock_path.read_text() if lab.lock_path.exists() else ""), 30,
                  "the first up to hold the lab", pause=0.05)
            until(lambda: apply_waiting(lab), 30, "the first up's push to wait at the host's lock", pause=0.05)
            for argv in (["up", "--mode", "relay", "--count", "0"], ["down"]):
                started = time.monotonic()
                code, said = lab_cli(lab, *argv)
                assert code == 1 and "refused:" in said and holder in said, said
                assert time.monotonic() - started < 20, "refused at once, not after waiting"
                print(f"\nDRILL two ups: `lab {argv[0]}` while one runs → {said.strip()}")
            with pytest.raises(LabBusy) as busy:  # the same from ops, in this process (its own lock handle)
                ops.up(lab, "relay")
            assert holder in str(busy.value), str(busy.value)
            mode = ops.current_values(lab).get("delivery", {}).get("mode", "direct")
            assert mode == "direct", "a refused relay up wrote its stack"
            assert thread.is_alive(), "the first up must still be waiting at the host's lock"
    finally:  # leaving the block let the push go on
        if thread.ident is not None:
            thread.join(120)
    assert "error" not in result, result.get("error")
    assert result["done"]["remote_commands"] == ["jira-push"]
    assert host(lab, "postconf", "-h", "inet_protocols").stdout.strip() == "ipv4", "the first up's config is live"
    back = ops.up(lab, "direct")  # free again: the next up is not refused
    assert back["remote_commands"] == ["jira-push"]
    assert host(lab, "postconf", "-h", "inet_protocols").stdout.strip() == "all"
    print("\nROW | two `lab up`s at once | second `up` (and a `down`) started while the first waited mid-push"
          " | - | - | - | refused at once naming the first's pid; the first completed with its own settings")


# -- 2. Postfix reload and full restart -----------------------------------------------------
def test_postfix_reload_then_full_restart_mid_traffic(lab: Lab) -> None:
    """Attachments of 200 KB keep the delivery agents busy, so the stop kills some mid-delivery;
    Postfix stays down until Jira has been refused once, then starts again."""
    drill = Drill(lab, "postfix reload + restart")
    master = host(lab, "cat", f"{SPOOL}/pid/master.pid").stdout.strip()
    with Traffic(drill, pause=0.2, size_kb=200) as traffic:
        traffic.wait_arrived(5)
        reload = host(lab, "postfix", "reload")
        assert reload.returncode == 0, reload.stderr  # not a window: a reload must cut nothing
        traffic.wait_bursts(2)
        with drill.timed("postfix stop, Jira refused, postfix start"):
            stop = host(lab, "postfix", "stop")
            until(drill.refusals, 20, "a submission refused while Postfix is down", pause=0.05)
            start = host(lab, "postfix", "start")
        assert stop.returncode == 0 and start.returncode == 0, (stop.stderr, start.stderr)
        traffic.wait_bursts(2)
    assert host(lab, "cat", f"{SPOOL}/pid/master.pid").stdout.strip() != master, "a new master runs"
    codes = Counter(str(r["code"] or r["error"])[:40] for r in drill.refusals())
    assert all(r["code"] is None or 400 <= r["code"] < 500 for r in drill.refusals()), codes  # all temporary
    print(f"\nDRILL postfix restart: refusals {dict(codes)}")
    drill.retry()
    account = drill.account()
    row(account, "`postfix reload`, then `postfix stop`, (Jira refused), `postfix start` on the host while bursts"
                 " of 200 KB messages flow; refused ones retried")
    # Started by hand, the master sees the host's resolv.conf, not the validating resolver DANE needs: the
    # push's unchanged path restarts it in its view, once
    pushed = rerun_push(lab)
    assert pushed.ok and pushed.stdout.strip().endswith(
        "; restarted postfix, which did not see the validating resolver"), pushed.stdout
    pushed = rerun_push(lab)
    assert pushed.ok and "unchanged" in pushed.stdout and "restarted" not in pushed.stdout, pushed.stdout


# -- 3. OpenDKIM killed ----------------------------------------------------------------------
def test_opendkim_killed_mid_traffic_nothing_leaves_unsigned(lab: Lab) -> None:
    drill = Drill(lab, "opendkim kill -9")
    pid = opendkim_pid(lab)
    assert Path(f"/proc/{pid}/comm").read_text().strip() == "opendkim"
    with Traffic(drill) as traffic:
        traffic.wait_arrived(5)
        os.kill(pid, signal.SIGKILL)
        until(lambda: not Path(f"/proc/{pid}").exists(), 10, "opendkim to die", pause=0.05)
        traffic.wait_bursts(2)
    down = drill.pending()
    assert down and all((r["code"], r["error"]) == (451, "4.7.1 Service unavailable - try again later")
                        for r in down), down[:3]

    again = ops.up(lab, "direct")  # like `pulumi up`: the push is unchanged, so no remote command runs
    assert again["remote_commands"] == []
    probe = drill.send(3)
    assert probe.sent == 0, "`lab up` does not bring OpenDKIM back"
    pushed = rerun_push(lab)  # the push itself, run again, does: apply.sh's unchanged path starts what is down
    assert pushed.ok and "unchanged" in pushed.stdout and "(started opendkim)" in pushed.stdout, pushed.stdout
    assert opendkim_pid(lab) != pid
    retried = drill.retry()
    assert retried is not None and not retried.refused
    log = maillog(lab)[drill.log_mark:]
    account = drill.account()
    print(f"\nDRILL opendkim: milter-reject lines {log.count('milter-reject')}, refused {len(down)} with 451 4.7.1")
    row(account, "`kill -9` OpenDKIM while bursts flow: 451 4.7.1 until apply.sh (re-run push) restarted it; "
                 "`lab up` alone ran nothing; refused ones retried")


# -- 4. A config push that fails on the host while mail flows ----------------------------------
def test_failing_push_mid_traffic_keeps_the_old_config(lab: Lab) -> None:
    """The push turns IPv6 sending on (a new PTR), which restarts Postfix; something else holds [::1]:25,
    so the restart fails after validation and apply.sh rolls back to the IPv4-only config."""
    assert ops.up(lab, "direct", NO_V6_PTR)["remote_commands"] == ["jira-push"]
    drill = Drill(lab, "failing push")
    with holding_port(lab, "::1", 25):
        with Traffic(drill) as traffic:
            traffic.wait_arrived(5)
            with drill.timed("the failing up (restart, roll back, restart)"), pytest.raises(ops.DeployError) as failed:
                ops.up(lab, "direct")
            traffic.wait_bursts(2)
        message = str(failed.value)
        for expected in ("the new configuration failed on jira.example.com: postfix did not restart",
                         "(port 25 is already in use by python3)", "the previous configuration is live again"):
            assert expected in message, message
        assert host(lab, "postconf", "-h", "inet_protocols").stdout.strip() == "ipv4"
        assert host(lab, "postfix", "status").returncode == 0
    drill.retry()
    account = drill.account()
    said = [line for line in message.splitlines() if line.startswith("jira-mailhost:")]
    print("\nDRILL failing push: the up failed with:\n  " + "\n  ".join(said))
    assert ops.up(lab, "direct")["remote_commands"] == ["jira-push"]  # the port is free again: it goes through
    assert host(lab, "postconf", "-h", "inet_protocols").stdout.strip() == "all"
    row(account, "`lab up` turning IPv6 on while [::1]:25 is taken, bursts flowing: restart fails, rolled back, "
                 "old config live, up fails naming the port's holder")


# -- 1. Smarthost down for two minutes -------------------------------------------------------
@contextlib.contextmanager
def smarthost_restored(lab: Lab) -> Iterator[None]:
    """Whatever the drill asserts, the smarthost runs again after it and the queue it left drains (the
    next drills need an empty queue and a running relay: one failure must not become three)."""
    try:
        yield
    finally:
        if "smarthost" not in lab.info().pids:
            lab.start_smarthost()
        flush(lab)
        with contextlib.suppress(AssertionError):
            until(lambda: drill_mail_queued(lab) == [], 120, "the drill's mail to leave the queue", pause=0.5)


def test_smarthost_killed_mid_burst_for_two_minutes(lab: Lab) -> None:
    assert "jira-push" in ops.up(lab, "relay")["remote_commands"]
    drill = Drill(lab, "smarthost down 2 min")
    with smarthost_restored(lab):
        result: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: result.update(burst=drill.send(50)))
        thread.start()
        try:
            until(lambda: len(drill.arrived()) >= 10, 60, "10 messages through the smarthost", pause=0.05)
            lab.stop_smarthost()
            killed = time.time()
        finally:
            thread.join(120)
        during = drill.send(10)  # Jira keeps sending while the relay is away: Postfix queues it
        assert result["burst"].sent == 50 and during.sent == 10
        seen = len(drill.arrived())
        time.sleep(max(0.0, killed + SMARTHOST_DOWN - time.time()))  # nothing else runs meanwhile
        queued = drill_mail_queued(lab)
        assert len(drill.arrived()) == seen, "nothing can arrive while the smarthost is down"
        # Every accepted message not at the MX waits in a queue Postfix delivers from (qmgr may not have
        # taken the last one from `incoming` yet: CI saw that once); none is on hold, none bounced.
        assert len(queued) >= 60 - seen, (len(queued), seen)
        assert {q["queue_name"] for q in queued} <= {"incoming", "active", "deferred"}, queued[:3]
        assert "deferred" in {q["queue_name"] for q in queued}, queued[:3]
        lab.start_smarthost()
        flush(lab)  # as an admin would; Postfix's own retry comes 5 min (minimal_backoff_time) after each deferral
        account = drill.account(timeout=120)
        assert drill_mail_queued(lab) == []
    print(f"\nDRILL smarthost: {seen} at the MX before the kill settled, {len(queued)} queued for "
          f"{SMARTHOST_DOWN:.0f}s, delivered after `postqueue -f`")
    row(account, f"relay mode: smarthost killed after 10 of 50, down {SMARTHOST_DOWN:.0f}s (10 more sent meanwhile),"
                 " started again, `postqueue -f`")


# -- 5. The spool fills up -------------------------------------------------------------------
_SMALL_SPOOL = """set -eu
postfix stop
mkdir -p /run/mailhost-drill-spool
mount -t tmpfs -o size={mb}m,mode=0755 mailhost-drill-spool /run/mailhost-drill-spool
cp -a {spool}/. /run/mailhost-drill-spool/
mount --move /run/mailhost-drill-spool {spool}
rmdir /run/mailhost-drill-spool
postfix start
"""
# `postfix stop` returns once the master is gone; its children may still hold queue files open for a moment,
# and umount then says "target is busy" (CI saw it once, and the next drill ran on the 8 MiB tmpfs).
_NORMAL_SPOOL = f"""postfix stop
tmpfs() {{ grep -q ' - tmpfs mailhost-drill-spool ' /proc/self/mountinfo; }}
for i in $(seq 1 100); do tmpfs || break; umount {SPOOL} 2>/dev/null || sleep 0.1; done
if tmpfs; then umount -l {SPOOL}; fi
umount /run/mailhost-drill-spool 2>/dev/null
postfix start
"""


@contextlib.contextmanager
def small_spool(lab: Lab, mb: int) -> Iterator[None]:
    """The jira host's queue on a tmpfs of `mb` MiB in its private mount namespace, then its own spool again
    (the machine's mount table never sees it; the queue must be empty by then, or what is left goes with it)."""
    left = ops.queue(lab)
    assert left == [], f"the queue must be empty before it moves to a tmpfs (an earlier drill left {len(left)})"
    try:
        made = host(lab, "sh", "-c", _SMALL_SPOOL.format(mb=mb, spool=SPOOL))
        assert made.returncode == 0, made.stderr
        yield
    finally:
        host(lab, "sh", "-c", _NORMAL_SPOOL)
        host(lab, "rmdir", "/run/mailhost-drill-spool")
        mounts = host(lab, "cat", "/proc/self/mountinfo").stdout
        assert "mailhost-drill-spool" not in mounts
        assert host(lab, "postfix", "status").returncode == 0


def test_full_spool_refuses_with_452_and_loses_nothing(lab: Lab) -> None:
    """Relay down, the queue grows until the spool (8 MiB) has less free than 1.5 × messageSizeLimit (3 MiB)."""
    limit = int(ops.current_values(lab)["messageSizeLimit"])
    with small_spool(lab, 8):
        lab.stop_smarthost()
        drill = Drill(lab, "spool full")
        fill = drill.send(16, size_kb=400)
        # Whatever else fills the disk (logs, another program): leave 64 KiB, so even small mail is refused
        # (the 400 KB ones can stop with up to 400 KB still free).
        filler = f"{SPOOL}/mailhost-drill-filler"
        made = host(lab, "fallocate", "-l", str(max(free_bytes(lab) - 65536, 0)), filler)
        assert made.returncode == 0, made.stderr
        probe = drill.send(4)  # small ones, once it is full
        free_full = free_bytes(lab)
        refusals = drill.refusals()
        assert fill.sent and fill.refused and probe.sent == 0, (fill.sent, len(fill.refused), probe.sent)
        assert all(r["code"] == 452 and r["error"] == "4.3.1 Insufficient system storage" for r in refusals), \
            refusals[:3]
        assert free_full < 1.5 * limit
        assert host(lab, "rm", filler).returncode == 0  # the other program's file goes; the queue stays
        lab.start_smarthost()
        flush(lab)
        until(lambda: drill_mail_queued(lab) == [], 60, "the queue to drain", pause=0.5)
        free_after = free_bytes(lab)
        retried = drill.retry()
        assert retried is not None and not retried.refused, "space again: the refused ones are accepted"
        account = drill.account()
        until(lambda: drill_mail_queued(lab) == [], 30, "the retried ones to leave", pause=0.5)
        left = ops.queue(lab)
        assert left == [], "nothing stays queued: no postmaster notice either (notify_classes is empty)"
    stuck = [(q.get("sender"), [(r.get("address"), r.get("delay_reason")) for r in q.get("recipients", [])])
             for q in left]
    print(f"\nDRILL spool: free when full {free_full} B (< 1.5 × {limit}), after the drain {free_after} B; "
          f"left in the queue (not Jira's; dropped with the tmpfs): {stuck}")
    row(account, "relay down, queue on an 8 MiB tmpfs: 16 × 400 KB, then a filler file, + 4 small; 452 4.3.1 once "
                 "free < 1.5 × limit;"
                 " relay back, `postqueue -f`, refused ones retried")


# -- 6. Settings changed while a burst flows ------------------------------------------------------
PRODUCTION_LIKE = {"environment": "production", "rerouteOptOut": None}  # protect on, real recipients


def _changed(result: dict[str, Any]) -> set[tuple[str, str]]:
    return {(s["op"], s["name"]) for s in result["steps"] if s["op"] != "same"}


def test_settings_changes_during_a_burst_update_in_place_and_deliver_everything(lab: Lab) -> None:
    """A production-like lab stack (every resource protected): `messageSizeLimit`, then a two-phase DKIM
    rotation, each its own `up` while 500 messages flow (20 a second). Each plan shows only the push update (and the new
    key generation), nothing is torn down, every message arrives once with DKIM passing under both keys."""
    ops.write_stack(lab, "direct", PRODUCTION_LIKE)
    ops.deploy(lab)  # the stack as production would have it, before the traffic
    drill = Drill(lab, "settings changed mid-burst")
    sent = lambda: sum(b.sent + len(b.refused) for b in list(drill.bursts))  # noqa: E731
    stop = threading.Event()

    failed: list[BaseException] = []

    def traffic() -> None:  # about 20 messages a second: 25 s of mail, the two `up`s take about 15 s
        try:
            while sent() < 500 and not stop.is_set():
                drill.send(min(20, 500 - sent()))
                time.sleep(1.0)
        except BaseException as error:  # the test says why the traffic stopped, not only that it did
            failed.append(error)
            raise

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    try:
        until(lambda: sent() >= 30, 60, "the burst to start", pause=0.05)
        before = sent()
        size = ops.write_stack(lab, "direct", {**PRODUCTION_LIKE, "messageSizeLimit": 20971520})
        first = ops.deploy(lab)
        middle = sent()
        today = time.strftime("%Y-%m-%d", time.gmtime())
        ops.write_stack(lab, "direct", {**PRODUCTION_LIKE, "messageSizeLimit": size["messageSizeLimit"],
                                         "dkimSelector": "jm2",
                                         "dkimRetired": [{"selector": "jm1", "retiredOn": today}]})
        second = ops.deploy(lab)
        after = sent()
    finally:
        thread.join(180)
        stop.set()
    assert not failed, f"the traffic stopped: {failed[0]!r}"
    assert before < middle < after, ("mail was flowing during both `up`s", before, middle, after)
    assert _changed(first) == {("update", "jira-push"), ("replace", "verify-dns")}, first["steps"]
    assert _changed(second) == {("create", "jira-dkim-jm2-jira"), ("create", "jira-dkim-jm2"),
                                ("update", "dkim-published"), ("update", "jira-push"),
                                ("replace", "verify-dns")}, second["steps"]
    assert first["remote_commands"] == second["remote_commands"] == ["jira-push"], "one push each, no teardown"
    assert host(lab, "postconf", "-h", "message_size_limit").stdout.strip() == "20971520"
    drill.retry()
    account = drill.account()
    assert account.accepted == 500, account
    selectors = Counter(r.get("dkim_selector") for r in drill.arrived())
    assert selectors["jm1-jira"] > 0 and selectors["jm2-jira"] > 0, selectors
    row(account, "production-like stack (protected): `messageSizeLimit` changed, then `dkimSelector` rotated with "
                 f"`dkimRetired`, each by `up` during a 500-message burst; signed {dict(selectors)}")
    # After the changes: a preview plans nothing; a change that deletes protected records is refused by
    # the preview and by `up` alike, before any step (the runner's state stays byte for byte).
    assert "to update" not in ops.preview(lab) and "to replace" not in ops.preview(lab)
    state = (lab.state_dir / "runner-state.json").read_bytes()
    moved = {**PRODUCTION_LIKE, "hosts": [{"name": "jira", "fqdn": f"mail.{zones.SENDER_DOMAIN}"}]}
    with pytest.raises(ops.DeployError, match=rf'resource "[^"]*::jira\.{re.escape(zones.SENDER_DOMAIN)}-a" '
                                              r'cannot be deleted\s+because it is protected'):
        ops.preview(lab, "direct", moved)
    with pytest.raises(ops.DeployError, match="cannot be deleted\nbecause it is protected"):
        ops.deploy(lab)
    assert (lab.state_dir / "runner-state.json").read_bytes() == state


def test_a_route53_create_without_overwrite_is_refused_when_the_record_exists(lab: Lab) -> None:
    """allowOverwrite: false makes the provider send CREATE: the lab's DNS refuses it for an existing record."""
    from mailhost.lab import dnsupdate

    server, zone = lab.world.dns.v4, zones.SENDER_DOMAIN
    name = f"overwrite-probe.{zone}"
    dnsupdate.create(server, zone, name, "TXT", 60, ['"first"'])
    try:
        with pytest.raises(dnsupdate.DnsUpdateError, match="but it already exists"):
            dnsupdate.create(server, zone, name, "TXT", 60, ['"second"'])
        answer = subprocess.run(["kdig", f"@{server}", "+short", "TXT", name], capture_output=True, text=True,
                                timeout=10).stdout
        assert answer.strip() == '"first"'
    finally:
        dnsupdate.delete(server, zone, name, "TXT")
