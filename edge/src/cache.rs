//! Edge mode: the disk cache ([`storage`]) in front of an origin. Owns fill
//! coalescing (one origin fetch per key however many clients ask), the fill itself
//! (retries with backoff within a budget, freshness from the origin's headers or the
//! configured defaults, pass-through of objects over the size limit), and the cache
//! metrics.
//!
//! A fill is shared state ([`Fill`]) that clients stream from as bytes land: the
//! response head is known once the origin's is, and each client sends what has
//! arrived. A fill is stored only if it completed with exactly `Content-Length`
//! bytes (hyper checks the length; a reset, a short body or an idle timeout fails
//! it), and it stays in the coalescing map until the store indexed it, so a client
//! arriving in between is served from memory rather than refetching.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt as _;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use storage::{Cache, Meta};
use tokio::sync::{watch, Semaphore};

use crate::config::UpstreamSettings;
use crate::upstream::{self, AttemptError, OriginUrl};

/// Why a fill gave no response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FillError {
    /// The origin failed (5xx, refused, reset, malformed) after the retries: 502.
    BadGateway,
    /// The origin did not answer in time after the retries: 504.
    GatewayTimeout,
    /// The origin answered this 4xx (403, 404, 410, 451): relayed, not cached.
    Status(u16),
}

/// The response head of a fill.
#[derive(Debug, Clone)]
pub struct FillHead {
    /// Body length (the origin's `Content-Length`).
    pub len: u64,
    /// What responses carry.
    pub meta: Meta,
}

#[derive(Debug, Default)]
struct FillState {
    head: Option<Result<FillHead, FillError>>,
    chunks: std::collections::VecDeque<Bytes>,
    /// Body offset of the first chunk kept (a pass-through fill drops what every
    /// reader has sent).
    base: u64,
    received: u64,
    /// `Some(true)`: all bytes arrived; `Some(false)`: the fill broke.
    end: Option<bool>,
    /// Each registered reader's next position (`None`: slot free).
    readers: Vec<Option<u64>>,
}

impl FillState {
    /// The lowest position a reader still needs (`None` without readers).
    fn lowest_reader(&self) -> Option<u64> {
        self.readers.iter().flatten().copied().min()
    }

    /// Drops whole chunks below `pos`.
    fn drop_below(&mut self, pos: u64) {
        while let Some(c) = self.chunks.front() {
            if self.base + c.len() as u64 > pos {
                break;
            }
            self.base += c.len() as u64;
            self.chunks.pop_front();
        }
    }
}

/// How many bytes a pass-through fill may hold ahead of its slowest reader before
/// it stops reading from the origin.
const PASS_THROUGH_WINDOW: u64 = 8 << 20;

/// One origin fetch, shared by every client that asked for its key meanwhile.
#[derive(Debug)]
pub struct Fill {
    state: Mutex<FillState>,
    changed: watch::Sender<u64>,
}

/// A client's place in a fill: registered when the client joins, so a pass-through
/// fill keeps only what some reader still needs.
#[derive(Debug)]
pub struct FillReader {
    fill: Arc<Fill>,
    slot: usize,
}

impl FillReader {
    /// The fill.
    pub fn fill(&self) -> &Fill {
        &self.fill
    }

    /// Waits until bytes at `pos` have arrived and returns them (at most to the end
    /// of the chunk that holds `pos`); everything before `pos` counts as sent.
    pub async fn read_at(&self, pos: u64) -> Chunk {
        let fill = &self.fill;
        let mut rx = fill.changed.subscribe();
        loop {
            {
                let mut st = fill.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(r) = st.readers.get_mut(self.slot) {
                    *r = Some(pos);
                }
                if pos < st.received && pos >= st.base {
                    let mut start = st.base;
                    for c in &st.chunks {
                        let end = start + c.len() as u64;
                        if pos < end {
                            let data = c.slice((pos - start) as usize..);
                            drop(st);
                            // The producer may be waiting for readers to move on.
                            fill.changed.send_modify(|v| *v += 1);
                            return Chunk::Data(data);
                        }
                        start = end;
                    }
                }
                if st.end.is_some() || pos < st.base {
                    return Chunk::Failed;
                }
            }
            if rx.changed().await.is_err() {
                return Chunk::Failed;
            }
        }
    }
}

