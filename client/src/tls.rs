//! TLS for the client's connections: the brokers' certificates checked
//! against a CA file, and optionally a certificate of the client's own for
//! brokers that require one (mutual TLS).
//!
//! rustls with the `ring` provider, driven over glommio's `TcpStream` by
//! futures-rustls (glommio streams implement the futures-io traits). The PEM
//! loaders here are also what the broker uses for its own files, so there is
//! one reader of certificate files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {what} {path}: {reason}")]
    Read {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{what} {path} holds no {expected}")]
    Empty {
        what: &'static str,
        path: PathBuf,
        expected: &'static str,
    },
    #[error("{0}")]
    Config(String),
}

/// Every certificate of the PEM file at `path` (`what` names the file in
/// errors: "CA file", "certificate file").
pub fn load_certs(
    what: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let read = |reason: String| TlsError::Read {
        what,
        path: path.to_owned(),
        reason,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| read(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read(e.to_string()))?;
    if certs.is_empty() {
        return Err(TlsError::Empty {
            what,
            path: path.to_owned(),
            expected: "PEM certificate",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of the PEM file at `path`.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => TlsError::Empty {
            what: "key file",
            path: path.to_owned(),
            expected: "PEM private key",
        },
        e => TlsError::Read {
            what: "key file",
            path: path.to_owned(),
            reason: e.to_string(),
        },
    })
}

/// A root store of every certificate in the CA file at `path`.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs("CA file", path)? {
        roots.add(cert).map_err(|e| TlsError::Read {
            what: "CA file",
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// How a connection speaks TLS: the rustls client configuration and the
/// name the broker's certificate must carry.
#[derive(Debug, Clone)]
pub struct TlsOptions {
    pub config: Arc<ClientConfig>,
    /// The name checked against the broker's certificate; `None`: the IP
    /// address connected to (the certificate then needs it as an IP SAN).
    pub server_name: Option<String>,
}

impl TlsOptions {
    /// Brokers are trusted when their certificate chains to a CA of
    /// `ca_file`; with `cert_and_key`, the client shows that certificate
    /// (PEM chain, PEM key) to a broker that asks for one.
    pub fn from_files(
        ca_file: &Path,
        cert_and_key: Option<(&Path, &Path)>,
    ) -> Result<TlsOptions, TlsError> {
        let roots = load_roots(ca_file)?;
        let builder = ClientConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match cert_and_key {
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs("certificate file", cert)?, load_key(key)?)
                .map_err(|e| {
                    TlsError::Config(format!(
                        "certificate {} and key {}: {e}",
                        cert.display(),
                        key.display()
                    ))
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(TlsOptions {
            config: Arc::new(config),
            server_name: None,
        })
    }

    /// The name to verify for a connection to `addr`.
    pub(crate) fn name_for(
        &self,
        addr: std::net::SocketAddr,
    ) -> Result<ServerName<'static>, TlsError> {
        match &self.server_name {
            Some(name) => ServerName::try_from(name.clone())
                .map_err(|e| TlsError::Config(format!("{name:?} is not a server name: {e}"))),
            None => Ok(ServerName::IpAddress(addr.ip().into())),
        }
    }
}
