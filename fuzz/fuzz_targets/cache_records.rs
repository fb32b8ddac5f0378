//! What the cache reads back from disk: object headers in a container and entries
//! in the sled index. Anything may be `None`; nothing may panic or allocate
//! absurdly.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Some(h) = storage::parse_object_header(data) {
        assert!(h.header_len as usize >= 42);
    }
    let _ = storage::decode_entry(data);
});
