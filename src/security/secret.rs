//! The cluster secret and the challenge-response that proves a node holds
//! it without sending it: the accepting side sends a fresh random nonce, the
//! other answers `HMAC-SHA256(secret, label ‖ nonces ‖ context)`. A captured
//! exchange cannot be replayed (the next nonce differs) and the secret never
//! crosses the wire. Each use has a label of its own (and each direction
//! too), so a proof made for one purpose is never valid for another, and a
//! node cannot be made to answer its own challenge for an attacker.
//!
//! Used by the peer handshake (`cluster::peer_net`), ForwardHello on the
//! client listener (`net::hello`), the admin endpoint of the metrics
//! listener (`metrics`) and `ringmq cluster remove`.

use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a nonce and of a proof (an HMAC-SHA256 tag).
pub const NONCE_LEN: usize = 32;
pub const PROOF_LEN: usize = 32;
/// Shortest secret accepted: 16 bytes is 128 bits if chosen at random.
pub const MIN_SECRET_LEN: usize = 16;

pub type Nonce = [u8; NONCE_LEN];
pub type Proof = [u8; PROOF_LEN];

/// What a proof is for. The label is hashed first, so two purposes never
/// share a valid proof.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The dialing node of a peer connection, answering the acceptor's nonce.
    PeerDialer,
    /// The accepting node of a peer connection, answering the dialer's nonce.
    PeerAcceptor,
    /// A node opening a forwarding connection (ForwardHello).
    ForwardClient,
    /// The node accepting a forwarding connection.
    ForwardServer,
    /// An operator's request to the admin endpoint.
    Admin,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::PeerDialer => b"ringmq peer dialer v1\0",
            Purpose::PeerAcceptor => b"ringmq peer acceptor v1\0",
            Purpose::ForwardClient => b"ringmq forward client v1\0",
            Purpose::ForwardServer => b"ringmq forward server v1\0",
            Purpose::Admin => b"ringmq admin v1\0",
        }
    }
}

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("the cluster secret is {len} bytes; it must be at least {MIN_SECRET_LEN}")]
    TooShort { len: usize },
}

/// The secret every node of a cluster shares. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Arc<[u8]>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    pub fn new(secret: &[u8]) -> Result<ClusterSecret, SecretError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { len: secret.len() });
        }
        Ok(ClusterSecret(secret.into()))
    }

    /// The file's contents, without a trailing newline (an editor's or
    /// `echo`'s), as the secret.
    pub fn from_file(path: &Path) -> Result<ClusterSecret, SecretError> {
        let bytes = std::fs::read(path).map_err(|source| SecretError::Read {
            path: path.to_owned(),
            source,
        })?;
        let end = bytes
            .iter()
            .rposition(|&b| b != b'\n' && b != b'\r')
            .map_or(0, |i| i + 1);
        ClusterSecret::new(&bytes[..end])
    }

    /// The proof for `purpose` over the nonces and the context (node ids,
    /// cluster id, the admin request: whatever both sides know and an
    /// attacker must not be able to swap).
    pub fn prove(&self, purpose: Purpose, nonces: &[&[u8]], context: &[u8]) -> Proof {
        self.mac(purpose, nonces, context)
            .finalize()
            .into_bytes()
            .into()
    }

    /// Whether `proof` is the one for these inputs (in constant time).
    pub fn verify(&self, purpose: Purpose, nonces: &[&[u8]], context: &[u8], proof: &[u8]) -> bool {
        self.mac(purpose, nonces, context)
            .verify_slice(proof)
            .is_ok()
    }

    fn mac(&self, purpose: Purpose, nonces: &[&[u8]], context: &[u8]) -> Hmac<Sha256> {
        // Any key length is valid for HMAC: `new_from_slice` cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.label());
        // Lengths first, so the boundaries between fields are unambiguous.
        for part in nonces.iter().chain(std::iter::once(&context)) {
            mac.update(&(part.len() as u32).to_le_bytes());
            mac.update(part);
        }
        mac
    }
}

/// The operating system's random generator failed: no nonce, so no
/// handshake (a predictable nonce would make proofs replayable).
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random generator failed")]
pub struct NoRandom;

/// A fresh random nonce from the operating system's generator.
pub fn nonce() -> Result<Nonce, NoRandom> {
    let mut n = [0u8; NONCE_LEN];
    rustls::crypto::ring::default_provider()
        .secure_random
        .fill(&mut n)
        .map_err(|_| NoRandom)?;
    Ok(n)
}

/// The context both ends of a node-to-node handshake bind a proof to:
/// the cluster and the two node ids, dialer first.
pub fn node_context(cluster_id: &str, from: u32, to: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(cluster_id.len() + 8);
    c.extend_from_slice(&from.to_le_bytes());
    c.extend_from_slice(&to.to_le_bytes());
    c.extend_from_slice(cluster_id.as_bytes());
    c
}

/// Lower-case hex, for the admin endpoint's header.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The bytes of a hex string; `None` when it is not one.
pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> ClusterSecret {
        ClusterSecret::new(s.as_bytes()).unwrap()
    }

    #[test]
    fn a_proof_verifies_only_with_its_own_secret_nonce_purpose_and_context() {
        let k = secret("correct horse battery staple");
        let (a, b) = (nonce().unwrap(), nonce().unwrap());
        assert_ne!(a, b, "nonces are random");
        let ctx = node_context("eu", 4, 1);
        let p = k.prove(Purpose::PeerDialer, &[&a, &b], &ctx);
        assert!(k.verify(Purpose::PeerDialer, &[&a, &b], &ctx, &p));
        // Another secret, a replay against a new nonce, the other
        // direction, other ids, a cut or bent proof: all refused.
        let wrong = secret("incorrect horse battery staple");
        assert!(!wrong.verify(Purpose::PeerDialer, &[&a, &b], &ctx, &p));
        assert!(!k.verify(Purpose::PeerDialer, &[&nonce().unwrap(), &b], &ctx, &p));
        assert!(!k.verify(Purpose::PeerAcceptor, &[&a, &b], &ctx, &p));
        assert!(!k.verify(
            Purpose::PeerDialer,
            &[&a, &b],
            &node_context("eu", 5, 1),
            &p
        ));
        assert!(!k.verify(Purpose::PeerDialer, &[&a, &b], &ctx, &p[..16]));
        let mut bent = p;
        bent[0] ^= 1;
        assert!(!k.verify(Purpose::PeerDialer, &[&a, &b], &ctx, &bent));
        // Field boundaries count: moving a byte from one field to the next
        // changes the proof.
        let p2 = k.prove(Purpose::Admin, &[b"ab"], b"c");
        assert!(!k.verify(Purpose::Admin, &[b"a"], b"bc", &p2));
    }

    #[test]
    fn secrets_are_checked_and_never_printed() {
        assert!(matches!(
            ClusterSecret::new(b"short"),
            Err(SecretError::TooShort { len: 5 })
        ));
        let k = secret("0123456789abcdef-very-secret");
        assert!(!format!("{k:?}").contains("very-secret"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "0123456789abcdef-very-secret\n").unwrap();
        assert_eq!(ClusterSecret::from_file(&path).unwrap(), k);
        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            ClusterSecret::from_file(&path),
            Err(SecretError::TooShort { len: 0 })
        ));
    }

    #[test]
    fn hex_round_trips() {
        let n = nonce().unwrap();
        assert_eq!(unhex(&hex(&n)).unwrap(), n);
        assert_eq!(unhex("0g"), None);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("é1"), None);
    }
}
