//! Consumer groups against a live broker: bad group input gets a clear
//! error code and disturbs nothing, and a group (its committed offsets and
//! its membership) survives a restart by SIGKILL and by SIGTERM. A member
//! replaced by its instance id is fenced for good, a deleted topic takes its
//! committed offsets along, and a group left with nothing is forgotten.

mod common;

use common::raw::Raw;
use common::Broker;
use ringmq_protocol::{
    CommitOffsetsRequest, DeleteTopicRequest, DescribeGroupRequest, DescribeGroupResponse,
    ErrorCode, FetchOffsetsRequest, GroupState, GroupSummary, HeartbeatRequest, JoinGroupRequest,
    JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, PartitionOffset, Request, Response,
    ResponseBody,
};

const TOPIC: &str = "tasks";
const PARTITIONS: u32 = 4;
const SESSION_MS: u32 = 30_000;

fn code(r: &Response) -> ErrorCode {
    match &r.result {
        Ok(_) => ErrorCode::None,
        Err(e) => e.code,
    }
}

fn join_request(group: &str, session_timeout_ms: u32) -> Request {
    Request::JoinGroup(JoinGroupRequest {
        group: group.into(),
        member_id: String::new(),
        instance_id: None,
        session_timeout_ms,
        topics: vec![TOPIC.into()],
    })
}

fn join(c: &mut Raw, group: &str) -> JoinGroupResponse {
    match c.call(join_request(group, SESSION_MS)).result {
        Ok(ResponseBody::JoinGroup(j)) => j,
        other => panic!("join failed: {other:?}"),
    }
}

fn commit(
    c: &mut Raw,
    group: &str,
    member: &str,
    generation: u32,
    partition: u32,
    offset: u64,
) -> Response {
    c.call(Request::CommitOffsets(CommitOffsetsRequest {
        group: group.into(),
        member_id: member.into(),
        generation,
        offsets: vec![PartitionOffset {
            topic: TOPIC.into(),
            partition,
            offset,
        }],
    }))
}

fn fetch_offsets(c: &mut Raw, group: &str) -> Vec<PartitionOffset> {
    match c
        .call(Request::FetchOffsets(FetchOffsetsRequest {
            group: group.into(),
            topics: vec![],
        }))
        .result
    {
        Ok(ResponseBody::FetchOffsets(f)) => f.offsets,
        other => panic!("fetch offsets failed: {other:?}"),
    }
}

fn describe(c: &mut Raw, group: &str) -> DescribeGroupResponse {
    match c
        .call(Request::DescribeGroup(DescribeGroupRequest {
            group: group.into(),
        }))
        .result
    {
        Ok(ResponseBody::DescribeGroup(d)) => d,
        other => panic!("describe failed: {other:?}"),
    }
}

