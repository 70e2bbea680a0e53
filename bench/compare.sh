#!/usr/bin/env bash
# Side-by-side benchmark: llama.cpp's own llama-server and llmpool, one after
# the other on the same machine, model, threads, sequences and per-sequence
# context, driven by the same loads (llmpool-loadgen), plus llama-bench as the
# single-stream reference. Writes bench/RESULTS.md (see bench/README.md).
#
#   bench/compare.sh                 full run (about 17 minutes on 2 idle cores)
#   bench/compare.sh --quick         fewer requests, shorter answers (about 7 minutes)
#
# Nothing is left running: each server is stopped after its loads, and on any
# exit (Ctrl-C included).
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: bench/compare.sh [options]
  --quick                 fewer requests and 32-token answers (about 7 minutes on 2 idle cores)
  --repeats R             rounds; every load runs R times per server, figures are medians (default 3)
  --threads T             CPU threads for both servers and llama-bench (default 2)
  --parallel P            sequences decoded together: llama-server -np, llmpool `parallel` (default 8)
  --context N             context per sequence, llmpool `context` (default 2048); llama-server
                          gets -c P*N --no-kv-unified, so each of its slots has N tokens too
  --io-threads N          llmpool server.io_threads (default 2)
  --model FILE            GGUF model (default models/bench-0.5b-q8_0.gguf, made if missing)
  --servers LIST          comma-separated, from llama-server,llmpool (default both; the first is the baseline)
  --llama-server-args S   extra llama-server arguments, word-split (e.g. "--kv-unified")
  --build-dir DIR         where llmpool is built (default build); the harness goes to DIR/bench-harness
  --no-build              use the binaries as they are
  --llmpool BIN           benchmark this llmpool binary instead of building DIR/llmpool
  --out FILE              the report (default bench/RESULTS.md)
  --keep                  keep the work folder (JSON results, server logs, odd answers) even on success
  --quiet-wait S          before each server start, wait up to S seconds for the machine to be
                          quiet (CPU pressure avg10 under 5%); default 0, no wait
  --loads LIST            comma-separated load names to run (default all: greedy-c1, greedy-c8,
                          greedy-c32, sampled-c1, sampled-c8, sampled-c32, repeated-c8, recall-c8, system-c8,
                          chat-c8, mixed)
  --batch N               llmpool `batch` (per-step token budget; default 2048, llama-server's -b)
  --llmpool-set 'KEY: V'  one more field of llmpool's model (e.g. 'kv_unified: true'); may repeat
  --report-from DIR       run nothing: rewrite the report from a work folder kept with --keep
                          (after changing llmpool-bench-report, say)
EOF
}

orig_args=("$@")
quick=0 repeats=3 threads=2 parallel=8 context=2048 io_threads=2
model=models/bench-0.5b-q8_0.gguf servers=llama-server,llmpool ls_extra="" build=build do_build=1
out=bench/RESULTS.md keep=0 llmpool="" quiet_wait=0 report_from="" only_loads="" batch=2048
llmpool_set=()
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --repeats) repeats=${2:?}; shift ;;
    --threads) threads=${2:?}; shift ;;
    --parallel) parallel=${2:?}; shift ;;
    --context) context=${2:?}; shift ;;
    --io-threads) io_threads=${2:?}; shift ;;
    --model) model=${2:?}; shift ;;
    --servers) servers=${2:?}; shift ;;
    --llama-server-args) ls_extra=${2?}; shift ;;
    --build-dir) build=${2:?}; shift ;;
    --no-build) do_build=0 ;;
    --llmpool) llmpool=${2:?}; shift ;;
    --out) out=${2:?}; shift ;;
    --keep) keep=1 ;;
    --quiet-wait) quiet_wait=${2:?}; shift ;;
    --report-from) report_from=${2:?}; shift ;;
    --loads) only_loads=${2:?}; shift ;;
    --batch) batch=${2:?}; shift ;;
    --llmpool-set) llmpool_set+=("${2:?}"); shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "compare.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
