//! The group rules of SPEC 5.9, one test per rule, and a random walk that
//! checks the invariants after every step.

use super::*;
use proptest::prelude::*;

const T: &str = "tasks";
const TIMEOUT: u32 = 10_000;

fn counts(n: u32) -> TopicCounts {
    [(T.to_string(), n)].into_iter().collect()
}

fn join_req(instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest {
        group: "g".into(),
        member_id: String::new(),
        instance_id: instance.map(str::to_string),
        session_timeout_ms: TIMEOUT,
        topics: vec![T.into()],
    }
}

fn join(g: &mut Group, now: i64, c: &TopicCounts) -> MemberId {
    g.join(&join_req(None), now, c).expect("join").0
}

fn held(g: &Group, m: &str) -> usize {
    g.holders().values().filter(|h| *h == m).count()
}

fn offset(p: u32, offset: u64) -> PartitionOffset {
    PartitionOffset {
        topic: T.into(),
        partition: p,
        offset,
    }
}

/// Everyone heartbeats with the current generation until nothing moves.
fn settle(g: &mut Group, now: i64) {
    for _ in 0..4 {
        let gen = g.generation();
        let ids: Vec<String> = g.members().keys().cloned().collect();
        for id in ids {
            g.heartbeat(&id, gen, now).expect("heartbeat");
        }
    }
}

fn check_invariants(g: &Group) {
    // Holders are members; each holding is a partition of the group.
    for (p, h) in g.holders() {
        assert!(g.members().contains_key(h), "{p} held by non-member {h}");
    }
    // Every member's answer lists only partitions it holds (so no partition
    // is consumed by two members: holders is a map).
    for id in g.members().keys() {
        let a = g.assignment(id);
        for tp in &a.partitions {
            for p in &tp.partitions {
                let pid = PartitionId::new(tp.topic.clone(), *p);
                assert_eq!(g.holders().get(&pid), Some(id));
            }
        }
    }
}

