//! `hs-load`: connection-per-request TLS load against an HTTPS server, for handshake
//! benchmarks (`bench/handshake-bench.sh`).
//!
//! ```text
//! hs-load --addr 127.0.0.1:PORT [--sni localhost] [--host HOST] [--path /small.bin]
//!         --mode full13|full12|resumed13|resumed12 [--concurrency 32] [--duration 10]
//!         [--warmup 0] (--ca FILE | --insecure) [--threads 1] [--timeout 10]
//!         [--server-pids PID,PID,...] [--clk-tck 100]
//! ```
//!
//! Each of `--concurrency` workers loops: TCP connect, TLS handshake, one
//! `GET PATH HTTP/1.1` with `Connection: close`, read the response until EOF (so the
//! TLS 1.3 NewSessionTicket messages that follow the handshake are processed), check
//! it (status 200, body as long as its Content-Length), close. Nothing is reused
//! between connections but, in the resumed modes, the TLS session.
//!
//! Modes:
//! - `full13` / `full12`: TLS 1.3 / TLS 1.2 only, resumption disabled in the client,
//!   so every handshake is full (the client still offers the empty TLS 1.2 ticket
//!   extension, as browsers do, so a server may issue tickets nobody uses).
//! - `resumed13` / `resumed12`: each worker has its own `ClientConfig` and session
//!   store, makes one untimed priming connection (a full handshake), and then every
//!   timed connection should resume (`handshake_kind() == Resumed`). TLS 1.3 resumes
//!   with a ticket (PSK with (EC)DHE, rustls' only mode); TLS 1.2 does what the rustls
//!   client does by default: it offers the ticket when the server gave one, else the
//!   session ID. A resumed run where under 99 % of the timed connections resumed
//!   exits 1.
//!
//! The first `--warmup` seconds are load that is not recorded; then `--duration`
//! seconds are measured: a connection is timed when it started inside that window
//! (workers stop starting connections at its end and finish the ones in flight;
//! `secs` runs from the window's start to the last one's end). Per connection it
//! measures `hs` (connect start to handshake done) and `req` (connect start to the
//! response's EOF).
//!
//! Output, one line of `key=value` on stdout:
//! `mode=.. handshakes=N secs=S rate=R hs_p50_ms=.. hs_p99_ms=.. req_p50_ms=..
//! req_p99_ms=.. resumed=N errors=N unclean_eof=N client_cpu_s=.. [server_cpu_s=..
//! server_sys_s=..]
//! version=.. suite=.. kx=..`. `handshakes` counts timed connections that completed
//! (handshake and a checked 200 response); latencies are over those. `errors` counts
//! timed connections that failed (refused, reset, TLS failure, timeout, non-200),
//! with a breakdown and sample messages on stderr; errors are not fatal.
//! `unclean_eof` counts complete responses whose connection ended without a TLS
//! close_notify (accepted, not errors). `client_cpu_s` is this process's CPU time
//! (utime+stime) over the measured window, `server_cpu_s` the same summed over
//! `--server-pids` (`server_sys_s`: its stime part, the kernel's share, which on
//! loopback includes much of the TCP work): all from `/proc/PID/stat` at the
//! window's start and end.
//!
//! Exit status: 0; 1 when no timed connection completed or a resumed mode resumed
//! under 99 %; 2 on bad arguments or setup failure (including a failed priming
//! connection).

#![forbid(unsafe_code)]

