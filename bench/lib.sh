# bench/lib.sh -- shared by the bench/*.sh scripts (sourced, not run): messages,
# installing missing tools, stopping the servers a script started, port checks and the
# CPU accounting they report; then (second half) what idle-memory-bench.sh,
# scale-bench.sh and storm-bench.sh share: CPU lists, the open-file limit, test files
# and certificate, the wrk Lua script, RSS, per-worker CPU and connections, edge's
# /metrics, and the nginx and edge configs they run. Expects HOST, NGINX_HTTP_PORT,
# NGINX_HTTPS_PORT, EDGE_HTTP_PORT and EDGE_TLS_PORT to be set by the script.
# shellcheck shell=bash disable=SC2153

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

# the servers a script started, by name; stopped (TERM, then KILL after 5 s) on exit;
# children still alive then (nginx workers of a master that had to be killed) are
# killed too, so that they do not keep the ports
declare -A PID=()
stop_servers() {
  local s p t kids
  for s in "${!PID[@]}"; do
    p=${PID[$s]}
    kill -TERM "$p" 2>/dev/null || continue
    for ((t = 0; t < 50; t++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$p" 2>/dev/null; then
      kids=$(pgrep -P "$p" 2>/dev/null || true)
      kill -KILL "$p" 2>/dev/null || true
      # shellcheck disable=SC2086
      [[ -z $kids ]] || kill -KILL $kids 2>/dev/null || true
    fi
    wait "$p" 2>/dev/null || true
  done
  PID=()
}

# background clients a script started (wrk, idle-conns), by name; killed on exit
declare -A CLIENT=()
stop_clients() {
  local k
  for k in "${!CLIENT[@]}"; do
    kill -KILL "${CLIENT[$k]}" 2>/dev/null || true
    wait "${CLIENT[$k]}" 2>/dev/null || true
  done
  CLIENT=()
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
cpu_ticks() { stat_ticks 1 "$@"; }
# sum of utime ticks (user space only) of the given pids
user_ticks() { stat_ticks 0 "$@"; }
# voluntary context switches of all threads of a pid: how often it slept, waiting
sleeps() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '$1 == "voluntary_ctxt_switches:" { n += $2 } END { print n + 0 }'; }
stat_ticks() { # with_stime pid...
  local total=0 p line rest sys=$1
  local -a f
  shift
  for p; do
    line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    rest=${line##*) }
    read -r -a f <<<"$rest"
    total=$((total + f[11] + sys * f[12])) # fields 14 (utime) and 15 (stime)
  done
  echo "$total"
}

# ====================================================================== scale helpers
# Used by idle-memory-bench.sh, scale-bench.sh and storm-bench.sh.

cpu_model() { awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo; }

# a taskset CPU list ("0-3,8") -> one CPU number per line
cpu_list_expand() {
  local part
  local -a parts
  IFS=, read -r -a parts <<<"$1"
  for part in "${parts[@]}"; do
    if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then seq "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    elif [[ $part =~ ^[0-9]+$ ]]; then echo "$part"
    else die "bad CPU list '$1' (use numbers and ranges: 0-3,8)"; fi
  done
}
cpu_count() { cpu_list_expand "$1" | sort -un | wc -l; }

# the CPUs this script may run on that are not in list $1, as a comma list ("" if none)
other_cpus() {
  local allowed
  allowed=$(awk '/^Cpus_allowed_list:/{print $2}' /proc/self/status)
  comm -23 <(cpu_list_expand "$allowed" | sort -u) <(cpu_list_expand "$1" | sort -u) |
    sort -n | paste -sd, -
}

# Raise this shell's soft open-file limit to the hard limit (the servers and clients it
# starts inherit it); warn when that is below $1 descriptors.
raise_nofile() {
  local need=$1 hard
  hard=$(ulimit -Hn)
  if [[ $hard == unlimited ]]; then hard=$(cat /proc/sys/fs/nr_open); fi
  ulimit -Sn "$hard" 2>/dev/null || warn "could not raise the open-file limit to $hard (ulimit -n is $(ulimit -Sn))"
  if (($(ulimit -Sn) < need)); then
    warn "open-file limit $(ulimit -Sn) (hard $(ulimit -Hn)) is below the $need this run needs; raise the hard limit (as root: ulimit -Hn, or LimitNOFILE) or lower CONNS"
  fi
}

# ephemeral ports one source address has towards one server address
ephemeral_ports() { awk '{print $2 - $1 + 1}' /proc/sys/net/ipv4/ip_local_port_range; }

# $2 files of $3 MiB random data, $1/seg_000.ts ..., kept when already there
ensure_segments() { # dir nfiles mib
  local dir=$1 n=$2 bytes=$(($3 * 1024 * 1024)) i f made=0
  mkdir -p "$dir"
  for ((i = 0; i < n; i++)); do
    f=$(printf '%s/seg_%03d.ts' "$dir" "$i")
    if [[ ! -f $f || $(stat -c %s "$f") -ne $bytes ]]; then
      head -c "$bytes" /dev/urandom >"$f.tmp" && mv "$f.tmp" "$f"
      made=$((made + 1))
    fi
  done
  log "segments: $n x $3 MiB in $dir ($made newly generated)"
}

# $1/small.bin: 1 KiB of random data
ensure_small() {
  if [[ ! -f $1/small.bin || $(stat -c %s "$1/small.bin") -ne 1024 ]]; then
    head -c 1024 /dev/urandom >"$1/small.bin.tmp" && mv "$1/small.bin.tmp" "$1/small.bin"
  fi
}

# $1/cert.pem, $1/key.pem: ECDSA P-256 self-signed for localhost/127.0.0.1 (the pair
# host-bench.sh makes; either script reuses the other's)
ensure_cert() {
  [[ -s $1/cert.pem && -s $1/key.pem ]] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$1/key.pem" -out "$1/cert.pem" -days 365 -subj "/CN=localhost" \
    -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null || die "openssl could not make a certificate"
  log "generated ECDSA P-256 self-signed certificate"
}

# wrk Lua script to $1: GET string.format(PATTERN, k) for k = 0 .. N-1, round robin
# (each thread starts at a different k), and one WRKSTAT line at the end. Headers
# given to wrk with -H go into every request.
#   wrk ... -s FILE URL -- PATTERN N    (/seg_%03d.ts 32: the segments; /small.bin 1)
write_wrk_lua() {
  cat >"$1" <<'LUA'
-- Generated by bench/lib.sh (write_wrk_lua): requests string.format(pattern, k),
-- k = 0 .. n-1, round robin. Usage: wrk ... -s this.lua URL -- <pattern> <n>
local nthreads = 0
function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
end

local reqs, n, i = {}, 0, 0
function init(args)
  local pattern = args[1] or "/"
  n = tonumber(args[2]) or 1
  for k = 0, n - 1 do
    reqs[k] = wrk.format("GET", string.format(pattern, k))
  end
  i = ((tid or 0) * 7) % n -- spread the threads' starting points
end

function request()
  local r = reqs[i]
  i = (i + 1) % n
  return r
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKSTAT requests=%.0f bytes=%.0f duration_us=%.0f connect=%.0f read=%.0f write=%.0f status=%.0f timeout=%.0f p50_us=%.0f p99_us=%.0f\n",
    summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write,
    e.status, e.timeout, latency:percentile(50), latency:percentile(99)))
end
LUA
}

# the value of KEY ($2) in the WRKSTAT line of wrk output file $1 (empty if none)
wrkstat() {
  awk -v k="$2" '$1 == "WRKSTAT" { for (i = 2; i <= NF; i++) { split($i, p, "="); if (p[1] == k) print p[2] } }' "$1"
}
# socket errors + non-2xx/3xx + timeouts of a WRKSTAT line in file $1
wrk_errors() {
  awk '$1 == "WRKSTAT" { for (i = 2; i <= NF; i++) { split($i, p, "="); v[p[1]] = p[2] }
    print v["connect"] + v["read"] + v["write"] + v["status"] + v["timeout"] }' "$1"
}

