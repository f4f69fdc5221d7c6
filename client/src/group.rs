//! [`GroupConsumer`]: a member of a consumer group (SPEC.md 5.9), which
//! consumes the partitions the group's coordinator gives it and commits its
//! progress, so that the group's members share the topics' partitions and a
//! partition's next holder starts where the last one stopped.
//!
//! Two parties share the member's state ([`Shared`]):
//! - a background **heartbeat task** keeps the member alive (every
//!   `heartbeat_interval_ms`, every 100 ms while partitions are pending, at
//!   once when asked) and notes what the coordinator answers: a new
//!   assignment, or that the member is unknown (fenced). It never waits for
//!   the application: a slow application only delays the release of a
//!   partition, never the heartbeats.
//! - the **consumer** ([`GroupConsumer::poll`], driven by the application)
//!   applies what the heartbeat task noted. Releasing happens there and only
//!   there because only between two polls does the member know the
//!   application is done with the records it was given (Kafka's contract:
//!   calling `poll` again means the previous batch was processed). A release
//!   stops the partition's fetching, drops its unreturned records, commits
//!   the processed position, and only then asks the heartbeat task to
//!   acknowledge the new generation, so the next holder starts at that
//!   commit and no two members ever consume the partition at once.
//!
//! Being fenced: `UNKNOWN_MEMBER` (the session expired, or the member was
//! removed) makes the member drop what it has not committed and join anew;
//! `FENCED_INSTANCE_ID` (another process joined with the same instance id
//! and took this member's place) stops it for good, since rejoining would
//! take the place back and the two would fence each other forever. Either
//! way no record is handed out once the heartbeat task has learned it.
//!
//! Outages: connection failures are retried (with a growing backoff, up to
//! a second) for as long as the member's session can still be alive, so a
//! broker restart within the session timeout goes unnoticed.
//!
//! Positions: *processed* is one past the last record the application is
//! done with (returned by an earlier `poll`, or marked); *committed* is what
//! the coordinator has stored. Only processed positions are ever committed.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::timer::Timer;
use glommio::Task;
use ringmq_protocol::limits::{
    validate_group_id, GroupIdError, MAX_GROUP_ID_LEN, MAX_SESSION_TIMEOUT_MS,
    MIN_SESSION_TIMEOUT_MS,
};
use ringmq_protocol::{
    CommitOffsetsRequest, ErrorCode, HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest,
    MemberAssignment, OffsetSpec, PartitionOffset, Request, TopicPartitions,
};

use crate::client::Client;
use crate::consumer::{backoff, ConsumedRecord, ConsumerConfig};
use crate::error::ClientError;
use crate::fetcher::Fetcher;

/// How a [`GroupConsumer`] joins and behaves in its group.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    /// The topics the group consumes; every member names the same set.
    pub topics: Vec<String>,
    /// Static membership: a restart with the same id within the session
    /// timeout takes back the same partitions without a rebalance.
    pub instance_id: Option<String>,
    /// How long the coordinator waits for a sign of life before it removes
    /// the member and hands its partitions to the others.
    pub session_timeout: Duration,
    /// Where to start in a partition the group has no committed offset for,
    /// or where its offset is out of range.
    pub auto_offset_reset: OffsetReset,
    /// Commit the processed positions this often (from `poll`); `None`
    /// commits only on [`GroupConsumer::commit`], on a release and on close.
    pub auto_commit_interval: Option<Duration>,
    /// Fetch sizes, long-poll wait, connections. Its `retry_timeout` is
    /// replaced by the session timeout: fetches keep retrying for as long
    /// as the member's session can still be alive.
    pub fetch: ConsumerConfig,
    /// Times a commit is sent again after a retriable failure or
    /// `STALE_GENERATION` before the failure is reported. Other group
    /// requests (join, offset lookups) retry retriable failures and lost
    /// connections for up to the session timeout instead.
    pub retries: u32,
    /// The first wait before a retry; doubled on each failure in a row, up
    /// to [`MAX_RETRY_BACKOFF`](crate::MAX_RETRY_BACKOFF).
    pub retry_backoff: Duration,
    /// Events kept for [`GroupConsumer::take_events`]; the oldest are
    /// dropped past it.
    pub max_events: usize,
}

impl GroupConfig {
    pub fn new(group: &str, topics: &[&str]) -> GroupConfig {
        GroupConfig {
            group: group.to_owned(),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            instance_id: None,
            session_timeout: Duration::from_secs(10),
            auto_offset_reset: OffsetReset::Earliest,
            auto_commit_interval: Some(Duration::from_secs(1)),
            fetch: ConsumerConfig::default(),
            retries: 5,
            retry_backoff: Duration::from_millis(100),
            max_events: 256,
        }
    }
}

/// Where a member starts in a partition with no committed offset, or
/// whose offset is out of range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

impl OffsetReset {
    fn spec(self) -> OffsetSpec {
        match self {
            OffsetReset::Earliest => OffsetSpec::Earliest,
            OffsetReset::Latest => OffsetSpec::Latest,
        }
    }
}

/// A partition of a topic; prints as `topic/partition`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

