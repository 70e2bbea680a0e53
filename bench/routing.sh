#!/usr/bin/env bash
# Routing load test: two fake upstreams of the same speed are the two members
# of llmpool's route group `auto`; llmpool-loadgen drives `model: "auto"` at a
# fixed concurrency; part-way through, one upstream turns slow (through its
# /control endpoint). Reports the share of traffic each upstream answered
# before and after (acceptance: at least 10 points move away from the slow
# one) and the router's own time per request from the decision log
# (`router_us`; target p99 under 100 µs). Writes the "Routing" section of
# bench/RESULTS.md (see bench/README.md).
#
#   bench/routing.sh              about 90 s of load, little CPU (no inference)
#
# Nothing is left running: the servers are stopped on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: bench/routing.sh [options]
  --concurrency C     clients (default 4)
  --warmup-s S        seconds of load before measuring, both upstreams fast (default 10)
  --duration S        measured seconds (default 60)
  --switch-at S       seconds into the measured phase when upstream up-a turns slow (default 20)
  --window S          seconds per traffic window (default 5)
  --ttft-ms MS        both upstreams: time to first token (default 20)
  --token-ms MS       both upstreams: time between tokens (default 10)
  --tokens N          tokens per answer (default 16)
  --slow-ttft-ms MS   up-a's time to first token once slow (default 600)
  --slow-p95-ms MS    llmpool routing.instances.slow_p95_ms (default 300)
  --max-sample-age-ms MS  routing.instances.max_sample_age_ms (default 10000)
  --build-dir DIR     where llmpool is built (default build)
  --no-build          use the binaries as they are
  --out FILE          the results file whose "Routing" section is (re)written (default bench/RESULTS.md)
  --no-write          print the section, write no file
  --keep              keep the work folder (config, logs, decision log, loadgen JSON)
  --quiet-wait S      before the warm-up, wait up to S seconds for the machine to be quiet
                      (CPU pressure avg10 under 5%); default 0, no wait
EOF
}

