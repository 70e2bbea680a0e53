#!/usr/bin/env bash
# Fabric benchmark (issue 11 item 8; docs/fabric.md): nats-server -js, an
# API node with queue models, and 1, 2 or 4 `llmpool worker`s serving a
# model of type openai on the fake engine (llmpool-fake-upstream: fixed time
# per answer, no inference, so the CPU is not what limits).
#   1. throughput: non-streamed requests through the API node at 8 per
#      worker in flight, for 1, 2 and 4 workers (4 slots each), alternating
#      rounds; target >= 0.9 x N x one worker's.
#   2. overhead: one client, the same fake answer direct (model type openai
#      on the API node) and through the fabric (queue model -> worker ->
#      the same fake), alternating rounds; p50 and p99 of the end-to-end time.
# Medians of --rounds rounds. Writes the "Fabric" section of bench/RESULTS.md.
#
#   bench/fabric.sh [--rounds 3] [--no-write] [--build-dir build]
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=3 build=build write=1 out=bench/RESULTS.md token_ms=25 tokens=8 per_worker=60
while (($#)); do
  case $1 in
    --rounds) rounds=${2:?}; shift ;;
    --build-dir) build=${2:?}; shift ;;
    --no-write) write=0 ;;
    --out) out=${2:?}; shift ;;
    --requests-per-worker) per_worker=${2:?}; shift ;;
    *) echo "usage: bench/fabric.sh [--rounds N] [--build-dir DIR] [--requests-per-worker N] [--no-write] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
bin=$build/llmpool fake=$build/bench/llmpool-fake-upstream loadgen=$build/bench/llmpool-loadgen
for b in "$bin" "$fake" "$loadgen"; do [[ -x $b ]] || { echo "fabric.sh: $b is not built" >&2; exit 1; }; done

work=$(mktemp -d /tmp/llmpool-fabric-bench-XXXXXX)
pids=()
worker_pids=()
log() { echo "fabric.sh: $*" >&2; }
cleanup() {
  local rc=$?
  for p in "${worker_pids[@]}" "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${worker_pids[@]}" "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start() { # logfile command... ; sets url
  local logf=$1
  shift
  : >"$logf"
  "$@" >"$logf" 2>"$logf.err" &
  pids+=($!)
  for _ in $(seq 300); do
    url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$logf" | head -n 1)
    [[ -n $url ]] && return 0
    sleep 0.1
  done
  echo "fabric.sh: $* did not start" >&2
  tail -n 20 "$logf.err" >&2
  return 1
}

nats_port=$(free_port)
nats-server -js -a 127.0.0.1 -p "$nats_port" -sd "$work/nats" >"$work/nats.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.1; done
nats_url="nats://127.0.0.1:$nats_port"

start "$work/fake.out" "$fake" --port 0 --model echo --token-ms "$token_ms" --tokens "$tokens" --io-threads 2
fake_url=$url
start "$work/quick.out" "$fake" --port 0 --model quick --token-ms 0 --tokens "$tokens" --io-threads 1
quick_url=$url

cat >"$work/worker.yaml" <<EOF
log_level: warn
models:
  - {name: echo, type: openai, base_url: $fake_url/v1, max_concurrent: 4}
  - {name: quick, type: openai, base_url: $quick_url/v1, max_concurrent: 4}
fabric: {nats_url: "$nats_url", heartbeat: 500ms}
EOF
cat >"$work/api.yaml" <<EOF
log_level: warn
server: {host: 127.0.0.1, port: 0, io_threads: 2}
routing: {admission: {max_active: 0}}
models:
  - {name: fabric-echo, type: queue, upstream_model: echo, max_queue: 4096}
  - {name: fabric-quick, type: queue, upstream_model: quick, max_queue: 4096}
  - {name: direct-quick, type: openai, base_url: $quick_url/v1, max_queue: 4096}
fabric: {nats_url: "$nats_url", heartbeat: 500ms}
EOF
start "$work/api.out" "$bin" serve --config "$work/api.yaml"
api=$url

live_workers() {
  curl -s "$api/api/workers" | python3 -c 'import json,sys; print(sum(1 for w in json.load(sys.stdin)["data"] if not w["silent"]))'
}
set_workers() { # N
  local n=$1
  for p in "${worker_pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${worker_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  worker_pids=()
  for i in $(seq "$n"); do
    "$bin" worker --config "$work/worker.yaml" --id "bench-$i" >>"$work/worker-$i.log" 2>&1 &
    worker_pids+=($!)
  done
  for _ in $(seq 200); do [[ $(live_workers) == "$n" ]] && return 0; sleep 0.1; done
  echo "fabric.sh: $n workers did not come up" >&2
  return 1
}
field() { python3 -c "import json,sys; d=json.load(open('$1'))['results']; print(eval('d$2'))"; }
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

