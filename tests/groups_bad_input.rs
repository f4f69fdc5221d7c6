//! Consumer groups against a live broker: bad group input gets a clear
//! error code and disturbs nothing, and a group (its committed offsets and
//! its membership) survives a restart by SIGKILL and by SIGTERM.

mod common;

use common::raw::Raw;
use common::Broker;
use ringmq_protocol::{
    CommitOffsetsRequest, DescribeGroupRequest, DescribeGroupResponse, ErrorCode,
    FetchOffsetsRequest, GroupState, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse,
    ListGroupsRequest, PartitionOffset, Request, Response, ResponseBody,
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
            assert_eq!(d.state, GroupState::Empty);
            assert_eq!(d.generation, j.assignment.generation + 1);
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
