//! Generated manifests over real HTTP and HTTPS (issue 7): the signalling table row
//! by row (status, Cache-Control, CORS, and the connection still serving after each
//! answer), LL-HLS blocking reload (held until the segment is complete, 400 beyond
//! last + 2, answered at the hold limit, a thousand held requests costing no CPU),
//! signed URLs with key rotation, `edge ingest` / start-up refusing broken
//! packaged folders with a message naming the stream and the defect, and an edge
//! rendering the same manifests from its origin's description.
//!
//! The streams are the bundled demo clip (6 segments of 2 s), ingested at start-up.

use std::future::Future;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use edge_tests::{edge_bin, AnyClient, Client, Response, TempDir, TestServer};
use manifest::token::SigningKeys;
use tokio::net::TcpStream;

const LISTENERS: [(bool, &str); 2] = [(false, "plain HTTP"), (true, "TLS")];
const NEW_KEY: &str = "k2 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const OLD_KEY: &str = "k1 ffeeddccbbaa99887766554433221100";
/// Segment duration of the bundled clip, ms.
const SEG_MS: u64 = 2000;

fn content(folder: &str) -> PathBuf {
    edge::demo::bundled_root().join("content").join(folder)
}

fn now_ms() -> u64 {
    edge::streams::now_ms()
}

