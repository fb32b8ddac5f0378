//! A running server: start-up (state dir, certificates, kTLS probe, listeners,
//! admin plane), the accept loops, per-connection tasks, worker threads and the drain
//! on shutdown.
//!
//! Threading follows nginx's worker model: [`Running::spawn_workers`] starts extra
//! OS threads, each with a single-threaded tokio runtime and its own `SO_REUSEPORT`
//! listeners, so the kernel spreads connections across threads and a connection's
//! task never migrates or wakes another thread (work stealing cost about 12% CPU per
//! byte in the kTLS benchmark). The admin plane runs on a thread of its own
//! ([`spawn_admin`]), so a saturated worker does not delay a metrics scrape.
//!
//! Accept loops race accept against the shutdown token and back off when the
//! process is out of descriptors; each connection runs in its own task, with the TLS
//! handshake inside that task under a timeout. On shutdown the loops stop, idle
//! connections close, and in-flight ones get `server.shutdown_grace_secs` to finish.

use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::sync::Arc;
use std::time::Duration;

use rustls::HandshakeKind;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;

use crate::config::{Config, KtlsMode};
use crate::conn::{self, ConnShared};
use crate::handler::Site;
use crate::metrics::{CloseReason, KtlsSetupFailure, Metrics};
use crate::offload::{self, Handover, KtlsSupport};
use crate::streams::Catalog;
use crate::tls::{self, TlsError};
use crate::tls_session;
use crate::transport::{
    BufferPool, InProgress, InProgressGuard, KtlsTransport, PlainTransport, RustlsTransport,
};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// Certificates, keys, the state directory or the admin token.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The config key that named it.
        key: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// `tls.ktls = "require"` but the kernel cannot offload.
    #[error("tls.ktls = \"require\" but {0}")]
    KtlsRequired(String),
    /// A worker thread could not start (`server.worker_threads`).
    #[error("server.worker_threads: {0}")]
    Worker(String),
    /// The admin plane's thread could not start (`server.admin_listen`).
    #[error("server.admin_listen: admin plane: {0}")]
    Admin(String),
    /// A published stream or the signing keys (`[[streams]]`, `[manifests]`).
    #[error(transparent)]
    Streams(#[from] crate::streams::CatalogError),
    /// The cache could not start (`[storage]`, `[upstream]`): names the path.
    #[error("{0}")]
    Cache(String),
    /// The telemetry store (`telemetry.store`) could not be opened.
    #[error("{0}")]
    Telemetry(String),
    /// The content root is not a readable directory.
    #[error("content.root {path}: {reason}")]
    ContentRoot {
        /// The configured root.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// A started server.
pub struct Running {
    /// Bound TLS address.
    pub tls_addr: SocketAddr,
    /// Bound plain-HTTP address, if enabled.
    pub http_addr: Option<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: SocketAddr,
    /// The data plane's metrics.
    pub metrics: Arc<Metrics>,
    /// What the kTLS probe found (or `none` when disabled).
    pub ktls: KtlsSupport,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    grace: Duration,
    ctx: Arc<ServerCtx>,
    cache: Option<Arc<crate::cache::EdgeCache>>,
    live: Arc<std::sync::Mutex<crate::reload::Live>>,
}

/// Reloads a running server's live settings (see [`crate::reload`]).
#[derive(Clone)]
pub struct Reloader {
    live: Arc<std::sync::Mutex<crate::reload::Live>>,
    ctx: Arc<ServerCtx>,
    ktls_any: bool,
}

impl Reloader {
    /// Applies `new` (a re-read config file) without dropping a connection: the
    /// certificate, the ticket keys, the cipher suites and the storm thresholds
    /// change; anything else that differs is refused (the running config stays) and
    /// named. New TLS material is fully loaded before it replaces the old, so a bad
    /// file changes nothing. Established connections keep their session; the TLS 1.2
    /// session cache survives.
    pub fn reload(
        &self,
        new: crate::config::Config,
    ) -> Result<crate::reload::Applied, crate::reload::ReloadError> {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let needs_restart = crate::reload::restart_keys_changed(&live.config, &new);
        if !needs_restart.is_empty() {
            self.ctx.conn.metrics.reloads_refused.inc();
            return Err(crate::reload::ReloadError::NeedsRestart(needs_restart));
        }
        let tls_config = tls::build(&new.tls, &new.state_dir, self.ktls_any, &live.resumption)
            .inspect_err(|_| self.ctx.conn.metrics.reloads_failed.inc())?;
        self.ctx.tls_config.store(tls_config);
        live.dashboard.set_settings(new.telemetry.storm.clone());
        live.admin.set_config(crate::reload::config_json(&new));
        let applied = crate::reload::Applied {
            ticket_keys_file: new.tls.ticket_keys_file.is_some(),
            live_keys_changed: crate::reload::live_keys_changed(&live.config, &new),
        };
        live.config = new;
        self.ctx.conn.metrics.reloads_applied.inc();
        Ok(applied)
    }

    /// Counts a reload whose config file did not load (nothing was applied).
    pub fn count_failed(&self) {
        self.ctx.conn.metrics.reloads_failed.inc();
    }

    /// The configuration in force.
    pub fn config(&self) -> crate::config::Config {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config
            .clone()
    }
}

impl Running {
    /// Starts `extra` worker threads, each running its own single-threaded runtime
    /// with its own `SO_REUSEPORT` listeners on the bound addresses. Must be called
    /// inside the runtime that ran [`start`]. The threads exit after shutdown once
    /// their connections have drained (or the grace period is over).
    pub fn spawn_workers(&self, extra: usize) -> Result<(), StartError> {
        for i in 1..=extra {
            // Bound here, inside the caller's runtime; registered with the worker's
            // own runtime on its thread.
            let lowat = self.ctx.conn.limits.tcp_notsent_lowat_bytes;
            let bind_std = |addr: SocketAddr, key: &'static str| {
                bind_listener(addr, key, lowat)?
                    .into_std()
                    .map_err(|source| StartError::Bind { addr, key, source })
            };
            let tls = bind_std(self.tls_addr, "server.tls_listen")?;
            let http = self
                .http_addr
                .map(|a| bind_std(a, "server.http_listen"))
                .transpose()?;
            let ctx = self.ctx.clone();
            let grace = self.grace;
            spawn_runtime_thread(format!("edge-worker-{i}"), move |ready| async move {
                let listeners = std::iter::once((tls, true)).chain(http.map(|h| (h, false)));
                for (std_listener, is_tls) in listeners {
                    match TcpListener::from_std(std_listener) {
                        Ok(l) => {
                            ctx.tasks.spawn(accept_loop(l, ctx.clone(), is_tls, i));
                        }
                        Err(e) => {
                            let _ = ready.send(Err(format!("cannot register a listener: {e}")));
                            return;
                        }
                    }
                }
                let _ = ready.send(Ok(()));
                ctx.shutdown.cancelled().await;
                let _ = tokio::time::timeout(grace, ctx.tasks.wait()).await;
            })
            .map_err(|msg| StartError::Worker(format!("worker {i}: {msg}")))?;
        }
        Ok(())
    }

    /// A handle that reloads this server (for the SIGHUP handler), valid while it runs.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            live: self.live.clone(),
            ctx: self.ctx.clone(),
            ktls_any: self.ktls.any(),
        }
    }

    /// The one line printed on stdout once listening (tests and scripts parse it).
    pub fn listening_line(&self) -> String {
        let http = self
            .http_addr
            .map_or_else(|| "off".to_string(), |a| a.to_string());
        format!(
            "edge: listening tls={} http={} admin={}",
            self.tls_addr, http, self.admin_addr
        )
    }

    /// Waits for the shutdown token, then drains: stops accepting, lets in-flight
    /// connections finish for the grace period, and returns (remaining tasks are
    /// dropped with the runtime).
    pub async fn wait(self) {
        self.shutdown.cancelled().await;
        self.tasks.close();
        if tokio::time::timeout(self.grace, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.tasks.len(),
                "grace period over; cutting remaining connections"
            );
        }
        if let Some(c) = &self.cache {
            // Fills in progress finish and objects written but not yet synced and
            // indexed are finished, so a clean stop loses nothing it served.
            c.drain(self.grace).await;
            c.store.close();
        }
    }
}

