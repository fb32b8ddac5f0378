//! Time and allocations to render playlists and MPDs (issue 7, benchmark 7):
//! a 5-segment live window and a 6-hour DVR window of 2 s segments, HLS and DASH.
//!
//! `cargo bench -p manifest --bench render` prints, per case: output bytes,
//! microseconds per render (median of 11 rounds) and heap allocations per render
//! (counted by allocation-counter, which replaces the allocator in this binary only).

use std::time::Instant;

use manifest::{dash, hls, Container, Live, MediaKind, Rendition, Segment, Stream, Timeline};

/// An fMP4 stream of `n` 2 s segments: video and audio renditions.
fn stream(n: u64) -> Stream {
    let seg = |p: &str, i: u64, d: u64| Segment {
        number: i,
        duration: d,
        size: 90_000,
        file: format!("{p}-{i:05}.m4s"),
    };
    let rendition = |id: &str, kind, timescale: u32, d: u64| Rendition {
        id: id.into(),
        kind,
        bandwidth: if kind == MediaKind::Audio {
            64_000
        } else {
            3_000_000
        },
        resolution: (kind == MediaKind::Video).then_some((1280, 720)),
        codecs: if kind == MediaKind::Audio {
            "mp4a.40.2"
        } else {
            "avc1.64001f"
        }
        .into(),
        timescale,
        start_time: 0,
        init: Some(format!("init-{id}.mp4")),
        sample_rate: (kind == MediaKind::Audio).then_some(48_000),
        segments: (0..n).map(|i| seg(id, i, d)).collect(),
    };
    Stream {
        name: "bench".into(),
        container: Container::Fmp4,
        renditions: vec![
            rendition("v", MediaKind::Video, 90_000, 180_000),
            rendition("a", MediaKind::Audio, 48_000, 96_000),
        ],
    }
}

fn measure(name: &str, mut f: impl FnMut() -> usize) {
    let bytes = f();
    let iters = if bytes > 100_000 { 20 } else { 20_000 };
    let allocs = allocation_counter::measure(|| {
        std::hint::black_box(f());
    })
    .count_total;
    let mut rounds = Vec::new();
    for _ in 0..11 {
        let t0 = Instant::now();
        for _ in 0..iters {
            std::hint::black_box(f());
        }
        rounds.push(t0.elapsed().as_secs_f64() * 1e6 / iters as f64);
    }
    rounds.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name:<44} {bytes:>9} bytes {:>10.2} us/render {allocs:>7} allocs/render",
        rounds[5]
    );
}

fn main() {
    const EPOCH: u64 = 1_700_000_000_000;
    let now = EPOCH + 7 * 3600 * 1000;
    // A 6-hour asset looped as a channel: both windows lie within one loop.
    let s = stream(6 * 3600 / 2);
    let tl = Timeline::of(&s);
    let cases = [
        ("live, 5 segments", 10_000u64),
        ("live, 6 h DVR (10,800 segments)", 6 * 3600 * 1000),
    ];
    println!(
        "{:<44} {:>15} {:>20} {:>21}",
        "case", "output", "time", "allocations"
    );
    for (label, dvr) in cases {
        let live = Live {
            epoch_ms: EPOCH,
            dvr_window_ms: dvr,
        };
        let window = live.window(&tl, now);
        let mut out = Vec::with_capacity(1 << 20);
        measure(&format!("HLS media playlist, {label}"), || {
            out.clear();
            let pl = hls::media(
                &s,
                &s.renditions[0],
                &tl,
                hls::View::Live {
                    live,
                    window,
                    now_ms: now,
                },
            );
            hls::write_media(&pl, &mut out);
            out.len()
        });
        let mut text = String::with_capacity(1 << 20);
        measure(&format!("DASH MPD, {label}"), || {
            dash::mpd(
                &s,
                &tl,
                dash::View::Live {
                    live,
                    window,
                    now_ms: now,
                },
                &mut text,
            );
            text.len()
        });
    }
    let mut out = Vec::with_capacity(1 << 16);
    measure("HLS master playlist", || {
        out.clear();
        hls::write_master(&hls::master(&s), &mut out);
        out.len()
    });
}
