//! Userspace TLS on a TCP socket: rustls' unbuffered server connection, driven with
//! buffers edge owns, so that an idle keep-alive connection holds no TLS buffer at all
//! (rustls' buffered API keeps a 4 KiB receive buffer for a connection's whole life).
//!
//! - [`handshake`] reads the ClientHello, answers a client that offers ALPN but not
//!   ours with a plaintext `no_application_protocol` alert, and drives the handshake
//!   until application data may flow, with everything rustls had to send sent.
//! - A [`TlsSession`] then reads and writes application data. Received bytes wait in a
//!   pooled [`ReadBuffer`] that goes back to its pool whenever no partial record is
//!   held; records are encrypted into a buffer the caller lends.
//! - [`TlsSession::drain_for_kernel`] reads up to a record boundary and returns what it
//!   decrypted: what a hand-over to kernel TLS needs.
//!
//! Errors: a TLS protocol error is answered with rustls' alert (sent within a second)
//! and reported as `InvalidData`; a peer that ends TCP without close_notify reads as
//! the end of input, as a closed TCP stream would.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use rustls::server::{Acceptor, ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use rustls::{CommonState, ServerConfig};
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::transport::{wait_readable, ReadBuffer};

/// The receive buffer taken from the pool: a request head fits in a record or two.
/// It grows when a record (or, in the handshake, a message) needs more; a grown buffer
/// is freed rather than pooled.
const RECEIVE_BUFFER: usize = 4096;
/// The largest record on the wire: a 5-byte header and a fragment of up to
/// 2^14 + 2048 bytes (RFC 5246 6.2.3).
pub const MAX_RECORD_BYTES: usize = 5 + (1 << 14) + 2048;
/// The receive buffer's bound while handshaking: a handshake message (a large
/// ClientHello) may span records, and rustls needs all of it at once.
const MAX_HANDSHAKE_BYTES: usize = 0xffff + MAX_RECORD_BYTES;
/// The most plaintext one record carries (RFC 8446 5.1).
const MAX_FRAGMENT: usize = 1 << 14;
/// More than any suite adds to a record: header 5, TLS 1.2 explicit nonce 8, tag 16,
/// TLS 1.3 inner content type 1.
const RECORD_OVERHEAD: usize = 64;
/// How long an alert or close_notify may take to leave.
const ALERT_SEND: Duration = Duration::from_secs(1);

/// A fatal `no_application_protocol` alert in a plaintext record (RFC 7301 3.2): what
/// a client that offers ALPN but not `http/1.1` gets before any ServerHello.
const NO_APPLICATION_PROTOCOL_ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 120];

/// How much plaintext to read for one write through a `cipher_len`-byte ciphertext
/// buffer: the buffer less room for each record's overhead, so the records encrypted
/// from it leave in one write.
pub fn plaintext_room(cipher_len: usize) -> usize {
    cipher_len.saturating_sub((cipher_len / MAX_FRAGMENT + 1) * RECORD_OVERHEAD)
}

/// An established userspace-TLS connection (or one in its handshake).
pub struct TlsSession {
    stream: TcpStream,
    conn: UnbufferedServerConnection,
    /// Received TLS bytes not yet consumed, in `incoming[..used]`; parked while empty.
    incoming: ReadBuffer,
    used: usize,
    /// Decrypted application data the reader has not taken yet, from `pending_at` on
    /// (a record larger than the reader's buffer, or records decrypted while writing).
    pending: Vec<u8>,
    pending_at: usize,
    /// Handshake records and alerts encoded but not yet sent.
    out: Vec<u8>,
    /// The peer sent close_notify (rustls reports it once).
    peer_closed: bool,
    /// Whether the ClientHello named a server (SNI).
    sni: bool,
}

