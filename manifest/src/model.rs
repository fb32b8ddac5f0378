//! The canonical stream description: renditions and their segments, as `edge ingest`
//! builds it from a packaged folder and as an origin hands it to its edges, with the
//! validation every description passes before anything is rendered from it.

use serde::{Deserialize, Serialize};

/// Most segments one rendition may list (a week of 1 s segments is 604,800).
pub const MAX_SEGMENTS: usize = 1_000_000;
/// Longest segment accepted, in microseconds.
pub const MAX_SEGMENT_DURATION_US: u64 = 60_000_000;
/// Largest segment accepted, in bytes.
pub const MAX_SEGMENT_BYTES: u64 = 16 << 30;
/// Highest bandwidth accepted, in bits per second.
pub const MAX_BANDWIDTH: u64 = 1_000_000_000_000;
/// Most renditions in one stream.
pub const MAX_RENDITIONS: usize = 64;
/// How far one segment's duration may differ between renditions, in microseconds
/// (audio segments end on frame boundaries, not exactly with the video's).
pub const RENDITION_DRIFT_US: u64 = 250_000;

/// The segment format of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Container {
    /// MPEG-2 transport stream segments (HLS only).
    Ts,
    /// Fragmented MP4 (CMAF) segments with an init segment (HLS and DASH).
    Fmp4,
}

impl Container {
    /// The file extension of a media segment URL.
    pub fn segment_extension(self) -> &'static str {
        match self {
            Container::Ts => "ts",
            Container::Fmp4 => "m4s",
        }
    }
}

/// What a rendition carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    /// Video only.
    Video,
    /// Audio only.
    Audio,
    /// Video and audio multiplexed in one segment.
    Muxed,
}

/// One media segment of a rendition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Segment {
    /// The number the packager gave it (consecutive within a rendition).
    pub number: u64,
    /// Duration in the rendition's timescale.
    pub duration: u64,
    /// Size in bytes.
    pub size: u64,
    /// The file, relative to the stream's folder.
    pub file: String,
}

/// One encoding of the content (a bitrate ladder rung, or the audio track).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rendition {
    /// URL-safe identifier, unique within the stream (`[A-Za-z0-9_-]`, 1..=32).
    pub id: String,
    /// What it carries.
    pub kind: MediaKind,
    /// Peak bandwidth, bits per second.
    pub bandwidth: u64,
    /// Picture width and height, for video.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolution: Option<(u32, u32)>,
    /// RFC 6381 codec string, e.g. `avc1.4d401e` or `avc1.4d401e,mp4a.40.2`.
    pub codecs: String,
    /// Ticks per second of `duration` and `start_time`.
    pub timescale: u32,
    /// Presentation time of the first segment's first sample, in `timescale` ticks
    /// (DASH's presentationTimeOffset).
    #[serde(default)]
    pub start_time: u64,
    /// The init segment's file (fMP4), relative to the stream's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init: Option<String>,
    /// Audio sampling rate, for audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// The segments, in order.
    pub segments: Vec<Segment>,
}

impl Rendition {
    /// A duration in this rendition's ticks, in microseconds (rounded down).
    pub fn ticks_to_us(&self, ticks: u64) -> u64 {
        (u128::from(ticks) * 1_000_000 / u128::from(self.timescale.max(1))) as u64
    }

    /// Whether it carries video.
    pub fn has_video(&self) -> bool {
        matches!(self.kind, MediaKind::Video | MediaKind::Muxed)
    }
}

/// A stream: renditions of one piece of content, all cut at the same segment
/// boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// URL-safe name (`[A-Za-z0-9_-]`, 1..=64): the stream lives at `/streams/NAME/`.
    pub name: String,
    /// The segment format.
    pub container: Container,
    /// The renditions; the first video rendition (else the first) sets the clock.
    pub renditions: Vec<Rendition>,
}

