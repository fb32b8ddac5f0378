//! Kernel TLS offload: the start-up probe, the per-connection decision, and the
//! hand-over of a rustls connection to the kernel.
//!
//! The probe runs once: it reads `/proc/sys/net/ipv4/tcp_available_ulp`, then for
//! each cipher suite we offer and each TLS version really sets `TCP_ULP "tls"` plus
//! `TLS_TX` and `TLS_RX` on a loopback socket pair. A connection is offered to the
//! kernel only if its negotiated suite passed.
//!
//! The hand-over ([`hand_over`]) is ours, not the `ktls` crate's, for two reasons:
//! - `TCP_ULP` is set *before* anything of rustls is consumed, so a kernel refusal
//!   (it refuses once the peer's FIN has arrived) leaves a whole rustls session that
//!   is then served in userspace;
//! - TLS 1.2 AES-GCM needs its transmit nonce corrected: see [`kernel_tx_explicit_nonce`].

use std::fmt;
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use rustls::{CipherSuite, ConnectionTrafficSecrets, ProtocolVersion, SupportedCipherSuite};

use crate::metrics::{CloseReason, KtlsSetupFailure};
use crate::sys::{self, KtlsDirection};
use crate::tls_session::TlsSession;

/// Ciphers the kernel can take, as AEAD families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aead {
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
    /// ChaCha20-Poly1305.
    Chacha20Poly1305,
}

impl Aead {
    const ALL: [Aead; 3] = [Aead::Aes128Gcm, Aead::Aes256Gcm, Aead::Chacha20Poly1305];

    fn name(self) -> &'static str {
        match self {
            Aead::Aes128Gcm => "AES-128-GCM",
            Aead::Aes256Gcm => "AES-256-GCM",
            Aead::Chacha20Poly1305 => "CHACHA20-POLY1305",
        }
    }

    /// The AEAD of a rustls cipher suite, if the kernel could ever take it.
    pub fn of_suite(suite: CipherSuite) -> Option<Aead> {
        use CipherSuite::*;
        match suite {
            TLS13_AES_128_GCM_SHA256
            | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
            | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => Some(Aead::Aes128Gcm),
            TLS13_AES_256_GCM_SHA384
            | TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
            | TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => Some(Aead::Aes256Gcm),
            TLS13_CHACHA20_POLY1305_SHA256
            | TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
            | TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => Some(Aead::Chacha20Poly1305),
            _ => None,
        }
    }
}

/// What the start-up probe found.
#[derive(Debug, Clone, Default)]
pub struct KtlsSupport {
    /// Offloadable under TLS 1.2, indexed like [`Aead::ALL`].
    tls12: [bool; 3],
    /// Offloadable under TLS 1.3.
    tls13: [bool; 3],
    /// Why nothing is offloadable, when that is the case.
    unavailable_reason: Option<String>,
}

impl KtlsSupport {
    /// Support that offloads nothing, with the reason to log.
    pub fn none(reason: impl Into<String>) -> Self {
        Self {
            unavailable_reason: Some(reason.into()),
            ..Self::default()
        }
    }

    /// Whether any suite can be offloaded.
    pub fn any(&self) -> bool {
        self.tls12.iter().chain(&self.tls13).any(|&b| b)
    }

    /// Whether a connection that negotiated `suite` can be handed to the kernel.
    pub fn supports(&self, suite: SupportedCipherSuite) -> bool {
        let Some(aead) = Aead::of_suite(suite.suite()) else {
            return false;
        };
        let i = aead as usize;
        match suite {
            SupportedCipherSuite::Tls12(_) => self.tls12[i],
            SupportedCipherSuite::Tls13(_) => self.tls13[i],
        }
    }
}

impl fmt::Display for KtlsSupport {
    /// The one start-up log line: "available for ..." or "unavailable (...)".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.any() {
            let reason = self
                .unavailable_reason
                .as_deref()
                .unwrap_or("no cipher suite passed the probe");
            return write!(f, "kTLS: unavailable ({reason}): serving TLS in userspace");
        }
        let names: Vec<&str> = Aead::ALL
            .iter()
            .filter(|a| self.tls12[**a as usize] || self.tls13[**a as usize])
            .map(|a| a.name())
            .collect();
        write!(f, "kTLS: available for {}", names.join(", "))?;
        let partial: Vec<String> = Aead::ALL
            .iter()
            .filter(|a| self.tls12[**a as usize] != self.tls13[**a as usize])
            .map(|a| {
                format!(
                    "{} only with TLS {}",
                    a.name(),
                    if self.tls13[*a as usize] {
                        "1.3"
                    } else {
                        "1.2"
                    }
                )
            })
            .collect();
        if !partial.is_empty() {
            write!(f, " ({})", partial.join("; "))?;
        }
        Ok(())
    }
}