/// What one call into rustls came to.
enum Step {
    /// Application data: this many bytes went to the reader's buffer, the rest (if
    /// any) to `pending`.
    Data(usize),
    /// Records wait in `out`: send them.
    Transmit,
    /// rustls needs more bytes from the peer.
    NeedInput,
    /// Application data may be written, and nothing waits to be sent.
    Writable,
    /// The job's records: this many bytes of the job's buffer.
    Encrypted(usize),
    /// The job's buffer cannot take its records.
    NoRoom,
    /// Both sides have closed.
    Closed,
    /// A TLS error; rustls may have queued an alert for it.
    Failed(rustls::Error),
}

/// What to do in a state where application data may be written.
enum Job<'a> {
    /// Only learn whether writing is possible.
    None,
    /// Encrypt the plaintext into the buffer.
    Encrypt(&'a [u8], &'a mut [u8]),
    /// Encode close_notify into the buffer.
    CloseNotify(&'a mut [u8]),
}

/// Handles the state rustls reports. Split from [`TlsSession`] so that the state's
/// borrow of the connection and the other fields' borrows stay apart.
fn settle(
    state: Result<ConnectionState<'_, '_, ServerConnectionData>, rustls::Error>,
    read_into: &mut [u8],
    pending: &mut Vec<u8>,
    out: &mut Vec<u8>,
    peer_closed: &mut bool,
    job: Job<'_>,
) -> Step {
    match state {
        Ok(ConnectionState::ReadTraffic(mut traffic)) => {
            let mut n = 0;
            while let Some(record) = traffic.next_record() {
                let payload = match record {
                    Ok(r) => r.payload,
                    Err(e) => return Step::Failed(e),
                };
                let direct = payload.len().min(read_into.len() - n);
                read_into[n..n + direct].copy_from_slice(&payload[..direct]);
                n += direct;
                pending.extend_from_slice(&payload[direct..]);
            }
            Step::Data(n)
        }
        Ok(ConnectionState::EncodeTlsData(mut encode)) => {
            let at = out.len();
            let need = match encode.encode(&mut []) {
                Ok(_) => return Step::Transmit,
                Err(EncodeError::InsufficientSize(e)) => e.required_size,
                Err(EncodeError::AlreadyEncoded) => return Step::Transmit,
            };
            out.resize(at + need, 0);
            match encode.encode(&mut out[at..]) {
                Ok(n) => out.truncate(at + n),
                Err(_) => out.truncate(at),
            }
            // Encoded records leave at the next `TransmitTlsData`.
            Step::Data(0)
        }
        Ok(ConnectionState::TransmitTlsData(transmit)) => {
            transmit.done();
            Step::Transmit
        }
        Ok(ConnectionState::BlockedHandshake) => Step::NeedInput,
        Ok(ConnectionState::WriteTraffic(mut traffic)) => {
            let encoded = match job {
                Job::None => return Step::Writable,
                Job::Encrypt(plain, cipher) => traffic.encrypt(plain, cipher),
                Job::CloseNotify(cipher) => traffic.queue_close_notify(cipher),
            };
            match encoded {
                Ok(n) => Step::Encrypted(n),
                Err(EncryptError::InsufficientSize(_)) => Step::NoRoom,
                Err(EncryptError::EncryptExhausted) => Step::Failed(rustls::Error::EncryptError),
            }
        }
        Ok(ConnectionState::PeerClosed) => {
            *peer_closed = true;
            Step::Data(0)
        }
        Ok(ConnectionState::Closed) => {
            *peer_closed = true;
            Step::Closed
        }
        // Early data is never accepted (`max_early_data_size` is 0), and states rustls
        // may add later are not ones we can serve.
        Ok(_) => Step::Failed(rustls::Error::General("unexpected TLS state".into())),
        Err(e) => Step::Failed(e),
    }
}

