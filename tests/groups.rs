//! Consumer groups end to end (issue 6): real `ringmq consume --group`
//! processes against a real broker. Members share the partitions evenly, a
//! join moves only what it must, a killed member's unprocessed tasks reach the
//! survivors, a paused member is fenced and rejoins, and committed offsets
//! survive broker restarts.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, Instant};

use common::group::{commit, committed, describe, holders, settled, wait_for, GroupConsumer};
use common::{cli, small_executor, Broker};
use ringmq_client::{Client, ClientConfig, Producer, ProducerConfig};
use ringmq_protocol::{ErrorCode, PartitionOffset};

const SETTLE: Duration = Duration::from_secs(30);

fn create_topic(bootstrap: &str, topic: &str, partitions: u32) {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .expect("connect");
        client
            .admin()
            .create_topic(&topic, partitions, 1)
            .await
            .expect("create topic");
    });
}

/// Produces `task-<i>` for every `i` in `range`, keyed by `i`, and waits
/// until each is acknowledged.
fn produce_tasks(bootstrap: &str, topic: &str, range: std::ops::Range<u64>) {
    let (bootstrap, topic) = (bootstrap.to_owned(), topic.to_owned());
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .expect("connect");
        let producer = Producer::new(&client, &topic, ProducerConfig::default())
            .await
            .expect("producer");
        let mut deliveries = Vec::new();
        for i in range {
            let d = producer
                .send(
                    Some(i.to_string().as_bytes()),
                    format!("task-{i}").as_bytes(),
                )
                .await
                .expect("send");
            deliveries.push(d);
        }
        producer.flush().await.expect("flush");
        for d in deliveries {
            d.await.expect("every task acknowledged");
        }
    });
}

fn task_names(range: std::ops::Range<u64>) -> BTreeSet<String> {
    range.map(|i| format!("task-{i}")).collect()
}

/// Waits until the group has `members` members sharing `partitions`
/// partitions evenly, and returns the partition holders.
fn wait_settled(
    bootstrap: &str,
    group: &str,
    members: usize,
    partitions: usize,
    consumers: &[&GroupConsumer],
) -> std::collections::BTreeMap<(String, u32), String> {
    let d = wait_for(SETTLE, || {
        let d = describe(bootstrap, group);
        settled(&d, members, partitions).then_some(d)
    });
    match d {
        Some(d) => holders(&d),
        None => {
            let last = describe(bootstrap, group);
            let logs: Vec<String> = consumers
                .iter()
                .map(|c| format!("--- {}:\n{}", c.name, c.stderr()))
                .collect();
            panic!(
                "group {group} did not settle on {members} members over {partitions} partitions: {last:#?}\n{}",
                logs.join("\n")
            );
        }
    }
}

#[test]
fn a_fourth_member_takes_three_partitions_and_nothing_else_moves() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "jobs", 12);
    let session = ["--session-timeout", "10s"];
    let c1 = GroupConsumer::start("c1", &b, "jobs", "g", &session);
    let c2 = GroupConsumer::start("c2", &b, "jobs", "g", &session);
    let c3 = GroupConsumer::start("c3", &b, "jobs", "g", &session);
    let before = wait_settled(&b, "g", 3, 12, &[&c1, &c2, &c3]);
    let old_members: HashSet<&String> = before.values().collect();
    assert_eq!(old_members.len(), 3);

    let c4 = GroupConsumer::start("c4", &b, "jobs", "g", &session);
    let after = wait_settled(&b, "g", 4, 12, &[&c1, &c2, &c3, &c4]);
    let moved: Vec<&(String, u32)> = before.keys().filter(|p| before[*p] != after[*p]).collect();
    println!("4th member joined: {} of 12 partitions moved", moved.len());
    assert_eq!(moved.len(), 3, "before {before:?}\nafter {after:?}");
    for p in moved {
        assert!(
            !old_members.contains(&after[p]),
            "{p:?} moved between old members"
        );
    }
}

