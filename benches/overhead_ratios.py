#!/usr/bin/env python3
"""Added latency against the targets, at oha's full (microsecond) precision.

    benches/overhead_ratios.py [--gateway NAME] [--floor NAME] RESULTS_DIR [RESULTS_DIR ...]

RESULTS_DIR is a `benches/overhead.sh` output folder (its json/ and stream/ hold oha's JSON per
mode, concurrency and target, a folder per concurrency), or the OUT_DIR of one
`../shared/bench/run-overhead.sh` run. For each mode and concurrency, prints the p50 and p99
that the gateway (default `switchyard`) and the floor (default `nginx-proxy`) add over the
direct calls of the same level, and their ratio (the target is at most 2). The harness's table rounds to 10 us, which at concurrency 1 is about the
size of what nginx adds.

With several folders (repeated runs, e.g. `benches/overhead_repeat.sh`), prints per cell the
median ratio, its range, and in how many runs it was within 2x: on a shared two-core machine one
run's ratio moves by tens of percent.
"""
import argparse
import json
import statistics
from pathlib import Path


def percentiles(path):
    return json.loads(path.read_text())["latencyPercentiles"]


def cells(out, gateway, floor):
    """(mode, conc, pct) -> (gateway adds us, floor adds us) for one results folder."""
    out = Path(out)
    found = {}
    for mode in ("json", "stream"):
        for conc in (1, 16, 64):
            # overhead.sh keeps each mode and level in its own folder; run-overhead.sh alone
            # writes them all to OUT_DIR.
            folder = next(
                (f for f in (out / mode / f"c{conc}", out / mode) if f.is_dir()), out
            )
            files = {n: folder / f"{mode}-c{conc}-{n}.json" for n in ("direct", gateway, floor)}
            if not all(f.exists() for f in files.values()):
                continue
            p = {n: percentiles(f) for n, f in files.items()}
            for pct in ("p50", "p99"):
                ours = (p[gateway][pct] - p["direct"][pct]) * 1e6
                base = (p[floor][pct] - p["direct"][pct]) * 1e6
                found[(mode, conc, pct)] = (ours, base)
    return found


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gateway", default="switchyard")
    ap.add_argument("--floor", default="nginx-proxy")
    ap.add_argument("dirs", nargs="+")
    a = ap.parse_args()
    runs = [cells(d, a.gateway, a.floor) for d in a.dirs]
    if len(runs) == 1:
        print(f"| mode | conc | pct | {a.gateway} adds us | {a.floor} adds us | ratio |")
        print("|---|---:|---|---:|---:|---:|")
        for (mode, conc, pct), (ours, base) in runs[0].items():
            ratio = f"{ours / base:.2f}" if base > 0 else "-"
            print(f"| {mode} | {conc} | {pct} | {ours:.1f} | {base:.1f} | {ratio} |")
        return
    print(f"{len(runs)} runs")
    print(f"| mode | conc | pct | {a.gateway} adds us (median) | {a.floor} adds us (median) "
          "| ratio: median | min-max | runs within 2x |")
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for key in runs[0]:
        pairs = [r[key] for r in runs if key in r]
        ratios = [o / b for o, b in pairs if b > 0]
        mode, conc, pct = key
        print(f"| {mode} | {conc} | {pct} | {statistics.median(o for o, _ in pairs):.1f} "
              f"| {statistics.median(b for _, b in pairs):.1f} | {statistics.median(ratios):.2f} "
              f"| {min(ratios):.2f}-{max(ratios):.2f} | {sum(r <= 2 for r in ratios)}/{len(ratios)} |")


if __name__ == "__main__":
    main()