use std::fmt::Display;
use std::fs;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use hs_load::{micros, percentile_ms, ConnError, Failure, Target};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, HandshakeKind};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Share of the timed connections that must resume in a resumed mode.
const MIN_RESUMED_SHARE: f64 = 0.99;
/// Error messages printed on stderr per run (the rest are only counted).
const ERROR_SAMPLES: usize = 10;
/// Pause after a failed connection, so that a dead server does not turn a worker
/// into a busy loop of refused connects.
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// Sessions a worker's client cache holds (one server name: its TLS 1.2 session and
/// up to 8 TLS 1.3 tickets, a rustls limit).
const SESSION_CACHE_ENTRIES: usize = 16;
/// Attempts at a worker's priming connection in the resumed modes.
const PRIMING_ATTEMPTS: usize = 3;
/// Initial capacity of a worker's response buffer (reused across connections).
const RESPONSE_BUF_BYTES: usize = 16 * 1024;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "hs-load",
    about = "Connection-per-request TLS load: full or resumed TLS 1.2/1.3 handshakes, one GET each, latency percentiles"
)]
struct Args {
    /// Server address, HOST:PORT (resolved once).
    #[arg(long)]
    addr: String,
    /// TLS server name (SNI, and the name the certificate is checked for).
    #[arg(long, default_value = "localhost")]
    sni: String,
    /// Host header [default: the --sni name].
    #[arg(long)]
    host: Option<String>,
    /// Path requested on every connection.
    #[arg(long, default_value = "/")]
    path: String,
    /// Protocol version and whether timed connections resume.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Workers, each with one connection at a time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds of unrecorded load before the measured window.
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Trust the PEM certificate(s) in FILE.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "insecure",
        required_unless_present = "insecure"
    )]
    ca: Option<PathBuf>,
    /// Accept any server certificate (handshake signatures are still verified).
    #[arg(long)]
    insecure: bool,
    /// Runtime threads: 1 is a current-thread runtime (pin it with taskset), more a
    /// multi-thread runtime with that many workers.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Limit for one connection, connect to EOF, in seconds (past it: a timeout error).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Server process ids whose CPU time (utime+stime, all threads) is reported over
    /// the measured window as `server_cpu_s`.
    #[arg(long, value_name = "PID,...", value_delimiter = ',')]
    server_pids: Vec<u32>,
    /// Clock ticks per second of /proc/PID/stat times (`getconf CLK_TCK`).
    #[arg(long, default_value_t = 100)]
    clk_tck: u64,
}

/// Protocol version, and full or resumed handshakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// TLS 1.3, every handshake full.
    Full13,
    /// TLS 1.2, every handshake full.
    Full12,
    /// TLS 1.3, every timed handshake resumed (ticket).
    Resumed13,
    /// TLS 1.2, every timed handshake resumed (ticket or session ID).
    Resumed12,
}

impl Mode {
    /// The name on the command line and in the output.
    fn name(self) -> &'static str {
        match self {
            Mode::Full13 => "full13",
            Mode::Full12 => "full12",
            Mode::Resumed13 => "resumed13",
            Mode::Resumed12 => "resumed12",
        }
    }

    /// Whether timed connections must resume.
    fn resumed(self) -> bool {
        matches!(self, Mode::Resumed13 | Mode::Resumed12)
    }

    /// Whether the client speaks TLS 1.2 only (else TLS 1.3 only).
    fn tls12(self) -> bool {
        matches!(self, Mode::Full12 | Mode::Resumed12)
    }
}

/// What every worker shares: where to connect and what to send.
struct Plan {
    /// The server.
    addr: SocketAddr,
    /// SNI and certificate name.
    server_name: ServerName<'static>,
    /// The request, written once per connection.
    request: Vec<u8>,
    /// Limit for one connection, connect to EOF.
    timeout: Duration,
}

/// One completed connection.
#[derive(Clone, Copy, Debug)]
struct Sample {
    /// Connect start to handshake done.
    hs: Duration,
    /// Connect start to the response's EOF.
    req: Duration,
    /// The handshake was a resumption.
    resumed: bool,
    /// The connection ended without a TLS close_notify after a complete response.
    unclean_eof: bool,
}

/// Protocol parameters of a connection, for the output line.
#[derive(Clone, Debug)]
struct Negotiated {
    /// Protocol version (`TLSv1_3`).
    version: String,
    /// Cipher suite.
    suite: String,
    /// Key exchange group (`none` on a TLS 1.2 resumption, which has none).
    kx: String,
}

impl Negotiated {
    /// The parameters of an established connection.
    fn of(conn: &rustls::ClientConnection) -> Self {
        let show = |s: Option<String>| s.unwrap_or_else(|| "none".into());
        Negotiated {
            version: show(conn.protocol_version().map(|v| format!("{v:?}"))),
            suite: show(
                conn.negotiated_cipher_suite()
                    .map(|s| format!("{:?}", s.suite())),
            ),
            kx: show(
                conn.negotiated_key_exchange_group()
                    .map(|g| format!("{:?}", g.name())),
            ),
        }
    }
}

