//! Shared by the `hs-load`, `idle-conns` and `fetch-load` load generators: the
//! `--insecure` certificate verifier, failure kinds, the response-head check and
//! latency percentiles.

#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// `--insecure`: any certificate for any name is accepted, but the handshake
/// signatures are still verified with the provider's algorithms, so the server does
/// the same signing work it does for a verifying client.
#[derive(Debug)]
pub struct AcceptAnyCert(pub Arc<CryptoProvider>);

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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why a connection failed; the load generators count failures per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The TCP connect (or binding its source address) failed.
    Connect,
    /// The TLS handshake failed (alert, reset or EOF during it, bad certificate), or
    /// negotiated what the client cannot run.
    Tls,
    /// Reading or writing after the handshake failed (reset, EOF before the response
    /// was complete, an alert).
    Io,
    /// Not done within the client's `--timeout`.
    Timeout,
    /// The response was not the expected `200` of its `Content-Length`, or a record
    /// did not authenticate.
    Response,
}

impl Failure {
    /// Every kind, in the order of [`Failure::index`].
    pub const ALL: [Failure; 5] = [
        Failure::Connect,
        Failure::Tls,
        Failure::Io,
        Failure::Timeout,
        Failure::Response,
    ];

    /// Position in a per-kind counter array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Name in the stderr breakdowns.
    pub fn name(self) -> &'static str {
        match self {
            Failure::Connect => "connect",
            Failure::Tls => "tls",
            Failure::Io => "io",
            Failure::Timeout => "timeout",
            Failure::Response => "response",
        }
    }
}

/// A failed connection: its kind and what went wrong.
#[derive(Debug)]
pub struct ConnError {
    /// The counter it goes to.
    pub kind: Failure,
    /// Human-readable cause, for the samples on stderr.
    pub msg: String,
}

impl ConnError {
    /// A failure of `kind` caused by `e`.
    pub fn new(kind: Failure, e: impl std::fmt::Display) -> Self {
        ConnError {
            kind,
            msg: e.to_string(),
        }
    }
}

/// Runs a load generator's `run` on a tokio runtime of `threads` threads (1: a
/// current-thread runtime, more: multi-thread) and turns its outcome into the exit
/// status: `run`'s own, or 2 with `NAME: message` on stderr for bad arguments or a
/// failed setup (the runtime's included).
pub fn run_main(
    name: &str,
    threads: usize,
    run: impl std::future::Future<Output = Result<std::process::ExitCode, String>>,
) -> std::process::ExitCode {
    let mut builder = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match runtime.block_on(run) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{name}: {e}");
            std::process::ExitCode::from(2)
        }
    }
}

/// `--addr`, `--sni` and `--host`: the server and the names used with it.
#[derive(clap::Args, Debug)]
pub struct ServerArgs {
    /// Server address, HOST:PORT (resolved once).
    #[arg(long)]
    pub addr: String,
    /// TLS server name (SNI).
    #[arg(long, default_value = "localhost")]
    pub sni: String,
    /// Host header [default: the --sni name].
    #[arg(long)]
    pub host: Option<String>,
}

impl ServerArgs {
    /// The target for requests of `path` ([`Target::new`]).
    pub fn target(&self, path: &str) -> Result<Target, String> {
        Target::new(&self.addr, &self.sni, self.host.as_deref(), path)
    }
}

/// Where a load generator sends its requests, from `--addr`, `--sni`, `--host` and
/// `--path`.
pub struct Target {
    /// `--addr`, resolved once.
    pub addr: std::net::SocketAddr,
    /// `--sni`.
    pub server_name: ServerName<'static>,
    /// `--host`, or the `--sni` name.
    pub host: String,
}

impl Target {
    /// Resolves and checks the arguments; the error names the argument.
    pub fn new(addr: &str, sni: &str, host: Option<&str>, path: &str) -> Result<Self, String> {
        use std::net::ToSocketAddrs;
        let resolved = addr
            .to_socket_addrs()
            .map_err(|e| format!("--addr {addr}: {e}"))?
            .next()
            .ok_or_else(|| format!("--addr {addr}: no address"))?;
        let server_name =
            ServerName::try_from(sni.to_string()).map_err(|e| format!("--sni {sni}: {e}"))?;
        if !path.starts_with('/') || path.contains(char::is_whitespace) {
            return Err(format!(
                "--path {path:?}: must start with / and hold no whitespace"
            ));
        }
        Ok(Self {
            addr: resolved,
            server_name,
            host: host.unwrap_or(sni).to_string(),
        })
    }
}

/// Largest response head accepted.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Largest response body accepted.
pub const MAX_BODY_BYTES: u64 = 64 * 1024 * 1024;

/// Checks a response head: `HTTP/1.1 200`, a Content-Length (returned) of at most
/// [`MAX_BODY_BYTES`], and no `Connection: close`.
pub fn check_head(head: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    if version != "HTTP/1.1" || status != "200" {
        return Err(format!("status line {status_line:?}"));
    }
    let mut len = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("content-length") {
            len = Some(
                value
                    .parse::<u64>()
                    .map_err(|_| format!("Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("connection")
            && value
                .split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("close"))
        {
            return Err("the server answered Connection: close".into());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(format!(
                "Transfer-Encoding {value:?} (need a Content-Length)"
            ));
        }
    }
    let len = len.ok_or("no Content-Length")?;
    if len > MAX_BODY_BYTES {
        return Err(format!("Content-Length {len} is over {MAX_BODY_BYTES}"));
    }
    Ok(len)
}

/// `d` in whole microseconds, saturating.
pub fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// The `p`-th percentile (nearest rank) of ascending `sorted_us`, in milliseconds;
/// 0 when empty.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let n = sorted_us.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    f64::from(sorted_us[rank.clamp(1, n) - 1]) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1000).collect();
        assert_eq!(percentile_ms(&v, 50.0), 50.0);
        assert_eq!(percentile_ms(&v, 99.0), 99.0);
        assert_eq!(percentile_ms(&v, 100.0), 100.0);
        assert_eq!(percentile_ms(&[7000], 99.0), 7.0);
        assert_eq!(percentile_ms(&[], 50.0), 0.0);
    }

    #[test]
    fn head_checks() {
        assert_eq!(
            check_head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n"),
            Ok(12)
        );
        assert!(check_head(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").is_err());
        assert!(
            check_head(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n")
                .is_err()
        );
        assert!(check_head(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").is_err());
        assert!(check_head(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
