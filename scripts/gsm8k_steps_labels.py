"""Writes a `switchyard label`-style file whose strong label is the length of each GSM8K training
question's gold solution: the eighth round of docs/router-quality.md.

Each row of ../shared/data/train/gsm8k/train.jsonl becomes `{"id", "prompt", "model":
"gsm8k-steps", "strong_label", "graded": "steps", "steps"}`: `prompt` is the question as the
folder has it, `steps` the number of non-empty lines of the solution before `####` (one line per
step in GSM8K's format), and `strong_label` that count's place among all the training questions'
counts (the mid-rank empirical distribution function, in (0, 1)). The mean with an on-box model's
label file (`--mean LABELS.jsonl`: for the questions it labelled, the average of the two labels).
Standard library only.

    python3 scripts/gsm8k_steps_labels.py --data ../shared/data --out steps.jsonl
"""

import argparse
import bisect
import json
import os


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the data folder (its train/gsm8k is read)")
    ap.add_argument("--out", required=True, help="the label file to write (JSONL)")
    ap.add_argument("--mean", help="a switchyard label file to average with, by row id")
    args = ap.parse_args()
    with open(os.path.join(args.data, "train/gsm8k/train.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    steps = [len([s for s in r["answer"].split("####")[0].strip().split("\n") if s.strip()])
             for r in rows]
    ordered = sorted(steps)

    def place(s):
        return (bisect.bisect_left(ordered, s) + bisect.bisect_right(ordered, s)) / 2 / len(ordered)

    other = {}
    if args.mean:
        with open(args.mean, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    r = json.loads(line)
                    other[r["id"]] = r["strong_label"]
    with open(args.out, "w", encoding="utf-8") as f:
        for i, (r, s) in enumerate(zip(rows, steps)):
            rid = f"gsm8k-{i}"
            label = place(s) if rid not in other else (place(s) + other[rid]) / 2
            f.write(json.dumps({"id": rid, "prompt": r["question"], "model": "gsm8k-steps",
                                "strong_label": round(label, 4), "graded": "steps",
                                "steps": s}) + "\n")


if __name__ == "__main__":
    main()
