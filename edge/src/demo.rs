//! `edge demo`: an origin and an edge in one process, on loopback. The origin serves
//! the bundled clip and player page as files and publishes the clip as generated
//! streams; the edge fills its disk cache from the origin (a miss, a fill, then
//! hits) and renders the same streams from the origin's descriptions. Also the URLs
//! to print.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};

/// The bundled site (player pages, hls.js, dash.js and the clip in three packagings),
/// as laid out in the source tree.
pub fn bundled_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("demo")
        .join("www")
}

/// Where the demo keeps its generated certificate and admin token by default:
/// `$XDG_STATE_HOME/edge-demo`, else `$HOME/.local/state/edge-demo`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("edge-demo");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local/state/edge-demo"),
        None => std::env::temp_dir().join("edge-demo"),
    }
}

/// The demo's published streams: (name, folder under `content/`, live, signed).
pub const STREAMS: [(&str, &str, bool, bool); 6] = [
    ("vod-ts", "hls_ts", false, false),
    ("vod-fmp4", "hls_fmp4", false, false),
    ("vod", "dash", false, false),
    ("live", "dash", true, false),
    ("live-ts", "hls_ts", true, false),
    ("signed", "dash", false, true),
];

/// The demo's DVR window.
pub const DVR_WINDOW_SECS: u64 = 60;

/// The key file the demo signs URLs with (generated 0600 in the state directory).
pub fn keys_file(state_dir: &Path) -> PathBuf {
    state_dir.join("url-signing.keys")
}

/// Writes a fresh signing key file unless one exists.
pub fn ensure_keys(state_dir: &Path) -> Result<(), crate::tls::TlsError> {
    let path = keys_file(state_dir);
    if path.exists() {
        return Ok(());
    }
    crate::tls::ensure_private_dir(state_dir)?;
    let mut secret = [0u8; 32];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut secret)
        .map_err(|_| crate::tls::TlsError::Generate("no randomness for the signing key".into()))?;
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    crate::tls::write_secret_file(&path, format!("demo {hex}\n").as_bytes())
}

/// The origin's configuration: [`config`] with its TLS and admin listeners on
/// ephemeral loopback ports, plain HTTP on `http_listen` (what the edge fills from),
/// and its own state directory.
pub fn origin_config(
    http_listen: SocketAddr,
    root: &Path,
    state_dir: &Path,
    epoch_secs: u64,
) -> Result<Config, ConfigError> {
    let any: SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let keys = keys_file(state_dir);
    let mut c = config(
        any,
        Some(http_listen),
        any,
        root,
        &state_dir.join("origin"),
        epoch_secs,
    )?;
    // The origin signs with the demo's one key file.
    c.manifests.keys_file = Some(keys);
    Ok(c)
}

/// The edge's configuration: listeners as given, the cache (`cache_mib` in
/// `state_dir/cache`) filling from `origin`, and every demo stream rendered from the
/// origin's description.
pub fn edge_config(
    tls_listen: SocketAddr,
    http_listen: Option<SocketAddr>,
    admin_listen: SocketAddr,
    origin: SocketAddr,
    state_dir: &Path,
    cache_mib: u64,
) -> Result<Config, ConfigError> {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let cache = state_dir.join("cache");
    let disk = cache.join("disk0");
    std::fs::create_dir_all(&disk).map_err(|e| ConfigError::Invalid {
        file: "<edge demo>".into(),
        key: "storage.disks.path",
        message: format!("{}: {e}", disk.display()),
    })?;
    let mut text = format!(
        "[server]
tls_listen = {}
admin_listen = {}
state_dir = {}
shutdown_grace_secs = 2
",
        q(&tls_listen.to_string()),
        q(&admin_listen.to_string()),
        q(&state_dir.to_string_lossy()),
    );
    if let Some(h) = http_listen {
        text.push_str(&format!(
            "http_listen = {}
",
            q(&h.to_string())
        ));
    }
    text.push_str(&format!(
        "[content]
root = {}
[manifests]
keys_file = {}
",
        q(&state_dir.join("www-unused").to_string_lossy()),
        q(&keys_file(state_dir).to_string_lossy())
    ));
    text.push_str(&format!(
        "[upstream]
origin = \"http://{origin}\"
[storage]
index_dir = {}
[[storage.disks]]
path = {}
size_mib = {cache_mib}
",
        q(&cache.join("index").to_string_lossy()),
        q(&disk.to_string_lossy()),
    ));
    for (name, _, _, _) in STREAMS {
        text.push_str(&format!(
            "[[streams]]
name = {}
origin = \"http://{origin}\"
",
            q(name)
        ));
    }
    Config::from_toml(&text, Path::new("<edge demo>"))
}