# sum of VmRSS (KiB) of the given pids
rss_kib() {
  local total=0 p v
  for p; do
    v=$(awk '/^VmRSS:/{print $2}' "/proc/$p/status" 2>/dev/null) || v=0
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# bytes a process has read with read(2) (rchar of /proc/PID/io; for wrk: what it took
# off its sockets, TLS records included over HTTPS); empty when unreadable
proc_rchar() { awk '/^rchar:/{print $2}' "/proc/$1/io" 2>/dev/null || true; }

# A server's serving workers: "ID TICKS" lines, ID a worker pid (nginx: the master's
# children) or thread id (edge: worker 0 is the main thread, which also runs the admin
# plane and signal handling, and workers 1.. are the threads named edge-worker-N),
# TICKS its utime+stime. Args: server name, server pid.
worker_ticks() {
  local p t comm
  if [[ $1 == nginx ]]; then
    for p in $(pgrep -P "$2" 2>/dev/null || true); do echo "$p $(cpu_ticks "$p")"; done
  else
    for t in /proc/"$2"/task/*; do
      comm=$(cat "$t/comm" 2>/dev/null) || continue
      [[ ${t##*/} == "$2" || $comm == edge-worker-* ]] || continue
      echo "${t##*/} $(cpu_ticks "$2/task/${t##*/}")"
    done
  fi
}

