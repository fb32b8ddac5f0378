//! The signalling policy: one function, [`decide`], from (request, stream state,
//! clock) to what the edge answers, including every deliberate 4xx.
//!
//! | request | answer | Cache-Control |
//! |---|---|---|
//! | path not under a published stream, unknown rendition or file | 404 | `public, max-age=2` |
//! | signed stream, token missing, malformed, unknown key, bad MAC or expired | 403 | `no-store` |
//! | `_HLS_msn` / `_HLS_part` not a number, repeated, part without msn | 400 | `no-store` |
//! | live segment not yet complete (future) | 404 | `public, max-age=1` |
//! | live channel not yet started | 404 | `public, max-age=1` |
//! | live segment older than the DVR window | 410 | `public, max-age=3600` |
//! | `_HLS_msn` beyond the last segment + 2 | 400 | `no-store` |
//! | `_HLS_msn` = last + 1 or + 2 | held until that segment is complete, then 200 (at the hold limit: 200 with the current playlist) | as 200 |
//! | live media playlist | 200 | `public, max-age=` half a target duration (blocking answers: 6 target durations) |
//! | live MPD | 200 | `public, max-age=` half a target duration |
//! | VOD playlists and MPD, master playlists | 200 | `public, max-age=300` |
//! | init and media segments | 200 | `public, max-age=86400` |
//! | the stream description (`stream.json`, for edges) | 200 | `public, max-age=5` |
//!
//! Checks run in this order: path, stream, token, query, rendition and resource,
//! then time. The edge keeps the connection open after every one of these answers
//! and adds CORS headers to them.

use crate::clock::{Live, Timeline, View, Window};
use crate::model::{Container, Stream};
use crate::query::{self, Blocking};
use crate::token::{SigningKeys, TokenError};

/// A stream as an edge publishes it.
#[derive(Debug)]
pub struct Published {
    /// The validated description.
    pub stream: Stream,
    /// Its timing.
    pub timeline: Timeline,
    /// `Some` for a live channel looping over the stream.
    pub live: Option<Live>,
    /// Whether requests need a signed token.
    pub signed: bool,
    /// The prefix tokens sign: `/streams/NAME/`.
    pub prefix: String,
}

impl Published {
    /// Publishes a validated stream.
    pub fn new(stream: Stream, live: Option<Live>, signed: bool) -> Self {
        Self {
            timeline: Timeline::of(&stream),
            prefix: format!("/streams/{}/", stream.name),
            stream,
            live,
            signed,
        }
    }

    /// What a manifest of this stream shows at `now_ms`.
    pub fn view(&self, now_ms: u64) -> View {
        match self.window(now_ms) {
            None => View::Vod,
            Some((live, window)) => View::Live {
                live,
                window,
                now_ms,
            },
        }
    }

    /// The live window at `now_ms`, for a live channel.
    pub fn window(&self, now_ms: u64) -> Option<(Live, Window)> {
        self.live.map(|l| (l, l.window(&self.timeline, now_ms)))
    }

    fn target_secs(&self) -> u64 {
        crate::hls::target_duration_secs(&self.timeline)
    }
}

/// What an origin publishes about a stream at `stream.json`, so an edge renders the
/// same manifests: the description, the live settings and whether tokens are needed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Publication {
    /// The description.
    pub stream: Stream,
    /// The live channel's settings, `None` for VOD.
    pub live: Option<Live>,
    /// Whether requests need a signed token.
    pub signed: bool,
}

impl Published {
    /// What `stream.json` carries.
    pub fn publication(&self) -> Publication {
        Publication {
            stream: self.stream.clone(),
            live: self.live,
            signed: self.signed,
        }
    }

    /// Publishes what an origin described, after validating it (`name` is the name
    /// this edge serves it under and must match).
    pub fn from_publication(p: Publication, name: &str) -> Result<Self, crate::DescriptionError> {
        p.stream.validate()?;
        if p.stream.name != name {
            return Err(crate::DescriptionError {
                stream: name.to_string(),
                defect: crate::model::Defect::Source(format!(
                    "the origin describes stream `{}`",
                    p.stream.name
                )),
            });
        }
        Ok(Self::new(p.stream, p.live, p.signed))
    }
}

