//! `idle-conns`: opens many keep-alive connections to an HTTP or HTTPS server, makes
//! one request on each, then holds them all open and idle, for memory-per-connection
//! benchmarks (`bench/idle-memory-bench.sh`).
//!
//! ```text
//! idle-conns --addr 127.0.0.1:PORT --conns 16000 (--plain | --insecure)
//!            [--path /small.bin] [--sni localhost] [--host HOST] [--concurrency 256]
//!            [--timeout 10] [--local-ips 127.0.0.1,127.0.0.2-127.0.0.4] [--hold SECS]
//!            [--threads 1]
//! ```
//!
//! Each of `--conns` connections: TCP connect (from the next of `--local-ips`, round
//! robin, when given), a TLS handshake unless `--plain` (TLS 1.2/1.3, ALPN http/1.1,
//! no resumption; `--insecure` accepts any certificate but still verifies the
//! handshake signature, as `hs-load --insecure` does), one keep-alive
//! `GET PATH HTTP/1.1` (`Host`, no `Connection` header), and the whole response read
//! (status 200, a body of its `Content-Length`, no `Connection: close`). Then the
//! connection stays open and idle: nothing more is sent, and a read waits on it only
//! to notice when the server closes it. At most `--concurrency` connections are being
//! opened at a time; a connection that fails (refused, TLS error, bad response, not
//! done within `--timeout`) is counted and not retried.
//!
//! When every connection has been tried, one line goes to stdout (flushed):
//! `open=N failed=F secs=S` (`secs`: from the first connect to the last connection
//! done). Then the open connections are held until stdin reaches EOF (close the pipe
//! or FIFO that feeds it), or for `--hold SECS` when given, and one more line is
//! printed before exiting: `held=N closed_by_server=K held_secs=S`, where `K` counts
//! connections the server closed (or reset) while held. Up to ten sample error
//! messages and a per-kind breakdown of failures go to stderr.
//!
//! Source addresses: a single source address reaches one server port with at most
//! the ephemeral port range's worth of connections
//! (`/proc/sys/net/ipv4/ip_local_port_range`, 28232 by default). `--local-ips` takes a
//! comma-separated list of IPv4/IPv6 addresses and `A-B` ranges of IPv4 addresses
//! (`127.0.0.1-127.0.0.8`); on loopback every 127.0.0.0/8 address works. With it each
//! connection binds to its source address (port 0) before connecting.
//!
//! Descriptors: one per connection; run it with a soft `RLIMIT_NOFILE` above
//! `--conns` (`ulimit -n` in the calling shell, or `prlimit --nofile=N:N`), since this
//! program has no unsafe code and does not raise it itself.
//!
//! Exit status: 0 when the hold ended (whatever failed); 1 when no connection opened;
//! 2 on bad arguments or a setup failure.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Parser};
use hs_load::{check_head, ConnError, Failure, ServerArgs, Target, MAX_HEAD_BYTES};
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_rustls::TlsConnector;

/// Error messages printed on stderr (the rest are only counted).
const ERROR_SAMPLES: usize = 10;
/// Most source addresses `--local-ips` may expand to.
const MAX_LOCAL_IPS: usize = 65_536;

