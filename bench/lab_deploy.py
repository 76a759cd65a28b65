"""How long `pulumi up` takes in the lab: the first deploy, and an `up` with nothing changed.

    .venv/bin/python bench/lab_deploy.py [--runs 3]

Each run builds a fresh lab (its own state directory), deploys the program (preview + apply, as the
runner does), then runs `up` again with nothing changed; prints seconds and remote commands.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailhost.lab import ops
from mailhost.lab.lab import Lab


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    first: list[float] = []
    again: list[float] = []
    commands: set[str] = set()
    for _ in range(args.runs):
        lab = Lab(Path(tempfile.mkdtemp(prefix="mailhost-deploybench-")) / "state")
        try:
            lab.build()
            ops.write_stack(lab, "direct")
            started = time.monotonic()
            result = ops.deploy(lab)
            first.append(time.monotonic() - started)
            first_commands = len(result["remote_commands"])
            started = time.monotonic()
            result = ops.deploy(lab)
            again.append(time.monotonic() - started)
            commands.add(f"{first_commands} then {len(result['remote_commands'])}")
        finally:
            lab.teardown()
            shutil.rmtree(lab.state_dir.parent, ignore_errors=True)
    print("| what | median (s) | min–max (s) | remote commands |")
    print("|---|---|---|---|")
    for index, (name, values) in enumerate((("first deploy (preview + apply)", first),
                                            ("`up` with nothing changed", again))):
        counts = sorted({c.split(" then ")[index] for c in commands})
        print(f"| {name} | {statistics.median(values):.2f} | {min(values):.2f}–{max(values):.2f} | "
              f"{', '.join(counts)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