/// Writes a 0600 key file with both keys (the new one signs).
fn key_file(dir: &Path) -> PathBuf {
    let p = dir.join("url.keys");
    std::fs::write(&p, format!("{NEW_KEY}\n{OLD_KEY}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A server publishing `vod` (DASH folder), `live` (the same, looping since
/// `epoch_secs`, 20 s DVR), `live-ts` and `signed` (VOD, tokens required).
async fn server(dir: &TempDir, epoch_secs: u64, manifests_extra: &str) -> TestServer {
    let keys = key_file(dir.path());
    let stream = |name: &str, folder: &str, live: bool, signed: bool| {
        format!(
            "[[streams]]\nname = \"{name}\"\nsource = \"{}\"\nlive = {live}\nsigned = {signed}\ndvr_window_secs = 20\nepoch_secs = {epoch_secs}\n",
            content(folder).display()
        )
    };
    let extra = format!(
        "[manifests]\nkeys_file = \"{}\"\n{manifests_extra}\n{}{}{}{}",
        keys.display(),
        stream("vod", "dash", false, false),
        stream("live", "dash", true, false),
        stream("live-ts", "hls_ts", true, false),
        stream("signed", "hls_fmp4", false, true),
    );
    TestServer::start(&extra).await
}

async fn connect(s: &TestServer, tls: bool) -> AnyClient {
    s.client(tls).await
}

async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: no answer within {secs} s"),
    }
}

async fn get(c: &mut AnyClient, path: &str, what: &str) -> Response {
    c.send(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nOrigin: https://player.example\r\n\r\n")
            .as_bytes(),
    )
    .await;
    within(10, what, c.read_response(false))
        .await
        .unwrap_or_else(|| panic!("{what}: connection closed without a response"))
}

/// The live window as the edge lists it: (first, last) media sequence numbers.
fn window_of(playlist: &Response) -> (u64, u64) {
    let text = String::from_utf8_lossy(&playlist.body);
    let pl = m3u8_rs::parse_media_playlist_res(text.as_bytes()).expect("a media playlist");
    let first = pl.media_sequence;
    (first, first + pl.segments.len() as u64 - 1)
}

/// Asserts a deliberate refusal: status, Cache-Control, CORS, keep-alive, and the
/// same connection serving the master playlist next.
async fn refused(c: &mut AnyClient, path: &str, status: u16, cache: &str, label: &str) {
    let what = format!("{label}: GET {path}");
    let r = get(c, path, &what).await;
    assert_eq!(
        r.status,
        status,
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("cache-control"), Some(cache), "{what}");
    assert_eq!(r.header("access-control-allow-origin"), Some("*"), "{what}");
    assert_eq!(r.header("connection"), Some("keep-alive"), "{what}");
    let next = get(
        c,
        "/streams/vod/master.m3u8",
        &format!("{what}, then the master playlist"),
    )
    .await;
    assert_eq!(
        next.status, 200,
        "{what}: the connection did not keep serving"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signalling_table_row_by_row_on_both_listeners() {
    let dir = TempDir::new("sig");
    let s = server(&dir, now_ms() / 1000 - 3600, "").await;
    let keys = SigningKeys::parse(&format!("{NEW_KEY}\n{OLD_KEY}")).unwrap();
    for (tls, label) in LISTENERS {
        let mut c = connect(&s, tls).await;
        let pl = get(&mut c, "/streams/live/0/index.m3u8", label).await;
        assert_eq!(pl.status, 200);
        assert_eq!(
            pl.header("content-type"),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(pl.header("cache-control"), Some("public, max-age=1"));
        let (first, last) = window_of(&pl);
        assert!(
            last - first >= 8,
            "a 20 s DVR window of 2 s segments: {first}..{last}"
        );

        // 200 rows
        let seg = get(&mut c, &format!("/streams/live/0/{last}.m4s"), label).await;
        assert_eq!(seg.status, 200, "{label}: newest live segment");
        assert_eq!(seg.header("cache-control"), Some("public, max-age=86400"));
        let init = get(&mut c, "/streams/live/1/init.mp4", label).await;
        assert_eq!(init.status, 200, "{label}: init segment");
        let mpd = get(&mut c, "/streams/live/manifest.mpd", label).await;
        assert_eq!(mpd.status, 200);
        assert_eq!(mpd.header("content-type"), Some("application/dash+xml"));
        dash_mpd_core::parse(std::str::from_utf8(&mpd.body).unwrap()).expect("the live MPD parses");
        let vod = get(&mut c, "/streams/vod/0/index.m3u8", label).await;
        assert_eq!(vod.header("cache-control"), Some("public, max-age=300"));
        assert!(String::from_utf8_lossy(&vod.body).contains("#EXT-X-ENDLIST"));
        let desc = get(&mut c, "/streams/vod/stream.json", label).await;
        assert_eq!(desc.header("content-type"), Some("application/json"));

        // 4xx rows, each keeping the connection
        refused(
            &mut c,
            "/streams/nope/master.m3u8",
            404,
            "public, max-age=2",
            label,
        )
        .await;
        refused(
            &mut c,
            "/streams/live/9/index.m3u8",
            404,
            "public, max-age=2",
            label,
        )
        .await;
        refused(
            &mut c,
            "/streams/live-ts/0/init.mp4",
            404,
            "public, max-age=2",
            label,
        )
        .await;
        refused(
            &mut c,
            "/streams/vod/0/6.m4s",
            404,
            "public, max-age=2",
            label,
        )
        .await;
        refused(
            &mut c,
            &format!("/streams/live/0/{}.m4s", last + 5),
            404,
            "public, max-age=1",
            label,
        )
        .await;
        refused(
            &mut c,
            &format!("/streams/live/0/{}.m4s", first - 5),
            410,
            "public, max-age=3600",
            label,
        )
        .await;
        refused(
            &mut c,
            "/streams/live/0/0.m4s",
            410,
            "public, max-age=3600",
            label,
        )
        .await;
        refused(
            &mut c,
            &format!("/streams/live/0/index.m3u8?_HLS_msn={}", last + 10),
            400,
            "no-store",
            label,
        )
        .await;
        for q in [
            "_HLS_msn=abc",
            "_HLS_msn=99999999999999999999999",
            "_HLS_msn=1&_HLS_msn=2",
            "_HLS_part=1",
            "_HLS_msn=-3",
        ] {
            refused(
                &mut c,
                &format!("/streams/live/0/index.m3u8?{q}"),
                400,
                "no-store",
                label,
            )
            .await;
        }
        refused(
            &mut c,
            "/streams/signed/master.m3u8",
            403,
            "no-store",
            label,
        )
        .await;
        let expired = keys.sign("/streams/signed/", now_ms() / 1000 - 10);
        refused(
            &mut c,
            &format!("/s/{expired}/streams/signed/master.m3u8"),
            403,
            "no-store",
            label,
        )
        .await;
        let good = keys.sign("/streams/signed/", now_ms() / 1000 + 600);
        let tampered = good.replacen('-', "0-", 1);
        refused(
            &mut c,
            &format!("/s/{tampered}/streams/signed/master.m3u8"),
            403,
            "no-store",
            label,
        )
        .await;
        let ok = get(
            &mut c,
            &format!("/s/{good}/streams/signed/master.m3u8"),
            label,
        )
        .await;
        assert_eq!(
            ok.status, 200,
            "{label}: a valid token after the refusals, same connection"
        );
        // HEAD of a generated playlist: the length, no body.
        c.send(b"HEAD /streams/vod/master.m3u8 HTTP/1.1\r\nHost: test\r\n\r\n")
            .await;
        let head = within(5, "HEAD", c.read_response(true)).await.unwrap();
        assert_eq!(head.status, 200);
        assert!(
            head.header("content-length")
                .unwrap()
                .parse::<u64>()
                .unwrap()
                > 50
        );
    }
    let m = s.metrics_text().await;
    for reason in [
        "unknown",
        "token",
        "bad_query",
        "future",
        "gone",
        "too_far_ahead",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(&format!(
                "edge_manifest_refusals_total{{reason=\"{reason}\"}}"
            )) && !l.ends_with(" 0")),
            "refusal reason {reason} not counted:\n{m}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_play_through_relative_uris_and_rotate_keys() {
    let dir = TempDir::new("signed");
    let s = server(&dir, 0, "").await;
    let new = SigningKeys::parse(NEW_KEY).unwrap();
    let old = SigningKeys::parse(OLD_KEY).unwrap();
    let other = SigningKeys::parse("k1 0123456789abcdef0123456789abcdef").unwrap();
    for (tls, label) in LISTENERS {
        let mut c = connect(&s, tls).await;
        for (keys, name) in [(&new, "new key"), (&old, "old key")] {
            let t = keys.sign("/streams/signed/", now_ms() / 1000 + 60);
            let base = format!("/s/{t}/streams/signed");
            let master = get(&mut c, &format!("{base}/master.m3u8"), label).await;
            assert_eq!(master.status, 200, "{label}: {name}");
            // Everything below the master is reached through relative URIs.
            let media = get(&mut c, &format!("{base}/0/index.m3u8"), label).await;
            assert_eq!(media.status, 200, "{label}: {name}");
            let seg = get(&mut c, &format!("{base}/0/0.m4s"), label).await;
            assert_eq!(seg.status, 200, "{label}: {name}: segment");
            assert_eq!(
                seg.body,
                std::fs::read(content("hls_fmp4").join("seg_000.m4s")).unwrap(),
                "{label}: the segment's bytes"
            );
        }
        // A key the edge does not have, and a token for another stream's prefix.
        let t = other.sign("/streams/signed/", now_ms() / 1000 + 60);
        refused(
            &mut c,
            &format!("/s/{t}/streams/signed/master.m3u8"),
            403,
            "no-store",
            label,
        )
        .await;
        let t = new.sign("/streams/vod/", now_ms() / 1000 + 60);
        refused(
            &mut c,
            &format!("/s/{t}/streams/signed/master.m3u8"),
            403,
            "no-store",
            label,
        )
        .await;
    }
}

/// Waits until the live clock is `offset_ms` into a segment (epoch on whole seconds).
async fn align_to_segment(epoch_ms: u64, offset_ms: u64) {
    let into = (now_ms() - epoch_ms) % SEG_MS;
    let wait = (SEG_MS + offset_ms - into) % SEG_MS;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_reload_holds_until_the_segment_is_complete() {
    let dir = TempDir::new("block");
    let epoch = now_ms() / 1000 - 600;
    let s = server(&dir, epoch, "").await;
    for (tls, label) in LISTENERS {
        let mut c = connect(&s, tls).await;
        align_to_segment(epoch * 1000, 100).await;
        let (_, last) = window_of(&get(&mut c, "/streams/live/0/index.m3u8", label).await);
        // The next segment completes about 1.9 s from now.
        let t0 = Instant::now();
        let r = get(
            &mut c,
            &format!("/streams/live/0/index.m3u8?_HLS_msn={}", last + 1),
            label,
        )
        .await;
        let held = t0.elapsed();
        assert_eq!(r.status, 200, "{label}");
        let (_, new_last) = window_of(&r);
        assert_eq!(
            new_last,
            last + 1,
            "{label}: the answer lists the awaited segment"
        );
        assert!(
            held >= Duration::from_millis(1500) && held <= Duration::from_millis(SEG_MS + 100),
            "{label}: held {held:?}; the segment completed ~1.9 s after the request"
        );
        assert_eq!(
            r.header("cache-control"),
            Some("public, max-age=12"),
            "{label}"
        );
        // Beyond last + 2: 400 at once.
        let t0 = Instant::now();
        let r = get(
            &mut c,
            &format!("/streams/live/0/index.m3u8?_HLS_msn={}", new_last + 3),
            label,
        )
        .await;
        assert_eq!(r.status, 400, "{label}");
        assert!(
            t0.elapsed() < Duration::from_millis(300),
            "{label}: 400 took {:?}",
            t0.elapsed()
        );
        // An msn already there: at once.
        let t0 = Instant::now();
        let r = get(
            &mut c,
            &format!("/streams/live/1/index.m3u8?_HLS_msn={new_last}"),
            label,
        )
        .await;
        assert_eq!(r.status, 200, "{label}");
        assert!(t0.elapsed() < Duration::from_millis(300), "{label}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_request_is_answered_at_the_hold_limit() {
    let dir = TempDir::new("limit");
    let epoch = now_ms() / 1000 - 600;
    let s = server(&dir, epoch, "max_hold_ms = 700").await;
    for (tls, label) in LISTENERS {
        let mut c = connect(&s, tls).await;
        align_to_segment(epoch * 1000, 100).await;
        let (_, last) = window_of(&get(&mut c, "/streams/live/1/index.m3u8", label).await);
        let t0 = Instant::now();
        // last + 2 completes ~3.9 s from now; the limit is 0.7 s.
        let r = get(
            &mut c,
            &format!("/streams/live/1/index.m3u8?_HLS_msn={}", last + 2),
            label,
        )
        .await;
        let held = t0.elapsed();
        assert_eq!(r.status, 200, "{label}");
        assert_eq!(window_of(&r).1, last, "{label}: the current playlist");
        assert!(
            held >= Duration::from_millis(650) && held < Duration::from_millis(1200),
            "{label}: answered after {held:?}, the limit is 700 ms"
        );
        let still = get(&mut c, "/streams/vod/master.m3u8", label).await;
        assert_eq!(still.status, 200, "{label}: the connection keeps serving");
    }
}

/// CPU seconds this process has used (user + system), from /proc/self/stat.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    // fields 14 and 15 (utime, stime) are at 11 and 12 after the command name
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_held_requests_cost_no_cpu_while_they_wait() {
    const HELD: usize = 1000;
    let dir = TempDir::new("held");
    let epoch = now_ms() / 1000 - 600;
    let s = server(&dir, epoch, "max_hold_ms = 10000").await;
    let mut c = connect(&s, false).await;
    align_to_segment(epoch * 1000, 50).await;
    let (_, last) = window_of(&get(&mut c, "/streams/live/0/index.m3u8", "plain").await);
    let target = last + 2; // complete ~3.95 s from now
    let mut conns = Vec::with_capacity(HELD);
    for _ in 0..HELD {
        let mut k = Client::new(TcpStream::connect(s.http).await.unwrap());
        k.send(
            format!("GET /streams/live/0/index.m3u8?_HLS_msn={target} HTTP/1.1\r\nHost: t\r\n\r\n")
                .as_bytes(),
        )
        .await;
        conns.push(k);
    }
    // Let the edge read them all, then measure while every one is held.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let waiting = s.metrics_text().await;
    assert!(
        waiting
            .lines()
            .any(|l| l == format!("edge_playlist_holds_waiting {HELD}")),
        "all {HELD} requests should be held now:\n{}",
        waiting
            .lines()
            .filter(|l| l.starts_with("edge_playlist"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let (cpu0, t0) = (cpu_seconds(), Instant::now());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (cpu, wall) = (cpu_seconds() - cpu0, t0.elapsed().as_secs_f64());
    eprintln!("{HELD} held requests: {cpu:.3} s CPU in {wall:.2} s");
    assert!(
        cpu < 0.1 * wall,
        "holding {HELD} requests used {cpu:.3} s CPU in {wall:.2} s (busy waiting?)"
    );
    // All are answered once the segment is complete.
    for (i, k) in conns.iter_mut().enumerate() {
        let r = within(8, "held request", k.read_response(false))
            .await
            .expect("a response");
        assert_eq!(r.status, 200, "held request {i}");
        assert_eq!(window_of(&r).1, target, "held request {i}");
    }
}

/// Copies a bundled packaging into `dir/name` for mutilation.
fn copy_folder(from: &str, dir: &Path, name: &str) -> PathBuf {
    let to = dir.join(name);
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(content(from)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

fn ingest(dir: &Path, name: &str) -> (bool, String) {
    let out = Command::new(edge_bin())
        .args(["ingest", "--name", name])
        .arg(dir)
        .output()
        .expect("run edge ingest");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains(from), "{} has no {from:?}", path.display());
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Rewrites the declared duration (`EXTINF:` value) of `seg_002.ts`.
fn extinf_of_seg_002(dir: &Path, value: &str) {
    edit(
        &dir.join("index.m3u8"),
        "#EXTINF:2.000000,\nseg_002.ts",
        &format!("#EXTINF:{value}\nseg_002.ts"),
    );
}

/// Damages a copied folder.
type Breaker = Box<dyn Fn(&Path)>;

#[test]
fn ingest_refuses_broken_folders_naming_the_stream_and_the_defect() {
    let dir = TempDir::new("ingest");
    let ok = copy_folder("hls_ts", dir.path(), "fine");
    let (success, err) = ingest(&ok, "fine");
    assert!(success, "{err}");
    assert!(
        err.contains("stream `fine`: Ts, 1 rendition(s), 6 segments"),
        "{err}"
    );

    let cases: Vec<(&str, Breaker, &str)> = vec![
        (
            "missing",
            Box::new(|d| std::fs::remove_file(d.join("seg_003.ts")).unwrap()),
            "file `seg_003.ts`: missing",
        ),
        (
            "zero",
            Box::new(|d| extinf_of_seg_002(d, "0,")),
            "declared duration 0 is not positive",
        ),
        (
            "negative",
            Box::new(|d| extinf_of_seg_002(d, "-2,")),
            "is not positive",
        ),
        (
            "lying",
            Box::new(|d| extinf_of_seg_002(d, "5.000000,")),
            "declared duration 5.000 s but the media lasts 2.000 s",
        ),
        (
            "empty",
            Box::new(|d| std::fs::write(d.join("seg_001.ts"), b"").unwrap()),
            "file `seg_001.ts`: size 0 bytes is out of range",
        ),
        (
            "garbage",
            Box::new(|d| std::fs::write(d.join("seg_004.ts"), vec![0x47u8; 188 * 3]).unwrap()),
            "file `seg_004.ts`: no PES stream with PTS",
        ),
        (
            "traversal",
            Box::new(|d| edit(&d.join("index.m3u8"), "seg_000.ts", "../../etc/passwd")),
            "must be a relative path inside the folder",
        ),
        (
            "nocodecs",
            Box::new(|d| {
                edit(
                    &d.join("master.m3u8"),
                    ",CODECS=\"avc1.4d401e,mp4a.40.2\"",
                    "",
                )
            }),
            "no CODECS",
        ),
        (
            "notaplaylist",
            Box::new(|d| std::fs::write(d.join("master.m3u8"), b"hello").unwrap()),
            "not an HLS playlist",
        ),
    ];
    for (name, break_it, want) in cases {
        let d = copy_folder("hls_ts", dir.path(), name);
        break_it(&d);
        let (success, err) = ingest(&d, name);
        assert!(!success, "{name}: a broken folder was accepted");
        assert!(
            err.contains(&format!("stream `{name}`")),
            "{name}: the message must name the stream: {err}"
        );
        assert!(err.contains(want), "{name}: expected {want:?} in: {err}");
    }

    // DASH: a gap in the numbering (a missing chunk) and a timeline with absurd repeats.
    let d = copy_folder("dash", dir.path(), "dashgap");
    std::fs::remove_file(d.join("chunk-1-00004.m4s")).unwrap();
    let (success, err) = ingest(&d, "dashgap");
    assert!(
        !success && err.contains("stream `dashgap`: file `chunk-1-00004.m4s`: missing"),
        "{err}"
    );
    let d = copy_folder("dash", dir.path(), "dashzero");
    edit(
        &d.join("manifest.mpd"),
        "duration=\"2000000\"",
        "duration=\"0\"",
    );
    let (success, err) = ingest(&d, "dashzero");
    assert!(!success && err.contains("stream `dashzero`"), "{err}");
    let (success, err) = ingest(&dir.path().join("nonexistent"), "ghost");
    assert!(!success && err.contains("stream `ghost`: folder"), "{err}");
}

#[tokio::test]
async fn the_origin_refuses_to_start_with_a_broken_stream() {
    let dir = TempDir::new("startbad");
    let d = copy_folder("hls_fmp4", dir.path(), "bad");
    std::fs::remove_file(d.join("seg_002.m4s")).unwrap();
    let extra = format!(
        "[[streams]]\nname = \"broken\"\nsource = \"{}\"\n",
        d.display()
    );
    let err = TestServer::try_start(&extra)
        .await
        .err()
        .expect("start must fail");
    assert!(
        err.contains("stream `broken`: file `seg_002.m4s`: missing"),
        "{err}"
    );
    // A signed stream needs keys; a world-readable key file is refused.
    let extra = format!(
        "[[streams]]\nname = \"s\"\nsource = \"{}\"\nsigned = true\n",
        content("dash").display()
    );
    let err = TestServer::try_start(&extra).await.err().unwrap();
    assert!(
        err.contains("manifests.keys_file") && err.contains("stream `s` is signed"),
        "{err}"
    );
    let keys = key_file(dir.path());
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = TestServer::try_start(&format!(
        "[manifests]\nkeys_file = \"{}\"\n{extra}",
        keys.display()
    ))
    .await
    .err()
    .unwrap();
    assert!(err.contains("chmod 600"), "{err}");
    assert!(
        !err.contains("00112233"),
        "the secret leaked into the message: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_renders_the_origins_manifests_from_its_description() {
    let dir = TempDir::new("edgemode");
    let epoch = now_ms() / 1000 - 600;
    let origin = server(&dir, epoch, "").await;
    let edge = TestServer::start(&format!(
        "[manifests]\norigin_refresh_secs = 1\n[[streams]]\nname = \"vod\"\norigin = \"http://{o}\"\n[[streams]]\nname = \"live\"\norigin = \"http://{o}\"\n",
        o = origin.http
    ))
    .await;
    let mut e = connect(&edge, true).await;
    let mut o = connect(&origin, false).await;
    // The first fetch happens at start; give it a moment.
    let t0 = Instant::now();
    loop {
        let r = get(&mut e, "/streams/vod/master.m3u8", "edge").await;
        if r.status == 200 {
            break;
        }
        assert_eq!(r.status, 503, "before the origin answered");
        assert_eq!(r.header("retry-after"), Some("1"));
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the edge never got the description"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        // A 5xx closes the connection.
        e = connect(&edge, true).await;
    }
    for path in [
        "/streams/vod/master.m3u8",
        "/streams/vod/0/index.m3u8",
        "/streams/vod/1/index.m3u8",
        "/streams/vod/manifest.mpd",
        "/streams/live/master.m3u8",
        "/streams/live/0/index.m3u8",
    ] {
        // A live playlist can change between the two requests: retry across a
        // segment boundary.
        let mut same = false;
        for _ in 0..3 {
            let (a, b) = (
                get(&mut e, path, "edge").await,
                get(&mut o, path, "origin").await,
            );
            assert_eq!((a.status, b.status), (200, 200), "{path}");
            if a.body == b.body {
                same = true;
                break;
            }
        }
        assert!(
            same,
            "{path}: the edge's rendering differs from the origin's"
        );
    }
    // Time-dependent refusals follow the origin's clock settings.
    let (_, last) = window_of(&get(&mut e, "/streams/live/0/index.m3u8", "edge").await);
    let r = get(&mut e, &format!("/streams/live/0/{}.m4s", last + 5), "edge").await;
    assert_eq!(r.status, 404);
    // Segments: redirected to the origin, same path, until the cache lands.
    let r = get(&mut e, "/streams/vod/0/0.m4s", "edge").await;
    assert_eq!(r.status, 302);
    let location = r.header("location").unwrap().to_string();
    assert_eq!(
        location,
        format!("http://{}/streams/vod/0/0.m4s", origin.http)
    );
    let seg = get(&mut o, "/streams/vod/0/0.m4s", "origin").await;
    assert_eq!(seg.status, 200);
    // The origin goes away: the edge keeps its last good description.
    drop(o);
    drop(origin);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = get(&mut e, "/streams/vod/0/index.m3u8", "edge").await;
    assert_eq!(r.status, 200, "the last good description is kept");
    let m = edge.metrics_text().await;
    assert!(
        m.lines().any(|l| l.starts_with("edge_origin_description_failures_total ") && !l.ends_with(" 0")),
        "failed refreshes are counted:\n{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_refuses_a_broken_description_from_its_origin() {
    // The "origin" here serves files: stream.json is whatever the test writes.
    let origin = TestServer::start("").await;
    let good = manifest::policy::Publication {
        stream: edge::ingest::ingest(&content("hls_ts"), "bad").unwrap(),
        live: None,
        signed: false,
    };
    let mut broken = good.clone();
    broken.stream.renditions[0].segments[3].number += 5; // a gap
    origin.put(
        "streams/bad/stream.json",
        &serde_json::to_vec(&broken).unwrap(),
    );
    let edge = TestServer::start(&format!(
        "[manifests]\norigin_refresh_secs = 1\n[[streams]]\nname = \"bad\"\norigin = \"http://{}\"\n",
        origin.http
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut e = connect(&edge, false).await;
    let r = get(&mut e, "/streams/bad/master.m3u8", "edge").await;
    assert_eq!(r.status, 503, "a description with a gap must not be served");
    let m = edge.metrics_text().await;
    assert!(
        m.lines().any(|l| l.starts_with("edge_origin_description_failures_total ") && !l.ends_with(" 0")),
        "{m}"
    );
    // Fixed at the origin: the next refresh picks it up.
    origin.put(
        "streams/bad/stream.json",
        &serde_json::to_vec(&good).unwrap(),
    );
    let t0 = Instant::now();
    loop {
        let mut e = connect(&edge, false).await;
        let r = get(&mut e, "/streams/bad/master.m3u8", "edge").await;
        if r.status == 200 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "the fixed description was not picked up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
