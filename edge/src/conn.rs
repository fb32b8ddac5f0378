//! One client connection after accept (and after the TLS handshake, if any): the
//! HTTP/1.1 keep-alive loop over a [`Transport`], with the head-size, header-read,
//! idle and request-count limits.
//!
//! Per connection it keeps one [`Scratch`] and, while a request is being read or
//! answered, one read buffer (grown on demand up to `limits.max_head_bytes`); nothing
//! is allocated per request.
//!
//! Memory of an idle keep-alive connection: between requests the read buffer and the
//! [`Scratch`] go back to per-thread pools ([`ReadBuffer::park`], [`ScratchSlot::park`])
//! and the loop waits for readability without them; the handshake and request-loop
//! futures are boxed by the caller, so a connection's task is not sized for states it
//! is not in, and a userspace-TLS session lives in one allocation of its own. What
//! stays is the request loop's own state (about 1.7 KB: a future sized for sending a
//! body), the task and the socket's registration and, on userspace TLS, rustls'
//! session (its state and record keys; its receive buffer is pooled while idle, see
//! `tls_session`); a kTLS connection keeps no userspace TLS state at all.
//! `bench/idle-memory-bench.sh` measures it; BENCHMARKS.md has a heap breakdown.

use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::handler::{self, Body, Scratch, Site};
use crate::http::request::{self, HeadLimits, Method};
use crate::http::HttpError;
use crate::metrics::{CloseReason, Metrics};
use crate::transport::{KtlsTransport, ReadBuffer, Transport};

/// Largest request body we read and discard (GET with a body is legal but useless);
/// larger gets 413 and a close.
const MAX_DISCARDED_BODY: u64 = 64 * 1024;
/// Initial read buffer size; it doubles up to `limits.max_head_bytes`.
const INITIAL_READ_BUFFER: usize = 2048;

/// [`Scratch`] spaces kept for reuse on a worker thread.
const POOLED_SCRATCH: usize = 64;
/// A scratch space holding more than this (grown by a very long target or head) is
/// freed rather than pooled.
const MAX_POOLED_SCRATCH_BYTES: usize = 8 * 1024;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<Scratch>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A connection's [`Scratch`], taken from a per-thread pool while a request is being
/// answered and given back when the connection goes idle or ends, like
/// [`ReadBuffer`]: an idle connection holds none of its buffers (a response head and
/// a few paths, some hundreds of bytes), and a busy one allocates nothing per request.
struct ScratchSlot(Scratch);

impl ScratchSlot {
    /// Gives the scratch space back to the pool (its contents are not needed).
    fn park(&mut self) {
        let scratch = std::mem::take(&mut self.0);
        let held = scratch.capacity();
        if held > 0 && held <= MAX_POOLED_SCRATCH_BYTES {
            SCRATCH.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOLED_SCRATCH {
                    p.push(scratch);
                }
            });
        }
    }

    /// Takes a pooled scratch space, if one is free, after [`park`](Self::park).
    fn unpark(&mut self) {
        if self.0.capacity() == 0 {
            if let Some(pooled) = SCRATCH.with(|p| p.borrow_mut().pop()) {
                self.0 = pooled;
            }
        }
    }
}

impl Drop for ScratchSlot {
    fn drop(&mut self) {
        self.park();
    }
}

impl std::ops::Deref for ScratchSlot {
    type Target = Scratch;
    fn deref(&self) -> &Scratch {
        &self.0
    }
}

impl std::ops::DerefMut for ScratchSlot {
    fn deref_mut(&mut self) -> &mut Scratch {
        &mut self.0
    }
}

/// What every connection task shares.
pub struct ConnShared {
    /// Site (root, CORS).
    pub site: Site,
    /// Limits.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Where cold ranges of content files are read in (cache containers use their
    /// disk's pool).
    pub cold: ColdReads,
    /// Handshake, response and connection telemetry.
    pub telemetry: Arc<web_ui::telemetry::Telemetry>,
    /// `server.close_after_error`.
    pub close_after_error: bool,
}

/// What the keep-alive loop reports about its connection to telemetry.
struct ConnStats {
    peer: std::net::IpAddr,
    requests: u32,
    last_status: u16,
    aborted_mid_body: bool,
}

