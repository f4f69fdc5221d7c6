//! [`Consumer`]: a fetch loop over some or all partitions of one topic.
//!
//! Each partition has one Fetch in flight at a time, long-polling
//! (`max_wait`, `min_bytes`), and advances its position past the last record
//! it yielded, so records come out in per-partition order. A Fetch returns
//! the batch that *contains* the requested offset, so records below the
//! position are skipped. Every fetched batch's CRC is checked.
//!
//! The broker answers the requests of a connection in order, so a Fetch
//! that long-polls an idle partition would hold up the answers for every
//! other partition queued behind it on the same connection. The consumer
//! therefore opens a connection of its own per partition, up to
//! `max_connections`; partitions beyond that share them round-robin (and
//! then an idle partition can delay a busy one by up to `max_wait`).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future;
use glommio::timer::Timer;
use ringmq_protocol::batch::{self, BatchHeader, Header};
use ringmq_protocol::limits::{MAX_FETCH_BYTES, MAX_FETCH_WAIT_MS};
use ringmq_protocol::{FetchRequest, FetchResponse, OffsetSpec, Request, ResponseBody};

use crate::client::Client;
use crate::connection::{Connection, PendingResponse};
use crate::error::ClientError;

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
    /// Connections of the consumer's own (see the module doc).
    pub max_connections: usize,
    /// A Fetch that fails with a retriable error (or a lost connection) is
    /// sent again this many times in a row before [`Consumer::poll`]
    /// reports the error.
    pub retries: u32,
    /// Wait before sending a failed Fetch again.
    pub retry_backoff: Duration,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_bytes: 1 << 20,
            max_connections: 16,
            retries: 10,
            retry_backoff: Duration::from_millis(100),
        }
    }
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
    client: Client,
    topic: String,
    config: ConsumerConfig,
    parts: Vec<PartFetch>,
    /// The consumer's connections, opened on first use and reopened when
    /// lost; partition `i` of `parts` uses `conns[i % conns.len()]`.
    conns: Vec<Option<Rc<Connection>>>,
    /// Records decoded and not yet handed out (by [`next`](Self::next)).
    buffered: VecDeque<ConsumedRecord>,
}

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// One partition's fetch state.
struct PartFetch {
    partition: u32,
    /// Offset of the next record to yield.
    position: u64,
    high_watermark: Option<u64>,
    inflight: Option<PendingResponse>,
    /// Fetches failed in a row.
    failures: u32,
    /// After a failure: no Fetch before this instant.
    not_before: Option<Instant>,
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
        let mut parts = Vec::with_capacity(wanted.len());
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
            parts.push(PartFetch {
                partition: p,
                position,
                high_watermark: None,
                inflight: None,
                failures: 0,
                not_before: None,
            });
        }
        let mut config = config;
        config.max_bytes = config.max_bytes.clamp(1, MAX_FETCH_BYTES);
        let max_wait_ms = u32::try_from(config.max_wait.as_millis()).unwrap_or(u32::MAX);
        config.max_wait = Duration::from_millis(u64::from(max_wait_ms.min(MAX_FETCH_WAIT_MS)));
        let n_conns = parts.len().clamp(1, config.max_connections.max(1));
        Ok(Consumer {
            client: client.clone(),
            topic: topic.to_owned(),
            config,
            parts,
            conns: vec![None; n_conns],
            buffered: VecDeque::new(),
        })
    }

    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The offset of the next record the consumer will yield from
    /// `partition`, if it reads that partition.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.parts
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.position)
    }

    /// The partition's high watermark as of the last Fetch answered.
    pub fn high_watermark(&self, partition: u32) -> Option<u64> {
        self.parts
            .iter()
            .find(|p| p.partition == partition)
            .and_then(|p| p.high_watermark)
    }

    /// The next record, waiting as long as it takes.
    pub async fn next(&mut self) -> Result<ConsumedRecord, ClientError> {
        loop {
            if let Some(r) = self.buffered.pop_front() {
                return Ok(r);
            }
            let batch = self.poll().await?;
            self.buffered.extend(batch);
        }
    }

    /// Waits until at least one Fetch is answered (at most about
    /// `max_wait` when nothing arrives) and returns the records it brought,
    /// in per-partition order; possibly none.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ClientError> {
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        let now = Instant::now();
        let mut backoff_until: Option<Instant> = None;
        for i in 0..self.parts.len() {
            let p = &self.parts[i];
            if p.inflight.is_some() {
                continue;
            }
            if let Some(t) = p.not_before.filter(|t| *t > now) {
                backoff_until = Some(backoff_until.map_or(t, |b| b.min(t)));
                continue;
            }
            self.parts[i].not_before = None;
            if let Err(e) = self.start_fetch(i).await {
                if let Some(e) = self.failed(i, e) {
                    return Err(e);
                }
            }
        }
        // A partition in backoff: come back (with no records) when it ends,
        // so the next poll sends its Fetch.
        let mut timer =
            backoff_until.map(|t| Timer::new(t.saturating_duration_since(Instant::now())));
        let parts = &mut self.parts;
        let answered = future::poll_fn(|cx| {
            let mut done = Vec::new();
            for (i, p) in parts.iter_mut().enumerate() {
                if let Some(f) = p.inflight.as_mut() {
                    if let Poll::Ready(r) = Pin::new(f).poll(cx) {
                        p.inflight = None;
                        done.push((i, r));
                    }
                }
            }
            let backoff_over = timer
                .as_mut()
                .is_some_and(|t| Pin::new(t).poll(cx).is_ready());
            if done.is_empty() && !backoff_over {
                Poll::Pending
            } else {
                Poll::Ready(done)
            }
        })
        .await;

        let mut out = Vec::new();
        let mut first_err = None;
        for (i, result) in answered {
            let r = match result {
                Ok(ResponseBody::Fetch(resp)) => self.take_records(i, resp, &mut out),
                Ok(other) => Err(ClientError::InvalidInput(format!(
                    "a Fetch was answered with a {} response",
                    other.api_key()
                ))),
                Err(e) => Err(e),
            };
            if let Err(e) = r {
                first_err.get_or_insert(self.failed(i, e));
            }
        }
        match first_err {
            Some(Some(e)) => {
                // Keep what the other partitions brought for the next call.
                self.buffered.extend(out);
                Err(e)
            }
            _ => Ok(out),
        }
    }

    /// Sends partition `i`'s next Fetch on its connection.
    async fn start_fetch(&mut self, i: usize) -> Result<(), ClientError> {
        let c = i % self.conns.len();
        let conn = match &self.conns[c] {
            Some(conn) if !conn.is_closed() => conn.clone(),
            _ => {
                let conn = Rc::new(self.client.open_connection().await?);
                self.conns[c] = Some(conn.clone());
                conn
            }
        };
        let p = &mut self.parts[i];
        let req = Request::Fetch(FetchRequest {
            topic: self.topic.clone(),
            partition: p.partition,
            offset: p.position,
            max_bytes: self.config.max_bytes,
            min_bytes: self.config.min_bytes,
            max_wait_ms: u32::try_from(self.config.max_wait.as_millis()).unwrap_or(u32::MAX),
        });
        let timeout = self.client.config().connection.request_timeout + self.config.max_wait;
        p.inflight = conn.send_with_timeout(&req, timeout).await?;
        Ok(())
    }

    /// Decodes a Fetch answer of partition `i` into `out`, skipping records
    /// below the position, and moves the position past the last one.
    fn take_records(
        &mut self,
        i: usize,
        resp: FetchResponse,
        out: &mut Vec<ConsumedRecord>,
    ) -> Result<(), ClientError> {
        let p = &mut self.parts[i];
        p.failures = 0;
        p.high_watermark = Some(resp.high_watermark);
        for b in batch::batches(&resp.records) {
            let b = b?;
            let header = BatchHeader::parse(&b)?;
            if header.next_offset() <= p.position {
                continue;
            }
            for r in batch::decode_records(&b)? {
                if r.offset < p.position {
                    continue;
                }
                p.position = r.offset + 1;
                out.push(ConsumedRecord {
                    partition: p.partition,
                    offset: r.offset,
                    timestamp: r.timestamp,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
            }
            p.position = p.position.max(header.next_offset());
        }
        Ok(())
    }

    /// Counts a failed Fetch of partition `i`: `None` if it will simply be
    /// sent again by the next [`poll`](Self::poll) (after a backoff), else
    /// the error to report.
    fn failed(&mut self, i: usize, e: ClientError) -> Option<ClientError> {
        let p = &mut self.parts[i];
        p.failures += 1;
        let retriable = e.is_retriable() || matches!(e, ClientError::Connect { .. });
        if !retriable || p.failures > self.config.retries {
            return Some(e);
        }
        tracing::debug!(topic = %self.topic, partition = p.partition, error = %e, "fetch failed, will retry");
        p.not_before = Some(Instant::now() + self.config.retry_backoff);
        None
    }
}
