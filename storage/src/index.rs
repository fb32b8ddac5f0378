//! The sled index: what an object key maps to (an [`Entry`]), the per-disk position
//! tree used for eviction, and the per-disk records (container id, write
//! reservation). Values are bincode-encoded; one that does not decode is treated as
//! absent (and removed), never served.

use serde::{Deserialize, Serialize};

/// Tree: object key → [`Entry`].
pub(crate) const OBJECTS: &str = "objects";
/// Tree: container id (8 bytes BE) ++ logical offset (8 bytes BE) → object key.
pub(crate) const POSITIONS: &str = "positions";
/// Tree: `disk/PATH` → [`DiskRecord`].
pub(crate) const DISKS: &str = "disks";

/// What a client response needs to know about a stored object, from the origin's
/// answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Meta {
    /// `Content-Type` as the origin sent it.
    pub content_type: String,
    /// The origin's `ETag` (with its quotes), if any.
    pub etag: Option<String>,
    /// The origin's `Last-Modified`, Unix seconds.
    pub last_modified: Option<u64>,
    /// The origin's `Cache-Control`, relayed to clients.
    pub cache_control: Option<String>,
    /// Fresh until this Unix time (milliseconds); `0` = no expiry.
    pub expires_ms: u64,
}

/// One indexed object: where its bytes lie and what they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The container holding it (its superblock id).
    pub container: u64,
    /// Position in the ring's linear address space: `lap * ring_len + offset`.
    pub logical: u64,
    /// Bytes of header in front of the body.
    pub header_len: u32,
    /// Body length.
    pub len: u64,
    /// CRC-32 of the body.
    pub checksum: u32,
    /// Response metadata.
    pub meta: Meta,
}

/// A disk's persistent state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DiskRecord {
    /// The container's id (also in its superblock).
    pub container: u64,
    /// Container file size.
    pub size: u64,
    /// The write reservation: bytes below `reserved - ring_len` may be overwritten.
    pub reserved: u64,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs into a Vec cannot fail.
    bincode::serialize(v).unwrap_or_default()
}

pub(crate) fn decode<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Option<T> {
    bincode::deserialize(b).ok()
}

/// The position-tree key of an object.
pub(crate) fn position_key(container: u64, logical: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&container.to_be_bytes());
    k[8..].copy_from_slice(&logical.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_garbage_is_none() {
        let e = Entry {
            container: 7,
            logical: 1 << 40,
            header_len: 512,
            len: 123,
            checksum: 9,
            meta: Meta {
                content_type: "video/mp4".into(),
                etag: Some("\"x\"".into()),
                last_modified: Some(5),
                cache_control: None,
                expires_ms: 0,
            },
        };
        assert_eq!(decode::<Entry>(&encode(&e)), Some(e));
        assert_eq!(decode::<Entry>(b"\x01"), None);
    }
}