[[ $quiet_wait =~ ^[0-9]+$ ]] || { echo "compare.sh: --quiet-wait must be a number of seconds" >&2; exit 2; }
for v in repeats threads parallel context io_threads batch; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --${v//_/-} must be a positive integer" >&2; exit 2; }
done
IFS=, read -r -a server_list <<<"$servers"
for s in "${server_list[@]}"; do
  [[ $s == llama-server || $s == llmpool ]] || { echo "compare.sh: unknown server '$s'" >&2; exit 2; }
done

log() { echo "compare.sh: $*" >&2; }
source bench/lib.sh  # plain_weights_args

# ---- binaries and model -------------------------------------------------------
llama_dir=$(scripts/llama-cpp | tail -n 1)
llama_server=$llama_dir/build/bin/llama-server
llama_bench=$llama_dir/build/bin/llama-bench
# The harness is built on its own (bench/ is a standalone CMake project too),
# so it builds even while src/ is half-way through a change.
harness=$build/bench-harness
if ((do_build)); then
  if [[ -z $llmpool && -z $report_from ]]; then
    if [[ ! -f $build/CMakeCache.txt ]]; then
      cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLAMA_CPP_DIR="$llama_dir" >/dev/null
    fi
    log "building llmpool in $build"
    cmake --build "$build" --target llmpool >/dev/null
  fi
  log "building the harness in $harness"
  [[ -f $harness/CMakeCache.txt ]] || cmake -S bench -B "$harness" -G Ninja >/dev/null
  cmake --build "$harness" --target llmpool-loadgen llmpool-bench-report >/dev/null
fi
llmpool=${llmpool:-$build/llmpool}
loadgen=$harness/llmpool-loadgen
report=$harness/llmpool-bench-report
needed=("$report")
[[ -n $report_from ]] || needed+=("$llmpool" "$loadgen" "$llama_server" "$llama_bench")
for b in "${needed[@]}"; do
  [[ -x $b ]] || { echo "compare.sh: missing $b (build it, or drop --no-build)" >&2; exit 1; }
done
# RESULTS.md = the setup written after the runs + the report's tables (+ the
# sections kept as they were: Routing from bench/routing.sh, Overload from
# bench/overload.sh, Speculative from bench/speculative.sh, Gateway from
# bench/gateway.sh, and the notes on
# the targets and cancellation, written by hand).
write_results() { # work folder
  {
    cat "$1/header.md"
    "$report" --manifest "$1/manifest.tsv" --llama-bench "$1/llama-bench.json"
    for kept in routing overload speculative notes gateway; do
      if [[ -f $out ]] && grep -q "^<!-- $kept:begin" "$out"; then
        echo
        sed -n "/^<!-- $kept:begin/,/^<!-- $kept:end -->\$/p" "$out"
      fi
    done
  } >"$out.tmp"
  mv "$out.tmp" "$out"
}
if [[ -n $report_from ]]; then
  write_results "$report_from"
  log "wrote $out from $report_from"
  exit 0
fi

if [[ ! -f $model ]]; then
  [[ $model == models/bench-0.5b-q8_0.gguf ]] || { echo "compare.sh: no model $model" >&2; exit 1; }
  log "making $model"
  mkdir -p models
  "$llmpool" mkmodel --preset bench-0.5b --type q8_0 --out "$model" >/dev/null
fi
model_abs=$(realpath "$model")

# ---- loads ----------------------------------------------------------------------
# name|clients|requests|loadgen arguments. Every load asks for the same number
# of output tokens (EOS ignored), so tok/s compares like with like.
#   greedy-cN   temperature 0, distinct prompts
#   sampled-cN  temperature 0.8, top_p 0.95 (as clients send)
#   repeated    prompts cycle over `parallel` distinct ones: each is sent again
#   recall      prompts cycle over 4 x `parallel` distinct ones: each comes back
#               after more others than there are sequences (host prompt caches)
#   system      a shared system message of ~512 tokens, distinct user prompts
#   chat        multi-turn chats (4 turns), the whole history resent each turn
#   mixed       long and short prompts together
sampled="--temperature 0.8 --top-p 0.95"
if ((quick)); then
  max_tokens=32
  long=$((context - max_tokens - 100 < 1024 ? context - max_tokens - 100 : 1024))
  loads=("greedy-c1|1|3|-p 128" "greedy-c8|8|8|-p 128" "greedy-c32|32|32|-p 128"
    "sampled-c1|1|3|-p 128 $sampled" "sampled-c8|8|8|-p 128 $sampled" "sampled-c32|32|32|-p 128 $sampled"
    "repeated-c8|8|16|-p 64 --distinct $parallel" "recall-c8|8|64|-p 128 --distinct $((4 * parallel))"
    "system-c8|8|16|-p 32 --system-tokens 512" "chat-c8|8|8|-p 64 --turns 3 --followup-tokens 24" "mixed|8|8|--mix long:$long:0.25,short:64:0.75")
  bench_reps=3
else
  max_tokens=64
  long=$((context - max_tokens - 100 < 1500 ? context - max_tokens - 100 : 1500))
  loads=("greedy-c1|1|6|-p 128" "greedy-c8|8|24|-p 128" "greedy-c32|32|64|-p 128"
    "sampled-c1|1|6|-p 128 $sampled" "sampled-c8|8|24|-p 128 $sampled" "sampled-c32|32|64|-p 128 $sampled"
    "repeated-c8|8|24|-p 64 --distinct $parallel" "recall-c8|8|96|-p 128 --distinct $((4 * parallel))"
    "system-c8|8|24|-p 32 --system-tokens 512" "chat-c8|8|8|-p 64 --turns 4 --followup-tokens 32" "mixed|8|16|--mix long:$long:0.25,short:64:0.75")
  bench_reps=5
fi
# --loads NAME,...: only these (e.g. for a shorter run); the report says which ran.
if [[ -n $only_loads ]]; then
  kept=()
  for spec in "${loads[@]}"; do
    [[ ",$only_loads," == *",${spec%%|*},"* ]] && kept+=("$spec")
  done
  ((${#kept[@]})) || { echo "compare.sh: --loads names none of the loads" >&2; exit 2; }
  loads=("${kept[@]}")
fi
((long >= 64)) || long=64

# ---- work folder and cleanup ----------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/llmpool-bench.XXXXXX")
server_pid=""
stop_server() {
  [[ -n $server_pid ]] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 150); do
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
ok=0
finish() {
  stop_server
  if ((ok && !keep)); then rm -rf "$work"; else log "work folder kept: $work"; fi
}
trap finish EXIT
trap 'exit 130' INT TERM

# Run a copy of llmpool: the build dir's binary may be rebuilt while this runs,
# and every round must measure the same program.
llmpool_built=$(date -u -r "$llmpool" '+%Y-%m-%d %H:%M UTC')
cp "$llmpool" "$work/llmpool"
llmpool_src=$llmpool
llmpool=$work/llmpool

# A loopback port nobody listens on (checked by trying to connect).
free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# ---- the llmpool config ---------------------------------------------------------
llmpool_config=$work/llmpool.yaml
llmpool_notes=()
write_llmpool_config() { # port with_parallel
  {
    echo "log_level: warn"
    echo "server:"
    echo "  host: 127.0.0.1"
    echo "  port: $1"
    echo "  io_threads: $io_threads"
    echo "models:"
    echo "  - name: bench"
    echo "    type: local"
    echo "    path: $model_abs"
    echo "    context: $context"
    echo "    threads: $threads"
    echo "    batch: $batch"
    for kv in "${llmpool_set[@]}"; do echo "    $kv"; done
    if (($2)); then echo "    parallel: $parallel"; fi
  } >"$llmpool_config"
}
llmpool_parallel=1
if [[ " ${server_list[*]} " == *" llmpool "* ]]; then
  write_llmpool_config 0 1
  if ! "$llmpool" check-config "$llmpool_config" >"$work/check-config.txt" 2>&1; then
    llmpool_parallel=0
    llmpool_notes+=("\`parallel: $parallel\` was rejected by \`llmpool check-config\` ($(head -n 1 "$work/check-config.txt" | sed "s|$work/||")); llmpool ran with its default.")
    write_llmpool_config 0 0
    "$llmpool" check-config "$llmpool_config" >/dev/null 2>&1 || {
      cat "$work/check-config.txt" >&2
      echo "compare.sh: llmpool rejects the config even without parallel" >&2
      exit 1
    }
  fi
fi

# ---- servers ----------------------------------------------------------------------
# The llama-server command; -c is the total KV size, split evenly across the
# -np slots because the KV cache is not unified, so each slot holds exactly
# `context` tokens like each llmpool sequence.
llama_server_argv() { # port: sets ls_argv
  ls_argv=("$llama_server" -m "$model" -t "$threads" -np "$parallel" -c $((parallel * context)) --no-kv-unified
    --host 127.0.0.1 --port "$1" -a bench --no-webui)
  local extra=()
  read -r -a extra <<<"$ls_extra $ls_plain"
  ls_argv+=("${extra[@]}")
}

start_server() { # name port logfile
  local name=$1 port=$2 logf=$3
  if [[ $name == llama-server ]]; then
    llama_server_argv "$port"
    "${ls_argv[@]}" >"$logf" 2>&1 &
  else
    write_llmpool_config "$port" "$llmpool_parallel"
    "$llmpool" serve --config "$llmpool_config" >"$logf" 2>&1 &
  fi
  server_pid=$!
  for _ in $(seq 600); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
      wait "$server_pid" 2>/dev/null || true
      server_pid=""
      echo "compare.sh: $name exited while starting; last lines of $logf:" >&2
      tail -n 20 "$logf" >&2
      return 1
    fi
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && return 0
    sleep 0.2
  done
  echo "compare.sh: $name did not become healthy in 120 s" >&2
  return 1
}

# Does the server stream? Sets stream_flag ("" or --no-stream) and notes why.
declare -A stream_note=()
probe_stream() { # name port
  local code_type
  code_type=$(curl -s -o "$work/probe-$1.out" -w '%{http_code} %{content_type}' \
    -H 'Content-Type: application/json' \
    -d '{"model":"bench","messages":[{"role":"user","content":"Hello"}],"max_tokens":2,"stream":true}' \
    "http://127.0.0.1:$2/v1/chat/completions" || true)
  if [[ $code_type == "200 text/event-stream"* ]]; then
    stream_flag=""
  else
    stream_flag=--no-stream
    stream_note[$1]="answered \`\"stream\": true\` with \`$code_type\`: $(head -c 200 "$work/probe-$1.out" | tr -d '\n'); measured with \`\"stream\": false\`."
  fi
}

ls_plain=$(plain_weights_args "$llmpool")
[[ -z $ls_plain ]] || log "llama.cpp's AMX kernels fail on this CPU: llama-server runs with $ls_plain (llmpool keeps plain weights itself); llama-bench cannot"
# Other work on a shared machine ruins the figures: wait_quiet (bench/quiet.sh).
source bench/quiet.sh

# ---- run ----------------------------------------------------------------------------
date_utc=$(date -u '+%Y-%m-%d %H:%M UTC')
loadavg_start=$(cut -d' ' -f1-3 /proc/loadavg)
wait_quiet
log "llama-bench (-p 512 -n 64 -t $threads -r $bench_reps)"
"$llama_bench" -m "$model" -p 512 -n 64 -t "$threads" -r "$bench_reps" -o json \
  >"$work/llama-bench.json" 2>"$work/llama-bench.log" || log "llama-bench failed; see $work/llama-bench.log"

# A system message of our own: without one, llama-server's default ChatML
# template inserts "You are a helpful assistant" and llmpool's does not, and
# the two would not see the same prompt tokens.
system_prompt="You are a helpful assistant."
manifest=$work/manifest.tsv
: >"$manifest"
# Rounds interleave the servers (A, B, A, B, ...) so that a slow spell of a
# noisy machine hurts both; every server restarts each round.
for ((r = 1; r <= repeats; r++)); do
  for s in "${server_list[@]}"; do
    wait_quiet
    port=$(free_port)
    log "round $r/$repeats: starting $s on port $port"
    start_server "$s" "$port" "$work/$s-r$r.log"
    probe_stream "$s" "$port"
    # Warm every sequence once (page cache, thread pools, lazy loading).
    "$loadgen" --url "http://127.0.0.1:$port" --model bench -c "$parallel" -n 0 --warmup "$parallel" \
      -p 64 -t 8 --seed 999 -q $stream_flag >/dev/null || true
    idx=0
    for spec in "${loads[@]}"; do
      IFS='|' read -r name clients requests args <<<"$spec"
      idx=$((idx + 1))
      json=$work/$s-$name-r$r.json
      rc=0
      # shellcheck disable=SC2086 # $args and $stream_flag are lists of words
      "$loadgen" --url "http://127.0.0.1:$port" --model bench -c "$clients" -n "$requests" -t "$max_tokens" \
        $args --seed $((1000 * r + idx)) --system "$system_prompt" --timeout 900 --json "$json" -q $stream_flag \
        --dump-odd "$work/odd-$s-$name-r$r" \
        >"$work/$s-$name-r$r.txt" || rc=$?
      printf '%s\t%s\t%s\t%s\n' "$s" "$name" "$r" "$(basename "$json")" >>"$manifest"
      log "  $s $name: $(grep -m1 -o '[0-9.]* tok/s aggregate' "$work/$s-$name-r$r.txt" || echo 'no result')$( ((rc == 0)) || echo " (loadgen exit $rc)")"
    done
    stop_server
  done
done

# ---- report -------------------------------------------------------------------------
cpu_model=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
mem_gib=$(awk '/MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
git_rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
git status --porcelain -- src 2>/dev/null | grep -q . && git_rev="$git_rev (src/ has uncommitted changes)"
cmd="bench/compare.sh"
((${#orig_args[@]})) && cmd+=" $(printf '%q ' "${orig_args[@]}" | sed 's/ $//')"
model_size=$(du -h "$model" | cut -f1)
{
  echo "# Benchmark results"
  echo
  echo "Measured by \`bench/compare.sh\` from $date_utc to $(date -u '+%H:%M UTC'); see bench/README.md for what each figure means."
  echo "Machines here are noisy: compare the ratios, not the absolute figures, and look at the"
  echo "\"rounds used\" row before trusting a small difference."
  echo
  echo "## Setup"
  echo
  echo "- command: \`$cmd\`"
  echo "- machine: $(nproc) CPUs ($cpu_model), ${mem_gib} GiB, Linux $(uname -r); load average at start $loadavg_start"
  echo "- model: \`$model\` ($model_size)"
  echo "- llmpool: \`$llmpool_src\` built $llmpool_built; commit $git_rev"
  echo "- llama.cpp: \`$(basename "$llama_dir")\`"
  echo "- both servers: $threads threads, $parallel sequences decoded together, $context tokens of context per sequence"
  echo "- every request: a system message (\"$system_prompt\", plus ~512 shared tokens in the system load) and a user prompt; greedy unless sampled (temperature 0.8, top_p 0.95), \`ignore_eos\`, exactly $max_tokens output tokens asked, streamed with a final usage chunk"
  echo "- $repeats round(s); each round starts each server afresh (llama-server first), warms all $parallel sequences, then runs every load"
  echo "- prompts are distinct per request (except in the repeated load) and differ between loads and rounds (seed = 1000 × round + load), the same for both servers"
  echo
  if [[ " ${server_list[*]} " == *" llama-server "* ]]; then
    echo "llama-server (\`-c\` = sequences × context, split across slots since the KV cache is not unified; its other settings are defaults):"
    echo
    echo '```'
    llama_server_argv PORT
    echo "${ls_argv[*]}"
    echo '```'
    echo
  fi
  if [[ " ${server_list[*]} " == *" llmpool "* ]]; then
    echo "llmpool (\`$llmpool_src serve --config llmpool.yaml\`; fields it does not name take their defaults):"
    echo
    echo '```yaml'
    write_llmpool_config PORT "$llmpool_parallel"
    cat "$llmpool_config"
    echo '```'
    echo
  fi
  notes=0
  for n in "${llmpool_notes[@]}"; do echo "- note: llmpool: $n"; notes=1; done
  for s in "${!stream_note[@]}"; do echo "- note: $s ${stream_note[$s]}"; notes=1; done
  if ((notes)); then echo; fi
  echo "| load | clients | requests per round | loadgen arguments (-p: prompt tokens) | output tokens |"
  echo "| --- | ---: | ---: | --- | ---: |"
  for spec in "${loads[@]}"; do
    IFS='|' read -r name clients requests args <<<"$spec"
    prompt=$args
    [[ $args == --mix* ]] && prompt="mix: ${args#--mix }"
    echo "| $name | $clients | $requests | $prompt | $max_tokens |"
  done
  echo
} >"$work/header.md"
write_results "$work"
ok=1
log "wrote $out"