#[test]
fn bad_group_input_is_refused_and_disturbs_nothing() {
    let broker = Broker::start(&[]);
    let mut c = Raw::connect(broker.addr);
    c.create_topic(TOPIC, PARTITIONS);

    // Join with an empty group id.
    assert_eq!(
        code(&c.call(join_request("", SESSION_MS))),
        ErrorCode::InvalidGroupId
    );
    assert_eq!(
        code(&c.call(join_request("has space", SESSION_MS))),
        ErrorCode::InvalidGroupId
    );
    // Absurd session timeouts.
    for t in [0, u32::MAX] {
        assert_eq!(
            code(&c.call(join_request("g", t))),
            ErrorCode::InvalidSessionTimeout,
            "{t}"
        );
    }
    // A missing topic.
    let mut r = JoinGroupRequest {
        group: "g".into(),
        member_id: String::new(),
        instance_id: None,
        session_timeout_ms: SESSION_MS,
        topics: vec!["missing".into()],
    };
    assert_eq!(
        code(&c.call(Request::JoinGroup(r.clone()))),
        ErrorCode::UnknownTopic
    );
    r.topics.clear();
    assert_eq!(
        code(&c.call(Request::JoinGroup(r))),
        ErrorCode::InvalidRequest
    );
    // Heartbeat for an unknown member, of an unknown and of a live group.
    let hb = |group: &str| {
        Request::Heartbeat(HeartbeatRequest {
            group: group.into(),
            member_id: "m-nobody".into(),
            generation: 1,
        })
    };
    assert_eq!(code(&c.call(hb("g"))), ErrorCode::UnknownMember);

    // Two members share the 4 partitions; a commit for the other's is refused.
    let a = join(&mut c, "g");
    let b = join(&mut c, "g");
    assert_eq!(code(&c.call(hb("g"))), ErrorCode::UnknownMember);
    let generation = b.assignment.generation;
    assert_eq!(generation, 2);
    // a releases what b is due by acking generation 2.
    let r = c.call(Request::Heartbeat(HeartbeatRequest {
        group: "g".into(),
        member_id: a.member_id.clone(),
        generation,
    }));
    let a_parts = match r.result {
        Ok(ResponseBody::Heartbeat(h)) => h.assignment.partitions[0].partitions.clone(),
        other => panic!("heartbeat failed: {other:?}"),
    };
    assert_eq!(a_parts.len(), 2);
    let b_part = (0..PARTITIONS).find(|p| !a_parts.contains(p)).unwrap();
    assert_eq!(
        code(&commit(&mut c, "g", &a.member_id, generation, b_part, 5)),
        ErrorCode::PartitionNotAssigned
    );
    assert_eq!(
        code(&commit(
            &mut c,
            "g",
            &a.member_id,
            generation - 1,
            a_parts[0],
            5
        )),
        ErrorCode::StaleGeneration
    );
    assert_eq!(
        code(&commit(&mut c, "g", "m-nobody", generation, a_parts[0], 5)),
        ErrorCode::UnknownMember
    );
    // Nothing of a refused commit was stored.
    assert!(fetch_offsets(&mut c, "g").is_empty());

    // A valid member still works: commit, fetch offsets, describe.
    assert_eq!(
        code(&commit(
            &mut c,
            "g",
            &a.member_id,
            generation,
            a_parts[0],
            42
        )),
        ErrorCode::None
    );
    assert_eq!(
        fetch_offsets(&mut c, "g"),
        vec![PartitionOffset {
            topic: TOPIC.into(),
            partition: a_parts[0],
            offset: 42
        }]
    );
    let d = describe(&mut c, "g");
    assert_eq!(d.generation, generation);
    assert_eq!(d.members.len(), 2);
    assert!(d.members.iter().any(|m| m.member_id == a.member_id));
    assert_eq!(d.partitions.len(), PARTITIONS as usize);
    let described = d
        .partitions
        .iter()
        .find(|p| p.partition == a_parts[0])
        .unwrap();
    assert_eq!(described.committed, Some(42));
    assert_eq!(described.holder.as_deref(), Some(a.member_id.as_str()));

    // An unknown group is described as empty; ListGroups shows the live one.
    let empty = describe(&mut c, "nobody-here");
    assert_eq!((empty.state, empty.generation), (GroupState::Empty, 0));
    match c.call(Request::ListGroups(ListGroupsRequest {})).result {
        Ok(ResponseBody::ListGroups(l)) => {
            assert_eq!(l.groups.len(), 1);
            assert_eq!((l.groups[0].group.as_str(), l.groups[0].members), ("g", 2));
        }
        other => panic!("list groups failed: {other:?}"),
    }
}

