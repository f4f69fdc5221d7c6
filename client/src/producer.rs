//! [`Producer`]: records in, record batches out, one topic.
//!
//! **Batching.** Each partition has at most one open batch. A record goes
//! into its partition's open batch; the batch is sealed when the next record
//! would take it past `batch_bytes`, when it is `linger` old, or on
//! [`Producer::flush`]. Partition of a record: `xxh3_64(key) % partitions`
//! with a key, round-robin over the partitions without one (SPEC.md 8).
//!
//! **Sending.** A background task (the *driver*) sends sealed batches,
//! pipelined: up to `max_in_flight` batches awaiting an answer in all,
//! `max_in_flight_per_partition` per partition. A local task per batch
//! waits for its answer. [`Producer::send`] waits while
//! `max_buffered_bytes` of batches are not yet acknowledged, so memory
//! stays bounded.
//!
//! **Routing.** Each partition's batches go to its leader's connection, as
//! the client's map of the cluster says (see the `router` module), or to the
//! client's gateway connection, which forwards them, when the leader is
//! unknown or cannot be reached. The driver never waits for a connection
//! to a node to open: that partition waits while the others go on. A
//! `NOT_LEADER` answer or a lost connection to a leader has the map
//! refreshed, and the retry (below) follows the new map. A partition's
//! batches in flight all travel on one connection: when its route
//! changes, its next batch waits until those are answered, so a route
//! change alone never reorders a partition.
//!
//! **Retries and order.** A batch that fails with a retriable error (a
//! retriable broker code, or a lost connection, which is reopened) is sent
//! again after an exponential backoff, up to `retries` times; then, or on
//! any other error, its records fail with that error. While a partition has
//! a batch to retry, it has at most one batch in flight, and its batches go
//! out again in their original order. So per-partition order is kept
//! exactly when `max_in_flight_per_partition` is 1. With more (allowed only
//! without idempotence), one case can reorder: a batch fails retriably
//! while a later batch of the same partition, already sent, succeeds; the
//! later one then lies before the retried one in the log. The producer logs
//! a warning when that happens. Failures that hit a partition or a broker
//! as a whole (a lost connection, `NOT_LEADER`, `SHUTTING_DOWN`) fail every
//! later in-flight batch too, and those are retried in order.
//!
//! **Idempotence** (`idempotent`, on by default, with `acks` 1 or all;
//! SPEC.md 5.20, the `idempotence` module). [`Producer::new`] asks the
//! gateway for a producer id; each batch is stamped, when first sent, with
//! it, an epoch and its partition's next sequence, and a retry resends the
//! same bytes. A leader that already has the batch (its answer was lost, a
//! connection broke, a failover came between) answers with the original
//! offset instead of appending it again, so a retry never duplicates. This
//! needs **one batch per partition in flight**: were a later batch sent
//! while an earlier one is out, and the earlier one failed (a lost
//! connection, `NOT_LEADER` in a failover), the later one would reach the
//! leader first and skip a sequence: refused `OUT_OF_ORDER_SEQUENCE`, and
//! every batch after it too, until they were all resent in order. So the
//! producer caps `max_in_flight_per_partition` at 1 and gets its throughput
//! from batching and from the partitions in parallel. A batch that fails
//! for good (retries spent, or a non-retriable error) leaves the leader's
//! idea of the sequence unknown; the partition's next batch starts a new
//! epoch at sequence 0. `PRODUCER_FENCED` (another instance with this id
//! and a newer epoch wrote) stops the producer: that batch, every one not
//! yet answered and every later [`Producer::send`] fail with it.
//! `OUT_OF_ORDER_SEQUENCE` means a leader lacks batches it acknowledged
//! (possible with `acks = 1` across a failover; with `acks = all` followers
//! keep the producer state): that batch fails with an error that says so.
//! Without idempotence (or with `acks = 0`, where no answer comes to keep
//! a sequence by) a retry after a lost connection or a timeout may append
//! a batch twice (at least once).

