//! Log-storm protection: a tracing layer that lets each source of INFO, WARN and
//! ERROR lines through at most [`BURST`] times per [`WINDOW_SECS`] and counts the
//! rest (`edge_log_lines_suppressed_total`), so that a condition a client can
//! trigger per connection never becomes a line per connection. This covers our own
//! lines and those of libraries through the `log` bridge: rustls logs `Illegal SNI
//! extension: ignoring IP address presented as hostname` once per handshake from any
//! client sending an IP as SNI (wrk does); those are counted as
//! `edge_tls_handshakes_by_sni_total{sni="ip_literal"}` as well.
//!
//! DEBUG and TRACE lines are not limited: an operator who turns them on asked for
//! per-request detail. Lock-free: one atomic per source slot.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::layer::{Context, Layer};

/// Lines per source let through per window.
pub const BURST: u64 = 10;
/// The window, in seconds.
pub const WINDOW_SECS: u64 = 10;
const SLOTS: usize = 256;

static SLOT_STATE: [AtomicU64; SLOTS] = [const { AtomicU64::new(0) }; SLOTS];
use web_ui::telemetry::LOG_LINES_SUPPRESSED as SUPPRESSED;

/// The layer; install it before the formatting layer.
pub struct LogStormGuard;

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Whether one more line from `key`'s slot may pass at `now` (seconds).
fn allow(key: u64, now: u64) -> bool {
    let slot = &SLOT_STATE[(key % SLOTS as u64) as usize];
    let window = now / WINDOW_SECS;
    loop {
        let cur = slot.load(Relaxed);
        let (w, n) = (cur >> 16, cur & 0xffff);
        let next = if w == window {
            if n >= BURST {
                SUPPRESSED.fetch_add(1, Relaxed);
                return false;
            }
            (w << 16) | (n + 1)
        } else {
            (window << 16) | 1
        };
        if slot
            .compare_exchange_weak(cur, next, Relaxed, Relaxed)
            .is_ok()
        {
            return true;
        }
    }
}

struct MessageContains<'a> {
    needle: &'a str,
    found: bool,
}

impl tracing::field::Visit for MessageContains<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.found |= format!("{value:?}").contains(self.needle);
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.found |= value.contains(self.needle);
        }
    }
}

impl<S: Subscriber> Layer<S> for LogStormGuard {
    fn event_enabled(&self, event: &Event<'_>, _ctx: Context<'_, S>) -> bool {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if *meta.level() > Level::INFO {
            return true;
        }
        if meta.target().starts_with("rustls") && *meta.level() == Level::WARN {
            let mut v = MessageContains {
                needle: "IP address presented as hostname",
                found: false,
            };
            event.record(&mut v);
            if v.found {
                web_ui::telemetry::SNI_IP_LITERAL.fetch_add(1, Relaxed);
            }
        }
        // A source: target plus line (log-bridged records all share one callsite).
        let mut h = std::hash::DefaultHasher::new();
        std::hash::Hash::hash(meta.target(), &mut h);
        std::hash::Hash::hash(&meta.line(), &mut h);
        std::hash::Hash::hash(&meta.file(), &mut h);
        allow(std::hash::Hasher::finish(&h), now_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_suppresses_then_recovers() {
        let key = 12_345;
        let now = 1_000_000;
        let before = SUPPRESSED.load(Relaxed);
        let passed = (0..100).filter(|_| allow(key, now)).count() as u64;
        assert_eq!(passed, BURST);
        assert!(SUPPRESSED.load(Relaxed) - before >= 100 - BURST);
        assert!(
            allow(key, now + WINDOW_SECS),
            "a new window lets lines through"
        );
    }
}
