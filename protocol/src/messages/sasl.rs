//! SaslHandshake (key 18) and SaslAuthenticate (key 19): a client proves
//! who it is before anything else when the broker requires it (SPEC.md
//! 5.21, 5.22). The SCRAM messages they carry are in [`crate::scram`].

use std::fmt;

use bytes::{Bytes, BytesMut};

use crate::codec::{put_bytes, put_str, put_vec, Reader, Wire};
use crate::frame::FrameError;

/// "I want to authenticate with `mechanism`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslHandshakeRequest {
    pub mechanism: String,
}

/// The mechanisms the broker enables; the handshake succeeded when the
/// requested one is among them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaslHandshakeResponse {
    pub mechanisms: Vec<String>,
}

/// One message of the mechanism's exchange, client to broker.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslAuthenticateRequest {
    pub auth_bytes: Bytes,
}

/// The broker's message of the exchange.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SaslAuthenticateResponse {
    pub auth_bytes: Bytes,
}

// The exchange carries proofs: never printed.
impl fmt::Debug for SaslAuthenticateRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SaslAuthenticateRequest({} bytes)",
            self.auth_bytes.len()
        )
    }
}

impl fmt::Debug for SaslAuthenticateResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SaslAuthenticateResponse({} bytes)",
            self.auth_bytes.len()
        )
    }
}

impl Wire for SaslHandshakeRequest {
    const MIN_LEN: usize = 2;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.mechanism);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(SaslHandshakeRequest {
            mechanism: r.string()?,
        })
    }
}

impl Wire for SaslHandshakeResponse {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, &self.mechanisms);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(SaslHandshakeResponse {
            mechanisms: r.vec()?,
        })
    }
}

impl Wire for SaslAuthenticateRequest {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_bytes(buf, &self.auth_bytes);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(SaslAuthenticateRequest {
            auth_bytes: r.bytes()?,
        })
    }
}

impl Wire for SaslAuthenticateResponse {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_bytes(buf, &self.auth_bytes);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(SaslAuthenticateResponse {
            auth_bytes: r.bytes()?,
        })
    }
}
