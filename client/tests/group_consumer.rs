//! The group consumer against the fake broker's coordinator: joining,
//! handing partitions over when a member joins, being fenced, leaving.
//! The end-to-end group tests against the real broker live in the root
//! package.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringmq_client::{
    Client, ClientError, GroupConfig, GroupConsumer, GroupEvent, Producer, ProducerConfig,
    TopicPartition,
};
use ringmq_protocol::{ErrorCode, GroupState};

mod fake;

use fake::{config, small_executor, start_fake, start_fake_ctl, Faults};

fn group_config(group: &str, topic: &str) -> GroupConfig {
    let mut c = GroupConfig::new(group, &[topic]);
    c.session_timeout = Duration::from_millis(1500);
    c.fetch.max_wait = Duration::from_millis(50);
    c
}

/// Produces `n` records `0..n` round-robin over the topic's partitions.
async fn produce(client: &Client, topic: &str, range: std::ops::Range<u32>) {
    let producer = Producer::new(client, topic, ProducerConfig::default())
        .await
        .unwrap();
    for i in range {
        drop(producer.send(None, i.to_string().as_bytes()).await.unwrap());
    }
    producer.flush().await.unwrap();
}

type Seen = Rc<RefCell<BTreeMap<(u32, u64), String>>>;

/// Polls until `done` says so or `deadline` passes, noting who got what.
async fn consume_until(
    c: &mut GroupConsumer,
    seen: &Seen,
    who: &str,
    deadline: Instant,
    done: impl Fn(&GroupConsumer, &Seen) -> bool,
) {
    while !done(c, seen) {
        assert!(Instant::now() < deadline, "{who}: timed out");
        for r in c.poll().await.unwrap() {
            let prev = seen
                .borrow_mut()
                .insert((r.partition, r.offset), who.to_owned());
            assert!(
                prev.is_none(),
                "{}/{} offset {} consumed by {who} and {prev:?}",
                r.topic,
                r.partition,
                r.offset
            );
        }
    }
}

#[test]
fn join_gets_every_partition_and_a_new_member_resumes_at_the_commit() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 3, 1).await.unwrap();
        produce(&client, "t", 0..30).await;

        let mut a = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        let all: Vec<_> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
        assert_eq!(a.assignment(), all);
        let events = a.take_events();
        assert!(
            matches!(&events[..], [GroupEvent::Joined { generation: 1, partitions, .. }] if *partitions == all),
            "{events:?}"
        );
        let seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        consume_until(&mut a, &seen, "a", deadline, |_, s| s.borrow().len() == 30).await;
        a.mark_batch_processed();
        a.commit().await.unwrap();
        let offsets = client.admin().fetch_offsets("g", &[]).await.unwrap();
        assert_eq!(offsets.iter().map(|o| o.offset).sum::<u64>(), 30);
        a.close().await.unwrap();
        assert!(matches!(
            a.take_events().last(),
            Some(GroupEvent::Left { .. })
        ));
        let d = client.admin().describe_group("g").await.unwrap();
        assert_eq!((d.state, d.members.len()), (GroupState::Empty, 0));
        assert!(d.partitions.iter().all(|p| p.committed == Some(p.end_offset)));

        // A new member starts at the commit: it sees only what came after.
        produce(&client, "t", 30..36).await;
        let mut b = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        consume_until(&mut b, &seen, "b", deadline, |_, s| s.borrow().len() == 36).await;
        let groups = client.admin().list_groups().await.unwrap();
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0].group.as_str(), groups[0].members), ("g", 1));
        b.close().await.unwrap();
    });
}