/// A worker's (then the run's) results.
#[derive(Debug, Default)]
struct Stats {
    /// Handshake latencies of completed timed connections, microseconds.
    hs_us: Vec<u32>,
    /// Request latencies of completed timed connections, microseconds.
    req_us: Vec<u32>,
    /// Completed timed connections that resumed.
    resumed: u64,
    /// Completed timed connections that ended without close_notify.
    unclean_eof: u64,
    /// Failed timed connections per [`Failure`] kind.
    errors: [u64; 5],
    /// Failed connections during the warm-up (not in `errors`).
    warmup_errors: u64,
    /// The first error messages.
    samples: Vec<String>,
    /// Parameters of the first completed timed connection.
    negotiated: Option<Negotiated>,
}

impl Stats {
    /// Records a completed timed connection.
    fn record(&mut self, s: Sample) {
        self.hs_us.push(micros(s.hs));
        self.req_us.push(micros(s.req));
        self.resumed += u64::from(s.resumed);
        self.unclean_eof += u64::from(s.unclean_eof);
    }

    /// Records a failed connection (timed or in the warm-up).
    fn error(&mut self, e: ConnError, timed: bool) {
        if timed {
            self.errors[e.kind.index()] += 1;
        } else {
            self.warmup_errors += 1;
        }
        if self.samples.len() < ERROR_SAMPLES {
            let when = if timed { "" } else { " (warm-up)" };
            self.samples
                .push(format!("{}{when}: {}", e.kind.name(), e.msg));
        }
    }

    /// Adds another worker's results.
    fn merge(&mut self, other: Stats) {
        self.hs_us.extend(other.hs_us);
        self.req_us.extend(other.req_us);
        self.resumed += other.resumed;
        self.unclean_eof += other.unclean_eof;
        for (a, b) in self.errors.iter_mut().zip(other.errors) {
            *a += b;
        }
        self.warmup_errors += other.warmup_errors;
        for s in other.samples {
            if self.samples.len() < ERROR_SAMPLES {
                self.samples.push(s);
            }
        }
        if self.negotiated.is_none() {
            self.negotiated = other.negotiated;
        }
    }

