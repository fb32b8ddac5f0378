//! [`FaultOrigin`]: an in-process HTTP/1.1 origin on loopback for the cache tests of
//! an edge that fills from an origin. It serves `GET` and `HEAD` for objects a test
//! puts in it, keeps connections alive, counts what it was asked and what it sent,
//! and misbehaves per path on request ([`Fault`]): slow bodies, error statuses (a
//! fixed number of times, for retries), no answer at all, a reset or a clean close
//! in the middle of a body. It can also stop listening (connections are refused)
//! and resume on the same port.
//!
//! Paths are keyed without their query string (`/a.ts?x=1` is `/a.ts`); the full
//! request target is kept in [`FaultOrigin::request_log`].
//!
//! ```no_run
//! # async fn demo() {
//! use edge_tests::origin::{Fault, FaultOrigin, Object};
//! let origin = FaultOrigin::start().await;
//! origin.put("/seg1.ts", vec![0u8; 1000]);
//! origin.put_with("/live.m3u8", Object::new("#EXTM3U\n").cache_control("max-age=1"));
//! origin.set_fault("/seg2.ts", Fault::StatusTimes(503, 2));
//! // ... point the edge at origin.url(), then:
//! assert_eq!(origin.requests("/seg1.ts"), 1);
//! # }
//! ```

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Largest request head accepted (a larger one gets `431` and a close).
const MAX_HEAD: usize = 64 * 1024;
/// Body bytes written per write call when no fault asks for smaller chunks.
const WRITE_CHUNK: usize = 64 * 1024;
/// How long [`Fault::ResetMidBody`] waits after the half body before the reset, so
/// the bytes reach the client (a reset discards what is still queued).
const RESET_DELAY: Duration = Duration::from_millis(50);
/// How long [`Fault::ShortBody`] keeps reading after its FIN, so unread request
/// bytes do not turn the close into a reset.
const DRAIN_AFTER_FIN: Duration = Duration::from_secs(2);

/// An object the origin serves, with the caching headers it sends along.
#[derive(Clone, Debug)]
pub struct Object {
    /// The body.
    pub body: Bytes,
    /// `Content-Type` (default `application/octet-stream`).
    pub content_type: String,
    /// `Cache-Control`, if any.
    pub cache_control: Option<String>,
    /// `Expires`, if any (an HTTP date, or anything a test wants to send).
    pub expires: Option<String>,
    /// `ETag`, if any, as sent (quotes included: `"\"v1\""`). A `GET` whose
    /// `If-None-Match` names it is answered `304`.
    pub etag: Option<String>,
    /// `Last-Modified`, if any (an HTTP date). A `GET` with no `If-None-Match` whose
    /// `If-Modified-Since` is not older is answered `304`.
    pub last_modified: Option<String>,
    /// Further headers, sent as given (e.g. `Vary`, `Age`).
    pub extra_headers: Vec<(String, String)>,
}

impl Object {
    /// An object with `body`, type `application/octet-stream` and no caching headers.
    pub fn new(body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            content_type: "application/octet-stream".into(),
            cache_control: None,
            expires: None,
            etag: None,
            last_modified: None,
            extra_headers: Vec::new(),
        }
    }

    /// Sets `Content-Type`.
    pub fn content_type(mut self, value: impl Into<String>) -> Self {
        self.content_type = value.into();
        self
    }

    /// Sets `Cache-Control`.
    pub fn cache_control(mut self, value: impl Into<String>) -> Self {
        self.cache_control = Some(value.into());
        self
    }

    /// Sets `Expires`.
    pub fn expires(mut self, value: impl Into<String>) -> Self {
        self.expires = Some(value.into());
        self
    }

    /// Sets `ETag` (give the quotes: `"\"v1\""`).
    pub fn etag(mut self, value: impl Into<String>) -> Self {
        self.etag = Some(value.into());
        self
    }

    /// Sets `Last-Modified`.
    pub fn last_modified(mut self, value: impl Into<String>) -> Self {
        self.last_modified = Some(value.into());
        self
    }

    /// Adds a header sent as given.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.extra_headers.push((name.into(), value.into()));
        self
    }
}