#[test]
fn a_group_survives_sigkill_and_sigterm() {
    let mut broker = Broker::start(&[]);
    let mut c = Raw::connect(broker.addr);
    c.create_topic(TOPIC, PARTITIONS);
    // Groups on both cores, so both cores' __offsets partitions are replayed.
    let groups: Vec<String> = (0..6).map(|i| format!("group-{i}")).collect();
    let mut members = Vec::new();
    for (i, g) in groups.iter().enumerate() {
        let j = join(&mut c, g);
        let r = commit(
            &mut c,
            g,
            &j.member_id,
            j.assignment.generation,
            1,
            100 + i as u64,
        );
        assert_eq!(code(&r), ErrorCode::None);
        members.push(j);
    }

    for signal in [libc::SIGKILL, libc::SIGTERM] {
        broker.stop_with(signal);
        broker.restart();
        let mut c = Raw::connect(broker.addr);
        for (i, (g, j)) in groups.iter().zip(&members).enumerate() {
            assert_eq!(
                fetch_offsets(&mut c, g),
                vec![PartitionOffset {
                    topic: TOPIC.into(),
                    partition: 1,
                    offset: 100 + i as u64
                }],
                "{g} after signal {signal}"
            );
            let d = describe(&mut c, g);
            assert_eq!(d.generation, j.assignment.generation, "{g}");
            assert_eq!(d.members.len(), 1);
            assert_eq!(d.members[0].member_id, j.member_id);
            assert_eq!(d.state, GroupState::Stable);
            // The member carries on: same generation, same partitions.
            let r = c.call(Request::Heartbeat(HeartbeatRequest {
                group: g.clone(),
                member_id: j.member_id.clone(),
                generation: j.assignment.generation,
            }));
            match r.result {
                Ok(ResponseBody::Heartbeat(h)) => assert_eq!(h.assignment, j.assignment),
                other => panic!("heartbeat after restart failed: {other:?}"),
            }
        }
    }
}