use std::cell::RefCell;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_lite::future;
use glommio::timer::Timer;
use ringmq_protocol::batch::{BatchBuilder, ProducerStamp, BATCH_HEADER_LEN, MAX_BATCH_BYTES};
use ringmq_protocol::{Acks, ErrorCode, ProduceRequest, ProduceResponse, Request, ResponseBody};

use crate::client::Client;
use crate::connection::Connection;
use crate::error::ClientError;
use crate::idempotence::{self, ProducerIdentity, Sequencer};
use crate::router::Target;
use crate::wait::WaitList;

/// How a [`Producer`] batches, sends and retries.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// When the broker answers: [`Acks::None`] (no answer; a record's
    /// delivery completes once it is queued on the connection),
    /// [`Acks::Leader`] or [`Acks::All`].
    pub acks: Acks,
    /// A batch is sealed before a record would take it past this size.
    /// Capped at the protocol's `MAX_BATCH_BYTES`.
    pub batch_bytes: usize,
    /// How long a batch waits for more records before it is sent.
    pub linger: Duration,
    /// Batches sent and not yet answered, over all partitions.
    pub max_in_flight: usize,
    /// Batches sent and not yet answered, per partition. 1 keeps
    /// per-partition order even across retries (see the module doc); an
    /// idempotent producer always uses 1.
    pub max_in_flight_per_partition: usize,
    /// Bytes of records not yet acknowledged; [`Producer::send`] waits
    /// past it.
    pub max_buffered_bytes: usize,
    /// How many times a batch is sent again after a retriable error.
    pub retries: u32,
    /// Wait before the first retry; doubled for each next one.
    pub retry_backoff: Duration,
    /// Longest wait between retries.
    pub max_retry_backoff: Duration,
    /// How long the broker may wait for replicas (`acks = all`) before it
    /// answers `REQUEST_TIMED_OUT`.
    pub ack_timeout: Duration,
    /// Stamp batches with a producer id and per-partition sequences, so a
    /// retry is never appended twice (see the module doc). Takes effect
    /// with `acks` 1 or all; with `acks = 0` there is no answer to keep a
    /// sequence by, and batches go unstamped.
    pub idempotent: bool,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            acks: Acks::Leader,
            batch_bytes: 16 << 10,
            linger: Duration::from_millis(5),
            max_in_flight: 256,
            max_in_flight_per_partition: 5,
            max_buffered_bytes: 32 << 20,
            retries: 10,
            retry_backoff: Duration::from_millis(50),
            max_retry_backoff: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(10),
            idempotent: true,
        }
    }
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMetadata {
    pub partition: u32,
    /// The record's offset; `None` with `acks = 0`, where the broker does
    /// not say.
    pub offset: Option<u64>,
}

/// Counters over the producer's life.
#[derive(Debug, Clone, Default)]
pub struct ProducerStats {
    /// Records the broker acknowledged (with `acks = 0`: handed to the
    /// connection).
    pub acked: u64,
    /// Records that could not be delivered.
    pub failed: u64,
    /// Batches sent again after a retriable error.
    pub retries: u64,
    /// The most recent delivery failure.
    pub last_error: Option<ClientError>,
    /// Partitions whose sequence started over (a new epoch) after a batch
    /// failed for good; idempotent producers only.
    pub sequence_resets: u64,
}

/// Sends records to the partitions of one topic. Cheap handles are not
/// needed: share it by reference. Dropping it stops accepting records but
/// lets the background task deliver the ones already sent (their
/// [`Delivery`] futures still complete) while the executor runs.
pub struct Producer {
    shared: Rc<Shared>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.shared.topic)
            .field("partitions", &self.shared.partitions)
            .finish_non_exhaustive()
    }
}

/// The future of one record's delivery, from [`Producer::send`].
#[must_use = "a Delivery says whether the record arrived; drop it only if that does not matter"]
pub struct Delivery {
    outcome: Rc<Outcome>,
    partition: u32,
    /// The record's place in its batch: offset = batch base offset + index.
    index: u32,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("partition", &self.partition)
            .field("index", &self.index)
            .finish_non_exhaustive()
    }
}

