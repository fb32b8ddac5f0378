//! Signed URLs: HMAC-SHA256 tokens with an expiry over a path prefix, and the
//! signing keys they are checked against.
//!
//! A token is `EXPIRES-KEYID-MAC`: `EXPIRES` in Unix seconds, `KEYID` naming the key
//! (`[A-Za-z0-9_]`, 1..=32), `MAC` the lowercase hex HMAC-SHA256 of
//! `"EXPIRES\nKEYID\nPREFIX"` under that key. The edge puts it in the path
//! (`/s/TOKEN/streams/NAME/...`) and signs the prefix `/streams/NAME/`, so the relative
//! URIs of generated manifests carry it to every playlist and segment.
//!
//! A key file holds one key per line, `KEYID HEX-SECRET` (at least 16 bytes), `#`
//! comments allowed. Several keys are accepted for rotation; the first signs. Secrets
//! never appear in errors or `Debug` output.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Shortest secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 16;
/// Longest token looked at.
pub const MAX_TOKEN_BYTES: usize = 128;

struct Key {
    id: String,
    secret: Vec<u8>,
}

/// The keys of a key file; the first signs, all verify.
pub struct SigningKeys {
    keys: Vec<Key>,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeys")
            .field("ids", &self.keys.iter().map(|k| &k.id).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// What is wrong with a key file (never quotes a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeysError {
    /// No keys.
    #[error("no keys (one `KEYID HEX-SECRET` per line)")]
    Empty,
    /// A line that is not `KEYID HEX-SECRET`.
    #[error("line {0}: expected `KEYID HEX-SECRET`")]
    Malformed(usize),
    /// A key id with other characters than `[A-Za-z0-9_]` or too long.
    #[error("line {0}: the key id must be 1..=32 characters of [A-Za-z0-9_]")]
    BadId(usize),
    /// A secret that is not hex or is too short.
    #[error("line {0}: the secret must be hex, at least {MIN_SECRET_BYTES} bytes")]
    BadSecret(usize),
    /// The same id twice.
    #[error("line {0}: key id `{1}` repeats")]
    DuplicateId(usize, String),
}

/// Why a token was refused (all answered 403).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `EXPIRES-KEYID-MAC`.
    #[error("malformed token")]
    Malformed,
    /// No key with that id.
    #[error("unknown key")]
    UnknownKey,
    /// The MAC does not match.
    #[error("bad signature")]
    BadMac,
    /// Past its expiry.
    #[error("expired")]
    Expired,
    /// The stream requires a token and none was given.
    #[error("missing token")]
    Missing,
}