/// A request to the manifest routes.
#[derive(Debug, Clone, Copy)]
pub struct Request<'r> {
    /// The normalised path relative to the root (no leading `/`), e.g.
    /// `streams/clip/v/index.m3u8` or `s/TOKEN/streams/clip/master.m3u8`.
    pub path: &'r str,
    /// The raw query string (after `?`).
    pub query: &'r [u8],
    /// Whether a blocking request may still be held (false once the hold limit
    /// has passed: then the current playlist is answered).
    pub may_hold: bool,
}

/// Why a request gets a 4xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Nothing published at this path (404).
    Unknown,
    /// A token problem (403).
    Token(TokenError),
    /// A malformed query (400).
    BadQuery(query::QueryError),
    /// The live segment is not complete yet (404, short max-age).
    Future,
    /// The live channel has no complete segment yet (404, short max-age).
    NotStarted,
    /// The live segment left the DVR window (410).
    Gone,
    /// `_HLS_msn` more than two segments beyond the last (400).
    TooFarAhead,
}

impl Refusal {
    /// The status code.
    pub fn status(self) -> u16 {
        match self {
            Refusal::Unknown | Refusal::Future | Refusal::NotStarted => 404,
            Refusal::Token(_) => 403,
            Refusal::BadQuery(_) | Refusal::TooFarAhead => 400,
            Refusal::Gone => 410,
        }
    }

    /// The Cache-Control value.
    pub fn cache_control(self) -> &'static str {
        match self {
            Refusal::Unknown => "public, max-age=2",
            Refusal::Future | Refusal::NotStarted => "public, max-age=1",
            Refusal::Gone => "public, max-age=3600",
            Refusal::Token(_) | Refusal::BadQuery(_) | Refusal::TooFarAhead => "no-store",
        }
    }

    /// A short text body for people reading the answer.
    pub fn text(self) -> &'static str {
        match self {
            Refusal::Unknown => "not found\n",
            Refusal::Token(TokenError::Expired) => "token expired\n",
            Refusal::Token(TokenError::Missing) => "token required\n",
            Refusal::Token(_) => "bad token\n",
            Refusal::BadQuery(_) => "bad query parameter\n",
            Refusal::Future => "segment not available yet\n",
            Refusal::NotStarted => "stream not started yet\n",
            Refusal::Gone => "segment left the DVR window\n",
            Refusal::TooFarAhead => "_HLS_msn is more than two segments ahead\n",
        }
    }
}

/// What to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The HLS master playlist.
    Master,
    /// A media playlist.
    MediaPlaylist {
        /// Index of the rendition.
        rendition: usize,
        /// Whether this answers a blocking request (cacheable longer).
        blocking: bool,
    },
    /// The MPD.
    Mpd,
    /// An init segment.
    Init {
        /// Index of the rendition.
        rendition: usize,
    },
    /// A media segment.
    Segment {
        /// Index of the rendition.
        rendition: usize,
        /// Index of the segment within the stream.
        index: usize,
    },
    /// The stream description, as JSON.
    Description,
    /// Hold the request until `until_ms` (Unix milliseconds), then decide again.
    Hold {
        /// When the awaited segment is complete.
        until_ms: u64,
    },
    /// A deliberate 4xx.
    Refuse(Refusal),
}

impl Decision {
    /// The `max-age` of a 200 answer of this decision about `p` (served as
    /// `public, max-age=N`); `None` for decisions that are not answered 200.
    pub fn max_age(&self, p: &Published) -> Option<u64> {
        let half_target = (p.target_secs() / 2).max(1);
        Some(match self {
            Decision::Refuse(_) | Decision::Hold { .. } => return None,
            Decision::Init { .. } | Decision::Segment { .. } => 86_400,
            Decision::Description => 5,
            Decision::Master => 300,
            Decision::MediaPlaylist { blocking, .. } if p.live.is_some() => {
                if *blocking {
                    6 * p.target_secs()
                } else {
                    half_target
                }
            }
            Decision::Mpd if p.live.is_some() => half_target,
            _ => 300,
        })
    }

