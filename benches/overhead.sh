#!/usr/bin/env bash
# Latency the gateway adds on the cloud path, measured side by side in one run with
# ../shared/bench: direct to the mock upstream vs Switchyard vs LiteLLM vs a bare nginx proxy
# (the floor), at concurrency 1, 16 and 64, JSON and SSE. Loopback only; every load run is
# bounded by a request count and a time cap.
#   benches/overhead.sh            # knobs: REQUESTS (20000), CONCURRENCY ("1 16 64"), MAX_SECONDS (60),
#                                  # PEERS ("litellm nginx"), BENCH_DIR (../shared/bench)
# Prints two tables (json, stream); raw results under /tmp/bench-results/switchyard-<time>.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
BENCH="$(cd "${BENCH_DIR:-../shared/bench}" && pwd)"
export REQUESTS="${REQUESTS:-20000}" CONCURRENCY="${CONCURRENCY:-1 16 64}" MAX_SECONDS="${MAX_SECONDS:-60}"
PEERS="${PEERS:-litellm nginx}"
PORT="${SWITCHYARD_BENCH_PORT:-18100}"
OUT="/tmp/bench-results/switchyard-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

has() { [[ " $PEERS " == *" $1 "* ]]; }
if has litellm; then "$BENCH/install.sh"; else "$BENCH/install.sh" --no-litellm; fi
cargo build --locked --release --bin switchyard >&2

cleanup() {
  for p in ${SY_PID:-} ${SY2_PID:-}; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  has litellm && "$BENCH/peers/litellm.sh" stop >/dev/null 2>&1 || true
  has nginx && "$BENCH/peers/nginx-proxy.sh" stop >/dev/null 2>&1 || true
  "$BENCH/mock-upstream/stop.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT

"$BENCH/mock-upstream/start.sh"
has nginx && "$BENCH/peers/nginx-proxy.sh" start
has litellm && "$BENCH/peers/litellm.sh" start

# Switchyard with its normal production logging (info: start-up lines, warnings and errors;
# no per-request access log): the default one-thread runtime, and a two-thread one beside it.
start_switchyard() {  # PORT THREADS LOG -> pid in $!
  "$CARGO_TARGET_DIR/release/switchyard" serve --policy "$ROOT/benches/overhead-policy.yaml" \
    --listen "127.0.0.1:$1" --threads "$2" 2>"$3" &
}
start_switchyard "$PORT" 1 "$OUT/switchyard.log"; SY_PID=$!
start_switchyard "$((PORT + 1))" 2 "$OUT/switchyard-2t.log"; SY2_PID=$!
for p in "$PORT" "$((PORT + 1))"; do
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$p/readyz" && break; sleep 0.1; done
  curl -fsS -o /dev/null "http://127.0.0.1:$p/readyz" || { echo "switchyard on :$p did not become ready" >&2; cat "$OUT"/switchyard*.log >&2; exit 1; }
done
echo "$("$CARGO_TARGET_DIR/release/switchyard" --version): :$PORT (1 thread, pid $SY_PID), :$((PORT + 1)) (2 threads, pid $SY2_PID)" | tee "$OUT/info.txt"

# LiteLLM runs last at each level, and the next level starts once it has gone idle: at its cap it
# is still working through the requests oha gave up on, and that work must not overlap another
# target's run. So the harness runs one level at a time; the levels' results are joined per mode.
litellm_busy() {  # CPU ticks of LiteLLM's processes so far
  local pid; pid="$("$BENCH/peers/litellm.sh" pid)"
  cat "/proc/$pid/stat" $(pgrep -P "$pid" | sed 's|.*|/proc/&/stat|') 2>/dev/null | awk '{s += $14 + $15} END {print s + 0}'
}
wait_litellm_idle() {  # until a second passes without LiteLLM using CPU (at most 60 s)
  local before after
  for _ in $(seq 60); do
    before="$(litellm_busy)"; sleep 1; after="$(litellm_busy)"
    [ "$after" = "$before" ] && return
  done
}
for mode in json stream; do
  mkdir -p "$OUT/$mode"
  for c in $CONCURRENCY; do
    targets=("http://127.0.0.1:$PORT" switchyard "http://127.0.0.1:$((PORT + 1))" switchyard-2t); pids=("$SY_PID" "$SY2_PID")
    if has nginx; then
      port=18090; [ "$mode" = stream ] && port=18091
      targets+=("http://127.0.0.1:$port" nginx-proxy); pids+=("$("$BENCH/peers/nginx-proxy.sh" pid)")
    fi
    if has litellm; then targets+=(http://127.0.0.1:4000 litellm); pids+=("$("$BENCH/peers/litellm.sh" pid)"); fi
    CONCURRENCY="$c" TARGET_PIDS="${pids[*]}" MODES="$mode" OUT_DIR="$OUT/$mode/c$c" \
      "$BENCH/run-overhead.sh" "${targets[@]}" >"$OUT/$mode/c$c.log"
    if has litellm; then wait_litellm_idle; fi
  done
  cat "$OUT/$mode"/c*/manifest.tsv >"$OUT/$mode/manifest.tsv"
  python3 "$BENCH/summarize.py" "$OUT/$mode" | tee "$OUT/$mode/table.md"
done
# The added p50/p99 against nginx's at full precision (the table above rounds to 10 us).
has nginx && python3 "$ROOT/benches/overhead_ratios.py" "$OUT" | tee "$OUT/ratios.md"
echo "results: $OUT" >&2
