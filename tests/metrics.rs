//! The metrics endpoint scraped while clients produce and consume: the
//! request, byte and connection series move, and every partition's offsets
//! and size show, and a consumer group's lag.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::{cli, Broker};

fn metrics_addr(broker: &Broker) -> SocketAddr {
    broker.metrics_addr()
}

fn scrape(addr: SocketAddr) -> String {
    common::probe::scrape(addr).expect("a scrape of the metrics listener")
}

/// The sum of every sample of `name` whose labels contain `label`.
fn total(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with('{') && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn produce(b: &str, lines: &str) {
    let (st, out, err) = cli(&["produce", "events", "--bootstrap", b], lines);
    assert!(st.success(), "produce: {out}{err}");
}

#[test]
fn counters_move_during_produce_and_consume() {
    let broker = Broker::start(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = metrics_addr(&broker);
    let b = broker.bootstrap();
    let (st, _, err) = cli(
        &[
            "topic",
            "create",
            "events",
            "--partitions",
            "4",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(st.success(), "{err}");

    produce(&b, "one\ntwo\nthree\n");
    let first = scrape(addr);
    let produced = total(&first, "ringmq_requests_total", "api=\"produce\"");
    assert!(produced >= 1.0, "{first}");
    let bytes = total(&first, "ringmq_request_bytes_total", "api=\"produce\"");
    assert!(bytes > 0.0, "{first}");
    assert!(
        total(
            &first,
            "ringmq_request_duration_seconds_count",
            "api=\"produce\""
        ) >= 1.0,
        "{first}"
    );

    produce(&b, "four\nfive\n");
    let (st, out, err) = cli(
        &[
            "consume",
            "events",
            "--from-beginning",
            "--count",
            "5",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(st.success(), "consume: {err}");
    assert_eq!(out.lines().count(), 5);

    // A connection held open shows in the gauge.
    let _idle = TcpStream::connect(broker.addr).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let second = loop {
        let s = scrape(addr);
        if total(&s, "ringmq_connections", "core=") >= 1.0 || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(
        total(&second, "ringmq_requests_total", "api=\"produce\"") > produced,
        "{second}"
    );
    assert!(
        total(&second, "ringmq_requests_total", "api=\"fetch\"") >= 1.0,
        "{second}"
    );
    assert!(
        total(
            &second,
            "ringmq_response_record_bytes_total",
            "api=\"fetch\""
        ) > 0.0,
        "{second}"
    );
    assert!(
        total(&second, "ringmq_connections", "core=") >= 1.0,
        "{second}"
    );
    // Per topic: the five records' bytes went in and came out.
    for api in ["produce", "fetch"] {
        let label = format!("topic=\"events\",api=\"{api}\"");
        assert!(
            total(&second, "ringmq_topic_requests_total", &label) >= 1.0,
            "{second}"
        );
        assert!(
            total(&second, "ringmq_topic_record_bytes_total", &label) > 0.0,
            "{second}"
        );
    }
    assert!(
        second.contains("ringmq_core_busy_seconds_total{core=\"0\"}"),
        "{second}"
    );

    // Each core publishes its partitions once a second: five records over
    // the four partitions of `events`.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let third = loop {
        let s = scrape(addr);
        let end = total(&s, "ringmq_partition_end_offset", "topic=\"events\"");
        if end >= 5.0 || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        total(&third, "ringmq_partition_end_offset", "topic=\"events\""),
        5.0,
        "{third}"
    );
    assert!(
        total(&third, "ringmq_partition_size_bytes", "topic=\"events\"") > 0.0,
        "{third}"
    );
    assert_eq!(
        third
            .lines()
            .filter(|l| l.starts_with("ringmq_partition_start_offset{"))
            .count(),
        4,
        "{third}"
    );
    assert!(
        third.contains("ringmq_memory_budget_used_bytes{core=\"1\"}"),
        "{third}"
    );
    assert!(third.contains("ringmq_cold_read_bytes "), "{third}");

    // A group that committed offset 1 on each partition lags by the rest.
    join_and_commit(&b, "lagging", "events", 1);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let fourth = loop {
        let s = scrape(addr);
        if s.contains("ringmq_group_lag{") || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let ends: Vec<f64> = (0..4)
        .map(|p| {
            let label = format!("topic=\"events\",partition=\"{p}\"");
            total(&fourth, "ringmq_partition_end_offset", &label)
        })
        .collect();
    let expected: f64 = ends.iter().map(|e| (e - 1.0).max(0.0)).sum();
    assert_eq!(
        total(&fourth, "ringmq_group_lag", "group=\"lagging\""),
        expected,
        "{fourth}"
    );
    assert_eq!(
        total(&fourth, "ringmq_group_members", "group=\"lagging\""),
        1.0,
        "{fourth}"
    );
    assert!(
        total(&fourth, "ringmq_group_rebalances_total", "core=") >= 1.0,
        "{fourth}"
    );
}

/// Joins `group` as its only member and commits `offset` on every partition
/// of `topic` (at most the partition's end).
fn join_and_commit(bootstrap: &str, group: &str, topic: &str, offset: u64) {
    use ringmq_client::{Client, ClientConfig};
    use ringmq_protocol::{
        CommitOffsetsRequest, JoinGroupRequest, ListOffsetsRequest, OffsetSpec, PartitionOffset,
        Request, ResponseBody,
    };
    let (bootstrap, group, topic) = (bootstrap.to_owned(), group.to_owned(), topic.to_owned());
    common::small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .expect("connect");
        let join = client
            .request(&Request::JoinGroup(JoinGroupRequest {
                group: group.clone(),
                member_id: String::new(),
                instance_id: None,
                session_timeout_ms: 30_000,
                topics: vec![topic.clone()],
            }))
            .await
            .expect("join");
        let ResponseBody::JoinGroup(join) = join else {
            panic!("{join:?}")
        };
        let mut offsets = Vec::new();
        for tp in &join.assignment.partitions {
            for &partition in &tp.partitions {
                let end = match client
                    .request(&Request::ListOffsets(ListOffsetsRequest {
                        topic: tp.topic.clone(),
                        partition,
                        spec: OffsetSpec::Latest,
                    }))
                    .await
                    .expect("list offsets")
                {
                    ResponseBody::ListOffsets(l) => l.offset,
                    other => panic!("{other:?}"),
                };
                offsets.push(PartitionOffset {
                    topic: tp.topic.clone(),
                    partition,
                    offset: offset.min(end),
                });
            }
        }
        assert_eq!(offsets.len(), 4, "the only member holds every partition");
        client
            .request(&Request::CommitOffsets(CommitOffsetsRequest {
                group,
                member_id: join.member_id,
                generation: join.assignment.generation,
                offsets,
            }))
            .await
            .expect("commit");
    });
}
