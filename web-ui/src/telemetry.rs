//! The data plane's telemetry sink: exact counters and latency histograms kept in
//! relaxed atomics, plus a bounded lock-free queue of fixed-size events (handshakes,
//! error responses, connection closes) that the admin plane's aggregator drains.
//!
//! Contract for the hot path: every recording method takes `&self`, allocates
//! nothing and takes no lock. Counters are exact. Events are best effort: when the
//! aggregator falls behind and the queue is full, an event is dropped and counted
//! (`edge_telemetry_events_dropped_total`); the per-second series are built from the
//! counters, so they stay exact even then, and only the storm drill-down (top status
//! codes, prefixes, networks, user agents, causes) becomes a sample.
//!
//! With `enabled = false` every method returns at once (the benchmark's "telemetry
//! off"), and the admin plane shows no series.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use crossbeam_queue::ArrayQueue;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;

/// Handshakes whose client sent an IP literal as SNI (rustls ignores it and logs a
/// warning, which edge's log limiter counts here). Process-wide.
pub static SNI_IP_LITERAL: AtomicU64 = AtomicU64::new(0);
/// INFO/WARN/ERROR log lines dropped by edge's per-source log rate limit.
pub static LOG_LINES_SUPPRESSED: AtomicU64 = AtomicU64::new(0);

/// How many events the queue holds; the aggregator drains it every 100 ms.
pub const EVENT_QUEUE_CAPACITY: usize = 16 * 1024;

/// A string of at most `N` bytes stored inline (truncated on a UTF-8 boundary).
#[derive(Clone, Copy)]
pub struct InlineStr<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> InlineStr<N> {
    /// Copies at most `N` bytes of `s`.
    pub fn new(s: &[u8]) -> Self {
        let mut len = s.len().min(N).min(255);
        // Do not cut a UTF-8 sequence in half.
        while len > 0 && len < s.len() && (s[len] & 0xC0) == 0x80 {
            len -= 1;
        }
        let mut bytes = [0u8; N];
        bytes[..len].copy_from_slice(&s[..len]);
        Self {
            len: len as u8,
            bytes,
        }
    }

    /// The text (invalid UTF-8 replaced).
    pub fn as_string(&self) -> String {
        String::from_utf8_lossy(&self.bytes[..self.len as usize]).into_owned()
    }
}

impl<const N: usize> std::fmt::Debug for InlineStr<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_string())
    }
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// The client closed (FIN, reset, close_notify) or its connection failed.
    Client,
    /// The client asked for it: `Connection: close` or HTTP/1.0 without keep-alive.
    ClientRequested,
    /// The server closed: framing error, an error it closes after, shutdown, caps.
    Server,
    /// An idle, header or send timeout.
    Timeout,
}

impl ClosedBy {
    /// All values, in label order.
    pub const ALL: [ClosedBy; 4] = [
        ClosedBy::Client,
        ClosedBy::ClientRequested,
        ClosedBy::Server,
        ClosedBy::Timeout,
    ];

    /// The metrics and JSON label.
    pub fn label(self) -> &'static str {
        match self {
            ClosedBy::Client => "client",
            ClosedBy::ClientRequested => "client_requested",
            ClosedBy::Server => "server",
            ClosedBy::Timeout => "timeout",
        }
    }
}

/// Why a TLS handshake failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// `limits.tls_handshake_timeout_secs` passed.
    Timeout,
    /// The peer closed or reset before finishing.
    Eof,
    /// A TLS protocol error (bad record, no common cipher, bad certificate...).
    Protocol,
    /// The client offered only ALPN protocols we do not speak.
    NoAlpn,
    /// The connection was lost while handing it to kTLS.
    KtlsSetup,
}

impl HandshakeFailure {
    /// All values, in label order.
    pub const ALL: [HandshakeFailure; 5] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::Eof,
        HandshakeFailure::Protocol,
        HandshakeFailure::NoAlpn,
        HandshakeFailure::KtlsSetup,
    ];

    /// The metrics and JSON label.
    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Eof => "eof",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::NoAlpn => "no_alpn",
            HandshakeFailure::KtlsSetup => "ktls_setup",
        }
    }
}

