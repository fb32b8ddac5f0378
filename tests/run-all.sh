#!/usr/bin/env bash
# tests/run-all.sh - the whole test suite, on a fresh machine of this kind (Debian
# bookworm, Rust stable with cargo-nextest, root). Installs what it needs first.
#
# Stages (each runs even if an earlier one failed, so one run shows every failure):
#   install   apt packages (ffmpeg, chromium, nginx, wrk, strace, qemu, ...) and the
#             browser test's npm packages, only what is missing
#   fmt       cargo fmt --all --check
#   clippy    cargo clippy --workspace --all-targets -- -D warnings
#   build     cargo build --workspace --bins (edge, tls-peer, tls-nonce-relay: used by later stages)
#   unit+e2e  cargo nextest run --workspace (unit tests, loopback e2e, strace zero-copy),
#             all but the five-minute steady-population storm test
#   clients   `edge demo` on loopback, then curl, ffprobe and headless Chromium
#             (hls.js, dash.js) against it: ffmpeg's files, generated VOD and live
#             manifests, a signed URL; then its admin plane: /metrics through promtool,
#             counters moved, admin port closed on non-loopback addresses, the admin UI
#             in Chromium; and a rendition with a segment deleted must cost no more TLS
#             handshakes than the intact one (screenshots in tests/browser/screenshots)
#   storm-5min the five-minute steady-population storm test (tests/e2e/storms.rs), run
#             in the background from unit+e2e on, through clients: its result
#   ktls-vm   the kTLS suite in a QEMU guest running Debian's kernel (both modes)
#   cache-vm  the disk-cache suite in the guest: an HDD-throttled cache disk must not
#             slow hot clients (cold reads on the I/O pool), a failing (dm error)
#             disk is taken out of service without a wrong byte
#   ansible   ansible-lint (production profile) and --syntax-check of ansible/, the example
#             vault opening, its inventory passing the roles' argument specs (pinned
#             Ansible from PyPI, tests/fleet/ansible-env.sh)
#   fleet     three Debian guests (debootstrap image, cached; built in the background
#             from the end of install, beside the compile stages) provisioned over SSH by
#             ansible/site.yml: one origin, two edges; idempotence, byte-identical HTTPS
#             through the cache fill, kTLS, resumption across edges, ticket-key rotation,
#             reload under load, bad input (tests/fleet/fleet-suite.sh)
#   fuzz      each cargo-fuzz target (fuzz/) for FUZZ_SECONDS (default 10); the
#             targets are built at nice 19 in the background from clients on
# Ends with "suite: N passed, M failed" over the stages; exit 0 only if all passed.
# Each stage's last line gives its wall time, the CPU time the whole machine spent
# meanwhile (busy share of all cores) and the time the hypervisor stole: the three
# tell a slow host from a slower suite.
#
# Env: SKIP_STAGES="ktls-vm clients" skips named stages (reported as failed, so a
# skipped stage can never look green); KEEP_LOGS=1 keeps the demo's logs;
# EDGE_BIN=path runs the clients stage with that edge binary (default target/debug/edge).
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
export DEBIAN_FRONTEND=noninteractive CARGO_TERM_COLOR=never
# Debug builds with line tables only (file:line in backtraces, no variable info): the
# dependencies already are (Cargo.toml); this makes our crates and every test binary
# quicker to build and link too.
export CARGO_PROFILE_DEV_DEBUG=line-tables-only
# A clean build keeps nothing for next time: incremental compilation's bookkeeping
# would only slow it down.
export CARGO_INCREMENTAL=0
passed=(); failed=()

