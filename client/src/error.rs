//! The one error type of the client. Every variant prints as one sentence a
//! command-line tool can show as is.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringmq_protocol::batch::BatchError;
use ringmq_protocol::{ErrorCode, FrameError};

/// Why a client call failed.
///
/// `Clone` so that one failure (a batch the broker refused, a connection that
/// closed) can be handed to every caller waiting on it; the I/O error is kept
/// behind an `Arc` for that reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    /// No address of the bootstrap list accepted a connection.
    #[error(
        "could not connect to any broker: {}",
        describe_attempts(addrs, errors)
    )]
    Connect {
        /// The addresses tried, in order, as the user gave them.
        addrs: Vec<String>,
        /// Why each one failed, index for index with `addrs`.
        errors: Vec<String>,
    },
    /// The broker answered with an error code.
    #[error("the broker answered {code}: {message}")]
    Broker { code: ErrorCode, message: String },
    /// No answer came within the request timeout.
    #[error("{what} got no answer from {addr} within {after:?}")]
    Timeout {
        what: &'static str,
        addr: SocketAddr,
        after: Duration,
    },
    /// The connection is gone: the broker closed it, or an earlier failure on
    /// it (a timeout, a write error) made the client close it.
    #[error("the connection to {addr} closed: {reason}")]
    Closed { addr: SocketAddr, reason: String },
    /// The broker sent bytes that are not a valid response.
    #[error("the broker sent a malformed response: {0}")]
    Protocol(#[from] FrameError),
    /// A fetched record batch failed its checks (length, format or CRC).
    #[error("the broker sent a corrupt record batch: {0}")]
    CorruptBatch(#[from] BatchError),
    /// The caller asked for something that cannot be sent (a record larger
    /// than a batch may be, a partition the topic does not have, ...).
    #[error("{0}")]
    InvalidInput(String),
    #[error("i/o error: {0}")]
    Io(Arc<io::Error>),
    /// The TLS handshake failed (the broker's certificate is not trusted,
    /// expired or for another name; the broker refused ours; or the broker
    /// does not speak TLS), or a TLS file cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}

impl ClientError {
    /// The broker's error code, if the broker answered with one.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Broker { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether sending the same request again later may succeed: a retriable
    /// broker code (see [`ErrorCode::is_retriable`]), or a connection that
    /// failed or timed out (the request may then have been applied: a retry
    /// gives at-least-once delivery).
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Broker { code, .. } => code.is_retriable(),
            ClientError::Timeout { .. } | ClientError::Closed { .. } | ClientError::Io(_) => true,
            ClientError::Connect { .. }
            | ClientError::Protocol(_)
            | ClientError::CorruptBatch(_)
            | ClientError::InvalidInput(_)
            | ClientError::Tls(_) => false,
        }
    }
}

impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        ClientError::Io(Arc::new(e))
    }
}

impl From<crate::tls::TlsError> for ClientError {
    fn from(e: crate::tls::TlsError) -> Self {
        ClientError::Tls(e.to_string())
    }
}

fn describe_attempts(addrs: &[String], errors: &[String]) -> String {
    if addrs.is_empty() {
        return "the bootstrap list is empty".to_owned();
    }
    addrs
        .iter()
        .zip(
            errors
                .iter()
                .map(String::as_str)
                .chain(std::iter::repeat("not tried")),
        )
        .map(|(a, e)| format!("{a} ({e})"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_error_names_every_address() {
        let e = ClientError::Connect {
            addrs: vec!["10.0.0.1:9292".into(), "10.0.0.2:9292".into()],
            errors: vec!["connection refused".into(), "timed out after 5s".into()],
        };
        assert_eq!(
            e.to_string(),
            "could not connect to any broker: 10.0.0.1:9292 (connection refused), \
             10.0.0.2:9292 (timed out after 5s)"
        );
        assert!(!e.is_retriable());
    }

    #[test]
    fn broker_error_is_one_sentence() {
        let e = ClientError::Broker {
            code: ErrorCode::UnknownTopic,
            message: "no topic orders".into(),
        };
        assert_eq!(
            e.to_string(),
            "the broker answered UNKNOWN_TOPIC: no topic orders"
        );
        assert!(!e.is_retriable());
        assert!(ClientError::Broker {
            code: ErrorCode::NotLeader,
            message: String::new()
        }
        .is_retriable());
    }
}
