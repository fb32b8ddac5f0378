//! One disk: its preallocated ring container (`data.bin`), the write reservation and
//! the read pins that keep the writer off regions being sent, and the writer thread
//! that appends objects, syncs them in batches and only then indexes them.
//!
//! Container layout: a 4 KiB superblock (magic, version, container id, size), then
//! the ring. Objects start on 4 KiB boundaries: a header padded to 4 KiB (magic,
//! lengths, CRC-32 of the body and of the header, logical position, metadata, key),
//! then the body. An object never straddles the ring's end: the writer skips to the
//! next lap instead.
//!
//! Addresses are *logical*: `lap * ring_len + offset`, growing forever. The writer
//! may overwrite ring bytes only below `reserved`, and everything whose logical
//! position is below `reserved - ring_len` is gone. `reserved` is made durable (sled
//! flush) before a byte of a new region is written, and every reader checks it under
//! the pin lock, so an overwritten object is never served, before or after a crash.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use crate::index::{self, DiskRecord, Entry, Meta};
use crate::pool::IoPool;
use crate::{Inner, OpenError};

/// The ring starts, and every reservation begins and ends, on this boundary: the
/// largest page-cache folio (a PMD, 2 MiB). Punching a hole over part of a large
/// folio that a socket still references zeroes it in place instead of taking it
/// out of the file (see [`release_region`]).
const RING_ALIGN: u64 = 2 << 20;
/// Bytes in front of the ring (the superblock and padding to [`RING_ALIGN`]).
pub(crate) const SUPERBLOCK: u64 = RING_ALIGN;
/// Objects start on this boundary.
const OBJECT_ALIGN: u64 = 4096;
/// Headers are padded to this, so bodies start on a page: `sendfile` from a
/// page-aligned offset hands TCP whole pages (one fragment per page instead of two
/// halves), measurably faster than an offset 512 bytes in.
const HEADER_ALIGN: u64 = 4096;
const SUPER_MAGIC: &[u8; 8] = b"EDGERING";
const OBJECT_MAGIC: &[u8; 8] = b"EDGEOBJ1";
const VERSION: u32 = 3;
/// How long the first object of a batch waits for others before the batch is synced
/// and indexed (clients are served from the fill meanwhile).
const COMMIT_INTERVAL: Duration = Duration::from_millis(30);
/// The smallest container accepted.
pub const MIN_CONTAINER_BYTES: u64 = 16 << 20;

/// Pins and the reservation, under one lock.
#[derive(Debug)]
struct PinState {
    reserved: u64,
    /// Logical start of each object being read → readers.
    pins: BTreeMap<u64, u32>,
}

/// One configured disk.
#[derive(Debug)]
pub(crate) struct Disk {
    /// The configured directory.
    pub dir: PathBuf,
    /// Stable placement seed (from the path).
    pub seed: u64,
    /// The container, opened read-write.
    pub file: Arc<File>,
    /// The container's id.
    pub container: u64,
    /// Container size.
    pub size: u64,
    /// Ring bytes (size minus superblock).
    pub ring_len: u64,
    /// Cleared when the disk fails.
    pub in_service: AtomicBool,
    /// Set once the "cannot punch holes" error was logged.
    no_punch_warned: AtomicBool,
    /// Logical end of the last write.
    pub head: AtomicU64,
    pins: Mutex<PinState>,
    unpinned: Condvar,
    /// Cold reads of this disk.
    pub pool: IoPool,
    /// The writer's queue (`None` once the disk failed or the cache shut down).
    pub writer: Mutex<Option<std::sync::mpsc::SyncSender<WriteJob>>>,
}

/// A read in progress: while it lives, the writer does not overwrite the object.
#[derive(Debug)]
pub struct Pin {
    disk: Arc<Disk>,
    logical: u64,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut st = lock(&self.disk.pins);
        if let Some(n) = st.pins.get_mut(&self.logical) {
            *n -= 1;
            if *n == 0 {
                st.pins.remove(&self.logical);
                self.disk.unpinned.notify_all();
            }
        }
    }
}

/// An object written but not yet synced and indexed: its key, entry and callback.
type Written = (String, Entry, Box<dyn FnOnce(bool) + Send>);

/// An object to append.
pub(crate) struct WriteJob {
    pub key: String,
    pub meta: Meta,
    pub body: Vec<Bytes>,
    pub len: u64,
    pub done: Box<dyn FnOnce(bool) + Send>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// FNV-1a then a splitmix finaliser: a stable 64-bit hash (placement must not change
/// between builds).
pub(crate) fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    mix(h)
}

pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn random_id() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(t.as_nanos());
    mix(h.finish()) | 1
}

impl Disk {
    /// Opens (or creates, or rebuilds) the container in `dir`, reconciling it with
    /// the index's record of it.
    pub(crate) fn open(
        n: usize,
        dir: &Path,
        size: u64,
        db_disks: &sled::Tree,
        io_threads: usize,
        io_queue: usize,
    ) -> Result<Self, OpenError> {
        let err = |what: String| OpenError::Disk {
            index: n,
            path: dir.to_path_buf(),
            what,
        };
        let meta = std::fs::metadata(dir).map_err(|e| err(format!("cannot use it: {e}")))?;
        if !meta.is_dir() {
            return Err(err("is not a directory".into()));
        }
        let path = dir.join("data.bin");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err(format!("cannot open {}: {e}", path.display())))?;
        let record_key = format!("disk/{}", dir.display());
        let record: Option<DiskRecord> = db_disks
            .get(record_key.as_bytes())
            .map_err(|e| err(format!("index: {e}")))?
            .and_then(|v| index::decode(&v));
        let actual = file
            .metadata()
            .map_err(|e| err(format!("{}: {e}", path.display())))?
            .len();
        let mut sb = [0u8; 32];
        let sb_ok = actual >= 32 && file.read_exact_at(&mut sb, 0).is_ok();
        let sb_id = u64::from_le_bytes(sb[12..20].try_into().unwrap_or_default());
        let sb_size = u64::from_le_bytes(sb[20..28].try_into().unwrap_or_default());
        let sb_valid = sb_ok
            && &sb[..8] == SUPER_MAGIC
            && u32::from_le_bytes(sb[8..12].try_into().unwrap_or_default()) == VERSION
            && sb_size == size
            && actual == size;
        let reuse = match record {
            Some(r) if sb_valid && r.container == sb_id && r.size == size => Some(r),
            _ => None,
        };
        let record = match reuse {
            Some(r) => r,
            None => {
                if actual != 0 {
                    tracing::warn!(
                        path = %path.display(),
                        actual,
                        configured = size,
                        "cache container does not match the index (new, resized, truncated or \
                         replaced): starting it empty"
                    );
                }
                file.set_len(0)
                    .and_then(|()| file.set_len(size))
                    .map_err(|e| err(format!("{}: sizing to {size} bytes: {e}", path.display())))?;
                // Preallocate so the ring never hits ENOSPC mid-object (and lies in
                // as few extents as the filesystem allows).
                if let Err(e) =
                    rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, size)
                {
                    if e != rustix::io::Errno::OPNOTSUPP {
                        return Err(err(format!(
                            "{}: preallocating {size} bytes: {e}",
                            path.display()
                        )));
                    }
                }
                let id = random_id();
                let mut sb = [0u8; 32];
                sb[..8].copy_from_slice(SUPER_MAGIC);
                sb[8..12].copy_from_slice(&VERSION.to_le_bytes());
                sb[12..20].copy_from_slice(&id.to_le_bytes());
                sb[20..28].copy_from_slice(&size.to_le_bytes());
                file.write_all_at(&sb, 0)
                    .and_then(|()| file.sync_all())
                    .map_err(|e| err(format!("{}: writing the superblock: {e}", path.display())))?;
                let r = DiskRecord {
                    container: id,
                    size,
                    reserved: 0,
                };
                db_disks
                    .insert(record_key.as_bytes(), index::encode(&r))
                    .and_then(|_| db_disks.flush())
                    .map_err(|e| err(format!("index: {e}")))?;
                r
            }
        };
        let pool = IoPool::new(&format!("cache-io{n}"), io_threads, io_queue)
            .map_err(|e| err(format!("starting its I/O threads: {e}")))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            seed: stable_hash(dir.as_os_str().as_encoded_bytes()),
            file: Arc::new(file),
            container: record.container,
            size,
            ring_len: (size - SUPERBLOCK) / RING_ALIGN * RING_ALIGN,
            in_service: AtomicBool::new(true),
            no_punch_warned: AtomicBool::new(false),
            head: AtomicU64::new(record.reserved),
            pins: Mutex::new(PinState {
                reserved: record.reserved,
                pins: BTreeMap::new(),
            }),
            unpinned: Condvar::new(),
            pool,
            writer: Mutex::new(None),
        })
    }

    /// Pins `e` for reading, or `None` if its bytes were (or are being) overwritten.
    pub(crate) fn pin(self: &Arc<Self>, e: &Entry) -> Option<Pin> {
        let mut st = lock(&self.pins);
        if e.logical < st.reserved.saturating_sub(self.ring_len) {
            return None;
        }
        *st.pins.entry(e.logical).or_insert(0) += 1;
        Some(Pin {
            disk: self.clone(),
            logical: e.logical,
        })
    }

    /// The byte offset of `e`'s body in the container file.
    pub(crate) fn body_offset(&self, e: &Entry) -> u64 {
        SUPERBLOCK + e.logical % self.ring_len + e.header_len as u64
    }

    /// Bytes of the ring that hold data.
    pub(crate) fn used(&self) -> u64 {
        self.head.load(Ordering::Relaxed).min(self.ring_len)
    }

    /// Whether the disk still serves.
    pub(crate) fn serving(&self) -> bool {
        self.in_service.load(Ordering::Relaxed)
    }

    fn reserved(&self) -> u64 {
        lock(&self.pins).reserved
    }
}

