#!/usr/bin/env bash
# Speculative decoding side by side, in one run: llama-server without and
# with a draft model (-md), llmpool without speculation, with the draft model
# (`draft: {model: ...}`, the speculation gate on: it speculates on the steps
# where that measured faster), with the draft model on every step
# (`adaptive: false`) and with prompt lookup (`draft: {ngram: 3}`), on the
# same target/draft pair, threads and sequences; greedy and sampled loads of
# distinct prompts, and an echo-heavy load (the answer repeats a passage of
# the prompt). Rounds alternate the servers; figures are medians of the
# rounds, and ratios are to the same server without speculation.
#
#   bench/speculative.sh --target T.gguf --draft D.gguf    a pair (e.g. the trained one)
#   bench/speculative.sh                                   a mkmodel pair (random weights: see below)
#
# Without --target/--draft it makes a random-weight pair with mkmodel (a
# 12-layer bench-0.5b-shaped target, a 2-layer draft of the same qwen2
# vocabulary). Random weights do not agree, so drafts are nearly always
# rejected: such a run measures the cost of speculating, not its gain.
# Writes its section ("Speculative", between <!-- speculative:begin/end -->
# markers, which bench/compare.sh keeps) into --out (default
# bench/RESULTS.md); `--out -` prints it instead.
set -euo pipefail
cd "$(dirname "$0")/.."

target="" draft="" threads=2 parallel=4 context=1024 clients=4 requests=8 max_tokens=64 repeats=3
build=build out=bench/RESULTS.md draft_max=16 p_min=0.75
configs_arg="" engine=1
while (($#)); do
  case $1 in
    --target) target=${2:?}; shift ;;
    --draft) draft=${2:?}; shift ;;
    --threads) threads=${2:?}; shift ;;
    --parallel) parallel=${2:?}; shift ;;
    --context) context=${2:?}; shift ;;
    --clients) clients=${2:?}; shift ;;
    --requests) requests=${2:?}; shift ;;
    --max-tokens) max_tokens=${2:?}; shift ;;
    --repeats) repeats=${2:?}; shift ;;
    --draft-max) draft_max=${2:?}; shift ;;
    --p-min) p_min=${2:?}; shift ;;
    --build-dir) build=${2:?}; shift ;;
    --configs) configs_arg=${2:?}; shift ;;
    --no-engine) engine=0 ;;
    --out) out=${2:?}; shift ;;
    -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "speculative.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
  shift
done
for v in threads parallel context clients requests max_tokens repeats draft_max; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "speculative.sh: --${v//_/-} must be a positive integer" >&2; exit 2; }
done
[[ $p_min =~ ^(0(\.[0-9]+)?|1(\.0+)?)$ ]] || { echo "speculative.sh: --p-min must be a number from 0 to 1" >&2; exit 2; }

log() { echo "speculative.sh: $*" >&2; }
source bench/lib.sh
llama_dir=$(scripts/llama-cpp | tail -n 1)
llama_server=$llama_dir/build/bin/llama-server
llmpool=$build/llmpool
spec_bench=$build/bench/llmpool-spec-bench
for b in "$llama_server" "$spec_bench"; do [[ -x $b ]] || { echo "speculative.sh: missing $b" >&2; exit 1; }; done

pair_note="the pair given on the command line"
if [[ -z $target || -z $draft ]]; then
  mkdir -p models
  target=models/spec-target-q8_0.gguf draft=models/spec-draft-q8_0.gguf
  "$spec_bench" --target "$target" --draft "$draft" --make-target-layers 8 --make-draft-layers 1 --make-only
  pair_note="random weights written by the model writer (target: bench-0.5b shape with 8 layers; draft: 1 layer; qwen2 vocabulary, q8_0): drafts are nearly always rejected, so this measures the cost of speculating, not its gain"
fi
target=$(realpath "$target") draft=$(realpath "$draft")
plain=""
[[ -x $llmpool ]] && plain=$(plain_weights_args "$llmpool")