struct ServerCtx {
    conn: ConnShared,
    /// Swapped whole by a reload; a handshake uses the one current when it starts.
    tls_config: arc_swap::ArcSwap<rustls::ServerConfig>,
    ktls: KtlsSupport,
    ktls_max_bytes: u64,
    pool: Arc<BufferPool>,
    conn_limit: Arc<Semaphore>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

/// Starts everything `config` describes and returns once all listeners are bound.
/// Must be called inside a multi-threaded tokio runtime. Cancelling `shutdown`
/// begins the drain; [`Running::wait`] completes it.
pub async fn start(config: Config, shutdown: CancellationToken) -> Result<Running, StartError> {
    // In edge mode every path outside /streams/ comes from the cache: the content
    // root is not used, and need not exist.
    let root = if config.cache.is_some() && !config.content_root.exists() {
        tls::ensure_private_dir(&config.state_dir)?;
        config.state_dir.clone()
    } else {
        config.content_root.clone()
    };
    let site = Site::open(&root, config.symlinks, config.cors.clone())
        .map_err(|e| content_root_err(&config, &e.to_string()))?;
    if !config.admin_listen.ip().is_loopback() {
        tracing::warn!(
            addr = %config.admin_listen,
            "admin listener on a non-loopback address (admin.allow_non_loopback): its bearer \
             token travels in clear; keep it behind a firewall"
        );
    }
    tls::ensure_private_dir(&config.state_dir)?;
    let ktls = match config.tls.ktls {
        KtlsMode::Off => KtlsSupport::none("disabled by tls.ktls = \"off\""),
        KtlsMode::Auto | KtlsMode::Require => tokio::task::spawn_blocking(offload::probe)
            .await
            .unwrap_or_else(|_| KtlsSupport::none("probe panicked")),
    };
    tracing::info!("{ktls}");
    if config.tls.ktls == KtlsMode::Require && !ktls.any() {
        return Err(StartError::KtlsRequired(ktls.to_string()));
    }
    let resumption = tls::Resumption::default();
    let tls_config = tls::build(&config.tls, &config.state_dir, ktls.any(), &resumption)?;
    let token = tls::admin_token(config.admin_token_file.as_deref(), &config.state_dir)?;

    let metrics = Arc::new(Metrics::new());
    metrics.ktls_enabled.set(i64::from(ktls.any()));
    let telemetry = Arc::new(web_ui::telemetry::Telemetry::new(config.telemetry.enabled));
    if config.cache.is_some() {
        telemetry.set_has_cache();
    }
    let _ = metrics.registry().register(Box::new(telemetry.collector()));
    let dashboard = {
        let (t, settings, store) = (
            telemetry.clone(),
            config.telemetry.storm.clone(),
            config.telemetry.store.clone(),
        );
        tokio::task::spawn_blocking(move || {
            web_ui::dashboard::Dashboard::open(t, settings, Some(&store))
        })
        .await
        .map_err(|_| StartError::Worker("opening the telemetry store panicked".into()))?
        .map_err(|e| StartError::Telemetry(e.to_string()))?
    };
    let dashboard = Arc::new(dashboard);
    let catalog = {
        let config = config.clone();
        tokio::task::spawn_blocking(move || Catalog::build(&config))
            .await
            .map_err(|_| StartError::Worker("ingesting streams panicked".into()))??
    };
    catalog.register(metrics.registry());
    if !catalog.is_empty() {
        tracing::info!(streams = ?catalog.names(), "publishing streams under /streams/");
    }
    let catalog = Arc::new(catalog);
    let mut site = site.with_catalog(catalog.clone()).with_open_file_cache(
        config.open_file_cache,
        (
            metrics.open_file_cache_hits.clone(),
            metrics.open_file_cache_misses.clone(),
        ),
    );
    let edge_cache = match &config.cache {
        None => None,
        Some(c) => {
            let storage_config = c.storage.clone();
            let store = tokio::task::spawn_blocking(move || storage::Cache::open(&storage_config))
                .await
                .map_err(|_| StartError::Cache("opening the cache panicked".into()))?
                .map_err(|e| StartError::Cache(e.to_string()))?;
            let ca = c
                .upstream
                .ca_file
                .as_ref()
                .or(config.manifests.origin_ca_file.as_ref());
            let tls = ca
                .map(|f| crate::upstream::client_tls(f))
                .transpose()
                .map_err(|e| StartError::Cache(format!("upstream.ca_file: {e}")))?;
            let cache = Arc::new(crate::cache::EdgeCache::new(
                store,
                c.upstream.clone(),
                tls,
                metrics.registry(),
            ));
            tracing::info!(
                origin = %c.upstream.origin.base(),
                disks = c.storage.disks.len(),
                "edge mode: filling the cache from the origin"
            );
            site = site.with_cache(cache.clone());
            Some(cache)
        }
    };
    let cold_reads = prometheus::IntCounter::new(
        "edge_cold_reads_total",
        "Body ranges not in the page cache, read in on an I/O pool before a zero-copy send",
    )
    .expect("valid metric");
    let _ = metrics.registry().register(Box::new(cold_reads.clone()));
    let content_pool = storage::IoPool::new("content-io", 4, 256)
        .map_err(|e| StartError::Worker(format!("starting the content I/O threads: {e}")))?;

    let lowat = config.limits.tcp_notsent_lowat_bytes;
    let tls_listener = bind_exclusive(config.tls_listen, "server.tls_listen", lowat)?;
    let http_listener = match config.http_listen {
        Some(a) => Some(bind_exclusive(a, "server.http_listen", lowat)?),
        None => None,
    };
    // A std listener: the admin plane runs on its own thread and runtime.
    let admin_listener = std::net::TcpListener::bind(config.admin_listen)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|source| StartError::Bind {
            addr: config.admin_listen,
            key: "server.admin_listen",
            source,
        })?;
    let local = |l: &TcpListener, addr: SocketAddr| l.local_addr().unwrap_or(addr);
    let tls_addr = local(&tls_listener, config.tls_listen);
    let http_addr = http_listener
        .as_ref()
        .map(|l| local(l, config.http_listen.unwrap_or(tls_addr)));
    let admin_addr = admin_listener.local_addr().unwrap_or(config.admin_listen);

