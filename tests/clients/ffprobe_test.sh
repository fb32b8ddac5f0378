#!/usr/bin/env bash
# Non-browser client check: ffprobe (FFmpeg's HLS and DASH demuxers) reads each demo stream from a
# running edge server over HTTPS and decodes every video frame: ffmpeg's own files, edge's
# generated VOD manifests (all frames), and the generated live HLS and DASH: LIVE_FRAMES
# video frames from the live edge, decoded by ffmpeg (the same HLS and DASH demuxers)
# with -frames:v. ffprobe's -read_intervals cannot bound a live read there: at the
# channel's loop seam the timestamps start again, ffprobe takes the frames after it for
# frames before its interval and stops early (100 of 150 frames whenever a seam fell
# inside the read, seen in about a third of runs).
#
# Usage: tests/clients/ffprobe_test.sh https://127.0.0.1:PORT
#   CLIP_SECONDS (default 12, = DUR in edge/demo/make-clip.sh) and FPS (default 25) give the
#   expected frame count; EXPECTED_FRAMES overrides it. The server's certificate is not
#   verified (-tls_verify 0: edge uses a self-signed certificate in tests).
# Output: one PASS/FAIL line per stream, then "N passed, M failed". Exit 0 only if all passed.
set -uo pipefail

BASE=${1:-${EDGE_BASE:-}}
BASE=${BASE%/}
if [[ ! "$BASE" =~ ^https?://[^/]+$ ]]; then
  echo "usage: $0 https://HOST:PORT" >&2
  exit 2
fi
command -v ffprobe >/dev/null || { echo "ffprobe not found (tests/browser/install.sh installs ffmpeg)" >&2; exit 2; }

CLIP_SECONDS=${CLIP_SECONDS:-12}
FPS=${FPS:-25}
EXPECTED=${EXPECTED_FRAMES:-$((CLIP_SECONDS * FPS))}
TIMEOUT=${TIMEOUT:-120}   # seconds per stream

pass=0; fail=0
err=$(mktemp); trap 'rm -f "$err"' EXIT

LIVE_FRAMES=${LIVE_FRAMES:-150}
for spec in hls_ts:content/hls_ts/master.m3u8 hls_fmp4:content/hls_fmp4/master.m3u8 \
            dash:content/dash/manifest.mpd \
            gen_hls_ts:streams/vod-ts/master.m3u8 gen_hls_fmp4:streams/vod-fmp4/master.m3u8 \
            gen_hls_audio:streams/vod/master.m3u8 gen_dash:streams/vod/manifest.mpd \
            live_hls:streams/live/master.m3u8 live_hls_ts:streams/live-ts/master.m3u8 \
            live_dash:streams/live/manifest.mpd; do
  name=${spec%%:*}; url="$BASE/${spec#*:}"
  t0=$(date +%s%N)
  if [[ $name == live_* ]]; then
    want=$LIVE_FRAMES
    # -progress prints frame=N; -fps_mode passthrough keeps every decoded frame
    prog=$(timeout "$TIMEOUT" ffmpeg -nostdin -v error -tls_verify 0 -rw_timeout 15000000 -i "$url" \
             -map 0:v:0 -frames:v "$LIVE_FRAMES" -fps_mode passthrough -f null - -progress pipe:1 \
             </dev/null 2>"$err")
    rc=$?
    out="nb_read_frames=$(sed -n 's/^frame=//p' <<<"$prog" | tail -1)"
  else
    want=$EXPECTED
    # -rw_timeout (µs): give up on a stalled connection instead of hanging
    out=$(timeout "$TIMEOUT" ffprobe -v error -tls_verify 0 -rw_timeout 15000000 \
            -count_frames -select_streams v:0 \
            -show_entries stream=codec_name,width,height,nb_read_frames -of default=nw=1 \
            "$url" </dev/null 2>"$err")
    rc=$?
  fi
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  frames=$(sed -n 's/^nb_read_frames=//p' <<<"$out" | head -1)
  codec=$(sed -n 's/^codec_name=//p' <<<"$out" | head -1)
  size="$(sed -n 's/^width=//p' <<<"$out" | head -1)x$(sed -n 's/^height=//p' <<<"$out" | head -1)"
  what="($codec $size, ffprobe)"
  [[ $name == live_* ]] && what="(decoded by ffmpeg -frames:v)"
  if [ "$rc" = 0 ] && [ "$frames" = "$want" ]; then
    echo "PASS $name: $frames/$want video frames $what in ${ms} ms  $url"
    pass=$((pass + 1))
  else
    why="got '${frames}' of $want frames, exit $rc"
    [ "$rc" = 124 ] && why="$why (timed out after ${TIMEOUT}s)"
    [ -s "$err" ] && why="$why: $(grep -v 'Packet corrupt\|out of order' "$err" | head -c 300 | tr '\n' ' ')"
    echo "FAIL $name: $why  $url"
    fail=$((fail + 1))
  fi
done

echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
