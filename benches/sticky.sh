#!/usr/bin/env bash
# What sticky conversations cost a request. Three Switchyard processes on the overhead policy
# (one runtime thread each), side by side against the mock upstream of ../shared/bench, all sent
# the harness's question as `model: auto` turns of one conversation (every turn after the first
# finds its pin): `plain` (no sticky routes), `memory` (`sticky: true`, pins in the process) and
# `redis` (`sticky: true`, pins in a local redis-server: a GET before the decision and a SET
# before the answer goes out). Then it counts the Redis calls each request made (INFO
# commandstats over the redis gateway's switchyard_requests_total). JSON answers; loopback only.
#   benches/sticky.sh     # knobs: REQUESTS (5000), CONCURRENCY ("1 16"), BENCH_DIR (../shared/bench)
# Needs redis-server (scripts/setup.sh --test installs it). Raw oha output under
# /tmp/bench-results/sticky-<time>.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
BENCH="$(cd "${BENCH_DIR:-../shared/bench}" && pwd)"
REQUESTS="${REQUESTS:-5000}"; CONCURRENCY="${CONCURRENCY:-1 16}"
OUT="/tmp/bench-results/sticky-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
command -v redis-server >/dev/null || { echo "redis-server is needed: scripts/setup.sh --test" >&2; exit 1; }
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
"$BENCH/install.sh" --no-litellm >&2
cargo build --locked --release --bin switchyard >&2

source benches/redis_and_mock.sh

cp benches/overhead-policy.yaml "$OUT/plain.yaml"
{ cat benches/overhead-policy.yaml; echo 'sticky: true'; } >"$OUT/memory.yaml"
{ cat "$OUT/memory.yaml"; printf 'state: { backend: redis, url: "redis://127.0.0.1:%s/0", timeout_ms: 50 }\n' "$REDIS_PORT"; } >"$OUT/redis.yaml"
# The harness's question as an `auto` request: the default route (the mock's JSON port) answers.
python3 -c 'import json, sys; b = json.load(open(sys.argv[1])); b["model"] = "auto"; json.dump(b, open(sys.argv[2], "w"))' \
  "$BENCH/body.json" "$OUT/body.json"

declare -A URL GW_PID
port=18140
for name in plain memory redis; do
  "$CARGO_TARGET_DIR/release/switchyard" serve --policy "$OUT/$name.yaml" --listen "127.0.0.1:$port" \
    --threads 1 2>"$OUT/switchyard-$name.log" &
  PIDS+=($!); GW_PID[$name]=$!; URL[$name]="http://127.0.0.1:$port/v1/chat/completions"
  for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" && break; sleep 0.1; done
  curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" || { echo "switchyard ($name) did not become ready" >&2; cat "$OUT/switchyard-$name.log" >&2; exit 1; }
  port=$((port + 1))
done
KEY="sk-bench-local-4f1c2e9a7b3d5068"
# The sticky gateways must pin: a second turn is a hit.
for name in memory redis; do
  for _ in 1 2; do
    curl -fsS -o /dev/null -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d @"$OUT/body.json" "${URL[$name]}"
  done
  base="${URL[$name]%/v1/chat/completions}"
  curl -fsS "$base/metrics" | grep -q '^switchyard_sticky_total{outcome="hit"} [1-9]' \
    || { echo "switchyard ($name) did not follow its pin" >&2; exit 1; }
done
echo "$("$CARGO_TARGET_DIR/release/switchyard" --version), $(redis-server --version | cut -d' ' -f1-3); CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; oha $("$OHA" --version | cut -d' ' -f2)" | tee "$OUT/info.txt"
served() { curl -fsS "${URL[redis]%/v1/chat/completions}/metrics" | awk '/^switchyard_requests_total/ {s += $2} END {print s + 0}'; }
redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
served_before="$(served)"
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
printf '| conc | gateway | rps | p50 ms | p99 ms | gateway CPU us/req |\n|---|---|---|---|---|---|\n' | tee "$OUT/table.md"
for c in $CONCURRENCY; do
  for name in direct plain memory redis; do
    url="${URL[$name]:-http://127.0.0.1:18080/v1/chat/completions}"
    "$OHA" --no-tui -n 200 -c "$c" -m POST -T application/json -H "Authorization: Bearer $KEY" -D "$OUT/body.json" "$url" >/dev/null
    [ "$name" = direct ] || before=$(cpu_ticks "${GW_PID[$name]}")
    "$OHA" --no-tui -n "$REQUESTS" -c "$c" -m POST -T application/json -H "Authorization: Bearer $KEY" -D "$OUT/body.json" \
      --output-format json -o "$OUT/c$c-$name.json" "$url" >/dev/null
    cpu_us=-
    [ "$name" = direct ] || cpu_us=$(( ($(cpu_ticks "${GW_PID[$name]}") - before) * TICK_US / REQUESTS ))
    python3 - "$OUT/c$c-$name.json" "$c" "$name" "$cpu_us" <<'PY' | tee -a "$OUT/table.md"
import json, sys
r = json.load(open(sys.argv[1])); s = r["summary"]; p = r["latencyPercentiles"]
codes = r.get("statusCodeDistribution", {})
assert set(codes) == {"200"}, codes
print(f"| {sys.argv[2]} | {sys.argv[3]} | {s['requestsPerSec']:.0f} | {p['p50']*1000:.3f} | {p['p99']*1000:.3f} | {sys.argv[4]} |")
PY
  done
done
# Redis calls per request of the redis gateway since the reset, warm-ups included.
requests=$(( $(served) - served_before ))
redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | grep -E '^cmdstat_(get|set):' | tee "$OUT/commandstats.txt"
awk -F'[:=,]' -v n="$requests" '/^cmdstat_/ {calls += $3; usec += $5} END {
  printf "redis: %d requests since the reset, %d GET/SET calls = %.2f per request, %.1f us of Redis CPU per request\n", n, calls, calls / n, usec / n
}' "$OUT/commandstats.txt" | tee "$OUT/calls.txt"
echo "results: $OUT" >&2
