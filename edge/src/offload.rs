//! Kernel TLS offload: the start-up probe, the per-connection decision, and the
//! hand-over of a rustls connection to the kernel.
//!
//! The probe runs once: it reads `/proc/sys/net/ipv4/tcp_available_ulp`, then for
//! each cipher suite we offer and each TLS version really sets `TCP_ULP "tls"` plus
//! `TLS_TX` and `TLS_RX` on a loopback socket pair. A connection is offered to the
//! kernel only if its negotiated suite passed; the decision is made before the stream
//! is handed to the `ktls` crate (which consumes it: a failure there loses the
//! connection).

use std::fmt;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

use rustls::{CipherSuite, SupportedCipherSuite};

use crate::sys::{self, KtlsDirection};

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
    let info = libc::tls_crypto_info {
        version,
        cipher_type: 0,
    };
    for dir in [KtlsDirection::Tx, KtlsDirection::Rx] {
        match aead {
            Aead::Aes128Gcm => sys::set_ktls_crypto(
                fd,
                dir,
                &libc::tls12_crypto_info_aes_gcm_128 {
                    info: libc::tls_crypto_info {
                        cipher_type: libc::TLS_CIPHER_AES_GCM_128,
                        ..info
                    },
                    iv: Default::default(),
                    key: Default::default(),
                    salt: Default::default(),
                    rec_seq: Default::default(),
                },
            )?,
            Aead::Aes256Gcm => sys::set_ktls_crypto(
                fd,
                dir,
                &libc::tls12_crypto_info_aes_gcm_256 {
                    info: libc::tls_crypto_info {
                        cipher_type: libc::TLS_CIPHER_AES_GCM_256,
                        ..info
                    },
                    iv: Default::default(),
                    key: Default::default(),
                    salt: Default::default(),
                    rec_seq: Default::default(),
                },
            )?,
            Aead::Chacha20Poly1305 => sys::set_ktls_crypto(
                fd,
                dir,
                &libc::tls12_crypto_info_chacha20_poly1305 {
                    info: libc::tls_crypto_info {
                        cipher_type: libc::TLS_CIPHER_CHACHA20_POLY1305,
                        ..info
                    },
                    iv: Default::default(),
                    key: Default::default(),
                    salt: Default::default(),
                    rec_seq: Default::default(),
                },
            )?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

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