/// The route class of a request target, for telemetry.
fn route_class(target: &[u8]) -> web_ui::telemetry::RouteClass {
    use web_ui::telemetry::RouteClass;
    let path = target.split(|&b| b == b'?').next().unwrap_or(target);
    let path = std::str::from_utf8(path).unwrap_or("");
    match crate::http::media_kind(path) {
        crate::http::MediaKind::Playlist => RouteClass::Manifest,
        crate::http::MediaKind::Segment => {
            let file = path.rsplit('/').next().unwrap_or("");
            if file.starts_with("init") || file.contains(".init") || file.contains("_init") {
                RouteClass::Init
            } else {
                RouteClass::Segment
            }
        }
        crate::http::MediaKind::Other => RouteClass::Other,
    }
}

/// Reading body ranges that are not in the page cache off the event loop.
pub struct ColdReads {
    /// The I/O pool for files under the content root.
    pub content_pool: storage::IoPool,
    /// Counts ranges read in.
    pub counter: prometheus::IntCounter,
}

/// Bodies are sent in windows of this size, each made resident first.
const WARM_WINDOW: u64 = 8 << 20;

/// How long a range found in the page cache is trusted without asking again. Asking
/// (`mincore`) looks up every page of the range: for hot 2 MiB segments that was
/// about a sixth of the plain-HTTP path's CPU. A range evicted within this time can
/// make one send wait for the disk.
const RESIDENT_TRUST_MS: u64 = 1000;
/// Ranges remembered per worker thread (direct-mapped by file and range).
const RESIDENT_SLOTS: usize = 512;

/// A range of a file found resident: (device, inode, offset, length, when in ms).
type ResidentSlot = (u64, u64, u64, u64, u64);

thread_local! {
    static RESIDENT: std::cell::RefCell<[ResidentSlot; RESIDENT_SLOTS]> =
        const { std::cell::RefCell::new([(0, 0, 0, 0, 0); RESIDENT_SLOTS]) };
}

/// The slot of a range of a file in [`RESIDENT`], and its key.
fn resident_slot(meta: &std::fs::Metadata, offset: u64, len: u64) -> (usize, [u64; 4]) {
    use std::os::unix::fs::MetadataExt as _;
    let (dev, ino) = (meta.dev(), meta.ino());
    let slot = (dev.rotate_left(17) ^ ino ^ offset.rotate_left(29) ^ len) as usize % RESIDENT_SLOTS;
    (slot, [dev, ino, offset, len])
}

/// Whether this thread found the range resident less than [`RESIDENT_TRUST_MS`] ago.
fn found_resident_recently(meta: &std::fs::Metadata, offset: u64, len: u64, now_ms: u64) -> bool {
    let (slot, key) = resident_slot(meta, offset, len);
    RESIDENT.with(|r| {
        let (d, i, o, l, at) = r.borrow()[slot];
        [d, i, o, l] == key && now_ms.saturating_sub(at) < RESIDENT_TRUST_MS
    })
}

/// Remembers that this thread found the range resident at `now_ms`.
fn remember_resident(meta: &std::fs::Metadata, offset: u64, len: u64, now_ms: u64) {
    let (slot, [d, i, o, l]) = resident_slot(meta, offset, len);
    RESIDENT.with(|r| r.borrow_mut()[slot] = (d, i, o, l, now_ms));
}

/// Makes `len` bytes of `file` from `offset` resident: checks the page cache
/// (`mincore`, unless this thread found the same range resident within
/// [`RESIDENT_TRUST_MS`]), and if any page is missing reads the range on `pool`'s
/// threads, so the zero-copy send that follows does not block this worker on a disk
/// seek.
async fn warm(
    pool: &storage::IoPool,
    counter: &prometheus::IntCounter,
    file: &std::fs::File,
    offset: u64,
    len: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsFd as _;
    let now_ms = crate::streams::now_ms();
    let meta = file.metadata().ok();
    if let Some(m) = &meta {
        if found_resident_recently(m, offset, len, now_ms) {
            return Ok(());
        }
    }
    match crate::sys::resident(file.as_fd(), offset, len) {
        Ok(true) => {
            if let Some(m) = &meta {
                remember_resident(m, offset, len, now_ms);
            }
            return Ok(());
        }
        Ok(false) => {}
        // Cannot tell (the file cannot be mapped): send as before.
        Err(_) => return Ok(()),
    }
    counter.inc();
    let f = file.try_clone()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _ = tx.send(read_through(&f, offset, len));
    });
    loop {
        match pool.try_submit(job) {
            Ok(()) => break,
            // The disk's queue is full: wait for room rather than block a worker.
            Err(j) => {
                job = j;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    }
    rx.await
        .unwrap_or_else(|_| Err(std::io::Error::other("the I/O pool dropped a read")))
}

/// Reads a range (on an I/O thread) so that it lands in the page cache.
fn read_through(f: &std::fs::File, mut offset: u64, len: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; 1 << 20]);
    }
    let end = offset + len;
    BUF.with(|b| {
        let mut b = b.borrow_mut();
        while offset < end {
            let n = ((end - offset) as usize).min(b.len());
            let got = f.read_at(&mut b[..n], offset)?;
            if got == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shorter than its length",
                ));
            }
            offset += got as u64;
        }
        Ok(())
    })
}

