//! `tls-peer`: a TLS client that misbehaves on purpose, for the kTLS guest suite.
//!
//! Usage: `tls-peer ADDR CA_PEM MODE PATH` where MODE is
//! - `close-notify`: GET PATH, then send close_notify; the server must close too;
//! - `fatal-alert`: GET PATH, hand the client side to kTLS, send an encrypted fatal
//!   alert (unexpected_message); the server must close (kernel with kTLS only);
//! - `key-update`: GET PATH, send a TLS 1.3 KeyUpdate, then GET again; the server
//!   must either answer or close cleanly (edge on kTLS cannot rekey and closes);
//! - `half-close`: TLS 1.3 handshake, GET PATH, then shut down the TCP write side
//!   (a FIN, no close_notify) and read: the server must still send the whole
//!   `200` response (Content-Length body) within 20 s. A server that hands the
//!   connection to kTLS after the FIN arrived meets a kernel that refuses `TCP_ULP`
//!   on a socket no longer `ESTABLISHED`, and must not drop the request for that.
//!
//! Prints one line (`ok MODE: ...`) and exits 0 when the server behaved, else 1.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!(
            "usage: tls-peer ADDR CA_PEM close-notify|fatal-alert|key-update|half-close PATH"
        );
        return ExitCode::from(2);
    }
    let (addr, ca, mode, path) = (&args[1], Path::new(&args[2]), args[3].as_str(), &args[4]);
    match run(addr, ca, mode, path).await {
        Ok(msg) => {
            println!("ok {mode}: {msg}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            println!("FAIL {mode}: {msg}");
            ExitCode::FAILURE
        }
    }
}

async fn run(addr: &str, ca: &Path, mode: &str, path: &str) -> Result<String, String> {
    if mode == "half-close" {
        return half_close(addr, ca, path);
    }
    let mut config = edge_tests::client_config(ca, Some(&rustls::version::TLS13));
    config.enable_secret_extraction = true;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, ktls::CorkStream::new(tcp))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: guest\r\n\r\n");
    let got = get(&mut tls, &request).await?;
    match mode {
        "close-notify" => {
            tls.shutdown().await.map_err(|e| format!("shutdown: {e}"))?;
            let rest = read_to_end(&mut tls).await?;
            Ok(format!(
                "got {got} body bytes; server closed after close_notify ({rest} extra bytes)"
            ))
        }
        "key-update" => {
            tls.get_mut()
                .1
                .refresh_traffic_keys()
                .map_err(|e| format!("refresh_traffic_keys: {e}"))?;
            tls.write_all(request.as_bytes())
                .await
                .map_err(|e| format!("write: {e}"))?;
            tls.flush().await.map_err(|e| format!("flush: {e}"))?;
            // Either a second answer (userspace TLS rekeys) or a clean close (kTLS cannot).
            let mut buf = vec![0u8; 1 << 16];
            match timeout(WAIT, tls.read(&mut buf)).await {
                Err(_) => Err("server neither answered nor closed after KeyUpdate".into()),
                Ok(Ok(0)) | Ok(Err(_)) => Ok(format!(
                    "got {got} body bytes; server closed after KeyUpdate"
                )),
                Ok(Ok(n)) if buf.starts_with(b"HTTP/1.1 200") => Ok(format!(
                    "got {got} body bytes; server answered after KeyUpdate ({n} bytes)"
                )),
                Ok(Ok(n)) => Err(format!("unexpected {n} bytes after KeyUpdate")),
            }
        }
        "fatal-alert" => {
            let mut k = ktls::config_ktls_client(tls)
                .await
                .map_err(|e| format!("client kTLS: {e}"))?;
            let fd = k.get_ref().as_raw_fd();
            // level fatal (2), unexpected_message (10), encrypted by the kernel.
            edge::sys::ktls_send_alert(fd, 2, 10).map_err(|e| format!("send alert: {e}"))?;
            let rest = read_to_end(&mut k).await?;
            Ok(format!(
                "got {got} body bytes; server closed after a fatal alert ({rest} extra bytes)"
            ))
        }
        other => Err(format!("unknown mode {other}")),
    }
}

