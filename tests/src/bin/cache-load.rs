//! `cache-load`: a load and latency client for an HTTP/1.1 server (plain or TLS),
//! for benchmarks and the QEMU guest suite.
//!
//! ```text
//! cache-load --addr 127.0.0.1:8443 [--tls (--ca FILE | --insecure)] [--sni localhost]
//!            [--host HOST] [--duration-secs 20] [--threads 2] [--timeout-secs 30]
//!            [--once] [--expect FILE] --group NAME:CONNS:PATHSPEC [--group ...]
//! ```
//!
//! Each group runs CONNS keep-alive connections (reconnecting when the server
//! closes one) that `GET` paths back to back until the duration is over. PATHSPEC
//! is one path (`/hot.bin`) or `@FILE`, a file of paths, one per line (blank lines
//! and `#` comments skipped): the group's connections share one cursor over the
//! list, so each path is fetched by one connection, once per pass; after the last
//! path the list starts over, or with `--once` the group stops.
//!
//! `--range-group NAME:LEN:ROOT` makes group NAME ask for LEN-byte ranges at random
//! 4 KiB-aligned offsets, each checked (status 206, bytes) against ROOT/PATH.
//!
//! `--expect FILE` holds lines `PATH SHA256HEX`; each body of a listed path is
//! hashed and compared (`mismatches`). Every body must match its Content-Length
//! and every status must be `200` (else `errors`). A request that fails on a reused
//! connection before any response byte (the server closed it while idle) is retried
//! once on a new connection and not counted.
//!
//! Per request it measures the time from writing the request to the first response
//! byte (`ttfb`) and to the last body byte, and prints one JSON line at the end:
//! `{"elapsed_s":..,"groups":{"hot":{"requests":N,"errors":E,"mismatches":M,
//! "p50_ms":..,"p95_ms":..,"p99_ms":..,"ttfb_p99_ms":..,"bytes":B,...}},"ok":..}`.
//! `requests` counts complete responses (whatever their status or hash); latencies
//! are over those. Exits 1 if any group saw an error or a mismatch, or completed no
//! request; 2 on bad arguments.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use edge_tests::Conn;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Read buffer per connection.
const BUF: usize = 256 * 1024;
/// Error messages printed to stderr (the rest are only counted).
const ERROR_SAMPLES: usize = 20;

/// Command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cache-load",
    about = "HTTP/1.1 load and latency client: keep-alive connections per group, sha256 checks, one JSON line of results"
)]
struct Args {
    /// Server address, HOST:PORT (resolved once).
    #[arg(long)]
    addr: String,
    /// Speak TLS (with --ca or --insecure).
    #[arg(long)]
    tls: bool,
    /// Trust the PEM certificate(s) in FILE.
    #[arg(
        long,
        value_name = "FILE",
        requires = "tls",
        conflicts_with = "insecure"
    )]
    ca: Option<PathBuf>,
    /// Accept any server certificate (handshake signatures are still checked).
    #[arg(long, requires = "tls")]
    insecure: bool,
    /// TLS server name.
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// Host header [default: the --sni name with --tls, else --addr].
    #[arg(long)]
    host: Option<String>,
    /// How long to keep sending requests, in seconds (requests in flight finish).
    #[arg(long, default_value_t = 20.0)]
    duration_secs: f64,
    /// A group of connections: NAME:CONNS:PATHSPEC, PATHSPEC a path or @FILE of paths.
    #[arg(long = "group", value_name = "NAME:CONNS:PATHSPEC", required = true)]
    groups: Vec<String>,
    /// Lines `PATH SHA256HEX`: bodies of these paths are checked.
    #[arg(long, value_name = "FILE")]
    expect: Option<PathBuf>,
    /// Fetch each path of a group's list once, then stop that group.
    #[arg(long)]
    once: bool,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Limit for one connect, and for one request up to its last body byte, in seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout_secs: f64,
    /// NAME:LEN:ROOT: group NAME asks for LEN-byte ranges at random 4 KiB-aligned
    /// offsets (`Range: bytes=`), each checked (206, bytes) against the local file
    /// ROOT/PATH: random reads of a disk, with little to encrypt or copy.
    #[arg(long = "range-group", value_name = "NAME:LEN:ROOT")]
    range_groups: Vec<String>,
}

