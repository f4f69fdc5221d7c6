//! SCRAM-SHA-256 (RFC 5802, RFC 7677): the messages and the arithmetic
//! both sides of a SaslAuthenticate exchange (SPEC.md 5.22) share, so the
//! broker and the client cannot drift apart. Pure: nonces and salts are
//! passed in (each side draws them from the OS), nothing here does I/O.
//!
//! The primitives are RustCrypto's (`sha2`, `hmac`, `pbkdf2`) and proofs
//! are compared in constant time (`subtle`). Not supported: channel
//! binding (the GS2 header must be `n,,`), SASLprep of passwords (they are
//! used as their UTF-8 bytes, which equals SASLprep for ASCII) and
//! extensions.

use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The one mechanism this build speaks, as SaslHandshake names it.
pub const MECHANISM: &str = "SCRAM-SHA-256";
/// Fewest PBKDF2 iterations a credential may have (RFC 7677 asks for 4096).
pub const MIN_ITERATIONS: u32 = 4096;
/// Most iterations the broker accepts in a stored credential: bounds the
/// work a client must do and keeps a typo from making a user unusable.
pub const MAX_ITERATIONS: u32 = 1 << 20;
/// Longest SCRAM message either side accepts, in bytes.
pub const MAX_MESSAGE_LEN: usize = 1024;
/// Length of a key (StoredKey, ServerKey) and of a proof: SHA-256's output.
pub const KEY_LEN: usize = 32;

type HmacSha256 = Hmac<Sha256>;

/// Why a SCRAM message was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScramError {
    #[error("malformed SCRAM message: {0}")]
    Malformed(&'static str),
    #[error("SCRAM channel binding and extensions are not supported")]
    Unsupported,
    #[error("the server's nonce does not extend the client's")]
    NonceMismatch,
    #[error("iteration count {0} is outside {MIN_ITERATIONS}..={MAX_ITERATIONS}")]
    Iterations(u32),
    #[error("the server's signature does not match: it does not know the password")]
    BadServerSignature,
    #[error("the server refused: {0}")]
    ServerError(String),
    #[error("the client's proof or nonce does not match")]
    InvalidProof,
}

/// What the server keeps of a password (RFC 5802 section 3): enough to
/// check a proof, not enough to make one. `Debug` prints no key material.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: [u8; KEY_LEN],
    pub server_key: [u8; KEY_LEN],
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("iterations", &self.iterations)
            .finish_non_exhaustive()
    }
}

impl Credential {
    /// Derives the credential of `password` (PBKDF2-HMAC-SHA-256 over
    /// `salt`, `iterations` rounds). Costs `iterations` HMACs: milliseconds.
    pub fn derive(password: &[u8], salt: &[u8], iterations: u32) -> Credential {
        let salted = salted_password(password, salt, iterations);
        Credential::from_salted(&salted, salt, iterations)
    }

    fn from_salted(salted: &[u8; KEY_LEN], salt: &[u8], iterations: u32) -> Credential {
        let client_key = hmac(salted, b"Client Key");
        Credential {
            salt: salt.to_vec(),
            iterations,
            stored_key: Sha256::digest(client_key).into(),
            server_key: hmac(salted, b"Server Key"),
        }
    }
}

fn salted_password(password: &[u8], salt: &[u8], iterations: u32) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out);
    out
}

fn hmac(key: &[u8], msg: &[u8]) -> [u8; KEY_LEN] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

fn xor(a: &[u8; KEY_LEN], b: &[u8; KEY_LEN]) -> [u8; KEY_LEN] {
    std::array::from_fn(|i| a[i] ^ b[i])
}

/// `saslname` of RFC 5802: `=` and `,` escaped.
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

