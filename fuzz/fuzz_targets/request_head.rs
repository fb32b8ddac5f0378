//! Request heads as they arrive from the network: any bytes, any limits (a small
//! target limit exercises the 414 paths; later HTTP/1.x minors take their own parser).
#![no_main]
use edge::http::request::{parse, valid_authority, HeadLimits};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits {
        max_headers: 64,
        max_head_bytes: 16 * 1024,
        max_target_bytes: 512,
    };
    if let Ok(Some(head)) = parse(data, &limits) {
        assert!(head.head_len <= data.len());
        assert!(head.target.end <= head.head_len);
        assert!(head.minor_version <= 1);
        if let Some(h) = head.host {
            assert!(h.end <= head.head_len);
            let _ = valid_authority(&data[h]);
        }
    }
});
