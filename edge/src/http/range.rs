//! `Range: bytes=…` for one range, and `If-Range`.
//!
//! Policy, as nginx does it: a syntactically bad or unsatisfiable `bytes` range is
//! 416 with `Content-Range: bytes */len`; a multi-range request is answered with the
//! whole representation (200), which RFC 9110 allows; other range units are ignored.

/// What to send for a `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// The whole representation (200).
    Full,
    /// Bytes `start..=end` (206).
    Partial {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// 416 with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Evaluates a `Range` header value against a representation of `len` bytes.
pub fn evaluate(value: &[u8], len: u64) -> RangeOutcome {
    let value = value.trim_ascii();
    let Some((unit, spec)) = split_once(value, b'=') else {
        return RangeOutcome::Unsatisfiable;
    };
    if !unit.trim_ascii().eq_ignore_ascii_case(b"bytes") {
        return RangeOutcome::Full;
    }
    if spec.contains(&b',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = split_once(spec.trim_ascii(), b'-') else {
        return RangeOutcome::Unsatisfiable;
    };
    let (first, last) = (first.trim_ascii(), last.trim_ascii());
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes (all of them when N exceeds the length). On an
        // empty representation any non-zero suffix is the whole, empty, body (200).
        (true, false) => match position(last) {
            Some(n) if n > 0 && len == 0 => RangeOutcome::Full,
            Some(n) if n > 0 => RangeOutcome::Partial {
                start: len.saturating_sub(n),
                end: len - 1,
            },
            _ => RangeOutcome::Unsatisfiable,
        },
        // bytes=A-
        (false, true) => match position(first) {
            Some(a) if a < len => RangeOutcome::Partial {
                start: a,
                end: len - 1,
            },
            _ => RangeOutcome::Unsatisfiable,
        },
        // bytes=A-B; a B beyond the end (even beyond u64) means "to the end".
        (false, false) => match (position(first), position(last)) {
            (Some(a), Some(b)) if a <= b && a < len => RangeOutcome::Partial {
                start: a,
                end: b.min(len - 1),
            },
            _ => RangeOutcome::Unsatisfiable,
        },
        (true, true) => RangeOutcome::Unsatisfiable,
    }
}

/// A byte position: ASCII digits, leading zeros allowed, any length; a value beyond
/// `u64` saturates to `u64::MAX` (it lies past the end of any representation).
fn position(s: &[u8]) -> Option<u64> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0u64, |v, &b| {
        v.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

fn split_once(s: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let i = s.iter().position(|&b| b == sep)?;
    Some((&s[..i], &s[i + 1..]))
}

#[cfg(test)]
mod tests {
    use super::RangeOutcome::*;
    use super::*;

    #[test]
    fn single_ranges() {
        assert_eq!(evaluate(b"bytes=0-9", 100), Partial { start: 0, end: 9 });
        assert_eq!(evaluate(b"bytes=90-", 100), Partial { start: 90, end: 99 });
        assert_eq!(evaluate(b"bytes=-10", 100), Partial { start: 90, end: 99 });
        assert_eq!(evaluate(b"bytes=-1000", 100), Partial { start: 0, end: 99 });
        assert_eq!(
            evaluate(b"bytes=50-1000", 100),
            Partial { start: 50, end: 99 }
        );
        assert_eq!(evaluate(b"Bytes = 1-2 ", 100), Partial { start: 1, end: 2 });
    }

    #[test]
    fn unsatisfiable_and_malformed() {
        for v in [
            "bytes=100-",
            "bytes=100-200",
            "bytes=5-4",
            "bytes=-0",
            "bytes=-",
            "bytes=a-b",
            "bytes=1-2-3",
            "bytes",
            "garbage",
            "bytes=18446744073709551616-",
            "bytes=99999999999999999999999-",
        ] {
            assert_eq!(evaluate(v.as_bytes(), 100), Unsatisfiable, "{v}");
        }
        assert_eq!(evaluate(b"bytes=0-", 0), Unsatisfiable);
        assert_eq!(evaluate(b"bytes=-0", 0), Unsatisfiable);
    }

    #[test]
    fn leading_zeros_huge_ends_and_empty_suffixes() {
        assert_eq!(evaluate(b"bytes=0001-2", 100), Partial { start: 1, end: 2 });
        assert_eq!(
            evaluate(b"bytes=000000000000000000000001-0002", 100),
            Partial { start: 1, end: 2 }
        );
        assert_eq!(
            evaluate(b"bytes=0-99999999999999999999999", 100),
            Partial { start: 0, end: 99 }
        );
        assert_eq!(
            evaluate(b"bytes=-99999999999999999999999", 100),
            Partial { start: 0, end: 99 }
        );
        // A suffix range on an empty representation: the whole (empty) body.
        assert_eq!(evaluate(b"bytes=-5", 0), Full);
    }

    #[test]
    fn ignored_forms() {
        assert_eq!(evaluate(b"bytes=0-1,5-6", 100), Full);
        assert_eq!(evaluate(b"items=0-1", 100), Full);
    }

    proptest::proptest! {
        /// A partial answer always lies inside the representation.
        #[test]
        fn partial_is_inside(v in "[bytes=0-9, -]{0,24}", len in 0u64..10_000) {
            if let Partial { start, end } = evaluate(v.as_bytes(), len) {
                proptest::prop_assert!(start <= end && end < len);
            }
        }

        #[test]
        fn numeric_ranges(a in 0u64..20_000, b in 0u64..20_000, len in 1u64..10_000) {
            let v = format!("bytes={a}-{b}");
            match evaluate(v.as_bytes(), len) {
                Partial { start, end } => proptest::prop_assert!(start == a && end == b.min(len - 1) && a <= b),
                Unsatisfiable => proptest::prop_assert!(a > b || a >= len),
                Full => proptest::prop_assert!(false, "a single range is never ignored"),
            }
        }
    }
}
