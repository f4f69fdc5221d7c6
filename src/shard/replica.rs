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
//! in sync ([`Leader::isr_change`]) and asks the controller to record it;
//! until that is applied, its view of the ISR is the one it was given.
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
}

#[derive(Debug)]
pub struct Leader {
    pub topic: String,
    pub partition: u32,
    pub me: NodeId,
    /// The epoch as the metadata has it (AlterIsr names it).
    pub epoch: u64,
    pub isr: Vec<NodeId>,
    /// Every other node holding a copy.
    pub followers: BTreeMap<NodeId, Progress>,
    pub hw: u64,
    /// The log end when this leadership began: a follower joins the ISR
    /// only once it has reached it (it then has every batch of older
    /// epochs the leader kept).
    pub epoch_start: u64,
    pub min_insync: usize,
    /// The last ISR asked for, and when.
    pub asked: Option<(Vec<NodeId>, Instant)>,
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
    #[allow(clippy::too_many_arguments)]
    pub fn from_view(
        old: &Role,
        topic: &str,
        partition: u32,
        p: &PartitionPlacement,
        me: NodeId,
        leader_addr: Option<SocketAddr>,
        min_insync: usize,
        log_end: u64,
        now: Instant,
    ) -> Role {
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
                        (
                            n,
                            kept.unwrap_or(Progress {
                                end: None,
                                caught_up_at: now,
                            }),
                        )
                    })
                    .collect();
                let mut leader = Leader {
                    topic: topic.to_owned(),
                    partition,
                    me,
                    epoch: p.leader_epoch,
                    isr: p.isr.clone(),
                    followers,
                    hw,
                    epoch_start: carried.map_or(log_end, |o| o.epoch_start),
                    min_insync,
                    asked: carried.and_then(|o| o.asked.clone()),
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
    /// The high watermark from the ISR's progress; true when it moved.
    pub fn recompute_hw(&mut self, log_end: u64) -> bool {
        let mut hw = log_end;
        for n in self.isr.iter().filter(|&&n| n != self.me) {
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
    /// served, joins if it has caught up. Only a fetch brings a follower
    /// in: a node the controller took out (dead) keeps its last progress
    /// here, which must not bring it back. Asked again only after
    /// [`ISR_RESEND`] while the controller has not applied it.
    pub fn isr_change(
        &mut self,
        now: Instant,
        lag: Duration,
        fetcher: Option<NodeId>,
    ) -> Option<Command> {
        let mut isr = self.isr.clone();
        for (&n, p) in &self.followers {
            let in_sync = isr.contains(&n);
            let caught_up = p.end.is_some_and(|e| e >= self.hw && e >= self.epoch_start);
            if !in_sync && caught_up && fetcher == Some(n) {
                isr.push(n);
            } else if in_sync && now.duration_since(p.caught_up_at) > lag {
                isr.retain(|&m| m != n);
            }
        }
        if !isr.contains(&self.me) {
            isr.insert(0, self.me);
        }
        if isr == self.isr {
            self.asked = None;
            return None;
        }
        if let Some((asked, at)) = &self.asked {
            if *asked == isr && now.duration_since(*at) < ISR_RESEND {
                return None;
            }
        }
        self.asked = Some((isr.clone(), now));
        Some(Command::AlterIsr {
            topic: self.topic.clone(),
            partition: self.partition,
            leader: self.me,
            leader_epoch: self.epoch,
            isr,
        })
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
        }
    }

    fn leader(p: &PartitionPlacement, log_end: u64, now: Instant) -> Leader {
        match Role::from_view(
            &Role::Offline { why: String::new() },
            "t",
            0,
            p,
            1,
            None,
            2,
            log_end,
            now,
        ) {
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
            isr, leader_epoch, ..
        }) = l.isr_change(t0, lag, Some(3))
        else {
            panic!("no change");
        };
        assert_eq!((isr.clone(), leader_epoch), (vec![1, 2, 3], 3));
        // Not asked twice within the resend interval.
        assert!(l
            .isr_change(t0 + Duration::from_millis(10), lag, Some(3))
            .is_none());
        l.isr = isr;
        // Node 2 stops fetching: after `lag` it leaves, node 3 stays.
        let later = t0 + lag + Duration::from_secs(1);
        l.fetched(3, 100, 100, later);
        let Some(Command::AlterIsr { isr, .. }) = l.isr_change(later, lag, Some(3)) else {
            panic!("no change");
        };
        assert_eq!(isr, vec![1, 3]);
    }

    #[test]
    fn a_new_leader_starts_from_what_it_knew_as_a_follower() {
        let now = Instant::now();
        let p = placement(&[2, 1], &[1, 2], 2);
        let addr: SocketAddr = "127.0.0.1:9000".parse().unwrap();
        let f = Role::from_view(
            &Role::Offline { why: String::new() },
            "t",
            0,
            &p,
            1,
            Some(addr),
            1,
            80,
            now,
        );
        let Role::Follower(mut f) = f else { panic!() };
        f.hw = 70;
        let mut led = p.clone();
        led.leader = Some(1);
        led.isr = vec![1];
        led.leader_epoch += 1;
        let Role::Leader(l) =
            Role::from_view(&Role::Follower(f), "t", 0, &led, 1, None, 1, 80, now)
        else {
            panic!()
        };
        // Alone in sync: everything it has is committed.
        assert_eq!(l.hw, 80);
        assert_eq!(l.epoch_start, 80);
    }
}
