# bench/lib.sh -- shared by host-bench.sh and playlist-bench.sh (sourced, not run):
# messages, installing missing tools, stopping the servers a script started, port
# checks and the CPU accounting both report. Expects HOST, NGINX_HTTP_PORT,
# NGINX_HTTPS_PORT, EDGE_HTTP_PORT and EDGE_TLS_PORT to be set by the script.

log() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

# wrk, openssl, curl, nginx and taskset, installed with apt-get if missing (root)
install_missing() {
  local -a pkgs=()
  command -v wrk >/dev/null || pkgs+=(wrk)
  command -v openssl >/dev/null || pkgs+=(openssl)
  command -v curl >/dev/null || pkgs+=(curl ca-certificates)
  command -v taskset >/dev/null || pkgs+=(util-linux)
  if [[ -z ${NGINX_BIN:-} ]] && ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    pkgs+=(nginx)
  fi
  ((${#pkgs[@]})) || return 0
  [[ $EUID -eq 0 ]] || die "missing packages: ${pkgs[*]} (run as root to have them installed)"
  log "installing missing packages: ${pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}

# the servers a script started, by name; stopped (TERM, then KILL after 5 s) on exit
declare -A PID=()
stop_servers() {
  local s p t
  for s in "${!PID[@]}"; do
    p=${PID[$s]}
    kill -TERM "$p" 2>/dev/null || continue
    for ((t = 0; t < 50; t++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  PID=()
}

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
http_port() { if [[ $1 == nginx ]]; then echo "$NGINX_HTTP_PORT"; else echo "$EDGE_HTTP_PORT"; fi; }
tls_port() { if [[ $1 == nginx ]]; then echo "$NGINX_HTTPS_PORT"; else echo "$EDGE_TLS_PORT"; fi; }

# pid and all its (recursive) children
proc_tree() {
  local p c
  for p; do
    echo "$p"
    for c in $(pgrep -P "$p" 2>/dev/null || true); do proc_tree "$c"; done
  done
}

# sum of utime+stime ticks of the given pids (a process's stat covers all its threads)
cpu_ticks() {
  local total=0 p line rest
  local -a f
  for p; do
    line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    rest=${line##*) }
    read -r -a f <<<"$rest"
    total=$((total + f[11] + f[12])) # fields 14 (utime) and 15 (stime)
  done
  echo "$total"
}
