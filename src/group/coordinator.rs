//! The state machine of one consumer group (SPEC 5.9-5.15): who is a
//! member, what each member is due (the *target*, from [`assign`]), and who
//! holds each partition right now.
//!
//! Pure: no I/O and no clock. Time comes in as `now_ms`, the partition
//! counts of the topics as a [`TopicCounts`] snapshot of the catalogue, and
//! the caller (the shard that coordinates the group) persists what
//! [`Group::take_dirty`] says changed. That keeps every rule testable in
//! microseconds and deterministic.
//!
//! # Target and holdings
//!
//! The target says where each partition should be; a holding says where it
//! is. A partition moves to its target owner only once its holder let it go:
//! the holder heartbeated with the current generation (it applied an
//! assignment without the partition, and committed its progress on it), or
//! left, or expired. A partition nobody holds goes to its target owner at
//! once. So a partition is never held by two members, and a member is only
//! ever told to consume what it holds.
//!
//! The target changes only together with a generation bump, which is what
//! makes "acked the current generation" mean "applied an assignment without
//! this partition" for every partition a member holds outside its target.
//! Besides the membership changes of SPEC 5.9, a change of the group's
//! partition set (a topic deleted) also bumps the generation for that reason.
//!
//! # Fenced members
//!
//! A static member taking another's place (same instance id, SPEC 5.9)
//! fences the old member id: the group remembers the last
//! [`MAX_FENCED_PER_GROUP`] such ids and answers `FENCED_INSTANCE_ID` to
//! them, so the old process stops for good instead of rejoining and taking
//! the place back (two processes with one instance id would otherwise swap
//! forever). An id pushed out of that window reads as unknown.
//!
//! # Generation
//!
//! The generation is a `u32` that never wraps: going back to 1 would make a
//! stale member's ack look current. Joins of new members are refused once
//! fewer than [`GENERATION_RESERVE`] generations are left, which keeps
//! enough for the leaves, expiries and topic changes of the members already
//! in; should even those run out, the generation stays at `u32::MAX`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use xxhash_rust::xxh3::xxh3_64;

use ringmq_protocol::limits::{
    self, MAX_GROUP_MEMBERS, MAX_GROUP_TOPICS, MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS,
};
use ringmq_protocol::{
    DescribeGroupResponse, ErrorCode, GroupState, GroupSummary, JoinGroupRequest, MemberAssignment,
    MemberDescription, PartitionDescription, PartitionOffset, TopicPartitions,
};

use super::assignor::{assign, Assignment, MemberId, PartitionId};
use crate::shard::Failure;

/// Partition count of every topic that exists, by name: the catalogue as the
/// coordinating core sees it.
pub type TopicCounts = BTreeMap<String, u32>;

/// Longest member id the coordinator makes (SPEC 5.9 allows 64 bytes).
pub const MAX_MEMBER_ID_LEN: usize = 64;

/// Fenced member ids a group remembers (the newest ones). Enough for any
/// realistic number of processes wrongly sharing an instance id; bounded
/// because every static join can fence one.
pub const MAX_FENCED_PER_GROUP: usize = 32;

/// Generations kept back for leaves, expiries and topic changes once joins
/// are refused (see the module doc). Far more than the bumps the at most
/// [`MAX_GROUP_MEMBERS`] members can cause by leaving.
pub const GENERATION_RESERVE: u32 = 1 << 20;

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Static membership: a join with this instance id takes this member's place.
    pub instance_id: Option<String>,
    pub session_timeout_ms: u32,
    /// When the member last sent a request of the group (ms, caller's clock).
    pub last_seen_ms: i64,
    /// The newest generation this member said it applied (its heartbeat's).
    /// Equal to the group's generation, it releases what the member holds
    /// outside its target.
    pub acked_generation: u32,
}

/// A member as stored in the group's membership record: everything but
/// `last_seen_ms`, which restarts at the restore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMember {
    pub member_id: MemberId,
    pub instance_id: Option<String>,
    pub session_timeout_ms: u32,
    pub acked_generation: u32,
    pub target: Vec<PartitionId>,
    pub held: Vec<PartitionId>,
}

