//! DASH rendering: a static MPD for VOD and a dynamic MPD for a live window, both
//! with SegmentTemplate (`$RepresentationID$/$Number$.m4s`) and a SegmentTimeline of
//! exact durations in each representation's timescale.
//!
//! A looping live channel is one Period per loop (each loop's media timestamps
//! restart, which is what a new Period means to a DASH player); the dynamic MPD
//! carries availabilityStartTime, publishTime, timeShiftBufferDepth,
//! minimumUpdatePeriod and a UTCTiming element with the server's clock, so players
//! agree with the edge on what is available. Only fMP4 streams render to DASH.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat};

use crate::clock::Timeline;
use crate::hls::target_duration_secs;
use crate::model::{MediaKind, Rendition, Stream};

pub use crate::clock::View;

/// `xs:duration` of `us` microseconds, e.g. `PT12.000000S`.
fn duration(us: u64) -> String {
    format!("PT{}.{:06}S", us / 1_000_000, us % 1_000_000)
}

/// `xs:dateTime` in UTC with milliseconds.
fn date_time(ms: u64) -> String {
    DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX))
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Writes the MPD of `stream` at `view` into `out` (cleared first).
pub fn mpd(stream: &Stream, tl: &Timeline, view: View, out: &mut String) {
    out.clear();
    let max_seg = tl.max_duration_us();
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<MPD xmlns=\"urn:mpeg:dash:schema:mpd:2011\" \
         profiles=\"urn:mpeg:dash:profile:isoff-live:2011\" minBufferTime=\"PT2S\" \
         maxSegmentDuration=\"{}\"",
        duration(max_seg)
    );
    match view {
        View::Vod => {
            let _ = writeln!(
                out,
                " type=\"static\" mediaPresentationDuration=\"{}\">",
                duration(tl.total_us())
            );
            period(out, stream, tl, "0", 0, 0..tl.len());
        }
        View::Live {
            live,
            window,
            now_ms,
        } => {
            let target = target_duration_secs(tl);
            let _ = writeln!(
                out,
                " type=\"dynamic\" availabilityStartTime=\"{}\" publishTime=\"{}\" \
                 minimumUpdatePeriod=\"PT{}S\" timeShiftBufferDepth=\"{}\" \
                 suggestedPresentationDelay=\"PT{}S\">",
                date_time(live.epoch_ms),
                date_time(now_ms),
                target,
                duration(live.dvr_window_ms * 1000),
                3 * target,
            );
            if let Some(last) = window.last() {
                let (k_first, _) = tl.split(window.first);
                let (k_last, _) = tl.split(last);
                for k in k_first..=k_last {
                    let loop_first = k * tl.len();
                    let from = window.first.max(loop_first);
                    let to = window.end.min(loop_first + tl.len());
                    period(
                        out,
                        stream,
                        tl,
                        &format!("p{k}"),
                        k * tl.total_us(),
                        from..to,
                    );
                }
            }
            let _ = writeln!(
                out,
                "  <UTCTiming schemeIdUri=\"urn:mpeg:dash:utc:direct:2014\" value=\"{}\"/>",
                date_time(now_ms)
            );
        }
    }
    out.push_str("</MPD>\n");
}

/// One Period listing global segments `range` (all within one loop), starting
/// `start_us` after the availability start.
fn period(
    out: &mut String,
    stream: &Stream,
    tl: &Timeline,
    id: &str,
    start_us: u64,
    range: std::ops::Range<u64>,
) {
    let _ = writeln!(
        out,
        "  <Period id=\"{id}\" start=\"{}\">",
        duration(start_us)
    );
    for (set_id, kind) in [MediaKind::Video, MediaKind::Audio, MediaKind::Muxed]
        .into_iter()
        .enumerate()
    {
        let reps: Vec<(usize, &Rendition)> = stream
            .renditions
            .iter()
            .enumerate()
            .filter(|(_, r)| r.kind == kind)
            .collect();
        if reps.is_empty() {
            continue;
        }
        let (content, mime) = match kind {
            MediaKind::Video => (" contentType=\"video\"", "video/mp4"),
            MediaKind::Audio => (" contentType=\"audio\"", "audio/mp4"),
            MediaKind::Muxed => ("", "video/mp4"),
        };
        let _ = writeln!(
            out,
            "    <AdaptationSet id=\"{set_id}\"{content} mimeType=\"{mime}\" segmentAlignment=\"true\" startWithSAP=\"1\">"
        );
        for (index, r) in reps {
            let _ = write!(
                out,
                "      <Representation id=\"{}\" bandwidth=\"{}\" codecs=\"{}\"",
                r.id, r.bandwidth, r.codecs
            );
            if let Some((w, h)) = r.resolution {
                let _ = write!(out, " width=\"{w}\" height=\"{h}\"");
            }
            if let Some(rate) = r.sample_rate {
                let _ = write!(out, " audioSamplingRate=\"{rate}\"");
            }
            out.push_str(">\n");
            template(out, r, index, tl, &range);
            out.push_str("      </Representation>\n");
        }
        out.push_str("    </AdaptationSet>\n");
    }
    out.push_str("  </Period>\n");
}

