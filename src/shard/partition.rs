//! One partition owned by this core: its log, its part in replication
//! ([`Role`]), and the long polls waiting for the log or the high
//! watermark to move.

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use event_listener::Event;

use super::failure::Failure;
use super::messages::{Fetched, Produced};
use super::replica::{epoch32, Follower, Role};
use crate::cluster::metadata::{Command, NodeId};
use crate::log::{LogConfig, LogError, PartitionLog};
use ringmq_protocol::{Acks, EpochEnd, ErrorCode, ReplicaFetchRequest, ReplicaFetchResponse};

/// Offset spec for the first offset still in the log.
pub const EARLIEST: i64 = -2;
/// Offset spec for the offset the next record will get.
pub const LATEST: i64 = -1;

pub struct Partition {
    log: PartitionLog,
    /// Signalled after every append and every move of the high watermark,
    /// so long polls and acks=all waiters look again.
    appended: Event,
    /// Set when the partition is being closed or deleted: long polls answer now.
    closing: Cell<bool>,
    role: RefCell<Role>,
    /// Bumped at every change of role, so a follower's fetch loop knows
    /// when it is no longer wanted.
    generation: Cell<u64>,
}

impl Partition {
    /// Opens the log; `role` is [`Role::Standalone`] on a single node, and
    /// [`Role::Offline`] in a cluster until the view says more.
    pub async fn open(dir: &Path, config: LogConfig, role: Role) -> Result<Self, Failure> {
        let log = PartitionLog::open(dir, config).await?;
        Ok(Partition {
            log,
            appended: Event::new(),
            closing: Cell::new(false),
            role: RefCell::new(role),
            generation: Cell::new(0),
        })
    }

    pub fn log(&self) -> &PartitionLog {
        &self.log
    }

    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Takes a new role; returns the follower's target when this call made
    /// the partition a follower of a new leader (the caller starts its
    /// fetch loop).
    pub fn set_role(&self, make: impl FnOnce(&Role, u64) -> Role) -> Option<Follower> {
        let mut role = self.role.borrow_mut();
        let new = make(&role, self.log.next_offset());
        let changed = match (&*role, &new) {
            (Role::Leader(a), Role::Leader(b)) => a.epoch != b.epoch,
            (Role::Follower(a), Role::Follower(b)) => a.epoch != b.epoch || a.leader != b.leader,
            (Role::Standalone, Role::Standalone) => false,
            (Role::Offline { .. }, Role::Offline { .. }) => false,
            _ => true,
        };
        *role = new;
        drop(role);
        if !changed {
            return None;
        }
        self.generation.set(self.generation.get() + 1);
        // Waiters re-check: an acks=all produce under a leadership that
        // ended must not wait out its timeout.
        self.appended.notify(usize::MAX);
        match &*self.role.borrow() {
            Role::Follower(f) => Some(f.clone()),
            _ => None,
        }
    }

    /// Refuses what a non-leader must not serve.
    fn check_leads(&self) -> Result<(), Failure> {
        match &*self.role.borrow() {
            Role::Standalone | Role::Leader(_) => Ok(()),
            Role::Follower(f) => Err(Failure::new(
                ErrorCode::NotLeader,
                format!(
                    "this node follows node {} at {} for this partition",
                    f.leader, f.addr
                ),
            )),
            Role::Offline { why } => Err(Failure::new(ErrorCode::NotLeader, why.clone())),
        }
    }

    pub fn high_watermark(&self) -> u64 {
        self.role.borrow().high_watermark(self.log.next_offset())
    }

    /// Appends a batch; returns once it is as durable as the flush policy
    /// promises and, with acks=all, held by every in-sync copy (at most
    /// `timeout`).
    pub async fn produce(
        &self,
        batch: Bytes,
        acks: Acks,
        timeout: Duration,
    ) -> Result<Produced, Failure> {
        if self.closing.get() {
            return Err(Failure::new(
                ErrorCode::ShuttingDown,
                "partition is closing",
            ));
        }
        let (appended, generation) = self.append_leading(&batch, acks == Acks::All)?;
        self.log.wait_durable(appended.next_offset).await?;
        if acks == Acks::All {
            self.wait_replicated(appended.next_offset, generation, timeout)
                .await?;
        }
        Ok(Produced {
            base_offset: appended.base_offset,
            log_start_offset: self.log.start_offset(),
        })
    }

