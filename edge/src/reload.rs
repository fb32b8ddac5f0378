//! Live reload (SIGHUP): which config keys may change in a running edge, which need a
//! restart, and the effective config as the admin UI shows it (secrets redacted).
//!
//! Live keys: `tls.cert_path`, `tls.key_path`, `tls.ticket_keys_file` (and the
//! file's contents), `tls.ticket_lifetime_secs`, `tls.cipher_suites`, and every
//! `telemetry.storm.*` threshold. The files behind them (certificate, key, ticket
//! keys) are re-read on every reload even when their paths stay. Everything else
//! (listeners, limits, content, cache, streams, ...) needs a restart: a reload that
//! changes it is refused, naming the keys, and the running config stays.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::config::Config;

/// The keys a reload applies (documented in README and `edge.example.toml`).
pub const RELOADABLE_KEYS: &[&str] = &[
    "tls.cert_path",
    "tls.key_path",
    "tls.ticket_keys_file",
    "tls.ticket_lifetime_secs",
    "tls.cipher_suites",
    "telemetry.storm.*",
];

/// What a running server keeps to apply a reload.
pub struct Live {
    /// The config in force.
    pub config: Config,
    /// The session cache kept across reloads.
    pub resumption: crate::tls::Resumption,
    /// Where the admin UI reads the effective config.
    pub admin: Arc<web_ui::AdminState>,
    /// The storm detector's owner.
    pub dashboard: Arc<web_ui::dashboard::Dashboard>,
}

/// A reload that was applied.
#[derive(Debug)]
pub struct Applied {
    /// Whether tickets are sealed with the fleet's key file.
    pub ticket_keys_file: bool,
    /// Live keys whose values changed (files are re-read regardless).
    pub live_keys_changed: Vec<&'static str>,
}

/// A reload that was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// Keys that only a restart can change.
    #[error("these keys changed but need a restart: {}; nothing was reloaded", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
    /// The new certificate, key or ticket keys could not be used.
    #[error("{0}; nothing was reloaded")]
    Tls(#[from] crate::tls::TlsError),
}

fn restart_fields(c: &Config) -> Vec<(&'static str, String)> {
    vec![
        ("server.tls_listen", format!("{:?}", c.tls_listen)),
        ("server.http_listen", format!("{:?}", c.http_listen)),
        ("server.admin_listen", format!("{:?}", c.admin_listen)),
        ("server.state_dir", format!("{:?}", c.state_dir)),
        ("server.worker_threads", format!("{:?}", c.worker_threads)),
        (
            "server.shutdown_grace_secs",
            format!("{:?}", c.shutdown_grace),
        ),
        (
            "server.close_after_error",
            format!("{:?}", c.close_after_error),
        ),
        (
            "server.transparent_huge_pages",
            format!("{:?}", c.transparent_huge_pages),
        ),
        ("content.root", format!("{:?}", c.content_root)),
        ("content.symlinks", format!("{:?}", c.symlinks)),
        (
            "content.open_file_cache",
            format!("{:?}", c.open_file_cache),
        ),
        ("limits", format!("{:?}", c.limits)),
        ("tls.ktls", format!("{:?}", c.tls.ktls)),
        (
            "tls.ktls_max_bytes_per_connection",
            format!("{:?}", c.tls.ktls_max_bytes_per_connection),
        ),
        ("cors", format!("{:?}", c.cors)),
        ("admin.token_file", format!("{:?}", c.admin_token_file)),
        ("manifests", format!("{:?}", c.manifests)),
        ("streams", format!("{:?}", c.streams)),
        ("upstream/storage", format!("{:?}", c.cache)),
        ("telemetry.enabled", format!("{:?}", c.telemetry.enabled)),
        ("telemetry.store", format!("{:?}", c.telemetry.store)),
    ]
}

/// The restart-only keys whose values differ between `old` and `new`.
pub fn restart_keys_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    restart_fields(old)
        .into_iter()
        .zip(restart_fields(new))
        .filter(|(a, b)| a.1 != b.1)
        .map(|(a, _)| a.0)
        .collect()
}

