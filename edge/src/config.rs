//! Configuration: the raw TOML form, its validation, and the validated [`Config`].
//!
//! The raw structs mirror the file (`deny_unknown_fields`: a typo must fail loudly);
//! [`Config::load`] reads a file and [`RawConfig::validate`] resolves it once into typed
//! values. Only the validated [`Config`] leaves this module. Every key, its default and
//! its meaning is documented in `edge.example.toml` at the repository root.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration error; its `Display` names the file, the key and what was wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read config: {source}")]
    Read {
        /// The config file.
        file: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for our schema (unknown key, wrong type, ...).
    #[error("{file}: {message}")]
    Parse {
        /// The config file.
        file: PathBuf,
        /// toml's message, which names the key and the line.
        message: String,
    },
    /// A key has a value of the right type but outside what we accept.
    #[error("{file}: key `{key}`: {message}")]
    Invalid {
        /// The config file (or `<built-in>` for programmatic configs).
        file: PathBuf,
        /// The dotted key, e.g. `limits.max_head_bytes`.
        key: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
}

/// What to do about kernel TLS offload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KtlsMode {
    /// Offload when the start-up probe says the kernel can, else serve TLS in userspace.
    Auto,
    /// Never offload.
    Off,
    /// Refuse to start unless the kernel can offload.
    Require,
}

/// Which symlinks under the content root are followed (`content.symlinks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SymlinkPolicy {
    /// No symlink anywhere in a request path is followed (404): nothing outside the
    /// root is reachable. The default.
    Refuse,
    /// Symlinks are followed, but a file whose real path lies outside the root is 404.
    WithinRoot,
    /// Symlinks are followed wherever they lead (the operator vouches for the tree).
    Follow,
}

/// The `[server]` table as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_tls_listen")]
    tls_listen: String,
    http_listen: Option<String>,
    #[serde(default = "default_admin_listen")]
    admin_listen: String,
    #[serde(default = "default_state_dir")]
    state_dir: PathBuf,
    worker_threads: Option<usize>,
    #[serde(default = "default_shutdown_grace_secs")]
    shutdown_grace_secs: u64,
    #[serde(default)]
    close_after_error: bool,
    #[serde(default)]
    transparent_huge_pages: bool,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            tls_listen: default_tls_listen(),
            http_listen: None,
            admin_listen: default_admin_listen(),
            state_dir: default_state_dir(),
            worker_threads: None,
            shutdown_grace_secs: default_shutdown_grace_secs(),
            close_after_error: false,
            transparent_huge_pages: false,
        }
    }
}

fn default_tls_listen() -> String {
    "0.0.0.0:8443".into()
}
fn default_admin_listen() -> String {
    "127.0.0.1:9090".into()
}
fn default_state_dir() -> PathBuf {
    "/var/lib/edge".into()
}
fn default_shutdown_grace_secs() -> u64 {
    10
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawContent {
    #[serde(default = "default_root")]
    root: PathBuf,
    #[serde(default = "default_symlinks")]
    symlinks: SymlinkPolicy,
    #[serde(default)]
    open_file_cache: u64,
    #[serde(default = "default_open_file_cache_valid_ms")]
    open_file_cache_valid_ms: u64,
}

impl Default for RawContent {
    fn default() -> Self {
        Self {
            root: default_root(),
            symlinks: default_symlinks(),
            open_file_cache: 0,
            open_file_cache_valid_ms: default_open_file_cache_valid_ms(),
        }
    }
}

fn default_open_file_cache_valid_ms() -> u64 {
    1000
}

/// Most files `content.open_file_cache` may keep open per worker thread.
pub const MAX_OPEN_FILE_CACHE: u64 = 1 << 20;

/// `content.open_file_cache` and `content.open_file_cache_valid_ms`: content files
/// each worker thread keeps open and shares among the responses that send them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileCache {
    /// Files kept open per worker thread (least recently used dropped first); 0 =
    /// off: every response opens and `fstat`s its file.
    pub entries: usize,
    /// How long an opened file is reused before the next request for it opens the
    /// path again (a file replaced or removed is seen within this time).
    pub valid: Duration,
}

impl OpenFileCache {
    /// No cache: every response opens its file.
    pub const OFF: Self = Self {
        entries: 0,
        valid: Duration::from_secs(1),
    };
}

fn default_symlinks() -> SymlinkPolicy {
    SymlinkPolicy::Refuse
}

fn default_root() -> PathBuf {
    "/srv/edge/www".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_head_bytes: usize,
    max_headers: usize,
    header_read_timeout_secs: u64,
    idle_timeout_secs: u64,
    send_timeout_secs: u64,
    tls_handshake_timeout_secs: u64,
    max_requests_per_connection: u32,
    /// Default: 16384, or what half of this machine's memory holds at worst.
    max_connections: Option<usize>,
    userspace_tls_buffer_bytes: usize,
    min_send_rate_bytes_per_sec: u64,
    /// Default: 8192, or `max_head_bytes` when that is smaller.
    max_request_target_bytes: Option<usize>,
    lingering_close_secs: u64,
    max_tls_handshakes_per_worker: usize,
    tls_handshakes_per_turn: usize,
    tls_body_buffers_per_turn: usize,
    tcp_notsent_lowat_bytes: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 * 1024,
            max_headers: 64,
            header_read_timeout_secs: 10,
            idle_timeout_secs: 75,
            send_timeout_secs: 60,
            tls_handshake_timeout_secs: 10,
            max_requests_per_connection: 10_000,
            max_connections: None,
            userspace_tls_buffer_bytes: 64 * 1024,
            min_send_rate_bytes_per_sec: DEFAULT_MIN_SEND_RATE,
            max_request_target_bytes: None,
            lingering_close_secs: 5,
            max_tls_handshakes_per_worker: 256,
            tls_handshakes_per_turn: 4,
            tls_body_buffers_per_turn: 2,
            tcp_notsent_lowat_bytes: DEFAULT_TCP_NOTSENT_LOWAT,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    cert_path: Option<PathBuf>,
    key_path: Option<PathBuf>,
    cipher_suites: Option<Vec<String>>,
    ktls: KtlsMode,
    ktls_max_bytes_per_connection: u64,
    ticket_keys_file: Option<PathBuf>,
    ticket_lifetime_secs: u64,
}

impl Default for RawTls {
    fn default() -> Self {
        Self {
            cert_path: None,
            key_path: None,
            cipher_suites: None,
            ktls: KtlsMode::Auto,
            ktls_max_bytes_per_connection: DEFAULT_KTLS_MAX_BYTES,
            ticket_keys_file: None,
            ticket_lifetime_secs: DEFAULT_TICKET_LIFETIME_SECS,
        }
    }
}

/// Default `tls.ticket_lifetime_secs`: 6 hours.
pub const DEFAULT_TICKET_LIFETIME_SECS: u64 = 6 * 3600;
/// Most `tls.ticket_lifetime_secs` (RFC 8446 4.6.1: 7 days).
pub const MAX_TICKET_LIFETIME_SECS: u64 = 7 * 86_400;

/// `[telemetry]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTelemetry {
    enabled: bool,
    store: Option<PathBuf>,
    storm: RawStorm,
}

impl Default for RawTelemetry {
    fn default() -> Self {
        Self {
            enabled: true,
            store: None,
            storm: RawStorm::default(),
        }
    }
}

