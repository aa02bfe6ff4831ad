#!/usr/bin/env bash
# Classifier latency benchmark: Switchyard's encoder against the same weights under ONNX Runtime,
# in the same run, with the floor (the encoder's FLOPs over this CPU's numpy/OpenBLAS float32
# matrix-multiply rate). Prints a markdown table (docs/benchmarks.md) and keeps the raw JSON lines.
#   benches/classifier.sh                      threads 1 and 2, lengths 16..512, 16 concurrent clients
#   THREADS="1" LENGTHS=16,128 RUNS=30 benches/classifier.sh
#   TIERS="avx512 avx2" benches/classifier.sh   Switchyard on each kernel tier (SWITCHYARD_KERNEL)
#   BIN=/path/to/switchyard benches/classifier.sh   another build (e.g. target-cpu=native)
# Needs scripts/fetch-models.sh (the encoder); creates a Python venv with onnxruntime, onnx and
# numpy under ~/.cache/switchyard/bench-venv.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
THREADS="${THREADS:-1 2}"
LENGTHS="${LENGTHS:-16,64,128,256,512}"
RUNS="${RUNS:-50}"
CONCURRENCY="${CONCURRENCY:-16}"
TIERS="${TIERS:-}"
MODEL=models/all-MiniLM-L6-v2
OUT="${OUT:-$CACHE/bench/classifier-$(date +%Y%m%d-%H%M%S).jsonl}"
mkdir -p "$(dirname "$OUT")"

SWITCHYARD_MODELS=minilm scripts/fetch-models.sh
VENV="$CACHE/bench-venv"
if ! "$VENV/bin/python" -c 'import onnxruntime, onnx, numpy' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check onnxruntime onnx numpy
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --locked -q
  BIN="$CARGO_TARGET_DIR/release/switchyard"
fi
grep -m1 "model name" /proc/cpuinfo >&2 || true
grep -m1 "^flags" /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|fma|f16c|avx512f|avx512bw|avx512vl|avx512_vnni|avx_vnni)$' | tr '\n' ' ' >&2 || true
echo >&2

: >"$OUT"
for t in $THREADS; do
  OPENBLAS_NUM_THREADS=$t "$VENV/bin/python" benches/classifier_reference.py --model "$MODEL" --rate --threads "$t" >>"$OUT"
  "$VENV/bin/python" benches/classifier_reference.py --model "$MODEL" --threads "$t" --lengths "$LENGTHS" \
    --runs "$RUNS" --concurrency "$CONCURRENCY" >>"$OUT"
  for tier in ${TIERS:-default}; do
    [ "$tier" = default ] && tier=""
    SWITCHYARD_KERNEL="$tier" "$BIN" bench-classifier --encoder "$MODEL" --threads "$t" --lengths "$LENGTHS" \
      --runs "$RUNS" --concurrency "$CONCURRENCY" --reference >>"$OUT"
  done
done
echo "raw results: $OUT" >&2
"$VENV/bin/python" - "$OUT" "$MODEL/config.json" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
cfg = json.load(open(sys.argv[2]))
H, I, L = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
def flops(n):  # dense layers (QKV, output, FFN up/down) and attention (scores, context)
    return L * (2 * n * H * (4 * H + 2 * I) + 4 * n * n * H)
rate = {r["threads"]: r["matmul_gflops"] for r in rows if r.get("runtime") == "numpy"}
key = lambda r: (r["threads"], r["tokens"])
ort = {key(r): r for r in rows if r.get("runtime") == "onnxruntime"}
ours = {key(r) + (r.get("kernels", ""),): r for r in rows if r.get("runtime") == "switchyard"}
print(f"matmul rate (numpy/OpenBLAS float32, 1024x1024): " + ", ".join(f"{t} thread(s) {g} GFLOP/s" for t, g in sorted(rate.items())))
print()
print("| threads | tokens | kernels | floor ms | ONNX Runtime p50 / p99 ms | Switchyard p50 / p99 ms | Switchyard / ORT (p50) | Switchyard / floor (p50) | candle BertModel p50 ms | req/s, 16 clients: ORT / Switchyard batched / unbatched |")
print("|---|---|---|---|---|---|---|---|---|---|")
for k in sorted(ours):
    t, n, tier = k
    o, s = ort.get((t, n), {}), ours[k]
    floor = flops(n) / (rate.get(t, float("nan")) * 1e9) * 1e3
    print(f"| {t} | {n} | {tier} | {floor:.1f} | {o.get('p50_ms', float('nan')):.1f} / {o.get('p99_ms', float('nan')):.1f} | "
          f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f} | {s['p50_ms'] / o.get('p50_ms', float('nan')):.2f} | "
          f"{s['p50_ms'] / floor:.2f} | {s.get('candle_bert_p50_ms', float('nan')):.1f} | "
          f"{o.get('requests_per_s', float('nan')):.0f} / {s.get('requests_per_s', float('nan')):.0f} / {s.get('requests_per_s_unbatched', float('nan')):.0f} |")
PY
