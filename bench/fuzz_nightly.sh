#!/usr/bin/env bash
# Every property test with many examples drawn afresh (CI runs 200 each, the same ones every run):
# the settings model (refusals name a key; accepted stacks render shaped files that real postconf,
# postfix check and postmap read as meant) and what receivers write (the collector never crashes and
# never counts a forged line).  Prints hypothesis' statistics, the commit and the wall time.
# Usage: bench/fuzz_nightly.sh [N]   (default 10,000 per property; needs root for the real-Postfix half)
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-10000}
start=$SECONDS
HYPOTHESIS_PROFILE=random FUZZ_EXAMPLES=$examples .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=0 \
  --hypothesis-show-statistics \
  tests/unit/test_settings_fuzz.py tests/real/test_settings_fuzz_real.py \
  "tests/unit/test_hostile_receivers.py::test_no_reply_text_crashes_the_collector_or_counts_a_forged_line" \
  "tests/unit/test_hostile_receivers.py::test_no_queue_reason_splits_or_hides_a_message"
echo "fuzz_nightly: FUZZ_EXAMPLES=$examples per property, commit $(git rev-parse --short HEAD), $((SECONDS - start)) s"
