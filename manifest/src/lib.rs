//! The stream model and everything derived from it (not built yet).
//!
//! This crate will own the canonical stream description (renditions, codecs,
//! bandwidth, init segment, segment numbers and durations, VOD or live, DVR window),
//! its HLS (m3u8-rs) and DASH MPD renderings, the live-window clock and the 4xx
//! signalling policy: one function from (request, stream state) to a response.
//!
//! It must stay pure: no I/O, no tokio, no clock reads of its own (time is an input).
//! Until it lands, `edge` serves ffmpeg's own playlists as files.
