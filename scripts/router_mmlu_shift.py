"""Why the MMLU strong score stops near 0.72: the seventh round of docs/router-quality.md.

Prints two tables. The first: how RouteLLM's MMLU differs from the MMLU-Pro rows the heads learn from, a
subject prior built from MMLU-Pro, lexical (TF-IDF) ridge scores beside the shipped score, and,
as a diagnosis only, the APGR a router would reach if it knew each evaluation subject's own gain
(read off the evaluation labels, so not a router and not a result).

- RouteLLM's MMLU keeps only the questions MMLU-Pro did not take (../shared/data/README.md), so
  its questions are the ones MMLU-Pro's filter found easy; MMLU-Pro's rows carry ten options.
- The subject prior: for each MMLU subject, the share of MMLU-Pro's rows from that subject
  (`src` = `ori_mmlu-SUBJECT`) a model got wrong, given to each evaluation question by its own
  `subject` field (an upper bound for any subject classifier on the text); the table gives the
  best rank correlation, over the 29 models of correctness.csv, between that share and the
  evaluation subjects' gain (strong right minus weak right). The same for a gain prior: per
  subject, the folder's most accurate model right minus Mixtral right on MMLU-Pro, the
  benchmark's own quantity on the training questions (and the best correlation over the 28
  models paired with Mixtral).
- Lexical ridge: TF-IDF of words (1-2 grams) or characters (3-5 grams within words) on the
  shipped label (share of the eight small models wrong), alpha 10, alone and rank-averaged with
  the shipped score at half its weight (chosen before scoring); first fitted on 90% of MMLU-Pro
  and ranked on the other 10% (seed 0), beside a ridge on the frozen embedding (layer 6) on the
  same split.
- The second, for GSM8K: the maths expert's branch of the mixture replaced by a blend of the expert and the
  prompt's length in words, the length given as its place among the training folder's GSM8K
  questions (an empirical distribution function: one prompt at a time, no set's ranks needed).

Needs numpy, scipy and scikit-learn (the research venv of scripts/router_experiments.py) and the
switchyard binary for the shipped score (`switchyard classify --json -`).

    ~/.cache/switchyard/research/bin/python scripts/router_mmlu_shift.py --data ../shared/data \
        --switchyard target/release/switchyard
"""

import csv
import os
from collections import defaultdict

import numpy as np
from scipy.stats import rankdata, spearmanr
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import Ridge

from router_blends import classify
from router_experiments import (WEAK8, Embeddings, apgr, jsonl, mmlu_prompt, research_args,
                                shape)

MIXTRAL = "Mixtral-8x7B-Instruct-v0.1"
# The folder's most accurate model on MMLU-Pro (70.1% right), standing in for GPT-4.
STRONGEST = "gemini-1.5-pro-002"


