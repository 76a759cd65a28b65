"""A real authoritative DNS server (Knot) for tests and the lab: zones from text, reload, stop.

Why a process and not a mock: the verify checks must meet real DNS behaviour (NXDOMAIN vs
NODATA, several strings in one TXT record, zone cuts, dynamic updates).  The same class runs
knotd on 127.0.0.1 with a free port in the root namespace, or on port 53 inside a lab
namespace when `wrap` is given (e.g. `Host.argv` from mailhost.lab.netns).  Everything it
writes lives in one temporary directory that `stop()` removes.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

Wrap = Callable[[Sequence[str]], list[str]]


class KnotError(RuntimeError):
    pass


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both UDP and TCP on `host` right now (Knot needs both)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(50):
        with socket.socket(family, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(family, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise KnotError(f"no free port on {host}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class Knot:
    """One knotd with its own config, zones and control socket.

    listen: addresses to bind; port: one port for all of them (None: a free one on the first
    address; 53 in a lab namespace).  update_from: client addresses allowed RFC 2136 updates
    (the lab runner's address), applied to every zone.  wrap: argv prefix to run knotd and
    knotc somewhere else (a namespace).
    """

    def __init__(
        self,
        listen: Sequence[str] = ("127.0.0.1",),
        port: int | None = None,
        zones: Mapping[str, str] | None = None,
        update_from: Sequence[str] = (),
        wrap: Wrap | None = None,
        signed: Sequence[str] = (),
    ) -> None:
        self.listen = list(listen)
        self.signed = {name.rstrip(".").lower() for name in signed}
        self.port = port if port is not None else free_port(self.listen[0])
        self.zones: dict[str, str] = {}
        self.update_from = list(update_from)
        self.wrap = wrap
        self.dir = Path(tempfile.mkdtemp(prefix="mailhost-knot-"))
        (self.dir / "zones").mkdir()
        (self.dir / "db").mkdir()
        self.process: subprocess.Popen[bytes] | None = None
        for name, text in (zones or {}).items():
            self._write_zone(name, text)

    # -- paths and config -------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.dir / "knot.conf"

    @property
    def log(self) -> Path:
        return self.dir / "knotd.log"

    @property
    def address(self) -> str:
        return self.listen[0]

    def _zone_file(self, name: str) -> Path:
        return self.dir / "zones" / f"{name.rstrip('.').lower() or 'root'}.zone"

    def _write_zone(self, name: str, text: str) -> str:
        key = name.rstrip(".").lower()
        self._zone_file(key).write_text(text if text.endswith("\n") else text + "\n")
        self.zones[key] = text
        return key

    def _render_conf(self) -> str:
        lines = [
            "server:",
            f"    rundir: {_quote(str(self.dir))}",
            f"    listen: [ {', '.join(_quote(f'{a}@{self.port}') for a in self.listen)} ]",
            "log:",
            "  - target: stderr",
            "    any: info",
            "database:",
            f"    storage: {_quote(str(self.dir / 'db'))}",
        ]
        if self.update_from:
            lines += [
                "acl:",
                "  - id: lab_update",
                f"    address: [ {', '.join(_quote(a) for a in self.update_from)} ]",
                "    action: update",
            ]
        if self.signed:
            # One combined key per zone: what Route53 and most signing providers publish (a KSK-like key with
            # its DS at the parent); NSEC, so a validator can prove a name or a TLSA record is absent.
            lines += ["policy:", "  - id: lab", "    algorithm: ecdsap256sha256", "    single-type-signing: on",
                      "    nsec3: off"]
        lines.append("template:")
        for template in ("default", "signed") if self.signed else ("default",):
            lines += [
                f"  - id: {template}",
                f"    storage: {_quote(str(self.dir / 'zones'))}",
                '    file: "%s.zone"',
                "    zonefile-sync: -1",  # never write back: the zone text is the truth
                "    zonefile-load: whole",
                "    journal-content: none",
                "    semantic-checks: on",
            ]
            if template == "signed":
                lines += ["    dnssec-signing: on", "    dnssec-policy: lab"]
            if self.update_from:
                lines.append("    acl: lab_update")
        if self.zones:
            lines.append("zone:")
            for name in sorted(self.zones):
                lines.append(f"  - domain: {_quote(name + '.')}")
                if not name:
                    lines.append(f"    file: {_quote(self._zone_file(name).name)}")
                if name in self.signed:
                    lines.append("    template: signed")
        return "\n".join(lines) + "\n"

    def ds(self, zone: str) -> str:
        """The DS record (SHA-256 digest) of a signed zone's key, as its parent's zone file writes it."""
        key = zone.rstrip(".").lower()
        if key not in self.signed:
            raise KnotError(f"zone {zone} is not signed here")
        argv = self._argv(["keymgr", "-c", str(self.conf), key + ".", "ds"])
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        for line in out.stdout.splitlines():
            fields = line.split()
            if len(fields) == 6 and fields[1] == "DS" and fields[4] == "2":
                return " ".join(fields)
        raise KnotError(f"keymgr gave no SHA-256 DS for {zone}: {(out.stderr or out.stdout).strip()}")

    def _argv(self, argv: Sequence[str]) -> list[str]:
        return self.wrap(argv) if self.wrap else list(argv)

    def knotc(self, *args: str, timeout: float = 30) -> str:
        """Run knotc against this server's control socket; raise KnotError with its output."""
        argv = self._argv(["knotc", "-c", str(self.conf), "-t", "10", *args])
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise KnotError(f"knotc {' '.join(args)}: {(proc.stderr or proc.stdout).strip()}\n{self.log_tail()}")
        return proc.stdout

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, timeout: float = 15) -> Knot:
        """Write the config, check it, start knotd, and return once every zone is served.

        On any failure knotd is stopped and the directory removed before the error propagates."""
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, timeout: float) -> None:
        self.conf.write_text(self._render_conf())
        self.knotc("conf-check")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self._argv(["knotd", "-c", str(self.conf)]),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise KnotError(f"knotd exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.knotc("status", timeout=5)
                break
            except (KnotError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise KnotError(f"knotd did not come up within {timeout}s:\n{self.log_tail()}") from None
                time.sleep(0.05)
        for name in self.zones:
            self._load(name)

    def _load(self, name: str) -> None:
        """Load a zone and fail loudly if Knot refused it (it otherwise keeps serving the old one)."""
        self.knotc("-b", "zone-reload", name + ".")  # absolute: the root zone's key is ""
        status = self.knotc("zone-status", name + ".")
        if "serial: none" in status or "| serial: -" in status:
            raise KnotError(f"zone {name} did not load:\n{status}\n{self.log_tail()}")

    def set_zone(self, name: str, text: str) -> None:
        """Add or replace a zone from its text and wait until Knot serves it.

        A zone Knot refuses raises KnotError and is rolled back (removed, or its old text
        restored), so one bad zone never breaks later reloads.
        """
        key = name.rstrip(".").lower()
        previous = self.zones.get(key)
        self._write_zone(key, text)
        if self.process is None:
            return
        try:
            if previous is None:
                self.conf.write_text(self._render_conf())
                self.knotc("reload")
            self._load(key)
        except KnotError:
            if previous is None:
                self.remove_zone(key)
            else:
                self._write_zone(key, previous)
            raise

    def remove_zone(self, name: str) -> None:
        key = name.rstrip(".").lower()
        self.zones.pop(key, None)
        self._zone_file(key).unlink(missing_ok=True)
        if self.process is not None:
            self.conf.write_text(self._render_conf())
            self.knotc("reload")

    def reload(self) -> None:
        """Re-read the config and every zone file (after editing them in place)."""
        self.conf.write_text(self._render_conf())
        self.knotc("reload")
        for name in self.zones:
            self._load(name)

    def stop(self) -> None:
        """Stop knotd (TERM, then KILL) and remove the working directory; safe to call twice."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Knot:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