/// How the origin misbehaves for one path ([`FaultOrigin::set_fault`]). Faults on the
/// body ([`Fault::Slow`], [`Fault::ResetMidBody`], [`Fault::ShortBody`]) apply to
/// `GET`s of an existing object; a `HEAD` gets its headers normally.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Fault {
    /// Behave.
    #[default]
    None,
    /// Headers (with `Content-Length`) at once, then the body in `chunk`-byte writes
    /// with `delay` between them.
    Slow {
        /// Bytes per write (0 is taken as 1).
        chunk: usize,
        /// Pause between two writes.
        delay: Duration,
    },
    /// Every request gets this status with a small `text/plain` body (the
    /// connection stays usable).
    Status(u16),
    /// The first `n` requests after [`FaultOrigin::set_fault`] get the status, later
    /// ones the object (or `404`): for retries.
    StatusTimes(u16, usize),
    /// Read the request and never answer; the connection stays open until the origin
    /// is dropped or [`FaultOrigin::close_connections`] is called.
    TimeoutBeforeHeaders,
    /// Headers and the first half of the body, then a TCP reset (`SO_LINGER` 0 and
    /// close), after a short pause so the half body is delivered first.
    ResetMidBody,
    /// Headers with the full `Content-Length` N, N/2 body bytes, then a clean close
    /// (FIN).
    ShortBody,
}

/// One request as the origin received it ([`FaultOrigin::request_log`]).
#[derive(Clone, Debug)]
pub struct RecordedRequest {
    /// Method (`GET`, `HEAD`, ...).
    pub method: String,
    /// The request target as sent (path and query).
    pub target: String,
    /// Headers, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// When the request head was complete.
    pub at: Instant,
    /// Which connection carried it: connections are numbered from 0 in accept order,
    /// so equal numbers prove a reused (kept-alive) connection.
    pub connection: usize,
}

impl RecordedRequest {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the origin knows about one path.
#[derive(Default)]
struct PathState {
    object: Option<Object>,
    fault: Fault,
    /// Requests since the fault was set ([`Fault::StatusTimes`]).
    fault_hits: usize,
    requests: usize,
    body_bytes: u64,
    finished_at: Option<Instant>,
}

/// State shared by the handle, the accept loop and the connections.
struct Shared {
    paths: Mutex<HashMap<String, PathState>>,
    log: Mutex<Vec<RecordedRequest>>,
    total: AtomicUsize,
    accepted: AtomicUsize,
    open: AtomicUsize,
    /// Cancelled on drop; parent of every other token.
    shutdown: CancellationToken,
    /// The connections' token; [`FaultOrigin::close_connections`] cancels and replaces it.
    conns: Mutex<CancellationToken>,
}

impl Shared {
    fn with_path<R>(&self, key: &str, f: impl FnOnce(&mut PathState) -> R) -> R {
        let mut paths = self.paths.lock().unwrap();
        f(paths.entry(key.to_string()).or_default())
    }

    fn peek_path<R>(&self, key: &str, f: impl FnOnce(&PathState) -> R) -> Option<R> {
        self.paths.lock().unwrap().get(key).map(f)
    }
}

/// The running accept loop: its stop token and task.
struct Acceptor {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// An HTTP/1.1 origin on `127.0.0.1` with per-path faults and counters; it shuts
/// down (every connection closed, the port released) on drop.
pub struct FaultOrigin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Mutex<Option<Acceptor>>,
}

impl FaultOrigin {
    /// Starts an origin on an ephemeral loopback port (inside a tokio runtime).
    pub async fn start() -> FaultOrigin {
        let listener = bind("127.0.0.1:0".parse().unwrap()).expect("bind the origin");
        let addr = listener.local_addr().expect("origin address");
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            paths: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            total: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            open: AtomicUsize::new(0),
            conns: Mutex::new(shutdown.child_token()),
            shutdown,
        });
        let acceptor = spawn_acceptor(&shared, listener);
        FaultOrigin {
            addr,
            shared,
            acceptor: Mutex::new(Some(acceptor)),
        }
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `body` at `path` as `application/octet-stream` with no caching headers
    /// (replacing any object there; the path's fault and counters stay).
    pub fn put(&self, path: &str, body: impl Into<Bytes>) {
        self.put_with(path, Object::new(body));
    }

