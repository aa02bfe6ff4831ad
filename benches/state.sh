#!/usr/bin/env bash
# What sharing budgets and rate limits in Redis costs a request. One run of ../shared/bench
# measures, side by side against the mock upstream, three Switchyard processes on the overhead
# policy: without budgets or rate limits (none), with them in memory (memory), and with them in
# a local redis-server (redis). Then it counts the Redis calls each request made (INFO
# commandstats over the redis gateway's switchyard_requests_total). Loopback only.
#   benches/state.sh     # knobs: REQUESTS (5000), CONCURRENCY ("1 16 64"), MAX_SECONDS (60),
#                        # MODES ("json stream"), BENCH_DIR (../shared/bench)
# Needs redis-server (scripts/setup.sh --test installs it). Raw results under
# /tmp/bench-results/state-<time>.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
BENCH="$(cd "${BENCH_DIR:-../shared/bench}" && pwd)"
export REQUESTS="${REQUESTS:-5000}" CONCURRENCY="${CONCURRENCY:-1 16 64}" MAX_SECONDS="${MAX_SECONDS:-60}"
export MODES="${MODES:-json stream}"
OUT="/tmp/bench-results/state-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"
command -v redis-server >/dev/null || { echo "redis-server is needed: scripts/setup.sh --test" >&2; exit 1; }
"$BENCH/install.sh" --no-litellm
cargo build --locked --release --bin switchyard >&2

source benches/redis_and_mock.sh

# Limits that never refuse: the run measures their bookkeeping, not refusals.
limits='budgets:
  on_exhausted: reject
  global: { daily_usd: 1000000000, monthly_usd: 1000000000 }
  tenants:
    bench: { daily_usd: 1000000000 }
rate_limits:
  default: { requests_per_minute: 1000000000, tokens_per_minute: 1000000000000 }
'
cp benches/overhead-policy.yaml "$OUT/none.yaml"
{ cat benches/overhead-policy.yaml; printf '%s' "$limits"; } >"$OUT/memory.yaml"
{ cat "$OUT/memory.yaml"; printf 'state: { backend: redis, url: "redis://127.0.0.1:%s/0", timeout_ms: 50 }\n' "$REDIS_PORT"; } >"$OUT/redis.yaml"

targets=(); pids=(); port=18120
for name in none memory redis; do
  "$CARGO_TARGET_DIR/release/switchyard" serve --policy "$OUT/$name.yaml" --listen "127.0.0.1:$port" \
    --threads 1 2>"$OUT/switchyard-$name.log" &
  PIDS+=($!); pids+=($!); targets+=("http://127.0.0.1:$port" "$name")
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
  curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" || { echo "switchyard ($name) did not become ready" >&2; cat "$OUT/switchyard-$name.log" >&2; exit 1; }
  port=$((port + 1))
done
REDIS_GW="http://127.0.0.1:$((port - 1))"
echo "$("$CARGO_TARGET_DIR/release/switchyard" --version), $(redis-server --version | cut -d' ' -f1-3); CPU: $(lscpu | sed -n 's/^Model name: *//p')" | tee "$OUT/info.txt"

redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
TARGET_PIDS="${pids[*]}" OUT_DIR="$OUT/run" "$BENCH/run-overhead.sh" "${targets[@]}" >"$OUT/run.log"
cat "$OUT/run/table.md"

# Redis calls per request: the script calls (EVALSHA, and EVAL/SCRIPT LOAD once after a
# restart) over the requests the redis gateway served, warm-ups included.
requests="$(curl -fsS "$REDIS_GW/metrics" | awk '/^switchyard_requests_total/ {s += $2} END {print s + 0}')"
redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | grep -E '^cmdstat_(eval|evalsha|script)' | tee "$OUT/commandstats.txt"
awk -F'[:=,]' -v n="$requests" '/^cmdstat_/ {calls += $3; usec += $5} END {
  printf "redis: %d requests, %d script calls = %.2f per request, %.1f us of Redis CPU per request\n", n, calls, calls / n, usec / n
}' "$OUT/commandstats.txt" | tee "$OUT/calls.txt"
echo "results: $OUT" >&2
