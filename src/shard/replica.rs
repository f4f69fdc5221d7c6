//! A partition's part in replication: whether this node leads it, follows
//! a leader, or may not serve it, and for a leader, how far each follower
//! has come.
//!
//! The leader appends producers' batches stamped with its leader epoch;
//! followers pull them (ReplicaFetch, SPEC.md 5.19) and append the same
//! bytes at the same offsets. A fetch at offset `o` says the follower holds
//! everything below `o`, so the high watermark, what consumers may read and
//! what acks=all waits for, is the smallest such offset over the in-sync
//! replicas, the leader's own log end included. The leader decides who is
//! in sync ([`Leader::isr_change`]) and asks the controller to record it,
//! one request at a time. Until the request is answered (a view at a newer
//! ISR version: applied, or refused as stale) the high watermark waits for
//! the old ISR and the asked one both, as Kafka's "maximal ISR" does: a
//! joiner whose request the controller applies later never enters the ISR
//! short of what was acknowledged meanwhile, so it can lead without loss.
//!
//! Nothing here does I/O: the shard feeds it views and fetches, and sends
//! the commands it returns.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::cluster::metadata::{Command, NodeId, PartitionPlacement};

/// How often a leader may ask again for the same ISR change while the
/// controller has not applied the last one.
const ISR_RESEND: Duration = Duration::from_secs(1);

/// What this node does with one partition.
#[derive(Debug)]
pub enum Role {
    /// A single node: no copies; the high watermark is the log end.
    Standalone,
    Leader(Leader),
    Follower(Follower),
    /// No live leader, or this node is not told yet: produce and fetch are
    /// refused (`NOT_LEADER`, retriable).
    Offline {
        why: String,
    },
}

/// A follower's progress as the leader saw it.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// The offset of its last fetch: it holds everything below. `None`
    /// until it fetched from this leader.
    pub end: Option<u64>,
    /// When it last fetched at the leader's log end.
    pub caught_up_at: Instant,
    /// Whether the controller counts it alive: a dead node is never asked
    /// into the ISR (the controller would refuse, and the request would
    /// hold up every other change).
    pub alive: bool,
}

/// An ISR change asked of the controller and not answered yet.
#[derive(Debug, Clone)]
pub struct Pending {
    pub isr: Vec<NodeId>,
    /// The ISR version it was computed from: a view past it answers it.
    pub version: u64,
    /// When it was last sent.
    pub at: Instant,
}

/// What the cluster view says of one partition, for this node's role.
#[derive(Clone, Copy)]
pub struct Assignment<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub placement: &'a PartitionPlacement,
    pub me: NodeId,
    pub leader_addr: Option<SocketAddr>,
    pub min_insync: usize,
    /// Whether the controller counts a node alive.
    pub alive: &'a dyn Fn(NodeId) -> bool,
}

#[derive(Debug)]
pub struct Leader {
    pub topic: String,
    pub partition: u32,
    pub me: NodeId,
    /// The epoch as the metadata has it (AlterIsr names it).
    pub epoch: u64,
    pub isr: Vec<NodeId>,
    /// The version of `isr` (AlterIsr names it too).
    pub isr_version: u64,
    /// Every other node holding a copy.
    pub followers: BTreeMap<NodeId, Progress>,
    pub hw: u64,
    /// The log end when this leadership began: a follower joins the ISR
    /// only once it has reached it (it then has every batch of older
    /// epochs the leader kept).
    pub epoch_start: u64,
    pub min_insync: usize,
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone)]
pub struct Follower {
    pub leader: NodeId,
    pub addr: SocketAddr,
    pub epoch: u64,
    /// The leader's high watermark as of the last fetch, capped at this
    /// log's end: where a new leader's high watermark starts.
    pub hw: u64,
}

/// The batch header's leader epoch: the metadata's, saturated.
pub fn epoch32(epoch: u64) -> u32 {
    u32::try_from(epoch).unwrap_or(u32::MAX)
}

