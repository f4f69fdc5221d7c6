//! SASL SCRAM-SHA-256 (SPEC.md 5.21, 5.22) on every connection the client
//! opens, right after connecting and before any other request: the
//! gateway, the per-node connections of the router, consumers' own.
//! The arithmetic is the protocol crate's ([`ringmq_protocol::scram`]).

use std::fmt;

use ringmq_protocol::scram::{self, ClientExchange, Credential};
use ringmq_protocol::{
    ErrorCode, Request, ResponseBody, SaslAuthenticateRequest, SaslHandshakeRequest,
};

use crate::connection::Connection;
use crate::error::ClientError;

/// A password: `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    pub fn new(p: impl Into<String>) -> Password {
        Password(p.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Who the client authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslConfig {
    pub username: String,
    pub password: Password,
}

fn failed(message: impl Into<String>) -> ClientError {
    ClientError::Broker {
        code: ErrorCode::AuthFailed,
        message: message.into(),
    }
}

/// Fresh random bytes from the OS, for nonces and salts.
pub fn random(n: usize) -> Result<Vec<u8>, ClientError> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b)
        .map_err(|e| ClientError::InvalidInput(format!("the system random source failed: {e}")))?;
    Ok(b)
}

/// A new SCRAM-SHA-256 credential for `password` (random salt, 4096
/// rounds): what UpsertUser sends, so the password stays here.
pub fn new_credential(password: &str) -> Result<Credential, ClientError> {
    let salt = random(16)?;
    Ok(Credential::derive(
        password.as_bytes(),
        &salt,
        scram::MIN_ITERATIONS,
    ))
}

async fn exchange(conn: &Connection, req: Request) -> Result<ResponseBody, ClientError> {
    conn.request(&req)
        .await?
        .ok_or_else(|| failed("the broker did not answer"))
}

/// Runs the whole exchange on `conn`; the broker closes the connection
/// when it fails.
pub async fn authenticate(conn: &Connection, sasl: &SaslConfig) -> Result<(), ClientError> {
    let handshake = Request::SaslHandshake(SaslHandshakeRequest {
        mechanism: scram::MECHANISM.into(),
    });
    match exchange(conn, handshake).await? {
        ResponseBody::SaslHandshake(_) => {}
        other => return Err(failed(format!("unexpected answer {}", other.api_key()))),
    }
    let nonce = scram::nonce_from_bytes(&random(18)?);
    let (mut client, first) =
        ClientExchange::new(&sasl.username, sasl.password.expose().as_bytes(), &nonce);
    let step = |bytes: Vec<u8>| {
        Request::SaslAuthenticate(SaslAuthenticateRequest {
            auth_bytes: bytes.into(),
        })
    };
    let server_first = match exchange(conn, step(first)).await? {
        ResponseBody::SaslAuthenticate(r) => r.auth_bytes,
        other => return Err(failed(format!("unexpected answer {}", other.api_key()))),
    };
    let fin = client
        .final_message(&server_first)
        .map_err(|e| failed(e.to_string()))?;
    let server_final = match exchange(conn, step(fin)).await? {
        ResponseBody::SaslAuthenticate(r) => r.auth_bytes,
        other => return Err(failed(format!("unexpected answer {}", other.api_key()))),
    };
    client
        .verify_server(&server_final)
        .map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let c = SaslConfig {
            username: "alice".into(),
            password: Password::new("hunter2"),
        };
        let d = format!("{c:?}");
        assert!(d.contains("alice") && !d.contains("hunter2"), "{d}");
    }
}