/// One group: its connections share the cursor over its paths.
struct Group {
    name: String,
    conns: usize,
    /// `--range-group`: range length and the local root holding the same files.
    range: Option<(u64, PathBuf)>,
    paths: Vec<String>,
    next: AtomicUsize,
}

impl Group {
    /// Parses `NAME:CONNS:PATHSPEC` (a path may contain `:`).
    fn parse(spec: &str) -> Result<Group, String> {
        let mut parts = spec.splitn(3, ':');
        let (Some(name), Some(conns), Some(pathspec)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("--group {spec:?}: want NAME:CONNS:PATHSPEC"));
        };
        if name.is_empty() {
            return Err(format!("--group {spec:?}: empty name"));
        }
        let conns: usize = conns
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--group {spec:?}: CONNS must be a positive number"))?;
        let paths = match pathspec.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| format!("--group {name}: {file}: {e}"))?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(String::from)
                .collect(),
            None => vec![pathspec.to_string()],
        };
        if paths.is_empty() {
            return Err(format!("--group {name}: no paths"));
        }
        if let Some(p) = paths.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("--group {name}: path {p:?} does not start with /"));
        }
        Ok(Group {
            name: name.to_string(),
            conns,
            range: None,
            paths,
            next: AtomicUsize::new(0),
        })
    }

    /// The next path to fetch; `None` when `once` and the list is done.
    fn next(&self, once: bool) -> Option<&str> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        if once && i >= self.paths.len() {
            return None;
        }
        Some(&self.paths[i % self.paths.len()])
    }
}

/// Everything the connections share.
struct Ctx {
    addr: SocketAddr,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    host: String,
    deadline: Instant,
    timeout: Duration,
    once: bool,
    expect: HashMap<String, [u8; 32]>,
    errors_printed: AtomicUsize,
}

impl Ctx {
    fn error(&self, group: &str, path: &str, msg: &str) {
        let n = self.errors_printed.fetch_add(1, Ordering::Relaxed);
        if n < ERROR_SAMPLES {
            eprintln!("cache-load: {group}: {path}: {msg}");
        } else if n == ERROR_SAMPLES {
            eprintln!("cache-load: further errors are only counted");
        }
    }
}

/// What one connection (and then one group) counted.
#[derive(Default)]
struct Stats {
    requests: u64,
    errors: u64,
    mismatches: u64,
    unchecked: u64,
    bytes: u64,
    connects: u64,
    status_errors: BTreeMap<u16, u64>,
    latency_ms: Vec<f64>,
    ttfb_ms: Vec<f64>,
}