/// What a response carried, by path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// `.m3u8`, `.mpd`.
    Manifest,
    /// Media segments.
    Segment,
    /// Initialisation segments (`init*.mp4`, `*.init`, ...).
    Init,
    /// Anything else (pages, scripts, errors on odd paths).
    Other,
}

impl RouteClass {
    /// All values, in label order.
    pub const ALL: [RouteClass; 4] = [
        RouteClass::Manifest,
        RouteClass::Segment,
        RouteClass::Init,
        RouteClass::Other,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            RouteClass::Manifest => "manifest",
            RouteClass::Segment => "segment",
            RouteClass::Init => "init",
            RouteClass::Other => "other",
        }
    }
}

/// How a connection's bodies leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnMode {
    /// Plain HTTP.
    Plain,
    /// TLS in userspace (rustls).
    UserspaceTls,
    /// TLS offloaded to the kernel.
    Ktls,
}

/// What the aggregator reads from the queue.
#[derive(Debug, Clone, Copy)]
pub enum Event {
    /// A completed TLS handshake.
    Handshake {
        /// Coarse time (see [`Telemetry::now_ms`]).
        at_ms: u64,
        /// The client.
        ip: IpAddr,
        /// Resumed (ticket or session id) rather than full.
        resumed: bool,
    },
    /// A response with status 400 or above.
    ErrorResponse {
        /// Coarse time.
        at_ms: u64,
        /// The client.
        ip: IpAddr,
        /// The status code.
        status: u16,
        /// The request path up to its last `/` (query dropped), truncated.
        prefix: InlineStr<64>,
        /// `User-Agent`, truncated.
        user_agent: InlineStr<64>,
    },
    /// A connection ended.
    Close {
        /// Coarse time.
        at_ms: u64,
        /// The client.
        ip: IpAddr,
        /// Who ended it.
        closed_by: ClosedBy,
        /// The last status served (0: none).
        last_status: u16,
        /// Requests answered on it.
        requests: u32,
        /// The client went away while a body was being sent.
        aborted_mid_body: bool,
    },
}

/// The TLS parameters of a completed handshake, as indices into fixed tables.
#[derive(Debug, Clone, Copy)]
pub struct HandshakeInfo {
    /// Protocol version (IANA code: 0x0303 TLS 1.2, 0x0304 TLS 1.3).
    pub version: u16,
    /// Cipher suite (IANA code).
    pub suite: u16,
    /// Key-exchange group (IANA code; 0 when unknown).
    pub group: u16,
    /// Resumed rather than full.
    pub resumed: bool,
    /// Microseconds from the first ClientHello byte to the handshake's end.
    pub micros: u64,
    /// SNI: 0 absent, 1 a host name, 2 an IP literal (ignored by rustls).
    pub sni: u8,
    /// ALPN `http/1.1` negotiated.
    pub alpn_http11: bool,
}