#[test]
fn a_killed_members_tasks_reach_the_survivors() {
    const TASKS: u64 = 100_000;
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "tasks", 12);
    // Session 2 s, heartbeats every 667 ms; commits every 200 ms.
    let flags = ["--session-timeout", "2s", "--commit-interval", "200ms"];
    let mut c1 = GroupConsumer::start("c1", &b, "tasks", "workers", &flags);
    let mut c2 = GroupConsumer::start("c2", &b, "tasks", "workers", &flags);
    let mut c3 = GroupConsumer::start("c3", &b, "tasks", "workers", &flags);
    wait_settled(&b, "workers", 3, 12, &[&c1, &c2, &c3]);

    let producer = {
        let b = b.clone();
        std::thread::spawn(move || produce_tasks(&b, "tasks", 0..TASKS))
    };
    let consumed = |cs: &[&GroupConsumer]| cs.iter().map(|c| c.count()).sum::<usize>();
    wait_for(Duration::from_secs(60), || {
        (consumed(&[&c1, &c2, &c3]) >= 20_000).then_some(())
    })
    .expect("the group consumes");

    c2.stop_with(libc::SIGKILL);
    let killed_at = Instant::now();
    let d = wait_for(SETTLE, || {
        let d = describe(&b, "workers");
        settled(&d, 2, 12).then_some(d)
    })
    .expect("the survivors take over");
    let took_over = killed_at.elapsed();
    println!(
        "survivors held all 12 partitions {:.2} s after the SIGKILL (session 2 s + heartbeat 0.67 s)",
        took_over.as_secs_f64()
    );
    // The coordinator sees the silence after the session timeout and the
    // survivors hear of it at their next heartbeat; the rest is slack for a
    // loaded machine.
    assert!(
        took_over < Duration::from_millis(2_000 + 667 + 1_500),
        "takeover took {took_over:?}: {d:#?}"
    );

    producer.join().expect("producer");
    let all = task_names(0..TASKS);
    let union = || -> HashSet<String> { [&c1, &c2, &c3].iter().flat_map(|c| c.values()).collect() };
    wait_for(Duration::from_secs(120), || {
        (union().len() == all.len()).then_some(())
    })
    .unwrap_or_else(|| {
        let seen = union();
        let missing: Vec<&String> = all.iter().filter(|t| !seen.contains(*t)).take(10).collect();
        panic!(
            "{} of {TASKS} tasks never processed, e.g. {missing:?}",
            all.len() - seen.len()
        )
    });
    assert!(c1.stop_with(libc::SIGTERM).success());
    assert!(c3.stop_with(libc::SIGTERM).success());

    let mut times: HashMap<String, usize> = HashMap::new();
    for c in [&c1, &c2, &c3] {
        for v in c.values() {
            assert!(
                all.contains(&v),
                "{} printed {v:?}, which was never produced",
                c.name
            );
            *times.entry(v).or_default() += 1;
        }
    }
    let killed: HashSet<String> = c2.values().into_iter().collect();
    let duplicates: Vec<&String> = times
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(v, _)| v)
        .collect();
    let extra: usize = times.values().map(|n| n - 1).sum();
    println!(
        "tasks {TASKS}, processed {}, duplicates {extra} ({} tasks), every one first processed by the killed member",
        times.values().sum::<usize>(),
        duplicates.len()
    );
    // At least once, and the only repeats are the killed member's
    // uncommitted tail: live members hand partitions over only after a commit.
    for v in duplicates {
        assert!(
            killed.contains(v),
            "{v} processed twice, not by the killed member"
        );
        assert_eq!(times[v], 2, "{v} processed {} times", times[v]);
    }
}

#[test]
fn a_paused_member_is_fenced_and_rejoins() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "jobs", 12);
    let flags = ["--session-timeout", "2s", "--commit-interval", "200ms"];
    let c1 = GroupConsumer::start(
        "c1",
        &b,
        "jobs",
        "g",
        &[&flags[..], &["--instance-id", "c1"]].concat(),
    );
    let c2 = GroupConsumer::start(
        "c2",
        &b,
        "jobs",
        "g",
        &[&flags[..], &["--instance-id", "c2"]].concat(),
    );
    let c3 = GroupConsumer::start("c3", &b, "jobs", "g", &flags);
    wait_settled(&b, "g", 3, 12, &[&c1, &c2, &c3]);
    produce_tasks(&b, "jobs", 0..3_000);
    wait_for(Duration::from_secs(30), || {
        (c1.count() + c2.count() + c3.count() == 3_000).then_some(())
    })
    .expect("all consumed");
    let d = describe(&b, "g");
    let paused = d
        .members
        .iter()
        .find(|m| m.instance_id.is_none())
        .expect("c3 is the member without an instance id")
        .clone();
    let generation = d.generation;

    c3.signal(libc::SIGSTOP);
    let stopped_at = Instant::now();
    wait_settled(&b, "g", 2, 12, &[&c1, &c2]);
    println!(
        "paused member removed, partitions reassigned {:.2} s after SIGSTOP",
        stopped_at.elapsed().as_secs_f64()
    );
    let after_expiry = committed(&b, "g");

    // The zombie's progress can no longer be stored, whatever it carries.
    let (topic, partition) = (
        paused.partitions[0].topic.clone(),
        paused.partitions[0].partitions[0],
    );
    let offset = vec![PartitionOffset {
        topic,
        partition,
        offset: 0,
    }];
    let e = commit(&b, "g", &paused.member_id, generation, offset).unwrap_err();
    assert_eq!(e.code(), Some(ErrorCode::UnknownMember), "{e}");

    let resumed_at = Instant::now();
    c3.signal(libc::SIGCONT);
    wait_for(Duration::from_secs(10), || {
        c3.said_since(resumed_at, "UNKNOWN_MEMBER").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "the resumed member did not notice it was fenced:\n{}",
            c3.stderr()
        )
    });
    let rejoined = wait_settled(&b, "g", 3, 12, &[&c1, &c2, &c3]);
    assert!(
        !rejoined.values().any(|m| *m == paused.member_id),
        "the fenced member id came back"
    );

    // Nothing the zombie did moved a committed offset backwards.
    produce_tasks(&b, "jobs", 3_000..4_000);
    wait_for(Duration::from_secs(30), || {
        (c1.count() + c2.count() + c3.count() >= 4_000).then_some(())
    })
    .expect("all consumed after the rejoin");
    let now = committed(&b, "g");
    for (p, o) in &after_expiry {
        assert!(
            now.get(p).is_some_and(|n| n >= o),
            "{p:?} went back from {o}"
        );
    }
}

