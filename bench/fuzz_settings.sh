#!/usr/bin/env bash
# The settings-model properties with many examples (default 10,000 per property; CI runs 200):
# refusals name a key, accepted stacks render shaped files that real postconf/postfix check/postmap
# read as meant.  Prints hypothesis' statistics and the wall time.  Usage: bench/fuzz_settings.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
examples=${1:-10000}
start=$SECONDS
FUZZ_EXAMPLES=$examples .venv/bin/python -m pytest -q -p no:cacheprovider --timeout=0 --hypothesis-show-statistics \
  tests/unit/test_settings_fuzz.py tests/real/test_settings_fuzz_real.py
echo "fuzz_settings: FUZZ_EXAMPLES=$examples, $((SECONDS - start)) s"