#[test]
fn first_join_sets_generation_one_and_takes_everything() {
    let c = counts(12);
    let mut g = Group::new("g");
    assert_eq!(g.generation(), 0);
    let (id, a) = g.join(&join_req(None), 0, &c).unwrap();
    assert!(id.len() <= MAX_MEMBER_ID_LEN);
    assert_eq!(a.generation, 1);
    assert_eq!(a.partitions[0].partitions.len(), 12);
    assert_eq!(a.pending, 0);
    assert!(g.take_dirty());
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn twelve_partitions_three_members_then_a_fourth() {
    let c = counts(12);
    let mut g = Group::new("g");
    let ids: Vec<_> = (0..3).map(|i| join(&mut g, i, &c)).collect();
    settle(&mut g, 10);
    for id in &ids {
        assert_eq!(held(&g, id), 4);
    }
    let before = g.holders().clone();
    let gen = g.generation();
    let (fourth, a) = g.join(&join_req(None), 20, &c).unwrap();
    assert_eq!(a.generation, gen + 1);
    // Nobody has released yet: the newcomer waits for 3.
    assert_eq!(a.pending, 3);
    assert!(a.partitions.is_empty());
    assert_eq!(g.state(), GroupState::Rebalancing);
    check_invariants(&g);
    settle(&mut g, 30);
    for id in ids.iter().chain([&fourth]) {
        assert_eq!(held(&g, id), 3, "{id}");
    }
    let moved = before
        .iter()
        .filter(|(p, h)| g.holders().get(*p) != Some(*h))
        .count();
    assert_eq!(moved, 3);
    assert_eq!(g.state(), GroupState::Stable);
}

#[test]
fn a_partition_moves_only_after_its_holder_acks() {
    let c = counts(4);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    let b = join(&mut g, 1, &c);
    // a holds all 4 (it has not acked generation 2); b is due 2.
    assert_eq!(held(&g, &a), 4);
    assert_eq!(g.assignment(&b).pending, 2);
    // a's answer at generation 2 leaves out what it must release.
    let ans = g.heartbeat(&a, 1, 2).unwrap();
    assert_eq!(ans.generation, 2);
    assert_eq!(ans.partitions[0].partitions.len(), 2);
    assert_eq!(held(&g, &a), 4);
    // b's heartbeat changes nothing for a's partitions.
    assert_eq!(g.heartbeat(&b, 2, 3).unwrap().pending, 2);
    // a acks generation 2: released and granted.
    g.heartbeat(&a, 2, 4).unwrap();
    assert_eq!(held(&g, &a), 2);
    let ans = g.heartbeat(&b, 2, 5).unwrap();
    assert_eq!(ans.pending, 0);
    assert_eq!(ans.partitions[0].partitions.len(), 2);
}

#[test]
fn leave_and_expiry_give_everything_to_the_survivors() {
    let c = counts(12);
    let mut g = Group::new("g");
    let ids: Vec<_> = (0..3).map(|i| join(&mut g, i, &c)).collect();
    settle(&mut g, 10);
    let gen = g.generation();
    g.leave(&ids[0], &c).unwrap();
    assert_eq!(g.generation(), gen + 1);
    assert_eq!(held(&g, &ids[1]) + held(&g, &ids[2]), 12);
    assert_eq!(held(&g, &ids[1]), 6);
    assert_eq!(
        g.heartbeat(&ids[0], gen, 11).unwrap_err().code,
        ErrorCode::UnknownMember
    );
    assert_eq!(
        g.leave(&ids[0], &c).unwrap_err().code,
        ErrorCode::UnknownMember
    );

    // ids[2] goes silent; ids[1] keeps heartbeating.
    let t = 10 + i64::from(TIMEOUT);
    g.heartbeat(&ids[1], g.generation(), t).unwrap();
    assert_eq!(g.tick(t, &c), 0);
    assert_eq!(g.tick(t + 1, &c), 1);
    assert_eq!(g.generation(), gen + 2);
    assert_eq!(held(&g, &ids[1]), 12);
    let a = g.assignment(&ids[1]);
    assert_eq!((a.partitions[0].partitions.len(), a.pending), (12, 0));
}

#[test]
fn a_zombie_cannot_commit_after_expiry() {
    let c = counts(2);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    let gen = g.generation();
    g.check_commit(&a, gen, &[offset(0, 5)], 1).unwrap();
    g.tick(2 + i64::from(TIMEOUT), &c);
    assert!(g.members().is_empty());
    let e = g.check_commit(&a, gen, &[offset(0, 9)], 3 + i64::from(TIMEOUT));
    assert_eq!(e.unwrap_err().code, ErrorCode::UnknownMember);
    assert_eq!(g.state(), GroupState::Empty);
}

#[test]
fn commit_rules() {
    let c = counts(4);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    let b = join(&mut g, 1, &c);
    settle(&mut g, 2);
    let gen = g.generation();
    let mine = g.assignment(&a).partitions[0].partitions[0];
    let theirs = g.assignment(&b).partitions[0].partitions[0];
    let code = |r: Result<Vec<(PartitionId, u64)>, Failure>| r.unwrap_err().code;
    assert_eq!(
        code(g.check_commit("nobody", gen, &[offset(mine, 1)], 3)),
        ErrorCode::UnknownMember
    );
    assert_eq!(
        code(g.check_commit(&a, gen - 1, &[offset(mine, 1)], 3)),
        ErrorCode::StaleGeneration
    );
    assert_eq!(
        code(g.check_commit(&a, gen + 1, &[offset(mine, 1)], 3)),
        ErrorCode::StaleGeneration
    );
    assert_eq!(
        code(g.check_commit(&a, gen, &[], 3)),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(g.check_commit(&a, gen, &[offset(mine, 1), offset(mine, 2)], 3)),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code(g.check_commit(&a, gen, &[offset(mine, 1), offset(theirs, 2)], 3)),
        ErrorCode::PartitionNotAssigned
    );
    let ok = g.check_commit(&a, gen, &[offset(mine, 7)], 3).unwrap();
    g.apply_commit(ok);
    assert_eq!(g.fetch_offsets(&[]), vec![offset(mine, 7)]);
    assert!(g.fetch_offsets(&["other".into()]).is_empty());
}

#[test]
fn commits_and_heartbeats_keep_a_member_alive() {
    let c = counts(1);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    let t = i64::from(TIMEOUT);
    g.check_commit(&a, 1, &[offset(0, 1)], t).unwrap();
    assert_eq!(g.tick(2 * t, &c), 0);
    g.heartbeat(&a, 1, 2 * t).unwrap();
    assert_eq!(g.tick(3 * t, &c), 0);
    assert_eq!(g.tick(3 * t + 1, &c), 1);
}

#[test]
fn heartbeat_from_the_future_is_stale() {
    let c = counts(1);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    let e = g.heartbeat(&a, 2, 1).unwrap_err();
    assert_eq!(e.code, ErrorCode::StaleGeneration);
    assert_eq!(g.heartbeat(&a, 0, 1).unwrap().generation, 1);
}

#[test]
fn a_static_member_replacing_itself_moves_nothing() {
    let c = counts(6);
    let mut g = Group::new("g");
    let a = g.join(&join_req(Some("worker-1")), 0, &c).unwrap().0;
    let b = join(&mut g, 1, &c);
    settle(&mut g, 2);
    let gen = g.generation();
    let before: Vec<PartitionId> = g
        .holders()
        .iter()
        .filter(|(_, h)| **h == a)
        .map(|(p, _)| p.clone())
        .collect();
    g.take_dirty();
    let (a2, ans) = g.join(&join_req(Some("worker-1")), 3, &c).unwrap();
    assert_ne!(a2, a);
    assert_eq!(ans.generation, gen);
    assert_eq!(g.generation(), gen);
    assert_eq!(ans.pending, 0);
    let after: Vec<PartitionId> = g
        .holders()
        .iter()
        .filter(|(_, h)| **h == a2)
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(before, after);
    assert_eq!(held(&g, &b), 3);
    // The id change is stored, even without a rebalance.
    assert!(g.take_dirty());
    // The old process is fenced for good: every request it can make says
    // so, and none of them changes anything.
    g.take_dirty();
    assert_eq!(
        g.heartbeat(&a, gen, 4).unwrap_err().code,
        ErrorCode::FencedInstanceId
    );
    assert_eq!(
        g.check_commit(&a, gen, &[offset(before[0].partition, 1)], 4)
            .unwrap_err()
            .code,
        ErrorCode::FencedInstanceId
    );
    assert_eq!(
        g.leave(&a, &c).unwrap_err().code,
        ErrorCode::FencedInstanceId
    );
    let mut rejoin = join_req(Some("worker-1"));
    rejoin.member_id = a.clone();
    assert_eq!(
        g.join(&rejoin, 4, &c).unwrap_err().code,
        ErrorCode::FencedInstanceId
    );
    assert_eq!(g.members().len(), 2);
    assert!(g.members().contains_key(&a2));
    assert_eq!(g.generation(), gen);
    assert!(!g.take_dirty());
    // A member that left is unknown, not fenced.
    g.leave(&b, &c).unwrap();
    assert_eq!(
        g.heartbeat(&b, gen, 5).unwrap_err().code,
        ErrorCode::UnknownMember
    );
}

#[test]
fn the_newest_static_join_wins_and_fenced_ids_are_bounded_and_stored() {
    let c = counts(4);
    let mut g = Group::new("g");
    let mut ids = vec![g.join(&join_req(Some("w")), 0, &c).unwrap().0];
    for i in 1..=(MAX_FENCED_PER_GROUP as i64 + 5) {
        // Each new process with the instance id takes the place (SPEC 5.9).
        let (id, ans) = g.join(&join_req(Some("w")), i, &c).unwrap();
        assert_eq!(ans.generation, 1);
        assert_eq!(g.members().len(), 1);
        assert!(g.members().contains_key(&id));
        ids.push(id);
    }
    let last = ids.pop().unwrap();
    let fenced = |g: &mut Group, id: &str| g.heartbeat(id, 1, 100).unwrap_err().code;
    // The newest MAX_FENCED_PER_GROUP are fenced; older ones are forgotten.
    let (forgotten, remembered) = ids.split_at(ids.len() - MAX_FENCED_PER_GROUP);
    for id in remembered {
        assert_eq!(fenced(&mut g, id), ErrorCode::FencedInstanceId);
    }
    for id in forgotten {
        assert_eq!(fenced(&mut g, id), ErrorCode::UnknownMember);
    }
    assert!(g.heartbeat(&last, 1, 100).is_ok());
    // Fenced ids survive a restore.
    let mut restored = Group::new("g");
    restored.restore(g.membership(), 0);
    assert_eq!(
        fenced(&mut restored, &remembered[0]),
        ErrorCode::FencedInstanceId
    );
}

#[test]
fn a_group_takes_at_most_max_group_members() {
    let c = counts(2);
    let mut g = Group::new("g");
    // A full group, restored rather than joined one by one (that would run
    // the assignor a thousand times).
    let member = |i: usize| StoredMember {
        member_id: format!("m-{i}"),
        instance_id: (i == 0).then(|| "w".to_string()),
        session_timeout_ms: TIMEOUT,
        acked_generation: 1,
        target: vec![],
        held: vec![],
    };
    g.restore(
        Membership {
            generation: 1,
            topics: vec![T.into()],
            members: (0..MAX_GROUP_MEMBERS).map(member).collect(),
            fenced: vec![],
        },
        0,
    );
    assert_eq!(
        g.join(&join_req(None), 0, &c).unwrap_err().code,
        ErrorCode::GroupFull
    );
    assert_eq!(g.members().len(), MAX_GROUP_MEMBERS);
    // A static member taking its place back adds no one: still allowed.
    assert!(g.join(&join_req(Some("w")), 1, &c).is_ok());
    assert_eq!(g.members().len(), MAX_GROUP_MEMBERS);
    // One leaves: there is room again.
    g.leave("m-1", &c).unwrap();
    assert!(g.join(&join_req(None), 2, &c).is_ok());
}

#[test]
fn the_generation_never_wraps() {
    let c = counts(2);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    let mut m = g.membership();
    m.generation = u32::MAX - GENERATION_RESERVE;
    g.restore(m, 0);
    // No new member once only the reserve is left...
    let e = g.join(&join_req(None), 1, &c).unwrap_err();
    assert_eq!(e.code, ErrorCode::InvalidRequest);
    assert!(e.message.contains("generations"), "{}", e.message);
    // ...but leaves and expiries still bump, and at the very end the
    // generation stays put instead of going back to 1.
    let mut m = g.membership();
    m.generation = u32::MAX;
    g.restore(m, 0);
    g.leave(&a, &c).unwrap();
    assert_eq!(g.generation(), u32::MAX);
}

#[test]
fn a_deleted_topic_takes_its_offsets_and_bumps_at_once() {
    let mut c = counts(2);
    c.insert("b".into(), 2);
    let mut g = Group::new("g");
    let mut r = join_req(None);
    r.topics = vec![T.into(), "b".into()];
    let a = g.join(&r, 0, &c).unwrap().0;
    let commit = vec![
        offset(0, 5),
        PartitionOffset {
            topic: "b".into(),
            partition: 1,
            offset: 9,
        },
    ];
    let ok = g.check_commit(&a, 1, &commit, 0).unwrap();
    g.apply_commit(ok);
    g.take_dirty();
    c.remove("b");
    assert!(g.drop_topic("b", &c));
    assert_eq!(g.generation(), 2);
    assert!(g.take_dirty());
    assert_eq!(held(&g, &a), 2);
    assert_eq!(g.fetch_offsets(&[]), vec![offset(0, 5)]);
    // Recreated before any tick: the group sees new partitions, no old offset.
    c.insert("b".into(), 3);
    g.tick(1, &c);
    assert_eq!(g.generation(), 3);
    assert_eq!(held(&g, &a), 5);
    assert!(g.fetch_offsets(&["b".into()]).is_empty());
    // A topic the group neither consumes nor has offsets of changes nothing.
    assert!(!g.drop_topic("zzz", &c));
    assert_eq!(g.generation(), 3);
}

#[test]
fn a_commit_is_undone_where_it_still_stands() {
    let c = counts(3);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    let first = g.check_commit(&a, 1, &[offset(0, 5)], 0).unwrap();
    g.apply_commit(first);
    let commit = g
        .check_commit(&a, 1, &[offset(0, 8), offset(1, 3), offset(2, 4)], 0)
        .unwrap();
    let before = g.offsets_of(commit.iter().map(|(p, _)| p));
    g.apply_commit(commit.clone());
    // A later commit moved partition 2 on meanwhile: it keeps that value.
    let later = g.check_commit(&a, 1, &[offset(2, 6)], 0).unwrap();
    g.apply_commit(later);
    let restored = g.undo_commit(&commit, &before);
    assert_eq!(
        restored,
        vec![
            (PartitionId::new(T, 0), Some(5)),
            (PartitionId::new(T, 1), None)
        ]
    );
    assert_eq!(g.fetch_offsets(&[]), vec![offset(0, 5), offset(2, 6)]);
}

#[test]
fn a_group_with_no_members_and_no_offsets_is_void_whatever_its_generation() {
    let c = counts(2);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    let ok = g.check_commit(&a, 1, &[offset(0, 1)], 0).unwrap();
    g.apply_commit(ok);
    g.leave(&a, &c).unwrap();
    assert!(!g.is_void());
    g.drop_offsets(T, Some(&[0]));
    assert!(g.is_void());
    assert_eq!(g.generation(), 2);
}

#[test]
fn a_known_member_rejoining_changes_nothing() {
    let c = counts(3);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    g.take_dirty();
    let mut req = join_req(None);
    req.member_id = a.clone();
    let (id, ans) = g.join(&req, 5, &c).unwrap();
    assert_eq!((id, ans.generation), (a, 1));
    assert!(!g.take_dirty());
    req.member_id = "m-unknown".into();
    assert_eq!(
        g.join(&req, 5, &c).unwrap_err().code,
        ErrorCode::UnknownMember
    );
}

#[test]
fn join_validation() {
    let c = counts(3);
    let mut g = Group::new("g");
    let code = |g: &mut Group, r: JoinGroupRequest| g.join(&r, 0, &c).unwrap_err().code;
    for t in [
        0,
        MIN_SESSION_TIMEOUT_MS - 1,
        MAX_SESSION_TIMEOUT_MS + 1,
        u32::MAX,
    ] {
        let mut r = join_req(None);
        r.session_timeout_ms = t;
        assert_eq!(code(&mut g, r), ErrorCode::InvalidSessionTimeout, "{t}");
    }
    let r = join_req(Some("has space"));
    assert_eq!(code(&mut g, r), ErrorCode::InvalidGroupId);
    let mut r = join_req(None);
    r.topics = vec![];
    assert_eq!(code(&mut g, r), ErrorCode::InvalidRequest);
    let mut r = join_req(None);
    r.topics = (0..=MAX_GROUP_TOPICS).map(|i| format!("t{i}")).collect();
    assert_eq!(code(&mut g, r), ErrorCode::InvalidRequest);
    let mut r = join_req(None);
    r.topics.push("missing".into());
    assert_eq!(code(&mut g, r), ErrorCode::UnknownTopic);
    assert!(g.is_void());
    assert!(validate_group_id("group id", "").is_err());

    // The first member sets the topics; another set is refused.
    join(&mut g, 0, &c);
    let mut c2 = c.clone();
    c2.insert("other".into(), 1);
    let mut r = join_req(None);
    r.topics = vec!["other".into()];
    assert_eq!(
        g.join(&r, 0, &c2).unwrap_err().code,
        ErrorCode::InvalidRequest
    );
    // The same set in another order, with a duplicate, is the same set.
    let mut r = join_req(None);
    r.topics = vec![T.into(), T.into()];
    assert!(g.join(&r, 0, &c).is_ok());
}

#[test]
fn an_emptied_group_forgets_its_topics_but_not_its_generation() {
    let c = counts(2);
    let mut g = Group::new("g");
    let a = join(&mut g, 0, &c);
    g.leave(&a, &c).unwrap();
    assert_eq!(g.generation(), 2);
    assert_eq!(g.state(), GroupState::Empty);
    let d = g.describe(0, &c);
    assert!(d.topics.is_empty() && d.members.is_empty());
    let mut c2 = c.clone();
    c2.insert("other".into(), 1);
    let mut r = join_req(None);
    r.topics = vec!["other".into()];
    let (_, ans) = g.join(&r, 1, &c2).unwrap();
    assert_eq!(ans.generation, 3);
}

#[test]
fn a_deleted_topic_is_dropped_at_the_next_tick() {
    let mut c = counts(2);
    c.insert("b".into(), 2);
    let mut g = Group::new("g");
    let mut r = join_req(None);
    r.topics = vec![T.into(), "b".into()];
    let a = g.join(&r, 0, &c).unwrap().0;
    assert_eq!(held(&g, &a), 4);
    c.remove("b");
    g.tick(1, &c);
    assert_eq!(g.generation(), 2);
    assert_eq!(held(&g, &a), 2);
    assert_eq!(g.describe(1, &c).partitions.len(), 2);
}

#[test]
fn describe_and_membership_round_trip() {
    let c = counts(4);
    let mut g = Group::new("g");
    let a = g.join(&join_req(Some("w1")), 0, &c).unwrap().0;
    let _b = join(&mut g, 1, &c);
    let ok = g.check_commit(&a, 2, &[offset(0, 3)], 2);
    if let Ok(ok) = ok {
        g.apply_commit(ok);
    }
    let d = g.describe(10, &c);
    assert_eq!(d.members.len(), 2);
    assert_eq!(
        d.members.iter().find(|m| m.member_id == a).unwrap().idle_ms,
        8
    );
    assert_eq!(d.partitions.len(), 4);
    assert_eq!(d.state, GroupState::Rebalancing);

    let mut restored = Group::new("g");
    restored.restore(g.membership(), 100);
    assert_eq!(restored.membership(), g.membership());
    assert_eq!(restored.generation(), g.generation());
    assert_eq!(restored.holders(), g.holders());
    assert_eq!(restored.state(), g.state());
    assert!(restored.members().values().all(|m| m.last_seen_ms == 100));
}

#[derive(Debug, Clone)]
enum Op {
    Join(Option<u8>),
    Heartbeat(u8, bool),
    Leave(u8),
    Commit(u8, u8),
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        prop::option::of(0u8..3).prop_map(Op::Join),
        (0u8..8, any::<bool>()).prop_map(|(m, cur)| Op::Heartbeat(m, cur)),
        (0u8..8).prop_map(Op::Leave),
        (0u8..8, 0u8..9).prop_map(|(m, p)| Op::Commit(m, p)),
        (0u16..12_000).prop_map(Op::Tick),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// After every step: no partition held by two members (holders is a map
    /// from partition to one member, and answers list only what a member
    /// holds), a partition changes holder only when its holder acked, left
    /// or expired, counts of a stable group are balanced, and the
    /// generation never goes down.
    #[test]
    fn invariants_hold_after_every_step(ops in prop::collection::vec(op(), 1..60)) {
        let c = counts(9);
        let mut g = Group::new("g");
        let mut now = 0i64;
        let mut ids: Vec<MemberId> = Vec::new();
        for op in ops {
            now += 50;
            let before_holders = g.holders().clone();
            let before_gen = g.generation();
            let before_members: BTreeMap<MemberId, Member> = g.members().clone();
            let pick = |i: u8| ids.get(i as usize % ids.len().max(1)).cloned().unwrap_or_default();
            match op {
                Op::Join(instance) => {
                    let inst = instance.map(|i| format!("w{i}"));
                    if let Ok((id, _)) = g.join(&join_req(inst.as_deref()), now, &c) {
                        ids.push(id);
                    }
                }
                Op::Heartbeat(m, current) => {
                    let gen = if current { g.generation() } else { g.generation().saturating_sub(1) };
                    let _ = g.heartbeat(&pick(m), gen, now);
                }
                Op::Leave(m) => { let _ = g.leave(&pick(m), &c); }
                Op::Commit(m, p) => {
                    if let Ok(ok) = g.check_commit(&pick(m), g.generation(), &[offset(u32::from(p), 1)], now) {
                        g.apply_commit(ok);
                    }
                }
                Op::Tick(dt) => { now += i64::from(dt); g.tick(now, &c); }
            }
            check_invariants(&g);
            prop_assert!(g.generation() >= before_gen);
            for (p, old) in &before_holders {
                let new = g.holders().get(p);
                if new.is_some() && new != Some(old) {
                    // Moved: the old holder is gone, was replaced by its
                    // static successor, or had acked the generation.
                    let released = match g.members().get(old) {
                        None => true,
                        Some(m) => m.acked_generation == g.generation()
                            && before_members.contains_key(old),
                    };
                    prop_assert!(released, "{p} moved from {old} without a release");
                }
            }
            if g.state() == GroupState::Stable {
                let counts: Vec<usize> = g.members().keys().map(|m| held(&g, m)).collect();
                let (lo, hi) = (counts.iter().min().copied().unwrap_or(0), counts.iter().max().copied().unwrap_or(0));
                prop_assert!(hi - lo <= 1, "unbalanced {counts:?}");
                prop_assert_eq!(g.holders().len(), 9);
            }
        }
    }
}
