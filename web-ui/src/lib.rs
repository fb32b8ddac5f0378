//! The admin plane: the token-protected admin HTTP listener and Prometheus `/metrics`.
//!
//! It owns the admin router (today `/metrics` and `/healthz`; the dashboard, the JSON
//! API and the handshake-storm detector come with their issues). It never touches a
//! client socket of the data plane: the data plane registers its metrics in a
//! [`prometheus::Registry`] and this crate only reads them.
//!
//! Every route except `/healthz` requires `Authorization: Bearer <token>`; the token
//! is compared in constant time and never logged.

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Router,
};
use prometheus::{Encoder, Registry, TextEncoder};
use tokio_util::sync::CancellationToken;

/// What the admin routes read.
pub struct AdminState {
    registry: Registry,
    token: String,
}

impl AdminState {
    /// Builds the state. `token` must be non-empty; the caller reads it from a file
    /// created 0600.
    pub fn new(registry: Registry, token: String) -> Self {
        assert!(!token.is_empty(), "admin token must not be empty");
        Self { registry, token }
    }
}

/// The admin router: `/metrics` (token required) and `/healthz` (open, says `ok`).
pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .merge(protected)
        .with_state(state)
}

/// Serves the admin router on `listener` until `shutdown` is cancelled.
///
/// Cancel-safe in the sense that cancelling `shutdown` stops accepting and lets
/// in-flight admin requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

async fn require_token(State(state): State<Arc<AdminState>>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match presented {
        Some(t) if constant_time_eq(t.as_bytes(), state.token.as_bytes()) => next.run(req).await,
        _ => {
            let mut resp = (StatusCode::UNAUTHORIZED, "admin token required\n").into_response();
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"edge-admin\""),
            );
            resp
        }
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let families = state.registry.gather();
    let mut body = Vec::with_capacity(16 * 1024);
    match TextEncoder::new().encode(&families, &mut body) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "encoding metrics failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    fn state() -> Arc<AdminState> {
        let registry = Registry::new();
        let c = prometheus::IntCounter::new("edge_test_total", "a test counter").unwrap();
        registry.register(Box::new(c.clone())).unwrap();
        c.inc_by(7);
        Arc::new(AdminState::new(registry, "s3cret".into()))
    }

    async fn get(uri: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::builder().uri(uri);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let resp = router(state())
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = resp.status();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn metrics_requires_the_token() {
        assert_eq!(get("/metrics", None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            get("/metrics", Some("Bearer wrong!")).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            get("/metrics", Some("s3cret")).await.0,
            StatusCode::UNAUTHORIZED
        );
        let (status, body) = get("/metrics", Some("Bearer s3cret")).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.contains("edge_test_total 7"), "{body}");
    }

    #[tokio::test]
    async fn healthz_is_open() {
        assert_eq!(
            get("/healthz", None).await,
            (StatusCode::OK, "ok\n".to_string())
        );
    }

    #[test]
    fn constant_time_eq_compares() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
