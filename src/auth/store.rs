//! The users, ACLs and quotas of a broker as one value, [`Security`], changed only
//! by [`SecurityCommand`]s: in a cluster they travel in the Raft log inside
//! the metadata commands (so every node applies the same ones), on a single
//! node shard 0 applies them and rewrites `security.json` in the data dir
//! (the same atomic rewrite as the topic catalogue).
//!
//! Serialized as JSON (Raft log, snapshots, the file): fields may be
//! added, never renamed. A credential is stored salted and hashed (RFC
//! 5802's StoredKey and ServerKey), never the password; `Debug` prints no
//! key material.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ringmq_protocol::scram::{self, Credential, KEY_LEN};
use serde::{Deserialize, Serialize};

use super::acl::{principal_of, AclRule};
use super::Secret;
use crate::quota::QuotaEntry;

const FILE_NAME: &str = "security.json";
/// Most users and most rules a broker keeps: bounds the state every node
/// holds and every view copies.
pub const MAX_USERS: usize = 10_000;
pub const MAX_ACLS: usize = 100_000;
pub const MAX_QUOTAS: usize = 10_000;

/// What the broker keeps of a user's password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCredential {
    pub mechanism: String,
    pub salt: Secret,
    pub iterations: u32,
    pub stored_key: Secret,
    pub server_key: Secret,
}

impl StoredCredential {
    /// Derives a SCRAM-SHA-256 credential (PBKDF2 with `iterations` rounds).
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> StoredCredential {
        StoredCredential::from(Credential::derive(password, salt, iterations))
    }

    /// The credential in the form the SCRAM exchange uses; `None` when it
    /// is not a valid SCRAM-SHA-256 credential.
    pub fn scram(&self) -> Option<Credential> {
        if self.mechanism != scram::MECHANISM {
            return None;
        }
        Some(Credential {
            salt: self.salt.0.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.0.clone().try_into().ok()?,
            server_key: self.server_key.0.clone().try_into().ok()?,
        })
    }

    /// Checks what a client sent: the mechanism, the iterations, the key sizes.
    pub fn validate(&self) -> Result<(), SecurityError> {
        let bad = |why: &str| Err(SecurityError::InvalidCredential(why.into()));
        if self.mechanism != scram::MECHANISM {
            return bad("the only mechanism is SCRAM-SHA-256");
        }
        if !(scram::MIN_ITERATIONS..=scram::MAX_ITERATIONS).contains(&self.iterations) {
            return bad("iterations must be between 4096 and 1048576");
        }
        if self.salt.0.len() < 8 || self.salt.0.len() > 64 {
            return bad("the salt must be 8 to 64 bytes");
        }
        if self.stored_key.0.len() != KEY_LEN || self.server_key.0.len() != KEY_LEN {
            return bad("keys must be 32 bytes");
        }
        Ok(())
    }
}

impl From<Credential> for StoredCredential {
    fn from(c: Credential) -> StoredCredential {
        StoredCredential {
            mechanism: scram::MECHANISM.into(),
            salt: Secret(c.salt),
            iterations: c.iterations,
            stored_key: Secret(c.stored_key.to_vec()),
            server_key: Secret(c.server_key.to_vec()),
        }
    }
}

/// A change to the users or the ACLs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SecurityCommand {
    /// Creates the user or replaces its credential.
    PutUser {
        name: String,
        credential: StoredCredential,
    },
    RemoveUser {
        name: String,
    },
    AddAcl {
        acl: AclRule,
    },
    RemoveAcl {
        acl: AclRule,
    },
    /// Creates or replaces a principal's quotas (`User:<name>`).
    SetQuota {
        principal: String,
        quota: QuotaEntry,
    },
    RemoveQuota {
        principal: String,
    },
}

/// Why a change was refused; a refused change changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum SecurityError {
    #[error("no user {0:?}")]
    UnknownUser(String),
    #[error("invalid user name {0:?}: 1 to 255 printable characters, no spaces")]
    InvalidUserName(String),
    #[error("invalid credential: {0}")]
    InvalidCredential(String),
    #[error("no such ACL: {0}")]
    UnknownAcl(String),
    #[error("ACL already exists: {0}")]
    AclExists(String),
    #[error("invalid ACL: {0}")]
    InvalidAcl(String),
    #[error("too many {0}")]
    Full(String),
    #[error("no quota for {0}")]
    UnknownQuota(String),
    #[error("invalid quota: {0}")]
    InvalidQuota(String),
}

/// Every user and every rule.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Security {
    #[serde(default)]
    users: BTreeMap<String, StoredCredential>,
    #[serde(default)]
    acls: BTreeSet<AclRule>,
    #[serde(default)]
    quotas: BTreeMap<String, QuotaEntry>,
}

impl std::fmt::Debug for Security {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Security")
            .field("users", &self.users.keys().collect::<Vec<_>>())
            .field("acls", &self.acls.len())
            .field("quotas", &self.quotas)
            .finish()
    }
}