fn id_ok(id: &str) -> bool {
    !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl SigningKeys {
    /// Reads a key file's text.
    pub fn parse(text: &str) -> Result<Self, KeysError> {
        let mut keys: Vec<Key> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line_no = n + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut parts = line.split_ascii_whitespace();
            let (Some(id), Some(secret), None) = (parts.next(), parts.next(), parts.next()) else {
                return Err(KeysError::Malformed(line_no));
            };
            if !id_ok(id) {
                return Err(KeysError::BadId(line_no));
            }
            let secret = hex::decode(secret).map_err(|_| KeysError::BadSecret(line_no))?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(KeysError::BadSecret(line_no));
            }
            if keys.iter().any(|k| k.id == id) {
                return Err(KeysError::DuplicateId(line_no, id.to_string()));
            }
            keys.push(Key {
                id: id.to_string(),
                secret,
            });
        }
        if keys.is_empty() {
            return Err(KeysError::Empty);
        }
        Ok(Self { keys })
    }

    /// The ids, signing key first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|k| k.id.as_str())
    }

    /// A token for `prefix` valid until `expires` (Unix seconds), made with the
    /// first key.
    pub fn sign(&self, prefix: &str, expires: u64) -> String {
        let key = &self.keys[0];
        let mac = mac(key, expires, prefix).finalize().into_bytes();
        format!("{expires}-{}-{}", key.id, hex::encode(mac))
    }

    /// Checks `token` for `prefix` at `now_secs`.
    pub fn verify(&self, token: &str, prefix: &str, now_secs: u64) -> Result<(), TokenError> {
        let t = Token::parse(token)?;
        let key = self
            .keys
            .iter()
            .find(|k| k.id == t.key_id)
            .ok_or(TokenError::UnknownKey)?;
        // Constant-time comparison of the MAC before the expiry is looked at, so a
        // forged token learns nothing from timing either way.
        mac(key, t.expires, prefix)
            .verify_slice(&t.mac)
            .map_err(|_| TokenError::BadMac)?;
        if t.expires < now_secs {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

fn mac(key: &Key, expires: u64, prefix: &str) -> HmacSha256 {
    // HMAC takes keys of any length.
    let mut m = HmacSha256::new_from_slice(&key.secret).expect("HMAC accepts any key length");
    m.update(expires.to_string().as_bytes());
    m.update(b"\n");
    m.update(key.id.as_bytes());
    m.update(b"\n");
    m.update(prefix.as_bytes());
    m
}

/// A token's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token<'a> {
    /// Expiry, Unix seconds.
    pub expires: u64,
    /// The key's id.
    pub key_id: &'a str,
    /// The MAC (32 bytes).
    pub mac: [u8; 32],
}

impl<'a> Token<'a> {
    /// Splits a token into its parts, strictly.
    pub fn parse(token: &'a str) -> Result<Self, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.splitn(3, '-');
        let (Some(exp), Some(key_id), Some(mac_hex)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        if exp.is_empty() || exp.len() > 12 || !exp.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TokenError::Malformed);
        }
        if !id_ok(key_id) || mac_hex.len() != 64 {
            return Err(TokenError::Malformed);
        }
        let mut mac = [0u8; 32];
        hex::decode_to_slice(mac_hex, &mut mac).map_err(|_| TokenError::Malformed)?;
        Ok(Self {
            expires: exp.parse().map_err(|_| TokenError::Malformed)?,
            key_id,
            mac,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# rotation: new first\nk2 00112233445566778899aabbccddeeff00112233\nk1 ffeeddccbbaa99887766554433221100\n";

    #[test]
    fn signs_and_verifies_with_rotation() {
        let keys = SigningKeys::parse(FILE).unwrap();
        let t = keys.sign("/streams/clip/", 2000);
        assert!(t.starts_with("2000-k2-"), "{t}");
        assert_eq!(keys.verify(&t, "/streams/clip/", 1999), Ok(()));
        assert_eq!(keys.verify(&t, "/streams/clip/", 2000), Ok(()));
        assert_eq!(
            keys.verify(&t, "/streams/clip/", 2001),
            Err(TokenError::Expired)
        );
        assert_eq!(
            keys.verify(&t, "/streams/other/", 1),
            Err(TokenError::BadMac)
        );
        // A token of the older key still verifies while it is in the file.
        let old = SigningKeys::parse("k1 ffeeddccbbaa99887766554433221100").unwrap();
        let t1 = old.sign("/streams/clip/", 5000);
        assert_eq!(keys.verify(&t1, "/streams/clip/", 10), Ok(()));
        // Tampering with any part fails.
        let forged = t.replacen("2000-", "3000-", 1);
        assert_eq!(
            keys.verify(&forged, "/streams/clip/", 10),
            Err(TokenError::BadMac)
        );
        let forged = t.replacen("-k2-", "-k1-", 1);
        assert_eq!(
            keys.verify(&forged, "/streams/clip/", 10),
            Err(TokenError::BadMac)
        );
        let mut flipped = t.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).unwrap();
        assert_eq!(
            keys.verify(&flipped, "/streams/clip/", 10),
            Err(TokenError::BadMac)
        );
        assert_eq!(
            keys.verify(&t.replacen("-k2-", "-k9-", 1), "/streams/clip/", 10),
            Err(TokenError::UnknownKey)
        );
        assert_eq!(
            keys.verify("x", "/streams/clip/", 10),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn key_file_errors_name_the_line_not_the_secret() {
        assert_eq!(
            SigningKeys::parse("# nothing\n").unwrap_err(),
            KeysError::Empty
        );
        assert_eq!(
            SigningKeys::parse("k1\n").unwrap_err(),
            KeysError::Malformed(1)
        );
        assert_eq!(
            SigningKeys::parse("k-1 00112233445566778899aabbccddeeff").unwrap_err(),
            KeysError::BadId(1)
        );
        let e = SigningKeys::parse("\nk1 secretsecretsecretsecret").unwrap_err();
        assert_eq!(e, KeysError::BadSecret(2));
        assert!(!e.to_string().contains("secretsecret"));
        assert_eq!(
            SigningKeys::parse("k1 0011").unwrap_err(),
            KeysError::BadSecret(1)
        );
        let dup = format!("{}k1 00112233445566778899aabbccddeeff\n", FILE);
        assert_eq!(
            SigningKeys::parse(&dup).unwrap_err(),
            KeysError::DuplicateId(4, "k1".into())
        );
        let keys = SigningKeys::parse(FILE).unwrap();
        let dbg = format!("{keys:?}");
        assert!(dbg.contains("k2") && !dbg.contains("00112233"), "{dbg}");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,160}") {
            let _ = Token::parse(&s);
        }
    }
}