work=$(mktemp -d "${TMPDIR:-/tmp}/llmpool-spec.XXXXXX")
server_pid=""
stop_server() {
  [[ -n $server_pid ]] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
}
trap 'stop_server; rm -rf "$work"' EXIT
trap 'exit 130' INT TERM

free_port() {
  local p
  for _ in $(seq 200); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
  done
  return 1
}

# server configurations: name -> how it starts
# llmpool over HTTP needs its binary; without one (or with --configs naming
# only llama-server's) llmpool is measured in-process by llmpool-spec-bench.
configs=(llama-server llama-server-md llmpool llmpool-draft llmpool-draft-always llmpool-ngram)
[[ -x $llmpool ]] || configs=(llama-server llama-server-md)
[[ -z $configs_arg ]] || IFS=, read -r -a configs <<<"$configs_arg"
engine_table=""
if ((engine)) && [[ " ${configs[*]} " != *" llmpool "* ]]; then
  log "llmpool in-process (llmpool-spec-bench)"
  engine_table=$("$spec_bench" --target "$target" --draft "$draft" --threads "$threads" --parallel "$parallel" \
    --context "$context" --clients "$clients" --requests "$requests" --max-tokens "$max_tokens" --repeats "$repeats" \
    --draft-max "$draft_max" --p-min "$p_min")
fi
start() { # config port
  local c=$1 port=$2
  case $c in
    llama-server | llama-server-md)
      local argv=("$llama_server" -m "$target" -t "$threads" -np "$parallel" -c $((parallel * context)) --no-kv-unified
        --host 127.0.0.1 --port "$port" -a bench --no-webui)
      [[ -z $plain ]] || argv+=("$plain")
      [[ $c == llama-server-md ]] && argv+=(-md "$draft" --spec-draft-n-max "$draft_max" --spec-draft-n-min 0 --spec-draft-p-min "$p_min" -td "$threads")
      "${argv[@]}" >"$work/$c.log" 2>&1 &
      ;;
    llmpool*)
      {
        echo "log_level: warn"
        echo "server: {host: 127.0.0.1, port: $port}"
        echo "models:"
        echo "  - {name: bench, path: $target, context: $context, parallel: $parallel, threads: $threads}"
      } >"$work/$c.yaml"
      case $c in
        llmpool-draft) sed -i "s|threads: $threads}|threads: $threads, draft: {model: $draft, max_tokens: $draft_max, p_min: $p_min}}|" "$work/$c.yaml" ;;
        llmpool-draft-always) sed -i "s|threads: $threads}|threads: $threads, draft: {model: $draft, max_tokens: $draft_max, p_min: $p_min, adaptive: false}}|" "$work/$c.yaml" ;;
        llmpool-ngram) sed -i "s|threads: $threads}|threads: $threads, draft: {ngram: 3, max_tokens: $draft_max}}|" "$work/$c.yaml" ;;
      esac
      "$llmpool" serve --config "$work/$c.yaml" >"$work/$c.log" 2>&1 &
      ;;
  esac
  server_pid=$!
  for _ in $(seq 600); do
    kill -0 "$server_pid" 2>/dev/null || { tail -n 20 "$work/$c.log" >&2; server_pid=""; return 1; }
    curl -sf -o /dev/null "http://127.0.0.1:$port/health" && return 0
    sleep 0.2
  done
  return 1
}

