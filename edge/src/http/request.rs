//! Request heads: parsing with `httparse` into a borrow-free [`RequestHead`].
//!
//! The parser is a pure function over the bytes received so far; it records the
//! headers the data plane acts on as [`Span`]s into the caller's buffer, so the
//! connection can keep one reusable buffer and nothing is allocated per request.

use std::ops::Range;

use super::HttpError;

/// A byte range inside the connection's read buffer.
pub type Span = Range<usize>;

/// Request methods the data plane distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET.
    Get,
    /// HEAD.
    Head,
    /// OPTIONS (CORS preflight or `Allow` discovery).
    Options,
    /// Anything else: answered 405 with `Allow`.
    Other,
}

/// A parsed request head. Spans index the buffer passed to [`parse_head`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Option<Method>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1 (and for 1.2..1.9, which are served as 1.1).
    pub minor_version: u8,
    /// The request target as sent (origin-form path and query, or `*`).
    pub target: Span,
    /// `Host`.
    pub host: Option<Span>,
    /// `Range` (`None` when absent or sent more than once: both are then ignored).
    pub range: Option<Span>,
    /// `If-None-Match`.
    pub if_none_match: Option<Span>,
    /// `If-Modified-Since`.
    pub if_modified_since: Option<Span>,
    /// `If-Match`.
    pub if_match: Option<Span>,
    /// `If-Unmodified-Since`.
    pub if_unmodified_since: Option<Span>,
    /// `If-Range`.
    pub if_range: Option<Span>,
    /// `Expect: 100-continue` was sent.
    pub expect_continue: bool,
    /// The target is longer than `limits.max_request_target_bytes` (answered 414).
    pub target_too_long: bool,
    /// `Origin`.
    pub origin: Option<Span>,
    /// `User-Agent` (telemetry only).
    pub user_agent: Option<Span>,
    /// `Access-Control-Request-Method`.
    pub ac_request_method: Option<Span>,
    /// `Access-Control-Request-Headers`.
    pub ac_request_headers: Option<Span>,
    /// `Connection: close` was sent.
    pub connection_close: bool,
    /// `Connection: keep-alive` was sent (matters for HTTP/1.0).
    pub connection_keep_alive: bool,
    /// `Content-Length` of a request body (0 when absent).
    pub content_length: u64,
    /// Bytes of the head including the final CRLFCRLF.
    pub head_len: usize,
}

impl RequestHead {
    /// Whether the client allows the connection to stay open after this request.
    pub fn keep_alive(&self) -> bool {
        if self.connection_close {
            return false;
        }
        self.minor_version >= 1 || self.connection_keep_alive
    }

    /// The method (always set by a successful parse).
    pub fn method(&self) -> Method {
        self.method.unwrap_or(Method::Other)
    }
}

/// Upper bound for `limits.max_headers`; the parser's header array lives on the stack.
pub const MAX_HEADERS_CEILING: usize = 1024;

/// The limits a request head is parsed under (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Most header lines (`limits.max_headers`); more is 431.
    pub max_headers: usize,
    /// Largest head in bytes (`limits.max_head_bytes`); larger is 431, or 414 when the
    /// request line alone does not end within it.
    pub max_head_bytes: usize,
    /// Longest request target (`limits.max_request_target_bytes`); longer is 414.
    pub max_target_bytes: usize,
}

/// Parses the head at the start of `buf` with `max_target_bytes = max_head_bytes`
/// (tests and fuzzing; the server uses [`parse`]).
pub fn parse_head(
    buf: &[u8],
    max_headers: usize,
    max_head_bytes: usize,
) -> Result<Option<RequestHead>, HttpError> {
    parse(
        buf,
        &HeadLimits {
            max_headers,
            max_head_bytes,
            max_target_bytes: max_head_bytes,
        },
    )
}

