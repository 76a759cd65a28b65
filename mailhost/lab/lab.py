"""Build and tear down the whole lab: namespaces, lab DNS, the jira SSH host, MX and smarthost.

Everything the lab makes is named by its prefix or lives in its state directory, and
`lab.json` there records what was started, so `teardown` can always finish the job:
after a crash, half-way through a build, or twice in a row.  Nothing here configures
Postfix or OpenDKIM on the jira host: that is the program's job (see runner.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailhost.lab import imapd, jirahost, netns, tlscert, zones
from mailhost.lab.knot import Knot
from mailhost.ops.status import shown

REPO = Path(__file__).resolve().parents[2]
DEFAULT_STATE = REPO / ".lab"
PREFIX = "jm"
INDEX = {"dns": 53, "jira": 10, "mx": 25, "smarthost": 87}
RELAY_USER = "jira-lab"
LOCK_NAME = "lab.lock"
SMARTHOST_NAME = f"smtp.{zones.RECIPIENT_DOMAIN}"
Progress = Callable[[str], None]


class LabError(RuntimeError):
    pass


class LabBusy(LabError):
    """Another up/down holds this lab: refused at once rather than interleaved with it."""


def _quiet(_: str) -> None:
    return None


@dataclass
class LabInfo:
    """What lab.json records: enough to reach, inspect and remove everything."""

    prefix: str
    net4: str
    net6: str
    hosts: dict[str, dict[str, str]] = field(default_factory=dict)  # name → netns, ipv4, ipv6
    pids: dict[str, int] = field(default_factory=dict)
    knot_dir: str | None = None
    jira: dict[str, Any] = field(default_factory=dict)  # sshhost details: port, user, host_key, key paths
    paths: list[str] = field(default_factory=list)  # extra files/dirs to remove on teardown

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)


def private_file(path: Path, text: str) -> Path:
    """Write a file only its owner can read (secrets: keys, passwords)."""
    return tlscert.write_private(path, text.encode())


def wait_port(address: str, port: int, timeout: float = 60, what: str = "service", log: Path | None = None) -> None:
    """Until something listens there.  A service that never does is named with the end of its log (a lab
    service starts in about a second; the bound is for a machine busy with other tests)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=1):
                return
        except OSError as error:
            if time.monotonic() > deadline:
                tail = ""
                if log is not None and log.exists():
                    lines = log.read_text(errors="replace").splitlines()[-15:]
                    tail = "\n" + "\n".join(f"  {shown(line[:300])}" for line in lines)
                raise LabError(f"{what} did not listen on [{address}]:{port} within {timeout}s: {error}{tail}") \
                    from None
            time.sleep(0.1)


