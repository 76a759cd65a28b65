"""How fast a Jira burst gets through the deployed host: messages, seconds, messages/s, verdicts.

Builds the lab in a temporary state directory (prefix jm; removes any earlier lab with
that prefix), deploys the program in the given mode, then for each burst profile submits
N Jira notifications to Postfix inside the jira host and waits until the MX has every
one.  "submit" is Jira's view (SMTP to 127.0.0.1:25, DKIM signing in the milter),
"end to end" runs from the first submission to the last message stored by the MX.
Usage: .venv/bin/python bench/lab_burst.py [--mode direct|relay] [--count 200] [--keep]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailhost.lab import ops
from mailhost.lab.lab import Lab

PROFILES = {
    "text+html only": {"big_every": 0},
    "1 in 25 near the size limit": {"big_every": 25},
    "each with a 100 KB attachment": {"size_kb": 100, "big_every": 0},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=["direct", "relay"], default="direct")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--keep", action="store_true", help="leave the lab running (state dir printed)")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="jm-bench-")) / "state"
    lab = Lab(state)
    ok = True
    try:
        started = time.monotonic()
        deployed = ops.up(lab, args.mode)
        print(f"lab built and program deployed in {time.monotonic() - started:.1f}s "
              f"(runner {deployed['seconds']}s, mode {args.mode})")
        print(f"{'profile':32} {'messages':>8} {'submit s':>9} {'end to end s':>13} {'msg/s':>7}  verdicts")
        for name, profile in PROFILES.items():
            burst = ops.send(lab, args.count, **profile)  # type: ignore[arg-type]
            recs, wait = ops.wait_delivered(lab, burst, timeout=300, settle=0)
            total = burst.seconds + wait
            delivered = len({r["message_id"] for r in recs})
            verdicts = {k: v for k, v in ops.verdict_table(recs).items() if k in ("spf", "dkim", "dmarc", "fcrdns")}
            ok = ok and delivered == burst.sent and ops.all_pass(recs)
            print(f"{name:32} {delivered:>4}/{burst.sent:<3} {burst.seconds:>9.1f} {total:>13.1f} "
                  f"{delivered / total:>7.1f}  {json.dumps(verdicts)}")
    finally:
        if args.keep:
            print(f"lab kept: mailhost lab status --state {state}")
        else:
            ops.down(lab, force=True)
            state.parent.rmdir()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
