//! Range header values against a representation length taken from the input.
#![no_main]
use edge::http::range::{evaluate, RangeOutcome};
libfuzzer_sys::fuzz_target!(|input: (u64, &[u8])| {
    let (len, value) = input;
    if let RangeOutcome::Partial { start, end } = evaluate(value, len) {
        assert!(start <= end && end < len);
    }
});
