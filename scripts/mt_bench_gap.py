#!/usr/bin/env python3
"""Where MT-Bench's quality gap sits, and what a router that knew only categories could score.

A diagnosis of RouteLLM's MT-Bench routing set (80 first turns, GPT-4 judge scores 1-10 for
gpt-4-1106-preview and Mixtral-8x7B-Instruct), not a router: the category rows read the
evaluation's own scores. Prints the gap per MT-Bench category, the share of the whole gap the
largest gaps carry, where the shipped strong score ranks those prompts, and the APGR of routing
by category alone (each category's own mean gap, read off the evaluation: the best any
category-only router can do).

    python3 scripts/mt_bench_gap.py --data ../shared/data --switchyard target/release/switchyard

Standard library only. APGR as `switchyard eval-router` computes it (RouteLLM's definition,
../shared/data/README.md): trapezoids under PGR against the share of strong calls, prompts with
equal scores moving together.
"""

import argparse
import json
import subprocess
from collections import defaultdict


def apgr(scores, weak, strong):
    n = len(scores)
    w, s = sum(weak) / n, sum(strong) / n
    order = sorted(range(n), key=lambda i: -scores[i])
    quality, points, i = w, [(0.0, 0.0)], 0
    while i < n:
        j = i
        while j < n and scores[order[j]] == scores[order[i]]:
            quality += (strong[order[j]] - weak[order[j]]) / n
            j += 1
        points.append((j / n, (quality - w) / (s - w)))
        i = j
    return sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in zip(points, points[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the folder holding eval/")
    ap.add_argument("--switchyard", required=True, help="the switchyard binary")
    ap.add_argument("--encoder", help="passed to `switchyard classify --encoder`")
    args = ap.parse_args()

    path = f"{args.data}/eval/routellm/mt_bench.jsonl"
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    cmd = [args.switchyard, "classify", "--json", "-"]
    if args.encoder:
        cmd += ["--encoder", args.encoder]
    with open(path) as f:
        out = subprocess.run(cmd, stdin=f, capture_output=True, text=True, check=True).stdout
    shipped = {}
    for line in out.splitlines():
        d = json.loads(line)
        shipped[d["id"]] = d["strong_score"]

    weak = [float(r["weak_score"]) for r in rows]
    strong = [float(r["strong_score"]) for r in rows]
    gaps = [s - w for s, w in zip(strong, weak)]
    total = sum(gaps)
    by = defaultdict(list)
    for r, g in zip(rows, gaps):
        by[r["category"]].append(g)

    print("| MT-Bench category | prompts | mean gap (strong - weak judge score) | share of the whole gap |")
    print("|---|---:|---:|---:|")
    for c, g in sorted(by.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {c} | {len(g)} | {sum(g) / len(g):.2f} | {sum(g) / total:.0%} |")

    scores = [shipped[r["id"]] for r in rows]
    rank = {i: k + 1 for k, i in enumerate(sorted(range(len(rows)), key=lambda i: -scores[i]))}
    top = sorted(range(len(rows)), key=lambda i: -gaps[i])[:4]
    print(
        f"\nThe 4 largest gaps ({', '.join(f'{gaps[i]:g}' for i in top)}) carry "
        f"{sum(gaps[i] for i in top) / total:.0%} of the whole gap; the shipped strong score "
        f"ranks them {', '.join(str(rank[i]) for i in top)} of {len(rows)}."
    )

    means = {c: sum(g) / len(g) for c, g in by.items()}
    by_category = [means[r["category"]] for r in rows]
    # Within a category, the shipped score orders the prompts (it adds less than any gap step).
    lexicographic = [m * 10 + s for m, s in zip(by_category, scores)]
    print("\n| router on MT-Bench | APGR |")
    print("|---|---:|")
    print(f"| shipped strong score | {apgr(scores, weak, strong):.3f} |")
    print(
        "| diagnosis: each category's own mean gap (ties inside a category count as a random "
        f"order) | {apgr(by_category, weak, strong):.3f} |"
    )
    print(
        "| diagnosis: the same, the shipped score ordering each category | "
        f"{apgr(lexicographic, weak, strong):.3f} |"
    )


if __name__ == "__main__":
    main()