    let tasks = TaskTracker::new();
    let limits = config.limits.clone();
    tracing::info!(
        max_connections = limits.max_connections.get(),
        "connection limit (limits.max_connections)"
    );
    // Each connection is a socket plus, while a response is in flight, its file (with
    // content.open_file_cache: the cache's files per worker instead, shared);
    // listeners and the admin plane need a few more. Past the limit accept fails
    // with EMFILE (the loop backs off) and opening a file answers 503.
    let files = config.open_file_cache.entries as u64;
    let workers = config
        .worker_threads
        .map(|n| n.get())
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1) as u64;
    let per_connection = if files > 0 { 1 } else { 2 };
    let wanted = per_connection * limits.max_connections.get() as u64
        + files.saturating_mul(workers)
        + NOFILE_RESERVE;
    match crate::sys::raise_nofile_limit() {
        Ok((soft, _)) if soft < wanted => {
            tracing::warn!(
                open_file_limit = soft,
                wanted,
                "limits.max_connections needs {per_connection} descriptor(s) per connection, \
                 plus content.open_file_cache files per worker, plus {NOFILE_RESERVE}: more \
                 than RLIMIT_NOFILE allows; raise the hard limit (systemd LimitNOFILE) or \
                 lower limits.max_connections"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read RLIMIT_NOFILE"),
    }
    let ctx = Arc::new(ServerCtx {
        conn: ConnShared {
            site,
            limits: limits.clone(),
            metrics: metrics.clone(),
            cold: crate::conn::ColdReads {
                content_pool,
                counter: cold_reads,
            },
            telemetry: telemetry.clone(),
            close_after_error: config.close_after_error,
        },
        tls_config: arc_swap::ArcSwap::new(tls_config),
        ktls: ktls.clone(),
        ktls_max_bytes: config.tls.ktls_max_bytes_per_connection.get(),
        pool: Arc::new(BufferPool::new(
            limits.userspace_tls_buffer_bytes.get(),
            1024,
        )),
        conn_limit: Arc::new(Semaphore::new(limits.max_connections.get())),
        tasks: tasks.clone(),
        shutdown: shutdown.clone(),
    });

    let mut admin_state = web_ui::AdminState::new(metrics.registry().clone(), token)
        .with_dashboard(dashboard.clone());
    if let Some(c) = &edge_cache {
        admin_state = admin_state.with_purge(c.clone());
    }
    let admin_state = Arc::new(admin_state);
    admin_state.set_config(crate::reload::config_json(&config));
    tasks.spawn(dashboard.clone().run(shutdown.clone()));
    spawn_admin(admin_listener, admin_state.clone(), shutdown.clone())?;
    tasks.spawn(catalog.refresh_from_origins(shutdown.clone()));
    tasks.spawn(accept_loop(tls_listener, ctx.clone(), true, 0));
    if let Some(l) = http_listener {
        tasks.spawn(accept_loop(l, ctx.clone(), false, 0));
    }

    Ok(Running {
        tls_addr,
        http_addr,
        admin_addr,
        metrics,
        ktls,
        tasks,
        shutdown,
        grace: config.shutdown_grace,
        ctx,
        cache: edge_cache,
        live: Arc::new(std::sync::Mutex::new(crate::reload::Live {
            config,
            resumption,
            admin: admin_state,
            dashboard,
        })),
    })
}

/// Runs the admin plane (metrics, dashboard, purge, profiler) on its own thread with
/// its own single-threaded runtime, so that a scrape does not queue behind worker 0's
/// connections: with the data plane saturating its cores, the kernel still schedules
/// this thread within its time slice, where a task on worker 0 would wait for every
/// ready connection task ahead of it (seconds at thousands of busy connections). It
/// stops at `shutdown`; nothing waits for it.
fn spawn_admin(
    listener: std::net::TcpListener,
    state: Arc<web_ui::AdminState>,
    shutdown: CancellationToken,
) -> Result<(), StartError> {
    spawn_runtime_thread("edge-admin".into(), move |ready| async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(format!("cannot register the listener: {e}")));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        if let Err(e) = web_ui::serve(listener, state, shutdown).await {
            tracing::error!(error = %e, "admin listener failed");
        }
    })
    .map_err(StartError::Admin)
}