/// The durable part of a group's membership (SPEC 5.9, Durability).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub generation: u32,
    pub topics: Vec<String>,
    pub members: Vec<StoredMember>,
    /// Member ids a static member replaced, oldest first.
    pub fenced: Vec<MemberId>,
}

/// One consumer group. See the module documentation.
#[derive(Debug, Clone)]
pub struct Group {
    id: String,
    /// 0 until the first member joins; then bumped on every change.
    generation: u32,
    /// Sorted; set by the first member of an empty group, empty without members.
    topics: Vec<String>,
    members: BTreeMap<MemberId, Member>,
    /// What each member is due at this generation.
    target: Assignment,
    /// Who holds each partition now. Only members hold, and only partitions
    /// of the group's topics.
    holders: BTreeMap<PartitionId, MemberId>,
    /// Committed offsets, including those of topics the group no longer
    /// consumes (but not of deleted topics: see [`Group::drop_topic`]).
    offsets: BTreeMap<PartitionId, u64>,
    /// Member ids a static member replaced, oldest first, at most
    /// [`MAX_FENCED_PER_GROUP`].
    fenced: VecDeque<MemberId>,
    /// Member ids made so far, mixed into the next id so two joins in the
    /// same millisecond differ.
    ids_made: u64,
    /// The membership changed since the last `take_dirty`: it must be stored.
    dirty: bool,
}

fn failure(code: ErrorCode, message: impl Into<String>) -> Failure {
    Failure::new(code, message)
}

/// Checks a group id or instance id (SPEC 5.9): `INVALID_GROUP_ID` if bad.
pub fn validate_group_id(what: &str, id: &str) -> Result<(), Failure> {
    limits::validate_group_id(id)
        .map_err(|e| failure(ErrorCode::InvalidGroupId, format!("{what}: {e}")))
}

