//! Consumer group assignment: which member of a group consumes which
//! partition.
//!
//! [`assign`] is the whole rule. The coordinator calls it on every membership
//! change (a join, a leave, a member timed out, a topic grew) with the
//! partitions the group subscribes to, the members now in the group and the
//! assignment of the previous generation, and hands each member its share.
//! It is a pure function: no I/O, no clocks, no global state.
//!
//! # Invariants
//!
//! For `P` distinct partitions and `N ≥ 1` distinct members, with
//! `q = ⌊P/N⌋`:
//!
//! 1. **Complete and exclusive.** Every partition goes to exactly one member.
//!    Every member appears in the result, with an empty set if it gets
//!    nothing; nobody else appears. With no members the result is empty.
//! 2. **Balanced.** Every member owns `q` or `q + 1` partitions: counts differ
//!    by at most one. They are counted over all subscribed topics together,
//!    not topic by topic.
//! 3. **Sticky, and minimal.** A partition stays with its previous owner
//!    whenever balance allows it. Exactly, if `kₘ` is the number of partitions
//!    member `m` owned before and still owns a claim to (it is still a member
//!    and the partition still exists), the result keeps
//!    `Σₘ min(kₘ, q) + min(P mod N, #{m : kₘ > q})` of them in place, which is
//!    the most any balanced assignment can keep; every other partition is
//!    [`reassigned`]. In particular, from a balanced previous assignment:
//!    - a join moves only partitions onto the newcomer, exactly as many as
//!      it is due (12 partitions over 3 members, a 4th joins: 3 move);
//!    - a leave moves only the leaver's partitions (the survivors all have
//!      room for them under the new, higher share);
//!    - a static member restarting under the same id is still named in
//!      `previous` and keeps its partitions: nothing moves.
//!
//!    Calling `assign` again with its own result as `previous` moves nothing.
//! 4. **Deterministic.** The result depends only on the *sets* of partitions
//!    and members and on `previous`: not on the order they are listed in,
//!    nor on duplicates. The only hash is xxh3-64 of documented bytes (the
//!    member ids through [`Ring`], a partition's [`PartitionId::ring_key`]),
//!    so every process, in this version and the next, computes the same
//!    answer from the same inputs.
//!
//! Partitions that `previous` gave to members that are gone, and partitions
//! it names that no longer exist, are ignored: the former are unowned, the
//! latter dropped. If `previous` names two owners for one partition (it
//! never should), the one first clockwise from the partition on the ring
//! keeps its claim.
//!
//! # Why move as little as possible
//!
//! Delivery in a group is at least once: a member commits the offset of what
//! it has processed, and a partition that changes hands restarts at its
//! committed offset. Everything its old owner processed but had not
//! committed yet is delivered again, and the partition stalls while the old
//! owner lets go and the new one starts. Each move is therefore paid in
//! duplicates and latency, and a move that balance does not require is paid
//! for nothing. Balance, on the other side, is what bounds any one member's
//! share of the work. Invariant 3 takes the cheapest assignment that keeps
//! invariant 2.
//!
//! # Who moves and where: the ring
//!
//! Stickiness says how many partitions move, not which ones, nor which of
//! the members with a spare one keep `q + 1`. Those choices are made by the
//! consistent-hash ring over the member ids ([`Ring`]), never by the sort
//! order of names, so that they spread evenly and do not always land on the
//! same member:
//!
//! 1. *Keep.* Each member ranks the partitions it may keep: first those the
//!    ring maps to it naturally ([`Ring::lookup`] of the partition's key),
//!    then the rest, each group in order of the partition's priority (a
//!    fixed remix of `xxh3(key)`). All members keep their first `q`; the
//!    `P mod N` places at `q + 1` go to members with a `q+1`-th partition to
//!    keep, in priority order of that partition.
//! 2. *Place.* The partitions left over (shed by a member above its share,
//!    or unowned), in priority order, each go clockwise round the ring from
//!    their key ([`Ring::successors`]) to the first member with room.
//!
//! A member thus sheds first what is not naturally its own, and a shed
//! partition tends to land on its natural owner, so that over successive
//! changes the assignment drifts towards the ring's own placement without
//! any move beyond the minimum.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use xxhash_rust::xxh3::xxh3_64;

