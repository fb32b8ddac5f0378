//! Shared helpers for the end-to-end tests: an in-process `edge` on loopback with
//! its own content directory, a verifying TLS client for its generated certificate,
//! a minimal HTTP/1.1 response reader, and ([`origin`]) an origin server that
//! misbehaves on request, for an edge that fills from one.

pub mod origin;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

/// A scratch directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/edge-e2e-<name>-<pid>-<n>`.
    pub fn new(name: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("edge-e2e-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift), so mismatches cannot hide.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An `edge` server running in this process.
pub struct TestServer {
    /// TLS address.
    pub tls: SocketAddr,
    /// Plain HTTP address.
    pub http: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Content root (write files here).
    pub root: PathBuf,
    /// State dir (certificate, admin token).
    pub state: PathBuf,
    /// The server's metrics.
    pub metrics: Arc<edge::metrics::Metrics>,
    /// Reloads the running server (what SIGHUP does).
    pub reloader: edge::server::Reloader,
    shutdown: CancellationToken,
    _dir: TempDir,
}

impl TestServer {
    /// Starts a server on ephemeral loopback ports; `extra` is appended to the TOML
    /// (e.g. a `[limits]` table).
    pub async fn start(extra: &str) -> Self {
        Self::try_start(extra)
            .await
            .unwrap_or_else(|e| panic!("test server did not start: {e}"))
    }

    /// As [`TestServer::start`], but a configuration the server rejects (e.g. a key it
    /// does not know) or a failed start is returned as the error's text, so a test can
    /// say which setting was refused.
    pub async fn try_start(extra: &str) -> Result<Self, String> {
        Self::try_start_with("", extra).await
    }

    /// As [`TestServer::start`], with `server_extra` added to the `[server]` table.
    pub async fn start_with(server_extra: &str, extra: &str) -> Self {
        Self::try_start_with(server_extra, extra)
            .await
            .unwrap_or_else(|e| panic!("test server did not start: {e}"))
    }

    async fn try_start_with(server_extra: &str, extra: &str) -> Result<Self, String> {
        let dir = TempDir::new("srv");
        let root = dir.path().join("www");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&root).unwrap();
        let toml = format!(
            "[server]\ntls_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nshutdown_grace_secs = 1\n{server_extra}\n[content]\nroot = \"{}\"\n{extra}",
            state.display(),
            root.display()
        );
        let config = edge::config::Config::from_toml(&toml, Path::new("test.toml"))
            .map_err(|e| format!("config rejected: {e}"))?;
        let shutdown = CancellationToken::new();
        let running = edge::server::start(config, shutdown.clone())
            .await
            .map_err(|e| format!("start failed: {e}"))?;
        let (tls, http, admin) = (
            running.tls_addr,
            running.http_addr.expect("http listener"),
            running.admin_addr,
        );
        let metrics = running.metrics.clone();
        let reloader = running.reloader();
        tokio::spawn(running.wait());
        Ok(Self {
            tls,
            http,
            admin,
            root,
            state,
            metrics,
            reloader,
            shutdown,
            _dir: dir,
        })
    }

    /// Writes a file under the content root.
    pub fn put(&self, rel: &str, data: &[u8]) {
        let p = self.root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }

    /// A keep-alive client on the TLS listener (`tls`) or the plain-HTTP one.
    pub async fn client(&self, tls: bool) -> AnyClient {
        if tls {
            Client::new(Box::new(self.tls_connect().await))
        } else {
            Client::new(Box::new(
                TcpStream::connect(self.http).await.expect("connect"),
            ))
        }
    }

    /// A TLS client connection that verifies the server's generated certificate.
    pub async fn tls_connect(&self) -> TlsStream<TcpStream> {
        tls_connect(self.tls, &self.state.join("cert.pem"), None).await
    }

    /// `GET path` on the admin listener with the token: (status, body).
    pub async fn admin_get(&self, path: &str) -> (u16, String) {
        let (status, body) = self.admin_get_bytes(path).await;
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// `GET path` on the admin listener with the token: (status, body bytes).
    pub async fn admin_get_bytes(&self, path: &str) -> (u16, Vec<u8>) {
        let token = std::fs::read_to_string(self.state.join("admin.token")).unwrap();
        let mut s = TcpStream::connect(self.admin).await.unwrap();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            token.trim()
        );
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut s, &mut out)
            .await
            .unwrap();
        let split = out
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .map_or(out.len(), |p| p + 4);
        let head = String::from_utf8_lossy(&out[..split]);
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let mut body = out[split..].to_vec();
        if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            body = dechunk(&body);
        }
        (status, body)
    }

    /// The admin `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        let token = std::fs::read_to_string(self.state.join("admin.token")).unwrap();
        let mut s = TcpStream::connect(self.admin).await.unwrap();
        let req = format!("GET /metrics HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n", token.trim());
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A TLS client for `addr` trusting the PEM certificate at `ca`; `config` lets a
/// test pick versions or suites.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &Path,
    config: Option<rustls::ClientConfig>,
) -> TlsStream<TcpStream> {
    let config = config.unwrap_or_else(|| client_config(ca, None));
    let tcp = TcpStream::connect(addr).await.unwrap();
    tls_handshake(tcp, config).await.expect("TLS handshake")
}

