//! From a parsed request to a response plan: routing to files under the content
//! root, conditional requests, byte ranges, CORS, and error answers.
//!
//! [`respond`] is synchronous: it opens and `fstat`s the file (a page-cache hit on a
//! warm server) and writes the response head into the connection's reused buffer.
//! The connection loop then sends the head and the planned body on its transport.
//!
//! Files are opened with `openat2(2)` relative to a descriptor of the content root:
//! nothing outside the root is reachable, symlinks are followed only as
//! `content.symlinks` allows, and the open is non-blocking, so a FIFO or device in
//! the tree can never stall a worker; anything but a regular file is 404. Every
//! error a client's path can cause maps to a 4xx; only server conditions (out of
//! descriptors, an I/O error) are 5xx.
//!
//! With `content.open_file_cache` each worker thread keeps recently sent files open
//! ([`OPEN_FILES`]) and shares one descriptor among all the responses that send the
//! same file (bodies are sent with explicit offsets, so sharing is safe): thousands
//! of connections fetching the same segments then cost a descriptor per file, not
//! one per response in flight. An entry is reused for `open_file_cache_valid_ms`,
//! then the path is opened again, so a replaced or removed file is seen within that
//! time. Errors are not cached.

use std::ffi::CStr;
use std::fs::File;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::cache::EdgeCache;
use crate::config::{AllowedOrigins, Cors, OpenFileCache, SymlinkPolicy};
use crate::http::range::{self, RangeOutcome};
use crate::http::request::{valid_authority, Method, RequestHead};
use crate::http::response::HeadWriter;
use crate::http::{self, HttpError};
use crate::streams::{self, Catalog};
use crate::sys::{self, Resolve};

/// What the handler needs to know about the site.
#[derive(Debug, Clone)]
pub struct Site {
    /// The root's canonical path (bytes), for the `within_root` check.
    root_canonical: Arc<[u8]>,
    /// An open descriptor of the root; every request path is opened relative to it.
    root_dir: Arc<OwnedFd>,
    /// Which symlinks are followed.
    pub symlinks: SymlinkPolicy,
    /// CORS policy.
    pub cors: Cors,
    /// Published streams (`/streams/...`); empty unless `[[streams]]` are configured.
    pub catalog: Arc<Catalog>,
    /// Edge mode: requests outside `/streams/` are answered from the cache, filled
    /// from `[upstream]`, instead of from the root.
    pub cache: Option<Arc<EdgeCache>>,
    /// Files kept open per worker thread (off unless [`Site::with_open_file_cache`]).
    open_file_cache: OpenFileCache,
    /// Counts the open-file cache's (hits, misses).
    open_file_counters: Option<(prometheus::IntCounter, prometheus::IntCounter)>,
}

impl Site {
    /// Opens the content root (it must be a readable directory).
    pub fn open(root: &Path, symlinks: SymlinkPolicy, cors: Cors) -> std::io::Result<Self> {
        let dir = File::open(root)?;
        if !dir.metadata()?.is_dir() {
            return Err(std::io::Error::other("not a directory"));
        }
        // Every request opens its file with openat2(2): find out now if that cannot
        // work, rather than answer every request 500.
        if let Err(e) = sys::open_beneath(dir.as_fd(), c".", sys::Resolve::BeneathNoSymlinks) {
            return Err(if e.raw_os_error() == Some(libc::ENOSYS) {
                std::io::Error::other(
                    "openat2(2) is not available (ENOSYS): a kernel older than 5.6, or a \
                     seccomp filter that blocks it (systemd's RestrictSUIDSGID= does); edge \
                     opens request paths only with it",
                )
            } else {
                e
            });
        }
        let canonical = std::fs::canonicalize(root)?;
        Ok(Self {
            root_canonical: canonical.as_os_str().as_encoded_bytes().into(),
            root_dir: Arc::new(dir.into()),
            symlinks,
            cors,
            catalog: Arc::new(Catalog::empty()),
            cache: None,
            open_file_cache: OpenFileCache::OFF,
            open_file_counters: None,
        })
    }

    /// The same site, keeping up to `policy.entries` files open per worker thread
    /// (0: none), counting (hits, misses) on `counters`.
    pub fn with_open_file_cache(
        mut self,
        policy: OpenFileCache,
        counters: (prometheus::IntCounter, prometheus::IntCounter),
    ) -> Self {
        self.open_file_cache = policy;
        self.open_file_counters = Some(counters);
        self
    }

    /// The same site in edge mode, answering from `cache`.
    pub fn with_cache(mut self, cache: Arc<EdgeCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The same site, publishing `catalog` under `/streams/`.
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        self.catalog = catalog;
        self
    }
}

/// Per-connection scratch space, reused across requests.
#[derive(Debug, Default)]
pub struct Scratch {
    /// Normalised relative path.
    rel: String,
    /// The same, NUL-terminated, for `openat2`.
    cpath: Vec<u8>,
    /// Where an opened file really is (`within_root` check only).
    resolved: Vec<u8>,
    /// The response head being built.
    pub head: Vec<u8>,
    /// Spare path buffer (an edge-mode segment's cache key is built here).
    key: String,
}

impl Scratch {
    /// Bytes its buffers hold (their capacities).
    pub fn capacity(&self) -> usize {
        self.rel.capacity()
            + self.cpath.capacity()
            + self.resolved.capacity()
            + self.head.capacity()
            + self.key.capacity()
    }
}

