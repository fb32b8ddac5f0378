#!/usr/bin/env bash
# The admin plane of a running edge (the demo) seen from outside: /metrics passes
# `promtool check metrics` (exit 0; every lint line it prints is shown), the counters moved
# since an earlier scrape, and the admin listener is not reachable on a non-loopback
# address of this host.
#
# Usage: tests/clients/admin_metrics_test.sh http://127.0.0.1:PORT TOKEN [BEFORE]
#   BEFORE: a /metrics scrape taken before the traffic (the caller ran clients in between);
#   with it, edge_tls_handshakes_total and edge_responses_by_route_total must have risen.
# Needs promtool (Debian package prometheus). Output: one PASS/FAIL/SKIP line per check,
# then "N passed, M failed". Exit 0 only if all passed.
set -uo pipefail
ADMIN=${1:?usage: $0 http://HOST:PORT TOKEN [BEFORE]}
ADMIN=${ADMIN%/}
TOKEN=${2:?usage: $0 http://HOST:PORT TOKEN [BEFORE]}
BEFORE=${3:-}
pass=0; fail=0
check() { # name, condition-result (0 = ok), detail
  if [ "$2" = 0 ]; then echo "PASS $1"; pass=$((pass+1)); else echo "FAIL $1: $3"; fail=$((fail+1)); fi
}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# sum of a metric's series whose labels contain $2 (a literal substring, may be empty)
total() { awk -v n="$1" -v l="${2:-}" '
  $0 !~ /^#/ { split($1, a, "{"); if (a[1] == n && index($1, l)) s += $NF } END { printf "%d", s }' "$3"; }

code=$(curl -s --max-time 10 -o "$tmp/m" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$ADMIN/metrics")
lines=$(wc -l < "$tmp/m")
[ "$code" = 200 ] && [ -s "$tmp/m" ]
check "GET /metrics with the bearer token: 200 ($lines lines)" $? "HTTP $code"

# promtool: exit status decides; lint findings are printed either way
if command -v promtool >/dev/null; then
  promtool check metrics < "$tmp/m" > "$tmp/lint" 2>&1; rc=$?
  n=$(grep -c . "$tmp/lint")
  [ "$rc" = 0 ]
  check "promtool check metrics: exit 0, $n lint line(s)" $? "exit $rc, $n line(s)"
  sed 's/^/  promtool: /' "$tmp/lint"
else
  check "promtool check metrics" 1 "promtool not installed (apt-get install prometheus)"
fi

# counters moved since BEFORE
if [ -n "$BEFORE" ]; then
  for m in 'edge_tls_handshakes_total:kind="full"' edge_tls_handshakes_total edge_responses_by_route_total \
           'edge_responses_by_route_total:route="segment",class="2xx"'; do
    name=${m%%:*}; labels=""; [ "$name" != "$m" ] && labels=${m#*:}
    b=$(total "$name" "$labels" "$BEFORE"); a=$(total "$name" "$labels" "$tmp/m")
    [ "$a" -gt "$b" ]
    check "$name${labels:+{$labels\}} rose during the client tests: $b -> $a" $? "did not rise"
  done
fi

# the admin listener answers on loopback only
port=${ADMIN##*:}
ip=$(hostname -I 2>/dev/null | tr ' ' '\n' | grep -E '^[0-9]+(\.[0-9]+){3}$' | grep -v '^127\.' | head -1)
if [ -z "$ip" ]; then
  echo "SKIP admin listener not on non-loopback addresses: this host has no non-loopback IPv4 (hostname -I)"
else
  code=$(curl -s --max-time 3 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "http://$ip:$port/metrics")
  rc=$?
  # connection refused (7) or no answer (28) both mean not reachable; any HTTP status means reachable
  [ "$rc" != 0 ] && [ "$code" = 000 ]
  check "admin port $port not reachable on $ip (curl exit $rc)" $? "HTTP $code from http://$ip:$port/metrics"
  # the control: the same port on loopback does answer, so the failure above is the bind
  code=$(curl -s --max-time 3 -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/metrics")
  [ "$code" = 401 ]; check "admin port $port answers on 127.0.0.1 (401 without the token)" $? "HTTP $code"
fi

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
