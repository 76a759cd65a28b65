"""Test hosts as Linux network namespaces on one bridge: the lab's wiring, nothing else.

Layout: a hub namespace holds bridge br0; each host namespace gets a veth into it, and
the root namespace gets one veth too (so tests and the lab runner reach the hosts
directly).  Only documentation ranges are used, after checking the machine does not
already route them.  `Topology.destroy` removes everything whose name has the prefix,
so it also cleans up after a crash.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

LAB_V4 = ipaddress.IPv4Network("198.51.100.0/24")
LAB_V6 = ipaddress.IPv6Network("2001:db8:5100::/64")
ROOT_INDEX = 1  # the root namespace's own address in the lab: .1 and ::1
# Other users of the module (parallel test suites) pass their own prefix and, e.g.,
# 203.0.113.0/24 with 2001:db8:203::/64, so two topologies never share a range.


class LabError(RuntimeError):
    pass


def sh(argv: Sequence[str], *, check: bool = True, input: str | None = None, timeout: float = 60) -> str:
    """Run a command, return stdout; raise LabError with stderr on failure."""
    proc = subprocess.run(list(argv), input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def assert_ranges_free(prefix: str, nets: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> None:
    """Refuse to start if the machine already routes a lab range through something that is not ours."""
    for net in nets:
        family = f"-{net.version}"
        for line in sh(["ip", family, "route", "show"]).splitlines():
            dest = line.split()[0]
            if dest == "default":
                continue
            try:
                routed = ipaddress.ip_network(dest, strict=False)
            except ValueError:
                continue
            if routed.version == net.version and routed.overlaps(net) and f" dev {prefix}-" not in f" {line}":
                raise LabError(f"the machine already routes {dest} ({line.strip()}); the lab will not use {net}")


@dataclass
class Host:
    name: str
    netns: str
    ipv4: str
    ipv6: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv]

    def run(self, argv: Sequence[str], **kwargs: object) -> str:
        return sh(self.argv(argv), **kwargs)  # type: ignore[arg-type]

    def spawn(self, argv: Sequence[str], log: Path | None = None) -> subprocess.Popen[bytes]:
        out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115 - handed to the child
        return subprocess.Popen(self.argv(argv), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


@dataclass
class Topology:
    """A set of namespaces sharing one prefix; create hosts with add(), remove all with destroy()."""

    prefix: str = "jm"
    net4: ipaddress.IPv4Network = LAB_V4
    net6: ipaddress.IPv6Network = LAB_V6
    hosts: dict[str, Host] = field(default_factory=dict)

    def v4(self, index: int) -> str:
        return str(self.net4.network_address + index)

    def v6(self, index: int) -> str:
        return str(self.net6.network_address + index)

    @property
    def hub(self) -> str:
        return f"{self.prefix}-hub"

    @property
    def root_link(self) -> str:
        return f"{self.prefix}-root"

    def up(self) -> None:
        """Create the hub bridge and the root namespace's link into it."""
        assert_ranges_free(self.prefix, (self.net4, self.net6))
        sh(["ip", "netns", "add", self.hub])
        hub = self._hub()
        hub.run(["ip", "link", "set", "lo", "up"])
        hub.run(["ip", "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"])
        hub.run(["ip", "link", "set", "br0", "up"])
        sh(["ip", "link", "add", self.root_link, "type", "veth", "peer", "name", "r0", "netns", self.hub])
        hub.run(["ip", "link", "set", "r0", "master", "br0", "up"])
        sh(["ip", "addr", "add", f"{self.v4(ROOT_INDEX)}/{self.net4.prefixlen}", "dev", self.root_link])
        sh(["ip", "addr", "add", f"{self.v6(ROOT_INDEX)}/{self.net6.prefixlen}", "dev", self.root_link, "nodad"])
        sh(["ip", "link", "set", self.root_link, "up"])

    def add(self, name: str, index: int, resolver: str | None = None) -> Host:
        """A host namespace with lab addresses .index and ::index; optional /etc/resolv.conf for it."""
        ns = f"{self.prefix}-{name}"
        host = Host(name, ns, self.v4(index), self.v6(index))
        sh(["ip", "netns", "add", ns])
        port = f"p{index}"
        sh(["ip", "link", "add", f"{self.prefix}-{index}", "type", "veth", "peer", "name", "eth0", "netns", ns])
        sh(["ip", "link", "set", f"{self.prefix}-{index}", "netns", self.hub])
        hub = self._hub()
        hub.run(["ip", "link", "set", f"{self.prefix}-{index}", "name", port])
        hub.run(["ip", "link", "set", port, "master", "br0", "up"])
        host.run(["ip", "link", "set", "lo", "up"])
        host.run(["ip", "addr", "add", f"{host.ipv4}/{self.net4.prefixlen}", "dev", "eth0"])
        host.run(["ip", "addr", "add", f"{host.ipv6}/{self.net6.prefixlen}", "dev", "eth0", "nodad"])
        host.run(["ip", "link", "set", "eth0", "up"])
        if resolver:
            etc = Path("/etc/netns") / ns
            etc.mkdir(parents=True, exist_ok=True)
            (etc / "resolv.conf").write_text(f"nameserver {resolver}\noptions timeout:2 attempts:2\n")
        self.hosts[name] = host
        return host

    def _hub(self) -> Host:
        return Host("hub", self.hub, "", "")

    @property
    def root_ipv4(self) -> str:
        return self.v4(ROOT_INDEX)

    @property
    def root_ipv6(self) -> str:
        return self.v6(ROOT_INDEX)

    def destroy(self) -> None:
        destroy_prefix(self.prefix)


def namespaces(prefix: str) -> list[str]:
    names = [line.split()[0] for line in sh(["ip", "netns", "list"], check=False).splitlines() if line.strip()]
    return [name for name in names if name.startswith(f"{prefix}-")]


def kill_namespace_processes(ns: str) -> None:
    """Kill every process in the namespace: TERM, a short wait, then KILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = [int(p) for p in sh(["ip", "netns", "pids", ns], check=False).split()]
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sh(["ip", "netns", "pids", ns], check=False).split():
            time.sleep(0.1)


def destroy_prefix(prefix: str) -> None:
    """Remove every namespace, link, and /etc/netns entry with this prefix; safe to run twice."""
    for ns in namespaces(prefix):
        kill_namespace_processes(ns)
        sh(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
    sh(["ip", "link", "del", f"{prefix}-root"], check=False)


def leftovers(prefix: str) -> list[str]:
    """What the prefix still owns on the machine (for tests that prove a clean teardown)."""
    found = [f"netns {ns}" for ns in namespaces(prefix)]
    links = sh(["ip", "-o", "link", "show"], check=False)
    found += [f"link {line.split(':')[1].strip()}" for line in links.splitlines() if f" {prefix}-" in line]
    found += [f"etc {p}" for p in Path("/etc/netns").glob(f"{prefix}-*")] if Path("/etc/netns").exists() else []
    return found
