//! [`Consumer`]: reads some or all partitions of one topic from positions
//! the caller chooses, with no group. The fetch loop itself (long polls, a
//! connection per partition, CRC checks, retries) is the
//! [`Fetcher`](crate::fetcher) it shares with the group consumer.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use ringmq_protocol::batch::Header;
use ringmq_protocol::OffsetSpec;

use crate::client::Client;
use crate::error::ClientError;
use crate::fetcher::Fetcher;

/// How a [`Consumer`] fetches.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// Longest a Fetch waits on the broker for new records. Also the
    /// longest [`Consumer::poll`] takes when nothing arrives.
    pub max_wait: Duration,
    /// The broker answers a Fetch as soon as this many record bytes are
    /// there.
    pub min_bytes: u32,
    /// Soft cap on record bytes per Fetch (per partition).
    pub max_bytes: u32,
    /// Connections of the consumer's own per broker (see the fetcher's
    /// module doc).
    pub max_connections: usize,
    /// A partition whose Fetches keep failing with a retriable error (or a
    /// lost connection, a broker that refuses connections) is retried for
    /// this long before [`Consumer::poll`] reports the error: time, not a
    /// count, so that a broker restart of a few seconds goes unnoticed.
    /// `BUSY` and `THROTTLED` answers are a healthy broker asking to slow
    /// down and never use it up.
    pub retry_timeout: Duration,
    /// Wait before sending a failed Fetch again; doubled on each failure in
    /// a row, up to [`MAX_RETRY_BACKOFF`].
    pub retry_backoff: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 1 << 20,
            max_connections: 16,
            retry_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
        }
    }
}

/// The longest wait between two retries of a failed request: long enough
/// not to hammer a broker that is restarting, short enough to notice soon
/// that it is back.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

/// The wait before the `failures`-th retry in a row (1 for the first):
/// `base` doubled each time, capped at [`MAX_RETRY_BACKOFF`].
pub(crate) fn backoff(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << doublings)
        .min(MAX_RETRY_BACKOFF.max(base))
}

/// Where a consumer starts in each partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The first record still in the partition.
    Earliest,
    /// The next record to arrive (the high watermark when the consumer
    /// starts).
    Latest,
    /// This offset; it must lie within the partition's range.
    At(u64),
}

/// A record, as the consumer yields it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumedRecord {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    /// Ms since the Unix epoch, as the producer stamped it.
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

/// Reads records of one topic from given positions.
pub struct Consumer {
    topic: String,
    fetcher: Fetcher,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// A consumer of `partitions` (all of the topic's when `None`) of
    /// `topic`, starting at `start` in each. Looks the topic and the start
    /// offsets up now, so an unknown topic or partition fails here.
    pub async fn new(
        client: &Client,
        topic: &str,
        partitions: Option<&[u32]>,
        start: StartOffset,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let admin = client.admin();
        let count = admin.partition_count(topic).await?;
        let wanted: Vec<u32> = match partitions {
            Some(p) => p.to_vec(),
            None => (0..count).collect(),
        };
        let mut fetcher = Fetcher::new(client, config);
        for p in wanted {
            if p >= count {
                return Err(ClientError::InvalidInput(format!(
                    "topic {topic} has no partition {p} (it has {count})"
                )));
            }
            let position = match start {
                StartOffset::Earliest => admin.list_offsets(topic, p, OffsetSpec::Earliest).await?,
                StartOffset::Latest => admin.list_offsets(topic, p, OffsetSpec::Latest).await?,
                StartOffset::At(o) => o,
            };
            fetcher.add(topic, p, position);
        }
        Ok(Consumer {
            topic: topic.to_owned(),
            fetcher,
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The offset of the next record the consumer will yield from
    /// `partition`, if it reads that partition.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.fetcher.position(&self.topic, partition)
    }

    /// The partition's high watermark as of the last Fetch answered.
    pub fn high_watermark(&self, partition: u32) -> Option<u64> {
        self.fetcher.high_watermark(&self.topic, partition)
    }

    /// The next record, waiting as long as it takes.
    pub async fn next(&mut self) -> Result<ConsumedRecord, ClientError> {
        self.fetcher.next().await
    }

    /// Waits until at least one Fetch is answered (at most about
    /// `max_wait` when nothing arrives) and returns the records it brought,
    /// in per-partition order; possibly none.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ClientError> {
        self.fetcher.poll().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_to_a_cap() {
        let b = Duration::from_millis(100);
        let waits: Vec<u64> = (1..=6).map(|n| backoff(b, n).as_millis() as u64).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(backoff(b, u32::MAX), MAX_RETRY_BACKOFF);
        // A base above the cap is kept: the caller asked for it.
        assert_eq!(backoff(Duration::from_secs(2), 3), Duration::from_secs(2));
    }
}