impl Drop for FillReader {
    fn drop(&mut self) {
        let mut st = self.fill.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = st.readers.get_mut(self.slot) {
            *r = None;
        }
        drop(st);
        self.fill.changed.send_modify(|v| *v += 1);
    }
}

/// What a reader gets next from a fill.
#[derive(Debug)]
pub enum Chunk {
    /// Bytes from the requested position.
    Data(Bytes),
    /// The fill broke before the position was reached.
    Failed,
}

impl Fill {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(FillState::default()),
            changed: watch::Sender::new(0),
        })
    }

    fn update(&self, f: impl FnOnce(&mut FillState)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.send_modify(|v| *v += 1);
    }

    /// Waits for the response head (bounded by the fill's own deadlines).
    pub async fn head(&self) -> Result<FillHead, FillError> {
        let mut rx = self.changed.subscribe();
        loop {
            if let Some(h) = self
                .state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .head
                .clone()
            {
                return h;
            }
            if rx.changed().await.is_err() {
                return Err(FillError::BadGateway);
            }
        }
    }

    /// Registers a reader at position 0.
    pub fn reader(self: &Arc<Self>) -> FillReader {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match st.readers.iter().position(Option::is_none) {
            Some(i) => {
                st.readers[i] = Some(0);
                i
            }
            None => {
                st.readers.push(Some(0));
                st.readers.len() - 1
            }
        };
        FillReader {
            fill: self.clone(),
            slot,
        }
    }
}

/// Removes a fill from the coalescing map if its task is dropped before it ends.
struct Unfinished {
    cache: Arc<EdgeCache>,
    key: Box<str>,
    fill: Arc<Fill>,
    armed: bool,
}

impl Drop for Unfinished {
    fn drop(&mut self) {
        if self.armed {
            self.fill.update(|st| {
                st.end.get_or_insert(false);
                if st.head.is_none() {
                    st.head = Some(Err(FillError::BadGateway));
                }
            });
            self.cache.forget(&self.key, &self.fill);
        }
    }
}

/// The cache's counters beyond the store's own.
struct FillMetrics {
    fills: IntCounterVec,
    coalesced: IntCounter,
    attempts: IntCounterVec,
    fills_running: IntGauge,
}

/// The edge's cache: the store, the origin, the fills in progress.
pub struct EdgeCache {
    /// The disk cache.
    pub store: Cache,
    origin: OriginUrl,
    tls: Option<Arc<rustls::ClientConfig>>,
    settings: UpstreamSettings,
    fills: Mutex<HashMap<Box<str>, Arc<Fill>>>,
    slots: Arc<Semaphore>,
    metrics: FillMetrics,
}

impl std::fmt::Debug for EdgeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeCache")
            .field("origin", &self.origin)
            .finish()
    }
}

/// Bytes of a decoded path that must be escaped in a request target.
const PATH_ENCODE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// Outcome labels of `edge_cache_fills_total`.
const FILL_RESULTS: [&str; 4] = ["stored", "uncached", "failed", "refused"];

