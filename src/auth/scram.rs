//! The broker's side of SCRAM-SHA-256 beyond the protocol's arithmetic:
//! which credential answers a client-first message. An unknown user gets a
//! fake credential derived from its name, so the exchange goes on exactly
//! as for a known user and fails at the proof like a wrong password: same
//! messages, same work, same error text.

use hmac::{Hmac, Mac};
use ringmq_protocol::scram::{Credential, KEY_LEN};
use sha2::Sha256;

use super::{Secrets, Security};

/// PBKDF2 rounds of the credentials the broker and the CLI make.
pub const ITERATIONS: u32 = ringmq_protocol::scram::MIN_ITERATIONS;

/// The credential to answer `user` with, and whether the user exists
/// (for the server's log only; the client must not learn it).
pub fn lookup(security: &Security, secrets: Option<&Secrets>, user: &str) -> (Credential, bool) {
    // Derived for every user, known or not, so both take the same time.
    let key = secrets.map_or(&[][..], |s| &s.mask_key.0[..]);
    let decoy = fake(key, user);
    if let Some((name, cred)) = secrets.and_then(|s| s.admin.as_ref()) {
        if name == user {
            if let Some(c) = cred.scram() {
                return (c, true);
            }
        }
    }
    if let Some(c) = security.user(user).and_then(|c| c.scram()) {
        return (c, true);
    }
    (decoy, false)
}

/// A credential nobody knows the password of, stable per name and key.
fn fake(key: &[u8], user: &str) -> Credential {
    let mac = |label: &[u8]| -> [u8; KEY_LEN] {
        // HMAC takes a key of any length: `new_from_slice` cannot fail.
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
        m.update(label);
        m.update(user.as_bytes());
        m.finalize().into_bytes().into()
    };
    Credential {
        salt: mac(b"salt\0")[..16].to_vec(),
        iterations: ITERATIONS,
        stored_key: mac(b"stored\0"),
        server_key: mac(b"server\0"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Secret, SecurityCommand, StoredCredential};

    #[test]
    fn unknown_users_get_a_stable_fake_that_looks_real() {
        let secrets = Secrets {
            admin: None,
            mask_key: Secret(vec![9; 32]),
        };
        let mut s = Security::default();
        s.apply(&SecurityCommand::PutUser {
            name: "alice".into(),
            credential: StoredCredential::derive(b"pw", b"0123456789abcdef", ITERATIONS),
        })
        .unwrap();
        let (real, known) = lookup(&s, Some(&secrets), "alice");
        assert!(known);
        let (a, known) = lookup(&s, Some(&secrets), "mallory");
        assert!(!known);
        let (b, _) = lookup(&s, Some(&secrets), "mallory");
        assert_eq!(a, b, "the same salt every time");
        assert_eq!(
            (a.salt.len(), a.iterations),
            (real.salt.len(), real.iterations)
        );
        assert_ne!(lookup(&s, Some(&secrets), "eve").0, a);
    }
}
