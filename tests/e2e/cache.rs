//! The caching edge (issue 6) over real loopback sockets, against a fault-injecting
//! origin ([`FaultOrigin`]): miss, fill and hit on both listeners; 200 clients
//! coalesced into one origin request and streamed before the origin finished; a
//! 64 MiB ring wrapped by 1 GiB while readers check every body; origin faults
//! (5xx, refused, timeout, reset, short body) answered with 502/504 or a cut
//! connection and never cached; pass-through, Cache-Control, purge; and with the
//! real binary, persistence across a restart and 30 kill -9s mid-fill.

use std::io::{Read as _, Write as _};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_tests::origin::{Fault, FaultOrigin, Object};
use edge_tests::{edge_bin, pattern, sha256_hex, TempDir, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `[upstream]` and `[storage]` for an edge filling from `origin` into one disk of
/// `size_mib` under `dir`.
fn cache_toml(origin: &str, dir: &Path, size_mib: u64, upstream_extra: &str) -> String {
    std::fs::create_dir_all(dir.join("d0")).unwrap();
    format!(
        "[upstream]\norigin = \"{origin}\"\n{upstream_extra}\n[storage]\nindex_dir = \"{}\"\n[[storage.disks]]\npath = \"{}\"\nsize_mib = {size_mib}\n",
        dir.join("index").display(),
        dir.join("d0").display()
    )
}

/// One GET on a fresh plain connection (`Connection: close`); the status, headers
/// and body, or why the body was cut (the error carries how much arrived).
async fn fetch(addr: SocketAddr, path: &str, extra: &str) -> Result<Fetched, String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n{extra}\r\n").as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    let read = s.read_to_end(&mut raw).await;
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => n,
        _ => return Err(format!("no complete head ({} bytes, {read:?})", raw.len())),
    };
    let status = resp.code.unwrap_or(0);
    let headers: Vec<(String, String)> = resp
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let body = raw[n..].to_vec();
    let len: Option<usize> = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok());
    if let Some(len) = len {
        if body.len() != len {
            return Err(format!(
                "short body: {} of {len} bytes (status {status})",
                body.len()
            ));
        }
    }
    Ok(Fetched {
        status,
        headers,
        body,
    })
}