/// Sends `len` bytes of `file` from `offset`, window by window, each made resident
/// first.
async fn send_file_warm<T: Transport>(
    t: &mut T,
    pool: &storage::IoPool,
    counter: &prometheus::IntCounter,
    file: &std::fs::File,
    offset: u64,
    len: u64,
) -> std::io::Result<()> {
    let end = offset + len;
    let mut off = offset;
    while off < end {
        let n = (end - off).min(WARM_WINDOW);
        warm(pool, counter, file, off, n).await?;
        t.send_file(file, off, n).await?;
        off += n;
    }
    Ok(())
}

/// Serves requests on `t` until the connection should end; returns why it ended.
/// The caller has already counted the connection as open and closes nothing: the
/// transport is closed gracefully here where the server chose to end it. The
/// connection is reported to telemetry as opened in `mode` and, at the end, closed
/// (who closed it, the last status, requests served, a body cut off mid-way).
pub async fn serve<T: Transport>(
    t: &mut T,
    shared: &ConnShared,
    shutdown: &CancellationToken,
    peer: std::net::IpAddr,
    mode: web_ui::telemetry::ConnMode,
) -> CloseReason {
    shared.telemetry.opened(mode);
    let mut stats = ConnStats {
        peer,
        requests: 0,
        last_status: 0,
        aborted_mid_body: false,
    };
    let reason = serve_requests(t, shared, shutdown, &mut stats).await;
    shared.telemetry.closed(
        peer,
        reason.closed_by(),
        stats.last_status,
        stats.requests,
        stats.aborted_mid_body,
    );
    reason
}

