#!/usr/bin/env bash
# The portable binary (the default build: x86-64-v3, kernels chosen at start-up) against a build
# for this CPU only (target-cpu=native), in one run, alternating the two: the encoder's p50 at
# each length and thread count, and SmolLM2's prefill and decode rates (`switchyard generate`).
#   benches/portable.sh                       builds both (the native one under /tmp/native)
#   NATIVE=/path/to/native/switchyard benches/portable.sh
# Knobs: THREADS ("1 2"), LENGTHS (16,64,128,512), RUNS (30), REPEAT (5), SWITCHYARD_KERNEL.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
THREADS="${THREADS:-1 2}" LENGTHS="${LENGTHS:-16,64,128,512}" RUNS="${RUNS:-30}" REPEAT="${REPEAT:-5}"
MODEL=models/SmolLM2-135M-Instruct.Q4_1.gguf
scripts/fetch-models.sh >/dev/null
cargo build --release --locked -q
PORTABLE="$CARGO_TARGET_DIR/release/switchyard"
if [ -z "${NATIVE:-}" ]; then
  RUSTFLAGS="-C target-cpu=native" CARGO_TARGET_DIR=/tmp/native cargo build --release --locked -q
  NATIVE=/tmp/native/release/switchyard
fi
grep -m1 "model name" /proc/cpuinfo
grep -m1 "^flags" /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni)$' | tr '\n' ' '
echo
LONG="$(python3 -c "print(' '.join(['The quick brown fox jumps over the lazy dog while the river runs past old stone bridges.'] * 28))")"
OUT="$CACHE/bench/portable-$(date +%Y%m%d-%H%M%S).jsonl"
mkdir -p "$(dirname "$OUT")"
: >"$OUT"
for t in $THREADS; do
  for build in portable native; do
    bin="$PORTABLE"; [ "$build" = native ] && bin="$NATIVE"
    "$bin" bench-classifier --encoder models/all-MiniLM-L6-v2 --threads "$t" --lengths "$LENGTHS" \
      --runs "$RUNS" --concurrency 0 | jq -c --arg b "$build" '. + {build: $b}' >>"$OUT"
  done
  for _ in $(seq "$REPEAT"); do
    for build in portable native; do
      bin="$PORTABLE"; [ "$build" = native ] && bin="$NATIVE"
      pp="$("$bin" generate --model "$MODEL" --threads "$t" --json --max-tokens 1 "$LONG" | jq .prompt_tokens_per_second)"
      tg="$("$bin" generate --model "$MODEL" --threads "$t" --json --ignore-eos --max-tokens 128 "Tell me a story." | jq .decode_tokens_per_second)"
      echo "{\"runtime\": \"generate\", \"build\": \"$build\", \"threads\": $t, \"prefill\": $pp, \"decode\": $tg}" >>"$OUT"
    done
  done
done
echo "raw results: $OUT" >&2
python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
enc = {(r["build"], r["threads"], r["tokens"]): r for r in rows if r.get("runtime") == "switchyard"}
kernels = {r["build"]: r.get("kernels", "") for r in rows if r.get("runtime") == "switchyard"}
print(f"encoder kernels: portable {kernels.get('portable')}, native {kernels.get('native')}")
print("| threads | tokens | portable p50 ms | native p50 ms | portable / native |")
print("|---|---|---|---|---|")
for (b, t, n), r in sorted(enc.items()):
    if b != "portable":
        continue
    nat = enc[("native", t, n)]
    print(f"| {t} | {n} | {r['p50_ms']:.2f} | {nat['p50_ms']:.2f} | {r['p50_ms'] / nat['p50_ms']:.3f} |")
gen = [r for r in rows if r.get("runtime") == "generate"]
print()
print("| threads | SmolLM2 Q4_1 | portable tok/s | native tok/s | portable / native |")
print("|---|---|---|---|---|")
for t in sorted({r["threads"] for r in gen}):
    for k in ("prefill", "decode"):
        med = lambda b: statistics.median(r[k] for r in gen if r["threads"] == t and r["build"] == b)
        print(f"| {t} | {k} | {med('portable'):.1f} | {med('native'):.1f} | {med('portable') / med('native'):.3f} |")
PY