/// Starts thread `name` running `body` on a single-threaded runtime of its own, and
/// waits (start-up only: briefly, blocking) until `body` reports on the channel it is
/// given that it is ready (`Ok`) or cannot start (`Err`, the message returned).
fn spawn_runtime_thread<F, Fut>(name: String, body: F) -> Result<(), String>
where
    F: FnOnce(std::sync::mpsc::Sender<Result<(), String>>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let run = move || match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(body(ready_tx)),
        Err(e) => {
            let _ = ready_tx.send(Err(format!("cannot start a runtime: {e}")));
        }
    };
    std::thread::Builder::new()
        .name(name)
        .spawn(run)
        .map_err(|e| format!("cannot spawn a thread: {e}"))?;
    match ready_rx.recv() {
        Ok(result) => result,
        Err(_) => Err("exited during start-up".into()),
    }
}

/// Descriptors wanted beyond two per connection: listeners, the admin plane, the
/// runtime's own, logs.
const NOFILE_RESERVE: u64 = 256;

/// Listen backlog of data-plane sockets (the kernel caps it at `net.core.somaxconn`).
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the first listener on `addr`: as [`bind_listener`], but first checks with a
/// plain bind (no `SO_REUSEPORT`) that nobody listens there yet, so a second `edge`
/// on the same port fails with "address in use" instead of silently sharing it.
fn bind_exclusive(
    addr: SocketAddr,
    key: &'static str,
    notsent_lowat: u32,
) -> Result<TcpListener, StartError> {
    if addr.port() != 0 {
        drop(
            std::net::TcpListener::bind(addr).map_err(|source| StartError::Bind {
                addr,
                key,
                source,
            })?,
        );
    }
    bind_listener(addr, key, notsent_lowat)
}

