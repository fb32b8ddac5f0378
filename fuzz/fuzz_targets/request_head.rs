//! Request heads as they arrive from the network: any bytes, any limits.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(Some(head)) = edge::http::request::parse_head(data, 64, 16 * 1024) {
        assert!(head.head_len <= data.len());
        assert!(head.target.end <= head.head_len);
    }
});