/// Encodes an object header (padded to [`HEADER_ALIGN`]).
fn encode_header(key: &str, meta: &Meta, len: u64, checksum: u32, logical: u64) -> Vec<u8> {
    let meta = index::encode(meta);
    let fixed = 8 + 4 + 2 + 4 + 8 + 4 + 8 + 4;
    let header_len = align_up((fixed + meta.len() + key.len()) as u64, HEADER_ALIGN);
    let mut h = Vec::with_capacity(header_len as usize);
    h.extend_from_slice(OBJECT_MAGIC);
    h.extend_from_slice(&(header_len as u32).to_le_bytes());
    h.extend_from_slice(&(key.len() as u16).to_le_bytes());
    h.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&checksum.to_le_bytes());
    h.extend_from_slice(&logical.to_le_bytes());
    h.extend_from_slice(&meta);
    h.extend_from_slice(key.as_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h.resize(header_len as usize, 0);
    h
}

/// Bytes an object of `key`, `meta` and `len` takes in the ring.
pub(crate) fn footprint(key: &str, meta: &Meta, len: u64) -> u64 {
    let meta = index::encode(meta).len() as u64;
    let header = align_up(42 + meta + key.len() as u64, HEADER_ALIGN);
    align_up(header + len, OBJECT_ALIGN)
}

/// The writer of disk `d`: appends what arrives, syncs in batches (one `fdatasync`
/// for everything written since the last), then indexes the batch. Ends when the
/// queue closes.
pub(crate) fn writer_loop(inner: Arc<Inner>, d: usize, rx: Receiver<WriteJob>) {
    let disk = inner.disks[d].clone();
    let mut head = disk.reserved();
    let mut pending: Vec<Written> = Vec::new();
    let mut pending_bytes = 0u64;
    let batch_bytes = (disk.ring_len / 4).min(64 << 20);
    // The first object of a batch waits at most this long for company before the
    // batch is synced: one fdatasync (an HDD seek or more) per object would cap a
    // disk at ~100 objects/s.
    let mut batch_deadline = std::time::Instant::now();
    loop {
        let job = if pending.is_empty() {
            match rx.recv() {
                Ok(j) => {
                    batch_deadline = std::time::Instant::now() + COMMIT_INTERVAL;
                    j
                }
                Err(_) => return,
            }
        } else {
            let wait = batch_deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(wait) {
                Ok(j) => j,
                Err(RecvTimeoutError::Timeout) => {
                    commit(&inner, &disk, &mut pending);
                    pending_bytes = 0;
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    commit(&inner, &disk, &mut pending);
                    return;
                }
            }
        };
        if !disk.serving() {
            inner.stats.store_failures.fetch_add(1, Ordering::Relaxed);
            (job.done)(false);
            continue;
        }
        match append(&inner, &disk, &mut head, &job) {
            Ok(entry) => {
                pending_bytes += entry.len;
                pending.push((job.key, entry, job.done));
            }
            Err(e) => {
                inner.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                (job.done)(false);
                inner.fail_disk(&disk, &e);
                for (_, _, done) in pending.drain(..) {
                    inner.stats.store_failures.fetch_add(1, Ordering::Relaxed);
                    done(false);
                }
                continue;
            }
        }
        if pending_bytes >= batch_bytes {
            commit(&inner, &disk, &mut pending);
            pending_bytes = 0;
        }
    }
}

