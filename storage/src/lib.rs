//! The segment cache on disk: per-disk preallocated ring containers, the sled index,
//! the in-memory hot set, purge, and the per-disk I/O pools for cold reads.
//!
//! It does not know about HTTP or sockets: `edge` asks it for a file, an offset and
//! a length ([`Hit`]) and sends the bytes itself, and hands it complete bodies to
//! store ([`Cache::insert`]). Fill coalescing (one origin fetch per key) lives in
//! `edge`, which owns the origin client.
//!
//! Guarantees:
//! - An object is indexed only after its body is durable (`fdatasync`, batched), so a
//!   crash leaves at worst unindexed bytes, which are never served.
//! - Bytes are never overwritten while a [`Hit`] for them lives (its pin holds the
//!   writer), and an object whose region was reserved for overwriting is a miss.
//! - A disk that returns I/O errors is taken out of service; its keys become misses
//!   and are placed on the remaining disks (rendezvous hashing: adding or losing a
//!   disk moves only that disk's share of keys).
//! - Start-up never serves a container the index does not match (new, resized,
//!   truncated or replaced containers start empty); a corrupt index is set aside and
//!   rebuilt empty.

mod index;
mod pool;
mod ring;

use std::fs::File;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use lru::LruCache;

pub use index::{Entry, Meta};
pub use pool::IoPool;
pub use ring::{parse_object_header, ObjectHeader, Pin, MIN_CONTAINER_BYTES};

/// Decodes an index value (for fuzzing the decoder; `None` for anything invalid).
pub fn decode_entry(bytes: &[u8]) -> Option<Entry> {
    index::decode(bytes)
}

use ring::{lock, Disk, WriteJob};

/// One disk of the cache.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// A directory on the disk (it must exist); the container is `data.bin` in it.
    pub path: PathBuf,
    /// Container size in bytes (at least [`MIN_CONTAINER_BYTES`]).
    pub size: u64,
}

/// Cache settings (validated by `edge`'s config loader).
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// The sled index directory (created if missing).
    pub index_dir: PathBuf,
    /// The disks.
    pub disks: Vec<DiskConfig>,
    /// Index entries kept in memory.
    pub hot_entries: NonZeroUsize,
    /// Small bodies kept in memory (each at most `hot_body_max_bytes`).
    pub hot_bodies: NonZeroUsize,
    /// Largest body kept in memory.
    pub hot_body_max_bytes: usize,
    /// Threads per disk for cold reads.
    pub io_threads_per_disk: usize,
    /// Queued cold reads per disk.
    pub io_queue_per_disk: usize,
    /// Objects queued per disk writer; beyond it, stores are refused.
    pub write_queue: usize,
}

/// Why the cache could not start. Each names the path at fault.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The index directory could not be created or opened.
    #[error("storage.index_dir `{path}`: {what}")]
    Index {
        /// The directory.
        path: PathBuf,
        /// What failed.
        what: String,
    },
    /// A disk could not be used.
    #[error("storage.disks[{index}].path `{path}`: {what}")]
    Disk {
        /// Position in the configuration.
        index: usize,
        /// The directory.
        path: PathBuf,
        /// What failed.
        what: String,
    },
}

/// Why an object was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InsertError {
    /// No disk is in service.
    #[error("no cache disk in service")]
    NoDisk,
    /// The disk's writer is behind (or holding for a slow reader).
    #[error("the disk writer is busy")]
    Busy,
    /// Larger than a quarter of the ring.
    #[error("object too large for the ring")]
    TooLarge,
}

/// What a lookup found.
#[derive(Debug)]
pub enum Lookup {
    /// A fresh object.
    Hit(Hit),
    /// An object past its expiry (the caller refetches).
    Stale,
    /// Nothing usable.
    Miss,
}

