#!/usr/bin/env bash
# Re-vendor the browser players used by the demo pages into edge/demo/www/lib/:
#   hls.min.js       from npm hls.js   (dist/hls.min.js)
#   dash.all.min.js  from npm dashjs   (dist/modern/umd/dash.all.min.js)
# and record the versions in www/lib/VERSIONS. Nothing is loaded from a CDN at run time.
#
# Usage: edge/demo/vendor-players.sh [HLSJS_VERSION [DASHJS_VERSION]]
# Needs: node + npm with access to the npm registry.
set -euo pipefail

HLSJS_VERSION=${1:-${HLSJS_VERSION:-1.7.4}}
DASHJS_VERSION=${2:-${DASHJS_VERSION:-5.2.1}}
HERE=$(cd "$(dirname "$0")" && pwd)
LIB=$HERE/www/lib

command -v npm >/dev/null || { echo "npm not found (apt-get install npm)" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

cd "$TMP"
npm init -y >/dev/null
npm install --no-audit --no-fund --ignore-scripts --save-exact \
    "hls.js@$HLSJS_VERSION" "dashjs@$DASHJS_VERSION" >/dev/null

HLS_SRC=node_modules/hls.js/dist/hls.min.js
DASH_SRC=node_modules/dashjs/dist/modern/umd/dash.all.min.js
[ -f "$DASH_SRC" ] || DASH_SRC=node_modules/dashjs/dist/dash.all.min.js   # dash.js 4.x layout
for f in "$HLS_SRC" "$DASH_SRC"; do [ -s "$f" ] || { echo "missing $f in the npm package" >&2; exit 1; }; done

ver() { node -p "require('./node_modules/$1/package.json').version"; }
HV=$(ver hls.js); DV=$(ver dashjs)

mkdir -p "$LIB"
cp "$HLS_SRC" "$LIB/hls.min.js"
cp "$DASH_SRC" "$LIB/dash.all.min.js"
# licenses travel with the code (dash.all.min.js's header points at its .LICENSE.txt)
cp node_modules/hls.js/LICENSE "$LIB/hls.js.LICENSE.txt"
cp node_modules/dashjs/LICENSE.md "$LIB/dashjs.LICENSE.txt"
if [ -f "$DASH_SRC.LICENSE.txt" ]; then cp "$DASH_SRC.LICENSE.txt" "$LIB/dash.all.min.js.LICENSE.txt"; fi
{
  echo "# Vendored by edge/demo/vendor-players.sh from the npm registry; do not edit by hand."
  printf '%-17s %-15s %-34s %s\n' "# file" "package" "path in package" "sha256"
  printf '%-17s %-15s %-34s %s\n' hls.min.js "hls.js@$HV" "${HLS_SRC#node_modules/hls.js/}" \
    "$(sha256sum "$LIB/hls.min.js" | cut -d' ' -f1)"
  printf '%-17s %-15s %-34s %s\n' dash.all.min.js "dashjs@$DV" "${DASH_SRC#node_modules/dashjs/}" \
    "$(sha256sum "$LIB/dash.all.min.js" | cut -d' ' -f1)"
  echo "# licenses: hls.js $(node -p "require('./node_modules/hls.js/package.json').license") (hls.js.LICENSE.txt)," \
       "dashjs $(node -p "require('./node_modules/dashjs/package.json').license") (dashjs.LICENSE.txt)"
} > "$LIB/VERSIONS"
cat "$LIB/VERSIONS"
ls -l "$LIB"
