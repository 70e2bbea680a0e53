#!/usr/bin/env python3
"""The client side of bench/overload.sh: many more streaming clients than the
server has slots, for a set time, then SIGTERM under that load.

Each client sends one streamed chat request per fresh connection, over and
over. For every request it records when the status line came and what it
was; a refusal (429, 503) must carry Retry-After; an accepted stream (200)
must end with its terminating chunk. After `--duration` seconds the server
process gets SIGTERM while the clients keep going: streams accepted before
must still finish (within the grace), new connections are refused, new
requests get 503. The server's RSS is sampled from /proc throughout.

Writes a JSON summary (--out) and prints the table. Exit status 1 when a
check fails. Only the Python standard library is used.
"""
import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import time


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def pct(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


class Stats:
    def __init__(self):
        self.accepted = 0           # 200 received
        self.completed = 0          # ... and ended with the last chunk
        self.cut = []               # accepted, ended without the last chunk: (t_accept, t_end, reason)
        self.refused = []           # (status, latency_s, has_retry_after, after_sigterm)
        self.other = {}             # other statuses / errors -> count
        self.connect_refused_after_term = 0
        self.accepted_before_term = 0
        self.completed_before_term_accepts = 0


async def one_request(host, port, body, st, t0, term):
    t_send = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10)
    except (ConnectionRefusedError, OSError, asyncio.TimeoutError) as e:
        if term["at"] is not None:
            st.connect_refused_after_term += 1
        else:
            key = "connect: " + type(e).__name__
            st.other[key] = st.other.get(key, 0) + 1
        return "connect"
    try:
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                f"Connection: close\r\n\r\n").encode()
        writer.write(head + body)
        await writer.drain()
        t_send = time.monotonic()
        status_line = await asyncio.wait_for(reader.readline(), 120)
        t_status = time.monotonic()
        if not status_line:
            late = term["at"] is not None and time.monotonic() - t0 > term["at"] + term["grace"]
            key = "closed without a response" + (" (after the grace)" if late else "")
            st.other[key] = st.other.get(key, 0) + 1
            return "closed"
        status = int(status_line.split()[1])
        headers = {}
        while True:
            line = await asyncio.wait_for(reader.readline(), 120)
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            headers[k.strip().lower()] = v.strip()
        after_term = term["at"] is not None
        if status in (429, 503):
            st.refused.append((status, t_status - t_send, "retry-after" in headers, after_term))
            try:
                term["retry_after"] = float(headers.get("retry-after", "1"))
            except ValueError:
                pass
            return "refused"
        if status != 200:
            st.other[str(status)] = st.other.get(str(status), 0) + 1
            return "other"
        st.accepted += 1
        if not after_term:
            st.accepted_before_term += 1
        # Chunked SSE: read to the terminating zero-size chunk.
        saw_done = False
        while True:
            size_line = await asyncio.wait_for(reader.readline(), 120)
            if not size_line:
                st.cut.append((t_status - t0, time.monotonic() - t0, "eof"))
                return "cut"
            size = int(size_line.strip() or b"0", 16)
            data = await asyncio.wait_for(reader.readexactly(size + 2), 120)
            if b"[DONE]" in data:
                saw_done = True
            if size == 0:
                break
        if saw_done:
            st.completed += 1
            if not after_term:
                st.completed_before_term_accepts += 1
        else:
            st.cut.append((t_status - t0, time.monotonic() - t0, "no [DONE]"))
        return "ok"
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError, asyncio.TimeoutError, ValueError) as e:
        key = "error: " + type(e).__name__ + (" (after SIGTERM)" if term["at"] is not None else "")
        st.other[key] = st.other.get(key, 0) + 1
        return "error"
    finally:
        writer.close()


async def client(i, args, st, t0, term, stop_at):
    n = 0
    while time.monotonic() < stop_at:
        body = json.dumps({
            "model": args.model, "stream": True, "max_tokens": args.max_tokens, "ignore_eos": True,
            "temperature": 0.8, "top_p": 0.95,
            "messages": [{"role": "user", "content": f"Client {i} request {n}: tell a story about overload."}],
        }).encode()
        n += 1
        outcome = await one_request(args.host, args.port, body, st, t0, term)
        if outcome == "refused":
            await asyncio.sleep(args.backoff if args.backoff >= 0 else term.get("retry_after", 1.0))
        elif outcome in ("connect", "closed", "error", "other"):
            await asyncio.sleep(0.05)
        if term["at"] is not None and outcome == "connect":
            return  # the listener is closed: nothing more to learn


