//! The live clock: when each segment of a stream becomes available, and which
//! segments a live window holds at a given moment.
//!
//! A live channel plays a stream's segments in a loop from an epoch: global segment
//! `g` is the stream's segment `g mod N` in loop `g / N`, and it becomes available
//! once it is complete, at `epoch + (g / N) * T + end(g mod N)` where `T` is the
//! stream's total duration. Global numbers are the same on every edge that shares
//! the epoch, so a fleet agrees on them. Time is always an input here.

use crate::model::Stream;

/// The segment timing of a stream (its primary rendition), in microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeline {
    /// End of each segment relative to the stream's start; the last is the total.
    ends_us: Vec<u64>,
    /// The longest segment.
    max_us: u64,
    /// Per rendition, the start of each segment in its own ticks (prefix sums,
    /// `len + 1` entries), so a window's first tick is a lookup, not a sum.
    starts_ticks: Vec<Vec<u64>>,
}

impl Timeline {
    /// The timeline of a validated stream.
    pub fn of(stream: &Stream) -> Self {
        let p = stream.primary();
        let mut ticks = 0u64;
        let ends_us = p
            .segments
            .iter()
            .map(|s| {
                ticks += s.duration;
                p.ticks_to_us(ticks)
            })
            .collect::<Vec<u64>>();
        let mut prev = 0;
        let max_us = ends_us
            .iter()
            .map(|&e| {
                let d = e - prev;
                prev = e;
                d
            })
            .max()
            .unwrap_or(0);
        let starts_ticks = stream
            .renditions
            .iter()
            .map(|r| {
                let mut acc = 0u64;
                std::iter::once(0)
                    .chain(r.segments.iter().map(|s| {
                        acc = acc.saturating_add(s.duration);
                        acc
                    }))
                    .collect()
            })
            .collect();
        Self {
            ends_us,
            max_us,
            starts_ticks,
        }
    }

    /// Where segment `index` (within a loop) of rendition `rendition` starts, in
    /// that rendition's ticks from its first segment.
    pub fn start_ticks(&self, rendition: usize, index: usize) -> u64 {
        self.starts_ticks[rendition][index]
    }

    /// Segments per loop.
    pub fn len(&self) -> u64 {
        self.ends_us.len() as u64
    }

    /// Whether there are no segments (never for a validated stream).
    pub fn is_empty(&self) -> bool {
        self.ends_us.is_empty()
    }

    /// One loop's duration.
    pub fn total_us(&self) -> u64 {
        self.ends_us.last().copied().unwrap_or(0)
    }

    /// Start of global segment `g`, relative to the epoch.
    pub fn start_us(&self, g: u64) -> u64 {
        let (k, i) = self.split(g);
        k * self.total_us() + if i == 0 { 0 } else { self.ends_us[i - 1] }
    }

    /// End of global segment `g`, relative to the epoch: when it becomes available.
    pub fn end_us(&self, g: u64) -> u64 {
        let (k, i) = self.split(g);
        k * self.total_us() + self.ends_us[i]
    }

    /// Duration of global segment `g`.
    pub fn duration_us(&self, g: u64) -> u64 {
        self.end_us(g) - self.start_us(g)
    }

    /// The longest segment.
    pub fn max_duration_us(&self) -> u64 {
        self.max_us
    }

    /// (loop, index within the loop) of global segment `g`.
    pub fn split(&self, g: u64) -> (u64, usize) {
        let n = self.len().max(1);
        (g / n, (g % n) as usize)
    }

    /// How many global segments are complete `t_us` after the epoch: segments
    /// `0..available(t)` can be served.
    pub fn available(&self, t_us: u64) -> u64 {
        let total = self.total_us();
        if total == 0 {
            return 0;
        }
        let (k, rem) = (t_us / total, t_us % total);
        k * self.len() + self.ends_us.partition_point(|&e| e <= rem) as u64
    }
}

