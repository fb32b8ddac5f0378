//! The client side towards an origin over HTTP/1.1 (hyper), on plain TCP or rustls:
//! [`get`], one bounded `GET` with a deadline and a body size limit (stream
//! descriptions), and [`open`], a `GET` whose response head arrives within a
//! deadline and whose body the caller streams (cache fills).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// An origin's base URL: `http://host[:port]` or `https://host[:port]`, no path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginUrl {
    /// Whether to speak TLS.
    pub tls: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl OriginUrl {
    /// Parses `scheme://host[:port]` (a trailing `/` is allowed; nothing after it).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(format!("`{s}` must start with http:// or https://"));
        };
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(format!("`{s}` must be scheme://host[:port] without a path"));
        }
        let (host, port) = match authority.strip_prefix('[') {
            Some(v6) => {
                let (h, after) = v6
                    .split_once(']')
                    .ok_or_else(|| format!("`{s}`: unclosed [ in the host"))?;
                (h.to_string(), after.strip_prefix(':'))
            }
            None => match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            },
        };
        let port = match port {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{s}`: bad port"))?,
            None if tls => 443,
            None => 80,
        };
        if host.is_empty() {
            return Err(format!("`{s}`: empty host"));
        }
        Ok(Self { tls, host, port })
    }

    /// The `Host` header value.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// `scheme://authority`, for redirects.
    pub fn base(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.authority()
        )
    }
}

/// Why a fetch failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Connecting, TLS, or the exchange failed.
    #[error("{0}")]
    Io(String),
    /// The origin answered with a status other than 200.
    #[error("the origin answered {0}")]
    Status(u16),
    /// Past the deadline.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The body exceeded the limit.
    #[error("the body is larger than {0} bytes")]
    TooLarge(usize),
}

/// `GET path` from `origin`, the whole exchange within `timeout`, a body of at most
/// `max_bytes`. `tls` is required for an https origin.
pub async fn get(
    origin: &OriginUrl,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    timeout: Duration,
    max_bytes: usize,
) -> Result<Bytes, UpstreamError> {
    tokio::time::timeout(timeout, exchange(origin, path, tls, max_bytes))
        .await
        .map_err(|_| UpstreamError::Timeout(timeout))?
}

async fn exchange(
    origin: &OriginUrl,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    max_bytes: usize,
) -> Result<Bytes, UpstreamError> {
    let io = |e: &dyn std::fmt::Display| UpstreamError::Io(e.to_string());
    let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
        .await
        .map_err(|e| io(&format!("connecting to {}: {e}", origin.authority())))?;
    let _ = tcp.set_nodelay(true);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, origin.authority())
        .header(hyper::header::USER_AGENT, "edge")
        .body(Empty::<Bytes>::new())
        .map_err(|e| io(&e))?;
    let response = if origin.tls {
        let config = tls.ok_or_else(|| io(&"an https origin needs manifests.origin_ca_file"))?;
        let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
            .map_err(|e| io(&format!("origin host: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(config.clone())
            .connect(name, tcp)
            .await
            .map_err(|e| io(&format!("TLS with {}: {e}", origin.authority())))?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    if response.status() != hyper::StatusCode::OK {
        return Err(UpstreamError::Status(response.status().as_u16()));
    }
    let body = Limited::new(response.into_body(), max_bytes)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                UpstreamError::TooLarge(max_bytes)
            } else {
                io(&e)
            }
        })?;
    Ok(body.to_bytes())
}

/// How one attempt to open a response failed.
#[derive(Debug)]
pub enum AttemptError {
    /// Connecting or the TLS handshake failed (refused, unreachable, bad certificate).
    Connect(String),
    /// No response head within the deadline (connecting included).
    Timeout,
    /// The exchange broke before the head (reset, malformed response).
    Io(String),
}

/// `GET path` from `origin`: connects within `connect_timeout` and returns the
/// response head within `header_timeout` of the start; the body is the caller's to
/// read (hyper checks it against `Content-Length`).
pub async fn open(
    origin: &OriginUrl,
    path: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
    header_timeout: Duration,
) -> Result<hyper::Response<hyper::body::Incoming>, AttemptError> {
    let deadline = tokio::time::Instant::now() + header_timeout;
    let connect = async {
        let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
            .await
            .map_err(|e| AttemptError::Connect(format!("{}: {e}", origin.authority())))?;
        let _ = tcp.set_nodelay(true);
        Ok::<_, AttemptError>(tcp)
    };
    let tcp = tokio::time::timeout_at(
        deadline.min(tokio::time::Instant::now() + connect_timeout),
        connect,
    )
    .await
    .map_err(|_| AttemptError::Timeout)??;
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, origin.authority())
        .header(hyper::header::USER_AGENT, "edge")
        .body(Empty::<Bytes>::new())
        .map_err(|e| AttemptError::Io(e.to_string()))?;
    let exchange = async {
        if origin.tls {
            let config =
                tls.ok_or_else(|| AttemptError::Connect("an https origin needs a CA file".into()))?;
            let name = rustls::pki_types::ServerName::try_from(origin.host.clone())
                .map_err(|e| AttemptError::Connect(format!("origin host: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| {
                    AttemptError::Connect(format!("TLS with {}: {e}", origin.authority()))
                })?;
            send(TokioIo::new(stream), request)
                .await
                .map_err(|e| AttemptError::Io(e.to_string()))
        } else {
            send(TokioIo::new(tcp), request)
                .await
                .map_err(|e| AttemptError::Io(e.to_string()))
        }
    };
    tokio::time::timeout_at(deadline, exchange)
        .await
        .map_err(|_| AttemptError::Timeout)?
}

async fn send<T>(
    io: TokioIo<T>,
    request: hyper::Request<Empty<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, UpstreamError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| UpstreamError::Io(e.to_string()))?;
    // The connection task ends with the exchange (one request per connection).
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender
        .send_request(request)
        .await
        .map_err(|e| UpstreamError::Io(e.to_string()))
}

/// A client TLS configuration trusting the PEM certificates in `ca_file`.
pub fn client_tls(ca_file: &std::path::Path) -> Result<Arc<rustls::ClientConfig>, String> {
    let pem = std::fs::read(ca_file).map_err(|e| format!("{}: {e}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca_file.display()))?;
        roots
            .add(cert)
            .map_err(|e| format!("{}: {e}", ca_file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificates", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_origin_urls() {
        let u = OriginUrl::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "127.0.0.1", 8080));
        assert_eq!(u.base(), "http://127.0.0.1:8080");
        let u = OriginUrl::parse("https://origin.example/").unwrap();
        assert_eq!((u.tls, u.port), (true, 443));
        let u = OriginUrl::parse("http://[::1]:81").unwrap();
        assert_eq!(u.authority(), "[::1]:81");
        for bad in [
            "ftp://x",
            "http://",
            "http://x/path",
            "http://x:0",
            "http://x:99999",
            "http://u@x",
        ] {
            assert!(OriginUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