/// Probes the running kernel. Blocking (a few loopback connects); call once at start.
pub fn probe() -> KtlsSupport {
    let ulps = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
    let listed = ulps.split_whitespace().any(|u| u == "tls");
    let mut support = KtlsSupport::default();
    let mut first_error: Option<std::io::Error> = None;
    for (v, table) in [
        (libc::TLS_1_2_VERSION, &mut support.tls12),
        (libc::TLS_1_3_VERSION, &mut support.tls13),
    ] {
        for aead in Aead::ALL {
            match probe_one(v, aead) {
                Ok(()) => table[aead as usize] = true,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
    }
    if !support.any() {
        let reason = match first_error {
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                if listed {
                    "TCP_ULP tls refused".to_string()
                } else {
                    "tls module not loaded".to_string()
                }
            }
            Some(e) => format!("setsockopt failed: {e}"),
            None => "probe failed".to_string(),
        };
        support.unavailable_reason = Some(reason);
    }
    support
}

/// Sets ULP + TX + RX for one (version, cipher) on a fresh loopback connection.
fn probe_one(version: u16, aead: Aead) -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (_server, _) = listener.accept()?;
    let fd = client.as_raw_fd();
    sys::set_tcp_ulp_tls(fd)?;
    for dir in [KtlsDirection::Tx, KtlsDirection::Rx] {
        KernelKeys::zeroed(aead).install(fd, dir, version, 0)?;
    }
    Ok(())
}

/// One direction's key material in the kernel's per-cipher shapes (libc's
/// `tls12_crypto_info_*`; the same layout serves TLS 1.3, with the version field
/// saying which). The probe installs zeroed keys, the hand-over real ones.
enum KernelKeys {
    Aes128Gcm {
        key: [u8; 16],
        salt: [u8; 4],
        iv: [u8; 8],
    },
    Aes256Gcm {
        key: [u8; 32],
        salt: [u8; 4],
        iv: [u8; 8],
    },
    Chacha20Poly1305 {
        key: [u8; 32],
        iv: [u8; 12],
    },
}

impl KernelKeys {
    /// All-zero keys of `aead`'s shape (for the probe).
    fn zeroed(aead: Aead) -> Self {
        match aead {
            Aead::Aes128Gcm => Self::Aes128Gcm {
                key: [0; 16],
                salt: [0; 4],
                iv: [0; 8],
            },
            Aead::Aes256Gcm => Self::Aes256Gcm {
                key: [0; 32],
                salt: [0; 4],
                iv: [0; 8],
            },
            Aead::Chacha20Poly1305 => Self::Chacha20Poly1305 {
                key: [0; 32],
                iv: [0; 12],
            },
        }
    }

    /// Sets `TLS_TX` or `TLS_RX` on `fd` (which has `TCP_ULP "tls"`); `version` is
    /// libc's `TLS_1_2_VERSION` or `TLS_1_3_VERSION`, `seq` the next record's number.
    fn install(self, fd: RawFd, dir: KtlsDirection, version: u16, seq: u64) -> io::Result<()> {
        let rec_seq = seq.to_be_bytes();
        let info = |cipher_type| libc::tls_crypto_info {
            version,
            cipher_type,
        };
        match self {
            Self::Aes128Gcm { key, salt, iv } => sys::set_ktls_crypto(
                fd,
                dir,
                &libc::tls12_crypto_info_aes_gcm_128 {
                    info: info(libc::TLS_CIPHER_AES_GCM_128),
                    iv,
                    key,
                    salt,
                    rec_seq,
                },
            ),
            Self::Aes256Gcm { key, salt, iv } => sys::set_ktls_crypto(
                fd,
                dir,
                &libc::tls12_crypto_info_aes_gcm_256 {
                    info: info(libc::TLS_CIPHER_AES_GCM_256),
                    iv,
                    key,
                    salt,
                    rec_seq,
                },
            ),
            Self::Chacha20Poly1305 { key, iv } => sys::set_ktls_crypto(
                fd,
                dir,
                &libc::tls12_crypto_info_chacha20_poly1305 {
                    info: info(libc::TLS_CIPHER_CHACHA20_POLY1305),
                    iv,
                    key,
                    salt: [],
                    rec_seq,
                },
            ),
        }
    }
}