#[test]
fn a_silent_member_expires_and_cannot_commit() {
    let broker = Broker::start(&[]);
    let mut c = Raw::connect(broker.addr);
    c.create_topic(TOPIC, PARTITIONS);
    let j = match c.call(join_request("short", 500)).result {
        Ok(ResponseBody::JoinGroup(j)) => j,
        other => panic!("join failed: {other:?}"),
    };
    assert_eq!(j.heartbeat_interval_ms, 166);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let d = describe(&mut c, "short");
        if d.members.is_empty() {
            // No members and no offsets: the group is forgotten, so it is
            // described like one never joined.
            assert_eq!(d.state, GroupState::Empty);
            assert_eq!(d.generation, 0);
            assert!(list_groups(&mut c).is_empty());
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the member never expired"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let r = commit(&mut c, "short", &j.member_id, j.assignment.generation, 0, 1);
    assert_eq!(code(&r), ErrorCode::UnknownMember);
    assert!(fetch_offsets(&mut c, "short").is_empty());
}

fn list_groups(c: &mut Raw) -> Vec<GroupSummary> {
    match c.call(Request::ListGroups(ListGroupsRequest {})).result {
        Ok(ResponseBody::ListGroups(l)) => l.groups,
        other => panic!("list groups failed: {other:?}"),
    }
}

fn static_join(c: &mut Raw, group: &str, member_id: &str, instance: &str) -> Response {
    c.call(Request::JoinGroup(JoinGroupRequest {
        group: group.into(),
        member_id: member_id.into(),
        instance_id: Some(instance.into()),
        session_timeout_ms: SESSION_MS,
        topics: vec![TOPIC.into()],
    }))
}

fn heartbeat(c: &mut Raw, group: &str, member: &str, generation: u32) -> Response {
    c.call(Request::Heartbeat(HeartbeatRequest {
        group: group.into(),
        member_id: member.into(),
        generation,
    }))
}

#[test]
fn a_replaced_static_member_is_fenced_for_good() {
    let mut broker = Broker::start(&[]);
    let mut c = Raw::connect(broker.addr);
    c.create_topic(TOPIC, PARTITIONS);
    let join_ok = |r: Response| match r.result {
        Ok(ResponseBody::JoinGroup(j)) => j,
        other => panic!("join failed: {other:?}"),
    };
    let old = join_ok(static_join(&mut c, "st", "", "w1"));
    let new = join_ok(static_join(&mut c, "st", "", "w1"));
    let generation = new.assignment.generation;
    assert_eq!(generation, old.assignment.generation);

    for _ in 0..2 {
        let mut c = Raw::connect(broker.addr);
        // Everything the old process can send says FENCED_INSTANCE_ID, and
        // none of it takes the place back.
        assert_eq!(
            code(&heartbeat(&mut c, "st", &old.member_id, generation)),
            ErrorCode::FencedInstanceId
        );
        assert_eq!(
            code(&commit(&mut c, "st", &old.member_id, generation, 0, 7)),
            ErrorCode::FencedInstanceId
        );
        assert_eq!(
            code(&c.call(Request::LeaveGroup(LeaveGroupRequest {
                group: "st".into(),
                member_id: old.member_id.clone(),
            }))),
            ErrorCode::FencedInstanceId
        );
        assert_eq!(
            code(&static_join(&mut c, "st", &old.member_id, "w1")),
            ErrorCode::FencedInstanceId
        );
        let d = describe(&mut c, "st");
        assert_eq!(d.generation, generation);
        assert_eq!(d.members.len(), 1);
        assert_eq!(d.members[0].member_id, new.member_id);
        assert_eq!(
            code(&heartbeat(&mut c, "st", &new.member_id, generation)),
            ErrorCode::None
        );
        assert!(fetch_offsets(&mut c, "st").is_empty());
        // ...and so after a restart.
        broker.stop_with(libc::SIGKILL);
        broker.restart();
    }
}

#[test]
fn a_deleted_topic_takes_its_committed_offsets_along() {
    let mut broker = Broker::start(&[]);
    let mut c = Raw::connect(broker.addr);
    c.create_topic(TOPIC, PARTITIONS);
    let j = join(&mut c, "del");
    let generation = j.assignment.generation;
    assert_eq!(
        code(&commit(&mut c, "del", &j.member_id, generation, 0, 5075)),
        ErrorCode::None
    );
    // Another group with offsets only: it is left with nothing and goes.
    let k = join(&mut c, "offsets-only");
    assert_eq!(
        code(&commit(&mut c, "offsets-only", &k.member_id, 1, 1, 3)),
        ErrorCode::None
    );
    assert_eq!(
        code(&c.call(Request::LeaveGroup(LeaveGroupRequest {
            group: "offsets-only".into(),
            member_id: k.member_id.clone(),
        }))),
        ErrorCode::None
    );
    // Delete and recreate at once, well within one tick.
    let deleted = c.call(Request::DeleteTopic(DeleteTopicRequest {
        name: TOPIC.into(),
    }));
    assert_eq!(code(&deleted), ErrorCode::None);
    c.create_topic(TOPIC, PARTITIONS);
    for round in 0..2 {
        let mut c = Raw::connect(broker.addr);
        assert!(fetch_offsets(&mut c, "del").is_empty(), "round {round}");
        assert!(fetch_offsets(&mut c, "offsets-only").is_empty());
        let d = describe(&mut c, "del");
        assert!(d.partitions.iter().all(|p| p.committed.is_none()), "{d:?}");
        assert!(d.generation > generation, "{d:?}");
        let listed: Vec<String> = list_groups(&mut c).into_iter().map(|g| g.group).collect();
        assert_eq!(listed, vec!["del".to_string()]);
        broker.stop_with(libc::SIGKILL);
        broker.restart();
    }
}

#[test]
fn groups_left_with_nothing_are_forgotten_for_good() {
    let mut broker = Broker::start(&[]);
    let mut c = Raw::connect(broker.addr);
    c.create_topic(TOPIC, PARTITIONS);
    for i in 0..30 {
        let g = format!("junk{i}");
        let j = join(&mut c, &g);
        let r = c.call(Request::LeaveGroup(LeaveGroupRequest {
            group: g.clone(),
            member_id: j.member_id,
        }));
        assert_eq!(code(&r), ErrorCode::None);
    }
    let kept = join(&mut c, "kept");
    assert_eq!(
        code(&commit(&mut c, "kept", &kept.member_id, 1, 2, 9)),
        ErrorCode::None
    );
    let names =
        |c: &mut Raw| -> Vec<String> { list_groups(c).into_iter().map(|g| g.group).collect() };
    assert_eq!(names(&mut c), vec!["kept".to_string()]);
    for signal in [libc::SIGKILL, libc::SIGTERM] {
        broker.stop_with(signal);
        broker.restart();
        let mut c = Raw::connect(broker.addr);
        assert_eq!(names(&mut c), vec!["kept".to_string()], "{signal}");
        assert_eq!(describe(&mut c, "junk0").generation, 0);
    }
}