/// Binds a data-plane listener with `SO_REUSEPORT`, so worker threads can each bind
/// their own on the same address (the kernel only lets the same user do so), and
/// with `TCP_NOTSENT_LOWAT` `notsent_lowat` unless it is 0: accepted connections
/// inherit it, so no accept pays a system call for it.
fn bind_listener(
    addr: SocketAddr,
    key: &'static str,
    notsent_lowat: u32,
) -> Result<TcpListener, StartError> {
    let err = |source| StartError::Bind { addr, key, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.set_reuseport(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    if notsent_lowat != 0 {
        crate::sys::set_notsent_lowat(socket.as_raw_fd(), notsent_lowat).map_err(|source| {
            StartError::Bind {
                addr,
                key: "limits.tcp_notsent_lowat_bytes",
                source,
            }
        })?;
    }
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

fn content_root_err(config: &Config, reason: &str) -> StartError {
    StartError::ContentRoot {
        path: config.content_root.display().to_string(),
        reason: reason.to_string(),
    }
}

/// Accepts on one listener of worker `worker`. On the TLS listener, while
/// `limits.max_tls_handshakes_per_worker` handshakes of this worker wait for their
/// turn ([`HandshakeTurns`]) the loop accepts nothing (checking again every 5 ms) and
/// the kernel's backlog holds new connections.
async fn accept_loop(listener: TcpListener, ctx: Arc<ServerCtx>, is_tls: bool, worker: usize) {
    let metrics = &ctx.conn.metrics;
    let label = worker.to_string();
    let worker_open = metrics.worker_open.with_label_values(&[&label]);
    let worker_accepted = metrics.worker_accepted.with_label_values(&[&label]);
    let limits = &ctx.conn.limits;
    let turns = Arc::new(HandshakeTurns::new(limits.tls_handshakes_per_turn.get()));
    if is_tls {
        ctx.tasks.spawn(turns.clone().run(ctx.shutdown.clone()));
    }
    let max_waiting = limits.max_tls_handshakes_per_worker.get();
    loop {
        if is_tls && turns.waiting() >= max_waiting {
            // Saturated: leave new connections in the kernel's backlog.
            metrics.handshake_bound_waits.inc();
            while turns.waiting() >= max_waiting {
                tokio::select! {
                    biased;
                    _ = ctx.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                }
            }
        }
        let accepted = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning.
                let raw = e.raw_os_error();
                if matches!(
                    raw,
                    Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
                ) {
                    if crate::metrics::ACCEPT_FAILURE_LOG.allow() {
                        tracing::warn!(error = %e, "accept failed; backing off 100 ms (rate-limited)");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                } else {
                    tracing::debug!(error = %e, "accept failed");
                }
                continue;
            }
        };
        let Ok(permit) = ctx.conn_limit.clone().try_acquire_owned() else {
            metrics.refused.inc();
            if is_tls {
                drop(stream);
            } else {
                ctx.tasks.spawn(conn::refuse_plain(stream));
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        worker_accepted.inc();
        let ctx2 = ctx.clone();
        let worker_open = worker_open.clone();
        let turns = turns.clone();
        let span = tracing::debug_span!("conn", %peer, tls = is_tls);
        let task = async move {
            let _permit = permit;
            let metrics = &ctx2.conn.metrics;
            metrics.open.inc();
            worker_open.inc();
            let _open = OpenGuard(metrics, worker_open);
            let ip = peer.ip().to_canonical();
            let reason = if is_tls {
                metrics.accepted_tls.inc();
                Box::pin(serve_tls(stream, &ctx2, ip, &turns)).await
            } else {
                metrics.accepted_http.inc();
                let mut t = PlainTransport::new(stream, &ctx2.conn.limits);
                Some(
                    Box::pin(conn::serve(
                        &mut t,
                        &ctx2.conn,
                        &ctx2.shutdown,
                        ip,
                        web_ui::telemetry::ConnMode::Plain,
                    ))
                    .await,
                )
            };
            if let Some(r) = reason {
                metrics.closed(r);
            }
        };
        ctx.tasks.spawn(task.instrument(span));
    }
}

struct OpenGuard<'a>(&'a Metrics, prometheus::IntGauge);
impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.open.dec();
        self.1.dec();
    }
}

/// Counts a handshake in progress, in metrics and in its worker's count, until it is
/// over (either way).
struct HandshakeGuard<'a> {
    metrics: &'a Metrics,
    _worker: InProgressGuard,
}