/// A fresh object, pinned for reading: send `len` bytes of `file` from `offset`, or
/// `body` when the object is in the hot set.
#[derive(Debug)]
pub struct Hit {
    /// The container.
    pub file: Arc<File>,
    /// Offset of the body in `file`.
    pub offset: u64,
    /// Body length.
    pub len: u64,
    /// The index entry (metadata, checksum).
    pub entry: Arc<Entry>,
    /// The container's id (for [`Cache::report_read_error`] and [`Cache::pool`]).
    pub container: u64,
    /// The body itself, if small and hot.
    pub body: Option<Arc<[u8]>>,
    /// Keeps the writer off the object until dropped.
    pub pin: Option<Pin>,
}

/// Counters, read by `edge`'s metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Fresh hits.
    pub hits: AtomicU64,
    /// Misses (absent, evicted, on a failed disk, or undecodable).
    pub misses: AtomicU64,
    /// Expired objects found.
    pub stale: AtomicU64,
    /// Objects stored (indexed).
    pub stored: AtomicU64,
    /// Stores refused (no disk, too large) or failed (a write or sync error). A busy
    /// writer is not counted here: the caller decides whether to retry.
    pub store_failures: AtomicU64,
    /// Objects overwritten by the ring.
    pub evictions: AtomicU64,
    /// Objects purged.
    pub purged: AtomicU64,
    /// Bytes written to containers.
    pub bytes_written: AtomicU64,
    /// Times the writer waited for a reader to leave a region.
    pub writer_holds: AtomicU64,
    /// Disks taken out of service.
    pub disk_failures: AtomicU64,
    /// Objects in the index (approximate: counted at start-up in the background).
    pub objects: AtomicU64,
}

/// One disk's state, for metrics and the admin API.
#[derive(Debug, Clone)]
pub struct DiskStatus {
    /// The configured directory.
    pub path: PathBuf,
    /// Container size.
    pub size: u64,
    /// Ring bytes holding data.
    pub used: u64,
    /// Whether it serves.
    pub in_service: bool,
    /// Cold reads queued on its pool so far.
    pub cold_reads: u64,
}

pub(crate) struct Inner {
    db: sled::Db,
    objects: sled::Tree,
    positions: sled::Tree,
    disks_tree: sled::Tree,
    disks: Vec<Arc<Disk>>,
    hot: Mutex<LruCache<Box<str>, Arc<Entry>>>,
    hot_bodies: Mutex<LruCache<Box<str>, Arc<[u8]>>>,
    hot_body_max: usize,
    stats: Stats,
}

/// The cache. Clones share it; when the last clone drops, the disk writers commit
/// what they hold and stop, and the index is released.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
    _closer: Arc<Closer>,
}

/// Stops the writers when the last [`Cache`] clone goes.
struct Closer {
    inner: Arc<Inner>,
    writers: Mutex<Vec<std::thread::JoinHandle<()>>>,
    counting: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for Closer {
    fn drop(&mut self) {
        self.close();
    }
}

impl Closer {
    fn close(&self) {
        self.counting.store(false, Ordering::Relaxed);
        for d in &self.inner.disks {
            lock(&d.writer).take();
        }
        let handles: Vec<_> = lock(&self.writers).drain(..).collect();
        for w in handles {
            // The last clone may go on a writer's own thread (in a done callback):
            // never join oneself.
            if w.thread().id() != std::thread::current().id() {
                let _ = w.join();
            }
        }
        let _ = self.inner.db.flush();
    }
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("disks", &self.inner.disks.len())
            .finish()
    }
}

