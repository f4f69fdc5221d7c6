//! [`Fetcher`]: the fetch loop shared by [`crate::Consumer`] (a fixed set of
//! partitions of one topic) and [`crate::GroupConsumer`] (partitions of
//! several topics that come and go as the group's assignment changes).
//!
//! Each partition has one Fetch in flight at a time, long-polling
//! (`max_wait`, `min_bytes`), and advances its position past the last record
//! it yielded, so records come out in per-partition order. A Fetch returns
//! the batch that *contains* the requested offset, so records below the
//! position are skipped. Every fetched batch's CRC is checked.
//!
//! The broker answers the requests of a connection in order, so a Fetch
//! that long-polls an idle partition would hold up the answers for every
//! other partition queued behind it on the same connection. The fetcher
//! therefore gives each partition a connection of its own, up to
//! `max_connections` per broker; partitions beyond that share the least
//! used ones of their broker (and then an idle partition can delay a busy
//! one by up to `max_wait`). These connections are the fetcher's own, never
//! the client's shared ones.
//!
//! Routing: each Fetch goes to the partition's leader, as the client's map
//! of the cluster says when the Fetch is sent (see [`crate::router`]), or
//! to a bootstrap broker (the gateway, which forwards it) when the leader
//! is unknown or cannot be reached. A partition whose route changed moves
//! to a connection to its new broker before its next Fetch. `NOT_LEADER`,
//! a lost connection to a leader or a leader refusing connections has the
//! map refreshed, and the retry follows it.
//!
//! `OFFSET_OUT_OF_RANGE` is reported like any other error, unless the
//! fetcher [parks](Fetcher::park_out_of_range) such partitions instead: a
//! parked partition is not fetched until its owner (a group member, which
//! resets it by its policy) seeks it elsewhere.
//!
//! Removing a partition drops its Fetch in flight and its buffered records,
//! so nothing of it is yielded afterwards: what a group member needs to hand
//! a partition over without two members consuming it at once.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::timer::Timer;
use ringmq_protocol::batch::{self, BatchHeader};
use ringmq_protocol::limits::{MAX_FETCH_BYTES, MAX_FETCH_WAIT_MS};
use ringmq_protocol::{ErrorCode, FetchRequest, FetchResponse, Request, ResponseBody};

use crate::client::Client;
use crate::connection::{Connection, PendingResponse};
use crate::consumer::{backoff, ConsumedRecord, ConsumerConfig};
use crate::error::ClientError;
use crate::router::Target;

pub(crate) struct Fetcher {
    client: Client,
    config: ConsumerConfig,
    parts: Vec<PartFetch>,
    /// The fetcher's connections, opened on first use and reopened when
    /// lost; at most `max_connections` per target.
    conns: Vec<ConnSlot>,
    /// Records decoded and not yet handed out (by [`next`](Self::next), or
    /// after a failed poll). Every record here belongs to a partition in
    /// `parts`.
    buffered: VecDeque<ConsumedRecord>,
    /// Park partitions answered `OFFSET_OUT_OF_RANGE` rather than report it.
    park_out_of_range: bool,
}

struct ConnSlot {
    /// Where the connection goes.
    target: Target,
    conn: Option<Rc<Connection>>,
    /// Partitions fetching on it.
    users: usize,
}

/// One partition's fetch state.
struct PartFetch {
    topic: Arc<str>,
    partition: u32,
    /// Index into `conns`; `None` until the first Fetch.
    conn: Option<usize>,
    /// Where the Fetch in flight (or the last one) went, and the version
    /// of the client's map that said so.
    via: Target,
    map_version: u64,
    /// Offset of the next record to yield.
    position: u64,
    high_watermark: Option<u64>,
    inflight: Option<PendingResponse>,
    /// Fetches failed in a row (`BUSY`/`THROTTLED` not counted): how long
    /// the next backoff is.
    failures: u32,
    /// When the first of those failures happened: past
    /// `retry_timeout` from it the error is reported.
    failing_since: Option<Instant>,
    /// After a failure: no Fetch before this instant.
    not_before: Option<Instant>,
    /// Answered `OFFSET_OUT_OF_RANGE` (when parking): no Fetch until a
    /// seek.
    out_of_range: bool,
}