impl TopicPartition {
    pub fn new(topic: &str, partition: u32) -> TopicPartition {
        TopicPartition {
            topic: topic.to_owned(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// What happened to the member, for the application to observe (see
/// [`GroupConsumer::take_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// The member joined (or rejoined after being fenced) and holds these
    /// partitions.
    Joined {
        member_id: String,
        generation: u32,
        partitions: Vec<TopicPartition>,
    },
    /// A new assignment was applied: `removed` were released (their
    /// processed positions committed first), `added` are now consumed.
    AssignmentChanged {
        member_id: String,
        generation: u32,
        added: Vec<TopicPartition>,
        removed: Vec<TopicPartition>,
        partitions: Vec<TopicPartition>,
    },
    /// The coordinator refused a commit; nothing of it was stored.
    CommitRejected { code: ErrorCode, message: String },
    /// The coordinator no longer knows the member (its session expired, or
    /// it was removed): what it had not committed is dropped and it joins
    /// anew; a `Joined` follows.
    Fenced {
        member_id: String,
        code: ErrorCode,
        message: String,
    },
    /// Another process joined with this member's instance id and took its
    /// place (`FENCED_INSTANCE_ID`): the member stopped for good. It hands
    /// out nothing more, never rejoins, and `poll` and `commit` fail with
    /// that error from now on.
    Replaced {
        member_id: String,
        instance_id: String,
        message: String,
    },
    /// The offset the member was to fetch next lies outside what the
    /// partition holds (`OFFSET_OUT_OF_RANGE`): a committed offset that
    /// outlived its records (they expired, or the topic was deleted and
    /// created again), or records lost with a leader (acks=1). The member
    /// goes on at `position`, as its `auto_offset_reset` says.
    OutOfRange {
        partition: TopicPartition,
        offset: u64,
        earliest: u64,
        latest: u64,
        position: u64,
    },
    /// The member left the group (on close).
    Left { member_id: String },
}

/// The member's state that the heartbeat task shares with the consumer.
/// Borrows never cross an `.await`.
struct Shared {
    member_id: String,
    /// The generation whose assignment the member has applied: what its
    /// heartbeats carry.
    applied: u32,
    /// What the member holds now (applied), to tell a changed answer.
    held: BTreeSet<TopicPartition>,
    /// The newest assignment noted and not yet applied.
    next: Option<MemberAssignment>,
    /// The generation being applied (0 when none): a release commits with
    /// it, since the member still holds what it releases until it
    /// acknowledges.
    applying: u32,
    /// Partitions due to the member that another has not released yet.
    pending: u32,
    heartbeat_interval: Duration,
    /// When the last group request that succeeded was *sent*. The
    /// coordinator counts the session from when a request arrives, so this
    /// is a lower bound of the member's last sign of life as it sees it
    /// (an answer's arrival time would overstate it by the round trip).
    last_ok_sent: Instant,
    /// Set when the coordinator answered `UNKNOWN_MEMBER`,
    /// `FENCED_INSTANCE_ID` (or another answer that means the member is
    /// no longer what it thinks).
    fenced: Option<(ErrorCode, String)>,
    /// A heartbeat failure the application must hear of.
    failed: Option<ClientError>,
    /// Asks the heartbeat task to send one now.
    beat_now: bool,
    heartbeat_waker: Option<Waker>,
    consumer_waker: Option<Waker>,
}

impl Shared {
    /// A member not yet joined, heartbeating every `heartbeat_interval`.
    fn new(heartbeat_interval: Duration) -> Shared {
        Shared {
            member_id: String::new(),
            applied: 0,
            held: BTreeSet::new(),
            next: None,
            applying: 0,
            pending: 0,
            heartbeat_interval,
            last_ok_sent: Instant::now(),
            fenced: None,
            failed: None,
            beat_now: false,
            heartbeat_waker: None,
            consumer_waker: None,
        }
    }

    /// Notes an assignment from a JoinGroup or Heartbeat answer: a newer
    /// generation, or the same one with partitions added (released by
    /// their previous holder), is left for the consumer to apply.
    fn note(&mut self, a: MemberAssignment) {
        let newest = self
            .next
            .as_ref()
            .map_or(self.applied.max(self.applying), |n| n.generation);
        if a.generation < newest {
            return;
        }
        self.pending = a.pending;
        let changed = a.generation > self.applied || flatten(&a.partitions) != self.held;
        if changed {
            self.next = Some(a);
            if let Some(w) = self.consumer_waker.take() {
                w.wake();
            }
        } else if a.generation == self.applied {
            self.next = None;
        }
    }

    /// The newest generation the member knows: what a commit must carry.
    fn current_generation(&self) -> u32 {
        let noted = self.next.as_ref().map_or(0, |n| n.generation);
        self.applied.max(self.applying).max(noted)
    }

    /// Notes that a group request sent at `sent` succeeded.
    fn heard(&mut self, sent: Instant) {
        self.last_ok_sent = self.last_ok_sent.max(sent);
    }

    /// Whether the member can still count on being one without asking:
    /// its last successful request was sent less than the session timeout
    /// ago, minus a margin of one heartbeat interval for the coordinator's
    /// expiry tick, which runs apart from the requests.
    fn surely_member(&self, session_timeout: Duration, now: Instant) -> bool {
        let margin = self.heartbeat_interval.min(session_timeout / 2);
        now.saturating_duration_since(self.last_ok_sent) < session_timeout - margin
    }

    fn wake_heartbeat(&mut self) {
        if let Some(w) = self.heartbeat_waker.take() {
            w.wake();
        }
    }

    fn wake_consumer(&mut self) {
        if let Some(w) = self.consumer_waker.take() {
            w.wake();
        }
    }
}

fn flatten(parts: &[TopicPartitions]) -> BTreeSet<TopicPartition> {
    parts
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| TopicPartition::new(&t.topic, *p))
        })
        .collect()
}