/// Parses the head at the start of `buf`.
///
/// Returns `Ok(None)` when the head is incomplete (read more, unless `buf` already
/// holds `max_head_bytes`: then it is [`HttpError::HeadTooLarge`], or
/// [`HttpError::RequestLineTooLong`] when not even the request line has ended).
/// Errors for which [`HttpError::closes`] is true are framing errors: the caller
/// answers them and closes the connection. `HTTP/1.2`..`HTTP/1.9` are read as 1.1;
/// any other major version is [`HttpError::VersionNotSupported`] (505).
pub fn parse(buf: &[u8], limits: &HeadLimits) -> Result<Option<RequestHead>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS_CEILING];
    let headers = &mut storage[..limits.max_headers.min(MAX_HEADERS_CEILING)];
    let mut req = httparse::Request::new(headers);
    let parsed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => Some((
            req.method.unwrap_or(""),
            req.path.unwrap_or("").as_bytes(),
            req.version.unwrap_or(1),
            n,
            &*req.headers,
        )),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => {
            // httparse knows HTTP/1.0 and 1.1 only; a later 1.x minor is served as
            // 1.1 (RFC 9110 2.5), another major gets 505. The header array is reused.
            return parse_later_minor(buf, limits, req.headers);
        }
        Err(_) => return Err(HttpError::MalformedHead),
    };
    finish(buf, limits, parsed)
}

/// The request-line + headers of a head whose version httparse refused.
type Parsed<'b, 'h> = (&'b str, &'b [u8], u8, usize, &'h [httparse::Header<'b>]);

fn parse_later_minor<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
    headers: &mut [httparse::Header<'b>],
) -> Result<Option<RequestHead>, HttpError> {
    let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
        return finish(buf, limits, None);
    };
    let line = buf[..nl]
        .strip_suffix(b"\r")
        .ok_or(HttpError::MalformedHead)?;
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::MalformedHead);
    };
    let v = version
        .strip_prefix(b"HTTP/")
        .filter(|v| v.len() == 3 && v[0].is_ascii_digit() && v[1] == b'.' && v[2].is_ascii_digit())
        .ok_or(HttpError::MalformedHead)?;
    if v[0] != b'1' {
        return Err(HttpError::VersionNotSupported);
    }
    let method = std::str::from_utf8(method).map_err(|_| HttpError::MalformedHead)?;
    if method.is_empty()
        || !method
            .bytes()
            .all(|b| b.is_ascii_alphabetic() || b == b'-' || b == b'_')
        || target.is_empty()
        || !target.iter().all(|&b| b.is_ascii_graphic())
    {
        return Err(HttpError::MalformedHead);
    }
    let parsed = match httparse::parse_headers(&buf[nl + 1..], headers) {
        Ok(httparse::Status::Complete((n, hs))) => Some((method, target, 1, nl + 1 + n, hs)),
        Ok(httparse::Status::Partial) => None,
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(_) => return Err(HttpError::MalformedHead),
    };
    finish(buf, limits, parsed)
}

