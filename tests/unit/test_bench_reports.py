"""bench/reports_ingest.py's plumbing at a small count: every generated report is read, none refused, the
table has its columns, and its temp dir is gone.  The numbers themselves are BENCHMARKS.md's."""

from __future__ import annotations

import importlib.util
import re
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_the_ingest_benchmark_reads_every_report_it_writes(capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("reports_ingest", ROOT / "bench" / "reports_ingest.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    before = set(Path(tempfile.gettempdir()).glob("mailhost-reportsbench-*"))
    assert bench.main(["--reports", "60", "--runs", "1"]) == 0  # it asserts every report new, none refused
    out = capsys.readouterr().out
    assert set(Path(tempfile.gettempdir()).glob("mailhost-reportsbench-*")) == before
    row = re.search(r"^\| 60 \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| (\d+) \|$", out, re.MULTILINE)
    assert row, out
    assert int(row.group(1)) >= 60 and int(row.group(2)) > 0 and int(row.group(5)) > 0