    /// Serves `object` at `path` (replacing any object there; the path's fault and
    /// counters stay).
    pub fn put_with(&self, path: &str, object: Object) {
        self.shared.with_path(path, |p| p.object = Some(object));
    }

    /// Removes the object at `path`: it is `404` from now on.
    pub fn remove(&self, path: &str) {
        self.shared.with_path(path, |p| p.object = None);
    }

    /// Sets how the origin misbehaves for `path` ([`Fault::None`] to behave again);
    /// restarts the count of [`Fault::StatusTimes`]. A path needs no object for a
    /// fault.
    pub fn set_fault(&self, path: &str, fault: Fault) {
        self.shared.with_path(path, |p| {
            p.fault = fault;
            p.fault_hits = 0;
        });
    }

    /// Closes the listening socket, so new connections are refused (connections
    /// already open stay; see [`FaultOrigin::close_connections`]). Returns once the
    /// socket is closed. Does nothing if not listening.
    pub async fn stop_listening(&self) {
        let acceptor = self.acceptor.lock().unwrap().take();
        if let Some(a) = acceptor {
            a.stop.cancel();
            let _ = a.task.await;
        }
    }

    /// Listens again on the same port after [`FaultOrigin::stop_listening`] (does
    /// nothing if listening); fails if the port was taken meanwhile.
    pub async fn resume(&self) -> io::Result<()> {
        let mut acceptor = self.acceptor.lock().unwrap();
        if acceptor.is_none() {
            let listener = bind(self.addr)?;
            *acceptor = Some(spawn_acceptor(&self.shared, listener));
        }
        Ok(())
    }

    /// Closes every open connection now, including ones in the middle of a response
    /// or held by [`Fault::TimeoutBeforeHeaders`] (a plain close: FIN, or a reset
    /// where request bytes were left unread). Later connections are not affected.
    pub fn close_connections(&self) {
        let mut conns = self.shared.conns.lock().unwrap();
        conns.cancel();
        *conns = self.shared.shutdown.child_token();
    }

    /// Requests received for `path` (any method, any status, `HEAD` included).
    pub fn requests(&self, path: &str) -> usize {
        self.shared.peek_path(path, |p| p.requests).unwrap_or(0)
    }

    /// Requests received in all.
    pub fn total_requests(&self) -> usize {
        self.shared.total.load(Ordering::SeqCst)
    }

    /// Body bytes of `path`'s object written to sockets so far (error bodies not
    /// counted), summed over its requests.
    pub fn body_bytes_sent(&self, path: &str) -> u64 {
        self.shared.peek_path(path, |p| p.body_bytes).unwrap_or(0)
    }

    /// When the origin last finished writing the whole body of `path`'s object (the
    /// last write returned); bodies cut short by a fault do not count. Compare with
    /// when a client saw its first body bytes to prove streaming.
    pub fn finished_at(&self, path: &str) -> Option<Instant> {
        self.shared.peek_path(path, |p| p.finished_at).flatten()
    }

    /// Connections accepted so far.
    pub fn connections_accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// Every request received so far, in order.
    pub fn request_log(&self) -> Vec<RecordedRequest> {
        self.shared.log.lock().unwrap().clone()
    }

    /// Zeroes every counter (requests, body bytes, finish times, connections
    /// accepted, the request log); objects and faults stay.
    pub fn reset_counters(&self) {
        for p in self.shared.paths.lock().unwrap().values_mut() {
            p.requests = 0;
            p.body_bytes = 0;
            p.finished_at = None;
        }
        self.shared.log.lock().unwrap().clear();
        self.shared.total.store(0, Ordering::SeqCst);
        self.shared.accepted.store(0, Ordering::SeqCst);
    }
}

