//! `tls-nonce-relay`: checks that a TLS 1.2 AES-GCM server never sends two records
//! with the same explicit nonce on one connection, by watching its bytes on the wire.
//!
//! Usage:
//!
//! ```text
//! tls-nonce-relay --server ADDR --cipher SUITE [--connections N] [--path PATH]
//!                 [--requests R] [--length BYTES] [--min-records M] [--host HOST] [--verbose]
//! ```
//!
//! For each of N connections (one after another, all in this process) it listens on
//! `127.0.0.1:0`, connects a rustls TLS 1.2 client restricted to SUITE (a TLS 1.2
//! AES-GCM suite, e.g. `TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256`) to that listener, and
//! relays the bytes both ways to ADDR. The client sends R keep-alive `GET PATH`
//! requests one after another, reads each response (status 200, `Content-Length` body,
//! equal to BYTES when given), then sends close_notify and reads until the server closes.
//!
//! The relay cuts the server-to-client byte stream into TLS records from the bytes
//! alone, as a middlebox would. After the server's ChangeCipherSpec every record is
//! AES-GCM protected and its first 8 payload bytes are the explicit nonce (RFC 5288
//! §3); the server's Finished is the first of them. A nonce that occurs twice on one
//! connection means two records were sealed under the same key and nonce.
//!
//! Prints one line per failure (`nonce-relay: connection I: ...`) and a summary line;
//! exits 0 only if no nonce repeated, every connection carried at least M (default 5)
//! encrypted server records and every response was complete and as expected.

use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme, SupportedCipherSuite};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

/// How long any one step (handshake, response, close) may take.
const WAIT: Duration = Duration::from_secs(20);
/// TLS record content type ChangeCipherSpec.
const CHANGE_CIPHER_SPEC: u8 = 20;
/// Explicit nonce (8) plus the AES-GCM tag (16): the least an AES-GCM record holds.
const MIN_SEALED: usize = 8 + 16;

struct Args {
    server: String,
    cipher: SupportedCipherSuite,
    connections: usize,
    path: String,
    requests: usize,
    length: Option<usize>,
    min_records: usize,
    host: String,
    verbose: bool,
}

const USAGE: &str = "usage: tls-nonce-relay --server ADDR --cipher TLS12_AES_GCM_SUITE \
[--connections N] [--path PATH] [--requests R] [--length BYTES] [--min-records M] \
[--host HOST] [--verbose]";