impl Delivery {
    /// The partition the record went to.
    pub fn partition(&self) -> u32 {
        self.partition
    }
}

impl Future for Delivery {
    type Output = Result<RecordMetadata, ClientError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut st = self.outcome.0.borrow_mut();
        match &mut *st {
            OutcomeState::Waiting(w) => {
                w.register(cx.waker());
                Poll::Pending
            }
            OutcomeState::Done(Ok(base)) => Poll::Ready(Ok(RecordMetadata {
                partition: self.partition,
                offset: base.map(|b| b + u64::from(self.index)),
            })),
            OutcomeState::Done(Err(e)) => Poll::Ready(Err(e.clone())),
        }
    }
}

/// The outcome of one batch, shared by the deliveries of its records.
struct Outcome(RefCell<OutcomeState>);

enum OutcomeState {
    Waiting(WaitList),
    /// The batch's base offset (`None` with acks=0), or why it failed.
    Done(Result<Option<u64>, ClientError>),
}

impl Outcome {
    fn complete(&self, result: Result<Option<u64>, ClientError>) {
        let prev = std::mem::replace(&mut *self.0.borrow_mut(), OutcomeState::Done(result));
        if let OutcomeState::Waiting(mut w) = prev {
            w.wake_all();
        }
    }
}

/// State shared by the producer handle, the driver and the response tasks.
/// Borrows of `state` never cross an `.await`.
struct Shared {
    client: Client,
    topic: String,
    partitions: u32,
    config: ProducerConfig,
    state: RefCell<State>,
}

struct State {
    parts: Vec<Part>,
    /// Next partition for a record without a key.
    next_rr: u32,
    /// Sequence number of the next batch opened; increases with the order
    /// in which batches were opened, so per partition it is the log order.
    next_seq: u64,
    /// Batches opened and not yet completed; `flush` waits on it.
    incomplete: BTreeSet<u64>,
    /// Bytes of those batches.
    buffered: usize,
    /// Batches sent and not yet answered.
    in_flight: usize,
    /// Next partition the driver looks at, so none starves.
    next_part: usize,
    /// Seal every open batch now (flush or close).
    seal_all: bool,
    /// The handle was dropped: the driver exits once everything completed.
    closed: bool,
    stats: ProducerStats,
    /// The driver, parked.
    driver: Option<Waker>,
    /// `send` waiting for room, `flush` waiting for completion.
    waiters: WaitList,
    /// Why the producer stopped for good (`PRODUCER_FENCED`): every batch
    /// not yet answered and every later send fails with it.
    fatal: Option<ClientError>,
}

/// One partition's batches.
struct Part {
    index: u32,
    open: Option<OpenBatch>,
    /// Sealed batches to send, by ascending `seq` (retries go back in their
    /// place).
    ready: VecDeque<Batch>,
    in_flight: usize,
    /// A batch of this partition failed retriably and is not yet through:
    /// at most one batch in flight until one succeeds.
    retrying: bool,
    /// No send before this instant (retry backoff).
    not_before: Option<Instant>,
    /// Highest `seq` acknowledged, to notice a retry that reordered.
    max_acked_seq: Option<u64>,
    /// Where the batches in flight went (`None` when there are none): the
    /// next batch goes there too, or waits until they are answered.
    via: Option<Target>,
    /// The partition's producer sequence, when idempotent.
    sequencer: Option<Sequencer>,
}

struct OpenBatch {
    builder: BatchBuilder,
    seq: u64,
    opened: Instant,
    outcome: Rc<Outcome>,
}

struct Batch {
    partition: u32,
    seq: u64,
    /// The records until the batch is first sent; then it is finished into
    /// `bytes`, stamped with the partition's next sequence when idempotent
    /// (so a batch that waits behind a failed one gets the sequence that
    /// follows what the leader has).
    unsent: Option<BatchBuilder>,
    bytes: Bytes,
    /// Size of the batch in bytes (what it counts against
    /// `max_buffered_bytes`).
    size: usize,
    /// The producer fields it was stamped with, if idempotent.
    stamp: Option<ProducerStamp>,
    records: u32,
    attempts: u32,
    outcome: Rc<Outcome>,
    /// Where it was last sent, and the version of the client's map that
    /// said so.
    via: Target,
    map_version: u64,
}