/// Writes one object at `head` (reserving first); returns its entry (not yet indexed).
fn append(
    inner: &Inner,
    disk: &Arc<Disk>,
    head: &mut u64,
    job: &WriteJob,
) -> std::io::Result<Entry> {
    let mut crc = crc32fast::Hasher::new();
    for c in &job.body {
        crc.update(c);
    }
    let checksum = crc.finalize();
    let total = footprint(&job.key, &job.meta, job.len);
    if total > disk.ring_len / 4 {
        return Err(std::io::Error::other(
            "object larger than a quarter of the ring",
        ));
    }
    if *head % disk.ring_len + total > disk.ring_len {
        *head += disk.ring_len - *head % disk.ring_len;
    }
    let logical = *head;
    reserve(inner, disk, logical + total)?;
    let header = encode_header(&job.key, &job.meta, job.len, checksum, logical);
    let mut at = SUPERBLOCK + logical % disk.ring_len;
    disk.file.write_all_at(&header, at)?;
    at += header.len() as u64;
    for c in &job.body {
        disk.file.write_all_at(c, at)?;
        at += c.len() as u64;
    }
    *head = logical + total;
    disk.head.store(*head, Ordering::Relaxed);
    inner
        .stats
        .bytes_written
        .fetch_add(total, Ordering::Relaxed);
    Ok(Entry {
        container: disk.container,
        logical,
        header_len: header.len() as u32,
        len: job.len,
        checksum,
        meta: job.meta.clone(),
    })
}

/// Makes sure the ring may be written up to logical `end`: waits until no reader pins
/// an object in the region about to be overwritten (holding the region, never
/// corrupting it), moves the reservation, makes it durable, and drops the index
/// entries of the objects it overwrites.
fn reserve(inner: &Inner, disk: &Arc<Disk>, end: u64) -> std::io::Result<()> {
    // Whole folios only: a hole punched over part of one zeroes it in place
    // (see release_region).
    let chunk = ((disk.ring_len / 16).clamp(RING_ALIGN, 256 << 20) / RING_ALIGN * RING_ALIGN)
        .min(disk.ring_len / 2)
        .max(RING_ALIGN);
    let mut st = lock(&disk.pins);
    if end <= st.reserved {
        return Ok(());
    }
    let new_reserved = align_up(end.max(st.reserved + chunk), RING_ALIGN);
    let threshold = new_reserved.saturating_sub(disk.ring_len);
    let mut held = false;
    while st
        .pins
        .first_key_value()
        .is_some_and(|(&p, _)| p < threshold)
    {
        if !held {
            inner.stats.writer_holds.fetch_add(1, Ordering::Relaxed);
            held = true;
        }
        st = disk
            .unpinned
            .wait_timeout(st, Duration::from_millis(100))
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
    let old_reserved = st.reserved;
    let old_threshold = old_reserved.saturating_sub(disk.ring_len);
    st.reserved = new_reserved;
    drop(st);
    let record = DiskRecord {
        container: disk.container,
        size: disk.size,
        reserved: new_reserved,
    };
    let key = format!("disk/{}", disk.dir.display());
    inner
        .disks_tree
        .insert(key.as_bytes(), index::encode(&record))
        .and_then(|_| inner.db.flush())
        .map_err(|e| std::io::Error::other(format!("index: {e}")))?;
    if threshold > old_threshold {
        inner.evict_range(disk, old_threshold, threshold);
    }
    // Only regions written in an earlier lap hold pages a socket may still read.
    release_region(disk, old_reserved.max(disk.ring_len), new_reserved)
}

/// Drops the page-cache pages of the ring region for logical `[from, to)` (wrapping)
/// before it is overwritten, and allocates its blocks again.
///
/// `sendfile` leaves references to page-cache pages in socket buffers (and, on
/// loopback, in the receiver's queue) after it returns; writing into those pages in
/// place would change bytes a client has not read yet. Punching a hole takes the
/// pages out of the file (the sockets keep the old ones, unchanged) and the writes
/// that follow land in fresh pages.
fn release_region(disk: &Disk, from: u64, to: u64) -> std::io::Result<()> {
    use rustix::fs::{fallocate, FallocateFlags};
    let mut at = from;
    while at < to {
        let pos = at % disk.ring_len;
        let n = (to - at).min(disk.ring_len - pos);
        let off = SUPERBLOCK + pos;
        match fallocate(
            &*disk.file,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            off,
            n,
        ) {
            Ok(()) => {
                let _ = fallocate(&*disk.file, FallocateFlags::KEEP_SIZE, off, n);
            }
            Err(rustix::io::Errno::OPNOTSUPP) => {
                if !disk.no_punch_warned.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        path = %disk.dir.display(),
                        "the cache filesystem cannot punch holes: bytes still queued in \
                         socket buffers may change when the ring wraps; use ext4 or xfs"
                    );
                }
            }
            Err(e) => return Err(e.into()),
        }
        at += n;
    }
    Ok(())
}

