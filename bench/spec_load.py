#!/usr/bin/env python3
"""Drives an OpenAI-compatible server with concurrent chat requests for
bench/speculative.sh: greedy or sampled, distinct prompts or echo-heavy ones
(the answer is asked to repeat a passage of the prompt, which prompt lookup
can draft). Prints one JSON line: requests, completion tokens, wall seconds,
aggregate tok/s, and the mean per-request tok/s."""
import argparse
import concurrent.futures
import http.client
import json
import random
import sys
import time
import urllib.parse


def words(seed, n):
    try:
        with open("/usr/share/dict/words", encoding="utf-8", errors="replace") as f:
            vocab = [w.strip() for w in f if w.strip().isalpha() and w.strip().islower()]
    except OSError:
        vocab = ["alpha", "beta", "gamma", "delta", "omega", "river", "stone", "light"]
    rng = random.Random(seed)
    return " ".join(rng.choice(vocab) for _ in range(n))


def prompt(kind, seed, i):
    if kind == "echo":
        passage = words(seed * 7919 + i, 120)
        return f"Here is a passage:\n\n{passage}\n\nRepeat the passage above word for word:\n\n{passage[:200]}"
    return f"Request {i}: " + words(seed * 7919 + i, 40)


def one(url, body, timeout):
    u = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    start = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    data = resp.read()
    elapsed = time.monotonic() - start
    conn.close()
    if resp.status != 200:
        raise RuntimeError(f"HTTP {resp.status}: {data[:200]!r}")
    usage = json.loads(data).get("usage", {})
    return usage.get("completion_tokens", 0), elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--model", default="bench")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--requests", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--kind", choices=["distinct", "echo"], default="distinct")
    ap.add_argument("--speculative", choices=["default", "true", "false"], default="default")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900)
    a = ap.parse_args()
    bodies = []
    for i in range(a.requests):
        b = {
            "model": a.model,
            "messages": [{"role": "user", "content": prompt(a.kind, a.seed, i)}],
            "max_tokens": a.max_tokens,
            "temperature": a.temperature,
            "top_p": a.top_p,
            "seed": a.seed * 1000 + i,
            "ignore_eos": True,
        }
        if a.speculative != "default":
            b["speculative"] = a.speculative == "true"
        bodies.append(b)
    start = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=a.clients) as pool:
        results = list(pool.map(lambda b: one(a.url, b, a.timeout), bodies))
    wall = time.monotonic() - start
    tokens = sum(t for t, _ in results)
    per = [t / e for t, e in results if e > 0]
    print(json.dumps({"requests": len(results), "tokens": tokens, "wall_s": round(wall, 3),
                      "tok_s": round(tokens / wall, 3) if wall > 0 else 0,
                      "per_request_tok_s": round(sum(per) / len(per), 3) if per else 0}))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # one line for the shell script's log
        print(json.dumps({"error": str(e)}))
        sys.exit(1)
