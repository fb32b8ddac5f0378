//! The published streams (`[[streams]]`): ingested at start-up into a catalog the
//! handler asks for `/streams/...` and `/s/TOKEN/streams/...`, the signing keys,
//! the hold accounting of LL-HLS blocking requests, and the counters of the
//! signalling policy's answers.
//!
//! Deciding what to answer is [`manifest::decide`]'s job; this module renders
//! manifests into the connection's scratch buffer and names the segment file the
//! handler then serves like any other file (same body paths, ranges, limits).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use manifest::policy::Refusal;
use manifest::token::SigningKeys;
use manifest::{dash, hls, Decision, Live, Published, View};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::config::{Config, StreamSource, SymlinkPolicy};
use crate::handler::Site;
use crate::upstream::{self, OriginUrl};

/// Why the catalog could not be built; names the stream or the key file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// A stream's folder did not ingest.
    #[error("{0}")]
    Stream(#[from] manifest::DescriptionError),
    /// A stream's folder could not be opened for serving.
    #[error("stream `{name}`: source {path}: {reason}")]
    Source {
        /// The stream.
        name: String,
        /// The folder.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The CA file for https origins could not be read.
    #[error("manifests.origin_ca_file: {0}")]
    OriginCa(String),
    /// The key file could not be read or parsed.
    #[error("manifests.keys_file {path}: {reason}")]
    Keys {
        /// The file.
        path: String,
        /// What is wrong (never a secret).
        reason: String,
    },
}

/// One published stream: its current description and where its segments are.
#[derive(Debug)]
pub struct Entry {
    published: RwLock<Option<Arc<Published>>>,
    /// Where segments come from.
    pub source: Source,
    /// The latest rendering of each manifest, reused while the window it shows is
    /// current (a live playlist changes once per segment, a VOD one never).
    rendered: Mutex<HashMap<Slot, Cached>>,
}

/// Which manifest a cache slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Slot {
    Master,
    Media(usize),
    Mpd,
    Description,
}

/// A rendering and the moment it shows: (first, end) of the live window, and for
/// the MPD also the second (its publishTime and UTCTiming carry the clock).
#[derive(Debug)]
struct Cached {
    stamp: (u64, u64, u64),
    kind: Rendered,
    bytes: Arc<[u8]>,
}

/// Where a published stream's segments are.
#[derive(Debug)]
pub enum Source {
    /// A packaged folder, opened like the content root (origin mode).
    Folder(Site),
    /// An origin (edge mode): segment requests are redirected there until the
    /// segment cache lands.
    Origin(OriginUrl),
}

impl Entry {
    /// The description now; `None` for an edge-mode stream whose origin has not
    /// answered yet.
    pub fn current(&self) -> Option<Arc<Published>> {
        self.published
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, p: Published) {
        *self.published.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(p));
        self.rendered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    fn new(published: Option<Published>, source: Source) -> Self {
        Self {
            published: RwLock::new(published.map(Arc::new)),
            source,
            rendered: Mutex::new(HashMap::new()),
        }
    }

    /// The body for decision `d` about `p` at `now_ms`: the cached rendering while
    /// it is current, else a fresh one (then cached). `None` for decisions that are
    /// not rendered. Counts renders in `catalog`.
    pub fn rendered(
        &self,
        catalog: &Catalog,
        p: &Published,
        d: &Decision,
        now_ms: u64,
    ) -> Option<(Rendered, Arc<[u8]>)> {
        let slot = match *d {
            Decision::Master => Slot::Master,
            Decision::MediaPlaylist { rendition, .. } => Slot::Media(rendition),
            Decision::Mpd => Slot::Mpd,
            Decision::Description => Slot::Description,
            _ => return None,
        };
        let view = p.view(now_ms);
        let (first, end) = match view {
            View::Live { window, .. } => (window.first, window.end),
            View::Vod => (0, 0),
        };
        let second = if slot == Slot::Mpd && p.live.is_some() {
            now_ms / 1000
        } else {
            0
        };
        let stamp = (first, end, second);
        {
            let cache = self.rendered.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get(&slot).filter(|c| c.stamp == stamp) {
                return Some((c.kind, c.bytes.clone()));
            }
        }
        // Render outside the lock; a concurrent miss renders the same bytes. A live
        // MPD carries the render time (publishTime, UTCTiming): reused for at most
        // the rest of that second, its clock is less than a second old.
        let (kind, out) = render(p, slot, view);
        catalog.generated();
        let bytes: Arc<[u8]> = out.into();
        self.rendered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                slot,
                Cached {
                    stamp,
                    kind,
                    bytes: bytes.clone(),
                },
            );
        Some((kind, bytes))
    }
}

