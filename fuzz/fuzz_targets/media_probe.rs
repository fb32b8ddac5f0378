//! Media probes `edge ingest` runs on files from disk: fMP4 init and media segments,
//! MPEG-TS segments. Errors are fine; panics and absurd results are not.
#![no_main]
use manifest::probe::{fragments, init_tracks, ts_span};
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(tracks) = init_tracks(data) {
        assert!(tracks.iter().all(|t| t.timescale > 0));
        let _ = fragments(data, &tracks);
    }
    let _ = fragments(data, &[]);
    if let Ok(span) = ts_span(data) {
        assert!(span.first_pts < 1 << 33);
    }
});