/// Command line.
#[derive(Parser, Debug)]
#[command(
    name = "idle-conns",
    about = "Open N keep-alive HTTP(S) connections, one GET each, then hold them idle",
    group(ArgGroup::new("transport").required(true).args(["plain", "insecure"]))
)]
struct Args {
    #[command(flatten)]
    server: ServerArgs,
    /// Connections to open.
    #[arg(long)]
    conns: usize,
    /// Plain HTTP (no TLS).
    #[arg(long)]
    plain: bool,
    /// TLS, accepting any server certificate (handshake signatures are still verified).
    #[arg(long)]
    insecure: bool,
    /// Path requested once on every connection.
    #[arg(long, default_value = "/")]
    path: String,
    /// Connections being opened at a time.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Limit for opening one connection (connect, handshake, response), in seconds.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Source addresses, round robin: comma-separated addresses and IPv4 ranges A-B.
    #[arg(long, value_name = "IP,A-B,...")]
    local_ips: Option<String>,
    /// Hold the connections this many seconds instead of until stdin's EOF.
    #[arg(long, value_name = "SECS")]
    hold: Option<f64>,
    /// Runtime threads: 1 is a current-thread runtime, more a multi-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// What every connection shares.
struct Plan {
    /// The server.
    addr: SocketAddr,
    /// SNI.
    server_name: ServerName<'static>,
    /// TLS connector; `None` for plain HTTP.
    tls: Option<TlsConnector>,
    /// The request, written once per connection.
    request: Vec<u8>,
    /// Limit for opening one connection.
    timeout: Duration,
    /// Source addresses (empty: let connect pick).
    local_ips: Vec<IpAddr>,
    /// Connections the server closed while they were held.
    closed_by_server: AtomicU64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let threads = args.threads;
    hs_load::run_main("idle-conns", threads, run(args))
}

/// Opens, reports, holds; `Err` for bad arguments or a failed setup.
async fn run(args: Args) -> Result<ExitCode, String> {
    if args.conns == 0 || args.concurrency == 0 {
        return Err("--conns and --concurrency must be at least 1".into());
    }
    let timeout = secs_arg("--timeout", args.timeout)?;
    let hold = args.hold.map(|h| secs_arg("--hold", h)).transpose()?;
    let Target {
        addr,
        server_name,
        host,
    } = args.server.target(&args.path)?;
    let local_ips = match &args.local_ips {
        Some(s) => parse_local_ips(s)?,
        None => Vec::new(),
    };
    if local_ips.iter().any(|ip| ip.is_ipv4() != addr.is_ipv4()) {
        return Err("--local-ips must be of the same family as --addr".into());
    }
    let tls = (!args.plain).then(|| TlsConnector::from(Arc::new(client_config())));
    let plan = Arc::new(Plan {
        addr,
        server_name,
        tls,
        request: format!("GET {} HTTP/1.1\r\nHost: {host}\r\n\r\n", args.path).into_bytes(),
        timeout,
        local_ips,
        closed_by_server: AtomicU64::new(0),
    });

    // Each connection is a task: open (holding a permit), report, then hold until
    // the shutdown signal or the server's close.
    let permits = Arc::new(Semaphore::new(args.concurrency));
    let (result_tx, mut result_rx) = mpsc::unbounded_channel::<Result<(), ConnError>>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        let plan = Arc::clone(&plan);
        let permits = Arc::clone(&permits);
        let result_tx = result_tx.clone();
        let stop_rx = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let permit = permits.acquire_owned().await;
            let opened = tokio::time::timeout(plan.timeout, open(&plan, i)).await;
            drop(permit);
            let conn = match opened {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    let _ = result_tx.send(Err(e));
                    return;
                }
                Err(_) => {
                    let _ = result_tx.send(Err(ConnError::new(
                        Failure::Timeout,
                        format!("not open within {:?}", plan.timeout),
                    )));
                    return;
                }
            };
            let _ = result_tx.send(Ok(()));
            drop(result_tx);
            hold_idle(conn, stop_rx, &plan).await;
        }));
    }
    drop(result_tx);

    let mut open_n = 0u64;
    let mut errors = [0u64; 5];
    let mut samples = Vec::new();
    while let Some(r) = result_rx.recv().await {
        match r {
            Ok(()) => open_n += 1,
            Err(e) => {
                errors[e.kind.index()] += 1;
                if samples.len() < ERROR_SAMPLES {
                    samples.push(format!("{}: {}", e.kind.name(), e.msg));
                }
            }
        }
    }
    let failed: u64 = errors.iter().sum();
    let secs = start.elapsed().as_secs_f64();
    if failed > 0 {
        let kinds: Vec<String> = Failure::ALL
            .iter()
            .map(|k| format!("{}={}", k.name(), errors[k.index()]))
            .collect();
        eprintln!("idle-conns: failed: {}", kinds.join(" "));
        for s in &samples {
            eprintln!("idle-conns:   {s}");
        }
    }
    println!("open={open_n} failed={failed} secs={secs:.3}");
    let _ = std::io::stdout().flush();
    if open_n == 0 {
        return Ok(ExitCode::FAILURE);
    }

    let held_from = Instant::now();
    match hold {
        Some(d) => tokio::time::sleep(d).await,
        None => {
            // EOF on stdin (bytes before it are ignored), read on a plain thread
            // (tokio's stdin needs a feature the workspace does not enable).
            let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::spawn(move || {
                let mut stdin = std::io::stdin().lock();
                let mut buf = [0u8; 512];
                while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
                let _ = eof_tx.send(());
            });
            let _ = eof_rx.await;
        }
    }
    let held_secs = held_from.elapsed().as_secs_f64();
    let closed = plan.closed_by_server.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    println!("held={open_n} closed_by_server={closed} held_secs={held_secs:.1}");
    let _ = std::io::stdout().flush();
    Ok(ExitCode::SUCCESS)
}

/// An open connection, plain or TLS.
trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Conn for T {}

/// Connect (from source address `i` round robin), handshake, one request, the whole
/// response.
async fn open(plan: &Plan, i: usize) -> Result<Box<dyn Conn>, ConnError> {
    let tcp = connect(plan, i)
        .await
        .map_err(|e| ConnError::new(Failure::Connect, e))?;
    let _ = tcp.set_nodelay(true);
    let mut conn: Box<dyn Conn> = match &plan.tls {
        Some(connector) => Box::new(
            connector
                .connect(plan.server_name.clone(), tcp)
                .await
                .map_err(|e| ConnError::new(Failure::Tls, e))?,
        ),
        None => Box::new(tcp),
    };
    conn.write_all(&plan.request)
        .await
        .map_err(|e| ConnError::new(Failure::Io, format!("write: {e}")))?;
    conn.flush()
        .await
        .map_err(|e| ConnError::new(Failure::Io, format!("write: {e}")))?;
    read_response(&mut conn).await?;
    Ok(conn)
}