# loads: name|temperature|top_p|kind
loads=("greedy|0|1|distinct" "sampled|0.8|0.95|distinct" "echo|0|1|echo")
declare -A results=()
for ((r = 1; r <= repeats; r++)); do
  for c in "${configs[@]}"; do
    port=$(free_port)
    log "round $r/$repeats: $c on port $port"
    # The port was free when picked; another process may take it before the
    # server binds it: one more try on another port.
    start "$c" "$port" || { stop_server; port=$(free_port) && log "  again on port $port" && start "$c" "$port"; } ||
      { log "$c did not start"; continue; }
    python3 bench/spec_load.py --url "http://127.0.0.1:$port" --clients "$parallel" --requests "$parallel" \
      --max-tokens 8 --seed 999 >/dev/null || true  # warm-up
    for spec in "${loads[@]}"; do
      IFS='|' read -r name temp top_p kind <<<"$spec"
      line=$(timeout 900 python3 bench/spec_load.py --url "http://127.0.0.1:$port" --clients "$clients" \
        --requests "$requests" --max-tokens "$max_tokens" --temperature "$temp" --top-p "$top_p" --kind "$kind" \
        --seed $((100 * r)) || true)
      tok_s=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1]).get("tok_s",""))' "$line" 2>/dev/null || true)
      results[$c|$name]+="${tok_s:-nan} "
      log "  $c $name: ${tok_s:-failed} tok/s"
    done
    if [[ $c == llmpool-* ]]; then
      curl -s "http://127.0.0.1:$port/metrics" | grep -E '^llmpool_speculative_(acceptance_rate|speedup_estimate|steps_total)' |
        sed "s/^/$c round $r: /" >>"$work/metrics.txt" || true
    fi
    stop_server
  done
done

median() { tr ' ' '\n' | awk 'NF && $1 != "nan"' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a=="nan" || b=="nan" || b==0) print "—"; else printf "%.2f×", a/b }'; }
section=$work/section.md
{
  echo "<!-- speculative:begin (written by bench/speculative.sh; compare.sh keeps it) -->"
  echo "## Speculative"
  echo
  echo "Measured by \`bench/speculative.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'): $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) at the end (the machine is shared with other work: compare ratios only)."
  echo "Pair: $pair_note. $threads threads, $parallel sequences, $clients clients, $requests requests of $max_tokens tokens per load and round (ignore_eos), $repeats rounds; medians of aggregate tok/s; ratio to the same server without speculation."
  echo
  if [[ -n $engine_table ]]; then
    echo "llmpool in-process (\`llmpool-spec-bench\`, the engine without HTTP; run before llama-server's rounds, not interleaved with them):"
    echo
    echo "$engine_table"
    echo
  fi
  echo "llmpool draft and n-gram: the speculation gate on (the default); every step: \`adaptive: false\`."
  echo
  echo "| load | llama-server | llama-server -md | ratio | llmpool | llmpool draft | ratio | llmpool draft, every step | ratio | llmpool n-gram | ratio | llmpool draft ÷ llama-server -md |"
  echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
  for spec in "${loads[@]}"; do
    IFS='|' read -r name _ <<<"$spec"
    ls=$(median <<<"${results[llama-server|$name]:-}") md=$(median <<<"${results[llama-server-md|$name]:-}")
    lp=$(median <<<"${results[llmpool|$name]:-}") ld=$(median <<<"${results[llmpool-draft|$name]:-}")
    la=$(median <<<"${results[llmpool-draft-always|$name]:-}") ln=$(median <<<"${results[llmpool-ngram|$name]:-}")
    echo "| $name | $ls | $md | $(ratio "$md" "$ls") | $lp | $ld | $(ratio "$ld" "$lp") | $la | $(ratio "$la" "$lp") | $ln | $(ratio "$ln" "$lp") | $(ratio "$ld" "$md") |"
  done
  echo
  if [[ -s $work/metrics.txt ]]; then
    echo "llmpool's own figures (\`/metrics\`, per round):"
    echo
    echo '```'
    cat "$work/metrics.txt"
    echo '```'
  fi
  echo "<!-- speculative:end -->"
} >"$section"
if [[ $out == - ]]; then
  cat "$section"
else
  # Replace the section where it is, else put it before the notes (or at the end).
  python3 - "$out" "$section" <<'PY'
import re, sys
path, section = sys.argv[1], open(sys.argv[2]).read()
try:
    text = open(path).read()
except FileNotFoundError:
    text = ""
pat = re.compile(r"<!-- speculative:begin.*?<!-- speculative:end -->\n?", re.S)
if pat.search(text):
    text = pat.sub(lambda m: section, text, count=1)
elif "<!-- notes:begin" in text:
    i = text.index("<!-- notes:begin")
    text = text[:i] + section + "\n" + text[i:]
else:
    text = text.rstrip("\n") + "\n\n" + section
open(path, "w").write(text)
PY
  log "wrote the Speculative section of $out"
fi