#[test]
fn a_second_member_takes_half_only_after_the_first_released_it() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 4, 1).await.unwrap();
        produce(&client, "t", 0..40).await;
        let seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(20);

        let mut a = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        consume_until(&mut a, &seen, "a", deadline, |_, s| s.borrow().len() == 40).await;
        a.take_events();

        // b joins: the fake gives it two partitions, pending until a
        // releases them. Both poll concurrently until each holds two.
        let mut b = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        assert!(b.assignment().is_empty());
        let seen_b = seen.clone();
        let tb = glommio::spawn_local(async move {
            consume_until(&mut b, &seen_b, "b", deadline, |c, _| {
                c.assignment().len() == 2
            })
            .await;
            b
        });
        consume_until(&mut a, &seen, "a", deadline, |c, _| {
            c.assignment().len() == 2
        })
        .await;
        let mut b = tb.await;

        let events = a.take_events();
        let Some(GroupEvent::AssignmentChanged {
            generation,
            removed,
            added,
            ..
        }) = events.first()
        else {
            panic!("{events:?}")
        };
        assert_eq!((*generation, removed.len(), added.len()), (2, 2, 0));
        let released: BTreeSet<_> = removed.iter().cloned().collect();
        assert_eq!(
            b.assignment().into_iter().collect::<BTreeSet<_>>(),
            released
        );

        // New records go to whoever holds their partition now, once each.
        let before = seen.borrow().clone();
        produce(&client, "t", 40..80).await;
        let seen_b = seen.clone();
        let tb = glommio::spawn_local(async move {
            consume_until(&mut b, &seen_b, "b", deadline, |_, s| {
                s.borrow().len() == 80
            })
            .await;
            b
        });
        consume_until(&mut a, &seen, "a", deadline, |_, s| s.borrow().len() == 80).await;
        let mut b = tb.await;
        for ((p, offset), who) in seen.borrow().iter() {
            let tp = TopicPartition::new("t", *p);
            let expected = if before.contains_key(&(*p, *offset)) || !released.contains(&tp) {
                "a"
            } else {
                "b"
            };
            assert_eq!(who, expected, "{tp} offset {offset}");
        }
        a.close().await.unwrap();
        b.close().await.unwrap();
    });
}

#[test]
fn a_member_replaced_by_its_instance_id_stops_for_good() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        produce(&client, "t", 0..10).await;
        // A long session: no background heartbeat gets in first.
        let mut cfg = group_config("g", "t");
        cfg.session_timeout = Duration::from_secs(60);
        cfg.instance_id = Some("worker-1".into());
        cfg.auto_commit_interval = None;
        let mut a = GroupConsumer::join(&client, cfg.clone()).await.unwrap();
        let first_id = a.member_id();
        let seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        consume_until(&mut a, &seen, "a", deadline, |_, s| s.borrow().len() == 10).await;
        a.mark_batch_processed();

        // Another process starts with the same instance id: a stops for
        // good (rejoining would fence b, and so on forever).
        let b = GroupConsumer::join(&client, cfg).await.unwrap();
        let e = a.commit().await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::FencedInstanceId), "{e}");
        let events = a.take_events();
        assert!(
            matches!(
                &events[..],
                [
                    GroupEvent::Joined { .. },
                    GroupEvent::CommitRejected { code: ErrorCode::FencedInstanceId, .. },
                    GroupEvent::Replaced { member_id, instance_id, .. },
                ] if *member_id == first_id && instance_id == "worker-1"
            ),
            "{events:?}"
        );
        assert!(a.assignment().is_empty());
        produce(&client, "t", 10..20).await;
        for _ in 0..3 {
            let e = a.poll().await.unwrap_err();
            assert_eq!(e.code(), Some(ErrorCode::FencedInstanceId), "{e}");
        }
        assert!(a.take_events().is_empty(), "no rejoin");
        // Nothing of the refused commit was stored.
        assert!(client
            .admin()
            .fetch_offsets("g", &[])
            .await
            .unwrap()
            .is_empty());
        a.close().await.unwrap();
        let d = client.admin().describe_group("g").await.unwrap();
        assert_eq!(d.members.len(), 1, "{d:?}");
        assert_eq!(d.members[0].member_id, b.member_id());
    });
}