/// `EIO`.
const fn libc_eio() -> i32 {
    5
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn open_index(dir: &Path) -> Result<sled::Db, OpenError> {
    let err = |what: String| OpenError::Index {
        path: dir.to_path_buf(),
        what,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
    let open = || {
        sled::Config::new()
            .path(dir)
            .mode(sled::Mode::HighThroughput)
            .open()
    };
    match open() {
        Ok(db) => Ok(db),
        Err(sled::Error::Corruption { .. }) | Err(sled::Error::Unsupported(_)) => {
            let aside = dir.with_extension(format!("corrupt-{}", now_unix()));
            tracing::warn!(
                index = %dir.display(),
                moved_to = %aside.display(),
                "cache index is corrupt: set aside, rebuilding empty (containers restart empty)"
            );
            std::fs::rename(dir, &aside).map_err(|e| err(format!("setting it aside: {e}")))?;
            std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
            open().map_err(|e| err(e.to_string()))
        }
        Err(e) => Err(err(e.to_string())),
    }
}

impl Cache {
    /// Opens the index and every disk, and starts the disk writers.
    pub fn open(config: &CacheConfig) -> Result<Self, OpenError> {
        let db = open_index(&config.index_dir)?;
        let ierr = |e: sled::Error| OpenError::Index {
            path: config.index_dir.clone(),
            what: e.to_string(),
        };
        let objects = db.open_tree(index::OBJECTS).map_err(ierr)?;
        let positions = db.open_tree(index::POSITIONS).map_err(ierr)?;
        let disks_tree = db.open_tree(index::DISKS).map_err(ierr)?;
        let mut disks = Vec::new();
        for (n, d) in config.disks.iter().enumerate() {
            disks.push(Arc::new(Disk::open(
                n,
                &d.path,
                d.size,
                &disks_tree,
                config.io_threads_per_disk,
                config.io_queue_per_disk,
            )?));
        }
        let inner = Arc::new(Inner {
            db,
            objects,
            positions,
            disks_tree,
            disks,
            hot: Mutex::new(LruCache::new(config.hot_entries)),
            hot_bodies: Mutex::new(LruCache::new(config.hot_bodies)),
            hot_body_max: config.hot_body_max_bytes,
            stats: Stats::default(),
        });
        let mut writers = Vec::new();
        for (n, disk) in inner.disks.iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::sync_channel(config.write_queue.max(1));
            *lock(&disk.writer) = Some(tx);
            let i = inner.clone();
            let w = std::thread::Builder::new()
                .name(format!("cache-writer{n}"))
                .spawn(move || ring::writer_loop(i, n, rx))
                .map_err(|e| OpenError::Disk {
                    index: n,
                    path: disk.dir.clone(),
                    what: format!("starting its writer: {e}"),
                })?;
            writers.push(w);
        }
        // Counting a large index takes a while; start-up does not wait for it (and
        // shutdown stops it).
        let counting = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (i, go) = (inner.clone(), counting.clone());
        if let Ok(t) = std::thread::Builder::new()
            .name("cache-count".into())
            .spawn(move || {
                let mut n = 0u64;
                for _ in i.objects.iter().keys() {
                    n += 1;
                    if n % 4096 == 0 && !go.load(Ordering::Relaxed) {
                        return;
                    }
                }
                i.stats.objects.fetch_add(n, Ordering::Relaxed);
            })
        {
            writers.push(t);
        }
        Ok(Self {
            _closer: Arc::new(Closer {
                inner: inner.clone(),
                writers: Mutex::new(writers),
                counting,
            }),
            inner,
        })
    }

    /// Looks `key` up at time `now` (Unix seconds; `None` = now).
    pub fn lookup(&self, key: &str) -> Lookup {
        let inner = &*self.inner;
        let cached = lock(&inner.hot).get(key).cloned();
        let entry = match cached {
            Some(e) => e,
            None => match inner.objects.get(key.as_bytes()) {
                Ok(Some(v)) => match index::decode::<Entry>(&v) {
                    Some(e) => {
                        let e = Arc::new(e);
                        lock(&inner.hot).put(key.into(), e.clone());
                        e
                    }
                    None => {
                        let _ = inner.objects.remove(key.as_bytes());
                        return inner.miss();
                    }
                },
                _ => return inner.miss(),
            },
        };
        let Some(disk) = inner.disk_of(entry.container) else {
            inner.forget(key);
            return inner.miss();
        };
        if !disk.serving() {
            inner.forget(key);
            return inner.miss();
        }
        if entry.meta.expires_ms != 0 && entry.meta.expires_ms <= now_ms() {
            inner.stats.stale.fetch_add(1, Ordering::Relaxed);
            return Lookup::Stale;
        }
        let body = lock(&inner.hot_bodies).get(key).cloned();
        let pin = if body.is_some() {
            None
        } else {
            match disk.pin(&entry) {
                Some(p) => Some(p),
                None => {
                    inner.forget(key);
                    return inner.miss();
                }
            }
        };
        inner.stats.hits.fetch_add(1, Ordering::Relaxed);
        Lookup::Hit(Hit {
            file: disk.file.clone(),
            offset: disk.body_offset(&entry),
            len: entry.len,
            container: entry.container,
            entry,
            body,
            pin,
        })
    }

    /// Queues a complete body for storage; `done(true)` runs once it is durable and
    /// indexed, `done(false)` if it could not be stored (not called when this returns
    /// an error).
    pub fn insert(
        &self,
        key: &str,
        meta: Meta,
        body: Vec<Bytes>,
        done: impl FnOnce(bool) + Send + 'static,
    ) -> Result<(), InsertError> {
        let inner = &*self.inner;
        let len: u64 = body.iter().map(|c| c.len() as u64).sum();
        let Some(disk) = inner.place(key) else {
            inner.stats.store_failures.fetch_add(1, Ordering::Relaxed);
            return Err(InsertError::NoDisk);
        };
        if ring::footprint(key, &meta, len) > disk.ring_len / 4 {
            inner.stats.store_failures.fetch_add(1, Ordering::Relaxed);
            return Err(InsertError::TooLarge);
        }
        let job = WriteJob {
            key: key.to_string(),
            meta,
            body,
            len,
            done: Box::new(done),
        };
        let writer = lock(&disk.writer);
        let sent = match writer.as_ref() {
            Some(tx) => tx.try_send(job).is_ok(),
            None => false,
        };
        if !sent {
            // Not counted: the caller may retry (see `store_failures`).
            return Err(InsertError::Busy);
        }
        Ok(())
    }

    /// Keeps `body` in memory for `key` (a small, hot object such as a playlist or an
    /// init segment), if it is small enough.
    pub fn keep_hot(&self, key: &str, body: Arc<[u8]>) {
        if body.len() <= self.inner.hot_body_max {
            lock(&self.inner.hot_bodies).put(key.into(), body);
        }
    }

    /// Removes `key`; whether it was there.
    pub fn purge(&self, key: &str) -> bool {
        let removed = self
            .inner
            .objects
            .remove(key.as_bytes())
            .ok()
            .flatten()
            .is_some();
        self.inner.unhot(key);
        if removed {
            self.inner.stats.purged.fetch_add(1, Ordering::Relaxed);
            self.inner.stats.objects.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }

    /// Removes every key starting with `prefix`; how many.
    pub fn purge_prefix(&self, prefix: &str) -> u64 {
        let keys: Vec<_> = self
            .inner
            .objects
            .scan_prefix(prefix.as_bytes())
            .keys()
            .filter_map(Result::ok)
            .collect();
        let mut n = 0;
        for k in keys {
            if let Ok(k) = std::str::from_utf8(&k) {
                if self.purge(k) {
                    n += 1;
                }
            }
        }
        n
    }

    /// The cold-read pool of a container's disk.
    pub fn pool(&self, container: u64) -> Option<&IoPool> {
        self.inner.disk_of(container).map(|d| &d.pool)
    }

    /// A read from `container` failed (I/O error, or the file ended early): checks
    /// the disk and takes it out of service if it is at fault.
    pub fn report_read_error(&self, container: u64, error: &std::io::Error) {
        let Some(disk) = self.inner.disk_of(container) else {
            return;
        };
        let truncated = disk.file.metadata().map(|m| m.len() < disk.size);
        match truncated {
            Ok(true) => self.inner.fail_disk(
                disk,
                &std::io::Error::other("the container was truncated behind our back"),
            ),
            Err(e) => self.inner.fail_disk(disk, &e),
            Ok(false) if error.raw_os_error() == Some(libc_eio()) => {
                self.inner.fail_disk(disk, error)
            }
            Ok(false) => {}
        }
    }

    /// Checks that the object of `hit` is intact: its header names `key` and its body
    /// matches the checksum (blocking I/O; for tests and offline checks).
    pub fn verify(&self, key: &str, hit: &Hit) -> std::io::Result<bool> {
        let Some(disk) = self.inner.disk_of(hit.container) else {
            return Ok(false);
        };
        if ring::read_header_key(disk, &hit.entry)?.as_deref() != Some(key) {
            return Ok(false);
        }
        let mut buf = vec![0u8; hit.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&*disk.file, &mut buf, hit.offset)?;
        Ok(crc32fast::hash(&buf) == hit.entry.checksum)
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// Per-disk state.
    pub fn disks(&self) -> Vec<DiskStatus> {
        self.inner
            .disks
            .iter()
            .map(|d| DiskStatus {
                path: d.dir.clone(),
                size: d.size,
                used: d.used(),
                in_service: d.serving(),
                cold_reads: d.pool.submitted(),
            })
            .collect()
    }

    /// Flushes the index.
    pub fn flush(&self) {
        let _ = self.inner.db.flush();
    }

    /// Stops taking objects, lets every disk writer sync and index what it holds,
    /// and flushes the index (at shutdown; later inserts are refused as busy).
    pub fn close(&self) {
        self._closer.close();
    }
}

impl Inner {
    fn miss(&self) -> Lookup {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Miss
    }

    fn disk_of(&self, container: u64) -> Option<&Arc<Disk>> {
        self.disks.iter().find(|d| d.container == container)
    }

    /// Rendezvous hashing over the disks in service.
    fn place(&self, key: &str) -> Option<Arc<Disk>> {
        let h = ring::stable_hash(key.as_bytes());
        self.disks
            .iter()
            .filter(|d| d.serving())
            .max_by_key(|d| ring::mix(h ^ d.seed))
            .cloned()
    }

    fn unhot(&self, key: &str) {
        lock(&self.hot).pop(key);
        lock(&self.hot_bodies).pop(key);
    }

    /// Drops `key`'s entry (it can no longer be served).
    fn forget(&self, key: &str) {
        if self.objects.remove(key.as_bytes()).ok().flatten().is_some() {
            self.stats.objects.fetch_sub(1, Ordering::Relaxed);
        }
        self.unhot(key);
    }

    fn index_entry(&self, key: &str, entry: Entry) -> Result<(), sled::Error> {
        self.positions.insert(
            index::position_key(entry.container, entry.logical),
            key.as_bytes(),
        )?;
        let old = self.objects.insert(key.as_bytes(), index::encode(&entry))?;
        if old.is_none() {
            self.stats.objects.fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.hot).put(key.into(), Arc::new(entry));
        lock(&self.hot_bodies).pop(key);
        self.stats.stored.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Drops the entries of `disk`'s objects at logical positions in `[from, to)`.
    fn evict_range(&self, disk: &Disk, from: u64, to: u64) {
        let start = index::position_key(disk.container, from);
        let end = index::position_key(disk.container, to);
        let found: Vec<_> = self
            .positions
            .range(start..end)
            .filter_map(Result::ok)
            .collect();
        for (pk, key) in found {
            let _ = self.positions.remove(&pk);
            let logical = u64::from_be_bytes(pk[8..16].try_into().unwrap_or_default());
            let current = self
                .objects
                .get(&key)
                .ok()
                .flatten()
                .and_then(|v| index::decode::<Entry>(&v));
            if current.is_some_and(|e| e.container == disk.container && e.logical == logical) {
                let _ = self.objects.remove(&key);
                self.stats.objects.fetch_sub(1, Ordering::Relaxed);
                self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                if let Ok(k) = std::str::from_utf8(&key) {
                    self.unhot(k);
                }
            }
        }
    }

    /// Takes `disk` out of service (once): later lookups of its keys miss, and new
    /// objects go to the other disks.
    fn fail_disk(&self, disk: &Disk, error: &std::io::Error) {
        if disk.in_service.swap(false, Ordering::Relaxed) {
            self.stats.disk_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                path = %disk.dir.display(),
                error = %error,
                "cache disk taken out of service; its objects will be refetched onto the other disks"
            );
            lock(&disk.writer).take();
        }
    }
}

#[cfg(test)]
mod tests_support {
    use super::*;
    use std::sync::mpsc::channel;

    pub struct Dir(pub PathBuf);
    impl Dir {
        pub fn new(name: &str) -> Self {
            static N: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "storage-{name}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(p.join("d0")).unwrap();
            std::fs::create_dir_all(p.join("d1")).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    pub fn config(dir: &Dir, disks: usize, size: u64) -> CacheConfig {
        CacheConfig {
            index_dir: dir.0.join("index"),
            disks: (0..disks)
                .map(|n| DiskConfig {
                    path: dir.0.join(format!("d{n}")),
                    size,
                })
                .collect(),
            hot_entries: NonZeroUsize::new(64).unwrap(),
            hot_bodies: NonZeroUsize::new(16).unwrap(),
            hot_body_max_bytes: 1024,
            io_threads_per_disk: 1,
            io_queue_per_disk: 4,
            write_queue: 1024,
        }
    }

    pub fn body(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    pub fn store(cache: &Cache, key: &str, data: &[u8]) -> bool {
        let (tx, rx) = channel();
        let chunks = data.chunks(100_000).map(Bytes::copy_from_slice).collect();
        match cache.insert(key, Meta::default(), chunks, move |ok| tx.send(ok).unwrap()) {
            Ok(()) => rx.recv().unwrap(),
            Err(_) => false,
        }
    }

    pub fn read(cache: &Cache, key: &str) -> Option<Vec<u8>> {
        match cache.lookup(key) {
            Lookup::Hit(h) => {
                assert!(cache.verify(key, &h).unwrap(), "{key} fails verification");
                let mut buf = vec![0u8; h.len as usize];
                std::os::unix::fs::FileExt::read_exact_at(&*h.file, &mut buf, h.offset).unwrap();
                Some(buf)
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::*;
    use super::*;

    #[test]
    fn stores_survive_a_restart() {
        let dir = Dir::new("persist");
        let cfg = config(&dir, 2, MIN_CONTAINER_BYTES);
        {
            let cache = Cache::open(&cfg).unwrap();
            for i in 0..50 {
                assert!(store(
                    &cache,
                    &format!("/s/{i}.m4s"),
                    &body(10_000 + i, i as u8)
                ));
            }
            cache.flush();
        }
        let cache = Cache::open(&cfg).unwrap();
        for i in 0..50 {
            assert_eq!(
                read(&cache, &format!("/s/{i}.m4s")),
                Some(body(10_000 + i, i as u8))
            );
        }
        assert!(matches!(cache.lookup("/s/none"), Lookup::Miss));
        // Both disks got some keys.
        assert!(cache.disks().iter().all(|d| d.used > 0));
    }

    #[test]
    fn the_ring_wraps_and_evicts_oldest_without_growing() {
        let dir = Dir::new("wrap");
        let cfg = config(&dir, 1, MIN_CONTAINER_BYTES);
        let cache = Cache::open(&cfg).unwrap();
        for i in 0..100 {
            assert!(store(&cache, &format!("/k{i}"), &body(1 << 20, i as u8)));
        }
        assert!(read(&cache, "/k0").is_none(), "the oldest is overwritten");
        for i in 95..100 {
            assert_eq!(
                read(&cache, &format!("/k{i}")),
                Some(body(1 << 20, i as u8))
            );
        }
        assert!(cache.stats().evictions.load(Ordering::Relaxed) > 50);
        let len = std::fs::metadata(dir.0.join("d0/data.bin")).unwrap().len();
        assert_eq!(len, MIN_CONTAINER_BYTES);
    }

    #[test]
    fn a_pinned_object_holds_the_writer() {
        let dir = Dir::new("pin");
        let cfg = config(&dir, 1, MIN_CONTAINER_BYTES);
        let cache = Cache::open(&cfg).unwrap();
        let data = body(1 << 20, 7);
        assert!(store(&cache, "/pinned", &data));
        let Lookup::Hit(hit) = cache.lookup("/pinned") else {
            panic!("miss")
        };
        // Fill past a lap in the background: the writer must stop at the pin.
        let c2 = cache.clone();
        let filler = std::thread::spawn(move || {
            for i in 0..40 {
                store(&c2, &format!("/f{i}"), &body(1 << 20, i as u8));
            }
        });
        let t0 = std::time::Instant::now();
        while cache.stats().writer_holds.load(Ordering::Relaxed) == 0 {
            assert!(
                t0.elapsed().as_secs() < 30,
                "the writer never reached the pin"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // Held: give it time to (not) overwrite.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let mut buf = vec![0u8; hit.len as usize];
        std::os::unix::fs::FileExt::read_exact_at(&*hit.file, &mut buf, hit.offset).unwrap();
        assert_eq!(buf, data, "bytes changed under a pin");
        drop(hit);
        filler.join().unwrap();
        assert!(read(&cache, "/pinned").is_none());
        assert!(read(&cache, "/f39").is_some());
    }

    #[test]
    fn truncated_or_replaced_containers_start_empty() {
        let dir = Dir::new("trunc");
        let cfg = config(&dir, 1, MIN_CONTAINER_BYTES);
        {
            let cache = Cache::open(&cfg).unwrap();
            assert!(store(&cache, "/a", &body(5000, 1)));
            cache.flush();
        }
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.0.join("d0/data.bin"))
            .unwrap();
        f.set_len(1 << 20).unwrap();
        let cache = Cache::open(&cfg).unwrap();
        assert!(matches!(cache.lookup("/a"), Lookup::Miss));
        assert!(store(&cache, "/a", &body(5000, 2)));
        assert_eq!(read(&cache, "/a"), Some(body(5000, 2)));
    }

    #[test]
    fn truncation_while_running_takes_the_disk_out_of_service() {
        let dir = Dir::new("trunc-live");
        let cfg = config(&dir, 2, MIN_CONTAINER_BYTES);
        let cache = Cache::open(&cfg).unwrap();
        assert!(store(&cache, "/x", &body(5000, 1)));
        let Lookup::Hit(hit) = cache.lookup("/x") else {
            panic!("miss")
        };
        hit.file.set_len(4096).unwrap();
        let eof = std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "short");
        cache.report_read_error(hit.container, &eof);
        drop(hit);
        assert_eq!(cache.disks().iter().filter(|d| d.in_service).count(), 1);
        assert!(matches!(cache.lookup("/x"), Lookup::Miss));
        assert!(
            store(&cache, "/x", &body(5000, 3)),
            "refilled onto the other disk"
        );
        assert_eq!(read(&cache, "/x"), Some(body(5000, 3)));
    }

    #[test]
    fn purge_by_key_and_prefix() {
        let dir = Dir::new("purge");
        let cache = Cache::open(&config(&dir, 1, MIN_CONTAINER_BYTES)).unwrap();
        for k in ["/a/1", "/a/2", "/b/1"] {
            assert!(store(&cache, k, b"x"));
        }
        assert!(cache.purge("/b/1"));
        assert!(!cache.purge("/b/1"));
        assert_eq!(cache.purge_prefix("/a/"), 2);
        for k in ["/a/1", "/a/2", "/b/1"] {
            assert!(matches!(cache.lookup(k), Lookup::Miss));
        }
    }

    #[test]
    fn bad_setups_name_the_path() {
        let dir = Dir::new("bad");
        let mut cfg = config(&dir, 1, MIN_CONTAINER_BYTES);
        cfg.disks[0].path = dir.0.join("missing");
        let e = Cache::open(&cfg).unwrap_err().to_string();
        assert!(
            e.contains("storage.disks[0].path") && e.contains("missing"),
            "{e}"
        );
        let mut cfg = config(&dir, 1, MIN_CONTAINER_BYTES);
        std::fs::write(dir.0.join("file"), b"").unwrap();
        cfg.index_dir = dir.0.join("file");
        let e = Cache::open(&cfg).unwrap_err().to_string();
        assert!(e.contains("storage.index_dir"), "{e}");
    }

    #[test]
    fn a_corrupt_index_is_rebuilt_empty() {
        let dir = Dir::new("corrupt");
        let cfg = config(&dir, 1, MIN_CONTAINER_BYTES);
        {
            let cache = Cache::open(&cfg).unwrap();
            assert!(store(&cache, "/a", &body(5000, 1)));
            cache.flush();
        }
        for entry in std::fs::read_dir(&cfg.index_dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_file() {
                std::fs::write(&p, vec![0xa5u8; 4096]).unwrap();
            }
        }
        let cache = Cache::open(&cfg).unwrap();
        assert!(matches!(cache.lookup("/a"), Lookup::Miss));
        assert!(store(&cache, "/a", &body(5000, 4)));
        assert_eq!(read(&cache, "/a"), Some(body(5000, 4)));
    }
}

#[cfg(test)]
mod stress {
    use super::tests_support::*;
    use super::*;

    /// Four readers hammer one hot key each (storing it again when it was
    /// evicted) while 150 MiB of other objects wrap a 32 MiB ring; `check` reads a
    /// hit and panics on a wrong byte.
    fn wrap_while_reading(name: &str, check: fn(Hit, &[u8], &str)) {
        let dir = Dir::new(name);
        let cache = Cache::open(&config(&dir, 1, 32 << 20)).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut readers = Vec::new();
        for r in 0..4u8 {
            let (cache, stop) = (cache.clone(), stop.clone());
            readers.push(std::thread::spawn(move || {
                let key = format!("/hot{r}");
                let want = body(1 << 20, r);
                let mut checked = 0;
                while !stop.load(Ordering::Relaxed) {
                    match cache.lookup(&key) {
                        Lookup::Hit(h) => {
                            check(h, &want, &key);
                            checked += 1;
                        }
                        _ => {
                            store(&cache, &key, &want);
                        }
                    }
                }
                checked
            }));
        }
        for i in 0..150 {
            let b = body(1 << 20, (i % 200) as u8 + 20);
            store(&cache, &format!("/cold{i}"), &b);
        }
        stop.store(true, Ordering::Relaxed);
        let checked: u32 = readers.into_iter().map(|r| r.join().unwrap()).sum();
        assert!(checked > 20, "{checked}");
    }

    #[test]
    fn readers_never_see_wrong_bytes_while_the_ring_wraps() {
        wrap_while_reading("stress", |h, want, key| {
            let read = || {
                let mut buf = vec![0u8; h.len as usize];
                std::os::unix::fs::FileExt::read_exact_at(&*h.file, &mut buf, h.offset).unwrap();
                buf
            };
            let first = read();
            std::thread::sleep(std::time::Duration::from_millis(2));
            assert!(first == want && read() == want, "wrong bytes for {key}");
        });
    }

    /// The readers `sendfile` to a loopback socket and drop the hit (the pin) at
    /// once, reading the socket later: bytes queued in socket buffers must not change
    /// when the ring overwrites their pages.
    #[test]
    fn bytes_queued_by_sendfile_survive_the_ring() {
        wrap_while_reading("stress-sf", |h, want, key| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let tx = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let (mut rx, _) = l.accept().unwrap();
            let mut off = h.offset;
            let n = rustix::fs::sendfile(&tx, &*h.file, Some(&mut off), h.len as usize).unwrap();
            assert!(n > 0);
            // Unpinned while the bytes still sit in the socket: the writer may go on.
            drop(h);
            std::thread::sleep(std::time::Duration::from_millis(5));
            let mut got = vec![0u8; n];
            std::io::Read::read_exact(&mut rx, &mut got).unwrap();
            if got[..] != want[..n] {
                let f = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                panic!("queued bytes of {key} changed from byte {f} ({n} sent)");
            }
        });
    }
}

#[cfg(test)]
mod seeds {
    /// The fuzz seeds are real records (so the fuzzer starts past the CRC check).
    #[test]
    fn fuzz_seeds_parse() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/cache_records");
        let h = std::fs::read(dir.join("header.bin")).unwrap();
        let o = super::parse_object_header(&h).unwrap();
        assert_eq!(o.key, "streams/live/0/12.m4s");
        assert_eq!(o.meta.etag.as_deref(), Some("\"abc\""));
        let e = super::decode_entry(&std::fs::read(dir.join("entry.bin")).unwrap()).unwrap();
        assert_eq!((e.container, e.len), (7, 123456));
    }
}
