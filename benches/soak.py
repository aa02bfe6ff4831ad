#!/usr/bin/env python3
"""Soak driver: mixed traffic against a running gateway for a bounded time, then a report.

Each of CONCURRENCY client threads loops over a weighted mix: cloud JSON, cloud SSE, on-box JSON,
on-box SSE, and streams the client abandons after the first event (cloud and on-box). It counts
outcomes and samples the gateway's resident memory (VmRSS of --pid) every 5 s.

An error is any answer that is not a 200 with a whole body (a stream read to the end must end
with `data: [DONE]`); abandoned streams only need their 200 and first event.
"""
import argparse
import http.client
import json
import random
import threading
import time

MIX = [  # (name, weight, model, stream, abandon)
    ("cloud-json", 35, "gpt-4o", False, False),
    ("cloud-sse", 30, "gpt-4o-stream", True, False),
    ("cloud-sse-abandoned", 5, "gpt-4o-stream", True, True),
    ("local-json", 12, "local", False, False),
    ("local-sse", 12, "local", True, False),
    ("local-sse-abandoned", 6, "local", True, True),
]
PROMPTS = ["Say hello.", "Name three colours.", "What is 2 + 2?", "Write one short sentence about rain."]


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def one(host, port, kind, rng):
    name, _, model, stream, abandon = kind
    body = {"model": model, "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
            "max_tokens": 16 if model == "local" else 256, "stream": stream}
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"content-type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            resp.read()
            return f"status {resp.status}"
        if not stream:
            data = json.loads(resp.read())
            return None if data.get("choices") else "no choices"
        if abandon:
            first = resp.readline()
            return None if first.startswith(b"data: ") else "no first event"
        text = resp.read()
        return None if text.rstrip().endswith(b"data: [DONE]") else "stream did not finish"
    except Exception as e:  # noqa: BLE001 - every failure is counted, by type
        return type(e).__name__
    finally:
        conn.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", default="http://127.0.0.1:18110")
    ap.add_argument("--pid", type=int, required=True, help="the gateway's pid (for its RSS)")
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=float, default=60, help="seconds before the start RSS is taken")
    args = ap.parse_args()
    host, port = args.url.split("//")[1].split(":")
    port = int(port)
    weights = [k[1] for k in MIX]
    counts = {k[0]: {"ok": 0, "errors": {}} for k in MIX}
    lock = threading.Lock()
    t0 = time.monotonic()
    end = t0 + args.seconds

    def worker(seed):
        rng = random.Random(seed)
        while time.monotonic() < end:
            kind = rng.choices(MIX, weights)[0]
            err = one(host, port, kind, rng)
            with lock:
                c = counts[kind[0]]
                if err is None:
                    c["ok"] += 1
                else:
                    c["errors"][err] = c["errors"].get(err, 0) + 1

    samples = [(0.0, rss_kib(args.pid))]
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.concurrency)]
    for t in threads:
        t.start()
    while time.monotonic() < end:
        time.sleep(5)
        samples.append((time.monotonic() - t0, rss_kib(args.pid)))
    for t in threads:
        t.join(timeout=90)
    samples.append((time.monotonic() - t0, rss_kib(args.pid)))
    total = sum(c["ok"] + sum(c["errors"].values()) for c in counts.values())
    errors = sum(sum(c["errors"].values()) for c in counts.values())
    warm = [r for t, r in samples if t >= args.warmup]
    start_rss = warm[0] if warm else samples[0][1]
    report = {
        "seconds": round(time.monotonic() - t0, 1),
        "concurrency": args.concurrency,
        "requests": total,
        "errors": errors,
        "error_rate": errors / total if total else 0.0,
        "rss_mib_at_start": round(samples[0][1] / 1024, 1),
        "rss_mib_after_warmup": round(start_rss / 1024, 1),
        "rss_mib_at_end": round(samples[-1][1] / 1024, 1),
        "rss_mib_max": round(max(r for _, r in samples) / 1024, 1),
        "growth_after_warmup_mib": round((samples[-1][1] - start_rss) / 1024, 1),
        "by_kind": counts,
        "rss_kib_samples": samples,
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
