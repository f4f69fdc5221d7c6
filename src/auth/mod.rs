//! Who a connection is and what it may do: SCRAM-SHA-256 users
//! ([`scram`]), allow rules ([`acl`]) and the state holding both
//! ([`store`]), which a cluster keeps in its Raft metadata and a single
//! node in its data dir.
//!
//! Nothing here touches a socket: the connection (`net/session.rs`) drives
//! the exchange and dispatch asks [`acl::Authorizer`] before each request.

pub mod acl;
pub mod scram;
pub mod store;

use std::fmt;

pub use acl::Authorizer;
pub use store::{Security, SecurityCommand, SecurityError, StoredCredential};

/// The principal of a connection that did not authenticate: for ACLs when
/// `authorization` is on and `authentication` is off, and for quotas.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

/// Bytes that must never be printed: `Debug` shows only their length.
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Secret(pub Vec<u8>);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0.len())
    }
}

/// What the broker derives at start and never persists in settings: the
/// bootstrap admin's credential and the key unknown users' fake salts are
/// derived from. `Debug` prints neither.
pub struct Secrets {
    /// `admin_user` and its credential (from `admin_password_file` or
    /// `RINGMQ_ADMIN_PASSWORD`).
    pub admin: Option<(String, StoredCredential)>,
    /// Keys the fake credentials of unknown users (see [`scram::lookup`]).
    pub mask_key: Secret,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secrets")
            .field("admin", &self.admin.as_ref().map(|(n, _)| n))
            .finish_non_exhaustive()
    }
}

/// Why the start-up secrets could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("admin_password_file {path}: {source}")]
    PasswordFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("admin_user {0:?} is set but no password is: set admin_password_file or RINGMQ_ADMIN_PASSWORD")]
    NoPassword(String),
    #[error("the admin password is empty")]
    EmptyPassword,
    #[error("{path}: {source}")]
    MaskKey {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the system random source failed: {0}")]
    Random(String),
}

/// Fills `n` bytes from the OS random source.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, SecretsError> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).map_err(|e| SecretsError::Random(e.to_string()))?;
    Ok(b)
}

impl Secrets {
    /// Reads the admin password (file first, then the environment) and
    /// the mask key (`<data_dir>/scram-mask.key`, made on first start so
    /// an unknown user's fake salt stays the same across restarts).
    /// Blocking file I/O: call before the executors start.
    pub fn load(
        data_dir: &std::path::Path,
        admin_user: Option<&str>,
        password_file: Option<&std::path::Path>,
    ) -> Result<Secrets, SecretsError> {
        let admin = match admin_user {
            None => None,
            Some(name) => {
                let password = match password_file {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|source| SecretsError::PasswordFile {
                            path: path.to_owned(),
                            source,
                        })?
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                    None => std::env::var("RINGMQ_ADMIN_PASSWORD")
                        .map_err(|_| SecretsError::NoPassword(name.to_owned()))?,
                };
                if password.is_empty() {
                    return Err(SecretsError::EmptyPassword);
                }
                let salt = random_bytes(16)?;
                let cred = StoredCredential::derive(password.as_bytes(), &salt, scram::ITERATIONS);
                Some((name.to_owned(), cred))
            }
        };
        let path = data_dir.join("scram-mask.key");
        let mask_key = match std::fs::read(&path) {
            Ok(k) if k.len() == 32 => k,
            _ => {
                let k = random_bytes(32)?;
                write_private(&path, &k).map_err(|source| SecretsError::MaskKey {
                    path: path.clone(),
                    source,
                })?;
                k
            }
        };
        Ok(Secrets {
            admin,
            mask_key: Secret(mask_key),
        })
    }
}

/// Writes `bytes` to `path` readable by the owner only (atomically:
/// temporary file, fsync, rename, fsync of the directory).
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}