/// `[telemetry.storm]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorm {
    factor: f64,
    min_excess_per_sec: f64,
    onset_secs: u32,
    end_secs: u32,
    warmup_secs: u32,
    reconnect_window_secs: u32,
    baseline_half_life_secs: u32,
    correlation_window_secs: u32,
    retention: usize,
}

impl Default for RawStorm {
    fn default() -> Self {
        let d = web_ui::dashboard::StormSettings::default();
        Self {
            factor: d.factor,
            min_excess_per_sec: d.min_excess_per_sec,
            onset_secs: d.onset_secs,
            end_secs: d.end_secs,
            warmup_secs: d.warmup_secs,
            reconnect_window_secs: d.reconnect_window_secs,
            baseline_half_life_secs: d.baseline_half_life_secs,
            correlation_window_secs: d.correlation_window_secs,
            retention: d.retention,
        }
    }
}

/// `[telemetry]`: handshake and response telemetry, the storm detector.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    /// Record events (off: every recording is a no-op; the dashboard shows nothing).
    pub enabled: bool,
    /// The sled database storms are kept in.
    pub store: PathBuf,
    /// The detector's thresholds.
    pub storm: web_ui::dashboard::StormSettings,
}

/// Default cap on bytes sent over one kTLS connection: 64 GiB, far below the
/// 2^24.5 full-size records AES-GCM allows under one key (about 380 GiB for 16 KiB
/// records). Without KeyUpdate support in our kTLS path the connection is closed
/// gracefully after the response that crosses this cap.
pub const DEFAULT_KTLS_MAX_BYTES: u64 = 64 << 30;
/// The hard ceiling for `tls.ktls_max_bytes_per_connection` (AES-GCM's limit with margin).
pub const MAX_KTLS_MAX_BYTES: u64 = 256 << 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCors {
    allowed_origins: Vec<String>,
    preflight_max_age_secs: u64,
}

impl Default for RawCors {
    fn default() -> Self {
        Self {
            allowed_origins: vec!["*".into()],
            preflight_max_age_secs: 86_400,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    token_file: Option<PathBuf>,
    allow_non_loopback: bool,
}

/// Default `limits.min_send_rate_bytes_per_sec`: 16 KiB/s (128 kbit/s), below any
/// usable video bitrate.
pub const DEFAULT_MIN_SEND_RATE: u64 = 16 * 1024;
/// Default `limits.tcp_notsent_lowat_bytes`: 1 MiB, a quarter of what an unbounded
/// socket may queue unsent (its whole send buffer, up to `net.ipv4.tcp_wmem`'s
/// 4 MiB). Smaller bounds (128-512 KiB) made the kernel send smaller packets and
/// cost CPU per byte at a few hundred fast connections; see `edge.example.toml`.
pub const DEFAULT_TCP_NOTSENT_LOWAT: u32 = 1 << 20;
/// Default `limits.max_connections` on a machine with the memory for it.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Upper bound of `limits.max_connections` (a descriptor each; far above what one
/// process's `RLIMIT_NOFILE` allows in practice).
pub const MAX_CONNECTIONS_CEILING: usize = 4 << 20;
/// Memory one connection can hold at worst besides its head buffer and the pooled
/// userspace-TLS body buffer: rustls' record buffers in both directions, the response
/// head, and task and socket bookkeeping (an estimate, used for the start-up check).
pub const PER_CONNECTION_OVERHEAD_BYTES: usize = 48 * 1024;

/// The whole file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    content: RawContent,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    cors: RawCors,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    manifests: RawManifests,
    #[serde(default)]
    telemetry: RawTelemetry,
    #[serde(default)]
    streams: Vec<RawStream>,
    upstream: Option<RawUpstream>,
    storage: Option<RawStorage>,
}

/// The `[upstream]` table as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
    origin: String,
    ca_file: Option<PathBuf>,
    connect_timeout_ms: u64,
    header_timeout_ms: u64,
    body_idle_timeout_ms: u64,
    retry_budget_ms: u64,
    max_attempts: u32,
    max_object_bytes: Option<u64>,
    max_concurrent_fills: usize,
    segment_ttl_secs: u64,
    playlist_ttl_secs: u64,
    other_ttl_secs: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            origin: String::new(),
            ca_file: None,
            connect_timeout_ms: 2000,
            header_timeout_ms: 5000,
            body_idle_timeout_ms: 10_000,
            retry_budget_ms: 4000,
            max_attempts: 3,
            max_object_bytes: None,
            max_concurrent_fills: 256,
            segment_ttl_secs: 86_400,
            playlist_ttl_secs: 2,
            other_ttl_secs: 3600,
        }
    }
}

/// The `[storage]` table as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    index_dir: Option<PathBuf>,
    hot_entries: usize,
    hot_bodies: usize,
    hot_body_max_bytes: usize,
    io_threads_per_disk: usize,
    io_queue_per_disk: usize,
    write_queue: usize,
    disks: Vec<RawDisk>,
}

impl Default for RawStorage {
    fn default() -> Self {
        Self {
            index_dir: None,
            hot_entries: 100_000,
            hot_bodies: 1024,
            hot_body_max_bytes: 64 * 1024,
            io_threads_per_disk: 4,
            io_queue_per_disk: 256,
            write_queue: 256,
            disks: Vec::new(),
        }
    }
}

/// One `[[storage.disks]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisk {
    path: PathBuf,
    size_mib: u64,
}

/// Validated `[upstream]` settings: the origin an edge fills its cache from.
#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    /// The origin.
    pub origin: crate::upstream::OriginUrl,
    /// CA certificates for an https origin.
    pub ca_file: Option<PathBuf>,
    /// Connecting (TCP and TLS) may take this long per attempt.
    pub connect_timeout: Duration,
    /// From request to response head, per attempt.
    pub header_timeout: Duration,
    /// Longest gap between body bytes.
    pub body_idle_timeout: Duration,
    /// Total time for retries of 5xx, refused connections and timeouts.
    pub retry_budget: Duration,
    /// Attempts per fill (1 = no retry).
    pub max_attempts: u32,
    /// Larger objects pass through uncached.
    pub max_object_bytes: u64,
    /// Fills running at once; more wait.
    pub max_concurrent_fills: usize,
    /// Freshness when the origin says nothing: segments and init segments.
    pub segment_ttl: Duration,
    /// Freshness when the origin says nothing: playlists and MPDs.
    pub playlist_ttl: Duration,
    /// Freshness when the origin says nothing: anything else.
    pub other_ttl: Duration,
}

/// Validated cache settings (`[upstream]` with `[storage]`).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// The origin.
    pub upstream: UpstreamSettings,
    /// The disks and the index.
    pub storage: storage::CacheConfig,
}

/// The `[manifests]` table as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawManifests {
    keys_file: Option<PathBuf>,
    max_hold_ms: u64,
    max_held_requests: usize,
    origin_ca_file: Option<PathBuf>,
    origin_refresh_secs: u64,
    origin_timeout_secs: u64,
}

impl Default for RawManifests {
    fn default() -> Self {
        Self {
            keys_file: None,
            max_hold_ms: 6000,
            max_held_requests: 10_000,
            origin_ca_file: None,
            origin_refresh_secs: 5,
            origin_timeout_secs: 5,
        }
    }
}

/// One `[[streams]]` entry as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStream {
    name: String,
    source: Option<PathBuf>,
    origin: Option<String>,
    #[serde(default)]
    live: bool,
    #[serde(default = "default_dvr_window_secs")]
    dvr_window_secs: u64,
    #[serde(default)]
    epoch_secs: u64,
    #[serde(default)]
    signed: bool,
}

