#!/usr/bin/env python3
"""The shipped heads' strong score beside other scores and blends, on RouteLLM's sets.

The fifth-round rows of docs/router-quality.md. Every score is trained on ../shared/data/train
only (or on labels an on-box model earned on its questions, `switchyard label`) and scored once on
../shared/data/eval with APGR (area under the PGR-vs-strong-share curve, ties moved together, as
`src/classifier/eval.rs` computes it).

Inputs:
- RouteLLM's prompts go through `switchyard classify --json --embedding -` (the built-in heads,
  128-token budget): each row's strong score, its parts (strong head, maths expert) and P(math),
  and the pooled layers 2, 4 and 6 (3 x 384 values, each block L2-normalised).
- Training texts are embedded the way `train-router` embeds them (256-token budget), read from
  the cache it writes (`~/.cache/switchyard/embeddings/all-MiniLM-L6-v2-256-layers2.4.6.emb`:
  records of a 32-byte SHA-256 of the text and 3 x 384 little-endian f32) and, for texts not in
  it, computed with `switchyard classify --embedding --max-tokens 256 -`.

Needs numpy, scipy and scikit-learn, which the project itself does not use:

    python3 -m venv ~/.cache/switchyard/research
    ~/.cache/switchyard/research/bin/pip install numpy scipy scikit-learn
    ~/.cache/switchyard/research/bin/python scripts/router_blends.py --data ../shared/data \
        --switchyard target/release/switchyard [--labels LABELS.jsonl ...]
"""

import csv
import json
import os
import subprocess

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import NearestNeighbors

# The second round's helpers.
from router_experiments import WEAK8, Embeddings, apgr, jsonl, mmlu_prompt, research_args

DIM = 384
LAYER6 = slice(2 * DIM, 3 * DIM)  # the last of the three pooled blocks (layers 2, 4, 6)


def classify(switchyard, rows, *extra):
    """`switchyard classify --json --embedding [extra] -` over `rows` ({"id", "prompt"})."""
    feed = "".join(json.dumps(r) + "\n" for r in rows)
    out = subprocess.run(
        [switchyard, "classify", "--json", "--embedding", *extra, "-"],
        input=feed, capture_output=True, text=True, check=True,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    ).stdout.splitlines()
    return [json.loads(line) for line in out]


