#!/usr/bin/env bash
# curl against a running edge (the demo): GET, HEAD, a range request, a conditional
# request answered 304, a CORS preflight, and keep-alive across a 404.
#
# Usage: tests/clients/curl_test.sh https://127.0.0.1:PORT
# Output: one PASS/FAIL line per check, then "N passed, M failed". Exit 0 only if all passed.
set -uo pipefail
BASE=${1:?usage: $0 https://HOST:PORT}
BASE=${BASE%/}
SEG=/content/hls_ts/seg_000.ts
ROOT=$(cd "$(dirname "$0")/../.." && pwd)/edge/demo/www
size=$(stat -c %s "$ROOT$SEG")
pass=0; fail=0
check() { # name, condition-result (0 = ok), detail
  if [ "$2" = 0 ]; then echo "PASS $1"; pass=$((pass+1)); else echo "FAIL $1: $3"; fail=$((fail+1)); fi
}
hdr() { grep -i "^$1:" | head -1 | cut -d' ' -f2- | tr -d '\r'; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
C=(curl -sk --http1.1 --max-time 20)

# GET
"${C[@]}" -D "$tmp/h" -o "$tmp/b" "$BASE/content/hls_ts/master.m3u8"
st=$(head -1 "$tmp/h" | cut -d' ' -f2); ct=$(hdr content-type < "$tmp/h")
[ "$st" = 200 ] && [ "$ct" = application/vnd.apple.mpegurl ] && grep -q '^#EXTM3U' "$tmp/b"
check "GET master.m3u8: 200 $ct" $? "status $st type $ct"

# GET a segment, byte-identical
"${C[@]}" -D "$tmp/h" -o "$tmp/seg" "$BASE$SEG"
cmp -s "$tmp/seg" "$ROOT$SEG" && [ "$(hdr content-type < "$tmp/h")" = video/mp2t ]
check "GET seg_000.ts: byte-identical, video/mp2t" $? "$(head -1 "$tmp/h")"
etag=$(hdr etag < "$tmp/h"); lm=$(hdr last-modified < "$tmp/h")

# HEAD
"${C[@]}" -I -D "$tmp/hh" -o /dev/null "$BASE$SEG"
[ "$(head -1 "$tmp/hh" | cut -d' ' -f2)" = 200 ] && [ "$(hdr content-length < "$tmp/hh")" = "$size" ] &&
  [ "$(hdr etag < "$tmp/hh")" = "$etag" ]
check "HEAD seg_000.ts: 200, Content-Length $size, same ETag" $? "$(tr -d '\r' < "$tmp/hh" | head -5 | tr '\n' ' ')"

# Range
"${C[@]}" -D "$tmp/h" -o "$tmp/r" -H 'Range: bytes=100-1099' "$BASE$SEG"
cr=$(hdr content-range < "$tmp/h")
[ "$(head -1 "$tmp/h" | cut -d' ' -f2)" = 206 ] && [ "$cr" = "bytes 100-1099/$size" ] &&
  cmp -s "$tmp/r" <(tail -c +101 "$ROOT$SEG" | head -c 1000)
check "Range bytes=100-1099: 206, $cr, right bytes" $? "$(head -1 "$tmp/h") $cr"

# Unsatisfiable range
code=$("${C[@]}" -o /dev/null -D "$tmp/h" -w '%{http_code}' -H "Range: bytes=$size-" "$BASE$SEG")
[ "$code" = 416 ] && [ "$(hdr content-range < "$tmp/h")" = "bytes */$size" ]
check "Range past the end: 416, Content-Range bytes */$size" $? "$code"

# Conditional
code=$("${C[@]}" -o /dev/null -w '%{http_code}' -H "If-None-Match: $etag" "$BASE$SEG")
[ "$code" = 304 ]; check "If-None-Match $etag: 304" $? "$code"
code=$("${C[@]}" -o /dev/null -w '%{http_code}' -H "If-Modified-Since: $lm" "$BASE$SEG")
[ "$code" = 304 ]; check "If-Modified-Since: 304" $? "$code"
code=$("${C[@]}" -o /dev/null -w '%{http_code}' -H 'If-None-Match: "stale"' "$BASE$SEG")
[ "$code" = 200 ]; check "If-None-Match with another ETag: 200" $? "$code"

# CORS preflight
"${C[@]}" -X OPTIONS -D "$tmp/h" -o /dev/null -H 'Origin: https://player.example' \
  -H 'Access-Control-Request-Method: GET' -H 'Access-Control-Request-Headers: range' "$BASE$SEG"
[ "$(head -1 "$tmp/h" | cut -d' ' -f2)" = 204 ] && [ "$(hdr access-control-allow-origin < "$tmp/h")" = '*' ] &&
  hdr access-control-allow-methods < "$tmp/h" | grep -q GET && [ "$(hdr access-control-allow-headers < "$tmp/h")" = range ]
check "CORS preflight: 204 with Allow-Origin/Methods/Headers" $? "$(tr -d '\r' < "$tmp/h" | tr '\n' ' ')"

# A deliberate 404 keeps the connection: 3 requests, 1 connection.
out=$("${C[@]}" -o /dev/null -o /dev/null -o /dev/null -w '%{http_code} %{num_connects}\n' \
  "$BASE/content/hls_ts/index.m3u8" "$BASE/content/hls_ts/seg_999.ts" "$BASE/content/dash/manifest.mpd")
[ "$(echo "$out" | awk '{print $1}' | tr '\n' ' ')" = "200 404 200 " ] && [ "$(echo "$out" | awk '{s+=$2} END {print s}')" = 1 ]
check "200, 404, 200 on one keep-alive connection" $? "$(echo "$out" | tr '\n' ' ')"

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
