#!/usr/bin/env python3
"""Cancellation latency of an llmpool server under load.

Sends streamed chat requests and hangs up on each of them at a random moment
(while its prompt is being prefilled or while it streams), one at a time,
then reads how long llmpool took from each disconnect to freeing the
request's sequences: the `llmpool_cancel_latency_seconds` histogram of
/metrics, before and after. Run it while another load (llmpool-loadgen)
keeps the engine busy; see bench/README.md.

Prints one JSON object: the number of cancellations counted and the
histogram's bounds for p50 / p90 / p99 ("p99_le": the bucket bound that at
least 99 % of the cancellations fall under).
"""
import argparse
import http.client
import json
import random
import re
import sys
import time
import urllib.parse


def scrape(host, port, model):
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    conn.close()
    buckets = {}
    count = 0
    for line in text.splitlines():
        m = re.match(r'llmpool_cancel_latency_seconds_bucket\{(.*)\} (\S+)', line)
        if m and f'model="{model}"' in m.group(1):
            le = re.search(r'le="([^"]+)"', m.group(1)).group(1)
            buckets[float("inf") if le == "+Inf" else float(le)] = float(m.group(2))
        m = re.match(r'llmpool_cancel_latency_seconds_count\{(.*)\} (\S+)', line)
        if m and f'model="{model}"' in m.group(1):
            count = float(m.group(2))
    return buckets, count


def quantile_bound(delta, total, q):
    for le in sorted(delta):
        if total and delta[le] >= q * total:
            return le
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default="bench")
    ap.add_argument("-n", "--requests", type=int, default=40)
    ap.add_argument("--prompt-words", type=int, default=250, help="words in each prompt (about 6 tokens each: long, so prefill takes a while; keep it inside the context)")
    ap.add_argument("--max-delay-ms", type=int, default=3000, help="hang up after 0..this many ms")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    host, port = u.hostname, u.port or 80
    rng = random.Random(args.seed)

    before, count0 = scrape(host, port, args.model)
    for i in range(args.requests):
        words = " ".join(f"w{rng.randrange(100000)}" for _ in range(args.prompt_words))
        body = json.dumps({"model": args.model, "stream": True, "max_tokens": 256, "ignore_eos": True,
                           "messages": [{"role": "user", "content": f"{i} {words}"}]})
        conn = http.client.HTTPConnection(host, port, timeout=60)
        conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        time.sleep(rng.uniform(0, args.max_delay_ms / 1000.0))
        conn.sock.close()  # hang up, whatever the server was doing
        conn.close()
    time.sleep(3.0)  # let the last one be counted
    after, count1 = scrape(host, port, args.model)
    delta = {le: after.get(le, 0) - before.get(le, 0) for le in after}
    total = count1 - count0
    out = {"cancellations": int(total), "requests": args.requests,
           "p50_le_s": quantile_bound(delta, total, 0.5), "p90_le_s": quantile_bound(delta, total, 0.9),
           "p99_le_s": quantile_bound(delta, total, 0.99),
           "buckets": {("+Inf" if le == float("inf") else str(le)): int(delta[le]) for le in sorted(delta)}}
    print(json.dumps(out))
    return 0 if total > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