fn unescape_name(s: &str) -> Result<String, ScramError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('=') {
        out.push_str(&rest[..i]);
        match rest.get(i..i + 3) {
            Some("=3D") => out.push('='),
            Some("=2C") => out.push(','),
            _ => return Err(ScramError::Malformed("bad escape in user name")),
        }
        rest = &rest[i + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `k=value` attributes of a message, in order; each key one letter.
fn attributes(msg: &str) -> Result<Vec<(char, &str)>, ScramError> {
    msg.split(',')
        .map(|part| {
            let mut chars = part.chars();
            match (chars.next(), chars.next()) {
                (Some(k), Some('=')) if k.is_ascii_alphabetic() => Ok((k, &part[2..])),
                _ => Err(ScramError::Malformed("attribute is not k=value")),
            }
        })
        .collect()
}

fn check_len(msg: &[u8]) -> Result<&str, ScramError> {
    if msg.len() > MAX_MESSAGE_LEN {
        return Err(ScramError::Malformed("message too long"));
    }
    std::str::from_utf8(msg).map_err(|_| ScramError::Malformed("not UTF-8"))
}

/// A nonce must be printable ASCII without `,` (RFC 5802 section 7).
fn valid_nonce(n: &str) -> bool {
    !n.is_empty() && n.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Turns random bytes into a nonce (base64 is printable and has no `,`).
pub fn nonce_from_bytes(random: &[u8]) -> String {
    B64.encode(random)
}

/// The client's first message, as the server reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    pub user: String,
    pub nonce: String,
    /// `n=...,r=...`: the part that enters the AuthMessage.
    bare: String,
}

impl ClientFirst {
    pub fn parse(msg: &[u8]) -> Result<ClientFirst, ScramError> {
        let s = check_len(msg)?;
        let bare = match s.strip_prefix("n,,") {
            Some(b) => b,
            None if s.starts_with("y,") || s.starts_with("p=") => {
                return Err(ScramError::Unsupported)
            }
            None => return Err(ScramError::Malformed("GS2 header must be \"n,,\"")),
        };
        let attrs = attributes(bare)?;
        let (user, nonce) = match attrs.as_slice() {
            [('n', u), ('r', r)] => (unescape_name(u)?, *r),
            [('m', _), ..] => return Err(ScramError::Unsupported),
            _ => return Err(ScramError::Malformed("client-first is not n=user,r=nonce")),
        };
        if user.is_empty() || !valid_nonce(nonce) {
            return Err(ScramError::Malformed("empty user name or bad nonce"));
        }
        Ok(ClientFirst {
            user,
            nonce: nonce.to_owned(),
            bare: bare.to_owned(),
        })
    }
}

/// The server's side of one exchange, between its two messages.
pub struct ServerExchange {
    client_first_bare: String,
    server_first: String,
    nonce: String,
    credential: Credential,
}

impl fmt::Debug for ServerExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerExchange").finish_non_exhaustive()
    }
}

impl ServerExchange {
    /// Answers `first` with `credential` (the user's, or a fake one for an
    /// unknown user: the exchange then fails at the proof, exactly where a
    /// wrong password does). `server_nonce` must be fresh for every
    /// exchange: it is what makes a recorded client-final useless on
    /// another connection.
    pub fn start(
        first: &ClientFirst,
        credential: Credential,
        server_nonce: &str,
    ) -> (ServerExchange, Vec<u8>) {
        let nonce = format!("{}{}", first.nonce, server_nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&credential.salt),
            credential.iterations
        );
        let out = server_first.clone().into_bytes();
        (
            ServerExchange {
                client_first_bare: first.bare.clone(),
                server_first,
                nonce,
                credential,
            },
            out,
        )
    }

    /// Checks the client's final message; on success, the server-final
    /// message (`v=` signature) the client checks in turn. Every failure
    /// reads the same to the caller (the reason is for the server's log).
    pub fn finish(self, msg: &[u8]) -> Result<Vec<u8>, ScramError> {
        let s = check_len(msg)?;
        let (without_proof, proof) = s
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("client-final has no proof"))?;
        let attrs = attributes(without_proof)?;
        let (binding, nonce) = match attrs.as_slice() {
            [('c', c), ('r', r)] => (*c, *r),
            _ => return Err(ScramError::Malformed("client-final is not c=..,r=..,p=..")),
        };
        if binding != "biws" {
            return Err(ScramError::Unsupported);
        }
        // Computed before the nonce is judged, so a replay costs the same
        // time as a wrong password.
        let proof: [u8; KEY_LEN] = B64
            .decode(proof)
            .ok()
            .and_then(|p| p.try_into().ok())
            .unwrap_or([0u8; KEY_LEN]);
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let signature = hmac(&self.credential.stored_key, auth_message.as_bytes());
        let client_key = xor(&proof, &signature);
        let stored: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        let proof_ok = stored.ct_eq(&self.credential.stored_key);
        let nonce_ok = nonce.as_bytes().ct_eq(self.nonce.as_bytes());
        if !bool::from(proof_ok & nonce_ok) {
            return Err(ScramError::InvalidProof);
        }
        let server_signature = hmac(&self.credential.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)).into_bytes())
    }
}

/// The client's side of one exchange.
pub struct ClientExchange {
    password: Vec<u8>,
    nonce: String,
    first_bare: String,
    /// Set by [`ClientExchange::final_message`]: what the server must sign.
    expected_server_signature: Option<[u8; KEY_LEN]>,
}

impl fmt::Debug for ClientExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientExchange").finish_non_exhaustive()
    }
}

impl ClientExchange {
    /// The client-first message for `user`, with a fresh `nonce`.
    pub fn new(user: &str, password: &[u8], nonce: &str) -> (ClientExchange, Vec<u8>) {
        let first_bare = format!("n={},r={nonce}", escape_name(user));
        let msg = format!("n,,{first_bare}").into_bytes();
        (
            ClientExchange {
                password: password.to_vec(),
                nonce: nonce.to_owned(),
                first_bare,
                expected_server_signature: None,
            },
            msg,
        )
    }

