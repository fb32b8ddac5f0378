//! `edge ingest`: builds a stream description from a folder packaged by ffmpeg (or
//! any packager writing HLS playlists or a single-period DASH MPD with a
//! SegmentTemplate), checking that every referenced file exists and that the
//! declared durations match the media.
//!
//! Playlists are read with m3u8-rs, MPDs with dash-mpd; segment durations are
//! measured from the media itself ([`manifest::probe`]) and those measurements, not
//! the declarations, go into the description. Every error names the stream and the
//! defect.

use std::path::{Path, PathBuf};

use manifest::model::{Defect, DescriptionError, MAX_SEGMENTS, MAX_SEGMENT_BYTES};
use manifest::probe::{self, Track};
use manifest::{Container, MediaKind, Rendition, Segment, Stream};

/// How far a declared segment duration may differ from the measured one, in
/// microseconds.
pub const DURATION_TOLERANCE_US: u64 = 250_000;
/// Largest playlist or MPD read.
const MAX_MANIFEST_BYTES: u64 = 64 << 20;

type Result<T> = std::result::Result<T, Defect>;

/// Ingests the packaged folder `dir` as stream `name`, validated.
pub fn ingest(dir: &Path, name: &str) -> std::result::Result<Stream, DescriptionError> {
    let err = |defect| DescriptionError {
        stream: name.to_string(),
        defect,
    };
    let stream = ingest_inner(dir, name).map_err(err)?;
    stream.validate()?;
    Ok(stream)
}

fn ingest_inner(dir: &Path, name: &str) -> Result<Stream> {
    let meta = std::fs::metadata(dir)
        .map_err(|e| Defect::Source(format!("folder {}: {e}", dir.display())))?;
    if !meta.is_dir() {
        return Err(Defect::Source(format!("{} is not a folder", dir.display())));
    }
    let mut mpds = Vec::new();
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Defect::Source(format!("folder {}: {e}", dir.display())))?
        .flatten()
    {
        let n = entry.file_name();
        if n.to_string_lossy().ends_with(".mpd") {
            mpds.push(PathBuf::from(n));
        }
    }
    if dir.join("master.m3u8").is_file() {
        return hls(dir, name, "master.m3u8");
    }
    match mpds.len() {
        1 => dash(dir, name, &mpds[0]),
        0 if dir.join("index.m3u8").is_file() => hls(dir, name, "index.m3u8"),
        0 => Err(Defect::Source(format!(
            "{} has no master.m3u8, index.m3u8 or .mpd",
            dir.display()
        ))),
        _ => Err(Defect::Source(format!(
            "{} has {} .mpd files; put one stream per folder",
            dir.display(),
            mpds.len()
        ))),
    }
}

fn read_small(dir: &Path, file: &str) -> Result<Vec<u8>> {
    let path = dir.join(file);
    let meta = std::fs::metadata(&path).map_err(|e| Defect::File {
        file: file.to_string(),
        what: e.to_string(),
    })?;
    if meta.len() > MAX_MANIFEST_BYTES {
        return Err(Defect::File {
            file: file.to_string(),
            what: format!("{} bytes is too large for a manifest", meta.len()),
        });
    }
    std::fs::read(&path).map_err(|e| Defect::File {
        file: file.to_string(),
        what: e.to_string(),
    })
}

/// A referenced media file: must be a regular, non-empty file of sane size.
fn media_file(dir: &Path, file: &str) -> Result<(u64, Vec<u8>)> {
    let bad = |what: String| Defect::File {
        file: file.to_string(),
        what,
    };
    if file.contains("://") || file.starts_with('/') || file.split('/').any(|s| s == "..") {
        return Err(bad("must be a relative path inside the folder".into()));
    }
    let path = dir.join(file);
    let meta = std::fs::metadata(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("missing".into()),
        _ => bad(e.to_string()),
    })?;
    if !meta.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if meta.len() == 0 || meta.len() > MAX_SEGMENT_BYTES {
        return Err(bad(format!("size {} bytes is out of range", meta.len())));
    }
    let bytes = std::fs::read(&path).map_err(|e| bad(e.to_string()))?;
    Ok((meta.len(), bytes))
}

