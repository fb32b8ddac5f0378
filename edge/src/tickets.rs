//! Session tickets sealed with keys from a file every edge of a fleet shares, so a
//! client that got a ticket from one edge resumes on another (TLS 1.3 and TLS 1.2).
//!
//! # The key file (`tls.ticket_keys_file`)
//! One or more 48-byte keys, concatenated, binary (`openssl rand 48 > keys`): each is
//! a 16-byte key name followed by a 32-byte AES-256-GCM key. The same keys may be
//! written as text instead, one key per line in 96 hex digits (`openssl rand -hex 48`),
//! blank lines and `#` comments allowed: the form configuration management (Ansible's
//! vault) can template. A file is read as text when every byte of it is printable
//! ASCII or whitespace, which 48 random bytes are with a chance of about 10^-21; a
//! text file with any other line is refused, naming the line. The first key seals new
//! tickets; every key in the file opens them. Rotation: write a file with the new key
//! first and the previous one after it (`cat new old > keys.tmp && mv keys.tmp keys`),
//! on every edge, then SIGHUP; drop the old key one ticket lifetime later. The file
//! must be mode 0600 or stricter (no group or other bits) and hold 1 to
//! [`MAX_KEYS`] keys; anything else is refused with a message naming the file.
//!
//! # The ticket
//! `name (16) || nonce (12) || AES-256-GCM(plaintext) || tag (16)`, the name as
//! associated data. Nonces are random (96 bits); a key is good for far more tickets
//! than a rotation period issues. Key bytes are never logged.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use ring::aead::{self, Aad, LessSafeKey, Nonce, UnboundKey, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Bytes per key in the file.
pub const KEY_BYTES: usize = 48;
/// Most keys a file may hold.
pub const MAX_KEYS: usize = 16;
const NAME_BYTES: usize = 16;

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum TicketKeyError {
    /// It could not be read.
    #[error("tls.ticket_keys_file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// Group or other may read it.
    #[error(
        "tls.ticket_keys_file {path}: mode {mode:o} lets group or others read session ticket \
         keys; chmod 600 it"
    )]
    Permissions {
        /// The file.
        path: String,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a whole number of keys, or too many, or none.
    #[error(
        "tls.ticket_keys_file {path}: {len} bytes; it must hold 1 to {MAX_KEYS} keys of \
         {KEY_BYTES} bytes each (16-byte name + 32-byte AES-256 key, e.g. `openssl rand 48`)"
    )]
    Length {
        /// The file.
        path: String,
        /// Its length.
        len: usize,
    },
    /// The text form has a line that is not 96 hex digits, a comment or blank.
    #[error(
        "tls.ticket_keys_file {path}: line {line} is not a key of 96 hex digits (text form: \
         one `openssl rand -hex 48` per line, `#` comments and blank lines allowed)"
    )]
    TextLine {
        /// The file.
        path: String,
        /// The line, 1-based.
        line: usize,
    },
    /// Two keys share a name: a ticket could not say which key opens it.
    #[error("tls.ticket_keys_file {path}: keys {first} and {second} have the same 16-byte name")]
    DuplicateName {
        /// The file.
        path: String,
        /// Index of the first (0-based).
        first: usize,
        /// Index of the second.
        second: usize,
    },
}

struct TicketKey {
    name: [u8; NAME_BYTES],
    key: LessSafeKey,
}

/// A [`rustls::server::ProducesTickets`] over the keys of one key file.
pub struct FileTicketer {
    keys: Vec<TicketKey>,
    lifetime_secs: u32,
    rng: SystemRandom,
}

impl std::fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key names and bytes stay out of logs.
        f.debug_struct("FileTicketer")
            .field("keys", &self.keys.len())
            .field("lifetime_secs", &self.lifetime_secs)
            .finish()
    }
}

impl FileTicketer {
    /// Reads and checks `path`; tickets live `lifetime_secs`.
    pub fn load(path: &Path, lifetime_secs: u32) -> Result<Self, TicketKeyError> {
        let p = || path.display().to_string();
        let meta =
            std::fs::metadata(path).map_err(|source| TicketKeyError::Io { path: p(), source })?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TicketKeyError::Permissions { path: p(), mode });
        }
        let bytes =
            std::fs::read(path).map_err(|source| TicketKeyError::Io { path: p(), source })?;
        Self::from_bytes(&bytes, lifetime_secs).map_err(|e| match e {
            TicketKeyError::Length { len, .. } => TicketKeyError::Length { path: p(), len },
            TicketKeyError::DuplicateName { first, second, .. } => TicketKeyError::DuplicateName {
                path: p(),
                first,
                second,
            },
            TicketKeyError::TextLine { line, .. } => TicketKeyError::TextLine { path: p(), line },
            other => other,
        })
    }

    /// Builds the ticketer from the file's bytes, binary or text form (errors carry no
    /// path).
    pub fn from_bytes(bytes: &[u8], lifetime_secs: u32) -> Result<Self, TicketKeyError> {
        let decoded;
        let bytes = if is_text_form(bytes) {
            decoded = decode_text_form(bytes)?;
            &decoded[..]
        } else {
            bytes
        };
        if bytes.is_empty() || bytes.len() % KEY_BYTES != 0 || bytes.len() / KEY_BYTES > MAX_KEYS {
            return Err(TicketKeyError::Length {
                path: String::new(),
                len: bytes.len(),
            });
        }
        let mut keys: Vec<TicketKey> = Vec::with_capacity(bytes.len() / KEY_BYTES);
        for (i, chunk) in bytes.chunks_exact(KEY_BYTES).enumerate() {
            let mut name = [0u8; NAME_BYTES];
            name.copy_from_slice(&chunk[..NAME_BYTES]);
            if let Some(first) = keys.iter().position(|k| k.name == name) {
                return Err(TicketKeyError::DuplicateName {
                    path: String::new(),
                    first,
                    second: i,
                });
            }
            let unbound = UnboundKey::new(&aead::AES_256_GCM, &chunk[NAME_BYTES..])
                .expect("32 bytes is an AES-256 key");
            keys.push(TicketKey {
                name,
                key: LessSafeKey::new(unbound),
            });
        }
        Ok(Self {
            keys,
            lifetime_secs,
            rng: SystemRandom::new(),
        })
    }

    /// How many keys open tickets.
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// Whether a key file is in the text form: non-empty and nothing but printable ASCII
/// and whitespace.
fn is_text_form(bytes: &[u8]) -> bool {
    !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
}

