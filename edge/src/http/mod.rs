//! HTTP/1.1 semantics of the data plane: request heads, errors and their one mapping
//! to a status, path normalisation, byte ranges, conditional requests, content types
//! and response heads.
//!
//! Everything here is synchronous and allocation-free per request; the connection
//! loop in [`crate::conn`] owns the I/O.

pub mod path;
pub mod range;
pub mod request;
pub mod response;

/// Why a request could not be answered with the resource. Each variant maps to one
/// status and one keep-alive decision in [`HttpError::status`] / [`HttpError::closes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The head is not HTTP/1.x (framing error).
    #[error("malformed request head")]
    MalformedHead,
    /// The head exceeds `limits.max_head_bytes`.
    #[error("request head too large")]
    HeadTooLarge,
    /// More header lines than `limits.max_headers`.
    #[error("too many request headers")]
    TooManyHeaders,
    /// `Content-Length` unparsable or conflicting (framing error).
    #[error("bad content-length")]
    BadContentLength,
    /// A `Transfer-Encoding` request body: we take no request bodies (framing error).
    #[error("transfer-encoding not supported")]
    UnsupportedTransferEncoding,
    /// A request body larger than we are willing to skip.
    #[error("request body too large")]
    BodyTooLarge,
    /// HTTP/1.1 without `Host`.
    #[error("missing host header")]
    MissingHost,
    /// A `Host` (or absolute-form authority) that is not a valid host[:port]: spaces,
    /// a path, userinfo, an empty value.
    #[error("invalid host")]
    BadHost,
    /// The request line did not end within the limits (framing error, 414).
    #[error("request line too long")]
    RequestLineTooLong,
    /// A complete head whose target exceeds `limits.max_request_target_bytes` (414).
    #[error("request target too long")]
    TargetTooLong,
    /// An HTTP major version other than 1 (505, framing error).
    #[error("http version not supported")]
    VersionNotSupported,
    /// The file exists but the server may not read it (EACCES, EPERM).
    #[error("forbidden")]
    Forbidden,
    /// `If-Match` or `If-Unmodified-Since` evaluated to false (412).
    #[error("precondition failed")]
    PreconditionFailed,
    /// The server is out of descriptors or memory for this request (503).
    #[error("service unavailable")]
    Unavailable,
    /// The target is not a path we accept (bad escape, NUL, backslash, escapes the root).
    #[error("bad request path")]
    BadPath,
    /// Nothing is served at this path.
    #[error("not found")]
    NotFound,
    /// A method other than GET, HEAD, OPTIONS.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// A CORS preflight from an origin that is not allowed.
    #[error("origin not allowed")]
    OriginNotAllowed,
    /// The byte range cannot be satisfied (416, with `Content-Range: bytes */len`).
    #[error("range not satisfiable")]
    RangeNotSatisfiable,
    /// The server failed to read the resource.
    #[error("internal error")]
    Internal,
    /// The origin answered 410 (relayed by a caching edge).
    #[error("gone")]
    Gone,
    /// The origin failed: 5xx, refused, reset or malformed, after the retries (502).
    #[error("bad gateway")]
    BadGateway,
    /// The origin did not answer in time, after the retries (504).
    #[error("gateway timeout")]
    GatewayTimeout,
}

impl HttpError {
    /// The status code sent for this error.
    pub fn status(self) -> u16 {
        match self {
            Self::MalformedHead
            | Self::BadContentLength
            | Self::UnsupportedTransferEncoding
            | Self::MissingHost
            | Self::BadHost
            | Self::BadPath => 400,
            Self::OriginNotAllowed | Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Gone => 410,
            Self::BadGateway => 502,
            Self::GatewayTimeout => 504,
            Self::PreconditionFailed => 412,
            Self::BodyTooLarge => 413,
            Self::RequestLineTooLong | Self::TargetTooLong => 414,
            Self::RangeNotSatisfiable => 416,
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::Internal => 500,
            Self::Unavailable => 503,
            Self::VersionNotSupported => 505,
        }
    }

    /// Whether the connection must close after the answer: only when the request's
    /// framing cannot be trusted (we would not know where the next request starts).
    /// Every deliberate 4xx keeps the connection open.
    pub fn closes(self) -> bool {
        matches!(
            self,
            Self::MalformedHead
                | Self::HeadTooLarge
                | Self::TooManyHeaders
                | Self::BadContentLength
                | Self::UnsupportedTransferEncoding
                | Self::BodyTooLarge
                | Self::RequestLineTooLong
                | Self::VersionNotSupported
                | Self::Unavailable
                | Self::Internal
        )
    }