    /// Failed timed connections, all kinds.
    fn error_total(&self) -> u64 {
        self.errors.iter().sum()
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args.threads;
    hs_load::run_main("hs-load", threads, run(args))
}

/// Runs the load described by `args` and prints the result line; `Err` for bad
/// arguments or a failed setup.
async fn run(args: Args) -> Result<ExitCode, String> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let duration = secs_arg("--duration", args.duration, false)?;
    let warmup = secs_arg("--warmup", args.warmup, true)?;
    let timeout = secs_arg("--timeout", args.timeout, false)?;
    if args.clk_tck == 0 {
        return Err("--clk-tck must be positive".into());
    }
    let Target {
        addr,
        server_name,
        host,
    } = Target::new(&args.addr, &args.sni, args.host.as_deref(), &args.path)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
        args.path
    )
    .into_bytes();
    let plan = Arc::new(Plan {
        addr,
        server_name,
        request,
        timeout,
    });

    let base = client_config(args.mode, args.ca.as_deref(), args.insecure)?;
    let connectors: Vec<TlsConnector> = if args.mode.resumed() {
        // A store per worker: a worker resumes only the sessions it made itself.
        (0..args.concurrency)
            .map(|_| {
                let mut c = base.clone();
                c.resumption = Resumption::in_memory_sessions(SESSION_CACHE_ENTRIES);
                TlsConnector::from(Arc::new(c))
            })
            .collect()
    } else {
        let mut c = base;
        c.resumption = Resumption::disabled();
        let shared = TlsConnector::from(Arc::new(c));
        vec![shared; args.concurrency]
    };
    if args.mode.resumed() {
        prime(&connectors, &plan).await?;
    }

    let start = Instant::now();
    let window_start = start + warmup;
    let end = window_start + duration;
    let workers: Vec<_> = connectors
        .into_iter()
        .map(|connector| tokio::spawn(worker(connector, Arc::clone(&plan), window_start, end)))
        .collect();
    tokio::time::sleep_until(window_start.into()).await;
    let cpu_before = CpuTimes::read(&args.server_pids)?;
    let mut stats = Stats::default();
    for w in workers {
        stats.merge(w.await.map_err(|e| format!("worker: {e}"))?);
    }
    let secs = window_start.elapsed().as_secs_f64();
    let cpu_after = CpuTimes::read(&args.server_pids)?;

    stats.hs_us.sort_unstable();
    stats.req_us.sort_unstable();
    let handshakes = stats.hs_us.len() as u64;
    let tck = args.clk_tck as f64;
    let client_cpu_s = cpu_after.client.since(cpu_before.client).total() as f64 / tck;
    let mut line = format!(
        "mode={} handshakes={handshakes} secs={secs:.3} rate={:.1} hs_p50_ms={:.3} hs_p99_ms={:.3} \
         req_p50_ms={:.3} req_p99_ms={:.3} resumed={} errors={} unclean_eof={} client_cpu_s={client_cpu_s:.2}",
        args.mode.name(),
        handshakes as f64 / secs,
        percentile_ms(&stats.hs_us, 50.0),
        percentile_ms(&stats.hs_us, 99.0),
        percentile_ms(&stats.req_us, 50.0),
        percentile_ms(&stats.req_us, 99.0),
        stats.resumed,
        stats.error_total(),
        stats.unclean_eof,
    );
    if !args.server_pids.is_empty() {
        let server = cpu_after.server.since(cpu_before.server);
        line.push_str(&format!(
            " server_cpu_s={:.2} server_sys_s={:.2}",
            server.total() as f64 / tck,
            server.sys as f64 / tck
        ));
    }
    let neg = stats.negotiated.clone().unwrap_or(Negotiated {
        version: "none".into(),
        suite: "none".into(),
        kx: "none".into(),
    });
    line.push_str(&format!(
        " version={} suite={} kx={}",
        neg.version, neg.suite, neg.kx
    ));
    println!("{line}");

    if stats.error_total() > 0 || stats.warmup_errors > 0 {
        let kinds: Vec<String> = Failure::ALL
            .iter()
            .map(|k| format!("{}={}", k.name(), stats.errors[k.index()]))
            .collect();
        eprintln!(
            "hs-load: errors: {} (warm-up: {})",
            kinds.join(" "),
            stats.warmup_errors
        );
        for s in &stats.samples {
            eprintln!("hs-load:   {s}");
        }
    }
    if handshakes == 0 {
        eprintln!("hs-load: no timed connection completed");
        return Ok(ExitCode::FAILURE);
    }
    if args.mode.resumed() && (stats.resumed as f64) < MIN_RESUMED_SHARE * handshakes as f64 {
        eprintln!(
            "hs-load: only {} of {handshakes} timed connections resumed (need {:.0} %)",
            stats.resumed,
            MIN_RESUMED_SHARE * 100.0
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// A seconds argument as a `Duration`: finite, positive (or zero when `zero_ok`).
fn secs_arg(name: &str, v: f64, zero_ok: bool) -> Result<Duration, String> {
    if !v.is_finite() || v < 0.0 || (v == 0.0 && !zero_ok) || v > 1e6 {
        return Err(format!("{name} {v}: out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// One untimed connection per worker (all at once), so that each worker's store
/// holds a session before the timed ones; `Err` when a worker's fails
/// [`PRIMING_ATTEMPTS`] times.
async fn prime(connectors: &[TlsConnector], plan: &Arc<Plan>) -> Result<(), String> {
    let tasks: Vec<_> = connectors
        .iter()
        .cloned()
        .map(|connector| {
            let plan = Arc::clone(plan);
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(RESPONSE_BUF_BYTES);
                let mut last = None;
                for _ in 0..PRIMING_ATTEMPTS {
                    match connect_once(&connector, &plan, &mut buf, false).await {
                        Ok(_) => return Ok(()),
                        Err(e) => last = Some(e),
                    }
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
                Err(last.map_or_else(String::new, |e| format!("{}: {}", e.kind.name(), e.msg)))
            })
        })
        .collect();
    for t in tasks {
        t.await
            .map_err(|e| format!("priming: {e}"))?
            .map_err(|e| format!("priming connection failed {PRIMING_ATTEMPTS} times: {e}"))?;
    }
    Ok(())
}

/// One worker: connections back to back until `end`; those started at or after
/// `window_start` are recorded.
async fn worker(
    connector: TlsConnector,
    plan: Arc<Plan>,
    window_start: Instant,
    end: Instant,
) -> Stats {
    let mut stats = Stats::default();
    let mut buf = Vec::with_capacity(RESPONSE_BUF_BYTES);
    loop {
        let started = Instant::now();
        if started >= end {
            break;
        }
        let timed = started >= window_start;
        let want = timed && stats.negotiated.is_none();
        match connect_once(&connector, &plan, &mut buf, want).await {
            Ok((sample, negotiated)) if timed => {
                stats.record(sample);
                if negotiated.is_some() {
                    stats.negotiated = negotiated;
                }
            }
            Ok(_) => {}
            Err(e) => {
                stats.error(e, timed);
                tokio::time::sleep(ERROR_PAUSE).await;
            }
        }
    }
    stats
}

/// One connection under the plan's timeout; with `want_negotiated`, also its
/// protocol parameters.
async fn connect_once(
    connector: &TlsConnector,
    plan: &Plan,
    buf: &mut Vec<u8>,
    want_negotiated: bool,
) -> Result<(Sample, Option<Negotiated>), ConnError> {
    match tokio::time::timeout(
        plan.timeout,
        exchange(connector, plan, buf, want_negotiated),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(ConnError::new(
            Failure::Timeout,
            format!("not done within {:?}", plan.timeout),
        )),
    }
}

/// Connect, handshake, request, response to EOF, check. Not cancel-safe in any
/// useful sense: dropping it drops the connection.
async fn exchange(
    connector: &TlsConnector,
    plan: &Plan,
    buf: &mut Vec<u8>,
    want_negotiated: bool,
) -> Result<(Sample, Option<Negotiated>), ConnError> {
    let start = Instant::now();
    let tcp = TcpStream::connect(plan.addr)
        .await
        .map_err(|e| ConnError::new(Failure::Connect, e))?;
    // Best effort; the request is one write anyway.
    let _ = tcp.set_nodelay(true);
    let mut tls = connector
        .connect(plan.server_name.clone(), tcp)
        .await
        .map_err(|e| ConnError::new(Failure::Tls, e))?;
    let hs = start.elapsed();
    let conn = tls.get_ref().1;
    let resumed = conn.handshake_kind() == Some(HandshakeKind::Resumed);
    let negotiated = want_negotiated.then(|| Negotiated::of(conn));
    tls.write_all(&plan.request)
        .await
        .map_err(|e| ConnError::new(Failure::Io, format!("write: {e}")))?;
    tls.flush()
        .await
        .map_err(|e| ConnError::new(Failure::Io, format!("write: {e}")))?;
    buf.clear();
    let unclean_eof = match tls.read_to_end(buf).await {
        Ok(_) => false,
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof && body_complete(buf) => true,
        Err(e) => {
            return Err(ConnError::new(
                Failure::Io,
                format!("read after {} bytes: {e}", buf.len()),
            ))
        }
    };
    let req = start.elapsed();
    check_response(buf).map_err(|m| ConnError::new(Failure::Response, m))?;
    let sample = Sample {
        hs,
        req,
        resumed,
        unclean_eof,
    };
    Ok((sample, negotiated))
}

/// Checks a whole HTTP/1.x response: status 200, and a body exactly as long as its
/// Content-Length when it has one.
fn check_response(resp: &[u8]) -> Result<(), String> {
    let (head, body) = split_head(resp).ok_or_else(|| {
        format!(
            "no complete response head in {} bytes: {:?}",
            resp.len(),
            String::from_utf8_lossy(&resp[..resp.len().min(80)])
        )
    })?;
    let status_line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let status_line = String::from_utf8_lossy(status_line);
    let mut parts = status_line.trim_end().splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || status != "200" {
        return Err(format!("status line {:?}", status_line.trim_end()));
    }
    if let Some(len) = content_length(head)? {
        if body.len() as u64 != len {
            return Err(format!(
                "body of {} bytes, Content-Length {len}",
                body.len()
            ));
        }
    }
    Ok(())
}

/// Whether `resp` holds a head with a Content-Length and that many body bytes (a
/// response that is complete whatever came after it).
fn body_complete(resp: &[u8]) -> bool {
    match split_head(resp) {
        Some((head, body)) => matches!(content_length(head), Ok(Some(n)) if body.len() as u64 == n),
        None => false,
    }
}

/// The head (without the blank line) and the bytes after it.
fn split_head(resp: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = resp.windows(4).position(|w| w == b"\r\n\r\n")?;
    Some((&resp[..end], &resp[end + 4..]))
}

/// The Content-Length of a head, if it has one; `Err` when it is not a number.
fn content_length(head: &[u8]) -> Result<Option<u64>, String> {
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = String::from_utf8_lossy(line);
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                let v = value.trim();
                return v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("Content-Length {v:?}"));
            }
        }
    }
    Ok(None)
}

/// User and system CPU time, in clock ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ticks {
    /// utime.
    user: u64,
    /// stime.
    sys: u64,
}