impl Fetcher {
    /// A fetcher with no partitions; `config`'s sizes are clamped to the
    /// SPEC's limits.
    pub(crate) fn new(client: &Client, mut config: ConsumerConfig) -> Fetcher {
        config.max_bytes = config.max_bytes.clamp(1, MAX_FETCH_BYTES);
        let max_wait_ms = u32::try_from(config.max_wait.as_millis()).unwrap_or(u32::MAX);
        config.max_wait = Duration::from_millis(u64::from(max_wait_ms.min(MAX_FETCH_WAIT_MS)));
        config.max_connections = config.max_connections.max(1);
        Fetcher {
            client: client.clone(),
            config,
            parts: Vec::new(),
            conns: Vec::new(),
            buffered: VecDeque::new(),
            park_out_of_range: false,
        }
    }

    /// From now on a partition answered `OFFSET_OUT_OF_RANGE` waits, not
    /// fetched, until [`add`](Self::add) moves it, instead of failing the
    /// poll; [`out_of_range`](Self::out_of_range) lists it.
    pub(crate) fn park_out_of_range(&mut self) {
        self.park_out_of_range = true;
    }

    /// A parked partition (see [`park_out_of_range`](Self::park_out_of_range))
    /// and the offset it was refused at.
    pub(crate) fn out_of_range(&self) -> Option<(Arc<str>, u32, u64)> {
        self.parts
            .iter()
            .find(|p| p.out_of_range)
            .map(|p| (p.topic.clone(), p.partition, p.position))
    }

    fn find(&self, topic: &str, partition: u32) -> Option<usize> {
        self.parts
            .iter()
            .position(|p| p.partition == partition && &*p.topic == topic)
    }

    /// Starts fetching `topic`/`partition` at `position`; a partition
    /// already fetched only moves to `position`.
    pub(crate) fn add(&mut self, topic: &str, partition: u32, position: u64) {
        if let Some(i) = self.find(topic, partition) {
            self.seek(i, position);
            return;
        }
        self.parts.push(PartFetch {
            topic: Arc::from(topic),
            partition,
            conn: None,
            via: Target::Gateway,
            map_version: 0,
            position,
            high_watermark: None,
            inflight: None,
            failures: 0,
            failing_since: None,
            not_before: None,
            out_of_range: false,
        });
    }

    /// Stops fetching a partition: its Fetch in flight is abandoned and its
    /// buffered records dropped. Returns the position it had reached.
    pub(crate) fn remove(&mut self, topic: &str, partition: u32) -> Option<u64> {
        let i = self.find(topic, partition)?;
        let p = self.parts.swap_remove(i);
        self.buffered
            .retain(|r| !(r.partition == partition && &*r.topic == topic));
        if let Some(c) = p.conn {
            self.leave_slot(c);
        }
        Some(p.position)
    }

    fn leave_slot(&mut self, c: usize) {
        let slot = &mut self.conns[c];
        slot.users -= 1;
        if slot.users == 0 {
            // Closes the connection, so an abandoned long poll does not
            // hold up the next partition given this slot.
            slot.conn = None;
        }
    }

    /// A slot for a partition fetching from `target`: an unused one, a new
    /// one while `target` has fewer than `max_connections`, else the least
    /// used one of `target`.
    fn take_slot(&mut self, target: Target) -> usize {
        let unused = self
            .conns
            .iter()
            .position(|c| c.users == 0 && c.target == target)
            .or_else(|| self.conns.iter().position(|c| c.users == 0));
        let of_target = || (0..self.conns.len()).filter(|c| self.conns[*c].target == target);
        let c = match unused {
            Some(c) => c,
            None if of_target().count() < self.config.max_connections => {
                self.conns.push(ConnSlot {
                    target,
                    conn: None,
                    users: 0,
                });
                self.conns.len() - 1
            }
            None => of_target()
                .min_by_key(|c| self.conns[*c].users)
                .unwrap_or(0),
        };
        let slot = &mut self.conns[c];
        if slot.target != target {
            slot.target = target;
            slot.conn = None;
        }
        slot.users += 1;
        c
    }

    /// Moves partition `i` to `position`, abandoning what was fetched from
    /// elsewhere.
    fn seek(&mut self, i: usize, position: u64) {
        let p = &mut self.parts[i];
        p.out_of_range = false;
        if p.position == position {
            return;
        }
        p.position = position;
        p.inflight = None;
        let (topic, partition) = (p.topic.clone(), p.partition);
        self.buffered
            .retain(|r| !(r.partition == partition && r.topic == topic));
    }

    /// The partitions fetched, in no particular order.
    pub(crate) fn partitions(&self) -> impl Iterator<Item = (&str, u32)> {
        self.parts.iter().map(|p| (&*p.topic, p.partition))
    }

    /// The offset of the next record to yield from a partition fetched.
    pub(crate) fn position(&self, topic: &str, partition: u32) -> Option<u64> {
        self.find(topic, partition).map(|i| self.parts[i].position)
    }