    /// The Cache-Control value of an answer of this decision about `p`.
    pub fn cache_control(&self, p: &Published) -> String {
        match (self, self.max_age(p)) {
            (Decision::Refuse(r), _) => r.cache_control().to_string(),
            (_, Some(secs)) => format!("public, max-age={secs}"),
            (_, None) => "no-store".into(),
        }
    }
}

/// Splits `path` into (token, stream name, rest) for the manifest routes:
/// `streams/NAME/REST` or `s/TOKEN/streams/NAME/REST`. `None` if the path is not
/// under `streams/`.
pub fn split_path(path: &str) -> Option<(Option<&str>, &str, &str)> {
    let (token, path) = match path.strip_prefix("s/") {
        Some(rest) => {
            let (t, rest) = rest.split_once('/')?;
            (Some(t), rest)
        }
        None => (None, path),
    };
    let rest = path.strip_prefix("streams/")?;
    let (name, rest) = rest.split_once('/').unwrap_or((rest, ""));
    Some((token, name, rest))
}

/// Decides the answer to `req` for the published stream `p` (looked up by the name
/// [`split_path`] returned; `None` if there is none), at `now_ms` (Unix milliseconds).
pub fn decide(
    req: &Request<'_>,
    p: Option<&Published>,
    keys: Option<&SigningKeys>,
    now_ms: u64,
) -> Decision {
    use Decision::Refuse;
    let Some((token, _, rest)) = split_path(req.path) else {
        return Refuse(Refusal::Unknown);
    };
    let Some(p) = p else {
        return Refuse(Refusal::Unknown);
    };
    if p.signed {
        let checked = match (token, keys) {
            (None, _) => Err(TokenError::Missing),
            // A signed stream without keys is refused at start; never serve it.
            (Some(_), None) => Err(TokenError::UnknownKey),
            (Some(t), Some(k)) => k.verify(t, &p.prefix, now_ms / 1000),
        };
        if let Err(e) = checked {
            return Refuse(Refusal::Token(e));
        }
    }
    let blocking = match query::parse(req.query) {
        Ok(b) => b,
        Err(e) => return Refuse(Refusal::BadQuery(e)),
    };
    let s = &p.stream;
    let resource = match rest.split_once('/') {
        None => match rest {
            "master.m3u8" => Resource::Master,
            "manifest.mpd" if s.container == Container::Fmp4 => Resource::Mpd,
            "stream.json" => Resource::Description,
            _ => return Refuse(Refusal::Unknown),
        },
        Some((rid, file)) => {
            let Some(r) = s.renditions.iter().position(|r| r.id == rid) else {
                return Refuse(Refusal::Unknown);
            };
            match file {
                "index.m3u8" => Resource::Media(r),
                "init.mp4" if s.renditions[r].init.is_some() => Resource::Init(r),
                _ => match segment_number(file, s.container.segment_extension()) {
                    Some(g) => Resource::Segment(r, g),
                    None => return Refuse(Refusal::Unknown),
                },
            }
        }
    };
    match resource {
        Resource::Master => Decision::Master,
        Resource::Description => Decision::Description,
        Resource::Init(rendition) => Decision::Init { rendition },
        Resource::Mpd => match p.window(now_ms) {
            Some((_, w)) if w.is_empty() => Refuse(Refusal::NotStarted),
            _ => Decision::Mpd,
        },
        Resource::Media(rendition) => media(p, rendition, blocking, req.may_hold, now_ms),
        Resource::Segment(rendition, g) => {
            let tl = &p.timeline;
            match p.window(now_ms) {
                None if g < tl.len() => Decision::Segment {
                    rendition,
                    index: g as usize,
                },
                None => Refuse(Refusal::Unknown),
                Some((_, w)) if g >= w.end => Refuse(Refusal::Future),
                Some((_, w)) if g < w.first => Refuse(Refusal::Gone),
                Some(_) => Decision::Segment {
                    rendition,
                    index: tl.split(g).1,
                },
            }
        }
    }
}

enum Resource {
    Master,
    Mpd,
    Description,
    Media(usize),
    Init(usize),
    Segment(usize, u64),
}

