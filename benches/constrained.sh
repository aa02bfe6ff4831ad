#!/usr/bin/env bash
# What constrained decoding (llguidance's token mask, `response_format` JSON schema) costs in
# decode speed: `switchyard generate` with and without a schema, alternating, in one run, on
# SmolLM2 and Qwen2.5-Coder-0.5B. Both sides generate MAX_TOKENS tokens: the free one past its
# end-of-turn token (--ignore-eos), the constrained one inside a schema that asks for more than
# that (an array of at least 60 strings). docs/benchmarks.md, "Constrained decoding".
#   benches/constrained.sh
# Knobs: ROUNDS (5 pairs), MAX_TOKENS (128), THREADS (2), BIN (another switchyard build),
# SWITCHYARD_KERNEL (a lower kernel tier, e.g. avx2), MODELS (smollm2 qwen).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
ROUNDS="${ROUNDS:-5}" MAX_TOKENS="${MAX_TOKENS:-128}" THREADS="${THREADS:-2}"
MODELS="${MODELS:-smollm2 qwen}"
scripts/fetch-models.sh --qwen >/dev/null
if [ -n "${BIN:-}" ]; then SY="$BIN"; else
  cargo build --locked --release --bin switchyard >&2
  SY="$CARGO_TARGET_DIR/release/switchyard"
fi
OUT="/tmp/bench-results/constrained-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
cat >"$OUT/schema.json" <<'JSON'
{"type": "object",
 "properties": {"city": {"type": "string", "maxLength": 24},
                "facts": {"type": "array", "minItems": 60,
                          "items": {"type": "object",
                                    "properties": {"topic": {"type": "string", "enum": ["history", "food", "sport"]},
                                                   "text": {"type": "string", "maxLength": 40}},
                                    "required": ["topic", "text"], "additionalProperties": false}}},
 "required": ["city", "facts"], "additionalProperties": false}
JSON
echo "date: $(date -u '+%F %T UTC')  host: $(uname -srm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $("$SY" --version); kernels: ${SWITCHYARD_KERNEL:-best}" | tee "$OUT/info.txt"
PROMPT="Tell me facts about Paris, as JSON."
for name in $MODELS; do
  case "$name" in
    smollm2) m=models/SmolLM2-135M-Instruct.Q4_1.gguf ;;
    qwen) m=models/qwen2.5-coder-0.5b-instruct.gguf ;;
    *) echo "unknown model $name (smollm2, qwen)" >&2; exit 2 ;;
  esac
  for r in $(seq "$ROUNDS"); do
    "$SY" generate --model "$m" --threads "$THREADS" --max-tokens "$MAX_TOKENS" --ignore-eos --json "$PROMPT" >>"$OUT/$name-free.jsonl"
    "$SY" generate --model "$m" --threads "$THREADS" --max-tokens "$MAX_TOKENS" --json-schema "$OUT/schema.json" --json "$PROMPT" >>"$OUT/$name-schema.jsonl"
  done
done
python3 - "$OUT" $MODELS <<'PY' | tee "$OUT/table.md"
import json, statistics, sys
out, models = sys.argv[1], sys.argv[2:]
print("| model | decode tok/s free (median) | decode tok/s with the schema (median) | ratio | tokens | grammar setup s (median) |")
print("|---|---|---|---|---|---|")
for m in models:
    free = [json.loads(l) for l in open(f"{out}/{m}-free.jsonl")]
    con = [json.loads(l) for l in open(f"{out}/{m}-schema.jsonl")]
    f = statistics.median(r["decode_tokens_per_second"] for r in free)
    c = statistics.median(r["decode_tokens_per_second"] for r in con)
    toks = "%d / %d" % (statistics.median(r["completion_tokens"] for r in free), statistics.median(r["completion_tokens"] for r in con))
    g = statistics.median(r["grammar_seconds"] for r in con)
    print(f"| {free[0]['model']} | {f:.1f} | {c:.1f} | {c / f:.3f} | {toks} | {g:.3f} |")
PY
echo "results in $OUT" >&2
