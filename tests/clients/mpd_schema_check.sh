#!/usr/bin/env bash
# Validates edge's generated MPDs (VOD and live) against the DASH schema, with the
# xmlschema validator from PyPI. Not part of tests/run-all.sh: the schema itself
# (MPEG's DASH-MPD.xsd, github.com/MPEGGroup/DASHSchema) is in no package registry,
# and CI reaches only registries. Point DASH_XSD at a local copy to run it.
#
# Usage: DASH_XSD=/path/to/DASH-MPD.xsd tests/clients/mpd_schema_check.sh https://127.0.0.1:PORT
#        (against a running `edge demo`; its /streams/vod and /streams/live MPDs)
# Exit: 0 all valid, 1 a schema violation, 2 set-up problem.
set -uo pipefail
BASE=${1:-}
BASE=${BASE%/}
[[ "$BASE" =~ ^https?://[^/]+$ ]] || { echo "usage: DASH_XSD=... $0 https://HOST:PORT" >&2; exit 2; }
[ -f "${DASH_XSD:-}" ] || { echo "DASH_XSD must name a local DASH-MPD.xsd (not in any registry)" >&2; exit 2; }
cd "$(dirname "$0")/../.."
VENV=target/xsd-venv
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q xmlschema || exit 2
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for s in vod live; do
  curl -fsSk "$BASE/streams/$s/manifest.mpd" -o "$tmp/$s.mpd" || { echo "FAIL fetching $s MPD"; exit 1; }
done
# xlink.xsd and xml.xsd, which DASH-MPD.xsd imports from w3.org, ship with xmlschema.
"$VENV/bin/python" - "$DASH_XSD" "$tmp/vod.mpd" "$tmp/live.mpd" <<'PY'
import os, sys, xmlschema
base = os.path.join(os.path.dirname(xmlschema.__file__), "schemas")
schema = xmlschema.XMLSchema(sys.argv[1], locations={
    "http://www.w3.org/1999/xlink": os.path.join(base, "XLINK", "xlink.xsd"),
    "http://www.w3.org/XML/1998/namespace": os.path.join(base, "XML", "xml.xsd")})
bad = 0
for f in sys.argv[2:]:
    errors = list(schema.iter_errors(f))
    name = os.path.basename(f)
    if errors:
        bad += 1
        print(f"FAIL {name}: {errors[0].reason} at {errors[0].path}")
    else:
        print(f"PASS {name}: valid against {os.path.basename(sys.argv[1])}")
sys.exit(1 if bad else 0)
PY
