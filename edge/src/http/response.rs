//! Response heads, written into a reused per-connection buffer (no allocation once
//! the buffer has grown to its working size).

use std::io::Write;
use std::time::SystemTime;

use super::reason;

/// Writes one response head into a buffer; `finish` adds the blank line.
pub struct HeadWriter<'a> {
    buf: &'a mut Vec<u8>,
}

impl<'a> HeadWriter<'a> {
    /// Clears `buf` and writes the status line and the headers every response carries
    /// (`Server`, `Date`).
    pub fn start(buf: &'a mut Vec<u8>, status: u16) -> Self {
        buf.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(
            buf,
            "HTTP/1.1 {status} {}\r\nServer: edge\r\nDate: {}\r\n",
            reason(status),
            httpdate::HttpDate::from(SystemTime::now())
        );
        Self { buf }
    }

    /// Adds a header with a byte-string value (callers pass values without CR/LF;
    /// values copied from request headers were already checked by httparse).
    pub fn header(&mut self, name: &str, value: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.extend_from_slice(b": ");
        self.buf.extend_from_slice(value);
        self.buf.extend_from_slice(b"\r\n");
        self
    }

    /// Adds a header with a decimal value.
    pub fn header_u64(&mut self, name: &str, value: u64) -> &mut Self {
        let _ = write!(self.buf, "{name}: {value}\r\n");
        self
    }

    /// Adds a header whose value is a fixed prefix and a decimal, e.g.
    /// `Cache-Control: public, max-age=60`.
    pub fn header_prefixed_u64(&mut self, name: &str, prefix: &str, value: u64) -> &mut Self {
        let _ = write!(self.buf, "{name}: {prefix}{value}\r\n");
        self
    }

    /// Adds a header with an HTTP-date value.
    pub fn header_date(&mut self, name: &str, t: SystemTime) -> &mut Self {
        let _ = write!(self.buf, "{name}: {}\r\n", httpdate::HttpDate::from(t));
        self
    }

    /// `Content-Range: bytes start-end/len`.
    pub fn content_range(&mut self, start: u64, end: u64, len: u64) -> &mut Self {
        let _ = write!(self.buf, "Content-Range: bytes {start}-{end}/{len}\r\n");
        self
    }

    /// `Content-Range: bytes */len` (with 416).
    pub fn content_range_unsatisfied(&mut self, len: u64) -> &mut Self {
        let _ = write!(self.buf, "Content-Range: bytes */{len}\r\n");
        self
    }

    /// Ends the head.
    pub fn finish(self) {
        self.buf.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_head() {
        let mut buf = Vec::new();
        let mut w = HeadWriter::start(&mut buf, 206);
        w.header("Content-Type", b"video/mp2t")
            .header_u64("Content-Length", 10)
            .content_range(0, 9, 100);
        w.finish();
        let s = String::from_utf8(buf).unwrap();
        assert!(
            s.starts_with("HTTP/1.1 206 Partial Content\r\nServer: edge\r\nDate: "),
            "{s}"
        );
        assert!(s.contains("\r\nContent-Length: 10\r\n"));
        assert!(s.contains("\r\nContent-Range: bytes 0-9/100\r\n"));
        assert!(s.ends_with("\r\n\r\n"));
    }
}