fn default_dvr_window_secs() -> u64 {
    30
}

/// Longest `streams.dvr_window_secs`: a week.
pub const MAX_DVR_WINDOW_SECS: u64 = 7 * 86_400;

/// Where a published stream comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamSource {
    /// A packaged folder, ingested at start-up (origin mode).
    Folder(PathBuf),
    /// An origin's `stream.json` (edge mode): manifests are rendered here from the
    /// origin's description, refreshed every `manifests.origin_refresh_secs`.
    Origin(crate::upstream::OriginUrl),
}

/// A validated `[[streams]]` entry: published at `/streams/NAME/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// URL-safe name.
    pub name: String,
    /// Where its description comes from.
    pub source: StreamSource,
    /// `Some((epoch in Unix ms, DVR window in ms))` for a looping live channel
    /// (folders only; an origin's description carries its own).
    pub live: Option<(u64, u64)>,
    /// Whether requests need a signed token.
    pub signed: bool,
}

/// Validated `[manifests]` settings.
#[derive(Debug, Clone)]
pub struct ManifestSettings {
    /// The signed-URL key file (required when a stream is signed).
    pub keys_file: Option<PathBuf>,
    /// Longest time an LL-HLS blocking playlist request is held.
    pub max_hold: Duration,
    /// Most requests held at once; beyond, a blocking request is answered at once.
    pub max_held_requests: usize,
    /// Trust anchors (PEM) for https origins.
    pub origin_ca_file: Option<PathBuf>,
    /// How often an edge refetches an origin's stream description.
    pub origin_refresh: Duration,
    /// Deadline of one description fetch.
    pub origin_timeout: Duration,
}

/// Validated limits. Each is documented in `edge.example.toml`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request head (request line + headers) accepted; larger gets 431.
    pub max_head_bytes: NonZeroUsize,
    /// Most header lines in one request; more gets 431.
    pub max_headers: NonZeroUsize,
    /// Time allowed from the first byte of a head to its end.
    pub header_read_timeout: Duration,
    /// Time a keep-alive connection may sit idle between requests.
    pub idle_timeout: Duration,
    /// Longest wait for any sending progress; also the head start a response gets
    /// before `min_send_rate` applies.
    pub send_timeout: Duration,
    /// Bytes per second a response must keep up after its first `send_timeout`
    /// (0 = no rate floor).
    pub min_send_rate: u64,
    /// Longest request target accepted; longer gets 414.
    pub max_request_target_bytes: NonZeroUsize,
    /// Time allowed for a TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Requests served on one connection before it is closed (after the response).
    pub max_requests_per_connection: NonZeroU32,
    /// Client connections open at once, across listeners; more are refused.
    pub max_connections: NonZeroUsize,
    /// Size of the pooled buffer a userspace-TLS body is read into.
    pub userspace_tls_buffer_bytes: NonZeroUsize,
    /// After an error answer that closes the connection, how long input is still
    /// read and discarded (after our FIN) so the client can read the answer instead
    /// of a reset; zero closes at once.
    pub lingering_close: Duration,
    /// TLS handshakes (ClientHello in) of one worker waiting for their turn; at the
    /// bound its accept loop waits and the kernel's listen backlog holds the rest.
    pub max_tls_handshakes_per_worker: NonZeroUsize,
    /// ClientHellos one worker answers per turn of its event loop.
    pub tls_handshakes_per_turn: NonZeroUsize,
    /// While a worker has TLS handshakes in progress, userspace-TLS body buffers one
    /// connection encrypts per turn before the worker's other tasks get theirs (0: no
    /// bound).
    pub tls_body_buffers_per_turn: usize,
    /// `TCP_NOTSENT_LOWAT` of every client connection: bytes a socket may hold
    /// queued but not yet sent before it stops taking more (0: the kernel's
    /// `net.ipv4.tcp_notsent_lowat`, unbounded unless set).
    pub tcp_notsent_lowat_bytes: u32,
}

/// Validated TLS settings.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// PEM certificate chain and key; `None` means a self-signed pair in `state_dir`.
    pub cert_and_key: Option<(PathBuf, PathBuf)>,
    /// The cipher suites offered; `None` = all that rustls' provider supports.
    pub cipher_suites: Option<Vec<rustls::CipherSuite>>,
    /// Offload policy.
    pub ktls: KtlsMode,
    /// Bytes one kTLS connection may carry before it is closed after the response in flight.
    pub ktls_max_bytes_per_connection: NonZeroU64,
    /// The fleet-shared session ticket key file (`None`: keys made at start-up,
    /// rotated in memory, so tickets resume only on this process).
    pub ticket_keys_file: Option<PathBuf>,
    /// How long a ticket is valid.
    pub ticket_lifetime: Duration,
}

/// Which browser origins may read responses.
#[derive(Debug, Clone)]
pub enum AllowedOrigins {
    /// `*`: any origin.
    Any,
    /// Exactly these origins (scheme://host[:port], compared case-insensitively).
    List(Vec<String>),
}

/// Validated CORS settings.
#[derive(Debug, Clone)]
pub struct Cors {
    /// Origins allowed to read responses.
    pub allowed_origins: AllowedOrigins,
    /// `Access-Control-Max-Age` for preflight answers.
    pub preflight_max_age: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address of the TLS listener.
    pub tls_listen: SocketAddr,
    /// Address of the optional plain-HTTP listener.
    pub http_listen: Option<SocketAddr>,
    /// Address of the admin listener (loopback by default).
    pub admin_listen: SocketAddr,
    /// Where generated keys, certificates and the admin token live.
    pub state_dir: PathBuf,
    /// Worker threads (each a single-threaded runtime with its own `SO_REUSEPORT`
    /// listeners); `None` = one per core.
    pub worker_threads: Option<NonZeroUsize>,
    /// How long in-flight connections may run after SIGTERM before they are cut.
    pub shutdown_grace: Duration,
    /// Directory whose files are served.
    pub content_root: PathBuf,
    /// Which symlinks under it are followed.
    pub symlinks: SymlinkPolicy,
    /// Content files kept open per worker thread.
    pub open_file_cache: OpenFileCache,
    /// Limits.
    pub limits: Limits,
    /// TLS settings.
    pub tls: TlsSettings,
    /// CORS settings.
    pub cors: Cors,
    /// File holding the admin bearer token; `None` = `state_dir/admin.token`, generated.
    pub admin_token_file: Option<PathBuf>,
    /// Manifest settings.
    pub manifests: ManifestSettings,
    /// Published streams.
    pub streams: Vec<StreamConfig>,
    /// Edge mode: fill a disk cache from an origin (`[upstream]` and `[storage]`);
    /// `None` serves `content_root`.
    pub cache: Option<CacheSettings>,
    /// `server.close_after_error`: close the connection after every 4xx/5xx answer
    /// (off by default: errors keep the connection, so a client costs no new
    /// handshake for a missing segment).
    pub close_after_error: bool,
    /// `server.transparent_huge_pages`: `false` (the default) opts edge's memory out of
    /// transparent huge pages, so that the few KB an idle connection keeps on the heap
    /// do not hold whole 2 MiB pages resident where the kernel's setting is `always`
    /// (Debian's default); `true` leaves the system's setting in force.
    pub transparent_huge_pages: bool,
    /// `[telemetry]`.
    pub telemetry: TelemetrySettings,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and validates TOML text; `file` is only used in error messages.
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: e.to_string(),
        })?;
        raw.validate(file)
    }
}