impl Group {
    /// A group nobody has joined yet.
    pub fn new(id: impl Into<String>) -> Group {
        Group {
            id: id.into(),
            generation: 0,
            topics: Vec::new(),
            members: BTreeMap::new(),
            target: Assignment::new(),
            holders: BTreeMap::new(),
            offsets: BTreeMap::new(),
            fenced: VecDeque::new(),
            ids_made: 0,
            dirty: false,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    pub fn members(&self) -> &BTreeMap<MemberId, Member> {
        &self.members
    }

    pub fn offsets(&self) -> &BTreeMap<PartitionId, u64> {
        &self.offsets
    }

    /// The holder of each held partition.
    pub fn holders(&self) -> &BTreeMap<PartitionId, MemberId> {
        &self.holders
    }

    /// Whether the membership changed since the last call (and clears it).
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// The membership must be stored again (a write of it failed).
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Nothing worth keeping: no member and no committed offset. Such a
    /// group is forgotten (its generation and fenced ids with it); joining
    /// it again starts at generation 1.
    pub fn is_void(&self) -> bool {
        self.members.is_empty() && self.offsets.is_empty()
    }

    /// Whether `member_id` was fenced by a static member taking its place.
    pub fn is_fenced(&self, member_id: &str) -> bool {
        self.fenced.iter().any(|f| f == member_id)
    }

    pub fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self
            .target
            .iter()
            .all(|(m, due)| due.iter().all(|p| self.holders.get(p) == Some(m)))
            && self
                .holders
                .iter()
                .all(|(p, m)| self.target.get(m).is_some_and(|due| due.contains(p)))
        {
            GroupState::Stable
        } else {
            GroupState::Rebalancing
        }
    }

    /// JoinGroup (SPEC 5.10). A new member bumps the generation; a static
    /// member taking its own place back, or a known member rejoining, does
    /// not.
    pub fn join(
        &mut self,
        req: &JoinGroupRequest,
        now_ms: i64,
        counts: &TopicCounts,
    ) -> Result<(MemberId, MemberAssignment), Failure> {
        if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&req.session_timeout_ms) {
            return Err(failure(
                ErrorCode::InvalidSessionTimeout,
                format!(
                    "session timeout {} ms is outside {MIN_SESSION_TIMEOUT_MS}..={MAX_SESSION_TIMEOUT_MS}",
                    req.session_timeout_ms
                ),
            ));
        }
        if let Some(instance) = &req.instance_id {
            validate_group_id("instance id", instance)?;
        }
        let topics: Vec<String> = req
            .topics
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if topics.is_empty() || topics.len() > MAX_GROUP_TOPICS {
            return Err(failure(
                ErrorCode::InvalidRequest,
                format!(
                    "a group consumes 1..={MAX_GROUP_TOPICS} topics, not {}",
                    topics.len()
                ),
            ));
        }
        if let Some(missing) = topics.iter().find(|t| !counts.contains_key(*t)) {
            return Err(Failure::unknown_topic(missing));
        }
        if !self.members.is_empty() && topics != self.topics {
            return Err(failure(
                ErrorCode::InvalidRequest,
                format!(
                    "group {:?} consumes {:?}; every member must name the same topics",
                    self.id, self.topics
                ),
            ));
        }

        if !req.member_id.is_empty() {
            let gone = self.gone(&req.member_id);
            let member = self.members.get_mut(&req.member_id).ok_or(gone)?;
            member.last_seen_ms = now_ms;
            let answer = self.assignment(&req.member_id);
            return Ok((req.member_id.clone(), answer));
        }

        let replaced = req.instance_id.as_ref().and_then(|instance| {
            self.members
                .iter()
                .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                .map(|(id, _)| id.clone())
        });
        if replaced.is_none() {
            // Only a new member grows the group or bumps the generation; a
            // static member taking a place back does neither.
            if self.members.len() >= MAX_GROUP_MEMBERS {
                return Err(failure(
                    ErrorCode::GroupFull,
                    format!(
                        "group {:?} already has {MAX_GROUP_MEMBERS} members",
                        self.id
                    ),
                ));
            }
            if self.generation >= u32::MAX - GENERATION_RESERVE {
                return Err(failure(
                    ErrorCode::InvalidRequest,
                    format!(
                        "group {:?} has used up its generations ({}); it takes no new \
                         members until it is forgotten (no members, no committed offsets)",
                        self.id, self.generation
                    ),
                ));
            }
        }
        let id = self.new_member_id(now_ms);
        let member = Member {
            instance_id: req.instance_id.clone(),
            session_timeout_ms: req.session_timeout_ms,
            last_seen_ms: now_ms,
            acked_generation: 0,
        };
        match replaced {
            Some(old) => {
                // The new process takes the old one's place, holdings and
                // target, under a new id that fences the old process.
                self.members.remove(&old);
                self.fenced.push_back(old.clone());
                while self.fenced.len() > MAX_FENCED_PER_GROUP {
                    self.fenced.pop_front();
                }
                self.members.insert(id.clone(), member);
                if let Some(due) = self.target.remove(&old) {
                    self.target.insert(id.clone(), due);
                }
                for holder in self.holders.values_mut() {
                    if *holder == old {
                        *holder = id.clone();
                    }
                }
                self.dirty = true;
            }
            None => {
                if self.members.is_empty() {
                    self.topics = topics;
                }
                self.members.insert(id.clone(), member);
                self.bump(counts);
            }
        }
        let answer = self.assignment(&id);
        Ok((id, answer))
    }

