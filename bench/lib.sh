# Shared by the bench scripts (sourced): a work folder with the background
# processes the script starts, stopped and removed at exit, and free
# loopback ports.
#
# bench_work NAME: makes $work (llmpool-NAME.XXXXXX under $TMPDIR), empties
# `pids` and sets the traps: at exit every pid in `pids` is killed and
# waited for, then $work is removed, or kept (and logged) when the script
# set keep=1 or is failing. The script defines log().

bench_work() {
  work=$(mktemp -d "${TMPDIR:-/tmp}/llmpool-$1.XXXXXX")
  pids=()
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
}

bench_cleanup() {
  local rc=$?
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if ((${keep:-0} || rc != 0)); then log "work folder kept: $work"; else rm -rf "$work"; fi
  exit "$rc"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# plain_weights_args LLMPOOL: prints --no-repack where llama.cpp's AMX
# kernels fail on this CPU (`llmpool check-cpu` exits 1), so that
# llama-server, the reference, runs there at all, on the plain weight buffers
# llmpool falls back to itself (engine/weight_layouts.h).
plain_weights_args() {
  local out
  out=$("$1" check-cpu 2>/dev/null) && return 0
  grep -q '^weight layouts: plain buffers only' <<<"$out" && echo "--no-repack"
  return 0
}
