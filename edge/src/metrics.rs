//! The data plane's counters, registered once in a Prometheus registry that the
//! admin plane serves. Labelled children are resolved at start-up, so the hot path
//! only increments atomics (no label lookups, no allocation).

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::transport::BodyPath;

/// Why a connection ended; a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The client closed (FIN, or TLS close_notify).
    Client,
    /// Idle between requests longer than `limits.idle_timeout_secs`.
    IdleTimeout,
    /// A head did not complete within `limits.header_read_timeout_secs`.
    HeaderTimeout,
    /// The request's framing was bad (400/413/431 and close).
    FramingError,
    /// The client asked for `Connection: close` or hit the per-connection request cap.
    Requested,
    /// The kTLS byte cap was reached.
    KtlsByteCap,
    /// The peer sent a TLS record we cannot handle on the offloaded path (KeyUpdate,
    /// change_cipher_spec, alert).
    KtlsControl,
    /// A response missed its send deadline (`limits.send_timeout_secs`,
    /// `limits.min_send_rate_bytes_per_sec`): the connection was reset.
    SendTimeout,
    /// A read or write failed.
    IoError,
    /// The server closed after an error answer (a 5xx, or any 4xx/5xx with
    /// `server.close_after_error`).
    AfterError,
    /// The server is shutting down.
    Shutdown,
}

impl CloseReason {
    const ALL: [CloseReason; 11] = [
        CloseReason::Client,
        CloseReason::IdleTimeout,
        CloseReason::HeaderTimeout,
        CloseReason::FramingError,
        CloseReason::Requested,
        CloseReason::KtlsByteCap,
        CloseReason::KtlsControl,
        CloseReason::SendTimeout,
        CloseReason::IoError,
        CloseReason::AfterError,
        CloseReason::Shutdown,
    ];

    fn label(self) -> &'static str {
        match self {
            CloseReason::Client => "client",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::FramingError => "framing_error",
            CloseReason::Requested => "requested",
            CloseReason::KtlsByteCap => "ktls_byte_cap",
            CloseReason::KtlsControl => "ktls_control_record",
            CloseReason::SendTimeout => "send_timeout",
            CloseReason::IoError => "io_error",
            CloseReason::AfterError => "after_error",
            CloseReason::Shutdown => "shutdown",
        }
    }

    /// Who ended the connection, for telemetry.
    pub fn closed_by(self) -> web_ui::telemetry::ClosedBy {
        use web_ui::telemetry::ClosedBy;
        match self {
            CloseReason::Client | CloseReason::IoError | CloseReason::KtlsControl => {
                ClosedBy::Client
            }
            CloseReason::Requested => ClosedBy::ClientRequested,
            CloseReason::IdleTimeout | CloseReason::HeaderTimeout | CloseReason::SendTimeout => {
                ClosedBy::Timeout
            }
            CloseReason::FramingError
            | CloseReason::KtlsByteCap
            | CloseReason::AfterError
            | CloseReason::Shutdown => ClosedBy::Server,
        }
    }
}

/// Why handing a connection to kTLS failed or was not attempted; a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KtlsSetupFailure {
    /// The negotiated cipher suite is not one the probe found offloadable.
    UnsupportedCipher,
    /// The kernel refused `TCP_ULP "tls"` (for example: the peer had already
    /// half-closed); nothing was consumed and the connection was served by rustls.
    UlpRefused,
    /// A failure after rustls' state was consumed (drain, secret export, `TLS_TX` /
    /// `TLS_RX`): the connection was lost.
    Setup,
}

impl KtlsSetupFailure {
    const ALL: [KtlsSetupFailure; 3] = [
        KtlsSetupFailure::UnsupportedCipher,
        KtlsSetupFailure::UlpRefused,
        KtlsSetupFailure::Setup,
    ];

    fn label(self) -> &'static str {
        match self {
            KtlsSetupFailure::UnsupportedCipher => "unsupported_cipher",
            KtlsSetupFailure::UlpRefused => "ulp_refused",
            KtlsSetupFailure::Setup => "setup",
        }
    }
}

/// Lets a warning through at most once per interval, so that a condition a client
/// can trigger again and again never becomes a log storm. Lock-free.
pub struct LogLimiter {
    interval_secs: u64,
    next_allowed: std::sync::atomic::AtomicU64,
}