declare -A rps=()
for r in $(seq "$rounds"); do
  for n in 1 2 4; do
    set_workers "$n"
    c=$((8 * n)) total=$((per_worker * n))
    "$loadgen" --url "$api" --model fabric-echo -c "$c" -n "$total" --warmup "$c" -t "$tokens" --no-stream -q \
      --json "$work/tp-$n-$r.json" >/dev/null
    rps[$n]="${rps[$n]:-} $(field "$work/tp-$n-$r.json" '["requests_per_s"]')"
    log "round $r, $n worker(s): $(field "$work/tp-$n-$r.json" '["requests_per_s"]') req/s, failed $(field "$work/tp-$n-$r.json" '["requests_failed"]')"
  done
done

set_workers 1
declare -A p50=() p99=()
for r in $(seq "$rounds"); do
  for m in direct-quick fabric-quick; do
    "$loadgen" --url "$api" --model "$m" -c 1 -n 200 --warmup 10 -t "$tokens" --no-stream -q --json "$work/ov-$m-$r.json" >/dev/null
    p50[$m]="${p50[$m]:-} $(field "$work/ov-$m-$r.json" '["e2e_ms"]["p50"]')"
    p99[$m]="${p99[$m]:-} $(field "$work/ov-$m-$r.json" '["e2e_ms"]["p99"]')"
  done
done

one=$(median ${rps[1]})
section=$(python3 - "$one" "$(median ${rps[2]})" "$(median ${rps[4]})" \
  "$(median ${p50[direct-quick]})" "$(median ${p99[direct-quick]})" "$(median ${p50[fabric-quick]})" "$(median ${p99[fabric-quick]})" \
  "$rounds" "$token_ms" "$tokens" "$per_worker" <<'PY'
import sys
one, two, four, dp50, dp99, fp50, fp99 = map(float, sys.argv[1:8])
rounds, token_ms, tokens, per_worker = sys.argv[8:12]
out = []
out.append("## Fabric\n")
out.append("`bench/fabric.sh --rounds %s`: nats-server -js, one API node, workers of the fake engine "
           "(llmpool-fake-upstream, %s ms per token x %s tokens, 4 slots per worker), non-streamed requests "
           "through a queue model; medians of %s alternating rounds. The machine is shared with other agents "
           "(2 cores): figures are noisy, ratios are what carries over.\n" % (rounds, token_ms, tokens, rounds))
out.append("| workers | req/s | x one worker | target (0.9 x N) |")
out.append("| --- | --- | --- | --- |")
for n, v in ((1, one), (2, two), (4, four)):
    out.append("| %d | %.1f | %.2f | %.1f %s |" % (n, v, v / one, 0.9 * n, "met" if v / one >= 0.9 * n else "NOT met"))
out.append("")
out.append("Overhead, one client, %s tokens answered at once by the fake (200 requests per round):\n" % tokens)
out.append("| path | E2E p50 ms | E2E p99 ms |")
out.append("| --- | --- | --- |")
out.append("| direct (API node -> upstream) | %.2f | %.2f |" % (dp50, dp99))
out.append("| fabric (API node -> JetStream -> worker -> upstream) | %.2f | %.2f |" % (fp50, fp99))
out.append("| fabric overhead | %+.2f | %+.2f |" % (fp50 - dp50, fp99 - dp99))
out.append("")
out.append("The direct path's p50 is the floor both paths share on this machine; the fabric's own cost is "
           "the difference.")
print("\n".join(out))
PY
)
echo "$section"
if ((write)); then
  python3 - "$out" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], sys.argv[2].rstrip() + "\n\n"
text = open(path).read()
m = re.search(r"^## Fabric\n.*?(?=^## |\Z)", text, flags=re.S | re.M)
if m:
    text = text[:m.start()] + section + text[m.end():]
else:
    idx = text.find("## Notes")
    text = text[:idx] + section + text[idx:] if idx >= 0 else text.rstrip() + "\n\n" + section
open(path, "w").write(text)
PY
  log "wrote the Fabric section of $out"
fi
