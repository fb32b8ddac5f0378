//! The three ways a connection's bytes move, behind one [`Transport`] trait:
//! plain TCP (`sendfile`), kernel TLS (`sendfile` on a kTLS socket, records read with
//! `recvmsg`), and userspace TLS (rustls; bodies `pread` into a pooled buffer).
//!
//! Writes never wait forever, and a slow reader cannot hold a response open: see
//! [`Pace`]. A write that misses its deadline fails with `TimedOut` and the
//! connection is dropped.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{timeout, timeout_at, Instant};

use crate::config::Limits;
use crate::sys;
use crate::tls_session::{self, TlsSession};

/// The send deadlines of one response (`limits.send_timeout_secs`,
/// `limits.min_send_rate_bytes_per_sec`):
/// - every wait for the socket to take more bytes ends after `send_timeout`;
/// - after a head start of `send_timeout`, the bytes sent must keep up with
///   `min_rate`: byte `n` of the response must be sent by
///   `start + send_timeout + n / min_rate`.
///
/// So a response of `len` bytes is done by `start + send_timeout + len / min_rate` or
/// the connection is cut, whatever the client's reading pattern; what a slow reader
/// pins (its descriptor, its file, a pooled buffer) is bounded by that time.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    send_timeout: Duration,
    min_rate: u64,
    start: Instant,
    sent: u64,
}

impl Pace {
    /// The limits' pace; [`Pace::begin`] starts each response.
    pub fn new(limits: &Limits) -> Self {
        Self {
            send_timeout: limits.send_timeout,
            min_rate: limits.min_send_rate,
            start: Instant::now(),
            sent: 0,
        }
    }

    /// A response starts now.
    pub fn begin(&mut self) {
        self.start = Instant::now();
        self.sent = 0;
    }

    /// `n` more bytes of the response left.
    pub fn sent(&mut self, n: u64) {
        self.sent += n;
    }

    /// When the current wait must end.
    pub fn deadline(&self) -> Instant {
        let per_wait = Instant::now() + self.send_timeout;
        if self.min_rate == 0 {
            return per_wait;
        }
        let owed = Duration::from_secs_f64(self.sent as f64 / self.min_rate as f64);
        per_wait.min(self.start + self.send_timeout + owed)
    }
}

fn timed_out() -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        "send deadline passed (slow reader)",
    )
}

/// How a response body left the process; a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyPath {
    /// `sendfile` on a plain TCP socket.
    SendfilePlain,
    /// `sendfile` on a kTLS socket (the kernel encrypts).
    SendfileKtls,
    /// `pread` into a pooled buffer, encrypted by rustls and written.
    UserspaceCopy,
}

impl BodyPath {
    /// All paths, in label order.
    pub const ALL: [BodyPath; 3] = [
        BodyPath::SendfilePlain,
        BodyPath::SendfileKtls,
        BodyPath::UserspaceCopy,
    ];

    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            BodyPath::SendfilePlain => "sendfile_plain",
            BodyPath::SendfileKtls => "sendfile_ktls",
            BodyPath::UserspaceCopy => "userspace_copy",
        }
    }
}

/// What ended a read on a kTLS connection other than data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KtlsControl {
    /// The peer sent an alert (close_notify or fatal).
    Alert,
    /// A post-handshake handshake message (KeyUpdate; we cannot rekey the kernel).
    Handshake,
    /// change_cipher_spec after the handshake.
    ChangeCipherSpec,
    /// Any other record type.
    Other,
}

/// A connection's byte transport. Not cancel-safe: a cancelled write leaves the
/// response half-sent, so callers drop the connection after cancelling.
pub trait Transport {
    /// Reads request bytes into `buf`; `Ok(0)` means the peer is done (TCP FIN or
    /// TLS close_notify).
    fn read(
        &mut self,
        buf: &mut [u8],
    ) -> impl std::future::Future<Output = io::Result<usize>> + Send;

    /// Waits until a read would find something (request bytes, or the peer's end)
    /// without taking a buffer, so an idle keep-alive connection holds none.
    fn readable(&mut self) -> impl std::future::Future<Output = io::Result<()>> + Send;