/// `N.EXT` with `N` a plain decimal (no sign, no leading zeros but `0` itself).
fn segment_number(file: &str, ext: &str) -> Option<u64> {
    let digits = file.strip_suffix(ext)?.strip_suffix('.')?;
    if digits.is_empty()
        || digits.len() > 19
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

fn media(p: &Published, rendition: usize, b: Blocking, may_hold: bool, now_ms: u64) -> Decision {
    let Some((live, w)) = p.window(now_ms) else {
        // VOD: everything is there; blocking parameters are answered at once.
        return Decision::MediaPlaylist {
            rendition,
            blocking: false,
        };
    };
    let Some(last) = w.last() else {
        return Decision::Refuse(Refusal::NotStarted);
    };
    let Some(msn) = b.msn else {
        return Decision::MediaPlaylist {
            rendition,
            blocking: false,
        };
    };
    if msn > last.saturating_add(2) {
        return Decision::Refuse(Refusal::TooFarAhead);
    }
    if msn > last && may_hold {
        // Without partial segments, a part of msn is there when msn is complete.
        return Decision::Hold {
            until_ms: live.available_at_ms(&p.timeline, msn),
        };
    }
    Decision::MediaPlaylist {
        rendition,
        blocking: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::tests::sample;

    const KEYS: &str = "k1 00112233445566778899aabbccddeeff";
    const EPOCH: u64 = 1_700_000_000_000;

    fn live(signed: bool) -> Published {
        Published::new(
            sample(Container::Fmp4, 6),
            Some(Live {
                epoch_ms: EPOCH,
                dvr_window_ms: 10_000,
            }),
            signed,
        )
    }

    fn ask(p: &Published, path: &str, query: &str, now_ms: u64) -> Decision {
        let keys = SigningKeys::parse(KEYS).unwrap();
        decide(
            &Request {
                path,
                query: query.as_bytes(),
                may_hold: true,
            },
            (split_path(path).map(|x| x.1) == Some("clip")).then_some(p),
            Some(&keys),
            now_ms,
        )
    }

    #[test]
    fn the_signalling_table() {
        let p = live(false);
        let now = EPOCH + 73_000; // window 31..36, last 35
        use Decision::*;
        assert_eq!(
            ask(&p, "streams/other/master.m3u8", "", now),
            Refuse(Refusal::Unknown)
        );
        assert_eq!(
            ask(&p, "streams/clip/x/index.m3u8", "", now),
            Refuse(Refusal::Unknown)
        );
        assert_eq!(
            ask(&p, "streams/clip/v/31.ts", "", now),
            Refuse(Refusal::Unknown)
        );
        assert_eq!(
            ask(&p, "streams/clip/v/031.m4s", "", now),
            Refuse(Refusal::Unknown)
        );
        assert_eq!(ask(&p, "streams/clip/master.m3u8", "", now), Master);
        assert_eq!(ask(&p, "streams/clip/manifest.mpd", "", now), Mpd);
        assert_eq!(
            ask(&p, "streams/clip/v/init.mp4", "", now),
            Init { rendition: 0 }
        );
        assert_eq!(
            ask(&p, "streams/clip/a/35.m4s", "", now),
            Segment {
                rendition: 1,
                index: 5
            }
        );
        assert_eq!(
            ask(&p, "streams/clip/v/36.m4s", "", now),
            Refuse(Refusal::Future)
        );
        assert_eq!(
            ask(&p, "streams/clip/v/30.m4s", "", now),
            Refuse(Refusal::Gone)
        );
        assert_eq!(
            ask(&p, "streams/clip/v/index.m3u8", "_HLS_msn=38", now),
            Refuse(Refusal::TooFarAhead)
        );
        assert_eq!(
            ask(
                &p,
                "streams/clip/v/index.m3u8",
                "_HLS_msn=37&_HLS_part=0",
                now
            ),
            Hold {
                until_ms: EPOCH + 76_000
            }
        );
        assert_eq!(
            ask(&p, "streams/clip/v/index.m3u8", "_HLS_msn=35", now),
            MediaPlaylist {
                rendition: 0,
                blocking: true
            }
        );
        assert_eq!(
            ask(&p, "streams/clip/v/index.m3u8", "_HLS_msn=abc", now),
            Refuse(Refusal::BadQuery(query::QueryError::BadNumber("_HLS_msn")))
        );
        assert_eq!(
            ask(&p, "streams/clip/v/index.m3u8", "", EPOCH - 1),
            Refuse(Refusal::NotStarted)
        );
        assert_eq!(
            ask(&p, "streams/clip/manifest.mpd", "", EPOCH),
            Refuse(Refusal::NotStarted)
        );
    }

    #[test]
    fn a_held_request_past_its_limit_gets_the_current_playlist() {
        let p = live(false);
        let d = decide(
            &Request {
                path: "streams/clip/v/index.m3u8",
                query: b"_HLS_msn=36",
                may_hold: false,
            },
            Some(&p),
            None,
            EPOCH + 73_000,
        );
        assert_eq!(
            d,
            Decision::MediaPlaylist {
                rendition: 0,
                blocking: true
            }
        );
    }

    #[test]
    fn vod_has_no_future_and_no_past() {
        let p = Published::new(sample(Container::Ts, 6), None, false);
        let now = EPOCH;
        assert_eq!(
            ask(&p, "streams/clip/0/5.ts", "", now),
            Decision::Segment {
                rendition: 0,
                index: 5
            }
        );
        assert_eq!(
            ask(&p, "streams/clip/0/6.ts", "", now),
            Decision::Refuse(Refusal::Unknown)
        );
        assert_eq!(
            ask(&p, "streams/clip/manifest.mpd", "", now),
            Decision::Refuse(Refusal::Unknown)
        );
        assert_eq!(
            ask(&p, "streams/clip/0/init.mp4", "", now),
            Decision::Refuse(Refusal::Unknown)
        );
        assert_eq!(
            ask(&p, "streams/clip/0/index.m3u8", "_HLS_msn=999", now),
            Decision::MediaPlaylist {
                rendition: 0,
                blocking: false
            }
        );
    }

    #[test]
    fn signed_streams_need_a_valid_token() {
        let p = live(true);
        let keys = SigningKeys::parse(KEYS).unwrap();
        let now = EPOCH + 73_000;
        let good = keys.sign("/streams/clip/", now / 1000 + 60);
        let expired = keys.sign("/streams/clip/", now / 1000 - 1);
        let other = keys.sign("/streams/other/", now / 1000 + 60);
        let path = |t: &str| format!("s/{t}/streams/clip/master.m3u8");
        assert_eq!(ask(&p, &path(&good), "", now), Decision::Master);
        assert_eq!(
            ask(&p, "streams/clip/master.m3u8", "", now),
            Decision::Refuse(Refusal::Token(TokenError::Missing))
        );
        assert_eq!(
            ask(&p, &path(&expired), "", now),
            Decision::Refuse(Refusal::Token(TokenError::Expired))
        );
        assert_eq!(
            ask(&p, &path(&other), "", now),
            Decision::Refuse(Refusal::Token(TokenError::BadMac))
        );
        assert_eq!(
            ask(&p, &path("junk"), "", now),
            Decision::Refuse(Refusal::Token(TokenError::Malformed))
        );
        // The token is checked before anything about the stream is revealed.
        assert_eq!(
            ask(&p, "streams/clip/v/999999.m4s", "_HLS_msn=x", now),
            Decision::Refuse(Refusal::Token(TokenError::Missing))
        );
    }

    #[test]
    fn cache_control_by_row() {
        let p = live(false);
        assert_eq!(
            Decision::Refuse(Refusal::Gone).cache_control(&p),
            "public, max-age=3600"
        );
        assert_eq!(
            Decision::Refuse(Refusal::Future).cache_control(&p),
            "public, max-age=1"
        );
        assert_eq!(
            Decision::MediaPlaylist {
                rendition: 0,
                blocking: false
            }
            .cache_control(&p),
            "public, max-age=1"
        );
        assert_eq!(
            Decision::MediaPlaylist {
                rendition: 0,
                blocking: true
            }
            .cache_control(&p),
            "public, max-age=12"
        );
    }
}
