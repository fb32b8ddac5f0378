//! The stream model and everything derived from it: the canonical stream description
//! ([`model`]), its HLS ([`hls`], through m3u8-rs) and DASH ([`dash`]) renderings,
//! the live clock ([`clock`]), signed-URL tokens ([`token`]), the blocking-reload
//! query ([`query`]), the media probes `edge ingest` measures segments with
//! ([`probe`]), and the 4xx signalling policy ([`policy`]): one function from
//! (request, stream state, clock) to a decision.
//!
//! It must stay pure: no I/O, no tokio, no clock reads of its own (time is an input).
//! The edge owns sockets, files and the clock and asks this crate what to answer.

pub mod clock;
pub mod dash;
pub mod hls;
pub mod model;
pub mod policy;
pub mod probe;
pub mod query;
pub mod token;

pub use clock::{Live, Timeline, View, Window};
pub use model::{Container, DescriptionError, MediaKind, Rendition, Segment, Stream};
pub use policy::{decide, Decision, Publication, Published, Refusal, Request};