/// Refusal reasons in label order.
const REFUSALS: [&str; 7] = [
    "unknown",
    "token",
    "bad_query",
    "future",
    "not_started",
    "gone",
    "too_far_ahead",
];

fn refusal_index(r: Refusal) -> usize {
    match r {
        Refusal::Unknown => 0,
        Refusal::Token(_) => 1,
        Refusal::BadQuery(_) => 2,
        Refusal::Future => 3,
        Refusal::NotStarted => 4,
        Refusal::Gone => 5,
        Refusal::TooFarAhead => 6,
    }
}

/// The catalog's counters (registered with the data plane's metrics).
#[derive(Clone)]
struct CatalogMetrics {
    refusals: Vec<IntCounter>,
    holds: IntCounter,
    held: IntGauge,
    generated: IntCounter,
    origin_failures: IntCounter,
}

impl CatalogMetrics {
    fn new() -> (Self, Vec<Box<dyn prometheus::core::Collector>>) {
        let refusals = IntCounterVec::new(
            Opts::new(
                "edge_manifest_refusals_total",
                "Deliberate 4xx answers of the signalling policy, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let holds = IntCounter::new(
            "edge_playlist_holds_total",
            "LL-HLS blocking playlist requests held until their segment was complete",
        )
        .expect("valid metric");
        let held = IntGauge::new(
            "edge_playlist_holds_waiting",
            "LL-HLS blocking playlist requests being held now",
        )
        .expect("valid metric");
        let generated = IntCounter::new(
            "edge_manifests_generated_total",
            "Playlists, MPDs and descriptions rendered (cache misses: a live playlist is rendered once per segment)",
        )
        .expect("valid metric");
        let origin_failures = IntCounter::new(
            "edge_origin_description_failures_total",
            "Failed fetches of stream descriptions from an origin (edge mode)",
        )
        .expect("valid metric");
        let me = Self {
            refusals: REFUSALS
                .iter()
                .map(|r| refusals.with_label_values(&[r]))
                .collect(),
            holds: holds.clone(),
            held: held.clone(),
            generated: generated.clone(),
            origin_failures: origin_failures.clone(),
        };
        (
            me,
            vec![
                Box::new(refusals),
                Box::new(holds),
                Box::new(held),
                Box::new(generated),
                Box::new(origin_failures),
            ],
        )
    }
}

/// The published streams.
pub struct Catalog {
    streams: HashMap<String, Entry>,
    keys: Option<SigningKeys>,
    /// Longest hold of a blocking playlist request (`manifests.max_hold_ms`).
    pub max_hold: Duration,
    max_held: usize,
    held: AtomicUsize,
    metrics: CatalogMetrics,
    origin_tls: Option<Arc<rustls::ClientConfig>>,
    origin_refresh: Duration,
    origin_timeout: Duration,
    collectors: std::sync::Mutex<Vec<Box<dyn prometheus::core::Collector>>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("streams", &self.names())
            .field("keys", &self.keys)
            .field("max_hold", &self.max_hold)
            .finish_non_exhaustive()
    }
}

