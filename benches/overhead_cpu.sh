#!/usr/bin/env bash
# CPU time one proxied request costs Switchyard and the bare nginx proxy, from the kernel's
# per-process run time (/proc/PID/schedstat, nanoseconds, user and kernel together), which
# scheduling noise on a shared machine does not inflate the way it does latency. Runs ROUNDS
# interleaved rounds of REQUESTS requests per target at concurrency CONCURRENCY, for JSON and SSE,
# with ../shared/bench's mock upstream and nginx proxy, loopback only.
#   benches/overhead_cpu.sh          # knobs: ROUNDS (3), REQUESTS (20000), CONCURRENCY (1),
#                                    # MODES ("json stream"), SWITCHYARD (binary), BENCH_DIR,
#                                    # BASELINE (a second Switchyard binary, e.g. an older build)
# Prints one line per round: CPU us/request (also split into user and kernel time) and oha's
# p50 for each target, and the CPU ratio to nginx's.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
BENCH="$(cd "${BENCH_DIR:-../shared/bench}" && pwd)"
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
  for p in ${SY_PID:-} ${BASE_PID:-}; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  "$BENCH/peers/nginx-proxy.sh" stop >/dev/null 2>&1 || true
  "$BENCH/mock-upstream/stop.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$BENCH/mock-upstream/start.sh" >&2
"$BENCH/peers/nginx-proxy.sh" start >&2
start() {  # BINARY PORT -> pid in $!
  "$1" serve --policy "$ROOT/benches/overhead-policy.yaml" --listen "127.0.0.1:$2" --threads 1 \
    2>/dev/null &
}
start "$SWITCHYARD" "$PORT"; SY_PID=$!
targets=("switchyard:$SY_PID:$PORT")
if [ -n "${BASELINE:-}" ]; then
  start "$BASELINE" "$((PORT + 2))"; BASE_PID=$!
  targets+=("baseline:$BASE_PID:$((PORT + 2))")
fi
for t in "${targets[@]}"; do
  port="${t##*:}"
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
done
# nginx serves from its one worker process, the master's child.
NGINX_PID="$(pgrep -P "$("$BENCH/peers/nginx-proxy.sh" pid)" | head -1)"

ticks() {  # PID -> user and kernel CPU time so far, in clock ticks (/proc/PID/stat)
  awk '{print $14, $15}' "/proc/$1/stat"
}

run_ns() {  # PID URL BODY -> prints "cpu_ns p50_seconds user_ticks kernel_ticks" for one measured run
  local pid=$1 url=$2 body=$3 before after p50 u0 k0 u1 k1
  "$OHA" -n 1000 -c "$C" --no-tui -m POST -H "Authorization: Bearer $KEY" \
    -H 'content-type: application/json' -D "$body" "$url" >/dev/null
  before="$(cut -d' ' -f1 "/proc/$pid/schedstat")"
  read -r u0 k0 <<<"$(ticks "$pid")"
  p50="$("$OHA" -n "$REQUESTS" -c "$C" --no-tui --output-format json -m POST \
    -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -D "$body" "$url" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["latencyPercentiles"]["p50"])')"
  after="$(cut -d' ' -f1 "/proc/$pid/schedstat")"
  read -r u1 k1 <<<"$(ticks "$pid")"
  echo "$((after - before)) $p50 $((u1 - u0)) $((k1 - k0))"
}

# User and kernel shares come from clock ticks (getconf CLK_TCK a second, 10 ms here): coarse for
# short runs, which REQUESTS sets.
TICK_US=$((1000000 / $(getconf CLK_TCK)))
echo "| mode | conc | round | target | CPU us/req | CPU ratio to nginx | user us/req | kernel us/req | p50 us |"
echo "|---|---:|---:|---|---:|---:|---:|---:|---:|"
for mode in ${MODES:-json stream}; do
  body="$BENCH/body.json" nginx_port=18090
  [ "$mode" = stream ] && body="$BENCH/body-stream.json" nginx_port=18091
  for r in $(seq "$ROUNDS"); do
    rows=()
    for t in "${targets[@]}" "nginx:$NGINX_PID:$nginx_port"; do
      IFS=: read -r name pid port <<<"$t"
      read -r ns p50 user kernel <<<"$(run_ns "$pid" "http://127.0.0.1:$port/v1/chat/completions" "$body")"
      rows+=("$name $ns $p50 $user $kernel")
    done
    printf '%s\n' "${rows[@]}" | python3 -c "
import sys
rows = [l.split() for l in sys.stdin if l.strip()]
nginx = float(rows[-1][1])
for name, ns, p50, user, kernel in rows:
    us = float(ns) / $REQUESTS / 1e3
    u, k = (int(t) * $TICK_US / $REQUESTS for t in (user, kernel))
    print(f'| $mode | $C | $r | {name} | {us:.1f} | {float(ns) / nginx:.2f} | {u:.1f} | {k:.1f} | {float(p50) * 1e6:.1f} |')"
  done
done