# established TCP connections whose local port is $1 (the server's side of them)
established_on() { ss -tnH state established "( sport = :$1 )" 2>/dev/null | wc -l; }

# client connections to port $1 that have received more than $2 bytes (tcp_info
# bytes_received, from ss -i): past the TLS handshake and into a response
receiving_from() {
  ss -tniH state established "( dport = :$1 )" 2>/dev/null | awk -v m="$2" '
    match($0, /bytes_received:[0-9]+/) { if (substr($0, RSTART + 15, RLENGTH - 15) + 0 > m + 0) n++ }
    END { print n + 0 }'
}

# established connections on local port $1 held by each pid in $2..: one count a line,
# 0 for a pid that holds none
established_by_pid() {
  local port=$1 counts p
  shift
  counts=$(ss -tnpH state established "( sport = :$port )" 2>/dev/null | awk '
    match($0, /pid=[0-9]+/) { n[substr($0, RSTART + 4, RLENGTH - 4)]++ }
    END { for (p in n) print p, n[p] }')
  for p; do awk -v p="$p" '$1 == p { n = $2 } END { print n + 0 }' <<<"$counts"; done
}

# edge's Prometheus text from its admin listener ($1 HOST:PORT), with the bearer token
# from its state dir $2; nothing when it cannot be had
edge_metrics() {
  local tok
  tok=$(cat "$2/admin.token" 2>/dev/null) || return 0
  curl -s --max-time 5 -H "Authorization: Bearer $tok" "http://$1/metrics" 2>/dev/null || true
}

# the values of metric $1 (every label set) in the Prometheus text on stdin, one a line
metric_values() { awk -v m="$1" '$1 == m || index($1, m "{") == 1 { print $NF }'; }

# "min/max" of the numbers on stdin ("n/a" when there are none)
min_max() {
  awk 'NR == 1 { lo = hi = $1 } { if ($1 + 0 < lo + 0) lo = $1; if ($1 + 0 > hi + 0) hi = $1 }
    END { if (NR) printf "%s/%s\n", lo, hi; else print "n/a" }'
}

# nginx config for the scale scripts, to $1. Uses OUT, WWW (root), HOST,
# NGINX_HTTP_PORT (empty: no plain listener), NGINX_HTTPS_PORT, WORKERS
# (worker_processes), MAX_CONNS (worker_connections), IDLE_TIMEOUT (keepalive_timeout,
# s). Every listen has reuseport and edge's backlog (4096); the certificate is
# $OUT/cert.pem; no kTLS; access_log off; worker_rlimit_nofile = the hard limit.
# OPEN_FILE_CACHE=N (default 0: off): open_file_cache max=N with open_file_cache_valid
# 1s, the same as edge's content.open_file_cache = N (write_edge_conf).
write_nginx_conf() {
  local f=$1 name nofile http_listen="" open_files=""
  name=$(basename "$f" .conf)
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited ]] && nofile=1048576
  [[ -n $NGINX_HTTP_PORT ]] && http_listen="listen $HOST:$NGINX_HTTP_PORT reuseport backlog=4096;"
  ((${OPEN_FILE_CACHE:-0} > 0)) &&
    open_files="open_file_cache max=$OPEN_FILE_CACHE inactive=60s; open_file_cache_valid 1s;"
  {
    [[ $EUID -eq 0 ]] && echo "user root;"
    cat <<CONF
worker_processes $WORKERS;
worker_rlimit_nofile $nofile;
daemon off;
pid $f.pid;
error_log $OUT/logs/$name-error.log warn;
events {
    worker_connections $MAX_CONNS;
}
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout ${IDLE_TIMEOUT}s;
    $open_files
    types { video/mp2t ts; }
    default_type application/octet-stream;
    client_body_temp_path $OUT/nginx-tmp/body;
    proxy_temp_path $OUT/nginx-tmp/proxy;
    fastcgi_temp_path $OUT/nginx-tmp/fastcgi;
    uwsgi_temp_path $OUT/nginx-tmp/uwsgi;
    scgi_temp_path $OUT/nginx-tmp/scgi;
    server {
        $http_listen
        listen $HOST:$NGINX_HTTPS_PORT ssl reuseport backlog=4096;
        ssl_certificate $OUT/cert.pem;
        ssl_certificate_key $OUT/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        # no kTLS (ssl_conf_command Options KTLS not set)
        root $WWW;
    }
}
CONF
  } >"$f"
}