/// What is wrong with a stream description; [`DescriptionError`] names the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Defect {
    /// The stream name is empty, too long or not URL-safe.
    #[error("the name must be 1..=64 characters of [A-Za-z0-9_-]")]
    BadName,
    /// No renditions.
    #[error("no renditions")]
    NoRenditions,
    /// Too many renditions.
    #[error("{0} renditions (at most {MAX_RENDITIONS})")]
    TooManyRenditions(usize),
    /// A rendition id is empty, too long or not URL-safe.
    #[error("rendition id `{0}` must be 1..=32 characters of [A-Za-z0-9_-]")]
    BadRenditionId(String),
    /// Two renditions share an id.
    #[error("rendition id `{0}` appears twice")]
    DuplicateRendition(String),
    /// A rendition without segments.
    #[error("rendition `{0}`: no segments")]
    NoSegments(String),
    /// A rendition with too many segments.
    #[error("rendition `{0}`: {1} segments (at most {MAX_SEGMENTS})")]
    TooManySegments(String, usize),
    /// Segment numbers skip one or more.
    #[error("rendition `{rendition}`: gap: segment {found} follows segment {after}")]
    Gap {
        /// The rendition.
        rendition: String,
        /// The number before the gap.
        after: u64,
        /// The number after it.
        found: u64,
    },
    /// A segment number repeats or goes backwards.
    #[error("rendition `{rendition}`: segment number {number} repeats or goes backwards")]
    DuplicateNumber {
        /// The rendition.
        rendition: String,
        /// The number.
        number: u64,
    },
    /// A zero, negative or too long duration.
    #[error("rendition `{rendition}`: segment {number}: {what}")]
    BadDuration {
        /// The rendition.
        rendition: String,
        /// The segment number.
        number: u64,
        /// What is wrong.
        what: String,
    },
    /// A zero or absurd segment size.
    #[error("rendition `{rendition}`: segment {number}: size {size} bytes is out of range (1..={MAX_SEGMENT_BYTES})")]
    BadSize {
        /// The rendition.
        rendition: String,
        /// The segment number.
        number: u64,
        /// The size.
        size: u64,
    },
    /// Bandwidth zero or absurd.
    #[error("rendition `{0}`: bandwidth {1} is out of range (1..={MAX_BANDWIDTH})")]
    BadBandwidth(String, u64),
    /// Timescale zero.
    #[error("rendition `{0}`: timescale must be positive")]
    BadTimescale(String),
    /// A codecs string that is empty or would break a playlist attribute.
    #[error("rendition `{0}`: codecs `{1}` is empty or has characters other than [A-Za-z0-9.,_-]")]
    BadCodecs(String, String),
    /// fMP4 without an init segment.
    #[error("rendition `{0}`: fMP4 needs an init segment")]
    MissingInit(String),
    /// A file name that is absolute, climbs out of the folder or is not plain.
    #[error("rendition `{0}`: file `{1}` must be a relative path inside the stream folder")]
    BadFile(String, String),
    /// Renditions list different numbers of segments.
    #[error("rendition `{0}` has {1} segments but rendition `{2}` has {3}")]
    SegmentCountMismatch(String, usize, String, usize),
    /// A segment's duration differs between renditions beyond the tolerance.
    #[error("segment {index}: rendition `{rendition}` lasts {us} us but `{primary}` lasts {primary_us} us")]
    DurationMismatch {
        /// Position of the segment.
        index: usize,
        /// The rendition that disagrees.
        rendition: String,
        /// Its duration.
        us: u64,
        /// The clock's rendition.
        primary: String,
        /// Its duration.
        primary_us: u64,
    },
    /// A referenced file is missing or its size differs (found by `edge ingest`).
    #[error("file `{file}`: {what}")]
    File {
        /// The file.
        file: String,
        /// What is wrong.
        what: String,
    },
    /// The playlist or MPD could not be read (found by `edge ingest`).
    #[error("{0}")]
    Source(String),
}

/// A defect of one stream's description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stream `{stream}`: {defect}")]
pub struct DescriptionError {
    /// The stream's name.
    pub stream: String,
    /// What is wrong.
    pub defect: Defect,
}