impl Producer {
    /// A producer for `topic`, whose partition count it looks up now (an
    /// unknown topic fails here). The background task starts on the
    /// current executor.
    pub async fn new(
        client: &Client,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        let partitions = client.admin().partition_count(topic).await?;
        let mut config = config;
        let identity: Option<ProducerIdentity> = if config.idempotent && config.acks != Acks::None {
            let id =
                idempotence::init_producer_id(client, config.retries, config.retry_backoff).await?;
            // One batch per partition in flight: see the module doc.
            config.max_in_flight_per_partition = 1;
            Some(id)
        } else {
            config.idempotent = false;
            None
        };
        config.batch_bytes = config
            .batch_bytes
            .clamp(BATCH_HEADER_LEN + 1, MAX_BATCH_BYTES);
        config.max_in_flight = config.max_in_flight.max(1);
        config.max_in_flight_per_partition = config.max_in_flight_per_partition.max(1);
        let shared = Rc::new(Shared {
            client: client.clone(),
            topic: topic.to_owned(),
            partitions,
            config,
            state: RefCell::new(State {
                parts: (0..partitions)
                    .map(|index| Part {
                        index,
                        open: None,
                        ready: VecDeque::new(),
                        in_flight: 0,
                        retrying: false,
                        not_before: None,
                        max_acked_seq: None,
                        via: None,
                        sequencer: identity.map(Sequencer::new),
                    })
                    .collect(),
                next_rr: 0,
                next_seq: 0,
                incomplete: BTreeSet::new(),
                buffered: 0,
                in_flight: 0,
                next_part: 0,
                seal_all: false,
                closed: false,
                stats: ProducerStats::default(),
                driver: None,
                waiters: WaitList::default(),
                fatal: None,
            }),
        });
        glommio::spawn_local(drive(shared.clone())).detach();
        Ok(Producer { shared })
    }

    pub fn topic(&self) -> &str {
        &self.shared.topic
    }

    pub fn partitions(&self) -> u32 {
        self.shared.partitions
    }

    /// The producer id the batches carry, when idempotent (`idempotent`
    /// and `acks` 1 or all).
    pub fn producer_id(&self) -> Option<i64> {
        let st = self.shared.state.borrow();
        st.parts
            .first()
            .and_then(|p| p.sequencer.as_ref())
            .map(Sequencer::producer_id)
    }

    /// The partition a record with this key goes to: `xxh3_64(key) %
    /// partitions`; `None` for a record without a key (round-robin).
    pub fn partition_for(&self, key: Option<&[u8]>) -> Option<u32> {
        key.map(|k| partition_for_key(k, self.shared.partitions))
    }

    /// Adds a record to its partition's batch, waiting first if
    /// `max_buffered_bytes` are not yet acknowledged. The returned
    /// [`Delivery`] completes when the record's batch is acknowledged (or
    /// failed for good).
    pub async fn send(&self, key: Option<&[u8]>, value: &[u8]) -> Result<Delivery, ClientError> {
        let partition = match key {
            Some(k) => partition_for_key(k, self.shared.partitions),
            None => {
                let mut st = self.shared.state.borrow_mut();
                let p = st.next_rr;
                st.next_rr = (p + 1) % self.shared.partitions;
                p
            }
        };
        self.send_to(partition, key, value).await
    }