impl<'a> HandshakeGuard<'a> {
    fn new(metrics: &'a Metrics, worker: &InProgress) -> Self {
        metrics.handshakes_in_progress.inc();
        Self {
            metrics,
            _worker: worker.enter(),
        }
    }
}

/// Paces the expensive step of TLS handshakes on one worker: answering a ClientHello
/// (key exchange and signature, about a millisecond of CPU). At most `per_turn` such
/// steps start per turn of the worker's event loop; a handshake past that waits
/// ([`take`](Self::take)) until the next turn, after the tasks already queued, among
/// them the requests of connections that finished their handshakes. So a flood of
/// new connections adds at most `per_turn` key exchanges in front of a ready request,
/// however many ClientHellos are waiting, and, unlike a cap on handshakes in
/// progress, the pacing does not depend on the clients' round-trip times.
///
/// Per worker: every task touching it runs on that worker's thread.
struct HandshakeTurns {
    /// This worker's handshakes in progress, from the ClientHello on (bodies on the
    /// worker share their turn while there are any).
    handshaking: InProgress,
    permits: Semaphore,
    per_turn: usize,
    waiting: InProgress,
    wake: tokio::sync::Notify,
}

impl HandshakeTurns {
    fn new(per_turn: usize) -> Self {
        Self {
            handshaking: InProgress::default(),
            permits: Semaphore::new(per_turn),
            per_turn,
            waiting: InProgress::default(),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// Handshakes waiting for a turn.
    fn waiting(&self) -> usize {
        self.waiting.count()
    }

    /// Waits for this turn's allowance (at once while some is left).
    async fn take(&self) {
        if let Ok(p) = self.permits.try_acquire() {
            p.forget();
            return;
        }
        let _waiting = self.waiting.enter();
        self.wake.notify_one();
        if let Ok(p) = self.permits.acquire().await {
            p.forget();
        }
    }

    /// The worker's pacing task: while handshakes wait, tops the allowance up to
    /// `per_turn` once per turn of the event loop (`yield_now` lets the tasks queued
    /// meanwhile, and the I/O driver, run first). Idle otherwise.
    async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
            }
            loop {
                let left = self.permits.available_permits();
                if left < self.per_turn {
                    self.permits.add_permits(self.per_turn - left);
                }
                tokio::task::yield_now().await;
                if self.waiting() == 0 {
                    break;
                }
            }
        }
    }
}