#[test]
fn a_heartbeat_that_learns_of_the_replacement_stops_the_records() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        produce(&client, "t", 0..10).await;
        let mut cfg = group_config("g", "t");
        cfg.instance_id = Some("worker-1".into());
        let mut a = GroupConsumer::join(&client, cfg.clone()).await.unwrap();
        let seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        consume_until(&mut a, &seen, "a", deadline, |_, s| s.borrow().len() == 10).await;
        let _b = GroupConsumer::join(&client, cfg).await.unwrap();
        // a's heartbeat task (every 500 ms) hears of it; then more records.
        glommio::timer::sleep(Duration::from_millis(1200)).await;
        produce(&client, "t", 10..20).await;
        for _ in 0..5 {
            match a.poll().await {
                Ok(r) => assert!(r.is_empty(), "handed out after being replaced: {r:?}"),
                Err(e) => assert_eq!(e.code(), Some(ErrorCode::FencedInstanceId), "{e}"),
            }
        }
        assert!(a
            .take_events()
            .iter()
            .any(|e| matches!(e, GroupEvent::Replaced { .. })));
    });
}

#[test]
fn a_bad_instance_id_is_named_as_such() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 1, 1).await.unwrap();
        let mut cfg = group_config("g", "t");
        cfg.instance_id = Some("worker 1".into());
        let e = GroupConsumer::join(&client, cfg).await.unwrap_err();
        assert!(matches!(e, ClientError::InvalidInput(_)), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("\"worker 1\" is not a valid instance id")
                && msg.contains("printable ASCII without spaces"),
            "{msg}"
        );
    });
}

/// A member of group `g` that consumes all `n` records of topic `t`,
/// commits them and leaves.
async fn drain_and_commit(client: &Client, n: usize, deadline: Instant) {
    let mut a = GroupConsumer::join(client, group_config("g", "t"))
        .await
        .unwrap();
    consume_until(&mut a, &Seen::default(), "a", deadline, |_, s| {
        s.borrow().len() == n
    })
    .await;
    a.mark_batch_processed();
    a.close().await.unwrap();
}

#[test]
fn a_committed_offset_beyond_a_recreated_topic_starts_per_the_reset_policy() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        let admin = client.admin();
        admin.create_topic("t", 2, 1).await.unwrap();
        produce(&client, "t", 0..20).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        drain_and_commit(&client, 20, deadline).await;

        // The commits (10 per partition) outlive the topic.
        admin.delete_topic("t").await.unwrap();
        admin.create_topic("t", 2, 1).await.unwrap();
        produce(&client, "t", 0..4).await;
        let mut b = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        let seen = Seen::default();
        consume_until(&mut b, &seen, "b", deadline, |_, s| s.borrow().len() == 4).await;
        let mut resets: Vec<(u32, u64, u64, u64)> = b
            .take_events()
            .into_iter()
            .filter_map(|e| match e {
                GroupEvent::OutOfRange {
                    partition,
                    offset,
                    latest,
                    position,
                    ..
                } => Some((partition.partition, offset, latest, position)),
                _ => None,
            })
            .collect();
        resets.sort_unstable();
        assert_eq!(resets, [(0, 10, 2, 0), (1, 10, 2, 0)]);
        b.mark_batch_processed();
        b.close().await.unwrap();
        let offsets = admin.fetch_offsets("g", &[]).await.unwrap();
        assert!(offsets.iter().all(|o| o.offset == 2), "{offsets:?}");
    });
}