/// A user name: what SCRAM and principals can carry unambiguously.
pub fn validate_user_name(name: &str) -> Result<(), SecurityError> {
    if name.is_empty() || name.len() > 255 || !name.chars().all(|c| c.is_ascii_graphic()) {
        return Err(SecurityError::InvalidUserName(name.to_owned()));
    }
    Ok(())
}

/// A quota entry as it may be kept: for a `User:<name>` principal (in
/// that canonical form, so one principal has one entry), setting
/// something (an entry of nothing is a removal).
pub fn validate_quota(principal: &str, quota: &QuotaEntry) -> Result<(), SecurityError> {
    let bad = |why: String| Err(SecurityError::InvalidQuota(why));
    match principal_of(principal) {
        Ok(p) if p == principal => {}
        _ => return bad(format!("the principal {principal:?} is not User:<name>")),
    }
    if *quota == QuotaEntry::default() {
        return bad("it sets nothing; remove it instead".into());
    }
    Ok(())
}

impl Security {
    pub fn user(&self, name: &str) -> Option<&StoredCredential> {
        self.users.get(name)
    }

    /// User names and mechanisms, in name order: never key material.
    pub fn user_list(&self) -> impl Iterator<Item = (&str, &str)> {
        self.users
            .iter()
            .map(|(n, c)| (n.as_str(), c.mechanism.as_str()))
    }

    pub fn acls(&self) -> &BTreeSet<AclRule> {
        &self.acls
    }

    /// Every principal's quotas, in principal order.
    pub fn quotas(&self) -> &BTreeMap<String, QuotaEntry> {
        &self.quotas
    }

    /// Applies one change, or refuses it and changes nothing.
    pub fn apply(&mut self, cmd: &SecurityCommand) -> Result<(), SecurityError> {
        match cmd {
            SecurityCommand::PutUser { name, credential } => {
                validate_user_name(name)?;
                credential.validate()?;
                if !self.users.contains_key(name) && self.users.len() >= MAX_USERS {
                    return Err(SecurityError::Full("users".into()));
                }
                self.users.insert(name.clone(), credential.clone());
            }
            SecurityCommand::RemoveUser { name } => {
                if self.users.remove(name).is_none() {
                    return Err(SecurityError::UnknownUser(name.clone()));
                }
            }
            SecurityCommand::AddAcl { acl } => {
                acl.validate()?;
                if self.acls.len() >= MAX_ACLS {
                    return Err(SecurityError::Full("ACLs".into()));
                }
                if !self.acls.insert(acl.clone()) {
                    return Err(SecurityError::AclExists(acl.to_string()));
                }
            }
            SecurityCommand::RemoveAcl { acl } => {
                if !self.acls.remove(acl) {
                    return Err(SecurityError::UnknownAcl(acl.to_string()));
                }
            }
            SecurityCommand::SetQuota { principal, quota } => {
                validate_quota(principal, quota)?;
                if !self.quotas.contains_key(principal) && self.quotas.len() >= MAX_QUOTAS {
                    return Err(SecurityError::Full("quotas".into()));
                }
                self.quotas.insert(principal.clone(), *quota);
            }
            SecurityCommand::RemoveQuota { principal } => {
                if self.quotas.remove(principal).is_none() {
                    return Err(SecurityError::UnknownQuota(principal.clone()));
                }
            }
        }
        Ok(())
    }

