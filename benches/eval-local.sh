#!/usr/bin/env bash
# Answer quality and decode speed of the on-box models, one after another on the same fixed sample
# (`switchyard eval-local`; docs/local-model.md has the table and how answers are graded).
#   benches/eval-local.sh             SmolLM2, Gemma 3 270M, Qwen2.5-Coder-0.5B and -1.5B
# Knobs: GSM8K (50), MMLU_PRO (50), MAX_TOKENS (512), SEED (7), THREADS (2), BIN (another
# switchyard build), SWITCHYARD_KERNEL (a lower kernel tier, e.g. avx2), MODELS (names below).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
GSM8K="${GSM8K:-50}" MMLU_PRO="${MMLU_PRO:-50}" MAX_TOKENS="${MAX_TOKENS:-512}" SEED="${SEED:-7}" THREADS="${THREADS:-2}"
MODELS="${MODELS:-smollm2 gemma3 qwen qwen15}"
scripts/fetch-models.sh --qwen --qwen15 --gemma3 >/dev/null
if [ -n "${BIN:-}" ]; then SY="$BIN"; else
  cargo build --locked --release --bin switchyard >&2
  SY="$CARGO_TARGET_DIR/release/switchyard"
fi
OUT="/tmp/bench-results/eval-local-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
echo "date: $(date -u '+%F %T UTC')  host: $(uname -srm), $(nproc) cores; $("$SY" --version); kernels: ${SWITCHYARD_KERNEL:-best}" | tee "$OUT/info.txt"
echo "| model | GSM8K correct | MMLU-Pro correct (unanswered) | decode tok/s, GSM8K / MMLU-Pro | mean answer tokens, GSM8K / MMLU-Pro | seconds |" | tee "$OUT/table.md"
echo "|---|---|---|---|---|---|" | tee -a "$OUT/table.md"
for name in $MODELS; do
  extra=()
  case "$name" in
    smollm2) m=models/SmolLM2-135M-Instruct.Q4_1.gguf ;;
    gemma3) m=models/gemma-3-270m-q4_k_m.gguf; extra=(--template gemma) ;;
    qwen) m=models/qwen2.5-coder-0.5b-instruct.gguf ;;
    qwen15) m=models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf ;;
    *) echo "unknown model $name (smollm2, gemma3, qwen, qwen15)" >&2; exit 2 ;;
  esac
  "$SY" eval-local --model "$m" "${extra[@]}" --gsm8k "$GSM8K" --mmlu-pro "$MMLU_PRO" --max-tokens "$MAX_TOKENS" \
    --seed "$SEED" --threads "$THREADS" --json >"$OUT/$name.jsonl"
  tail -1 "$OUT/$name.jsonl" | python3 -c '
import json, sys
s = json.load(sys.stdin); t = {x["task"]: x for x in s["tasks"]}
g, p = t["gsm8k"], t["mmlu_pro"]
row = [s["model"], "%d / %d" % (g["correct"], g["questions"]),
       "%d / %d (%d)" % (p["correct"], p["questions"], p["unanswered"]),
       "%.1f / %.1f" % (g["decode_tokens_per_s"], p["decode_tokens_per_s"]),
       "%.0f / %.0f" % (g["mean_answer_tokens"], p["mean_answer_tokens"]), "%.0f" % s["seconds"]]
print("| " + " | ".join(row) + " |")
' | tee -a "$OUT/table.md"
done
echo "results: $OUT" >&2
