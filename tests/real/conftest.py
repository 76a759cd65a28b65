"""Fixtures for the push-script tests: a namespace host with private /etc, /var, /run reached over SSH.

Ranges of this suite: prefix `jmp`, 203.0.113.0/24 and 2001:db8:203::/64.  The host's
resolver points at a lab address where nothing listens, so mail to anything but the
host itself waits in the queue (that is what the drain test needs).
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailhost.lab import lab as jm_lab
from mailhost.lab.netns import Host, Topology, destroy_prefix, leftovers
from mailhost.lab.sshhost import SshHost, start_ssh_host

JMP_PREFIX = "jmp"
JMP_NET4 = ipaddress.IPv4Network("203.0.113.0/24")
JMP_NET6 = ipaddress.IPv6Network("2001:db8:203::/64")
JMP_HOST_INDEX = 10
JMP_DEAD_RESOLVER = "203.0.113.250"  # nothing listens there


@contextlib.contextmanager
def _exclusive(name: str, timeout: float = 900, lock_on: Path = Path(__file__)) -> Iterator[None]:
    """Two runs of this suite at once (a developer and CI) would tear down each other's namespaces.

    The lock is taken on a file of the repo (by default this one), so no lock file is
    created or left behind; each namespace prefix locks its own file.
    """
    with open(lock_on) as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"another run of the {name} lab tests held the lock for {timeout:.0f}s")
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def lab_in_tmp(name: str, mode: str | None = "direct") -> Iterator[jm_lab.Lab]:
    """A `jm` lab with its state in a new temp dir, the program deployed in `mode` (None: nothing
    deployed); torn down however the module ends, and checked to leave nothing behind."""
    with tempfile.TemporaryDirectory(prefix=f"mailhost-{name}-") as tmp:
        the_lab = jm_lab.Lab(Path(tmp) / "state")
        try:
            if mode:
                from mailhost.lab import ops

                ops.up(the_lab, mode)
            yield the_lab
        finally:
            the_lab.teardown()
        assert the_lab.leftovers() == []


@pytest.fixture(scope="module")
def jm_lab_lock() -> Iterator[None]:
    """Held by every module that builds the `jm` lab, for the whole module: the lab's namespaces,
    addresses and /tmp names are fixed, so a second run would destroy the first one's lab.
    Locks mailhost/lab/lab.py, the file that owns the prefix (the jmp lock is this file)."""
    with _exclusive(jm_lab.PREFIX, lock_on=Path(jm_lab.__file__)):
        yield


@pytest.fixture(scope="module")
def jmp_topology() -> Iterator[Topology]:
    with _exclusive(JMP_PREFIX):
        destroy_prefix(JMP_PREFIX)  # a crashed earlier run
        topology = Topology(JMP_PREFIX, JMP_NET4, JMP_NET6)
        try:
            topology.up()
            yield topology
        finally:
            topology.destroy()
        assert leftovers(JMP_PREFIX) == []
        assert list(Path(tempfile.gettempdir()).glob(f"{JMP_PREFIX}-*-sshhost-*")) == []


@pytest.fixture(scope="module")
def jmp_netns_host(jmp_topology: Topology) -> Host:
    return jmp_topology.add("mx", JMP_HOST_INDEX, resolver=JMP_DEAD_RESOLVER)


@pytest.fixture(scope="module")
def ssh_host_shared(jmp_topology: Topology) -> Iterator[SshHost]:
    """A second host for tests that leave it as they found it (rejected pushes), to save a push each."""
    host = start_ssh_host(jmp_topology.add("mx2", JMP_HOST_INDEX + 1, resolver=JMP_DEAD_RESOLVER))
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture
def ssh_host(jmp_netns_host: Host) -> Iterator[SshHost]:
    """A fresh host per test: new host key, client key and private tree; everything killed after."""
    host = start_ssh_host(jmp_netns_host)
    try:
        yield host
    finally:
        host.stop()


@pytest.fixture(scope="session")
def dkim_private_key_pem() -> str:
    """Generated at test time, never stored."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses the `jm` or `jmp` namespaces must live in a file tests/conftest.py schedules as
    that prefix's (one worker, in order); this refuses one that does not, instead of letting two
    workers fight over a lab."""
    from tests.conftest import NAMESPACE_FILES

    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        want = "jm" if "jm_lab_lock" in names else \
            "jmp" if names & {"jmp_topology", "jmp_netns_host", "ssh_host", "ssh_host_shared"} else None
        path = item.nodeid.split("::", 1)[0]
        if want and path not in NAMESPACE_FILES[want]:
            raise pytest.UsageError(f"{path} uses the {want} namespaces: add it to NAMESPACE_FILES[{want!r}] "
                                    "in tests/conftest.py")


def until(condition: Callable[[], Any], seconds: float, what: str, pause: float = 0.5) -> Any:
    """Poll `condition` every `pause` seconds until it is truthy; return that value, or fail naming `what`."""
    deadline = time.monotonic() + seconds
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds:.0f}s waiting for {what}")
        time.sleep(pause)
    return result