    /// The client-final message answering `server_first`.
    pub fn final_message(&mut self, server_first: &[u8]) -> Result<Vec<u8>, ScramError> {
        let s = check_len(server_first)?;
        if let Some(e) = s.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let attrs = attributes(s)?;
        let (nonce, salt, iterations) = match attrs.as_slice() {
            [('r', r), ('s', s), ('i', i)] => (*r, *s, *i),
            _ => return Err(ScramError::Malformed("server-first is not r=..,s=..,i=..")),
        };
        if !nonce.starts_with(&self.nonce) || nonce.len() == self.nonce.len() {
            return Err(ScramError::NonceMismatch);
        }
        let salt = B64
            .decode(salt)
            .map_err(|_| ScramError::Malformed("salt is not base64"))?;
        let iterations: u32 = iterations
            .parse()
            .map_err(|_| ScramError::Malformed("iteration count is not a number"))?;
        if !(MIN_ITERATIONS..=MAX_ITERATIONS).contains(&iterations) {
            return Err(ScramError::Iterations(iterations));
        }
        let salted = salted_password(&self.password, &salt, iterations);
        let client_key = hmac(&salted, b"Client Key");
        let stored_key: [u8; KEY_LEN] = Sha256::digest(client_key).into();
        let without_proof = format!("c=biws,r={nonce}");
        let auth_message = format!("{},{s},{without_proof}", self.first_bare);
        let signature = hmac(&stored_key, auth_message.as_bytes());
        let proof = xor(&client_key, &signature);
        let server_key = hmac(&salted, b"Server Key");
        self.expected_server_signature = Some(hmac(&server_key, auth_message.as_bytes()));
        Ok(format!("{without_proof},p={}", B64.encode(proof)).into_bytes())
    }

    /// Checks the server-final message: the server proved it knows the
    /// credential (mutual authentication).
    pub fn verify_server(&self, server_final: &[u8]) -> Result<(), ScramError> {
        let s = check_len(server_final)?;
        if let Some(e) = s.strip_prefix("e=") {
            return Err(ScramError::ServerError(e.to_owned()));
        }
        let sig = s
            .strip_prefix("v=")
            .and_then(|v| B64.decode(v).ok())
            .ok_or(ScramError::Malformed("server-final is not v=signature"))?;
        match &self.expected_server_signature {
            Some(want) if bool::from(want.as_slice().ct_eq(&sig)) => Ok(()),
            _ => Err(ScramError::BadServerSignature),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 7677 section 3.
    const CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
    const SERVER_FIRST: &str =
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
    const CLIENT_FINAL: &str = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    const SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

    fn rfc_credential() -> Credential {
        let salt = B64.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
        Credential::derive(b"pencil", &salt, 4096)
    }

    #[test]
    fn client_side_matches_rfc7677() {
        let (mut c, first) = ClientExchange::new("user", b"pencil", "rOprNGfwEbeRWgbNEkqO");
        assert_eq!(first, CLIENT_FIRST.as_bytes());
        let fin = c.final_message(SERVER_FIRST.as_bytes()).unwrap();
        assert_eq!(String::from_utf8(fin).unwrap(), CLIENT_FINAL);
        c.verify_server(SERVER_FINAL.as_bytes()).unwrap();
        assert_eq!(
            c.verify_server(b"v=AAAA"),
            Err(ScramError::BadServerSignature)
        );
    }

    #[test]
    fn server_side_matches_rfc7677() {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        assert_eq!(first.user, "user");
        let (ex, server_first) =
            ServerExchange::start(&first, rfc_credential(), "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert_eq!(server_first, SERVER_FIRST.as_bytes());
        let fin = ex.finish(CLIENT_FINAL.as_bytes()).unwrap();
        assert_eq!(fin, SERVER_FINAL.as_bytes());
    }

    #[test]
    fn wrong_password_and_replay_are_refused() {
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        let wrong = Credential::derive(b"pen", &rfc_credential().salt, 4096);
        let (ex, _) = ServerExchange::start(&first, wrong, "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0");
        assert!(ex.finish(CLIENT_FINAL.as_bytes()).is_err());
        // The same client-final against another server nonce: a replay.
        let (ex, _) = ServerExchange::start(&first, rfc_credential(), "another-nonce");
        assert!(ex.finish(CLIENT_FINAL.as_bytes()).is_err());
    }

    #[test]
    fn names_are_escaped_and_bad_input_is_an_error() {
        let (_, first) = ClientExchange::new("a=b,c", b"x", "nonce");
        let parsed = ClientFirst::parse(&first).unwrap();
        assert_eq!(parsed.user, "a=b,c");
        for bad in [
            &b""[..],
            b"n,,",
            b"y,,n=a,r=b",
            b"n,,n=a",
            b"n,,n=a=,r=b",
            b"n,,r=b,n=a",
            b"n,,n=,r=x",
            b"\xff",
        ] {
            assert!(ClientFirst::parse(bad).is_err(), "{bad:?}");
        }
        let first = ClientFirst::parse(CLIENT_FIRST.as_bytes()).unwrap();
        let (ex, _) = ServerExchange::start(&first, rfc_credential(), "x");
        assert!(ex.finish(b"c=biws,r=x").is_err());
        let mut c = ClientExchange::new("user", b"pencil", "abc").0;
        assert_eq!(
            c.final_message(b"r=zzz,s=AAAA,i=4096"),
            Err(ScramError::NonceMismatch)
        );
        assert_eq!(
            c.final_message(b"r=abcd,s=AAAA,i=1"),
            Err(ScramError::Iterations(1))
        );
    }
}