orig_args=("$@")
concurrency=4 warmup_s=10 duration=60 switch_at=20 window=5 ttft_ms=20 token_ms=10 tokens=16
slow_ttft_ms=600 slow_p95_ms=300 max_sample_age_ms=10000 build=build do_build=1 out=bench/RESULTS.md
write=1 keep=0 quiet_wait=0
while (($#)); do
  case $1 in
    --concurrency) concurrency=${2:?}; shift ;;
    --warmup-s) warmup_s=${2:?}; shift ;;
    --duration) duration=${2:?}; shift ;;
    --switch-at) switch_at=${2:?}; shift ;;
    --window) window=${2:?}; shift ;;
    --ttft-ms) ttft_ms=${2:?}; shift ;;
    --token-ms) token_ms=${2:?}; shift ;;
    --tokens) tokens=${2:?}; shift ;;
    --slow-ttft-ms) slow_ttft_ms=${2:?}; shift ;;
    --slow-p95-ms) slow_p95_ms=${2:?}; shift ;;
    --max-sample-age-ms) max_sample_age_ms=${2:?}; shift ;;
    --build-dir) build=${2:?}; shift ;;
    --no-build) do_build=0 ;;
    --out) out=${2:?}; shift ;;
    --no-write) write=0 ;;
    --keep) keep=1 ;;
    --quiet-wait) quiet_wait=${2:?}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "routing.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for v in concurrency duration switch_at window tokens slow_ttft_ms slow_p95_ms max_sample_age_ms; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "routing.sh: --${v//_/-} must be a positive integer" >&2; exit 2; }
done
for v in warmup_s ttft_ms token_ms quiet_wait; do
  [[ ${!v} =~ ^[0-9]+$ ]] || { echo "routing.sh: --${v//_/-} must be a whole number" >&2; exit 2; }
done
((switch_at < duration)) || { echo "routing.sh: --switch-at must come before the end of --duration" >&2; exit 2; }

log() { echo "routing.sh: $*" >&2; }
source bench/quiet.sh

# ---- binaries -----------------------------------------------------------------------
if ((do_build)); then
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLAMA_CPP_DIR="$(scripts/llama-cpp | tail -n 1)" >/dev/null
  fi
  log "building in $build"
  cmake --build "$build" --target llmpool llmpool-fake-upstream llmpool-loadgen llmpool-routing-report >/dev/null
fi
llmpool=$build/llmpool
fake=$build/bench/llmpool-fake-upstream
loadgen=$build/bench/llmpool-loadgen
report=$build/bench/llmpool-routing-report
for b in "$llmpool" "$fake" "$loadgen" "$report"; do
  [[ -x $b ]] || { echo "routing.sh: missing $b (build it, or drop --no-build)" >&2; exit 1; }
done

source bench/lib.sh  # the cd above made the repository root the working folder
bench_work routing

# Starts a server in the background; waits for its "listening on URL" line.
# Sets `url`.
start() { # name logfile command...
  local name=$1 logf=$2
  shift 2
  : >"$logf" # exists before the poll below reads it, whenever the background job opens it
  "$@" >"$logf" 2>"$logf.err" &
  pids+=($!)
  local pid=$!
  for _ in $(seq 300); do
    url=$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$logf" | head -n 1)
    [[ -n $url ]] && return 0
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "routing.sh: $name exited while starting:" >&2
      tail -n 20 "$logf.err" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "routing.sh: $name did not start in 30 s" >&2
  return 1
}

# ---- two upstreams of the same speed, llmpool in front ---------------------------------
declare -A up_url=()
for name in up-a up-b; do
  start "$name" "$work/$name.out" "$fake" --port 0 --model fake --name "$name" --ttft-ms "$ttft_ms" \
    --token-ms "$token_ms" --tokens "$tokens" --text "Routing benchmark answer from the fake upstream."
  up_url[$name]=$url
  log "$name on $url"
done

config=$work/llmpool.yaml
cat >"$config" <<EOF
log_level: warn
server:
  host: 127.0.0.1
  port: 0
  io_threads: 2
models:
  - name: up-a
    type: openai
    base_url: ${up_url[up-a]}/v1
    upstream_model: fake
    context: 4096
  - name: up-b
    type: openai
    base_url: ${up_url[up-b]}/v1
    upstream_model: fake
    context: 4096
routing:
  instances: {slow_p95_ms: $slow_p95_ms, min_samples: 5, recover_ratio: 0.8, max_sample_age_ms: $max_sample_age_ms}
  breaker: {failure_threshold: 5, cooldown_ms: 10000}
  groups:
    - name: auto
      models: [up-a, up-b]
      strategy: fastest
      hedge: {max_parallel: 1, default_delay_ms: 0}
  decision_log: $work/decisions.jsonl
EOF
start llmpool "$work/llmpool.out" "$llmpool" serve --config "$config" --host 127.0.0.1 --port 0
llmpool_url=$url
llmpool_pid=${pids[-1]}
log "llmpool on $llmpool_url"

# ---- load -----------------------------------------------------------------------------------
wait_quiet
common=(--url "$llmpool_url" --model auto -c "$concurrency" -p 64 -t "$tokens" -q)
if ((warmup_s > 0)); then
  log "warm-up: ${warmup_s} s at concurrency $concurrency"
  "$loadgen" "${common[@]}" --duration "$warmup_s" --seed 1 >"$work/warmup.txt"
fi
log "measuring: ${duration} s at concurrency $concurrency; up-a turns slow after ${switch_at} s"
started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
"$loadgen" "${common[@]}" --duration "$duration" --seed 2 --record-header x-llmpool-model --window "$window" \
  --json "$work/load.json" >"$work/load.txt" &
loadgen_pid=$!
pids+=("$loadgen_pid")
sleep "$switch_at"
curl -sf -o "$work/switch.json" -H 'Content-Type: application/json' \
  -d "{\"ttft_ms\": $slow_ttft_ms}" "${up_url[up-a]}/control"
log "up-a is slow now (ttft ${slow_ttft_ms} ms)"
loadgen_rc=0
wait "$loadgen_pid" || loadgen_rc=$?
((loadgen_rc == 0 || loadgen_rc == 3)) || { cat "$work/load.txt" >&2; echo "routing.sh: loadgen failed ($loadgen_rc)" >&2; exit 1; }
for name in up-a up-b; do curl -sf "${up_url[$name]}/control" >"$work/$name.control.json"; done
curl -sf "$llmpool_url/api/routing-metrics" >"$work/routing-metrics.json" || true
# Stop llmpool now: the decision log is buffered, and shutdown writes it out.
kill "$llmpool_pid"
wait "$llmpool_pid" || { echo "routing.sh: llmpool did not stop cleanly; see $work/llmpool.out.err" >&2; exit 1; }

# ---- report ------------------------------------------------------------------------------
report_rc=0
"$report" --loadgen "$work/load.json" --decision-log "$work/decisions.jsonl" --slow up-a \
  --switch-at "$switch_at" --upstream "up-a=$work/up-a.control.json" --upstream "up-b=$work/up-b.control.json" \
  --settle $((max_sample_age_ms / 1000 < 10 ? 10 : max_sample_age_ms / 1000)) \
  >"$work/tables.md" || report_rc=$?
((report_rc <= 1)) || { echo "routing.sh: llmpool-routing-report failed" >&2; exit 1; }

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git status --porcelain -- src 2>/dev/null | head -c 1)
section=$work/section.md
{
  echo "<!-- routing:begin (written by bench/routing.sh; compare.sh keeps it) -->"
  echo "## Routing"
  echo
  echo "Measured by \`bench/routing.sh\` at $started; see bench/README.md (\"The routing run\")."
  echo
  echo "- command: \`bench/routing.sh${orig_args[*]:+ ${orig_args[*]}}\`"
  echo "- machine: $(nproc) CPUs, load average at start $load_before; llmpool built from commit $commit${dirty:+ (with uncommitted changes)}"
  echo "- upstreams: two \`llmpool-fake-upstream\` (no inference), each ${ttft_ms} ms to the first token, then ${tokens} tokens ${token_ms} ms apart; route group \`auto\` = [up-a, up-b], strategy \`fastest\` without hedging (\`max_parallel: 1\`), \`slow_p95_ms: $slow_p95_ms\`, \`min_samples: 5\`, \`recover_ratio: 0.8\`, \`max_sample_age_ms: $max_sample_age_ms\`"
  echo "- load: \`llmpool-loadgen --model auto -c $concurrency\`, streamed, ${warmup_s} s warm-up, then ${duration} s measured; after ${switch_at} s up-a's time to first token becomes ${slow_ttft_ms} ms (\`POST /control\`)"
  echo "- loadgen: $(sed -n 's/^  requests *//p' "$work/load.txt" | head -n 1)"
  echo
  cat "$work/tables.md"
  echo "<!-- routing:end -->"
} >"$section"

if ((write)); then
  if [[ -f $out ]] && grep -q '^<!-- routing:begin' "$out"; then
    # Replace the old section where it stands.
    awk -v f="$section" '
      /^<!-- routing:begin/ { while ((getline l < f) > 0) print l; skip = 1; next }
      /^<!-- routing:end -->/ { skip = 0; next }
      !skip' "$out" >"$out.tmp"
  else
    { [[ -f $out ]] && cat "$out" && echo; cat "$section"; } >"$out.tmp"
  fi
  mv "$out.tmp" "$out"
  log "wrote the Routing section of $out"
fi
cat "$section"
exit "$report_rc"