# edge config for the scale scripts, to $1. Uses WWW, HOST, EDGE_HTTP_PORT (empty: no
# plain listener), EDGE_TLS_PORT, EDGE_ADMIN_PORT, EDGE_STATE (state_dir), MAX_CONNS
# (limits.max_connections), IDLE_TIMEOUT (limits.idle_timeout_secs). ktls off,
# shutdown_grace_secs 0, and min_send_rate_bytes_per_sec 0: nginx has no rate floor,
# and thousands of connections sharing a core can fall below edge's default one.
# EDGE_LIMITS_EXTRA: more [limits] lines (e.g. max_tls_handshakes_per_worker = 8).
# OPEN_FILE_CACHE=N (default 0: off): content.open_file_cache = N, valid 1 s (nginx the
# same, write_nginx_conf).
write_edge_conf() {
  local http_listen=""
  [[ -n $EDGE_HTTP_PORT ]] && http_listen="http_listen = \"$HOST:$EDGE_HTTP_PORT\""
  cat >"$1" <<CONF
[server]
tls_listen = "$HOST:$EDGE_TLS_PORT"
$http_listen
admin_listen = "$HOST:$EDGE_ADMIN_PORT"
state_dir = "$EDGE_STATE"
shutdown_grace_secs = 0

[content]
root = "$WWW"
open_file_cache = ${OPEN_FILE_CACHE:-0}
open_file_cache_valid_ms = 1000

[tls]
cert_path = "$OUT/cert.pem"
key_path = "$OUT/key.pem"
ktls = "off"

[limits]
max_connections = $MAX_CONNS
max_requests_per_connection = 1000000
idle_timeout_secs = $IDLE_TIMEOUT
min_send_rate_bytes_per_sec = 0
${EDGE_LIMITS_EXTRA:-}
CONF
}

# Start server $1 (nginx or edge) from config $2, pinned to CPU list $3 (edge with
# EDGE_WORKER_THREADS=$WORKERS), logs to $OUT/logs/$4.*; ready when URL path $5 answers
# 200 on the TLS port. Sets PID[$1].
start_pinned() {
  local s=$1 conf=$2 cpus=$3 logp=$OUT/logs/$4 path=$5 t
  if [[ $s == nginx ]]; then
    "$NGINX_BIN" -t -q -p "$OUT" -c "$conf" -e "$logp.error.log" ||
      die "nginx config test failed for $conf (see $logp.error.log)"
    taskset -c "$cpus" "$NGINX_BIN" -p "$OUT" -c "$conf" -e "$logp.error.log" \
      >"$logp.stdout" 2>"$logp.stderr" &
  else
    "$EDGE_BIN" serve --config "$conf" --check >"$logp.check" 2>&1 ||
      { cat "$logp.check" >&2; die "edge --check refused $conf"; }
    EDGE_WORKER_THREADS=$WORKERS taskset -c "$cpus" "$EDGE_BIN" serve --config "$conf" \
      </dev/null >"$logp.stdout" 2>"$logp.stderr" &
  fi
  PID[$s]=$!
  for ((t = 0; t < 300; t++)); do
    if ! kill -0 "${PID[$s]}" 2>/dev/null; then
      tail -n 20 "$logp.stderr" "$logp.stdout" >&2 2>/dev/null || true
      unset "PID[$s]"
      die "$s exited during startup (logs: $logp.*)"
    fi
    if curl -sk -o /dev/null --fail --max-time 2 "https://$HOST:$(tls_port "$s")$path"; then
      return 0
    fi
    sleep 0.1
  done
  die "$s did not answer within 30 s (logs: $logp.*)"
}

# die when one of the given ports (empty ones skipped) already accepts connections
check_ports_free() {
  local p
  for p; do
    [[ -n $p ]] || continue
    if port_busy "$p"; then die "port $HOST:$p is already in use (see the *_PORT variables in the script's header)"; fi
  done
  return 0
}
