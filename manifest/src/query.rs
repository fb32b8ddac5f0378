//! The query string of a manifest request: LL-HLS blocking-reload parameters
//! (`_HLS_msn`, `_HLS_part`), strictly parsed.
//!
//! A malformed value, a repeated parameter or `_HLS_part` without `_HLS_msn` is an
//! error (400); other parameters (cache busters, player tags) are ignored.

/// Largest media sequence or part number accepted (16 decimal digits).
pub const MAX_NUMBER: u64 = 9_999_999_999_999_999;
/// Longest query string looked at.
pub const MAX_QUERY_BYTES: usize = 2048;

/// The blocking-reload parameters of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Blocking {
    /// `_HLS_msn`: the media sequence number the client waits for.
    pub msn: Option<u64>,
    /// `_HLS_part`: the partial segment of `msn` it waits for.
    pub part: Option<u64>,
}

/// Why a query string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A value that is not a decimal number in range.
    #[error("{0} must be a decimal number up to {MAX_NUMBER}")]
    BadNumber(&'static str),
    /// A parameter given twice.
    #[error("{0} is repeated")]
    Repeated(&'static str),
    /// `_HLS_part` without `_HLS_msn`.
    #[error("_HLS_part needs _HLS_msn")]
    PartWithoutMsn,
    /// Longer than [`MAX_QUERY_BYTES`].
    #[error("query string too long")]
    TooLong,
}

fn number(name: &'static str, v: &[u8]) -> Result<u64, QueryError> {
    if v.is_empty() || v.len() > 16 || !v.iter().all(u8::is_ascii_digit) {
        return Err(QueryError::BadNumber(name));
    }
    Ok(v.iter().fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Parses the query string (the bytes after `?`, without any `#fragment`).
pub fn parse(query: &[u8]) -> Result<Blocking, QueryError> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(QueryError::TooLong);
    }
    let mut b = Blocking::default();
    for pair in query.split(|&c| c == b'&').filter(|p| !p.is_empty()) {
        let (key, value) = match pair.iter().position(|&c| c == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        let (name, slot) = match key {
            b"_HLS_msn" => ("_HLS_msn", &mut b.msn),
            b"_HLS_part" => ("_HLS_part", &mut b.part),
            _ => continue,
        };
        if slot.is_some() {
            return Err(QueryError::Repeated(name));
        }
        *slot = Some(number(name, value)?);
    }
    if b.part.is_some() && b.msn.is_none() {
        return Err(QueryError::PartWithoutMsn);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_blocking_parameters() {
        assert_eq!(parse(b"").unwrap(), Blocking::default());
        assert_eq!(
            parse(b"_HLS_msn=42&_HLS_part=3&x=1").unwrap(),
            Blocking {
                msn: Some(42),
                part: Some(3)
            }
        );
        assert_eq!(parse(b"cb=123&&_HLS_msn=0").unwrap().msn, Some(0));
        assert_eq!(parse(b"_HLS_skip=YES").unwrap(), Blocking::default());
    }

    #[test]
    fn refuses_garbage() {
        assert_eq!(
            parse(b"_HLS_msn=abc"),
            Err(QueryError::BadNumber("_HLS_msn"))
        );
        assert_eq!(parse(b"_HLS_msn="), Err(QueryError::BadNumber("_HLS_msn")));
        assert_eq!(parse(b"_HLS_msn"), Err(QueryError::BadNumber("_HLS_msn")));
        assert_eq!(
            parse(b"_HLS_msn=-1"),
            Err(QueryError::BadNumber("_HLS_msn"))
        );
        assert_eq!(
            parse(b"_HLS_msn=+1"),
            Err(QueryError::BadNumber("_HLS_msn"))
        );
        assert_eq!(
            parse(b"_HLS_msn=99999999999999999999999"),
            Err(QueryError::BadNumber("_HLS_msn"))
        );
        assert_eq!(
            parse(b"_HLS_msn=1&_HLS_msn=2"),
            Err(QueryError::Repeated("_HLS_msn"))
        );
        assert_eq!(parse(b"_HLS_part=1"), Err(QueryError::PartWithoutMsn));
        assert_eq!(parse(&[b'a'; 4096]), Err(QueryError::TooLong));
        assert_eq!(
            parse(b"_HLS_msn=9999999999999999").unwrap().msn,
            Some(MAX_NUMBER)
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(q in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = parse(&q);
        }
    }
}