/// The current time in Unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Catalog {
    /// No streams: `/streams/` is served from files like any other path.
    pub fn empty() -> Self {
        let (metrics, collectors) = CatalogMetrics::new();
        Self {
            streams: HashMap::new(),
            keys: None,
            max_hold: Duration::from_secs(6),
            max_held: 0,
            held: AtomicUsize::new(0),
            metrics,
            origin_tls: None,
            origin_refresh: Duration::from_secs(5),
            origin_timeout: Duration::from_secs(5),
            collectors: std::sync::Mutex::new(collectors),
        }
    }

    /// Ingests every configured stream and reads the key file. Blocking (reads
    /// every segment's headers): call before serving, or from `spawn_blocking`.
    pub fn build(config: &Config) -> Result<Self, CatalogError> {
        let mut c = Self::empty();
        c.max_hold = config.manifests.max_hold;
        c.max_held = config.manifests.max_held_requests;
        if let Some(path) = &config.manifests.keys_file {
            c.keys = Some(read_keys(path)?);
        }
        c.origin_refresh = config.manifests.origin_refresh;
        c.origin_timeout = config.manifests.origin_timeout;
        if let Some(ca) = &config.manifests.origin_ca_file {
            c.origin_tls = Some(upstream::client_tls(ca).map_err(CatalogError::OriginCa)?);
        }
        for sc in &config.streams {
            let entry = match &sc.source {
                StreamSource::Folder(dir) => {
                    let stream = crate::ingest::ingest(dir, &sc.name)?;
                    let live = sc.live.map(|(epoch_ms, dvr_window_ms)| Live {
                        epoch_ms,
                        dvr_window_ms,
                    });
                    // Segment files are named by the validated description only;
                    // symlinks inside a packaged folder are refused like under the
                    // content root.
                    let site = Site::open(dir, SymlinkPolicy::Refuse, config.cors.clone())
                        .map_err(|e| CatalogError::Source {
                            name: sc.name.clone(),
                            path: dir.display().to_string(),
                            reason: e.to_string(),
                        })?;
                    Entry::new(
                        Some(Published::new(stream, live, sc.signed)),
                        Source::Folder(site),
                    )
                }
                StreamSource::Origin(url) => Entry::new(None, Source::Origin(url.clone())),
            };
            c.streams.insert(sc.name.clone(), entry);
        }
        Ok(c)
    }

    /// Fetches the description of every edge-mode stream from its origin now and
    /// then every `manifests.origin_refresh_secs`, until `shutdown`. A failed fetch
    /// keeps the last good description (a rate-limited warning and a counter).
    pub async fn refresh_from_origins(
        self: Arc<Self>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let names: Vec<String> = self
            .streams
            .iter()
            .filter(|(_, e)| matches!(e.source, Source::Origin(_)))
            .map(|(n, _)| n.clone())
            .collect();
        if names.is_empty() {
            return;
        }
        loop {
            for name in &names {
                self.refresh_one(name).await;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.origin_refresh) => {}
            }
        }
    }

    async fn refresh_one(&self, name: &str) {
        let Some(entry) = self.streams.get(name) else {
            return;
        };
        let Source::Origin(origin) = &entry.source else {
            return;
        };
        // With a key file (a fleet shares one), the edge signs its own request, so
        // the origin serves a signed stream's description to its edges only.
        let path = match &self.keys {
            Some(k) => {
                let expires = now_ms() / 1000 + 300;
                let token = k.sign(&format!("/streams/{name}/"), expires);
                format!("/s/{token}/streams/{name}/stream.json")
            }
            None => format!("/streams/{name}/stream.json"),
        };
        let result = upstream::get(
            origin,
            &path,
            self.origin_tls.as_ref(),
            self.origin_timeout,
            64 << 20,
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|body| {
            serde_json::from_slice::<manifest::Publication>(&body)
                .map_err(|e| format!("not a stream description: {e}"))
        })
        .and_then(|p| {
            if p.signed && self.keys.is_none() {
                return Err(
                    "the origin signs this stream but manifests.keys_file is not set here".into(),
                );
            }
            Published::from_publication(p, name).map_err(|e| e.to_string())
        });
        match result {
            Ok(p) => {
                if entry.current().is_none() {
                    tracing::info!(stream = name, origin = %origin.base(), "stream description fetched from the origin");
                }
                entry.set(p);
            }
            Err(e) => {
                self.metrics.origin_failures.inc();
                if crate::metrics::ORIGIN_FETCH_LOG.allow() {
                    tracing::warn!(stream = name, origin = %origin.base(), error = %e,
                        "fetching the stream description failed; serving the last good one (rate-limited)");
                }
            }
        }
    }

    /// Registers the catalog's counters (once).
    pub fn register(&self, registry: &Registry) {
        let mut collectors = self.collectors.lock().unwrap_or_else(|p| p.into_inner());
        for c in collectors.drain(..) {
            // Registering fails only for a duplicate name, which cannot happen once.
            let _ = registry.register(c);
        }
    }

    /// Whether no stream is published.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    /// The stream named `name`.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.streams.get(name)
    }

    /// The names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.streams.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    /// The signing keys.
    pub fn keys(&self) -> Option<&SigningKeys> {
        self.keys.as_ref()
    }

    /// Counts a refusal.
    pub fn refused(&self, r: Refusal) {
        self.metrics.refusals[refusal_index(r)].inc();
    }

    fn generated(&self) {
        self.metrics.generated.inc();
    }

    /// Takes a hold slot; `None` when `manifests.max_held_requests` are held
    /// already (the request is then answered at once).
    pub fn hold(&self) -> Option<HoldSlot<'_>> {
        let prev = self.held.fetch_add(1, Ordering::Relaxed);
        if prev >= self.max_held {
            self.held.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        self.metrics.holds.inc();
        self.metrics.held.inc();
        Some(HoldSlot { catalog: self })
    }
}

