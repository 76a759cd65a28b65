"""pytest plugin used only by mutmut (see [tool.mutmut] in pyproject.toml).

mutmut maps each function to the tests that ran it and, for a mutant, runs only those.  It
credits a call to the test during which it happened, so what a module-scoped fixture runs (the
whole Pulumi program in tests/program, the verify world in tests/unit/test_checks.py) is credited
to the first test that used the fixture, and the other tests, the ones asserting on what the
fixture built, would never see the mutant.  This plugin adds to every selected test the tests of
its file that share one of its module-scoped (or wider) fixtures, so each mutant faces every
assertion made on what it changed.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

_SELECTED: set[str] = set()
_SHARED_SCOPES = ("module", "package", "session")


def files_of(args: list[str]) -> list[str]:
    """`tests/x.py::test_a`, `tests/x.py::test_b[p]` → `tests/x.py` (order kept, duplicates dropped)."""
    files: list[str] = []
    for arg in args:
        path = arg.split("::", 1)[0]
        if path not in files:
            files.append(path)
    return files


def shared_fixtures(item: Any) -> set[tuple[str, str]] | None:
    """(file, name) of the fixtures of wider than function scope an item uses; None if pytest hides them."""
    info = getattr(item, "_fixtureinfo", None)
    defs = getattr(info, "name2fixturedefs", None)
    if defs is None:
        return None
    out = set()
    for name, chain in defs.items():
        scope = getattr(chain[-1], "scope", "function") if chain else "function"
        if scope in _SHARED_SCOPES:
            out.add((str(item.path) if scope == "module" else "", name))
    return out


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if any("::" in arg for arg in config.args):
        _SELECTED.update(config.args)
        config.args[:] = files_of(list(config.args))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not _SELECTED:
        return
    chosen = [item for item in items if item.nodeid in _SELECTED]
    shared: set[tuple[str, str]] = set()
    for item in chosen:
        fixtures = shared_fixtures(item)
        if fixtures is None:
            return  # cannot tell: keep the whole files
        shared |= fixtures
    keep: list[pytest.Item] = []
    drop: list[pytest.Item] = []
    for item in items:
        fixtures = shared_fixtures(item) or set()
        (keep if item.nodeid in _SELECTED or fixtures & shared else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """A test that fails with no mutant in place (mutmut's statistics or clean run) is named in the file
    JM_MUTATION_CLEAN_LOG gives: mutmut runs those in a forked child whose output it cannot show, and
    says only "Failed to run clean test"; bench/mutation.sh prints this file then."""
    log = os.environ.get("JM_MUTATION_CLEAN_LOG")
    if not log or not report.failed or os.environ.get("MUTANT_UNDER_TEST", "") not in ("", "stats"):
        return
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"{report.when} {report.nodeid}\n{str(report.longrepr)[-3000:]}\n\n")
