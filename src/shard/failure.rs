//! Why a request failed, in the terms a client sees: a protocol error code
//! and a sentence for a human.

use ringmq_protocol::ErrorCode;

use crate::log::LogError;

/// A failed request: the code goes on the wire, the message explains it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Failure {
    pub code: ErrorCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    pub fn unknown_topic(topic: &str) -> Self {
        Failure::new(
            ErrorCode::UnknownTopic,
            format!("topic {topic:?} does not exist"),
        )
    }

    pub fn unknown_partition(topic: &str, partition: u32, partitions: u32) -> Self {
        Failure::new(
            ErrorCode::UnknownPartition,
            format!("topic {topic:?} has partitions 0..{partitions}, not {partition}"),
        )
    }

    pub fn internal(what: impl std::fmt::Display) -> Self {
        Failure::new(ErrorCode::UnknownServerError, what.to_string())
    }
}

impl From<LogError> for Failure {
    fn from(e: LogError) -> Self {
        let code = match &e {
            LogError::CorruptBatch { .. } | LogError::InvalidBatch(_) => ErrorCode::CorruptBatch,
            LogError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            LogError::StorageFull => ErrorCode::StorageFull,
            LogError::ReadBudget { .. } => ErrorCode::Busy,
            LogError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
            LogError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            LogError::InvalidProducerFields { .. } => ErrorCode::CorruptBatch,
            _ => ErrorCode::UnknownServerError,
        };
        Failure::new(code, e.to_string())
    }
}