    /// Like [`send`](Self::send), to a partition of the caller's choosing.
    pub async fn send_to(
        &self,
        partition: u32,
        key: Option<&[u8]>,
        value: &[u8],
    ) -> Result<Delivery, ClientError> {
        let sh = &*self.shared;
        if partition >= sh.partitions {
            return Err(ClientError::InvalidInput(format!(
                "topic {} has no partition {partition} (it has {})",
                sh.topic, sh.partitions
            )));
        }
        let size = BatchBuilder::record_size(key, Some(value), &[]);
        if BATCH_HEADER_LEN + size > MAX_BATCH_BYTES {
            return Err(ClientError::InvalidInput(format!(
                "a record of {} bytes does not fit in a batch (at most {MAX_BATCH_BYTES} bytes)",
                key.map_or(0, <[u8]>::len) + value.len()
            )));
        }
        future::poll_fn(|cx| {
            let mut st = sh.state.borrow_mut();
            if let Some(e) = &st.fatal {
                Poll::Ready(Err(e.clone()))
            } else if st.buffered < sh.config.max_buffered_bytes {
                Poll::Ready(Ok(()))
            } else {
                st.waiters.register(cx.waker());
                Poll::Pending
            }
        })
        .await?;

        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let (delivery, sealed) = {
            let mut guard = sh.state.borrow_mut();
            let st = &mut *guard;
            let part = &mut st.parts[partition as usize];
            let mut wake = false;
            let mut sealed = false;
            if part
                .open
                .as_ref()
                .is_some_and(|o| o.builder.size_bytes() + size > sh.config.batch_bytes)
            {
                part.seal();
                wake = true;
                sealed = true;
            }
            let open = part.open.get_or_insert_with(|| {
                let seq = st.next_seq;
                st.next_seq += 1;
                st.incomplete.insert(seq);
                st.buffered += BATCH_HEADER_LEN;
                wake = true; // the driver arms the linger timer
                OpenBatch {
                    builder: BatchBuilder::with_capacity(
                        now_ms,
                        sh.config.batch_bytes.max(BATCH_HEADER_LEN + size),
                    ),
                    seq,
                    opened: Instant::now(),
                    outcome: Rc::new(Outcome(RefCell::new(OutcomeState::Waiting(
                        WaitList::default(),
                    )))),
                }
            });
            let before = open.builder.size_bytes();
            let index = open.builder.len();
            open.builder.push(now_ms, key, Some(value), &[]);
            st.buffered += open.builder.size_bytes() - before;
            let delivery = Delivery {
                outcome: open.outcome.clone(),
                partition,
                index,
            };
            if open.builder.size_bytes() >= sh.config.batch_bytes {
                part.seal();
                wake = true;
                sealed = true;
            }
            if wake {
                if let Some(w) = st.driver.take() {
                    w.wake();
                }
            }
            (delivery, sealed)
        };
        if sealed {
            // A full batch is ready: let the driver send it now, rather
            // than when a caller sending in a tight loop next waits.
            future::yield_now().await;
        }
        Ok(delivery)
    }

    /// Sends every open batch now and waits until every record sent before
    /// this call is acknowledged or failed for good (see [`Delivery`] and
    /// [`stats`](Self::stats) for which). With `acks = 0`, also waits until
    /// the connection wrote them.
    pub async fn flush(&self) -> Result<(), ClientError> {
        let sh = &*self.shared;
        let target = {
            let mut st = sh.state.borrow_mut();
            st.seal_all = true;
            if let Some(w) = st.driver.take() {
                w.wake();
            }
            st.next_seq
        };
        future::poll_fn(|cx| {
            let mut st = sh.state.borrow_mut();
            if st.incomplete.range(..target).next().is_none() {
                Poll::Ready(())
            } else {
                st.waiters.register(cx.waker());
                Poll::Pending
            }
        })
        .await;
        if sh.config.acks == Acks::None {
            sh.client.flush_all().await?;
        }
        Ok(())
    }

    /// Records acknowledged and failed so far.
    pub fn stats(&self) -> ProducerStats {
        self.shared.state.borrow().stats.clone()
    }
}

impl Drop for Producer {
    fn drop(&mut self) {
        let mut st = self.shared.state.borrow_mut();
        st.closed = true;
        st.seal_all = true;
        if let Some(w) = st.driver.take() {
            w.wake();
        }
    }
}

