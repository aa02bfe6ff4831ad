#!/usr/bin/env python3
"""Added latency against the targets, at oha's full (microsecond) precision.

    benches/overhead_ratios.py RESULTS_DIR [GATEWAY] [FLOOR]

RESULTS_DIR is a `benches/overhead.sh` output folder (its json/ and stream/ hold oha's JSON per
mode, concurrency and target), or the OUT_DIR of one `../shared/bench/run-overhead.sh` run. For each mode and concurrency, prints the p50 and p99 that GATEWAY
(default `switchyard`) and FLOOR (default `nginx-proxy`) add over the direct calls of the same
level, and their ratio (the target is at most 2). The harness's table rounds to 10 us, which at
concurrency 1 is about the size of what nginx adds.
"""
import json
import sys
from pathlib import Path


def percentiles(path):
    return json.loads(path.read_text())["latencyPercentiles"]


def main(out, gateway="switchyard", floor="nginx-proxy"):
    out = Path(out)
    print(f"| mode | conc | pct | {gateway} adds us | {floor} adds us | ratio |")
    print("|---|---:|---|---:|---:|---:|")
    for mode in ("json", "stream"):
        for conc in (1, 16, 64):
            # overhead.sh keeps each mode in its own folder; run-overhead.sh alone, in OUT_DIR.
            folder = out / mode if (out / mode).is_dir() else out
            files = {n: folder / f"{mode}-c{conc}-{n}.json" for n in ("direct", gateway, floor)}
            if not all(f.exists() for f in files.values()):
                continue
            p = {n: percentiles(f) for n, f in files.items()}
            for pct in ("p50", "p99"):
                ours = (p[gateway][pct] - p["direct"][pct]) * 1e6
                base = (p[floor][pct] - p["direct"][pct]) * 1e6
                ratio = f"{ours / base:.2f}" if base > 0 else "-"
                print(f"| {mode} | {conc} | {pct} | {ours:.1f} | {base:.1f} | {ratio} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(*sys.argv[1:4])
