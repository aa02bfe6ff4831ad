#!/usr/bin/env python3
"""Exploratory strong-score routers on frozen sentence embeddings, scored on RouteLLM's sets.

The rows of docs/router-quality.md "What was tried" that are not `switchyard train-router` runs.
Every router is trained on ../shared/data/train only and scored once on ../shared/data/eval with
APGR (area under the PGR-vs-strong-share curve, ties moved together, as `src/classifier/eval.rs`).

Embeddings: all-MiniLM-L6-v2's last layer, mean-pooled and L2-normalised, 256-token budget, as
`train-router` computes it. They are read from the embedding cache it writes
(`~/.cache/switchyard/embeddings/all-MiniLM-L6-v2-256-layers2.4.6.emb`: records of a 32-byte
SHA-256 of the text and the built-in heads' pooled layers, 3 x 384 little-endian f32) and, for
texts not in it, computed with `switchyard classify --embedding --max-tokens 256 -`.

Needs numpy, scipy and scikit-learn, which the project itself does not use:

    python3 -m venv ~/.cache/switchyard/research
    ~/.cache/switchyard/research/bin/pip install numpy scipy scikit-learn
    ~/.cache/switchyard/research/bin/python scripts/router_experiments.py --data ../shared/data
"""

import argparse
import csv
import hashlib
import json
import os
import re
import subprocess
import sys

import numpy as np
from scipy.stats import rankdata
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.neighbors import NearestNeighbors
from sklearn.neural_network import MLPRegressor
from sklearn.preprocessing import StandardScaler

DIM = 384
# The eight small models whose share of wrong answers is the shipped strong label
# (src/classifier/data.rs, MMLU_WEAK).
WEAK8 = [
    "Mixtral-8x7B-Instruct-v0.1", "Meta-Llama-3_1-8B-Instruct", "Mistral-7B-Instruct-v0.2",
    "Qwen1.5-7B-Chat", "Yi-6b-Chat", "Phi-3-mini-4k-instruct", "gemma-7b", "Llama-2-13b-hf",
]


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def mmlu_prompt(question, options):
    """The layout of src/classifier/data.rs `mmlu_prompt` (RouteLLM's MMLU prompts)."""
    s = question.strip()
    for i, o in enumerate(options):
        s += f"\n{chr(65 + i % 26)}. {o}"
    return s + "\nAnswer:"


def research_args(doc):
    """The options every research script takes: --data (the shared data folder), --switchyard
    (the binary) and --cache (train-router's embedding cache at 256 tokens)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--switchyard", default="switchyard")
    ap.add_argument("--cache", default=os.path.expanduser(
        "~/.cache/switchyard/embeddings/all-MiniLM-L6-v2-256-layers2.4.6.emb"))
    return ap


def built_in_layers():
    """The encoder layers the built-in heads pool (src/classifier/trained/labels.json `layers`)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "src/classifier/trained/labels.json")) as f:
        return json.load(f).get("layers") or [6]


class Embeddings:
    """Texts at train-router's 256-token budget: the built-in heads' pooled layers (one block of
    384 values per layer), from train-router's cache or computed; `last_only` keeps layer 6."""

    def __init__(self, cache, switchyard, last_only=True):
        self.switchyard = switchyard
        self.map = {}
        layers = built_in_layers()
        if last_only and 6 not in layers:
            sys.exit("the built-in heads do not read the last layer")
        last = layers.index(6) if last_only else None
        self.keep = slice(last * DIM, (last + 1) * DIM) if last_only else slice(None)
        if os.path.exists(cache):
            with open(cache, "rb") as f:
                data = f.read()
            size = 32 + len(layers) * DIM * 4
            for i in range(0, len(data) - size + 1, size):
                v = np.frombuffer(data[i + 32:i + size], dtype="<f4")
                self.map[data[i:i + 32]] = v[self.keep]

    def __call__(self, texts):
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        missing = sorted({k: t for k, t in zip(keys, texts) if k not in self.map}.items())
        if missing:
            print(f"embedding {len(missing)} texts with {self.switchyard}", file=sys.stderr)
            rows = "".join(json.dumps({"prompt": t}) + "\n" for _, t in missing)
            out = subprocess.run(
                [self.switchyard, "classify", "--embedding", "--max-tokens", "256", "-"],
                input=rows, capture_output=True, text=True, check=True,
                cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
            ).stdout.splitlines()
            for (k, _), line in zip(missing, out):
                self.map[k] = np.array(json.loads(line)["embedding"], dtype="f4")[self.keep]
        return np.array([self.map[k] for k in keys])


NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def shape(texts):
    """Prompt-shape features: log words, numbers, distinct numbers, sentences."""
    rows = []
    for t in texts:
        nums = NUMBER.findall(t)
        rows.append([np.log1p(len(t.split())), len(nums), len(set(nums)),
                     max(1, len(re.findall(r"[.?!](\s|$)", t)))])
    return np.array(rows, float)


def apgr(scores, weak, strong):
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    s = np.asarray(scores, float)[order]
    gain = (np.asarray(strong, float) - np.asarray(weak, float))[order]
    n, gap = len(s), gain.mean()
    xs, ys, q, i = [0.0], [0.0], 0.0, 0
    while i < n:
        j = i
        while j < n and s[j] == s[i]:
            j += 1
        q += gain[i:j].sum()
        xs.append(j / n)
        ys.append(q / n / gap)
        i = j
    return float(np.sum((np.diff(xs)) * (np.array(ys[1:]) + np.array(ys[:-1])) / 2))