/// One held request; released on drop.
#[derive(Debug)]
pub struct HoldSlot<'a> {
    catalog: &'a Catalog,
}

impl Drop for HoldSlot<'_> {
    fn drop(&mut self) {
        self.catalog.held.fetch_sub(1, Ordering::Relaxed);
        self.catalog.metrics.held.dec();
    }
}

fn read_keys(path: &Path) -> Result<SigningKeys, CatalogError> {
    let err = |reason: String| CatalogError::Keys {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(path)
            .map_err(|e| err(e.to_string()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(err(format!(
                "mode {:o} lets other users read the secrets; chmod 600 it",
                mode & 0o777
            )));
        }
    }
    SigningKeys::parse(&text).map_err(|e| err(e.to_string()))
}

/// What a manifest route renders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rendered {
    /// An HLS playlist.
    Playlist,
    /// A DASH MPD.
    Mpd,
    /// The stream description (JSON).
    Description,
}

impl Rendered {
    /// Its Content-Type.
    pub fn content_type(self) -> &'static [u8] {
        match self {
            Rendered::Playlist => b"application/vnd.apple.mpegurl",
            Rendered::Mpd => b"application/dash+xml",
            Rendered::Description => b"application/json",
        }
    }
}

/// Renders `slot` of `p` as it is at `view`.
fn render(p: &Published, slot: Slot, view: View) -> (Rendered, Vec<u8>) {
    let (s, tl) = (&p.stream, &p.timeline);
    let mut out = Vec::new();
    let kind = match slot {
        Slot::Master => {
            hls::write_master(&hls::master(s), &mut out);
            Rendered::Playlist
        }
        Slot::Media(rendition) => {
            hls::write_media(&hls::media(s, &s.renditions[rendition], tl, view), &mut out);
            Rendered::Playlist
        }
        Slot::Mpd => {
            let mut text = String::new();
            dash::mpd(s, tl, view, &mut text);
            out = text.into_bytes();
            Rendered::Mpd
        }
        Slot::Description => {
            // Serialising plain data into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &p.publication());
            Rendered::Description
        }
    };
    (kind, out)
}