#[test]
fn committed_offsets_and_members_survive_broker_restarts() {
    let mut broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "jobs", 4);
    produce_tasks(&b, "jobs", 0..1_000);

    // A consumer that stops after a count commits what it printed first.
    let run = |count: u64| -> Vec<String> {
        let mut c = GroupConsumer::start(
            "once",
            &b,
            "jobs",
            "g",
            &["--count", &count.to_string(), "--session-timeout", "10s"],
        );
        let st = c.wait_exit(Duration::from_secs(60));
        assert!(st.success(), "consumer failed: {}", c.stderr());
        c.values()
    };
    let first = run(1_000);
    assert_eq!(
        first.iter().collect::<BTreeSet<_>>(),
        task_names(0..1_000).iter().collect()
    );
    let total =
        |offsets: &std::collections::BTreeMap<(String, u32), u64>| offsets.values().sum::<u64>();
    assert_eq!(total(&committed(&b, "g")), 1_000);

    for (signal, range) in [(libc::SIGTERM, 1_000..1_500), (libc::SIGKILL, 1_500..2_000)] {
        broker.stop_with(signal);
        broker.restart();
        assert_eq!(
            total(&committed(&b, "g")),
            range.start,
            "offsets after a restart by signal {signal}"
        );
        produce_tasks(&b, "jobs", range.clone());
        // The next consumer resumes where the last one committed: only the new tasks.
        let got = run(range.end - range.start);
        assert_eq!(
            got.iter().collect::<BTreeSet<_>>(),
            task_names(range).iter().collect(),
            "after a restart by signal {signal}"
        );
    }

    // Membership: a member survives a restart with its id and generation.
    let c = GroupConsumer::start("live", &b, "jobs", "live", &["--session-timeout", "30s"]);
    wait_settled(&b, "live", 1, 4, &[&c]);
    let before = describe(&b, "live");
    c.signal(libc::SIGSTOP); // no heartbeat reaches the restarted broker first
    broker.stop_with(libc::SIGKILL);
    broker.restart();
    let after = describe(&b, "live");
    assert_eq!(after.generation, before.generation);
    assert_eq!(after.members.len(), 1);
    assert_eq!(after.members[0].member_id, before.members[0].member_id);
    assert_eq!(holders(&after), holders(&before));
    c.signal(libc::SIGCONT);
}

