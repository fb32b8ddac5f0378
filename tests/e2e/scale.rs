//! Scale and operations: the admin CPU profiler.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use edge_tests::{tls_connect, Client, TestServer};
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