fn check_declared(file: &str, declared_us: u64, measured_us: u64) -> Result<()> {
    if declared_us.abs_diff(measured_us) > DURATION_TOLERANCE_US {
        return Err(Defect::File {
            file: file.to_string(),
            what: format!(
                "declared duration {:.3} s but the media lasts {:.3} s",
                declared_us as f64 / 1e6,
                measured_us as f64 / 1e6
            ),
        });
    }
    Ok(())
}

fn kind_of_codecs(codecs: &str) -> MediaKind {
    let video = codecs.split(',').any(|c| {
        let c = c.trim();
        ["avc1", "avc3", "hvc1", "hev1", "vp09", "av01", "dvh1"]
            .iter()
            .any(|p| c.starts_with(p))
    });
    let audio = codecs.split(',').any(|c| {
        let c = c.trim();
        ["mp4a", "ac-3", "ec-3", "opus", "flac"]
            .iter()
            .any(|p| c.starts_with(p))
    });
    match (video, audio) {
        (true, true) => MediaKind::Muxed,
        (false, true) => MediaKind::Audio,
        _ => MediaKind::Video,
    }
}

/// The track whose timing a rendition takes: video, else the first.
fn timing_track(tracks: &[Track]) -> Track {
    *tracks
        .iter()
        .find(|t| &t.handler == b"vide")
        .unwrap_or(&tracks[0])
}

/// What measuring a rendition's segments found.
struct Measured {
    /// Ticks per second of the durations.
    timescale: u32,
    /// Presentation time of the first segment, in ticks.
    start_time: u64,
    /// Per segment: (duration in ticks, size in bytes).
    segments: Vec<(u64, u64)>,
}

/// Measures fMP4 segments against `init`.
fn measure_fmp4(dir: &Path, init_file: &str, files: &[(String, u64)]) -> Result<Measured> {
    let (_, init) = media_file(dir, init_file)?;
    let tracks = probe::init_tracks(&init).map_err(|e| Defect::File {
        file: init_file.to_string(),
        what: e.to_string(),
    })?;
    let track = timing_track(&tracks);
    let mut out = Vec::with_capacity(files.len());
    let mut start = None;
    for (file, declared_us) in files {
        let (size, bytes) = media_file(dir, file)?;
        let frags = probe::fragments(&bytes, &tracks).map_err(|e| Defect::File {
            file: file.clone(),
            what: e.to_string(),
        })?;
        let f = frags
            .iter()
            .find(|f| f.track == track.id)
            .ok_or_else(|| Defect::File {
                file: file.clone(),
                what: format!("no fragment of track {}", track.id),
            })?;
        start.get_or_insert(
            f.decode_time
                .saturating_add_signed(f.first_composition_offset),
        );
        let measured_us = (u128::from(f.duration) * 1_000_000 / u128::from(track.timescale)) as u64;
        check_declared(file, *declared_us, measured_us)?;
        out.push((f.duration, size));
    }
    Ok(Measured {
        timescale: track.timescale,
        start_time: start.unwrap_or(0),
        segments: out,
    })
}

/// Measures TS segments (90 kHz).
fn measure_ts(dir: &Path, files: &[(String, u64)]) -> Result<Measured> {
    let mut out = Vec::with_capacity(files.len());
    let mut start = None;
    for (file, declared_us) in files {
        let (size, bytes) = media_file(dir, file)?;
        let span = probe::ts_span(&bytes).map_err(|e| Defect::File {
            file: file.clone(),
            what: e.to_string(),
        })?;
        start.get_or_insert(span.first_pts);
        check_declared(file, *declared_us, span.duration * 1_000_000 / 90_000)?;
        out.push((span.duration, size));
    }
    Ok(Measured {
        timescale: 90_000,
        start_time: start.unwrap_or(0),
        segments: out,
    })
}