/// The body to send after the head.
#[derive(Debug)]
pub enum Body {
    /// No body (HEAD, 204, 304).
    None,
    /// A short static body (error texts).
    Static(&'static [u8]),
    /// A generated body (a cached manifest rendering).
    Shared(Arc<[u8]>),
    /// `len` bytes of `file` from `offset`.
    File {
        /// The open file.
        file: ContentFile,
        /// First byte to send.
        offset: u64,
        /// Bytes to send.
        len: u64,
    },
    /// A range of a small object held in memory (the cache's hot set).
    Slice {
        /// The whole object.
        bytes: Arc<[u8]>,
        /// First byte to send.
        offset: usize,
        /// Bytes to send.
        len: usize,
    },
    /// `len` bytes of a cache container from `offset`; the pin keeps the ring writer
    /// off them until the body is sent.
    Cached {
        /// The container.
        file: Arc<File>,
        /// First byte to send.
        offset: u64,
        /// Bytes to send.
        len: u64,
        /// The container's id (for error reports and its I/O pool).
        container: u64,
        /// Held while sending.
        pin: Option<storage::Pin>,
    },
    /// Bytes of an origin fill in progress, sent as they land.
    Fill {
        /// This client's place in the fill.
        fill: crate::cache::FillReader,
        /// First byte to send.
        offset: u64,
        /// Bytes to send.
        len: u64,
    },
}

impl Body {
    /// Bytes the body will put on the wire (before TLS framing).
    pub fn len(&self) -> u64 {
        match self {
            Body::None => 0,
            Body::Static(b) => b.len() as u64,
            Body::Shared(b) => b.len() as u64,
            Body::File { len, .. } | Body::Cached { len, .. } | Body::Fill { len, .. } => *len,
            Body::Slice { len, .. } => *len as u64,
        }
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A response ready to send: the head is in [`Scratch::head`].
#[derive(Debug)]
pub struct Plan {
    /// Status code sent.
    pub status: u16,
    /// Body to send after the head.
    pub body: Body,
    /// Whether the connection closes after this response (`Connection: close` was sent).
    pub close: bool,
    /// Nothing was written: hold the request until this time (Unix milliseconds),
    /// then ask again (an LL-HLS blocking playlist request).
    pub hold_until_ms: Option<u64>,
    /// Nothing was written: wait for this fill's head, then answer with
    /// [`fill_response`] (a cache miss in edge mode).
    pub fill: Option<crate::cache::FillReader>,
}

impl Plan {
    fn new(status: u16, body: Body, close: bool) -> Self {
        Self {
            status,
            body,
            close,
            hold_until_ms: None,
            fill: None,
        }
    }
}

/// Builds the response to `req` (whose spans index `raw`).
///
/// `keep_alive` says whether the connection may stay open after this response as far
/// as the caller is concerned (client's wish, request cap, shutdown); `byte_budget`
/// is how many body bytes the transport may still send before it must close (the kTLS
/// per-connection cap; `u64::MAX` elsewhere). A response whose body exceeds the
/// budget is still sent whole, then the connection closes. `may_hold` says whether a
/// blocking playlist request may still be held (see [`Plan::hold_until_ms`]).
#[allow(clippy::too_many_arguments)]
pub fn respond(
    req: &RequestHead,
    raw: &[u8],
    site: &Site,
    scratch: &mut Scratch,
    keep_alive: bool,
    byte_budget: u64,
    may_hold: bool,
) -> Plan {
    let origin = req.origin.clone().map(|s| &raw[s]);
    match route(req, raw, site, scratch) {
        Ok(Routed::Manifest) => manifest_response(
            req,
            raw,
            site,
            scratch,
            origin,
            keep_alive,
            byte_budget,
            may_hold,
        ),
        Ok(Routed::Cached) => match &site.cache {
            Some(cache) => cached_response(
                req,
                raw,
                site,
                scratch,
                cache,
                None,
                origin,
                keep_alive,
                byte_budget,
            ),
            None => error_response(
                HttpError::NotFound,
                req.method(),
                origin,
                site,
                scratch,
                keep_alive,
                None,
            ),
        },
        Ok(Routed::File(found)) => file_response(
            req,
            raw,
            site,
            scratch,
            found,
            origin,
            keep_alive,
            byte_budget,
        ),
        Ok(Routed::Options { preflight }) => {
            let mut w = HeadWriter::start(&mut scratch.head, 204);
            w.header("Allow", b"GET, HEAD, OPTIONS");
            if preflight {
                w.header("Access-Control-Allow-Methods", b"GET, HEAD, OPTIONS");
                if let Some(h) = req.ac_request_headers.clone() {
                    w.header("Access-Control-Allow-Headers", &raw[h]);
                }
                w.header_u64(
                    "Access-Control-Max-Age",
                    site.cors.preflight_max_age.as_secs(),
                );
            }
            cors_headers(&mut w, origin, &site.cors);
            // A 204 carries no Content-Length (RFC 9110 8.6).
            connection_header(&mut w, keep_alive);
            w.finish();
            Plan {
                status: 204,
                body: Body::None,
                close: !keep_alive,
                hold_until_ms: None,
                fill: None,
            }
        }
        Err(e) => error_response(e, req.method(), origin, site, scratch, keep_alive, None),
    }
}

/// Answers `err` (also used by the connection loop for framing errors, where no
/// request head is available: then `method` is GET and `origin` is `None`).
pub fn error_response(
    err: HttpError,
    method: Method,
    origin: Option<&[u8]>,
    site: &Site,
    scratch: &mut Scratch,
    keep_alive: bool,
    unsatisfied_len: Option<u64>,
) -> Plan {
    let close = !keep_alive || err.closes();
    let status = err.status();
    let mut w = HeadWriter::start(&mut scratch.head, status);
    w.header("Content-Type", b"text/plain; charset=utf-8");
    // A short max-age on 404 lets players and caches retry a not-yet-available
    // segment soon; other errors are not cached at all.
    w.header(
        "Cache-Control",
        if status == 404 {
            b"public, max-age=2"
        } else {
            b"no-store"
        },
    );
    if err == HttpError::MethodNotAllowed {
        w.header("Allow", b"GET, HEAD, OPTIONS");
    }
    if status == 503 {
        w.header("Retry-After", b"1");
    }
    if let Some(len) = unsatisfied_len {
        w.content_range_unsatisfied(len);
        w.header("Accept-Ranges", b"bytes");
    }
    cors_headers(&mut w, origin, &site.cors);
    let body = err.body();
    w.header_u64("Content-Length", body.len() as u64);
    connection_header(&mut w, !close);
    w.finish();
    let body = if method == Method::Head {
        Body::None
    } else {
        Body::Static(body)
    };
    Plan {
        status,
        body,
        close,
        hold_until_ms: None,
        fill: None,
    }
}

enum Routed {
    File(Found),
    Cached,
    Manifest,
    Options { preflight: bool },
}

/// A content file for one response: opened for it, or shared from the worker's
/// open-file cache. Derefs to the [`File`].
#[derive(Debug)]
pub enum ContentFile {
    /// Opened for this response (`content.open_file_cache = 0`).
    Owned(File),
    /// Shared with other responses of this worker.
    Shared(Arc<File>),
}

impl std::ops::Deref for ContentFile {
    type Target = File;

    fn deref(&self) -> &File {
        match self {
            ContentFile::Owned(f) => f,
            ContentFile::Shared(f) => f,
        }
    }
}

struct Found {
    file: ContentFile,
    len: u64,
    mtime: SystemTime,
    ino: u64,
}

/// One file in a worker's open-file cache.
struct OpenEntry {
    file: Arc<File>,
    len: u64,
    mtime: SystemTime,
    ino: u64,
    /// When it was opened ([`crate::streams::now_ms`]).
    opened_ms: u64,
}

/// A worker thread's open-file cache: the site root its entries are relative to
/// (held, so its address cannot be reused by another root while entries exist) and
/// the files by normalised path, least recently used first out.
struct OpenFiles {
    root: Arc<OwnedFd>,
    /// At most this many files (`content.open_file_cache`).
    entries: usize,
    files: lru::LruCache<Box<str>, OpenEntry>,
}

thread_local! {
    /// This worker thread's open-file cache (`content.open_file_cache`).
    static OPEN_FILES: std::cell::RefCell<Option<OpenFiles>> =
        const { std::cell::RefCell::new(None) };
}

fn route(
    req: &RequestHead,
    raw: &[u8],
    site: &Site,
    scratch: &mut Scratch,
) -> Result<Routed, HttpError> {
    if req.target_too_long {
        return Err(HttpError::TargetTooLong);
    }
    let target = &raw[req.target.clone()];
    match req.host.clone() {
        None if req.minor_version >= 1 => return Err(HttpError::MissingHost),
        Some(h) if !valid_authority(&raw[h.clone()]) => return Err(HttpError::BadHost),
        _ => {}
    }
    if http::path::absolute_form_authority(target).is_some_and(|a| !valid_authority(a)) {
        return Err(HttpError::BadHost);
    }
    match req.method() {
        Method::Options => {
            let preflight = req.origin.is_some() && req.ac_request_method.is_some();
            if preflight {
                let origin = &raw[req.origin.clone().unwrap_or_default()];
                if !origin_allowed(origin, &site.cors) {
                    return Err(HttpError::OriginNotAllowed);
                }
            }
            if target != b"*" {
                http::path::normalise(target, &mut scratch.rel)?;
            }
            Ok(Routed::Options { preflight })
        }
        Method::Other => Err(HttpError::MethodNotAllowed),
        Method::Get | Method::Head => {
            http::path::normalise(target, &mut scratch.rel)?;
            if !site.catalog.is_empty() && manifest::policy::split_path(&scratch.rel).is_some() {
                return Ok(Routed::Manifest);
            }
            if site.cache.is_some() {
                return Ok(Routed::Cached);
            }
            open_content(site, scratch).map(Routed::File)
        }
    }
}

/// [`open_under`] through this worker's open-file cache, when the site has one: a
/// file opened less than `open_file_cache_valid_ms` ago is shared, anything else is
/// opened (and an expired entry replaced; dropped if the path no longer opens).
fn open_content(site: &Site, scratch: &mut Scratch) -> Result<Found, HttpError> {
    let entries = site.open_file_cache.entries;
    if entries == 0 {
        return open_under(site, scratch);
    }
    let now_ms = crate::streams::now_ms();
    let valid_ms = site.open_file_cache.valid.as_millis() as u64;
    let hit = OPEN_FILES.with(|cell| {
        let mut cache = cell.borrow_mut();
        let cache = cache.as_mut()?;
        if !Arc::ptr_eq(&cache.root, &site.root_dir) {
            return None;
        }
        let e = cache.files.get(scratch.rel.as_str())?;
        (now_ms.saturating_sub(e.opened_ms) < valid_ms).then(|| Found {
            file: ContentFile::Shared(e.file.clone()),
            len: e.len,
            mtime: e.mtime,
            ino: e.ino,
        })
    });
    let counters = site.open_file_counters.as_ref();
    if let Some(found) = hit {
        if let Some((hits, _)) = counters {
            hits.inc();
        }
        return Ok(found);
    }
    if let Some((_, misses)) = counters {
        misses.inc();
    }
    let opened = open_under(site, scratch);
    OPEN_FILES.with(|cell| {
        let mut cell = cell.borrow_mut();
        // A new root (a restart-free change of site, a test) or a new size: start over.
        // Unbounded map, trimmed by hand: `LruCache::new` would allocate room for all
        // `entries` up front.
        let cache = match cell.as_mut() {
            Some(c) if Arc::ptr_eq(&c.root, &site.root_dir) && c.entries == entries => c,
            _ => cell.insert(OpenFiles {
                root: site.root_dir.clone(),
                entries,
                files: lru::LruCache::unbounded(),
            }),
        };
        let mut found = match opened {
            Ok(found) => found,
            Err(e) => {
                cache.files.pop(scratch.rel.as_str());
                return Err(e);
            }
        };
        let file = match found.file {
            ContentFile::Owned(f) => Arc::new(f),
            ContentFile::Shared(f) => f,
        };
        cache.files.put(
            scratch.rel.as_str().into(),
            OpenEntry {
                file: file.clone(),
                len: found.len,
                mtime: found.mtime,
                ino: found.ino,
                opened_ms: now_ms,
            },
        );
        while cache.files.len() > entries {
            cache.files.pop_lru();
        }
        found.file = ContentFile::Shared(file);
        Ok(found)
    })
}

/// Opens `scratch.rel` (already normalised) beneath the root as `content.symlinks`
/// allows, without blocking, and only if it is a regular file.
fn open_under(site: &Site, scratch: &mut Scratch) -> Result<Found, HttpError> {
    scratch.cpath.clear();
    scratch.cpath.extend_from_slice(scratch.rel.as_bytes());
    scratch.cpath.push(0);
    // The normaliser refuses NUL, so this only fails on a bug; answer 400, not 500.
    let path = CStr::from_bytes_with_nul(&scratch.cpath).map_err(|_| HttpError::BadPath)?;
    let resolve = match site.symlinks {
        SymlinkPolicy::Refuse => Resolve::BeneathNoSymlinks,
        SymlinkPolicy::WithinRoot | SymlinkPolicy::Follow => Resolve::FollowSymlinks,
    };
    let file = File::from(
        sys::open_beneath(site.root_dir.as_fd(), path, resolve).map_err(|e| open_error(&e))?,
    );
    let meta = file.metadata().map_err(|e| open_error(&e))?;
    if !meta.is_file() {
        return Err(HttpError::NotFound);
    }
    if site.symlinks == SymlinkPolicy::WithinRoot && !resolved_within_root(site, scratch, &file) {
        return Err(HttpError::NotFound);
    }
    // O_NONBLOCK kept the open itself from blocking; a regular file does not need it.
    sys::clear_nonblock(file.as_fd()).map_err(|e| open_error(&e))?;
    Ok(Found {
        len: meta.len(),
        mtime: meta.modified().unwrap_or(UNIX_EPOCH),
        ino: meta.ino(),
        file: ContentFile::Owned(file),
    })
}

/// Whether the opened `file` really lies beneath the root (after symlinks).
fn resolved_within_root(site: &Site, scratch: &mut Scratch, file: &File) -> bool {
    if scratch.resolved.len() < 4096 {
        scratch.resolved.resize(4096, 0);
    }
    let Ok(n) = sys::fd_path(file.as_fd(), &mut scratch.resolved) else {
        return false;
    };
    let real = &scratch.resolved[..n];
    let root = &*site.root_canonical;
    real.strip_prefix(root)
        .is_some_and(|rest| rest.first() == Some(&b'/') || root == b"/")
}

/// The one mapping from an `openat2`/`fstat` error to an answer. A request path can
/// cause only 4xx; 5xx is left for conditions of the server itself.
fn open_error(e: &std::io::Error) -> HttpError {
    match e.raw_os_error().unwrap_or(0) {
        libc::ENOENT
        | libc::ENOTDIR
        | libc::ELOOP
        | libc::EXDEV
        | libc::ENAMETOOLONG
        | libc::EISDIR
        | libc::ENXIO
        | libc::ENODEV
        | libc::EINVAL
        | libc::EOPNOTSUPP => HttpError::NotFound,
        libc::EACCES | libc::EPERM => HttpError::Forbidden,
        // Out of descriptors or memory, or a lease held by another process.
        libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EAGAIN => HttpError::Unavailable,
        _ => {
            if crate::metrics::OPEN_FAILURE_LOG.allow() {
                tracing::warn!(error = %e, "opening a content file failed (rate-limited)");
            }
            HttpError::Internal
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn file_response(
    req: &RequestHead,
    raw: &[u8],
    site: &Site,
    scratch: &mut Scratch,
    found: Found,
    origin: Option<&[u8]>,
    keep_alive: bool,
    byte_budget: u64,
) -> Plan {
    let Found {
        file,
        len,
        mtime,
        ino,
    } = found;
    // Second precision, as Last-Modified carries it.
    let mtime_secs = mtime.duration_since(UNIX_EPOCH).unwrap_or_default();
    let last_modified = UNIX_EPOCH + Duration::from_secs(mtime_secs.as_secs());
    let mut etag_buf = [0u8; 64];
    let etag = {
        let mut c = std::io::Cursor::new(&mut etag_buf[..]);
        let _ = write!(
            c,
            "\"{:x}-{:x}{:08x}-{:x}\"",
            len,
            mtime_secs.as_secs(),
            mtime_secs.subsec_nanos(),
            ino
        );
        let n = c.position() as usize;
        &etag_buf[..n]
    };
    let rel = scratch.rel.as_str();
    let entity = Entity {
        len,
        etag,
        last_modified,
        content_type: http::content_type(rel).as_bytes(),
        cache_control: http::cache_control(rel).as_bytes(),
        x_cache: None,
    };
    entity_response(
        req,
        raw,
        site,
        scratch,
        &entity,
        origin,
        keep_alive,
        byte_budget,
        |offset, len| Body::File { file, offset, len },
    )
}

/// What a representation's response head needs, whatever holds its bytes.
struct Entity<'a> {
    len: u64,
    etag: &'a [u8],
    last_modified: SystemTime,
    content_type: &'a [u8],
    cache_control: &'a [u8],
    /// `X-Cache` (`HIT` or `MISS`) in edge mode.
    x_cache: Option<&'static [u8]>,
}

/// The response to a GET or HEAD of `e`: preconditions, conditional GET, byte
/// ranges, then the head; `body(offset, len)` supplies the bytes to send.
#[allow(clippy::too_many_arguments)]
fn entity_response(
    req: &RequestHead,
    raw: &[u8],
    site: &Site,
    scratch: &mut Scratch,
    e: &Entity<'_>,
    origin: Option<&[u8]>,
    keep_alive: bool,
    byte_budget: u64,
    body: impl FnOnce(u64, u64) -> Body,
) -> Plan {
    let (len, etag, last_modified) = (e.len, e.etag, e.last_modified);
    // Preconditions in RFC 9110 13.2.2 order: If-Match, else If-Unmodified-Since
    // (412 when false, with or without Range); then If-None-Match, else
    // If-Modified-Since (304); then If-Range.
    let http_date = |v: &crate::http::request::Span| {
        std::str::from_utf8(&raw[v.clone()])
            .ok()
            .and_then(|s| httpdate::parse_http_date(s.trim()).ok())
    };
    let precondition_failed = match req.if_match.as_ref() {
        Some(v) => !etag_list_matches_strong(&raw[v.clone()], etag),
        None => req
            .if_unmodified_since
            .as_ref()
            .and_then(http_date)
            .is_some_and(|ius| last_modified > ius),
    };
    if precondition_failed {
        let mut w = HeadWriter::start(&mut scratch.head, 412);
        w.header("ETag", etag)
            .header_date("Last-Modified", last_modified)
            .header("Content-Type", b"text/plain; charset=utf-8")
            .header("Cache-Control", b"no-store");
        cors_headers(&mut w, origin, &site.cors);
        let body = HttpError::PreconditionFailed.body();
        w.header_u64("Content-Length", body.len() as u64);
        connection_header(&mut w, keep_alive);
        w.finish();
        return Plan::new(
            412,
            if req.method() == Method::Head {
                Body::None
            } else {
                Body::Static(body)
            },
            !keep_alive,
        );
    }
    let not_modified = match req.if_none_match.clone() {
        Some(v) => etag_list_matches(&raw[v], etag),
        None => req
            .if_modified_since
            .as_ref()
            .and_then(http_date)
            .is_some_and(|ims| last_modified <= ims),
    };
    let method = req.method();

    if not_modified {
        let mut w = HeadWriter::start(&mut scratch.head, 304);
        w.header("ETag", etag)
            .header_date("Last-Modified", last_modified)
            .header("Cache-Control", e.cache_control);
        cors_headers(&mut w, origin, &site.cors);
        connection_header(&mut w, keep_alive);
        w.finish();
        return Plan::new(304, Body::None, !keep_alive);
    }

    let range_applies = req.range.is_some()
        && match req.if_range.clone() {
            None => true,
            Some(v) => if_range_matches(&raw[v], etag, last_modified),
        };
    let outcome = match req.range.clone() {
        Some(v) if range_applies => range::evaluate(&raw[v], len),
        _ => RangeOutcome::Full,
    };
    let (status, offset, body_len) = match outcome {
        RangeOutcome::Full => (200, 0, len),
        RangeOutcome::Partial { start, end } => (206, start, end - start + 1),
        RangeOutcome::Unsatisfiable => {
            return error_response(
                HttpError::RangeNotSatisfiable,
                method,
                origin,
                site,
                scratch,
                keep_alive,
                Some(len),
            );
        }
    };
    let sends_body = method == Method::Get && body_len > 0;
    let close = !keep_alive || (sends_body && body_len >= byte_budget);
    let mut w = HeadWriter::start(&mut scratch.head, status);
    w.header("Content-Type", e.content_type)
        .header_u64("Content-Length", body_len)
        .header("Accept-Ranges", b"bytes")
        .header("ETag", etag)
        .header_date("Last-Modified", last_modified)
        .header("Cache-Control", e.cache_control);
    if status == 206 {
        w.content_range(offset, offset + body_len - 1, len);
    }
    if let Some(v) = e.x_cache {
        w.header("X-Cache", v);
    }
    cors_headers(&mut w, origin, &site.cors);
    connection_header(&mut w, !close);
    w.finish();
    let body = if sends_body {
        body(offset, body_len)
    } else {
        Body::None
    };
    Plan::new(status, body, close)
}

/// Answers a GET or HEAD in edge mode from the cache: a hit is sent from its
/// container (or from memory when hot); a miss or an expired object joins the fill
/// for `key` (from `from`, default `[upstream]`) and the connection waits for its
/// head ([`Plan::fill`], then [`fill_response`]).
#[allow(clippy::too_many_arguments)]
fn cached_response(
    req: &RequestHead,
    raw: &[u8],
    site: &Site,
    scratch: &mut Scratch,
    cache: &Arc<EdgeCache>,
    from: Option<&crate::upstream::OriginUrl>,
    origin: Option<&[u8]>,
    keep_alive: bool,
    byte_budget: u64,
) -> Plan {
    let key = scratch.rel.as_str();
    // An edge-mode segment is fetched by the path the client asked for (its
    // signing token included), kept in `scratch.key`.
    let from = from.map(|o| (o, scratch.key.as_str()));
    let hit = match cache.store.lookup(key) {
        storage::Lookup::Hit(h) => h,
        storage::Lookup::Miss | storage::Lookup::Stale => {
            let fill = cache.join_from(key, from).reader();
            let mut plan = Plan::new(0, Body::None, false);
            plan.fill = Some(fill);
            return plan;
        }
    };
    let meta = &hit.entry.meta;
    let mut etag_buf = [0u8; 40];
    let etag = cached_etag(meta, hit.len, &mut etag_buf);
    let entity = Entity {
        len: hit.len,
        etag,
        last_modified: last_modified_of(meta),
        content_type: meta.content_type.as_bytes(),
        cache_control: meta
            .cache_control
            .as_deref()
            .unwrap_or(http::cache_control(key))
            .as_bytes(),
        x_cache: Some(b"HIT"),
    };
    let storage::Hit {
        file,
        offset: base,
        container,
        body: hot,
        pin,
        ..
    } = hit;
    entity_response(
        req,
        raw,
        site,
        scratch,
        &entity,
        origin,
        keep_alive,
        byte_budget,
        |offset, len| match hot {
            Some(bytes) => Body::Slice {
                bytes,
                offset: offset as usize,
                len: len as usize,
            },
            None => Body::Cached {
                file,
                offset: base + offset,
                len,
                container,
                pin,
            },
        },
    )
}

/// The ETag a cached object is served with, the same during its fill and after:
/// the origin's, or one made from the length and Last-Modified.
fn cached_etag<'a>(meta: &'a storage::Meta, len: u64, buf: &'a mut [u8; 40]) -> &'a [u8] {
    if let Some(e) = &meta.etag {
        return e.as_bytes();
    }
    let mut c = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(c, "\"{len:x}-{:x}\"", meta.last_modified.unwrap_or(0));
    let n = c.position() as usize;
    &buf[..n]
}

fn last_modified_of(meta: &storage::Meta) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(meta.last_modified.unwrap_or(0))
}

/// The response to a request that waited for a fill's head: the origin's failure
/// mapped to 502/504 (or its 4xx relayed), or the object streamed from the fill.
#[allow(clippy::too_many_arguments)]
pub fn fill_response(
    req: &RequestHead,
    raw: &[u8],
    site: &Site,
    scratch: &mut Scratch,
    fill: crate::cache::FillReader,
    head: Result<crate::cache::FillHead, crate::cache::FillError>,
    keep_alive: bool,
    byte_budget: u64,
) -> Plan {
    use crate::cache::FillError;
    let origin = req.origin.clone().map(|s| &raw[s]);
    let head = match head {
        Ok(h) => h,
        Err(e) => {
            let err = match e {
                FillError::BadGateway => HttpError::BadGateway,
                FillError::GatewayTimeout => HttpError::GatewayTimeout,
                FillError::Status(410) => HttpError::Gone,
                FillError::Status(403 | 451) => HttpError::Forbidden,
                FillError::Status(_) => HttpError::NotFound,
            };
            return error_response(err, req.method(), origin, site, scratch, keep_alive, None);
        }
    };
    let meta = &head.meta;
    let mut etag_buf = [0u8; 40];
    let etag = cached_etag(meta, head.len, &mut etag_buf);
    let key = scratch.rel.as_str();
    let entity = Entity {
        len: head.len,
        etag,
        last_modified: last_modified_of(meta),
        content_type: meta.content_type.as_bytes(),
        cache_control: meta
            .cache_control
            .as_deref()
            .unwrap_or(http::cache_control(key))
            .as_bytes(),
        x_cache: Some(b"MISS"),
    };
    entity_response(
        req,
        raw,
        site,
        scratch,
        &entity,
        origin,
        keep_alive,
        byte_budget,
        |offset, len| Body::Fill { fill, offset, len },
    )
}

fn connection_header(w: &mut HeadWriter<'_>, keep_alive: bool) {
    w.header(
        "Connection",
        if keep_alive { b"keep-alive" } else { b"close" },
    );
}

fn origin_allowed(origin: &[u8], cors: &Cors) -> bool {
    match &cors.allowed_origins {
        AllowedOrigins::Any => true,
        AllowedOrigins::List(list) => list
            .iter()
            .any(|o| o.as_bytes().eq_ignore_ascii_case(origin)),
    }
}

/// CORS response headers for an actual (non-preflight) response or a preflight.
fn cors_headers(w: &mut HeadWriter<'_>, origin: Option<&[u8]>, cors: &Cors) {
    match &cors.allowed_origins {
        AllowedOrigins::Any => {
            w.header("Access-Control-Allow-Origin", b"*");
        }
        AllowedOrigins::List(_) => {
            if let Some(o) = origin.filter(|o| origin_allowed(o, cors)) {
                w.header("Access-Control-Allow-Origin", o);
            }
            w.header("Vary", b"Origin");
        }
    }
    w.header(
        "Access-Control-Expose-Headers",
        b"Content-Length, Content-Range, Accept-Ranges, ETag, Last-Modified, Date",
    );
}

/// `If-None-Match`: `*` or a comma-separated list compared weakly with our ETag.
fn etag_list_matches(list: &[u8], etag: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        t == b"*" || t.strip_prefix(b"W/").unwrap_or(t) == etag
    })
}

/// `If-Match`: `*` (the representation exists) or a list compared strongly: a weak
/// tag never matches.
fn etag_list_matches_strong(list: &[u8], etag: &[u8]) -> bool {
    list.split(|&b| b == b',').any(|t| {
        let t = t.trim_ascii();
        t == b"*" || t == etag
    })
}

/// `If-Range`: a strong ETag must equal ours exactly; a date must equal Last-Modified.
fn if_range_matches(v: &[u8], etag: &[u8], last_modified: SystemTime) -> bool {
    let v = v.trim_ascii();
    if v.starts_with(b"\"") {
        return v == etag;
    }
    if v.starts_with(b"W/") {
        return false;
    }
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
        == Some(last_modified)
}

/// The query string of a request target (after `?`, before any `#`).
fn query_of(target: &[u8]) -> &[u8] {
    let Some(q) = target.iter().position(|&b| b == b'?') else {
        return b"";
    };
    let q = &target[q + 1..];
    match q.iter().position(|&b| b == b'#') {
        Some(h) => &q[..h],
        None => q,
    }
}

/// Answers a request under `/streams/` (or `/s/TOKEN/streams/`): asks the
/// signalling policy, then renders a manifest, serves a segment file, holds the
/// request, or refuses it with the policy's 4xx. No answer here closes the
/// connection.
#[allow(clippy::too_many_arguments)]
fn manifest_response(
    req: &RequestHead,
    raw: &[u8],
    site: &Site,
    scratch: &mut Scratch,
    origin: Option<&[u8]>,
    keep_alive: bool,
    byte_budget: u64,
    may_hold: bool,
) -> Plan {
    let catalog = &*site.catalog;
    let now_ms = streams::now_ms();
    let name = manifest::policy::split_path(&scratch.rel).map_or("", |(_, n, _)| n);
    let refuse = |scratch: &mut Scratch, r| refusal(req, site, scratch, origin, keep_alive, r);
    let Some(entry) = catalog.get(name) else {
        return refuse(scratch, manifest::Refusal::Unknown);
    };
    let Some(p) = entry.current() else {
        // Edge mode, and the origin has not described the stream yet.
        return error_response(
            HttpError::Unavailable,
            req.method(),
            origin,
            site,
            scratch,
            keep_alive,
            None,
        );
    };
    let request = manifest::Request {
        path: &scratch.rel,
        query: query_of(&raw[req.target.clone()]),
        may_hold,
    };
    let decision = manifest::decide(&request, Some(&p), catalog.keys(), now_ms);
    match decision {
        manifest::Decision::Refuse(r) => refuse(scratch, r),
        manifest::Decision::Hold { until_ms } => Plan {
            status: 0,
            body: Body::None,
            close: false,
            hold_until_ms: Some(until_ms),
            fill: None,
        },
        manifest::Decision::Init { rendition } | manifest::Decision::Segment { rendition, .. } => {
            let r = &p.stream.renditions[rendition];
            let file = match decision {
                manifest::Decision::Segment { index, .. } => &r.segments[index].file,
                _ => r.init.as_deref().unwrap_or_default(),
            };
            let folder = match &entry.source {
                streams::Source::Folder(folder) => folder,
                streams::Source::Origin(upstream) => {
                    if let Some(cache) = &site.cache {
                        // The segment through the cache, keyed and fetched by its
                        // path at the origin (any signing token dropped).
                        let mut key = std::mem::take(&mut scratch.key);
                        key.clear();
                        key.push_str("streams/");
                        key.push_str(name);
                        key.push('/');
                        key.push_str(file);
                        scratch.key = std::mem::replace(&mut scratch.rel, key);
                        return cached_response(
                            req,
                            raw,
                            site,
                            scratch,
                            cache,
                            Some(upstream),
                            origin,
                            keep_alive,
                            byte_budget,
                        );
                    }
                    // Without a cache, send the player to the origin, same path.
                    return redirect(
                        req,
                        raw,
                        site,
                        scratch,
                        origin,
                        keep_alive,
                        &upstream.base(),
                    );
                }
            };
            scratch.rel.clear();
            scratch.rel.push_str(file);
            match open_under(folder, scratch) {
                Ok(found) => file_response(
                    req,
                    raw,
                    folder,
                    scratch,
                    found,
                    origin,
                    keep_alive,
                    byte_budget,
                ),
                // The folder changed behind the edge's back: answer as for any file.
                Err(e) => error_response(e, req.method(), origin, site, scratch, keep_alive, None),
            }
        }
        d => {
            let Some((kind, bytes)) = entry.rendered(catalog, &p, &d, now_ms) else {
                return refuse(scratch, manifest::Refusal::Unknown);
            };
            let mut w = HeadWriter::start(&mut scratch.head, 200);
            w.header("Content-Type", kind.content_type())
                .header_u64("Content-Length", bytes.len() as u64);
            match d.max_age(&p) {
                Some(secs) => w.header_prefixed_u64("Cache-Control", "public, max-age=", secs),
                None => w.header("Cache-Control", b"no-store"),
            };
            cors_headers(&mut w, origin, &site.cors);
            connection_header(&mut w, keep_alive);
            w.finish();
            let body = if req.method() == Method::Head {
                Body::None
            } else {
                Body::Shared(bytes)
            };
            Plan::new(200, body, !keep_alive)
        }
    }
}

/// A deliberate 4xx of the signalling policy: its status, Cache-Control and CORS,
/// and the connection kept open.
fn refusal(
    req: &RequestHead,
    site: &Site,
    scratch: &mut Scratch,
    origin: Option<&[u8]>,
    keep_alive: bool,
    r: manifest::Refusal,
) -> Plan {
    site.catalog.refused(r);
    let status = r.status();
    let text = r.text().as_bytes();
    let mut w = HeadWriter::start(&mut scratch.head, status);
    w.header("Content-Type", b"text/plain; charset=utf-8")
        .header("Cache-Control", r.cache_control().as_bytes())
        .header_u64("Content-Length", text.len() as u64);
    cors_headers(&mut w, origin, &site.cors);
    connection_header(&mut w, keep_alive);
    w.finish();
    let body = if req.method() == Method::Head {
        Body::None
    } else {
        Body::Static(text)
    };
    Plan::new(status, body, !keep_alive)
}

/// A 302 to the same path on `base` (an edge-mode segment, until the cache lands).
fn redirect(
    req: &RequestHead,
    raw: &[u8],
    site: &Site,
    scratch: &mut Scratch,
    origin: Option<&[u8]>,
    keep_alive: bool,
    base: &str,
) -> Plan {
    let target = &raw[req.target.clone()];
    // The path as the client sent it (absolute-form reduced to its path).
    let path = http::path::strip_absolute_form(target);
    let mut w = HeadWriter::start(&mut scratch.head, 302);
    let mut location = Vec::with_capacity(base.len() + path.len());
    location.extend_from_slice(base.as_bytes());
    location.extend_from_slice(path);
    w.header("Location", &location)
        .header("Cache-Control", b"no-store")
        .header_u64("Content-Length", 0);
    cors_headers(&mut w, origin, &site.cors);
    connection_header(&mut w, keep_alive);
    w.finish();
    Plan::new(302, Body::None, !keep_alive)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::request::parse_head;
    use std::path::PathBuf;

    struct Fixture {
        dir: PathBuf,
        site: Site,
    }

    impl Fixture {
        fn new(name: &str) -> Self {
            let dir =
                std::env::temp_dir().join(format!("edge-handler-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("v")).unwrap();
            std::fs::write(dir.join("v/seg.ts"), vec![7u8; 1000]).unwrap();
            std::fs::write(dir.join("index.html"), b"<html></html>").unwrap();
            let site = Site::open(
                &dir,
                SymlinkPolicy::Refuse,
                Cors {
                    allowed_origins: AllowedOrigins::Any,
                    preflight_max_age: Duration::from_secs(60),
                },
            )
            .unwrap();
            Self { dir, site }
        }

        fn get(&self, req: &str) -> (Plan, String) {
            let raw = req.as_bytes();
            let head = parse_head(raw, 64, 16384).unwrap().unwrap();
            let mut scratch = Scratch::default();
            let plan = respond(
                &head,
                raw,
                &self.site,
                &mut scratch,
                head.keep_alive(),
                u64::MAX,
                true,
            );
            (plan, String::from_utf8(scratch.head).unwrap())
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(": ")?;
            n.eq_ignore_ascii_case(name).then_some(v)
        })
    }

    #[test]
    fn the_open_file_cache_shares_a_descriptor_and_sees_changes_after_its_validity() {
        let mut f = Fixture::new("openfiles");
        let (hits, misses) = (
            prometheus::IntCounter::new("h", "h").unwrap(),
            prometheus::IntCounter::new("m", "m").unwrap(),
        );
        let policy = OpenFileCache {
            entries: 2,
            valid: Duration::from_millis(300),
        };
        f.site = f
            .site
            .clone()
            .with_open_file_cache(policy, (hits.clone(), misses.clone()));
        let shared = |p: &Plan| match &p.body {
            Body::File {
                file: ContentFile::Shared(file),
                ..
            } => file.clone(),
            other => panic!("not a shared file: {other:?}"),
        };
        let get = "GET /v/seg.ts HTTP/1.1\r\nHost: x\r\n\r\n";

        // Two responses in flight share one descriptor.
        let (a, h) = f.get(get);
        let (b, _) = f.get(get);
        assert_eq!(header(&h, "Content-Length"), Some("1000"));
        assert!(Arc::ptr_eq(&shared(&a), &shared(&b)));
        assert_eq!((hits.get(), misses.get()), (1, 1));

        // Replaced by a rename: served as it was until the entry's time is up.
        std::fs::write(f.dir.join("v/new.ts"), vec![1u8; 10]).unwrap();
        std::fs::rename(f.dir.join("v/new.ts"), f.dir.join("v/seg.ts")).unwrap();
        let (_, h) = f.get(get);
        assert_eq!(header(&h, "Content-Length"), Some("1000"));
        std::thread::sleep(Duration::from_millis(350));
        let (c, h) = f.get(get);
        assert_eq!(header(&h, "Content-Length"), Some("10"));
        assert!(!Arc::ptr_eq(&shared(&a), &shared(&c)));
        // The old descriptor lives on only in the responses that hold it.
        drop(b);
        assert_eq!(Arc::strong_count(&shared(&a)), 2);

        // Removed: 404 once the entry's time is up, and the entry is dropped.
        std::fs::remove_file(f.dir.join("v/seg.ts")).unwrap();
        std::thread::sleep(Duration::from_millis(350));
        let (p, _) = f.get(get);
        assert_eq!(p.status, 404);
        // Errors are not kept: the file is served as soon as it exists.
        std::fs::write(f.dir.join("v/seg.ts"), vec![2u8; 20]).unwrap();
        let (p, h) = f.get(get);
        assert_eq!(p.status, 200);
        assert_eq!(header(&h, "Content-Length"), Some("20"));

        // At most `entries` files per worker: the least recently used goes first.
        std::fs::write(f.dir.join("v/b.ts"), b"b").unwrap();
        f.get("GET /v/b.ts HTTP/1.1\r\nHost: x\r\n\r\n");
        f.get("GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n");
        let before = misses.get();
        f.get(get);
        assert_eq!(
            misses.get(),
            before + 1,
            "seg.ts was the least recently used"
        );
    }

    #[test]
    fn full_get_range_and_conditional() {
        let f = Fixture::new("full");
        let (p, h) = f.get("GET /v/seg.ts HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(p.status, 200);
        assert_eq!(header(&h, "Content-Length"), Some("1000"));
        assert_eq!(header(&h, "Content-Type"), Some("video/mp2t"));
        assert!(matches!(
            p.body,
            Body::File {
                offset: 0,
                len: 1000,
                ..
            }
        ));
        let etag = header(&h, "ETag").unwrap().to_string();

        let (p, h) = f.get("GET /v/seg.ts HTTP/1.1\r\nHost: x\r\nRange: bytes=10-19\r\n\r\n");
        assert_eq!(p.status, 206);
        assert_eq!(header(&h, "Content-Range"), Some("bytes 10-19/1000"));
        assert!(matches!(
            p.body,
            Body::File {
                offset: 10,
                len: 10,
                ..
            }
        ));

        let (p, h) = f.get("GET /v/seg.ts HTTP/1.1\r\nHost: x\r\nRange: bytes=5000-\r\n\r\n");
        assert_eq!(p.status, 416);
        assert_eq!(header(&h, "Content-Range"), Some("bytes */1000"));
        assert!(!p.close);

        let (p, _) = f.get(&format!(
            "GET /v/seg.ts HTTP/1.1\r\nHost: x\r\nIf-None-Match: {etag}\r\n\r\n"
        ));
        assert_eq!(p.status, 304);
        let (p, _) = f.get("GET /v/seg.ts HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"other\"\r\n\r\n");
        assert_eq!(p.status, 200);
        let lm = header(&h, "Date").unwrap(); // now >= mtime
        let (p, _) = f.get(&format!(
            "GET /v/seg.ts HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: {lm}\r\n\r\n"
        ));
        assert_eq!(p.status, 304);

        // If-Range with a different ETag: the range is ignored.
        let (p, _) = f.get(
            "GET /v/seg.ts HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nIf-Range: \"nope\"\r\n\r\n",
        );
        assert_eq!(p.status, 200);
        let (p, _) = f.get(&format!(
            "GET /v/seg.ts HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\nIf-Range: {etag}\r\n\r\n"
        ));
        assert_eq!(p.status, 206);
    }

    #[test]
    fn head_has_length_but_no_body() {
        let f = Fixture::new("head");
        let (p, h) = f.get("HEAD /v/seg.ts HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(p.status, 200);
        assert_eq!(header(&h, "Content-Length"), Some("1000"));
        assert!(matches!(p.body, Body::None));
    }

    #[test]
    fn errors_keep_alive_and_carry_cache_control() {
        let f = Fixture::new("errors");
        let (p, h) = f.get("GET /missing.ts HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((p.status, p.close), (404, false));
        assert_eq!(header(&h, "Cache-Control"), Some("public, max-age=2"));
        assert_eq!(header(&h, "Connection"), Some("keep-alive"));
        let (p, _) = f.get("GET /v/seg.ts HTTP/1.1\r\n\r\n");
        assert_eq!((p.status, p.close), (400, false));
        let (p, _) = f.get("GET /../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!((p.status, p.close), (400, false));
        let (p, h) = f.get("DELETE /v/seg.ts HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(p.status, 405);
        assert_eq!(header(&h, "Allow"), Some("GET, HEAD, OPTIONS"));
        let (p, _) = f.get("GET /v HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(p.status, 404, "a directory is not a file");
    }

    #[test]
    fn directory_index_and_symlinks() {
        let f = Fixture::new("index");
        let (p, _) = f.get("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(p.status, 200);
        std::os::unix::fs::symlink("/etc/passwd", f.dir.join("link.txt")).unwrap();
        let (p, _) = f.get("GET /link.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(p.status, 404);
    }

    #[test]
    fn cors_preflight_and_origin_list() {
        let mut f = Fixture::new("cors");
        let (p, h) = f.get(
            "OPTIONS /v/seg.ts HTTP/1.1\r\nHost: x\r\nOrigin: https://player.example\r\nAccess-Control-Request-Method: GET\r\nAccess-Control-Request-Headers: range\r\n\r\n",
        );
        assert_eq!(p.status, 204);
        assert_eq!(header(&h, "Access-Control-Allow-Origin"), Some("*"));
        assert_eq!(header(&h, "Access-Control-Allow-Headers"), Some("range"));
        assert_eq!(header(&h, "Access-Control-Max-Age"), Some("60"));

        f.site.cors.allowed_origins = AllowedOrigins::List(vec!["https://player.example".into()]);
        let (_, h) =
            f.get("GET /v/seg.ts HTTP/1.1\r\nHost: x\r\nOrigin: https://player.example\r\n\r\n");
        assert_eq!(
            header(&h, "Access-Control-Allow-Origin"),
            Some("https://player.example")
        );
        assert_eq!(header(&h, "Vary"), Some("Origin"));
        let (_, h) =
            f.get("GET /v/seg.ts HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\n\r\n");
        assert_eq!(header(&h, "Access-Control-Allow-Origin"), None);
        let (p, _) = f.get(
            "OPTIONS /v/seg.ts HTTP/1.1\r\nHost: x\r\nOrigin: https://evil.example\r\nAccess-Control-Request-Method: GET\r\n\r\n",
        );
        assert_eq!((p.status, p.close), (403, false));
    }

    #[test]
    fn preconditions_in_rfc_order() {
        let f = Fixture::new("precond");
        let (_, h) = f.get("GET /v/seg.ts HTTP/1.1\r\nHost: x\r\n\r\n");
        let etag = header(&h, "ETag").unwrap().to_string();
        let old = "Sun, 06 Nov 1994 08:49:37 GMT";
        let future = "Fri, 01 Jan 2100 00:00:00 GMT";
        for (extra, want) in [
            ("If-Match: \"nope\"".to_string(), 412),
            ("If-Match: *".to_string(), 200),
            (format!("If-Match: \"x\", {etag}"), 200),
            (format!("If-Match: W/{etag}"), 412),
            ("If-Match: \"nope\"\r\nRange: bytes=0-1".to_string(), 412),
            (format!("If-Unmodified-Since: {old}"), 412),
            (
                format!("If-Unmodified-Since: {old}\r\nRange: bytes=0-1"),
                412,
            ),
            (format!("If-Unmodified-Since: {future}"), 200),
            (
                format!("If-Unmodified-Since: {future}\r\nRange: bytes=0-1"),
                206,
            ),
            // If-Match wins over If-Unmodified-Since.
            (format!("If-Match: *\r\nIf-Unmodified-Since: {old}"), 200),
            ("If-Unmodified-Since: not a date".to_string(), 200),
        ] {
            let (p, h) = f.get(&format!(
                "GET /v/seg.ts HTTP/1.1\r\nHost: x\r\n{extra}\r\n\r\n"
            ));
            assert_eq!(p.status, want, "{extra}: {h}");
            assert!(!p.close, "{extra}");
        }
    }

    #[test]
    fn host_values() {
        let f = Fixture::new("host");
        for host in [
            "example.com",
            "example.com:8080",
            "[::1]:8443",
            "127.0.0.1",
            "a-b.c_d",
        ] {
            let (p, _) = f.get(&format!("GET /v/seg.ts HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert_eq!(p.status, 200, "{host}");
        }
        for host in [
            "a b",
            "a/b",
            "",
            "user@host",
            "host:80a",
            "[::1",
            "[zz]",
            "h:123456",
        ] {
            let (p, _) = f.get(&format!("GET /v/seg.ts HTTP/1.1\r\nHost: {host}\r\n\r\n"));
            assert_eq!((p.status, p.close), (400, false), "{host:?}");
        }
        let (p, _) =
            f.get("GET http://user@example.com/v/seg.ts HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(p.status, 400);
        let (p, _) = f.get("GET http://example.com/v/seg.ts HTTP/1.1\r\nHost: example.com\r\n\r\n");
        assert_eq!(p.status, 200);
    }

    #[test]
    fn options_204_has_no_content_length() {
        let f = Fixture::new("opt204");
        let (p, h) = f.get("OPTIONS /v/seg.ts HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(p.status, 204);
        assert_eq!(header(&h, "Content-Length"), None, "{h}");
    }

    #[test]
    fn path_errors_are_4xx_never_5xx() {
        let f = Fixture::new("patherr");
        let long = "a".repeat(300);
        for path in [
            format!("/{long}"),
            format!("/v/{long}.ts"),
            "/%61".repeat(300),
            "/v/seg.ts/x".to_string(),
            "/v/seg.ts/".to_string(),
        ] {
            let (p, _) = f.get(&format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n"));
            assert_eq!((p.status, p.close), (404, false), "{path}");
        }
        // A FIFO is not a regular file: 404 at once (opening it must not block).
        let fifo = f.dir.join("v/live.ts");
        assert!(std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let (p, _) = f.get("GET /v/live.ts HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(p.status, 404);
    }

    #[test]
    fn symlink_policies() {
        let mut f = Fixture::new("symlinks");
        let etc = std::env::temp_dir().join(format!("edge-handler-outside-{}", std::process::id()));
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(etc.join("secret.txt"), b"outside").unwrap();
        std::os::unix::fs::symlink(&etc, f.dir.join("out")).unwrap();
        std::os::unix::fs::symlink(f.dir.join("v"), f.dir.join("alias")).unwrap();
        std::os::unix::fs::symlink("seg.ts", f.dir.join("v/rel.ts")).unwrap();
        let get = |f: &Fixture, p: &str| {
            f.get(&format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n"))
                .0
                .status
        };
        let paths = ["/out/secret.txt", "/alias/seg.ts", "/v/rel.ts", "/v/seg.ts"];
        for (policy, want) in [
            (SymlinkPolicy::Refuse, [404, 404, 404, 200]),
            (SymlinkPolicy::WithinRoot, [404, 200, 200, 200]),
            (SymlinkPolicy::Follow, [200, 200, 200, 200]),
        ] {
            f.site.symlinks = policy;
            let got: Vec<u16> = paths.iter().map(|p| get(&f, p)).collect();
            assert_eq!(got, want, "{policy:?} on {paths:?}");
        }
        std::fs::remove_dir_all(&etc).ok();
    }

    #[test]
    fn byte_budget_closes_after_the_response() {
        let f = Fixture::new("budget");
        let raw = b"GET /v/seg.ts HTTP/1.1\r\nHost: x\r\n\r\n";
        let head = parse_head(raw, 64, 16384).unwrap().unwrap();
        let mut scratch = Scratch::default();
        let p = respond(&head, raw, &f.site, &mut scratch, true, 500, true);
        assert!(p.close);
        assert!(String::from_utf8_lossy(&scratch.head).contains("Connection: close"));
    }
}
