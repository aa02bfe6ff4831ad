#!/usr/bin/env python3
"""The strong score with the encoder's top layers fine-tuned on the routing label.

A research run for docs/router-quality.md, not part of the product: the shipped encoder is frozen.
all-MiniLM-L6-v2 (the folder scripts/fetch-models.sh fetches) with its top `--layers` layers
trainable and a one-hidden-layer head (128 wide) on the mean-pooled, L2-normalised embedding,
trained on MMLU-Pro (../shared/data/train) to predict the share of eight small models that answer
wrong (binary cross-entropy on the soft label; AdamW, learning rate 2e-5 for the encoder and 1e-3
for the head, batches of 32 of similar length, seed 0), inputs cut to 128 tokens (the first and
last halves, as the gateway cuts them). Prints the rank correlation on 1,000 held-out MMLU-Pro
questions after each epoch, then APGR on RouteLLM's sets (../shared/data/eval), once.

Needs torch and transformers, which the project does not use, in a venv of its own:

    python3 -m venv ~/.cache/switchyard/research
    ~/.cache/switchyard/research/bin/pip install numpy scipy scikit-learn torch transformers tokenizers
    ~/.cache/switchyard/research/bin/python scripts/finetune_experiment.py --layers 2 --epochs 1
"""

import argparse
import csv
import os
import sys
import time

import numpy as np
import torch
from scipy.stats import spearmanr
from tokenizers import Tokenizer
from transformers import BertModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from router_experiments import WEAK8, apgr, jsonl, mmlu_prompt  # noqa: E402

MAX_TOKENS = 128
BATCH = 32


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--encoder", default="models/all-MiniLM-L6-v2")
    ap.add_argument("--layers", type=int, default=2, help="top layers to train (0-6)")
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)

    tok = Tokenizer.from_file(os.path.join(args.encoder, "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    model = BertModel.from_pretrained(args.encoder)
    for p in model.parameters():
        p.requires_grad = False
    top = model.encoder.layer[len(model.encoder.layer) - args.layers:] if args.layers else []
    for layer in top:
        for p in layer.parameters():
            p.requires_grad = True
    head = torch.nn.Sequential(torch.nn.Linear(384, 128), torch.nn.GELU(), torch.nn.Linear(128, 1))

    train = os.path.join(args.data, "train/mmlu_pro")
    with open(os.path.join(train, "correctness.csv"), encoding="utf-8") as f:
        rows = list(csv.reader(f))
    header, by_id = rows[0], {r[0]: r for r in rows[1:]}
    texts, labels = [], []
    for q in jsonl(os.path.join(train, "questions.jsonl")):
        r = by_id.get(str(q["question_id"]))
        if r is None:
            continue
        right = [float(r[header.index(m)]) for m in WEAK8 if m in header and r[header.index(m)] != ""]
        if right:
            texts.append(mmlu_prompt(q["question"], q["options"]))
            labels.append(1 - np.mean(right))
    y = np.array(labels, dtype="f4")

    def token_ids(ts):
        out = []
        for e in tok.encode_batch(ts):
            ids = e.ids
            if len(ids) > MAX_TOKENS:
                ids = ids[:MAX_TOKENS // 2] + ids[-(MAX_TOKENS - MAX_TOKENS // 2):]
            out.append(ids)
        return out

    def batch(ids, idx):
        width = max(len(ids[j]) for j in idx)
        tokens = torch.zeros(len(idx), width, dtype=torch.long)
        mask = torch.zeros(len(idx), width)
        for b, j in enumerate(idx):
            tokens[b, :len(ids[j])] = torch.tensor(ids[j])
            mask[b, :len(ids[j])] = 1
        return tokens, mask

    def embed(tokens, mask):
        h = model(input_ids=tokens, attention_mask=mask).last_hidden_state
        e = (h * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        return torch.nn.functional.normalize(e, dim=-1)

    def score(ids):
        order = np.argsort([len(i) for i in ids])
        out = np.zeros(len(ids), dtype="f4")
        model.eval()
        with torch.no_grad():
            for k in range(0, len(ids), 64):
                idx = order[k:k + 64]
                out[idx] = head(embed(*batch(ids, idx))).squeeze(-1).numpy()
        return out

    ids = token_ids(texts)
    perm = rng.permutation(len(texts))
    held, fit = perm[:1000], perm[1000:]
    opt = torch.optim.AdamW(
        [{"params": [p for layer in top for p in layer.parameters()], "lr": 2e-5},
         {"params": head.parameters(), "lr": 1e-3}],
        weight_decay=0.01,
    )
    start = time.time()
    for epoch in range(args.epochs):
        order = fit[np.argsort([len(ids[j]) for j in fit], kind="stable")]
        batches = [order[k:k + BATCH] for k in range(0, len(order), BATCH)]
        rng.shuffle(batches)
        model.train()
        for idx in batches:
            pred = torch.sigmoid(head(embed(*batch(ids, idx))).squeeze(-1))
            loss = torch.nn.functional.binary_cross_entropy(pred, torch.tensor(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        rho = spearmanr(score([ids[j] for j in held]), y[held])[0]
        print(f"epoch {epoch + 1}: held-out rank correlation {rho:.3f} "
              f"({time.time() - start:.0f} s)", flush=True)

    print("| benchmark | APGR |\n|---|---|")
    for name in ["mmlu", "gsm8k", "mt_bench"]:
        rows = jsonl(os.path.join(args.data, "eval/routellm", f"{name}.jsonl"))
        s = score(token_ids([r["prompt"] for r in rows]))
        if name == "mt_bench":
            w, st = [r["weak_score"] for r in rows], [r["strong_score"] for r in rows]
        else:
            w = [float(r["weak_correct"]) for r in rows]
            st = [float(r["strong_correct"]) for r in rows]
        print(f"| {name} | {apgr(s, w, st):.3f} |", flush=True)


if __name__ == "__main__":
    main()