    /// A partition's high watermark as of its last Fetch answered.
    pub(crate) fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        self.find(topic, partition)
            .and_then(|i| self.parts[i].high_watermark)
    }

    /// The next record, waiting as long as it takes.
    pub(crate) async fn next(&mut self) -> Result<ConsumedRecord, ClientError> {
        loop {
            if let Some(r) = self.buffered.pop_front() {
                return Ok(r);
            }
            let batch = self.poll().await?;
            self.buffered.extend(batch);
        }
    }

    /// Waits until at least one Fetch is answered (at most about `max_wait`
    /// when nothing arrives, or when no partition is fetched) and returns
    /// the records it brought, in per-partition order; possibly none.
    ///
    /// Cancel-safe: dropped while waiting, it loses no records (answers not
    /// taken yet stay in flight for the next call).
    pub(crate) async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ClientError> {
        if !self.buffered.is_empty() {
            return Ok(self.buffered.drain(..).collect());
        }
        if self.parts.is_empty() {
            Timer::new(self.config.max_wait).await;
            return Ok(Vec::new());
        }
        let now = Instant::now();
        let mut backoff_until: Option<Instant> = None;
        for i in 0..self.parts.len() {
            let p = &self.parts[i];
            if p.inflight.is_some() || p.out_of_range {
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
                if let Some(t) = self.parts[i].not_before {
                    backoff_until = Some(backoff_until.map_or(t, |b| b.min(t)));
                }
            }
        }
        // The owner moves a parked partition before anything else.
        if self.parts.iter().any(|p| p.out_of_range) {
            return Ok(Vec::new());
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
                // Only an error to report counts: one partition backing
                // off must not hide another's real failure.
                if let Some(e) = self.failed(i, e) {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => {
                // Keep what the other partitions brought for the next call.
                self.buffered.extend(out);
                Err(e)
            }
            None => Ok(out),
        }
    }

    /// Sends partition `i`'s next Fetch on a connection to where it is
    /// routed now.
    async fn start_fetch(&mut self, i: usize) -> Result<(), ClientError> {
        let (target, map_version) = {
            let p = &self.parts[i];
            self.client.target(&p.topic, p.partition)
        };
        self.parts[i].via = target;
        self.parts[i].map_version = map_version;
        let c = match self.parts[i].conn {
            Some(c) if self.conns[c].target == target => c,
            old => {
                if let Some(c) = old {
                    self.leave_slot(c);
                }
                let c = self.take_slot(target);
                self.parts[i].conn = Some(c);
                c
            }
        };
        let conn = match &self.conns[c].conn {
            Some(conn) if !conn.is_closed() => conn.clone(),
            _ => {
                let conn = Rc::new(self.client.open_connection_to(target).await?);
                self.conns[c].conn = Some(conn.clone());
                conn
            }
        };
        let p = &mut self.parts[i];
        let req = Request::Fetch(FetchRequest {
            topic: p.topic.to_string(),
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
        p.failing_since = None;
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
                    topic: p.topic.clone(),
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
    /// sent again by the next [`poll`](Self::poll) (after a backoff) or was
    /// parked, else the error to report: one that cannot succeed if sent
    /// again, or a retriable one that has lasted `retry_timeout`.
    fn failed(&mut self, i: usize, e: ClientError) -> Option<ClientError> {
        let p = &mut self.parts[i];
        self.client.report_failure(p.via, p.map_version, &e);
        if self.park_out_of_range && e.code() == Some(ErrorCode::OffsetOutOfRange) {
            tracing::debug!(topic = %p.topic, partition = p.partition, position = p.position, "fetch out of range, parked");
            p.out_of_range = true;
            return None;
        }
        let now = Instant::now();
        // A broker that is busy or throttling is healthy and asks to slow
        // down: back off as long as it says so, without giving up.
        let pushback = matches!(e.code(), Some(ErrorCode::Busy | ErrorCode::Throttled));
        let wait = if pushback {
            self.config.retry_backoff
        } else {
            let retriable = e.is_retriable() || matches!(e, ClientError::Connect { .. });
            let since = *p.failing_since.get_or_insert(now);
            if !retriable || now.duration_since(since) >= self.config.retry_timeout {
                return Some(e);
            }
            p.failures = p.failures.saturating_add(1);
            backoff(self.config.retry_backoff, p.failures)
        };
        tracing::debug!(topic = %p.topic, partition = p.partition, error = %e, ?wait, "fetch failed, will retry");
        p.not_before = Some(now + wait);
        None
    }
}