impl EdgeCache {
    /// Opens the store and registers the metrics.
    pub fn new(
        store: Cache,
        settings: UpstreamSettings,
        tls: Option<Arc<rustls::ClientConfig>>,
        registry: &Registry,
    ) -> Self {
        let fills = IntCounterVec::new(
            Opts::new(
                "edge_cache_fills_total",
                "Origin fills by result: stored, uncached (pass-through or not cacheable), \
                 failed (no head or broken body), refused (the origin's 4xx)",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in FILL_RESULTS {
            fills.with_label_values(&[r]);
        }
        let attempts = IntCounterVec::new(
            Opts::new(
                "edge_upstream_attempts_total",
                "Requests to the origin by outcome (ok, status_5xx, status_4xx, connect, timeout, io)",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let metrics = FillMetrics {
            fills,
            coalesced: IntCounter::new(
                "edge_cache_coalesced_waiters_total",
                "Requests that joined a fill already in progress instead of fetching",
            )
            .expect("valid metric"),
            attempts,
            fills_running: IntGauge::new("edge_cache_fills_running", "Origin fills in progress")
                .expect("valid metric"),
        };
        for c in [
            Box::new(metrics.fills.clone()) as Box<dyn Collector>,
            Box::new(metrics.coalesced.clone()),
            Box::new(metrics.attempts.clone()),
            Box::new(metrics.fills_running.clone()),
            Box::new(StoreCollector::new(store.clone())),
        ] {
            let _ = registry.register(c);
        }
        Self {
            store,
            origin: settings.origin.clone(),
            tls,
            slots: Arc::new(Semaphore::new(settings.max_concurrent_fills)),
            settings,
            fills: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// The fill for `key` from the default origin: the one in progress, or a new one.
    pub fn join(self: &Arc<Self>, key: &str) -> Arc<Fill> {
        self.join_from(key, None)
    }

    /// The fill for `key`: the one in progress, or a new one fetching `source`'s path
    /// (default: `key`) from its origin (default: `[upstream]`). A signed stream's
    /// segment is keyed without its token but fetched with it, so the origin checks
    /// the token and every viewer shares one copy.
    pub fn join_from(self: &Arc<Self>, key: &str, source: Option<(&OriginUrl, &str)>) -> Arc<Fill> {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = fills.get(key) {
            self.metrics.coalesced.inc();
            return f.clone();
        }
        let fill = Fill::new();
        fills.insert(key.into(), fill.clone());
        drop(fills);
        let me = self.clone();
        let key: Box<str> = key.into();
        let (origin, path): (OriginUrl, Box<str>) = match source {
            Some((o, p)) => (o.clone(), p.into()),
            None => (self.origin.clone(), key.clone()),
        };
        let f = fill.clone();
        tokio::spawn(async move {
            // A fill cancelled with its runtime (a worker stopping) leaves the map.
            let mut guard = Unfinished {
                cache: me.clone(),
                key: key.clone(),
                fill: f.clone(),
                armed: true,
            };
            me.metrics.fills_running.inc();
            me.run(&key, &origin, &path, &f).await;
            me.metrics.fills_running.dec();
            guard.armed = false;
        });
        fill
    }

    /// Waits (at most `limit`) until no fill is in progress or waiting to be
    /// indexed: at shutdown, so that what clients were sent is kept.
    pub async fn drain(&self, limit: Duration) {
        let end = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < end
            && !self
                .fills
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty()
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn forget(&self, key: &str, fill: &Arc<Fill>) {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        if fills.get(key).is_some_and(|f| Arc::ptr_eq(f, fill)) {
            fills.remove(key);
        }
    }

    /// Runs one fill to its end.
    async fn run(self: &Arc<Self>, key: &str, origin: &OriginUrl, path: &str, fill: &Arc<Fill>) {
        let _slot = self.slots.clone().acquire_owned().await;
        let response = match self.open_with_retries(origin, path).await {
            Ok(r) => r,
            Err(e) => {
                let label = if matches!(e, FillError::Status(_)) {
                    "refused"
                } else {
                    "failed"
                };
                self.metrics.fills.with_label_values(&[label]).inc();
                fill.update(|st| {
                    st.head = Some(Err(e));
                    st.end = Some(false);
                });
                self.forget(key, fill);
                return;
            }
        };
        let headers = response.headers();
        let Some(len) = headers
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        else {
            // Without a length the head cannot be sent before the body is complete;
            // video origins send one. Treat as a broken origin.
            self.metrics.fills.with_label_values(&["failed"]).inc();
            fill.update(|st| {
                st.head = Some(Err(FillError::BadGateway));
                st.end = Some(false);
            });
            self.forget(key, fill);
            return;
        };
        let (meta, cacheable) = self.meta_of(key, headers);
        let stored = cacheable && len <= self.settings.max_object_bytes;
        if !stored {
            // Pass-through: clients that asked meanwhile share this fetch; later
            // ones start their own, so nothing large stays in memory past it.
            self.forget(key, fill);
        }
        fill.update(|st| {
            st.head = Some(Ok(FillHead {
                len,
                meta: meta.clone(),
            }))
        });
        let mut body = response.into_body();
        let idle = self.settings.body_idle_timeout;
        let mut changed = fill.changed.subscribe();
        let complete = loop {
            if !stored {
                // Pass-through: keep only what a reader still needs, and stop
                // reading from the origin while the slowest reader is a window
                // behind (or every reader has gone).
                let wait = {
                    let mut st = fill.state.lock().unwrap_or_else(|e| e.into_inner());
                    match st.lowest_reader() {
                        None => Some(true),
                        Some(low) => {
                            st.drop_below(low);
                            (st.received - st.base > PASS_THROUGH_WINDOW).then_some(false)
                        }
                    }
                };
                match wait {
                    Some(true) => break false,
                    Some(false) => {
                        if tokio::time::timeout(idle, changed.changed()).await.is_err() {
                            break false;
                        }
                        continue;
                    }
                    None => {}
                }
            }
            match tokio::time::timeout(idle, body.frame()).await {
                Err(_) | Ok(Some(Err(_))) => break false,
                Ok(None) => break true,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if !data.is_empty() {
                            let n = data.len() as u64;
                            fill.update(|st| {
                                st.received += n;
                                st.chunks.push_back(data);
                            });
                        }
                    }
                }
            }
        };
        let (complete, chunks) = {
            let st = fill.state.lock().unwrap_or_else(|e| e.into_inner());
            let chunks: Vec<Bytes> = if stored {
                st.chunks.iter().cloned().collect()
            } else {
                Vec::new()
            };
            (complete && st.received == len, chunks)
        };
        fill.update(|st| st.end = Some(complete));
        if !complete {
            self.metrics.fills.with_label_values(&["failed"]).inc();
            self.forget(key, fill);
            return;
        }
        if !stored {
            self.metrics.fills.with_label_values(&["uncached"]).inc();
            return;
        }
        let small = (len as usize) <= 64 * 1024;
        let hot: Option<Arc<[u8]>> = small.then(|| {
            let mut v = Vec::with_capacity(len as usize);
            for c in &chunks {
                v.extend_from_slice(c);
            }
            v.into()
        });
        // The disk writer may be behind (a burst, a slow sync): wait for room a
        // little, without holding a worker, before giving up on storing.
        let mut tries = 0;
        loop {
            let me = self.clone();
            let done_key: Box<str> = key.into();
            let done_fill = fill.clone();
            let hot = hot.clone();
            let inserted = self
                .store
                .insert(key, meta.clone(), chunks.clone(), move |ok| {
                    // Runs on the disk writer's thread once the object is durable and
                    // indexed (or could not be): the fill's memory goes then.
                    if ok {
                        if let Some(body) = hot {
                            me.store.keep_hot(&done_key, body);
                        }
                    }
                    me.forget(&done_key, &done_fill);
                });
            match inserted {
                Ok(()) => {
                    self.metrics.fills.with_label_values(&["stored"]).inc();
                    return;
                }
                Err(storage::InsertError::Busy) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(_) => {
                    self.metrics.fills.with_label_values(&["uncached"]).inc();
                    self.forget(key, fill);
                    return;
                }
            }
        }
    }

    /// Opens the origin's response for `key`, retrying 5xx, refused connections and
    /// timeouts with exponential backoff within the retry budget.
    async fn open_with_retries(
        &self,
        origin: &OriginUrl,
        rel: &str,
    ) -> Result<hyper::Response<hyper::body::Incoming>, FillError> {
        let s = &self.settings;
        // A normalised (decoded) path: encode it again for the wire.
        let path = format!(
            "/{}",
            percent_encoding::utf8_percent_encode(rel, PATH_ENCODE)
        );
        let budget_end = tokio::time::Instant::now() + s.retry_budget;
        let mut backoff = Duration::from_millis(100);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = upstream::open(
                origin,
                &path,
                self.tls.as_ref(),
                s.connect_timeout,
                s.header_timeout,
            )
            .await;
            let (label, err) = match outcome {
                Ok(r) if r.status() == hyper::StatusCode::OK => {
                    self.metrics.attempts.with_label_values(&["ok"]).inc();
                    return Ok(r);
                }
                Ok(r) if r.status().is_server_error() => ("status_5xx", FillError::BadGateway),
                Ok(r) => {
                    self.metrics
                        .attempts
                        .with_label_values(&["status_4xx"])
                        .inc();
                    let code = r.status().as_u16();
                    return Err(match code {
                        403 | 404 | 410 | 451 => FillError::Status(code),
                        _ => FillError::BadGateway,
                    });
                }
                Err(AttemptError::Connect(_)) => ("connect", FillError::BadGateway),
                Err(AttemptError::Timeout) => ("timeout", FillError::GatewayTimeout),
                Err(AttemptError::Io(_)) => ("io", FillError::BadGateway),
            };
            self.metrics.attempts.with_label_values(&[label]).inc();
            let now = tokio::time::Instant::now();
            if attempt >= s.max_attempts || now + backoff > budget_end {
                return Err(err);
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }

    /// Response metadata and whether the object may be stored, from the origin's
    /// headers and the configured defaults.
    fn meta_of(&self, key: &str, h: &hyper::HeaderMap) -> (Meta, bool) {
        let text = |name: hyper::header::HeaderName| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty() && s.bytes().all(|b| (0x20..0x7f).contains(&b)))
        };
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let now = now_ms / 1000;
        let cache_control = text(hyper::header::CACHE_CONTROL);
        let mut cacheable = true;
        let mut ttl: Option<u64> = None;
        if let Some(cc) = &cache_control {
            for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
                if d == "no-store" || d == "private" || d == "no-cache" {
                    cacheable = false;
                } else if let Some(v) = d.strip_prefix("s-maxage=") {
                    ttl = v.parse().ok().or(ttl);
                } else if let Some(v) = d.strip_prefix("max-age=") {
                    if ttl.is_none() {
                        ttl = v.parse().ok();
                    }
                }
            }
        }
        if ttl.is_none() {
            if let Some(exp) = text(hyper::header::EXPIRES) {
                ttl = Some(
                    httpdate::parse_http_date(&exp)
                        .ok()
                        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs().saturating_sub(now)),
                );
            }
        }
        let ttl = ttl.unwrap_or_else(|| {
            match crate::http::media_kind(key) {
                crate::http::MediaKind::Playlist => self.settings.playlist_ttl,
                crate::http::MediaKind::Segment => self.settings.segment_ttl,
                crate::http::MediaKind::Other => self.settings.other_ttl,
            }
            .as_secs()
        });
        if ttl == 0 {
            cacheable = false;
        }
        let content_type = text(hyper::header::CONTENT_TYPE)
            .unwrap_or_else(|| crate::http::content_type(key).to_string());
        let last_modified = text(hyper::header::LAST_MODIFIED)
            .and_then(|v| httpdate::parse_http_date(&v).ok())
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs());
        let etag = text(hyper::header::ETAG)
            .filter(|e| e.starts_with('"') && e.ends_with('"') && e.len() >= 2);
        (
            Meta {
                content_type,
                etag,
                last_modified,
                cache_control,
                expires_ms: now_ms + ttl * 1000,
            },
            cacheable,
        )
    }
}

/// Exposes the store's counters and per-disk state at scrape time.
struct StoreCollector {
    store: Cache,
    descs: Vec<Desc>,
}

impl StoreCollector {
    fn new(store: Cache) -> Self {
        let descs = Self::families(&store)
            .iter()
            .flat_map(|c| c.desc().into_iter().cloned().collect::<Vec<_>>())
            .collect();
        Self { store, descs }
    }