fn rendition_from_media_playlist(
    dir: &Path,
    playlist: &str,
    id: String,
    bandwidth: u64,
    codecs: Option<String>,
    resolution: Option<(u32, u32)>,
) -> Result<(Container, Rendition)> {
    let text = read_small(dir, playlist)?;
    let pl = m3u8_rs::parse_media_playlist_res(&text).map_err(|_| Defect::File {
        file: playlist.to_string(),
        what: "not an HLS media playlist".into(),
    })?;
    if pl.segments.is_empty() {
        return Err(Defect::NoSegments(id));
    }
    if pl.segments.len() > MAX_SEGMENTS {
        return Err(Defect::TooManySegments(id, pl.segments.len()));
    }
    // Segment URIs are relative to the playlist.
    let base = Path::new(playlist)
        .parent()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let join = |uri: &str| {
        if base.is_empty() {
            uri.to_string()
        } else {
            format!("{base}/{uri}")
        }
    };
    let mut files = Vec::with_capacity(pl.segments.len());
    for (i, s) in pl.segments.iter().enumerate() {
        let number = pl.media_sequence + i as u64;
        if s.byte_range.is_some() {
            return Err(Defect::Source(format!(
                "{playlist}: segment {number}: byte-range segments are not supported"
            )));
        }
        if !(s.duration.is_finite() && s.duration > 0.0) {
            return Err(Defect::BadDuration {
                rendition: id.clone(),
                number,
                what: format!("declared duration {} is not positive", s.duration),
            });
        }
        files.push((join(&s.uri), (f64::from(s.duration) * 1e6) as u64));
    }
    let init = pl
        .segments
        .iter()
        .find_map(|s| s.map.as_ref())
        .map(|m| join(&m.uri));
    let codecs = codecs.ok_or_else(|| {
        Defect::Source(format!(
            "{playlist}: no CODECS for rendition `{id}` (add CODECS to the master playlist)"
        ))
    })?;
    let (container, m) = match &init {
        Some(init) => (Container::Fmp4, measure_fmp4(dir, init, &files)?),
        None => (Container::Ts, measure_ts(dir, &files)?),
    };
    let (timescale, start_time, measured) = (m.timescale, m.start_time, m.segments);
    let segments = files
        .into_iter()
        .zip(measured)
        .enumerate()
        .map(|(i, ((file, _), (duration, size)))| Segment {
            number: pl.media_sequence + i as u64,
            duration,
            size,
            file,
        })
        .collect();
    Ok((
        container,
        Rendition {
            id,
            kind: kind_of_codecs(&codecs),
            bandwidth,
            resolution,
            codecs,
            timescale,
            start_time,
            init,
            sample_rate: None,
            segments,
        },
    ))
}