impl Role {
    /// The role a placement gives this node, carrying over what the old
    /// role knew (a leader's progress at the same epoch; a follower's high
    /// watermark into a new leadership).
    pub fn from_view(old: &Role, a: &Assignment<'_>, log_end: u64, now: Instant) -> Role {
        let Assignment {
            topic,
            partition,
            placement: p,
            me,
            leader_addr,
            min_insync,
            alive,
        } = *a;
        if !p.holders().any(|n| n == me) {
            return Role::Offline {
                why: format!("partition {topic}/{partition} is not placed on this node"),
            };
        }
        match p.leader {
            Some(l) if l == me => {
                let carried = match old {
                    Role::Leader(o) if o.epoch == p.leader_epoch => Some(o),
                    _ => None,
                };
                let hw = match old {
                    Role::Leader(o) => o.hw,
                    Role::Follower(f) => f.hw,
                    _ => 0,
                }
                .min(log_end);
                let followers = p
                    .followers()
                    .map(|n| {
                        let kept = carried.and_then(|o| o.followers.get(&n).copied());
                        let progress = kept.unwrap_or(Progress {
                            end: None,
                            caught_up_at: now,
                            alive: true,
                        });
                        let alive = alive(n);
                        (n, Progress { alive, ..progress })
                    })
                    .collect();
                // Answered once the view moved past the version it was
                // asked at (applied, or refused there as stale).
                let pending = carried
                    .and_then(|o| o.pending.clone())
                    .filter(|q| q.version == p.isr_version);
                let mut leader = Leader {
                    topic: topic.to_owned(),
                    partition,
                    me,
                    epoch: p.leader_epoch,
                    isr: p.isr.clone(),
                    isr_version: p.isr_version,
                    followers,
                    hw,
                    epoch_start: carried.map_or(log_end, |o| o.epoch_start),
                    min_insync,
                    pending,
                };
                leader.recompute_hw(log_end);
                Role::Leader(leader)
            }
            Some(l) => match leader_addr {
                Some(addr) => Role::Follower(Follower {
                    leader: l,
                    addr,
                    epoch: p.leader_epoch,
                    hw: match old {
                        Role::Follower(f) => f.hw,
                        Role::Leader(o) => o.hw,
                        _ => 0,
                    }
                    .min(log_end),
                }),
                None => Role::Offline {
                    why: format!(
                        "partition {topic}/{partition} is led by node {l}, whose address is unknown"
                    ),
                },
            },
            None => Role::Offline {
                why: format!(
                    "partition {topic}/{partition} has no live in-sync copy right now (copies on nodes {:?})",
                    p.holders().collect::<Vec<_>>()
                ),
            },
        }
    }

    /// What consumers may read up to.
    pub fn high_watermark(&self, log_end: u64) -> u64 {
        match self {
            Role::Standalone => log_end,
            Role::Leader(l) => l.hw,
            Role::Follower(f) => f.hw,
            Role::Offline { .. } => 0,
        }
    }
}

impl Leader {
    /// The high watermark from the progress of the ISR and of the pending
    /// one; true when it moved.
    pub fn recompute_hw(&mut self, log_end: u64) -> bool {
        let mut hw = log_end;
        let asked = self.pending.iter().flat_map(|q| &q.isr);
        for n in self.isr.iter().chain(asked).filter(|&&n| n != self.me) {
            let end = self.followers.get(n).and_then(|p| p.end).unwrap_or(0);
            hw = hw.min(end);
        }
        if hw > self.hw {
            self.hw = hw;
            true
        } else {
            false
        }
    }

    /// Notes a fetch by `node` at `offset`; true when the high watermark
    /// moved.
    pub fn fetched(&mut self, node: NodeId, offset: u64, log_end: u64, now: Instant) -> bool {
        if let Some(p) = self.followers.get_mut(&node) {
            p.end = Some(offset);
            if offset >= log_end {
                p.caught_up_at = now;
            }
        }
        self.recompute_hw(log_end)
    }