/// Which moment of a stream a manifest shows (HLS media playlists and MPDs alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// The whole stream, ended (HLS `ENDLIST`, DASH `type="static"`).
    Vod,
    /// A live window.
    Live {
        /// The channel.
        live: Live,
        /// The segments listed.
        window: Window,
        /// The server's clock, in milliseconds since the Unix epoch (the MPD's
        /// publishTime and UTCTiming).
        now_ms: u64,
    },
}

/// A live channel's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Live {
    /// When global segment 0 started, in milliseconds since the Unix epoch.
    pub epoch_ms: u64,
    /// How far back the window reaches (DVR), in milliseconds.
    pub dvr_window_ms: u64,
}

/// The segments a live playlist lists at one moment: `first..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The oldest segment still listed.
    pub first: u64,
    /// One past the newest complete segment.
    pub end: u64,
}

impl Window {
    /// Whether the window lists nothing (before the channel's first segment is
    /// complete).
    pub fn is_empty(&self) -> bool {
        self.end <= self.first
    }

    /// The newest listed segment.
    pub fn last(&self) -> Option<u64> {
        (!self.is_empty()).then(|| self.end - 1)
    }
}

impl Live {
    /// Microseconds since the epoch at `now_ms` (0 before it).
    pub fn elapsed_us(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.epoch_ms).saturating_mul(1000)
    }

    /// The window at `now_ms`: complete segments whose end lies within the last
    /// `dvr_window_ms`; always at least the newest one.
    pub fn window(&self, tl: &Timeline, now_ms: u64) -> Window {
        let t = self.elapsed_us(now_ms);
        let end = tl.available(t);
        let first = tl
            .available(t.saturating_sub(self.dvr_window_ms.saturating_mul(1000)))
            .min(end.saturating_sub(1));
        Window { first, end }
    }

    /// When global segment `g` is complete, in milliseconds since the Unix epoch
    /// (rounded up).
    pub fn available_at_ms(&self, tl: &Timeline, g: u64) -> u64 {
        self.epoch_ms + tl.end_us(g).div_ceil(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{tests::sample, Container};

    #[test]
    fn loops_over_the_stream() {
        let tl = Timeline::of(&sample(Container::Fmp4, 6));
        assert_eq!(tl.len(), 6);
        assert_eq!(tl.total_us(), 12_000_000);
        assert_eq!(tl.start_us(7), 14_000_000);
        assert_eq!(tl.end_us(7), 16_000_000);
        assert_eq!(tl.split(13), (2, 1));
        assert_eq!(tl.available(0), 0);
        assert_eq!(tl.available(1_999_999), 0);
        assert_eq!(tl.available(2_000_000), 1);
        assert_eq!(tl.available(25_000_000), 12);
    }

    #[test]
    fn window_slides_and_keeps_the_dvr_depth() {
        let tl = Timeline::of(&sample(Container::Fmp4, 6));
        let live = Live {
            epoch_ms: 1_000_000,
            dvr_window_ms: 10_000,
        };
        assert!(live.window(&tl, 999_000).is_empty());
        assert!(live.window(&tl, 1_001_000).is_empty());
        let w = live.window(&tl, 1_002_000);
        assert_eq!((w.first, w.end), (0, 1));
        // 61 s in: 30 segments complete; the window keeps those ending after 51 s.
        let w = live.window(&tl, 1_061_000);
        assert_eq!((w.first, w.end), (25, 30));
        assert_eq!(live.available_at_ms(&tl, 30), 1_062_000);
    }

    #[test]
    fn window_is_never_empty_once_started_even_with_a_tiny_dvr() {
        let tl = Timeline::of(&sample(Container::Ts, 6));
        let live = Live {
            epoch_ms: 0,
            dvr_window_ms: 1,
        };
        let w = live.window(&tl, 100_000);
        assert_eq!(w.last(), Some(49));
        assert_eq!(w.first, 49);
    }
}