#[test]
fn the_cli_lists_and_describes_groups() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "jobs", 2);
    produce_tasks(&b, "jobs", 0..10);
    let (st, out, err) = cli(
        &[
            "consume",
            "jobs",
            "--group",
            "reporting",
            "--from-beginning",
            "--count",
            "4",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(st.success(), "{err}");
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(err.contains("group reporting: member "), "{err}");

    let (st, out, err) = cli(&["group", "list", "--bootstrap", &b], "");
    assert!(st.success(), "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("reporting"))
        .expect(&out);
    assert!(row.contains("empty"), "the member left on exit: {out}");

    let (st, out, err) = cli(&["group", "describe", "reporting", "--bootstrap", &b], "");
    assert!(st.success(), "{err}");
    // Four processed and committed; each row's lag is its end minus its commit.
    let rows: Vec<Vec<&str>> = out
        .lines()
        .filter(|l| l.starts_with("jobs/"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(!rows.is_empty(), "{out}");
    let mut committed = 0;
    for r in &rows {
        let (c, end, lag): (u64, u64, u64) = (
            r[2].parse().expect(&out),
            r[3].parse().expect(&out),
            r[4].parse().expect(&out),
        );
        assert_eq!(lag, end - c, "{out}");
        committed += c;
    }
    assert_eq!(committed, 4, "{out}");

    let (st, _, err) = cli(&["group", "describe", "bad group", "--bootstrap", &b], "");
    assert!(!st.success());
    assert!(err.contains("group id"), "{err}");
}

#[test]
fn a_group_consumer_outlives_a_broker_restart() {
    let mut broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "jobs", 4);
    produce_tasks(&b, "jobs", 0..100);
    let c = GroupConsumer::start("c", &b, "jobs", "g", &["--session-timeout", "10s"]);
    wait_for(Duration::from_secs(30), || (c.count() == 100).then_some(()))
        .unwrap_or_else(|| panic!("consumed {} of 100:\n{}", c.count(), c.stderr()));

    // Down for a clean stop, then for 2 s after a kill: within the session
    // the member carries on as if nothing happened.
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        broker.stop_with(signal);
        std::thread::sleep(Duration::from_secs(2));
        broker.restart();
    }
    produce_tasks(&b, "jobs", 100..200);
    wait_for(Duration::from_secs(30), || (c.count() >= 200).then_some(())).unwrap_or_else(|| {
        panic!(
            "consumed {} of 200 after the restarts:\n{}",
            c.count(),
            c.stderr()
        )
    });
    assert_eq!(
        c.values().into_iter().collect::<BTreeSet<_>>(),
        task_names(0..200)
    );
}

#[test]
fn a_group_starts_over_on_a_recreated_topic() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "t2", 2);
    produce_tasks(&b, "t2", 0..50);
    let consume = |count: &str| {
        cli(
            &[
                "consume",
                "t2",
                "--group",
                "S",
                "--from-beginning",
                "--count",
                count,
                "--timeout",
                "10s",
                "--bootstrap",
                &b,
            ],
            "",
        )
    };
    let (st, out, err) = consume("50");
    assert!(st.success(), "{err}");
    assert_eq!(out.lines().count(), 50);

    let (st, _, err) = cli(&["topic", "delete", "t2", "--bootstrap", &b], "");
    assert!(st.success(), "{err}");
    create_topic(&b, "t2", 2);
    produce_tasks(&b, "t2", 0..4);
    // Whether the broker kept the old commits (beyond the new end) or
    // dropped them with the topic, the group reads the new records.
    let (st, out, err) = consume("4");
    assert!(st.success(), "{err}");
    assert_eq!(
        out.lines().map(str::to_owned).collect::<BTreeSet<_>>(),
        task_names(0..4),
        "{err}"
    );
    let (st, out, err) = cli(&["group", "describe", "S", "--bootstrap", &b], "");
    assert!(st.success(), "{err}");
    assert!(!out.contains("beyond-end"), "{out}");
}

#[test]
fn a_bad_instance_id_is_reported_as_one() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "jobs", 1);
    let (st, _, err) = cli(
        &[
            "consume",
            "jobs",
            "--group",
            "g",
            "--instance-id",
            "w 1",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(!st.success());
    assert!(
        err.contains("\"w 1\" is not a valid instance id")
            && err.contains("printable ASCII without spaces"),
        "{err}"
    );
    let (st, _, err) = cli(&["group", "describe", "bad group", "--bootstrap", &b], "");
    assert!(!st.success());
    assert!(
        err.contains("is not a valid group id: a group id is 1 to 249 bytes"),
        "{err}"
    );
}

/// Needs the broker to answer FENCED_INSTANCE_ID (SPEC.md 5.9); until then
/// the two fence each other forever, as the review found.
#[test]
fn a_second_consumer_with_the_same_instance_id_stops_the_first_for_good() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    create_topic(&b, "jobs", 4);
    let flags = ["--session-timeout", "3s", "--instance-id", "w1"];
    let mut first = GroupConsumer::start("first", &b, "jobs", "ST", &flags);
    wait_settled(&b, "ST", 1, 4, &[&first]);
    let second = GroupConsumer::start("second", &b, "jobs", "ST", &flags);
    let st = first.wait_exit(Duration::from_secs(20));
    assert_eq!(st.code(), Some(1), "{}", first.stderr());
    let last = first.stderr();
    assert!(
        last.ends_with(
            "ringmq: another consumer joined group ST with instance id w1; this one stops"
        ),
        "{last}"
    );
    let printed_by_first = first.count();
    // The second one alone consumes everything from now on.
    produce_tasks(&b, "jobs", 0..1_000);
    wait_for(Duration::from_secs(30), || {
        (second.count() == 1_000).then_some(())
    })
    .unwrap_or_else(|| panic!("second consumed {}:\n{}", second.count(), second.stderr()));
    assert_eq!(first.count(), printed_by_first);
    let d = describe(&b, "ST");
    assert_eq!(d.members.len(), 1, "{d:#?}");
}