    /// The ISR change to ask for now, if any: in-sync followers behind for
    /// longer than `lag` leave; `fetcher`, the follower whose fetch is being
    /// served, joins if it has caught up and is alive. Only a fetch brings a
    /// follower in: a node the controller took out (dead) keeps its last
    /// progress here, which must not bring it back. While a request is
    /// pending no other is made; it is sent again every [`ISR_RESEND`]
    /// (a proposal can be lost with the controller leader).
    pub fn isr_change(
        &mut self,
        now: Instant,
        lag: Duration,
        fetcher: Option<NodeId>,
    ) -> Option<Command> {
        if let Some(q) = &mut self.pending {
            if now.duration_since(q.at) < ISR_RESEND {
                return None;
            }
            q.at = now;
            let isr = q.isr.clone();
            return Some(self.alter(isr));
        }
        let mut isr = self.isr.clone();
        for (&n, p) in &self.followers {
            let in_sync = isr.contains(&n);
            let caught_up = p.end.is_some_and(|e| e >= self.hw && e >= self.epoch_start);
            if !in_sync && caught_up && p.alive && fetcher == Some(n) {
                isr.push(n);
            } else if in_sync && now.duration_since(p.caught_up_at) > lag {
                isr.retain(|&m| m != n);
            }
        }
        if !isr.contains(&self.me) {
            isr.insert(0, self.me);
        }
        if isr == self.isr {
            return None;
        }
        self.pending = Some(Pending {
            isr: isr.clone(),
            version: self.isr_version,
            at: now,
        });
        Some(self.alter(isr))
    }

    fn alter(&self, isr: Vec<NodeId>) -> Command {
        Command::AlterIsr {
            topic: self.topic.clone(),
            partition: self.partition,
            leader: self.me,
            leader_epoch: self.epoch,
            isr_version: self.isr_version,
            isr,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placement(replicas: &[NodeId], isr: &[NodeId], leader: NodeId) -> PartitionPlacement {
        PartitionPlacement {
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            removing: Vec::new(),
            leader: Some(leader),
            leader_epoch: 3,
            isr_version: 5,
        }
    }

    fn assignment<'a>(p: &'a PartitionPlacement, min_insync: usize) -> Assignment<'a> {
        Assignment {
            topic: "t",
            partition: 0,
            placement: p,
            me: 1,
            leader_addr: "127.0.0.1:9000".parse().ok(),
            min_insync,
            alive: &|_| true,
        }
    }

    fn offline() -> Role {
        Role::Offline { why: String::new() }
    }

