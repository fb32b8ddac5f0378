//! HLS rendering through m3u8-rs: the master playlist of a stream and the media
//! playlist of each rendition, for VOD (ENDLIST) and for a live window (sliding
//! MEDIA-SEQUENCE, DISCONTINUITY at every loop, PROGRAM-DATE-TIME, LL-HLS
//! EXT-X-SERVER-CONTROL with CAN-BLOCK-RELOAD).
//!
//! URIs are relative, so a signed path prefix carries over to everything a player
//! fetches: `R/index.m3u8` from the master, `N.ts` / `N.m4s` and `init.mp4` from a
//! media playlist (`N` is the global segment number, see [`crate::clock`]).

use std::fmt::Write as _;

use chrono::{DateTime, FixedOffset};
use m3u8_rs::{
    AlternativeMedia, AlternativeMediaType, ExtTag, Map, MasterPlaylist, MediaPlaylist,
    MediaPlaylistType, MediaSegment, Resolution, VariantStream,
};

use crate::clock::Timeline;
use crate::model::{Container, MediaKind, Rendition, Stream};

/// The audio group id used in master playlists.
const AUDIO_GROUP: &str = "audio";

pub use crate::clock::View;

fn version(stream: &Stream) -> usize {
    match stream.container {
        Container::Ts => 3,
        // EXT-X-MAP in a playlist without I-frames-only needs version 6; 7 for
        // fMP4 as Apple's tools write it.
        Container::Fmp4 => 7,
    }
}

/// The master playlist: one variant per video (or muxed) rendition; audio-only
/// renditions become an EXT-X-MEDIA audio group the variants refer to.
pub fn master(stream: &Stream) -> MasterPlaylist {
    let audio: Vec<&Rendition> = stream
        .renditions
        .iter()
        .filter(|r| r.kind == MediaKind::Audio)
        .collect();
    let visual: Vec<&Rendition> = stream
        .renditions
        .iter()
        .filter(|r| r.kind != MediaKind::Audio)
        .collect();
    let mut pl = MasterPlaylist {
        version: Some(version(stream)),
        independent_segments: true,
        ..Default::default()
    };
    let with_group = !visual.is_empty() && !audio.is_empty();
    if with_group {
        for (i, a) in audio.iter().enumerate() {
            pl.alternatives.push(AlternativeMedia {
                media_type: AlternativeMediaType::Audio,
                uri: Some(format!("{}/index.m3u8", a.id)),
                group_id: AUDIO_GROUP.into(),
                name: a.id.clone(),
                default: i == 0,
                autoselect: true,
                ..Default::default()
            });
        }
    }
    let max_audio = audio.iter().map(|a| a.bandwidth).max().unwrap_or(0);
    let audio_codecs = audio.first().map(|a| a.codecs.as_str());
    let variants: Vec<&Rendition> = if visual.is_empty() { audio } else { visual };
    for r in variants {
        let (bandwidth, codecs) = match (with_group, r.kind) {
            (true, MediaKind::Video) => (
                r.bandwidth + max_audio,
                match audio_codecs {
                    Some(a) => format!("{},{a}", r.codecs),
                    None => r.codecs.clone(),
                },
            ),
            _ => (r.bandwidth, r.codecs.clone()),
        };
        pl.variants.push(VariantStream {
            uri: format!("{}/index.m3u8", r.id),
            bandwidth,
            codecs: Some(codecs),
            resolution: r.resolution.map(|(w, h)| Resolution {
                width: u64::from(w),
                height: u64::from(h),
            }),
            audio: (with_group && r.kind == MediaKind::Video).then(|| AUDIO_GROUP.into()),
            ..Default::default()
        });
    }
    pl
}

/// EXT-X-TARGETDURATION: the longest segment rounded to the nearest second (every
/// EXTINF rounds to at most this), at least 1.
pub fn target_duration_secs(tl: &Timeline) -> u64 {
    (tl.max_duration_us() + 500_000)
        .div_euclid(1_000_000)
        .max(1)
}

fn date_time(ms: u64) -> DateTime<FixedOffset> {
    let utc =
        DateTime::from_timestamp_millis(i64::try_from(ms).unwrap_or(i64::MAX)).unwrap_or_default();
    utc.fixed_offset()
}

/// The media playlist of rendition `r` of `stream` at `view`.
pub fn media(stream: &Stream, r: &Rendition, tl: &Timeline, view: View) -> MediaPlaylist {
    let ext = stream.container.segment_extension();
    let mut pl = MediaPlaylist {
        version: Some(version(stream)),
        target_duration: target_duration_secs(tl),
        independent_segments: true,
        ..Default::default()
    };
    let seg = |g: u64| {
        let (_, i) = tl.split(g);
        let mut uri = String::with_capacity(24);
        let _ = write!(uri, "{g}.{ext}");
        MediaSegment {
            uri,
            duration: (r.segments[i].duration as f64 / f64::from(r.timescale)) as f32,
            ..Default::default()
        }
    };
    match view {
        View::Vod => {
            pl.playlist_type = Some(MediaPlaylistType::Vod);
            pl.end_list = true;
            pl.segments = (0..tl.len()).map(seg).collect();
        }
        View::Live { live, window, .. } => {
            pl.media_sequence = window.first;
            // The loop of the first listed segment: one DISCONTINUITY per loop
            // boundary before it has left the playlist.
            pl.discontinuity_sequence = tl.split(window.first).0;
            pl.segments = (window.first..window.end)
                .map(|g| {
                    let mut s = seg(g);
                    let starts_loop = tl.split(g).1 == 0 && g > 0;
                    if g == window.first || starts_loop {
                        s.program_date_time =
                            Some(date_time(live.epoch_ms + tl.start_us(g) / 1000));
                    }
                    s.discontinuity = starts_loop && g != window.first;
                    s
                })
                .collect();
            if let Some(first) = pl.segments.first_mut() {
                first.unknown_tags.push(ExtTag {
                    tag: "X-SERVER-CONTROL".into(),
                    rest: Some("CAN-BLOCK-RELOAD=YES".into()),
                });
            }
        }
    }
    if let (Some(first), Some(_)) = (pl.segments.first_mut(), &r.init) {
        first.map = Some(Map {
            uri: "init.mp4".into(),
            ..Default::default()
        });
    }
    pl
}

