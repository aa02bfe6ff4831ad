#!/usr/bin/env bash
# CPU time one proxied request costs Switchyard and the bare nginx proxy, from the kernel's
# per-process run time (/proc/PID/schedstat, nanoseconds, user and kernel together), which
# scheduling noise on a shared machine does not inflate the way it does latency. Runs ROUNDS
# interleaved rounds of REQUESTS requests per target at concurrency CONCURRENCY, for JSON and SSE,
# with ../shared/bench's mock upstream and nginx proxy, loopback only.
#   benches/overhead_cpu.sh          # knobs: ROUNDS (3), REQUESTS (20000), CONCURRENCY (1),
#                                    # MODES ("json stream"), SWITCHYARD (binary), BENCH_DIR
# Prints one line per round: CPU us/request and oha's p50 for each target.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
BENCH="$(cd "${BENCH_DIR:-../shared/bench}" && pwd)"
CACHE="${SWITCHYARD_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchyard}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
ROUNDS="${ROUNDS:-3}" REQUESTS="${REQUESTS:-20000}" C="${CONCURRENCY:-1}"
PORT="${SWITCHYARD_BENCH_PORT:-18100}"
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
KEY="${BENCH_API_KEY:-sk-bench-local-4f1c2e9a7b3d5068}"

"$BENCH/install.sh" --no-litellm >&2
if [ -z "${SWITCHYARD:-}" ]; then
  cargo build --locked --release --bin switchyard >&2
  SWITCHYARD="$CARGO_TARGET_DIR/release/switchyard"
fi

cleanup() {
  [ -n "${SY_PID:-}" ] && kill "$SY_PID" 2>/dev/null && wait "$SY_PID" 2>/dev/null || true
  "$BENCH/peers/nginx-proxy.sh" stop >/dev/null 2>&1 || true
  "$BENCH/mock-upstream/stop.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$BENCH/mock-upstream/start.sh" >&2
"$BENCH/peers/nginx-proxy.sh" start >&2
"$SWITCHYARD" serve --policy "$ROOT/benches/overhead-policy.yaml" --listen "127.0.0.1:$PORT" \
  --threads 1 2>/dev/null &
SY_PID=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" && break; sleep 0.1; done
# nginx serves from its one worker process, the master's child.
NGINX_PID="$(pgrep -P "$("$BENCH/peers/nginx-proxy.sh" pid)" | head -1)"

run_ns() {  # PID URL BODY -> prints "cpu_ns p50_seconds" for one measured run
  local pid=$1 url=$2 body=$3 before after p50
  "$OHA" -n 1000 -c "$C" --no-tui -m POST -H "Authorization: Bearer $KEY" \
    -H 'content-type: application/json' -D "$body" "$url" >/dev/null
  before="$(cut -d' ' -f1 "/proc/$pid/schedstat")"
  p50="$("$OHA" -n "$REQUESTS" -c "$C" --no-tui --output-format json -m POST \
    -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -D "$body" "$url" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["latencyPercentiles"]["p50"])')"
  after="$(cut -d' ' -f1 "/proc/$pid/schedstat")"
  echo "$((after - before)) $p50"
}

echo "| mode | conc | round | Switchyard CPU us/req | nginx CPU us/req | ratio | Switchyard p50 us | nginx p50 us |"
echo "|---|---:|---:|---:|---:|---:|---:|---:|"
for mode in ${MODES:-json stream}; do
  body="$BENCH/body.json" nginx_port=18090
  [ "$mode" = stream ] && body="$BENCH/body-stream.json" nginx_port=18091
  for r in $(seq "$ROUNDS"); do
    read -r sy_ns sy_p50 <<<"$(run_ns "$SY_PID" "http://127.0.0.1:$PORT/v1/chat/completions" "$body")"
    read -r ng_ns ng_p50 <<<"$(run_ns "$NGINX_PID" "http://127.0.0.1:$nginx_port/v1/chat/completions" "$body")"
    python3 -c "
sy, ng = $sy_ns / $REQUESTS / 1e3, $ng_ns / $REQUESTS / 1e3
print(f'| $mode | $C | $r | {sy:.1f} | {ng:.1f} | {sy / ng:.2f} | {$sy_p50 * 1e6:.1f} | {$ng_p50 * 1e6:.1f} |')"
  done
done
