//! Manifest request inputs from the network: the query string (LL-HLS blocking
//! parameters), the signed-URL token, and the `/s/TOKEN/streams/NAME/...` split,
//! then the whole signalling policy against a live and a VOD stream.
#![no_main]
use manifest::policy::{decide, split_path, Decision, Published, Refusal, Request};
use manifest::token::{SigningKeys, Token};
use manifest::{Container, Live, MediaKind, Rendition, Segment, Stream};
use std::sync::OnceLock;

fn stream(name: &str) -> Stream {
    Stream {
        name: name.into(),
        container: Container::Fmp4,
        renditions: vec![Rendition {
            id: "0".into(),
            kind: MediaKind::Video,
            bandwidth: 400_000,
            resolution: Some((640, 360)),
            codecs: "avc1.4d401e".into(),
            timescale: 12800,
            start_time: 0,
            init: Some("init.mp4".into()),
            sample_rate: None,
            segments: (0..6)
                .map(|i| Segment { number: i, duration: 25600, size: 100, file: format!("{i}.m4s") })
                .collect(),
        }],
    }
}

struct World {
    live: Published,
    vod: Published,
    keys: SigningKeys,
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| World {
        live: Published::new(
            stream("live"),
            Some(Live { epoch_ms: 1_700_000_000_000, dvr_window_ms: 30_000 }),
            true,
        ),
        vod: Published::new(stream("vod"), None, false),
        keys: SigningKeys::parse("k1 00112233445566778899aabbccddeeff").unwrap(),
    })
}

libfuzzer_sys::fuzz_target!(|input: (u32, &str, &[u8])| {
    let (clock, path, query) = input;
    let w = world();
    let _ = manifest::query::parse(query);
    if let Ok(t) = Token::parse(path) {
        assert!(t.expires <= 999_999_999_999);
    }
    let now_ms = 1_700_000_000_000 + u64::from(clock) * 10;
    let p = match split_path(path) {
        Some((_, "live", _)) => Some(&w.live),
        Some((_, "vod", _)) => Some(&w.vod),
        _ => None,
    };
    let req = Request { path, query, may_hold: clock % 2 == 0 };
    match decide(&req, p, Some(&w.keys), now_ms) {
        Decision::Segment { rendition, index } => {
            let p = p.expect("a segment of a published stream");
            assert!(index < p.stream.renditions[rendition].segments.len());
        }
        Decision::Hold { until_ms } => assert!(until_ms > now_ms && req.may_hold),
        // The live stream is signed: nothing of it without a valid token.
        Decision::Refuse(Refusal::Token(_)) => assert!(p.is_some_and(|p| p.signed)),
        d => {
            if p.is_some_and(|p| p.signed) && d != Decision::Refuse(Refusal::Unknown) {
                let (token, _, _) = split_path(path).unwrap();
                let t = token.expect("a token was checked");
                w.keys.verify(t, "/streams/live/", now_ms / 1000).expect("only valid tokens pass");
            }
        }
    }
});
