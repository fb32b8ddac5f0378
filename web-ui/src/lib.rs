//! The admin plane: the token-protected admin HTTP listener with the dashboard
//! (overview, TLS, storms, config pages drawn in the browser from a JSON API),
//! Prometheus `/metrics`, the cache purge API, and the telemetry aggregator with the
//! handshake-storm detector ([`dashboard`]) fed by the data plane's sink
//! ([`telemetry`]).
//!
//! It never touches a client socket of the data plane: the data plane records into
//! a [`telemetry::Telemetry`] and registers its metrics in a [`prometheus::Registry`];
//! this crate only reads them.
//!
//! Every route except `/healthz` and `/login` requires `Authorization: Bearer
//! <token>` or the session cookie that `GET /login?token=TOKEN` sets (a hash of the
//! token, HttpOnly, SameSite=Strict); the token is compared in constant time and
//! never logged.

pub mod dashboard;
pub mod profile;
pub mod telemetry;

use std::sync::Arc;

use axum::{
    extract::{Path, Request, State},
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
    session: String,
    purge: Option<Arc<dyn Purge>>,
    dashboard: Option<Arc<dashboard::Dashboard>>,
    config: std::sync::RwLock<serde_json::Value>,
}

impl AdminState {
    /// Builds the state. `token` must be non-empty; the caller reads it from a file
    /// created 0600.
    pub fn new(registry: Registry, token: String) -> Self {
        assert!(!token.is_empty(), "admin token must not be empty");
        let session = session_value(&token);
        Self {
            registry,
            token,
            session,
            purge: None,
            dashboard: None,
            config: std::sync::RwLock::new(serde_json::Value::Null),
        }
    }

    /// Serves the dashboard's pages and JSON API from `dashboard`.
    pub fn with_dashboard(mut self, dashboard: Arc<dashboard::Dashboard>) -> Self {
        self.dashboard = Some(dashboard);
        self
    }

    /// Sets what `GET /api/config` shows: `{"config": .., "reloadable": [..]}`, with
    /// secrets already redacted by the caller. Called again after a reload.
    pub fn set_config(&self, config: serde_json::Value) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    /// Enables `POST /purge` on `purge`.
    pub fn with_purge(mut self, purge: Arc<dyn Purge>) -> Self {
        self.purge = Some(purge);
        self
    }
}

/// The admin router. Open: `/healthz` (says `ok`) and `GET /login?token=TOKEN`
/// (sets the session cookie, 303 to `/`). Behind the token or the cookie: `/metrics`,
/// `POST /purge?key=PATH` or `?prefix=PATH`, the pages `/`, `/tls`, `/storms`,
/// `/config`, their `/assets/NAME`, and the JSON API `/api/overview`,
/// `/api/series?res=s|m`, `/api/tls`, `/api/storms`, `/api/storms/ID`, `/api/config`,
/// and the CPU profiler `/debug/pprof/profile?seconds=N&format=svg|pprof` (see
/// [`profile`]; 409 while another profile runs). Unknown paths answer 401 without credentials and 404 with them.
pub fn router(state: Arc<AdminState>) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/purge", axum::routing::post(purge))
        .route("/", get(page))
        .route("/tls", get(page))
        .route("/storms", get(page))
        .route("/config", get(page))
        .route("/assets/{name}", get(asset))
        .route("/api/overview", get(api_overview))
        .route("/api/series", get(api_series))
        .route("/api/tls", get(api_tls))
        .route("/api/storms", get(api_storms))
        .route("/api/storms/{id}", get(api_storm))
        .route("/api/config", get(api_config))
        .route("/debug/pprof/profile", get(cpu_profile))
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
        .layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/login", get(login))
        .merge(protected)
        .with_state(state)
}

/// The cookie that carries an admin session.
const SESSION_COOKIE: &str = "edge_admin";

/// The session cookie's value for `token`: a hash, so the cookie is not the token.
fn session_value(token: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("edge-admin-session\0{token}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie_session(req: &Request) -> Option<&str> {
    req.headers()
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v)
}