/// The keys of a text-form file as bytes: one key of 96 hex digits per line.
fn decode_text_form(text: &[u8]) -> Result<Vec<u8>, TicketKeyError> {
    let mut out = Vec::new();
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let bad = || TicketKeyError::TextLine {
            path: String::new(),
            line: i + 1,
        };
        if line.len() != 2 * KEY_BYTES {
            return Err(bad());
        }
        for pair in line.chunks_exact(2) {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
        }
    }
    Ok(out)
}

impl rustls::server::ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        self.lifetime_secs
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let k = self.keys.first()?;
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).ok()?;
        let mut out = Vec::with_capacity(NAME_BYTES + NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&k.name);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = k
            .key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&k.name),
                &mut out[NAME_BYTES + NONCE_LEN..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        if cipher.len() < NAME_BYTES + NONCE_LEN + 16 {
            return None;
        }
        let (name, rest) = cipher.split_at(NAME_BYTES);
        let k = self.keys.iter().find(|k| k.name == name)?;
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = sealed.to_vec();
        let plain = k.key.open_in_place(nonce, Aad::from(name), &mut buf).ok()?;
        let n = plain.len();
        buf.truncate(n);
        Some(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::server::ProducesTickets as _;

    fn key(seed: u8) -> Vec<u8> {
        (0..KEY_BYTES as u8)
            .map(|i| i.wrapping_mul(7) ^ seed)
            .collect()
    }

    #[test]
    fn first_key_seals_all_keys_open() {
        let old = FileTicketer::from_bytes(&key(1), 3600).unwrap();
        let t = old.encrypt(b"session state").unwrap();
        assert_eq!(old.decrypt(&t).unwrap(), b"session state");
        // Rotation: new key first, old second.
        let rotated = FileTicketer::from_bytes(&[key(2), key(1)].concat(), 3600).unwrap();
        assert_eq!(rotated.decrypt(&t).unwrap(), b"session state");
        let t2 = rotated.encrypt(b"x").unwrap();
        assert_eq!(&t2[..16], &key(2)[..16], "the first key seals");
        assert!(
            old.decrypt(&t2).is_none(),
            "an edge without the new key cannot open it"
        );
        // A different file opens nothing.
        let other = FileTicketer::from_bytes(&key(3), 3600).unwrap();
        assert!(other.decrypt(&t).is_none());
        // Tampering is detected.
        let mut bad = t.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(old.decrypt(&bad).is_none());
        assert!(old.decrypt(&t[..20]).is_none());
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        let d = std::env::temp_dir().join(format!("edge-tk-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("keys");
        std::fs::write(&f, key(1)).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = FileTicketer::load(&f, 60).unwrap_err().to_string();
        assert!(e.contains("keys") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(FileTicketer::load(&f, 60).unwrap().key_count(), 1);
        std::fs::write(&f, &key(1)[..40]).unwrap();
        let e = FileTicketer::load(&f, 60).unwrap_err().to_string();
        assert!(
            e.contains("40 bytes") && e.contains(&f.display().to_string()),
            "{e}"
        );
        std::fs::write(&f, [key(1), key(1)].concat()).unwrap();
        let e = FileTicketer::load(&f, 60).unwrap_err().to_string();
        assert!(e.contains("same 16-byte name"), "{e}");
        // The text form: the same keys in hex, one per line, comments allowed.
        let hex = |k: &[u8]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
        std::fs::write(
            &f,
            format!("# fleet keys\n{}\n\n{}\n", hex(&key(2)), hex(&key(1))),
        )
        .unwrap();
        let text = FileTicketer::load(&f, 60).unwrap();
        assert_eq!(text.key_count(), 2);
        let sealed = text.encrypt(b"s").unwrap();
        assert_eq!(&sealed[..16], &key(2)[..16], "the first line seals");
        let binary = FileTicketer::from_bytes(&[key(2), key(1)].concat(), 60).unwrap();
        assert_eq!(
            binary.decrypt(&sealed).unwrap(),
            b"s",
            "same keys as binary"
        );
        std::fs::write(&f, format!("{}\n{}z\n", hex(&key(2)), &hex(&key(1))[1..])).unwrap();
        let e = FileTicketer::load(&f, 60).unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("96 hex digits"), "{e}");
        std::fs::write(&f, format!("{}\n", &hex(&key(2))[..94])).unwrap();
        let e = FileTicketer::load(&f, 60).unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        std::fs::write(&f, "# nothing but a comment\n").unwrap();
        let e = FileTicketer::load(&f, 60).unwrap_err().to_string();
        assert!(e.contains("0 bytes"), "{e}");
        let e = FileTicketer::load(&d.join("missing"), 60)
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