async fn serve_requests<T: Transport>(
    t: &mut T,
    shared: &ConnShared,
    shutdown: &CancellationToken,
    stats: &mut ConnStats,
) -> CloseReason {
    let limits = &shared.limits;
    let max_head = limits.max_head_bytes.get();
    let head_limits = HeadLimits {
        max_headers: limits.max_headers.get(),
        max_head_bytes: max_head,
        max_target_bytes: limits.max_request_target_bytes.get(),
    };
    let mut buf = ReadBuffer::new(INITIAL_READ_BUFFER.min(max_head));
    let mut filled = 0usize;
    let mut scratch = ScratchSlot(Scratch::default());
    let mut served: u32 = 0;

    loop {
        // ---- read one head
        let mut head_deadline: Option<Instant> =
            (filled > 0).then(|| Instant::now() + limits.header_read_timeout);
        if filled == 0 {
            // Idle between requests: no buffer while waiting for the next one.
            buf.park();
            scratch.park();
            let wait = tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    t.close().await;
                    return CloseReason::Shutdown;
                }
                r = timeout_at(Instant::now() + limits.idle_timeout, t.readable()) => r,
            };
            match wait {
                Err(_elapsed) => {
                    t.close().await;
                    return CloseReason::IdleTimeout;
                }
                Ok(Err(_)) => return CloseReason::IoError,
                Ok(Ok(())) => {
                    buf.unpark();
                    scratch.unpark();
                }
            }
        }
        let head = loop {
            if filled > 0 {
                match request::parse(&buf[..filled], &head_limits) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => {
                        // Cold paths are boxed so the request loop's future, which
                        // every idle connection carries, is not sized for them.
                        return Box::pin(reject(t, shared, &mut scratch, e, stats, &mut buf)).await;
                    }
                }
                if filled == buf.len() {
                    // parse_head reports HeadTooLarge once max_head bytes are buffered.
                    let grown = (buf.len() * 2).min(max_head);
                    buf.resize(grown, 0);
                }
            }
            let deadline = head_deadline.unwrap_or_else(|| Instant::now() + limits.idle_timeout);
            let read = tokio::select! {
                biased;
                _ = shutdown.cancelled(), if filled == 0 => {
                    t.close().await;
                    return CloseReason::Shutdown;
                }
                r = timeout_at(deadline, t.read(&mut buf[filled..])) => r,
            };
            match read {
                Err(_elapsed) => {
                    // Idle keep-alive connections and stalled heads are closed without
                    // an answer (as nginx does): nothing useful can reach the client.
                    t.close().await;
                    return if head_deadline.is_some() {
                        CloseReason::HeaderTimeout
                    } else {
                        CloseReason::IdleTimeout
                    };
                }
                Ok(Ok(0)) => return CloseReason::Client,
                Ok(Ok(n)) => {
                    filled += n;
                    head_deadline
                        .get_or_insert_with(|| Instant::now() + limits.header_read_timeout);
                }
                Ok(Err(_)) => return CloseReason::IoError,
            }
        };

        // ---- a request body: we answer without it, then discard it (bounded)
        if head.content_length > MAX_DISCARDED_BODY {
            return Box::pin(reject(
                t,
                shared,
                &mut scratch,
                HttpError::BodyTooLarge,
                stats,
                &mut buf,
            ))
            .await;
        }
        if head.content_length > 0 && head.expect_continue && head.minor_version >= 1 {
            // RFC 9110 10.1.1: the client waits for this before sending the body.
            if t.write_head(CONTINUE, false).await.is_err() {
                return CloseReason::IoError;
            }
        }

        // ---- answer
        let started = Instant::now();
        served += 1;
        let wants_more = head.keep_alive() && served < limits.max_requests_per_connection.get();
        let keep_alive = wants_more && !shutdown.is_cancelled();
        let budget = t.byte_budget();
        let mut plan = handler::respond(
            &head,
            &buf[..filled],
            &shared.site,
            &mut scratch,
            keep_alive,
            budget,
            true,
        );
        if shared.close_after_error
            && plan.status >= 400
            && !plan.close
            && plan.fill.is_none()
            && plan.hold_until_ms.is_none()
        {
            // `server.close_after_error`: answer with `Connection: close`.
            plan = handler::respond(
                &head,
                &buf[..filled],
                &shared.site,
                &mut scratch,
                false,
                budget,
                true,
            );
        }
        if let Some(until_ms) = plan.hold_until_ms {
            // An LL-HLS blocking playlist request: wait on a timer (no thread, no
            // polling) until its segment is complete or the hold limit passes,
            // then answer. Shutdown answers at once.
            let catalog = &*shared.site.catalog;
            let slot = catalog.hold();
            let limit = Instant::now() + catalog.max_hold;
            let mut may_hold = slot.is_some();
            loop {
                if may_hold {
                    let wait = until_ms.saturating_sub(crate::streams::now_ms());
                    let wake = (Instant::now() + std::time::Duration::from_millis(wait)).min(limit);
                    let woke = Box::pin(async {
                        tokio::select! {
                            _ = shutdown.cancelled() => false,
                            _ = tokio::time::sleep_until(wake) => true,
                        }
                    })
                    .await;
                    may_hold = woke && Instant::now() < limit;
                }
                plan = handler::respond(
                    &head,
                    &buf[..filled],
                    &shared.site,
                    &mut scratch,
                    keep_alive && !shutdown.is_cancelled(),
                    budget,
                    may_hold,
                );
                match plan.hold_until_ms {
                    // The clock said complete but the window did not move yet
                    // (rounding): wait again, bounded by the limit.
                    Some(_) => may_hold = may_hold && Instant::now() < limit,
                    None => break,
                }
            }
            drop(slot);
        }
        if let Some(fill) = plan.fill.take() {
            // A cache miss: wait for the origin's head (the fill's deadlines bound
            // this), then answer from the fill as its bytes land.
            let fill_head = Box::pin(fill.fill().head()).await;
            plan = handler::fill_response(
                &head,
                &buf[..filled],
                &shared.site,
                &mut scratch,
                fill,
                fill_head,
                keep_alive && !shutdown.is_cancelled(),
                budget,
            );
        }
        let cache = match &plan.body {
            Body::Cached { .. } => Some(true),
            Body::Fill { .. } => Some(false),
            _ => None,
        };
        let body_len = match &plan.body {
            Body::File { len, .. } | Body::Cached { len, .. } | Body::Fill { len, .. } => *len,
            Body::Slice { len, .. } => *len as u64,
            Body::Static(b) => b.len() as u64,
            Body::Shared(b) => b.len() as u64,
            Body::None => 0,
        };
        let status = plan.status;
        stats.requests = served;
        stats.last_status = status;
        let sent = send(t, shared, &mut scratch, status, plan.body).await;
        if shared.telemetry.enabled() {
            let target = &buf[head.target.clone()];
            let ua = head.user_agent.clone().map_or(&[][..], |s| &buf[s]);
            shared.telemetry.response(
                stats.peer,
                status,
                route_class(target),
                body_len,
                started.elapsed().as_micros() as u64,
                cache,
                target,
                ua,
            );
        }
        let body_in_buf = (filled - head.head_len).min(head.content_length as usize);
        let consumed = head.head_len + body_in_buf;
        let mut body_left = head.content_length - body_in_buf as u64;
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;

        if let Err((reason, aborted)) = sent {
            stats.aborted_mid_body = aborted;
            return reason;
        }
        if plan.close {
            t.close().await;
            if status >= 400 {
                Box::pin(linger(t, &mut buf, limits.lingering_close)).await;
            }
            // The handler closes only when told to (client wish, request cap,
            // shutdown), on a 5xx or an error with `server.close_after_error`, or
            // when the kTLS byte budget is spent.
            return if !wants_more {
                CloseReason::Requested
            } else if !keep_alive {
                CloseReason::Shutdown
            } else if status >= 500 || (status >= 400 && shared.close_after_error) {
                CloseReason::AfterError
            } else {
                CloseReason::KtlsByteCap
            };
        }
        // The rest of the body, read and dropped; the next request may follow it in
        // the same read. A body that does not come is a stalled request.
        let deadline = Instant::now() + limits.header_read_timeout;
        while body_left > 0 {
            match timeout_at(deadline, t.read(&mut buf)).await {
                Ok(Ok(0)) => return CloseReason::Client,
                Ok(Ok(n)) => {
                    let body = (n as u64).min(body_left) as usize;
                    body_left -= body as u64;
                    buf.copy_within(body..n, 0);
                    filled = n - body;
                }
                Ok(Err(_)) => return CloseReason::IoError,
                Err(_) => {
                    t.close().await;
                    return CloseReason::HeaderTimeout;
                }
            }
        }
    }
}