/// Known suites (IANA code, name), the index is the counter's slot; the last slot
/// counts anything else.
pub const SUITES: [(u16, &str); 9] = [
    (0x1301, "TLS13_AES_128_GCM_SHA256"),
    (0x1302, "TLS13_AES_256_GCM_SHA384"),
    (0x1303, "TLS13_CHACHA20_POLY1305_SHA256"),
    (0xc02b, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"),
    (0xc02c, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"),
    (0xcca9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"),
    (0xc02f, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
    (0xc030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
    (0xcca8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
];
/// Known key-exchange groups (IANA code, name).
pub const GROUPS: [(u16, &str); 4] = [
    (0x001d, "X25519"),
    (0x0017, "secp256r1"),
    (0x0018, "secp384r1"),
    (0x11ec, "X25519MLKEM768"),
];
const VERSIONS: [(u16, &str); 2] = [(0x0303, "TLSv1_2"), (0x0304, "TLSv1_3")];
const SNI_LABELS: [&str; 3] = ["absent", "name", "ip_literal"];

fn slot_of(table: &[(u16, &str)], code: u16) -> usize {
    table
        .iter()
        .position(|(c, _)| *c == code)
        .unwrap_or(table.len())
}

/// Number of latency buckets: upper bounds 16 µs · 2^(i/2), i = 0..HISTO_BUCKETS-1
/// (about 16 µs to 70 s), plus an overflow slot.
pub const HISTO_BUCKETS: usize = 45;

/// The upper bound of bucket `i`, in microseconds.
pub fn bucket_bound_micros(i: usize) -> f64 {
    16.0 * 2f64.powf(i as f64 / 2.0)
}

/// A latency histogram in atomics (no lock, no allocation).
pub struct Histogram {
    buckets: [AtomicU64; HISTO_BUCKETS + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe_micros(&self, micros: u64) {
        // The bucket whose bound is the first >= micros: log2(micros/16) * 2, rounded up.
        let i = if micros <= 16 {
            0
        } else {
            let x = (micros as f64 / 16.0).log2() * 2.0;
            (x.ceil() as usize).min(HISTO_BUCKETS)
        };
        // Rounding at a bound can land one bucket low.
        let i = if i < HISTO_BUCKETS && bucket_bound_micros(i) < micros as f64 {
            i + 1
        } else {
            i
        };
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// A copy of the counts (per bucket, not cumulative).
    pub fn snapshot(&self) -> HistoSnapshot {
        HistoSnapshot {
            counts: std::array::from_fn(|i| self.buckets[i].load(Relaxed)),
            sum_micros: self.sum_micros.load(Relaxed),
        }
    }
}

/// Counts of a [`Histogram`] at one moment, or the difference of two.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistoSnapshot {
    /// Per bucket (last: above the largest bound).
    pub counts: [u64; HISTO_BUCKETS + 1],
    /// Sum of observations.
    pub sum_micros: u64,
}

impl Default for HistoSnapshot {
    fn default() -> Self {
        Self {
            counts: [0; HISTO_BUCKETS + 1],
            sum_micros: 0,
        }
    }
}

impl HistoSnapshot {
    /// `self - earlier`.
    pub fn since(&self, earlier: &HistoSnapshot) -> HistoSnapshot {
        HistoSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].saturating_sub(earlier.counts[i])),
            sum_micros: self.sum_micros.saturating_sub(earlier.sum_micros),
        }
    }

    /// Adds `other` in.
    pub fn add(&mut self, other: &HistoSnapshot) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a += b;
        }
        self.sum_micros += other.sum_micros;
    }

    /// Observations counted.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `q` quantile (0..1) in milliseconds, interpolated inside its bucket;
    /// `None` without observations.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).max(1.0);
        let mut seen = 0f64;
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            if seen + c as f64 >= rank {
                let lo = if i == 0 {
                    0.0
                } else {
                    bucket_bound_micros(i - 1)
                };
                let hi = if i < HISTO_BUCKETS {
                    bucket_bound_micros(i)
                } else {
                    lo * 2.0
                };
                let frac = (rank - seen) / c as f64;
                return Some((lo + (hi - lo) * frac) / 1000.0);
            }
            seen += c as f64;
        }
        None
    }
}

/// The data plane's telemetry sink. See the module documentation for the contract.
pub struct Telemetry {
    enabled: bool,
    /// Coarse wall-clock milliseconds, advanced by the aggregator every 100 ms (and at
    /// creation), so events need no clock read.
    now_ms: AtomicU64,
    queue: ArrayQueue<Event>,
    pub(crate) dropped: AtomicU64,
    pub(crate) handshakes_full: AtomicU64,
    pub(crate) handshakes_resumed: AtomicU64,
    pub(crate) failures: [AtomicU64; 5],
    pub(crate) versions: [AtomicU64; VERSIONS.len() + 1],
    pub(crate) suites: [AtomicU64; SUITES.len() + 1],
    pub(crate) groups: [AtomicU64; GROUPS.len() + 1],
    pub(crate) sni: [AtomicU64; 3],
    pub(crate) alpn_http11: AtomicU64,
    pub(crate) alpn_none: AtomicU64,
    pub(crate) handshake_latency: Histogram,
    /// Responses by route class and status class (1xx..5xx).
    pub(crate) responses: [[AtomicU64; 5]; 4],
    pub(crate) response_latency: [Histogram; 4],
    pub(crate) body_bytes: AtomicU64,
    pub(crate) open: AtomicI64,
    pub(crate) closed_by: [AtomicU64; 4],
    pub(crate) aborted_mid_body: AtomicU64,
    pub(crate) modes: [AtomicU64; 3],
    pub(crate) cache_hits: AtomicU64,
    pub(crate) cache_misses: AtomicU64,
    pub(crate) has_cache: AtomicBool,
}