async def main_async(args):
    st = Stats()
    t0 = time.monotonic()
    term = {"at": None, "exit": None, "grace": args.grace_ms / 1000.0}
    stop_at = t0 + args.warmup + args.duration + args.grace_ms / 1000.0 + 30
    rss = []  # (t, kib)

    async def sample_rss():
        while True:
            r = rss_kib(args.pid)
            if r is None:
                return
            rss.append((time.monotonic() - t0, r))
            await asyncio.sleep(args.rss_every)

    async def terminate():
        await asyncio.sleep(args.warmup + args.duration)
        term["at"] = time.monotonic() - t0
        os.kill(args.pid, signal.SIGTERM)
        while rss_kib(args.pid) is not None:
            await asyncio.sleep(0.05)
        term["exit"] = time.monotonic() - t0

    sampler = asyncio.create_task(sample_rss())
    killer = asyncio.create_task(terminate())
    clients = [asyncio.create_task(client(i, args, st, t0, term, stop_at)) for i in range(args.clients)]
    await killer
    # The server is gone: clients end with a refused connection.
    await asyncio.wait_for(asyncio.gather(*clients, return_exceptions=True), 60)
    sampler.cancel()
    return st, rss, term


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="the server process (RSS, SIGTERM)")
    ap.add_argument("--model", default="bench")
    ap.add_argument("--clients", type=int, default=40)
    ap.add_argument("--warmup", type=float, default=30, help="seconds before the RSS reference")
    ap.add_argument("--duration", type=float, default=300, help="seconds of load after the warm-up")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--grace-ms", type=int, default=30000, help="the server's shutdown_grace_ms")
    ap.add_argument("--backoff", type=float, default=-1,
                    help="seconds a refused client waits; < 0: what Retry-After says (the default)")
    ap.add_argument("--rss-every", type=float, default=2.0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()

    st, rss, term = asyncio.run(main_async(args))

    warm = [r for t, r in rss if t >= args.warmup and (term["at"] is None or t < term["at"])]
    rss_ref = warm[0] if warm else None
    rss_max = max(warm) if warm else None
    rss_last = warm[-1] if warm else None
    drift = (rss_max - rss_ref) / rss_ref * 100 if rss_ref else float("nan")
    lat_ms = [r[1] * 1000 for r in st.refused]
    no_ra = sum(1 for r in st.refused if not r[2])
    by_status = {}
    for r in st.refused:
        by_status[r[0]] = by_status.get(r[0], 0) + 1
    grace_s = args.grace_ms / 1000.0
    cut_in_grace = [c for c in st.cut if term["at"] is None or c[1] <= term["at"] + grace_s]
    exit_after = (term["exit"] - term["at"]) if term["exit"] is not None else float("nan")
    checks = {
        "rss within 10% of warm-up": rss_ref is not None and drift <= 10.0,
        "refusals carry Retry-After": no_ra == 0,
        "refusal p99 <= 50 ms": bool(lat_ms) and pct(lat_ms, 99) <= 50.0,
        "every accepted stream completed": not cut_in_grace and st.completed + len(st.cut) == st.accepted,
        "no close without a response": "closed without a response" not in st.other,
        "exited within the grace": exit_after <= grace_s + 5,
    }
    rows = [
        ("clients", str(args.clients)),
        ("load (s)", f"{args.warmup:.0f} warm-up + {args.duration:.0f}"),
        ("accepted (200)", str(st.accepted)),
        ("completed", str(st.completed)),
        ("cut streams (within / after the grace)", f"{len(cut_in_grace)} / {len(st.cut) - len(cut_in_grace)}"),
        ("refused", ", ".join(f"{k}: {v}" for k, v in sorted(by_status.items())) or "0"),
        ("refusal latency p50 / p99 / max (ms)",
         f"{pct(lat_ms, 50):.1f} / {pct(lat_ms, 99):.1f} / {max(lat_ms) if lat_ms else float('nan'):.1f}"),
        ("refusals without Retry-After", str(no_ra)),
        ("other outcomes", ", ".join(f"{k}: {v}" for k, v in sorted(st.other.items())) or "none"),
        ("RSS after warm-up / max / last (MiB)",
         f"{rss_ref / 1024:.1f} / {rss_max / 1024:.1f} / {rss_last / 1024:.1f}" if rss_ref else "n/a"),
        ("RSS growth over warm-up value", f"{drift:.1f} %"),
        ("SIGTERM at (s)", f"{term['at']:.1f}" if term["at"] is not None else "n/a"),
        ("accepted before SIGTERM / completed", f"{st.accepted_before_term} / {st.completed_before_term_accepts}"),
        ("connections refused after SIGTERM", str(st.connect_refused_after_term)),
        ("exit after SIGTERM (s)", f"{exit_after:.2f} (grace {grace_s:.0f})"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |")
    print(f"| {'-' * width} | ----- |")
    for k, v in rows:
        print(f"| {k.ljust(width)} | {v} |")
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"rows": dict(rows), "checks": checks, "rss": rss, "cut": st.cut,
                       "refused_without_retry_after": [r for r in st.refused if not r[2]],
                       "refusal_latency_ms": sorted(lat_ms)}, f, indent=1)
    sys.exit(0 if all(checks.values()) else 1)


if __name__ == "__main__":
    main()
