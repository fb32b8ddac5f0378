//! GET, HEAD, ranges, conditionals, CORS and keep-alive across deliberate 4xx, over
//! plain HTTP and TLS.

use edge_tests::{pattern, Client, TestServer};
use tokio::net::TcpStream;

async fn exercise<S>(c: &mut Client<S>, data: &[u8])
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let r = c.get("/v/seg_001.ts", "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, data);
    assert_eq!(r.header("content-type"), Some("video/mp2t"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    let etag = r.header("etag").unwrap().to_string();
    let last_modified = r.header("last-modified").unwrap().to_string();

    // A deliberate 404 keeps the connection; the next request reuses it.
    let r = c.get("/v/seg_999.ts", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert!(r.header("cache-control").is_some());

    let r = c.get("/v/seg_001.ts", "Range: bytes=100-199\r\n").await;
    assert_eq!(r.status, 206);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 100-199/{}", data.len()).as_str())
    );
    assert_eq!(r.body, &data[100..200]);

    let r = c.get("/v/seg_001.ts", "Range: bytes=-10\r\n").await;
    assert_eq!(r.body, &data[data.len() - 10..]);

    let r = c
        .get("/v/seg_001.ts", &format!("If-None-Match: {etag}\r\n"))
        .await;
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = c
        .get(
            "/v/seg_001.ts",
            &format!("If-Modified-Since: {last_modified}\r\n"),
        )
        .await;
    assert_eq!(r.status, 304);

    c.send(b"HEAD /v/seg_001.ts HTTP/1.1\r\nHost: t\r\n\r\n")
        .await;
    let r = c.read_response(true).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(data.len().to_string().as_str())
    );

    c.send(b"OPTIONS /v/seg_001.ts HTTP/1.1\r\nHost: t\r\nOrigin: https://player.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\n\r\n").await;
    let r = c.read_response(false).await.unwrap();
    assert_eq!(r.status, 204);
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    assert!(r
        .header("access-control-allow-methods")
        .unwrap()
        .contains("GET"));
    assert_eq!(r.header("access-control-allow-headers"), Some("range"));

    let r = c
        .get("/v/index.m3u8", "Origin: https://player.example\r\n")
        .await;
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.apple.mpegurl")
    );
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));

    // Pipelined requests are answered in order.
    c.send(b"GET /v/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\nGET /v/seg_001.ts HTTP/1.1\r\nHost: t\r\nRange: bytes=0-0\r\n\r\n").await;
    assert_eq!(c.read_response(false).await.unwrap().status, 200);
    assert_eq!(c.read_response(false).await.unwrap().body, &data[..1]);
}

fn content(s: &TestServer) -> Vec<u8> {
    let data = pattern(300_000, 1);
    s.put("v/seg_001.ts", &data);
    s.put("v/index.m3u8", b"#EXTM3U\n");
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_semantics_on_one_connection() {
    let s = TestServer::start("").await;
    let data = content(&s);
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    exercise(&mut c, &data).await;
    let m = s.metrics_text().await;
    assert!(
        m.contains("edge_connections_accepted_total{listener=\"http\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_semantics_on_one_connection() {
    let s = TestServer::start("").await;
    let data = content(&s);
    let mut c = Client::new(s.tls_connect().await);
    exercise(&mut c, &data).await;
    let m = s.metrics_text().await;
    assert!(
        m.contains("edge_connections_accepted_total{listener=\"tls\"} 1"),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_and_request_cap() {
    let s = TestServer::start("[limits]\nmax_requests_per_connection = 2\n").await;
    content(&s);
    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    assert_eq!(
        c.get("/v/index.m3u8", "").await.header("connection"),
        Some("keep-alive")
    );
    assert_eq!(
        c.get("/v/index.m3u8", "").await.header("connection"),
        Some("close")
    );
    assert!(c.is_closed().await);

    let mut c = Client::new(TcpStream::connect(s.http).await.unwrap());
    assert_eq!(
        c.get("/v/index.m3u8", "Connection: close\r\n")
            .await
            .header("connection"),
        Some("close")
    );
    assert!(c.is_closed().await);
}