/// `MemTotal` of this machine, if `/proc/meminfo` says.
fn physical_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

impl RawConfig {
    /// Resolves the raw values into a [`Config`], naming `file` and the key on error.
    pub fn validate(self, file: &Path) -> Result<Config, ConfigError> {
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            file: file.to_owned(),
            key,
            message,
        };
        let addr = |key: &'static str, v: &str| -> Result<SocketAddr, ConfigError> {
            v.parse()
                .map_err(|e| invalid(key, format!("`{v}` is not an IP:port socket address ({e})")))
        };
        let secs = |key: &'static str, v: u64, max: u64| -> Result<Duration, ConfigError> {
            if v == 0 || v > max {
                return Err(invalid(
                    key,
                    format!("{v} is out of range: use 1..={max} seconds"),
                ));
            }
            Ok(Duration::from_secs(v))
        };
        fn nz<T: TryInto<N>, N>(v: T) -> Option<N> {
            v.try_into().ok()
        }

        let s = self.server;
        let tls_listen = addr("server.tls_listen", &s.tls_listen)?;
        let http_listen = s
            .http_listen
            .as_deref()
            .map(|v| addr("server.http_listen", v))
            .transpose()?;
        let admin_listen = addr("server.admin_listen", &s.admin_listen)?;
        if !admin_listen.ip().is_loopback() && !self.admin.allow_non_loopback {
            return Err(invalid(
                "server.admin_listen",
                format!(
                    "{admin_listen} is not a loopback address: the admin token would travel in \
                     clear; set `admin.allow_non_loopback = true` to allow it (behind a firewall)"
                ),
            ));
        }
        if s.state_dir.as_os_str().is_empty() {
            return Err(invalid("server.state_dir", "must not be empty".into()));
        }
        let worker_threads = match s.worker_threads {
            None => None,
            Some(n @ 1..=1024) => NonZeroUsize::new(n),
            Some(n) => {
                return Err(invalid(
                    "server.worker_threads",
                    format!("{n} is out of range: use 1..=1024"),
                ))
            }
        };
        let shutdown_grace = if s.shutdown_grace_secs == 0 {
            Duration::ZERO
        } else {
            secs("server.shutdown_grace_secs", s.shutdown_grace_secs, 3600)?
        };

        if self.content.root.as_os_str().is_empty() {
            return Err(invalid("content.root", "must not be empty".into()));
        }
        let c = &self.content;
        if c.open_file_cache > MAX_OPEN_FILE_CACHE {
            return Err(invalid(
                "content.open_file_cache",
                format!(
                    "{} is out of range: use 0 (off)..={MAX_OPEN_FILE_CACHE} files per worker",
                    c.open_file_cache
                ),
            ));
        }
        if !(1..=3_600_000).contains(&c.open_file_cache_valid_ms) {
            return Err(invalid(
                "content.open_file_cache_valid_ms",
                format!(
                    "{} is out of range: use 1..=3600000 milliseconds",
                    c.open_file_cache_valid_ms
                ),
            ));
        }
        let open_file_cache = OpenFileCache {
            entries: c.open_file_cache as usize,
            valid: Duration::from_millis(c.open_file_cache_valid_ms),
        };

        let l = self.limits;
        if !(1024..=1 << 20).contains(&l.max_head_bytes) {
            return Err(invalid(
                "limits.max_head_bytes",
                format!("{} is out of range: use 1024..=1048576", l.max_head_bytes),
            ));
        }
        if !(8..=1024).contains(&l.max_headers) {
            return Err(invalid(
                "limits.max_headers",
                format!("{} is out of range: use 8..=1024", l.max_headers),
            ));
        }
        if !(4096..=16 << 20).contains(&l.userspace_tls_buffer_bytes) {
            return Err(invalid(
                "limits.userspace_tls_buffer_bytes",
                format!(
                    "{} is out of range: use 4096..=16777216",
                    l.userspace_tls_buffer_bytes
                ),
            ));
        }
        let max_request_target_bytes = l
            .max_request_target_bytes
            .unwrap_or(l.max_head_bytes.min(8 * 1024));
        if !(256..=l.max_head_bytes).contains(&max_request_target_bytes) {
            return Err(invalid(
                "limits.max_request_target_bytes",
                format!(
                    "{max_request_target_bytes} is out of range: use 256..=limits.max_head_bytes ({})",
                    l.max_head_bytes
                ),
            ));
        }
        if l.lingering_close_secs > 300 {
            return Err(invalid(
                "limits.lingering_close_secs",
                format!(
                    "{} is out of range: use 0 (close at once)..=300",
                    l.lingering_close_secs
                ),
            ));
        }
        if !(1..=65_536).contains(&l.max_tls_handshakes_per_worker) {
            return Err(invalid(
                "limits.max_tls_handshakes_per_worker",
                format!(
                    "{} is out of range: use 1..=65536",
                    l.max_tls_handshakes_per_worker
                ),
            ));
        }
        if !(1..=1024).contains(&l.tls_handshakes_per_turn) {
            return Err(invalid(
                "limits.tls_handshakes_per_turn",
                format!(
                    "{} is out of range: use 1..=1024",
                    l.tls_handshakes_per_turn
                ),
            ));
        }
        if l.tls_body_buffers_per_turn > 65_536 {
            return Err(invalid(
                "limits.tls_body_buffers_per_turn",
                format!(
                    "{} is out of range: use 0..=65536 (0: no bound)",
                    l.tls_body_buffers_per_turn
                ),
            ));
        }
        if l.tcp_notsent_lowat_bytes != 0
            && !(16 << 10..=1 << 30).contains(&l.tcp_notsent_lowat_bytes)
        {
            return Err(invalid(
                "limits.tcp_notsent_lowat_bytes",
                format!(
                    "{} is out of range: use 0 (the kernel's default) or 16384..=1073741824",
                    l.tcp_notsent_lowat_bytes
                ),
            ));
        }
        if l.min_send_rate_bytes_per_sec > 1 << 30 {
            return Err(invalid(
                "limits.min_send_rate_bytes_per_sec",
                format!(
                    "{} is out of range: use 0 (no floor)..=1073741824",
                    l.min_send_rate_bytes_per_sec
                ),
            ));
        }
        // What slow or idle clients can pin at worst: every connection with a full
        // head buffer and a userspace-TLS body buffer in use.
        let per_connection =
            l.max_head_bytes + l.userspace_tls_buffer_bytes + PER_CONNECTION_OVERHEAD_BYTES;
        let memory = physical_memory_bytes();
        let max_connections = match l.max_connections {
            Some(n) => n,
            // Unset: 16384, or fewer on a small machine, so that the default can
            // never promise more than half its memory.
            None => memory.map_or(DEFAULT_MAX_CONNECTIONS, |total| {
                let fits = (total / 2 / per_connection as u64) as usize;
                fits.clamp(64, DEFAULT_MAX_CONNECTIONS)
            }),
        };
        if !(1..=MAX_CONNECTIONS_CEILING).contains(&max_connections) {
            return Err(invalid(
                "limits.max_connections",
                format!("{max_connections} is out of range: use 1..={MAX_CONNECTIONS_CEILING}"),
            ));
        }
        let worst_case = per_connection as u128 * max_connections as u128;
        if let Some(total) = memory.filter(|_| l.max_connections.is_some()) {
            if worst_case > u128::from(total) {
                return Err(invalid(
                    "limits.max_connections",
                    format!(
                        "{max_connections} connections x {per_connection} bytes each at worst \
                         (max_head_bytes + userspace_tls_buffer_bytes + \
                         {PER_CONNECTION_OVERHEAD_BYTES}) = {worst_case} bytes, more than this \
                         machine's {total} bytes of memory"
                    ),
                ));
            }
        }
        let limits = Limits {
            max_head_bytes: nz(l.max_head_bytes).expect("checked above"),
            max_headers: nz(l.max_headers).expect("checked above"),
            header_read_timeout: secs(
                "limits.header_read_timeout_secs",
                l.header_read_timeout_secs,
                3600,
            )?,
            idle_timeout: secs("limits.idle_timeout_secs", l.idle_timeout_secs, 86_400)?,
            send_timeout: secs("limits.send_timeout_secs", l.send_timeout_secs, 86_400)?,
            min_send_rate: l.min_send_rate_bytes_per_sec,
            max_request_target_bytes: nz(max_request_target_bytes).expect("checked above"),
            tls_handshake_timeout: secs(
                "limits.tls_handshake_timeout_secs",
                l.tls_handshake_timeout_secs,
                3600,
            )?,
            max_requests_per_connection: nz(l.max_requests_per_connection).ok_or_else(|| {
                invalid(
                    "limits.max_requests_per_connection",
                    "must be at least 1".into(),
                )
            })?,
            max_connections: nz(max_connections).expect("checked above"),
            userspace_tls_buffer_bytes: nz(l.userspace_tls_buffer_bytes).expect("checked above"),
            lingering_close: Duration::from_secs(l.lingering_close_secs),
            max_tls_handshakes_per_worker: nz(l.max_tls_handshakes_per_worker)
                .expect("checked above"),
            tls_handshakes_per_turn: nz(l.tls_handshakes_per_turn).expect("checked above"),
            tls_body_buffers_per_turn: l.tls_body_buffers_per_turn,
            tcp_notsent_lowat_bytes: l.tcp_notsent_lowat_bytes,
        };

        let t = self.tls;
        let cert_and_key = match (t.cert_path, t.key_path) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "tls.key_path",
                    "is required when tls.cert_path is set".into(),
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls.cert_path",
                    "is required when tls.key_path is set".into(),
                ))
            }
        };
        if t.ktls_max_bytes_per_connection < (1 << 20)
            || t.ktls_max_bytes_per_connection > MAX_KTLS_MAX_BYTES
        {
            return Err(invalid(
                "tls.ktls_max_bytes_per_connection",
                format!(
                    "{} is out of range: use 1048576..={MAX_KTLS_MAX_BYTES} (AES-GCM key usage limit)",
                    t.ktls_max_bytes_per_connection
                ),
            ));
        }
        let cipher_suites = match t.cipher_suites {
            None => None,
            Some(names) => {
                let known: Vec<rustls::CipherSuite> = rustls::crypto::ring::default_provider()
                    .cipher_suites
                    .iter()
                    .map(|s| s.suite())
                    .collect();
                let name_list = || {
                    known
                        .iter()
                        .filter_map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                if names.is_empty() {
                    return Err(invalid(
                        "tls.cipher_suites",
                        format!("must not be empty; known: {}", name_list()),
                    ));
                }
                let mut suites = Vec::with_capacity(names.len());
                for n in &names {
                    match known.iter().find(|s| s.as_str() == Some(n.as_str())) {
                        Some(s) => suites.push(*s),
                        None => {
                            return Err(invalid(
                                "tls.cipher_suites",
                                format!("unknown cipher suite `{n}`; known: {}", name_list()),
                            ))
                        }
                    }
                }
                Some(suites)
            }
        };
        if cert_and_key.is_none()
            && !crate::tls::suites_usable_with(
                cipher_suites.as_deref(),
                rustls::SignatureAlgorithm::ECDSA,
            )
        {
            return Err(invalid(
                "tls.cipher_suites",
                "no suite listed can be used with the generated ECDSA certificate (tls.cert_path \
                 is unset): every handshake would fail; add a TLS 1.3 suite or an ECDHE_ECDSA one"
                    .into(),
            ));
        }
        let tls = TlsSettings {
            cert_and_key,
            cipher_suites,
            ktls: t.ktls,
            ktls_max_bytes_per_connection: nz(t.ktls_max_bytes_per_connection)
                .expect("checked above"),
            ticket_keys_file: t.ticket_keys_file,
            ticket_lifetime: secs(
                "tls.ticket_lifetime_secs",
                t.ticket_lifetime_secs,
                MAX_TICKET_LIFETIME_SECS,
            )?,
        };
        let telemetry = validate_telemetry(self.telemetry, &s.state_dir, &invalid)?;

        let c = self.cors;
        let allowed_origins = if c.allowed_origins.iter().any(|o| o == "*") {
            if c.allowed_origins.len() > 1 {
                return Err(invalid(
                    "cors.allowed_origins",
                    "`*` cannot be combined with other origins".into(),
                ));
            }
            AllowedOrigins::Any
        } else {
            for o in &c.allowed_origins {
                let ok = (o.starts_with("https://") || o.starts_with("http://"))
                    && !o.ends_with('/')
                    && o.bytes().all(|b| b.is_ascii_graphic());
                if !ok {
                    return Err(invalid(
                        "cors.allowed_origins",
                        format!(
                            "`{o}` is not an origin: write scheme://host[:port] without a path"
                        ),
                    ));
                }
            }
            AllowedOrigins::List(
                c.allowed_origins
                    .iter()
                    .map(|o| o.to_ascii_lowercase())
                    .collect(),
            )
        };
        let cors = Cors {
            allowed_origins,
            preflight_max_age: Duration::from_secs(c.preflight_max_age_secs.min(86_400 * 7)),
        };

        let m = self.manifests;
        if !(100..=60_000).contains(&m.max_hold_ms) {
            return Err(invalid(
                "manifests.max_hold_ms",
                format!("{} is out of range: use 100..=60000", m.max_hold_ms),
            ));
        }
        if m.max_held_requests > 1_000_000 {
            return Err(invalid(
                "manifests.max_held_requests",
                format!("{} is out of range: use 0..=1000000", m.max_held_requests),
            ));
        }
        let manifests = ManifestSettings {
            keys_file: m.keys_file,
            max_hold: Duration::from_millis(m.max_hold_ms),
            max_held_requests: m.max_held_requests,
            origin_ca_file: m.origin_ca_file,
            origin_refresh: secs("manifests.origin_refresh_secs", m.origin_refresh_secs, 3600)?,
            origin_timeout: secs("manifests.origin_timeout_secs", m.origin_timeout_secs, 60)?,
        };
        let mut streams: Vec<StreamConfig> = Vec::with_capacity(self.streams.len());
        for (i, st) in self.streams.into_iter().enumerate() {
            if !manifest::model::url_safe(&st.name, 64) {
                return Err(invalid(
                    "streams.name",
                    format!(
                        "stream {}: `{}` must be 1..=64 characters of [A-Za-z0-9_-]",
                        i + 1,
                        st.name
                    ),
                ));
            }
            if streams.iter().any(|o| o.name == st.name) {
                return Err(invalid(
                    "streams.name",
                    format!("stream `{}` is configured twice", st.name),
                ));
            }
            let source = match (st.source, st.origin) {
                (Some(dir), None) if !dir.as_os_str().is_empty() => StreamSource::Folder(dir),
                (None, Some(url)) => {
                    let url = crate::upstream::OriginUrl::parse(&url).map_err(|e| {
                        invalid("streams.origin", format!("stream `{}`: {e}", st.name))
                    })?;
                    if url.tls && manifests.origin_ca_file.is_none() {
                        return Err(invalid(
                            "manifests.origin_ca_file",
                            format!(
                                "stream `{}` has an https origin: name the CA certificate(s) to trust it",
                                st.name
                            ),
                        ));
                    }
                    if st.live || st.signed {
                        return Err(invalid(
                            "streams.origin",
                            format!(
                                "stream `{}`: `live` and `signed` come from the origin's description; remove them here",
                                st.name
                            ),
                        ));
                    }
                    StreamSource::Origin(url)
                }
                _ => {
                    return Err(invalid(
                        "streams.source",
                        format!(
                            "stream `{}`: give exactly one of `source` (a packaged folder) or `origin` (an origin's URL)",
                            st.name
                        ),
                    ))
                }
            };
            if st.live && !(1..=MAX_DVR_WINDOW_SECS).contains(&st.dvr_window_secs) {
                return Err(invalid(
                    "streams.dvr_window_secs",
                    format!(
                        "stream `{}`: {} is out of range: use 1..={MAX_DVR_WINDOW_SECS}",
                        st.name, st.dvr_window_secs
                    ),
                ));
            }
            if st.epoch_secs > 4_102_444_800 {
                return Err(invalid(
                    "streams.epoch_secs",
                    format!(
                        "stream `{}`: {} is after the year 2100",
                        st.name, st.epoch_secs
                    ),
                ));
            }
            if st.signed && manifests.keys_file.is_none() {
                return Err(invalid(
                    "manifests.keys_file",
                    format!(
                        "stream `{}` is signed but no key file is configured",
                        st.name
                    ),
                ));
            }
            streams.push(StreamConfig {
                name: st.name,
                source,
                live: st
                    .live
                    .then_some((st.epoch_secs * 1000, st.dvr_window_secs * 1000)),
                signed: st.signed,
            });
        }

        let cache = validate_cache(self.upstream, self.storage, &s.state_dir, &invalid)?;

        Ok(Config {
            cache,
            manifests,
            streams,
            tls_listen,
            http_listen,
            admin_listen,
            state_dir: s.state_dir,
            worker_threads,
            shutdown_grace,
            content_root: self.content.root,
            symlinks: self.content.symlinks,
            open_file_cache,
            limits,
            tls,
            cors,
            admin_token_file: self.admin.token_file,
            close_after_error: s.close_after_error,
            transparent_huge_pages: s.transparent_huge_pages,
            telemetry,
        })
    }
}