/// Waits for the socket and reads what is there (0 at the peer's end of TCP).
async fn read_some(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            r => return r,
        }
    }
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// The TLS handshake on an accepted socket: the ClientHello is checked first (see the
/// module doc), then rustls completes the handshake. The caller bounds it in time.
///
/// Boxed once, here: the session (about 1.3 KB) moves from the handshake to the
/// request loop or the kTLS hand-over by pointer.
pub async fn handshake(
    stream: TcpStream,
    config: Arc<ServerConfig>,
) -> io::Result<Box<TlsSession>> {
    let conn = UnbufferedServerConnection::new(config.clone()).map_err(invalid)?;
    let mut session = Box::new(TlsSession {
        stream,
        conn,
        incoming: ReadBuffer::new(RECEIVE_BUFFER),
        used: 0,
        pending: Vec::new(),
        pending_at: 0,
        out: Vec::new(),
        peer_closed: false,
        sni: false,
    });
    session.check_client_hello(&config).await?;
    session.complete_handshake().await?;
    Ok(session)
}

impl TlsSession {
    /// Reads the ClientHello (keeping its bytes for the connection) and refuses a
    /// client that offers ALPN protocols but none of ours: rustls would put that
    /// alert inside an unfinished TLS 1.3 flight, and the client would see a bare
    /// close.
    async fn check_client_hello(&mut self, config: &ServerConfig) -> io::Result<()> {
        let mut acceptor = Acceptor::default();
        let mut fed = 0;
        let accepted = loop {
            while fed < self.used {
                let mut rest = &self.incoming[fed..self.used];
                match acceptor.read_tls(&mut rest)? {
                    0 => break,
                    n => fed += n,
                }
            }
            match acceptor.accept() {
                Ok(Some(accepted)) => break accepted,
                Ok(None) => {
                    if self.fill().await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err((error, mut alert)) => {
                    let mut bytes = Vec::new();
                    let _ = alert.write_all(&mut bytes);
                    let _ = timeout(ALERT_SEND, self.stream.write_all(&bytes)).await;
                    return Err(invalid(error));
                }
            }
        };
        let hello = accepted.client_hello();
        self.sni = hello.server_name().is_some();
        let speaks_ours = hello
            .alpn()
            .map(|mut offered| offered.any(|p| config.alpn_protocols.iter().any(|o| o == p)));
        if speaks_ours == Some(false) {
            let _ = timeout(ALERT_SEND, async {
                let _ = self.stream.write_all(&NO_APPLICATION_PROTOCOL_ALERT).await;
                let _ = self.stream.shutdown().await;
            })
            .await;
            return Err(invalid("no application protocol in common (ALPN)"));
        }
        Ok(())
    }

    /// Drives rustls until the handshake is complete and all it queued is sent.
    /// Application data that came with the client's Finished waits in `pending`.
    async fn complete_handshake(&mut self) -> io::Result<()> {
        loop {
            match self.step(&mut [], true, Job::None) {
                Step::Data(_) | Step::Encrypted(_) | Step::NoRoom => {}
                Step::Transmit => self.transmit().await?,
                Step::Writable if !self.conn.is_handshaking() => break,
                Step::NeedInput | Step::Writable => {
                    if self.fill().await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Step::Closed => return Err(io::ErrorKind::UnexpectedEof.into()),
                Step::Failed(e) => return Err(Box::pin(self.fail(e)).await),
            }
        }
        // The handshake's output buffer held a certificate chain: free it.
        self.out = Vec::new();
        self.park_if_empty();
        Ok(())
    }

    /// One call into rustls. `with_input`: let it process the received bytes (while
    /// writing it is not given them, so that it reports the write state instead of
    /// decrypting requests the reader has not asked for).
    fn step(&mut self, read_into: &mut [u8], with_input: bool, job: Job<'_>) -> Step {
        let Self {
            conn,
            incoming,
            used,
            pending,
            out,
            peer_closed,
            ..
        } = self;
        let input: &mut [u8] = if with_input && *used > 0 {
            &mut incoming[..*used]
        } else {
            &mut []
        };
        let status = conn.process_tls_records(input);
        let discard = status.discard;
        let step = settle(status.state, read_into, pending, out, peer_closed, job);
        if discard > 0 {
            incoming.copy_within(discard..*used, 0);
            *used -= discard;
        }
        step
    }

    /// Reads more of the peer's bytes into the receive buffer, growing it when full;
    /// 0 at the peer's end of TCP.
    async fn fill(&mut self) -> io::Result<usize> {
        self.incoming.unpark();
        if self.used == self.incoming.len() {
            let bound = if self.conn.is_handshaking() {
                MAX_HANDSHAKE_BYTES
            } else {
                MAX_RECORD_BYTES
            };
            if self.used >= bound {
                return Err(invalid("TLS input larger than a record"));
            }
            let grown = (self.incoming.len() * 2).clamp(RECEIVE_BUFFER, bound);
            self.incoming.resize(grown, 0);
        }
        let n = read_some(&self.stream, &mut self.incoming[self.used..]).await?;
        self.used += n;
        Ok(n)
    }

    /// Sends the records in `out` (no deadline of its own: callers bound it).
    async fn transmit(&mut self) -> io::Result<()> {
        let sent = self.stream.write_all(&self.out).await;
        self.out.clear();
        sent
    }

    /// Sends the alert rustls queued for `error`, if any, within [`ALERT_SEND`].
    async fn fail(&mut self, error: rustls::Error) -> io::Error {
        for _ in 0..4 {
            match self.step(&mut [], false, Job::None) {
                Step::Transmit => {
                    let _ = timeout(ALERT_SEND, self.transmit()).await;
                    break;
                }
                Step::Data(_) => {}
                _ => break,
            }
        }
        self.out = Vec::new();
        invalid(error)
    }

    /// Gives the receive buffer back to the pool when it holds nothing.
    fn park_if_empty(&mut self) {
        if self.used == 0 {
            self.incoming.park();
        }
    }

    /// Reads decrypted application data; `Ok(0)` once the peer has closed (with
    /// close_notify, or by ending TCP).
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pending_at < self.pending.len() {
                let n = (self.pending.len() - self.pending_at).min(buf.len());
                buf[..n].copy_from_slice(&self.pending[self.pending_at..self.pending_at + n]);
                self.pending_at += n;
                if self.pending_at == self.pending.len() {
                    // Held only for a while (the request that came with the
                    // handshake, a large record, pipelining): free the space.
                    self.pending = Vec::new();
                    self.pending_at = 0;
                }
                return Ok(n);
            }
            if self.peer_closed {
                return Ok(0);
            }
            match self.step(buf, true, Job::None) {
                Step::Data(0) | Step::Encrypted(_) | Step::NoRoom => {}
                Step::Data(n) => {
                    self.park_if_empty();
                    return Ok(n);
                }
                Step::Transmit => self.transmit().await?,
                Step::NeedInput | Step::Writable => {
                    if self.fill().await? == 0 {
                        self.park_if_empty();
                        return Ok(0);
                    }
                }
                Step::Closed => return Ok(0),
                Step::Failed(e) => return Err(Box::pin(self.fail(e)).await),
            }
        }
    }