/// A TLS handshake for `localhost` over an already connected `tcp` (e.g. one with
/// its own socket options); the error is what the client saw (an alert, an EOF).
pub async fn tls_handshake(
    tcp: TcpStream,
    config: rustls::ClientConfig,
) -> std::io::Result<TlsStream<TcpStream>> {
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A client config trusting `ca`, optionally restricted to one protocol version.
pub fn client_config(
    ca: &Path,
    version: Option<&'static rustls::SupportedProtocolVersion>,
) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = match version {
        Some(v) => vec![v],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut c = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    c
}

/// A response as read off the wire.
#[derive(Debug)]
pub struct Response {
    /// The status line's HTTP minor version (`1` for `HTTP/1.1`).
    pub version: u8,
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A client stream of either listener.
pub trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// A client on either listener ([`TestServer::client`]).
pub type AnyClient = Client<Box<dyn Conn>>;

/// A connection that reads responses, keeping bytes read past one response.
pub struct Client<S> {
    /// The stream.
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Client<S> {
    /// Wraps a connected stream.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// Sends `GET path` with Host and optional extra header lines.
    pub async fn get(&mut self, path: &str, extra: &str) -> Response {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n{extra}\r\n").as_bytes())
            .await;
        self.read_response(false).await.expect("a response")
    }

    /// Reads one response; `head_request` means no body follows. `None` at EOF.
    pub async fn read_response(&mut self, head_request: bool) -> Option<Response> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut headers);
            if let Ok(httparse::Status::Complete(n)) = resp.parse(&self.buf) {
                let status = resp.code.unwrap();
                let version = resp.version.unwrap();
                let headers: Vec<(String, String)> = resp
                    .headers
                    .iter()
                    .map(|h| {
                        (
                            h.name.to_ascii_lowercase(),
                            String::from_utf8_lossy(h.value).into_owned(),
                        )
                    })
                    .collect();
                let len: usize = headers
                    .iter()
                    .find(|(k, _)| k == "content-length")
                    .map(|(_, v)| v.parse().unwrap())
                    .unwrap_or(0);
                let len = if head_request || status == 304 || status == 204 {
                    0
                } else {
                    len
                };
                while self.buf.len() < n + len {
                    if !self.fill().await {
                        panic!(
                            "EOF inside a body ({} of {} bytes)",
                            self.buf.len() - n,
                            len
                        );
                    }
                }
                let body = self.buf[n..n + len].to_vec();
                self.buf.drain(..n + len);
                return Some(Response {
                    version,
                    status,
                    headers,
                    body,
                });
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Whether the peer has closed (reads until EOF or error; any data is a failure).
    pub async fn is_closed(&mut self) -> bool {
        let mut b = [0u8; 64];
        matches!(self.stream.read(&mut b).await, Ok(0) | Err(_))
    }

    async fn fill(&mut self) -> bool {
        let old = self.buf.len();
        self.buf.resize(old + 64 * 1024, 0);
        let n: usize = self
            .stream
            .read(&mut self.buf[old..])
            .await
            .unwrap_or_default();
        self.buf.truncate(old + n);
        n > 0
    }
}

/// Path of the `edge` binary built by `cargo build` (override with `EDGE_BIN`).
pub fn edge_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("EDGE_BIN") {
        return p.into();
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/edge");
    assert!(
        p.exists(),
        "{} is missing: run `cargo build -p edge` first (tests/run-all.sh does)",
        p.display()
    );
    p
}

/// Reads a response head from a blocking `s` until `deadline`: its status line, or
/// why none came (EOF, an error, the deadline).
pub fn status_line_by(
    s: &mut std::net::TcpStream,
    deadline: std::time::Instant,
) -> Result<String, String> {
    use std::io::Read;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        s.set_read_timeout(Some(left.max(std::time::Duration::from_millis(10))))
            .map_err(|e| e.to_string())?;
        match s.read(&mut buf) {
            Ok(0) => return Err(format!("EOF after {} bytes", got.len())),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err("no response before the deadline".into())
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let text = String::from_utf8_lossy(&got);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

/// Writes `dir/edge.toml` for a run of the real binary: every listener on an
/// ephemeral loopback port, state in `dir/state`, content from `root`; `server_extra`
/// is appended to the `[server]` table.
pub fn write_binary_config(dir: &Path, root: &Path, server_extra: &str) -> PathBuf {
    let path = dir.join("edge.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\ntls_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n{server_extra}\n[content]\nroot = \"{}\"\n",
            dir.join("state").display(),
            root.display()
        ),
    )
    .expect("write config");
    path
}

/// Reads the `edge: listening ...` line from a child started with piped stdout and
/// returns the address named `key` (`tls`, `http` or `admin`).
pub fn listening_addr(child: &mut std::process::Child, key: &str) -> SocketAddr {
    addr_in_listening_line(&listening_line(child), key)
}

/// Reads the `edge: listening ...` line from `child`'s piped stdout (once: it takes
/// the pipe).
pub fn listening_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().expect("stdout piped"))
        .read_line(&mut line)
        .expect("read the listening line");
    line
}

/// The `key=ADDR` address of a listening line.
pub fn addr_in_listening_line(line: &str, key: &str) -> SocketAddr {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no {key}= in listening line {line:?}"))
        .parse()
        .expect("an address")
}

/// A child process killed (and reaped) when the guard drops, however a test ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime + stime of `pid` in clock ticks (USER_HZ, 100 per second on Linux).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// Decodes a `Transfer-Encoding: chunked` body (test helper; trusts its input).
pub fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        raw = &raw[eol + 2..];
        if size == 0 || raw.len() < size {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = raw.get(size + 2..).unwrap_or(&[]);
    }
}
