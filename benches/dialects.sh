#!/usr/bin/env bash
# What a dialect costs: the same question sent to one gateway three ways, in the same run,
# interleaved level by level: as an OpenAI chat completion to the mock OpenAI upstream of
# ../shared/bench (`chat`: forwarded with only the model replaced); as an Anthropic Messages
# request to that same upstream (`messages-translated`: translated into the internal request, and
# its answer translated back); and as a Messages request to a mock Anthropic upstream
# (`messages-passthrough`, benches/mock-anthropic: forwarded with only the model replaced, the
# answer and events passed back as they came). JSON and SSE. Loopback only.
#   benches/dialects.sh    # knobs: REQUESTS (5000), CONCURRENCY ("1 16"), BENCH_DIR (../shared/bench)
# Raw oha output under /tmp/bench-results/dialects-<time>.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/env.sh
BENCH="$(cd "${BENCH_DIR:-../shared/bench}" && pwd)"
REQUESTS="${REQUESTS:-5000}"; CONCURRENCY="${CONCURRENCY:-1 16}"
OUT="/tmp/bench-results/dialects-$(date +%Y%m%d-%H%M%S)"; mkdir -p "$OUT"
OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
"$BENCH/install.sh" --no-litellm >&2
cargo build --locked --release --bin switchyard >&2
PORT=18130
MOCK_ANTHROPIC=/tmp/bench-mock-anthropic
NGINX="$(command -v nginx || echo /usr/sbin/nginx)"
cleanup() {
  kill "${SY_PID:-}" 2>/dev/null || true
  "$BENCH/mock-upstream/stop.sh" >/dev/null 2>&1 || true
  [ -s "$MOCK_ANTHROPIC/nginx.pid" ] && kill "$(cat "$MOCK_ANTHROPIC/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT
"$BENCH/mock-upstream/start.sh"
mkdir -p "$MOCK_ANTHROPIC/tmp"
"$NGINX" -p "$MOCK_ANTHROPIC/" -e "$MOCK_ANTHROPIC/error.log" -c "$PWD/benches/mock-anthropic/nginx.conf"
for port in 18082 18083; do
  for _ in $(seq 50); do curl -fsS -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
done
"$CARGO_TARGET_DIR/release/switchyard" serve --policy benches/dialects-policy.yaml --listen "127.0.0.1:$PORT" --threads 1 2>"$OUT/switchyard.log" &
SY_PID=$!
for _ in $(seq 100); do curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" && break; sleep 0.1; done
KEY="sk-bench-local-4f1c2e9a7b3d5068"
# The harness's request, and the same in Messages form (system apart, max_tokens required).
python3 - "$BENCH" "$OUT" <<'PY'
import json, sys
bench, out = sys.argv[1], sys.argv[2]
for name, src in (("json", "body.json"), ("stream", "body-stream.json")):
    chat = json.load(open(f"{bench}/{src}"))
    json.dump(chat, open(f"{out}/chat-{name}.json", "w"))
    system = [m["content"] for m in chat["messages"] if m["role"] == "system"]
    msgs = {"model": chat["model"], "max_tokens": chat.get("max_tokens", 256), "system": "\n\n".join(system),
            "messages": [{"role": m["role"], "content": m["content"]} for m in chat["messages"] if m["role"] != "system"]}
    if chat.get("stream"):
        msgs["stream"] = True
    json.dump(msgs, open(f"{out}/messages-translated-{name}.json", "w"))
    msgs["model"] = "claude-stream" if chat.get("stream") else "claude"
    json.dump(msgs, open(f"{out}/messages-passthrough-{name}.json", "w"))
PY
# The pass-through path must be what is measured: its answer is the mock's own (a translation
# would name the model as the request did).
curl -fsS -H "Authorization: Bearer $KEY" -H 'content-type: application/json' -d @"$OUT/messages-passthrough-json.json" \
  "http://127.0.0.1:$PORT/v1/messages" | grep -q '"model":"claude-sonnet-4-5"' || { echo "the Messages request was not passed through" >&2; exit 1; }
echo "$("$CARGO_TARGET_DIR/release/switchyard" --version); CPU: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) cores; oha $("$OHA" --version | cut -d' ' -f2)" | tee "$OUT/info.txt"
# CPU time (user + system) of the gateway process per request, from /proc (clock ticks).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$SY_PID/stat"; }
TICK_US=$((1000000 / $(getconf CLK_TCK)))
printf '| mode | conc | dialect | rps | p50 ms | p99 ms | gateway CPU us/req |\n|---|---|---|---|---|---|---|\n' | tee "$OUT/table.md"
for mode in json stream; do
  for c in $CONCURRENCY; do
    # The two mocks on their own first (`direct-*`): what each upstream itself takes, so that
    # the gateway rows can be read as the time added over their own upstream.
    for dialect in direct-openai direct-anthropic chat messages-translated messages-passthrough; do
      url="http://127.0.0.1:$PORT/v1/messages"; body="$OUT/$dialect-$mode.json"
      case "$dialect" in
        chat) url="http://127.0.0.1:$PORT/v1/chat/completions" ;;
        direct-openai) url="http://127.0.0.1:$([ "$mode" = json ] && echo 18080 || echo 18081)/v1/chat/completions"; body="$OUT/chat-$mode.json" ;;
        direct-anthropic) url="http://127.0.0.1:$([ "$mode" = json ] && echo 18082 || echo 18083)/v1/messages"; body="$OUT/messages-passthrough-$mode.json" ;;
      esac
      "$OHA" --no-tui -n 200 -c "$c" -m POST -T application/json -H "Authorization: Bearer $KEY" -D "$body" "$url" >/dev/null
      before=$(cpu_ticks)
      "$OHA" --no-tui -n "$REQUESTS" -c "$c" -m POST -T application/json -H "Authorization: Bearer $KEY" -D "$body" \
        --output-format json -o "$OUT/$mode-c$c-$dialect.json" "$url" >/dev/null
      cpu_us=$(( ($(cpu_ticks) - before) * TICK_US / REQUESTS ))
      case "$dialect" in direct-*) cpu_us=-;; esac
      python3 - "$OUT/$mode-c$c-$dialect.json" "$mode" "$c" "$dialect" "$cpu_us" <<'PY' | tee -a "$OUT/table.md"
import json, sys
r = json.load(open(sys.argv[1])); s = r["summary"]; p = r["latencyPercentiles"]
ok = sum(v for k, v in r.get("statusCodeDistribution", {}).items() if k == "200")
assert ok == sum(r.get("statusCodeDistribution", {}).values()), r.get("statusCodeDistribution")
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {s['requestsPerSec']:.0f} | {p['p50']*1000:.3f} | {p['p99']*1000:.3f} | {sys.argv[5]} |")
PY
    done
  done
done
echo "results: $OUT" >&2
