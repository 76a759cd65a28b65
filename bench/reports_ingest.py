"""How `mailhost reports` copes with volume: 10,000 aggregate reports read from a directory into a new
database, then the 14-day summary over them.  Prints reports per second, the summary's seconds and the
process's peak memory (ru_maxrss), each run in a fresh child process so the peaks do not mix.

The reports are what a busy domain gets in two weeks: 700 reporters a day, 1 to 40 source rows each
(the median reporter sends a handful), gzipped like Google's, one in five zipped like Microsoft's.
Usage: .venv/bin/python bench/reports_ingest.py [--reports 10000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailhost.lab.dmarcreport import Judged, aggregate_xml

DOMAIN = "example.com"
DAY = 86400


def write_reports(folder: Path, count: int, now: int, seed: int = 7) -> int:
    rng = random.Random(seed)
    rows = 0
    for n in range(count):
        day = n % 14
        begin = (now // DAY - 14 + day) * DAY
        groups = {}
        for _ in range(max(1, int(rng.paretovariate(1.2)) % 40)):
            ip = f"203.0.113.{rng.randrange(1, 255)}" if rng.random() < 0.9 else f"198.51.100.{rng.randrange(1, 255)}"
            ok = rng.random() < 0.97
            groups[Judged(ip, DOMAIN, DOMAIN, "pass" if ok else "fail", "pass" if ok else "fail", DOMAIN, "jm1",
                          "pass" if ok else "fail", "none")] = rng.randrange(1, 500)
        rows += len(groups)
        org = f"reporter{n % 700}.example"
        xml = aggregate_xml(org, f"dmarc@{org}", f"{org}-{day}-{n}", DOMAIN, "none", begin, begin + DAY - 1, groups)
        if n % 5 == 0:
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(f"{org}!{DOMAIN}!{begin}.xml", xml)
            (folder / f"{n:05d}.zip").write_bytes(buffer.getvalue())
        else:
            (folder / f"{n:05d}.xml.gz").write_bytes(gzip.compress(xml))
    return rows


def child(folder: str, db: str, now: float) -> None:
    """One measured run: ingest every file, then summarize; prints JSON."""
    from mailhost.reports import ingest, judge, store

    database = store.connect(Path(db))
    started = time.perf_counter()
    outcome = ingest.from_directory(database, Path(folder), DOMAIN, now)
    ingest_s = time.perf_counter() - started
    started = time.perf_counter()
    rows = list(store.rows_since(database, now - 14 * DAY))
    summary = judge.summarize(rows, now - 14 * DAY, now, "none",
                              judge.classifier(["203.0.113.10"], lambda ip: ip.startswith("203.0.113.")))
    summary_s = time.perf_counter() - started
    print(json.dumps({"new": outcome.new, "refused": len(outcome.refused), "ingest_s": ingest_s,
                      "summary_s": summary_s, "rows": len(rows), "sources": len(summary.sources),
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reports", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], float(args.child[2]))
        return 0
    now = int(time.time())
    with tempfile.TemporaryDirectory(prefix="mailhost-reportsbench-") as tmp:
        folder = Path(tmp) / "in"
        folder.mkdir()
        rows = write_reports(folder, args.reports, now)
        size = sum(p.stat().st_size for p in folder.iterdir())
        print(f"{args.reports} reports, {rows} rows, {size / 1e6:.1f} MB compressed; "
              f"python {sys.version.split()[0]}, {args.runs} runs")
        results = []
        for run in range(args.runs):
            done = subprocess.run([sys.executable, __file__, "--child", str(folder), f"{tmp}/db{run}.sqlite",
                                   str(now)], capture_output=True, text=True, check=True)
            results.append(json.loads(done.stdout))
        assert all(r["new"] == args.reports and r["refused"] == 0 for r in results), results
        rates = [args.reports / r["ingest_s"] for r in results]
        print("| reports | rows | reports/s (median) | ingest s (median) | summary s (median) | peak MiB (max) |")
        print("|---|---|---|---|---|---|")
        print(f"| {args.reports} | {rows} | {statistics.median(rates):.0f} | "
              f"{statistics.median(r['ingest_s'] for r in results):.1f} | "
              f"{statistics.median(r['summary_s'] for r in results):.2f} | "
              f"{max(r['peak_mib'] for r in results):.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
