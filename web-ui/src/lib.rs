//! The admin plane: the token-protected admin HTTP listener, Prometheus `/metrics`
//! and the cache purge API.
//!
//! It owns the admin router (today `/metrics`, `POST /purge` and `/healthz`; the
//! dashboard, the JSON API and the handshake-storm detector come with their issues). It never touches a
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

/// Removes objects from a cache (implemented by the data plane in edge mode).
pub trait Purge: Send + Sync {
    /// Removes the object at URL path `key`; how many were removed (0 or 1), or why
    /// the key is not acceptable.
    fn purge_key(&self, key: &str) -> Result<u64, String>;
    /// Removes every object whose URL path starts with `prefix`; how many.
    fn purge_prefix(&self, prefix: &str) -> Result<u64, String>;
}

/// What the admin routes read.
pub struct AdminState {
    registry: Registry,
    token: String,
    purge: Option<Arc<dyn Purge>>,
}

impl AdminState {
    /// Builds the state. `token` must be non-empty; the caller reads it from a file
    /// created 0600.
    pub fn new(registry: Registry, token: String) -> Self {
        assert!(!token.is_empty(), "admin token must not be empty");
        Self {
            registry,
            token,
            purge: None,
        }
    }

    /// Enables `POST /purge` on `purge`.
    pub fn with_purge(mut self, purge: Arc<dyn Purge>) -> Self {
        self.purge = Some(purge);
        self
    }
}

/// The admin router: `/metrics` and `POST /purge?key=PATH` or `?prefix=PATH` (token
/// required), and `/healthz` (open, says `ok`).
pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/purge", axum::routing::post(purge))
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

/// `POST /purge?key=/a/b.ts` or `POST /purge?prefix=/streams/x/`: answers
/// `{"purged":N}`; 400 for a bad or missing parameter, 404 when no cache is
/// configured.
async fn purge(State(state): State<Arc<AdminState>>, req: Request) -> Response {
    let Some(p) = state.purge.as_ref() else {
        return (StatusCode::NOT_FOUND, "no cache is configured\n").into_response();
    };
    let query = req.uri().query().unwrap_or("");
    let mut key = None;
    let mut prefix = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v)
            .decode_utf8()
            .map(|v| v.into_owned());
        match (k, v) {
            ("key", Ok(v)) => key = Some(v),
            ("prefix", Ok(v)) => prefix = Some(v),
            _ => {
                return (
                    StatusCode::BAD_REQUEST,
                    "use ?key=PATH or ?prefix=PATH (UTF-8, percent-encoded)\n",
                )
                    .into_response()
            }
        }
    }
    let result = match (key, prefix) {
        (Some(k), None) => p.purge_key(&k),
        (None, Some(pre)) => p.purge_prefix(&pre),
        _ => Err("give exactly one of ?key=PATH or ?prefix=PATH".into()),
    };
    match result {
        Ok(n) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            format!("{{\"purged\":{n}}}\n"),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
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

    struct Fake;
    impl Purge for Fake {
        fn purge_key(&self, key: &str) -> Result<u64, String> {
            Ok(u64::from(key == "/a b"))
        }
        fn purge_prefix(&self, prefix: &str) -> Result<u64, String> {
            if prefix.contains("..") {
                return Err("no".into());
            }
            Ok(3)
        }
    }

    async fn post(uri: &str, auth: Option<&str>) -> (StatusCode, String) {
        let mut req = Request::builder().method("POST").uri(uri);
        if let Some(a) = auth {
            req = req.header(header::AUTHORIZATION, a);
        }
        let registry = Registry::new();
        let st = Arc::new(AdminState::new(registry, "s3cret".into()).with_purge(Arc::new(Fake)));
        let resp = router(st)
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
    async fn purge_requires_the_token_and_one_parameter() {
        let auth = Some("Bearer s3cret");
        assert_eq!(
            post("/purge?key=/x", None).await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            post("/purge?key=/a%20b", auth).await,
            (StatusCode::OK, "{\"purged\":1}\n".into())
        );
        assert_eq!(post("/purge?prefix=/s/", auth).await.1, "{\"purged\":3}\n");
        assert_eq!(
            post("/purge?prefix=/../", auth).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(post("/purge", auth).await.0, StatusCode::BAD_REQUEST);
        assert_eq!(
            post("/purge?key=/a&prefix=/b", auth).await.0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(post("/purge?what=1", auth).await.0, StatusCode::BAD_REQUEST);
        // Without a cache the route says so.
        let (status, _) = get("/purge", auth).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
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
