//! The TLS listener's configuration (RabbitMQ's `listeners.ssl` and `ssl_options`): the
//! server's certificate chain and private key from PEM files, optionally a CA file against
//! which client certificates are verified (requested, or required), TLS 1.2 and 1.3 only, with
//! rustls over *ring*.
//!
//! Reloadable without a restart ([`Tls::reload`]: on SIGHUP, and for the management API): the
//! files are read again and a new rustls configuration replaces the current one for sockets
//! accepted from then on; connections already open keep the session they negotiated. A reload
//! that fails (unreadable file, no key, a key that does not match the certificate, …) keeps
//! the configuration in use and says why.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lepus_amqp::TlsSetup;
use lepus_amqp::cert_name::CertLoginFrom;
use parking_lot::RwLock;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, version};

use crate::config::Config;

/// Why a TLS configuration could not be loaded; the text names the file and the problem.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls_cert_file and tls_key_file must be set together")]
    Incomplete,
    #[error("tls_verify_peer needs tls_ca_file (the CAs client certificates are checked against)")]
    NoCaFile,
    #[error("tls_fail_if_no_peer_cert needs tls_verify_peer")]
    FailWithoutVerify,
    #[error("cannot read {what} {}: {source}", path.display())]
    Read { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("invalid PEM in {what} {}: {detail}", path.display())]
    Pem { what: &'static str, path: PathBuf, detail: String },
    #[error("no {wanted} found in {what} {}", path.display())]
    Missing { wanted: &'static str, what: &'static str, path: PathBuf },
    #[error("CA certificate in {} not usable: {detail}", path.display())]
    BadCa { path: PathBuf, detail: String },
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
}

/// What the TLS listener is configured with (paths and switches, from [`Config`]).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: Option<PathBuf>,
    pub verify_peer: bool,
    pub fail_if_no_peer_cert: bool,
}

impl TlsFiles {
    /// The TLS settings in `config`; `None` when no certificate is configured (no TLS listener).
    pub fn from_config(config: &Config) -> Result<Option<TlsFiles>, TlsError> {
        let (cert_file, key_file) = match (&config.tls_cert_file, &config.tls_key_file) {
            (None, None) => return Ok(None),
            (Some(cert), Some(key)) => (cert.clone(), key.clone()),
            _ => return Err(TlsError::Incomplete),
        };
        if config.tls_verify_peer && config.tls_ca_file.is_none() {
            return Err(TlsError::NoCaFile);
        }
        if config.tls_fail_if_no_peer_cert && !config.tls_verify_peer {
            return Err(TlsError::FailWithoutVerify);
        }
        Ok(Some(TlsFiles {
            cert_file,
            key_file,
            ca_file: config.tls_ca_file.clone(),
            verify_peer: config.tls_verify_peer,
            fail_if_no_peer_cert: config.tls_fail_if_no_peer_cert,
        }))
    }
}

/// The TLS listener's current configuration; shared by the listener, the SIGHUP handler and
/// (later) the management API.
pub struct Tls {
    files: TlsFiles,
    /// Where SASL EXTERNAL takes the user name from; offered only when peers are verified.
    external: Option<CertLoginFrom>,
    current: RwLock<Arc<ServerConfig>>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish_non_exhaustive()
    }
}

impl Tls {
    /// Reads the files and builds the first configuration.
    pub fn load(files: TlsFiles, login_from: CertLoginFrom) -> Result<Tls, TlsError> {
        let current = RwLock::new(Arc::new(server_config(&files)?));
        let external = files.verify_peer.then_some(login_from);
        Ok(Tls { files, external, current })
    }

    /// Reads the files again; sockets accepted from now on use them. On failure the
    /// configuration in use stays, and the error (also logged) says why.
    pub fn reload(&self) -> Result<(), TlsError> {
        match server_config(&self.files) {
            Ok(config) => {
                *self.current.write() = Arc::new(config);
                tracing::info!(cert_file = %self.files.cert_file.display(), "TLS certificate reloaded");
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed: keeping the certificate in use");
                Err(e)
            }
        }
    }

    /// How the next accepted socket starts (the configuration current now).
    pub fn setup(&self) -> TlsSetup {
        TlsSetup { acceptor: TlsAcceptor::from(self.current.read().clone()), external: self.external }
    }
}