/// The live keys whose values differ.
pub fn live_keys_changed(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    let (a, b) = (&old.tls, &new.tls);
    if a.cert_and_key != b.cert_and_key {
        out.push("tls.cert_path/key_path");
    }
    if a.ticket_keys_file != b.ticket_keys_file {
        out.push("tls.ticket_keys_file");
    }
    if a.ticket_lifetime != b.ticket_lifetime {
        out.push("tls.ticket_lifetime_secs");
    }
    if a.cipher_suites != b.cipher_suites {
        out.push("tls.cipher_suites");
    }
    if old.telemetry.storm != new.telemetry.storm {
        out.push("telemetry.storm");
    }
    out
}

/// A URL with any user-info and query replaced by `<redacted>`.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = match rest.split_once('@') {
        Some((_, host)) if !host.contains('/') || rest.find('@') < rest.find('/') => {
            format!("<redacted>@{host}")
        }
        _ => rest.to_string(),
    };
    let rest = match rest.split_once('?') {
        Some((path, _)) => format!("{path}?<redacted>"),
        None => rest,
    };
    if scheme.is_empty() {
        rest
    } else {
        format!("{scheme}://{rest}")
    }
}

/// `GET /api/config`: the effective config (defaults filled in), secrets redacted
/// (file paths are shown, never contents; URL credentials and queries hidden), and
/// the reloadable keys.
pub fn config_json(c: &Config) -> Value {
    let p = |x: &std::path::Path| x.display().to_string();
    let l = &c.limits;
    let cache = c.cache.as_ref().map(|cs| {
        json!({
            "upstream": {
                "origin": redact_url(&cs.upstream.origin.base().to_string()),
                "ca_file": cs.upstream.ca_file.as_deref().map(p),
                "connect_timeout_ms": cs.upstream.connect_timeout.as_millis() as u64,
                "header_timeout_ms": cs.upstream.header_timeout.as_millis() as u64,
                "body_idle_timeout_ms": cs.upstream.body_idle_timeout.as_millis() as u64,
                "retry_budget_ms": cs.upstream.retry_budget.as_millis() as u64,
                "max_attempts": cs.upstream.max_attempts,
                "max_object_bytes": cs.upstream.max_object_bytes,
                "max_concurrent_fills": cs.upstream.max_concurrent_fills,
                "segment_ttl_secs": cs.upstream.segment_ttl.as_secs(),
                "playlist_ttl_secs": cs.upstream.playlist_ttl.as_secs(),
                "other_ttl_secs": cs.upstream.other_ttl.as_secs(),
            },
            "storage": format!("{:?}", cs.storage),
        })
    });
    let s = &c.telemetry.storm;
    json!({
        "config": {
            "server": {
                "tls_listen": c.tls_listen.to_string(),
                "http_listen": c.http_listen.map(|a| a.to_string()),
                "admin_listen": c.admin_listen.to_string(),
                "state_dir": p(&c.state_dir),
                "worker_threads": c.worker_threads.map(|n| n.get()),
                "shutdown_grace_secs": c.shutdown_grace.as_secs(),
                "close_after_error": c.close_after_error,
                "transparent_huge_pages": c.transparent_huge_pages,
            },
            "content": {
                "root": p(&c.content_root),
                "symlinks": format!("{:?}", c.symlinks),
                "open_file_cache": c.open_file_cache.entries,
                "open_file_cache_valid_ms": c.open_file_cache.valid.as_millis() as u64,
            },
            "limits": {
                "max_head_bytes": l.max_head_bytes.get(),
                "max_headers": l.max_headers.get(),
                "max_request_target_bytes": l.max_request_target_bytes.get(),
                "header_read_timeout_secs": l.header_read_timeout.as_secs(),
                "idle_timeout_secs": l.idle_timeout.as_secs(),
                "send_timeout_secs": l.send_timeout.as_secs(),
                "min_send_rate_bytes_per_sec": l.min_send_rate,
                "tls_handshake_timeout_secs": l.tls_handshake_timeout.as_secs(),
                "max_requests_per_connection": l.max_requests_per_connection.get(),
                "max_connections": l.max_connections.get(),
                "userspace_tls_buffer_bytes": l.userspace_tls_buffer_bytes.get(),
                "lingering_close_secs": l.lingering_close.as_secs(),
                "max_tls_handshakes_per_worker": l.max_tls_handshakes_per_worker.get(),
                "tls_handshakes_per_turn": l.tls_handshakes_per_turn.get(),
                "tls_body_buffers_per_turn": l.tls_body_buffers_per_turn,
                "tcp_notsent_lowat_bytes": l.tcp_notsent_lowat_bytes,
            },
            "tls": {
                "cert_path": c.tls.cert_and_key.as_ref().map(|(c, _)| p(c)),
                "key_path": c.tls.cert_and_key.as_ref().map(|_| "<redacted path>"),
                "cipher_suites": c.tls.cipher_suites.as_ref().map(|v| v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>()),
                "ktls": format!("{:?}", c.tls.ktls),
                "ktls_max_bytes_per_connection": c.tls.ktls_max_bytes_per_connection.get(),
                "ticket_keys_file": c.tls.ticket_keys_file.as_ref().map(|_| "<redacted path>"),
                "ticket_lifetime_secs": c.tls.ticket_lifetime.as_secs(),
            },
            "admin": {"token": "<redacted>"},
            "manifests": {
                "keys_file": c.manifests.keys_file.as_ref().map(|_| "<redacted path>"),
                "max_hold_ms": c.manifests.max_hold.as_millis() as u64,
                "max_held_requests": c.manifests.max_held_requests,
            },
            "streams": c.streams.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
            "cache": cache,
            "telemetry": {
                "enabled": c.telemetry.enabled,
                "store": p(&c.telemetry.store),
                "storm": {
                    "factor": s.factor,
                    "min_excess_per_sec": s.min_excess_per_sec,
                    "onset_secs": s.onset_secs,
                    "end_secs": s.end_secs,
                    "warmup_secs": s.warmup_secs,
                    "reconnect_window_secs": s.reconnect_window_secs,
                    "baseline_half_life_secs": s.baseline_half_life_secs,
                    "correlation_window_secs": s.correlation_window_secs,
                    "retention": s.retention,
                },
            },
        },
        "reloadable": RELOADABLE_KEYS,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> Config {
        Config::from_toml(
            &format!("[server]\nstate_dir = \"/tmp/edge-reload-test\"\n{extra}"),
            std::path::Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn live_and_restart_keys() {
        let a = cfg("");
        let b = cfg("[tls]\nticket_lifetime_secs = 60\n[telemetry.storm]\nfactor = 5.0\n");
        assert!(restart_keys_changed(&a, &b).is_empty());
        assert_eq!(
            live_keys_changed(&a, &b),
            vec!["tls.ticket_lifetime_secs", "telemetry.storm"]
        );
        let c = cfg("tls_listen = \"127.0.0.1:1\"\n[limits]\nmax_connections = 10\n");
        assert_eq!(
            restart_keys_changed(&a, &c),
            vec!["server.tls_listen", "limits"]
        );
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("https://u:p@origin.example/a?token=x"),
            "https://<redacted>@origin.example/a?<redacted>"
        );
        assert_eq!(redact_url("http://o:80/"), "http://o:80/");
    }

    /// Every `[limits]` key of `edge.example.toml` (commented-out ones too) is in the
    /// effective config the admin UI shows.
    #[test]
    fn config_json_shows_every_limit_of_the_example() {
        let v = config_json(&cfg(""));
        let shown = v["config"]["limits"].as_object().unwrap();
        let text = include_str!("../../edge.example.toml");
        let table = text.split("\n[limits]\n").nth(1).unwrap();
        let table = table.split("\n[").next().unwrap();
        let keys: Vec<&str> = table
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .filter_map(|l| l.split_once(" = ").map(|(k, _)| k))
            .filter(|k| k.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
            .collect();
        assert!(keys.len() >= 16, "{keys:?}");
        for k in keys {
            assert!(shown.contains_key(k), "/api/config lacks limits.{k}");
        }
    }

    #[test]
    fn config_json_hides_secrets() {
        let v = config_json(&cfg(""));
        let text = v.to_string();
        assert!(
            text.contains("\"admin\":{\"token\":\"<redacted>\"}"),
            "{text}"
        );
        assert!(v["reloadable"].as_array().unwrap().len() >= 5);
    }
}
