//! The Rust client of ringmq: what the `ringmq` CLI and the bench use.
//!
//! Everything here runs on a glommio executor (the current thread's, through
//! local tasks), and is therefore `!Send`: create a client per executor.
//!
//! - [`Client`] ([`client`]): the bootstrap list, tried in turn, and a shared
//!   [`Connection`] ([`connection`]) with pipelined requests, the gateway.
//! - `metadata`, `router`: the cluster's map (brokers, partition leaders),
//!   kept fresh, and a connection per broker node, so that Produce, Fetch
//!   and ListOffsets go straight to each partition's leader, through the
//!   gateway when that cannot be done.
//! - [`Admin`] ([`admin`]): create, delete, list topics; metadata; offsets.
//! - [`Producer`] ([`producer`]): per-partition batching, keyed partitioning,
//!   pipelined and bounded sends, retries that keep per-partition order;
//!   idempotent by default, so a retry is never appended twice.
//! - `idempotence`: the producer id, per-partition sequences and epochs an
//!   idempotent producer stamps its batches with (SPEC.md 5.20).
//! - [`Consumer`] ([`consumer`]): a long-polling fetch loop over partitions.
//! - [`GroupConsumer`] ([`group`]): a member of a consumer group: joins,
//!   heartbeats, follows reassignments, commits what was processed.
//! - [`TlsOptions`] ([`tls`]): TLS with a CA file, and a client certificate
//!   for brokers that require one.
//! - [`ClientError`] ([`error`]): every failure, printable as one sentence.
//!
//! The bytes on the wire all come from `ringmq-protocol`; nothing is encoded
//! here.

/// Unwraps the expected response variant; the decoder picked it from the
/// api we sent, so another one is a client bug reported as a protocol error.
macro_rules! expect {
    ($body:expr, $variant:ident) => {
        match $body {
            ringmq_protocol::ResponseBody::$variant(b) => Ok(b),
            other => Err($crate::ClientError::Protocol(
                ringmq_protocol::FrameError::Malformed(
                    format!(
                        "expected a {} response, got {}",
                        stringify!($variant),
                        other.api_key()
                    )
                    .into(),
                ),
            )),
        }
    };
}

pub mod admin;
pub mod client;
pub mod connection;
pub mod consumer;
pub mod error;
mod fetcher;
pub mod group;
mod idempotence;
mod metadata;
pub mod producer;
mod router;
pub mod sasl;
pub mod tls;
mod wait;

pub use admin::Admin;
pub use client::{Client, ClientConfig};
pub use connection::{Connection, ConnectionConfig, PendingResponse};
pub use consumer::{ConsumedRecord, Consumer, ConsumerConfig, StartOffset, MAX_RETRY_BACKOFF};
pub use error::ClientError;
pub use group::{GroupConfig, GroupConsumer, GroupEvent, OffsetReset, TopicPartition};
pub use producer::{Delivery, Producer, ProducerConfig, ProducerStats, RecordMetadata};
pub use ringmq_protocol::{Acks, OffsetSpec};
pub use sasl::{Password, SaslConfig};
pub use tls::{TlsError, TlsOptions};