impl Telemetry {
    /// A sink; `enabled = false` makes every recording a no-op.
    pub fn new(enabled: bool) -> Self {
        let zero = || AtomicU64::new(0);
        Self {
            enabled,
            now_ms: AtomicU64::new(wall_ms()),
            queue: ArrayQueue::new(EVENT_QUEUE_CAPACITY),
            dropped: zero(),
            handshakes_full: zero(),
            handshakes_resumed: zero(),
            failures: std::array::from_fn(|_| zero()),
            versions: std::array::from_fn(|_| zero()),
            suites: std::array::from_fn(|_| zero()),
            groups: std::array::from_fn(|_| zero()),
            sni: std::array::from_fn(|_| zero()),
            alpn_http11: zero(),
            alpn_none: zero(),
            handshake_latency: Histogram::default(),
            responses: std::array::from_fn(|_| std::array::from_fn(|_| zero())),
            response_latency: std::array::from_fn(|_| Histogram::default()),
            body_bytes: zero(),
            open: AtomicI64::new(0),
            closed_by: std::array::from_fn(|_| zero()),
            aborted_mid_body: zero(),
            modes: std::array::from_fn(|_| zero()),
            cache_hits: zero(),
            cache_misses: zero(),
            has_cache: AtomicBool::new(false),
        }
    }

    /// Whether recording is on (`telemetry.enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The coarse clock events are stamped with (unix ms, 100 ms resolution).
    pub fn now_ms(&self) -> u64 {
        self.now_ms.load(Relaxed)
    }

    pub(crate) fn tick_clock(&self) -> u64 {
        let now = wall_ms();
        self.now_ms.store(now, Relaxed);
        now
    }

    /// Tells the dashboard a cache exists (its hit ratio is then shown).
    pub fn set_has_cache(&self) {
        self.has_cache.store(true, Relaxed);
    }

