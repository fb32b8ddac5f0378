//! Request targets: whatever normalises must stay inside the root.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut out = String::new();
    if edge::http::path::normalise(data, &mut out).is_ok() {
        assert!(!out.starts_with('/'));
        assert!(out.split('/').all(|s| !s.is_empty() && s != "." && s != ".." && !s.starts_with('.')));
        assert!(!out.contains('\0') && !out.contains('\\'));
    }
});