    /// Starts a response: sends its head (and any short static body appended to it);
    /// the response's send deadlines ([`Pace`]) start here. `more` says a file body
    /// follows: the head is held back to share packets (and TLS records) with it.
    fn write_head(
        &mut self,
        head: &[u8],
        more: bool,
    ) -> impl std::future::Future<Output = io::Result<()>> + Send;

    /// Sends `len` bytes of `file` from `offset`; fails if the file is shorter.
    fn send_file(
        &mut self,
        file: &File,
        offset: u64,
        len: u64,
    ) -> impl std::future::Future<Output = io::Result<()>> + Send;

    /// Sends body bytes from memory (a fill streaming in), after [`write_head`](Self::write_head)
    /// with `more = false`.
    fn send_body(&mut self, buf: &[u8])
        -> impl std::future::Future<Output = io::Result<()>> + Send;

    /// Closes gracefully: TLS `close_notify` where there is TLS, then a TCP FIN.
    fn close(&mut self) -> impl std::future::Future<Output = ()> + Send;

    /// Makes dropping the connection abortive (RST; queued bytes are discarded), for a
    /// client that missed its send deadline.
    fn reset_on_drop(&self);

    /// How bodies leave on this transport.
    fn body_path(&self) -> BodyPath;

    /// Body bytes this transport may still send before it must close (the kTLS cap).
    fn byte_budget(&self) -> u64 {
        u64::MAX
    }
}