/// A member of a consumer group: joins, heartbeats in the background,
/// fetches from the partitions it holds starting at the group's committed
/// offsets, commits what was processed, and follows the coordinator's
/// reassignments (SPEC.md 5.9).
///
/// ```ignore
/// let mut c = GroupConsumer::join(&client, GroupConfig::new("workers", &["tasks"])).await?;
/// loop {
///     for r in c.poll().await? { handle(r) }   // the next poll marks them processed
///     for e in c.take_events() { eprintln!("{e:?}") }
/// }
/// c.close().await?;   // commit, then LeaveGroup
/// ```
pub struct GroupConsumer {
    client: Client,
    config: GroupConfig,
    shared: Rc<RefCell<Shared>>,
    heartbeat: Option<Task<()>>,
    fetcher: Fetcher,
    /// One past the last record processed, per partition held.
    processed: HashMap<TopicPartition, u64>,
    /// The last offset committed (or found committed), per partition held.
    committed: HashMap<TopicPartition, u64>,
    /// Per partition, one past the last record the last `poll` returned;
    /// processed once `poll` is called again.
    last_batch: HashMap<TopicPartition, u64>,
    /// Partitions held but not fetched yet because looking up their start
    /// failed; the next `poll` tries again.
    unstarted: BTreeSet<TopicPartition>,
    last_commit: Instant,
    events: VecDeque<GroupEvent>,
    closed: bool,
    /// Set once another process took the member's instance id: every later
    /// call fails with it.
    stopped: Option<ClientError>,
}

impl fmt::Debug for GroupConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupConsumer")
            .field("group", &self.config.group)
            .field("member_id", &self.shared.borrow().member_id)
            .finish_non_exhaustive()
    }
}

