"""The program under Pulumi's mocks at 1, 10 and 100 hosts: wall time and peak memory of a preview and an up.

    .venv/bin/python bench/program_scale.py [--hosts 1,10,100]

Each size runs in a fresh process (the SDK keeps global state): a first `up` (every resource a create,
keys generated) and then a preview against that state (every resource planned, none changed), both
through the lab's engine model (mailhost/lab/engine/simulate.py).  Peak memory is the child's maxrss.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import copy, json, sys, time
from mailhost.lab.engine.matrix import shape
from mailhost.lab.engine.simulate import Simulator
n = int(sys.argv[1])
values, secrets, stack = shape("staging")
host = values["hosts"][0]
hosts = []
for i in range(n):
    h = copy.deepcopy(host)
    h["name"] = f"jira{i}"
    h["existing"]["ipv4"] = f"198.51.100.{10 + i}"
    h["existing"]["ipv6"] = f"2001:db8:5100::{10 + i:x}"
    hosts.append(h)
values["hosts"] = hosts
sim = Simulator()
t = time.perf_counter(); planned, _, _ = sim.run(values, secrets, stack, preview=False); up = time.perf_counter() - t
t = time.perf_counter(); again, _, _ = sim.run(values, secrets, stack, preview=True); pre = time.perf_counter() - t
print(json.dumps({"hosts": n, "resources": len(planned.steps), "up_s": round(up, 2), "preview_s": round(pre, 2),
                  "changes_after": len(again.changes())}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default="1,10,100")
    args = parser.parse_args()
    print("| hosts | resources | first up (s) | no-op preview (s) | planned changes after | peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for n in args.hosts.split(","):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        proc = subprocess.run([sys.executable, "-c", CHILD, n], capture_output=True, text=True, cwd=REPO,
                              check=True)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        mib = max(peak, before) / 1024
        print(f"| {data['hosts']} | {data['resources']} | {data['up_s']} | {data['preview_s']} | "
              f"{data['changes_after']} | {mib:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
