//! `fetch-load`: keep-alive HTTP(S) download load whose own cost per byte is small,
//! so that one client core can saturate one server core (`bench/scale-bench.sh
//! LOAD=fetch`).
//!
//! ```text
//! fetch-load --addr 127.0.0.1:PORT --conns C (--plain | --tls) [--threads 1]
//!            [--path /seg_%03d.ts] [--nfiles 32] [--sni localhost] [--host HOST]
//!            [--stats FILE] [--duration SECS] [--timeout 60] [--concurrency 256]
//!            [--record-from SECS] [--record-until SECS] [--busy-poll]
//! ```
//!
//! Why: wrk copies every body byte into userspace and, over HTTPS, decrypts it, so on
//! a machine with as many client cores as server cores it saturates before the server
//! does, and a benchmark then measures wrk. This client does what a download client
//! must (requests, response heads, framing) and leaves out the per-byte work that
//! only a real viewer needs:
//! - plain HTTP: the body is discarded inside the kernel with `recv(MSG_TRUNC)`
//!   (tcp(7): "the received bytes of data [are] discarded rather than passed back in a
//!   caller-supplied buffer"), so it is never copied;
//! - HTTPS: TLS 1.3 with `TLS_AES_256_GCM_SHA384` only (what wrk/OpenSSL negotiates
//!   with both servers). The handshake is rustls'; then the traffic secrets are
//!   extracted and this program runs the record layer itself: it decrypts the records
//!   up to the end of the response head (NewSessionTickets included) and the record
//!   that ends the body, and discards the records in between with `MSG_TRUNC` after
//!   reading their 5-byte headers, counting their plaintext (TLS 1.3 record length
//!   less the 16-byte tag and the content-type byte; rustls and OpenSSL do not pad).
//!   The decrypted last record checks the skipping: its authentication fails unless
//!   every skipped record was counted (the record sequence number is the nonce), and
//!   its length must end the body exactly.
//!
//! The server does all its usual work (files, `sendfile` or encryption, TCP); only
//! the client's share shrinks. Nothing of the body's content is checked: that is
//! what the correctness gates of the bench scripts and the test suite are for.
//!
//! First every one of `--conns` connections is opened (TCP connect and TLS handshake,
//! at most `--concurrency` at a time), and no request is sent until all are open, or
//! `--ramp-timeout` has passed: a server saturated by the requests of the first
//! connections would otherwise take on the rest at the pace of its accept loop under
//! load (nginx accepts one connection per event-loop turn), and the benchmark would
//! measure that instead of C busy connections. Then each connection loops over
//! keep-alive `GET`s of `--path` with `%03d` replaced by k = 0 .. nfiles-1, round
//! robin (connection i starts at i mod nfiles), each response checked (`200`, a
//! `Content-Length`, no `Connection: close`) and its body read to the end, until the
//! run ends. A failed connection (refused, TLS error, bad response, a response not
//! done within `--timeout`) is counted, and the connection is opened again after
//! 10 ms (and used at once).
//!
//! `--stats FILE`: every 20 ms the running totals are written to FILE (through a
//! temporary file and a rename, so a reader never sees half a line):
//! `bytes=B responses=R errors=E open=O`, where `bytes` counts every byte read from
//! the sockets, discarded or not (TLS records over HTTPS, as wrk's read bytes do).
//! When the requests start, `ramp: open=O of C secs=S` goes to stderr.
//! The run ends after `--duration` seconds, or on SIGINT or SIGTERM; then the same
//! line goes to stdout with `secs=S` (from start to end) and `p50_ms=.. p99_ms=..`
//! added: the latency of the responses completed after the ramp, each from its
//! request's write to its body's last byte (nearest rank; 0 when none), and
//! `recorded=N`, how many latencies that is. `--record-from` and `--record-until`
//! narrow it to the responses completed in that window, in seconds from the start
//! (the clock `--duration` runs on): `bench/storm-bench.sh` times the viewers only
//! while its flood runs. A per-kind breakdown of the errors with up to ten sample
//! messages goes to stderr.
//!
//! Descriptors: one per connection; run it with a soft `RLIMIT_NOFILE` above
//! `--conns`. Memory: about 18 KiB per HTTPS connection (one record buffer), 2 KiB per
//! plain one.
//!
//! Exit status: 0 when the run ended (whatever failed); 2 on bad arguments or a setup
//! failure.