class Lab:
    """One lab: state directory + namespace prefix.  `build()` makes it, `teardown()` removes it."""

    def __init__(self, state_dir: Path = DEFAULT_STATE, prefix: str = PREFIX):
        self.state_dir = Path(state_dir)
        self.prefix = prefix
        self._lock_fd: int | None = None
        self.topology = netns.Topology(prefix)
        self.world = zones.World(
            self.topology.net4, self.topology.net6,
            dns=self._addr("dns"), mx=self._addr("mx"), smarthost=self._addr("smarthost"),
        )

    def _addr(self, name: str) -> zones.Addr:
        return zones.Addr(self.topology.v4(INDEX[name]), self.topology.v6(INDEX[name]))

    # -- paths ---------------------------------------------------------------------------
    @property
    def info_path(self) -> Path:
        return self.state_dir / "lab.json"

    @property
    def receiver_log(self) -> Path:
        return self.state_dir / "receiver.jsonl"

    @property
    def smarthost_log(self) -> Path:
        return self.state_dir / "smarthost.jsonl"

    @property
    def receiver_connections(self) -> Path:
        return self.state_dir / "receiver-connections.jsonl"

    @property
    def smarthost_connections(self) -> Path:
        return self.state_dir / "smarthost-connections.jsonl"

    @property
    def smarthost_events(self) -> Path:
        return self.state_dir / "smarthost-events.jsonl"

    @property
    def relay_password_file(self) -> Path:
        return self.state_dir / "relay-password"

    @property
    def ca_cert(self) -> Path:
        return self.state_dir / "lab-ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.state_dir / "lab-ca.key"

    def cert_paths(self, label: str) -> tuple[Path, Path]:
        """Where a lab server certificate and its 0600 key live."""
        return self.state_dir / f"{label}.crt", self.state_dir / f"{label}.key"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / LOCK_NAME

    @contextlib.contextmanager
    def exclusive(self, action: str) -> Iterator[None]:
        """Hold the lab for one up/down: two at once would write one stack, state and host together.
        Non-blocking (the second is refused, naming the first); re-entrant within this Lab object;
        the lock file is in the state dir and goes with it when the lab was torn down meanwhile."""
        if self._lock_fd is not None:
            yield
            return
        self._lock_fd = _take_lock(self.lock_path, action)
        try:
            yield
        finally:
            fd, self._lock_fd = self._lock_fd, None
            os.ftruncate(fd, 0)  # no stale "… holds it" once released
            with contextlib.suppress(OSError):
                if [p.name for p in self.state_dir.iterdir()] == [LOCK_NAME]:  # torn down: leave nothing
                    self.lock_path.unlink()
                    self.state_dir.rmdir()
            os.close(fd)  # releases the lock (after the unlink: a waiter re-checks the path, see _take_lock)

    def exists(self) -> bool:
        return self.info_path.exists() and bool(netns.namespaces(self.prefix))

    def info(self) -> LabInfo:
        if not self.info_path.exists():
            raise LabError(f"no lab at {self.state_dir}; run `mailhost lab up`")
        return LabInfo(**json.loads(self.info_path.read_text()))

    def save(self, info: LabInfo) -> None:
        self.info_path.write_text(info.to_json())

    def host(self, name: str) -> netns.Host:
        return netns.Host(name, f"{self.prefix}-{name}", *self._addr_pair(name))

    def _addr_pair(self, name: str) -> tuple[str, str]:
        return self.topology.v4(INDEX[name]), self.topology.v6(INDEX[name])

    # -- build ---------------------------------------------------------------------------
    def build(self, progress: Progress = _quiet, with_jira: bool = True) -> LabInfo:
        """Make the lab from nothing (removing any leftovers of an earlier one first)."""
        self.teardown(progress)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)
        info = LabInfo(self.prefix, str(self.topology.net4), str(self.topology.net6))
        self.save(info)  # from here on, teardown knows what to remove
        try:
            progress("network namespaces")
            self.topology.up()
            resolver = self.world.dns.v4
            for name, index in INDEX.items():
                host = self.topology.add(name, index, resolver=None if name == "dns" else resolver)
                info.hosts[name] = {"netns": host.netns, "ipv4": host.ipv4, "ipv6": host.ipv6}
            self.save(info)
            progress("lab DNS (knot)")
            self._start_dns(info)
            progress("MX receiver")
            self.start_receiver(info)
            progress("the lab CA")
            self._make_ca()
            progress("mailboxes (dovecot, certificate from the lab CA)")
            self.start_imap(info)
            progress("smarthost (certificate from the lab CA)")
            self.relay_password()  # made once per lab
            self.start_smarthost(info)
            if with_jira:
                progress("jira host (sshd)")
                self._start_jira(info)
        except BaseException:
            self.save(info)
            raise
        self.save(info)
        return info

    @property
    def root_anchor(self) -> Path:
        """The lab root's DS: the trust anchor a validating resolver in the lab starts from."""
        return self.state_dir / "lab-root.ds"

    @property
    def root_hints(self) -> Path:
        return self.state_dir / "lab-root.hints"

    def _start_dns(self, info: LabInfo) -> None:
        """Knot with every lab zone, the root and the recipient zone signed, the MX's TLSA published."""
        dns = self.host("dns")
        mx_cert = tlscert.self_signed(f"mx.{zones.RECIPIENT_DOMAIN}")
        mx_cert.write(*self.cert_paths("mx"))
        knot = Knot(
            listen=[self.world.dns.v4, self.world.dns.v6],
            port=53,
            zones={"": self.world.root_zone({}), **self.world.zones(mx_tlsa=tlscert.tlsa_3_1_1(mx_cert.cert_pem))},
            update_from=[self.topology.root_ipv4, self.topology.root_ipv6],
            wrap=dns.argv,
            signed=zones.SIGNED_ZONES,
        )
        info.knot_dir = str(knot.dir)
        self.save(info)
        knot.start()
        assert knot.process is not None
        info.pids["knot"] = knot.process.pid
        # The chain of trust: the root vouches for the recipient zone's key (the sender zone stays unsigned).
        knot.set_zone("", self.world.root_zone({zones.RECIPIENT_DOMAIN: knot.ds(zones.RECIPIENT_DOMAIN)}))
        self.root_anchor.write_text(knot.ds("") + "\n")
        self.root_hints.write_text(self.world.root_hints())

    def _spawn(self, info: LabInfo, name: str, ns_host: str, argv: list[str]) -> int:
        host = self.host(ns_host)
        log = self.state_dir / f"{name}.log"
        proc = host.spawn([sys.executable, "-m", *argv], log=log)
        info.pids[name] = proc.pid
        self.save(info)
        return proc.pid

    def start_receiver(self, info: LabInfo | None = None, extra: Sequence[str] = ()) -> None:
        info = info or self.info()
        mx = self.world.mx
        cert, key = self.cert_paths("mx")  # made with the zones, whose TLSA names its key
        self._make_mail_root(info)
        imapd.make_maildirs(self.maildirs, imapd.MAILBOXES)
        self._spawn(info, "receiver", "mx", [
            "mailhost.lab.receiver", "--listen", mx.v4, "--listen", mx.v6, "--port", "25",
            "--hostname", f"mx.{zones.RECIPIENT_DOMAIN}", "--domain", zones.RECIPIENT_DOMAIN,
            "--domain", zones.SENDER_DOMAIN,
            *(arg for d in zones.SAME_MX_DOMAINS for arg in ("--domain", d)), "--domain", zones.IPV4_ONLY_DOMAIN,
            "--strict-domain", zones.STRICT_DOMAIN, "--strict-domain", zones.STRICT6_DOMAIN,
            "--dns", self.world.dns.v4, "--log", str(self.receiver_log),
            "--conn-log", str(self.receiver_connections), "--maildirs", str(self.maildirs),
            *(arg for m in imapd.MAILBOXES for arg in ("--mailbox", m)),
            *(["--cert", str(cert), "--key", str(key)] if cert.exists() else []), *extra,
        ])
        wait_port(mx.v4, 25, what="receiver", log=self.state_dir / "receiver.log")
        wait_port(mx.v6, 25, what="receiver", log=self.state_dir / "receiver.log")

    @property
    def second_mx_log(self) -> Path:
        return self.state_dir / "mx2.jsonl"

    @property
    def second_mx_connections(self) -> Path:
        return self.state_dir / "mx2-connections.jsonl"

    def start_second_mx(self, info: LabInfo | None = None, extra: Sequence[str] = ()) -> None:
        """mx2: the MX of SECOND_MX_DOMAINS, a receiver on the smarthost's addresses (port 25 there is free)."""
        info = info or self.info()
        sh = self.world.smarthost
        self._spawn(info, "mx2", "smarthost", [
            "mailhost.lab.receiver", "--listen", sh.v4, "--listen", sh.v6, "--port", "25",
            "--hostname", f"mx2.{zones.RECIPIENT_DOMAIN}",
            *(arg for d in zones.SECOND_MX_DOMAINS for arg in ("--domain", d)),
            "--dns", self.world.dns.v4, "--log", str(self.second_mx_log),
            "--conn-log", str(self.second_mx_connections), *extra,
        ])
        wait_port(sh.v4, 25, what="mx2", log=self.state_dir / "mx2.log")

    @property
    def mail_root(self) -> Path:
        """The lab mailboxes' home: outside the 0700 state dir, which Dovecot's users (mail, dovecot) cannot
        enter; named after the state dir, so a second lab elsewhere never shares it."""
        digest = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"{self.prefix}-mx-mail-{digest}"

    @property
    def maildirs(self) -> Path:
        return self.mail_root / "mail"

    def _make_mail_root(self, info: LabInfo) -> None:
        if str(self.mail_root) not in info.paths:
            info.paths.append(str(self.mail_root))
            self.save(info)
        self.mail_root.mkdir(mode=0o711, exist_ok=True)
        os.chmod(self.mail_root, 0o711)

    def imap_password_file(self, address: str) -> Path:
        """The lab mailbox's password, made once per lab (0600): what a password command would print."""
        path = self.state_dir / f"imap-{address}.secret"
        if not path.exists():
            private_file(path, secrets.token_urlsafe(18))
        return path

    def imap_token_file(self, address: str) -> Path:
        """The lab mailbox's OAuth2 access token (0600): what a token command (az, oauth2l) would print."""
        path = self.state_dir / f"imap-{address}.token"
        if not path.exists():
            private_file(path, "lab-" + secrets.token_urlsafe(24))
        return path

    def start_imap(self, info: LabInfo | None = None) -> None:
        """Dovecot in the MX's namespace, serving the lab mailboxes over IMAPS with a lab-CA certificate."""
        info = info or self.info()
        if _alive(info.pids.get("imap")):
            return
        mx = self.world.mx
        cert, key = self.cert_paths("imap")
        self.lab_ca().issue(f"imap.{zones.RECIPIENT_DOMAIN}", [mx.v4, mx.v6]).write(cert, key)
        passwords = {a: self.imap_password_file(a).read_text().strip() for a in imapd.MAILBOXES}
        self._make_mail_root(info)
        conf = imapd.prepare(self.mail_root / "imap", self.maildirs, [mx.v4, mx.v6], cert, key, passwords)
        tokens = private_file(self.state_dir / "oauth-tokens",
                              "".join(f"{self.imap_token_file(a).read_text().strip()} {a}\n" for a in imapd.MAILBOXES))
        info.pids["oauth"] = self.host("mx").spawn(
            [sys.executable, "-m", "mailhost.lab.oauth", "--listen", mx.v4, "--port", str(imapd.OAUTH_PORT),
             "--tokens", str(tokens)], log=self.state_dir / "oauth.log").pid
        info.pids["imap"] = self.host("mx").spawn(imapd.argv(conf), log=self.state_dir / "imap.out").pid
        self.save(info)
        wait_port(mx.v4, imapd.OAUTH_PORT, what="oauth", log=self.state_dir / "oauth.log")
        wait_port(mx.v4, imapd.PORT, what="imap", log=self.mail_root / "imap" / "dovecot.log")

    def relay_password(self) -> str:
        if not self.relay_password_file.exists():
            private_file(self.relay_password_file, secrets.token_urlsafe(18))
        return self.relay_password_file.read_text().strip()

    def _make_ca(self) -> None:
        """A CA for this lab only (its key 0600 in the state dir), and the smarthost's certificate from it."""
        ca = tlscert.LabCA.create(self.prefix)
        ca.save(self.ca_cert, self.ca_key)
        ca.issue(SMARTHOST_NAME).write(*self.cert_paths("smarthost"))

    def lab_ca(self) -> tlscert.LabCA:
        return tlscert.LabCA.load(self.ca_cert, self.ca_key)

    def start_smarthost(self, info: LabInfo | None = None, cert: str = "smarthost", extra: Sequence[str] = ()) -> None:
        """Start the smarthost presenting the certificate stored under `cert` (see cert_paths), with extra
        options (e.g. a rate limit: --max-per-window N --window S)."""
        info = info or self.info()
        sh = self.world.smarthost
        cert_path, key_path = self.cert_paths(cert)
        self._spawn(info, "smarthost", "smarthost", [
            "mailhost.lab.smarthost", "--listen", sh.v4, "--listen", sh.v6, "--port", "587",
            "--hostname", SMARTHOST_NAME, "--source", sh.v4, "--dns", self.world.dns.v4,
            "--username", RELAY_USER, "--password-file", str(self.relay_password_file),
            "--log", str(self.smarthost_log), "--cert", str(cert_path), "--key", str(key_path),
            "--events", str(self.smarthost_events), "--conn-log", str(self.smarthost_connections), *extra,
        ])
        wait_port(sh.v4, 587, what="smarthost", log=self.state_dir / "smarthost.log")

    def restart_receivers(self, extra: Sequence[str]) -> None:
        """The MX (and mx2 when it runs) again, with extra receiver options (e.g. --no-verdicts)."""
        info = self.info()
        for name, start in (("receiver", self.start_receiver), ("mx2", self.start_second_mx)):
            pid = info.pids.get(name)
            if pid is None and name == "mx2":
                continue
            if pid is not None:
                _kill(pid)
            start(info, extra)

    def stop_smarthost(self) -> None:
        info = self.info()
        pid = info.pids.pop("smarthost", None)
        if pid:
            _kill(pid)
        self.save(info)

    def _start_jira(self, info: LabInfo) -> None:
        info.jira = jirahost.start(self.host("jira"), self.world.dns.v4)
        self.save(info)
        jirahost.trust_ca(info, self.ca_cert.read_bytes())
        jirahost.trust_lab_root(info, self.root_hints.read_text(), self.root_anchor.read_text(),
                                list(zones.DOC_REVERSE_ZONES))

    # -- teardown --------------------------------------------------------------------------
    def teardown(self, progress: Progress = _quiet) -> None:
        """Remove every process, namespace, link, mount and file of this lab; safe on any half-state."""
        info: LabInfo | None = None
        with contextlib.suppress(Exception):
            info = self.info()
        if info is not None:
            progress("stopping lab processes")
            for pid in info.pids.values():
                _kill(pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # what it started (Dovecot's workers): each spawn leads a group
            with contextlib.suppress(Exception):
                jirahost.stop(self.host("jira"), self.prefix, info.jira)
        progress("removing namespaces and links")
        netns.destroy_prefix(self.prefix)
        if info is not None:
            for path in [info.knot_dir, *info.paths]:
                if path:
                    shutil.rmtree(path, ignore_errors=True) if Path(path).is_dir() else Path(path).unlink(
                        missing_ok=True)
        if self._lock_fd is None:
            shutil.rmtree(self.state_dir, ignore_errors=True)
        else:  # held by an up/down of this process: the lock file stays until it is released
            for entry in self.state_dir.glob("*"):
                if entry.name != LOCK_NAME:
                    shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """Everything of this lab still on the machine (a clean teardown leaves this empty)."""
        found = netns.leftovers(self.prefix)
        found += [f"dir {d}" for d in (self.state_dir, self.mail_root) if d.exists()]
        # Only this lab's own names: other tools may use paths such as /tmp/jm-fuzz-… at the same time.
        ours = re.compile(rf"/{re.escape(self.prefix)}-(?:hub|{'|'.join(INDEX)})(?![\w.])")
        mounts = Path("/proc/self/mountinfo").read_text()
        found += [f"mount {line.split()[4]}" for line in mounts.splitlines()
                  if ours.search(line.split()[4]) or str(self.state_dir) in line]
        for pid_dir in Path("/proc").glob("[0-9]*"):
            if int(pid_dir.name) in (os.getpid(), os.getppid()):
                continue
            with contextlib.suppress(OSError):
                cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                if str(self.state_dir) in cmd or ours.search(cmd):
                    found.append(f"process {pid_dir.name}: {cmd[:120]}")
        return found


def _take_lock(path: Path, action: str) -> int:
    """An exclusive flock on path (created 0600), or LabBusy with what the holder wrote into it."""
    while True:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except FileNotFoundError:  # the holder removed the state dir just now
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 500).decode(errors="replace").strip() or "a run that is just starting"
            os.close(fd)
            raise LabBusy(f"the lab at {path.parent} is busy: {holder}. Wait for it to finish; two at once "
                          "would interleave their changes") from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:  # not a file its last holder removed before we locked it
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"`mailhost lab {action}` (pid {os.getpid()}, since {started}) holds it\n".encode())
    return fd


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _kill(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)


def run_in(
    host: netns.Host, argv: list[str], timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(host.argv(argv), capture_output=True, text=True, timeout=timeout, input=input)
