#!/usr/bin/env bash
# Instructions one proxied request costs Switchyard, counted by valgrind's callgrind: exact and
# repeatable for the same binary and inputs, whatever else the machine is doing, so two builds
# can be compared to a fraction of a percent where CPU time (benches/overhead_cpu.sh) is noisy.
# Each binary serves benches/overhead-policy.yaml against ../shared/bench's mock upstream; after
# 200 warm-up requests the counters are zeroed, REQUESTS requests are sent at concurrency 1, and
# the counters are dumped, for JSON and for SSE.
#   SWITCHYARD=path/to/binary [BASELINE=path/to/other] benches/overhead_instructions.sh
#   knobs: REQUESTS (2000), BENCH_DIR
# valgrind 3.19 does not decode AVX-512: build both binaries for a portable target, e.g.
#   RUSTFLAGS="-C target-cpu=x86-64-v3" CARGO_TARGET_DIR=/tmp/v3 cargo build --release
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
BENCH="$(cd "${BENCH_DIR:-../shared/bench}" && pwd)"
N="${REQUESTS:-2000}" PORT="${SWITCHYARD_BENCH_PORT:-18150}"
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
KEY="${BENCH_API_KEY:-sk-bench-local-4f1c2e9a7b3d5068}"
OUT="$(mktemp -d)"
command -v valgrind >/dev/null || { echo "needs valgrind (Debian package valgrind)" >&2; exit 1; }
"$BENCH/install.sh" --no-litellm >&2
cleanup() {
  [ -n "${VG_PID:-}" ] && kill "$VG_PID" 2>/dev/null && wait "$VG_PID" 2>/dev/null || true
  "$BENCH/mock-upstream/stop.sh" >/dev/null 2>&1 || true
  rm -rf "$OUT"
}
trap cleanup EXIT
"$BENCH/mock-upstream/start.sh" >&2

count() {  # NAME BINARY -> prints "NAME json IR" and "NAME sse IR" (instructions per request)
  local name=$1 bin=$2 mode body f ir
  valgrind --tool=callgrind --callgrind-out-file="$OUT/$name.out" "$bin" serve \
    --policy "$ROOT/benches/overhead-policy.yaml" --listen "127.0.0.1:$PORT" --threads 1 \
    2>"$OUT/$name.log" &
  VG_PID=$!
  for _ in $(seq 300); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" && break; sleep 0.2; done
  for mode in json sse; do
    body="$BENCH/body.json"; [ "$mode" = sse ] && body="$BENCH/body-stream.json"
    for n in 200 "$N"; do
      [ "$n" = "$N" ] && callgrind_control -z "$VG_PID" >/dev/null
      "$OHA" -n "$n" -c 1 --no-tui -m POST -H "Authorization: Bearer $KEY" \
        -H 'content-type: application/json' -D "$body" "http://127.0.0.1:$PORT/v1/chat/completions" >/dev/null
    done
    callgrind_control -d "$mode" "$VG_PID" >/dev/null
    f="$(ls -t "$OUT/$name.out".* | head -1)"
    ir="$(awk '/^(summary|totals):/ {print $2; exit}' "$f")"
    echo "$name $mode $((ir / N))"
  done
  kill "$VG_PID"; wait "$VG_PID" 2>/dev/null || true; VG_PID=
}

echo "| target | mode | instructions/request |"
echo "|---|---|---:|"
{ count switchyard "${SWITCHYARD:?set SWITCHYARD to a binary}"
  [ -n "${BASELINE:-}" ] && count baseline "$BASELINE"; } | while read -r name mode ir; do
  echo "| $name | $mode | $ir |"
done