    /// Whether a read would find something now: decrypted data, received bytes, or
    /// the peer's close. Otherwise waits for the socket, holding no buffer.
    pub async fn readable(&self) -> io::Result<()> {
        if self.pending_at < self.pending.len() || self.used > 0 || self.peer_closed {
            return Ok(());
        }
        wait_readable(&self.stream).await
    }

    /// Encrypts `plain` into records in `cipher` (scratch space the caller lends; it
    /// must hold more than [`RECORD_OVERHEAD`] bytes) and sends them, one write per
    /// `cipher`-full. No deadline of its own: callers bound it.
    pub async fn write_all(&mut self, mut plain: &[u8], cipher: &mut [u8]) -> io::Result<()> {
        let mut filled = 0;
        while !plain.is_empty() {
            let room = (cipher.len() - filled).saturating_sub(RECORD_OVERHEAD);
            let take = plain.len().min(MAX_FRAGMENT).min(room);
            let step = if take == 0 {
                Step::NoRoom
            } else {
                let job = Job::Encrypt(&plain[..take], &mut cipher[filled..]);
                self.step(&mut [], false, job)
            };
            match step {
                Step::Encrypted(n) => {
                    filled += n;
                    plain = &plain[take..];
                }
                Step::NoRoom if filled > 0 => {
                    self.stream.write_all(&cipher[..filled]).await?;
                    filled = 0;
                }
                Step::NoRoom => return Err(invalid("TLS record does not fit the send buffer")),
                Step::Data(_) | Step::Writable => {}
                Step::Transmit => {
                    // What rustls queued goes after the records already encrypted.
                    self.stream.write_all(&cipher[..filled]).await?;
                    filled = 0;
                    self.transmit().await?;
                }
                Step::NeedInput | Step::Closed => return Err(io::ErrorKind::BrokenPipe.into()),
                Step::Failed(e) => return Err(Box::pin(self.fail(e)).await),
            }
        }
        if filled > 0 {
            self.stream.write_all(&cipher[..filled]).await?;
        }
        Ok(())
    }