fn parse_args() -> Result<Args, String> {
    let mut server = None;
    let mut cipher = None;
    let mut args = Args {
        server: String::new(),
        cipher: rustls::crypto::ring::cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        connections: 50,
        path: "/".into(),
        requests: 3,
        length: None,
        min_records: 5,
        host: "localhost".into(),
        verbose: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--verbose" {
            args.verbose = true;
            continue;
        }
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--server" => server = Some(value.clone()),
            "--cipher" => cipher = Some(value.clone()),
            "--connections" => args.connections = number()?,
            "--path" => args.path = value.clone(),
            "--requests" => args.requests = number()?,
            "--length" => args.length = Some(number()?),
            "--min-records" => args.min_records = number()?,
            "--host" => args.host = value.clone(),
            _ => return Err(format!("unknown option {flag}")),
        }
    }
    args.server = server.ok_or("--server is required")?;
    let name = cipher.ok_or("--cipher is required")?;
    args.cipher = rustls::crypto::ring::ALL_CIPHER_SUITES
        .iter()
        .copied()
        .find(|s| format!("{:?}", s.suite()) == name)
        .ok_or(format!("unknown cipher suite {name}"))?;
    // Only TLS 1.2 AES-GCM records carry an explicit nonce (ChaCha20-Poly1305 and
    // TLS 1.3 derive theirs from the sequence number).
    if !matches!(args.cipher, SupportedCipherSuite::Tls12(_)) || !name.contains("_GCM_") {
        return Err(format!("{name} is not a TLS 1.2 AES-GCM suite"));
    }
    Ok(args)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tls-nonce-relay: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let config = Arc::new(client_config(args.cipher));
    let (mut records, mut min, mut repeats, mut failures) = (0, usize::MAX, 0, 0);
    for i in 0..args.connections {
        let scanner = match connection(&args, &config).await {
            Ok(s) => s,
            Err((e, scanner)) => {
                println!("nonce-relay: connection {i}: {e}");
                failures += 1;
                match scanner {
                    Some(s) => s,
                    None => {
                        min = 0;
                        continue;
                    }
                }
            }
        };
        if let Some(e) = &scanner.error {
            println!("nonce-relay: connection {i}: record stream: {e}");
            failures += 1;
        }
        let n = scanner.nonces.len();
        if args.verbose {
            let all: Vec<String> = scanner.nonces.iter().map(|n| hex(n)).collect();
            println!(
                "nonce-relay: connection {i}: {n} encrypted records, nonces {}",
                all.join(" ")
            );
        }
        records += n;
        min = min.min(n);
        if n < args.min_records {
            println!(
                "nonce-relay: connection {i}: only {n} encrypted server records (want >= {})",
                args.min_records
            );
            failures += 1;
        }
        for (nonce, at) in repeated(&scanner.nonces) {
            let at: Vec<String> = at.iter().map(|i| i.to_string()).collect();
            println!(
                "nonce-relay: connection {i}: explicit nonce {} repeated at encrypted records {} (0 = Finished)",
                hex(&nonce),
                at.join(", ")
            );
            repeats += 1;
        }
    }
    if args.connections == 0 {
        min = 0;
    }
    println!(
        "nonce-relay: {} connections, {records} encrypted records, min {min} per connection, {repeats} repeated nonces ({:?}, {} other failures)",
        args.connections,
        args.cipher.suite(),
        failures
    );
    if repeats == 0 && failures == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A TLS 1.2 client config offering only `suite`, without resumption (every
/// connection does a full handshake), and without certificate checks.
fn client_config(suite: SupportedCipherSuite) -> rustls::ClientConfig {
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..rustls::crypto::ring::default_provider()
    };
    let algorithms = provider.signature_verification_algorithms;
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .expect("TLS 1.2 with the ring provider")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(algorithms)))
        .with_no_client_auth();
    c.resumption = rustls::client::Resumption::disabled();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c
}

/// Accepts ANY server certificate. Deliberately insecure: this tool tests the
/// server's record layer against a test server on loopback, not its identity. The
/// handshake signature is still checked against the key in the presented certificate.
#[derive(Debug)]
struct AcceptAnyCert(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// One relayed connection. On failure, also the records seen so far when the relay
/// finished.
async fn connection(
    args: &Args,
    config: &Arc<rustls::ClientConfig>,
) -> Result<RecordScanner, (String, Option<RecordScanner>)> {
    let fail = |e: String| (e, None);
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| fail(format!("relay listen: {e}")))?;
    let relay_addr = listener
        .local_addr()
        .map_err(|e| fail(format!("relay address: {e}")))?;
    let server = args.server.clone();
    let relay = tokio::spawn(async move {
        let (client_side, _) = listener.accept().await?;
        let server_side = TcpStream::connect(&server).await?;
        client_side.set_nodelay(true)?;
        server_side.set_nodelay(true)?;
        let (from_client, to_client) = client_side.into_split();
        let (from_server, to_server) = server_side.into_split();
        let upstream = tokio::spawn(pump(from_client, to_server, None));
        let mut scanner = RecordScanner::default();
        pump(from_server, to_client, Some(&mut scanner)).await;
        let _ = upstream.await;
        Ok::<_, std::io::Error>(scanner)
    });

    let client = client_session(args, config, relay_addr).await;
    // The client has closed its socket (or failed and dropped it): the relay ends once
    // the server has closed too.
    let scanner = match timeout(WAIT, relay).await {
        Ok(Ok(Ok(s))) => Some(s),
        Ok(Ok(Err(e))) => return Err((format!("relay: {e}"), None)),
        Ok(Err(e)) => return Err((format!("relay task: {e}"), None)),
        Err(_) => None,
    };
    match (client, scanner) {
        (Ok(()), Some(s)) => Ok(s),
        (Ok(()), None) => Err(("server did not close within 20 s".into(), None)),
        (Err(e), s) => Err((e, s)),
    }
}