fn validate_telemetry(
    t: RawTelemetry,
    state_dir: &Path,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<TelemetrySettings, ConfigError> {
    let st = t.storm;
    let range_u32 = |key: &'static str, v: u32, lo: u32, hi: u32| {
        if (lo..=hi).contains(&v) {
            Ok(v)
        } else {
            Err(invalid(
                key,
                format!("{v} is out of range: use {lo}..={hi}"),
            ))
        }
    };
    if !(st.factor.is_finite() && st.factor > 1.0 && st.factor <= 1000.0) {
        return Err(invalid(
            "telemetry.storm.factor",
            format!(
                "{} is out of range: use a number above 1 and at most 1000",
                st.factor
            ),
        ));
    }
    if !(st.min_excess_per_sec.is_finite() && (0.0..=1e7).contains(&st.min_excess_per_sec)) {
        return Err(invalid(
            "telemetry.storm.min_excess_per_sec",
            format!(
                "{} is out of range: use 0..=10000000",
                st.min_excess_per_sec
            ),
        ));
    }
    if !(1..=100_000).contains(&st.retention) {
        return Err(invalid(
            "telemetry.storm.retention",
            format!("{} is out of range: use 1..=100000", st.retention),
        ));
    }
    let storm = web_ui::dashboard::StormSettings {
        factor: st.factor,
        min_excess_per_sec: st.min_excess_per_sec,
        onset_secs: range_u32("telemetry.storm.onset_secs", st.onset_secs, 1, 60)?,
        end_secs: range_u32("telemetry.storm.end_secs", st.end_secs, 1, 3600)?,
        warmup_secs: range_u32("telemetry.storm.warmup_secs", st.warmup_secs, 0, 86_400)?,
        reconnect_window_secs: range_u32(
            "telemetry.storm.reconnect_window_secs",
            st.reconnect_window_secs,
            1,
            300,
        )?,
        baseline_half_life_secs: range_u32(
            "telemetry.storm.baseline_half_life_secs",
            st.baseline_half_life_secs,
            1,
            86_400,
        )?,
        correlation_window_secs: range_u32(
            "telemetry.storm.correlation_window_secs",
            st.correlation_window_secs,
            2,
            3600,
        )?,
        retention: st.retention,
    };
    let store = t.store.unwrap_or_else(|| state_dir.join("telemetry"));
    if store.as_os_str().is_empty() {
        return Err(invalid("telemetry.store", "must not be empty".into()));
    }
    Ok(TelemetrySettings {
        enabled: t.enabled,
        store,
        storm,
    })
}