impl Ticks {
    /// user + sys.
    fn total(self) -> u64 {
        self.user + self.sys
    }

    /// The time spent from `before` to `self` (0 where a counter went backwards).
    fn since(self, before: Ticks) -> Ticks {
        Ticks {
            user: self.user.saturating_sub(before.user),
            sys: self.sys.saturating_sub(before.sys),
        }
    }
}

/// CPU time of this process and of the server processes.
struct CpuTimes {
    /// This process.
    client: Ticks,
    /// The `--server-pids`, summed.
    server: Ticks,
}

impl CpuTimes {
    /// Reads them now; `Err` when a process's stat cannot be read (gone, or a wrong
    /// pid).
    fn read(server_pids: &[u32]) -> Result<Self, String> {
        let client = proc_cpu_ticks("self").map_err(|e| format!("/proc/self/stat: {e}"))?;
        let mut server = Ticks::default();
        for pid in server_pids {
            let t = proc_cpu_ticks(&pid.to_string())
                .map_err(|e| format!("/proc/{pid}/stat (--server-pids): {e}"))?;
            server.user += t.user;
            server.sys += t.sys;
        }
        Ok(CpuTimes { client, server })
    }
}

/// utime and stime of `/proc/<pid>/stat` (all the process's threads).
fn proc_cpu_ticks(pid: &str) -> Result<Ticks, String> {
    let stat =
        fs::read_to_string(Path::new("/proc").join(pid).join("stat")).map_err(|e| e.to_string())?;
    parse_stat_ticks(&stat).ok_or_else(|| "unexpected format".into())
}