use crate::ring::Ring;

/// One partition of one topic: the unit a group hands out. A group may
/// subscribe several topics, so a partition is named with its topic.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionId {
    /// Topic name.
    pub topic: String,
    /// Partition index within the topic.
    pub partition: u32,
}

impl PartitionId {
    /// Partition `partition` of `topic`.
    pub fn new(topic: impl Into<String>, partition: u32) -> Self {
        PartitionId {
            topic: topic.into(),
            partition,
        }
    }

    /// The bytes hashed onto the ring of members: `topic/partition` in UTF-8
    /// (decimal partition), the same key form as the ring's own tests. It is
    /// unambiguous, since the partition is the digits after the last `/`.
    /// Changing it reassigns partitions in every live group.
    pub fn ring_key(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl fmt::Display for PartitionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.topic, self.partition)
    }
}

/// A group member's id: opaque to the assignor, hashed by its UTF-8 bytes. A
/// static member (`--instance-id`) keeps the same id across restarts.
pub type MemberId = String;

/// Who consumes what: every member of the group, with the partitions it owns.
pub type Assignment = BTreeMap<MemberId, BTreeSet<PartitionId>>;

/// Assigns `partitions` to `members`, keeping as much of `previous` as
/// balance allows. See the module doc for the invariants and how the ring
/// picks what moves. Duplicates in either slice count once.
pub fn assign(
    partitions: &[PartitionId],
    members: &[MemberId],
    previous: &Assignment,
) -> Assignment {
    let members: Vec<&str> = members
        .iter()
        .map(String::as_str)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut out: Assignment = members
        .iter()
        .map(|m| (m.to_string(), BTreeSet::new()))
        .collect();
    let partitions: BTreeSet<&PartitionId> = partitions.iter().collect();
    if members.is_empty() || partitions.is_empty() {
        return out;
    }
    let n = members.len();
    let index = |m: &str| members.binary_search(&m).ok();
    let ring = Ring::new(members.iter().copied());

    // Items in priority order; an item is named by its position here from now
    // on, so "lower index" means "higher priority".
    let mut items: Vec<Item> = partitions
        .into_iter()
        .map(|id| {
            let key = id.ring_key();
            Item {
                id,
                priority: priority(xxh3_64(&key)),
                key,
            }
        })
        .collect();
    items.sort_unstable_by(|a, b| a.priority.cmp(&b.priority).then_with(|| a.key.cmp(&b.key)));
    let position: BTreeMap<&PartitionId, usize> =
        items.iter().enumerate().map(|(i, it)| (it.id, i)).collect();

    // Valid claims from the previous generation: live member, live partition.
    let mut claims: Vec<Vec<usize>> = vec![Vec::new(); items.len()];
    for (member, owned) in previous {
        let Some(m) = index(member) else { continue };
        for p in owned {
            if let Some(&i) = position.get(p) {
                claims[i].push(m);
            }
        }
    }
    let mut kept: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, claimants) in claims.iter().enumerate() {
        let owner = match claimants.as_slice() {
            [] => continue,
            [m] => *m,
            // A corrupt `previous`: the first claimant clockwise keeps it.
            _ => ring
                .successors(&items[i].key)
                .filter_map(|m| index(m))
                .find(|m| claimants.contains(m))
                .unwrap_or(claimants[0]),
        };
        kept[owner].push(i);
    }

    let mut shares = Shares::new(items.len(), n);
    let mut owner: Vec<Option<usize>> = vec![None; items.len()];

    // Keep: every member's first `q` by rank, then the `q+1`-th ones in
    // priority order while places at `q + 1` remain. Sorting by (rank, item)
    // puts all rank-`q` claims after every lower rank, in priority order.
    let mut ranked: Vec<(usize, usize, usize)> = Vec::new();
    for (m, own) in kept.iter_mut().enumerate() {
        own.sort_unstable_by_key(|&i| {
            let natural = ring.lookup(&items[i].key).and_then(|x| index(x));
            (natural != Some(m), i)
        });
        ranked.extend(own.iter().enumerate().map(|(rank, &i)| (rank, i, m)));
    }
    ranked.sort_unstable();
    for (_, i, m) in ranked {
        if shares.has_room(m) {
            shares.take(m);
            owner[i] = Some(m);
        }
    }

    // Place: the rest, in priority order, clockwise to the first member with
    // room. One always has room while partitions remain, since the shares add
    // up to exactly `P`.
    for (i, item) in items.iter().enumerate() {
        if owner[i].is_some() {
            continue;
        }
        let m = ring
            .successors(&item.key)
            .filter_map(|m| index(m))
            .find(|&m| shares.has_room(m))
            .expect("shares add up to the partition count");
        shares.take(m);
        owner[i] = Some(m);
    }

    for (item, m) in items.iter().zip(owner) {
        if let Some(m) = m {
            out.entry(members[m].to_string())
                .or_default()
                .insert(item.id.clone());
        }
    }
    out
}