struct Fetched {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Waits (up to 10 s) until the store has indexed `n` objects in all.
async fn wait_stored(server: &TestServer, n: u64) {
    let t0 = Instant::now();
    loop {
        let m = server.metrics_text().await;
        if metric(&m, "edge_cache_stored_total") >= n {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "never stored {n}: {m}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_post(server: &TestServer, path: &str) -> String {
    let token = std::fs::read_to_string(server.state.join("admin.token")).unwrap();
    let mut s = TcpStream::connect(server.admin).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        token.trim()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_fill_hit_on_both_listeners_ranges_conditionals_and_purge() {
    let origin = FaultOrigin::start().await;
    let body = pattern(1 << 20, 11);
    origin.put_with(
        "/v/seg1.m4s",
        Object::new(body.clone())
            .content_type("video/iso.segment")
            .etag("\"abc\"")
            .last_modified("Wed, 21 Oct 2026 07:28:00 GMT"),
    );
    origin.put("/v/small.m3u8", b"#EXTM3U\n".to_vec());
    let dir = TempDir::new("cache-basic");
    let server = TestServer::start(&cache_toml(&origin.url(), dir.path(), 16, "")).await;
    for tls in [false, true] {
        let mut c = server.client(tls).await;
        let r = c.get("/v/seg1.m4s", "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-cache"), Some(if tls { "HIT" } else { "MISS" }));
        wait_stored(&server, 1).await;
        assert_eq!(sha256_hex(&r.body), sha256_hex(&body), "tls={tls}");
        assert_eq!(r.header("content-type"), Some("video/iso.segment"));
        assert_eq!(r.header("etag"), Some("\"abc\""));
        assert_eq!(
            r.header("last-modified"),
            Some("Wed, 21 Oct 2026 07:28:00 GMT")
        );
        let r = c.get("/v/seg1.m4s", "Range: bytes=1000-1999\r\n").await;
        assert_eq!(r.status, 206);
        assert_eq!(r.body, body[1000..2000]);
        let r = c.get("/v/seg1.m4s", "If-None-Match: \"abc\"\r\n").await;
        assert_eq!(r.status, 304);
        let r = c.get("/v/small.m3u8", "").await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"#EXTM3U\n"[..]));
        wait_stored(&server, 2).await;
    }
    // The first GET filled, everything after was a hit (wait for the store to
    // index, which the fill's memory covers meanwhile).
    assert_eq!(origin.requests("/v/seg1.m4s"), 1);
    assert_eq!(origin.requests("/v/small.m3u8"), 1);
    let m = server.metrics_text().await;
    assert!(metric(&m, "edge_cache_hits_total") >= 6, "{m}");
    assert_eq!(
        metric(&m, "edge_cache_fills_total{result=\"stored\"}"),
        2,
        "{m}"
    );
    assert_eq!(metric(&m, "edge_cache_disks_in_service"), 1);
    // A path the origin does not have: its 404, not cached.
    for _ in 0..2 {
        let r = fetch(server.http, "/nope.ts", "").await.unwrap();
        assert_eq!(r.status, 404);
    }
    assert_eq!(origin.requests("/nope.ts"), 2);
    // Purge by key, then by prefix: the next GET refetches.
    let out = admin_post(&server, "/purge?key=/v/seg1.m4s").await;
    assert!(out.contains("{\"purged\":1}"), "{out}");
    let r = fetch(server.http, "/v/seg1.m4s", "").await.unwrap();
    assert_eq!(sha256_hex(&r.body), sha256_hex(&body));
    assert_eq!(origin.requests("/v/seg1.m4s"), 2);
    wait_stored(&server, 3).await;
    let out = admin_post(&server, "/purge?prefix=/v/").await;
    assert!(out.contains("{\"purged\":2}"), "{out}");
    // Without the token: 401.
    let mut s = TcpStream::connect(server.admin).await.unwrap();
    s.write_all(b"POST /purge?prefix=/ HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    assert!(
        out.starts_with(b"HTTP/1.1 401"),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_share_one_slow_fill_and_stream_before_it_ends() {
    let origin = FaultOrigin::start().await;
    let body = Arc::new(pattern(8 << 20, 5));
    origin.put("/big.m4s", body.to_vec());
    // 32 chunks of 256 KiB, 100 ms apart: about 3.2 s of sending.
    origin.set_fault(
        "/big.m4s",
        Fault::Slow {
            chunk: 256 << 10,
            delay: Duration::from_millis(100),
        },
    );
    let dir = TempDir::new("cache-coalesce");
    let server = TestServer::start(&cache_toml(&origin.url(), dir.path(), 128, "")).await;
    let addr = server.http;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /big.m4s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                .await
                .unwrap();
            let mut raw = Vec::new();
            let mut buf = vec![0u8; 64 << 10];
            let mut first_body: Option<Instant> = None;
            let mut head_len = None;
            loop {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                raw.extend_from_slice(&buf[..n]);
                if head_len.is_none() {
                    head_len = raw.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
                }
                if first_body.is_none() && head_len.is_some_and(|h| raw.len() > h) {
                    first_body = Some(Instant::now());
                }
            }
            let h = head_len.expect("a head");
            (sha256_hex(&raw[h..]), first_body.expect("body bytes"))
        }));
    }
    let want = sha256_hex(&body);
    let mut firsts = Vec::new();
    for t in tasks {
        let (sum, first) = t.await.unwrap();
        assert_eq!(sum, want);
        firsts.push(first);
    }
    assert_eq!(
        origin.requests("/big.m4s"),
        1,
        "one origin request for 200 clients"
    );
    let finished = origin.finished_at("/big.m4s").expect("the origin finished");
    let late = firsts.iter().filter(|f| **f >= finished).count();
    assert_eq!(
        late, 0,
        "{late} clients got their first body byte only after the origin finished"
    );
    let m = server.metrics_text().await;
    assert!(
        metric(&m, "edge_cache_coalesced_waiters_total") >= 199,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_ring_wraps_under_1_gib_while_readers_check_every_body() {
    let origin = FaultOrigin::start().await;
    const N: usize = 1024;
    let mut sums = Vec::new();
    for i in 0..N {
        let b = pattern(1 << 20, i as u64 + 1);
        sums.push(sha256_hex(&b));
        origin.put(&format!("/w/{i}.ts"), b);
    }
    let sums = Arc::new(sums);
    let dir = TempDir::new("cache-wrap");
    let server = TestServer::start(&cache_toml(
        &origin.url(),
        dir.path(),
        64,
        "max_object_bytes = 4194304",
    ))
    .await;
    let addr = server.http;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Readers hammer four hot keys (evicted and refetched as the ring wraps).
    let mut readers = Vec::new();
    for r in 0..4usize {
        let (stop, sums) = (stop.clone(), sums.clone());
        readers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut c = edge_tests::Client::new(TcpStream::connect(addr).await.unwrap());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let k = r * 7;
                let resp = c.get(&format!("/w/{k}.ts"), "").await;
                assert_eq!(resp.status, 200);
                if sha256_hex(&resp.body) != sums[k] {
                    let want = pattern(1 << 20, k as u64 + 1);
                    let first = resp.body.iter().zip(&want).position(|(a, b)| a != b);
                    let last = resp.body.iter().zip(&want).rposition(|(a, b)| a != b);
                    let f = first.unwrap_or(0);
                    let zeros = resp.body[f..=last.unwrap_or(f)].iter().all(|b| *b == 0);
                    panic!("wrong bytes for hot key {k} ({:?}): differ from {first:?} to {last:?}, all zero: {zeros}, got {:02x?}", resp.header("x-cache"), &resp.body[f..f + 16]);
                }
                n += 1;
            }
            n
        }));
    }
    // Writers pull the whole 1 GiB through, four connections.
    let mut writers = Vec::new();
    for w in 0..4usize {
        let sums = sums.clone();
        writers.push(tokio::spawn(async move {
            let mut c = edge_tests::Client::new(TcpStream::connect(addr).await.unwrap());
            for i in (w..N).step_by(4) {
                let resp = c.get(&format!("/w/{i}.ts"), "").await;
                assert_eq!(resp.status, 200);
                assert_eq!(sha256_hex(&resp.body), sums[i], "wrong bytes for {i}");
            }
        }));
    }
    for w in writers {
        w.await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut reads = 0;
    for r in readers {
        reads += r.await.unwrap();
    }
    assert!(reads > 100, "readers made {reads} checked reads");
    // Early keys were evicted: fetching them again goes to the origin.
    let before = origin.requests("/w/1.ts");
    let r = fetch(addr, "/w/1.ts", "").await.unwrap();
    assert_eq!(sha256_hex(&r.body), sums[1]);
    assert_eq!(
        origin.requests("/w/1.ts"),
        before + 1,
        "an evicted key is refetched"
    );
    let m = server.metrics_text().await;
    assert!(metric(&m, "edge_cache_evictions_total") > 900, "{m}");
    // Disk use: the container and the index, nothing else.
    assert_eq!(
        std::fs::metadata(dir.path().join("d0/data.bin"))
            .unwrap()
            .len(),
        64 << 20
    );
    let entries: Vec<_> = std::fs::read_dir(dir.path().join("d0")).unwrap().collect();
    assert_eq!(entries.len(), 1, "only data.bin on the disk");
    let index_bytes: u64 = walk_size(&dir.path().join("index"));
    assert!(index_bytes < 64 << 20, "index is {index_bytes} bytes");
}