#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::io::{self, ErrorKind};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::{ArgGroup, Parser};
use hs_load::{
    check_head, micros, percentile_ms, AcceptAnyCert, ConnError, Failure, ServerArgs, Target,
    MAX_HEAD_BYTES,
};
use rustls::client::Resumption;
use rustls::crypto::cipher::{
    InboundOpaqueMessage, MessageDecrypter, MessageEncrypter, OutboundChunks, OutboundPlainMessage,
};
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ConnectionTrafficSecrets, ContentType, ProtocolVersion};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsConnector;

/// Error messages printed on stderr (the rest are only counted).
const ERROR_SAMPLES: usize = 10;
/// Largest TLS record payload accepted (RFC 8446: 2^14 + 256).
const MAX_RECORD_PAYLOAD: usize = 16 * 1024 + 256;
/// TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;
/// What a TLS 1.3 AEAD record adds to its plaintext: the content-type byte and the
/// 16-byte tag.
const TLS13_OVERHEAD: usize = 1 + 16;
/// Most bytes one `recv(MSG_TRUNC)` discards.
const DISCARD_CHUNK: usize = 1 << 20;
/// How often `--stats` is rewritten.
const STATS_EVERY: Duration = Duration::from_millis(20);
/// Pause before a failed connection is opened again.
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "fetch-load",
    about = "Keep-alive download load that discards bodies in the kernel (cheap per byte)",
    group(ArgGroup::new("transport").required(true).args(["plain", "tls"]))
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Connections kept busy.
    #[arg(long)]
    conns: usize,
    /// Plain HTTP.
    #[arg(long)]
    plain: bool,
    /// TLS 1.3, TLS_AES_256_GCM_SHA384, any server certificate (handshake signatures
    /// are still verified).
    #[arg(long)]
    tls: bool,
    /// Request path; `%03d` is replaced by the file number.
    #[arg(long, default_value = "/seg_%03d.ts")]
    path: String,
    /// Files the path's `%03d` runs over.
    #[arg(long, default_value_t = 32)]
    nfiles: usize,
    /// Running totals, rewritten every 20 ms.
    #[arg(long)]
    stats: Option<PathBuf>,
    /// End after this many seconds [default: at SIGINT or SIGTERM].
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// Limit for one response (request written to body read), in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Connections connecting or in their TLS handshake at a time.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Longest wait for every connection to open before the requests start, seconds.
    #[arg(long, default_value_t = 60.0)]
    ramp_timeout: f64,
    /// Runtime threads: 1 is a current-thread runtime, more a multi-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Record the latencies of responses completed from this many seconds after the
    /// start.
    #[arg(long, value_name = "SECS", default_value_t = 0.0)]
    record_from: f64,
    /// ... until this many seconds after the start [default: to the end].
    #[arg(long, value_name = "SECS")]
    record_until: Option<f64>,
    /// Never sleep in `epoll_wait`: a task that always yields keeps the runtime
    /// polling its sockets with a zero timeout. The client then spins on its own
    /// cores, and on loopback the server no longer pays for waking it (see
    /// `bench/README.md`).
    #[arg(long)]
    busy_poll: bool,
}

/// A read or write error (EOF included) as a failure.
fn io_error(e: io::Error) -> ConnError {
    ConnError::new(Failure::Io, e)
}

/// Running totals, shared by every connection.
#[derive(Default)]
struct Totals {
    /// Bytes read from the sockets, discarded ones included.
    bytes: AtomicU64,
    /// Complete, checked responses.
    responses: AtomicU64,
    /// Failures, per [`Failure::index`].
    errors: [AtomicU64; 5],
    /// Connections open now.
    open: AtomicU64,
    /// The first [`ERROR_SAMPLES`] error messages.
    samples: Mutex<Vec<String>>,
    /// Latency of each response completed after the ramp, in microseconds.
    latencies_us: Mutex<Vec<u32>>,
}