/// Whether `s` is 1..=`max` characters of `[A-Za-z0-9_-]`.
pub fn url_safe(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn plain_relative(file: &str) -> bool {
    !file.is_empty()
        && file.len() <= 1024
        && !file.starts_with('/')
        && file
            .split('/')
            .all(|s| !s.is_empty() && !s.starts_with('.'))
        && !file.bytes().any(|b| b < 0x20 || b == b'\\' || b == 0x7f)
}

impl Stream {
    /// The rendition whose segment durations set the live clock: the first video
    /// rendition, else the first.
    pub fn primary(&self) -> &Rendition {
        self.renditions
            .iter()
            .find(|r| r.has_video())
            .unwrap_or(&self.renditions[0])
    }

    /// The rendition with this id.
    pub fn rendition(&self, id: &str) -> Option<&Rendition> {
        self.renditions.iter().find(|r| r.id == id)
    }

    /// Segments per rendition (all renditions have the same count once validated).
    pub fn segment_count(&self) -> usize {
        self.primary().segments.len()
    }

    /// Checks everything rendering relies on; the error names the stream and the
    /// first defect found.
    pub fn validate(&self) -> Result<(), DescriptionError> {
        self.check().map_err(|defect| DescriptionError {
            stream: self.name.clone(),
            defect,
        })
    }

    fn check(&self) -> Result<(), Defect> {
        if !url_safe(&self.name, 64) {
            return Err(Defect::BadName);
        }
        if self.renditions.is_empty() {
            return Err(Defect::NoRenditions);
        }
        if self.renditions.len() > MAX_RENDITIONS {
            return Err(Defect::TooManyRenditions(self.renditions.len()));
        }
        for (i, r) in self.renditions.iter().enumerate() {
            if !url_safe(&r.id, 32) {
                return Err(Defect::BadRenditionId(r.id.clone()));
            }
            if self.renditions[..i].iter().any(|o| o.id == r.id) {
                return Err(Defect::DuplicateRendition(r.id.clone()));
            }
            check_rendition(self.container, r)?;
        }
        let primary = self.primary();
        for r in &self.renditions {
            if r.segments.len() != primary.segments.len() {
                return Err(Defect::SegmentCountMismatch(
                    r.id.clone(),
                    r.segments.len(),
                    primary.id.clone(),
                    primary.segments.len(),
                ));
            }
            for (index, (s, p)) in r.segments.iter().zip(&primary.segments).enumerate() {
                let (us, primary_us) = (r.ticks_to_us(s.duration), primary.ticks_to_us(p.duration));
                if us.abs_diff(primary_us) > RENDITION_DRIFT_US {
                    return Err(Defect::DurationMismatch {
                        index,
                        rendition: r.id.clone(),
                        us,
                        primary: primary.id.clone(),
                        primary_us,
                    });
                }
            }
        }
        Ok(())
    }
}

fn check_rendition(container: Container, r: &Rendition) -> Result<(), Defect> {
    let id = || r.id.clone();
    if r.segments.is_empty() {
        return Err(Defect::NoSegments(id()));
    }
    if r.segments.len() > MAX_SEGMENTS {
        return Err(Defect::TooManySegments(id(), r.segments.len()));
    }
    if r.bandwidth == 0 || r.bandwidth > MAX_BANDWIDTH {
        return Err(Defect::BadBandwidth(id(), r.bandwidth));
    }
    if r.timescale == 0 {
        return Err(Defect::BadTimescale(id()));
    }
    if r.codecs.is_empty()
        || r.codecs.len() > 256
        || !r
            .codecs
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".,_-".contains(&b))
    {
        return Err(Defect::BadCodecs(id(), r.codecs.clone()));
    }
    match (&r.init, container) {
        (None, Container::Fmp4) => return Err(Defect::MissingInit(id())),
        (Some(f), _) if !plain_relative(f) => return Err(Defect::BadFile(id(), f.clone())),
        _ => {}
    }
    let mut prev: Option<u64> = None;
    for s in &r.segments {
        if let Some(p) = prev {
            if s.number <= p {
                return Err(Defect::DuplicateNumber {
                    rendition: id(),
                    number: s.number,
                });
            }
            if s.number != p + 1 {
                return Err(Defect::Gap {
                    rendition: id(),
                    after: p,
                    found: s.number,
                });
            }
        }
        prev = Some(s.number);
        let us = r.ticks_to_us(s.duration);
        if s.duration == 0 || us == 0 {
            return Err(Defect::BadDuration {
                rendition: id(),
                number: s.number,
                what: "duration is zero".into(),
            });
        }
        if us > MAX_SEGMENT_DURATION_US {
            return Err(Defect::BadDuration {
                rendition: id(),
                number: s.number,
                what: format!(
                    "duration {:.3} s is longer than {} s",
                    us as f64 / 1e6,
                    MAX_SEGMENT_DURATION_US / 1_000_000
                ),
            });
        }
        if s.size == 0 || s.size > MAX_SEGMENT_BYTES {
            return Err(Defect::BadSize {
                rendition: id(),
                number: s.number,
                size: s.size,
            });
        }
        if !plain_relative(&s.file) {
            return Err(Defect::BadFile(id(), s.file.clone()));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A stream of `n` 2 s segments: video `v` and audio `a` (fMP4), or one muxed
    /// rendition (TS).
    pub(crate) fn sample(container: Container, n: u64) -> Stream {
        let seg = |prefix: &str, i: u64, duration: u64| Segment {
            number: i + 1,
            duration,
            size: 1000 + i,
            file: format!("{prefix}-{i}.m4s"),
        };
        let renditions = match container {
            Container::Fmp4 => vec![
                Rendition {
                    id: "v".into(),
                    kind: MediaKind::Video,
                    bandwidth: 400_000,
                    resolution: Some((640, 360)),
                    codecs: "avc1.4d401e".into(),
                    timescale: 12800,
                    start_time: 0,
                    init: Some("init-v.mp4".into()),
                    sample_rate: None,
                    segments: (0..n).map(|i| seg("v", i, 25600)).collect(),
                },
                Rendition {
                    id: "a".into(),
                    kind: MediaKind::Audio,
                    bandwidth: 64_000,
                    resolution: None,
                    codecs: "mp4a.40.2".into(),
                    timescale: 48000,
                    start_time: 0,
                    init: Some("init-a.mp4".into()),
                    sample_rate: Some(48000),
                    segments: (0..n)
                        .map(|i| seg("a", i, if i % 2 == 0 { 96256 } else { 95232 }))
                        .collect(),
                },
            ],
            Container::Ts => vec![Rendition {
                id: "0".into(),
                kind: MediaKind::Muxed,
                bandwidth: 450_000,
                resolution: Some((640, 360)),
                codecs: "avc1.4d401e,mp4a.40.2".into(),
                timescale: 90000,
                start_time: 126000,
                init: None,
                sample_rate: None,
                segments: (0..n).map(|i| seg("s", i, 180000)).collect(),
            }],
        };
        Stream {
            name: "clip".into(),
            container,
            renditions,
        }
    }

    #[test]
    fn sample_streams_are_valid() {
        sample(Container::Fmp4, 6).validate().unwrap();
        sample(Container::Ts, 6).validate().unwrap();
    }

    fn defect(s: &Stream) -> String {
        s.validate().unwrap_err().to_string()
    }

    #[test]
    fn defects_are_named_with_the_stream() {
        let mut s = sample(Container::Ts, 6);
        s.renditions[0].segments[3].number = 9;
        assert_eq!(
            defect(&s),
            "stream `clip`: rendition `0`: gap: segment 9 follows segment 3"
        );
        let mut s = sample(Container::Ts, 6);
        s.renditions[0].segments[3].number = 3;
        assert!(
            defect(&s).contains("segment number 3 repeats"),
            "{}",
            defect(&s)
        );
        let mut s = sample(Container::Ts, 6);
        s.renditions[0].segments[2].duration = 0;
        assert!(defect(&s).contains("segment 3: duration is zero"));
        let mut s = sample(Container::Ts, 6);
        s.renditions[0].segments[2].duration = 90000 * 3600;
        assert!(defect(&s).contains("longer than 60 s"));
        let mut s = sample(Container::Ts, 6);
        s.renditions[0].segments[0].size = u64::MAX;
        assert!(defect(&s).contains("out of range"));
        let mut s = sample(Container::Ts, 6);
        s.renditions[0].bandwidth = 0;
        assert!(defect(&s).contains("bandwidth 0"));
        let mut s = sample(Container::Fmp4, 6);
        s.renditions[1].segments.pop();
        assert!(defect(&s).contains("has 5 segments"));
        let mut s = sample(Container::Fmp4, 6);
        s.renditions[1].segments[2].duration = 48000 * 3;
        assert!(defect(&s).contains("segment 2: rendition `a` lasts 3000000 us"));
        let mut s = sample(Container::Fmp4, 6);
        s.renditions[0].init = None;
        assert!(defect(&s).contains("needs an init segment"));
        let mut s = sample(Container::Fmp4, 6);
        s.renditions[0].segments[0].file = "../../etc/passwd".into();
        assert!(defect(&s).contains("relative path inside"));
        let mut s = sample(Container::Fmp4, 6);
        s.renditions[0].codecs = "avc1\",x=\"y".into();
        assert!(defect(&s).contains("codecs"));
        let mut s = sample(Container::Fmp4, 6);
        s.name = "a/b".into();
        assert!(defect(&s).contains("the name must be"));
        let mut s = sample(Container::Fmp4, 6);
        s.renditions[1].id = "v".into();
        assert!(defect(&s).contains("appears twice"));
    }

    #[test]
    fn descriptions_round_trip_through_json() {
        let s = sample(Container::Fmp4, 3);
        let json = serde_json::to_string(&s).unwrap();
        let back: Stream = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        // A negative duration cannot even be read.
        let bad = json.replacen("\"duration\":25600", "\"duration\":-25600", 1);
        assert!(serde_json::from_str::<Stream>(&bad).is_err());
    }
}