/// Builds the demo's validated configuration: the bundled site as files, and the
/// clip published as generated VOD and simulated live streams. `epoch_secs` is when
/// the live channels started (the demo uses an hour before start-up, so a full DVR
/// window exists at once).
pub fn config(
    tls_listen: SocketAddr,
    http_listen: Option<SocketAddr>,
    admin_listen: SocketAddr,
    root: &Path,
    state_dir: &Path,
    epoch_secs: u64,
) -> Result<Config, ConfigError> {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let mut text = format!(
        "[server]\ntls_listen = {}\nadmin_listen = {}\nstate_dir = {}\nshutdown_grace_secs = 2\n",
        q(&tls_listen.to_string()),
        q(&admin_listen.to_string()),
        q(&state_dir.to_string_lossy()),
    );
    if let Some(h) = http_listen {
        text.push_str(&format!("http_listen = {}\n", q(&h.to_string())));
    }
    text.push_str(&format!(
        "[content]\nroot = {}\n",
        q(&root.to_string_lossy())
    ));
    text.push_str(&format!(
        "[manifests]\nkeys_file = {}\n",
        q(&keys_file(state_dir).to_string_lossy())
    ));
    for (name, folder, live, signed) in STREAMS {
        let source = root.join("content").join(folder);
        text.push_str(&format!(
            "[[streams]]\nname = {}\nsource = {}\nlive = {live}\nsigned = {signed}\ndvr_window_secs = {DVR_WINDOW_SECS}\nepoch_secs = {epoch_secs}\n",
            q(name),
            q(&source.to_string_lossy()),
        ));
    }
    Config::from_toml(&text, Path::new("<edge demo>"))
}

/// The lines `edge demo` prints once it listens; `signed_path` is a signed URL path
/// for the `signed` stream.
pub fn banner(
    tls: SocketAddr,
    admin: SocketAddr,
    origin: SocketAddr,
    root: &Path,
    state_dir: &Path,
    signed_path: &str,
    admin_token: &str,
) -> String {
    let base = format!("https://{tls}");
    let hls = |p: &str| format!("{base}/player.html?lib=hlsjs&src={p}");
    let dash = |p: &str| format!("{base}/player.html?lib=dashjs&src={p}");
    [
        format!("edge demo: an origin serving {} on http://{origin}", root.display()),
        format!(
            "  and an edge filling its cache ({}) from it: the first request of an object is a miss (X-Cache: MISS), later ones hit",
            state_dir.join("cache").display()
        ),
        format!("  see it:           curl -sk -D- -o /dev/null {base}/content/hls_ts/master.m3u8   (twice)"),
        format!("  player page:      {base}/"),
        "  generated manifests (the clip ingested at start-up):".to_string(),
        format!("  VOD HLS (TS):     {}", hls("/streams/vod-ts/master.m3u8")),
        format!("  VOD HLS (fMP4):   {}", hls("/streams/vod-fmp4/master.m3u8")),
        format!("  VOD DASH:         {}", dash("/streams/vod/manifest.mpd")),
        format!("  live HLS (fMP4):  {}", hls("/streams/live/master.m3u8")),
        format!("  live HLS (TS):    {}", hls("/streams/live-ts/master.m3u8")),
        format!("  live DASH:        {}", dash("/streams/live/manifest.mpd")),
        format!("  signed HLS:       {}", hls(signed_path)),
        "  ffmpeg's own files, served as files:".to_string(),
        format!("  HLS (TS):         {}", hls("/content/hls_ts/master.m3u8")),
        format!("  DASH:             {}", dash("/content/dash/manifest.mpd")),
        format!("  admin UI:         http://{admin}/login?token={admin_token}   (token generated for this run; loopback only)"),
        format!(
            "  metrics:          curl -H \"Authorization: Bearer $(cat {}/admin.token)\" http://{admin}/metrics | grep edge_cache",
            state_dir.display()
        ),
        format!(
            "  purge:            curl -X POST -H \"Authorization: Bearer $(cat {}/admin.token)\" 'http://{admin}/purge?prefix=/content/'",
            state_dir.display()
        ),
        "The certificate is self-signed (kept in the state directory): accept the browser's warning once, or use curl -k."
            .to_string(),
        "Stop with Ctrl-C.".to_string(),
    ]
    .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_config_is_valid() {
        let c = config(
            "127.0.0.1:8443".parse().unwrap(),
            None,
            "127.0.0.1:9090".parse().unwrap(),
            &bundled_root(),
            Path::new("/tmp/state"),
            0,
        )
        .unwrap();
        assert_eq!(c.content_root, bundled_root());
        assert_eq!(c.streams.len(), STREAMS.len());
        let dir = std::env::temp_dir().join(format!("edge-demo-test-{}", std::process::id()));
        let e = edge_config(
            "127.0.0.1:8443".parse().unwrap(),
            None,
            "127.0.0.1:9090".parse().unwrap(),
            "127.0.0.1:8081".parse().unwrap(),
            &dir,
            256,
        )
        .unwrap();
        assert!(e.cache.is_some());
        assert_eq!(e.streams.len(), STREAMS.len());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
