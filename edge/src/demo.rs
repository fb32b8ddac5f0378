//! `edge demo`: the configuration for serving the bundled clip and player page on
//! loopback, and the URLs to print.

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

/// Builds the demo's validated configuration.
pub fn config(
    tls_listen: SocketAddr,
    http_listen: Option<SocketAddr>,
    admin_listen: SocketAddr,
    root: &Path,
    state_dir: &Path,
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
    Config::from_toml(&text, Path::new("<edge demo>"))
}

/// The lines `edge demo` prints once it listens.
pub fn banner(tls: SocketAddr, admin: SocketAddr, root: &Path, state_dir: &Path) -> String {
    let base = format!("https://{tls}");
    [
        format!("edge demo: serving {}", root.display()),
        format!("  player page:  {base}/"),
        format!("  HLS (TS):     {base}/player.html?lib=hlsjs&src=/content/hls_ts/master.m3u8"),
        format!("  HLS (fMP4):   {base}/player.html?lib=hlsjs&src=/content/hls_fmp4/master.m3u8"),
        format!("  DASH:         {base}/player.html?lib=dashjs&src=/content/dash/manifest.mpd"),
        format!("  manifests:    {base}/content/hls_ts/master.m3u8  {base}/content/dash/manifest.mpd"),
        format!(
            "  metrics:      curl -H \"Authorization: Bearer $(cat {}/admin.token)\" http://{admin}/metrics",
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
            Path::new("/tmp/x \"quoted\""),
            Path::new("/tmp/state"),
        )
        .unwrap();
        assert_eq!(c.content_root, Path::new("/tmp/x \"quoted\""));
    }
}
