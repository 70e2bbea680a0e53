#!/usr/bin/env bash
# Overload and drain, measured (issue 9, item 8): ten times more streaming
# clients than llmpool has slots, for 5 minutes, against bench-0.5b; then
# SIGTERM under that load. Checks, and prints in a table:
#   - the server's RSS stays within 10 % of its value after the warm-up;
#   - every refused request gets 429 or 503 with Retry-After, p99 <= 50 ms;
#   - every accepted request completes;
#   - SIGTERM cuts no accepted stream within the grace, and the process exits.
# The client is bench/overload.py (Python standard library only).
#
#   bench/overload.sh                      5 minutes of load after a 30 s warm-up
#   bench/overload.sh --duration 60        a short run
#
# Exit status 1 when a check fails. Nothing is left running.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: bench/overload.sh [options]
  --duration S        seconds of load after the warm-up (default 300)
  --warmup S          seconds of load before the RSS reference is taken (default 30)
  --parallel P        llmpool `parallel` (slots) of the model (default 4)
  --clients N         concurrent clients (default 10 x parallel)
  --max-queue Q       the model's max_queue: waiting requests before 429 (default = parallel)
  --max-connections C server.max_connections; more get 503 (default 3/4 of the clients)
  --max-tokens T      tokens per answer, EOS ignored (default 16)
  --threads T         CPU threads of the model (default 2)
  --grace-ms MS       server.shutdown_grace_ms (default 60000)
  --backoff S         seconds a refused client waits before its next request (default: Retry-After)
  --model FILE        GGUF model (default models/bench-0.5b-q8_0.gguf, made if missing)
  --build-dir DIR     where llmpool is built (default build)
  --no-build          use build/llmpool as it is
  --out FILE          also write the JSON summary here
  --keep              keep the work folder (config, server log, JSON)
EOF
}

duration=300 warmup=30 parallel=4 clients="" max_queue="" max_connections="" max_tokens=16 threads=2
grace_ms=60000 backoff=-1 model=models/bench-0.5b-q8_0.gguf build=build do_build=1 out="" keep=0
while (($#)); do
  case $1 in
    --duration) duration=${2:?}; shift ;;
    --warmup) warmup=${2:?}; shift ;;
    --parallel) parallel=${2:?}; shift ;;
    --clients) clients=${2:?}; shift ;;
    --max-queue) max_queue=${2:?}; shift ;;
    --max-connections) max_connections=${2:?}; shift ;;
    --max-tokens) max_tokens=${2:?}; shift ;;
    --threads) threads=${2:?}; shift ;;
    --grace-ms) grace_ms=${2:?}; shift ;;
    --backoff) backoff=${2:?}; shift ;;
    --model) model=${2:?}; shift ;;
    --build-dir) build=${2:?}; shift ;;
    --no-build) do_build=0 ;;
    --out) out=${2:?}; shift ;;
    --keep) keep=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "overload.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
clients=${clients:-$((10 * parallel))}
max_queue=${max_queue:-$parallel}
max_connections=${max_connections:-$((clients * 3 / 4))}
log() { echo "[overload $(date -u +%H:%M:%S)] $*" >&2; }

llmpool=$build/llmpool
if ((do_build)); then
  log "building $llmpool"
  nice ninja -C "$build" llmpool >/dev/null
fi
[[ -x $llmpool ]] || { echo "overload.sh: missing $llmpool (build it, or drop --no-build)" >&2; exit 1; }
if [[ ! -f $model ]]; then
  [[ $model == models/bench-0.5b-q8_0.gguf ]] || { echo "overload.sh: no model $model" >&2; exit 1; }
  log "making $model"
  mkdir -p models
  "$llmpool" mkmodel --preset bench-0.5b --type q8_0 --out "$model" >/dev/null
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/llmpool-overload.XXXXXX")
server_pid=""
ok=0
watchdog_pid=""
finish() {
  [[ -z $watchdog_pid ]] || kill "$watchdog_pid" 2>/dev/null || true
  if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if ((ok && !keep)); then rm -rf "$work"; else log "work folder kept: $work"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

port=""
for _ in $(seq 200); do
  p=$((20000 + RANDOM % 40000))
  if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
done
[[ -n $port ]] || { echo "overload.sh: no free port" >&2; exit 1; }

cat >"$work/llmpool.yaml" <<EOF
log_level: info
server:
  host: 127.0.0.1
  port: $port
  io_threads: 2
  max_connections: $max_connections
  shutdown_grace_ms: $grace_ms
  config_poll_ms: 0
models:
  - name: bench
    type: local
    path: $(realpath "$model")
    context: 2048
    threads: $threads
    parallel: $parallel
    max_queue: $max_queue
    warm: true
EOF
"$llmpool" check-config "$work/llmpool.yaml" >/dev/null

log "serving $model: $parallel slots, max_queue $max_queue, max_connections $max_connections, grace $grace_ms ms"
limit=$((warmup + duration + grace_ms / 1000 + 180))
"$llmpool" serve --config "$work/llmpool.yaml" >"$work/server.log" 2>&1 &
server_pid=$!
# Never unbounded: the server is killed if it outlives the run by far.
(sleep "$limit"; kill -KILL "$server_pid" 2>/dev/null) >/dev/null 2>&1 &
watchdog_pid=$!
for _ in $(seq 600); do
  if curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 &&
     curl -sf "http://127.0.0.1:$port/api/capacity-status" | grep -q '"ready"'; then
    break
  fi
  kill -0 "$server_pid" 2>/dev/null || { cat "$work/server.log" >&2; echo "overload.sh: the server died" >&2; exit 1; }
  sleep 0.2
done

log "$clients clients for ${warmup}s warm-up + ${duration}s, then SIGTERM"
rc=0
python3 bench/overload.py --port "$port" --pid "$server_pid" --clients "$clients" --warmup "$warmup" \
  --duration "$duration" --max-tokens "$max_tokens" --grace-ms "$grace_ms" --backoff "$backoff" --out "$work/summary.json" || rc=$?
set +e
wait "$server_pid"
server_rc=$?
set -e
server_pid=""
echo "server exit status after SIGTERM: $server_rc"
grep -E "draining|drained|shutdown|still in flight|stopped" "$work/server.log" | sed 's/^/  server: /' || true
[[ -z $out ]] || cp "$work/summary.json" "$out"
if ((rc == 0 && server_rc == 0)); then ok=1; fi
exit $((rc != 0 || server_rc != 0))
