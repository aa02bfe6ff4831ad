#!/usr/bin/env python3
"""Heads trained at several seeds, their strong scores averaged, on RouteLLM's sets.

The ninth-round row of docs/router-quality.md: a seed ensemble (bagging of the random start,
split and batch order) against each of its members. Every heads folder is `switchyard
train-router --data ../shared/data/train --seed N --out DIR` output (the built-in heads are
seed 7); each is scored with `switchyard classify --json --heads DIR -` (128-token budget) and
APGR is computed as `src/classifier/eval.rs` computes it (ties moved together).

Needs numpy, scipy and scikit-learn (through scripts/router_experiments.py's helpers; its
research venv):

    ~/.cache/switchyard/research/bin/python scripts/router_seed_ensemble.py --data ../shared/data \
        --switchyard target/release/switchyard --heads builtin DIR1 DIR2 ...
"""

import json
import os
import subprocess

import numpy as np

from router_experiments import apgr, jsonl, research_args


def scores(switchyard, heads, rows, encoder):
    """Each row's strong score from `heads` (a folder, or `builtin`)."""
    cmd = [switchyard, "classify", "--json", "-"]
    if encoder:
        cmd += ["--encoder", encoder]
    if heads != "builtin":
        cmd += ["--heads", heads]
    feed = "".join(json.dumps({"id": r["id"], "prompt": r["prompt"]}) + "\n" for r in rows)
    out = subprocess.run(cmd, input=feed, capture_output=True, text=True, check=True)
    return np.array([json.loads(line)["strong_score"] for line in out.stdout.splitlines()])


def main():
    ap = research_args(__doc__)
    ap.add_argument("--heads", nargs="+", required=True,
                    help="heads folders (or `builtin`), the ensemble's members")
    ap.add_argument("--encoder", default=None, help="the encoder folder, if not the default")
    args = ap.parse_args()
    print("| benchmark | each member | mean of the members | ensemble (mean score) |")
    print("|---|---|---:|---:|")
    for name in ["mmlu", "gsm8k", "mt_bench"]:
        rows = jsonl(os.path.join(args.data, "eval/routellm", f"{name}.jsonl"))
        if name == "mt_bench":
            w, s = [r["weak_score"] for r in rows], [r["strong_score"] for r in rows]
        else:
            w = [float(r["weak_correct"]) for r in rows]
            s = [float(r["strong_correct"]) for r in rows]
        member = [scores(args.switchyard, h, rows, args.encoder) for h in args.heads]
        each = [apgr(m, w, s) for m in member]
        print(f"| {name} | " + " / ".join(f"{a:.3f}" for a in each)
              + f" | {np.mean(each):.3f} | {apgr(np.mean(member, 0), w, s):.3f} |", flush=True)


if __name__ == "__main__":
    main()
