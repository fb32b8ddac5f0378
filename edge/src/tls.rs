//! TLS set-up: certificates (PEM from config, or a self-signed ECDSA P-256 pair made
//! by rcgen and kept in the state directory), the rustls server configuration, and
//! the 0600 secret files (keys, the admin token).
//!
//! Secrets are never logged: errors name files, never contents.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, WantsServerCert};
use rustls::{ConfigBuilder, ServerConfig};

/// A TLS set-up error, naming the file involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A PEM file has no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls rejected the configuration (e.g. key does not match certificate).
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// Certificate generation failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(String),
    /// The session ticket key file was refused.
    #[error(transparent)]
    TicketKeys(#[from] crate::tickets::TicketKeyError),
    /// `tls.cipher_suites` leaves no suite the certificate's key can sign for.
    #[error(
        "tls.cipher_suites: no suite listed can be used with the certificate's {algorithm} key: \
         every handshake would fail; add a TLS 1.3 suite or a TLS 1.2 suite for {algorithm}"
    )]
    SuitesUnusable {
        /// The key's signature algorithm.
        algorithm: String,
    },
}

/// Whether `suites` (`None`: all of the provider's) hold at least one suite a key
/// signing with `alg` can use: any TLS 1.3 suite, or a TLS 1.2 suite for `alg`.
pub fn suites_usable_with(
    suites: Option<&[rustls::CipherSuite]>,
    alg: rustls::SignatureAlgorithm,
) -> bool {
    rustls::crypto::ring::default_provider()
        .cipher_suites
        .iter()
        .filter(|s| suites.is_none_or(|wanted| wanted.contains(&s.suite())))
        .any(|s| s.usable_for_signature_algorithm(alg))
}

/// Checks that `suites` leave at least one suite `key` can sign for.
pub fn check_suites_for_key(
    key: &PrivateKeyDer<'_>,
    suites: Option<&[rustls::CipherSuite]>,
) -> Result<(), TlsError> {
    let algorithm = rustls::crypto::ring::sign::any_supported_type(key)?.algorithm();
    if suites_usable_with(suites, algorithm) {
        Ok(())
    } else {
        Err(TlsError::SuitesUnusable {
            algorithm: format!("{algorithm:?}"),
        })
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Creates `dir` (and parents) with mode 0700 if missing.
pub fn ensure_private_dir(dir: &Path) -> Result<(), TlsError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))
}

/// Writes a secret file atomically with mode 0600 (temp file + rename).
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), TlsError> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_err(&tmp))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(io_err(&tmp))?;
    fs::rename(&tmp, path).map_err(io_err(path))
}

/// Loads the certificate chain and key from PEM files, or from `state_dir`
/// (`cert.pem`, `key.pem`), generating a self-signed ECDSA P-256 pair for
/// `localhost` and `127.0.0.1` there on first use.
pub fn load_or_generate(
    cert_and_key: Option<&(PathBuf, PathBuf)>,
    state_dir: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert_path, key_path) = match cert_and_key {
        Some((c, k)) => (c.clone(), k.clone()),
        None => {
            let c = state_dir.join("cert.pem");
            let k = state_dir.join("key.pem");
            if !c.exists() || !k.exists() {
                let ck = rcgen::generate_simple_self_signed(vec![
                    "localhost".to_string(),
                    "127.0.0.1".to_string(),
                ])
                .map_err(|e| TlsError::Generate(e.to_string()))?;
                write_secret_file(&k, ck.key_pair.serialize_pem().as_bytes())?;
                fs::write(&c, ck.cert.pem()).map_err(io_err(&c))?;
                tracing::info!(cert = %c.display(), "generated a self-signed ECDSA P-256 certificate");
            }
            (c, k)
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            what: e.to_string(),
        })?
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            what: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path,
            what: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        what: format!("no usable private key: {e}"),
    })?;
    if let Ok(meta) = fs::metadata(&key_path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(key = %key_path.display(), "private key file is readable by group or others; use mode 0600");
        }
    }
    Ok((certs, key))
}

/// What a server configuration is built from besides the certificate: the pieces
/// that outlive a reload.
pub struct Resumption {
    /// The TLS 1.2 session-id cache, shared by every configuration a reload builds so
    /// that sessions survive it.
    pub sessions: Arc<dyn rustls::server::StoresServerSessions>,
}

impl Default for Resumption {
    fn default() -> Self {
        Self {
            sessions: ServerSessionMemoryCache::new(32 * 1024),
        }
    }
}