fn hls(dir: &Path, name: &str, entry: &str) -> Result<Stream> {
    let text = read_small(dir, entry)?;
    let parsed = m3u8_rs::parse_playlist_res(&text).map_err(|_| Defect::File {
        file: entry.to_string(),
        what: "not an HLS playlist".into(),
    })?;
    let mut renditions = Vec::new();
    let mut container = None;
    let mut add = |c: Container, r: Rendition| -> Result<()> {
        match container {
            Some(prev) if prev != c => {
                Err(Defect::Source("renditions mix TS and fMP4 segments".into()))
            }
            _ => {
                container = Some(c);
                renditions.push(r);
                Ok(())
            }
        }
    };
    match parsed {
        m3u8_rs::Playlist::MasterPlaylist(m) => {
            for (i, a) in m
                .alternatives
                .iter()
                .filter(|a| a.media_type == m3u8_rs::AlternativeMediaType::Audio)
                .enumerate()
            {
                let Some(uri) = &a.uri else { continue };
                // The variant's CODECS lists the audio codec too; take the audio one.
                let codecs = m
                    .variants
                    .iter()
                    .find_map(|v| v.codecs.as_deref())
                    .and_then(|c| c.split(',').find(|c| kind_of_codecs(c) == MediaKind::Audio))
                    .map(|c| c.trim().to_string());
                let (c, r) =
                    rendition_from_media_playlist(dir, uri, format!("a{i}"), 64_000, codecs, None)?;
                add(c, r)?;
            }
            for (i, v) in m.variants.iter().filter(|v| !v.is_i_frame).enumerate() {
                let resolution = v.resolution.map(|r| {
                    (
                        r.width.min(u32::MAX.into()) as u32,
                        r.height.min(u32::MAX.into()) as u32,
                    )
                });
                let (c, mut r) = rendition_from_media_playlist(
                    dir,
                    &v.uri,
                    i.to_string(),
                    v.bandwidth,
                    v.codecs.clone(),
                    resolution,
                )?;
                if v.audio.is_some() && r.kind == MediaKind::Muxed {
                    // Audio comes from the group: this rendition is video only.
                    r.kind = MediaKind::Video;
                    r.codecs = r
                        .codecs
                        .split(',')
                        .filter(|c| kind_of_codecs(c) != MediaKind::Audio)
                        .collect::<Vec<_>>()
                        .join(",");
                }
                add(c, r)?;
            }
        }
        m3u8_rs::Playlist::MediaPlaylist(_) => {
            return Err(Defect::Source(format!(
                "{entry} is a media playlist: add a master.m3u8 with BANDWIDTH and CODECS"
            )));
        }
    }
    let container = container.ok_or(Defect::NoRenditions)?;
    // The clock rendition goes first in ladders; keep the packager's order otherwise.
    renditions.sort_by_key(|r| r.kind == MediaKind::Audio);
    Ok(Stream {
        name: name.to_string(),
        container,
        renditions,
    })
}