impl Totals {
    /// Counts a failure and keeps its message while there is room.
    fn failed(&self, e: &ConnError) {
        self.errors[e.kind.index()].fetch_add(1, Relaxed);
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() < ERROR_SAMPLES {
            samples.push(format!("{}: {}", e.kind.name(), e.msg));
        }
    }

    /// `bytes=.. responses=.. errors=.. open=..`.
    fn line(&self) -> String {
        let errors: u64 = self.errors.iter().map(|e| e.load(Relaxed)).sum();
        format!(
            "bytes={} responses={} errors={} open={}",
            self.bytes.load(Relaxed),
            self.responses.load(Relaxed),
            errors,
            self.open.load(Relaxed)
        )
    }
}

/// What every connection shares.
struct Plan {
    /// The server.
    addr: SocketAddr,
    /// SNI.
    server_name: ServerName<'static>,
    /// TLS connector; `None` for plain HTTP.
    tls: Option<TlsConnector>,
    /// One request per file, round robin.
    requests: Vec<Vec<u8>>,
    /// Limit for one response.
    timeout: Duration,
    /// Connects and handshakes in progress.
    connecting: Semaphore,
    /// Connections to open before the requests start.
    conns: usize,
    /// Connections opened (or failed) in the ramp.
    ramped: AtomicU64,
    /// Turns true when the requests start.
    go: watch::Sender<bool>,
    /// The run's start.
    started: Instant,
    /// Latencies of responses completed in this span after `started` are recorded.
    record: std::ops::Range<Duration>,
    /// The counters.
    totals: Totals,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args.threads;
    hs_load::run_main("fetch-load", threads, async move {
        run(args).await.map(|()| ExitCode::SUCCESS)
    })
}

/// Runs the load until the end; `Err` for bad arguments or a failed setup.
async fn run(args: Args) -> Result<(), String> {
    if args.conns == 0 || args.concurrency == 0 || args.nfiles == 0 {
        return Err("--conns, --concurrency and --nfiles must be at least 1".into());
    }
    let timeout = secs_arg("--timeout", args.timeout)?;
    let ramp_timeout = secs_arg("--ramp-timeout", args.ramp_timeout)?;
    let duration = args
        .duration
        .map(|d| secs_arg("--duration", d))
        .transpose()?;
    // 0 (the default) records from the start; otherwise a positive number of seconds.
    let record_from = if args.record_from == 0.0 {
        Duration::ZERO
    } else {
        secs_arg("--record-from", args.record_from)?
    };
    let record_until = match args.record_until {
        Some(until) => secs_arg("--record-until", until)?,
        None => Duration::MAX,
    };
    if record_until <= record_from {
        return Err("--record-until must be after --record-from".into());
    }
    let Target {
        addr,
        server_name,
        host,
    } = args.server.target(&args.path)?;
    let requests = (0..args.nfiles)
        .map(|k| {
            let path = args.path.replace("%03d", &format!("{k:03}"));
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
        })
        .collect();
    let plan = Arc::new(Plan {
        addr,
        server_name,
        tls: if args.tls {
            Some(TlsConnector::from(Arc::new(client_config()?)))
        } else {
            None
        },
        requests,
        timeout,
        connecting: Semaphore::new(args.concurrency),
        conns: args.conns,
        ramped: AtomicU64::new(0),
        go: watch::Sender::new(false),
        started: Instant::now(),
        record: record_from..record_until,
        totals: Totals::default(),
    });

    let started = plan.started;
    let (stop_tx, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..args.conns {
        tasks.spawn(connection(Arc::clone(&plan), i, stop.clone()));
    }
    if let Some(path) = args.stats.clone() {
        tasks.spawn(write_stats(Arc::clone(&plan), path, stop.clone()));
    }
    if args.busy_poll {
        let mut stopped = stop.clone();
        tasks.spawn(async move {
            // A deferred (yielded) task makes the scheduler poll the I/O driver
            // without blocking; `stop` ends the loop with the run.
            while !*stopped.borrow_and_update() {
                tokio::task::yield_now().await;
            }
        });
    }
    let ramp_plan = Arc::clone(&plan);
    tasks.spawn(async move {
        let mut go = ramp_plan.go.subscribe();
        let all_open = go.wait_for(|g| *g);
        if tokio::time::timeout(ramp_timeout, all_open).await.is_err() {
            ramp_plan.go.send_replace(true);
        }
        eprintln!(
            "fetch-load: ramp: open={} of {} secs={:.3}",
            ramp_plan.totals.open.load(Relaxed),
            ramp_plan.conns,
            started.elapsed().as_secs_f64()
        );
    });
    wait_for_end(duration).await?;
    let secs = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}

    let totals = &plan.totals;
    let mut latencies = std::mem::take(
        &mut *totals
            .latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    latencies.sort_unstable();
    println!(
        "{} secs={secs:.3} p50_ms={:.2} p99_ms={:.2} recorded={}",
        totals.line(),
        percentile_ms(&latencies, 50.0),
        percentile_ms(&latencies, 99.0),
        latencies.len()
    );
    for kind in Failure::ALL {
        let n = totals.errors[kind.index()].load(Relaxed);
        if n > 0 {
            eprintln!("fetch-load: {n} {} errors", kind.name());
        }
    }
    for s in totals
        .samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
    {
        eprintln!("fetch-load: error: {s}");
    }
    if let Some(path) = &args.stats {
        publish_stats(&plan, path);
    }
    Ok(())
}

/// Returns after `duration`, or at SIGINT or SIGTERM when none is given (either
/// signal ends a timed run early too).
async fn wait_for_end(duration: Option<Duration>) -> Result<(), String> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
        _ = timer => {}
    }
    Ok(())
}

