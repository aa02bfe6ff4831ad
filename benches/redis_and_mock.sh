# Sourced by the benchmark scripts that need state in Redis, after benches/env.sh with BENCH
# (../shared/bench) and OUT (the results folder) set: a local redis-server on a free port
# (REDIS_PORT) and the harness's mock upstream, both stopped on exit with every process whose
# pid the script adds to PIDS.
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
REDIS_PORT="$(free_port)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true; done
  "$BENCH/mock-upstream/stop.sh" >/dev/null 2>&1 || true
}
trap cleanup EXIT
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$OUT" >"$OUT/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
"$BENCH/mock-upstream/start.sh"