    fn families(store: &Cache) -> Vec<Box<dyn Collector>> {
        use std::sync::atomic::Ordering::Relaxed;
        let s = store.stats();
        let counter = |name: &str, help: &str, v: u64| -> Box<dyn Collector> {
            let c = IntCounter::new(name, help).expect("valid metric");
            c.inc_by(v);
            Box::new(c)
        };
        let gauge = |name: &str, help: &str, v: i64| -> Box<dyn Collector> {
            let g = IntGauge::new(name, help).expect("valid metric");
            g.set(v);
            Box::new(g)
        };
        let disks = store.disks();
        let used = IntGaugeVec::new(
            Opts::new(
                "edge_cache_disk_used_bytes",
                "Ring bytes holding data, per disk",
            ),
            &["disk"],
        )
        .expect("valid metric");
        let size = IntGaugeVec::new(
            Opts::new("edge_cache_disk_size_bytes", "Container size, per disk"),
            &["disk"],
        )
        .expect("valid metric");
        let serving = IntGaugeVec::new(
            Opts::new(
                "edge_cache_disk_in_service",
                "1 while the disk serves, per disk",
            ),
            &["disk"],
        )
        .expect("valid metric");
        let cold = IntGaugeVec::new(
            Opts::new(
                "edge_cache_disk_cold_reads",
                "Cold reads queued on the disk's I/O pool since start, per disk",
            ),
            &["disk"],
        )
        .expect("valid metric");
        for d in &disks {
            let p = d.path.display().to_string();
            used.with_label_values(&[&p]).set(d.used as i64);
            size.with_label_values(&[&p]).set(d.size as i64);
            serving
                .with_label_values(&[&p])
                .set(i64::from(d.in_service));
            cold.with_label_values(&[&p]).set(d.cold_reads as i64);
        }
        vec![
            counter(
                "edge_cache_hits_total",
                "Fresh objects served from the cache",
                s.hits.load(Relaxed),
            ),
            counter(
                "edge_cache_misses_total",
                "Lookups that found nothing usable",
                s.misses.load(Relaxed),
            ),
            counter(
                "edge_cache_stale_total",
                "Lookups that found an expired object (refetched)",
                s.stale.load(Relaxed),
            ),
            counter(
                "edge_cache_stored_total",
                "Objects written, synced and indexed",
                s.stored.load(Relaxed),
            ),
            counter(
                "edge_cache_store_failures_total",
                "Objects not stored: no disk, too large, or a write or sync failed",
                s.store_failures.load(Relaxed),
            ),
            counter(
                "edge_cache_evictions_total",
                "Objects overwritten by the ring",
                s.evictions.load(Relaxed),
            ),
            counter(
                "edge_cache_purged_total",
                "Objects purged through the admin API",
                s.purged.load(Relaxed),
            ),
            counter(
                "edge_cache_written_bytes_total",
                "Bytes written to the containers",
                s.bytes_written.load(Relaxed),
            ),
            counter(
                "edge_cache_writer_holds_total",
                "Times a disk writer waited for a reader to leave a region",
                s.writer_holds.load(Relaxed),
            ),
            counter(
                "edge_cache_disk_failures_total",
                "Disks taken out of service after I/O errors",
                s.disk_failures.load(Relaxed),
            ),
            gauge(
                "edge_cache_objects",
                "Objects in the index",
                s.objects.load(Relaxed) as i64,
            ),
            gauge(
                "edge_cache_disks_in_service",
                "Disks serving",
                disks.iter().filter(|d| d.in_service).count() as i64,
            ),
            Box::new(used),
            Box::new(size),
            Box::new(serving),
            Box::new(cold),
        ]
    }
}

impl Collector for StoreCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        Self::families(&self.store)
            .iter()
            .flat_map(|c| c.collect())
            .collect()
    }
}

impl web_ui::Purge for EdgeCache {
    fn purge_key(&self, key: &str) -> Result<u64, String> {
        let mut rel = String::new();
        crate::http::path::normalise(key.as_bytes(), &mut rel)
            .map_err(|e| format!("`{key}`: {e}"))?;
        Ok(u64::from(self.store.purge(&rel)))
    }

    fn purge_prefix(&self, prefix: &str) -> Result<u64, String> {
        let rel = prefix.trim_start_matches('/');
        if rel.split('/').any(|s| s == ".." || s == ".") || rel.contains(['\0', '\\']) {
            return Err(format!(
                "`{prefix}`: a prefix is a plain path (no . or .. segments)"
            ));
        }
        Ok(self.store.purge_prefix(rel))
    }
}