/// The interim response to `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Sends a head and its body, counting the response. On failure: why the
/// connection ends, and whether the client went away mid-response.
async fn send<T: Transport>(
    t: &mut T,
    shared: &ConnShared,
    scratch: &mut Scratch,
    status: u16,
    body: Body,
) -> Result<(), (CloseReason, bool)> {
    let cold = &shared.cold;
    let result = match &body {
        Body::None => t.write_head(&scratch.head, false).await,
        Body::Static(b) => {
            scratch.head.extend_from_slice(b);
            t.write_head(&scratch.head, false).await
        }
        Body::Shared(b) => {
            scratch.head.extend_from_slice(b);
            t.write_head(&scratch.head, false).await
        }
        Body::Slice { bytes, offset, len } => {
            scratch
                .head
                .extend_from_slice(&bytes[*offset..*offset + *len]);
            t.write_head(&scratch.head, false).await
        }
        Body::File { file, offset, len } => match t.write_head(&scratch.head, true).await {
            Ok(()) => {
                send_file_warm(t, &cold.content_pool, &cold.counter, file, *offset, *len).await
            }
            Err(e) => Err(e),
        },
        Body::Cached {
            file,
            offset,
            len,
            container,
            ..
        } => {
            let cache = shared.site.cache.as_ref();
            let pool = cache
                .and_then(|c| c.store.pool(*container))
                .unwrap_or(&cold.content_pool);
            let r = match t.write_head(&scratch.head, true).await {
                Ok(()) => send_file_warm(t, pool, &cold.counter, file, *offset, *len).await,
                Err(e) => Err(e),
            };
            if let (Err(e), Some(c)) = (&r, cache) {
                // A container that ends early or fails to read is the disk's fault,
                // not the client's: let the store judge the disk.
                if e.kind() == std::io::ErrorKind::UnexpectedEof
                    || e.raw_os_error() == Some(libc::EIO)
                {
                    c.store.report_read_error(*container, e);
                }
            }
            r
        }
        Body::Fill { fill, offset, len } => match t.write_head(&scratch.head, false).await {
            Ok(()) => Box::pin(send_fill(t, fill, *offset, *len)).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, status, "send failed");
        if e.kind() == std::io::ErrorKind::TimedOut {
            // Cut off a slow reader at once, rather than let its send buffer drain
            // to it for as long again.
            t.reset_on_drop();
            return Err((CloseReason::SendTimeout, false));
        }
        let gone = matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe
                | std::io::ErrorKind::ConnectionReset
                | std::io::ErrorKind::ConnectionAborted
        );
        return Err((CloseReason::IoError, gone));
    }
    match body {
        Body::File { len, .. } | Body::Cached { len, .. } => {
            shared.metrics.response(status, Some(t.body_path()), len)
        }
        _ => shared.metrics.response(status, None, 0),
    }
    Ok(())
}

