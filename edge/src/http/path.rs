//! Request-target normalisation: from the raw target to a path relative to the
//! served root that can never name anything outside it.
//!
//! Percent-escapes are decoded first, then the path is split on `/` and `.`/`..`
//! segments are resolved; a `..` that would climb above the root, a NUL, a backslash
//! (raw or encoded), an invalid escape or non-UTF-8 bytes reject the request (400).
//! Segments starting with `.` (dotfiles such as `.git`) are never served (404).

use super::HttpError;

/// Writes the normalised relative path of `target` into `out` (cleared first).
///
/// `out` never starts or ends with `/` and never contains `.`/`..` segments or empty
/// segments; a target naming a directory (`/`, `/a/`) yields `index.html` inside it.
/// The query string is ignored.
pub fn normalise(target: &[u8], out: &mut String) -> Result<(), HttpError> {
    out.clear();
    // absolute-form (RFC 9112 3.2.2): drop scheme and authority, keep the path.
    let target = strip_absolute_form(target);
    let path = match target.iter().position(|&b| b == b'?' || b == b'#') {
        Some(i) => &target[..i],
        None => target,
    };
    if path.first() != Some(&b'/') {
        return Err(HttpError::BadPath);
    }
    // Decode into a fixed stack buffer: targets are bounded by the head size limit,
    // but we refuse absurdly long paths outright.
    let mut decoded = [0u8; 4096];
    if path.len() > decoded.len() {
        return Err(HttpError::BadPath);
    }
    let mut n = 0;
    let mut i = 0;
    while i < path.len() {
        let b = match path[i] {
            b'%' => {
                let hi = path
                    .get(i + 1)
                    .and_then(|&c| hex(c))
                    .ok_or(HttpError::BadPath)?;
                let lo = path
                    .get(i + 2)
                    .and_then(|&c| hex(c))
                    .ok_or(HttpError::BadPath)?;
                i += 3;
                hi << 4 | lo
            }
            c => {
                i += 1;
                c
            }
        };
        if b == 0 || b == b'\\' {
            return Err(HttpError::BadPath);
        }
        decoded[n] = b;
        n += 1;
    }
    let decoded = std::str::from_utf8(&decoded[..n]).map_err(|_| HttpError::BadPath)?;
    let wants_dir = decoded.ends_with('/') || decoded.ends_with("/.") || decoded.ends_with("/..");
    for seg in decoded.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if out.is_empty() {
                    return Err(HttpError::BadPath);
                }
                match out.rfind('/') {
                    Some(j) => out.truncate(j),
                    None => out.clear(),
                }
            }
            s if s.starts_with('.') => return Err(HttpError::NotFound),
            s => {
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(s);
            }
        }
    }
    if wants_dir || out.is_empty() {
        if !out.is_empty() {
            out.push('/');
        }
        out.push_str("index.html");
    }
    Ok(())
}

/// The authority of an absolute-form target (`http://AUTHORITY/path`), if it is one.
/// The caller checks it with [`super::request::valid_authority`] (userinfo, an empty
/// host and stray characters are refused there).
pub fn absolute_form_authority(target: &[u8]) -> Option<&[u8]> {
    let rest = if target.len() >= 7 && target[..7].eq_ignore_ascii_case(b"http://") {
        &target[7..]
    } else if target.len() >= 8 && target[..8].eq_ignore_ascii_case(b"https://") {
        &target[8..]
    } else {
        return None;
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?' || b == b'#')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `http://host[:port]/path` → `/path` (an authority with no path → `/`).
pub fn strip_absolute_form(target: &[u8]) -> &[u8] {
    let Some(authority) = absolute_form_authority(target) else {
        return target;
    };
    let scheme_len = if target[4] == b':' { 7 } else { 8 };
    let rest = &target[scheme_len + authority.len()..];
    if rest.first() == Some(&b'/') {
        rest
    } else {
        b"/"
    }
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(t: &str) -> Result<String, HttpError> {
        let mut s = String::new();
        normalise(t.as_bytes(), &mut s).map(|()| s)
    }

    #[test]
    fn plain_paths() {
        assert_eq!(norm("/a/b.ts").unwrap(), "a/b.ts");
        assert_eq!(norm("/a//b.ts?x=../../etc").unwrap(), "a/b.ts");
        assert_eq!(norm("/").unwrap(), "index.html");
        assert_eq!(norm("/content/").unwrap(), "content/index.html");
        assert_eq!(norm("/a/./b/../c.m3u8").unwrap(), "a/c.m3u8");
        assert_eq!(norm("/a%20b.ts").unwrap(), "a b.ts");
    }

    #[test]
    fn absolute_form_targets() {
        assert_eq!(norm("http://example.com/a/b.ts").unwrap(), "a/b.ts");
        assert_eq!(
            norm("HTTPS://example.com:8443/a/../c.m3u8?x").unwrap(),
            "c.m3u8"
        );
        assert_eq!(norm("http://example.com").unwrap(), "index.html");
        assert!(matches!(
            norm("http://example.com/../etc/passwd"),
            Err(HttpError::BadPath)
        ));
    }

    #[test]
    fn traversal_never_escapes() {
        for t in [
            "/../etc/passwd",
            "/a/../../etc/passwd",
            "/%2e%2e/etc/passwd",
            "/%2E%2E/%2e%2e/etc/passwd",
            "/a/%2e%2e/%2e%2e/etc/passwd",
            "/..%2fetc/passwd",
            "/a\\..\\..\\etc",
            "/a%5c..%5cetc",
            "/a%00.ts",
            "/a%zz",
            "/a%2",
            "relative",
            "*",
            "/%ff%fe",
        ] {
            let r = norm(t);
            assert!(matches!(r, Err(HttpError::BadPath)), "{t} gave {r:?}");
        }
    }

    #[test]
    fn dotfiles_are_hidden() {
        assert_eq!(norm("/.git/config").unwrap_err(), HttpError::NotFound);
        assert_eq!(norm("/a/.htpasswd").unwrap_err(), HttpError::NotFound);
    }

    #[test]
    fn resolved_paths_stay_inside() {
        // Whatever the input, a successful result has no `..` segment and no leading `/`.
        let pieces = ["a", "..", ".", "%2e%2e", "%2f", "b.ts", "", "%2E"];
        for x in pieces {
            for y in pieces {
                for z in pieces {
                    let t = format!("/{x}/{y}/{z}");
                    if let Ok(p) = norm(&t) {
                        assert!(!p.starts_with('/'), "{t} -> {p}");
                        assert!(
                            p.split('/').all(|s| s != ".." && s != "." && !s.is_empty()),
                            "{t} -> {p}"
                        );
                    }
                }
            }
        }
    }

    proptest::proptest! {
        /// Any target: no panic; success means a clean relative path.
        #[test]
        fn arbitrary_targets_stay_inside(t in proptest::collection::vec(proptest::sample::select(b"/.%2eE5cf0a\\\x00?".to_vec()), 0..40)) {
            let mut out = String::new();
            let mut target = b"/".to_vec();
            target.extend_from_slice(&t);
            if normalise(&target, &mut out).is_ok() {
                proptest::prop_assert!(!out.starts_with('/'));
                proptest::prop_assert!(out.split('/').all(|s| !s.is_empty() && s != "." && s != ".." && !s.starts_with('.')));
                proptest::prop_assert!(!out.contains('\0') && !out.contains('\\'));
            }
        }

        #[test]
        fn arbitrary_bytes_never_panic(t in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let mut out = String::new();
            let _ = normalise(&t, &mut out);
        }
    }
}