/// The TCP connection, bound to its source address first when `--local-ips` is given.
async fn connect(plan: &Plan, i: usize) -> std::io::Result<TcpStream> {
    if plan.local_ips.is_empty() {
        return TcpStream::connect(plan.addr).await;
    }
    let ip = plan.local_ips[i % plan.local_ips.len()];
    let socket = if ip.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket
        .bind(SocketAddr::new(ip, 0))
        .map_err(|e| std::io::Error::new(e.kind(), format!("bind {ip}: {e}")))?;
    socket.connect(plan.addr).await
}

/// Reads one response exactly (head, then `Content-Length` body bytes; nothing
/// after it is expected): status 200, a Content-Length, no `Connection: close`.
async fn read_response(conn: &mut Box<dyn Conn>) -> Result<(), ConnError> {
    let io = |e: std::io::Error, got: usize| {
        ConnError::new(Failure::Io, format!("read after {got} bytes: {e}"))
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(ConnError::new(Failure::Response, "response head too long"));
        }
        let n = conn.read(&mut chunk).await.map_err(|e| io(e, buf.len()))?;
        if n == 0 {
            return Err(ConnError::new(
                Failure::Io,
                format!("EOF after {} bytes, before the end of the head", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let len = check_head(&buf[..head_end]).map_err(|m| ConnError::new(Failure::Response, m))?;
    let mut remaining = len.saturating_sub((buf.len() - head_end) as u64);
    if (buf.len() - head_end) as u64 > len {
        return Err(ConnError::new(
            Failure::Response,
            "more bytes than the response's Content-Length",
        ));
    }
    drop(buf);
    while remaining > 0 {
        let want = chunk
            .len()
            .min(usize::try_from(remaining).unwrap_or(usize::MAX));
        let n = conn
            .read(&mut chunk[..want])
            .await
            .map_err(|e| io(e, (len - remaining) as usize))?;
        if n == 0 {
            return Err(ConnError::new(
                Failure::Io,
                format!("EOF {remaining} bytes before the end of the body"),
            ));
        }
        remaining -= n as u64;
    }
    Ok(())
}

/// Holds an open connection until `stop` turns true; counts it when the server
/// closes it (EOF, reset, or unexpected bytes) before that.
async fn hold_idle(mut conn: Box<dyn Conn>, mut stop: watch::Receiver<bool>, plan: &Plan) {
    let mut byte = [0u8; 1];
    let closed = tokio::select! {
        _ = stop.wait_for(|s| *s) => false,
        _ = conn.read(&mut byte) => true,
    };
    if closed {
        plan.closed_by_server.fetch_add(1, Ordering::Relaxed);
        drop(conn);
        // Keep the task alive until the end, as the others.
        let _ = stop.wait_for(|s| *s).await;
    }
}

/// `--local-ips`: comma-separated addresses and IPv4 ranges `A-B` (inclusive).
fn parse_local_ips(s: &str) -> Result<Vec<IpAddr>, String> {
    let bad = |item: &str, why: &str| format!("--local-ips {item:?}: {why}");
    let mut ips = Vec::new();
    for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        if let Some((a, b)) = item.split_once('-') {
            let a: Ipv4Addr = a
                .trim()
                .parse()
                .map_err(|_| bad(item, "not an IPv4 range"))?;
            let b: Ipv4Addr = b
                .trim()
                .parse()
                .map_err(|_| bad(item, "not an IPv4 range"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            if b < a || (b - a) as usize >= MAX_LOCAL_IPS {
                return Err(bad(item, "empty or too large a range"));
            }
            ips.extend((a..=b).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
        } else {
            ips.push(item.parse().map_err(|_| bad(item, "not an address"))?);
        }
        if ips.len() > MAX_LOCAL_IPS {
            return Err(bad(item, "too many addresses"));
        }
    }
    if ips.is_empty() {
        return Err("--local-ips: no address".into());
    }
    Ok(ips)
}

/// A seconds argument as a `Duration`: finite and positive.
fn secs_arg(name: &str, v: f64) -> Result<Duration, String> {
    if !v.is_finite() || v <= 0.0 || v > 1e7 {
        return Err(format!("{name} {v}: out of range"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// TLS 1.2/1.3, ALPN http/1.1, any certificate, no resumption (every connection
/// makes a full handshake, as a new viewer does).
fn client_config() -> ClientConfig {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(hs_load::AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_ips_lists_and_ranges() {
        let ips = parse_local_ips("127.0.0.1-127.0.0.3, ::1,127.0.0.9").unwrap();
        let want: Vec<IpAddr> = ["127.0.0.1", "127.0.0.2", "127.0.0.3", "::1", "127.0.0.9"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ips, want);
        assert!(parse_local_ips("127.0.0.3-127.0.0.1").is_err());
        assert!(parse_local_ips("x").is_err());
        assert!(parse_local_ips("").is_err());
    }
}