/// Streams `len` bytes of a fill from `offset` as they arrive. A fill that breaks
/// after the head was sent can only end the connection (the client sees a short
/// body, never wrong bytes).
async fn send_fill<T: Transport>(
    t: &mut T,
    fill: &crate::cache::FillReader,
    offset: u64,
    len: u64,
) -> std::io::Result<()> {
    let end = offset + len;
    let mut pos = offset;
    while pos < end {
        match fill.read_at(pos).await {
            crate::cache::Chunk::Data(bytes) => {
                let n = (bytes.len() as u64).min(end - pos) as usize;
                t.send_body(&bytes[..n]).await?;
                pos += n as u64;
            }
            crate::cache::Chunk::Failed => {
                t.reset_on_drop();
                return Err(std::io::Error::other("the origin fill broke"));
            }
        }
    }
    Ok(())
}

/// Lingering close: after our FIN, reads and discards what the client still sends
/// until it closes too, `limit` passes or the read fails, so the error answer just
/// sent is read by the client rather than lost to the reset a close with unread
/// input would send (nginx's `lingering_close`).
async fn linger<T: Transport>(t: &mut T, buf: &mut [u8], limit: std::time::Duration) {
    if limit.is_zero() || buf.is_empty() {
        return;
    }
    let deadline = Instant::now() + limit;
    while let Ok(Ok(1..)) = timeout_at(deadline, t.read(buf)).await {}
}

/// Answers a framing error and closes (lingering: see [`linger`]).
async fn reject<T: Transport>(
    t: &mut T,
    shared: &ConnShared,
    scratch: &mut Scratch,
    err: HttpError,
    stats: &mut ConnStats,
    buf: &mut [u8],
) -> CloseReason {
    let plan = handler::error_response(err, Method::Get, None, &shared.site, scratch, false, None);
    stats.last_status = plan.status;
    shared.telemetry.response(
        stats.peer,
        plan.status,
        web_ui::telemetry::RouteClass::Other,
        0,
        0,
        None,
        b"(unparsed)",
        b"",
    );
    if send(t, shared, scratch, plan.status, plan.body)
        .await
        .is_ok()
    {
        t.close().await;
        linger(t, buf, shared.limits.lingering_close).await;
    }
    CloseReason::FramingError
}

/// Serves a kTLS connection, then reports a non-data record from the peer as its
/// own close reason and answers it with close_notify.
pub async fn serve_ktls(
    t: &mut KtlsTransport,
    shared: &ConnShared,
    shutdown: &CancellationToken,
    peer: std::net::IpAddr,
) -> CloseReason {
    let reason = serve(t, shared, shutdown, peer, web_ui::telemetry::ConnMode::Ktls).await;
    match t.control {
        Some(crate::transport::KtlsControl::Alert) => {
            // close_notify or a fatal alert: the peer is done; answer and close.
            t.close().await;
            CloseReason::Client
        }
        Some(kind) => {
            tracing::debug!(
                ?kind,
                "kTLS peer sent a record we do not handle after the handshake"
            );
            t.close().await;
            CloseReason::KtlsControl
        }
        None => reason,
    }
}

/// Writes a plain-text 503 on a plain TCP stream we refuse, then closes it.
pub async fn refuse_plain(mut stream: tokio::net::TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nServer: edge\r\nContent-Type: text/plain\r\nContent-Length: 12\r\nRetry-After: 1\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nserver busy\n";
    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), stream.write_all(BUSY)).await;
    let _ = stream.shutdown().await;
}
