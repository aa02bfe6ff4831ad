#!/usr/bin/env bash
# On-box model speed, measured with `switchyard generate` (prefill of a ~512-token prompt, decode of
# 128 tokens, time to first token, peak RSS) at 1 and 2 threads, and aggregate decode throughput of
# the gateway with 1, 2 and 4 concurrent requests; beside llama.cpp's llama-bench on the same GGUF
# file and thread counts when LLAMA_BENCH points at one (see docs/benchmarks.md for building it).
#   benches/local.sh [MODEL.gguf ...]     default: models/SmolLM2-135M-Instruct.Q4_1.gguf
# Knobs: THREADS ("1 2"), CONCURRENCY ("1 2 4"; "" skips the gateway), LLAMA_BENCH (path to
# llama-bench), REPEAT (3), BIN (another switchyard build), SWITCHYARD_KERNEL (a lower kernel tier).
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
THREADS="${THREADS:-1 2}" CONCURRENCY="${CONCURRENCY-1 2 4}" REPEAT="${REPEAT:-3}"
MODELS=("$@"); [ ${#MODELS[@]} -gt 0 ] || MODELS=(models/SmolLM2-135M-Instruct.Q4_1.gguf)
scripts/fetch-models.sh >/dev/null
if [ -n "${BIN:-}" ]; then SY="$BIN"; else
  cargo build --locked --release --bin switchyard >&2
  SY="$CARGO_TARGET_DIR/release/switchyard"
fi
OUT="/tmp/bench-results/local-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
echo "date: $(date -u '+%F %T UTC')  host: $(uname -srm), $(nproc) cores; $("$SY" --version); kernels: ${SWITCHYARD_KERNEL:-best}" | tee "$OUT/info.txt"

# ~512 tokens of ordinary English prose for the prefill measurement.
LONG="$(python3 -c "print(' '.join(['The quick brown fox jumps over the lazy dog while the river runs past old stone bridges.'] * 28))")"

median() { python3 -c "import sys,statistics; print(round(statistics.median(float(x) for x in sys.argv[1:]),1))" "$@"; }

for m in "${MODELS[@]}"; do
  for t in $THREADS; do
    pp=(); tg=(); ttft=(); rss=()
    for _ in $(seq "$REPEAT"); do
      j="$(/usr/bin/time -f '%M' -o "$OUT/rss" "$SY" generate --model "$m" --threads "$t" --json --max-tokens 1 "$LONG")"
      pp+=("$(jq -r .prompt_tokens_per_second <<<"$j")"); ttft+=("$(jq -r '.time_to_first_token_seconds * 1000' <<<"$j")")
      ptoks="$(jq -r .prompt_tokens <<<"$j")"
      j="$(/usr/bin/time -f '%M' -o "$OUT/rss" "$SY" generate --model "$m" --threads "$t" --json --ignore-eos --max-tokens 128 "Tell me a story.")"
      tg+=("$(jq -r .decode_tokens_per_second <<<"$j")"); rss+=("$(($(cat "$OUT/rss") / 1024))")
    done
    echo "switchyard | $(basename "$m") | threads $t | pp$ptoks $(median "${pp[@]}") tok/s | tg128 $(median "${tg[@]}") tok/s | ttft $(median "${ttft[@]}") ms | peak RSS $(median "${rss[@]}") MiB" | tee -a "$OUT/table.txt"
    if [ -n "${LLAMA_BENCH:-}" ]; then
      /usr/bin/time -f '%M' -o "$OUT/rss" "$LLAMA_BENCH" -m "$m" -t "$t" -p 512 -n 128 -r "$REPEAT" -o md 2>/dev/null \
        | grep -E '^\|' | tail -n +3 | sed "s/^/llama.cpp  | $(basename "$m") | threads $t /" | tee -a "$OUT/table.txt"
      echo "llama.cpp  | $(basename "$m") | threads $t | peak RSS $(($(cat "$OUT/rss") / 1024)) MiB" | tee -a "$OUT/table.txt"
    fi
  done
done

# Aggregate decode throughput of the gateway: N concurrent requests of 64 tokens each, N workers.
PORT=18190
for m in "${MODELS[@]}"; do
  for c in $CONCURRENCY; do
    cat >"$OUT/policy.yaml" <<YAML
version: 1
models:
  box: { kind: local, path: $PWD/$m, workers: $c, queue: 16, threads: ${AGG_THREADS:-2}, limits: { max_output_tokens: 64 } }
default: { route: box }
YAML
    "$SY" serve --policy "$OUT/policy.yaml" --listen "127.0.0.1:$PORT" 2>"$OUT/serve.log" & pid=$!
    for _ in $(seq 1200); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null && break; sleep 0.1; done
    python3 - "$PORT" "$c" <<'PY' | sed "s/^/switchyard | $(basename "$m") | concurrent $c | /" | tee -a "$OUT/table.txt"
import json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
port, c = sys.argv[1], int(sys.argv[2])
body = json.dumps({"model": "box", "max_tokens": 64, "ignore_eos": True, "temperature": 0,
                   "messages": [{"role": "user", "content": "Tell me a story."}]}).encode()
def one(_):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                 {"content-type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=600))["usage"]["completion_tokens"]
one(0)  # warm-up
start = time.time()
with ThreadPoolExecutor(c) as ex:
    tokens = sum(ex.map(one, range(c * 3)))
print(f"{tokens} tokens in {time.time() - start:.1f} s = {tokens / (time.time() - start):.1f} tok/s aggregate")
PY
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done
echo "results: $OUT" >&2
