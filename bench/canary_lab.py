"""The canary's round trip in the lab: `mailhost canary` run N times against a deployed lab (probe over
SSH into Postfix on the jira host, OpenDKIM, the lab MX, Dovecot over IMAPS, then deleted).  Prints the
delay the canary reports (submission to the MX's stamp) and the wall time of each whole run.

Builds its own lab in a temp dir (the `jm` prefix: not while another lab runs) and removes it.
Usage: .venv/bin/python bench/canary_lab.py [--runs 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mailhost.lab import ops
from mailhost.lab.lab import REPO, Lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    delays, walls = [], []
    with tempfile.TemporaryDirectory(prefix="mailhost-canarybench-") as tmp:
        lab = Lab(Path(tmp) / "state")
        try:
            ops.up(lab, "direct")
            for _ in range(args.runs):
                started = time.perf_counter()
                done = subprocess.run(ops.canary_argv(lab, 60), capture_output=True, text=True, cwd=REPO)
                walls.append(time.perf_counter() - started)
                (result,) = json.loads(done.stdout)["results"]
                assert done.returncode == 0 and result["placement"] == "inbox", (done.returncode, result)
                delays.append(result["delay_seconds"])
        finally:
            lab.teardown()
    print(f"{args.runs} canary runs against the lab (python {sys.version.split()[0]})")
    print("| runs | delay p50 s | delay max s | whole run p50 s | whole run max s |")
    print("|---|---|---|---|---|")
    print(f"| {args.runs} | {statistics.median(delays):.1f} | {max(delays):.1f} | {statistics.median(walls):.1f} | "
          f"{max(walls):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
