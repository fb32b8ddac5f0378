#!/usr/bin/env bash
# Regenerate the bundled demo clip served by `edge` (edge/demo/www/content/).
#
# One short encode of ffmpeg's lavfi test pattern (testsrc2) plus a sine tone:
#   video: H.264 Main@3.0, 640x360, 25 fps, keyframe exactly every 2 s (no scene-cut
#          keyframes), no B-frames (so every segment presents from its first decoded
#          frame: a looping live channel then has no gap at the loop seam), ~350 kbit/s
#   audio: AAC-LC, 48 kHz stereo, 64 kbit/s
# then remuxed WITHOUT re-encoding (-c copy) into three packagings:
#   www/content/hls_ts/    master.m3u8 + index.m3u8 + seg_NNN.ts            (HLS, MPEG-TS)
#   www/content/hls_fmp4/  master.m3u8 + index.m3u8 + init.mp4 + seg_NNN.m4s (HLS, fMP4/CMAF)
#   www/content/dash/      manifest.mpd (SegmentTemplate $Number$, separate video and
#                          audio adaptation sets) + init-N.m4s + chunk-N-NNNNN.m4s
# The intermediate source.mp4 is written to a temp dir and not kept.
#
# Usage: edge/demo/make-clip.sh            (DUR=12 SEG=2 by default)
# Needs: ffmpeg (Debian: apt-get install ffmpeg), with libx264.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$HERE/www/content
DUR=${DUR:-12}          # clip length, seconds
SEG=${SEG:-2}           # segment duration = keyframe interval, seconds
FPS=25
GOP=$((SEG * FPS))
# RFC 6381 codec strings matching the encode below (Main profile, level 3.0; AAC-LC)
VCODEC=avc1.4d401e
ACODEC=mp4a.40.2

command -v ffmpeg >/dev/null || { echo "ffmpeg not found (apt-get install ffmpeg)" >&2; exit 1; }
FF="ffmpeg -hide_banner -loglevel error -nostdin -y"
# bitexact: no encoder version strings in the output, so re-runs with the same ffmpeg
# produce identical files (smaller diffs when committed).
BITEXACT="-fflags +bitexact -flags:v +bitexact -flags:a +bitexact"

# Audio: cut to a whole number of 1024-sample AAC frames that ends at or before DUR, so
# the encoder's padding does not spill a tiny extra audio segment past the video.
ASAMPLES=$(( DUR * 48000 / 1024 * 1024 ))

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# 1) the single encode
$FF -f lavfi -i "testsrc2=size=640x360:rate=$FPS" \
    -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=48000" \
    -t "$DUR" -map 0:v -map 1:a \
    -c:v libx264 -profile:v main -level 3.0 -preset veryfast -bf 0 -pix_fmt yuv420p -threads 1 \
    -b:v 350k -maxrate 400k -bufsize 800k \
    -g $GOP -keyint_min $GOP -sc_threshold 0 -x264-params "scenecut=0:open_gop=0" \
    -af "atrim=end_sample=$ASAMPLES" -c:a aac -profile:a aac_low -b:a 64k -ac 2 -ar 48000 \
    $BITEXACT -map_metadata -1 -movflags +faststart "$TMP/source.mp4"

# 2) remux into the three packagings (replace only our three folders)
rm -rf "$OUT/hls_ts" "$OUT/hls_fmp4" "$OUT/dash"
mkdir -p "$OUT/hls_ts" "$OUT/hls_fmp4" "$OUT/dash"

# 2a) HLS with MPEG-TS segments
$FF -i "$TMP/source.mp4" -map 0 -c copy $BITEXACT -f hls -hls_time $SEG -hls_playlist_type vod \
    -hls_segment_filename "$OUT/hls_ts/seg_%03d.ts" -master_pl_name master.m3u8 "$OUT/hls_ts/index.m3u8"

# 2b) HLS with fMP4 segments
$FF -i "$TMP/source.mp4" -map 0 -c copy $BITEXACT -f hls -hls_time $SEG -hls_playlist_type vod \
    -hls_segment_type fmp4 -hls_fmp4_init_filename init.mp4 \
    -hls_segment_filename "$OUT/hls_fmp4/seg_%03d.m4s" -master_pl_name master.m3u8 "$OUT/hls_fmp4/index.m3u8"

# 2c) DASH: SegmentTemplate with $Number$ (no SegmentTimeline), video and audio in
#     separate adaptation sets. The muxer writes segments relative to the MPD, so run it
#     from inside the output folder.
( cd "$OUT/dash" && $FF -i "$TMP/source.mp4" -map 0:v -map 0:a -c copy $BITEXACT -f dash \
    -seg_duration $SEG -use_template 1 -use_timeline 0 \
    -init_seg_name 'init-$RepresentationID$.m4s' \
    -media_seg_name 'chunk-$RepresentationID$-$Number%05d$.m4s' \
    -adaptation_sets "id=0,streams=v id=1,streams=a" manifest.mpd )

# 3) ffmpeg 5.1 leaves CODECS out of the master playlists when stream-copying; add it
#    (players use it to set up MSE before loading the first segment).
for m in "$OUT/hls_ts/master.m3u8" "$OUT/hls_fmp4/master.m3u8"; do
  grep -q 'CODECS=' "$m" || sed -i "s/^#EXT-X-STREAM-INF:\(.*\)$/#EXT-X-STREAM-INF:\1,CODECS=\"$VCODEC,$ACODEC\"/" "$m"
done

# 4) sanity checks
for f in hls_ts/master.m3u8 hls_ts/index.m3u8 hls_ts/seg_000.ts \
         hls_fmp4/master.m3u8 hls_fmp4/index.m3u8 hls_fmp4/init.mp4 hls_fmp4/seg_000.m4s \
         dash/manifest.mpd; do
  [ -s "$OUT/$f" ] || { echo "missing $OUT/$f" >&2; exit 1; }
done
grep -q '\$Number' "$OUT/dash/manifest.mpd" || { echo "manifest.mpd has no \$Number\$ template" >&2; exit 1; }
[ "$(grep -c '<AdaptationSet' "$OUT/dash/manifest.mpd")" = 2 ] || { echo "manifest.mpd: expected 2 adaptation sets" >&2; exit 1; }

du -sh "$OUT/hls_ts" "$OUT/hls_fmp4" "$OUT/dash" | sed "s|$OUT/||"
