//! Scale and operations: the admin CPU profiler; slowloris clients and a connection
//! flood next to normal clients; SIGTERM under load and the opt-out of transparent
//! huge pages (the real binary).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_tests::{
    addr_in_listening_line, edge_bin, listening_line, tls_connect, write_binary_config, Client,
    KillOnDrop as Server, TempDir, TestServer,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Keeps a TLS handshake + request loop running against `s` until the flag drops,
/// so a profile has CPU to sample.
fn background_load(s: &TestServer) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let running = Arc::new(AtomicBool::new(true));
    let (addr, ca, flag) = (s.tls, s.state.join("cert.pem"), running.clone());
    let task = tokio::spawn(async move {
        let mut served = 0;
        while flag.load(Ordering::Relaxed) {
            let mut c = Client::new(tls_connect(addr, &ca, None).await);
            if c.get("/small.bin", "").await.status == 200 {
                served += 1;
            }
        }
        served
    });
    (running, task)
}

async fn unauthenticated_status(s: &TestServer, path: &str) -> u16 {
    let mut c = TcpStream::connect(s.admin).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).await.unwrap();
    String::from_utf8_lossy(&out)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// `GET /debug/pprof/profile` records the running server under load and answers a
/// flame graph (SVG) or a gzip-compressed pprof protobuf that parses as
/// `profile.proto` with samples and the server's own functions in it; a second
/// request while one runs gets 409; the route needs the token; the duration is
/// bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_profile_route_answers_svg_and_pprof_one_at_a_time() {
    use pprof::protos::Message as _;
    use std::io::Read as _;

    let s = TestServer::start("").await;
    s.put("small.bin", &[7u8; 1024]);
    assert_eq!(
        unauthenticated_status(&s, "/debug/pprof/profile?seconds=1").await,
        401,
        "the profiler needs the token"
    );
    for bad in ["seconds=0", "seconds=61", "format=png"] {
        let (status, _) = s
            .admin_get_bytes(&format!("/debug/pprof/profile?{bad}"))
            .await;
        assert_eq!(status, 400, "{bad}");
    }

    let (running, load) = background_load(&s);
    let svg_run = s.admin_get_bytes("/debug/pprof/profile?seconds=3&format=svg");
    let concurrent = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        s.admin_get_bytes("/debug/pprof/profile?seconds=1").await
    };
    let ((status, svg), (second, busy)) = tokio::join!(svg_run, concurrent);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&svg));
    let svg = String::from_utf8(svg).expect("the flame graph is text");
    assert!(
        svg.contains("<svg") && svg.trim_end().ends_with("</svg>"),
        "not an SVG document: {}",
        &svg[..svg.len().min(300)]
    );
    assert_eq!(
        second,
        409,
        "a second profile while one runs: {}",
        String::from_utf8_lossy(&busy)
    );

    let (status, gz) = s
        .admin_get_bytes("/debug/pprof/profile?seconds=2&format=pprof")
        .await;
    running.store(false, Ordering::Relaxed);
    let served = load.await.unwrap();
    assert!(served > 0, "the background load was served");
    assert_eq!(status, 200);
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(&gz[..])
        .read_to_end(&mut raw)
        .expect("the pprof profile is gzip-compressed");
    let profile = pprof::protos::Profile::decode(&raw[..]).expect("a valid profile.proto");
    assert!(!profile.sample.is_empty(), "the profile has samples");
    assert!(!profile.function.is_empty(), "the profile names functions");
    assert!(
        profile
            .string_table
            .iter()
            .any(|f| f.contains("rustls") || f.contains("edge")),
        "the server's own code appears in the profile"
    );
    assert!(profile.duration_nanos >= 1_000_000_000, "profile length");
}