/// Sends all of `buf` with `send(2)` (`MSG_MORE` when `more`).
async fn send_all(
    stream: &TcpStream,
    mut buf: &[u8],
    more: bool,
    pace: &mut Pace,
) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    while !buf.is_empty() {
        timeout_at(pace.deadline(), stream.writable())
            .await
            .map_err(|_| timed_out())??;
        match try_write(stream, buf.len(), || sys::send(fd, buf, more)) {
            Ok(None) => {}
            Ok(Some(n)) => {
                pace.sent(n as u64);
                buf = &buf[n..];
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Runs one non-blocking write syscall (`send`, `sendfile`) asked for `want` bytes and
/// returns how many it wrote: `None` when the socket had no room (`EAGAIN`).
///
/// A short count means the send buffer is full, as `EAGAIN` does: readiness is cleared,
/// so the caller's next `writable().await` waits for the kernel's next write-space event
/// instead of making a second call that can only fail with `EAGAIN`. tokio's own
/// `poll_write` does the same on Unix, and so does nginx after a short `sendfile`.
/// Under TCP memory pressure the kernel trims send buffers and every `sendfile` is
/// short: before this, half of all `sendfile` calls were that `EAGAIN` (perf, 16,000
/// busy plain connections), each after splicing file pages it could not send.
///
/// One short count has another cause: a file that shrank while it was being sent ends
/// early. The call after returns 0, which the caller reports; should no write-space
/// event come first, the send deadline ends the wait (as nginx's `send_timeout` does).
fn try_write(
    stream: &TcpStream,
    want: usize,
    write: impl FnOnce() -> io::Result<usize>,
) -> io::Result<Option<usize>> {
    let mut short = 0;
    let result = stream.try_io(Interest::WRITABLE, || match write()? {
        n if n > 0 && n < want => {
            short = n;
            Err(io::ErrorKind::WouldBlock.into())
        }
        n => Ok(n),
    });
    match result {
        Ok(n) => Ok(Some(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok((short > 0).then_some(short)),
        Err(e) => Err(e),
    }
}

/// Largest single `sendfile` request; the kernel caps one call near 2 GiB anyway.
const SENDFILE_CHUNK: u64 = 1 << 30;

/// Sends `len` bytes of `file` from `offset` with `sendfile(2)`.
async fn sendfile_all(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    pace: &mut Pace,
) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    let file_fd = file.as_raw_fd();
    let mut off = offset;
    let end = offset + len;
    while off < end {
        timeout_at(pace.deadline(), stream.writable())
            .await
            .map_err(|_| timed_out())??;
        let want = (end - off).min(SENDFILE_CHUNK) as usize;
        match try_write(stream, want, || sys::sendfile(fd, file_fd, &mut off, want)) {
            Ok(None) => {}
            Ok(Some(0)) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than its length",
                ))
            }
            Ok(Some(n)) => pace.sent(n as u64),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A count of things in progress on one worker (its TLS handshakes; those waiting for
/// their turn), shared by the worker's tasks: [`enter`](Self::enter) counts one until
/// the guard it returns is dropped.
///
/// The worker's handshakes in progress (ClientHello in, handshake not yet over) also
/// pace bodies: while there are any, a userspace-TLS body gives the worker's other
/// ready tasks a turn after every `limits.tls_body_buffers_per_turn` buffers it
/// encrypts ([`RustlsTransport::send_file`]). Otherwise one viewer's turn encrypts as
/// much as its socket takes: over a fast path a whole 2 MiB segment, about a
/// millisecond, and with dozens of viewers ready a turn of the event loop lasts tens
/// of milliseconds. The handshakes (paced at `limits.tls_handshakes_per_turn` per
/// turn) and the first requests of new connections wait that long each. With no
/// handshake in progress, bodies run as before, so steady-state throughput is
/// unchanged. Measured in BENCHMARKS.md (storm-bench).
#[derive(Debug, Clone, Default)]
pub struct InProgress(Arc<AtomicUsize>);

impl InProgress {
    /// Counts one until the guard is dropped.
    pub fn enter(&self) -> InProgressGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InProgressGuard(self.clone())
    }

    /// How many are in progress.
    pub fn count(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// One of an [`InProgress`] count, counted until dropped.
#[derive(Debug)]
pub struct InProgressGuard(InProgress);

impl Drop for InProgressGuard {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Gives the worker's other ready tasks a turn, then goes on: this task goes to the
/// back of the run queue.
///
/// Not `tokio::task::yield_now`, which defers the task until the I/O driver has been
/// polled, so every task that poll wakes (handshakes, new requests) runs first. In
/// storm-bench, at one buffer per turn, that favoured the flood more: the viewers' p99
/// went to 1.78x their baseline, against 1.54-1.69x when re-queued at the back.
async fn yield_turn() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
}

/// Plain TCP.
pub struct PlainTransport {
    stream: TcpStream,
    pace: Pace,
}

impl PlainTransport {
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream, limits: &Limits) -> Self {
        Self {
            stream,
            pace: Pace::new(limits),
        }
    }
}

impl Transport for PlainTransport {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).await
    }
    async fn readable(&mut self) -> io::Result<()> {
        self.stream.readable().await
    }
    async fn write_head(&mut self, head: &[u8], more: bool) -> io::Result<()> {
        self.pace.begin();
        send_all(&self.stream, head, more, &mut self.pace).await
    }
    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        sendfile_all(&self.stream, file, offset, len, &mut self.pace).await
    }
    async fn send_body(&mut self, buf: &[u8]) -> io::Result<()> {
        send_all(&self.stream, buf, false, &mut self.pace).await
    }
    async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
    }
    fn reset_on_drop(&self) {
        let _ = sys::reset_on_close(self.stream.as_raw_fd());
    }
    fn body_path(&self) -> BodyPath {
        BodyPath::SendfilePlain
    }
}

/// A TCP socket whose TLS record layer runs in the kernel (TX and RX offloaded).
pub struct KtlsTransport {
    stream: TcpStream,
    /// Plaintext rustls had already decrypted when the socket was handed over.
    drained: Option<(Vec<u8>, usize)>,
    pace: Pace,
    budget: u64,
    /// Set when the peer sent a non-data record; the next read reports it.
    pub control: Option<KtlsControl>,
}

impl KtlsTransport {
    /// Wraps a socket that `ktls` configured; `drained` is what it returned.
    pub fn new(
        stream: TcpStream,
        drained: Option<Vec<u8>>,
        limits: &Limits,
        max_bytes: u64,
    ) -> Self {
        Self {
            stream,
            drained: drained.map(|d| (d, 0)),
            pace: Pace::new(limits),
            budget: max_bytes,
            control: None,
        }
    }
}

impl Transport for KtlsTransport {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((data, pos)) = self.drained.as_mut() {
            let n = (data.len() - *pos).min(buf.len());
            buf[..n].copy_from_slice(&data[*pos..*pos + n]);
            *pos += n;
            if *pos == data.len() {
                self.drained = None;
            }
            return Ok(n);
        }
        if self.control.is_some() {
            return Ok(0);
        }
        let fd = self.stream.as_raw_fd();
        loop {
            self.stream.readable().await?;
            match self
                .stream
                .try_io(Interest::READABLE, || sys::ktls_recv(fd, buf))
            {
                Ok(sys::KtlsRecv::Data(n)) => return Ok(n),
                Ok(sys::KtlsRecv::Control { record_type, len }) => {
                    let kind = match record_type {
                        sys::RECORD_ALERT => KtlsControl::Alert,
                        22 => KtlsControl::Handshake,
                        20 => KtlsControl::ChangeCipherSpec,
                        _ => KtlsControl::Other,
                    };
                    tracing::debug!(record_type, len, "kTLS: non-data record from peer; closing");
                    self.control = Some(kind);
                    return Ok(0);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
    async fn readable(&mut self) -> io::Result<()> {
        if self.drained.is_some() || self.control.is_some() {
            return Ok(());
        }
        wait_readable(&self.stream).await
    }
    async fn write_head(&mut self, head: &[u8], more: bool) -> io::Result<()> {
        self.pace.begin();
        send_all(&self.stream, head, more, &mut self.pace).await
    }
    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        sendfile_all(&self.stream, file, offset, len, &mut self.pace).await?;
        self.budget = self.budget.saturating_sub(len);
        Ok(())
    }
    async fn send_body(&mut self, buf: &[u8]) -> io::Result<()> {
        send_all(&self.stream, buf, false, &mut self.pace).await?;
        self.budget = self.budget.saturating_sub(buf.len() as u64);
        Ok(())
    }
    async fn close(&mut self) {
        // close_notify (level warning, description 0), then FIN. Best effort: the
        // peer may already be gone.
        let fd = self.stream.as_raw_fd();
        if timeout(Duration::from_secs(1), self.stream.writable())
            .await
            .is_ok()
        {
            let _ = self
                .stream
                .try_io(Interest::WRITABLE, || sys::ktls_send_alert(fd, 1, 0));
        }
        let _ = self.stream.shutdown().await;
    }
    fn reset_on_drop(&self) {
        let _ = sys::reset_on_close(self.stream.as_raw_fd());
    }
    fn body_path(&self) -> BodyPath {
        BodyPath::SendfileKtls
    }
    fn byte_budget(&self) -> u64 {
        self.budget
    }
}

/// TLS in userspace with rustls' unbuffered API ([`TlsSession`]). Two buffers are
/// taken from the pool for one response (plaintext read from the file, records
/// encrypted from it) and returned after it, so idle keep-alive connections hold none.
///
/// A head followed by a file body is held back and sent in the same write as the
/// body's first chunk, so a small response (a playlist, an init segment) leaves in
/// one TLS record instead of two.
pub struct RustlsTransport {
    /// Boxed by the handshake: the session is the largest part of a connection's
    /// state, and boxed it moves here without a copy in every future on the way.
    session: Box<TlsSession>,
    pool: Arc<BufferPool>,
    pace: Pace,
    /// A pooled body buffer whose first `.1` bytes are a head written with `more`,
    /// waiting for the body to fill the rest.
    held: Option<(Box<[u8]>, usize)>,
    /// The worker's handshakes in progress: while any, bodies share their turn.
    handshaking: InProgress,
    /// Body buffers per turn while handshakes are in progress (0: no bound).
    buffers_per_turn: usize,
}

impl RustlsTransport {
    /// Wraps an established session on the worker whose handshakes `handshaking` counts.
    pub fn new(
        session: Box<TlsSession>,
        pool: Arc<BufferPool>,
        limits: &Limits,
        handshaking: InProgress,
    ) -> Self {
        Self {
            session,
            pool,
            pace: Pace::new(limits),
            held: None,
            handshaking,
            buffers_per_turn: limits.tls_body_buffers_per_turn,
        }
    }

    /// Encrypts and sends `data` within the response's pace, through `cipher`.
    async fn write_timed(&mut self, data: &[u8], cipher: &mut [u8]) -> io::Result<()> {
        timeout_at(self.pace.deadline(), self.session.write_all(data, cipher))
            .await
            .map_err(|_| timed_out())??;
        self.pace.sent(data.len() as u64);
        Ok(())
    }

    /// Sends the held head (if any), then `body`, through one pooled ciphertext buffer.
    async fn send_with_held(&mut self, body: &[u8]) -> io::Result<()> {
        let mut cipher = self.pool.get();
        let mut result = Ok(());
        if let Some((held, used)) = self.held.take() {
            result = self.write_timed(&held[..used], &mut cipher).await;
            self.pool.put(held);
        }
        if result.is_ok() && !body.is_empty() {
            result = self.write_timed(body, &mut cipher).await;
        }
        self.pool.put(cipher);
        result
    }
}

impl Transport for RustlsTransport {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.session.read(buf).await
    }
    async fn readable(&mut self) -> io::Result<()> {
        self.session.readable().await
    }
    async fn write_head(&mut self, head: &[u8], more: bool) -> io::Result<()> {
        self.pace.begin();
        if more {
            let mut buf = self.pool.get();
            if head.len() <= buf.len() / 2 {
                buf[..head.len()].copy_from_slice(head);
                self.held = Some((buf, head.len()));
                return Ok(());
            }
            // A head too large to share a buffer goes alone; the body follows.
            self.pool.put(buf);
        }
        self.send_with_held(head).await
    }
    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        // The first chunk carries the held head in front of the body.
        let (mut plain, mut used) = self.held.take().unwrap_or_else(|| (self.pool.get(), 0));
        let mut cipher = self.pool.get();
        // Read no more than one ciphertext buffer's worth of records carries.
        let room = tls_session::plaintext_room(cipher.len()).min(plain.len());
        let mut off = offset;
        let end = offset + len;
        let result = async {
            // Buffers encrypted since this task's turn began (or since the body did).
            let mut buffers = 0;
            while off < end {
                let want = ((end - off) as usize).min(room.saturating_sub(used));
                let n = file.read_at(&mut plain[used..used + want], off)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than its length",
                    ));
                }
                self.write_timed(&plain[..used + n], &mut cipher).await?;
                off += n as u64;
                used = 0;
                buffers += 1;
                if off < end
                    && self.buffers_per_turn > 0
                    && buffers >= self.buffers_per_turn
                    && self.handshaking.count() > 0
                {
                    buffers = 0;
                    yield_turn().await;
                }
            }
            Ok(())
        }
        .await;
        self.pool.put(plain);
        self.pool.put(cipher);
        result
    }
    async fn send_body(&mut self, buf: &[u8]) -> io::Result<()> {
        self.send_with_held(buf).await
    }
    async fn close(&mut self) {
        let _ = timeout(Duration::from_secs(1), self.session.close()).await;
    }
    fn reset_on_drop(&self) {
        let _ = sys::reset_on_close(self.session.fd());
    }
    fn body_path(&self) -> BodyPath {
        BodyPath::UserspaceCopy
    }
}

