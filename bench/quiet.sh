# Sourced by compare.sh and routing.sh: wait_quiet waits, up to $quiet_wait
# seconds (0: not at all), until the machine is quiet, logging with the
# caller's `log`. Other work on a shared machine ruins the figures.
# PSI's avg10 is the share of the last 10 s in which some task waited for a CPU.
wait_quiet() {
  ((quiet_wait > 0)) && [[ -r /proc/pressure/cpu ]] || return 0
  local waited=0 avg
  while :; do
    avg=$(sed -n 's/^some avg10=\([0-9.]*\).*/\1/p' /proc/pressure/cpu)
    awk -v a="$avg" 'BEGIN { exit !(a < 5) }' && return 0
    if ((waited >= quiet_wait)); then
      log "machine still busy after ${quiet_wait}s (CPU pressure ${avg}%); going on"
      return 0
    fi
    ((waited % 60 == 0)) && log "waiting for a quiet machine (CPU pressure ${avg}%)"
    sleep 5
    waited=$((waited + 5))
  done
}
