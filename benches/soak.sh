#!/usr/bin/env bash
# Bounded soak: the release gateway with the on-box SmolLM2 and the nginx mock upstream of
# ../shared/bench, under mixed traffic (cloud and on-box, JSON and streams, some clients
# abandoning their stream) for SOAK_SECONDS (default 600). Reports the error rate and the gateway's
# resident memory at start, after warm-up and at the end (benches/soak.py).
#   benches/soak.sh      # knobs: SOAK_SECONDS (600), CONCURRENCY (8), WARMUP (60), BENCH_DIR (../shared/bench)
# The JSON report goes to stdout and /tmp/bench-results/soak-<time>.json.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
BENCH="$(cd "${BENCH_DIR:-../shared/bench}" && pwd)"
PORT="${SWITCHYARD_SOAK_PORT:-18110}"
OUT="/tmp/bench-results/soak-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$OUT"

command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null; }
}
scripts/fetch-models.sh >&2
cargo build --locked --release --bin switchyard >&2

cleanup() {
  [ -n "${SY_PID:-}" ] && kill "$SY_PID" 2>/dev/null && wait "$SY_PID" 2>/dev/null || true
  "$BENCH/mock-upstream/stop.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$BENCH/mock-upstream/start.sh" >&2
"$CARGO_TARGET_DIR/release/switchyard" serve --policy "$ROOT/benches/soak-policy.yaml" \
  --listen "127.0.0.1:$PORT" --drain-delay-secs 0 2>"$OUT/switchyard.log" &
SY_PID=$!
for _ in $(seq 300); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" && break; sleep 0.1; done
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" || { cat "$OUT/switchyard.log" >&2; exit 1; }
python3 "$ROOT/benches/soak.py" --url "http://127.0.0.1:$PORT" --pid "$SY_PID" \
  --seconds "${SOAK_SECONDS:-600}" --concurrency "${CONCURRENCY:-8}" --warmup "${WARMUP:-60}" \
  | tee "$OUT/report.json"
curl -fsS "http://127.0.0.1:$PORT/metrics" > "$OUT/metrics.txt"
echo "results: $OUT" >&2