    /// Whether `cmd`'s effect is in this state (a change made through the
    /// cluster is answered once the node that took it has applied it).
    pub fn reflects(&self, cmd: &SecurityCommand) -> bool {
        match cmd {
            SecurityCommand::PutUser { name, credential } => {
                self.users.get(name) == Some(credential)
            }
            SecurityCommand::RemoveUser { name } => !self.users.contains_key(name),
            SecurityCommand::AddAcl { acl } => self.acls.contains(acl),
            SecurityCommand::RemoveAcl { acl } => !self.acls.contains(acl),
            SecurityCommand::SetQuota { principal, quota } => {
                self.quotas.get(principal) == Some(quota)
            }
            SecurityCommand::RemoveQuota { principal } => !self.quotas.contains_key(principal),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is damaged: {source}; restore it or remove it to start with no users, ACLs and quotas"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Reads a single node's users, ACLs and quotas; a missing file is none.
pub fn load(data_dir: &Path) -> Result<Security, StoreError> {
    let path = data_dir.join(FILE_NAME);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Security::default()),
        Err(source) => return Err(StoreError::Read { path, source }),
    };
    serde_json::from_slice(&text).map_err(|source| StoreError::Parse { path, source })
}

/// Replaces the file atomically and durably, readable by the owner only.
/// Blocking: call it from a blocking pool.
pub fn store(data_dir: &Path, security: &Security) -> Result<(), StoreError> {
    let path = data_dir.join(FILE_NAME);
    let write = || -> std::io::Result<()> {
        let text = serde_json::to_vec_pretty(security)?;
        super::write_private(&path, &text)
    };
    write().map_err(|source| StoreError::Write {
        path: path.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::acl::{AclRule, Pattern};
    use ringmq_protocol::{Operation, ResourceType};

    fn alice() -> SecurityCommand {
        SecurityCommand::PutUser {
            name: "alice".into(),
            credential: StoredCredential::derive(b"secret", b"saltsalt", 4096),
        }
    }

    fn rule() -> AclRule {
        AclRule {
            principal: "User:alice".into(),
            resource: ResourceType::Topic,
            pattern: Pattern::Prefix("orders.".into()),
            operation: Operation::Consume,
        }
    }

    #[test]
    fn commands_apply_and_refuse() {
        let mut s = Security::default();
        s.apply(&alice()).unwrap();
        assert!(s.reflects(&alice()));
        s.apply(&SecurityCommand::AddAcl { acl: rule() }).unwrap();
        assert_eq!(
            s.apply(&SecurityCommand::AddAcl { acl: rule() }),
            Err(SecurityError::AclExists(rule().to_string()))
        );
        let before = s.clone();
        assert!(s
            .apply(&SecurityCommand::RemoveUser { name: "bob".into() })
            .is_err());
        assert!(s
            .apply(&SecurityCommand::PutUser {
                name: "bad name".into(),
                credential: StoredCredential::derive(b"x", b"saltsalt", 4096),
            })
            .is_err());
        let mut weak = StoredCredential::derive(b"x", b"saltsalt", 4096);
        weak.iterations = 1000;
        assert!(s
            .apply(&SecurityCommand::PutUser {
                name: "carol".into(),
                credential: weak,
            })
            .is_err());
        assert_eq!(s, before, "a refused command changes nothing");
        s.apply(&SecurityCommand::RemoveAcl { acl: rule() })
            .unwrap();
        s.apply(&SecurityCommand::RemoveUser {
            name: "alice".into(),
        })
        .unwrap();
        assert_eq!(s, Security::default());
    }

    #[test]
    fn commands_round_trip_as_json_and_debug_hides_keys() {
        for cmd in [
            alice(),
            SecurityCommand::RemoveUser { name: "a".into() },
            SecurityCommand::AddAcl { acl: rule() },
            SecurityCommand::RemoveAcl { acl: rule() },
        ] {
            let json = serde_json::to_string(&cmd).unwrap();
            assert_eq!(serde_json::from_str::<SecurityCommand>(&json).unwrap(), cmd);
        }
        let SecurityCommand::PutUser { credential, .. } = alice() else {
            unreachable!()
        };
        let debug = format!("{:?} {:?}", alice(), credential);
        for secret in [
            &credential.salt.0,
            &credential.stored_key.0,
            &credential.server_key.0,
        ] {
            assert!(!debug.contains(&format!("{secret:?}")), "{debug}");
            assert!(!debug.contains(&format!("{:?}", &secret[..4])), "{debug}");
        }
    }

    fn noisy_quota() -> SecurityCommand {
        SecurityCommand::SetQuota {
            principal: "User:noisy".into(),
            quota: QuotaEntry {
                produce_bytes: Some(65_536),
                fetch_bytes: Some(0),
                requests: None,
            },
        }
    }

    #[test]
    fn quota_commands_apply_and_refuse() {
        let mut s = Security::default();
        s.apply(&noisy_quota()).unwrap();
        assert!(s.reflects(&noisy_quota()));
        assert_eq!(s.quotas().len(), 1);
        let before = s.clone();
        for bad in [
            SecurityCommand::SetQuota {
                principal: "noisy".into(),
                quota: QuotaEntry {
                    requests: Some(1),
                    ..QuotaEntry::default()
                },
            },
            SecurityCommand::SetQuota {
                principal: "User:has space".into(),
                quota: QuotaEntry {
                    requests: Some(1),
                    ..QuotaEntry::default()
                },
            },
            SecurityCommand::SetQuota {
                principal: "User:quiet".into(),
                quota: QuotaEntry::default(),
            },
            SecurityCommand::RemoveQuota {
                principal: "User:quiet".into(),
            },
        ] {
            assert!(s.apply(&bad).is_err(), "{bad:?}");
        }
        assert_eq!(s, before, "a refused command changes nothing");
        let remove = SecurityCommand::RemoveQuota {
            principal: "User:noisy".into(),
        };
        s.apply(&remove).unwrap();
        assert!(s.reflects(&remove));
        assert_eq!(s, Security::default());
        let json = serde_json::to_string(&noisy_quota()).unwrap();
        assert_eq!(
            serde_json::from_str::<SecurityCommand>(&json).unwrap(),
            noisy_quota()
        );
        // A state written before quotas existed still reads.
        let old: Security = serde_json::from_str(r#"{"users":{},"acls":[]}"#).unwrap();
        assert_eq!(old, Security::default());
    }

    #[test]
    fn the_file_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Security::default());
        let mut s = Security::default();
        s.apply(&alice()).unwrap();
        s.apply(&SecurityCommand::AddAcl { acl: rule() }).unwrap();
        s.apply(&noisy_quota()).unwrap();
        store(dir.path(), &s).unwrap();
        assert_eq!(load(dir.path()).unwrap(), s);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(FILE_NAME))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "readable by the owner only");
    }
}