/// Waits until a read of `stream` would find something (data, the peer's end, an
/// error), holding no buffer.
///
/// Readiness can be stale: reads through `try_io`/`try_read` clear it only when a
/// read would block, so after a request was read whole the socket still looks
/// readable, and an idle connection would go on to wait inside its read, holding its
/// buffers. A peek takes nothing and clears stale readiness.
pub(crate) async fn wait_readable(stream: &TcpStream) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || sys::peek(fd)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            _ => return Ok(()),
        }
    }
}

/// Read buffers kept for reuse on a worker thread.
const POOLED_READ_BUFFERS: usize = 64;

thread_local! {
    static READ_BUFFERS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A connection's read buffer, taken from a per-thread pool and returned to it when
/// the connection goes idle or ends, so idle connections hold none and busy ones
/// allocate nothing per request. A buffer grown past its initial size is freed
/// rather than pooled.
pub(crate) struct ReadBuffer {
    buf: Vec<u8>,
    initial: usize,
}

impl ReadBuffer {
    /// A parked buffer: [`unpark`](Self::unpark) before use.
    pub(crate) fn new(initial: usize) -> Self {
        Self {
            buf: Vec::new(),
            initial,
        }
    }

    /// Gives the buffer back to the pool (its contents are not needed).
    pub(crate) fn park(&mut self) {
        let buf = std::mem::take(&mut self.buf);
        if buf.len() == self.initial {
            READ_BUFFERS.with(|p| {
                let mut p = p.borrow_mut();
                if p.len() < POOLED_READ_BUFFERS {
                    p.push(buf);
                }
            });
        }
    }

    /// Takes a buffer (pooled if one is free) after [`park`](Self::park).
    pub(crate) fn unpark(&mut self) {
        if !self.buf.is_empty() {
            return;
        }
        let initial = self.initial;
        self.buf = READ_BUFFERS
            .with(|p| {
                let mut p = p.borrow_mut();
                let at = p.iter().rposition(|b| b.len() == initial)?;
                Some(p.swap_remove(at))
            })
            .unwrap_or_else(|| vec![0u8; initial]);
    }
}

impl Drop for ReadBuffer {
    fn drop(&mut self) {
        self.park();
    }
}

impl std::ops::Deref for ReadBuffer {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.buf
    }
}