impl Stats {
    fn merge(&mut self, o: Stats) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.mismatches += o.mismatches;
        self.unchecked += o.unchecked;
        self.bytes += o.bytes;
        self.connects += o.connects;
        for (k, v) in o.status_errors {
            *self.status_errors.entry(k).or_default() += v;
        }
        self.latency_ms.extend(o.latency_ms);
        self.ttfb_ms.extend(o.ttfb_ms);
    }

    fn summarize(&mut self, elapsed: Duration) -> Value {
        self.latency_ms.sort_by(f64::total_cmp);
        self.ttfb_ms.sort_by(f64::total_cmp);
        let l = &self.latency_ms;
        let t = &self.ttfb_ms;
        let status_errors: Map<String, Value> = self
            .status_errors
            .iter()
            .map(|(k, v)| (k.to_string(), json!(v)))
            .collect();
        json!({
            "requests": self.requests,
            "errors": self.errors,
            "mismatches": self.mismatches,
            "unchecked": self.unchecked,
            "bytes": self.bytes,
            "connects": self.connects,
            "rps": round3(self.requests as f64 / elapsed.as_secs_f64().max(1e-9)),
            "p50_ms": percentile(l, 50.0),
            "p95_ms": percentile(l, 95.0),
            "p99_ms": percentile(l, 99.0),
            "max_ms": l.last().map(|&x| round3(x)),
            "ttfb_p50_ms": percentile(t, 50.0),
            "ttfb_p99_ms": percentile(t, 99.0),
            "status_errors": status_errors,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Nearest-rank percentile of sorted `v`; `None` (JSON null) when empty.
fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    Some(round3(v[rank.clamp(1, v.len()) - 1]))
}

/// The results of a run.
struct Report {
    json: Value,
    ok: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cache-load: runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{}", report.json);
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("cache-load: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs the load described by `args`; `Err` for bad arguments or files.
async fn run(args: Args) -> Result<Report, String> {
    let mut groups: Vec<Group> = args
        .groups
        .iter()
        .map(|g| Group::parse(g))
        .collect::<Result<_, _>>()?;
    for spec in &args.range_groups {
        let mut parts = spec.splitn(3, ':');
        let (Some(name), Some(len), Some(root)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(format!("--range-group {spec:?}: want NAME:LEN:ROOT"));
        };
        let len: u64 = len
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--range-group {spec:?}: LEN must be a positive number"))?;
        let g = groups
            .iter_mut()
            .find(|g| g.name == name)
            .ok_or_else(|| format!("--range-group {spec:?}: no group {name:?}"))?;
        g.range = Some((len, PathBuf::from(root)));
    }
    let groups: Vec<Arc<Group>> = groups.into_iter().map(Arc::new).collect();
    for (i, g) in groups.iter().enumerate() {
        if groups[..i].iter().any(|o| o.name == g.name) {
            return Err(format!("group {:?} named twice", g.name));
        }
    }
    let addr = tokio::net::lookup_host(&args.addr)
        .await
        .map_err(|e| format!("--addr {}: {e}", args.addr))?
        .next()
        .ok_or_else(|| format!("--addr {}: no address", args.addr))?;
    let tls = if args.tls {
        let config = tls_config(args.ca.as_deref(), args.insecure)?;
        let name = ServerName::try_from(args.sni.clone())
            .map_err(|e| format!("--sni {}: {e}", args.sni))?;
        Some((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
    } else {
        None
    };
    let host = args.host.clone().unwrap_or_else(|| {
        if args.tls {
            args.sni.clone()
        } else {
            args.addr.clone()
        }
    });
    let expect = match &args.expect {
        Some(f) => read_expect(f)?,
        None => HashMap::new(),
    };
    if !(args.duration_secs >= 0.0 && args.timeout_secs > 0.0) {
        return Err("--duration-secs and --timeout-secs must be positive".into());
    }
    let start = Instant::now();
    let ctx = Arc::new(Ctx {
        addr,
        tls,
        host,
        deadline: start + Duration::from_secs_f64(args.duration_secs),
        timeout: Duration::from_secs_f64(args.timeout_secs),
        once: args.once,
        expect,
        errors_printed: AtomicUsize::new(0),
    });

    let mut tasks = Vec::new();
    for g in &groups {
        for _ in 0..g.conns {
            tasks.push((g.name.clone(), tokio::spawn(worker(ctx.clone(), g.clone()))));
        }
    }
    let mut per_group: BTreeMap<String, Stats> = groups
        .iter()
        .map(|g| (g.name.clone(), Stats::default()))
        .collect();
    for (name, task) in tasks {
        let stats = task
            .await
            .map_err(|e| format!("a connection task failed: {e}"))?;
        if let Some(g) = per_group.get_mut(&name) {
            g.merge(stats);
        }
    }
    let elapsed = start.elapsed();
    let ok = per_group
        .values()
        .all(|s| s.errors == 0 && s.mismatches == 0 && s.requests > 0);
    let groups_json: Map<String, Value> = per_group
        .iter_mut()
        .map(|(name, s)| (name.clone(), s.summarize(elapsed)))
        .collect();
    Ok(Report {
        json: json!({
            "groups": groups_json,
            "elapsed_s": round3(elapsed.as_secs_f64()),
            "ok": ok,
        }),
        ok,
    })
}

/// Reads `PATH SHA256HEX` lines (the order `SHA256HEX PATH` is accepted too).
fn read_expect(file: &Path) -> Result<HashMap<String, [u8; 32]>, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || format!("{}:{}: want `PATH SHA256HEX`", file.display(), i + 1);
        let mut words = line.split_whitespace();
        let (Some(a), Some(b), None) = (words.next(), words.next(), words.next()) else {
            return Err(bad());
        };
        let (path, hex) = if a.starts_with('/') { (a, b) } else { (b, a) };
        let digest = parse_hex32(hex).ok_or_else(bad)?;
        if !path.starts_with('/') {
            return Err(bad());
        }
        out.insert(path.to_string(), digest);
    }
    Ok(out)
}

fn parse_hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The client TLS config: roots from `ca`, or any certificate with `insecure`.
fn tls_config(ca: Option<&Path>, insecure: bool) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?;
    let mut config = match (ca, insecure) {
        (Some(ca), _) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("--ca {}: {e}", ca.display()))?
            {
                let c = c.map_err(|e| format!("--ca {}: {e}", ca.display()))?;
                roots
                    .add(c)
                    .map_err(|e| format!("--ca {}: {e}", ca.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("--ca {}: no certificate", ca.display()));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(hs_load::AcceptAnyCert(provider)))
            .with_no_client_auth(),
        (None, false) => return Err("--tls needs --ca FILE or --insecure".into()),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// One connection of a group: fetches paths until the deadline or the list's end.
async fn worker(ctx: Arc<Ctx>, group: Arc<Group>) -> Stats {
    let mut st = Stats::default();
    // Range offsets (xorshift, seeded per connection).
    let mut rng: u64 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0x9e37_79b9_7f4a_7c15, |d| d.as_nanos() as u64)
        | 1;
    let mut conn: Option<HttpConn> = None;
    while Instant::now() < ctx.deadline {
        let Some(path) = group.next(ctx.once) else {
            break;
        };
        // A ranged group asks for a random aligned slice and checks it against
        // the local copy of the file.
        let mut range_want: Option<[u8; 32]> = None;
        let mut range_header = String::new();
        if let Some((len, root)) = &group.range {
            let local = root.join(path.trim_start_matches('/'));
            match std::fs::read(&local) {
                Ok(data) if data.len() as u64 >= *len => {
                    let slots = (data.len() as u64 - len) / 4096 + 1;
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let off = rng % slots * 4096;
                    range_header = format!("Range: bytes={off}-{}\r\n", off + len - 1);
                    range_want =
                        Some(Sha256::digest(&data[off as usize..(off + len) as usize]).into());
                }
                _ => {
                    fail(
                        &ctx,
                        &mut st,
                        &group.name,
                        path,
                        &format!("{}: missing or shorter than the range", local.display()),
                    );
                    continue;
                }
            }
        }
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUser-Agent: cache-load\r\nAccept: */*\r\n{range_header}\r\n",
            ctx.host
        );
        let want_status = if range_want.is_some() { 206 } else { 200 };
        let expected = range_want.as_ref().or_else(|| ctx.expect.get(path));
        let mut retried = false;
        loop {
            let reused = conn.is_some();
            if conn.is_none() {
                match tokio::time::timeout(ctx.timeout, connect(&ctx)).await {
                    Ok(Ok(c)) => {
                        st.connects += 1;
                        conn = Some(c);
                    }
                    Ok(Err(e)) => {
                        fail(&ctx, &mut st, &group.name, path, &format!("connect: {e}"));
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        break;
                    }
                    Err(_) => {
                        fail(&ctx, &mut st, &group.name, path, "connect: timed out");
                        break;
                    }
                }
            }
            let Some(c) = conn.as_mut() else { break };
            let fetched =
                tokio::time::timeout(ctx.timeout, c.fetch(request.as_bytes(), expected.is_some()))
                    .await;
            match fetched {
                Ok(Ok(f)) => {
                    st.requests += 1;
                    st.bytes += f.body_len;
                    st.latency_ms.push(f.total.as_secs_f64() * 1e3);
                    st.ttfb_ms.push(f.ttfb.as_secs_f64() * 1e3);
                    if f.status != want_status {
                        *st.status_errors.entry(f.status).or_default() += 1;
                        fail(
                            &ctx,
                            &mut st,
                            &group.name,
                            path,
                            &format!("status {}", f.status),
                        );
                    } else if let Some(want) = expected {
                        if f.digest.as_ref() != Some(want) {
                            st.mismatches += 1;
                            ctx.error(&group.name, path, "sha256 mismatch");
                        }
                    } else if !ctx.expect.is_empty() {
                        st.unchecked += 1;
                    }
                    if !f.keep_alive {
                        conn = None;
                    }
                    break;
                }
                Ok(Err(FetchError::BeforeResponse(_))) if reused && !retried => {
                    // The server closed the idle connection: try a new one, once.
                    conn = None;
                    retried = true;
                }
                Ok(Err(FetchError::BeforeResponse(e) | FetchError::Broken(e))) => {
                    fail(&ctx, &mut st, &group.name, path, &e);
                    conn = None;
                    break;
                }
                Err(_) => {
                    fail(&ctx, &mut st, &group.name, path, "timed out");
                    conn = None;
                    break;
                }
            }
        }
    }
    st
}

fn fail(ctx: &Ctx, st: &mut Stats, group: &str, path: &str, msg: &str) {
    st.errors += 1;
    ctx.error(group, path, msg);
}

async fn connect(ctx: &Ctx) -> io::Result<HttpConn> {
    let tcp = TcpStream::connect(ctx.addr).await?;
    tcp.set_nodelay(true)?;
    let stream: Box<dyn Conn> = match &ctx.tls {
        Some((connector, name)) => Box::new(connector.connect(name.clone(), tcp).await?),
        None => Box::new(tcp),
    };
    Ok(HttpConn {
        stream,
        buf: vec![0; BUF].into_boxed_slice(),
        pos: 0,
        end: 0,
    })
}

/// Why a request failed.
enum FetchError {
    /// Nothing of a response came (EOF or an error first): safe to retry.
    BeforeResponse(String),
    /// The response was malformed or cut short; the connection is unusable.
    Broken(String),
}

/// One complete response.
struct Fetched {
    status: u16,
    body_len: u64,
    ttfb: Duration,
    total: Duration,
    digest: Option<[u8; 32]>,
    keep_alive: bool,
}

/// A client connection with its read buffer (`buf[pos..end]` is unread).
struct HttpConn {
    stream: Box<dyn Conn>,
    buf: Box<[u8]>,
    pos: usize,
    end: usize,
}

/// The parts of a response head the client needs.
struct Head {
    status: u16,
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

impl HttpConn {
    /// Reads more into the buffer; `Ok(0)` at EOF.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos == self.end {
            (self.pos, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.pos..self.end, 0);
            (self.pos, self.end) = (0, self.end - self.pos);
            if self.end == self.buf.len() {
                return Err(io::Error::other("a response line or head too large"));
            }
        }
        let n = self.stream.read(&mut self.buf[self.end..]).await?;
        self.end += n;
        Ok(n)
    }

    /// Parses a head at `pos`, if a complete one is buffered.
    fn parse_head(&mut self) -> Result<Option<Head>, String> {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut resp = httparse::Response::new(&mut headers);
        let n = match resp.parse(&self.buf[self.pos..self.end]) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("bad response head: {e}")),
        };
        let mut head = Head {
            status: resp.code.unwrap_or(0),
            content_length: None,
            chunked: false,
            keep_alive: resp.version == Some(1),
        };
        for h in resp.headers.iter() {
            let value = String::from_utf8_lossy(h.value).to_ascii_lowercase();
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?;
                if head.content_length.is_some_and(|old| old != n) {
                    return Err("two Content-Lengths".into());
                }
                head.content_length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                head.chunked = value.split(',').any(|t| t.trim() == "chunked");
            } else if h.name.eq_ignore_ascii_case("connection") {
                if value.contains("close") {
                    head.keep_alive = false;
                } else if value.contains("keep-alive") {
                    head.keep_alive = true;
                }
            }
        }
        self.pos += n;
        Ok(Some(head))
    }

    /// Sends `request` and reads its whole response; hashes the body if `hash`.
    async fn fetch(&mut self, request: &[u8], hash: bool) -> Result<Fetched, FetchError> {
        if self.pos != self.end {
            return Err(FetchError::Broken(format!(
                "{} bytes the server sent unasked",
                self.end - self.pos
            )));
        }
        let t0 = Instant::now();
        let sent = async {
            self.stream.write_all(request).await?;
            self.stream.flush().await
        };
        sent.await
            .map_err(|e| FetchError::BeforeResponse(format!("write: {e}")))?;
        let mut ttfb = None;
        let head = loop {
            if self.end > self.pos {
                match self.parse_head().map_err(FetchError::Broken)? {
                    // 1xx: skip it, the response follows.
                    Some(h) if (100..200).contains(&h.status) => continue,
                    Some(h) => break h,
                    None => {}
                }
            }
            let got = self.fill().await;
            match got {
                Ok(n) if n > 0 => {
                    ttfb.get_or_insert_with(|| t0.elapsed());
                }
                _ if ttfb.is_none() => {
                    let why = got.err().map_or("EOF".to_string(), |e| e.to_string());
                    return Err(FetchError::BeforeResponse(format!(
                        "before a response: {why}"
                    )));
                }
                Ok(_) => return Err(FetchError::Broken("EOF inside the response head".into())),
                Err(e) => return Err(FetchError::Broken(format!("inside the response head: {e}"))),
            }
        };
        let mut hasher = hash.then(Sha256::new);
        let mut keep_alive = head.keep_alive;
        let body_len = if matches!(head.status, 204 | 304) {
            0
        } else if head.chunked {
            self.chunked_body(&mut hasher).await?
        } else if let Some(n) = head.content_length {
            let got = self.body(n, &mut hasher).await;
            if got != n {
                return Err(FetchError::Broken(format!(
                    "body ended after {got} of {n} bytes (Content-Length)"
                )));
            }
            n
        } else {
            keep_alive = false;
            self.body(u64::MAX, &mut hasher).await
        };
        Ok(Fetched {
            status: head.status,
            body_len,
            ttfb: ttfb.unwrap_or_default(),
            total: t0.elapsed(),
            digest: hasher.map(|h| h.finalize().into()),
            keep_alive,
        })
    }

    /// Consumes up to `n` body bytes (fewer at EOF or an error); returns how many.
    async fn body(&mut self, n: u64, hasher: &mut Option<Sha256>) -> u64 {
        let mut got = 0;
        while got < n {
            if self.pos == self.end && !matches!(self.fill().await, Ok(k) if k > 0) {
                break;
            }
            let k = (self.end - self.pos).min(usize::try_from(n - got).unwrap_or(usize::MAX));
            if let Some(h) = hasher {
                h.update(&self.buf[self.pos..self.pos + k]);
            }
            self.pos += k;
            got += k as u64;
        }
        got
    }

    /// One CRLF-terminated line, without the CRLF.
    async fn line(&mut self) -> Result<String, FetchError> {
        loop {
            if let Some(i) = self.buf[self.pos..self.end]
                .windows(2)
                .position(|w| w == b"\r\n")
            {
                let line = String::from_utf8_lossy(&self.buf[self.pos..self.pos + i]).into_owned();
                self.pos += i + 2;
                return Ok(line);
            }
            match self.fill().await {
                Ok(n) if n > 0 => {}
                Ok(_) => return Err(FetchError::Broken("EOF inside a chunked body".into())),
                Err(e) => return Err(FetchError::Broken(format!("inside a chunked body: {e}"))),
            }
        }
    }

    /// A `Transfer-Encoding: chunked` body; returns its length.
    async fn chunked_body(&mut self, hasher: &mut Option<Sha256>) -> Result<u64, FetchError> {
        let mut total = 0;
        loop {
            let line = self.line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| FetchError::Broken(format!("bad chunk size {line:?}")))?;
            if size == 0 {
                // Trailers up to an empty line.
                while !self.line().await?.is_empty() {}
                return Ok(total);
            }
            if self.body(size, hasher).await != size {
                return Err(FetchError::Broken("chunked body cut short".into()));
            }
            total += size;
            if !self.line().await?.is_empty() {
                return Err(FetchError::Broken("no CRLF after a chunk".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edge_tests::origin::{Fault, FaultOrigin};
    use edge_tests::{pattern, sha256_hex, TempDir};

    fn args(extra: &[&str]) -> Args {
        Args::try_parse_from(["cache-load"].iter().chain(extra)).unwrap()
    }

    fn group<'a>(report: &'a Report, name: &str) -> &'a Value {
        &report.json["groups"][name]
    }

    #[test]
    fn argument_checks() {
        assert!(Args::try_parse_from(["cache-load", "--addr", "a:1"]).is_err());
        assert!(Args::try_parse_from([
            "cache-load",
            "--addr",
            "a:1",
            "--group",
            "g:1:/",
            "--insecure"
        ])
        .is_err());
        assert!(Group::parse("g:0:/a").is_err());
        assert!(Group::parse("g:2").is_err());
        assert!(Group::parse("g:2:a").is_err());
        let g = Group::parse("g:2:/a:b").unwrap();
        assert_eq!(
            (g.name.as_str(), g.conns, g.paths.clone()),
            ("g", 2, vec!["/a:b".to_string()])
        );
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 50.0), Some(2.0));
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 99.0), Some(4.0));
        assert_eq!(percentile(&[], 99.0), None);
        assert!(parse_hex32(&"ab".repeat(32)).is_some());
        assert!(parse_hex32(&"zz".repeat(32)).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn load_against_the_fault_origin() {
        let origin = FaultOrigin::start().await;
        let dir = TempDir::new("cache-load");
        let hot = pattern(100_000, 1);
        origin.put("/hot.bin", hot.clone());
        let mut list = String::new();
        let mut expect = format!("/hot.bin {}\n", sha256_hex(&hot));
        for i in 0..20 {
            let body = pattern(5_000 + i, i as u64 + 2);
            let path = format!("/cold/{i}.ts");
            expect.push_str(&format!("{} {path}\n", sha256_hex(&body)));
            list.push_str(&format!("{path}\n"));
            origin.put(&path, body);
        }
        std::fs::write(dir.path().join("list"), &list).unwrap();
        std::fs::write(dir.path().join("expect"), &expect).unwrap();
        let addr = origin.addr().to_string();
        let cold = format!("cold:3:@{}", dir.path().join("list").display());
        let exp = dir.path().join("expect").display().to_string();

        // Every cold path once; the hot one for the whole (short) duration.
        let report = run(args(&[
            "--addr",
            &addr,
            "--duration-secs",
            "0.5",
            "--group",
            "hot:2:/hot.bin",
            "--group",
            &cold,
            "--once",
            "--expect",
            &exp,
        ]))
        .await
        .unwrap();
        assert!(report.ok, "{}", report.json);
        let (h, c) = (group(&report, "hot"), group(&report, "cold"));
        assert_eq!(c["requests"], 20, "{}", report.json);
        assert_eq!(c["bytes"], (0..20).map(|i| 5_000 + i).sum::<u64>());
        assert_eq!(h["requests"], 1, "--once applies to a one-path group too");
        for i in 0..20 {
            assert_eq!(origin.requests(&format!("/cold/{i}.ts")), 1);
        }
        assert!(
            c["connects"].as_u64().unwrap() <= 3,
            "keep-alive: {}",
            report.json
        );
        assert!(c["p99_ms"].as_f64().unwrap() >= c["p50_ms"].as_f64().unwrap());

        // A wrong body is a mismatch; a 503 an error; a dropped connection is reopened.
        origin.put("/hot.bin", pattern(100_000, 99));
        origin.set_fault("/bad", Fault::StatusTimes(503, 1));
        origin.put("/bad", "x");
        let report = run(args(&[
            "--addr",
            &addr,
            "--duration-secs",
            "0.3",
            "--group",
            "hot:1:/hot.bin",
            "--group",
            "bad:1:/bad",
            "--expect",
            &exp,
        ]))
        .await
        .unwrap();
        assert!(!report.ok);
        let (h, b) = (group(&report, "hot"), group(&report, "bad"));
        assert!(h["mismatches"].as_u64().unwrap() > 0 && h["mismatches"] == h["requests"]);
        assert_eq!(h["errors"], 0);
        assert_eq!(
            (b["errors"].as_u64(), b["status_errors"]["503"].as_u64()),
            (Some(1), Some(1))
        );
        assert!(b["requests"].as_u64().unwrap() > 1);
        assert!(b["unchecked"].as_u64().unwrap() > 0);

        // Connections the server closes are reopened, not counted as errors.
        origin.put("/hot.bin", hot.clone());
        let closer = {
            let o = &origin;
            async move {
                for _ in 0..5 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    o.close_connections();
                }
            }
        };
        let (report, ()) = tokio::join!(
            run(args(&[
                "--addr",
                &addr,
                "--duration-secs",
                "0.4",
                "--group",
                "hot:2:/hot.bin"
            ])),
            closer
        );
        let report = report.unwrap();
        let h = group(&report, "hot");
        assert!(h["connects"].as_u64().unwrap() > 2, "{}", report.json);
        // A close that lands mid-response is a real error; between requests it is not.
        assert!(h["errors"].as_u64().unwrap() <= 10, "{}", report.json);

        // A short body is an error.
        origin.set_fault("/hot.bin", Fault::ShortBody);
        let report = run(args(&[
            "--addr",
            &addr,
            "--duration-secs",
            "0.2",
            "--group",
            "hot:1:/hot.bin",
            "--once",
        ]))
        .await
        .unwrap();
        assert!(!report.ok);
        assert_eq!(group(&report, "hot")["errors"], 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tls_against_edge() {
        let server = edge_tests::TestServer::start("").await;
        let data = pattern(300_000, 4);
        server.put("seg.ts", &data);
        let dir = TempDir::new("cache-load-tls");
        let exp = dir.path().join("expect");
        std::fs::write(&exp, format!("/seg.ts {}\n", sha256_hex(&data))).unwrap();
        let addr = server.tls.to_string();
        let ca = server.state.join("cert.pem").display().to_string();
        let exp = exp.display().to_string();
        for trust in [["--ca", ca.as_str()], ["--insecure", "--sni=localhost"]] {
            let mut a = vec![
                "--addr",
                &addr,
                "--tls",
                "--duration-secs",
                "0.3",
                "--group",
                "seg:2:/seg.ts",
                "--expect",
                &exp,
            ];
            a.extend(trust);
            let report = run(args(&a)).await.unwrap();
            assert!(report.ok, "{}", report.json);
            assert_eq!(group(&report, "seg")["connects"], 2, "{}", report.json);
        }
        let bad = run(args(&[
            "--addr",
            &addr,
            "--tls",
            "--ca",
            &ca,
            "--sni",
            "other.example",
            "--duration-secs",
            "0.1",
            "--group",
            "seg:1:/seg.ts",
        ]))
        .await
        .unwrap();
        assert!(!bad.ok);
        assert!(group(&bad, "seg")["errors"].as_u64().unwrap() > 0);
    }
}