# cpu_ticks -> "BUSY STEAL" clock ticks of the whole machine since boot (/proc/stat)
cpu_ticks() {
    local _c u n s i io irq sirq st
    read -r _c u n s i io irq sirq st _ < /proc/stat
    echo "$((u + n + s + irq + sirq)) $st"
}
stage() { # NAME CMD...
    local name=$1; shift
    if [[ " ${SKIP_STAGES:-} " == *" $name "* ]]; then
        echo "=== $name: SKIPPED by SKIP_STAGES (counted as failed)"
        failed+=("$name(skipped)"); return
    fi
    echo "=== $name"
    local t0=$SECONDS c0 c1 hz usage
    c0=$(cpu_ticks)
    if "$@"; then local verdict=ok; passed+=("$name"); else local verdict=FAILED; failed+=("$name"); fi
    # How busy the machine was (every process, not only this stage's) and how much
    # time the hypervisor took (steal): what tells a slow host from a slower suite.
    c1=$(cpu_ticks); hz=$(getconf CLK_TCK)
    usage=$(awk -v a="$c0" -v b="$c1" -v hz="$hz" -v n="$(nproc)" -v w=$((SECONDS - t0)) 'BEGIN {
        split(a, x, " "); split(b, y, " "); w = (w < 1 ? 1 : w)
        printf "cpu %.0f s = %.0f%% of %d cores, steal %.0f s", (y[1] - x[1]) / hz,
            100 * (y[1] - x[1]) / hz / w / n, n, (y[2] - x[2]) / hz }')
    echo "=== $name: $verdict ($((SECONDS - t0)) s; $usage)"
}

# Work run beside the stages. bg NAME NICE CMD... starts CMD (a function too) at that
# nice level, its output in $BG_LOGS/NAME.log, unless a stage named NAME is in
# SKIP_STAGES; bg_wait NAME waits for it once, remembers its exit status and returns
# it (1 if it never started).
BG_LOGS=$(mktemp -d)
declare -A bg_pids=() bg_status=()
bg() {
    local name=$1 level=$2; shift 2
    [[ " ${SKIP_STAGES:-} " != *" $name "* ]] || return 0
    (renice -n "$level" -p "$BASHPID" > /dev/null; "$@") > "$BG_LOGS/$name.log" 2>&1 &
    bg_pids[$name]=$!
}
bg_wait() {
    local name=$1 rc=0
    if [ -z "${bg_status[$name]:-}" ]; then
        [ -n "${bg_pids[$name]:-}" ] || return 1
        wait "${bg_pids[$name]}" || rc=$?
        bg_status[$name]=$rc
    fi
    return "${bg_status[$name]}"
}

install() {
    # prometheus: for promtool (clients stage); bookworm has no smaller package with it
    local want=(ffmpeg chromium libnss3-tools nginx wrk strace curl openssl ca-certificates
                qemu-system-x86 cpio kmod xz-utils python3-minimal bc prometheus
                socat debootstrap e2fsprogs binutils iproute2)
    local missing=() p
    for p in "${want[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "apt-get install ${missing[*]}"
        apt-get update -q || return 1
        # --no-remove first: bookworm's qemu-system-x86 may want to replace a backported
        # qemu-utils; allow that only if the careful attempt fails.
        apt-get install -y -q --no-install-recommends --no-remove "${missing[@]}" ||
            apt-get install -y -q --no-install-recommends "${missing[@]}" || return 1
    fi
    # Only promtool is wanted: a Prometheus server the package may have started would
    # hold :9090 (edge's default admin port).
    if command -v systemctl >/dev/null && systemctl is-enabled prometheus >/dev/null 2>&1; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
    command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest || return 1
    tests/browser/install.sh
}

# cargo-fuzz and the fuzz targets, built (fuzz/ is its own workspace and target dir)
fuzz_build() {
    command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz || return 1
    # Only the stable toolchain exists here; cargo-fuzz needs -Zsanitizer.
    # --dev: no optimisation, with debug assertions and overflow checks (what a
    # parser bug trips first); builds in half the time of -O, which matters more for
    # a few seconds per target than executions per second
    (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz build --dev)
}