impl std::ops::DerefMut for ReadBuffer {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }
}

/// A pool of equally sized body buffers for the userspace-TLS path, so a response
/// allocates nothing: a response takes one and returns it when its body is sent (a
/// cancelled send drops it instead; the pool refills on demand). At most
/// `max_pooled` idle buffers are kept.
pub struct BufferPool {
    size: usize,
    max_pooled: usize,
    idle: Mutex<Vec<Box<[u8]>>>,
}

impl BufferPool {
    /// A pool of `size`-byte buffers keeping at most `max_pooled` idle.
    pub fn new(size: usize, max_pooled: usize) -> Self {
        Self {
            size,
            max_pooled,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Takes an idle buffer or allocates one.
    pub fn get(&self) -> Box<[u8]> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        pooled.unwrap_or_else(|| vec![0u8; self.size].into_boxed_slice())
    }

    /// Returns a buffer; it is freed if the pool is full.
    pub fn put(&self, buf: Box<[u8]>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.max_pooled && buf.len() == self.size {
            idle.push(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_reuses_and_caps() {
        let pool = BufferPool::new(4096, 1);
        let a = pool.get();
        let b = pool.get();
        let pa = a.as_ptr();
        pool.put(a);
        pool.put(b);
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
        let again = pool.get();
        assert_eq!(again.as_ptr(), pa);
    }

    /// A file of `len` patterned bytes in the temp dir, open for reading.
    fn patterned_file(name: &str, len: usize) -> (std::path::PathBuf, File, Vec<u8>) {
        let path =
            std::env::temp_dir().join(format!("edge-transport-{}-{name}", std::process::id()));
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let file = File::open(&path).unwrap();
        (path, file, data)
    }

    /// The server side (tokio) and the client side (std) of a loopback connection.
    async fn loopback_pair() -> (TcpStream, std::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().await.unwrap();
        (s, c)
    }

    fn pace(send_timeout: Duration) -> Pace {
        Pace {
            send_timeout,
            min_rate: 0,
            start: Instant::now(),
            sent: 0,
        }
    }

    /// Short `sendfile` counts clear readiness (the buffer is full): the send must still
    /// resume on every write-space event and end with every byte, in order.
    #[tokio::test]
    async fn sendfile_all_resumes_after_short_writes_to_a_slow_reader() {
        use std::io::Read;
        let (path, file, data) = patterned_file("slow", 8 << 20);
        let (s, mut c) = loopback_pair().await;
        let reader = std::thread::spawn(move || {
            let mut got = Vec::with_capacity(8 << 20);
            let mut buf = vec![0u8; 64 << 10];
            while got.len() < 8 << 20 {
                std::thread::sleep(Duration::from_millis(1));
                let n = c.read(&mut buf).unwrap();
                assert!(n > 0, "closed early");
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let mut p = pace(Duration::from_secs(60));
        tokio::time::timeout(
            Duration::from_secs(30),
            sendfile_all(&s, &file, 0, 8 << 20, &mut p),
        )
        .await
        .expect("stalled after a short write")
        .unwrap();
        assert_eq!(p.sent, 8 << 20);
        assert!(reader.join().unwrap() == data, "bytes differ");
        std::fs::remove_file(&path).ok();
    }

    /// A file that ends before its length is an error, promptly: its last count is
    /// short with room in the buffer (the client neither reads nor writes meanwhile);
    /// the wait that follows must end well before `send_timeout`.
    #[tokio::test]
    async fn sendfile_all_reports_a_short_file_at_once() {
        use std::io::Read;
        let (path, file, data) = patterned_file("short", 10_000);
        let (s, mut c) = loopback_pair().await;
        let mut p = pace(Duration::from_secs(60));
        let err = tokio::time::timeout(
            Duration::from_secs(20),
            sendfile_all(&s, &file, 0, 20_000, &mut p),
        )
        .await
        .expect("waited for the send deadline")
        .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(p.sent, 10_000);
        drop(s);
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert!(got == data, "bytes differ");
        std::fs::remove_file(&path).ok();
    }

    /// How many times a userspace-TLS `send_file` of `buffers` pool buffers gave up
    /// its turn (returned `Pending`), to a client that reads nothing until it is done
    /// (the body fits the socket buffers: no wait is the socket's), with or without
    /// a handshake in progress on its worker.
    async fn turns_given_up(handshake_in_progress: bool, per_turn: usize, buffers: usize) -> usize {
        use crate::tls_session::tests::{client_stream, configs};
        use std::io::Read;
        const BUFFER: usize = 2048;
        let (server_config, client_config) = configs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<usize>();
        let client = std::thread::spawn(move || {
            let mut tls = client_stream(client_config, addr);
            while tls.conn.is_handshaking() {
                tls.conn.complete_io(&mut tls.sock).unwrap();
            }
            let len = go_rx.recv().unwrap();
            let mut got = vec![0u8; len];
            tls.read_exact(&mut got).unwrap();
            got
        });
        let (sock, _) = listener.accept().await.unwrap();
        let session = crate::tls_session::handshake(sock, server_config)
            .await
            .unwrap();
        let mut limits = crate::config::Config::from_toml("", std::path::Path::new("t.toml"))
            .unwrap()
            .limits;
        limits.tls_body_buffers_per_turn = per_turn;
        let handshaking = InProgress::default();
        let guard = handshake_in_progress.then(|| handshaking.enter());
        let pool = Arc::new(BufferPool::new(BUFFER, 4));
        let mut t = RustlsTransport::new(session, pool, &limits, handshaking);
        let room = tls_session::plaintext_room(BUFFER).min(BUFFER);
        let (path, file, data) = patterned_file(
            &format!("turns-{handshake_in_progress}-{per_turn}"),
            room * buffers,
        );
        let mut send = std::pin::pin!(t.send_file(&file, 0, data.len() as u64));
        let mut pendings = 0;
        std::future::poll_fn(|cx| {
            let poll = std::future::Future::poll(send.as_mut(), cx);
            pendings += usize::from(poll.is_pending());
            poll
        })
        .await
        .unwrap();
        drop(guard);
        go_tx.send(data.len()).unwrap();
        assert!(client.join().unwrap() == data, "body differs");
        std::fs::remove_file(&path).ok();
        pendings
    }

    /// While its worker has a handshake in progress, a userspace-TLS body gives the
    /// worker's other tasks a turn after every `tls_body_buffers_per_turn` buffers;
    /// with none in progress, or with the bound off (0), it runs to its end in one.
    #[tokio::test]
    async fn a_tls_body_shares_its_turn_only_while_handshakes_are_in_progress() {
        assert!(turns_given_up(false, 1, 16).await <= 1);
        assert!(turns_given_up(true, 0, 16).await <= 1);
        assert!(turns_given_up(true, 1, 16).await >= 15);
        let two = turns_given_up(true, 2, 16).await;
        assert!((7..=9).contains(&two), "{two}");
    }
}