/// What became of a connection offered to the kernel.
pub enum Handover {
    /// The kernel now encrypts and decrypts; `drained` is plaintext rustls had
    /// already decrypted (the start of the first request, typically).
    Offloaded {
        /// The socket, with kTLS TX and RX installed.
        stream: tokio::net::TcpStream,
        /// Plaintext decrypted before the hand-over.
        drained: Option<Vec<u8>>,
    },
    /// The kernel refused the TLS ULP before anything was consumed: serve `tls` with
    /// rustls. Seen when the peer had already half-closed (the kernel accepts the ULP
    /// on established sockets only).
    Declined {
        /// The untouched session.
        tls: Box<TlsSession>,
        /// The kernel's answer.
        error: io::Error,
    },
    /// The peer stalled or went away while rustls was being drained: not a setup
    /// failure (a client can cause it at will), just the end of the connection.
    PeerGone(CloseReason),
    /// A failure once rustls' state was consumed: the connection cannot be served.
    Lost {
        /// The metrics label.
        failure: KtlsSetupFailure,
        /// What failed (for a rate-limited log line).
        error: String,
    },
}

/// Hands an established session whose suite passed the probe to the kernel.
///
/// Order: set `TCP_ULP` (a refusal gives [`Handover::Declined`] with the session
/// intact), read up to the next record boundary and decrypt what was received
/// (bounded by `drain_timeout`), extract the traffic secrets, install `TLS_TX` and
/// `TLS_RX`. The handshake has already sent all rustls had to send (TLS 1.3 session
/// tickets included).
pub async fn hand_over(mut tls: Box<TlsSession>, drain_timeout: Duration) -> Handover {
    let lost = |failure, error: String| Handover::Lost { failure, error };
    let fd = tls.fd();
    if let Err(error) = sys::set_tcp_ulp_tls(fd) {
        return Handover::Declined { tls, error };
    }
    // From here the socket has the ULP but no keys: it still passes bytes through
    // as plain TCP, which is what rustls needs to finish reading a partial record.
    let drained = match tokio::time::timeout(drain_timeout, tls.drain_for_kernel()).await {
        Ok(Ok(d)) => d,
        Ok(Err(_)) => return Handover::PeerGone(CloseReason::IoError),
        Err(_) => return Handover::PeerGone(CloseReason::HeaderTimeout),
    };
    let (stream, conn) = (*tls).into_parts();
    let tls13 = conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
    // The kernel connection (rustls' key schedule for later key updates) is not kept:
    // a peer's KeyUpdate reaches the request loop as a control record and ends the
    // connection.
    let secrets = match conn.dangerous_into_kernel_connection() {
        Ok((secrets, _kernel)) => secrets,
        Err(e) => return lost(KtlsSetupFailure::Setup, format!("secrets: {e}")),
    };
    let (tx_seq, tx) = secrets.tx;
    let (rx_seq, rx) = secrets.rx;
    if let Err(e) = install(fd, KtlsDirection::Tx, tls13, tx_seq, tx)
        .and_then(|()| install(fd, KtlsDirection::Rx, tls13, rx_seq, rx))
    {
        return lost(KtlsSetupFailure::Setup, format!("crypto info: {e}"));
    }
    Handover::Offloaded {
        stream,
        drained: (!drained.is_empty()).then_some(drained),
    }
}

/// The explicit nonce to hand the kernel for TLS 1.2 AES-GCM transmit.
///
/// rustls seals record `s` with explicit nonce `base XOR s` (the construction TLS 1.3
/// uses), and has sealed records `0..seq` (the Finished, at least) when the kernel
/// takes over. The kernel sends its explicit nonce as a 64-bit big-endian counter:
/// the `iv` it is given, then `iv + 1`, `iv + 2`, ... So `iv = base` (what the `ktls`
/// crate gives it) repeats the Finished's nonce in the first data record, and
/// `iv = base XOR seq` collides as soon as it counts up into `base XOR s` (for
/// `seq = 1`, on the second record whenever `base` is odd).
///
/// We give it `base + seq` (wrapping). Since `base XOR s <= base + s < base + seq`
/// for every `s < seq`, every nonce rustls used lies below the kernel's first one,
/// and the kernel would need about 2^64 records to wrap around onto them.
pub fn kernel_tx_explicit_nonce(base: [u8; 8], seq: u64) -> [u8; 8] {
    u64::from_be_bytes(base).wrapping_add(seq).to_be_bytes()
}