fn template(
    out: &mut String,
    r: &Rendition,
    rendition: usize,
    tl: &Timeline,
    range: &std::ops::Range<u64>,
) {
    let _ = writeln!(
        out,
        "        <SegmentTemplate timescale=\"{}\" presentationTimeOffset=\"{}\" startNumber=\"{}\" \
         initialization=\"$RepresentationID$/init.mp4\" media=\"$RepresentationID$/$Number$.m4s\">",
        r.timescale, r.start_time, range.start
    );
    out.push_str("          <SegmentTimeline>\n");
    if !range.is_empty() {
        let (_, first_i) = tl.split(range.start);
        let mut t = r.start_time + tl.start_ticks(rendition, first_i);
        let mut first = true;
        let mut run: Option<(u64, u64)> = None; // (duration, repeats)
        let flush = |out: &mut String, run: (u64, u64), t_at: Option<u64>| {
            let _ = match (t_at, run.1) {
                (Some(t), 0) => writeln!(out, "            <S t=\"{t}\" d=\"{}\"/>", run.0),
                (Some(t), n) => {
                    writeln!(out, "            <S t=\"{t}\" d=\"{}\" r=\"{n}\"/>", run.0)
                }
                (None, 0) => writeln!(out, "            <S d=\"{}\"/>", run.0),
                (None, n) => writeln!(out, "            <S d=\"{}\" r=\"{n}\"/>", run.0),
            };
        };
        let mut run_t = t;
        for g in range.clone() {
            let d = r.segments[tl.split(g).1].duration;
            run = match run {
                Some((rd, n)) if rd == d => Some((rd, n + 1)),
                Some(prev) => {
                    flush(out, prev, first.then_some(run_t));
                    first = false;
                    Some((d, 0))
                }
                None => {
                    run_t = t;
                    Some((d, 0))
                }
            };
            t += d;
        }
        if let Some(prev) = run {
            flush(out, prev, first.then_some(run_t));
        }
    }
    out.push_str("          </SegmentTimeline>\n        </SegmentTemplate>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Live;
    use crate::model::{tests::sample, Container};
    use dash_mpd_core as dash;

    fn parse(text: &str) -> dash::MPD {
        dash::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    /// Expands a SegmentTimeline into (t, d) pairs.
    fn timeline(st: &dash::SegmentTemplate) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut t = 0;
        for s in &st.SegmentTimeline.as_ref().unwrap().segments {
            if let Some(st) = s.t {
                t = st;
            }
            for _ in 0..=s.r.unwrap_or(0) {
                out.push((t, s.d));
                t += s.d;
            }
        }
        out
    }

    #[test]
    fn vod_mpd_parses_back_to_the_description() {
        let s = sample(Container::Fmp4, 6);
        let tl = Timeline::of(&s);
        let mut text = String::new();
        mpd(&s, &tl, View::Vod, &mut text);
        let m = parse(&text);
        assert_eq!(m.mpdtype.as_deref(), Some("static"));
        assert_eq!(
            m.mediaPresentationDuration,
            Some(std::time::Duration::from_secs(12))
        );
        assert_eq!(m.periods.len(), 1);
        let sets = &m.periods[0].adaptations;
        assert_eq!(sets.len(), 2);
        for (set, r) in sets.iter().zip(&s.renditions) {
            let rep = &set.representations[0];
            assert_eq!(rep.id.as_deref(), Some(r.id.as_str()));
            assert_eq!(rep.bandwidth, Some(r.bandwidth));
            assert_eq!(rep.codecs.as_deref(), Some(r.codecs.as_str()));
            let st = rep.SegmentTemplate.as_ref().unwrap();
            assert_eq!(st.timescale, Some(u64::from(r.timescale)));
            assert_eq!(st.startNumber, Some(0));
            let got: Vec<u64> = timeline(st).iter().map(|p| p.1).collect();
            let want: Vec<u64> = r.segments.iter().map(|s| s.duration).collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn live_mpd_has_a_period_per_loop_and_the_window() {
        let s = sample(Container::Fmp4, 6);
        let tl = Timeline::of(&s);
        let live = Live {
            epoch_ms: 1_700_000_000_000,
            dvr_window_ms: 10_000,
        };
        let now_ms = live.epoch_ms + 75_000;
        let window = live.window(&tl, now_ms);
        assert_eq!((window.first, window.end), (32, 37));
        let mut text = String::new();
        mpd(
            &s,
            &tl,
            View::Live {
                live,
                window,
                now_ms,
            },
            &mut text,
        );
        let m = parse(&text);
        assert_eq!(m.mpdtype.as_deref(), Some("dynamic"));
        assert!(text.contains("availabilityStartTime=\"2023-11-14T22:13:20.000Z\""));
        assert!(text.contains("timeShiftBufferDepth=\"PT10.000000S\""));
        assert_eq!(m.UTCTiming.len(), 1);
        // 32..36 are loop 5 (indices 2..6), 36 is loop 6.
        assert_eq!(m.periods.len(), 2);
        assert_eq!(m.periods[0].id.as_deref(), Some("p5"));
        assert_eq!(m.periods[0].start, Some(std::time::Duration::from_secs(60)));
        assert_eq!(m.periods[1].start, Some(std::time::Duration::from_secs(72)));
        let video = &m.periods[0].adaptations[0].representations[0];
        let st = video.SegmentTemplate.as_ref().unwrap();
        assert_eq!(st.startNumber, Some(32));
        assert_eq!(
            timeline(st),
            vec![
                (51200, 25600),
                (76800, 25600),
                (102400, 25600),
                (128000, 25600)
            ]
        );
        let st1 = m.periods[1].adaptations[0].representations[0]
            .SegmentTemplate
            .as_ref()
            .unwrap();
        assert_eq!(st1.startNumber, Some(36));
        assert_eq!(timeline(st1), vec![(0, 25600)]);
        // Audio durations alternate: no run-length merge, one t only.
        let audio = &m.periods[0].adaptations[1].representations[0];
        let at = timeline(audio.SegmentTemplate.as_ref().unwrap());
        assert_eq!(at.len(), 4);
        assert_eq!(at[0].0, 96256 + 95232);
    }
}