impl Drop for FaultOrigin {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// A listening socket with `SO_REUSEADDR`, so [`FaultOrigin::resume`] can take the
/// port back while closed connections linger in `TIME_WAIT`.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

fn spawn_acceptor(shared: &Arc<Shared>, listener: TcpListener) -> Acceptor {
    let stop = shared.shutdown.child_token();
    let task = tokio::spawn(accept_loop(shared.clone(), listener, stop.clone()));
    Acceptor { stop, task }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => r,
        };
        let Ok((stream, _)) = accepted else {
            // EMFILE and the like: do not spin.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let id = shared.accepted.fetch_add(1, Ordering::SeqCst);
        let token = shared.conns.lock().unwrap().clone();
        let shared = shared.clone();
        shared.open.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = serve(&shared, stream, id) => {}
            }
            shared.open.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// A parsed request head.
struct Request {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    /// Whether the connection stays open after the response.
    keep_alive: bool,
    /// Request body bytes that follow the head (skipped).
    content_length: usize,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Why no request came.
enum ReadError {
    /// The peer closed or the socket failed.
    Closed,
    /// Bytes that are not an HTTP/1.x request head, or too many of them: answered
    /// with this status before closing.
    Bad(u16),
}

/// Reads one request head from `stream`, keeping bytes past it in `buf`.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Request, ReadError> {
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let connection = headers
                        .iter()
                        .filter(|(k, _)| k == "connection")
                        .map(|(_, v)| v.to_ascii_lowercase())
                        .collect::<Vec<_>>()
                        .join(",");
                    let keep_alive = if req.version == Some(1) {
                        !connection.contains("close")
                    } else {
                        connection.contains("keep-alive")
                    };
                    let content_length = match headers.iter().find(|(k, _)| k == "content-length") {
                        Some((_, v)) => v.trim().parse().map_err(|_| ReadError::Bad(400))?,
                        None => 0,
                    };
                    if headers.iter().any(|(k, _)| k == "transfer-encoding") {
                        // A chunked request body: not something a GET sends.
                        return Err(ReadError::Bad(501));
                    }
                    let request = Request {
                        method: req.method.unwrap_or_default().to_string(),
                        target: req.path.unwrap_or_default().to_string(),
                        headers,
                        keep_alive,
                        content_length,
                    };
                    buf.drain(..n);
                    return Ok(request);
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(ReadError::Bad(431))
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return Err(ReadError::Bad(400)),
            }
        }
        if read_more(stream, buf).await == 0 {
            return Err(ReadError::Closed);
        }
    }
}

/// Appends what one read returns to `buf`; 0 at EOF or on an error.
async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let old = buf.len();
    buf.resize(old + 16 * 1024, 0);
    let n = stream.read(&mut buf[old..]).await.unwrap_or(0);
    buf.truncate(old + n);
    n
}