impl LogLimiter {
    /// At most one line per `interval_secs`.
    pub const fn new(interval_secs: u64) -> Self {
        Self {
            interval_secs,
            next_allowed: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Whether a line may be logged now (true for one caller per interval).
    pub fn allow(&self) -> bool {
        use std::sync::atomic::Ordering;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let next = self.next_allowed.load(Ordering::Relaxed);
        now >= next
            && self
                .next_allowed
                .compare_exchange(
                    next,
                    now + self.interval_secs,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }
}

/// Rate limit for "opening a content file failed" (a disk fault, not a client error).
pub static OPEN_FAILURE_LOG: LogLimiter = LogLimiter::new(10);
/// Rate limit for "fetching a stream description from the origin failed".
pub static ORIGIN_FETCH_LOG: LogLimiter = LogLimiter::new(10);
/// Rate limit for "accept failed" (out of descriptors: it repeats every back-off).
pub static ACCEPT_FAILURE_LOG: LogLimiter = LogLimiter::new(10);
/// Rate limit for "kTLS hand-over failed".
pub static KTLS_HANDOVER_LOG: LogLimiter = LogLimiter::new(10);

/// Status classes used as labels.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Response body labels: the three body paths, plus `none` for bodiless or static bodies.
const RESPONSE_PATHS: [&str; 4] = ["sendfile_plain", "sendfile_ktls", "userspace_copy", "none"];

/// All data-plane metrics.
pub struct Metrics {
    registry: Registry,
    /// Connections accepted, by listener (`tls`, `http`).
    pub accepted_tls: IntCounter,
    /// See `accepted_tls`.
    pub accepted_http: IntCounter,
    /// Connections refused at the `limits.max_connections` cap.
    pub refused: IntCounter,
    /// Connections open now.
    pub open: IntGauge,
    /// Connections open now, by worker thread (how `SO_REUSEPORT` spread them).
    pub worker_open: IntGaugeVec,
    /// Connections accepted, by worker thread.
    pub worker_accepted: IntCounterVec,
    /// TLS handshakes running now (all workers).
    pub handshakes_in_progress: IntGauge,
    /// Times an accept loop waited because `limits.max_tls_handshakes_per_worker`
    /// handshakes of its worker were waiting for their turn.
    pub handshake_bound_waits: IntCounter,
    /// TLS connections served with kTLS offload.
    pub tls_ktls: IntCounter,
    /// TLS connections served by rustls in userspace.
    pub tls_userspace: IntCounter,
    /// Completed handshakes: full.
    pub handshakes_full: IntCounter,
    /// Completed handshakes: resumed.
    pub handshakes_resumed: IntCounter,
    /// Failed handshakes by reason (`timeout`, `error`).
    pub handshake_failed_timeout: IntCounter,
    /// See `handshake_failed_timeout`.
    pub handshake_failed_error: IntCounter,
    ktls_setup_failures: [IntCounter; 3],
    body_bytes: [IntCounter; 3],
    responses: [[IntCounter; 4]; 5],
    closes: [IntCounter; 11],
    /// 1 when the start-up probe found kTLS usable and the config allows it.
    pub ktls_enabled: IntGauge,
    /// SIGHUP reloads: applied.
    pub reloads_applied: IntCounter,
    /// SIGHUP reloads refused: the new config changes a restart-only key.
    pub reloads_refused: IntCounter,
    /// SIGHUP reloads that failed: the config or a file it names does not load.
    pub reloads_failed: IntCounter,
    /// Content file lookups answered by a worker's open-file cache.
    pub open_file_cache_hits: IntCounter,
    /// Content file lookups that opened the path (`content.open_file_cache` on).
    pub open_file_cache_misses: IntCounter,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let registry = Registry::new();
        // process_resident_memory_bytes, process_open_fds, process_max_fds,
        // process_cpu_seconds_total, ...: with edge_connections_open they give memory per
        // connection and descriptor headroom without a shell on the box.
        registry
            .register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))
            .expect("unique metric");
        let counter_vec = |name: &str, help: &str, label: &str| {
            let v = IntCounterVec::new(Opts::new(name, help), &[label]).expect("valid metric");
            registry
                .register(Box::new(v.clone()))
                .expect("unique metric");
            v
        };
        let accepted = counter_vec(
            "edge_connections_accepted_total",
            "Client connections accepted, by listener.",
            "listener",
        );
        let tls_conns = counter_vec(
            "edge_tls_connections_total",
            "TLS connections after the handshake, by record-layer path (ktls or userspace).",
            "path",
        );
        let handshakes = counter_vec(
            "edge_tls_handshakes_total",
            "Completed TLS handshakes, by kind (full or resumed).",
            "kind",
        );
        let hs_failed = counter_vec(
            "edge_tls_handshake_failures_total",
            "Failed TLS handshakes, by reason.",
            "reason",
        );
        let ktls_fail = counter_vec(
            "edge_ktls_setup_failures_total",
            "TLS connections that could not be handed to kTLS, by reason.",
            "reason",
        );
        let bytes = counter_vec(
            "edge_body_bytes_total",
            "Response body bytes sent, by body path.",
            "path",
        );
        let closes = counter_vec(
            "edge_connection_closes_total",
            "Connections ended, by reason.",
            "reason",
        );
        let responses = IntCounterVec::new(
            Opts::new(
                "edge_responses_total",
                "Responses sent, by status class and body path.",
            ),
            &["status_class", "path"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(responses.clone()))
            .expect("unique metric");
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry
                .register(Box::new(g.clone()))
                .expect("unique metric");
            g
        };
        let worker_open = IntGaugeVec::new(
            Opts::new(
                "edge_worker_open_connections",
                "Client connections open now, by worker thread.",
            ),
            &["worker"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(worker_open.clone()))
            .expect("unique metric");
        let worker_accepted = counter_vec(
            "edge_worker_accepted_total",
            "Client connections accepted, by worker thread.",
            "worker",
        );
        let handshake_bound_waits = IntCounter::new(
            "edge_tls_handshake_bound_waits_total",
            "Times a worker stopped accepting because limits.max_tls_handshakes_per_worker \
             handshakes were waiting for their turn (the listen backlog held new connections).",
        )
        .expect("valid metric");
        registry
            .register(Box::new(handshake_bound_waits.clone()))
            .expect("unique metric");
        let refused = IntCounter::new(
            "edge_connections_refused_total",
            "Connections refused because limits.max_connections were open.",
        )
        .expect("valid metric");
        registry
            .register(Box::new(refused.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(KernelTlsStat::new()))
            .expect("unique metric");
        registry
            .register(Box::new(HeapTotals::new()))
            .expect("unique metric");
        let reloads = counter_vec(
            "edge_config_reloads_total",
            "SIGHUP reloads, by result: applied, refused (a restart-only key changed) or \
             failed (the config or a file it names did not load); the running config stays \
             unless applied.",
            "result",
        );
        let open_files = counter_vec(
            "edge_open_file_cache_total",
            "Content file lookups with content.open_file_cache on, by result: hit (a \
             descriptor this worker already held) or miss (the path was opened).",
            "result",
        );

        Self {
            accepted_tls: accepted.with_label_values(&["tls"]),
            accepted_http: accepted.with_label_values(&["http"]),
            refused,
            open: gauge("edge_connections_open", "Client connections open now."),
            worker_open,
            worker_accepted,
            handshakes_in_progress: gauge(
                "edge_tls_handshakes_in_progress",
                "TLS handshakes running now.",
            ),
            handshake_bound_waits,
            tls_ktls: tls_conns.with_label_values(&["ktls"]),
            tls_userspace: tls_conns.with_label_values(&["userspace"]),
            handshakes_full: handshakes.with_label_values(&["full"]),
            handshakes_resumed: handshakes.with_label_values(&["resumed"]),
            handshake_failed_timeout: hs_failed.with_label_values(&["timeout"]),
            handshake_failed_error: hs_failed.with_label_values(&["error"]),
            ktls_setup_failures: KtlsSetupFailure::ALL
                .map(|r| ktls_fail.with_label_values(&[r.label()])),
            body_bytes: BodyPath::ALL.map(|p| bytes.with_label_values(&[p.label()])),
            responses: STATUS_CLASSES
                .map(|c| RESPONSE_PATHS.map(|p| responses.with_label_values(&[c, p]))),
            closes: CloseReason::ALL.map(|r| closes.with_label_values(&[r.label()])),
            ktls_enabled: gauge(
                "edge_ktls_enabled",
                "1 when TLS connections are offloaded to kernel TLS.",
            ),
            reloads_applied: reloads.with_label_values(&["applied"]),
            reloads_refused: reloads.with_label_values(&["refused"]),
            reloads_failed: reloads.with_label_values(&["failed"]),
            open_file_cache_hits: open_files.with_label_values(&["hit"]),
            open_file_cache_misses: open_files.with_label_values(&["miss"]),
            registry,
        }
    }

    /// The registry the admin plane serves.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Counts one response with `status` whose body (if any) took `path`.
    pub fn response(&self, status: u16, path: Option<BodyPath>, body_bytes: u64) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let p = match path {
            Some(p) => p as usize,
            None => 3,
        };
        self.responses[class][p].inc();
        if let Some(p) = path {
            self.body_bytes[p as usize].inc_by(body_bytes);
        }
    }

    /// Counts a connection end.
    pub fn closed(&self, reason: CloseReason) {
        self.closes[reason as usize].inc();
    }

    /// Counts a kTLS hand-over failure.
    pub fn ktls_setup_failed(&self, reason: KtlsSetupFailure) {
        self.ktls_setup_failures[reason as usize].inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Exposes `/proc/net/tls_stat` (the kernel's kTLS counters) as
/// `edge_kernel_tls_stat{counter="TlsTxSw"}` and so on, read at each scrape.
/// On a kernel without kTLS the file is absent and nothing is exported.
struct KernelTlsStat {
    gauges: IntGaugeVec,
}

impl KernelTlsStat {
    fn new() -> Self {
        let gauges = IntGaugeVec::new(
            Opts::new(
                "edge_kernel_tls_stat",
                "The kernel's kTLS counters from /proc/net/tls_stat (host-wide).",
            ),
            &["counter"],
        )
        .expect("valid metric");
        Self { gauges }
    }
}

impl Collector for KernelTlsStat {
    fn desc(&self) -> Vec<&Desc> {
        self.gauges.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.gauges.reset();
        if let Ok(text) = std::fs::read_to_string("/proc/net/tls_stat") {
            for line in text.lines() {
                let mut it = line.split_whitespace();
                if let (Some(name), Some(Ok(v))) = (it.next(), it.next().map(str::parse::<i64>)) {
                    self.gauges.with_label_values(&[name]).set(v);
                }
            }
        }
        self.gauges.collect()
    }
}

/// The allocator's view of the heap, read at each scrape: `edge_heap_in_use_bytes`
/// (what edge has allocated and not freed) and `edge_heap_free_bytes` (what the
/// allocator holds free: fragmentation, or memory not yet returned). Beside
/// `process_resident_memory_bytes` they tell live data from allocator overhead.
struct HeapTotals {
    in_use: IntGauge,
    free: IntGauge,
}

impl HeapTotals {
    fn new() -> Self {
        Self {
            in_use: IntGauge::new(
                "edge_heap_in_use_bytes",
                "Bytes edge has allocated from the C allocator and not freed (glibc mallinfo2).",
            )
            .expect("valid metric"),
            free: IntGauge::new(
                "edge_heap_free_bytes",
                "Bytes the C allocator holds free in its arenas (glibc mallinfo2).",
            )
            .expect("valid metric"),
        }
    }
}

impl Collector for HeapTotals {
    fn desc(&self) -> Vec<&Desc> {
        self.in_use
            .desc()
            .into_iter()
            .chain(self.free.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some((in_use, free)) = crate::sys::heap_totals() else {
            return Vec::new();
        };
        self.in_use.set(i64::try_from(in_use).unwrap_or(i64::MAX));
        self.free.set(i64::try_from(free).unwrap_or(i64::MAX));
        let mut families = self.in_use.collect();
        families.extend(self.free.collect());
        families
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn counters_show_up_with_labels() {
        let m = Metrics::new();
        m.response(206, Some(BodyPath::SendfileKtls), 1000);
        m.response(404, None, 0);
        m.closed(CloseReason::HeaderTimeout);
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&m.registry().gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("edge_responses_total{path=\"sendfile_ktls\",status_class=\"2xx\"} 1"),
            "{text}"
        );
        assert!(text.contains("edge_responses_total{path=\"none\",status_class=\"4xx\"} 1"));
        assert!(text.contains("edge_body_bytes_total{path=\"sendfile_ktls\"} 1000"));
        // the process collector (memory and descriptors, from /proc) and the heap gauge
        for family in [
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "edge_heap_in_use_bytes",
        ] {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(family)?.trim().parse::<f64>().ok())
                .unwrap_or_else(|| panic!("no {family} in {text}"));
            assert!(value > 0.0, "{family} = {value}");
        }
        assert!(text.contains("edge_connection_closes_total{reason=\"header_timeout\"} 1"));
    }
}