def main():
    ap = research_args(__doc__)
    ap.add_argument("--labels", action="append", default=[],
                    help="GSM8K labels from `switchyard label` (repeatable): a logistic "
                         "regression on them is scored, alone and beside the maths expert")
    args = ap.parse_args()
    emb = Embeddings(args.cache, args.switchyard, last_only=False)
    train = os.path.join(args.data, "train")

    bench = {}
    for name in ["mmlu", "gsm8k", "mt_bench"]:
        rows = jsonl(os.path.join(args.data, "eval/routellm", f"{name}.jsonl"))
        if name == "mt_bench":
            w = [r["weak_score"] for r in rows]
            s = [r["strong_score"] for r in rows]
        else:
            w = [float(r["weak_correct"]) for r in rows]
            s = [float(r["strong_correct"]) for r in rows]
        c = classify(args.switchyard, [{"id": r["id"], "prompt": r["prompt"]} for r in rows])
        parts = [{p["head"]: p["score"] for p in r["strong_parts"]} for r in c]
        bench[name] = dict(
            w=w, s=s,
            e=np.array([r["embedding"] for r in c], dtype="f4"),
            score=np.array([r["strong_score"] for r in c]),
            strong=np.array([p["strong"] for p in parts]),
            expert=np.array([p["math"] for p in parts]),
            p_math=np.array([r["categories"]["math"] for r in c]),
        )

    def row(title, score):
        cells = [f"{apgr(score(b), b['w'], b['s']):.3f}" for b in bench.values()]
        print(f"| {title} | " + " | ".join(cells) + " |", flush=True)

    def rank(v):
        return rankdata(v) / len(v)

    print("| strong score | MMLU | GSM8K | MT-Bench |\n|---|---|---|---|")
    row("built-in heads (the shipped score)", lambda b: b["score"])
    row("built-in heads: the strong head alone (no maths expert)", lambda b: b["strong"])

    # Nearest neighbours on the shipped label, inside the non-maths branch of the mixture.
    questions = jsonl(os.path.join(train, "mmlu_pro/questions.jsonl"))
    with open(os.path.join(train, "mmlu_pro/correctness.csv"), encoding="utf-8") as f:
        table = list(csv.reader(f))
    header, by_id = table[0], {r[0]: r for r in table[1:]}
    texts, label, maths = [], [], []
    for q in questions:
        r = by_id.get(str(q["question_id"]))
        if r is None:
            continue
        right = {header[j]: float(r[j]) for j in range(3, len(header)) if r[j] != ""}
        weak = [right[m] for m in WEAK8 if m in right]
        if weak:
            texts.append(mmlu_prompt(q["question"], q["options"]))
            label.append(1 - np.mean(weak))
            maths.append(q["category"] == "math")
    label, maths = np.array(label), np.array(maths)
    nn = NearestNeighbors(n_neighbors=100, metric="cosine").fit(emb(texts)[:, LAYER6])
    for b in bench.values():
        b["knn"] = label[nn.kneighbors(b["e"][:, LAYER6])[1]].mean(1)
    row("nearest neighbours (k=100, layer 6) on the shipped label", lambda b: b["knn"])
    row("built-in heads, the non-maths branch the mean of the strong head and the neighbours",
        lambda b: b["p_math"] * b["expert"] + (1 - b["p_math"]) * (b["strong"] + b["knn"]) / 2)

    # AlpacaEval: the only Mixtral-8x7B column is its concise variant, against GPT-4 Turbo
    # (gpt4_1106_preview, RouteLLM's strong model, is the reference itself: 0.5 everywhere).
    inst = jsonl(os.path.join(train, "alpaca_eval/instructions.jsonl"))
    with open(os.path.join(train, "alpaca_eval/preference_vs_gpt4_turbo.csv"),
              encoding="utf-8") as f:
        pref = {r["idx"]: r for r in csv.DictReader(f)}
    lose = np.array([1 - float(pref[str(r["idx"])]["Mixtral-8x7B-Instruct-v0.1_concise"])
                     for r in inst])
    xa = emb([r["instruction"] for r in inst])[:, LAYER6]
    alpaca = Ridge(alpha=10.0).fit(xa, lose)
    row("ridge (layer 6): Mixtral-8x7B (concise) loses to GPT-4 Turbo, AlpacaEval",
        lambda b: alpaca.predict(b["e"][:, LAYER6]))

    # GSM8K: the gold solution's length in lines, a difficulty the folder does have.
    gsm = jsonl(os.path.join(train, "gsm8k/train.jsonl"))
    lines = np.array([len(r["answer"].strip().split("\n")) - 1 for r in gsm])
    steps = Ridge(alpha=1.0).fit(emb([r["question"] for r in gsm]), lines)
    row("ridge (layers 2, 4, 6): GSM8K gold solution's lines",
        lambda b: steps.predict(b["e"]))
    row("  the same, rank-averaged with the maths expert",
        lambda b: rank(steps.predict(b["e"])) + rank(b["expert"]))

    for path in args.labels:
        rows = jsonl(path)
        y = np.array([r["strong_label"] for r in rows]) >= 0.5
        x = emb([r["prompt"] for r in rows])
        name = os.path.basename(path)
        lr = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
        row(f"logistic regression (layers 2, 4, 6): wrong in {name}, {len(rows)} GSM8K labels "
            f"({y.mean():.0%} wrong)", lambda b: lr.predict_proba(b["e"])[:, 1])
        row("  the same, rank-averaged with the maths expert",
            lambda b: rank(lr.predict_proba(b["e"])[:, 1]) + rank(b["expert"]))
        # Beside the shipped label: one ridge on MMLU-Pro's maths rows and these labels.
        xm = emb(texts)[maths]
        for weight in [0.0, 1.0]:
            both = Ridge(alpha=1.0).fit(
                np.vstack([xm, x]), np.concatenate([label[maths], y.astype(float)]),
                sample_weight=np.concatenate([np.ones(len(xm)), np.full(len(x), weight)]))
            row(f"  ridge (layers 2, 4, 6): MMLU-Pro's maths rows, plus these labels at "
                f"weight {weight:g}", lambda b: both.predict(b["e"]))


if __name__ == "__main__":
    main()