/// `xxh3_64(key) % partitions`, the placement every client must agree on
/// (SPEC.md 8).
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions.max(1))) as u32
}

impl Part {
    /// Moves the open batch, if any, to the ready queue.
    fn seal(&mut self) {
        let Some(open) = self.open.take() else {
            return;
        };
        if open.builder.is_empty() {
            // Never happens (a batch is opened for a record), but an empty
            // batch is invalid on the wire: complete it instead.
            open.outcome.complete(Ok(None));
            return;
        }
        let records = open.builder.len();
        let batch = Batch {
            partition: self.index,
            seq: open.seq,
            records,
            size: open.builder.size_bytes(),
            unsent: Some(open.builder),
            bytes: Bytes::new(),
            stamp: None,
            attempts: 0,
            outcome: open.outcome,
            via: Target::Gateway,
            map_version: 0,
        };
        self.push_ready(batch);
    }

    /// Inserts in `seq` order: new batches go last, retried ones back
    /// into their place.
    fn push_ready(&mut self, batch: Batch) {
        let at = self.ready.partition_point(|b| b.seq < batch.seq);
        self.ready.insert(at, batch);
    }

    fn can_send(&self, limit: usize, now: Instant) -> bool {
        let limit = if self.retrying { 1 } else { limit };
        !self.ready.is_empty()
            && self.in_flight < limit
            && self.not_before.map_or(true, |t| t <= now)
    }
}

/// What the driver does next.
enum Step {
    /// Send the batch on this node connection, or on the gateway (`None`).
    Send(Batch, Option<Rc<Connection>>),
    Exit,
}

/// The driver: seals lingering batches and sends ready ones, forever
/// (until the producer is dropped and everything completed).
async fn drive(sh: Rc<Shared>) {
    let mut timer: Option<(Instant, Timer)> = None;
    loop {
        let step = future::poll_fn(|cx| loop {
            let deadline = {
                let mut st = sh.state.borrow_mut();
                match next_step(&sh, &mut st, cx) {
                    Ok(step) => return Poll::Ready(step),
                    Err(deadline) => {
                        st.driver = Some(cx.waker().clone());
                        deadline
                    }
                }
            };
            let Some(deadline) = deadline else {
                timer = None;
                return Poll::Pending;
            };
            if timer.as_ref().map_or(true, |(at, _)| *at != deadline) {
                let after = deadline.saturating_duration_since(Instant::now());
                timer = Some((deadline, Timer::new(after)));
            }
            let (_, t) = timer.as_mut().expect("set above");
            if Pin::new(t).poll(cx).is_pending() {
                return Poll::Pending;
            }
            timer = None; // expired: look again
        })
        .await;
        match step {
            Step::Exit => return,
            Step::Send(batch, conn) => send_batch(&sh, batch, conn).await,
        }
    }
}

/// The next batch to send, or `Err(deadline)`: nothing to do before
/// `deadline` (a linger or a backoff ending), or before a wake-up if `None`
/// (a batch answered, a record sent, a node connection opened: `cx` is
/// registered with the client for the last).
fn next_step(sh: &Shared, st: &mut State, cx: &Context<'_>) -> Result<Step, Option<Instant>> {
    let now = Instant::now();
    let linger = sh.config.linger;
    let seal_all = std::mem::take(&mut st.seal_all);
    let mut deadline: Option<Instant> = None;
    let mut earliest = |t: Instant| deadline = Some(deadline.map_or(t, |d| d.min(t)));
    for part in st.parts.iter_mut() {
        if let Some(open) = &part.open {
            if seal_all || open.opened + linger <= now {
                part.seal();
            } else {
                earliest(open.opened + linger);
            }
        }
    }
    if st.in_flight < sh.config.max_in_flight {
        let n = st.parts.len();
        for k in 0..n {
            let i = (st.next_part + k) % n;
            let part = &mut st.parts[i];
            if part.can_send(sh.config.max_in_flight_per_partition, now) {
                let (target, map_version) = sh.client.target(&sh.topic, part.index);
                if part.in_flight > 0 && part.via != Some(target) {
                    continue; // the route changed: wait for those in flight
                }
                let conn = match target {
                    Target::Node(addr) => match sh.client.ready_node(addr, cx) {
                        Some(c) => Some(c),
                        None => continue, // opening: woken when done
                    },
                    Target::Gateway => None,
                };
                let mut batch = part.ready.pop_front().expect("can_send checked it");
                if let Some(builder) = batch.unsent.take() {
                    batch.stamp = part.sequencer.as_mut().map(|s| s.stamp(batch.records));
                    batch.bytes = builder.finish(batch.stamp);
                }
                batch.via = target;
                batch.map_version = map_version;
                part.via = Some(target);
                part.in_flight += 1;
                part.not_before = None;
                st.in_flight += 1;
                st.next_part = (i + 1) % n;
                return Ok(Step::Send(batch, conn));
            }
            if let (Some(t), false) = (part.not_before, part.ready.is_empty()) {
                earliest(t);
            }
        }
    }
    if st.closed && st.incomplete.is_empty() {
        return Ok(Step::Exit);
    }
    Err(deadline)
}