def main():
    ap = research_args(__doc__)
    args = ap.parse_args()
    emb = Embeddings(args.cache, args.switchyard)
    train = os.path.join(args.data, "train")

    questions = jsonl(os.path.join(train, "mmlu_pro/questions.jsonl"))
    with open(os.path.join(train, "mmlu_pro/correctness.csv"), encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, by_id = rows[0], {r[0]: r for r in rows[1:]}
    keep, label, mixtral, src = [], [], [], []
    for q in questions:
        r = by_id.get(str(q["question_id"]))
        if r is None:
            continue
        right = {header[j]: float(r[j]) for j in range(3, len(header)) if r[j] != ""}
        weak = [right[m] for m in WEAK8 if m in right]
        if not weak:
            continue
        keep.append(q)
        label.append(1 - np.mean(weak))
        mixtral.append(1 - right.get("Mixtral-8x7B-Instruct-v0.1", np.nan))
        src.append(r[2])
    y, src = np.array(label), np.array(src)
    cat = np.array([q["category"] for q in keep])
    texts10 = [mmlu_prompt(q["question"], q["options"]) for q in keep]
    texts4 = []
    for q in keep:
        a = q["answer_index"]
        idx = sorted([i for i in range(len(q["options"])) if i != a][:3] + [a])
        texts4.append(mmlu_prompt(q["question"], [q["options"][i] for i in idx]))
    stems = [q["question"].strip() for q in keep]
    x10, x4, xq = emb(texts10), emb(texts4), emb(stems)
    f10, fq = shape(texts10), shape(stems)
    gsm = jsonl(os.path.join(train, "gsm8k/train.jsonl"))
    xg = emb([r["question"].strip() for r in gsm])
    fg = shape([r["question"].strip() for r in gsm])
    solution_words = np.log1p([len(r["answer"].split()) for r in gsm])

    bench = {}
    for name in ["mmlu", "gsm8k", "mt_bench"]:
        rows = jsonl(os.path.join(args.data, "eval/routellm", f"{name}.jsonl"))
        prompts = [r["prompt"] for r in rows]
        if name == "mt_bench":
            w = [r["weak_score"] for r in rows]
            s = [r["strong_score"] for r in rows]
        else:
            w = [float(r["weak_correct"]) for r in rows]
            s = [float(r["strong_correct"]) for r in rows]
        bench[name] = (emb(prompts), shape(prompts), prompts, w, s)

    def row(title, score):
        cells = [f"{apgr(score(e, f, p), w, s):.3f}" for e, f, p, w, s in bench.values()]
        print(f"| {title} | " + " | ".join(cells) + " |", flush=True)

    print("| strong score | MMLU | GSM8K | MT-Bench |\n|---|---|---|---|")
    ridge = Ridge(alpha=1.0).fit(x10, y)
    row("ridge: share of small models wrong (MMLU-Pro, ten options)", lambda e, f, p: ridge.predict(e))
    r4 = Ridge(alpha=1.0).fit(x4, y)
    row("ridge: the same, MMLU-Pro laid out with four options (the answer and three others)",
        lambda e, f, p: r4.predict(e))
    rq = Ridge(alpha=1.0).fit(xq, y)
    row("ridge: the same, question without options", lambda e, f, p: rq.predict(e))
    ori = np.char.startswith(src, "ori_mmlu")
    ro = Ridge(alpha=1.0).fit(x10[ori], y[ori])
    row("ridge: the same, only MMLU-Pro rows taken from MMLU", lambda e, f, p: ro.predict(e))
    ok = ~np.isnan(mixtral)
    rm = Ridge(alpha=1.0).fit(x10[ok], np.array(mixtral)[ok])
    row("ridge: Mixtral-8x7B wrong", lambda e, f, p: rm.predict(e))
    names, source = np.unique(src, return_inverse=True)
    rate = np.array([y[source == i].mean() for i in range(len(names))])
    subject = LogisticRegression(C=10, max_iter=300).fit(x10, source)
    row("source prior: P(source given text) x the source's share wrong",
        lambda e, f, p: subject.predict_proba(e) @ rate[subject.classes_])
    nn = NearestNeighbors(n_neighbors=100, metric="cosine").fit(x10)
    knn = lambda e: y[nn.kneighbors(e)[1]].mean(1)
    row("nearest neighbours (k=100)", lambda e, f, p: knn(e))
    row("ridge + nearest neighbours (sum)", lambda e, f, p: ridge.predict(e) + knn(e))
    scale = StandardScaler().fit(f10)
    joined = lambda e, f: np.hstack([e, scale.transform(f) * 0.05])
    rf = Ridge(alpha=1.0).fit(joined(x10, f10), y)
    row("ridge: embedding + prompt-shape features", lambda e, f, p: rf.predict(joined(e, f)))
    math = cat == "math"
    xs = np.vstack([joined(x10, f10), joined(xq[math], fq[math])])
    mlp = MLPRegressor(hidden_layer_sizes=(128,), alpha=1e-3, max_iter=200,
                       early_stopping=True, random_state=0).fit(xs, np.concatenate([y, y[math]]))
    row("MLP: embedding + shape features, + MMLU-Pro maths questions without options",
        lambda e, f, p: mlp.predict(joined(e, f)))
    rs = Ridge(alpha=1.0).fit(np.hstack([xq[math], fq[math]]), y[math])
    row("maths specialist: ridge on MMLU-Pro maths questions (no options) + shape features",
        lambda e, f, p: rs.predict(np.hstack([e, f])))
    sl = Ridge(alpha=1.0).fit(fg, solution_words)
    row("GSM8K solution length (log words) from shape features", lambda e, f, p: sl.predict(f))
    row("GSM8K solution length + prompt length (rank sum)",
        lambda e, f, p: rankdata(sl.predict(f)) + rankdata(f[:, 0]))
    row("no model: prompt length in words", lambda e, f, p: f[:, 0])


if __name__ == "__main__":
    main()