/// The TLS client's side of one connection, through the relay at `relay`.
async fn client_session(
    args: &Args,
    config: &Arc<rustls::ClientConfig>,
    relay: std::net::SocketAddr,
) -> Result<(), String> {
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let tcp = TcpStream::connect(relay)
        .await
        .map_err(|e| format!("connect to relay: {e}"))?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    let name = ServerName::try_from(args.host.clone()).map_err(|e| e.to_string())?;
    let mut tls = timeout(WAIT, connector.connect(name, tcp))
        .await
        .map_err(|_| "handshake timed out".to_string())?
        .map_err(|e| format!("handshake: {e}"))?;
    let request = format!("GET {} HTTP/1.1\r\nHost: {}\r\n\r\n", args.path, args.host);
    let mut buf = Vec::new();
    for r in 0..args.requests {
        tls.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("request {r}: write: {e}"))?;
        tls.flush()
            .await
            .map_err(|e| format!("request {r}: flush: {e}"))?;
        let (status, len) = timeout(WAIT, read_response(&mut tls, &mut buf))
            .await
            .map_err(|_| format!("request {r}: response timed out"))?
            .map_err(|e| format!("request {r}: {e}"))?;
        if status != 200 {
            return Err(format!("request {r}: status {status}"));
        }
        if args.length.is_some_and(|want| want != len) {
            return Err(format!(
                "request {r}: body of {len} bytes, want {}",
                args.length.unwrap_or_default()
            ));
        }
    }
    // close_notify, then the server's close_notify and/or FIN.
    let _ = tls.shutdown().await;
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match timeout(WAIT, tls.read(&mut chunk)).await {
            Err(_) => return Err("server did not close after close_notify".into()),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(()),
            Ok(Ok(_)) => {}
        }
    }
}

/// Reads one response with a `Content-Length` body; bytes past it stay in `buf`.
/// Returns the status and the body length.
async fn read_response<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<(u16, usize), String> {
    let mut chunk = vec![0u8; 1 << 16];
    let mut head: Option<(u16, usize, usize)> = None;
    loop {
        if head.is_none() {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            match resp.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let len = resp
                        .headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                        .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                        .ok_or("response without a Content-Length")?;
                    head = Some((resp.code.unwrap_or(0), n, len));
                }
                Ok(httparse::Status::Partial) => {}
                Err(e) => return Err(format!("bad response head: {e}")),
            }
        }
        if let Some((status, n, len)) = head {
            if buf.len() >= n + len {
                buf.drain(..n + len);
                return Ok((status, len));
            }
        }
        let got = s.read(&mut chunk).await.map_err(|e| format!("read: {e}"))?;
        if got == 0 {
            return Err("connection closed before a full response".into());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
}

