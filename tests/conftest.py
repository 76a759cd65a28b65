"""Test-session wiring shared by every suite: how `pytest -n 2` (README) spreads the tests.

The real-software suites build network namespaces with fixed names and addresses: every test of the
`jm` lab must run on one worker, in file order, and so must every test of the `jmp` push hosts
(their file locks would serialise two workers too, but only by making one wait for minutes).
pytest-xdist's own `--dist loadgroup` does not group under pytest 9 (its nodeid suffix is never
seen), so the grouping is done here, by file, in a scheduler of our own: one scope per namespace
prefix, one scope per test for everything else.  tests/real/conftest.py refuses a test that uses a
prefix's fixtures from a file not listed here.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings

# Property tests: CI (and a plain run) draws the same examples every time, so a red run is reproducible;
# bench/fuzz_nightly.sh loads "random" and draws new ones each run.
settings.register_profile("fixed", derandomize=True)
settings.register_profile("random", derandomize=False, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fixed"))

# The program notes its previews in the user's cache (mailhost/publish/previewed.py): each test process
# (and the lab runners it starts) gets an empty one of its own, never this machine's ~/.cache.
_CACHE = tempfile.mkdtemp(prefix="mailhost-test-cache-")
os.environ["XDG_CACHE_HOME"] = _CACHE
atexit.register(shutil.rmtree, _CACHE, True)

NAMESPACE_FILES: dict[str, tuple[str, ...]] = {
    "jm": tuple(f"tests/real/{name}.py" for name in (
        "test_canary_lab", "test_capped_receiver", "test_lab", "test_lab_drills", "test_lab_mx", "test_lab_rename",
        "test_lab_dnssec", "test_lab_mta_sts", "test_outbound_tls",
        "test_relay_pacing",
        "test_relay_tls", "test_reports_lab", "test_secret_scan", "test_status_lab", "test_tls_reuse_bench")),
    "jmp": tuple(f"tests/real/{name}.py" for name in ("test_open_relay", "test_push_drills", "test_push_scripts")),
}


def scope_of(nodeid: str) -> str:
    """The scheduling scope of a test: its namespace prefix, or the test itself."""
    path = nodeid.split("::", 1)[0]
    for prefix, files in NAMESPACE_FILES.items():
        if path in files:
            return f"namespaces:{prefix}"
    return nodeid


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class NamespaceScheduling(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return scope_of(nodeid)

    return NamespaceScheduling(config, log)


@pytest.fixture(autouse=True)
def _no_journal_of_this_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    """The collector reads journald when it finds no mail log file: in-process tests must never read this
    machine's journal (tests/unit/test_journal.py gives it one of its own)."""
    from mailhost.publish import mailstats

    monkeypatch.setattr(mailstats, "JOURNALCTL", ("/nonexistent/journalctl",))


def pytest_sessionstart(session: pytest.Session) -> None:
    """mutmut runs each mutant's tests in a fork of a process that already ran them once (its stats run):
    what the engine model cached there (each shape deployed, the change matrix) was computed by the code
    before the mutation, and a mutant feeding them would pass unseen. Every session starts without them."""
    from mailhost.lab.engine import matrix

    matrix.deployed.cache_clear()
    matrix.matrix.cache_clear()