def main():
    ap = research_args(__doc__)
    args = ap.parse_args()
    train = os.path.join(args.data, "train")

    questions = jsonl(os.path.join(train, "mmlu_pro/questions.jsonl"))
    with open(os.path.join(train, "mmlu_pro/correctness.csv"), encoding="utf-8") as f:
        table = list(csv.reader(f))
    header, by_id = table[0], {r[0]: r for r in table[1:]}
    models = header[3:]
    texts, label, subject_rows = [], [], defaultdict(list)
    mixtral_right = {"all": [], "ori": []}
    for q in questions:
        r = by_id.get(str(q["question_id"]))
        if r is None:
            continue
        right = [float(v) if v != "" else np.nan for v in r[3:]]
        weak = [right[models.index(m)] for m in WEAK8 if not np.isnan(right[models.index(m)])]
        if not weak:
            continue
        texts.append(mmlu_prompt(q["question"], q["options"]))
        label.append(1 - np.mean(weak))
        m = right[models.index(MIXTRAL)]
        if not np.isnan(m):
            mixtral_right["all"].append(m)
            if r[2].startswith("ori_mmlu-"):
                mixtral_right["ori"].append(m)
        if r[2].startswith("ori_mmlu-"):
            subject_rows[r[2][len("ori_mmlu-"):]].append(right)
    label = np.array(label)

    rows = jsonl(os.path.join(args.data, "eval/routellm/mmlu.jsonl"))
    prompts = [r["prompt"] for r in rows]
    weak = np.array([float(r["weak_correct"]) for r in rows])
    strong = np.array([float(r["strong_correct"]) for r in rows])
    subject = np.array([r["subject"] for r in rows])
    shipped = np.array([r["strong_score"] for r in classify(
        args.switchyard, [{"id": r["id"], "prompt": r["prompt"]} for r in rows])])

    print(f"RouteLLM's MMLU ({len(rows)} questions): {MIXTRAL} right on "
          f"{weak.mean():.3f}, GPT-4 on {strong.mean():.3f}")
    print(f"MMLU-Pro: {MIXTRAL} right on {np.mean(mixtral_right['ori']):.3f} of the rows taken "
          f"from MMLU ({len(mixtral_right['ori'])}), {np.mean(mixtral_right['all']):.3f} of all\n")

    names = sorted(set(subject) & set(subject_rows))
    gain = [np.mean((strong - weak)[subject == s]) for s in names]
    corr = []
    for j, m in enumerate(models):
        wrong = [1 - np.nanmean(np.array(subject_rows[s])[:, j]) for s in names]
        corr.append((spearmanr(wrong, gain)[0], m))
    best = max(corr)
    print(f"Subjects in both: {len(names)}. Rank correlation between an MMLU-Pro model's share "
          f"wrong per subject and the evaluation subjects' gain: at best {best[0]:.2f} "
          f"({best[1]}), {dict((m, round(c, 2)) for c, m in corr)[MIXTRAL]} for {MIXTRAL}")
    gains = []
    for j, m in enumerate(models):
        if m == MIXTRAL:
            continue
        own = [np.nanmean(np.array(subject_rows[s])[:, j]
                          - np.array(subject_rows[s])[:, models.index(MIXTRAL)]) for s in names]
        gains.append((spearmanr(own, gain)[0], m))
    best = max(gains)
    print(f"The same for a model pair's gain on MMLU-Pro ({MIXTRAL} wrong, the other right, per "
          f"subject): at best {best[0]:.2f} ({best[1]}), "
          f"{dict((m, round(c, 2)) for c, m in gains)[STRONGEST]} for {STRONGEST}\n")

    def row(title, score):
        print(f"| {title} | {apgr(score, weak, strong):.3f} |", flush=True)

    def rank(v):
        return rankdata(v) / len(v)

    split = np.random.default_rng(0).permutation(len(texts))
    fit, held = split[:len(texts) * 9 // 10], split[len(texts) * 9 // 10:]
    emb = Embeddings(args.cache, args.switchyard)(texts)
    ridge = Ridge(alpha=1.0).fit(emb[fit], label[fit])
    print("Held-out MMLU-Pro (10%), rank correlation with the label: frozen embedding (layer 6) "
          f"{spearmanr(ridge.predict(emb[held]), label[held])[0]:.3f}", end="")
    vectorizers = [
        ("word 1-2 grams", lambda: TfidfVectorizer(ngram_range=(1, 2), min_df=3,
                                                   sublinear_tf=True)),
        ("character 3-5 grams", lambda: TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5),
                                                        min_df=5, sublinear_tf=True)),
    ]
    for title, make in vectorizers:
        vec = make()
        ridge = Ridge(alpha=10.0).fit(vec.fit_transform([texts[i] for i in fit]), label[fit])
        rho = spearmanr(ridge.predict(vec.transform([texts[i] for i in held])), label[held])[0]
        print(f", TF-IDF {title} {rho:.3f}", end="")
    print("\n")

    print("| strong score | MMLU |\n|---|---:|")
    row("built-in heads (the shipped score)", shipped)
    prior = {s: 1 - np.nanmean(np.array(subject_rows[s])[:, models.index(MIXTRAL)])
             for s in names}
    fallback = np.mean(list(prior.values()))
    by_subject = np.array([prior.get(s, fallback) for s in subject])
    row(f"subject prior: {MIXTRAL}'s share wrong on MMLU-Pro's rows of the question's subject",
        by_subject)
    row("the same, rank-averaged with the shipped score (prior at half weight)",
        0.5 * rank(by_subject) + rank(shipped))
    gap = {s: np.nanmean(np.array(subject_rows[s])[:, models.index(STRONGEST)]
                         - np.array(subject_rows[s])[:, models.index(MIXTRAL)]) for s in names}
    fallback = np.mean(list(gap.values()))
    by_gap = np.array([gap.get(s, fallback) for s in subject])
    row(f"subject gain prior: {STRONGEST} right minus {MIXTRAL} right, on MMLU-Pro's rows of "
        "the question's subject", by_gap)
    row("the same, rank-averaged with the shipped score (prior at half weight)",
        0.5 * rank(by_gap) + rank(shipped))
    for title, make in vectorizers:
        vec = make()
        ridge = Ridge(alpha=10.0).fit(vec.fit_transform(texts), label)
        lexical = ridge.predict(vec.transform(prompts))
        row(f"lexical ridge ({title}) on the shipped label", lexical)
        row("the same, rank-averaged with the shipped score (lexical at half weight)",
            0.5 * rank(lexical) + rank(shipped))
    own = {s: np.mean((strong - weak)[subject == s]) for s in set(subject)}
    row("diagnosis, not a router: each evaluation subject's own gain (evaluation labels)",
        np.array([own[s] for s in subject]))
    row("diagnosis: the same, rank-averaged with the shipped score",
        rank(np.array([own[s] for s in subject])) + rank(shipped))

    gsm = [r["question"].strip() for r in jsonl(os.path.join(train, "gsm8k/train.jsonl"))]
    lengths = np.sort(shape(gsm)[:, 0])
    print("\n| maths branch of the mixture | GSM8K | MT-Bench | MMLU |\n|---|---:|---:|---:|")
    bench = []
    for name in ["gsm8k", "mt_bench", "mmlu"]:
        rows = jsonl(os.path.join(args.data, "eval/routellm", f"{name}.jsonl"))
        key = ("weak_score", "strong_score") if name == "mt_bench" else ("weak_correct",
                                                                          "strong_correct")
        c = classify(args.switchyard, [{"id": r["id"], "prompt": r["prompt"]} for r in rows])
        parts = [{p["head"]: p["score"] for p in r["strong_parts"]} for r in c]
        place = np.searchsorted(lengths, shape([r["prompt"] for r in rows])[:, 0]) / len(lengths)
        bench.append(dict(
            w=[float(r[key[0]]) for r in rows], s=[float(r[key[1]]) for r in rows],
            strong=np.array([p["strong"] for p in parts]),
            expert=np.array([p["math"] for p in parts]),
            p_math=np.array([r["categories"]["math"] for r in c]), place=place))
    for share in [0.0, 0.25, 0.5]:
        title = ("the maths expert (the shipped score)" if share == 0 else
                 f"the expert, with the prompt length's place at share {share}")
        cells = [apgr(b["p_math"] * ((1 - share) * b["expert"] + share * b["place"])
                      + (1 - b["p_math"]) * b["strong"], b["w"], b["s"]) for b in bench]
        print(f"| {title} | " + " | ".join(f"{c:.3f}" for c in cells) + " |", flush=True)


if __name__ == "__main__":
    main()
