//! The broker's TLS material: its certificate and key (for the client and
//! peer listeners, and shown as a client certificate when it dials another
//! node), the CA client certificates must chain to (`tls_client_ca`, mutual
//! TLS), and the CA other nodes' certificates must chain to (`tls_ca`).
//!
//! Loaded once at start (a bad file stops the broker with a message naming
//! it) and again on SIGHUP: a reload that fails is logged and the old
//! material stays; a good one is used by connections opened from then on.
//! The handshake itself is futures-rustls over glommio streams, in `net/`
//! and `cluster/`; this module knows no socket.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ringmq_client::tls::{load_certs, load_key, load_roots, TlsError, TlsOptions};
use rustls::crypto::ring as provider;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::ServerConfig;

/// Where the PEM files are (the `tls_*` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This node's certificate chain, leaf first.
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `Some`: connections must show a certificate that chains to this CA.
    pub client_ca: Option<PathBuf>,
    /// The CA other nodes' certificates chain to (for node-to-node
    /// connections); needed in a cluster.
    pub ca: Option<PathBuf>,
}

/// What the files hold, parsed into rustls configurations.
struct Loaded {
    server: Arc<ServerConfig>,
    /// For connections to other nodes; `None` without `tls_ca`.
    client: Option<TlsOptions>,
}

/// The TLS state of a running broker, shared by every core and the reload
/// thread. Read once per new connection, never per read or write.
pub struct TlsContext {
    files: TlsFiles,
    handshake_timeout: Duration,
    current: RwLock<Loaded>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("files", &self.files)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    /// Reads and checks every file.
    pub fn load(files: TlsFiles, handshake_timeout: Duration) -> Result<TlsContext, TlsError> {
        let loaded = load(&files)?;
        Ok(TlsContext {
            files,
            handshake_timeout,
            current: RwLock::new(loaded),
        })
    }

    /// Reads the files again; on failure the old material stays in use.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// How long a TLS handshake may take before the connection is closed.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Whether connections must show a client certificate (mutual TLS).
    pub fn requires_client_cert(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        futures_rustls::TlsAcceptor::from(current.server.clone())
    }

    /// How to dial another node (its certificate checked against
    /// `tls_ca`, ours shown); `None` without `tls_ca`.
    pub fn node_client(&self) -> Option<TlsOptions> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.client.clone()
    }
}

fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let certs = load_certs("certificate file", &files.cert)?;
    let key = load_key(&files.key)?;
    let provider = Arc::new(provider::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(load_roots(ca)?), provider)
                    .build()
                    .map_err(|e| {
                        TlsError::Config(format!("tls_client_ca {}: {e}", ca.display()))
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let server = builder.with_single_cert(certs, key).map_err(|e| {
        TlsError::Config(format!(
            "certificate {} with key {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    })?;
    let client = match &files.ca {
        Some(ca) => Some(TlsOptions::from_files(ca, Some((&files.cert, &files.key)))?),
        None => None,
    };
    Ok(Loaded {
        server: Arc::new(server),
        client,
    })
}

/// Reloads `ctx` from its files on every SIGHUP, from a thread of its own.
/// Installed only when TLS is on, so without it SIGHUP keeps its default.
pub fn reload_on_sighup(ctx: Arc<TlsContext>) -> std::io::Result<()> {
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP])?;
    std::thread::Builder::new()
        .name("tls-reload".into())
        .spawn(move || {
            for _ in signals.forever() {
                match ctx.reload() {
                    Ok(()) => tracing::info!(
                        cert = %ctx.files.cert.display(),
                        "SIGHUP: TLS certificates reloaded; new connections use them"
                    ),
                    Err(e) => tracing::error!(
                        error = %e,
                        "SIGHUP: TLS reload failed; the previous certificates stay in use"
                    ),
                }
            }
        })?;
    Ok(())
}

/// Who a verified client certificate names: its subject's common name, or,
/// without one, the whole subject as `attr=value` pairs (`O=acme,OU=ops`).
/// `None` without a certificate, or when the subject cannot be read.
pub fn identity(certs: Option<&[CertificateDer<'_>]>) -> Option<String> {
    subject(certs?.first()?.as_ref())
}

/// The subject of a DER certificate (RFC 5280 4.1), walked by hand: the
/// certificate was already verified by rustls, and only a few fields are
/// needed, so a full X.509 parser would be a dependency for nothing.
fn subject(der: &[u8]) -> Option<String> {
    let (_, cert, _) = tlv(der, 0x30)?;
    let (_, tbs, _) = tlv(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = tlv(rest, 0xa0)?.2; // version
    }
    rest = tlv(rest, 0x02)?.2; // serial
    rest = tlv(rest, 0x30)?.2; // signature algorithm
    rest = tlv(rest, 0x30)?.2; // issuer
    rest = tlv(rest, 0x30)?.2; // validity
    let (_, mut name, _) = tlv(rest, 0x30)?;
    let mut parts = Vec::new();
    let mut cn = None;
    while !name.is_empty() {
        let (_, mut set, next) = tlv(name, 0x31)?;
        name = next;
        while !set.is_empty() {
            let (_, atv, next) = tlv(set, 0x30)?;
            set = next;
            let (_, oid, value) = tlv(atv, 0x06)?;
            let (_, value, _) = any_tlv(value)?;
            let value = String::from_utf8_lossy(value).into_owned();
            let attr = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x06] => "C",
                [0x55, 0x04, 0x07] => "L",
                [0x55, 0x04, 0x08] => "ST",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                _ => "?",
            };
            if attr == "CN" && cn.is_none() {
                cn = Some(value.clone());
            }
            parts.push(format!("{attr}={value}"));
        }
    }
    cn.or_else(|| (!parts.is_empty()).then(|| parts.join(",")))
}

/// One DER element of tag `tag`: (tag, contents, what follows).
fn tlv(input: &[u8], tag: u8) -> Option<(u8, &[u8], &[u8])> {
    let r = any_tlv(input)?;
    (r.0 == tag).then_some(r)
}

fn any_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |a, &b| a << 8 | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_with(dn: rcgen::DistinguishedName) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".into()]).unwrap();
        params.distinguished_name = dn;
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn the_identity_is_the_common_name_else_the_whole_subject() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "acme");
        dn.push(rcgen::DnType::CommonName, "billing-worker");
        assert_eq!(subject(&cert_with(dn)).as_deref(), Some("billing-worker"));
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "acme");
        dn.push(rcgen::DnType::OrganizationalUnitName, "ops");
        assert_eq!(subject(&cert_with(dn)).as_deref(), Some("O=acme,OU=ops"));
        assert_eq!(identity(None), None);
        // Garbage and cut certificates give nothing, never a panic.
        let good = cert_with(rcgen::DistinguishedName::new());
        for cut in 0..good.len() {
            let _ = subject(&good[..cut]);
        }
        assert_eq!(subject(b"\x30\x84\xff\xff\xff\xff"), None);
    }

    #[test]
    fn bad_files_are_named_and_a_failed_reload_keeps_the_old_material() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let files = TlsFiles {
            cert: cert_path.clone(),
            key: key_path.clone(),
            client_ca: None,
            ca: None,
        };
        let ctx = TlsContext::load(files.clone(), Duration::from_secs(1)).unwrap();
        std::fs::write(&cert_path, "not a certificate").unwrap();
        let e = ctx.reload().unwrap_err().to_string();
        assert!(e.contains("c.pem"), "{e}");
        let _still = ctx.acceptor();
        std::fs::write(&cert_path, cert.pem()).unwrap();
        ctx.reload().unwrap();
        // A key file that is not there is named.
        let e = TlsContext::load(
            TlsFiles {
                key: dir.path().join("missing.pem"),
                ..files
            },
            Duration::from_secs(1),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }
}