    fn push(&self, e: Event) {
        if self.queue.push(e).is_err() {
            self.dropped.fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn pop(&self) -> Option<Event> {
        self.queue.pop()
    }

    /// A handshake completed.
    pub fn handshake(&self, ip: IpAddr, info: &HandshakeInfo) {
        if !self.enabled {
            return;
        }
        if info.resumed {
            self.handshakes_resumed.fetch_add(1, Relaxed);
        } else {
            self.handshakes_full.fetch_add(1, Relaxed);
        }
        self.versions[slot_of(&VERSIONS, info.version)].fetch_add(1, Relaxed);
        self.suites[slot_of(&SUITES, info.suite)].fetch_add(1, Relaxed);
        self.groups[slot_of(&GROUPS, info.group)].fetch_add(1, Relaxed);
        self.sni[usize::from(info.sni.min(2))].fetch_add(1, Relaxed);
        if info.alpn_http11 {
            self.alpn_http11.fetch_add(1, Relaxed);
        } else {
            self.alpn_none.fetch_add(1, Relaxed);
        }
        self.handshake_latency.observe_micros(info.micros);
        self.push(Event::Handshake {
            at_ms: self.now_ms(),
            ip,
            resumed: info.resumed,
        });
    }

    /// A handshake failed.
    pub fn handshake_failed(&self, why: HandshakeFailure) {
        if !self.enabled {
            return;
        }
        let i = HandshakeFailure::ALL
            .iter()
            .position(|f| *f == why)
            .unwrap_or(0);
        self.failures[i].fetch_add(1, Relaxed);
    }

    /// A connection was accepted and is now served as `mode` (call once, after the
    /// handshake and the offload decision for TLS).
    pub fn opened(&self, mode: ConnMode) {
        if !self.enabled {
            return;
        }
        self.open.fetch_add(1, Relaxed);
        self.modes[mode as usize].fetch_add(1, Relaxed);
    }

    /// A connection counted by [`Telemetry::opened`] ended.
    pub fn closed(
        &self,
        ip: IpAddr,
        closed_by: ClosedBy,
        last_status: u16,
        requests: u32,
        aborted_mid_body: bool,
    ) {
        if !self.enabled {
            return;
        }
        self.open.fetch_sub(1, Relaxed);
        self.closed_by[closed_by as usize].fetch_add(1, Relaxed);
        if aborted_mid_body {
            self.aborted_mid_body.fetch_add(1, Relaxed);
        }
        self.push(Event::Close {
            at_ms: self.now_ms(),
            ip,
            closed_by,
            last_status,
            requests,
            aborted_mid_body,
        });
    }

    /// A response was sent (or cut off). `path` and `user_agent` are read only for
    /// statuses of 400 and above. `cache`: `Some(true)` a cache hit, `Some(false)` a
    /// miss, `None` not from the cache.
    #[allow(clippy::too_many_arguments)]
    pub fn response(
        &self,
        ip: IpAddr,
        status: u16,
        route: RouteClass,
        body_bytes: u64,
        micros: u64,
        cache: Option<bool>,
        path: &[u8],
        user_agent: &[u8],
    ) {
        if !self.enabled {
            return;
        }
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        self.responses[route as usize][class].fetch_add(1, Relaxed);
        self.response_latency[route as usize].observe_micros(micros);
        self.body_bytes.fetch_add(body_bytes, Relaxed);
        match cache {
            Some(true) => self.cache_hits.fetch_add(1, Relaxed),
            Some(false) => self.cache_misses.fetch_add(1, Relaxed),
            None => 0,
        };
        if status >= 400 {
            self.push(Event::ErrorResponse {
                at_ms: self.now_ms(),
                ip,
                status,
                prefix: InlineStr::new(path_prefix(path)),
                user_agent: InlineStr::new(user_agent),
            });
        }
    }

    /// The Prometheus collector for these counters (register it once).
    pub fn collector(self: &std::sync::Arc<Self>) -> TelemetryCollector {
        TelemetryCollector {
            t: self.clone(),
            descs: Vec::new(),
        }
    }
}

/// The request path up to and including its last `/`, without the query.
pub fn path_prefix(target: &[u8]) -> &[u8] {
    let path = match target.iter().position(|&b| b == b'?') {
        Some(q) => &target[..q],
        None => target,
    };
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..=i],
        None => path,
    }
}

/// Unix time in milliseconds.
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Exposes [`Telemetry`] to Prometheus with conventional names and units.
pub struct TelemetryCollector {
    t: std::sync::Arc<Telemetry>,
    descs: Vec<Desc>,
}

fn label_pairs(labels: Vec<(&str, String)>) -> Vec<prometheus::proto::LabelPair> {
    labels
        .into_iter()
        .map(|(k, v)| {
            let mut l = prometheus::proto::LabelPair::default();
            l.set_name(k.to_string());
            l.set_value(v);
            l
        })
        .collect()
}

fn counter_family(
    name: &str,
    help: &str,
    samples: Vec<(Vec<(&str, String)>, f64)>,
) -> MetricFamily {
    use prometheus::proto::{Counter, Metric, MetricType};
    let mut mf = MetricFamily::default();
    mf.set_name(name.to_string());
    mf.set_help(help.to_string());
    mf.set_field_type(MetricType::COUNTER);
    for (labels, v) in samples {
        let mut m = Metric::default();
        let mut c = Counter::default();
        c.set_value(v);
        m.set_counter(c);
        m.set_label(label_pairs(labels));
        mf.mut_metric().push(m);
    }
    mf
}