fuzz_targets() {
    bg_wait fuzz || { cat "$BG_LOGS/fuzz.log"; echo "building the fuzz targets failed"; return 1; }
    local t i rc=0
    local -x RUSTC_BOOTSTRAP=1
    # libFuzzer runs on one core: two targets at a time, one per core here
    local -a pids=() names=()
    fuzz_wait() { # report the targets started since the last call
        for i in "${!pids[@]}"; do
            t=${names[$i]}
            if wait "${pids[$i]}"; then
                echo "fuzz $t: $(grep -m1 '^Done' "fuzz/$t.log")"
            else
                tail -n 40 "fuzz/$t.log"; echo "fuzz target $t FAILED (input in fuzz/artifacts/$t)"; rc=1
            fi
        done
        pids=() names=()
    }
    for t in request_head request_path range_header manifest_query media_probe cache_records; do
        mkdir -p "fuzz/corpus/$t"
        (cd fuzz && cargo fuzz run --dev "$t" "corpus/$t" "seeds/$t" -- \
            -max_total_time="${FUZZ_SECONDS:-10}" -max_len=4096) > "fuzz/$t.log" 2>&1 &
        pids+=($!) names+=("$t")
        [ ${#pids[@]} -lt 2 ] || fuzz_wait
    done
    fuzz_wait
    return $rc
}

demo_clients() {
    local tmp rc=0 line base admin token
    tmp=$(mktemp -d)
    # The demo serves a copy of the bundled site plus hls_ts_gap: the TS rendition with one
    # media segment deleted (missing_segment_test.js).
    cp -r edge/demo/www "$tmp/www" && cp -r "$tmp/www/content/hls_ts" "$tmp/www/content/hls_ts_gap" &&
        rm "$tmp/www/content/hls_ts_gap/seg_003.ts" || { rm -rf "$tmp"; return 1; }
    "${EDGE_BIN:-target/debug/edge}" demo --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --state-dir "$tmp/state" --root "$tmp/www" > "$tmp/stdout" 2> "$tmp/stderr" &
    local pid=$!
    for _ in $(seq 1 100); do
        line=$(grep -m1 '^edge: listening' "$tmp/stdout" 2>/dev/null) && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "${line:-}" ]; then
        echo "edge demo did not start:"; cat "$tmp/stderr"; kill "$pid" 2>/dev/null; return 1
    fi
    base="https://$(echo "$line" | sed -n 's/.*tls=\([^ ]*\).*/\1/p')"
    admin="http://$(echo "$line" | sed -n 's/.*admin=\([^ ]*\).*/\1/p')"
    # the admin token: from the banner's login URL, else the state directory
    for _ in $(seq 1 50); do
        token=$(grep -m1 'admin UI:' "$tmp/stdout" | sed -n 's/.*login?token=\([^ ]*\).*/\1/p')
        [ -n "$token" ] && break
        sleep 0.1
    done
    [ -n "$token" ] || token=$(cat "$tmp/state/admin.token" 2>/dev/null)
    echo "edge demo at $base, admin plane at $admin"
    [ -n "$token" ] || { echo "edge demo printed no admin token (banner, $tmp/state/admin.token)"; rc=1; }
    curl -s --max-time 10 -H "Authorization: Bearer $token" -o "$tmp/metrics.before" "$admin/metrics" ||
        { echo "GET $admin/metrics failed"; rc=1; }
    tests/clients/curl_test.sh "$base" || rc=1
    tests/clients/ffprobe_test.sh "$base" || rc=1
    # the signed-URL case plays the path the demo printed (signed with its generated key)
    local signed=""
    for _ in $(seq 1 50); do
        signed=$(grep -m1 'signed HLS:' "$tmp/stdout" | sed 's/.*src=//') && [ -n "$signed" ] && break
        sleep 0.1
    done
    [ -n "$signed" ] || { echo "edge demo printed no signed URL"; rc=1; }
    (cd tests/browser && node playback_test.js --base "$base" --signed-src "$signed") || rc=1
    # the admin plane, with the counters the clients above moved
    tests/clients/admin_metrics_test.sh "$admin" "$token" "$tmp/metrics.before" || rc=1
    # a short handshake storm: connection-per-request clients (a curl each) hitting 404s
    # for 6 s; the detector must raise it (and the storms page then has one to draw)
    local storm_until=$(( $(date +%s) + 6 )) j burst=()
    for j in 1 2 3 4 5 6; do
        ( while [ "$(date +%s)" -lt "$storm_until" ]; do
              curl -sk --max-time 5 -o /dev/null -A storm-burst/1 "$base/content/gone/seg_$j.ts"
          done ) &
        burst+=($!)
    done
    wait "${burst[@]}"
    local storms="" k
    for k in $(seq 1 30); do
        storms=$(curl -s --max-time 5 -H "Authorization: Bearer $token" "$admin/api/storms")
        grep -q '"start_ms"' <<<"$storms" && break
        sleep 0.5
    done
    if grep -q '"start_ms"' <<<"$storms"; then
        echo "PASS handshake storm detected: $(grep -o '"cause":"[a-z_]*"' <<<"$storms" | head -1) $(grep -o '"top_prefixes":\[\["[^"]*"' <<<"$storms" | head -1)"
    else
        echo "FAIL no handshake storm raised by the 404 burst: $storms"; rc=1
    fi
    # the UI's rates cover the last 10 s: keep a trickle of requests (and handshakes) going
    # while Chromium looks, so its numbers and screenshots show live traffic
    ( while :; do curl -sk --max-time 5 -o /dev/null -o /dev/null "$base/content/hls_ts/seg_000.ts" \
          "$base/content/hls_ts_gap/seg_003.ts"; sleep 0.2; done ) &
    local trickle=$!
    (cd tests/browser && node admin_ui_test.js --base "$admin" --token "$token") || rc=1
    kill "$trickle"; wait "$trickle" 2>/dev/null
    (cd tests/browser && node missing_segment_test.js --base "$base" --admin "$admin" --token "$token" \
        --broken-src /content/hls_ts_gap/master.m3u8 --missing /content/hls_ts_gap/seg_003.ts) || rc=1
    kill -TERM "$pid"; wait "$pid" 2>/dev/null
    if grep -qi panick "$tmp/stderr"; then echo "edge panicked:"; cat "$tmp/stderr"; rc=1; fi
    echo "screenshots: $(ls tests/browser/screenshots/*.png 2>/dev/null | wc -l) in tests/browser/screenshots/"
    [ "${KEEP_LOGS:-0}" = 1 ] && echo "demo logs kept in $tmp" || rm -rf "$tmp"
    return $rc
}

stage install install
# The fleet's guest image (the guest kernel, the pinned Ansible venv, debootstrap: mostly
# downloads and unpacking) is built beside the compile stages instead of inside the
# fleet stage; fleet waits for it, and its log is printed there if the build failed.
bg fleet 10 tests/fleet/build-rootfs.sh
fleet_stage() {
    bg_wait fleet || { echo "background build of the guest image failed:"; cat "$BG_LOGS/fleet.log"; }
    tests/fleet/fleet-suite.sh
}
stage fmt cargo fmt --all --check
stage clippy cargo clippy --workspace --all-targets -- -D warnings
stage build cargo build --workspace --bins
# The five-minute steady-population storm test mostly waits (a quarter of a core), so
# it runs in its own nextest run in the background, beside the rest of unit+e2e and
# the clients stage (which mostly waits for Chromium's playback too), and the
# storm-5min stage collects its result. Both nextest runs start together: one builds
# the test binaries while the other waits for cargo's lock, then finds them built.
STEADY_STORM='test(a_steady_population_raises_no_storm_in_five_minutes)'
bg storm-5min 0 cargo nextest run --workspace --no-fail-fast -E "$STEADY_STORM"
steady_stage() {
    local rc=0
    bg_wait storm-5min || rc=$?
    cat "$BG_LOGS/storm-5min.log"
    return $rc
}
stage unit+e2e cargo nextest run --workspace --no-fail-fast -E "not $STEADY_STORM"
# cargo-fuzz and the fuzz targets are built from here on at the lowest priority: the
# clients and ktls-vm stages leave most of the two cores idle (18 % and 56 % busy
# alone) and have no timing thresholds a niced compile could tip; cache-vm has (a p99
# ratio), so the build is waited for before it starts. (Clippy in the background as
# well saved nothing: after the build it costs a third of its time alone, as the
# build scripts and proc macros are shared, and it slowed the stages beside it.)
bg fuzz 19 fuzz_build
stage clients demo_clients
stage storm-5min steady_stage
stage ktls-vm tests/vm/edge-ktls-suite.sh
bg_wait fuzz || true  # the fuzz stage reports it
stage cache-vm tests/vm/cache-disk-suite.sh
stage ansible tests/fleet/lint.sh
stage fleet fleet_stage
stage fuzz fuzz_targets

echo
echo "passed stages: ${passed[*]:-none}"
echo "failed stages: ${failed[*]:-none}"
echo "suite: ${#passed[@]} passed, ${#failed[@]} failed"
rm -rf "$BG_LOGS"
[ ${#failed[@]} -eq 0 ]