    fn leader(p: &PartitionPlacement, log_end: u64, now: Instant) -> Leader {
        match Role::from_view(&offline(), &assignment(p, 2), log_end, now) {
            Role::Leader(l) => l,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_high_watermark_is_the_slowest_in_sync_copy() {
        let now = Instant::now();
        let mut l = leader(&placement(&[1, 2, 3], &[1, 2, 3], 1), 100, now);
        assert_eq!(l.hw, 0, "unknown followers hold nothing yet");
        assert!(!l.fetched(2, 100, 100, now));
        assert!(l.fetched(3, 60, 100, now));
        assert_eq!(l.hw, 60);
        // Never back: a slower report does not lower it.
        assert!(!l.fetched(3, 50, 100, now));
        assert_eq!(l.hw, 60);
        // Alone in the ISR, the leader's log end is the high watermark.
        let mut alone = leader(&placement(&[1, 2], &[1], 1), 100, now);
        assert!(!alone.recompute_hw(100) || alone.hw == 100);
        assert_eq!(alone.hw, 100);
    }

    #[test]
    fn laggards_leave_and_caught_up_followers_join() {
        let t0 = Instant::now();
        let lag = Duration::from_secs(10);
        let mut l = leader(&placement(&[1, 2, 3], &[1, 2], 1), 100, t0);
        // Node 3 catches up to the log end: it joins.
        l.fetched(2, 100, 100, t0);
        l.fetched(3, 100, 100, t0);
        assert!(
            l.isr_change(t0, lag, None).is_none(),
            "only a fetch brings a follower in"
        );
        let Some(Command::AlterIsr {
            isr,
            leader_epoch,
            isr_version,
            ..
        }) = l.isr_change(t0, lag, Some(3))
        else {
            panic!("no change");
        };
        assert_eq!(
            (isr.clone(), leader_epoch, isr_version),
            (vec![1, 2, 3], 3, 5)
        );
        // Not asked twice within the resend interval; the same request
        // again after it, as it may have been lost.
        assert!(l
            .isr_change(t0 + Duration::from_millis(10), lag, Some(3))
            .is_none());
        let resent = l.isr_change(t0 + ISR_RESEND, lag, Some(3));
        assert!(
            matches!(&resent, Some(Command::AlterIsr { isr: again, .. }) if *again == isr),
            "{resent:?}"
        );
        // Applied: the view brings the new ISR at the next version.
        let mut applied = placement(&[1, 2, 3], &isr, 1);
        applied.isr_version += 1;
        let Role::Leader(mut l) =
            Role::from_view(&Role::Leader(l), &assignment(&applied, 2), 100, t0)
        else {
            panic!()
        };
        assert!(l.pending.is_none());
        // Node 2 stops fetching: after `lag` it leaves, node 3 stays.
        let later = t0 + lag + Duration::from_secs(1);
        l.fetched(3, 100, 100, later);
        let Some(Command::AlterIsr { isr, .. }) = l.isr_change(later, lag, Some(3)) else {
            panic!("no change");
        };
        assert_eq!(isr, vec![1, 3]);
    }

    /// The race that lost acknowledged data: a follower asked into the ISR
    /// at offset 100 while the high watermark went on without it, so when
    /// the controller applied the request it was in sync without batches
    /// that acks=all had answered, and could lead.
    #[test]
    fn the_high_watermark_waits_for_a_joiner_until_its_request_is_answered() {
        let t0 = Instant::now();
        let lag = Duration::from_secs(10);
        let mut l = leader(&placement(&[1, 2, 3], &[1, 2], 1), 100, t0);
        l.fetched(2, 100, 100, t0);
        l.fetched(3, 100, 100, t0);
        assert!(l.isr_change(t0, lag, Some(3)).is_some());
        // More batches; node 2 has them, node 3 not yet.
        assert!(!l.fetched(2, 150, 150, t0));
        assert_eq!(l.hw, 100, "acknowledged past the joiner");
        // The view moves on for another reason (not applied): the request
        // is void, the high watermark follows the ISR again.
        let mut moved = placement(&[1, 2, 3], &[1, 2], 1);
        moved.isr_version += 1;
        let Role::Leader(l) = Role::from_view(&Role::Leader(l), &assignment(&moved, 2), 150, t0)
        else {
            panic!()
        };
        assert!(l.pending.is_none());
        assert_eq!(l.hw, 150);
        // A node the controller counts dead is not asked in.
        let dead = |n: NodeId| n != 3;
        let a = Assignment {
            alive: &dead,
            ..assignment(&moved, 2)
        };
        let Role::Leader(mut l) = Role::from_view(&Role::Leader(l), &a, 150, t0) else {
            panic!()
        };
        l.fetched(3, 150, 150, t0);
        assert!(l.isr_change(t0, lag, Some(3)).is_none());
    }

    #[test]
    fn a_new_leader_starts_from_what_it_knew_as_a_follower() {
        let now = Instant::now();
        let p = placement(&[2, 1], &[1, 2], 2);
        let f = Role::from_view(&offline(), &assignment(&p, 1), 80, now);
        let Role::Follower(mut f) = f else { panic!() };
        f.hw = 70;
        let mut led = p.clone();
        led.leader = Some(1);
        led.isr = vec![1];
        led.leader_epoch += 1;
        let Role::Leader(l) = Role::from_view(&Role::Follower(f), &assignment(&led, 1), 80, now)
        else {
            panic!()
        };
        // Alone in sync: everything it has is committed.
        assert_eq!(l.hw, 80);
        assert_eq!(l.epoch_start, 80);
    }
}