/// Writes a master playlist.
pub fn write_master(pl: &MasterPlaylist, out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = pl.write_to(out);
}

/// Writes a media playlist.
pub fn write_media(pl: &MediaPlaylist, out: &mut Vec<u8>) {
    let _ = pl.write_to(out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Live;
    use crate::model::tests::sample;

    fn parse_media(bytes: &[u8]) -> MediaPlaylist {
        m3u8_rs::parse_media_playlist_res(bytes).expect("parses")
    }

    #[test]
    fn vod_media_playlists_round_trip() {
        for c in [Container::Ts, Container::Fmp4] {
            let s = sample(c, 6);
            let tl = Timeline::of(&s);
            for r in &s.renditions {
                let pl = media(&s, r, &tl, View::Vod);
                let mut out = Vec::new();
                write_media(&pl, &mut out);
                assert_eq!(parse_media(&out), pl, "{}", String::from_utf8_lossy(&out));
                let text = String::from_utf8(out).unwrap();
                assert!(text.contains("#EXT-X-ENDLIST"));
                assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD"));
                assert!(text.contains(&format!("\n5.{}\n", c.segment_extension())));
                assert_eq!(
                    text.contains("#EXT-X-MAP:URI=\"init.mp4\""),
                    c == Container::Fmp4
                );
            }
        }
    }

    #[test]
    fn master_groups_audio_and_round_trips() {
        let s = sample(Container::Fmp4, 6);
        let pl = master(&s);
        let mut out = Vec::new();
        write_master(&pl, &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        assert_eq!(
            m3u8_rs::parse_master_playlist_res(&out).unwrap(),
            pl,
            "{text}"
        );
        assert!(text.contains("TYPE=AUDIO"), "{text}");
        assert!(text.contains("CODECS=\"avc1.4d401e,mp4a.40.2\""), "{text}");
        assert!(text.contains("BANDWIDTH=464000"), "{text}");
        assert!(text.contains("v/index.m3u8"), "{text}");
        let ts = sample(Container::Ts, 2);
        let pl = master(&ts);
        assert_eq!(pl.variants.len(), 1);
        assert!(pl.alternatives.is_empty());
    }

    #[test]
    fn live_window_carries_sequence_discontinuities_and_dates() {
        let s = sample(Container::Ts, 6);
        let tl = Timeline::of(&s);
        let live = Live {
            epoch_ms: 1_700_000_000_000,
            dvr_window_ms: 10_000,
        };
        // 61 s in: segments 25..30; 30 would start loop 5 (not yet complete), 24
        // started loop 4 and has left the window.
        let window = live.window(&tl, live.epoch_ms + 73_000);
        assert_eq!((window.first, window.end), (31, 36));
        let pl = media(
            &s,
            &s.renditions[0],
            &tl,
            View::Live {
                live,
                window,
                now_ms: 0,
            },
        );
        let mut out = Vec::new();
        write_media(&pl, &mut out);
        assert_eq!(parse_media(&out), pl);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:31\n"), "{text}");
        assert!(text.contains("#EXT-X-DISCONTINUITY-SEQUENCE:5\n"), "{text}");
        assert!(!text.contains("#EXT-X-DISCONTINUITY\n"), "{text}");
        assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES"));
        assert!(!text.contains("ENDLIST"));
        assert!(
            text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:14:22.000Z"),
            "{text}"
        );
        // Across a loop boundary: 36 starts loop 6.
        let window = live.window(&tl, live.epoch_ms + 75_000);
        let pl = media(
            &s,
            &s.renditions[0],
            &tl,
            View::Live {
                live,
                window,
                now_ms: 0,
            },
        );
        let mut out = Vec::new();
        write_media(&pl, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("#EXT-X-DISCONTINUITY\n#EXT-X-PROGRAM-DATE-TIME"),
            "{text}"
        );
        assert_eq!(parse_media(text.as_bytes()), pl);
    }

    #[test]
    fn target_duration_rounds_to_nearest() {
        let mut s = sample(Container::Ts, 3);
        s.renditions[0].segments[1].duration = 90000 * 2 + 40000; // 2.44 s
        assert_eq!(target_duration_secs(&Timeline::of(&s)), 2);
        s.renditions[0].segments[1].duration = 90000 * 2 + 45000; // 2.5 s
        assert_eq!(target_duration_secs(&Timeline::of(&s)), 3);
    }
}