    /// Heartbeat (SPEC 5.11): a sign of life, and the member's ack of
    /// `generation`, which may release partitions to their new owners.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation: u32,
        now_ms: i64,
    ) -> Result<MemberAssignment, Failure> {
        let current = self.generation;
        let gone = self.gone(member_id);
        let member = self.members.get_mut(member_id).ok_or(gone)?;
        if generation > current {
            return Err(failure(
                ErrorCode::StaleGeneration,
                format!("generation {generation} is newer than the group's {current}"),
            ));
        }
        member.last_seen_ms = now_ms;
        member.acked_generation = member.acked_generation.max(generation);
        self.grant();
        Ok(self.assignment(member_id))
    }

    /// LeaveGroup (SPEC 5.12): the member's partitions are released at once.
    pub fn leave(&mut self, member_id: &str, counts: &TopicCounts) -> Result<(), Failure> {
        if self.members.remove(member_id).is_none() {
            return Err(self.gone(member_id));
        }
        self.bump(counts);
        Ok(())
    }

    /// Checks a CommitOffsets (SPEC 5.13) and returns the offsets to store;
    /// nothing changes but the member's `last_seen`. The caller stores them
    /// and then calls [`Group::apply_commit`].
    pub fn check_commit(
        &mut self,
        member_id: &str,
        generation: u32,
        offsets: &[PartitionOffset],
        now_ms: i64,
    ) -> Result<Vec<(PartitionId, u64)>, Failure> {
        let gone = self.gone(member_id);
        let member = self.members.get_mut(member_id).ok_or(gone)?;
        member.last_seen_ms = now_ms;
        if generation != self.generation {
            return Err(failure(
                ErrorCode::StaleGeneration,
                format!(
                    "generation {generation} is not the group's current {}; heartbeat to learn it",
                    self.generation
                ),
            ));
        }
        if offsets.is_empty() {
            return Err(failure(ErrorCode::InvalidRequest, "no offsets to commit"));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(offsets.len());
        for o in offsets {
            let p = PartitionId::new(o.topic.clone(), o.partition);
            if !seen.insert(p.clone()) {
                return Err(failure(
                    ErrorCode::InvalidRequest,
                    format!("partition {p} is named twice"),
                ));
            }
            if self.holders.get(&p).map(String::as_str) != Some(member_id) {
                return Err(failure(
                    ErrorCode::PartitionNotAssigned,
                    format!("member {member_id:?} does not hold {p}"),
                ));
            }
            out.push((p, o.offset));
        }
        Ok(out)
    }

    /// Records committed offsets (after `check_commit`, or replayed from the log).
    pub fn apply_commit(&mut self, offsets: impl IntoIterator<Item = (PartitionId, u64)>) {
        self.offsets.extend(offsets);
    }

    /// The committed offsets of `partitions` now (`None`: none committed),
    /// to undo a commit with [`Group::undo_commit`].
    pub fn offsets_of<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a PartitionId>,
    ) -> Vec<(PartitionId, Option<u64>)> {
        partitions
            .into_iter()
            .map(|p| (p.clone(), self.offsets.get(p).copied()))
            .collect()
    }

    /// Undoes a commit that could not be stored: each partition still
    /// holding the commit's value gets its value from before back. One a
    /// later commit changed keeps the later value. Returns what was put
    /// back, for the caller to store.
    pub fn undo_commit(
        &mut self,
        committed: &[(PartitionId, u64)],
        before: &[(PartitionId, Option<u64>)],
    ) -> Vec<(PartitionId, Option<u64>)> {
        let mut restored = Vec::new();
        for ((p, ours), (_, old)) in committed.iter().zip(before) {
            if self.offsets.get(p) != Some(ours) {
                continue;
            }
            match old {
                Some(o) => self.offsets.insert(p.clone(), *o),
                None => self.offsets.remove(p),
            };
            restored.push((p.clone(), *old));
        }
        restored
    }

    /// Drops the committed offsets of `partitions` of `topic` (all of them
    /// if `None`), as a stored drop record says.
    pub fn drop_offsets(&mut self, topic: &str, partitions: Option<&[u32]>) {
        self.offsets.retain(|p, _| {
            p.topic != topic || partitions.is_some_and(|ps| !ps.contains(&p.partition))
        });
    }

    /// `topic` was deleted (`counts` no longer has it): its committed
    /// offsets go, so a topic recreated under the name starts afresh, and a
    /// group consuming it gets a new generation without its partitions at
    /// once rather than at the next tick (a recreate before that tick would
    /// otherwise go unnoticed). Returns whether the group had offsets of it.
    pub fn drop_topic(&mut self, topic: &str, counts: &TopicCounts) -> bool {
        let had = self.offsets.keys().any(|p| p.topic == topic);
        self.drop_offsets(topic, None);
        if !self.members.is_empty() && self.topics.iter().any(|t| t == topic) {
            self.bump(counts);
        }
        had
    }

    /// Removes members silent for their session timeout, and follows the
    /// catalogue: partitions of a deleted topic are gone. Returns how many
    /// members expired.
    pub fn tick(&mut self, now_ms: i64, counts: &TopicCounts) -> usize {
        let expired: Vec<MemberId> = self
            .members
            .iter()
            .filter(|(_, m)| {
                now_ms.saturating_sub(m.last_seen_ms) > i64::from(m.session_timeout_ms)
            })
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.members.remove(id);
        }
        if !expired.is_empty() {
            self.bump(counts);
        } else if !self.members.is_empty() {
            let now: BTreeSet<PartitionId> = self.partitions(counts).into_iter().collect();
            let due: BTreeSet<&PartitionId> = self.target.values().flatten().collect();
            if due.len() != now.len() || due.iter().any(|p| !now.contains(*p)) {
                self.bump(counts);
            }
        }
        expired.len()
    }

    /// What `member_id` may consume now (SPEC 5.9, MemberAssignment).
    pub fn assignment(&self, member_id: &str) -> MemberAssignment {
        let due = self.target.get(member_id);
        let mut held = Vec::new();
        let mut pending = 0u32;
        for p in due.into_iter().flatten() {
            if self.holders.get(p).map(String::as_str) == Some(member_id) {
                held.push(p.clone());
            } else {
                pending += 1;
            }
        }
        MemberAssignment {
            generation: self.generation,
            partitions: by_topic(held),
            pending,
        }
    }

    /// Committed offsets of `topics` (all if empty), by topic then partition.
    pub fn fetch_offsets(&self, topics: &[String]) -> Vec<PartitionOffset> {
        self.offsets
            .iter()
            .filter(|(p, _)| topics.is_empty() || topics.contains(&p.topic))
            .map(|(p, o)| PartitionOffset {
                topic: p.topic.clone(),
                partition: p.partition,
                offset: *o,
            })
            .collect()
    }

    /// DescribeGroup (SPEC 5.15) with every `end_offset` 0: the caller asks
    /// the partitions for their high watermarks.
    pub fn describe(&self, now_ms: i64, counts: &TopicCounts) -> DescribeGroupResponse {
        let members = self
            .members
            .iter()
            .map(|(id, m)| MemberDescription {
                member_id: id.clone(),
                instance_id: m.instance_id.clone(),
                session_timeout_ms: m.session_timeout_ms,
                idle_ms: now_ms
                    .saturating_sub(m.last_seen_ms)
                    .clamp(0, i64::from(u32::MAX)) as u32,
                partitions: by_topic(
                    self.holders
                        .iter()
                        .filter(|(_, h)| *h == id)
                        .map(|(p, _)| p.clone())
                        .collect(),
                ),
            })
            .collect();
        let mut all: BTreeSet<PartitionId> = self.partitions(counts).into_iter().collect();
        all.extend(self.offsets.keys().cloned());
        let partitions = all
            .into_iter()
            .map(|p| PartitionDescription {
                holder: self.holders.get(&p).cloned(),
                committed: self.offsets.get(&p).copied(),
                topic: p.topic,
                partition: p.partition,
                end_offset: 0,
            })
            .collect();
        DescribeGroupResponse {
            group: self.id.clone(),
            state: self.state(),
            generation: self.generation,
            topics: self.topics.clone(),
            members,
            partitions,
        }
    }

    pub fn summary(&self) -> GroupSummary {
        GroupSummary {
            group: self.id.clone(),
            state: self.state(),
            generation: self.generation,
            members: self.members.len() as u32,
        }
    }

    /// The durable part of the membership, for the group's membership record.
    pub fn membership(&self) -> Membership {
        Membership {
            generation: self.generation,
            topics: self.topics.clone(),
            members: self
                .members
                .iter()
                .map(|(id, m)| StoredMember {
                    member_id: id.clone(),
                    instance_id: m.instance_id.clone(),
                    session_timeout_ms: m.session_timeout_ms,
                    acked_generation: m.acked_generation,
                    target: self
                        .target
                        .get(id)
                        .map(|due| due.iter().cloned().collect())
                        .unwrap_or_default(),
                    held: self
                        .holders
                        .iter()
                        .filter(|(_, h)| *h == id)
                        .map(|(p, _)| p.clone())
                        .collect(),
                })
                .collect(),
            fenced: self.fenced.iter().cloned().collect(),
        }
    }

    /// Replaces the membership with a stored one (replay at start). Every
    /// member's session starts afresh at `now_ms`, so members that heartbeat
    /// within their timeout carry on without a rebalance.
    pub fn restore(&mut self, stored: Membership, now_ms: i64) {
        self.generation = stored.generation;
        self.topics = stored.topics;
        self.members.clear();
        self.target.clear();
        self.holders.clear();
        self.fenced = stored.fenced.into_iter().collect();
        while self.fenced.len() > MAX_FENCED_PER_GROUP {
            self.fenced.pop_front();
        }
        for m in stored.members {
            self.target
                .insert(m.member_id.clone(), m.target.into_iter().collect());
            for p in m.held {
                self.holders.insert(p, m.member_id.clone());
            }
            self.members.insert(
                m.member_id,
                Member {
                    instance_id: m.instance_id,
                    session_timeout_ms: m.session_timeout_ms,
                    last_seen_ms: now_ms,
                    acked_generation: m.acked_generation.min(stored.generation),
                },
            );
        }
        // A record never names a holder that is not a member, but a
        // tolerant restore costs nothing.
        let members = &self.members;
        self.holders.retain(|_, h| members.contains_key(h));
        self.target.retain(|m, _| members.contains_key(m));
        if self.members.is_empty() {
            self.topics.clear();
        }
        self.dirty = false;
    }

    /// A membership change: new generation, new target, grants.
    fn bump(&mut self, counts: &TopicCounts) {
        // Never wraps (module doc): joins stop well before the end.
        self.generation = self.generation.saturating_add(1);
        self.dirty = true;
        if self.members.is_empty() {
            self.topics.clear();
            self.target.clear();
            self.holders.clear();
            return;
        }
        let partitions = self.partitions(counts);
        let live: BTreeSet<&PartitionId> = partitions.iter().collect();
        let members = &self.members;
        self.holders
            .retain(|p, h| members.contains_key(h) && live.contains(p));
        let ids: Vec<MemberId> = self.members.keys().cloned().collect();
        self.target = assign(&partitions, &ids, &self.target);
        self.grant();
    }

    /// Hands every partition whose holder let go (or that nobody holds) to
    /// its target owner.
    fn grant(&mut self) {
        for (owner, due) in &self.target {
            for p in due {
                let free = match self.holders.get(p) {
                    None => true,
                    Some(h) if h == owner => false,
                    Some(h) => match self.members.get(h) {
                        None => true,
                        Some(m) => m.acked_generation == self.generation,
                    },
                };
                if free {
                    self.holders.insert(p.clone(), owner.clone());
                    self.dirty = true;
                }
            }
        }
    }

    /// Every partition of the group's topics that still exists.
    fn partitions(&self, counts: &TopicCounts) -> Vec<PartitionId> {
        self.topics
            .iter()
            .filter_map(|t| counts.get(t).map(|n| (t, *n)))
            .flat_map(|(t, n)| (0..n).map(move |p| PartitionId::new(t.clone(), p)))
            .collect()
    }

    /// A fresh member id: `m-` and 16 hex digits of xxh3 over the group,
    /// the time and a counter; 18 bytes, well under [`MAX_MEMBER_ID_LEN`].
    fn new_member_id(&mut self, now_ms: i64) -> MemberId {
        loop {
            self.ids_made += 1;
            let mut key = Vec::with_capacity(self.id.len() + 16);
            key.extend_from_slice(self.id.as_bytes());
            key.extend_from_slice(&now_ms.to_le_bytes());
            key.extend_from_slice(&self.ids_made.to_le_bytes());
            let id = format!("m-{:016x}", xxh3_64(&key));
            if !self.members.contains_key(&id) && !self.is_fenced(&id) {
                return id;
            }
        }
    }
}

impl Group {
    /// The answer to a request of a member id the group does not have.
    fn gone(&self, member_id: &str) -> Failure {
        if self.is_fenced(member_id) {
            failure(
                ErrorCode::FencedInstanceId,
                format!(
                    "member {member_id:?} of group {:?} was replaced by a newer member with \
                     its instance id; stop, do not rejoin",
                    self.id
                ),
            )
        } else {
            unknown_member(&self.id, member_id)
        }
    }
}

fn unknown_member(group: &str, member: &str) -> Failure {
    failure(
        ErrorCode::UnknownMember,
        format!("group {group:?} has no member {member:?}; join again"),
    )
}

/// Partitions grouped by topic, in order.
fn by_topic(partitions: Vec<PartitionId>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for p in partitions {
        match out.last_mut() {
            Some(last) if last.topic == p.topic => last.partitions.push(p.partition),
            _ => out.push(TopicPartitions {
                topic: p.topic,
                partitions: vec![p.partition],
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests;