/// The partitions of `next` whose owner differs from the one `previous`
/// named, including those `previous` gave to nobody: the partitions whose
/// new owner starts from the committed offset (and may redeliver what the
/// old owner processed without committing).
pub fn reassigned(previous: &Assignment, next: &Assignment) -> BTreeSet<PartitionId> {
    let mut before: BTreeMap<&PartitionId, &str> = BTreeMap::new();
    for (member, owned) in previous {
        for p in owned {
            before.insert(p, member);
        }
    }
    let mut out = BTreeSet::new();
    for (member, owned) in next {
        for p in owned {
            if before.get(p).copied() != Some(member.as_str()) {
                out.insert(p.clone());
            }
        }
    }
    out
}

/// A partition being assigned.
struct Item<'a> {
    id: &'a PartitionId,
    /// [`PartitionId::ring_key`].
    key: Vec<u8>,
    /// Order in which partitions claim places: see [`priority`].
    priority: u64,
}

/// How many partitions each member may still take: everyone `q = ⌊P/N⌋`,
/// and `P mod N` of them, whichever get there first, `q + 1`.
struct Shares {
    q: usize,
    /// Places at `q + 1` not yet taken.
    extra: usize,
    load: Vec<usize>,
}

impl Shares {
    fn new(partitions: usize, members: usize) -> Self {
        Shares {
            q: partitions / members,
            extra: partitions % members,
            load: vec![0; members],
        }
    }

    fn has_room(&self, m: usize) -> bool {
        self.load[m] < self.q || (self.load[m] == self.q && self.extra > 0)
    }

    fn take(&mut self, m: usize) {
        if self.load[m] == self.q {
            self.extra -= 1;
        }
        self.load[m] += 1;
    }
}