    /// The leader's append: stamps the batch with the leader epoch (0 on a
    /// single node). With `all_copies`, refused unless the in-sync set has
    /// `min_insync` copies, as acks=all is. Returns where it went and the
    /// role generation it was appended under (for [`Partition::wait_replicated`]).
    pub fn append_leading(
        &self,
        batch: &[u8],
        all_copies: bool,
    ) -> Result<(crate::log::Appended, u64), Failure> {
        if self.closing.get() {
            return Err(Failure::new(
                ErrorCode::ShuttingDown,
                "partition is closing",
            ));
        }
        self.check_leads()?;
        let epoch = {
            let role = self.role.borrow();
            match &*role {
                Role::Leader(l) => {
                    if all_copies && l.isr.len() < l.min_insync {
                        return Err(Failure::new(
                            ErrorCode::NotEnoughReplicas,
                            format!(
                                "{} in-sync copies (nodes {:?}), fewer than the {} acks=all needs",
                                l.isr.len(),
                                l.isr,
                                l.min_insync
                            ),
                        ));
                    }
                    epoch32(l.epoch)
                }
                _ => 0,
            }
        };
        let appended = self.log.append(batch, epoch)?;
        self.moved();
        Ok((appended, self.generation.get()))
    }

    /// Whether this node serves the partition's writes: it leads it, or it
    /// is a single node.
    pub fn leads(&self) -> bool {
        matches!(&*self.role.borrow(), Role::Standalone | Role::Leader(_))
    }

    /// After the log grew: a leader alone in sync moves its high
    /// watermark; every waiter looks again.
    fn moved(&self) {
        if let Role::Leader(l) = &mut *self.role.borrow_mut() {
            l.recompute_hw(self.log.next_offset());
        }
        self.appended.notify(usize::MAX);
    }

