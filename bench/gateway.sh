#!/usr/bin/env bash
# Gateway benchmark (issue 10 item 9): the fake upstream (no inference) measured
# behind four fronts, side by side in one run:
#   direct   nothing: the load goes to the fake upstream itself
#   nginx    Debian's nginx as a reverse proxy (keep-alive to the upstream)
#   secure   llmpool with auth and Redis rate limits on (--secure-config; see below)
#   allot    the same, with rate_limits.allotment_ms (--allotment-ms): limits
#            taken from Redis in slices and admitted from in process
#   plain    llmpool with both off
# Loads: wrk at c=16 (closed loop, max RPS) and llmpool-rate-load at fixed
# rates (open loop, latency from when each request was due). Figures: RPS,
# latency p50/p99 and what each front adds to the direct figure, llmpool's
# CPU (cores) and RSS; then a long fixed-rate run on the allot front (else secure) with
# RSS sampled every few seconds. Writes the "Gateway" section of
# bench/RESULTS.md.
#
#   bench/gateway.sh                      3 rounds, 10 s per load; about 6 minutes
#   bench/gateway.sh --rounds 1 --seconds 5 --soak-requests 100000
#
# Nothing is left running: the servers are stopped on any exit.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'EOF'
usage: bench/gateway.sh [options]
  --rounds R           rounds; every figure is the median over them (default 3)
  --seconds S          seconds per load (default 10)
  --rates LIST         fixed rates, RPS (default 500,1000,2000)
  --connections N      llmpool-rate-load connections (default 32)
  --soak-requests N    requests of the long run, at the highest rate, on the allot front (else secure, else plain)
                       (default 200000; 0: none)
  --fronts LIST        of direct,nginx,secure,allot,plain (default all five)
  --allotment-ms N     the allot front's rate_limits.allotment_ms (default 250)
  --secure-config F    a YAML fragment appended to the secure front's llmpool config (auth, limits);
                       it may use @REDIS_URL@ and @DATA_DIR@ (default bench/gateway-secure.yaml)
  --secure-tenant T    the tenant of the API key made for the load (default bench)
  --secure-key K       send this credential instead of making a key (Authorization: Bearer K)
  --no-secure          leave the secure front out (a build without auth and limits)
  --io-threads N       llmpool and fake upstream HTTP threads (default 2)
  --build-dir DIR      where llmpool is built (default build)
  --no-build           use the binaries as they are
  --out FILE           results file whose "Gateway" section is (re)written (default bench/RESULTS.md)
  --no-write           print the section, write no file
  --keep               keep the work folder
EOF
}