/// `GET /login?token=T`: sets the session cookie and sends the browser to `/`.
async fn login(State(state): State<Arc<AdminState>>, req: Request) -> Response {
    let token = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == "token")
        .and_then(|(_, v)| percent_encoding::percent_decode_str(v).decode_utf8().ok())
        .map(|v| v.trim().to_string());
    match token {
        Some(t) if constant_time_eq(t.as_bytes(), state.token.as_bytes()) => {
            let cookie = format!(
                "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict",
                state.session
            );
            let mut resp = StatusCode::SEE_OTHER.into_response();
            let h = resp.headers_mut();
            h.insert(header::LOCATION, HeaderValue::from_static("/"));
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                h.insert(header::SET_COOKIE, v);
            }
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            resp
        }
        _ => unauthorized(),
    }
}

fn unauthorized() -> Response {
    let mut resp = (StatusCode::UNAUTHORIZED, "admin token required: send Authorization: Bearer TOKEN, or open /login?token=TOKEN in a browser\n").into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"edge-admin\""),
    );
    resp
}

/// The page shell (one for all pages; the script picks the page from the path).
const INDEX_HTML: &[u8] = include_bytes!("../assets/index.html");

/// Embedded assets: name, MIME type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    (
        "uPlot.iife.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/uPlot.iife.min.js"),
    ),
    (
        "uPlot.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/uPlot.min.css"),
    ),
];

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'";

fn with_type(mime: &'static str, body: &'static [u8]) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(mime)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

async fn page() -> Response {
    with_type("text/html; charset=utf-8", INDEX_HTML)
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, mime, body)) => with_type(mime, body),
        None => (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    }
}

fn json_response(v: serde_json::Value) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        v.to_string(),
    )
        .into_response()
}

fn no_dashboard() -> Response {
    (StatusCode::NOT_FOUND, "telemetry is not running\n").into_response()
}

async fn api_overview(State(state): State<Arc<AdminState>>) -> Response {
    match &state.dashboard {
        Some(d) => json_response(d.overview()),
        None => no_dashboard(),
    }
}

async fn api_series(State(state): State<Arc<AdminState>>, req: Request) -> Response {
    let per_minute = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "res=m"));
    match &state.dashboard {
        Some(d) => json_response(d.series(per_minute)),
        None => no_dashboard(),
    }
}

async fn api_tls(State(state): State<Arc<AdminState>>) -> Response {
    match &state.dashboard {
        Some(d) => json_response(d.tls()),
        None => no_dashboard(),
    }
}

async fn api_storms(State(state): State<Arc<AdminState>>) -> Response {
    match &state.dashboard {
        Some(d) => json_response(d.storms_json()),
        None => no_dashboard(),
    }
}

async fn api_storm(State(state): State<Arc<AdminState>>, Path(id): Path<String>) -> Response {
    let Some(d) = &state.dashboard else {
        return no_dashboard();
    };
    match id.parse::<u64>().ok().and_then(|id| d.storm_json(id)) {
        Some(v) => json_response(v),
        None => (StatusCode::NOT_FOUND, "no such storm\n").into_response(),
    }
}

async fn api_config(State(state): State<Arc<AdminState>>) -> Response {
    let v = state
        .config
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    json_response(v)
}

async fn cpu_profile(req: Request) -> Response {
    use profile::{ProfileError, ProfileFormat};
    let (length, format) = match profile::parse_query(req.uri().query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    match profile::record(length, format).await {
        Ok(body) => {
            let (content_type, name) = match format {
                ProfileFormat::FlameGraph => ("image/svg+xml", "edge-cpu.svg"),
                ProfileFormat::Pprof => ("application/octet-stream", "edge-cpu.pb.gz"),
            };
            (
                [
                    (header::CONTENT_TYPE, content_type.to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{name}\""),
                    ),
                    (header::CACHE_CONTROL, "no-store".to_string()),
                ],
                body,
            )
                .into_response()
        }
        Err(e @ ProfileError::Busy) => (StatusCode::CONFLICT, e.to_string()).into_response(),
        Err(e @ ProfileError::BadRequest(_)) => {
            (StatusCode::BAD_REQUEST, e.to_string()).into_response()
        }
        Err(e @ ProfileError::Failed(_)) => {
            tracing::warn!(error = %e, "CPU profile failed");
            (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response()
        }
    }
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
    let by_token =
        presented.is_some_and(|t| constant_time_eq(t.as_bytes(), state.token.as_bytes()));
    let by_cookie = cookie_session(&req)
        .is_some_and(|c| constant_time_eq(c.as_bytes(), state.session.as_bytes()));
    if by_token || by_cookie {
        next.run(req).await
    } else {
        unauthorized()
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