/// The path a request target names: without a query, and without scheme and
/// authority in the absolute form.
fn path_key(target: &str) -> &str {
    let path = match target
        .strip_prefix("http://")
        .or(target.strip_prefix("https://"))
    {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    path.split(['?', '#']).next().unwrap_or(path)
}

/// What to answer one request with.
enum Plan {
    Status(u16),
    NotModified(Object),
    Object(Object, Fault),
    Hang,
}

/// Whether a conditional `GET` for `object` is answered `304`.
fn not_modified(req: &Request, object: &Object) -> bool {
    if let Some(inm) = req.header("if-none-match") {
        let Some(etag) = &object.etag else {
            return false;
        };
        let bare = |t: &str| t.trim().trim_start_matches("W/").to_string();
        return inm
            .split(',')
            .any(|t| t.trim() == "*" || bare(t) == bare(etag));
    }
    match (req.header("if-modified-since"), &object.last_modified) {
        (Some(ims), Some(lm)) => match (
            httpdate::parse_http_date(ims),
            httpdate::parse_http_date(lm),
        ) {
            (Ok(ims), Ok(lm)) => lm <= ims,
            _ => false,
        },
        _ => false,
    }
}

/// Serves requests on one connection until it closes or a fault ends it.
async fn serve(shared: &Shared, mut stream: TcpStream, id: usize) {
    let _ = stream.set_nodelay(true);
    let mut buf = Vec::new();
    loop {
        let req = match read_request(&mut stream, &mut buf).await {
            Ok(r) => r,
            Err(ReadError::Closed) => return,
            Err(ReadError::Bad(status)) => {
                let _ = write_status(&mut stream, status, false, false).await;
                let _ = stream.shutdown().await;
                return;
            }
        };
        // Skip a request body (a GET should have none).
        while buf.len() < req.content_length {
            if read_more(&mut stream, &mut buf).await == 0 {
                return;
            }
        }
        buf.drain(..req.content_length);

        let key = path_key(&req.target).to_string();
        shared.total.fetch_add(1, Ordering::SeqCst);
        shared.log.lock().unwrap().push(RecordedRequest {
            method: req.method.clone(),
            target: req.target.clone(),
            headers: req.headers.clone(),
            at: Instant::now(),
            connection: id,
        });
        let head_only = req.method == "HEAD";
        let plan = shared.with_path(&key, |p| {
            p.requests += 1;
            let fault = match p.fault.clone() {
                Fault::TimeoutBeforeHeaders => return Plan::Hang,
                Fault::Status(code) => return Plan::Status(code),
                Fault::StatusTimes(code, n) => {
                    p.fault_hits += 1;
                    if p.fault_hits <= n {
                        return Plan::Status(code);
                    }
                    Fault::None
                }
                f => f,
            };
            if req.method != "GET" && !head_only {
                return Plan::Status(405);
            }
            match &p.object {
                None => Plan::Status(404),
                Some(o) if not_modified(&req, o) => Plan::NotModified(o.clone()),
                Some(o) => Plan::Object(o.clone(), if head_only { Fault::None } else { fault }),
            }
        });
        let keep_alive = req.keep_alive;
        let result = match plan {
            Plan::Hang => {
                std::future::pending::<()>().await;
                return;
            }
            Plan::Status(code) => write_status(&mut stream, code, head_only, keep_alive).await,
            Plan::NotModified(o) => {
                let head = response_head(304, None, Some(&o), keep_alive);
                stream.write_all(&head).await
            }
            Plan::Object(o, fault) => {
                match send_object(shared, &key, &mut stream, &o, fault, head_only, keep_alive).await
                {
                    Ok(Sent::Whole) => Ok(()),
                    Ok(Sent::Cut) | Err(_) => return,
                }
            }
        };
        if result.is_err() {
            return;
        }
        if !keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// How a body went out.
enum Sent {
    /// All of it; the connection can go on.
    Whole,
    /// A fault cut it, and the connection is closed.
    Cut,
}

async fn send_object(
    shared: &Shared,
    key: &str,
    stream: &mut TcpStream,
    object: &Object,
    fault: Fault,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<Sent> {
    let len = object.body.len();
    let head = response_head(200, Some(len), Some(object), keep_alive);
    stream.write_all(&head).await?;
    if head_only {
        return Ok(Sent::Whole);
    }
    let (chunk, delay, cut_at) = match fault {
        Fault::Slow { chunk, delay } => (chunk.max(1), delay, len),
        Fault::ResetMidBody | Fault::ShortBody => (WRITE_CHUNK, Duration::ZERO, len / 2),
        _ => (WRITE_CHUNK, Duration::ZERO, len),
    };
    let mut sent = 0;
    while sent < cut_at {
        if sent > 0 && !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let end = (sent + chunk).min(cut_at);
        stream.write_all(&object.body[sent..end]).await?;
        let n = (end - sent) as u64;
        shared.with_path(key, |p| p.body_bytes += n);
        sent = end;
    }
    match fault {
        Fault::ResetMidBody => {
            tokio::time::sleep(RESET_DELAY).await;
            stream.set_zero_linger()?;
            Ok(Sent::Cut)
        }
        Fault::ShortBody => {
            stream.shutdown().await?;
            // Read until the client closes, so the close stays a FIN.
            let mut sink = [0u8; 4096];
            let _ = tokio::time::timeout(DRAIN_AFTER_FIN, async {
                while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            Ok(Sent::Cut)
        }
        _ => {
            let now = Instant::now();
            shared.with_path(key, |p| p.finished_at = Some(now));
            Ok(Sent::Whole)
        }
    }
}

/// A status with a small `text/plain` body (no body for `HEAD`).
async fn write_status(
    stream: &mut TcpStream,
    status: u16,
    head_only: bool,
    keep_alive: bool,
) -> io::Result<()> {
    let body = format!("origin: {status} {}\n", reason(status));
    let mut out = response_head(status, Some(body.len()), None, keep_alive);
    out.extend_from_slice(b"");
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    stream.write_all(&out).await
}

/// A response head: status line, `Date`, `Content-Length` (when given), the object's
/// headers (or `Content-Type: text/plain`), `Connection: close` when closing.
fn response_head(
    status: u16,
    content_length: Option<usize>,
    object: Option<&Object>,
    keep_alive: bool,
) -> Vec<u8> {
    use std::fmt::Write;
    let mut h = format!(
        "HTTP/1.1 {status} {}\r\nDate: {}\r\nServer: fault-origin\r\n",
        reason(status),
        httpdate::fmt_http_date(SystemTime::now())
    );
    if let Some(n) = content_length {
        let _ = write!(h, "Content-Length: {n}\r\n");
    }
    match object {
        Some(o) => {
            let optional = [
                ("Cache-Control", &o.cache_control),
                ("Expires", &o.expires),
                ("ETag", &o.etag),
                ("Last-Modified", &o.last_modified),
            ];
            if status != 304 {
                let _ = write!(h, "Content-Type: {}\r\n", o.content_type);
            }
            for (name, value) in optional {
                if let Some(v) = value {
                    let _ = write!(h, "{name}: {v}\r\n");
                }
            }
            for (name, value) in &o.extra_headers {
                let _ = write!(h, "{name}: {value}\r\n");
            }
        }
        None => h.push_str("Content-Type: text/plain\r\n"),
    }
    if !keep_alive {
        h.push_str("Connection: close\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{pattern, Client};

    /// What a raw client saw of one response: the head, the body bytes, and how the
    /// stream ended after them.
    struct Raw {
        head: String,
        body: Vec<u8>,
        first_body_at: Option<Instant>,
        end: io::Result<()>,
    }

    impl Raw {
        fn content_length(&self) -> usize {
            self.head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .expect("a Content-Length")
        }
    }

    /// Sends `GET path` with `Connection: close` and reads until EOF or an error.
    async fn raw_get(addr: SocketAddr, path: &str) -> Raw {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: o\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        let mut head_len = None;
        let mut first_body_at = None;
        let mut b = vec![0u8; 64 * 1024];
        let end = loop {
            match s.read(&mut b).await {
                Ok(0) => break Ok(()),
                Ok(n) => got.extend_from_slice(&b[..n]),
                Err(e) => break Err(e),
            }
            if head_len.is_none() {
                head_len = got.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
            }
            if let Some(h) = head_len {
                if got.len() > h && first_body_at.is_none() {
                    first_body_at = Some(Instant::now());
                }
            }
        };
        let h = head_len.expect("a complete head");
        Raw {
            head: String::from_utf8_lossy(&got[..h]).into_owned(),
            body: got[h..].to_vec(),
            first_body_at,
            end,
        }
    }

    #[tokio::test]
    async fn get_head_404_keep_alive_and_counters() {
        let origin = FaultOrigin::start().await;
        assert_eq!(
            origin.url(),
            format!("http://127.0.0.1:{}", origin.addr().port())
        );
        let data = pattern(200_000, 7);
        origin.put("/a.bin", data.clone());
        origin.put_with(
            "/p.m3u8",
            Object::new("#EXTM3U\n")
                .content_type("application/vnd.apple.mpegurl")
                .cache_control("max-age=2")
                .etag("\"v1\"")
                .expires("Thu, 01 Jan 2037 00:00:00 GMT")
                .header("Vary", "Accept-Encoding"),
        );
        let mut c = Client::new(TcpStream::connect(origin.addr()).await.unwrap());
        let r = c.get("/a.bin", "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body, data);
        assert_eq!(r.header("content-length"), Some("200000"));
        assert!(r.header("date").is_some());
        let r = c.get("/a.bin?x=1", "").await;
        assert_eq!((r.status, r.body.len()), (200, data.len()));

        let r = c.get("/p.m3u8", "").await;
        assert_eq!(r.body, b"#EXTM3U\n");
        assert_eq!(
            r.header("content-type"),
            Some("application/vnd.apple.mpegurl")
        );
        assert_eq!(r.header("cache-control"), Some("max-age=2"));
        assert_eq!(r.header("etag"), Some("\"v1\""));
        assert_eq!(r.header("expires"), Some("Thu, 01 Jan 2037 00:00:00 GMT"));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        let r = c.get("/p.m3u8", "If-None-Match: \"v1\"\r\n").await;
        assert_eq!((r.status, r.body.len()), (304, 0));
        assert_eq!(r.header("etag"), Some("\"v1\""));

        c.send(b"HEAD /a.bin HTTP/1.1\r\nHost: o\r\n\r\n").await;
        let r = c.read_response(true).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("200000"));

        let r = c.get("/missing", "").await;
        assert_eq!(r.status, 404);
        c.send(b"POST /a.bin HTTP/1.1\r\nHost: o\r\nContent-Length: 3\r\n\r\nabc")
            .await;
        assert_eq!(c.read_response(false).await.unwrap().status, 405);
        let r = c.get("/a.bin", "Connection: close\r\n").await;
        assert_eq!(r.header("connection"), Some("close"));
        assert!(c.is_closed().await);

        assert_eq!(origin.requests("/a.bin"), 5);
        assert_eq!(origin.requests("/p.m3u8"), 2);
        assert_eq!(origin.requests("/missing"), 1);
        assert_eq!(origin.requests("/never"), 0);
        assert_eq!(origin.total_requests(), 8);
        assert_eq!(origin.body_bytes_sent("/a.bin"), 3 * data.len() as u64);
        assert_eq!(origin.body_bytes_sent("/missing"), 0);
        assert!(origin.finished_at("/a.bin").is_some());
        assert!(origin.finished_at("/missing").is_none());
        assert_eq!(origin.connections_accepted(), 1);
        let log = origin.request_log();
        assert_eq!(log.len(), 8);
        assert_eq!(log[1].target, "/a.bin?x=1");
        assert_eq!(log[3].header("If-None-Match"), Some("\"v1\""));
        assert!(log.iter().all(|r| r.connection == 0));

        origin.reset_counters();
        assert_eq!((origin.total_requests(), origin.requests("/a.bin")), (0, 0));
        origin.remove("/a.bin");
        assert_eq!(
            raw_get(origin.addr(), "/a.bin").await.head.lines().next(),
            Some("HTTP/1.1 404 Not Found")
        );
    }

    #[tokio::test]
    async fn slow_body_arrives_before_the_origin_finishes() {
        let origin = FaultOrigin::start().await;
        let data = pattern(10_000, 3);
        origin.put("/slow", data.clone());
        origin.set_fault(
            "/slow",
            Fault::Slow {
                chunk: 1000,
                delay: Duration::from_millis(20),
            },
        );
        let t0 = Instant::now();
        let r = raw_get(origin.addr(), "/slow").await;
        assert!(r.end.is_ok());
        assert_eq!(r.body, data);
        assert!(
            t0.elapsed() >= Duration::from_millis(180),
            "{:?}",
            t0.elapsed()
        );
        let first = r.first_body_at.unwrap();
        let finished = origin.finished_at("/slow").unwrap();
        assert!(
            finished.duration_since(first) >= Duration::from_millis(150),
            "first body bytes {:?} before the end",
            finished.duration_since(first)
        );
        assert_eq!(origin.body_bytes_sent("/slow"), 10_000);
    }

    #[tokio::test]
    async fn short_body_closes_cleanly_after_half() {
        let origin = FaultOrigin::start().await;
        origin.put("/short", pattern(100_001, 5));
        origin.set_fault("/short", Fault::ShortBody);
        let r = raw_get(origin.addr(), "/short").await;
        assert_eq!(r.content_length(), 100_001);
        assert_eq!(r.body, pattern(100_001, 5)[..50_000]);
        assert!(r.end.is_ok(), "a FIN, not {:?}", r.end);
        assert_eq!(origin.body_bytes_sent("/short"), 50_000);
        assert!(origin.finished_at("/short").is_none());
    }

    #[tokio::test]
    async fn reset_mid_body_resets_after_half() {
        let origin = FaultOrigin::start().await;
        let data = pattern(1_000_000, 9);
        origin.put("/reset", data.clone());
        origin.set_fault("/reset", Fault::ResetMidBody);
        let r = raw_get(origin.addr(), "/reset").await;
        assert_eq!(r.content_length(), 1_000_000);
        let err = r.end.expect_err("a reset");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        // The pause before the reset lets the half body through.
        assert_eq!(r.body, data[..500_000]);
        assert_eq!(origin.body_bytes_sent("/reset"), 500_000);
        assert!(origin.finished_at("/reset").is_none());
    }

    #[tokio::test]
    async fn status_faults() {
        let origin = FaultOrigin::start().await;
        origin.put("/retry", "ok");
        origin.set_fault("/retry", Fault::StatusTimes(503, 2));
        origin.set_fault("/broken", Fault::Status(500));
        let mut c = Client::new(TcpStream::connect(origin.addr()).await.unwrap());
        let mut got = Vec::new();
        for path in ["/retry", "/retry", "/retry", "/retry", "/broken", "/broken"] {
            let r = c.get(path, "").await;
            got.push((r.status, String::from_utf8_lossy(&r.body).into_owned()));
        }
        let want = |s: u16, b: &str| (s, b.to_string());
        assert_eq!(
            got,
            [
                want(503, "origin: 503 Service Unavailable\n"),
                want(503, "origin: 503 Service Unavailable\n"),
                want(200, "ok"),
                want(200, "ok"),
                want(500, "origin: 500 Internal Server Error\n"),
                want(500, "origin: 500 Internal Server Error\n"),
            ]
        );
        assert_eq!(origin.requests("/retry"), 4);
        assert_eq!(origin.body_bytes_sent("/retry"), 4);
        // Setting the fault again restarts its count.
        origin.set_fault("/retry", Fault::StatusTimes(502, 1));
        assert_eq!(c.get("/retry", "").await.status, 502);
        assert_eq!(c.get("/retry", "").await.status, 200);
        assert_eq!(origin.connections_accepted(), 1);
    }

    #[tokio::test]
    async fn timeout_before_headers_holds_the_connection_until_drop() {
        let origin = FaultOrigin::start().await;
        origin.put("/hang", "x");
        origin.set_fault("/hang", Fault::TimeoutBeforeHeaders);
        let mut s = TcpStream::connect(origin.addr()).await.unwrap();
        s.write_all(b"GET /hang HTTP/1.1\r\nHost: o\r\n\r\n")
            .await
            .unwrap();
        let mut b = [0u8; 16];
        let read = tokio::time::timeout(Duration::from_millis(300), s.read(&mut b)).await;
        assert!(read.is_err(), "no answer and no close: {read:?}");
        assert_eq!(origin.requests("/hang"), 1);
        assert_eq!(origin.open_connections(), 1);
        drop(origin);
        let read = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
        assert!(matches!(read, Ok(Ok(0))), "closed on drop: {read:?}");
    }

    #[tokio::test]
    async fn close_connections_ends_open_ones() {
        let origin = FaultOrigin::start().await;
        origin.put("/a", "a");
        let mut c = Client::new(TcpStream::connect(origin.addr()).await.unwrap());
        assert_eq!(c.get("/a", "").await.status, 200);
        origin.close_connections();
        assert!(c.is_closed().await);
        let mut c = Client::new(TcpStream::connect(origin.addr()).await.unwrap());
        assert_eq!(c.get("/a", "").await.status, 200);
        assert_eq!(origin.connections_accepted(), 2);
    }

    #[tokio::test]
    async fn stop_listening_refuses_and_resume_takes_the_port_back() {
        let origin = FaultOrigin::start().await;
        origin.put("/a", "a");
        // A closed connection leaves the port in TIME_WAIT on one side.
        assert_eq!(raw_get(origin.addr(), "/a").await.body, b"a");
        origin.stop_listening().await;
        let err = TcpStream::connect(origin.addr())
            .await
            .expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        origin.stop_listening().await;
        origin.resume().await.unwrap();
        origin.resume().await.unwrap();
        assert_eq!(raw_get(origin.addr(), "/a").await.body, b"a");
        assert_eq!(origin.requests("/a"), 2);
    }

    #[test]
    fn path_keys() {
        assert_eq!(path_key("/a/b.ts?x=1"), "/a/b.ts");
        assert_eq!(path_key("http://h:1/a?q"), "/a");
        assert_eq!(path_key("http://h"), "/");
        assert_eq!(path_key("/plain"), "/plain");
    }
}