/// Starts the real binary with `server_extra` under `[server]` and `limits` under
/// `[limits]`; returns it with its plain and TLS addresses.
fn spawn_edge(
    dir: &TempDir,
    server_extra: &str,
    limits: &str,
) -> (Server, std::net::SocketAddr, std::net::SocketAddr) {
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let config = write_binary_config(dir.path(), &root, server_extra);
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "[tls]\nktls = \"off\"\n[limits]\n" + limits,
    )
    .unwrap();
    let mut child = Command::new(edge_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The one listening line names both addresses.
    let line = listening_line(&mut child);
    let (http, tls) = (
        addr_in_listening_line(&line, "http"),
        addr_in_listening_line(&line, "tls"),
    );
    (Server(child), http, tls)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Request latencies of `n` fresh plain connections and `n` fresh TLS connections,
/// each one GET; panics on a failed request.
async fn probe(
    http: std::net::SocketAddr,
    tls: std::net::SocketAddr,
    ca: &std::path::Path,
    n: usize,
) -> Vec<Duration> {
    let mut out = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let mut c = Client::new(tokio::net::TcpStream::connect(http).await.unwrap());
        let r = tokio::time::timeout(Duration::from_secs(5), c.get("/ok.ts", ""))
            .await
            .unwrap_or_else(|_| panic!("plain probe {i} took over 5 s"));
        assert_eq!(r.status, 200, "plain probe {i}");
        out.push(t.elapsed());
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(5), async {
            let mut c = Client::new(tls_connect(tls, ca, None).await);
            c.get("/ok.ts", "").await
        })
        .await
        .unwrap_or_else(|_| panic!("TLS probe {i} took over 5 s"));
        assert_eq!(r.status, 200, "TLS probe {i}");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

/// 400 slowloris clients (heads trickled one byte every 200 ms, on both listeners)
/// and a flood of connections that open and close at once or send one junk byte do
/// not stop other clients: fresh plain and TLS requests during the attack are all
/// served, their median latency stays near its value before the attack, and the
/// server's memory stays bounded. One worker thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_a_connection_flood_do_not_stop_other_clients() {
    let dir = TempDir::new("slowloris");
    let (server, http, tls) = spawn_edge(
        &dir,
        "worker_threads = 1",
        "header_read_timeout_secs = 60\nmax_connections = 4000\n",
    );
    std::fs::write(dir.path().join("www/ok.ts"), b"fine").unwrap();
    let ca = dir.path().join("state/cert.pem");
    let pid = server.0.id();

    let before = probe(http, tls, &ca, 20).await;
    let rss_before = rss_kib(pid);

    let attacking = Arc::new(AtomicBool::new(true));
    let mut attackers = Vec::new();
    for i in 0..400 {
        let (flag, addr) = (attacking.clone(), if i % 2 == 0 { http } else { tls });
        attackers.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let Ok(mut c) = tokio::net::TcpStream::connect(addr).await else {
                return;
            };
            let head = b"GET /ok.ts HTTP/1.1\r\nHost: t\r\nX-Slow: ";
            let mut i = 0;
            while flag.load(Ordering::Relaxed) {
                let byte = [*head.get(i).unwrap_or(&b'a')];
                if c.write_all(&byte).await.is_err() {
                    return;
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    let flooded = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for j in 0..8 {
        let (flag, count, addr) = (
            attacking.clone(),
            flooded.clone(),
            if j % 2 == 0 { http } else { tls },
        );
        attackers.push(tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            while flag.load(Ordering::Relaxed) {
                if let Ok(mut c) = tokio::net::TcpStream::connect(addr).await {
                    if j % 4 < 2 {
                        let _ = c.write_all(b"\x16").await;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
                // At most ~500 connections per second per loop (4,000 in all): a
                // flood the kernel's listen backlog absorbs even when the machine is
                // busy, so a probe's SYN is not dropped (its retry would add 1-3 s
                // that no server can help).
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = probe(http, tls, &ca, 20).await;
    let rss_during = rss_kib(pid);
    attacking.store(false, Ordering::Relaxed);
    for a in attackers {
        let _ = a.await;
    }

    let median = |v: &[Duration]| v[v.len() / 2];
    let (base, attacked) = (median(&before), median(&during));
    assert!(
        flooded.load(Ordering::Relaxed) > 500,
        "the flood opened {} connections",
        flooded.load(Ordering::Relaxed)
    );
    assert!(
        attacked <= (base * 5).max(Duration::from_millis(100)),
        "median request latency {attacked:?} under slowloris and a flood, {base:?} before"
    );
    assert!(
        during[during.len() - 1] < Duration::from_secs(2),
        "slowest request under attack: {:?}",
        during[during.len() - 1]
    );
    assert!(
        rss_during < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_during} KiB under the attack"
    );
}

/// Reads a `GET /big.bin` response at about `rate` bytes per second: (status,
/// Content-Length, body bytes read, whether the body was whole and correct).
fn paced_download(addr: std::net::SocketAddr, rate: u64, expected: &[u8]) -> (u16, u64, u64, bool) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    c.write_all(b"GET /big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if c.read(&mut byte).unwrap_or(0) == 0 {
            return (0, 0, 0, false);
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
    let status = text[9..12].parse().unwrap_or(0);
    let len: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let started = Instant::now();
    let mut got = 0u64;
    let mut correct = true;
    let mut buf = vec![0u8; 64 * 1024];
    while got < len {
        let n = match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = got as usize;
        correct &= buf[..n] == expected[at..at + n];
        got += n as u64;
        let due = Duration::from_secs_f64(got as f64 / rate as f64);
        if let Some(wait) = due.checked_sub(started.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    (status, len, got, correct && got == len)
}

/// The most bytes any established socket with local port `port` holds unsent, by
/// the kernel's own count (`ss -ti`'s `notsent`).
fn max_notsent_on(port: u16) -> u64 {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!("( sport = :{port} )"))
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|f| f.strip_prefix("notsent:")?.parse().ok())
        .max()
        .unwrap_or(0)
}

/// `limits.tcp_notsent_lowat_bytes` bounds what a slow reader's socket holds queued
/// and unsent (the kernel's count, polled while the reader takes a 12 MiB body at
/// 4 MB/s) to the bound plus a segment or two, by default too, where without it (0:
/// the kernel's default) the socket queues megabytes; either way the body arrives
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notsent_lowat_bounds_what_a_slow_readers_socket_queues() {
    let body = edge_tests::pattern(12 << 20, 11);
    let default = u64::from(edge::config::DEFAULT_TCP_NOTSENT_LOWAT);
    for (setting, lowat) in [(Some(64 * 1024), 64 * 1024), (None, default), (Some(0), 0)] {
        let s = TestServer::start(&setting.map_or(String::new(), |v: u64| {
            format!("[limits]\ntcp_notsent_lowat_bytes = {v}\n")
        }))
        .await;
        s.put("big.bin", &body);
        let (addr, expected) = (s.http, body.clone());
        let reader = std::thread::spawn(move || paced_download(addr, 4_000_000, &expected));
        let mut most = 0;
        while !reader.is_finished() {
            most = most.max(max_notsent_on(addr.port()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (status, len, got, whole) = reader.join().unwrap();
        assert!(
            status == 200 && whole,
            "lowat {lowat}: {status}, {got} of {len} bytes"
        );
        if lowat > 0 {
            assert!(
                most <= lowat + 128 * 1024,
                "lowat {lowat}: a socket held {most} bytes unsent"
            );
        } else {
            assert!(
                most > 2 << 20,
                "without a bound the slow reader's socket held only {most} bytes unsent: \
                 this test no longer tells the bound from the kernel's default"
            );
        }
    }
}

/// SIGTERM under load: responses in flight complete within
/// `server.shutdown_grace_secs` (whole and byte-identical), new connections are
/// refused at once, a download that cannot finish within the grace period is cut
/// short of its Content-Length (never presented as complete), and the process
/// exits cleanly.
#[test]
fn sigterm_under_load_finishes_in_flight_responses_and_refuses_new_ones() {
    let dir = TempDir::new("sigterm");
    let (mut server, http, _tls) = spawn_edge(
        &dir,
        "worker_threads = 2\nshutdown_grace_secs = 6",
        "min_send_rate_bytes_per_sec = 0\n",
    );
    let body: Arc<Vec<u8>> = Arc::new((0..16u32 << 20).map(|i| (i % 251) as u8).collect());
    std::fs::write(dir.path().join("www/big.bin"), &*body).unwrap();

    // Six downloads at 8 MiB/s (about 2 s each) and two at 512 KiB/s (about 32 s).
    let mut downloads = Vec::new();
    for i in 0..8 {
        let body = body.clone();
        let rate = if i < 6 { 8 << 20 } else { 512 << 10 };
        downloads.push((
            i < 6,
            std::thread::spawn(move || paced_download(http, rate, &body)),
        ));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pid = server.0.id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let termed = Instant::now();

    // New connections are refused (the listeners are closed) promptly.
    loop {
        match std::net::TcpStream::connect(http) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ => {
                assert!(
                    termed.elapsed() < Duration::from_secs(2),
                    "still accepting connections 2 s after SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    for (i, (fast, d)) in downloads.into_iter().enumerate() {
        let (status, len, got, whole) = d.join().unwrap();
        assert_eq!((status, len), (200, 16 << 20), "download {i}");
        if fast {
            assert!(
                whole,
                "download {i} in flight at SIGTERM: {got} of {len} bytes, or wrong bytes"
            );
        } else {
            assert!(
                got < len && !whole,
                "download {i} could not finish within the grace period yet read {got} of {len}"
            );
        }
    }
    let status = loop {
        if let Some(s) = server.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            termed.elapsed() < Duration::from_secs(15),
            "edge did not exit within 15 s of SIGTERM (grace 6 s)"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "exit after SIGTERM: {status:?}");
    assert!(
        termed.elapsed() >= Duration::from_secs(2),
        "exited before the in-flight downloads could finish"
    );
}

/// edge opts its memory out of transparent huge pages (so an idle connection's few KB
/// of heap do not hold 2 MiB pages resident where the kernel's setting is `always`),
/// unless `server.transparent_huge_pages = true`: what `/proc/PID/status` reports.
#[test]
fn edge_opts_out_of_transparent_huge_pages_unless_configured_not_to() {
    // A kernel without THP reports 0 either way.
    let kernel_has_thp = std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists();
    for (extra, want) in [
        ("", "0"),
        (
            "transparent_huge_pages = true",
            if kernel_has_thp { "1" } else { "0" },
        ),
    ] {
        let dir = TempDir::new("thp");
        let root = dir.path().join("www");
        std::fs::create_dir_all(&root).unwrap();
        let config = write_binary_config(dir.path(), &root, extra);
        let mut server = Server(
            Command::new(edge_bin())
                .args(["serve", "--config", config.to_str().unwrap()])
                .env("EDGE_WORKER_THREADS", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        );
        addr_in_listening_line(&listening_line(&mut server.0), "http");
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
        let thp = status
            .lines()
            .find_map(|l| l.strip_prefix("THP_enabled:"))
            .map(str::trim);
        assert_eq!(thp, Some(want), "with `{extra}`");
    }
}