/// utime and stime from the text of a `/proc/<pid>/stat` (fields 14 and 15; the
/// command name in parentheses may hold spaces, so fields count from its closing `)`).
fn parse_stat_ticks(stat: &str) -> Option<Ticks> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(Ticks {
        user: fields.get(11)?.parse().ok()?,
        sys: fields.get(12)?.parse().ok()?,
    })
}

/// The client TLS config for `mode` (one protocol version, ALPN `http/1.1`): roots
/// from `ca`, or any certificate with `insecure`. Resumption is set by the caller.
fn client_config(mode: Mode, ca: Option<&Path>, insecure: bool) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = if mode.tls12() {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(versions)
        .map_err(|e| e.to_string())?;
    let mut config = match (ca, insecure) {
        (Some(ca), _) => {
            let bad = |e: &dyn Display| format!("--ca {}: {e}", ca.display());
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad(&e))? {
                roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
            }
            if roots.is_empty() {
                return Err(bad(&"no certificate"));
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        (None, true) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(hs_load::AcceptAnyCert(provider)))
            .with_no_client_auth(),
        (None, false) => return Err("give --ca FILE or --insecure".into()),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_response_with_matching_length() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
        assert_eq!(check_response(r), Ok(()));
        assert!(body_complete(r));
    }

    #[test]
    fn short_body_and_other_status_are_errors() {
        let short = b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nabc";
        assert!(check_response(short).is_err());
        assert!(!body_complete(short));
        let not_found = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        assert!(check_response(not_found).is_err());
        assert!(check_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(check_response(b"HTTP/1.1 2000 OK\r\n\r\n").is_err());
    }

    #[test]
    fn response_without_length_is_complete_only_at_eof() {
        let r = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nbody";
        assert_eq!(check_response(r), Ok(()));
        assert!(!body_complete(r));
    }

    #[test]
    fn stat_ticks_after_command_name_with_spaces() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 17 5 0 0 20 0 1 0 10 0 0";
        assert_eq!(parse_stat_ticks(stat), Some(Ticks { user: 17, sys: 5 }));
        assert_eq!(parse_stat_ticks("42 (x) S 1"), None);
    }

    #[test]
    fn modes() {
        assert!(Mode::Resumed12.resumed() && Mode::Resumed12.tls12());
        assert!(!Mode::Full13.resumed() && !Mode::Full13.tls12());
        assert_eq!(Mode::from_str("resumed13", false), Ok(Mode::Resumed13));
    }
}