/// Smallest `storage.disks.size_mib`.
pub const MIN_DISK_MIB: u64 = storage::MIN_CONTAINER_BYTES >> 20;

fn validate_cache(
    upstream: Option<RawUpstream>,
    storage: Option<RawStorage>,
    state_dir: &Path,
    invalid: &dyn Fn(&'static str, String) -> ConfigError,
) -> Result<Option<CacheSettings>, ConfigError> {
    let (u, st) = match (upstream, storage) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(invalid(
                "storage.disks",
                "[upstream] needs a cache: add at least one [[storage.disks]]".into(),
            ))
        }
        (None, Some(_)) => {
            return Err(invalid(
                "upstream.origin",
                "[storage] is configured but no [upstream] origin fills it".into(),
            ))
        }
        (Some(u), Some(s)) => (u, s),
    };
    let origin =
        crate::upstream::OriginUrl::parse(&u.origin).map_err(|e| invalid("upstream.origin", e))?;
    if origin.tls && u.ca_file.is_none() {
        return Err(invalid(
            "upstream.ca_file",
            "the origin is https: name the CA certificate(s) to trust it".into(),
        ));
    }
    let ms = |key: &'static str, v: u64, min: u64, max: u64| -> Result<Duration, ConfigError> {
        if !(min..=max).contains(&v) {
            return Err(invalid(
                key,
                format!("{v} is out of range: use {min}..={max} ms"),
            ));
        }
        Ok(Duration::from_millis(v))
    };
    let ttl = |key: &'static str, v: u64| -> Result<Duration, ConfigError> {
        if v > 365 * 86_400 {
            return Err(invalid(
                key,
                format!("{v} is out of range: use 0..=31536000 seconds"),
            ));
        }
        Ok(Duration::from_secs(v))
    };
    if !(1..=10).contains(&u.max_attempts) {
        return Err(invalid(
            "upstream.max_attempts",
            format!("{} is out of range: use 1..=10", u.max_attempts),
        ));
    }
    if !(1..=100_000).contains(&u.max_concurrent_fills) {
        return Err(invalid(
            "upstream.max_concurrent_fills",
            format!("{} is out of range: use 1..=100000", u.max_concurrent_fills),
        ));
    }
    if st.disks.is_empty() {
        return Err(invalid(
            "storage.disks",
            "at least one [[storage.disks]] (path, size_mib) is required".into(),
        ));
    }
    let mut disks = Vec::new();
    for (i, d) in st.disks.iter().enumerate() {
        if d.path.as_os_str().is_empty() {
            return Err(invalid(
                "storage.disks.path",
                format!("disk {}: must not be empty", i + 1),
            ));
        }
        if !(MIN_DISK_MIB..=(1 << 30)).contains(&d.size_mib) {
            return Err(invalid(
                "storage.disks.size_mib",
                format!(
                    "disk {} (`{}`): {} is out of range: use {MIN_DISK_MIB}..={}",
                    i + 1,
                    d.path.display(),
                    d.size_mib,
                    1u64 << 30
                ),
            ));
        }
        if disks.iter().any(|o: &storage::DiskConfig| o.path == d.path) {
            return Err(invalid(
                "storage.disks.path",
                format!("`{}` is configured twice", d.path.display()),
            ));
        }
        disks.push(storage::DiskConfig {
            path: d.path.clone(),
            size: d.size_mib << 20,
        });
    }
    let smallest = disks.iter().map(|d| d.size).min().unwrap_or(0);
    // Default: 64 MiB, or an eighth of the smallest disk when that is less.
    let max_object_bytes = u.max_object_bytes.unwrap_or((64 << 20).min(smallest / 8));
    if max_object_bytes == 0 || max_object_bytes > smallest / 8 {
        return Err(invalid(
            "upstream.max_object_bytes",
            format!(
                "{} is out of range: use 1..={} (an eighth of the smallest disk; larger objects \
                 pass through uncached)",
                max_object_bytes,
                smallest / 8
            ),
        ));
    }
    let nz = |key: &'static str, v: usize, max: usize| {
        if v == 0 || v > max {
            return Err(invalid(key, format!("{v} is out of range: use 1..={max}")));
        }
        Ok(NonZeroUsize::new(v).expect("checked"))
    };
    let config = storage::CacheConfig {
        index_dir: st
            .index_dir
            .unwrap_or_else(|| state_dir.join("cache-index")),
        disks,
        hot_entries: nz("storage.hot_entries", st.hot_entries, 100_000_000)?,
        hot_bodies: nz("storage.hot_bodies", st.hot_bodies, 1_000_000)?,
        hot_body_max_bytes: st.hot_body_max_bytes.min(16 << 20),
        io_threads_per_disk: nz("storage.io_threads_per_disk", st.io_threads_per_disk, 256)?.get(),
        io_queue_per_disk: nz("storage.io_queue_per_disk", st.io_queue_per_disk, 1_000_000)?.get(),
        write_queue: nz("storage.write_queue", st.write_queue, 1_000_000)?.get(),
    };
    Ok(Some(CacheSettings {
        upstream: UpstreamSettings {
            origin,
            ca_file: u.ca_file,
            connect_timeout: ms(
                "upstream.connect_timeout_ms",
                u.connect_timeout_ms,
                10,
                60_000,
            )?,
            header_timeout: ms(
                "upstream.header_timeout_ms",
                u.header_timeout_ms,
                10,
                600_000,
            )?,
            body_idle_timeout: ms(
                "upstream.body_idle_timeout_ms",
                u.body_idle_timeout_ms,
                10,
                600_000,
            )?,
            retry_budget: ms("upstream.retry_budget_ms", u.retry_budget_ms, 0, 600_000)?,
            max_attempts: u.max_attempts,
            max_object_bytes,
            max_concurrent_fills: u.max_concurrent_fills,
            segment_ttl: ttl("upstream.segment_ttl_secs", u.segment_ttl_secs)?,
            playlist_ttl: ttl("upstream.playlist_ttl_secs", u.playlist_ttl_secs)?,
            other_ttl: ttl("upstream.other_ttl_secs", u.other_ttl_secs)?,
        },
        storage: config,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("edge.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.tls_listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(c.admin_listen, "127.0.0.1:9090".parse().unwrap());
        assert!(c.http_listen.is_none());
        assert_eq!(c.limits.max_head_bytes.get(), 16384);
        assert_eq!(c.tls.ktls, KtlsMode::Auto);
        assert!(matches!(c.cors.allowed_origins, AllowedOrigins::Any));
    }

    #[test]
    fn example_config_is_valid() {
        let text = include_str!("../../edge.example.toml");
        load(text).unwrap();
    }

    #[test]
    fn the_example_cache_section_is_valid_when_uncommented() {
        let text = include_str!("../../edge.example.toml");
        let start = text.find("# [upstream]").unwrap();
        let section: String = text[start..]
            .lines()
            .map(|l| l.strip_prefix("# ").unwrap_or(l))
            .filter(|l| !l.starts_with('#') && !l.starts_with(' ') && !l.is_empty())
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let section = section.replace("https://", "http://");
        let c = load(&section).unwrap_or_else(|e| panic!("{e}\n{section}"));
        let cache = c.cache.unwrap();
        assert_eq!(cache.storage.disks.len(), 2);
        assert_eq!(cache.upstream.max_object_bytes, 64 << 20);
        assert_eq!(cache.upstream.retry_budget, Duration::from_secs(4));
    }

    #[test]
    fn cache_settings_name_their_key() {
        let base = "[upstream]\norigin = \"http://o:1\"\n[storage]\n[[storage.disks]]\npath = \"/d\"\nsize_mib = 64\n";
        let c = load(base).unwrap().cache.unwrap();
        // Default max object: an eighth of the 64 MiB disk.
        assert_eq!(c.upstream.max_object_bytes, 8 << 20);
        assert_eq!(
            c.storage.index_dir,
            PathBuf::from("/var/lib/edge/cache-index")
        );
        let err = |t: &str| load(t).unwrap_err().to_string();
        for (text, key) in [
            (base.replace("http://o:1", "ftp://o"), "upstream.origin"),
            (base.replace("http://o:1", "https://o"), "upstream.ca_file"),
            (
                base.replace("size_mib = 64", "size_mib = 8"),
                "storage.disks.size_mib",
            ),
            (format!("{base}[upstream.x]\n"), "x"),
            (
                base.replace("[upstream]\n", "[upstream]\nmax_attempts = 0\n"),
                "upstream.max_attempts",
            ),
            (
                base.replace(
                    "[upstream]\n",
                    "[upstream]\nmax_object_bytes = 9999999999\n",
                ),
                "upstream.max_object_bytes",
            ),
            (
                base.replace("[upstream]\n", "[upstream]\nheader_timeout_ms = 1\n"),
                "upstream.header_timeout_ms",
            ),
            (
                base.replace("[storage]\n", "[storage]\nio_threads_per_disk = 0\n"),
                "storage.io_threads_per_disk",
            ),
            (
                format!("{base}[[storage.disks]]\npath = \"/d\"\nsize_mib = 64\n"),
                "storage.disks.path",
            ),
            (
                "[upstream]\norigin = \"http://o\"\n".to_string(),
                "storage.disks",
            ),
            ("[storage]\n".to_string(), "upstream.origin"),
        ] {
            let e = err(&text);
            assert!(e.contains(key), "{key}: {e}");
        }
    }

    #[test]
    fn unknown_key_names_the_file_and_key() {
        let e = load("[limits]\nmax_head_byte = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("edge.toml:"), "{e}");
        assert!(e.contains("max_head_byte"), "{e}");
    }

    #[test]
    fn bad_value_names_the_key() {
        let e = load("[limits]\nmax_head_bytes = 10\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.max_head_bytes"), "{e}");
        let e = load("[server]\ntls_listen = \"nonsense\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("server.tls_listen") && e.contains("nonsense"),
            "{e}"
        );
        let e = load("[tls]\nktls = \"maybe\"\n").unwrap_err().to_string();
        assert!(e.contains("ktls") && e.contains("maybe"), "{e}");
        let e = load("[tls]\ncert_path = \"/c.pem\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.key_path"), "{e}");
        let e = load("[limits]\nheader_read_timeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.header_read_timeout_secs"), "{e}");
        let e = load("[limits]\ntls_body_buffers_per_turn = 70000\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("limits.tls_body_buffers_per_turn"), "{e}");
        for bad in ["1", "16383", "1073741825"] {
            let e = load(&format!("[limits]\ntcp_notsent_lowat_bytes = {bad}\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("limits.tcp_notsent_lowat_bytes"), "{bad}: {e}");
        }
        for good in [0, 16384, 1 << 30] {
            let c = load(&format!("[limits]\ntcp_notsent_lowat_bytes = {good}\n")).unwrap();
            assert_eq!(c.limits.tcp_notsent_lowat_bytes, good);
        }
        let c = load("[limits]\ntls_body_buffers_per_turn = 0\n").unwrap();
        assert_eq!(c.limits.tls_body_buffers_per_turn, 0);
        let e = load("[cors]\nallowed_origins = [\"*\", \"https://a\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cors.allowed_origins"), "{e}");
    }

    #[test]
    fn configs_that_would_fail_later_are_refused_now() {
        let refused = |text: &str, key: &str| {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(&format!("key `{key}`")), "{text}: {e}");
            e
        };
        refused(
            "[limits]\nmax_connections = 4611686018427387904\n",
            "limits.max_connections",
        );
        // Within the ceiling but more than the memory of any machine this runs on.
        refused(
            "[limits]\nmax_connections = 4000000\nmax_head_bytes = 1048576\n",
            "limits.max_connections",
        );
        refused(
            "[tls]\ncipher_suites = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\"]\n",
            "tls.cipher_suites",
        );
        let e = refused(
            "[server]\nadmin_listen = \"0.0.0.0:9090\"\n",
            "server.admin_listen",
        );
        assert!(e.contains("admin.allow_non_loopback"), "{e}");
        let c =
            load("[server]\nadmin_listen = \"0.0.0.0:9090\"\n[admin]\nallow_non_loopback = true\n")
                .unwrap();
        assert!(!c.admin_listen.ip().is_loopback());
        refused(
            "[limits]\nmax_request_target_bytes = 20000\n",
            "limits.max_request_target_bytes",
        );
        refused(
            "[limits]\nmin_send_rate_bytes_per_sec = 2000000000\n",
            "limits.min_send_rate_bytes_per_sec",
        );
        // RSA suites are fine next to a TLS 1.3 suite, and a cert file may be RSA.
        load("[tls]\ncipher_suites = [\"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256\", \"TLS13_AES_128_GCM_SHA256\"]\n")
            .unwrap();
    }

    #[test]
    fn new_keys_have_their_defaults() {
        let c = load("").unwrap();
        assert_eq!(c.symlinks, SymlinkPolicy::Refuse);
        assert_eq!(c.limits.min_send_rate, DEFAULT_MIN_SEND_RATE);
        assert_eq!(c.limits.max_request_target_bytes.get(), 8192);
        let c = load("[limits]\nmax_head_bytes = 2048\n").unwrap();
        assert_eq!(c.limits.max_request_target_bytes.get(), 2048);
        let c = load("[content]\nsymlinks = \"within_root\"\n").unwrap();
        assert_eq!(c.symlinks, SymlinkPolicy::WithinRoot);
        assert!(load("[content]\nsymlinks = \"sometimes\"\n").is_err());
    }

    #[test]
    fn the_open_file_cache_is_off_by_default_and_its_keys_are_checked() {
        let refused = |text: &str, key: &str| {
            let e = load(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        };
        let c = load("").unwrap();
        assert_eq!(c.open_file_cache, OpenFileCache::OFF);
        let c =
            load("[content]\nopen_file_cache = 4096\nopen_file_cache_valid_ms = 250\n").unwrap();
        assert_eq!(c.open_file_cache.entries, 4096);
        assert_eq!(c.open_file_cache.valid, Duration::from_millis(250));
        refused(
            "[content]\nopen_file_cache = 2000000\n",
            "key `content.open_file_cache`",
        );
        refused(
            "[content]\nopen_file_cache_valid_ms = 0\n",
            "key `content.open_file_cache_valid_ms`",
        );
        refused("[content]\nopen_file_cache = -1\n", "open_file_cache");
    }

    #[test]
    fn wrong_type_is_reported() {
        let e = load("[limits]\nmax_connections = \"many\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_connections"), "{e}");
    }

    #[test]
    fn stream_entries_are_checked() {
        let err = |t: &str| load(t).unwrap_err().to_string();
        let e = err("[[streams]]\nname = \"a b\"\nsource = \"/x\"\n");
        assert!(
            e.contains("key `streams.name`") && e.contains("`a b`"),
            "{e}"
        );
        let e = err("[[streams]]\nname = \"a\"\nsource = \"/x\"\n[[streams]]\nname = \"a\"\nsource = \"/y\"\n");
        assert!(e.contains("configured twice"), "{e}");
        let e = err("[[streams]]\nname = \"a\"\nsource = \"/x\"\norigin = \"http://o:1\"\n");
        assert!(
            e.contains("key `streams.source`") && e.contains("exactly one"),
            "{e}"
        );
        let e = err("[[streams]]\nname = \"a\"\n");
        assert!(e.contains("exactly one"), "{e}");
        let e = err("[[streams]]\nname = \"a\"\norigin = \"https://o\"\n");
        assert!(e.contains("key `manifests.origin_ca_file`"), "{e}");
        let e = err("[[streams]]\nname = \"a\"\norigin = \"http://o/x\"\n");
        assert!(e.contains("key `streams.origin`"), "{e}");
        let e = err("[[streams]]\nname = \"a\"\norigin = \"http://o\"\nlive = true\n");
        assert!(e.contains("come from the origin"), "{e}");
        let e =
            err("[[streams]]\nname = \"a\"\nsource = \"/x\"\nlive = true\ndvr_window_secs = 0\n");
        assert!(e.contains("key `streams.dvr_window_secs`"), "{e}");
        let e = err("[[streams]]\nname = \"a\"\nsource = \"/x\"\nsigned = true\n");
        assert!(e.contains("key `manifests.keys_file`"), "{e}");
        let e = err("[manifests]\nmax_hold_ms = 5\n");
        assert!(e.contains("key `manifests.max_hold_ms`"), "{e}");
        let e = err("[[streams]]\nname = \"a\"\nsource = \"/x\"\nbogus = 1\n");
        assert!(e.contains("bogus"), "{e}");
        let c = load("[[streams]]\nname = \"a\"\nsource = \"/x\"\nlive = true\nepoch_secs = 10\n")
            .unwrap();
        assert_eq!(c.streams[0].live, Some((10_000, 30_000)));
    }
}
