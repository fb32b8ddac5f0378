//! The three ways a connection's bytes move, behind one [`Transport`] trait:
//! plain TCP (`sendfile`), kernel TLS (`sendfile` on a kTLS socket, records read with
//! `recvmsg`), and userspace TLS (rustls; bodies `pread` into a pooled buffer).
//!
//! Writes never wait forever: each wait for socket progress is bounded by the send
//! timeout, so a client that stops reading is cut off (`TimedOut`).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::sys;

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

    /// Sends a response head (and any short static body appended to it). `more`
    /// says a file body follows: the head is held back to share packets with it.
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

    /// Closes gracefully: TLS `close_notify` where there is TLS, then a TCP FIN.
    fn close(&mut self) -> impl std::future::Future<Output = ()> + Send;

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
    send_timeout: Duration,
) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    while !buf.is_empty() {
        timeout(send_timeout, stream.writable())
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        match stream.try_io(Interest::WRITABLE, || sys::send(fd, buf, more)) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Largest single `sendfile` request; the kernel caps one call near 2 GiB anyway.
const SENDFILE_CHUNK: u64 = 1 << 30;

/// Sends `len` bytes of `file` from `offset` with `sendfile(2)`.
async fn sendfile_all(
    stream: &TcpStream,
    file: &File,
    offset: u64,
    len: u64,
    send_timeout: Duration,
) -> io::Result<()> {
    let fd = stream.as_raw_fd();
    let file_fd = file.as_raw_fd();
    let mut off = offset;
    let end = offset + len;
    while off < end {
        timeout(send_timeout, stream.writable())
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
        let want = (end - off).min(SENDFILE_CHUNK) as usize;
        match stream.try_io(Interest::WRITABLE, || {
            sys::sendfile(fd, file_fd, &mut off, want)
        }) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than its length",
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Plain TCP.
pub struct PlainTransport {
    stream: TcpStream,
    send_timeout: Duration,
}

impl PlainTransport {
    /// Wraps an accepted stream.
    pub fn new(stream: TcpStream, send_timeout: Duration) -> Self {
        Self {
            stream,
            send_timeout,
        }
    }
}

impl Transport for PlainTransport {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.stream.read(buf).await
    }
    async fn write_head(&mut self, head: &[u8], more: bool) -> io::Result<()> {
        send_all(&self.stream, head, more, self.send_timeout).await
    }
    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        sendfile_all(&self.stream, file, offset, len, self.send_timeout).await
    }
    async fn close(&mut self) {
        let _ = self.stream.shutdown().await;
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
    send_timeout: Duration,
    budget: u64,
    /// Set when the peer sent a non-data record; the next read reports it.
    pub control: Option<KtlsControl>,
}

impl KtlsTransport {
    /// Wraps a socket that `ktls` configured; `drained` is what it returned.
    pub fn new(
        stream: TcpStream,
        drained: Option<Vec<u8>>,
        send_timeout: Duration,
        max_bytes: u64,
    ) -> Self {
        Self {
            stream,
            drained: drained.map(|d| (d, 0)),
            send_timeout,
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
    async fn write_head(&mut self, head: &[u8], more: bool) -> io::Result<()> {
        send_all(&self.stream, head, more, self.send_timeout).await
    }
    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        sendfile_all(&self.stream, file, offset, len, self.send_timeout).await?;
        self.budget = self.budget.saturating_sub(len);
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
    fn body_path(&self) -> BodyPath {
        BodyPath::SendfileKtls
    }
    fn byte_budget(&self) -> u64 {
        self.budget
    }
}

/// The userspace-TLS stream type (the cork wrapper lets a connection be handed to
/// kTLS after the handshake; uncorked it passes bytes through).
pub type RustlsStream = tokio_rustls::server::TlsStream<ktls::CorkStream<TcpStream>>;

/// TLS in userspace with rustls. A body buffer is taken from the pool for one
/// response and returned after it, so idle keep-alive connections hold none.
pub struct RustlsTransport {
    stream: RustlsStream,
    pool: Arc<BufferPool>,
    send_timeout: Duration,
}

impl RustlsTransport {
    /// Wraps a completed rustls stream.
    pub fn new(stream: RustlsStream, pool: Arc<BufferPool>, send_timeout: Duration) -> Self {
        Self {
            stream,
            pool,
            send_timeout,
        }
    }

    async fn write_timed(&mut self, data: &[u8]) -> io::Result<()> {
        timeout(self.send_timeout, self.stream.write_all(data))
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }

    async fn flush_timed(&mut self) -> io::Result<()> {
        timeout(self.send_timeout, self.stream.flush())
            .await
            .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))?
    }
}

impl Transport for RustlsTransport {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.stream.read(buf).await {
            // A peer that closes TCP without close_notify is still "done" to us.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            r => r,
        }
    }
    async fn write_head(&mut self, head: &[u8], more: bool) -> io::Result<()> {
        self.write_timed(head).await?;
        if !more {
            self.flush_timed().await?;
        }
        Ok(())
    }
    async fn send_file(&mut self, file: &File, offset: u64, len: u64) -> io::Result<()> {
        let mut buf = self.pool.get();
        let mut off = offset;
        let end = offset + len;
        let result = async {
            while off < end {
                let want = ((end - off) as usize).min(buf.len());
                let n = file.read_at(&mut buf[..want], off)?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "file shorter than its length",
                    ));
                }
                self.write_timed(&buf[..n]).await?;
                off += n as u64;
            }
            self.flush_timed().await
        }
        .await;
        self.pool.put(buf);
        result
    }
    async fn close(&mut self) {
        let _ = timeout(Duration::from_secs(1), self.stream.shutdown()).await;
    }
    fn body_path(&self) -> BodyPath {
        BodyPath::UserspaceCopy
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
}