    /// Waits until the high watermark reaches `next_offset` under the
    /// leadership the batch was appended in (`generation`, from
    /// [`Partition::append_leading`]).
    pub async fn wait_replicated(
        &self,
        next_offset: u64,
        generation: u64,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let deadline = Instant::now() + timeout;
        loop {
            let listener = self.appended.listen();
            if self.generation.get() != generation {
                return Err(Failure::new(
                    ErrorCode::NotLeader,
                    "leadership moved before the batch reached every in-sync copy; it may or may not be kept",
                ));
            }
            if self.high_watermark() >= next_offset {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline || self.closing.get() {
                return Err(Failure::new(
                    ErrorCode::RequestTimedOut,
                    format!("the batch did not reach every in-sync copy within {timeout:?}; it may still"),
                ));
            }
            let _ = glommio::timer::timeout(deadline - now, async {
                listener.await;
                Ok(())
            })
            .await;
        }
    }

    /// Serves a follower's ReplicaFetch (SPEC.md 5.19); also returns the
    /// ISR change the leader now wants, for the caller to send.
    pub async fn replica_fetch(
        &self,
        req: &ReplicaFetchRequest,
        lag: Duration,
    ) -> Result<(ReplicaFetchResponse, Option<Command>), Failure> {
        let log_end = self.log.next_offset();
        let change = {
            let mut role = self.role.borrow_mut();
            let Role::Leader(l) = &mut *role else {
                drop(role);
                self.check_leads()?;
                return Err(Failure::new(
                    ErrorCode::NotLeader,
                    "this node does not lead the partition",
                ));
            };
            let mine = epoch32(l.epoch);
            if req.leader_epoch < mine {
                return Err(Failure::new(
                    ErrorCode::StaleLeaderEpoch,
                    format!("the leader epoch is {mine}, not {}", req.leader_epoch),
                ));
            }
            if req.leader_epoch > mine {
                return Err(Failure::new(
                    ErrorCode::NotLeader,
                    format!(
                        "this node leads at epoch {mine}, older than {}",
                        req.leader_epoch
                    ),
                ));
            }
            if !l.followers.contains_key(&req.replica) {
                return Err(Failure::new(
                    ErrorCode::InvalidRequest,
                    format!("node {} holds no copy of this partition", req.replica),
                ));
            }
            if let Some(d) = self.divergence(req) {
                return Ok((
                    ReplicaFetchResponse {
                        high_watermark: l.hw,
                        log_start_offset: self.log.start_offset(),
                        diverging: Some(d),
                        records: Bytes::new(),
                    },
                    None,
                ));
            }
            if req.fetch_offset > log_end {
                return Err(Failure::new(
                    ErrorCode::OffsetOutOfRange,
                    format!(
                        "offset {} is past the leader's log end {log_end}",
                        req.fetch_offset,
                    ),
                ));
            }
            if req.fetch_offset < self.log.start_offset() {
                // What the follower lacks is gone here (retention, or a
                // compaction of `__offsets`): it starts over at this log's
                // start, told by `log_start_offset`.
                return Ok((
                    ReplicaFetchResponse {
                        high_watermark: l.hw,
                        log_start_offset: self.log.start_offset(),
                        diverging: None,
                        records: Bytes::new(),
                    },
                    None,
                ));
            }
            let now = Instant::now();
            if l.fetched(req.replica, req.fetch_offset, log_end, now) {
                self.appended.notify(usize::MAX);
            }
            l.isr_change(now, lag, Some(req.replica))
        };
        let max_wait = Duration::from_millis(u64::from(
            req.max_wait_ms
                .min(ringmq_protocol::limits::MAX_FETCH_WAIT_MS),
        ));
        let deadline = Instant::now() + max_wait;
        let max_bytes = req
            .max_bytes
            .clamp(1, ringmq_protocol::limits::MAX_FETCH_BYTES) as usize;
        loop {
            let listener = self.appended.listen();
            let end = self.log.next_offset();
            let records = self.log.read(req.fetch_offset, max_bytes, end).await?;
            let now = Instant::now();
            if !records.is_empty() || now >= deadline || self.closing.get() {
                return Ok((
                    ReplicaFetchResponse {
                        high_watermark: self.high_watermark(),
                        log_start_offset: self.log.start_offset(),
                        diverging: None,
                        records,
                    },
                    change,
                ));
            }
            let _ = glommio::timer::timeout(deadline - now, async {
                listener.await;
                Ok(())
            })
            .await;
        }
    }

    /// Where the follower's history leaves the leader's, if it does: the
    /// largest epoch not after its last one that this log has, and where
    /// that epoch ends here (KIP-320).
    fn divergence(&self, req: &ReplicaFetchRequest) -> Option<EpochEnd> {
        let last = u32::try_from(req.last_fetched_epoch).ok()?;
        match self.log.end_offset_for_epoch(last) {
            Some((epoch, end)) if epoch == last && end >= req.fetch_offset => None,
            Some((epoch, end_offset)) => Some(EpochEnd { epoch, end_offset }),
            // None of that history here: nothing of it is kept.
            None => Some(EpochEnd {
                epoch: 0,
                end_offset: self.log.start_offset(),
            }),
        }
    }

    /// The leader's ISR change due now (laggards out), for the shard's
    /// periodic check.
    pub fn isr_check(&self, lag: Duration) -> Option<Command> {
        match &mut *self.role.borrow_mut() {
            Role::Leader(l) => l.isr_change(Instant::now(), lag, None),
            _ => None,
        }
    }

    /// A follower appends what its leader sent and notes the leader's high
    /// watermark.
    pub fn append_replicated(&self, records: &[u8], leader_hw: u64) -> Result<(), Failure> {
        if !records.is_empty() {
            self.log.append_replicas(records)?;
            self.appended.notify(usize::MAX);
        }
        if let Role::Follower(f) = &mut *self.role.borrow_mut() {
            f.hw = f.hw.max(leader_hw.min(self.log.next_offset()));
        }
        Ok(())
    }

    /// A follower follows its leader's log start: a log that ends before
    /// it starts over there (nothing in between is left to fetch), and
    /// whole segments below it go, as they went on the leader. Returns
    /// whether the log started over.
    pub async fn follow_log_start(&self, leader_start: u64) -> Result<bool, Failure> {
        if leader_start > self.log.next_offset() {
            self.log.restart_at(leader_start).await?;
            self.appended.notify(usize::MAX);
            return Ok(true);
        }
        if self.log.segments_below(leader_start) > 0 {
            self.log.drop_segments_below(leader_start).await?;
        }
        Ok(false)
    }

    /// A follower whose log diverged from its leader's cuts it back: to the
    /// leader's end of `d.epoch`, or less where its own history of that
    /// epoch ends sooner.
    pub async fn truncate_diverged(&self, d: EpochEnd) -> Result<u64, Failure> {
        let own = self
            .log
            .end_offset_for_epoch(d.epoch)
            .map_or(self.log.start_offset(), |(_, end)| end);
        let to = d.end_offset.min(own).min(self.log.next_offset());
        self.log.truncate_to(to).await?;
        if let Role::Follower(f) = &mut *self.role.borrow_mut() {
            f.hw = f.hw.min(to);
        }
        Ok(to)
    }

    /// The follower's target while this is the generation it was started in.
    pub fn following(&self, generation: u64) -> Option<Follower> {
        if self.generation.get() != generation || self.closing.get() {
            return None;
        }
        match &*self.role.borrow() {
            Role::Follower(f) => Some(f.clone()),
            _ => None,
        }
    }

    /// This node's id for the partition's followers, if it leads.
    pub fn leader_of(&self) -> Option<NodeId> {
        match &*self.role.borrow() {
            Role::Leader(l) => Some(l.me),
            _ => None,
        }
    }

    /// Reads from `offset`; with nothing (or less than `min_bytes`) there, waits
    /// for appends until `max_wait` has passed.
    pub async fn fetch(
        &self,
        offset: u64,
        max_bytes: u32,
        min_bytes: u32,
        max_wait: Duration,
    ) -> Result<Fetched, Failure> {
        self.check_leads()?;
        let deadline = Instant::now() + max_wait;
        loop {
            // Listen before reading, so an append between the read and the wait is not missed.
            let listener = self.appended.listen();
            let high_watermark = self.high_watermark();
            if offset > high_watermark && offset <= self.log.next_offset() {
                // Past what is committed but in the log: nothing to read yet.
                let now = Instant::now();
                if now >= deadline || self.closing.get() {
                    return Ok(Fetched {
                        records: Bytes::new(),
                        high_watermark,
                        log_start_offset: self.log.start_offset(),
                    });
                }
                let _ = glommio::timer::timeout(deadline - now, async {
                    listener.await;
                    Ok(())
                })
                .await;
                continue;
            }
            let records = self
                .log
                .read(offset, max_bytes as usize, high_watermark)
                .await?;
            let now = Instant::now();
            let enough = !records.is_empty() && records.len() >= min_bytes as usize;
            if enough || now >= deadline || self.closing.get() {
                return Ok(Fetched {
                    records,
                    high_watermark,
                    log_start_offset: self.log.start_offset(),
                });
            }
            let wait = async {
                listener.await;
                Ok(())
            };
            let _ = glommio::timer::timeout(deadline - now, wait).await;
        }
    }

    pub fn list_offsets(&self, spec: i64) -> Result<u64, Failure> {
        self.check_leads()?;
        match spec {
            EARLIEST => Ok(self.log.start_offset()),
            LATEST => Ok(self.high_watermark()),
            _ => Err(Failure::new(
                ErrorCode::InvalidRequest,
                format!("offset spec {spec} is not supported: use -2 (earliest) or -1 (latest)"),
            )),
        }
    }

    /// Publishes where the log stands to the metrics.
    pub fn report(&self, topic: &str, partition: u32) {
        crate::metrics::partition(
            topic,
            partition,
            self.log.start_offset(),
            self.log.next_offset(),
            self.log.size_bytes(),
        );
    }

    pub async fn apply_retention(&self, now_ms: i64) -> Result<usize, LogError> {
        self.log.apply_retention(now_ms).await
    }

    /// Refuses new appends and wakes every long poll.
    pub fn shut_down(&self) {
        self.closing.set(true);
        self.appended.notify(usize::MAX);
    }

    /// Syncs the log and marks it cleanly closed; later appends are refused.
    pub async fn close(&self) -> Result<(), LogError> {
        self.shut_down();
        self.log.clone().close().await
    }
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("next_offset", &self.log.next_offset())
            .finish()
    }
}