/// A rustls server configuration from the files: TLS 1.3 and 1.2, the certificate chain and
/// key, and client certificates verified against the CA file if asked.
fn server_config(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = read_certificates(&files.cert_file, "tls_cert_file")?;
    let key = read_key(&files.key_file)?;
    // *ring* rather than aws-lc-rs: it builds without a C toolchain's cmake and quickly.
    // rustls 0.23.48 deprecates it for lacking post-quantum key exchange (X25519MLKEM768);
    // moving to aws-lc-rs is a follow-up.
    #[allow(deprecated)]
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = match (&files.ca_file, files.verify_peer) {
        (Some(ca_file), true) => {
            let roots = Arc::new(read_roots(ca_file)?);
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider);
            let verifier = if files.fail_if_no_peer_cert { verifier } else { verifier.allow_unauthenticated() };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Rustls(e.to_string()))?)
        }
        _ => builder.with_no_client_auth(),
    };
    builder.with_single_cert(chain, key).map_err(|e| {
        TlsError::Rustls(format!(
            "certificate {} with key {}: {e}",
            files.cert_file.display(),
            files.key_file.display()
        ))
    })
}

fn read(path: &Path, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

fn read_certificates(path: &Path, what: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path, what)?;
    let certificates = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem { what, path: path.to_owned(), detail: e.to_string() })?;
    if certificates.is_empty() {
        return Err(TlsError::Missing { wanted: "certificate", what, path: path.to_owned() });
    }
    Ok(certificates)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "tls_key_file";
    let pem = read(path, what)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => {
            TlsError::Missing { wanted: "private key", what, path: path.to_owned() }
        }
        e => TlsError::Pem { what, path: path.to_owned(), detail: e.to_string() },
    })
}

fn read_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for certificate in read_certificates(path, "tls_ca_file")? {
        roots.add(certificate).map_err(|e| TlsError::BadCa { path: path.to_owned(), detail: e.to_string() })?;
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn dir(name: &str) -> Dir {
        let path = std::env::temp_dir().join(format!("lepus-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        Dir(path)
    }

    fn files(dir: &Path) -> TlsFiles {
        TlsFiles {
            cert_file: dir.join("cert.pem"),
            key_file: dir.join("key.pem"),
            ca_file: None,
            verify_peer: false,
            fail_if_no_peer_cert: false,
        }
    }

    fn write_pair(dir: &Path) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap().self_signed(&key).unwrap();
        std::fs::write(dir.join("cert.pem"), cert.pem()).unwrap();
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
    }

    fn error(files: &TlsFiles) -> String {
        Tls::load(files.clone(), CertLoginFrom::CommonName).unwrap_err().to_string()
    }

    #[test]
    fn start_up_errors_name_the_file_and_the_problem() {
        let d = dir("errors");
        let f = files(&d.0);
        assert!(error(&f).starts_with(&format!("cannot read tls_cert_file {}", f.cert_file.display())));
        write_pair(&d.0);
        assert!(Tls::load(f.clone(), CertLoginFrom::CommonName).is_ok());
        std::fs::write(&f.key_file, std::fs::read(&f.cert_file).unwrap()).unwrap();
        assert_eq!(error(&f), format!("no private key found in tls_key_file {}", f.key_file.display()));
        std::fs::write(&f.cert_file, "not pem").unwrap();
        assert_eq!(error(&f), format!("no certificate found in tls_cert_file {}", f.cert_file.display()));
        // A key from another pair.
        write_pair(&d.0);
        let other = rcgen::KeyPair::generate().unwrap();
        std::fs::write(&f.key_file, other.serialize_pem()).unwrap();
        assert!(error(&f).starts_with("TLS configuration refused: certificate"), "{}", error(&f));
        let verify = TlsFiles { verify_peer: true, ca_file: Some(d.0.join("missing-ca.pem")), ..f.clone() };
        write_pair(&d.0);
        assert!(error(&verify).starts_with("cannot read tls_ca_file"), "{}", error(&verify));
    }

    #[test]
    fn settings_go_together() {
        let mut c = Config { tls_cert_file: Some("c.pem".into()), ..Config::default() };
        assert!(matches!(TlsFiles::from_config(&c), Err(TlsError::Incomplete)));
        c.tls_key_file = Some("k.pem".into());
        assert!(TlsFiles::from_config(&c).unwrap().is_some());
        c.tls_verify_peer = true;
        assert!(matches!(TlsFiles::from_config(&c), Err(TlsError::NoCaFile)));
        c.tls_verify_peer = false;
        c.tls_fail_if_no_peer_cert = true;
        assert!(matches!(TlsFiles::from_config(&c), Err(TlsError::FailWithoutVerify)));
        assert!(TlsFiles::from_config(&Config::default()).unwrap().is_none());
    }

    #[test]
    fn a_failed_reload_keeps_the_configuration_in_use() {
        let d = dir("reload");
        write_pair(&d.0);
        let tls = Tls::load(files(&d.0), CertLoginFrom::CommonName).unwrap();
        let before = tls.current.read().clone();
        std::fs::write(d.0.join("key.pem"), "garbage").unwrap();
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, &tls.current.read()));
        write_pair(&d.0);
        tls.reload().unwrap();
        assert!(!Arc::ptr_eq(&before, &tls.current.read()));
        assert!(tls.setup().external.is_none(), "EXTERNAL only where peers are verified");
    }
}