/// Builds the whole rustls configuration `tls` describes: certificate and key (read,
/// or generated in `state_dir`), the ticket keys (from `tls.ticket_keys_file`, or
/// made in memory), the suites. Used at start-up and on every reload.
pub fn build(
    tls: &crate::config::TlsSettings,
    state_dir: &Path,
    allow_secret_extraction: bool,
    resumption: &Resumption,
) -> Result<Arc<ServerConfig>, TlsError> {
    let (certs, key) = load_or_generate(tls.cert_and_key.as_ref(), state_dir)?;
    let lifetime = u32::try_from(tls.ticket_lifetime.as_secs()).unwrap_or(u32::MAX);
    let ticketer: Arc<dyn rustls::server::ProducesTickets> = match &tls.ticket_keys_file {
        Some(f) => Arc::new(crate::tickets::FileTicketer::load(f, lifetime)?),
        None => rustls::crypto::ring::Ticketer::new()?,
    };
    server_config(
        certs,
        key,
        allow_secret_extraction,
        tls.cipher_suites.as_deref(),
        ticketer,
        resumption.sessions.clone(),
    )
}

/// The rustls server configuration: TLS 1.2 and 1.3, ALPN `http/1.1`, stateless
/// session tickets sealed by `ticketer` plus the session cache `sessions` for
/// resumption, and secret extraction when connections may be handed to kTLS.
///
/// `cipher_suites` restricts the offered suites (`None`: all of the provider's).
pub fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    allow_secret_extraction: bool,
    cipher_suites: Option<&[rustls::CipherSuite]>,
    ticketer: Arc<dyn rustls::server::ProducesTickets>,
    sessions: Arc<dyn rustls::server::StoresServerSessions>,
) -> Result<Arc<ServerConfig>, TlsError> {
    check_suites_for_key(&key, cipher_suites)?;
    let mut provider = rustls::crypto::ring::default_provider();
    if let Some(wanted) = cipher_suites {
        provider
            .cipher_suites
            .retain(|s| wanted.contains(&s.suite()));
    }
    let provider = Arc::new(provider);
    let builder: ConfigBuilder<ServerConfig, WantsServerCert> =
        ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth();
    let mut config = builder.with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.session_storage = sessions;
    config.ticketer = ticketer;
    config.enable_secret_extraction = allow_secret_extraction;
    Ok(Arc::new(config))
}

/// Reads the admin token from `file`, or from `state_dir/admin.token`, generating a
/// random one there (mode 0600) on first use.
pub fn admin_token(file: Option<&Path>, state_dir: &Path) -> Result<String, TlsError> {
    let path = match file {
        Some(f) => f.to_owned(),
        None => {
            let p = state_dir.join("admin.token");
            if !p.exists() {
                let mut bytes = [0u8; 24];
                rustls::crypto::ring::default_provider()
                    .secure_random
                    .fill(&mut bytes)
                    .map_err(|_| TlsError::Generate("no randomness for the admin token".into()))?;
                let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                write_secret_file(&p, format!("{token}\n").as_bytes())?;
            }
            p
        }
    };
    let token = fs::read_to_string(&path)
        .map_err(io_err(&path))?
        .trim()
        .to_string();
    if token.len() < 16 {
        return Err(TlsError::Pem {
            path,
            what: "admin token must be at least 16 characters".into(),
        });
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("edge-tls-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn generated_pair_is_kept_and_private() {
        let d = tmpdir("gen");
        ensure_private_dir(&d).unwrap();
        let (c1, _) = load_or_generate(None, &d).unwrap();
        let (c2, _) = load_or_generate(None, &d).unwrap();
        assert_eq!(c1, c2, "the pair is generated once and reused");
        let mode = fs::metadata(d.join("key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let (certs, key) = load_or_generate(None, &d).unwrap();
        server_config(
            certs,
            key,
            true,
            None,
            rustls::crypto::ring::Ticketer::new().unwrap(),
            Resumption::default().sessions,
        )
        .unwrap();
        fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn admin_token_is_generated_0600() {
        let d = tmpdir("token");
        ensure_private_dir(&d).unwrap();
        let t1 = admin_token(None, &d).unwrap();
        let t2 = admin_token(None, &d).unwrap();
        assert_eq!(t1, t2);
        assert_eq!(t1.len(), 48);
        let mode = fs::metadata(d.join("admin.token"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn bad_pem_names_the_file() {
        let d = tmpdir("bad");
        ensure_private_dir(&d).unwrap();
        let c = d.join("c.pem");
        let k = d.join("k.pem");
        fs::write(&c, "not pem").unwrap();
        fs::write(&k, "not pem").unwrap();
        let e = load_or_generate(Some(&(c.clone(), k)), &d)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.pem"), "{e}");
        fs::remove_dir_all(&d).ok();
    }
}