    /// Sends close_notify and ends our side of TCP (no deadline of its own).
    pub async fn close(&mut self) {
        let mut alert = [0u8; 64];
        for _ in 0..4 {
            match self.step(&mut [], false, Job::CloseNotify(&mut alert)) {
                Step::Encrypted(n) => {
                    let _ = self.stream.write_all(&alert[..n]).await;
                    break;
                }
                Step::Transmit => {
                    if self.transmit().await.is_err() {
                        break;
                    }
                }
                Step::Data(_) => {}
                _ => break,
            }
        }
        let _ = self.stream.shutdown().await;
    }

    /// Reads until the received bytes end at a record boundary, and returns all the
    /// application data decrypted so far (with what came during the handshake). After
    /// it the socket holds the rest of the stream from a record's first byte: what
    /// the kernel needs to take over. No deadline of its own: callers bound it.
    pub async fn drain_for_kernel(&mut self) -> io::Result<Vec<u8>> {
        let mut drained = std::mem::take(&mut self.pending);
        drained.drain(..self.pending_at);
        self.pending_at = 0;
        loop {
            match self.step(&mut [], true, Job::None) {
                Step::Data(_) => drained.append(&mut self.pending),
                Step::Encrypted(_) | Step::NoRoom => {}
                Step::Transmit => self.transmit().await?,
                Step::NeedInput | Step::Writable if self.used == 0 => break,
                Step::NeedInput | Step::Writable => {
                    // The buffer ends inside a record: read exactly its rest, so that
                    // nothing of the next record leaves the socket.
                    let missing = bytes_to_record_end(&self.incoming[..self.used]);
                    if self.used + missing > self.incoming.len() {
                        if self.used + missing > MAX_RECORD_BYTES * 2 {
                            return Err(invalid("TLS record larger than the protocol allows"));
                        }
                        self.incoming.resize(self.used + missing, 0);
                    }
                    let end = self.used + missing;
                    let n = read_some(&self.stream, &mut self.incoming[self.used..end]).await?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.used += n;
                }
                Step::Closed => break,
                Step::Failed(e) => return Err(Box::pin(self.fail(e)).await),
            }
            if self.peer_closed && self.used == 0 {
                break;
            }
        }
        self.park_if_empty();
        Ok(drained)
    }

    /// The socket and rustls' connection, for the hand-over to kernel TLS (after
    /// [`drain_for_kernel`](Self::drain_for_kernel)).
    pub fn into_parts(self) -> (TcpStream, UnbufferedServerConnection) {
        (self.stream, self.conn)
    }

    /// What was negotiated (version, suite, group, ALPN, resumption).
    pub fn negotiated(&self) -> &CommonState {
        &self.conn
    }

    /// Whether the ClientHello named a server (SNI).
    pub fn sni(&self) -> bool {
        self.sni
    }

    /// The socket's descriptor.
    pub fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }
}