#[test]
fn a_committed_offset_past_a_lagging_high_watermark_is_kept() {
    let (addr, ctl) = start_fake_ctl(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        produce(&client, "t", 0..20).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        drain_and_commit(&client, 20, deadline).await;

        // A new leader's watermark lags below the commits (10 per
        // partition) for a moment: the next member waits there rather
        // than starting over.
        ctl.lag_watermark(5);
        let mut b = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        for _ in 0..5 {
            assert_eq!(b.poll().await.unwrap(), Vec::new());
        }
        ctl.lag_watermark(0);
        produce(&client, "t", 20..24).await;
        let seen = Seen::default();
        consume_until(&mut b, &seen, "b", deadline, |_, s| s.borrow().len() == 4).await;
        let offsets: BTreeSet<(u32, u64)> = seen.borrow().keys().copied().collect();
        assert_eq!(
            offsets,
            BTreeSet::from([(0, 10), (0, 11), (1, 10), (1, 11)])
        );
        let events = b.take_events();
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, GroupEvent::OutOfRange { .. })),
            "{events:?}"
        );
        b.close().await.unwrap();
    });
}

#[test]
fn a_group_consumer_waits_out_a_broker_outage() {
    let (addr, ctl) = start_fake_ctl(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        produce(&client, "t", 0..10).await;
        let mut cfg = group_config("g", "t");
        cfg.session_timeout = Duration::from_secs(10);
        let mut a = GroupConsumer::join(&client, cfg).await.unwrap();
        let seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(30);
        consume_until(&mut a, &seen, "a", deadline, |_, s| s.borrow().len() == 10).await;
        let first_id = a.member_id();

        let back = outage(&ctl, Duration::from_millis(2500));
        // Polls all through the outage: none may fail.
        while Instant::now() < back {
            assert!(a.poll().await.unwrap().is_empty());
        }
        produce(&client, "t", 10..20).await;
        consume_until(&mut a, &seen, "a", deadline, |_, s| s.borrow().len() == 20).await;
        assert_eq!(a.member_id(), first_id, "the session outlived the outage");
        a.close().await.unwrap();
    });
}

#[test]
fn after_stale_generation_the_old_member_id_leaves_before_the_rejoin() {
    let (addr, ctl) = start_fake_ctl(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        // Heartbeats every second; the old id would linger for 3 s.
        let mut cfg = group_config("g", "t");
        cfg.session_timeout = Duration::from_secs(3);
        let mut a = GroupConsumer::join(&client, cfg).await.unwrap();
        let first_id = a.member_id();
        a.take_events();
        ctl.stale_heartbeats(1);
        let deadline = Instant::now() + Duration::from_secs(10);
        while a.member_id() == first_id {
            assert!(Instant::now() < deadline, "never rejoined");
            a.poll().await.unwrap();
        }
        let events = a.take_events();
        assert!(
            matches!(
                &events[..],
                [
                    GroupEvent::Fenced { code: ErrorCode::StaleGeneration, .. },
                    GroupEvent::Joined { partitions, .. },
                ] if partitions.len() == 2
            ),
            "{events:?}"
        );
        let d = client.admin().describe_group("g").await.unwrap();
        let ids: Vec<&str> = d.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(ids, [a.member_id()], "the old id left at once");
        a.close().await.unwrap();
    });
}

#[test]
fn a_generation_that_moves_nothing_of_a_member_is_no_event() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let seen = Seen::default();
        let mut a = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        let mut b = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        let seen_b = seen.clone();
        let tb = glommio::spawn_local(async move {
            consume_until(&mut b, &seen_b, "b", deadline, |c, _| {
                c.assignment().len() == 1
            })
            .await;
            b
        });
        consume_until(&mut a, &seen, "a", deadline, |c, _| {
            c.assignment().len() == 1
        })
        .await;
        let b = tb.await;
        a.take_events();
        // A third member of two partitions gets none; a's generation moves,
        // its partitions do not.
        let c = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        assert!(c.assignment().is_empty());
        let target = c.generation();
        consume_until(&mut a, &seen, "a", deadline, |c, _| {
            c.generation() == target
        })
        .await;
        let events = a.take_events();
        assert!(events.is_empty(), "{events:?}");
        drop((b, c));
    });
}