    /// A short plain-text body for the answer.
    pub fn body(self) -> &'static [u8] {
        match self {
            Self::MalformedHead => b"malformed request\n",
            Self::HeadTooLarge | Self::TooManyHeaders => b"request header fields too large\n",
            Self::BadContentLength => b"bad content-length\n",
            Self::UnsupportedTransferEncoding => b"transfer-encoding not supported\n",
            Self::BodyTooLarge => b"request body too large\n",
            Self::MissingHost => b"missing host header\n",
            Self::BadHost => b"invalid host\n",
            Self::RequestLineTooLong | Self::TargetTooLong => b"request target too long\n",
            Self::VersionNotSupported => b"http version not supported\n",
            Self::Forbidden => b"forbidden\n",
            Self::PreconditionFailed => b"precondition failed\n",
            Self::Unavailable => b"service unavailable\n",
            Self::BadPath => b"bad request path\n",
            Self::NotFound => b"not found\n",
            Self::MethodNotAllowed => b"method not allowed\n",
            Self::OriginNotAllowed => b"origin not allowed\n",
            Self::RangeNotSatisfiable => b"range not satisfiable\n",
            Self::Internal => b"internal error\n",
            Self::Gone => b"gone\n",
            Self::BadGateway => b"the origin failed\n",
            Self::GatewayTimeout => b"the origin did not answer in time\n",
        }
    }
}

/// The reason phrase of a status we send.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        206 => "Partial Content",
        304 => "Not Modified",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        410 => "Gone",
        412 => "Precondition Failed",
        414 => "URI Too Long",
        408 => "Request Timeout",
        413 => "Content Too Large",
        416 => "Range Not Satisfiable",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Content type by file extension (case-insensitive).
pub fn content_type(path: &str) -> &'static str {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    let is = |e: &str| ext.eq_ignore_ascii_case(e);
    if is("m3u8") {
        "application/vnd.apple.mpegurl"
    } else if is("mpd") {
        "application/dash+xml"
    } else if is("ts") {
        "video/mp2t"
    } else if is("m4s") {
        "video/iso.segment"
    } else if is("mp4") || is("m4v") {
        "video/mp4"
    } else if is("m4a") {
        "audio/mp4"
    } else if is("aac") {
        "audio/aac"
    } else if is("vtt") {
        "text/vtt; charset=utf-8"
    } else if is("html") || is("htm") {
        "text/html; charset=utf-8"
    } else if is("js") || is("mjs") {
        "text/javascript; charset=utf-8"
    } else if is("css") {
        "text/css; charset=utf-8"
    } else if is("json") {
        "application/json"
    } else if is("txt") {
        "text/plain; charset=utf-8"
    } else if is("svg") {
        "image/svg+xml"
    } else if is("png") {
        "image/png"
    } else if is("ico") {
        "image/x-icon"
    } else {
        "application/octet-stream"
    }
}

/// What kind of media a path names, by extension (case-insensitive): decides
/// default freshness for files and for cached objects alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaKind {
    /// `.m3u8`, `.mpd`: changes as a live window moves.
    Playlist,
    /// Segments, init segments and subtitles: never change once published.
    Segment,
    /// Anything else.
    Other,
}

/// The [`MediaKind`] of `path`.
pub fn media_kind(path: &str) -> MediaKind {
    let ext = path.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    if ext.eq_ignore_ascii_case("m3u8") || ext.eq_ignore_ascii_case("mpd") {
        MediaKind::Playlist
    } else if [
        "ts", "m4s", "mp4", "m4v", "m4a", "aac", "vtt", "cmfv", "cmfa",
    ]
    .iter()
    .any(|e| ext.eq_ignore_ascii_case(e))
    {
        MediaKind::Segment
    } else {
        MediaKind::Other
    }
}

/// `Cache-Control` for a successful response, by content type class: manifests are
/// re-fetched often (they change for live streams), media is long-lived, pages short.
pub fn cache_control(path: &str) -> &'static str {
    match media_kind(path) {
        MediaKind::Playlist => "public, max-age=2",
        MediaKind::Segment => "public, max-age=86400",
        MediaKind::Other => "no-cache",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_of_media() {
        assert_eq!(content_type("a/b.m3u8"), "application/vnd.apple.mpegurl");
        assert_eq!(content_type("x.MPD"), "application/dash+xml");
        assert_eq!(content_type("s.ts"), "video/mp2t");
        assert_eq!(content_type("s.m4s"), "video/iso.segment");
        assert_eq!(content_type("init.mp4"), "video/mp4");
        assert_eq!(content_type("a.aac"), "audio/aac");
        assert_eq!(content_type("sub.vtt"), "text/vtt; charset=utf-8");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn only_framing_errors_close() {
        assert!(HttpError::MalformedHead.closes());
        assert!(HttpError::HeadTooLarge.closes());
        for e in [
            HttpError::NotFound,
            HttpError::MissingHost,
            HttpError::BadPath,
            HttpError::RangeNotSatisfiable,
        ] {
            assert!(!e.closes(), "{e:?}");
            assert!((400..500).contains(&e.status()));
        }
    }
}