orig_args=("$@")
rounds=3 seconds=10 rates=500,1000,2000 connections=32 soak=200000 fronts=direct,nginx,secure,allot,plain allotment_ms=250
secure_config=bench/gateway-secure.yaml secure_key="" secure_tenant=bench io_threads=2 build=build do_build=1 out=bench/RESULTS.md write=1 keep=0
while (($#)); do
  case $1 in
    --rounds) rounds=${2:?}; shift ;;
    --seconds) seconds=${2:?}; shift ;;
    --rates) rates=${2:?}; shift ;;
    --connections) connections=${2:?}; shift ;;
    --soak-requests) soak=${2:?}; shift ;;
    --fronts) fronts=${2:?}; shift ;;
    --allotment-ms) allotment_ms=${2:?}; shift ;;
    --secure-config) secure_config=${2:?}; shift ;;
    --no-secure) secure_config="" ;;
    --secure-key) secure_key=${2:?}; shift ;;
    --secure-tenant) secure_tenant=${2:?}; shift ;;
    --io-threads) io_threads=${2:?}; shift ;;
    --build-dir) build=${2:?}; shift ;;
    --no-build) do_build=0 ;;
    --out) out=${2:?}; shift ;;
    --no-write) write=0 ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "gateway.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for v in rounds seconds connections io_threads; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || { echo "gateway.sh: --${v//_/-} must be a positive integer" >&2; exit 2; }
done
[[ $allotment_ms =~ ^[1-9][0-9]*$ ]] || { echo "gateway.sh: --allotment-ms must be a positive integer" >&2; exit 2; }
[[ $soak =~ ^[0-9]+$ ]] || { echo "gateway.sh: --soak-requests must be a whole number" >&2; exit 2; }
[[ $rates =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || { echo "gateway.sh: --rates must be a list of positive integers" >&2; exit 2; }
IFS=, read -ra rate_list <<<"$rates"
IFS=, read -ra front_list <<<"$fronts"
for f in "${front_list[@]}"; do
  [[ $f =~ ^(direct|nginx|secure|allot|plain)$ ]] || { echo "gateway.sh: unknown front '$f'" >&2; exit 2; }
done
[[ -z $secure_config || -f $secure_config ]] || { echo "gateway.sh: no file $secure_config" >&2; exit 2; }
if [[ -z $secure_config && " ${front_list[*]} " =~ " "(secure|allot)" " ]]; then
  echo "gateway.sh: no --secure-config: the secure and allot fronts (auth + limits) are left out" >&2
  front_list=($(printf '%s\n' "${front_list[@]}" | grep -vxE 'secure|allot'))
  fronts=$(IFS=,; echo "${front_list[*]}")
fi

log() { echo "gateway.sh: $*" >&2; }
for tool in wrk nginx redis-server python3 curl; do
  command -v "$tool" >/dev/null || { echo "gateway.sh: $tool is missing (scripts/setup installs it)" >&2; exit 1; }
done

# ---- binaries -----------------------------------------------------------------------
if ((do_build)); then
  if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLLAMA_CPP_DIR="$(scripts/llama-cpp | tail -n 1)" >/dev/null
  fi
  log "building in $build"
  cmake --build "$build" --target llmpool llmpool-fake-upstream llmpool-rate-load >/dev/null
fi
llmpool=$build/llmpool
fake=$build/bench/llmpool-fake-upstream
rate_load=$build/bench/llmpool-rate-load
for b in "$llmpool" "$fake" "$rate_load"; do
  [[ -x $b ]] || { echo "gateway.sh: missing $b (build it, or drop --no-build)" >&2; exit 1; }
done

source bench/lib.sh  # the cd above made the repository root the working folder
bench_work gateway


# Starts a server in the background and waits until `probe` (a command) succeeds.
start() { # name probe command...
  local name=$1 probe=$2
  shift 2
  "$@" >"$work/$name.out" 2>"$work/$name.err" &
  pids+=($!)
  local pid=$!
  for _ in $(seq 300); do
    if eval "$probe" >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "gateway.sh: $name exited while starting:" >&2; tail -n 20 "$work/$name.err" >&2; return 1; }
    sleep 0.1
  done
  echo "gateway.sh: $name did not start in 30 s" >&2
  return 1
}

# ---- the upstream, redis, nginx, two llmpools ------------------------------------------
up_port=$(free_port)
start fake "curl -sf http://127.0.0.1:$up_port/v1/models" \
  "$fake" --host 127.0.0.1 --port "$up_port" --io-threads "$io_threads" --model fake --tokens 8 --ttft-ms 0 --token-ms 0
declare -A url=([direct]="http://127.0.0.1:$up_port")
declare -A model=([direct]=fake [nginx]=fake [secure]=up [allot]=up [plain]=up)
declare -A pid_of=()

redis_port=$(free_port)
start redis "redis-cli -p $redis_port ping" \
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --daemonize no
redis_url="redis://127.0.0.1:$redis_port"

nginx_port=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<EOF
worker_processes $io_threads;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx/body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream fake { server 127.0.0.1:$up_port; keepalive 64; }
  server {
    listen 127.0.0.1:$nginx_port;
    location / {
      proxy_pass http://fake;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }
  }
}
EOF
start nginx "curl -sf http://127.0.0.1:$nginx_port/v1/models" \
  nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log"
url[nginx]="http://127.0.0.1:$nginx_port"

base_config() { # port
  cat <<EOF
log_level: warn
server:
  host: 127.0.0.1
  port: $1
  io_threads: $io_threads
models:
  - name: up
    type: openai
    base_url: http://127.0.0.1:$up_port/v1
    upstream_model: fake
    context: 4096
EOF
}
plain_port=$(free_port)
base_config "$plain_port" >"$work/plain.yaml"
start llmpool-plain "curl -sf http://127.0.0.1:$plain_port/health" "$llmpool" serve --config "$work/plain.yaml"
url[plain]="http://127.0.0.1:$plain_port"
pid_of[plain]=${pids[-1]}
auth_header=()

secure_port=$(free_port)
mkdir -p "$work/data"
base_config "$secure_port" >"$work/secure.yaml"
secure_what="(not measured: no --secure-config)"
if [[ -n $secure_config ]]; then
  sed -e "s|@REDIS_URL@|$redis_url|g" -e "s|@DATA_DIR@|$work/data|g" "$secure_config" >>"$work/secure.yaml"
  secure_what="auth (API key) and Redis rate limits on every limit of tenant and key (set never to refuse), from bench/$(basename "$secure_config") (appended to the plain config)"
  if [[ -z $secure_key ]]; then
    # A key whose own limits are checked too (each below the tenant's).
    secure_key=$("$llmpool" keys create --config "$work/secure.yaml" --tenant "$secure_tenant" \
      --rpm 50000000 --tpm 50000000000 --max-concurrent 50000 2>"$work/keys.err" | tail -n 1)
    [[ -n $secure_key ]] || { echo "gateway.sh: could not make an API key:" >&2; cat "$work/keys.err" >&2; exit 1; }
  fi
  auth_header=(--header "Authorization: Bearer $secure_key")
  start llmpool-secure "curl -s -o /dev/null http://127.0.0.1:$secure_port/health" "$llmpool" serve --config "$work/secure.yaml"
  url[secure]="http://127.0.0.1:$secure_port"
  pid_of[secure]=${pids[-1]}
  # The allot front: the same config (data_dir, key, Redis) with allotments on.
  allot_port=$(free_port)
  sed -e "s|^  port: $secure_port\$|  port: $allot_port|" -e "/^rate_limits:/a\\  allotment_ms: $allotment_ms" "$work/secure.yaml" >"$work/allot.yaml"
  start llmpool-allot "curl -s -o /dev/null http://127.0.0.1:$allot_port/health" "$llmpool" serve --config "$work/allot.yaml"
  url[allot]="http://127.0.0.1:$allot_port"
  pid_of[allot]=${pids[-1]}
fi

body='{"model":"MODEL","messages":[{"role":"user","content":"Say hello."}],"max_tokens":8}'
for f in "${front_list[@]}"; do
  code=$(curl -s -o "$work/check-$f.json" -w '%{http_code}' -H 'Content-Type: application/json' \
    ${secure_key:+-H "Authorization: Bearer $secure_key"} -d "${body/MODEL/${model[$f]}}" "${url[$f]}/v1/chat/completions")
  [[ $code == 200 ]] || { echo "gateway.sh: $f answers $code to the benchmark request:" >&2; cat "$work/check-$f.json" >&2; exit 1; }
done

# CPU seconds (user + system) and RSS (KiB) of a process.
cpu_s() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

results=$work/results.jsonl
: >"$results"
measure() { # front load(wrk|RATE) round
  local f=$1 load=$2 round=$3 pid=${pid_of[$f]:-} cpu0=0 t0 t1 cpu1 out
  local b=${body/MODEL/${model[$f]}}
  [[ -n $pid ]] && cpu0=$(cpu_s "$pid")
  t0=$(date +%s.%N)
  if [[ $load == wrk ]]; then
    cat >"$work/post.lua" <<EOF
wrk.method = "POST"
wrk.body = '$b'
wrk.headers["Content-Type"] = "application/json"
EOF
    [[ ($f == secure || $f == allot) && -n $secure_key ]] && echo "wrk.headers[\"Authorization\"] = \"Bearer $secure_key\"" >>"$work/post.lua"
    out=$(wrk -t 2 -c 16 -d "${seconds}s" --latency -s "$work/post.lua" "${url[$f]}/v1/chat/completions")
    echo "$out" >"$work/wrk-$f-$round.txt"
    out=$(python3 - "$work/wrk-$f-$round.txt" <<'EOF'
import json, re, sys
text = open(sys.argv[1]).read()
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
lat = {p: ms(v, u) for p, v, u in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
errs = re.search(r"Socket errors:.*", text)
print(json.dumps({"rps": rps, "p50_ms": lat.get("50"), "p99_ms": lat.get("99"),
                  "bad": int(non2xx.group(1)) if non2xx else 0, "socket_errors": errs.group(0) if errs else ""}))
EOF
)
  else
    local hdr=()
    [[ $f == secure || $f == allot ]] && hdr=("${auth_header[@]}")
    out=$("$rate_load" --url "${url[$f]}/v1/chat/completions" --rate "$load" --duration "$seconds" \
      --connections "$connections" --body "$b" "${hdr[@]}")
    out=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); bad=sum(v for k,v in d["status"].items() if k!="200"); print(json.dumps({"rps": d["achieved_rps"], "p50_ms": d["p50_ms"], "p99_ms": d["p99_ms"], "bad": bad}))' "$out")
  fi
  t1=$(date +%s.%N)
  local cpu=null rss=null
  if [[ -n $pid ]]; then
    cpu1=$(cpu_s "$pid")
    cpu=$(python3 -c "print(round(($cpu1 - $cpu0) / ($t1 - $t0), 3))")
    rss=$(rss_kb "$pid")
  fi
  python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d.update(front=sys.argv[2], load=sys.argv[3], round=int(sys.argv[4]), cpu=json.loads(sys.argv[5]), rss_kb=json.loads(sys.argv[6])); print(json.dumps(d))' \
    "$out" "$f" "$load" "$round" "$cpu" "$rss" >>"$results"
  log "round $round, $f, $load: $(tail -n 1 "$results")"
}

# Warm every front up (connections, pools), then alternate the fronts within each load and round.
for f in "${front_list[@]}"; do
  wrk -t 2 -c 16 -d 2s -s /dev/null "${url[$f]}/health" >/dev/null 2>&1 || true
done
started=$(date -u '+%Y-%m-%d %H:%M UTC')
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for ((r = 1; r <= rounds; r++)); do
  order=("${front_list[@]}")
  ((r % 2 == 0)) && order=($(printf '%s\n' "${front_list[@]}" | tac))
  for load in wrk "${rate_list[@]}"; do
    for f in "${order[@]}"; do measure "$f" "$load" "$r"; done
  done
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the long run: RSS over many requests on the allot (else secure) front ------------------------------
soak_json=$work/soak.json
echo '{"samples": []}' >"$soak_json"
soak_front=""
[[ " ${front_list[*]} " == *" plain "* ]] && soak_front=plain
[[ " ${front_list[*]} " == *" secure "* ]] && soak_front=secure
[[ " ${front_list[*]} " == *" allot "* ]] && soak_front=allot  # the most state per request: slices, local tickets
if ((soak > 0)) && [[ -n $soak_front ]]; then
  top_rate=${rate_list[-1]}
  soak_s=$(((soak + top_rate - 1) / top_rate))
  log "long run: $soak requests at $top_rate RPS (${soak_s} s) on the $soak_front front, RSS every 5 s"
  spid=${pid_of[$soak_front]}
  samples=("0 $(rss_kb "$spid")")
  soak_auth=()
  [[ $soak_front == secure || $soak_front == allot ]] && soak_auth=("${auth_header[@]}")
  "$rate_load" --url "${url[$soak_front]}/v1/chat/completions" --rate "$top_rate" --duration "$soak_s" \
    --connections "$connections" --body "${body/MODEL/up}" "${soak_auth[@]}" >"$work/soak-load.json" &
  lpid=$!
  pids+=("$lpid")
  t_start=$(date +%s)
  while kill -0 "$lpid" 2>/dev/null; do
    sleep 5
    samples+=("$(($(date +%s) - t_start)) $(rss_kb "$spid")")
  done
  wait "$lpid"
  printf '%s\n' "${samples[@]}" | python3 -c 'import json,sys; load=json.load(open(sys.argv[1])); print(json.dumps({"samples": [list(map(int, l.split())) for l in sys.stdin if l.strip()], "load": load, "front": sys.argv[2]}))' "$work/soak-load.json" "$soak_front" >"$soak_json"
fi

# ---- report -------------------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
section=$(python3 - "$results" "$soak_json" <<EOF
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
soak = json.load(open(sys.argv[2]))
fronts = "$fronts".split(",")
loads = ["wrk"] + "$rates".split(",")
def med(front, load, key):
    vals = [r[key] for r in rows if r["front"] == front and r["load"] == load and r.get(key) is not None]
    return statistics.median(vals) if vals else None
def f(v, d=1):
    return "–" if v is None else f"{v:.{d}f}"
out = []
out.append("## Gateway")
out.append("")
out.append("Measured by \`bench/gateway.sh\` ($started, commit $commit); the machine is shared with other agents' builds and tests (load average $load_before at the start, $load_after at the end), so compare the ratios within this run, not the absolute figures.")
out.append("")
out.append("- command: \`bench/gateway.sh ${orig_args[*]}\`")
out.append("- machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); nginx $(nginx -v 2>&1 | sed 's|.*/||'), redis $(redis-server --version | sed 's/.*v=\([^ ]*\).*/\1/'), wrk (Debian)")
out.append("- upstream: \`llmpool-fake-upstream\` (no inference, 8-token non-streamed answer, no delays), $io_threads HTTP threads")
out.append("- fronts: direct = the upstream itself; nginx = $io_threads workers, keep-alive 64 to the upstream, no buffering; plain = llmpool (one \`openai\` model pointing at the upstream, $io_threads I/O threads), auth and limits off; secure = the same llmpool with $secure_what; allot = secure with \`rate_limits.allotment_ms: $allotment_ms\` (limits taken from Redis in slices, admitted from in process; docs/ratelimits.md)")
out.append("- loads: wrk \`-t 2 -c 16 -d ${seconds}s\` (closed loop); \`llmpool-rate-load\` at fixed rates over $connections keep-alive connections (open loop: latency from when each request was due); every figure is the median of $rounds round(s), fronts alternating in order")
out.append("")
out.append("| load | front | RPS | p50 ms | p99 ms | added p50 ms | added p99 ms | non-200 | llmpool CPU (cores) | llmpool RSS MiB |")
out.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for load in loads:
    base50, base99 = med("direct", load, "p50_ms"), med("direct", load, "p99_ms")
    for fr in fronts:
        rps, p50, p99 = med(fr, load, "rps"), med(fr, load, "p50_ms"), med(fr, load, "p99_ms")
        add50 = None if fr == "direct" or None in (p50, base50) else p50 - base50
        add99 = None if fr == "direct" or None in (p99, base99) else p99 - base99
        bad = sum(r.get("bad", 0) for r in rows if r["front"] == fr and r["load"] == load)
        rss = med(fr, load, "rss_kb")
        name = "c=16 (wrk)" if load == "wrk" else f"{load} RPS"
        out.append(f"| {name} | {fr} | {f(rps, 0)} | {f(p50, 3)} | {f(p99, 3)} | {f(add50, 3)} | {f(add99, 3)} | {bad} | {f(med(fr, load, 'cpu'), 2)} | {f(None if rss is None else rss / 1024, 1)} |")
out.append("")
ratios = []
n = med("nginx", "wrk", "rps")
for fr in ("secure", "allot", "plain"):
    v = med(fr, "wrk", "rps")
    if n and v:
        ratios.append(f"{fr} ÷ nginx = {v / n:.2f}")
if ratios:
    out.append("RPS at c=16: " + ", ".join(ratios) + " (target for secure: ≥ 0.8).")
top = loads[-1]
for fr in ("secure", "allot"):
    s99, d99 = med(fr, top, "p99_ms"), med("direct", top, "p99_ms")
    if s99 is not None and d99 is not None:
        out.append(f"Added p99 of {fr} at {top} RPS: {s99 - d99:.3f} ms (target < 1 ms).")
samples = soak.get("samples", [])
if samples:
    load = soak.get("load", {})
    first, last = samples[0][1], samples[-1][1]
    peak = max(s[1] for s in samples)
    after_warm = [s[1] for s in samples if s[0] >= 10] or [last]
    out.append("")
    out.append(f"Long run on the {soak.get('front')} front: {load.get('requests', 0)} requests at {int(load.get('rate', 0))} RPS (achieved {load.get('achieved_rps', 0):.0f}, p99 {load.get('p99_ms', 0):.2f} ms, statuses {load.get('status', {})}); RSS {first/1024:.1f} MiB before, {min(after_warm)/1024:.1f}–{max(after_warm)/1024:.1f} MiB from 10 s on, {last/1024:.1f} MiB at the end (peak {peak/1024:.1f}), sampled every 5 s:")
    out.append("")
    out.append("\`\`\`")
    out.append(" ".join(f"{t}s:{kb/1024:.1f}" for t, kb in samples))
    out.append("\`\`\`")
print("\n".join(out))
EOF
)
if ((write)); then
  python3 - "$out" "$section" <<'EOF'
import re, sys, os
path = sys.argv[1]
# Between markers, so that bench/compare.sh (which rewrites the file) keeps it.
section = ("<!-- gateway:begin (written by bench/gateway.sh; compare.sh keeps it) -->\n" + sys.argv[2].rstrip() +
           "\n<!-- gateway:end -->\n")
text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
m = re.search(r"^<!-- gateway:begin.*?^<!-- gateway:end -->\n", text, re.M | re.S) or \
    re.search(r"^## Gateway\n.*?(?=^## |^<!-- |\Z)", text, re.M | re.S)
text = text[:m.start()] + section + "\n" + text[m.end():] if m else text.rstrip() + "\n\n" + section
open(path, "w").write(text)
EOF
  log "wrote the Gateway section of $out"
else
  echo "$section"
fi
