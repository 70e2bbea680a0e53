#!/usr/bin/env python3
"""What two huge prompts in flight cost everyone else on an llmpool server.

Against a running `llmpool serve`: first measures, with nothing else going
on, the latency of GET /health and the gaps between the tokens of a short
streamed chat; then sends two chat requests whose user message is
--prompt-mb MB each (they go over any context and end in 400
context_length_exceeded, after the server has formatted and tokenized them)
and measures the same while they are in flight. Before the engine prepared
requests on its own thread, formatting and tokenizing ran on the HTTP I/O
threads, so /health and every other stream waited behind them.

Prints one JSON object: per phase ("idle", "loaded") the /health latency and
the stream's inter-token gaps in ms (median, p90, max, count), and how long
the huge requests took.
"""
import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse


def summary(values):
    if not values:
        return {"count": 0}
    v = sorted(values)
    return {
        "count": len(v),
        "median_ms": round(statistics.median(v), 2),
        "p90_ms": round(v[min(len(v) - 1, int(0.9 * len(v)))], 2),
        "max_ms": round(v[-1], 2),
    }


def health_latencies(host, port, stop, out):
    """GET /health on one kept-alive connection until `stop` is set."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    while not stop.is_set():
        t0 = time.perf_counter()
        conn.request("GET", "/health")
        conn.getresponse().read()
        out.append((time.perf_counter() - t0) * 1000)
        time.sleep(0.01)
    conn.close()


def stream_gaps(host, port, model, max_tokens, out):
    """One streamed chat; the gaps between its content chunks, in ms."""
    body = json.dumps({
        "model": model,
        "stream": True,
        "max_tokens": max_tokens,
        "ignore_eos": True,
        "temperature": 0,
        "messages": [{"role": "user", "content": "Say something short."}],
    })
    conn = http.client.HTTPConnection(host, port, timeout=120)
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"stream: HTTP {resp.status}: {resp.read()[:200]!r}")
    last = None
    for line in resp:
        if not line.startswith(b"data: ") or line.startswith(b"data: [DONE]"):
            continue
        now = time.perf_counter()
        if last is not None:
            out.append((now - last) * 1000)
        last = now
    conn.close()


def huge_request(host, port, model, size_mb, out):
    # Many short words: a realistic tokenizer load (one giant word is not).
    words = "the quick brown fox jumps over a lazy dog "
    content = words * (size_mb * 1024 * 1024 // len(words))
    body = json.dumps({"model": model, "max_tokens": 1, "messages": [{"role": "user", "content": content}]})
    conn = http.client.HTTPConnection(host, port, timeout=600)
    t0 = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read()
    out.append({"status": resp.status, "seconds": round(time.perf_counter() - t0, 2),
                "body": text[:120].decode(errors="replace")})
    conn.close()


def phase(host, port, model, args, huge):
    health, gaps, results = [], [], []
    stop = threading.Event()
    threads = [threading.Thread(target=health_latencies, args=(host, port, stop, health))]
    if huge:
        threads += [threading.Thread(target=huge_request, args=(host, port, model, args.prompt_mb, results))
                    for _ in range(2)]
    for t in threads:
        t.start()
    if huge:
        time.sleep(args.lead_s)  # the bodies are uploaded and being prepared
    # Short streams back to back while the huge ones are in flight (or for a
    # fixed time when idle).
    t_end = time.perf_counter() + args.idle_s
    dropped = 0
    while True:
        try:
            stream_gaps(host, port, model, args.max_tokens, gaps)
        except (http.client.RemoteDisconnected, ConnectionResetError):
            dropped += 1  # a connection closed without an answer (issue 9, item 4): try again
        if huge and all(not t.is_alive() for t in threads[1:]):
            break
        if not huge and time.perf_counter() >= t_end:
            break
    stop.set()
    for t in threads:
        t.join()
    out = {"health": summary(health), "stream_gaps": summary(gaps), "streams_dropped": dropped}
    if huge:
        out["huge_requests"] = results
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--prompt-mb", type=int, default=7, help="size of each huge prompt (the server's max body is 8 MiB)")
    ap.add_argument("--max-tokens", type=int, default=16, help="tokens of each short stream")
    ap.add_argument("--idle-s", type=float, default=3.0, help="how long to measure with no huge prompts")
    ap.add_argument("--lead-s", type=float, default=0.3, help="head start of the huge prompts")
    args = ap.parse_args()
    u = urllib.parse.urlparse(args.url)
    host, port = u.hostname, u.port or 80
    report = {"idle": phase(host, port, args.model, args, False),
              "loaded": phase(host, port, args.model, args, True)}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