/// Rewrites the `--stats` file every [`STATS_EVERY`] until the run ends.
async fn write_stats(plan: Arc<Plan>, path: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(STATS_EVERY);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => publish_stats(&plan, &path),
        }
    }
}

/// Writes the totals' line to `path` through a temporary file and a rename.
fn publish_stats(plan: &Plan, path: &std::path::Path) {
    let tmp = path.with_extension("tmp");
    let line = plan.totals.line() + "\n";
    if let Err(e) = std::fs::write(&tmp, line).and_then(|()| std::fs::rename(&tmp, path)) {
        eprintln!("fetch-load: --stats {}: {e}", path.display());
    }
}

/// One connection slot: opens a connection, fetches until it fails or the run ends,
/// and opens it again.
async fn connection(plan: Arc<Plan>, i: usize, mut stop: watch::Receiver<bool>) {
    let mut file = i % plan.requests.len();
    let mut go = plan.go.subscribe();
    let mut ramping = true;
    while !*stop.borrow() {
        let opened = tokio::select! {
            _ = stop.changed() => return,
            c = open(&plan) => c,
        };
        if ramping {
            ramping = false;
            if plan.ramped.fetch_add(1, Relaxed) + 1 == plan.conns as u64 {
                plan.go.send_replace(true);
            }
        }
        let mut conn = match opened {
            Ok(c) => c,
            Err(e) => {
                plan.totals.failed(&e);
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
        };
        let open_count = OpenCount::new(&plan.totals.open);
        tokio::select! {
            _ = stop.changed() => return,
            _ = go.wait_for(|g| *g) => {}
        }
        loop {
            let fetch =
                tokio::time::timeout(plan.timeout, conn.fetch(&plan.requests[file], &plan.totals));
            let sent = Instant::now();
            let done = tokio::select! {
                _ = stop.changed() => return,
                r = fetch => r,
            };
            let failed = match done {
                Ok(Ok(())) => {
                    let latency = micros(sent.elapsed());
                    if plan.record.contains(&plan.started.elapsed()) {
                        plan.totals
                            .latencies_us
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(latency);
                    }
                    plan.totals.responses.fetch_add(1, Relaxed);
                    file = (file + 1) % plan.requests.len();
                    continue;
                }
                Ok(Err(e)) => e,
                Err(_) => ConnError::new(Failure::Timeout, "response not done in --timeout"),
            };
            plan.totals.failed(&failed);
            break;
        }
        drop(open_count);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}

/// Counts a connection in [`Totals::open`] while it lives.
struct OpenCount<'a>(&'a AtomicU64);

impl<'a> OpenCount<'a> {
    fn new(open: &'a AtomicU64) -> Self {
        open.fetch_add(1, Relaxed);
        Self(open)
    }
}

impl Drop for OpenCount<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// A connection ready for requests.
enum Conn {
    /// Plain HTTP.
    Plain(TcpStream),
    /// TLS 1.3 with this program's record layer.
    Tls(Box<TlsRecords>),
}

/// Connects (and handshakes), holding a `--concurrency` permit meanwhile.
async fn open(plan: &Plan) -> Result<Conn, ConnError> {
    let _permit = plan.connecting.acquire().await;
    let tcp = TcpStream::connect(plan.addr)
        .await
        .map_err(|e| ConnError::new(Failure::Connect, e))?;
    let _ = tcp.set_nodelay(true);
    let Some(connector) = &plan.tls else {
        return Ok(Conn::Plain(tcp));
    };
    let tls = connector
        .connect(plan.server_name.clone(), tcp)
        .await
        .map_err(|e| ConnError::new(Failure::Tls, e))?;
    let (tcp, session) = tls.into_inner();
    TlsRecords::new(tcp, session).map(|t| Conn::Tls(Box::new(t)))
}

impl Conn {
    /// Writes `request` and reads its whole response.
    async fn fetch(&mut self, request: &[u8], totals: &Totals) -> Result<(), ConnError> {
        match self {
            Conn::Plain(tcp) => fetch_plain(tcp, request, totals).await,
            Conn::Tls(tls) => tls.fetch(request, totals).await,
        }
    }
}

/// One plain HTTP exchange: the head is read into a small buffer, the body
/// discarded in the kernel.
async fn fetch_plain(
    tcp: &mut TcpStream,
    request: &[u8],
    totals: &Totals,
) -> Result<(), ConnError> {
    tcp.write_all(request).await.map_err(io_error)?;
    let mut head = [0u8; 2048];
    let mut filled = 0;
    let (head_end, body_len) = loop {
        if filled == head.len() {
            return Err(ConnError::new(
                Failure::Response,
                "response head over 2 KiB",
            ));
        }
        let n = tcp.read(&mut head[filled..]).await.map_err(io_error)?;
        if n == 0 {
            return Err(ConnError::new(Failure::Io, "EOF in the response head"));
        }
        totals.bytes.fetch_add(n as u64, Relaxed);
        filled += n;
        if let Some(end) = find_head_end(&head[..filled]) {
            let len = check_head(&head[..end]).map_err(|m| ConnError::new(Failure::Response, m))?;
            break (end, len);
        }
    };
    let early = (filled - head_end) as u64;
    if early > body_len {
        return Err(ConnError::new(
            Failure::Response,
            "more bytes than the response's Content-Length",
        ));
    }
    discard(tcp, body_len - early, totals)
        .await
        .map_err(io_error)
}

/// Position just past the `\r\n\r\n` that ends a response head.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

thread_local! {
    /// The buffer `recv(MSG_TRUNC)` is given: TCP never writes to it, so it is never
    /// touched and costs address space only.
    static DISCARD_BUF: RefCell<Box<[MaybeUninit<u8>]>> =
        RefCell::new(Box::new_uninit_slice(DISCARD_CHUNK));
}

/// Reads and drops exactly `n` bytes from `tcp` without copying them.
///
/// A `recv` that returns less than it asked for has emptied the socket, so the
/// readiness is cleared then, as tokio's own `poll_read` does, instead of learning it
/// from a second `recv` that fails with `EAGAIN`: one system call per wake-up, not
/// two. (tokio clears it only if no readiness event came in meanwhile, so no wake-up
/// is lost.)
async fn discard(tcp: &TcpStream, mut n: u64, totals: &Totals) -> io::Result<()> {
    while n > 0 {
        tcp.readable().await?;
        let want = usize::try_from(n).unwrap_or(usize::MAX).min(DISCARD_CHUNK);
        let mut got = 0;
        let read = tcp.try_io(Interest::READABLE, || {
            got = DISCARD_BUF.with(|buf| {
                let mut buf = buf.borrow_mut();
                socket2::SockRef::from(tcp).recv_with_flags(&mut buf[..want], libc::MSG_TRUNC)
            })?;
            if got > 0 && got < want {
                return Err(ErrorKind::WouldBlock.into());
            }
            Ok(got)
        });
        match read {
            Ok(0) => return Err(io::Error::new(ErrorKind::UnexpectedEof, "EOF in the body")),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        totals.bytes.fetch_add(got as u64, Relaxed);
        n -= got as u64;
    }
    Ok(())
}

/// A TLS 1.3 connection after its handshake, with the record layer run here.
struct TlsRecords {
    tcp: TcpStream,
    encrypter: Box<dyn MessageEncrypter>,
    decrypter: Box<dyn MessageDecrypter>,
    /// Sequence number of the next record written.
    write_seq: u64,
    /// Sequence number of the next record read.
    read_seq: u64,
    /// One record's payload, for the records that are decrypted.
    record: Vec<u8>,
    /// The response head's plaintext while it is being read.
    head: Vec<u8>,
}

impl TlsRecords {
    /// Takes over from rustls: extracts the traffic secrets of a finished TLS 1.3
    /// `TLS_AES_256_GCM_SHA384` handshake.
    fn new(tcp: TcpStream, session: rustls::ClientConnection) -> Result<Self, ConnError> {
        let tls = |m: String| ConnError::new(Failure::Tls, m);
        if session.protocol_version() != Some(ProtocolVersion::TLSv1_3) {
            return Err(tls(format!(
                "negotiated {:?}, not TLS 1.3",
                session.protocol_version()
            )));
        }
        let suite = session
            .negotiated_cipher_suite()
            .and_then(|s| s.tls13())
            .ok_or_else(|| tls("no TLS 1.3 cipher suite".into()))?;
        let secrets = session
            .dangerous_extract_secrets()
            .map_err(|e| tls(format!("extracting the secrets: {e}")))?;
        let (write_seq, tx) = secrets.tx;
        let (read_seq, rx) = secrets.rx;
        let (
            ConnectionTrafficSecrets::Aes256Gcm {
                key: tx_key,
                iv: tx_iv,
            },
            ConnectionTrafficSecrets::Aes256Gcm {
                key: rx_key,
                iv: rx_iv,
            },
        ) = (tx, rx)
        else {
            return Err(tls("negotiated a cipher other than AES-256-GCM".into()));
        };
        Ok(Self {
            tcp,
            encrypter: suite.aead_alg.encrypter(tx_key, tx_iv),
            decrypter: suite.aead_alg.decrypter(rx_key, rx_iv),
            write_seq,
            read_seq,
            record: vec![0; MAX_RECORD_PAYLOAD],
            head: Vec::new(),
        })
    }

    /// One exchange: the request in one record; the response's records decrypted up
    /// to the end of the head, skipped through the body, and the one that ends the
    /// body decrypted and checked.
    async fn fetch(&mut self, request: &[u8], totals: &Totals) -> Result<(), ConnError> {
        let plain = OutboundPlainMessage {
            typ: ContentType::ApplicationData,
            version: ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(request),
        };
        let wire = self
            .encrypter
            .encrypt(plain, self.write_seq)
            .map_err(|e| ConnError::new(Failure::Tls, e))?
            .encode();
        self.write_seq += 1;
        self.tcp.write_all(&wire).await.map_err(io_error)?;

        // Taken out of `self` while records are read into `self.record`.
        let mut head = std::mem::take(&mut self.head);
        head.clear();
        let read_head = async {
            loop {
                let len = self.read_header(totals).await?;
                head.extend_from_slice(self.read_record(len, totals).await?);
                if let Some(end) = find_head_end(&head) {
                    let body_len = check_head(&head[..end])
                        .map_err(|m| ConnError::new(Failure::Response, m))?;
                    return Ok((end, body_len));
                }
                if head.len() > MAX_HEAD_BYTES {
                    return Err(ConnError::new(Failure::Response, "response head too long"));
                }
            }
        };
        let read = read_head.await;
        let early = head.len();
        self.head = head;
        let (head_end, body_len) = read?;
        let early = (early - head_end) as u64;
        if early > body_len {
            return Err(ConnError::new(
                Failure::Response,
                "more bytes than the response's Content-Length",
            ));
        }
        let mut remaining = body_len - early;
        while remaining > 0 {
            let len = self.read_header(totals).await?;
            let plaintext = len.checked_sub(TLS13_OVERHEAD).ok_or_else(|| {
                ConnError::new(Failure::Response, format!("record of {len} bytes"))
            })? as u64;
            if plaintext < remaining {
                discard(&self.tcp, len as u64, totals)
                    .await
                    .map_err(io_error)?;
                self.read_seq += 1;
                remaining -= plaintext;
            } else {
                let last = self.read_record(len, totals).await?.len() as u64;
                if last != remaining {
                    return Err(ConnError::new(
                        Failure::Response,
                        format!("the body's last record holds {last} bytes, {remaining} were due"),
                    ));
                }
                remaining = 0;
            }
        }
        Ok(())
    }

    /// Reads a record header; returns its payload length.
    async fn read_header(&mut self, totals: &Totals) -> Result<usize, ConnError> {
        let mut header = [0u8; RECORD_HEADER];
        self.tcp.read_exact(&mut header).await.map_err(io_error)?;
        totals.bytes.fetch_add(RECORD_HEADER as u64, Relaxed);
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if header[0] != u8::from(ContentType::ApplicationData) || len > MAX_RECORD_PAYLOAD {
            return Err(ConnError::new(
                Failure::Response,
                format!("record header {header:02x?}"),
            ));
        }
        Ok(len)
    }

    /// Reads a record's `len`-byte payload and decrypts it. Returns the application
    /// data in it: empty for a post-handshake message (a NewSessionTicket); an alert
    /// or another type is an error.
    async fn read_record(&mut self, len: usize, totals: &Totals) -> Result<&[u8], ConnError> {
        let payload = &mut self.record[..len];
        self.tcp.read_exact(payload).await.map_err(io_error)?;
        totals.bytes.fetch_add(len as u64, Relaxed);
        let opaque = InboundOpaqueMessage::new(
            ContentType::ApplicationData,
            ProtocolVersion::TLSv1_2,
            payload,
        );
        let seq = self.read_seq;
        self.read_seq += 1;
        let plain = self
            .decrypter
            .decrypt(opaque, seq)
            .map_err(|e| ConnError::new(Failure::Response, format!("record {seq}: {e}")))?;
        match plain.typ {
            ContentType::ApplicationData => Ok(plain.payload),
            ContentType::Handshake => Ok(&[]),
            ContentType::Alert => Err(ConnError::new(
                Failure::Io,
                format!("alert {:02x?} from the server", plain.payload),
            )),
            other => Err(ConnError::new(
                Failure::Response,
                format!("record of type {other:?}"),
            )),
        }
    }
}

/// `--timeout` and `--duration`: positive, finite seconds.
fn secs_arg(name: &str, v: f64) -> Result<Duration, String> {
    if !v.is_finite() || v <= 0.0 || v > 1e7 {
        return Err(format!("{name} {v}: out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// TLS 1.3 only, `TLS_AES_256_GCM_SHA384` only, ALPN http/1.1, any certificate, no
/// resumption, secret extraction on. `Err` if the crypto provider refuses TLS 1.3.
fn client_config() -> Result<ClientConfig, String> {
    let mut provider = rustls::crypto::ring::default_provider();
    provider.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384];
    let provider = Arc::new(provider);
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| format!("TLS 1.3 client config: {e}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    config.enable_secret_extraction = true;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    use std::io::{Read, Write};
    use tokio::io::AsyncRead;

    /// A TLS 1.3 server config with a fresh self-signed certificate for localhost.
    fn server_config() -> Arc<rustls::ServerConfig> {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = CertificateDer::from(ck.cert.der().to_vec());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
        Arc::new(config)
    }

    /// Reads one request head from `r`.
    async fn read_request<R: AsyncRead + Unpin>(r: &mut R) {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            assert_eq!(r.read(&mut byte).await.unwrap(), 1, "EOF in the request");
            head.push(byte[0]);
        }
        assert!(head.starts_with(b"GET /f HTTP/1.1\r\n"));
    }

    /// Serves one TLS connection: for each `(content_length, body_len, chunk)` one
    /// response, its body written `chunk` bytes at a time (a record per write, of at
    /// most 16 KiB); `chunk` 0: head and body in one write (so in one record when
    /// short).
    async fn serve_tls(listener: tokio::net::TcpListener, responses: Vec<(usize, usize, usize)>) {
        let (tcp, _) = listener.accept().await.unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(server_config());
        let mut tls = acceptor.accept(tcp).await.unwrap();
        for (content_length, body_len, chunk) in responses {
            read_request(&mut tls).await;
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {content_length}\r\n\r\n");
            let body: Vec<u8> = (0..body_len).map(|i| (i % 251) as u8).collect();
            if chunk == 0 {
                tls.write_all(&[head.as_bytes(), &body].concat())
                    .await
                    .unwrap();
            } else {
                tls.write_all(head.as_bytes()).await.unwrap();
                for part in body.chunks(chunk) {
                    tls.write_all(part).await.unwrap();
                }
            }
            tls.flush().await.unwrap();
        }
        // Hold the connection until the client is done.
        let mut rest = [0u8; 64];
        let _ = tls.read(&mut rest).await;
    }

    /// A client connection to `addr` through this program's record layer.
    async fn tls_client(addr: SocketAddr) -> TlsRecords {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let connector = TlsConnector::from(Arc::new(client_config().unwrap()));
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        let (tcp, session) = tls.into_inner();
        TlsRecords::new(tcp, session).unwrap()
    }

    #[tokio::test]
    async fn tls_bodies_are_skipped_record_by_record_and_end_exactly() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Records of 16 KiB, of 7,000 bytes, of one byte, an empty body, a short
        // body in the head's record, a long one starting there; the server's
        // NewSessionTickets come before the first response.
        let responses = vec![
            (300_000, 300_000, 16 * 1024),
            (100_000, 100_000, 7_000),
            (3, 3, 1),
            (0, 0, 1),
            (10, 10, 0),
            (50_000, 50_000, 0),
        ];
        let wire: usize = responses.iter().map(|r| r.1).sum();
        let server = tokio::spawn(serve_tls(listener, responses.clone()));
        let mut client = tls_client(addr).await;
        let totals = Totals::default();
        let request = b"GET /f HTTP/1.1\r\nHost: localhost\r\n\r\n";
        for _ in &responses {
            client.fetch(request, &totals).await.unwrap();
        }
        // Every body byte was read from the socket (plus heads, headers and tags).
        assert!(totals.bytes.load(Relaxed) > wire as u64);
        drop(client);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn tls_body_longer_than_its_content_length_is_an_error() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // 40,000 bytes announced, 40,001 sent in one write (records of 16,384,
        // 16,384 and 7,233 bytes): the last record holds one byte more than is due.
        let server = tokio::spawn(serve_tls(listener, vec![(40_000, 40_001, 40_001)]));
        let mut client = tls_client(addr).await;
        let err = client
            .fetch(
                b"GET /f HTTP/1.1\r\nHost: localhost\r\n\r\n",
                &Totals::default(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.kind, Failure::Response, "{}", err.msg);
        assert!(err.msg.contains("last record"), "{}", err.msg);
        drop(client);
        server.await.unwrap();
    }

    #[tokio::test]
    async fn plain_bodies_are_discarded_exactly() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let lens = [3 << 20, 1, 0, 70_000];
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            for len in lens {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    s.read_exact(&mut byte).unwrap();
                    head.push(byte[0]);
                }
                let mut response =
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
                response.resize(response.len() + len, b'x');
                s.write_all(&response).unwrap();
            }
        });
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let totals = Totals::default();
        for _ in lens {
            fetch_plain(&mut tcp, b"GET /f HTTP/1.1\r\nHost: x\r\n\r\n", &totals)
                .await
                .unwrap();
        }
        let heads: usize = lens
            .iter()
            .map(|l| format!("HTTP/1.1 200 OK\r\nContent-Length: {l}\r\n\r\n").len())
            .sum();
        let bodies: usize = lens.iter().sum();
        assert_eq!(totals.bytes.load(Relaxed), (heads + bodies) as u64);
        server.join().unwrap();
    }
}