impl Drop for HandshakeGuard<'_> {
    fn drop(&mut self) {
        self.metrics.handshakes_in_progress.dec();
    }
}

/// Handshake, the offload decision, then the request loop. `None` when the
/// connection never got to HTTP (failed handshake or hand-over).
async fn serve_tls(
    stream: TcpStream,
    ctx: &ServerCtx,
    ip: std::net::IpAddr,
    turns: &HandshakeTurns,
) -> Option<CloseReason> {
    use web_ui::telemetry::{ConnMode, HandshakeFailure, HandshakeInfo};
    let metrics = &ctx.conn.metrics;
    let telemetry = &ctx.conn.telemetry;
    let limits = &ctx.conn.limits;
    let deadline = tokio::time::Instant::now() + limits.tls_handshake_timeout;
    // The handshake's duration counts from the first ClientHello byte.
    if tokio::time::timeout_at(deadline, stream.readable())
        .await
        .is_err()
    {
        metrics.handshake_failed_timeout.inc();
        telemetry.handshake_failed(HandshakeFailure::Timeout);
        return None;
    }
    let began = std::time::Instant::now();
    let handshaking = HandshakeGuard::new(metrics, &turns.handshaking);
    if tokio::time::timeout_at(deadline, turns.take())
        .await
        .is_err()
    {
        metrics.handshake_failed_timeout.inc();
        telemetry.handshake_failed(HandshakeFailure::Timeout);
        return None;
    }
    // Boxed, like the request loops below: a connection's task is as large as its
    // largest state, and an idle keep-alive connection should not carry room for a
    // handshake it finished long ago (see the memory notes in `conn`).
    let accept = Box::pin(tls_session::handshake(stream, ctx.tls_config.load_full()));
    let tls = match tokio::time::timeout_at(deadline, accept).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            metrics.handshake_failed_error.inc();
            telemetry.handshake_failed(match e.kind() {
                std::io::ErrorKind::UnexpectedEof
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
                | std::io::ErrorKind::BrokenPipe => HandshakeFailure::Eof,
                _ if e.to_string().contains("ALPN") => HandshakeFailure::NoAlpn,
                _ => HandshakeFailure::Protocol,
            });
            tracing::debug!(error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            metrics.handshake_failed_timeout.inc();
            telemetry.handshake_failed(HandshakeFailure::Timeout);
            return None;
        }
    };
    drop(handshaking);
    let session = tls.negotiated();
    let resumed = session.handshake_kind() == Some(HandshakeKind::Resumed);
    if resumed {
        metrics.handshakes_resumed.inc();
    } else {
        metrics.handshakes_full.inc();
    }
    if telemetry.enabled() {
        telemetry.handshake(
            ip,
            &HandshakeInfo {
                version: session.protocol_version().map_or(0, u16::from),
                suite: session
                    .negotiated_cipher_suite()
                    .map_or(0, |s| u16::from(s.suite())),
                group: session
                    .negotiated_key_exchange_group()
                    .map_or(0, |g| u16::from(g.name())),
                resumed,
                micros: began.elapsed().as_micros() as u64,
                sni: u8::from(tls.sni()),
                alpn_http11: session.alpn_protocol() == Some(b"http/1.1"),
            },
        );
    }
    let offload = ctx.ktls.any()
        && session
            .negotiated_cipher_suite()
            .is_some_and(|s| ctx.ktls.supports(s));
    if ctx.ktls.any() && !offload {
        metrics.ktls_setup_failed(KtlsSetupFailure::UnsupportedCipher);
    }
    let tls = if offload {
        match Box::pin(offload::hand_over(tls, limits.header_read_timeout)).await {
            Handover::Offloaded { stream, drained } => {
                metrics.tls_ktls.inc();
                let mut t = KtlsTransport::new(stream, drained, limits, ctx.ktls_max_bytes);
                return Some(
                    Box::pin(conn::serve_ktls(&mut t, &ctx.conn, &ctx.shutdown, ip)).await,
                );
            }
            Handover::Declined { tls, error } => {
                metrics.ktls_setup_failed(KtlsSetupFailure::UlpRefused);
                tracing::debug!(%error, "kernel refused the TLS ULP; serving in userspace");
                tls
            }
            Handover::PeerGone(reason) => return Some(reason),
            Handover::Lost { failure, error } => {
                metrics.ktls_setup_failed(failure);
                telemetry.handshake_failed(HandshakeFailure::KtlsSetup);
                if crate::metrics::KTLS_HANDOVER_LOG.allow() {
                    tracing::warn!(%error, "kTLS hand-over failed; connection lost (rate-limited)");
                }
                return None;
            }
        }
    } else {
        tls
    };
    metrics.tls_userspace.inc();
    let mut t = RustlsTransport::new(tls, ctx.pool.clone(), limits, turns.handshaking.clone());
    Some(
        Box::pin(conn::serve(
            &mut t,
            &ctx.conn,
            &ctx.shutdown,
            ip,
            ConnMode::UserspaceTls,
        ))
        .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn serve_tls_future(
        s: TcpStream,
        c: &'static ServerCtx,
        ip: std::net::IpAddr,
        t: &'static HandshakeTurns,
    ) -> impl std::future::Future {
        serve_tls(s, c, ip, t)
    }

    /// An idle userspace-TLS connection holds `serve_tls`' future for as long as it
    /// lives: it must hold the session by pointer, not inline (it did, twice over:
    /// 2,840 bytes in a release build, against 520 since).
    #[test]
    fn a_tls_connections_future_does_not_hold_its_session_inline() {
        let session = std::mem::size_of::<tls_session::TlsSession>();
        let task = future_size(serve_tls_future as fn(_, _, _, _) -> _);
        println!("serve_tls future {task} bytes, rustls session {session} bytes");
        assert!(
            session > 1000,
            "rustls' session shrank to {session} bytes: revisit this test"
        );
        assert!(
            task < session,
            "serve_tls' future is {task} bytes, the session {session}: it holds a session inline"
        );
    }
}