fn histogram_family(
    name: &str,
    help: &str,
    samples: Vec<(Vec<(&str, String)>, HistoSnapshot)>,
) -> MetricFamily {
    use prometheus::proto::{Bucket, Histogram as PHisto, Metric, MetricType};
    let mut mf = MetricFamily::default();
    mf.set_name(name.to_string());
    mf.set_help(help.to_string());
    mf.set_field_type(MetricType::HISTOGRAM);
    for (labels, snap) in samples {
        let mut h = PHisto::default();
        let mut buckets = Vec::with_capacity(HISTO_BUCKETS / 2 + 1);
        let mut cumulative = 0u64;
        // Every other bound (a factor of 2 apart) keeps the exposition short.
        for i in 0..HISTO_BUCKETS {
            cumulative += snap.counts[i];
            if i % 2 == 0 || i + 1 == HISTO_BUCKETS {
                let mut b = Bucket::default();
                b.set_upper_bound(bucket_bound_micros(i) / 1e6);
                b.set_cumulative_count(cumulative);
                buckets.push(b);
            }
        }
        h.set_bucket(buckets);
        h.set_sample_count(snap.total());
        h.set_sample_sum(snap.sum_micros as f64 / 1e6);
        let mut m = Metric::default();
        m.set_histogram(h);
        m.set_label(label_pairs(labels));
        mf.mut_metric().push(m);
    }
    mf
}