/// Copies `from` to `to` until EOF or an error, then shuts `to`'s write side; feeds
/// every byte to `scanner` when given.
async fn pump<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut from: R,
    mut to: W,
    mut scanner: Option<&mut RecordScanner>,
) {
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(s) = scanner.as_deref_mut() {
            s.feed(&chunk[..n]);
        }
        if to.write_all(&chunk[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// The server-to-client byte stream cut into TLS records, from the bytes alone.
#[derive(Default)]
struct RecordScanner {
    /// Bytes of a record not complete yet.
    pending: Vec<u8>,
    /// The server's ChangeCipherSpec went by: all later records are sealed.
    sealed: bool,
    /// The explicit nonce of every sealed record, in order (index 0: Finished).
    nonces: Vec<[u8; 8]>,
    /// The stream stopped making sense as TLS 1.2 records; nothing more is parsed.
    error: Option<String>,
}

impl RecordScanner {
    /// Takes the next bytes of the stream, in whatever pieces they arrived.
    fn feed(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        self.pending.extend_from_slice(data);
        let mut at = 0;
        while self.pending.len() - at >= 5 {
            let h = &self.pending[at..at + 5];
            let (kind, version) = (h[0], u16::from_be_bytes([h[1], h[2]]));
            let len = usize::from(u16::from_be_bytes([h[3], h[4]]));
            if !(20..=23).contains(&kind) || version >> 8 != 3 {
                self.error = Some(format!(
                    "not a TLS record header at record {}: {}",
                    self.nonces.len(),
                    hex(h)
                ));
                return;
            }
            if self.pending.len() - at < 5 + len {
                break;
            }
            let payload = &self.pending[at + 5..at + 5 + len];
            if self.sealed {
                if len < MIN_SEALED {
                    self.error = Some(format!(
                        "sealed record {} of {len} bytes, too short for AES-GCM",
                        self.nonces.len()
                    ));
                    return;
                }
                let mut nonce = [0u8; 8];
                nonce.copy_from_slice(&payload[..8]);
                self.nonces.push(nonce);
            } else if kind == CHANGE_CIPHER_SPEC {
                self.sealed = true;
            }
            at += 5 + len;
        }
        self.pending.drain(..at);
    }
}

/// The nonces that occur more than once, each with the indexes of its records, in
/// the order of their first occurrence.
fn repeated(nonces: &[[u8; 8]]) -> Vec<([u8; 8], Vec<usize>)> {
    let mut at: HashMap<[u8; 8], Vec<usize>> = HashMap::new();
    for (i, n) in nonces.iter().enumerate() {
        at.entry(*n).or_default().push(i);
    }
    let mut out: Vec<_> = at.into_iter().filter(|(_, v)| v.len() > 1).collect();
    out.sort_by_key(|(_, v)| v[0]);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut r = vec![kind, 3, 3];
        r.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        r.extend_from_slice(payload);
        r
    }

    /// A sealed record: explicit nonce, then `len` bytes of ciphertext and tag.
    fn sealed(kind: u8, nonce: u64, len: usize) -> Vec<u8> {
        let mut p = nonce.to_be_bytes().to_vec();
        p.resize(8 + len, 0xab);
        record(kind, &p)
    }

    /// ServerHello..ServerHelloDone, CCS, then Finished and two data records.
    fn stream(nonces: [u64; 3]) -> Vec<u8> {
        let mut s = record(22, &[2; 90]);
        s.extend(record(22, &[11; 300]));
        s.extend(record(CHANGE_CIPHER_SPEC, &[1]));
        s.extend(sealed(22, nonces[0], 16 + 16));
        s.extend(sealed(23, nonces[1], 100 + 16));
        s.extend(sealed(23, nonces[2], 16384 + 16));
        s
    }

    #[test]
    fn nonces_after_change_cipher_spec_only() {
        let mut sc = RecordScanner::default();
        sc.feed(&stream([7, 8, 9]));
        assert_eq!(sc.error, None);
        assert!(sc.pending.is_empty());
        let want: Vec<[u8; 8]> = [7u64, 8, 9].iter().map(|n| n.to_be_bytes()).collect();
        assert_eq!(sc.nonces, want);
        assert!(repeated(&sc.nonces).is_empty());
    }

    #[test]
    fn repeated_nonce_detected() {
        // Finished and the first data record share a nonce (the bug this tool is for).
        let base = 0xf157_2b24_cd38_4a87;
        let mut sc = RecordScanner::default();
        sc.feed(&stream([base, base, base + 1]));
        let r = repeated(&sc.nonces);
        assert_eq!(r, vec![(base.to_be_bytes(), vec![0, 1])]);
        assert_eq!(hex(&r[0].0), "f1572b24cd384a87");
    }

    #[test]
    fn records_split_across_reads_are_reassembled() {
        let s = stream([1, 2, 1]);
        for piece in [1, 2, 3, 5, 7, 13, 4096] {
            let mut sc = RecordScanner::default();
            for c in s.chunks(piece) {
                sc.feed(c);
            }
            assert_eq!(sc.error, None, "piece {piece}");
            assert_eq!(sc.nonces.len(), 3, "piece {piece}");
            assert_eq!(repeated(&sc.nonces), vec![(1u64.to_be_bytes(), vec![0, 2])]);
        }
        // A header split in the middle leaves the bytes pending until the rest comes.
        let mut sc = RecordScanner::default();
        sc.feed(&s[..3]);
        assert_eq!(sc.pending.len(), 3);
        assert!(sc.nonces.is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_nonce() {
        let mut sc = RecordScanner::default();
        sc.feed(b"HTTP/1.1 200 OK\r\n");
        assert!(sc.error.is_some());
        let mut sc = RecordScanner::default();
        let mut s = record(CHANGE_CIPHER_SPEC, &[1]);
        s.extend(record(21, &[1, 0]));
        sc.feed(&s);
        assert!(sc.error.as_deref().unwrap().contains("too short"));
    }
}