/// A partition's priority: a fixed bijective remix of `xxh3(key)` (the
/// splitmix64 finalizer, as the ring uses), so that the order in which
/// partitions claim places, and hence which ones a member sheds, is spread
/// over the hash space rather than following names or ring positions.
fn priority(hash: u64) -> u64 {
    let mut z = hash;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::collection::{btree_set, vec};
    use proptest::prelude::*;
    use xxhash_rust::xxh3::xxh3_64_with_seed;

    /// `topic/partition`.
    fn pid(s: &str) -> PartitionId {
        let (topic, n) = s.rsplit_once('/').expect("topic/partition");
        PartitionId::new(topic, n.parse().expect("partition index"))
    }

    use crate::testdata::expand;

    fn parts(spec: &str) -> Vec<PartitionId> {
        expand(spec).iter().map(|s| pid(s)).collect()
    }

    fn ids(spec: &str) -> Vec<MemberId> {
        expand(spec)
    }

    /// The fewest partitions any balanced assignment must reassign: all but
    /// `Σ min(kₘ, q) + min(P mod N, #{kₘ > q})` (invariant 3). Assumes
    /// `previous` names at most one owner per partition.
    fn minimum(partitions: &[PartitionId], members: &[MemberId], previous: &Assignment) -> usize {
        let ps: BTreeSet<&PartitionId> = partitions.iter().collect();
        let ms: BTreeSet<&MemberId> = members.iter().collect();
        if ms.is_empty() {
            return 0;
        }
        let (q, r) = (ps.len() / ms.len(), ps.len() % ms.len());
        let k: Vec<usize> = ms
            .iter()
            .map(|m| {
                previous
                    .get(*m)
                    .map_or(0, |o| o.iter().filter(|p| ps.contains(p)).count())
            })
            .collect();
        let kept: usize = k.iter().map(|&k| k.min(q)).sum::<usize>()
            + r.min(k.iter().filter(|&&k| k > q).count());
        ps.len() - kept
    }

    /// Invariants 1 to 3; returns (reassigned, minimum, min count, max count).
    fn check(
        partitions: &[PartitionId],
        members: &[MemberId],
        previous: &Assignment,
        next: &Assignment,
    ) -> Result<(usize, usize, usize, usize), String> {
        let ps: BTreeSet<&PartitionId> = partitions.iter().collect();
        let ms: BTreeSet<&MemberId> = members.iter().collect();
        let keys: BTreeSet<&MemberId> = next.keys().collect();
        if keys != ms {
            return Err(format!("members {keys:?}, expected {ms:?}"));
        }
        let total: usize = next.values().map(BTreeSet::len).sum();
        let union: BTreeSet<&PartitionId> = next.values().flatten().collect();
        if !ms.is_empty() && (union != ps || total != ps.len()) {
            return Err(format!(
                "{total} assigned, {} distinct, of {} partitions",
                union.len(),
                ps.len()
            ));
        }
        let lo = next.values().map(BTreeSet::len).min().unwrap_or(0);
        let hi = next.values().map(BTreeSet::len).max().unwrap_or(0);
        if hi > lo + 1 {
            return Err(format!("unbalanced: {lo}..{hi}"));
        }
        let moved = reassigned(previous, next).len();
        let min = minimum(partitions, members, previous);
        if moved != min {
            return Err(format!("reassigned {moved}, minimum {min}"));
        }
        Ok((moved, min, lo, hi))
    }

    fn explicit(spec: &[(&str, &str)]) -> Assignment {
        spec.iter()
            .map(|(m, ps)| (m.to_string(), parts(ps).into_iter().collect()))
            .collect()
    }

    fn counts(a: &Assignment) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    /// Issue 6, acceptance 1, in miniature.
    #[test]
    fn fourth_member_joining_moves_three() {
        let ps = parts("t/{0..12}");
        let before = explicit(&[("a", "t/{0..4}"), ("b", "t/{4..8}"), ("c", "t/{8..12}")]);
        let ms = ids("a,b,c,d");
        let after = assign(&ps, &ms, &before);
        check(&ps, &ms, &before, &after).unwrap();
        assert_eq!(counts(&after), [3, 3, 3, 3]);
        let moved = reassigned(&before, &after);
        assert_eq!(moved.len(), 3);
        assert_eq!(&moved, &after["d"], "everything that moves goes to d");
    }

    #[test]
    fn leave_moves_only_the_leavers_partitions() {
        let ps = parts("t/{0..12}");
        let before = assign(&ps, &ids("a,b,c"), &Assignment::new());
        assert_eq!(counts(&before), [4, 4, 4]);
        for leaver in ["a", "b", "c"] {
            let ms: Vec<MemberId> = ids("a,b,c").into_iter().filter(|m| m != leaver).collect();
            let after = assign(&ps, &ms, &before);
            check(&ps, &ms, &before, &after).unwrap();
            assert_eq!(counts(&after), [6, 6]);
            assert_eq!(reassigned(&before, &after), before[leaver]);
        }
    }

    /// A static member (`--instance-id`) that restarts within its session
    /// timeout is still a member under the same id: it keeps its partitions
    /// and nobody else moves. Rejoining under a fresh id would move its
    /// partitions to the newcomer, which is what static membership avoids.
    #[test]
    fn static_member_restart_keeps_its_partitions() {
        let ps = parts("orders/{0..12},audit/{0..5}");
        let ms = ids("host-1,host-2,host-3");
        let before = assign(&ps, &ms, &Assignment::new());
        let after = assign(&ps, &ms, &before);
        assert_eq!(after, before);

        let fresh = ids("host-1,host-2,host-3-7f3a");
        let mut renamed = before.clone();
        let old = renamed.remove("host-3").unwrap();
        let after = assign(&ps, &fresh, &renamed);
        assert_eq!(reassigned(&before, &after).len(), old.len());
    }

    #[test]
    fn input_order_and_duplicates_do_not_matter() {
        let ps = parts("t/{0..20},u/{0..7}");
        let ms = ids("m1,m2,m3,m4,m5");
        let previous = explicit(&[("m2", "t/{0..15}"), ("m9", "u/{0..7}"), ("m4", "x/{0..3}")]);
        let want = assign(&ps, &ms, &previous);
        let mut ps2: Vec<PartitionId> = ps.iter().rev().cloned().collect();
        ps2.extend(ps[..5].iter().cloned());
        let ms2 = ids("m4,m1,m5,m3,m2,m1");
        assert_eq!(assign(&ps2, &ms2, &previous), want);
    }

    #[test]
    fn edge_cases() {
        let none = Assignment::new();
        assert!(assign(&parts("t/{0..4}"), &[], &none).is_empty());
        let ms = ids("a,b,c");
        let a = assign(&[], &ms, &none);
        assert_eq!(counts(&a), [0, 0, 0]);
        let ps = parts("t/{0..2}");
        let a = assign(&ps, &ms, &none);
        check(&ps, &ms, &none, &a).unwrap();
        let mut c = counts(&a);
        c.sort();
        assert_eq!(c, [0, 1, 1]);
    }

    /// Gone members and deleted partitions are ignored; what the gone member
    /// owned and still exists is unowned and placed.
    #[test]
    fn stale_previous_is_ignored() {
        let ps = parts("t/{0..6}");
        let ms = ids("a,b");
        let previous = explicit(&[("a", "t/{0..3},t/{10..14}"), ("gone", "t/{3..6}")]);
        let after = assign(&ps, &ms, &previous);
        check(&ps, &ms, &previous, &after).unwrap();
        assert_eq!(after["a"], parts("t/{0..3}").into_iter().collect());
    }

    /// A `previous` naming two owners for a partition still gives a valid,
    /// deterministic assignment, keeping one of the claims.
    #[test]
    fn double_claims_resolve_to_one_owner() {
        let ps = parts("t/{0..4}");
        let ms = ids("a,b");
        let previous = explicit(&[("a", "t/{0..3}"), ("b", "t/{2..4}")]);
        let after = assign(&ps, &ms, &previous);
        assert_eq!(counts(&after), [2, 2]);
        assert!(after["a"].is_superset(&parts("t/0,t/1").into_iter().collect()));
        assert!(after["b"].contains(&pid("t/3")));
    }

    /// The ring, not the sort order of names, picks which members give up a
    /// partition and which take the places at `q + 1`: over many topics each
    /// member is chosen about as often as any other.
    #[test]
    fn ring_spreads_who_gives_and_who_gets() {
        let ms8 = ids("m{0..8}");
        let mut donors: BTreeMap<MemberId, usize> = BTreeMap::new();
        let mut extras: BTreeMap<MemberId, usize> = BTreeMap::new();
        let rounds = 200;
        for k in 0..rounds {
            // 8 members own 3 each; a 9th joins and takes 2 from two of them.
            let ps = parts(&format!("topic{k}/{{0..24}}"));
            let before = assign(&ps, &ms8, &Assignment::new());
            let mut ms9 = ms8.clone();
            ms9.push("m8".into());
            let after = assign(&ps, &ms9, &before);
            check(&ps, &ms9, &before, &after).unwrap();
            for m in &ms8 {
                if after[m].len() < before[m].len() {
                    *donors.entry(m.clone()).or_default() += 1;
                }
            }
            // 9 partitions over 8 members from scratch: who gets the 2nd?
            let ps = parts(&format!("topic{k}/{{0..9}}"));
            let a = assign(&ps, &ms8, &Assignment::new());
            for (m, owned) in &a {
                if owned.len() == 2 {
                    *extras.entry(m.clone()).or_default() += 1;
                }
            }
        }
        // Expected 50 donations and 25 extras per member.
        for m in &ms8 {
            let (d, e) = (donors.get(m).copied(), extras.get(m).copied());
            assert!(d.unwrap_or(0) >= 20, "{m} donated {d:?} times: {donors:?}");
            assert!(
                e.unwrap_or(0) >= 8,
                "{m} got the extra {e:?} times: {extras:?}"
            );
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Join(u8),
        Leave(u8),
        /// Topic `t{0}` now has `{1}` partitions.
        Resize(u8, u8),
        /// A rebalance with nothing changed (e.g. a static member's restart).
        Same,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => any::<u8>().prop_map(Op::Join),
            3 => any::<u8>().prop_map(Op::Leave),
            1 => (0u8..3, 0u8..40).prop_map(|(t, n)| Op::Resize(t, n)),
            1 => Just(Op::Same),
        ]
    }

    fn topic_parts(sizes: &[u8]) -> Vec<PartitionId> {
        sizes
            .iter()
            .enumerate()
            .flat_map(|(t, &n)| {
                (0..u32::from(n)).map(move |i| PartitionId::new(format!("t{t}"), i))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Random join/leave/resize sequences: at every step all partitions
        /// are assigned once, counts differ by at most one, exactly the
        /// minimum moves, a join moves only onto the joiner and a leave
        /// only the leaver's partitions.
        #[test]
        fn sequences_stay_balanced_and_minimal(
            sizes in vec(0u8..40, 1..4),
            initial in btree_set(0u8..16, 0..8),
            ops in vec(op(), 1..12),
        ) {
            let mut sizes = sizes;
            let mut members: BTreeSet<MemberId> = initial.iter().map(|i| format!("m{i}")).collect();
            let ms: Vec<MemberId> = members.iter().cloned().collect();
            let ps = topic_parts(&sizes);
            let mut current = assign(&ps, &ms, &Assignment::new());
            check(&ps, &ms, &Assignment::new(), &current).map_err(TestCaseError::fail)?;
            for op in ops {
                let previous = current.clone();
                match &op {
                    Op::Join(i) => { members.insert(format!("m{}", i % 16)); }
                    Op::Leave(i) => {
                        if let Some(m) = members.iter().nth(usize::from(*i) % members.len().max(1)).cloned() {
                            members.remove(&m);
                        }
                    }
                    Op::Resize(t, n) => {
                        if let Some(s) = sizes.get_mut(usize::from(*t)) { *s = *n; }
                    }
                    Op::Same => {}
                }
                let ms: Vec<MemberId> = members.iter().cloned().collect();
                let ps = topic_parts(&sizes);
                current = assign(&ps, &ms, &previous);
                check(&ps, &ms, &previous, &current)
                    .map_err(|e| TestCaseError::fail(format!("{op:?}: {e}")))?;
                let moved = reassigned(&previous, &current);
                let resized = matches!(op, Op::Resize(..));
                match &op {
                    Op::Join(i) if !resized => {
                        let joiner = format!("m{}", i % 16);
                        if !previous.contains_key(&joiner) && !previous.is_empty() {
                            prop_assert!(moved.is_subset(&current[&joiner]), "{op:?} moved {moved:?}");
                        }
                    }
                    Op::Leave(_) => {
                        let gone: BTreeSet<PartitionId> = previous
                            .iter()
                            .filter(|(m, _)| !members.contains(*m))
                            .flat_map(|(_, o)| o.iter().cloned())
                            .collect();
                        prop_assert!(moved.is_subset(&gone), "{op:?} moved {moved:?}");
                    }
                    Op::Same => prop_assert_eq!(&current, &previous),
                    _ => {}
                }
            }
        }

        /// Any previous assignment (unbalanced, stale members, deleted
        /// partitions): the result is valid, minimal, and the same whatever
        /// order or duplicates the inputs come in.
        #[test]
        fn any_previous_and_any_order(
            sizes in vec(0u8..30, 1..4),
            members in btree_set(0u8..12, 1..9),
            owners in vec(proptest::option::of(0u8..14), 0..100),
            seed in any::<u64>(),
        ) {
            let ps = topic_parts(&sizes);
            let ms: Vec<MemberId> = members.iter().map(|i| format!("m{i}")).collect();
            // Owners beyond the member range are gone; partitions beyond `ps` deleted.
            let mut previous = Assignment::new();
            for (i, o) in owners.iter().enumerate() {
                if let Some(o) = o {
                    let p = ps.get(i).cloned().unwrap_or_else(|| PartitionId::new("deleted", i as u32));
                    previous.entry(format!("m{o}")).or_default().insert(p);
                }
            }
            let want = assign(&ps, &ms, &previous);
            check(&ps, &ms, &previous, &want).map_err(TestCaseError::fail)?;
            let shuffle = |v: &mut Vec<Vec<u8>>| v.sort_by_key(|k| xxh3_64_with_seed(k, seed));
            let mut keys: Vec<Vec<u8>> = ps.iter().map(PartitionId::ring_key).collect();
            keys.extend(keys.clone().into_iter().take(3));
            shuffle(&mut keys);
            let ps2: Vec<PartitionId> = keys.iter().map(|k| pid(std::str::from_utf8(k).unwrap())).collect();
            let mut mkeys: Vec<Vec<u8>> = ms.iter().map(|m| m.clone().into_bytes()).collect();
            mkeys.push(mkeys[0].clone());
            shuffle(&mut mkeys);
            let ms2: Vec<MemberId> = mkeys.into_iter().map(|k| String::from_utf8(k).unwrap()).collect();
            prop_assert_eq!(assign(&ps2, &ms2, &previous), want);
        }
    }

    // ---- Table-driven cases: testdata/assignor/*.txt ----------------------
    //
    // A case is a few input lines, a `----` line, and the expected output up
    // to a blank line; `#` lines between cases are comments.
    // `RINGMQ_REWRITE=1 cargo test --lib group` rewrites the expected outputs
    // from the code (review the diff before committing).
    //
    //   partitions SPEC            the partitions now (SPEC as in ring tests:
    //                              comma-separated, `t/{0..12}` expands)
    //   previous a=SPEC b=SPEC …   the previous assignment, given explicitly;
    //                              `a=` is a member that owned nothing
    //   previous a,b,c             … or computed from scratch for members
    //                              a,b,c over the partitions, or over
    //   before-partitions SPEC     these, when given
    //   members SPEC               the members now
    //
    // Output: each member and its partitions (`-` for none), then
    // `reassigned N (minimum M)` with the moves `p from->to` (`+` for a
    // partition nobody owned), then `counts lo..hi`. Every case is also
    // checked against invariants 1 to 3, whatever its expected output.

    fn run_case(input: &[&str]) -> Result<Vec<String>, String> {
        let mut lines: BTreeMap<&str, &str> = BTreeMap::new();
        for line in input {
            let (key, rest) = line.split_once(' ').unwrap_or((line, ""));
            if lines.insert(key, rest.trim()).is_some() {
                return Err(format!("{key} given twice"));
            }
        }
        let ps = parts(lines.get("partitions").ok_or("missing partitions")?);
        let ms = ids(lines.get("members").ok_or("missing members")?);
        let previous = match lines.get("previous").copied().unwrap_or("") {
            spec if spec.contains('=') => spec
                .split_whitespace()
                .map(|kv| {
                    let (m, s) = kv.split_once('=').ok_or(format!("{kv}: expected m=SPEC"))?;
                    Ok((m.to_string(), parts(s).into_iter().collect()))
                })
                .collect::<Result<Assignment, String>>()?,
            spec => {
                let over = lines
                    .get("before-partitions")
                    .map_or_else(|| ps.clone(), |s| parts(s));
                assign(&over, &ids(spec), &Assignment::new())
            }
        };
        let next = assign(&ps, &ms, &previous);
        let (moved, min, lo, hi) = check(&ps, &ms, &previous, &next)?;

        let mut out: Vec<String> = next
            .iter()
            .map(|(m, owned)| {
                let list: Vec<String> = owned.iter().map(ToString::to_string).collect();
                let list = if list.is_empty() {
                    "-".to_string()
                } else {
                    list.join(",")
                };
                format!("{m} {list}")
            })
            .collect();
        let mut before: BTreeMap<&PartitionId, &str> = BTreeMap::new();
        for (m, owned) in &previous {
            for p in owned {
                before.insert(p, m);
            }
        }
        let mut moves: Vec<String> = Vec::new();
        for (m, owned) in &next {
            for p in owned {
                match before.get(p) {
                    Some(&b) if b == m => {}
                    Some(&b) => moves.push(format!("{p} {b}->{m}")),
                    None => moves.push(format!("{p} +{m}")),
                }
            }
        }
        let mut line = format!("reassigned {moved} (minimum {min})");
        if !moves.is_empty() {
            line.push_str(": ");
            line.push_str(&moves.join(" "));
        }
        out.push(line);
        out.push(format!("counts {lo}..{hi}"));
        Ok(out)
    }

    #[test]
    fn table_driven_cases() {
        let rewrite = crate::testdata::rewrite_requested();
        let files = crate::testdata::case_files("assignor");
        let mut failures = Vec::new();
        let mut cases = 0;
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read case file");
            let lines: Vec<&str> = text.lines().collect();
            let mut out = String::new();
            let mut i = 0;
            while i < lines.len() {
                if lines[i].trim().is_empty() || lines[i].starts_with('#') {
                    out.push_str(lines[i]);
                    out.push('\n');
                    i += 1;
                    continue;
                }
                let first = i + 1;
                let start = i;
                while i < lines.len() && lines[i] != "----" {
                    i += 1;
                }
                assert!(i < lines.len(), "{}:{first}: expected ----", file.display());
                let input = &lines[start..i];
                i += 1;
                let expected_at = i;
                while i < lines.len() && !lines[i].trim().is_empty() {
                    i += 1;
                }
                let expected = &lines[expected_at..i];
                cases += 1;
                let actual = run_case(input).unwrap_or_else(|e| vec![format!("error: {e}")]);
                if actual != expected {
                    failures.push(format!(
                        "{}:{first}:\n{}\n--- expected\n{}\n--- actual\n{}\n",
                        file.display(),
                        input.join("\n"),
                        expected.join("\n"),
                        actual.join("\n")
                    ));
                }
                for l in input {
                    out.push_str(l);
                    out.push('\n');
                }
                out.push_str("----\n");
                for a in &actual {
                    out.push_str(a);
                    out.push('\n');
                }
            }
            if rewrite {
                std::fs::write(&file, out).expect("rewrite case file");
            }
        }
        assert!(cases > 0);
        if !rewrite {
            assert!(failures.is_empty(), "{}", failures.join("\n"));
        }
    }
}
