//! The CPU profiler behind `GET /debug/pprof/profile`: samples the whole process
//! (every worker thread) with `pprof` for a bounded number of seconds and answers a
//! flame graph (SVG) or a gzip-compressed pprof protobuf, which `go tool pprof` and
//! other pprof tooling read. One profile at a time: the sampler is process-wide.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Longest profile a request may ask for, in seconds.
pub const MAX_PROFILE_SECS: u64 = 60;
/// Profile length when the request does not say.
pub const DEFAULT_PROFILE_SECS: u64 = 10;
/// Sampling frequency (Hz); off the round 100 so samples do not beat with timers.
const SAMPLE_HZ: i32 = 99;

/// What a profile is returned as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileFormat {
    /// An interactive flame graph (SVG).
    FlameGraph,
    /// The pprof protobuf (`profile.proto`), gzip-compressed.
    Pprof,
}

/// Why no profile was taken.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The request's parameters are not acceptable (400).
    #[error("{0}")]
    BadRequest(String),
    /// Another profile is being recorded (409).
    #[error("a CPU profile is already being recorded; try again when it is done")]
    Busy,
    /// The sampler failed (500, an operator-only route).
    #[error("profiling failed: {0}")]
    Failed(String),
}

/// One profile at a time, process-wide.
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Clears [`RUNNING`] however the profile ends.
struct RunningGuard;

impl Drop for RunningGuard {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Parses `seconds=N&format=svg|pprof` (both optional).
pub fn parse_query(query: &str) -> Result<(Duration, ProfileFormat), ProfileError> {
    let mut secs = DEFAULT_PROFILE_SECS;
    let mut format = ProfileFormat::Pprof;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "seconds" => {
                secs = v
                    .parse::<u64>()
                    .ok()
                    .filter(|s| (1..=MAX_PROFILE_SECS).contains(s))
                    .ok_or_else(|| {
                        ProfileError::BadRequest(format!(
                            "seconds must be 1..={MAX_PROFILE_SECS}\n"
                        ))
                    })?;
            }
            "format" => {
                format = match v {
                    "svg" | "flamegraph" => ProfileFormat::FlameGraph,
                    "pprof" | "pb" | "proto" => ProfileFormat::Pprof,
                    _ => {
                        return Err(ProfileError::BadRequest(
                            "format must be svg or pprof\n".into(),
                        ))
                    }
                };
            }
            _ => {
                return Err(ProfileError::BadRequest(
                    "use ?seconds=N (1..=60) and format=svg|pprof\n".into(),
                ))
            }
        }
    }
    Ok((Duration::from_secs(secs), format))
}

/// Records a CPU profile of this process for `length` and renders it. Refuses with
/// [`ProfileError::Busy`] while another one runs. The sampling waits on a blocking
/// thread, not on the async runtime.
pub async fn record(length: Duration, format: ProfileFormat) -> Result<Vec<u8>, ProfileError> {
    if RUNNING
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return Err(ProfileError::Busy);
    }
    let guard = RunningGuard;
    let job = tokio::task::spawn_blocking(move || {
        let _guard = guard;
        let profiler = pprof::ProfilerGuardBuilder::default()
            .frequency(SAMPLE_HZ)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
            .map_err(|e| ProfileError::Failed(e.to_string()))?;
        std::thread::sleep(length);
        let report = profiler
            .report()
            .build()
            .map_err(|e| ProfileError::Failed(e.to_string()))?;
        drop(profiler);
        render(&report, format)
    });
    job.await
        .map_err(|e| ProfileError::Failed(format!("the profiling thread failed: {e}")))?
}

fn render(report: &pprof::Report, format: ProfileFormat) -> Result<Vec<u8>, ProfileError> {
    let failed = |e: &dyn std::fmt::Display| ProfileError::Failed(e.to_string());
    match format {
        ProfileFormat::FlameGraph => {
            let mut svg = Vec::new();
            report.flamegraph(&mut svg).map_err(|e| failed(&e))?;
            Ok(svg)
        }
        ProfileFormat::Pprof => {
            use pprof::protos::Message as _;
            use std::io::Write as _;
            let profile = report.pprof().map_err(|e| failed(&e))?;
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            gz.write_all(&profile.encode_to_vec())
                .map_err(|e| failed(&e))?;
            gz.finish().map_err(|e| failed(&e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_is_bounded_and_checked() {
        assert_eq!(
            parse_query("").unwrap(),
            (Duration::from_secs(10), ProfileFormat::Pprof)
        );
        assert_eq!(
            parse_query("seconds=3&format=svg").unwrap(),
            (Duration::from_secs(3), ProfileFormat::FlameGraph)
        );
        for bad in ["seconds=0", "seconds=61", "seconds=x", "format=png", "x=1"] {
            assert!(
                matches!(parse_query(bad), Err(ProfileError::BadRequest(_))),
                "{bad}"
            );
        }
    }
}
