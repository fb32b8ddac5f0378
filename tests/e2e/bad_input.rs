//! Bad input and limits: each gets the right answer, and the server serves normally
//! afterwards.

use std::time::{Duration, Instant};

use edge_tests::{Client, TestServer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const LIMITS: &str =
    "[limits]\nmax_head_bytes = 1024\nheader_read_timeout_secs = 1\nmax_connections = 4\n";

async fn still_serves(s: &TestServer) {
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    let r = c.get("/ok.ts", "").await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"fine".as_slice()));
}

async fn start() -> TestServer {
    let s = TestServer::start(LIMITS).await;
    s.put("ok.ts", b"fine");
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_head_gets_431_and_close() {
    let s = start().await;
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    let big = format!(
        "GET /ok.ts HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(2000)
    );
    c.send(big.as_bytes()).await;
    let r = c.read_response(false).await.unwrap();
    assert_eq!(r.status, 431);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.is_closed().await);
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_host_is_400_and_keeps_the_connection() {
    let s = start().await;
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    c.send(b"GET /ok.ts HTTP/1.1\r\n\r\n").await;
    let r = c.read_response(false).await.unwrap();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(
        c.get("/ok.ts", "").await.status,
        200,
        "same connection still serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_framing_is_400_and_close() {
    let s = start().await;
    for raw in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET /ok.ts HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
        b"GET /ok.ts HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
        c.send(raw).await;
        let r = c.read_response(false).await.unwrap();
        assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(raw));
        assert!(c.is_closed().await);
    }
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_range_is_416_with_content_range() {
    let s = start().await;
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    for range in ["bytes=10-", "bytes=5-2", "bytes=abc", "bytes=-0"] {
        let r = c.get("/ok.ts", &format!("Range: {range}\r\n")).await;
        assert_eq!(r.status, 416, "{range}");
        assert_eq!(r.header("content-range"), Some("bytes */4"), "{range}");
    }
    assert_eq!(c.get("/ok.ts", "").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_never_leaves_the_root() {
    let s = start().await;
    // A secret next to the root, and a symlink inside the root pointing at it.
    let secret = s.root.parent().unwrap().join("secret.txt");
    std::fs::write(&secret, b"TOP SECRET").unwrap();
    std::os::unix::fs::symlink(&secret, s.root.join("link.txt")).unwrap();
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    for target in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E/%2e%2e/secret.txt",
        "/a/../../secret.txt",
        "/..%2fsecret.txt",
        "/..%5csecret.txt",
        "/..\\secret.txt",
        "/ok.ts%00/../../secret.txt",
        "/link.txt",
        "//../secret.txt",
        "/./../secret.txt",
        "/%252e%252e/secret.txt",
    ] {
        c.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
            .await;
        let r = c
            .read_response(false)
            .await
            .expect("answered, connection kept");
        assert!(matches!(r.status, 400 | 404), "{target}: {}", r.status);
        assert!(
            !String::from_utf8_lossy(&r.body).contains("SECRET"),
            "{target}"
        );
    }
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_half_head_is_closed_at_the_header_timeout() {
    let s = start().await;
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    c.send(b"GET /ok.ts HTTP/1.1\r\nHo").await;
    let t0 = Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(10), c.is_closed()).await;
    assert_eq!(closed, Ok(true), "closed by the server");
    // header_read_timeout_secs = 1: not before it, and well before the idle timeout (75 s).
    assert!(
        t0.elapsed() >= Duration::from_millis(800),
        "{:?}",
        t0.elapsed()
    );
    let m = s.metrics_text().await;
    assert!(
        m.contains("edge_connection_closes_total{reason=\"header_timeout\"} 1"),
        "{m}"
    );
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_refused() {
    let s = start().await;
    // max_connections = 4: hold four open (two plain, two TLS, all idle).
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
        assert_eq!(c.get("/ok.ts", "").await.status, 200);
        held.push(c);
    }
    let t1 = Client::new(s.tls_connect().await);
    let t2 = Client::new(s.tls_connect().await);
    // The fifth plain connection gets 503 and a close.
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    let r = c.read_response(false).await.expect("a 503");
    assert_eq!(r.status, 503);
    assert!(c.is_closed().await);
    // A fifth TLS connection is closed before the handshake.
    let mut raw = TcpStream::connect(s.tls).await.unwrap();
    let _ = raw.write_all(b"\x16\x03\x01\x00\x05hello").await;
    let mut probe = Client::new(raw);
    assert!(probe.is_closed().await);
    let m = s.metrics_text().await;
    assert!(m.contains("edge_connections_refused_total 2"), "{m}");
    // Free the slots: the server serves normally again.
    drop(held);
    drop((t1, t2));
    tokio::time::sleep(Duration::from_millis(200)).await;
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsupported_methods_get_405_and_keep_alive() {
    let s = start().await;
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    c.send(b"DELETE /ok.ts HTTP/1.1\r\nHost: t\r\n\r\n").await;
    let r = c.read_response(false).await.unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, OPTIONS"));
    // A small request body is skipped and framing stays intact.
    c.send(b"GET /ok.ts HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabcGET /ok.ts HTTP/1.1\r\nHost: t\r\n\r\n").await;
    assert_eq!(c.read_response(false).await.unwrap().status, 200);
    assert_eq!(c.read_response(false).await.unwrap().status, 200);
}

/// After an error that closes the connection, a client that kept sending (a head far
/// over the limit, then more) can still read the whole answer. Plain HTTP and TLS.
/// (On loopback Linux delivers the answer even when a close with unread input sends a
/// reset; `lingering_close_lets_a_client_still_sending_finish_and_read_the_error`
/// checks that no reset is sent.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answer_survives_input_sent_past_the_limit() {
    let s = start().await;
    let tcp = TcpStream::connect(s.http).await.unwrap();
    oversized_head_then_junk(Client::new(tcp), "plain HTTP").await;
    oversized_head_then_junk(Client::new(s.tls_connect().await), "TLS").await;
    still_serves(&s).await;
}

/// Sends a head over the 1 KiB limit followed by 256 KiB more, waits, then reads.
async fn oversized_head_then_junk<S>(mut c: Client<S>, label: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut junk = format!(
        "GET /ok.ts HTTP/1.1\r\nHost: t\r\nX-Pad: {}\r\n",
        "a".repeat(2000)
    )
    .into_bytes();
    junk.extend(std::iter::repeat_n(b'j', 256 * 1024));
    // The server answers after 1 KiB; the rest arrives around and after its close.
    let writer = async {
        let _ = c.stream.write_all(&junk).await;
        let _ = c.stream.flush().await;
    };
    let _ = tokio::time::timeout(Duration::from_secs(3), writer).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = c
        .read_response(false)
        .await
        .unwrap_or_else(|| panic!("{label}: the 431 was lost (reset by the server's close)"));
    assert_eq!(r.status, 431, "{label}");
    assert_eq!(r.body, b"request header fields too large\n", "{label}");
}

/// Lingering close: after an error answer that closes the connection (413 here, for a
/// body far over what is read and discarded), edge sends its FIN but keeps reading and
/// discarding for `limits.lingering_close_secs`. A client still sending its body gets
/// no reset (every write succeeds), then reads the whole answer and a clean end, on
/// plain HTTP and TLS. Without lingering, closing with unread input resets the
/// connection and the client's next write fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lingering_close_lets_a_client_still_sending_finish_and_read_the_error() {
    let s = TestServer::start(&format!("{LIMITS}lingering_close_secs = 2\n")).await;
    s.put("ok.ts", b"fine");
    let tcp = TcpStream::connect(s.http).await.unwrap();
    keeps_sending_then_reads_413(Client::new(tcp), "plain HTTP").await;
    keeps_sending_then_reads_413(Client::new(s.tls_connect().await), "TLS").await;

    // Lingering is bounded: a client that never stops sending is cut off once
    // lingering_close_secs have passed.
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    c.send(b"GET /ok.ts HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
        .await;
    let started = Instant::now();
    let chunk = vec![b'b'; 16 * 1024];
    let cut_after = loop {
        let w = tokio::time::timeout(Duration::from_secs(2), c.stream.write_all(&chunk)).await;
        if !matches!(w, Ok(Ok(()))) {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "a client sending forever was not cut off 8 s after a 413 (lingering_close_secs = 2)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        cut_after >= Duration::from_millis(1500),
        "cut off after {cut_after:?}, before lingering_close_secs = 2 had passed"
    );
    still_serves(&s).await;
}

/// Announces a 100 MB body, sends 640 KiB of it over a second (the server has
/// answered 413 and closed by then), ends its side, then reads.
async fn keeps_sending_then_reads_413<S>(mut c: Client<S>, label: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    c.send(b"GET /ok.ts HTTP/1.1\r\nHost: t\r\nContent-Length: 100000000\r\n\r\n")
        .await;
    let chunk = vec![b'b'; 64 * 1024];
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let w = tokio::time::timeout(Duration::from_secs(2), async {
            c.stream.write_all(&chunk).await?;
            c.stream.flush().await
        })
        .await;
        match w {
            Ok(Ok(())) => {}
            other => panic!(
                "{label}: write {i} of the body after the 413 failed ({other:?}): the server \
                 reset the connection instead of lingering"
            ),
        }
    }
    let _ = c.stream.shutdown().await;
    let r = c
        .read_response(false)
        .await
        .unwrap_or_else(|| panic!("{label}: no answer"));
    assert_eq!(r.status, 413, "{label}");
    assert_eq!(r.header("connection"), Some("close"), "{label}");
    assert!(c.is_closed().await, "{label}: closed after the answer");
}