/// Puts one batch on its connection (`conn`, or the gateway's) and leaves a
/// task to wait for its answer.
async fn send_batch(sh: &Rc<Shared>, batch: Batch, conn: Option<Rc<Connection>>) {
    let req = Request::Produce(ProduceRequest {
        topic: sh.topic.clone(),
        partition: batch.partition,
        acks: sh.config.acks,
        timeout_ms: u32::try_from(sh.config.ack_timeout.as_millis()).unwrap_or(u32::MAX),
        batch: batch.bytes.clone(),
    });
    let conn = match conn {
        Some(c) => Ok(c),
        None => sh.client.connection().await,
    };
    let sent = match conn {
        Ok(conn) => conn.send(&req).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(None) => on_result(sh, batch, Ok(None)),
        Ok(Some(pending)) => {
            let sh = sh.clone();
            glommio::spawn_local(async move {
                let result = match pending.await {
                    Ok(ResponseBody::Produce(ProduceResponse { base_offset, .. })) => {
                        Ok(Some(base_offset))
                    }
                    Ok(other) => Err(ClientError::InvalidInput(format!(
                        "a Produce was answered with a {} response",
                        other.api_key()
                    ))),
                    Err(e) => Err(e),
                };
                on_result(&sh, batch, result);
            })
            .detach();
        }
        Err(e) => on_result(sh, batch, Err(e)),
    }
}