impl Collector for TelemetryCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let t = &self.t;
        let ld = |a: &AtomicU64| a.load(Relaxed) as f64;
        let mut out = Vec::new();
        let named = |table: &[(u16, &str)], slots: &[AtomicU64], label: &'static str| {
            slots
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let name = table.get(i).map_or("other", |(_, n)| n).to_string();
                    (vec![(label, name)], ld(a))
                })
                .collect::<Vec<_>>()
        };
        out.push(counter_family(
            "edge_tls_handshakes_by_version_total",
            "Completed TLS handshakes by protocol version",
            named(&VERSIONS, &t.versions, "version"),
        ));
        out.push(counter_family(
            "edge_tls_handshakes_by_cipher_total",
            "Completed TLS handshakes by cipher suite",
            named(&SUITES, &t.suites, "cipher"),
        ));
        out.push(counter_family(
            "edge_tls_handshakes_by_group_total",
            "Completed TLS handshakes by key-exchange group (resumed TLS 1.2 ones have none: other)",
            named(&GROUPS, &t.groups, "group"),
        ));
        out.push(counter_family(
            "edge_tls_handshakes_by_sni_total",
            "Completed TLS handshakes by the client's SNI: a host name, none, or an IP literal (ignored)",
            SNI_LABELS
                .iter()
                .zip(t.sni.iter())
                .map(|(l, a)| {
                    let n = if *l == "ip_literal" { ld(&SNI_IP_LITERAL) } else { ld(a) };
                    (vec![("sni", l.to_string())], n)
                })
                .collect(),
        ));
        out.push(counter_family(
            "edge_log_lines_suppressed_total",
            "INFO/WARN/ERROR log lines dropped by the per-source rate limit (10 per 10 s)",
            vec![(vec![], ld(&LOG_LINES_SUPPRESSED))],
        ));
        out.push(counter_family(
            "edge_tls_handshakes_by_alpn_total",
            "Completed TLS handshakes by negotiated ALPN protocol",
            vec![
                (vec![("alpn", "http/1.1".into())], ld(&t.alpn_http11)),
                (vec![("alpn", "none".into())], ld(&t.alpn_none)),
            ],
        ));
        out.push(counter_family(
            "edge_tls_handshake_failures_total",
            "TLS handshakes that did not complete, by reason",
            HandshakeFailure::ALL
                .iter()
                .zip(t.failures.iter())
                .map(|(f, a)| (vec![("reason", f.label().to_string())], ld(a)))
                .collect(),
        ));
        out.push(histogram_family(
            "edge_tls_handshake_duration_seconds",
            "Time from the first ClientHello byte to the end of the handshake",
            vec![(vec![], t.handshake_latency.snapshot())],
        ));
        let mut responses = Vec::new();
        for (r, route) in RouteClass::ALL.iter().enumerate() {
            for (c, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                responses.push((
                    vec![
                        ("route", route.label().to_string()),
                        ("class", class.to_string()),
                    ],
                    ld(&t.responses[r][c]),
                ));
            }
        }
        out.push(counter_family(
            "edge_responses_by_route_total",
            "Responses by route class (manifest, segment, init, other) and status class",
            responses,
        ));
        out.push(histogram_family(
            "edge_response_duration_seconds",
            "Time from a complete request head to the last byte of its response handed to the kernel",
            RouteClass::ALL
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        vec![("route", r.label().to_string())],
                        t.response_latency[i].snapshot(),
                    )
                })
                .collect(),
        ));
        out.push(counter_family(
            "edge_connections_closed_by_total",
            "Connections ended, by who ended them",
            ClosedBy::ALL
                .iter()
                .zip(t.closed_by.iter())
                .map(|(c, a)| (vec![("closed_by", c.label().to_string())], ld(a)))
                .collect(),
        ));
        out.push(counter_family(
            "edge_connections_aborted_mid_body_total",
            "Connections the client left while a response body was being sent",
            vec![(vec![], ld(&t.aborted_mid_body))],
        ));
        out.push(counter_family(
            "edge_telemetry_events_dropped_total",
            "Telemetry events dropped because the aggregator fell behind (counters stay exact)",
            vec![(vec![], ld(&t.dropped))],
        ));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        for _ in 0..99 {
            h.observe_micros(1000);
        }
        h.observe_micros(100_000);
        let s = h.snapshot();
        assert_eq!(s.total(), 100);
        let p50 = s.quantile_ms(0.5).unwrap();
        assert!((0.7..=1.0).contains(&p50), "{p50}");
        let p99 = s.quantile_ms(0.99).unwrap();
        assert!(p99 <= 1.03, "{p99}");
        let p100 = s.quantile_ms(1.0).unwrap();
        assert!((90.0..=132.0).contains(&p100), "{p100}");
        // Every value lands in a bucket whose bound is at least the value.
        for v in [
            1u64,
            16,
            17,
            22,
            23,
            32,
            1000,
            65_536,
            10_000_000,
            u64::MAX / 4,
        ] {
            let h = Histogram::default();
            h.observe_micros(v);
            let i = h.snapshot().counts.iter().position(|&c| c == 1).unwrap();
            if i < HISTO_BUCKETS {
                assert!(bucket_bound_micros(i) >= v as f64, "{v} in {i}");
                if i > 0 {
                    assert!(bucket_bound_micros(i - 1) < v as f64, "{v} in {i}");
                }
            }
        }
    }

    #[test]
    fn inline_str_truncates_on_char_boundary() {
        let s = InlineStr::<4>::new("abé".as_bytes());
        assert_eq!(s.as_string(), "abé");
        let s = InlineStr::<3>::new("abé".as_bytes());
        assert_eq!(s.as_string(), "ab");
    }

    #[test]
    fn prefixes() {
        assert_eq!(path_prefix(b"/vod/clip/seg1.ts?x=/y"), b"/vod/clip/");
        assert_eq!(path_prefix(b"/a"), b"/");
        assert_eq!(path_prefix(b"*"), b"*");
    }

    #[test]
    fn disabled_records_nothing() {
        let t = Telemetry::new(false);
        t.handshake_failed(HandshakeFailure::Eof);
        t.opened(ConnMode::Plain);
        assert_eq!(t.failures[1].load(Relaxed), 0);
        assert_eq!(t.open.load(Relaxed), 0);
        assert!(t.pop().is_none());
    }

    #[test]
    fn full_queue_counts_drops() {
        let t = Telemetry::new(true);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..EVENT_QUEUE_CAPACITY + 10 {
            t.closed(ip, ClosedBy::Client, 200, 1, false);
        }
        assert_eq!(t.dropped.load(Relaxed), 10);
        assert_eq!(
            t.closed_by[0].load(Relaxed),
            EVENT_QUEUE_CAPACITY as u64 + 10
        );
    }
}
