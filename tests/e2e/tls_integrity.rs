//! The userspace-TLS body path returns byte-identical content for whole files and
//! ranges, under TLS 1.2 and 1.3, and the metrics attribute it correctly.

use edge_tests::{client_config, pattern, sha256_hex, tls_connect, Client, TestServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_bodies_are_byte_identical() {
    // Small buffer so a body crosses many pooled-buffer refills.
    let s = TestServer::start("[limits]\nuserspace_tls_buffer_bytes = 16384\n").await;
    let big = pattern(16 << 20, 7);
    s.put("big.bin", &big);
    let small = pattern(1000, 9);
    s.put("small.bin", &small);
    let ca = s.state.join("cert.pem");

    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut c =
            Client::new(tls_connect(s.tls, &ca, Some(client_config(&ca, Some(version)))).await);
        let r = c.get("/big.bin", "").await;
        assert_eq!(r.status, 200);
        assert_eq!(
            sha256_hex(&r.body),
            sha256_hex(&big),
            "{version:?} whole file"
        );
        let len = big.len() as u64;
        for (start, end) in [
            (0, 0),
            (1, 16_383),
            (16_383, 16_385),
            (5_000_000, 9_999_999),
            (len - 1, len - 1),
            (12_345, len - 1),
        ] {
            let r = c
                .get("/big.bin", &format!("Range: bytes={start}-{end}\r\n"))
                .await;
            assert_eq!(r.status, 206);
            assert_eq!(
                sha256_hex(&r.body),
                sha256_hex(&big[start as usize..=end as usize]),
                "{version:?} range {start}-{end}"
            );
        }
        let r = c.get("/small.bin", "").await;
        assert_eq!(r.body, small);
    }
    let m = s.metrics_text().await;
    assert!(
        m.contains("edge_tls_connections_total{path=\"userspace\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("edge_tls_connections_total{path=\"ktls\"} 0"),
        "{m}"
    );
    assert!(
        m.contains("edge_body_bytes_total{path=\"sendfile_ktls\"} 0"),
        "{m}"
    );
    let userspace_bytes: u64 = m
        .lines()
        .find(|l| l.starts_with("edge_body_bytes_total{path=\"userspace_copy\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(userspace_bytes > 2 * (16 << 20), "{userspace_bytes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumed_handshakes_are_counted() {
    let s = TestServer::start("").await;
    s.put("a.ts", b"abc");
    let ca = s.state.join("cert.pem");
    // One client config, so its session cache carries the ticket to the second connection.
    let config = client_config(&ca, None);
    for _ in 0..2 {
        let mut c = Client::new(tls_connect(s.tls, &ca, Some(config.clone())).await);
        assert_eq!(c.get("/a.ts", "").await.body, b"abc");
    }
    let m = s.metrics_text().await;
    assert!(
        m.contains("edge_tls_handshakes_total{kind=\"full\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("edge_tls_handshakes_total{kind=\"resumed\"} 1"),
        "{m}"
    );
}