/// Expands a DASH SegmentTemplate string for one representation and number.
fn expand(template: &str, rep_id: &str, bandwidth: u64, number: u64) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        let j = rest
            .find('$')
            .ok_or_else(|| Defect::Source(format!("unterminated `$` in template `{template}`")))?;
        let (ident, fmt) = match rest[..j].split_once('%') {
            Some((a, f)) => (a, Some(f)),
            None => (&rest[..j], None),
        };
        let value = match ident {
            "" => {
                out.push('$');
                rest = &rest[j + 1..];
                continue;
            }
            "RepresentationID" => {
                out.push_str(rep_id);
                rest = &rest[j + 1..];
                continue;
            }
            "Number" => number,
            "Bandwidth" => bandwidth,
            other => {
                return Err(Defect::Source(format!(
                    "template identifier `${other}$` is not supported"
                )))
            }
        };
        match fmt {
            None => out.push_str(&value.to_string()),
            Some(f) => {
                let width: usize = f
                    .strip_prefix('0')
                    .and_then(|w| w.strip_suffix('d'))
                    .and_then(|w| w.parse().ok())
                    .filter(|w| *w <= 32)
                    .ok_or_else(|| {
                        Defect::Source(format!("template format `%{f}` is not supported"))
                    })?;
                out.push_str(&format!("{value:0width$}"));
            }
        }
        rest = &rest[j + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn dash(dir: &Path, name: &str, mpd_file: &Path) -> Result<Stream> {
    let mpd_name = mpd_file.to_string_lossy().into_owned();
    let text = read_small(dir, &mpd_name)?;
    let text = String::from_utf8(text).map_err(|_| Defect::File {
        file: mpd_name.clone(),
        what: "not UTF-8".into(),
    })?;
    let mpd = dash_mpd_core::parse(&text).map_err(|e| Defect::File {
        file: mpd_name.clone(),
        what: format!("not a DASH MPD: {e}"),
    })?;
    if mpd.mpdtype.as_deref() == Some("dynamic") {
        return Err(Defect::Source(format!(
            "{mpd_name}: a dynamic (live) MPD cannot be ingested"
        )));
    }
    let [period] = mpd.periods.as_slice() else {
        return Err(Defect::Source(format!(
            "{mpd_name}: {} periods; only single-period MPDs are ingested",
            mpd.periods.len()
        )));
    };
    let total_us = mpd
        .mediaPresentationDuration
        .or(period.duration)
        .map(|d| d.as_micros() as u64);
    let mut renditions = Vec::new();
    for set in &period.adaptations {
        for rep in &set.representations {
            let id = rep.id.clone().unwrap_or_default();
            let bandwidth = rep.bandwidth.unwrap_or(0);
            let codecs = rep
                .codecs
                .clone()
                .or_else(|| set.codecs.clone())
                .ok_or_else(|| {
                    Defect::Source(format!("{mpd_name}: representation `{id}` has no codecs"))
                })?;
            let st = rep
                .SegmentTemplate
                .as_ref()
                .or(set.SegmentTemplate.as_ref())
                .ok_or_else(|| {
                    Defect::Source(format!(
                        "{mpd_name}: representation `{id}` has no SegmentTemplate"
                    ))
                })?;
            let timescale = st.timescale.unwrap_or(1).max(1);
            let start_number = st.startNumber.unwrap_or(1);
            let media = st.media.as_deref().ok_or_else(|| {
                Defect::Source(format!(
                    "{mpd_name}: representation `{id}`: no media template"
                ))
            })?;
            let init = st
                .initialization
                .as_deref()
                .map(|t| expand(t, &id, bandwidth, 0))
                .transpose()?
                .ok_or_else(|| Defect::MissingInit(id.clone()))?;
            // Declared durations, in microseconds.
            let declared: Vec<u64> = match (&st.SegmentTimeline, st.duration) {
                (Some(tl), _) => {
                    let mut v = Vec::new();
                    for s in &tl.segments {
                        let repeat = s.r.unwrap_or(0);
                        if !(0..=MAX_SEGMENTS as i64).contains(&repeat) {
                            return Err(Defect::Source(format!(
                                "{mpd_name}: representation `{id}`: S@r={repeat} is not supported"
                            )));
                        }
                        for _ in 0..=repeat {
                            v.push((u128::from(s.d) * 1_000_000 / u128::from(timescale)) as u64);
                            if v.len() > MAX_SEGMENTS {
                                return Err(Defect::TooManySegments(id.clone(), v.len()));
                            }
                        }
                    }
                    v
                }
                (None, Some(d)) if d > 0.0 && d.is_finite() => {
                    let d_us = (d * 1e6 / timescale as f64) as u64;
                    let total = total_us.ok_or_else(|| {
                        Defect::Source(format!("{mpd_name}: no mediaPresentationDuration"))
                    })?;
                    if d_us == 0 {
                        return Err(Defect::BadDuration {
                            rendition: id.clone(),
                            number: start_number,
                            what: "SegmentTemplate@duration is zero".into(),
                        });
                    }
                    let n = total.div_ceil(d_us);
                    if n as usize > MAX_SEGMENTS {
                        return Err(Defect::TooManySegments(id.clone(), n as usize));
                    }
                    (0..n)
                        .map(|i| if i + 1 < n { d_us } else { total - d_us * (n - 1) })
                        .collect()
                }
                _ => {
                    return Err(Defect::Source(format!(
                        "{mpd_name}: representation `{id}`: SegmentTemplate needs a SegmentTimeline or a positive @duration"
                    )))
                }
            };
            let files = declared
                .iter()
                .enumerate()
                .map(|(i, &d)| Ok((expand(media, &id, bandwidth, start_number + i as u64)?, d)))
                .collect::<Result<Vec<_>>>()?;
            let Measured {
                timescale: ts,
                start_time,
                segments: measured,
            } = measure_fmp4(dir, &init, &files)?;
            let content = set
                .contentType
                .as_deref()
                .or(rep.contentType.as_deref())
                .or(rep.mimeType.as_deref())
                .or(set.mimeType.as_deref())
                .unwrap_or("");
            let kind = if content.starts_with("audio") {
                MediaKind::Audio
            } else {
                kind_of_codecs(&codecs)
            };
            let resolution = match (rep.width.or(set.width), rep.height.or(set.height)) {
                (Some(w), Some(h)) => {
                    Some((w.min(u32::MAX.into()) as u32, h.min(u32::MAX.into()) as u32))
                }
                _ => None,
            };
            let sample_rate = rep
                .audioSamplingRate
                .as_deref()
                .or(set.audioSamplingRate.as_deref())
                .and_then(|r| r.parse().ok());
            renditions.push(Rendition {
                id: id.clone(),
                kind,
                bandwidth,
                resolution,
                codecs,
                timescale: ts,
                start_time,
                init: Some(init),
                sample_rate,
                segments: files
                    .into_iter()
                    .zip(measured)
                    .enumerate()
                    .map(|(i, ((file, _), (duration, size)))| Segment {
                        number: start_number + i as u64,
                        duration,
                        size,
                        file,
                    })
                    .collect(),
            });
        }
    }
    renditions.sort_by_key(|r| r.kind == MediaKind::Audio);
    Ok(Stream {
        name: name.to_string(),
        container: Container::Fmp4,
        renditions,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_templates() {
        assert_eq!(
            expand("chunk-$RepresentationID$-$Number%05d$.m4s", "0", 1, 7).unwrap(),
            "chunk-0-00007.m4s"
        );
        assert_eq!(
            expand("$Bandwidth$/$Number$.m4s", "v", 800, 12).unwrap(),
            "800/12.m4s"
        );
        assert_eq!(expand("a$$b", "v", 0, 0).unwrap(), "a$b");
        assert!(expand("$Time$.m4s", "v", 0, 0).is_err());
        assert!(expand("$Number", "v", 0, 0).is_err());
        assert!(expand("$Number%5x$", "v", 0, 0).is_err());
    }

    #[test]
    fn codecs_decide_the_kind() {
        assert_eq!(kind_of_codecs("avc1.4d401e,mp4a.40.2"), MediaKind::Muxed);
        assert_eq!(kind_of_codecs("mp4a.40.2"), MediaKind::Audio);
        assert_eq!(kind_of_codecs("hvc1.1.6.L93.B0"), MediaKind::Video);
    }

    fn bundled(sub: &str) -> PathBuf {
        crate::demo::bundled_root().join("content").join(sub)
    }

    #[test]
    fn ingests_the_bundled_clip_in_three_packagings() {
        let ts = ingest(&bundled("hls_ts"), "ts").unwrap();
        assert_eq!(ts.container, Container::Ts);
        assert_eq!(ts.renditions.len(), 1);
        assert_eq!(ts.renditions[0].kind, MediaKind::Muxed);
        assert_eq!(ts.segment_count(), 6);
        let total: u64 = ts.renditions[0].segments.iter().map(|s| s.duration).sum();
        assert!((total as i64 - 12 * 90_000).abs() < 9_000, "{total}");

        let fmp4 = ingest(&bundled("hls_fmp4"), "fmp4").unwrap();
        assert_eq!(fmp4.container, Container::Fmp4);
        assert_eq!(fmp4.renditions[0].init.as_deref(), Some("init.mp4"));

        let dash = ingest(&bundled("dash"), "dash").unwrap();
        assert_eq!(dash.renditions.len(), 2);
        assert_eq!(dash.renditions[0].kind, MediaKind::Video);
        assert_eq!(dash.renditions[1].kind, MediaKind::Audio);
        assert_eq!(dash.renditions[1].segments[0].file, "chunk-1-00001.m4s");
        assert_eq!(dash.renditions[0].init.as_deref(), Some("init-0.m4s"));
        let v = &dash.renditions[0];
        let total_us = v.ticks_to_us(v.segments.iter().map(|s| s.duration).sum());
        assert!(total_us.abs_diff(12_000_000) < 100_000, "{total_us}");
    }
}
