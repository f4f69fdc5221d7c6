//! Error codes carried in every response header. `0` means success; any other
//! code replaces the response body with a human-readable message.

use std::fmt;

use crate::batch::BatchError;

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $name:ident = $val:literal, $s:literal, $retry:literal; )*) => {
        /// What went wrong with a request, as the client sees it.
        /// Values are stable: they are part of the wire format.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u16)]
        pub enum ErrorCode {
            $( $(#[$doc])* $name = $val, )*
        }

        impl ErrorCode {
            /// Every code, in numeric order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$name,)*];

            /// The code for a wire value; a value this build does not know
            /// reads as [`ErrorCode::UnknownServerError`].
            pub fn from_u16(v: u16) -> ErrorCode {
                match v {
                    $( $val => ErrorCode::$name, )*
                    _ => ErrorCode::UnknownServerError,
                }
            }

            /// The name used in SPEC.md, logs and CLI output, e.g. `CORRUPT_BATCH`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( ErrorCode::$name => $s, )*
                }
            }

            /// Whether the same request may succeed if sent again later
            /// (after a backoff, or after refreshing metadata).
            pub fn is_retriable(self) -> bool {
                match self {
                    $( ErrorCode::$name => $retry, )*
                }
            }
        }
    };
}

error_codes! {
    /// Success.
    None = 0, "NONE", false;
    /// An unexpected failure on the broker, or a code this client does not know.
    UnknownServerError = 1, "UNKNOWN_SERVER_ERROR", false;
    /// A produced batch failed its length, format or CRC check; nothing was written.
    CorruptBatch = 2, "CORRUPT_BATCH", false;
    /// The topic does not exist.
    UnknownTopic = 3, "UNKNOWN_TOPIC", false;
    /// The topic exists but has no such partition.
    UnknownPartition = 4, "UNKNOWN_PARTITION", false;
    /// CreateTopic for a name that is taken.
    TopicAlreadyExists = 5, "TOPIC_ALREADY_EXISTS", false;
    /// The request body could not be decoded, or a field is out of range.
    InvalidRequest = 6, "INVALID_REQUEST", false;
    /// The api is known but not at this version (see ApiVersions).
    UnsupportedVersion = 7, "UNSUPPORTED_VERSION", false;
    /// The api key is not known to this broker.
    UnknownApi = 8, "UNKNOWN_API", false;
    /// A frame or a batch exceeds its size limit.
    MessageTooLarge = 9, "MESSAGE_TOO_LARGE", false;
    /// A Fetch offset outside [log start offset, log end].
    OffsetOutOfRange = 10, "OFFSET_OUT_OF_RANGE", false;
    /// This broker does not lead the partition; refresh metadata and retry.
    NotLeader = 11, "NOT_LEADER", true;
    /// The broker's disk is full; produce fails, reads go on.
    StorageFull = 12, "STORAGE_FULL", false;
    /// The client exceeds a quota; back off and retry.
    Throttled = 13, "THROTTLED", true;
    /// The topic name breaks the naming rules.
    InvalidTopicName = 14, "INVALID_TOPIC_NAME", false;
    /// The partition count is 0 or above the limit.
    InvalidPartitions = 15, "INVALID_PARTITIONS", false;
    /// Fewer in-sync replicas than acks=all requires.
    NotEnoughReplicas = 16, "NOT_ENOUGH_REPLICAS", true;
    /// The request's timeout passed before it completed; it may still have been applied.
    RequestTimedOut = 17, "REQUEST_TIMED_OUT", true;
    /// A group request from an older generation (a fenced member).
    StaleGeneration = 18, "STALE_GENERATION", false;
    /// This broker does not coordinate the group; refresh and retry.
    NotCoordinator = 19, "NOT_COORDINATOR", true;
    /// The group has no such member.
    UnknownMember = 20, "UNKNOWN_MEMBER", false;
    /// The group is rebalancing; rejoin.
    RebalanceInProgress = 21, "REBALANCE_IN_PROGRESS", true;
    /// The session timeout is outside the broker's bounds.
    InvalidSessionTimeout = 22, "INVALID_SESSION_TIMEOUT", false;
    /// The group id breaks the naming rules.
    InvalidGroupId = 23, "INVALID_GROUP_ID", false;
    /// The client may not perform this operation.
    NotAuthorized = 24, "NOT_AUTHORIZED", false;
    /// Authentication failed.
    AuthFailed = 25, "AUTH_FAILED", false;
    /// The broker is shutting down; try another one or retry later.
    ShuttingDown = 26, "SHUTTING_DOWN", true;
    /// An idempotent producer's sequence skipped ahead.
    OutOfOrderSequence = 27, "OUT_OF_ORDER_SEQUENCE", false;
    /// The replication factor is 0 or above the number of nodes.
    InvalidReplicationFactor = 28, "INVALID_REPLICATION_FACTOR", false;
    /// The broker is over its memory budget; back off and retry.
    Busy = 29, "BUSY", true;
    /// A group member committed for a partition it does not hold.
    PartitionNotAssigned = 30, "PARTITION_NOT_ASSIGNED", false;
    /// Another member joined with this member's instance id and took its
    /// place; this one must stop, not rejoin.
    FencedInstanceId = 31, "FENCED_INSTANCE_ID", false;
    /// The group already has `MAX_GROUP_MEMBERS` members.
    GroupFull = 32, "GROUP_FULL", false;
    /// A follower asked at a leader epoch older than the leader's: it
    /// refreshes its view of the cluster and asks again.
    StaleLeaderEpoch = 33, "STALE_LEADER_EPOCH", true;
    /// An idempotent producer's epoch is older than one already seen for
    /// its id: a newer instance took over; this one must stop.
    ProducerFenced = 34, "PRODUCER_FENCED", false;
}

impl ErrorCode {
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&BatchError> for ErrorCode {
    /// A batch over the size limit is `MESSAGE_TOO_LARGE`; any other defect
    /// is `CORRUPT_BATCH`.
    fn from(e: &BatchError) -> ErrorCode {
        match e {
            BatchError::BadLength(len) if *len as usize + 12 > crate::batch::MAX_BATCH_BYTES => {
                ErrorCode::MessageTooLarge
            }
            _ => ErrorCode::CorruptBatch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_dense() {
        for (i, c) in ErrorCode::ALL.iter().enumerate() {
            assert_eq!(c.as_u16() as usize, i);
            assert_eq!(ErrorCode::from_u16(c.as_u16()), *c);
        }
        assert_eq!(ErrorCode::from_u16(35), ErrorCode::UnknownServerError);
        assert_eq!(ErrorCode::from_u16(u16::MAX), ErrorCode::UnknownServerError);
        assert_eq!(ErrorCode::CorruptBatch.to_string(), "CORRUPT_BATCH");
    }

    #[test]
    fn retriable_set() {
        let retriable: Vec<u16> = ErrorCode::ALL
            .iter()
            .filter(|c| c.is_retriable())
            .map(|c| c.as_u16())
            .collect();
        assert_eq!(retriable, [11, 13, 16, 17, 19, 21, 26, 29, 33]);
    }

    #[test]
    fn batch_errors() {
        assert_eq!(
            ErrorCode::from(&BatchError::BadLength(u32::MAX)),
            ErrorCode::MessageTooLarge
        );
        assert_eq!(
            ErrorCode::from(&BatchError::BadLength(3)),
            ErrorCode::CorruptBatch
        );
        assert_eq!(
            ErrorCode::from(&BatchError::CrcMismatch {
                stored: 1,
                computed: 2
            }),
            ErrorCode::CorruptBatch
        );
    }
}