/// Syncs the container, then indexes `pending` (the body is durable before its entry
/// exists) and reports each job done.
fn commit(inner: &Inner, disk: &Arc<Disk>, pending: &mut Vec<Written>) {
    if pending.is_empty() {
        return;
    }
    if let Err(e) = disk.file.sync_data() {
        inner.fail_disk(disk, &e);
        for (_, _, done) in pending.drain(..) {
            inner.stats.store_failures.fetch_add(1, Ordering::Relaxed);
            done(false);
        }
        return;
    }
    for (key, entry, done) in pending.drain(..) {
        let ok = inner.index_entry(&key, entry).is_ok();
        if !ok {
            inner.stats.store_failures.fetch_add(1, Ordering::Relaxed);
        }
        done(ok);
    }
}

/// An object header as read back from a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectHeader {
    /// The key.
    pub key: String,
    /// Response metadata.
    pub meta: Meta,
    /// Body length.
    pub len: u64,
    /// CRC-32 of the body.
    pub checksum: u32,
    /// Where it was written.
    pub logical: u64,
    /// Header bytes (the body follows).
    pub header_len: u32,
}

/// Parses an object header (bytes read from a container at an object's start):
/// `None` unless the magic, the lengths and the header CRC all check out.
pub fn parse_object_header(h: &[u8]) -> Option<ObjectHeader> {
    if h.len() < 42 || &h[..8] != OBJECT_MAGIC {
        return None;
    }
    let u32_at = |i: usize| Some(u32::from_le_bytes(h.get(i..i + 4)?.try_into().ok()?));
    let u64_at = |i: usize| Some(u64::from_le_bytes(h.get(i..i + 8)?.try_into().ok()?));
    let header_len = u32_at(8)?;
    let key_len = u16::from_le_bytes([h[12], h[13]]) as usize;
    let meta_len = u32_at(14)? as usize;
    let len = u64_at(18)?;
    let checksum = u32_at(26)?;
    let logical = u64_at(30)?;
    let end = 38usize.checked_add(meta_len)?.checked_add(key_len)?;
    if end.checked_add(4)? > h.len() || end + 4 > header_len as usize {
        return None;
    }
    if crc32fast::hash(&h[..end]) != u32_at(end)? {
        return None;
    }
    Some(ObjectHeader {
        meta: index::decode(&h[38..38 + meta_len])?,
        key: String::from_utf8(h[38 + meta_len..end].to_vec()).ok()?,
        len,
        checksum,
        logical,
        header_len,
    })
}

/// Reads and checks the header of the object at `e` (used by `verify`).
pub(crate) fn read_header_key(disk: &Disk, e: &Entry) -> std::io::Result<Option<String>> {
    let mut h = vec![0u8; e.header_len as usize];
    disk.file
        .read_exact_at(&mut h, SUPERBLOCK + e.logical % disk.ring_len)?;
    Ok(parse_object_header(&h)
        .filter(|o| o.logical == e.logical && o.len == e.len)
        .map(|o| o.key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprint_matches_encoded_header() {
        let meta = Meta {
            content_type: "video/iso.segment".into(),
            ..Meta::default()
        };
        for len in [0u64, 1, 4000, 4096, 1 << 20] {
            let h = encode_header("/a/b.m4s", &meta, len, 0, 0);
            assert_eq!(h.len() % HEADER_ALIGN as usize, 0);
            assert_eq!(
                footprint("/a/b.m4s", &meta, len),
                align_up(h.len() as u64 + len, OBJECT_ALIGN)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn headers_round_trip(key in "[ -~]{0,200}", ct in "[ -~]{0,40}", len in 0u64..1 << 40, crc: u32, logical: u64) {
            let meta = Meta { content_type: ct, ..Meta::default() };
            let h = encode_header(&key, &meta, len, crc, logical);
            let o = parse_object_header(&h).unwrap();
            proptest::prop_assert_eq!((o.key, o.meta, o.len, o.checksum, o.logical, o.header_len as usize),
                (key, meta, len, crc, logical, h.len()));
        }

        #[test]
        fn garbage_is_never_a_header(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            // Random bytes practically never carry the magic and a valid CRC.
            let _ = parse_object_header(&bytes);
        }
    }

    #[test]
    fn a_flipped_bit_is_refused() {
        let h = encode_header("/k", &Meta::default(), 5, 1, 2);
        for i in 0..60 {
            let mut x = h.clone();
            x[i] ^= 0x10;
            assert_eq!(parse_object_header(&x), None, "bit flip at {i}");
        }
    }

    #[test]
    fn stable_hash_is_stable() {
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_ne!(stable_hash(b"/a"), stable_hash(b"/b"));
    }
}