/// How many more bytes complete the record that `buf` (a whole number of records, then
/// a partial one) ends inside. Only the header's length field is read.
fn bytes_to_record_end(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        let Some(header) = buf.get(at..at + 5) else {
            return at + 5 - buf.len();
        };
        let end = at + 5 + usize::from(u16::from_be_bytes([header[3], header[4]]));
        if end > buf.len() {
            return end - buf.len();
        }
        at = end;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::{Read as _, Write as _};

    use proptest::prelude::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::AsyncReadExt as _;

    use super::*;

    /// A server configuration with a fresh self-signed certificate (secret extraction
    /// on, as for kTLS), and a client configuration that trusts it and offers
    /// `http/1.1`.
    pub(crate) fn configs() -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert: CertificateDer<'static> = ck.cert.der().clone();
        let key = PrivateKeyDer::Pkcs8(ck.key_pair.serialize_der().into());
        let server = crate::tls::server_config(
            vec![cert.clone()],
            key,
            true,
            None,
            rustls::crypto::ring::Ticketer::new().unwrap(),
            rustls::server::ServerSessionMemoryCache::new(16),
        )
        .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        (server, Arc::new(client))
    }

    /// A blocking rustls client connection to `addr` (its handshake runs on first use).
    pub(crate) fn client_stream(
        config: Arc<rustls::ClientConfig>,
        addr: std::net::SocketAddr,
    ) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
        let conn =
            rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
                .unwrap();
        rustls::StreamOwned::new(conn, std::net::TcpStream::connect(addr).unwrap())
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect()
    }

    /// Reads (a record larger than the reader's buffer, a KeyUpdate between records,
    /// close_notify) and writes (a body through a ciphertext buffer smaller than a
    /// record) against rustls' own client, byte for byte.
    #[tokio::test]
    async fn reads_and_writes_survive_small_buffers_and_a_key_update() {
        let (server_config, client_config) = configs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let request = pattern(20_000, 7);
        let response = pattern(100_000, 9);
        let (req, resp) = (request.clone(), response.clone());
        let client = std::thread::spawn(move || {
            let mut tls = client_stream(client_config, addr);
            // One 16 KiB record and the rest, a KeyUpdate, then one more record.
            tls.write_all(&req[..19_000]).unwrap();
            tls.conn.refresh_traffic_keys().unwrap();
            tls.write_all(&req[19_000..]).unwrap();
            tls.flush().unwrap();
            let mut got = Vec::new();
            // The server ends its response with close_notify: a clean end.
            tls.read_to_end(&mut got).unwrap();
            assert!(got == resp, "response differs ({} bytes)", got.len());
            tls.conn.send_close_notify();
            tls.flush().unwrap();
        });
        let (sock, _) = listener.accept().await.unwrap();
        let mut session = handshake(sock, server_config).await.unwrap();
        assert!(session.sni());
        let mut got = Vec::new();
        let mut buf = [0u8; 1000];
        while got.len() < request.len() {
            session.readable().await.unwrap();
            let n = session.read(&mut buf).await.unwrap();
            assert!(n > 0, "early end after {} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == request, "request differs");
        let mut cipher = vec![0u8; 4096];
        session.write_all(&response, &mut cipher).await.unwrap();
        session.close().await;
        // The client's close_notify reads as the end.
        assert_eq!(session.read(&mut buf).await.unwrap(), 0);
        client.join().unwrap();
    }

    /// The hand-over's drain: a record cut short when the handshake ended is completed
    /// by reading exactly its rest, and the next record stays in the socket, whole.
    #[tokio::test]
    async fn the_drain_stops_at_a_record_boundary() {
        let (server_config, client_config) = configs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (next_tx, next_rx) = std::sync::mpsc::channel();
        let client = std::thread::spawn(move || {
            let mut tcp = std::net::TcpStream::connect(addr).unwrap();
            let mut c = rustls::ClientConnection::new(
                client_config,
                ServerName::try_from("localhost").unwrap(),
            )
            .unwrap();
            // Up to the server's Finished; ours is still queued when this ends.
            while c.is_handshaking() {
                if c.wants_write() {
                    c.write_tls(&mut tcp).unwrap();
                } else {
                    c.read_tls(&mut tcp).unwrap();
                    c.process_new_packets().unwrap();
                }
            }
            c.writer().write_all(b"first").unwrap();
            let mut flight = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut flight).unwrap();
            }
            c.writer().write_all(b"second").unwrap();
            let mut next = Vec::new();
            while c.wants_write() {
                c.write_tls(&mut next).unwrap();
            }
            // Our Finished and all but the last 10 bytes of the first record, then
            // the rest of it with the next record in one write.
            let cut = flight.len() - 10;
            tcp.write_all(&flight[..cut]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut tail = flight[cut..].to_vec();
            tail.extend_from_slice(&next);
            tcp.write_all(&tail).unwrap();
            next_tx.send(next).unwrap();
            // Hold the connection until the server is done with it.
            let _ = tcp.read(&mut [0u8; 1]);
        });
        let (sock, _) = listener.accept().await.unwrap();
        let mut session = handshake(sock, server_config).await.unwrap();
        assert!(
            session.used > 0,
            "the handshake should end inside the first record"
        );
        let drained = session.drain_for_kernel().await.unwrap();
        assert_eq!(drained, b"first");
        assert_eq!(session.used, 0);
        let (mut stream, conn) = (*session).into_parts();
        assert!(conn.dangerous_into_kernel_connection().is_ok());
        let next = next_rx.recv().unwrap();
        let mut left = vec![0u8; next.len()];
        stream.read_exact(&mut left).await.unwrap();
        assert_eq!(left, next, "the socket should hold the next record, whole");
        drop(stream);
        client.join().unwrap();
    }

    /// A client that offers ALPN but not `http/1.1` gets the plaintext alert.
    #[tokio::test]
    async fn a_client_without_our_protocol_gets_no_application_protocol() {
        let (server_config, client_config) = configs();
        let mut client_config = (*client_config).clone();
        client_config.alpn_protocols = vec![b"h2".to_vec()];
        let client_config = Arc::new(client_config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut tls = client_stream(client_config, addr);
            tls.write_all(b"GET / HTTP/1.1\r\n\r\n")
                .and_then(|()| tls.flush())
        });
        let (sock, _) = listener.accept().await.unwrap();
        let err = handshake(sock, server_config).await.err().unwrap();
        assert!(err.to_string().contains("ALPN"), "{err}");
        let client_err = client.join().unwrap().unwrap_err();
        assert!(
            client_err.to_string().contains("NoApplicationProtocol"),
            "{client_err}"
        );
    }

    #[test]
    fn the_rest_of_a_partial_record_is_counted_from_its_header() {
        // Nothing yet: a header's worth.
        assert_eq!(bytes_to_record_end(&[]), 5);
        // Part of a header.
        assert_eq!(bytes_to_record_end(&[23, 3]), 3);
        // A header announcing 10 bytes, 4 of them here.
        assert_eq!(bytes_to_record_end(&[23, 3, 3, 0, 10, 1, 2, 3, 4]), 6);
        // A whole record (2 bytes), then a partial header.
        assert_eq!(bytes_to_record_end(&[23, 3, 3, 0, 2, 9, 9, 23]), 4);
    }

    proptest! {
        /// Any bytes from the network: the answer is at least one byte, and never
        /// more than a header and a maximal fragment.
        #[test]
        fn record_end_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..600)) {
            let missing = bytes_to_record_end(&buf);
            prop_assert!((1..=5 + 0xffff).contains(&missing));
        }
    }

    #[test]
    fn plaintext_room_leaves_space_for_every_record() {
        for cipher in [4096, 16 * 1024, 64 * 1024, 1 << 20] {
            let plain = plaintext_room(cipher);
            let records = plain.div_ceil(MAX_FRAGMENT);
            // 29 bytes is the largest real overhead (TLS 1.2 AES-GCM).
            assert!(plain + records * 29 <= cipher, "{cipher}: {plain}");
            assert!(plain > cipher * 9 / 10, "{cipher}: {plain}");
        }
    }
}