fn finish(
    buf: &[u8],
    limits: &HeadLimits,
    parsed: Option<Parsed<'_, '_>>,
) -> Result<Option<RequestHead>, HttpError> {
    let Some((method, target, minor_version, head_len, headers)) = parsed else {
        // Incomplete. A request line that has not ended within the target limit (plus
        // room for method and version) or within the head limit is 414.
        let line_open = !buf.contains(&b'\n');
        if line_open && buf.len() > limits.max_target_bytes.saturating_add(32) {
            return Err(HttpError::RequestLineTooLong);
        }
        return if buf.len() >= limits.max_head_bytes {
            Err(if line_open {
                HttpError::RequestLineTooLong
            } else {
                HttpError::HeadTooLarge
            })
        } else {
            Ok(None)
        };
    };
    if head_len > limits.max_head_bytes {
        return Err(HttpError::HeadTooLarge);
    }
    let base = buf.as_ptr() as usize;
    let span = |s: &[u8]| -> Span {
        let start = s.as_ptr() as usize - base;
        start..start + s.len()
    };
    let method = match method {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "OPTIONS" => Method::Options,
        _ => Method::Other,
    };
    let mut head = RequestHead {
        method: Some(method),
        minor_version,
        target: span(target),
        head_len,
        ..RequestHead::default()
    };
    // A whole head with a long target is answered 414 on a connection that stays
    // usable (the framing is sound): the handler reads this flag.
    head.target_too_long = target.len() > limits.max_target_bytes;
    let mut content_length: Option<u64> = None;
    let mut ranges = 0u32;
    for h in headers {
        let name = h.name;
        let value = h.value;
        if name.eq_ignore_ascii_case("host") {
            if head.host.is_some() {
                return Err(HttpError::MalformedHead);
            }
            head.host = Some(span(value));
        } else if name.eq_ignore_ascii_case("range") {
            ranges += 1;
            head.range = Some(span(value));
        } else if name.eq_ignore_ascii_case("if-none-match") {
            head.if_none_match = Some(span(value));
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            head.if_modified_since = Some(span(value));
        } else if name.eq_ignore_ascii_case("if-match") {
            head.if_match = Some(span(value));
        } else if name.eq_ignore_ascii_case("if-unmodified-since") {
            head.if_unmodified_since = Some(span(value));
        } else if name.eq_ignore_ascii_case("if-range") {
            head.if_range = Some(span(value));
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin = Some(span(value));
        } else if name.eq_ignore_ascii_case("user-agent") {
            head.user_agent = Some(span(value));
        } else if name.eq_ignore_ascii_case("access-control-request-method") {
            head.ac_request_method = Some(span(value));
        } else if name.eq_ignore_ascii_case("access-control-request-headers") {
            head.ac_request_headers = Some(span(value));
        } else if name.eq_ignore_ascii_case("expect") {
            head.expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    head.connection_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    head.connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("content-length") {
            let v = parse_decimal(value.trim_ascii()).ok_or(HttpError::BadContentLength)?;
            if content_length.is_some_and(|prev| prev != v) {
                return Err(HttpError::BadContentLength);
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
    }
    // Two Range fields are not a valid request (RFC 9110 14.2): ignore both, as a
    // server may ignore Range, and send the whole representation.
    if ranges > 1 {
        head.range = None;
    }
    head.content_length = content_length.unwrap_or(0);
    Ok(Some(head))
}

/// Whether `v` is a valid `Host` value (or the authority of an absolute-form target):
/// `reg-name [":" port]` or `"[" IPv6 "]" [":" port]`, never empty, no userinfo,
/// spaces, path or other characters RFC 3986 does not allow there.
pub fn valid_authority(v: &[u8]) -> bool {
    let (host, port) = if v.first() == Some(&b'[') {
        let Some(end) = v.iter().position(|&b| b == b']') else {
            return false;
        };
        let inner = &v[1..end];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        {
            return false;
        }
        match &v[end + 1..] {
            [] => (&v[..=end], None),
            [b':', port @ ..] => (&v[..=end], Some(port)),
            _ => return false,
        }
    } else {
        match v.iter().position(|&b| b == b':') {
            Some(i) => (&v[..i], Some(&v[i + 1..])),
            None => (v, None),
        }
    };
    let reg_name_ok = host.first() == Some(&b'[')
        || (!host.is_empty()
            && host
                .iter()
                .all(|&b| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=%".contains(&b)));
    let port_ok = port.is_none_or(|p| p.len() <= 5 && p.iter().all(u8::is_ascii_digit));
    reg_name_ok && port_ok
}

/// Parses an unsigned decimal with no sign, spaces or overflow.
pub fn parse_decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        if !b.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &[u8] = b"GET /a/b.ts?x=1 HTTP/1.1\r\nHost: example\r\nRange: bytes=0-9\r\nOrigin: https://p\r\nConnection: keep-alive, Upgrade\r\n\r\n";

    #[test]
    fn parses_a_complete_head() {
        let h = parse_head(REQ, 64, 16384).unwrap().unwrap();
        assert_eq!(h.method(), Method::Get);
        assert_eq!(&REQ[h.target.clone()], b"/a/b.ts?x=1");
        assert_eq!(&REQ[h.host.clone().unwrap()], b"example");
        assert_eq!(&REQ[h.range.clone().unwrap()], b"bytes=0-9");
        assert_eq!(&REQ[h.origin.clone().unwrap()], b"https://p");
        assert!(h.connection_keep_alive && !h.connection_close && h.keep_alive());
        assert_eq!(h.head_len, REQ.len());
    }

    #[test]
    fn every_split_point_is_partial_then_complete() {
        for cut in 0..REQ.len() {
            assert!(
                parse_head(&REQ[..cut], 64, 16384).unwrap().is_none(),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn pipelined_requests_report_their_own_length() {
        let mut two = REQ.to_vec();
        two.extend_from_slice(b"HEAD / HTTP/1.1\r\nHost: e\r\n\r\n");
        let h = parse_head(&two, 64, 16384).unwrap().unwrap();
        assert_eq!(h.head_len, REQ.len());
        let h2 = parse_head(&two[h.head_len..], 64, 16384).unwrap().unwrap();
        assert_eq!(h2.method(), Method::Head);
    }

    #[test]
    fn limits_and_framing_errors() {
        let big = [b"GET / HTTP/1.1\r\nX: ".as_slice(), &[b'a'; 2000]].concat();
        assert_eq!(
            parse_head(&big, 64, 1024).unwrap_err(),
            HttpError::HeadTooLarge
        );
        let many: Vec<u8> = [
            b"GET / HTTP/1.1\r\n".as_slice(),
            &b"A: b\r\n".repeat(10),
            b"\r\n",
        ]
        .concat();
        assert_eq!(
            parse_head(&many, 8, 16384).unwrap_err(),
            HttpError::TooManyHeaders
        );
        assert_eq!(
            parse_head(b"GARBAGE\r\n\r\n", 64, 16384).unwrap_err(),
            HttpError::MalformedHead
        );
        assert_eq!(
            parse_head(
                b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                64,
                16384
            )
            .unwrap_err(),
            HttpError::BadContentLength
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 64, 16384).unwrap_err(),
            HttpError::BadContentLength
        );
        assert_eq!(
            parse_head(
                b"GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                64,
                16384
            )
            .unwrap_err(),
            HttpError::UnsupportedTransferEncoding
        );
        assert_eq!(
            parse_head(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 64, 16384).unwrap_err(),
            HttpError::MalformedHead
        );
    }

    fn limits(target: usize) -> HeadLimits {
        HeadLimits {
            max_headers: 64,
            max_head_bytes: 16384,
            max_target_bytes: target,
        }
    }

    #[test]
    fn later_minor_versions_are_11_and_other_majors_505() {
        for minor in 2..=9 {
            let raw =
                format!("GET /a.ts HTTP/1.{minor}\r\nHost: h\r\nRange: bytes=0-1\r\n\r\nNEXT");
            let h = parse(raw.as_bytes(), &limits(8192)).unwrap().unwrap();
            assert_eq!(h.minor_version, 1);
            assert_eq!(&raw.as_bytes()[h.target.clone()], b"/a.ts");
            assert_eq!(&raw.as_bytes()[h.range.clone().unwrap()], b"bytes=0-1");
            assert_eq!(&raw.as_bytes()[h.head_len..], b"NEXT");
            // Split anywhere: incomplete, never an error.
            for cut in 0..raw.len() - 4 {
                assert_eq!(
                    parse(&raw.as_bytes()[..cut], &limits(8192)),
                    Ok(None),
                    "{cut}"
                );
            }
        }
        for v in ["2.0", "3.0", "0.9"] {
            let raw = format!("GET / HTTP/{v}\r\nHost: h\r\n\r\n");
            assert_eq!(
                parse(raw.as_bytes(), &limits(8192)).unwrap_err(),
                HttpError::VersionNotSupported,
                "{v}"
            );
        }
        assert_eq!(
            parse(b"GET / HTTP/1.x\r\n\r\n", &limits(8192)).unwrap_err(),
            HttpError::MalformedHead
        );
    }

    #[test]
    fn long_targets_are_414() {
        let raw = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(600));
        let h = parse(raw.as_bytes(), &limits(512)).unwrap().unwrap();
        assert!(
            h.target_too_long,
            "a complete head is answered 414 and kept"
        );
        let h = parse(raw.as_bytes(), &limits(8192)).unwrap().unwrap();
        assert!(!h.target_too_long);
        // A request line that never ends within the limits: 414 and close, not 431.
        let partial = format!("GET /{}", "a".repeat(20_000));
        assert_eq!(
            parse(partial.as_bytes(), &limits(8192)).unwrap_err(),
            HttpError::RequestLineTooLong
        );
        assert!(HttpError::RequestLineTooLong.closes() && !HttpError::TargetTooLong.closes());
    }

    #[test]
    fn repeated_range_is_ignored_and_expect_is_seen() {
        let h = parse(
            b"GET / HTTP/1.1\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\nExpect: 100-Continue\r\n\r\n",
            &limits(8192),
        )
        .unwrap()
        .unwrap();
        assert!(h.range.is_none());
        assert!(h.expect_continue);
    }

    #[test]
    fn authorities() {
        for ok in ["a", "a.b:1", "[::1]", "[::1]:443", "x:", "1.2.3.4:65535"] {
            assert!(valid_authority(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "", " a", "a b", "a/b", "u@h", "[]", "[::1]x", "a:b", "a:123456", ":80",
        ] {
            assert!(!valid_authority(bad.as_bytes()), "{bad:?}");
        }
    }

    #[test]
    fn http10_keep_alive_rules() {
        let h = parse_head(b"GET / HTTP/1.0\r\n\r\n", 64, 16384)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive());
        let h = parse_head(
            b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
            64,
            16384,
        )
        .unwrap()
        .unwrap();
        assert!(h.keep_alive());
        let h = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 64, 16384)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive());
    }

    #[test]
    fn decimal() {
        assert_eq!(parse_decimal(b"0"), Some(0));
        assert_eq!(parse_decimal(b"18446744073709551615"), None);
        assert_eq!(
            parse_decimal(b"1844674407370955161"),
            Some(1844674407370955161)
        );
        assert_eq!(parse_decimal(b""), None);
        assert_eq!(parse_decimal(b"1a"), None);
    }

    proptest::proptest! {
        /// Any bytes: no panic, and a parsed head's spans lie inside the input.
        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(Some(h)) = parse_head(&data, 16, 4096) {
                proptest::prop_assert!(h.head_len <= data.len());
                for s in [Some(h.target.clone()), h.host.clone(), h.range.clone(), h.origin.clone()].into_iter().flatten() {
                    proptest::prop_assert!(s.end <= h.head_len);
                }
            }
        }

        /// A valid head with random header values parses the same split anywhere.
        #[test]
        fn split_heads_parse_identically(value in "[ -~]{0,40}", cut in 0usize..120) {
            let raw = format!("GET /x.ts HTTP/1.1\r\nHost: h\r\nX-V: {value}\r\n\r\n");
            let raw = raw.as_bytes();
            let whole = parse_head(raw, 16, 4096).unwrap().unwrap();
            let cut = cut.min(raw.len());
            if cut < raw.len() {
                proptest::prop_assert!(parse_head(&raw[..cut], 16, 4096).unwrap().is_none());
            }
            proptest::prop_assert_eq!(whole.head_len, raw.len());
        }
    }
}
