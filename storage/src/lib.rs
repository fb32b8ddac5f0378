//! The segment cache on disk (not built yet).
//!
//! This crate will own the per-disk preallocated ring containers, the sled index
//! (key → disk, lap, offset, length, metadata; written only after the body is
//! durable), the in-memory hot set (lru), fill coalescing (one origin fetch per key),
//! crash recovery and purge by key or prefix.
//!
//! It must not know about HTTP or sockets: `edge` asks it for a file descriptor,
//! an offset and a length, and sends the bytes itself. Until it lands, `edge` serves
//! bodies from files under a configured directory.
