//! Running out of descriptors: connections past the process's open-file limit wait
//! in the kernel's backlog while the accept loop backs off (it must not spin), a
//! file that cannot be opened for lack of descriptors is 503 (a server condition,
//! never 500), and the server serves normally once descriptors are free again; with
//! `content.open_file_cache` responses in flight share a descriptor per file.

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use edge_tests::{
    cpu_ticks, edge_bin, listening_addr, status_line_by, write_binary_config, KillOnDrop as Server,
    TempDir,
};

/// `edge serve --config CONFIG` with one worker under a hard and soft open-file limit
/// of `nofile` descriptors (`prlimit`).
fn serve_with_nofile(config: &std::path::Path, nofile: u32) -> Server {
    let child = Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .arg("--")
        .arg(edge_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("EDGE_WORKER_THREADS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Server(child)
}

#[test]
fn past_the_open_file_limit_the_server_waits_without_spinning_then_recovers() {
    let dir = TempDir::new("nofile");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("ok.ts"), b"fine").unwrap();
    let config = write_binary_config(dir.path(), &root, "worker_threads = 1");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "[limits]\nmax_connections = 1000\n",
    )
    .unwrap();
    // A hard limit of 64 descriptors: far below max_connections (edge warns).
    let mut server = serve_with_nofile(&config, 64);
    let http = listening_addr(&mut server.0, "http");
    let pid = server.0.id();

    // Far more connections than descriptors; the first one asks for a file once the
    // rest have used up what is left.
    let mut first = TcpStream::connect(http).unwrap();
    let mut rest: Vec<TcpStream> = (0..150)
        .map(|_| TcpStream::connect(http).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    first
        .write_all(b"GET /ok.ts HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let answer = status_line_by(&mut first, Instant::now() + Duration::from_secs(5))
        .expect("the accepted connection is answered");
    assert!(
        answer.starts_with("HTTP/1.1 503"),
        "no descriptor left to open the file: want 503, got {answer}"
    );

    // While connections wait in the backlog, the accept loop must not spin.
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_ticks(pid) - t0;
    // /proc counts in USER_HZ, 100 per second on Linux.
    assert!(
        used < 50,
        "the server used {used} ticks (1/100 s) in 2 s while out of descriptors: spinning"
    );

    // Free the descriptors: the server serves normally again.
    drop(first);
    rest.clear();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut c = TcpStream::connect(http).unwrap();
        c.write_all(b"GET /ok.ts HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        match status_line_by(&mut c, Instant::now() + Duration::from_secs(5)) {
            Ok(s) if s.starts_with("HTTP/1.1 200") => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "not serving 15 s after the descriptors were freed: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Past `limits.max_connections` (the real binary, one worker): held connections fill
/// the cap; each of 300 further connections gets 503 and a close (the TLS listener's
/// refusal, a close before the handshake, is in `bad_input`); refusing them costs
/// little CPU and the server does not spin at the cap; once the held connections
/// close, new ones are served.
#[test]
fn past_max_connections_the_excess_is_refused_cleanly_then_served() {
    use std::io::Read;
    let dir = TempDir::new("maxconn");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("ok.ts"), b"fine").unwrap();
    let config = write_binary_config(dir.path(), &root, "worker_threads = 1");
    std::fs::write(
        &config,
        std::fs::read_to_string(&config).unwrap() + "[limits]\nmax_connections = 32\n",
    )
    .unwrap();
    let child = Command::new(edge_bin())
        .args(["serve", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let http = listening_addr(&mut server.0, "http");
    let pid = server.0.id();
    let get = |c: &mut TcpStream| {
        c.write_all(b"GET /ok.ts HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        status_line_by(c, Instant::now() + Duration::from_secs(5))
    };

    // Fill the cap with served keep-alive connections.
    let held: Vec<TcpStream> = (0..32)
        .map(|i| {
            let mut c = TcpStream::connect(http).unwrap();
            let s = get(&mut c).unwrap_or_else(|e| panic!("held connection {i}: {e}"));
            assert!(s.starts_with("HTTP/1.1 200"), "held connection {i}: {s}");
            c
        })
        .collect();

    // 300 more: each is answered 503 and closed, and the refusals cost little CPU.
    let t0 = cpu_ticks(pid);
    let started = Instant::now();
    for i in 0..300 {
        let mut c = TcpStream::connect(http).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = c.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 503") && text.contains("Retry-After: 1"),
            "excess connection {i}: want 503 and a close, got {text:?}"
        );
    }
    let used = cpu_ticks(pid) - t0;
    assert!(
        used < 100 && started.elapsed() < Duration::from_secs(30),
        "refusing 300 connections used {used} ticks (1/100 s) in {:?}",
        started.elapsed()
    );
    // Idle at the cap, the server does not spin.
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(2));
    let idle = cpu_ticks(pid) - t0;
    assert!(idle < 20, "at the cap and idle: {idle} ticks in 2 s");

    // The held connections still work; once they close, new ones are served.
    let mut held = held;
    let s = get(&mut held[0]).unwrap();
    assert!(s.starts_with("HTTP/1.1 200"), "a held connection: {s}");
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = TcpStream::connect(http).unwrap();
        match get(&mut c) {
            Ok(s) if s.starts_with("HTTP/1.1 200") => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "not serving 10 s after the held connections closed: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// `content.open_file_cache`: responses in flight for the same file share one
/// descriptor. Under a hard limit of 128 descriptors, 60 connections each hold a
/// 32 MiB response in flight (they read only its status line): without the cache
/// each needs its socket and its own descriptor of the file, and some cannot be
/// served; with the cache all 60 are answered 200.
#[test]
fn the_open_file_cache_lets_responses_in_flight_share_a_descriptor() {
    let dir = TempDir::new("openfiles");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("big.ts"), vec![7u8; 32 << 20]).unwrap();
    let served = |cache: &str| -> usize {
        let config = write_binary_config(dir.path(), &root, "worker_threads = 1");
        std::fs::write(
            &config,
            std::fs::read_to_string(&config).unwrap()
                + cache
                + "[limits]\nmax_connections = 1000\n",
        )
        .unwrap();
        let mut server = serve_with_nofile(&config, 128);
        let http = listening_addr(&mut server.0, "http");
        let mut held = Vec::new();
        let mut ok = 0;
        for _ in 0..60 {
            let mut c = TcpStream::connect(http).unwrap();
            c.write_all(b"GET /big.ts HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            // Out of descriptors: 503, or the connection waits in the backlog.
            match status_line_by(&mut c, Instant::now() + Duration::from_secs(3)) {
                Ok(s) if s.starts_with("HTTP/1.1 200") => ok += 1,
                Ok(_) => {}
                Err(_) => break,
            }
            held.push(c);
        }
        ok
    };
    let without = served("");
    assert!(
        without < 60,
        "without the cache 60 responses in flight need 60 descriptors of the file, yet all were served"
    );
    let with = served("open_file_cache = 16\n");
    assert_eq!(
        with, 60,
        "with the cache the responses in flight share one descriptor (without: {without})"
    );
}