impl GroupConsumer {
    /// Joins the group and starts on the partitions it gives: an invalid
    /// group id, session timeout or topic fails here.
    pub async fn join(client: &Client, config: GroupConfig) -> Result<GroupConsumer, ClientError> {
        let timeout_ms = u32::try_from(config.session_timeout.as_millis()).unwrap_or(u32::MAX);
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&timeout_ms) {
            return Err(ClientError::InvalidInput(format!(
                "a session timeout must lie within {MIN_SESSION_TIMEOUT_MS} ms and \
                 {MAX_SESSION_TIMEOUT_MS} ms, not {timeout_ms} ms"
            )));
        }
        if config.topics.is_empty() {
            return Err(ClientError::InvalidInput(
                "a group consumer needs at least one topic".into(),
            ));
        }
        if let Some(id) = &config.instance_id {
            check_instance_id(id)?;
        }
        let mut fetch = config.fetch.clone();
        // A fetch that fails for longer than the session may as well stop:
        // by then the member may have been removed anyway.
        fetch.retry_timeout = config.session_timeout;
        let mut c = GroupConsumer {
            client: client.clone(),
            fetcher: Fetcher::new(client, fetch),
            shared: Rc::new(RefCell::new(Shared::new(config.session_timeout / 3))),
            config,
            heartbeat: None,
            processed: HashMap::new(),
            committed: HashMap::new(),
            last_batch: HashMap::new(),
            unstarted: BTreeSet::new(),
            last_commit: Instant::now(),
            events: VecDeque::new(),
            closed: false,
            stopped: None,
        };
        c.fetcher.park_out_of_range();
        c.join_group().await?;
        Ok(c)
    }

    pub fn group(&self) -> &str {
        &self.config.group
    }

    /// The id the coordinator gave this member (changes on a rejoin).
    pub fn member_id(&self) -> String {
        self.shared.borrow().member_id.clone()
    }

    /// The generation whose assignment the member has applied.
    pub fn generation(&self) -> u32 {
        self.shared.borrow().applied
    }

    /// The partitions the member holds, sorted.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.shared.borrow().held.iter().cloned().collect()
    }

    /// One past the last processed record of a partition held, if any.
    pub fn processed(&self, tp: &TopicPartition) -> Option<u64> {
        self.processed.get(tp).copied()
    }

    /// What happened since the last call, oldest first.
    pub fn take_events(&mut self) -> Vec<GroupEvent> {
        self.events.drain(..).collect()
    }

    /// Waits for records of the partitions held (at most about the fetch
    /// `max_wait` when none arrive) and returns them, in per-partition
    /// order; possibly none.
    ///
    /// Calling it means the records the previous call returned were
    /// processed. Before it waits it applies what the heartbeat task
    /// learned (a new assignment, being fenced) and commits when the
    /// auto-commit interval has passed.
    pub async fn poll(&mut self) -> Result<Vec<ConsumedRecord>, ClientError> {
        if let Some(e) = &self.stopped {
            return Err(e.clone());
        }
        if self.closed {
            return Err(ClientError::InvalidInput(
                "the group consumer was closed".into(),
            ));
        }
        self.mark_batch_processed();
        self.catch_up().await?;
        // Before fetching, so that a failure here loses no fetched records.
        self.reset_out_of_range().await?;
        if self
            .config
            .auto_commit_interval
            .is_some_and(|i| self.last_commit.elapsed() >= i)
        {
            self.auto_commit().await?;
        }
        let shared = self.shared.clone();
        let changed = future::poll_fn(|cx| {
            let mut s = shared.borrow_mut();
            if s.next.is_some() || s.fenced.is_some() || s.failed.is_some() {
                Poll::Ready(None)
            } else {
                s.consumer_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let fetched = future::or(async { Some(self.fetcher.poll().await) }, changed).await;
        let records = match fetched {
            Some(r) => r?,
            None => {
                // Apply the change now rather than at the next call, so a
                // release is not held up by the application's next batch.
                self.catch_up().await?;
                Vec::new()
            }
        };
        if !records.is_empty() {
            match self.still_member().await {
                Ok(true) => {}
                // Fenced: the records belong to whoever holds their
                // partitions now, and the member has joined anew.
                Ok(false) => return Ok(Vec::new()),
                Err(e) => {
                    // Not handed out, so fetched again by the next poll.
                    for r in &records {
                        let first = self.fetcher.position(&r.topic, r.partition);
                        if first.is_some_and(|f| f > r.offset) {
                            self.fetcher.add(&r.topic, r.partition, r.offset);
                        }
                    }
                    return Err(e);
                }
            }
        }
        for r in &records {
            let tp = TopicPartition::new(&r.topic, r.partition);
            let next = r.offset + 1;
            let e = self.last_batch.entry(tp).or_insert(next);
            *e = (*e).max(next);
        }
        Ok(records)
    }

    /// Whether the member may hand out records. Normally it heard from the
    /// coordinator within a heartbeat interval and nothing is sent; past
    /// its session timeout (a stopped process, a lost connection) it may
    /// have been removed and its partitions given away, so it asks first.
    /// `false`: it was (or has just learned it was) fenced, and has joined
    /// anew.
    async fn still_member(&mut self) -> Result<bool, ClientError> {
        let fenced = self.shared.borrow_mut().fenced.take();
        if let Some((code, message)) = fenced {
            self.rejoin(&ClientError::Broker { code, message }).await?;
            return Ok(false);
        }
        // The heartbeat task failed for good: nothing more goes out.
        let failed = self.shared.borrow_mut().failed.take();
        if let Some(e) = failed {
            return Err(e);
        }
        if self
            .shared
            .borrow()
            .surely_member(self.config.session_timeout, Instant::now())
        {
            return Ok(true);
        }
        match self.heartbeat_now().await {
            Ok(()) => Ok(true),
            Err(e) if is_fenced(&e) || e.code() == Some(ErrorCode::StaleGeneration) => {
                self.rejoin(&e).await?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Marks a record processed (and every earlier one of its partition),
    /// for a commit before the next `poll`.
    pub fn mark_processed(&mut self, record: &ConsumedRecord) {
        let tp = TopicPartition::new(&record.topic, record.partition);
        self.mark(tp, record.offset + 1);
    }

    /// Marks every record returned so far processed.
    pub fn mark_batch_processed(&mut self) {
        for (tp, next) in std::mem::take(&mut self.last_batch) {
            self.mark(tp, next);
        }
    }

    fn mark(&mut self, tp: TopicPartition, next: u64) {
        // A partition released since: its records were not ours to finish.
        if !self.shared.borrow().held.contains(&tp) {
            return;
        }
        let e = self.processed.entry(tp).or_insert(next);
        *e = (*e).max(next);
    }

    /// Commits the processed positions of the partitions held (those not
    /// committed yet). A refusal is also reported as a
    /// [`GroupEvent::CommitRejected`]; after `UNKNOWN_MEMBER` the member has
    /// already joined anew when this returns the error.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        if let Some(e) = &self.stopped {
            return Err(e.clone());
        }
        let held: Vec<TopicPartition> = self.shared.borrow().held.iter().cloned().collect();
        match self.commit_partitions(&held).await {
            Err(e) if is_fenced(&e) => {
                self.rejoin(&e).await?;
                Err(e)
            }
            r => r,
        }
    }

    /// Commits what was processed, then leaves the group, releasing the
    /// partitions at once. The member's last batch counts as processed
    /// only if marked (see [`mark_batch_processed`](Self::mark_batch_processed)).
    pub async fn close(&mut self) -> Result<(), ClientError> {
        if self.closed {
            return Ok(());
        }
        if self.stopped.is_some() {
            // Replaced: the place (and the partitions) are another
            // process's now; a commit or LeaveGroup could only be refused.
            self.closed = true;
            return Ok(());
        }
        // Also when known to be fenced: the refusal tells the caller that
        // its last progress was not stored.
        let committed = self.commit_held().await;
        if let Err(e) = &committed {
            if e.code() == Some(ErrorCode::FencedInstanceId) {
                // Replaced meanwhile: stops for good (and says so), no
                // LeaveGroup for a place that is another process's now.
                let _ = self.rejoin(e).await;
                self.closed = true;
                return committed;
            }
        }
        self.closed = true;
        self.stop_heartbeat();
        for tp in self.assignment() {
            self.fetcher.remove(&tp.topic, tp.partition);
        }
        let member_id = self.member_id();
        let left = if member_id.is_empty() {
            Ok(())
        } else {
            let req = Request::LeaveGroup(LeaveGroupRequest {
                group: self.config.group.clone(),
                member_id: member_id.clone(),
            });
            match self.client.request(&req).await {
                Ok(body) => expect!(body, LeaveGroup).map(drop),
                // Already gone: leaving is done.
                Err(e) if e.code() == Some(ErrorCode::UnknownMember) => Ok(()),
                Err(e) => Err(e),
            }
        };
        if left.is_ok() {
            self.push_event(GroupEvent::Left { member_id });
        }
        committed.and(left)
    }

    /// Commits the held partitions' processed positions; the fenced case is
    /// left to the caller.
    async fn commit_held(&mut self) -> Result<(), ClientError> {
        let held: Vec<TopicPartition> = self.shared.borrow().held.iter().cloned().collect();
        self.commit_partitions(&held).await
    }

    /// `poll`'s commit: a refusal is an event, not a failure of `poll`.
    async fn auto_commit(&mut self) -> Result<(), ClientError> {
        self.last_commit = Instant::now();
        match self.commit_held().await {
            Ok(()) => Ok(()),
            Err(e) if is_fenced(&e) => self.rejoin(&e).await,
            Err(e) if e.code().is_some() => Ok(()),
            Err(e) => {
                tracing::warn!(group = %self.config.group, error = %e, "auto-commit failed; will try again");
                Ok(())
            }
        }
    }

    /// Commits the processed positions of `parts` that moved since their
    /// last commit, at the newest generation known. `STALE_GENERATION`:
    /// heartbeat to learn the generation, then again for the partitions
    /// still held. A broker refusal is pushed as an event too.
    async fn commit_partitions(&mut self, parts: &[TopicPartition]) -> Result<(), ClientError> {
        let mut attempt = 0;
        loop {
            let (generation, member_id, held) = {
                let s = self.shared.borrow();
                (s.current_generation(), s.member_id.clone(), s.held.clone())
            };
            let offsets: Vec<PartitionOffset> = parts
                .iter()
                .filter(|tp| held.contains(*tp))
                .filter_map(|tp| {
                    let p = *self.processed.get(tp)?;
                    (self.committed.get(tp) != Some(&p)).then(|| PartitionOffset {
                        topic: tp.topic.clone(),
                        partition: tp.partition,
                        offset: p,
                    })
                })
                .collect();
            if offsets.is_empty() {
                return Ok(());
            }
            let req = Request::CommitOffsets(CommitOffsetsRequest {
                group: self.config.group.clone(),
                member_id,
                generation,
                offsets: offsets.clone(),
            });
            let sent = Instant::now();
            let result = match self.client.request(&req).await {
                Ok(body) => expect!(body, CommitOffsets).map(drop),
                Err(e) => Err(e),
            };
            match result {
                Ok(()) => {
                    self.shared.borrow_mut().heard(sent);
                    for o in offsets {
                        self.committed
                            .insert(TopicPartition::new(&o.topic, o.partition), o.offset);
                    }
                    return Ok(());
                }
                Err(e) if attempt < self.config.retries && retry_commit(&e) => {
                    attempt += 1;
                    if e.code() == Some(ErrorCode::StaleGeneration) {
                        tracing::debug!(group = %self.config.group, generation, "commit from a stale generation; learning the current one");
                        self.heartbeat_now().await?;
                    } else {
                        Timer::new(self.config.retry_backoff).await;
                    }
                }
                Err(e) => {
                    if let ClientError::Broker { code, message } = &e {
                        self.push_event(GroupEvent::CommitRejected {
                            code: *code,
                            message: message.clone(),
                        });
                    }
                    return Err(e);
                }
            }
        }
    }

    /// Sends a heartbeat from the consumer's side (to learn the generation
    /// after `STALE_GENERATION`) and notes its answer.
    async fn heartbeat_now(&mut self) -> Result<(), ClientError> {
        let req = {
            let s = self.shared.borrow();
            Request::Heartbeat(HeartbeatRequest {
                group: self.config.group.clone(),
                member_id: s.member_id.clone(),
                generation: s.applied,
            })
        };
        let sent = Instant::now();
        let body = self.client.request(&req).await?;
        let a = expect!(body, Heartbeat)?.assignment;
        let mut s = self.shared.borrow_mut();
        s.heard(sent);
        s.note(a);
        Ok(())
    }

    /// Applies what the heartbeat task noted: a failure, being fenced, new
    /// assignments (a few in a row at most, each bounded).
    async fn catch_up(&mut self) -> Result<(), ClientError> {
        for _ in 0..8 {
            let failed = self.shared.borrow_mut().failed.take();
            if let Some(e) = failed {
                return Err(e);
            }
            let fenced = self.shared.borrow_mut().fenced.take();
            if let Some((code, message)) = fenced {
                self.rejoin(&ClientError::Broker { code, message }).await?;
                continue;
            }
            let next = self.shared.borrow_mut().next.take();
            match next {
                Some(a) => {
                    if let Err(e) = self.apply(a).await {
                        if is_fenced(&e) {
                            self.rejoin(&e).await?;
                        } else {
                            return Err(e);
                        }
                    }
                }
                None => break,
            }
        }
        if !self.unstarted.is_empty() {
            let parts: Vec<TopicPartition> = self.unstarted.iter().cloned().collect();
            self.start(&parts).await?;
        }
        Ok(())
    }

    /// Applies a newer assignment: release what is gone (stop fetching,
    /// drop unreturned records, commit the processed position), then
    /// acknowledge the generation and start on what was added.
    async fn apply(&mut self, a: MemberAssignment) -> Result<(), ClientError> {
        let new = flatten(&a.partitions);
        let old = self.shared.borrow().held.clone();
        let removed: Vec<TopicPartition> = old.difference(&new).cloned().collect();
        let added: Vec<TopicPartition> = new.difference(&old).cloned().collect();
        for tp in &removed {
            self.fetcher.remove(&tp.topic, tp.partition);
            self.last_batch.remove(tp);
            self.unstarted.remove(tp);
        }
        if !removed.is_empty() {
            self.shared.borrow_mut().applying = a.generation;
            let r = self.commit_partitions(&removed).await;
            self.shared.borrow_mut().applying = 0;
            match r {
                Ok(()) => {}
                Err(e) if is_fenced(&e) => return Err(e),
                // Refused or lost: the next holder starts from the last
                // commit and sees some records again (at-least-once).
                Err(e) => {
                    tracing::warn!(group = %self.config.group, error = %e, "could not commit released partitions")
                }
            }
            for tp in &removed {
                self.processed.remove(tp);
                self.committed.remove(tp);
            }
        }
        let (member_id, generation) = {
            let mut s = self.shared.borrow_mut();
            s.applied = s.applied.max(a.generation);
            s.held = new.clone();
            // One noted meanwhile is applied next, unless this covers it.
            let applied = s.applied;
            let covered = s.next.as_ref().is_some_and(|n| {
                n.generation < applied || (n.generation == applied && flatten(&n.partitions) == new)
            });
            if covered {
                s.next = None;
            }
            s.pending = a.pending;
            s.beat_now = true;
            s.wake_heartbeat();
            (s.member_id.clone(), s.applied)
        };
        // A new generation that moves nothing of this member's (another
        // member came or went) is not news to its application.
        if !added.is_empty() || !removed.is_empty() {
            self.push_event(GroupEvent::AssignmentChanged {
                member_id,
                generation,
                added: added.clone(),
                removed,
                partitions: new.into_iter().collect(),
            });
        }
        self.start(&added).await
    }

    /// Starts fetching `parts` at the group's committed offsets, or where
    /// the reset policy says for those without one.
    async fn start(&mut self, parts: &[TopicPartition]) -> Result<(), ClientError> {
        if parts.is_empty() {
            return Ok(());
        }
        self.unstarted.extend(parts.iter().cloned());
        let topics: BTreeSet<String> = parts.iter().map(|tp| tp.topic.clone()).collect();
        let topics: Vec<String> = topics.into_iter().collect();
        let admin = self.client.admin();
        let committed: BTreeMap<TopicPartition, u64> = self
            .with_retries(|| admin.fetch_offsets(&self.config.group, &topics))
            .await?
            .into_iter()
            .map(|o| (TopicPartition::new(&o.topic, o.partition), o.offset))
            .collect();
        let spec = self.config.auto_offset_reset.spec();
        for tp in parts {
            // A committed offset the partition no longer holds (records
            // expired, the topic made anew, an acks=1 write lost with its
            // leader) is found by the Fetch, and reset then: checking it
            // here against the high watermark would wrongly reset one just
            // past a new leader's watermark, which lags for a moment
            // after a failover.
            let position = match committed.get(tp) {
                Some(&o) => {
                    self.committed.insert(tp.clone(), o);
                    o
                }
                None => {
                    self.with_retries(|| admin.list_offsets(&tp.topic, tp.partition, spec))
                        .await?
                }
            };
            tracing::debug!(group = %self.config.group, partition = %tp, position, "starting");
            self.fetcher.add(&tp.topic, tp.partition, position);
            self.unstarted.remove(tp);
        }
        Ok(())
    }

    /// Moves each partition the fetcher parked on `OFFSET_OUT_OF_RANGE` to
    /// where the reset policy says, and tells the application.
    async fn reset_out_of_range(&mut self) -> Result<(), ClientError> {
        let admin = self.client.admin();
        while let Some((topic, partition, offset)) = self.fetcher.out_of_range() {
            let (earliest, latest) = self
                .with_retries(|| async {
                    let earliest = admin
                        .list_offsets(&topic, partition, OffsetSpec::Earliest)
                        .await?;
                    let latest = admin
                        .list_offsets(&topic, partition, OffsetSpec::Latest)
                        .await?;
                    Ok((earliest, latest))
                })
                .await?;
            let position = match self.config.auto_offset_reset {
                OffsetReset::Earliest => earliest,
                OffsetReset::Latest => latest,
            };
            let tp = TopicPartition::new(&topic, partition);
            tracing::debug!(group = %self.config.group, partition = %tp, offset, earliest, latest, position, "offset out of range; going on per the reset policy");
            self.fetcher.add(&topic, partition, position);
            self.push_event(GroupEvent::OutOfRange {
                partition: tp,
                offset,
                earliest,
                latest,
                position,
            });
        }
        Ok(())
    }

    /// Runs `f` again after a retriable failure or a lost connection, with
    /// a growing backoff, for up to the session timeout: as long as the
    /// member's session may still be alive, an outage (a broker restart) is
    /// worth waiting out.
    async fn with_retries<T, F, Fut>(&self, mut f: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, ClientError>>,
    {
        let started = Instant::now();
        let mut failures = 0u32;
        loop {
            match f().await {
                Err(e)
                    if (e.is_retriable() || matches!(e, ClientError::Connect { .. }))
                        && started.elapsed() < self.config.session_timeout =>
                {
                    failures = failures.saturating_add(1);
                    let wait = backoff(self.config.retry_backoff, failures);
                    tracing::debug!(group = %self.config.group, error = %e, ?wait, "group request failed; will try again");
                    Timer::new(wait).await;
                }
                r => return r,
            }
        }
    }

    /// JoinGroup as a new member (with the instance id, if any), then start
    /// the heartbeat task and the partitions given.
    async fn join_group(&mut self) -> Result<(), ClientError> {
        let req = Request::JoinGroup(JoinGroupRequest {
            group: self.config.group.clone(),
            member_id: String::new(),
            instance_id: self.config.instance_id.clone(),
            session_timeout_ms: u32::try_from(self.config.session_timeout.as_millis())
                .unwrap_or(u32::MAX),
            topics: self.config.topics.clone(),
        });
        let client = self.client.clone();
        let sent = Instant::now();
        let body = self.with_retries(|| client.request(&req)).await?;
        let resp = expect!(body, JoinGroup)?;
        let a = resp.assignment;
        let held = flatten(&a.partitions);
        {
            let mut s = self.shared.borrow_mut();
            s.member_id = resp.member_id.clone();
            s.applied = a.generation;
            s.held = held.clone();
            s.next = None;
            s.pending = a.pending;
            s.fenced = None;
            s.failed = None;
            s.last_ok_sent = sent;
            s.beat_now = false;
            s.heartbeat_interval = if resp.heartbeat_interval_ms == 0 {
                self.config.session_timeout / 3
            } else {
                Duration::from_millis(resp.heartbeat_interval_ms.into())
            };
        }
        self.heartbeat = Some(glommio::spawn_local(heartbeat_loop(
            self.client.clone(),
            self.config.group.clone(),
            self.shared.clone(),
        )));
        self.last_commit = Instant::now();
        let parts: Vec<TopicPartition> = held.into_iter().collect();
        self.push_event(GroupEvent::Joined {
            member_id: resp.member_id,
            generation: a.generation,
            partitions: parts.clone(),
        });
        self.start(&parts).await
    }

    /// The member was fenced: drop everything not committed and join anew;
    /// or, if another process took its instance id, stop for good and
    /// return that error.
    async fn rejoin(&mut self, why: &ClientError) -> Result<(), ClientError> {
        let (code, message) = match why {
            ClientError::Broker { code, message } => (*code, message.clone()),
            other => (ErrorCode::UnknownMember, other.to_string()),
        };
        let member_id = self.drop_membership();
        if code == ErrorCode::FencedInstanceId {
            let instance_id = self.config.instance_id.clone().unwrap_or_default();
            tracing::debug!(group = %self.config.group, %member_id, %instance_id, "replaced by another consumer with the same instance id; stopping");
            self.push_event(GroupEvent::Replaced {
                member_id,
                instance_id,
                message: message.clone(),
            });
            let e = ClientError::Broker { code, message };
            self.stopped = Some(e.clone());
            return Err(e);
        }
        if code != ErrorCode::UnknownMember && !member_id.is_empty() {
            // The coordinator may still count the old id as a member (after
            // STALE_GENERATION it does): leaving releases its partitions
            // now rather than when its session expires. Best effort: the
            // session's expiry is the fallback.
            let req = Request::LeaveGroup(LeaveGroupRequest {
                group: self.config.group.clone(),
                member_id: member_id.clone(),
            });
            if let Err(e) = self.client.request(&req).await {
                tracing::debug!(group = %self.config.group, %member_id, error = %e, "could not leave before rejoining");
            }
        }
        tracing::debug!(group = %self.config.group, %member_id, %code, "fenced; joining anew");
        self.push_event(GroupEvent::Fenced {
            member_id,
            code,
            message,
        });
        self.join_group().await
    }

    /// Stops the heartbeats and every partition's fetching and forgets
    /// what was not committed; returns the member id given up.
    fn drop_membership(&mut self) -> String {
        self.stop_heartbeat();
        let member_id = {
            let mut s = self.shared.borrow_mut();
            s.held.clear();
            s.next = None;
            s.fenced = None;
            s.pending = 0;
            std::mem::take(&mut s.member_id)
        };
        let parts: Vec<(String, u32)> = self
            .fetcher
            .partitions()
            .map(|(t, p)| (t.to_owned(), p))
            .collect();
        for (t, p) in parts {
            self.fetcher.remove(&t, p);
        }
        self.processed.clear();
        self.committed.clear();
        self.last_batch.clear();
        self.unstarted.clear();
        member_id
    }

    fn stop_heartbeat(&mut self) {
        // Dropping the task cancels it.
        self.heartbeat = None;
        self.shared.borrow_mut().heartbeat_waker = None;
    }

    fn push_event(&mut self, e: GroupEvent) {
        if self.events.len() >= self.config.max_events.max(1) {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }
}

/// Answers that mean the member is no longer one: it must join anew
/// (`UNKNOWN_MEMBER`), or stop for good (`FENCED_INSTANCE_ID`; see
/// [`GroupConsumer::rejoin`]).
fn is_fenced(e: &ClientError) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::UnknownMember | ErrorCode::FencedInstanceId)
    )
}

/// Checks a static member's instance id as the coordinator would (SPEC.md
/// 5.9), so a bad one is reported as such rather than as a bad group id.
fn check_instance_id(id: &str) -> Result<(), ClientError> {
    validate_group_id(id).map_err(|e| {
        let why = match e {
            GroupIdError::Empty => "it is empty".to_owned(),
            GroupIdError::TooLong(n) => format!("it is {n} bytes long"),
            GroupIdError::BadChar => {
                "it holds a space or a character that is not printable ASCII".to_owned()
            }
        };
        ClientError::InvalidInput(format!(
            "{id:?} is not a valid instance id ({why}): an instance id is 1 to \
             {MAX_GROUP_ID_LEN} bytes of printable ASCII without spaces"
        ))
    })
}

fn retry_commit(e: &ClientError) -> bool {
    e.code() == Some(ErrorCode::StaleGeneration) || e.is_retriable()
}

/// The heartbeat task: one Heartbeat per interval (or per ~100 ms while
/// partitions are pending, or at once when asked), its answer noted in
/// `shared`. Ends when the member is fenced or a heartbeat fails for good;
/// the consumer starts a new one when it joins again.
async fn heartbeat_loop(client: Client, group: String, shared: Rc<RefCell<Shared>>) {
    const SOON: Duration = Duration::from_millis(100);
    loop {
        let delay = {
            let s = shared.borrow();
            if s.pending > 0 {
                s.heartbeat_interval.min(SOON)
            } else {
                s.heartbeat_interval
            }
        };
        let mut timer = Timer::new(delay);
        future::poll_fn(|cx| {
            let mut s = shared.borrow_mut();
            if std::mem::take(&mut s.beat_now) {
                return Poll::Ready(());
            }
            if std::pin::Pin::new(&mut timer).poll(cx).is_ready() {
                return Poll::Ready(());
            }
            s.heartbeat_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
        let req = {
            let s = shared.borrow();
            Request::Heartbeat(HeartbeatRequest {
                group: group.clone(),
                member_id: s.member_id.clone(),
                generation: s.applied,
            })
        };
        let sent = Instant::now();
        let result = match client.request(&req).await {
            Ok(body) => expect!(body, Heartbeat),
            Err(e) => Err(e),
        };
        let mut s = shared.borrow_mut();
        match result {
            Ok(resp) => {
                s.heard(sent);
                s.note(resp.assignment);
            }
            Err(ClientError::Broker { code, message })
                if matches!(
                    code,
                    ErrorCode::UnknownMember
                        | ErrorCode::StaleGeneration
                        | ErrorCode::FencedInstanceId
                ) =>
            {
                // Noted, and the consumer hands out nothing more until it
                // has acted on it (see `still_member`).
                // STALE_GENERATION here means the member is ahead of the
                // group (its state was lost): only a new join settles it.
                s.fenced = Some((code, message));
                s.wake_consumer();
                return;
            }
            Err(e) if e.is_retriable() || matches!(e, ClientError::Connect { .. }) => {
                tracing::debug!(%group, error = %e, "heartbeat failed; will try again");
            }
            Err(e) => {
                tracing::warn!(%group, error = %e, "heartbeat failed");
                s.failed = Some(e);
                s.wake_consumer();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(t: &str, p: &[u32]) -> TopicPartitions {
        TopicPartitions {
            topic: t.into(),
            partitions: p.to_vec(),
        }
    }

    fn shared() -> Shared {
        Shared {
            member_id: "m".into(),
            applied: 2,
            held: flatten(&[tp("a", &[0, 1])]),
            ..Shared::new(Duration::from_secs(1))
        }
    }

    #[test]
    fn note_keeps_what_must_be_applied() {
        let mut s = shared();
        // Same generation, same partitions: nothing to do.
        s.note(MemberAssignment {
            generation: 2,
            partitions: vec![tp("a", &[1, 0])],
            pending: 0,
        });
        assert!(s.next.is_none());
        // Same generation, a pending partition released to us.
        s.note(MemberAssignment {
            generation: 2,
            partitions: vec![tp("a", &[0, 1, 2])],
            pending: 0,
        });
        assert_eq!(s.next.as_ref().map(|n| n.generation), Some(2));
        // A newer generation replaces it; an older answer is ignored.
        s.note(MemberAssignment {
            generation: 3,
            partitions: vec![tp("a", &[0])],
            pending: 1,
        });
        s.note(MemberAssignment {
            generation: 2,
            partitions: vec![tp("a", &[0, 1])],
            pending: 0,
        });
        assert_eq!(s.next.as_ref().map(|n| n.generation), Some(3));
        assert_eq!(s.current_generation(), 3);
        assert_eq!(s.pending, 1);
    }

    #[test]
    fn membership_is_counted_from_the_send_with_a_heartbeat_of_margin() {
        let session = Duration::from_secs(3);
        let mut s = shared(); // heartbeats every second
        let now = Instant::now() + Duration::from_secs(10);
        s.last_ok_sent = now - Duration::from_millis(1900);
        assert!(s.surely_member(session, now));
        // Within the session, but not by a heartbeat interval: ask first.
        s.last_ok_sent = now - Duration::from_millis(2100);
        assert!(!s.surely_member(session, now));
        // An answer to an older request does not move it back.
        s.heard(now - Duration::from_secs(5));
        assert!(!s.surely_member(session, now));
        s.heard(now - Duration::from_millis(100));
        assert!(s.surely_member(session, now));
    }

    #[test]
    fn topic_partition_prints_as_topic_slash_partition() {
        assert_eq!(TopicPartition::new("tasks", 3).to_string(), "tasks/3");
    }
}
