#!/usr/bin/env bash
# benches/overhead.sh against the nginx floor only (no LiteLLM: about 40 s a run instead of
# 12 min), RUNS times, then the added-latency ratios per cell over all runs: median, range, and
# in how many runs each was within 2x. One run's ratio moves by tens of percent on a shared
# two-core machine; the median of ten does not.
#   benches/overhead_repeat.sh     # knobs: RUNS (10), and overhead.sh's REQUESTS, CONCURRENCY
set -euo pipefail
cd "$(dirname "$0")/.."
runs=()
for i in $(seq "${RUNS:-10}"); do
  out="$(PEERS=nginx benches/overhead.sh 2>&1 >/dev/null | sed -n 's/^results: //p')"
  [ -d "$out" ] || { echo "run $i failed" >&2; exit 1; }
  echo "run $i: $out" >&2
  runs+=("$out")
done
python3 benches/overhead_ratios.py "${runs[@]}"