/// `half-close`: the request, then a TCP FIN without close_notify; the whole response
/// must still arrive. Driven by hand (blocking sockets) so that the client's Finished,
/// the request and the FIN leave back to back: the client's Finished and the request
/// go out in ONE write, `shutdown(SHUT_WR)` follows at once, so the FIN is queued at
/// the server before it can have finished its side of the handshake.
fn half_close(addr: &str, ca: &Path, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let config = edge_tests::client_config(ca, Some(&rustls::version::TLS13));
    let name = ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let mut tls = rustls::ClientConnection::new(Arc::new(config), name)
        .map_err(|e| format!("client: {e}"))?;
    let mut sock = std::net::TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    sock.set_nodelay(true).map_err(|e| e.to_string())?;
    let deadline = std::time::Instant::now() + WAIT;
    let io = |e: std::io::Error| e.to_string();
    // Handshake, up to (not including) sending the client's Finished.
    while tls.is_handshaking() {
        while tls.wants_write() {
            tls.write_tls(&mut sock).map_err(io)?;
        }
        sock.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
        if tls
            .read_tls(&mut sock)
            .map_err(|e| format!("handshake: {e}"))?
            == 0
        {
            return Err("handshake: server closed".into());
        }
        tls.process_new_packets()
            .map_err(|e| format!("handshake: {e}"))?;
    }
    let request = format!("GET {path} HTTP/1.1\r\nHost: guest\r\n\r\n");
    tls.writer()
        .write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut flight = Vec::new();
    while tls.wants_write() {
        tls.write_tls(&mut flight).map_err(io)?;
    }
    sock.write_all(&flight).map_err(|e| format!("write: {e}"))?;
    // A FIN, no close_notify.
    sock.shutdown(std::net::Shutdown::Write)
        .map_err(|e| format!("shutdown(SHUT_WR): {e}"))?;
    let start = std::time::Instant::now();
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        if let Some(len) = complete_response(&buf)? {
            return Ok(format!(
                "got {len} body bytes {:.2} s after Finished+request+FIN (no close_notify)",
                start.elapsed().as_secs_f64()
            ));
        }
        // Plaintext already decrypted first; after EOF, Ok(0) (close_notify) or
        // UnexpectedEof once it is used up.
        match tls.reader().read(&mut chunk) {
            Ok(n) if n > 0 => {
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(_) | Err(_) => {
                return Err(format!(
                    "server closed after {} response bytes, before a full response",
                    buf.len()
                ))
            }
        }
        sock.set_read_timeout(Some(left(deadline)?)).map_err(io)?;
        tls.read_tls(&mut sock).map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "no complete response within 20 s".to_string()
            }
            _ => format!("read: {e}"),
        })?;
        tls.process_new_packets()
            .map_err(|e| format!("read: {e}"))?;
    }
}

/// The time left until `deadline`, or an error once it passed.
fn left(deadline: std::time::Instant) -> Result<Duration, String> {
    deadline
        .checked_duration_since(std::time::Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| "no complete response within 20 s".to_string())
}

/// Sends `request` and reads one response with a Content-Length body; returns its size.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, request: &str) -> Result<usize, String> {
    s.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    s.flush().await.map_err(|e| format!("flush: {e}"))?;
    read_response(s).await
}

/// Reads one `200` response with a Content-Length body; returns the body's size.
async fn read_response<S: AsyncRead + Unpin>(s: &mut S) -> Result<usize, String> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = timeout(WAIT, s.read(&mut chunk))
            .await
            .map_err(|_| "response timed out".to_string())?
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("closed before a full response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(len) = complete_response(&buf)? {
            return Ok(len);
        }
    }
}

/// `Some(body size)` once `buf` holds a whole `200` response with a Content-Length
/// body; an error for any other status.
fn complete_response(buf: &[u8]) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let Ok(httparse::Status::Complete(head)) = resp.parse(buf) else {
        return Ok(None);
    };
    if resp.code != Some(200) {
        return Err(format!("status {:?}", resp.code));
    }
    let len: usize = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
        .ok_or("no content-length")?;
    Ok((buf.len() >= head + len).then_some(len))
}

/// Reads until EOF (or a read error, which a closed TLS session may report).
async fn read_to_end<S: AsyncRead + Unpin>(s: &mut S) -> Result<usize, String> {
    let mut total = 0;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match timeout(WAIT, s.read(&mut chunk)).await {
            Err(_) => return Err("server did not close".into()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(total),
            Ok(Ok(n)) => total += n,
        }
    }
}
