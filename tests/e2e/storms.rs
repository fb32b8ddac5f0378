//! Handshake-storm simulations over real TLS on loopback: a population of clients
//! (each from its own 127.0.0.x address) fetches segments at a steady rate, then a
//! burst of deliberate 404s makes them reconnect in one of four ways. The detector
//! must raise a storm within 10 s of the burst's onset, name status 404, the prefix
//! `/missing/` and the right cause, and end it after the burst; a steady population
//! raises none.
//!
//! The detector runs with its default thresholds except a 5 s warm-up (default
//! 20 s), to keep the tests short.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edge_tests::{client_config, pattern, tls_handshake, Client, TestServer};
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpSocket;

const STEADY: u8 = 0;
const BURST: u8 = 1;
const STOP: u8 = 2;

#[derive(Clone, Copy, PartialEq, Debug)]
enum Behaviour {
    /// Keep-alive; after any 4xx the client drops the connection and reconnects.
    DropAfter4xx,
    /// Keep-alive; in the burst, after the 404 the client starts a big download and
    /// abandons it mid-body.
    AbortMidBody,
    /// Keep-alive; the server closes after errors (`server.close_after_error`).
    ServerCloses,
    /// A new connection per request (`Connection: close`).
    ConnectionPerRequest,
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(
    from: Ipv4Addr,
    to: SocketAddr,
    cfg: &rustls::ClientConfig,
    small_rcvbuf: bool,
) -> Option<Client<Tls>> {
    let sock = TcpSocket::new_v4().ok()?;
    sock.bind(SocketAddr::new(IpAddr::V4(from), 0)).ok()?;
    if small_rcvbuf {
        let _ = sock.set_recv_buffer_size(16 * 1024);
    }
    let tcp = sock.connect(to).await.ok()?;
    tls_handshake(tcp, cfg.clone()).await.ok().map(Client::new)
}

async fn request(c: &mut Client<Tls>, path: &str, close: bool) -> Option<edge_tests::Response> {
    let extra = if close { "Connection: close\r\n" } else { "" };
    c.send(
        format!("GET {path} HTTP/1.1\r\nHost: test\r\nUser-Agent: storm-sim/1\r\n{extra}\r\n")
            .as_bytes(),
    )
    .await;
    c.read_response(false).await
}

/// One simulated player until the phase says stop.
async fn player(
    id: u8,
    to: SocketAddr,
    cfg: rustls::ClientConfig,
    how: Behaviour,
    phase: Arc<AtomicU8>,
) {
    let from = Ipv4Addr::new(127, 0, 1, id);
    let mut conn: Option<Client<Tls>> = None;
    let mut seg = 0u32;
    loop {
        let p = phase.load(Ordering::SeqCst);
        if p == STOP {
            return;
        }
        seg = (seg + 1) % 8;
        let good = format!("/vod/seg{seg}.ts");
        if how == Behaviour::ConnectionPerRequest {
            let path = if p == BURST {
                format!("/missing/seg{seg}.ts")
            } else {
                good
            };
            if let Some(mut c) = connect(from, to, &cfg, false).await {
                let _ = request(&mut c, &path, true).await;
            }
            let pause = if p == BURST { 50 } else { 1000 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            continue;
        }
        if conn.is_none() {
            conn = connect(from, to, &cfg, how == Behaviour::AbortMidBody).await;
        }
        let Some(c) = conn.as_mut() else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if p == BURST {
            let r = request(c, &format!("/missing/seg{seg}.ts"), false).await;
            match how {
                Behaviour::DropAfter4xx => conn = None,
                Behaviour::ServerCloses => {
                    // The server said Connection: close; the next request needs a
                    // new connection.
                    if r.is_none_or(|r| r.header("connection") == Some("close")) {
                        conn = None;
                    }
                }
                Behaviour::AbortMidBody => {
                    // Start a long download, read a little of it, walk away.
                    c.send(b"GET /vod/big.bin HTTP/1.1\r\nHost: test\r\nUser-Agent: storm-sim/1\r\n\r\n")
                        .await;
                    let mut buf = vec![0u8; 16 * 1024];
                    let _ =
                        tokio::time::timeout(Duration::from_secs(2), c.stream.read(&mut buf)).await;
                    conn = None;
                }
                Behaviour::ConnectionPerRequest => unreachable!(),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        } else {
            if request(c, &good, false).await.is_none() {
                conn = None;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }
}

struct Population {
    phase: Arc<AtomicU8>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Population {
    fn start(s: &TestServer, n: u8, how: Behaviour) -> Self {
        let phase = Arc::new(AtomicU8::new(STEADY));
        let cfg = client_config(&s.state.join("cert.pem"), None);
        let tasks = (0..n)
            .map(|i| tokio::spawn(player(10 + i, s.tls, cfg.clone(), how, phase.clone())))
            .collect();
        Self { phase, tasks }
    }

    async fn stop(self) {
        self.phase.store(STOP, Ordering::SeqCst);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

async fn server(server_extra: &str) -> TestServer {
    let s = TestServer::start_with(server_extra, "[telemetry.storm]\nwarmup_secs = 5\n").await;
    for i in 0..8 {
        s.put(&format!("vod/seg{i}.ts"), &pattern(64 * 1024, i));
    }
    s.put("vod/big.bin", &pattern(8 << 20, 99));
    s
}

async fn storms(s: &TestServer) -> serde_json::Value {
    let (st, body) = s.admin_get("/api/storms").await;
    assert_eq!(st, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn simulate(how: Behaviour, expected_cause: &str) {
    let s = server(if how == Behaviour::ServerCloses {
        "close_after_error = true"
    } else {
        ""
    })
    .await;
    let pop = Population::start(&s, 30, how);
    tokio::time::sleep(Duration::from_secs(14)).await;
    let v = storms(&s).await;
    assert!(v["active"].is_null(), "no storm in the steady phase: {v}");
    assert_eq!(v["storms"].as_array().unwrap().len(), 0, "{v}");

    // The burst: 8 s of 404s.
    pop.phase.store(BURST, Ordering::SeqCst);
    let onset = tokio::time::Instant::now();
    let mut raised = None;
    while onset.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let v = storms(&s).await;
        if !v["active"].is_null() {
            raised = Some((onset.elapsed(), v["active"].clone()));
            break;
        }
    }
    let (after, _) =
        raised.unwrap_or_else(|| panic!("{how:?}: no storm within 10 s of the burst's onset"));
    let left = Duration::from_secs(8).saturating_sub(onset.elapsed());
    tokio::time::sleep(left).await;
    let v = storms(&s).await;
    let storm = &v["active"];
    assert!(
        !storm.is_null(),
        "{how:?}: the storm is still on at the end of the burst: {v}"
    );
    assert_eq!(storm["top_status"][0][0], 404, "{how:?}: {storm}");
    assert_eq!(storm["top_prefixes"][0][0], "/missing/", "{how:?}: {storm}");
    assert_eq!(storm["cause"], expected_cause, "{how:?}: {storm}");
    assert_eq!(
        storm["top_networks"][0][0], "127.0.1.0/24",
        "{how:?}: {storm}"
    );
    assert_eq!(
        storm["top_user_agents"][0][0], "storm-sim/1",
        "{how:?}: {storm}"
    );

    // Back to steady: the storm ends.
    pop.phase.store(STEADY, Ordering::SeqCst);
    let calm = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let v = storms(&s).await;
        if v["active"].is_null() {
            let list = v["storms"].as_array().unwrap();
            assert_eq!(list.len(), 1, "{how:?}: one storm: {v}");
            assert!(list[0]["end_ms"].is_u64(), "{v}");
            assert!(list[0]["excess_handshakes"].as_u64().unwrap() > 0, "{v}");
            eprintln!(
                "{how:?}: raised {:.1} s after onset; ended {:.1} s after the burst; {}",
                after.as_secs_f64(),
                calm.elapsed().as_secs_f64(),
                list[0]
            );
            break;
        }
        assert!(
            calm.elapsed() < Duration::from_secs(40),
            "{how:?}: the storm never ended: {v}"
        );
    }
    pop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_from_clients_that_drop_the_connection_after_a_404() {
    simulate(Behaviour::DropAfter4xx, "client_closed_after_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_from_clients_that_abort_downloads_mid_body() {
    simulate(Behaviour::AbortMidBody, "aborted_mid_body").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_from_a_server_that_closes_after_errors() {
    simulate(Behaviour::ServerCloses, "server_closed_after_error").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storm_from_connection_per_request_clients() {
    simulate(Behaviour::ConnectionPerRequest, "connection_per_request").await;
}

/// Five minutes of the same populations (keep-alive and connection-per-request
/// players together) without a burst: no storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_steady_population_raises_no_storm_in_five_minutes() {
    let s = server("").await;
    let keep_alive = Population::start(&s, 20, Behaviour::DropAfter4xx);
    let per_request = {
        let phase = Arc::new(AtomicU8::new(STEADY));
        let cfg = client_config(&s.state.join("cert.pem"), None);
        let tasks = (0..10)
            .map(|i| {
                tokio::spawn(player(
                    100 + i,
                    s.tls,
                    cfg.clone(),
                    Behaviour::ConnectionPerRequest,
                    phase.clone(),
                ))
            })
            .collect();
        Population { phase, tasks }
    };
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let v = storms(&s).await;
        assert!(
            v["active"].is_null(),
            "a storm in a steady phase at {:?}: {v}",
            start.elapsed()
        );
    }
    let v = storms(&s).await;
    assert_eq!(v["storms"].as_array().unwrap().len(), 0, "{v}");
    let (_, series) = s.admin_get("/api/series?res=s").await;
    let series: serde_json::Value = serde_json::from_str(&series).unwrap();
    let handshakes: u64 = series["handshakes_full"]
        .as_array()
        .unwrap()
        .iter()
        .chain(series["handshakes_resumed"].as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        handshakes > 2000,
        "the per-request players kept handshaking: {handshakes}"
    );
    keep_alive.stop().await;
    per_request.stop().await;
}