fn walk_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let m = e.metadata().unwrap();
                    if m.is_dir() {
                        walk_size(&e.path())
                    } else {
                        m.len()
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_faults_give_502_504_or_a_cut_and_cache_nothing_corrupt() {
    let origin = FaultOrigin::start().await;
    let good = pattern(300_000, 3);
    for p in [
        "/f/5xx.ts",
        "/f/once.ts",
        "/f/timeout.ts",
        "/f/reset.ts",
        "/f/short.ts",
        "/f/ok.ts",
    ] {
        origin.put(p, good.clone());
    }
    origin.set_fault("/f/5xx.ts", Fault::Status(503));
    origin.set_fault("/f/once.ts", Fault::StatusTimes(500, 1));
    origin.set_fault("/f/timeout.ts", Fault::TimeoutBeforeHeaders);
    origin.set_fault("/f/reset.ts", Fault::ResetMidBody);
    origin.set_fault("/f/short.ts", Fault::ShortBody);
    let dir = TempDir::new("cache-faults");
    let upstream = "header_timeout_ms = 300\nretry_budget_ms = 2000\nmax_attempts = 3\nbody_idle_timeout_ms = 1000";
    let server = TestServer::start(&cache_toml(&origin.url(), dir.path(), 16, upstream)).await;
    let addr = server.http;

    let r = fetch(addr, "/f/5xx.ts", "").await.unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(
        origin.requests("/f/5xx.ts"),
        3,
        "retried up to max_attempts"
    );
    let r = fetch(addr, "/f/once.ts", "").await.unwrap();
    assert_eq!(r.status, 200, "a retry after one 500 succeeds");
    assert_eq!(r.body, good);
    assert_eq!(origin.requests("/f/once.ts"), 2);
    let t0 = Instant::now();
    let r = fetch(addr, "/f/timeout.ts", "").await.unwrap();
    assert_eq!(r.status, 504);
    assert!(t0.elapsed() < Duration::from_secs(5));
    for p in ["/f/reset.ts", "/f/short.ts"] {
        let e = fetch(addr, p, "")
            .await
            .err()
            .unwrap_or_else(|| panic!("{p}: a whole body"));
        assert!(e.contains("short body"), "{p}: {e}");
    }
    // Other keys keep serving meanwhile.
    assert_eq!(fetch(addr, "/f/ok.ts", "").await.unwrap().body, good);
    // Nothing broken was cached: with the faults gone the objects are fetched
    // again and are whole.
    for p in ["/f/5xx.ts", "/f/timeout.ts", "/f/reset.ts", "/f/short.ts"] {
        origin.set_fault(p, Fault::None);
        let before = origin.requests(p);
        let r = fetch(addr, p, "").await.unwrap();
        assert_eq!((r.status, r.body == good), (200, true), "{p}");
        assert_eq!(origin.requests(p), before + 1, "{p} was not cached broken");
    }
    // Connection refused: 502 after the retries.
    origin.put("/f/refused.ts", good.clone());
    origin.stop_listening().await;
    let r = fetch(addr, "/f/refused.ts", "").await.unwrap();
    assert_eq!(r.status, 502);
    // Cached objects are still served with the origin down.
    assert_eq!(fetch(addr, "/f/ok.ts", "").await.unwrap().body, good);
    origin.resume().await.unwrap();
    let m = server.metrics_text().await;
    assert!(
        metric(&m, "edge_cache_fills_total{result=\"failed\"}") >= 5,
        "{m}"
    );
    assert!(
        metric(&m, "edge_upstream_attempts_total{outcome=\"timeout\"}") >= 2,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_objects_pass_through_and_cache_control_is_honoured() {
    let origin = FaultOrigin::start().await;
    let big = pattern(3 << 20, 9);
    origin.put("/p/big.mp4", big.clone());
    origin.put_with(
        "/p/nostore.ts",
        Object::new(b"x".to_vec()).cache_control("no-store"),
    );
    origin.put_with(
        "/p/short.ts",
        Object::new(b"y".to_vec()).cache_control("public, max-age=1"),
    );
    let dir = TempDir::new("cache-policy");
    let server = TestServer::start(&cache_toml(
        &origin.url(),
        dir.path(),
        16,
        "max_object_bytes = 1048576",
    ))
    .await;
    let addr = server.http;
    for n in 1..=2 {
        let r = fetch(addr, "/p/big.mp4", "").await.unwrap();
        assert_eq!(sha256_hex(&r.body), sha256_hex(&big));
        assert_eq!(
            origin.requests("/p/big.mp4"),
            n,
            "over the limit: never cached"
        );
        let r = fetch(addr, "/p/nostore.ts", "").await.unwrap();
        assert_eq!(r.body, b"x");
        assert_eq!(
            origin.requests("/p/nostore.ts"),
            n,
            "no-store: never cached"
        );
    }
    // A pass-through object is not held in memory: with the client not reading,
    // the edge stops reading from the origin about a window (8 MiB) past it.
    let huge = pattern(48 << 20, 4);
    origin.put("/p/huge.mp4", huge.clone());
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET /p/huge.mp4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent = origin.body_bytes_sent("/p/huge.mp4");
    assert!(
        sent < 32 << 20,
        "the origin sent {sent} bytes to an edge whose client reads nothing"
    );
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let h = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(sha256_hex(&raw[h..]), sha256_hex(&huge));

    let r = fetch(addr, "/p/short.ts", "").await.unwrap();
    assert_eq!(r.header("cache-control"), Some("public, max-age=1"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    fetch(addr, "/p/short.ts", "").await.unwrap();
    assert_eq!(origin.requests("/p/short.ts"), 1, "fresh for a second");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    fetch(addr, "/p/short.ts", "").await.unwrap();
    assert_eq!(
        origin.requests("/p/short.ts"),
        2,
        "stale after max-age: refetched"
    );
}

#[tokio::test]
async fn bad_cache_setups_are_refused_naming_the_key_or_path() {
    let dir = TempDir::new("cache-bad");
    let origin = "http://127.0.0.1:9";
    // A disk directory that does not exist.
    let toml = format!(
        "[upstream]\norigin = \"{origin}\"\n[storage]\nindex_dir = \"{}\"\n[[storage.disks]]\npath = \"{}\"\nsize_mib = 16\n",
        dir.path().join("index").display(),
        dir.path().join("missing").display()
    );
    let e = TestServer::try_start(&toml).await.err().unwrap();
    assert!(
        e.contains("storage.disks[0].path") && e.contains("missing"),
        "{e}"
    );
    // A file where the disk directory should be.
    std::fs::write(dir.path().join("file"), b"").unwrap();
    let toml2 = toml.replace(
        &dir.path().join("missing").display().to_string(),
        &dir.path().join("file").display().to_string(),
    );
    let e = TestServer::try_start(&toml2).await.err().unwrap();
    assert!(e.contains("not a directory"), "{e}");
    // Too small a container.
    let e = TestServer::try_start(&cache_toml(origin, dir.path(), 8, ""))
        .await
        .err()
        .unwrap();
    assert!(e.contains("storage.disks.size_mib"), "{e}");
    // A cache without an origin, and an origin without a cache.
    let e = TestServer::try_start("[storage]\n[[storage.disks]]\npath = \"/tmp\"\nsize_mib = 16\n")
        .await
        .err()
        .unwrap();
    assert!(e.contains("upstream.origin"), "{e}");
    let e = TestServer::try_start(&format!("[upstream]\norigin = \"{origin}\"\n"))
        .await
        .err()
        .unwrap();
    assert!(e.contains("storage.disks"), "{e}");
    // An index directory that cannot be created.
    let toml3 = cache_toml(origin, dir.path(), 16, "").replace(
        &dir.path().join("index").display().to_string(),
        &dir.path().join("file/index").display().to_string(),
    );
    let e = TestServer::try_start(&toml3).await.err().unwrap();
    assert!(e.contains("storage.index_dir"), "{e}");
}

// ---- the real binary: restarts and kill -9

/// An `edge` child process with a cache, on ephemeral ports.
struct EdgeProcess {
    child: Child,
    http: SocketAddr,
}

impl EdgeProcess {
    fn start(dir: &Path, origin: &str) -> Self {
        let root = dir.join("www");
        std::fs::create_dir_all(&root).unwrap();
        let config = edge_tests::write_binary_config(dir, &root, "");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str(&cache_toml(origin, &dir.join("cache"), 64, ""));
        std::fs::write(&config, text).unwrap();
        let mut child = Command::new(edge_bin())
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start edge");
        let http = edge_tests::listening_addr(&mut child, "http");
        Self { child, http }
    }

    fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "edge exited with {status}");
    }
}

/// A blocking keep-alive GET loop for the binary tests (no runtime needed).
fn get_all(addr: SocketAddr, paths: &[String]) -> Vec<Vec<u8>> {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for p in paths {
        s.write_all(format!("GET {p} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .unwrap();
        let (status, body) = read_one(&mut s, &mut buf);
        assert_eq!(status, 200, "{p}");
        out.push(body);
    }
    out
}

fn read_one(s: &mut std::net::TcpStream, buf: &mut Vec<u8>) -> (u16, Vec<u8>) {
    let mut chunk = [0u8; 65536];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        if let Ok(httparse::Status::Complete(n)) = resp.parse(buf) {
            let len: usize = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            let status = resp.code.unwrap_or(0);
            while buf.len() < n + len {
                let got = s.read(&mut chunk).unwrap();
                assert!(got > 0, "EOF in a body");
                buf.extend_from_slice(&chunk[..got]);
            }
            let body = buf[n..n + len].to_vec();
            buf.drain(..n + len);
            return (status, body);
        }
        let got = s.read(&mut chunk).unwrap();
        assert!(got > 0, "EOF before a head");
        buf.extend_from_slice(&chunk[..got]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_segments_survive_a_restart_without_touching_the_origin() {
    let origin = FaultOrigin::start().await;
    let mut sums = Vec::new();
    let paths: Vec<String> = (0..1000).map(|i| format!("/live/seg{i}.m4s")).collect();
    for (i, p) in paths.iter().enumerate() {
        let b = pattern(16 << 10, i as u64 + 100);
        sums.push(sha256_hex(&b));
        origin.put(p, b);
    }
    let dir = TempDir::new("cache-persist");
    let url = origin.url();
    let (d, u, ps) = (dir.path().to_path_buf(), url.clone(), paths.clone());
    let first = tokio::task::spawn_blocking(move || {
        let edge = EdgeProcess::start(&d, &u);
        let bodies = get_all(edge.http, &ps);
        // Let the last batch be synced and indexed before the restart.
        std::thread::sleep(Duration::from_millis(500));
        edge.stop();
        bodies
    })
    .await
    .unwrap();
    for (b, s) in first.iter().zip(&sums) {
        assert_eq!(&sha256_hex(b), s);
    }
    assert_eq!(origin.total_requests(), 1000);
    origin.reset_counters();
    let (d, u, ps) = (dir.path().to_path_buf(), url, paths.clone());
    let second = tokio::task::spawn_blocking(move || {
        let edge = EdgeProcess::start(&d, &u);
        let bodies = get_all(edge.http, &ps);
        edge.stop();
        bodies
    })
    .await
    .unwrap();
    assert_eq!(
        origin.total_requests(),
        0,
        "the restarted edge asked the origin"
    );
    for (b, s) in second.iter().zip(&sums) {
        assert_eq!(&sha256_hex(b), s);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_kill_nines_mid_fill_never_leave_a_wrong_object() {
    let origin = FaultOrigin::start().await;
    const KEYS: usize = 60;
    let mut sums = Vec::new();
    let paths: Vec<String> = (0..KEYS).map(|i| format!("/k/obj{i}.ts")).collect();
    for (i, p) in paths.iter().enumerate() {
        // 64 KiB to 2 MiB.
        let b = pattern((64 << 10) + (i * 33_000) % (2 << 20), i as u64 + 7);
        sums.push(sha256_hex(&b));
        origin.put(p, b);
    }
    let dir = TempDir::new("cache-crash");
    let url = origin.url();
    let sums = Arc::new(sums);
    let (d, u, ps, sm) = (dir.path().to_path_buf(), url, paths, sums.clone());
    let served_from_cache = tokio::task::spawn_blocking(move || {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..30 {
            let edge = EdgeProcess::start(&d, &u);
            // Every object it serves right after the restart must be whole.
            let bodies = get_all(edge.http, &ps);
            for (i, b) in bodies.iter().enumerate() {
                assert_eq!(
                    sha256_hex(b),
                    sm[i],
                    "round {round}: wrong bytes for {}",
                    ps[i]
                );
            }
            // Then fill in the background and kill at a random moment.
            let addr = edge.http;
            let order: Vec<String> = (0..KEYS)
                .map(|_| ps[(rand() % KEYS as u64) as usize].clone())
                .collect();
            let filler = std::thread::spawn(move || {
                let _ = std::panic::catch_unwind(|| get_all(addr, &order));
            });
            std::thread::sleep(Duration::from_millis(20 + rand() % 300));
            edge.kill9();
            let _ = filler.join();
        }
        // The last restart serves from disk.
        let edge = EdgeProcess::start(&d, &u);
        let bodies = get_all(edge.http, &ps);
        for (i, b) in bodies.iter().enumerate() {
            assert_eq!(sha256_hex(b), sm[i]);
        }
        edge.stop();
    });
    served_from_cache.await.unwrap();
    // Origin requests stayed far below one per key per round: the cache survived.
    let total = origin.total_requests();
    assert!(
        total < KEYS * 30,
        "{total} origin requests for {KEYS} keys over 30 rounds"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cold_file_ranges_are_read_in_off_the_worker_before_sending() {
    let server = TestServer::start("").await;
    let data = pattern(4 << 20, 21);
    server.put("cold.mp4", &data);
    let f = std::fs::File::open(server.root.join("cold.mp4")).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    let before = metric(&server.metrics_text().await, "edge_cold_reads_total");
    let r = fetch(server.http, "/cold.mp4", "").await.unwrap();
    assert_eq!(sha256_hex(&r.body), sha256_hex(&data));
    let after = metric(&server.metrics_text().await, "edge_cold_reads_total");
    assert!(after > before, "no cold read counted ({before} -> {after})");
    // Now resident: no more cold reads.
    let r = fetch(server.http, "/cold.mp4", "").await.unwrap();
    assert_eq!(r.body.len(), data.len());
    assert_eq!(
        metric(&server.metrics_text().await, "edge_cold_reads_total"),
        after
    );
}