/// Takes the fake off the network for `len` from now (a thread puts it
/// back); returns when it is back.
fn outage(ctl: &fake::Control, len: Duration) -> Instant {
    ctl.down();
    let ctl = ctl.clone();
    std::thread::spawn(move || {
        std::thread::sleep(len);
        ctl.up();
    });
    Instant::now() + len
}

#[test]
fn bad_session_timeout_fails_before_joining() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 1, 1).await.unwrap();
        let mut cfg = group_config("g", "t");
        cfg.session_timeout = Duration::from_millis(10);
        let e = GroupConsumer::join(&client, cfg).await.unwrap_err();
        assert!(e.to_string().contains("session timeout"), "{e}");
        let e = GroupConsumer::join(&client, group_config("g", "nope"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownTopic));
        let e = GroupConsumer::join(&client, group_config("", "t"))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::InvalidGroupId));
    });
}

#[test]
fn a_commit_from_a_stale_generation_is_sent_again_at_the_current_one() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        produce(&client, "t", 0..10).await;
        let mut cfg = group_config("g", "t");
        cfg.session_timeout = Duration::from_secs(60);
        cfg.auto_commit_interval = None;
        let mut a = GroupConsumer::join(&client, cfg.clone()).await.unwrap();
        let seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        consume_until(&mut a, &seen, "a", deadline, |_, s| s.borrow().len() == 10).await;
        a.mark_batch_processed();
        // b's join bumps the generation before a has heard of it.
        let _b = GroupConsumer::join(&client, cfg).await.unwrap();
        a.commit().await.unwrap();
        let committed: u64 = client
            .admin()
            .fetch_offsets("g", &[])
            .await
            .unwrap()
            .iter()
            .map(|o| o.offset)
            .sum();
        assert_eq!(committed, 10);
        assert!(!a
            .take_events()
            .iter()
            .any(|e| matches!(e, GroupEvent::CommitRejected { .. })));
    });
}

#[test]
fn a_silent_member_is_removed_and_the_others_take_its_partitions() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 4, 1).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let a = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        let mut b = GroupConsumer::join(&client, group_config("g", "t"))
            .await
            .unwrap();
        // Dropped without leaving: it stops heartbeating, as a killed
        // process would.
        drop(a);
        let seen = Seen::default();
        consume_until(&mut b, &seen, "b", deadline, |c, _| {
            c.assignment().len() == 4
        })
        .await;
        let d = client.admin().describe_group("g").await.unwrap();
        assert_eq!(d.members.len(), 1);
        assert_eq!(d.state, GroupState::Stable);
        b.close().await.unwrap();
    });
}

#[test]
fn a_member_stopped_past_its_session_hands_out_nothing_before_rejoining() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        produce(&client, "t", 0..10).await;
        let mut cfg = group_config("g", "t");
        cfg.session_timeout = Duration::from_millis(600);
        cfg.auto_commit_interval = None;
        let mut a = GroupConsumer::join(&client, cfg).await.unwrap();
        let seen = Seen::default();
        let deadline = Instant::now() + Duration::from_secs(10);
        consume_until(&mut a, &seen, "a", deadline, |_, s| s.borrow().len() == 10).await;
        a.take_events();
        // The whole executor stops, heartbeats included, as with SIGSTOP.
        std::thread::sleep(Duration::from_millis(1000));
        produce(&client, "t", 10..15).await;
        let records = loop {
            assert!(Instant::now() < deadline);
            let r = a.poll().await.unwrap();
            if !r.is_empty() {
                break r;
            }
        };
        let events = a.take_events();
        assert!(
            matches!(
                &events[..],
                [
                    GroupEvent::Fenced {
                        code: ErrorCode::UnknownMember,
                        ..
                    },
                    GroupEvent::Joined { .. }
                ]
            ),
            "{events:?}"
        );
        // Nothing was committed, so the new member starts over.
        assert!(records.iter().any(|r| r.offset == 0), "{records:?}");
        a.close().await.unwrap();
    });
}
