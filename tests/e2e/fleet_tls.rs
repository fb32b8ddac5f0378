//! Fleet TLS: session tickets sealed with a shared key file resume on another edge,
//! survive a rotation, and fail with a different file; reloads (in process and by
//! SIGHUP to the real binary) swap certificates and ticket keys without dropping a
//! connection; and the admin plane's routes all want the token.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edge_tests::{client_config, pattern, tls_handshake, Client, TempDir, TestServer};
use rustls::HandshakeKind;
use tokio::net::TcpStream;

fn key_file(dir: &Path, name: &str, seeds: &[u64]) -> PathBuf {
    let p = dir.join(name);
    let bytes: Vec<u8> = seeds.iter().flat_map(|s| pattern(48, *s)).collect();
    std::fs::write(&p, bytes).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// One GET of `/x.bin` on a new connection with `config`; how the handshake went.
async fn fetch(addr: std::net::SocketAddr, config: &rustls::ClientConfig) -> HandshakeKind {
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = tls_handshake(tcp, config.clone()).await.expect("handshake");
    let kind = tls.get_ref().1.handshake_kind().expect("handshake done");
    let mut c = Client::new(tls);
    let r = c.get("/x.bin", "").await;
    assert_eq!(r.status, 200);
    kind
}

/// `[tls]` for an edge presenting `cert`/`key` and sealing with `keys`.
fn tls_table(cert: &Path, key: &Path, keys: &Path) -> String {
    format!(
        "[tls]\ncert_path = \"{}\"\nkey_path = \"{}\"\nticket_keys_file = \"{}\"\n",
        cert.display(),
        key.display(),
        keys.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_resume_across_edges_sharing_the_key_file_and_across_a_rotation() {
    let dir = TempDir::new("tickets");
    let k1 = key_file(dir.path(), "k1", &[1]);
    // Edge A generates the certificate; B and C present the same one.
    let a = TestServer::start(&format!("[tls]\nticket_keys_file = \"{}\"\n", k1.display())).await;
    let (cert, key) = (a.state.join("cert.pem"), a.state.join("key.pem"));
    let b = TestServer::start(&tls_table(&cert, &key, &k1)).await;
    let k3 = key_file(dir.path(), "k3", &[3]);
    let c = TestServer::start(&tls_table(&cert, &key, &k3)).await;
    for s in [&a, &b, &c] {
        s.put("x.bin", &pattern(2000, 9));
    }

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        // A ticket from A resumes on B (fresh client store each time, so the only
        // ticket is A's).
        let cfg = client_config(&cert, Some(version));
        assert_eq!(fetch(a.tls, &cfg).await, HandshakeKind::Full);
        let resumed_before = b.metrics.handshakes_resumed.get();
        assert_eq!(
            fetch(b.tls, &cfg).await,
            HandshakeKind::Resumed,
            "{version:?}: A's ticket resumes on B"
        );
        assert_eq!(b.metrics.handshakes_resumed.get(), resumed_before + 1);
        // A different key file does not open it.
        let cfg = client_config(&cert, Some(version));
        fetch(a.tls, &cfg).await;
        assert_eq!(
            fetch(c.tls, &cfg).await,
            HandshakeKind::Full,
            "{version:?}: another fleet's keys do not open A's ticket"
        );
    }

    // Rotation on B: the new key first, the old one second; A still seals with the
    // old key. A's tickets still resume on B, and B's new tickets resume on B.
    let rotated = key_file(dir.path(), "rotated", &[2, 1]);
    let mut cfg_b = b.reloader.config();
    cfg_b.tls.ticket_keys_file = Some(rotated.clone());
    b.reloader
        .reload(cfg_b)
        .expect("reload with the rotated keys");
    let cfg = client_config(&cert, Some(&rustls::version::TLS13));
    fetch(a.tls, &cfg).await;
    assert_eq!(
        fetch(b.tls, &cfg).await,
        HandshakeKind::Resumed,
        "old key still opens"
    );
    assert_eq!(
        fetch(b.tls, &cfg).await,
        HandshakeKind::Resumed,
        "new key seals and opens"
    );
    // A, without the new key, cannot open B's new tickets.
    let cfg = client_config(&cert, Some(&rustls::version::TLS13));
    fetch(b.tls, &cfg).await;
    assert_eq!(fetch(a.tls, &cfg).await, HandshakeKind::Full);

    // A key file with loose permissions or a bad length is refused by a reload,
    // with the file named, and the running keys stay.
    let loose = key_file(dir.path(), "loose", &[5]);
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bad = b.reloader.config();
    bad.tls.ticket_keys_file = Some(loose.clone());
    let e = b.reloader.reload(bad).unwrap_err().to_string();
    assert!(e.contains("loose") && e.contains("chmod 600"), "{e}");
    let short = dir.path().join("short");
    std::fs::write(&short, [0u8; 47]).unwrap();
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut bad = b.reloader.config();
    bad.tls.ticket_keys_file = Some(short);
    let e = b.reloader.reload(bad).unwrap_err().to_string();
    assert!(e.contains("47 bytes"), "{e}");
    let cfg = client_config(&cert, Some(&rustls::version::TLS13));
    fetch(a.tls, &cfg).await;
    assert_eq!(
        fetch(b.tls, &cfg).await,
        HandshakeKind::Resumed,
        "keys unchanged"
    );

    // At start-up the same file is refused with the key named.
    let e = TestServer::try_start(&tls_table(&cert, &key, &loose))
        .await
        .err()
        .expect("a 0644 key file is refused");
    assert!(
        e.contains("tls.ticket_keys_file") && e.contains("loose"),
        "{e}"
    );
}

/// Downloads `/seg.bin` on one keep-alive connection until `stop`; counts responses
/// and whether any failed.
async fn keep_downloading(
    addr: std::net::SocketAddr,
    cfg: rustls::ClientConfig,
    stop: Arc<AtomicBool>,
    after_reload: Arc<AtomicU64>,
    reloaded: Arc<AtomicBool>,
    want: usize,
) -> Result<u32, String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let tls = tls_handshake(tcp, cfg).await.map_err(|e| e.to_string())?;
    let mut c = Client::new(tls);
    let mut n = 0;
    loop {
        let was_reloaded = reloaded.load(Ordering::SeqCst);
        c.send(b"GET /seg.bin HTTP/1.1\r\nHost: a\r\n\r\n").await;
        match c.read_response(false).await {
            Some(r) if r.status == 200 && r.body.len() == want => n += 1,
            Some(r) => return Err(format!("status {} len {}", r.status, r.body.len())),
            None => return Err(format!("connection dropped after {n} responses")),
        }
        if was_reloaded {
            after_reload.fetch_add(1, Ordering::SeqCst);
            if stop.load(Ordering::SeqCst) {
                return Ok(n);
            }
        }
    }
}

/// 200 clients downloading over keep-alive while a reload happens.
struct Downloaders {
    stop: Arc<AtomicBool>,
    reloaded: Arc<AtomicBool>,
    after: Arc<AtomicU64>,
    clients: Vec<tokio::task::JoinHandle<Result<u32, String>>>,
}

impl Downloaders {
    /// Starts 200 clients trusting `ca`, each fetching `/seg.bin` of `len` bytes.
    fn start(addr: std::net::SocketAddr, ca: &Path, len: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let reloaded = Arc::new(AtomicBool::new(false));
        let after = Arc::new(AtomicU64::new(0));
        let clients = (0..200)
            .map(|_| {
                tokio::spawn(keep_downloading(
                    addr,
                    client_config(ca, None),
                    stop.clone(),
                    after.clone(),
                    reloaded.clone(),
                    len,
                ))
            })
            .collect();
        Self {
            stop,
            reloaded,
            after,
            clients,
        }
    }

    /// Once the reload is done: waits until the clients got 400 more responses on
    /// their old connections, stops them, and checks none dropped or failed.
    async fn finish_after_reload(self) {
        self.reloaded.store(true, Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.after.load(Ordering::SeqCst) < 400 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.store(true, Ordering::SeqCst);
        let mut served = 0;
        for c in self.clients {
            served += c
                .await
                .unwrap()
                .expect("no connection dropped, no request failed");
        }
        assert!(served >= 400, "{served}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_200_downloads_drops_nothing_and_new_handshakes_see_the_new_cert() {
    let dir = TempDir::new("reload");
    let k1 = key_file(dir.path(), "k1", &[1]);
    // The first certificate: generated into a directory of its own.
    let old_dir = dir.path().join("old");
    edge::tls::ensure_private_dir(&old_dir).unwrap();
    edge::tls::load_or_generate(None, &old_dir).unwrap();
    let (old_cert, old_key) = (old_dir.join("cert.pem"), old_dir.join("key.pem"));
    let s = TestServer::start(&format!(
        "{}[limits]\nmax_connections = 1000\n",
        tls_table(&old_cert, &old_key, &k1)
    ))
    .await;
    let body = pattern(64 * 1024, 4);
    s.put("seg.bin", &body);
    s.put("x.bin", &pattern(100, 1));

    let downloads = Downloaders::start(s.tls, &old_cert, body.len());
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // New certificate and new ticket keys, then the reload.
    let new_dir = dir.path().join("new");
    edge::tls::ensure_private_dir(&new_dir).unwrap();
    edge::tls::load_or_generate(None, &new_dir).unwrap();
    let (new_cert, new_key) = (new_dir.join("cert.pem"), new_dir.join("key.pem"));
    let k2 = key_file(dir.path(), "k2", &[2, 1]);
    let mut cfg = s.reloader.config();
    cfg.tls.cert_and_key = Some((new_cert.clone(), new_key.clone()));
    cfg.tls.ticket_keys_file = Some(k2);
    let applied = s.reloader.reload(cfg).expect("reload");
    assert!(applied
        .live_keys_changed
        .contains(&"tls.cert_path/key_path"));
    // Every client gets more responses on its old connection.
    downloads.finish_after_reload().await;

    // New handshakes present the new certificate: trusting only the new one works,
    // trusting only the old one fails.
    assert_eq!(
        fetch(s.tls, &client_config(&new_cert, None)).await,
        HandshakeKind::Full
    );
    let tcp = TcpStream::connect(s.tls).await.unwrap();
    assert!(
        tls_handshake(tcp, client_config(&old_cert, None))
            .await
            .is_err(),
        "the old certificate is no longer presented"
    );

    // A change that needs a restart is refused, naming the key; nothing changes.
    let mut cfg = s.reloader.config();
    cfg.limits.max_connections = std::num::NonZeroUsize::new(5).unwrap();
    let e = s.reloader.reload(cfg).unwrap_err().to_string();
    assert!(e.contains("limits") && e.contains("restart"), "{e}");
    assert_eq!(s.reloader.config().limits.max_connections.get(), 1000);
    assert_eq!(
        fetch(s.tls, &client_config(&new_cert, None)).await,
        HandshakeKind::Full
    );
}

/// Acceptance of the reload: SIGHUP to the real binary with a new certificate and a
/// new ticket key file (rotated: new key first) while 200 keep-alive clients
/// download. No connection drops, no request fails, new handshakes present the new
/// certificate, and a ticket from before the reload still resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_a_new_certificate_and_keys_under_200_downloads_drops_nothing() {
    use std::process::Command;
    let dir = TempDir::new("sighup");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("x.bin"), pattern(100, 1)).unwrap();
    let body = pattern(64 * 1024, 4);
    std::fs::write(root.join("seg.bin"), &body).unwrap();
    // The certificate and the ticket keys live at fixed paths; the reload re-reads
    // them. The next pair is made now, so a client can trust both.
    let certs = dir.path().join("certs");
    let next = dir.path().join("next");
    for d in [&certs, &next] {
        edge::tls::ensure_private_dir(d).unwrap();
        edge::tls::load_or_generate(None, d).unwrap();
    }
    let (cert, key) = (certs.join("cert.pem"), certs.join("key.pem"));
    let old_cert = dir.path().join("old-cert.pem");
    std::fs::copy(&cert, &old_cert).unwrap();
    let both = dir.path().join("both.pem");
    let mut pem = std::fs::read(&old_cert).unwrap();
    pem.extend(std::fs::read(next.join("cert.pem")).unwrap());
    std::fs::write(&both, pem).unwrap();
    let keys = key_file(dir.path(), "ticket.keys", &[1]);
    let config = edge_tests::write_binary_config(dir.path(), &root, "");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}{}", tls_table(&cert, &key, &keys))).unwrap();
    let mut child = spawn_edge(&config);
    let tls_addr = edge_tests::listening_addr(&mut child, "tls");
    let child = edge_tests::KillOnDrop(child);

    // 200 keep-alive downloaders, and a ticket sealed with the first key.
    let downloads = Downloaders::start(tls_addr, &old_cert, body.len());
    let ticket_holder = client_config(&both, Some(&rustls::version::TLS13));
    assert_eq!(fetch(tls_addr, &ticket_holder).await, HandshakeKind::Full);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Replace the pair and the key file in place (rename, as a deploy tool does),
    // then SIGHUP.
    for f in ["cert.pem", "key.pem"] {
        std::fs::copy(next.join(f), certs.join(format!("{f}.new"))).unwrap();
        std::fs::rename(certs.join(format!("{f}.new")), certs.join(f)).unwrap();
    }
    let rotated = key_file(dir.path(), "ticket.keys.new", &[2, 1]);
    std::fs::rename(&rotated, &keys).unwrap();
    assert!(Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let tcp = TcpStream::connect(tls_addr).await.unwrap();
        if tls_handshake(tcp, client_config(&next.join("cert.pem"), None))
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate never appeared"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    downloads.finish_after_reload().await;
    // The old certificate is gone from new handshakes; the old ticket still resumes
    // (its key is second in the new file).
    let tcp = TcpStream::connect(tls_addr).await.unwrap();
    assert!(tls_handshake(tcp, client_config(&old_cert, None))
        .await
        .is_err());
    assert_eq!(
        fetch(tls_addr, &ticket_holder).await,
        HandshakeKind::Resumed
    );
}

#[tokio::test]
async fn every_admin_route_wants_the_token_and_the_dashboard_answers_with_it() {
    let s = TestServer::start("").await;
    for path in [
        "/",
        "/tls",
        "/storms",
        "/config",
        "/assets/app.js",
        "/assets/uPlot.iife.min.js",
        "/api/overview",
        "/api/series?res=s",
        "/api/series?res=m",
        "/api/tls",
        "/api/storms",
        "/api/storms/1",
        "/api/config",
        "/metrics",
        "/nope",
    ] {
        let mut c = tokio::net::TcpStream::connect(s.admin).await.unwrap();
        let mut client = Client::new(&mut c);
        let r = client.get(path, "").await;
        assert_eq!(r.status, 401, "{path} without the token");
        let r = client_with_cookie(s.admin, path, "edge_admin=0123").await;
        assert_eq!(r, 401, "{path} with a forged cookie");
    }
    // With the token.
    let (st, body) = s.admin_get("/api/overview").await;
    assert_eq!(st, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["connections_open"].is_number(), "{body}");
    let (st, body) = s.admin_get("/api/config").await;
    assert_eq!(st, 200);
    assert!(
        body.contains("<redacted>") && body.contains("reloadable"),
        "{body}"
    );
    assert_eq!(s.admin_get("/api/storms/1").await.0, 404);
    let (st, body) = s.admin_get("/").await;
    assert_eq!(st, 200);
    assert!(body.contains("app.js"), "{body}");
    // The login sets a cookie that opens the routes.
    let token = std::fs::read_to_string(s.state.join("admin.token")).unwrap();
    let mut c = tokio::net::TcpStream::connect(s.admin).await.unwrap();
    let mut client = Client::new(&mut c);
    let r = client
        .get(&format!("/login?token={}", token.trim()), "")
        .await;
    assert_eq!(r.status, 303);
    let cookie = r.header("set-cookie").expect("a cookie").to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    assert!(
        !cookie.contains(token.trim()),
        "the cookie is not the token"
    );
    let pair = cookie.split(';').next().unwrap();
    assert_eq!(client_with_cookie(s.admin, "/api/tls", pair).await, 200);
    let r = client.get("/login?token=wrong-token-wrong", "").await;
    assert_eq!(r.status, 401);
}

async fn client_with_cookie(addr: std::net::SocketAddr, path: &str, cookie: &str) -> u16 {
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut client = Client::new(&mut c);
    client
        .get(path, &format!("Cookie: {cookie}\r\n"))
        .await
        .status
}

/// A client that sends an IP address as SNI makes rustls warn once per handshake;
/// the binary logs at most a burst of such lines and counts every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_literal_sni_is_counted_not_logged_per_handshake() {
    use std::process::Command;
    let dir = TempDir::new("sni-ip");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let config = edge_tests::write_binary_config(dir.path(), &root, "");
    let log = dir.path().join("stderr.log");
    let mut child = Command::new(edge_tests::edge_bin())
        .args(["serve", "--config"])
        .arg(&config)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let line = {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line
    };
    let addr = |key: &str| -> std::net::SocketAddr {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{line}"))
            .parse()
            .unwrap()
    };
    let (tls_addr, admin) = (addr("tls"), addr("admin"));
    // About 3 s of handshakes: they may straddle one boundary of the limiter's 10 s
    // windows, so at most two bursts of lines.
    const HANDSHAKES: usize = 60;
    for _ in 0..HANDSHAKES {
        let out = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &tls_addr.to_string(),
                "-servername",
                "127.0.0.1",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        out.expect("openssl is installed (tests/run-all.sh installs it)");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let token = std::fs::read_to_string(dir.path().join("state/admin.token")).unwrap();
    let metrics = {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut s = TcpStream::connect(admin).await.unwrap();
        let req = format!(
            "GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            token.trim()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    let lines = text.matches("Illegal SNI").count();
    assert!(
        lines <= 2 * edge::logging::BURST as usize,
        "{lines} warning lines for {HANDSHAKES} handshakes:\n{text}"
    );
    let counted: f64 = metrics
        .lines()
        .find(|l| l.starts_with("edge_tls_handshakes_by_sni_total{sni=\"ip_literal\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no ip_literal count in\n{metrics}"));
    assert!(counted >= HANDSHAKES as f64, "{counted}");
}

/// `edge serve --config CONFIG`, stdout piped (for the listening line), stderr dropped.
fn spawn_edge(config: &Path) -> std::process::Child {
    std::process::Command::new(edge_tests::edge_bin())
        .args(["serve", "--config"])
        .arg(config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// `edge_config_reloads_total{result}` from the admin plane at `admin` (blocking GET).
fn reload_count(admin: std::net::SocketAddr, token: &str, result: &str) -> u64 {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let name = format!("edge_config_reloads_total{{result=\"{result}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(name.as_str()))
        .unwrap_or_else(|| panic!("no {name} in the metrics"))
        .trim()
        .parse()
        .unwrap()
}

/// What a deploy tool reads after `systemctl reload edge`: every SIGHUP is counted in
/// `edge_config_reloads_total` by result. Applied (new ticket keys in the text form
/// Ansible writes), refused (a restart-only key changed) and failed (a key file edge
/// refuses) each move their own counter, and edge keeps serving. A SIGHUP sent the
/// moment edge says it listens (before its handler may be installed) is a no-op.
#[test]
fn sighup_outcomes_are_counted_by_result_and_an_early_sighup_is_harmless() {
    use std::process::Command;
    let dir = TempDir::new("reload-count");
    let root = dir.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("x.bin"), pattern(100, 1)).unwrap();
    let certs = dir.path().join("certs");
    edge::tls::ensure_private_dir(&certs).unwrap();
    edge::tls::load_or_generate(None, &certs).unwrap();
    let keys = key_file(dir.path(), "ticket.keys", &[1]);
    let config = edge_tests::write_binary_config(dir.path(), &root, "");
    let base = std::fs::read_to_string(&config).unwrap();
    let tls = tls_table(&certs.join("cert.pem"), &certs.join("key.pem"), &keys);
    std::fs::write(&config, format!("{base}{tls}")).unwrap();
    let mut child = spawn_edge(&config);
    let line = edge_tests::listening_line(&mut child);
    let mut child = edge_tests::KillOnDrop(child);
    let hup = |pid: u32| {
        assert!(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success())
    };
    let pid = child.0.id();
    hup(pid);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.0.try_wait().unwrap().is_none(),
        "a SIGHUP right after start-up killed edge"
    );
    let admin = edge_tests::addr_in_listening_line(&line, "admin");
    let token = std::fs::read_to_string(dir.path().join("state/admin.token")).unwrap();
    let token = token.trim();
    let wait_for = |result: &str, want: u64| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while reload_count(admin, token, result) < want {
            assert!(
                std::time::Instant::now() < deadline,
                "edge_config_reloads_total{{result=\"{result}\"}} never reached {want}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The early SIGHUP either was ignored or reloaded; count from here.
    let applied0 = reload_count(admin, token, "applied");

    // Applied: the rotated keys as text, one key of 96 hex digits per line.
    let hex = |seed: u64| {
        pattern(48, seed)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    std::fs::write(&keys, format!("# rotated\n{}\n{}\n", hex(2), hex(1))).unwrap();
    hup(pid);
    wait_for("applied", applied0 + 1);
    // Refused: a restart-only key changed; the running config stays.
    std::fs::write(&config, format!("{base}{tls}[limits]\nmax_headers = 9\n")).unwrap();
    hup(pid);
    wait_for("refused", 1);
    std::fs::write(&config, format!("{base}{tls}")).unwrap();
    // Failed: a key file edge refuses (not a whole number of keys).
    std::fs::write(&keys, pattern(40, 3)).unwrap();
    hup(pid);
    wait_for("failed", 1);
    assert_eq!(reload_count(admin, token, "applied"), applied0 + 1);
    assert!(child.0.try_wait().unwrap().is_none(), "edge exited");
}