/// Completes, retries or fails a batch once its answer (or failure) is in.
fn on_result(sh: &Shared, mut batch: Batch, result: Result<Option<u64>, ClientError>) {
    let mut guard = sh.state.borrow_mut();
    let st = &mut *guard;
    st.in_flight -= 1;
    let part = &mut st.parts[batch.partition as usize];
    part.in_flight -= 1;
    if part.in_flight == 0 {
        part.via = None;
    }
    if let Err(e) = &result {
        sh.client.report_failure(batch.via, batch.map_version, e);
    }
    let result = match result {
        // A stopped producer retries nothing.
        Err(_) if st.fatal.is_some() => Err(st.fatal.clone().expect("checked")),
        Err(e) if retriable(&e) && batch.attempts < sh.config.retries => {
            batch.attempts += 1;
            let backoff = sh
                .config
                .retry_backoff
                .saturating_mul(1 << (batch.attempts - 1).min(16))
                .min(sh.config.max_retry_backoff);
            tracing::debug!(
                topic = %sh.topic, partition = batch.partition, attempt = batch.attempts,
                error = %e, ?backoff, "produce failed, will retry"
            );
            part.retrying = true;
            let at = Instant::now() + backoff;
            part.not_before = Some(part.not_before.map_or(at, |t| t.max(at)));
            part.push_ready(batch);
            st.stats.retries += 1;
            if let Some(w) = st.driver.take() {
                w.wake();
            }
            return;
        }
        Err(e) => Err(match &batch.stamp {
            Some(stamp) => {
                idempotence::explain(e, &sh.topic, batch.partition, stamp, batch.records)
            }
            None => e,
        }),
        ok => ok,
    };
    if result.is_ok() {
        part.retrying = false;
        if part.max_acked_seq.is_some_and(|m| m > batch.seq) {
            tracing::warn!(
                topic = %sh.topic, partition = batch.partition,
                "a retried batch was appended after a later one: records of this partition are out of order"
            );
        }
        part.max_acked_seq = part.max_acked_seq.max(Some(batch.seq));
        st.stats.acked += u64::from(batch.records);
    } else {
        st.stats.failed += u64::from(batch.records);
    }
    let mut also_failed = Vec::new();
    if let Err(e) = &result {
        tracing::debug!(topic = %sh.topic, partition = batch.partition, error = %e, "produce failed");
        st.stats.last_error = Some(e.clone());
        if batch.stamp.is_some() && st.fatal.is_none() {
            also_failed = after_sequenced_failure(sh, st, batch.partition, e);
        }
    }
    st.incomplete.remove(&batch.seq);
    st.buffered = st.buffered.saturating_sub(batch.size);
    let mut waiters = st.waiters.take();
    let driver = st.driver.take();
    let fatal = st.fatal.clone();
    drop(guard);
    batch.outcome.complete(result);
    for outcome in also_failed {
        outcome.complete(Err(fatal.clone().expect("set with also_failed")));
    }
    waiters.wake_all();
    if let Some(w) = driver {
        w.wake();
    }
}

/// A stamped batch of `partition` failed for good with `e`: the partition
/// starts a new sequence, or, when `e` is `PRODUCER_FENCED` (or the epochs
/// ran out), the producer stops. Returns the outcomes of the batches that
/// fail with it, to complete once the state is no longer borrowed.
fn after_sequenced_failure(
    sh: &Shared,
    st: &mut State,
    partition: u32,
    e: &ClientError,
) -> Vec<Rc<Outcome>> {
    let part = &mut st.parts[partition as usize];
    let fatal = if e.code() == Some(ErrorCode::ProducerFenced) {
        e.clone()
    } else {
        let Some(s) = part.sequencer.as_mut() else {
            return Vec::new();
        };
        if s.start_over() {
            st.stats.sequence_resets += 1;
            // Said at debug: the batch's own error tells the caller.
            tracing::debug!(
                topic = %sh.topic, partition, epoch = s.epoch(),
                "a batch failed for good; the partition's sequence starts over at a new epoch"
            );
            return Vec::new();
        }
        ClientError::InvalidInput(format!(
            "producer {} ran out of epochs on {}/{partition} ({} batches there failed for \
                 good); a new producer gets a new id",
            s.producer_id(),
            sh.topic,
            i16::MAX
        ))
    };
    tracing::warn!(topic = %sh.topic, partition, error = %fatal, "the producer stops");
    st.fatal = Some(fatal);
    // Every batch not yet sent fails with it; those in flight fail (or
    // succeed) as they are answered.
    let mut failed = Vec::new();
    for part in st.parts.iter_mut() {
        part.seal();
        for b in part.ready.drain(..) {
            st.stats.failed += u64::from(b.records);
            st.incomplete.remove(&b.seq);
            st.buffered = st.buffered.saturating_sub(b.size);
            failed.push(b.outcome);
        }
    }
    failed
}

/// Retriable for a producer: what [`ClientError::is_retriable`] says, and
/// also no broker answering at all (one may be restarting).
fn retriable(e: &ClientError) -> bool {
    e.is_retriable() || matches!(e, ClientError::Connect { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_partitioning_matches_the_spec() {
        // SPEC.md section 8: xxh3_64("user-42") lands in partition 5 of 8.
        assert_eq!(partition_for_key(b"user-42", 8), 5);
        assert_eq!(
            xxhash_rust::xxh3::xxh3_64(b""),
            0x2d06800538d394c2,
            "seedless XXH3"
        );
    }
}
