//! One client connection after accept (and after the TLS handshake, if any): the
//! HTTP/1.1 keep-alive loop over a [`Transport`], with the head-size, header-read,
//! idle and request-count limits.
//!
//! Per connection it keeps one read buffer (grown on demand up to
//! `limits.max_head_bytes`) and one [`Scratch`]; nothing is allocated per request.

use std::sync::Arc;

use tokio::io::AsyncWriteExt as _;
use tokio::time::{timeout_at, Instant};
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::handler::{self, Body, Scratch, Site};
use crate::http::request::{self, HeadLimits, Method};
use crate::http::HttpError;
use crate::metrics::{CloseReason, Metrics};
use crate::transport::{KtlsTransport, Transport};

/// Largest request body we read and discard (GET with a body is legal but useless);
/// larger gets 413 and a close.
const MAX_DISCARDED_BODY: u64 = 64 * 1024;
/// Initial read buffer size; it doubles up to `limits.max_head_bytes`.
const INITIAL_READ_BUFFER: usize = 2048;

/// What every connection task shares.
pub struct ConnShared {
    /// Site (root, CORS).
    pub site: Site,
    /// Limits.
    pub limits: Limits,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Serves requests on `t` until the connection should end; returns why it ended.
/// The caller has already counted the connection as open and closes nothing: the
/// transport is closed gracefully here where the server chose to end it.
pub async fn serve<T: Transport>(
    t: &mut T,
    shared: &ConnShared,
    shutdown: &CancellationToken,
) -> CloseReason {
    let limits = &shared.limits;
    let max_head = limits.max_head_bytes.get();
    let head_limits = HeadLimits {
        max_headers: limits.max_headers.get(),
        max_head_bytes: max_head,
        max_target_bytes: limits.max_request_target_bytes.get(),
    };
    let mut buf = vec![0u8; INITIAL_READ_BUFFER.min(max_head)];
    let mut filled = 0usize;
    let mut scratch = Scratch::default();
    let mut served: u32 = 0;

    loop {
        // ---- read one head
        let mut head_deadline: Option<Instant> =
            (filled > 0).then(|| Instant::now() + limits.header_read_timeout);
        let head = loop {
            if filled > 0 {
                match request::parse(&buf[..filled], &head_limits) {
                    Ok(Some(h)) => break h,
                    Ok(None) => {}
                    Err(e) => return reject(t, shared, &mut scratch, e).await,
                }
                if filled == buf.len() {
                    // parse_head reports HeadTooLarge once max_head bytes are buffered.
                    buf.resize((buf.len() * 2).min(max_head), 0);
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
            return reject(t, shared, &mut scratch, HttpError::BodyTooLarge).await;
        }
        if head.content_length > 0 && head.expect_continue && head.minor_version >= 1 {
            // RFC 9110 10.1.1: the client waits for this before sending the body.
            if t.write_head(CONTINUE, false).await.is_err() {
                return CloseReason::IoError;
            }
        }

        // ---- answer
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
                    tokio::select! {
                        _ = shutdown.cancelled() => may_hold = false,
                        _ = tokio::time::sleep_until(wake) => may_hold = Instant::now() < limit,
                    }
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
        let body_in_buf = (filled - head.head_len).min(head.content_length as usize);
        let consumed = head.head_len + body_in_buf;
        let mut body_left = head.content_length - body_in_buf as u64;
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;

        if let Err(reason) = send(t, &shared.metrics, &mut scratch, plan.status, plan.body).await {
            return reason;
        }
        if plan.close {
            t.close().await;
            // The handler closes only when told to (client wish, request cap,
            // shutdown), on a 5xx, or when the kTLS byte budget is spent.
            return if !wants_more {
                CloseReason::Requested
            } else if !keep_alive {
                CloseReason::Shutdown
            } else if plan.status >= 500 {
                CloseReason::IoError
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

/// Sends a head and its body, counting the response.
async fn send<T: Transport>(
    t: &mut T,
    metrics: &Metrics,
    scratch: &mut Scratch,
    status: u16,
    body: Body,
) -> Result<(), CloseReason> {
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
        Body::File { file, offset, len } => match t.write_head(&scratch.head, true).await {
            Ok(()) => t.send_file(file, *offset, *len).await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, status, "send failed");
        if e.kind() == std::io::ErrorKind::TimedOut {
            // Cut off a slow reader at once, rather than let its send buffer drain
            // to it for as long again.
            t.reset_on_drop();
            return Err(CloseReason::SendTimeout);
        }
        return Err(CloseReason::IoError);
    }
    match body {
        Body::File { len, .. } => metrics.response(status, Some(t.body_path()), len),
        _ => metrics.response(status, None, 0),
    }
    Ok(())
}

/// Answers a framing error and closes.
async fn reject<T: Transport>(
    t: &mut T,
    shared: &ConnShared,
    scratch: &mut Scratch,
    err: HttpError,
) -> CloseReason {
    let plan = handler::error_response(err, Method::Get, None, &shared.site, scratch, false, None);
    if send(t, &shared.metrics, scratch, plan.status, plan.body)
        .await
        .is_ok()
    {
        t.close().await;
    }
    CloseReason::FramingError
}

/// Serves a kTLS connection, then reports a non-data record from the peer as its
/// own close reason and answers it with close_notify.
pub async fn serve_ktls(
    t: &mut KtlsTransport,
    shared: &ConnShared,
    shutdown: &CancellationToken,
) -> CloseReason {
    let reason = serve(t, shared, shutdown).await;
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