/// Installs one direction of a handed-over connection: rustls' secrets in the
/// kernel's shape, with the TLS 1.2 AES-GCM transmit nonce corrected.
fn install(
    fd: RawFd,
    dir: KtlsDirection,
    tls13: bool,
    seq: u64,
    secrets: ConnectionTrafficSecrets,
) -> io::Result<()> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, "unexpected key or iv length");
    // AES-GCM: 4 bytes of salt, then the 8-byte explicit part; only TLS 1.2 transmit
    // needs the counter correction (TLS 1.3 XORs the sequence in, as rustls does).
    let gcm_iv = |iv: &[u8]| -> io::Result<([u8; 4], [u8; 8])> {
        let salt: [u8; 4] = iv
            .get(..4)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?;
        let base: [u8; 8] = iv
            .get(4..12)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(bad)?;
        let explicit = if !tls13 && matches!(dir, KtlsDirection::Tx) {
            kernel_tx_explicit_nonce(base, seq)
        } else {
            base
        };
        Ok((salt, explicit))
    };
    let keys = match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv } => {
            let (salt, iv) = gcm_iv(iv.as_ref())?;
            KernelKeys::Aes128Gcm {
                key: key.as_ref().try_into().map_err(|_| bad())?,
                salt,
                iv,
            }
        }
        ConnectionTrafficSecrets::Aes256Gcm { key, iv } => {
            let (salt, iv) = gcm_iv(iv.as_ref())?;
            KernelKeys::Aes256Gcm {
                key: key.as_ref().try_into().map_err(|_| bad())?,
                salt,
                iv,
            }
        }
        // ChaCha20-Poly1305 XORs the sequence into the whole 12-byte iv in both
        // versions, in the kernel as in rustls: no explicit nonce, nothing to correct.
        ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => KernelKeys::Chacha20Poly1305 {
            key: key.as_ref().try_into().map_err(|_| bad())?,
            iv: iv.as_ref().try_into().map_err(|_| bad())?,
        },
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "cipher not offloadable",
            ))
        }
    };
    let version = if tls13 {
        libc::TLS_1_3_VERSION
    } else {
        libc::TLS_1_2_VERSION
    };
    keys.install(fd, dir, version, seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The nonces rustls used (`base ^ s`, s < seq) and the kernel's next `records`
    /// (`start + k`) never meet, for bases that stress carries, odd low bits and wrap.
    #[test]
    fn kernel_nonces_never_meet_rustls_nonces() {
        let bases = [
            0u64,
            1,
            0xff,
            0x0123_4567_89ab_cdef,
            0xf157_2b24_cd38_4a87,
            u64::MAX,
            u64::MAX - 1,
            u64::MAX - 5,
            0x7fff_ffff_ffff_ffff,
        ];
        for base in bases {
            for seq in 1..=8u64 {
                let used: Vec<u64> = (0..seq).map(|s| base ^ s).collect();
                let start = u64::from_be_bytes(kernel_tx_explicit_nonce(base.to_be_bytes(), seq));
                for k in 0..10_000u64 {
                    let n = start.wrapping_add(k);
                    assert!(
                        !used.contains(&n),
                        "base {base:#x} seq {seq}: kernel record {k} reuses {n:#x}"
                    );
                }
            }
        }
        // What the ktls crate did, and the tempting XOR, both collide.
        let base = 0xf157_2b24_cd38_4a87u64;
        let xor_one = base ^ 1;
        assert_eq!(
            xor_one.wrapping_add(1),
            base,
            "iv ^ 1 meets the Finished next"
        );
    }

    #[test]
    fn display_lines() {
        let s = KtlsSupport::none("tls module not loaded");
        assert_eq!(
            s.to_string(),
            "kTLS: unavailable (tls module not loaded): serving TLS in userspace"
        );
        let s = KtlsSupport {
            tls12: [true; 3],
            tls13: [true; 3],
            unavailable_reason: None,
        };
        assert_eq!(
            s.to_string(),
            "kTLS: available for AES-128-GCM, AES-256-GCM, CHACHA20-POLY1305"
        );
        let s = KtlsSupport {
            tls12: [true, true, false],
            tls13: [true, true, true],
            unavailable_reason: None,
        };
        assert!(
            s.to_string()
                .ends_with("(CHACHA20-POLY1305 only with TLS 1.3)"),
            "{s}"
        );
    }

    #[test]
    fn probe_matches_the_kernel() {
        // On a kernel without the tls ULP (this build host) the probe must say so;
        // where it is available (the guest tests) it must find AES-GCM at least.
        let s = probe();
        let ulp_works = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
            let _a = l.accept().unwrap();
            sys::set_tcp_ulp_tls(c.as_raw_fd()).is_ok()
        };
        assert_eq!(s.any(), ulp_works, "{s}");
        if !ulp_works {
            assert!(s.to_string().starts_with("kTLS: unavailable ("), "{s}");
        }
    }
}
