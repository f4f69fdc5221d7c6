//! End to end through a real `ringmq serve`: keyed messages produced with
//! the Rust client come back once each, in order per partition, one key
//! always in one partition; and topics and data survive restarts by SIGTERM
//! and by SIGKILL.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{small_executor, Broker};
use ringmq_client::producer::partition_for_key;
use ringmq_client::{
    Client, ClientConfig, ConsumedRecord, Consumer, ConsumerConfig, Producer, ProducerConfig,
    StartOffset,
};

const PARTITIONS: u32 = 8;
const KEYS: u64 = 1_000;

/// Message `i`: key `k<i % KEYS>`, value `<key>:<i>`.
fn message(i: u64) -> (String, String) {
    let key = format!("k{}", i % KEYS);
    let value = format!("{key}:{i}");
    (key, value)
}

/// Produces messages `range` to `topic` and waits for every acknowledgement.
fn produce(bootstrap: &str, topic: &str, create: bool, range: std::ops::Range<u64>) {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .expect("connect");
        if create {
            client
                .admin()
                .create_topic(&topic, PARTITIONS, 1)
                .await
                .expect("create topic");
        }
        let producer = Producer::new(&client, &topic, ProducerConfig::default())
            .await
            .expect("producer");
        let mut deliveries = Vec::with_capacity((range.end - range.start) as usize);
        for i in range {
            let (key, value) = message(i);
            let d = producer
                .send(Some(key.as_bytes()), value.as_bytes())
                .await
                .expect("send");
            deliveries.push(d);
        }
        producer.flush().await.expect("flush");
        for d in deliveries {
            d.await.expect("every message acknowledged");
        }
    });
}

/// Reads `expected` records of `topic` from the beginning.
fn consume_all(bootstrap: &str, topic: &str, expected: usize) -> Vec<ConsumedRecord> {
    let bootstrap = bootstrap.to_owned();
    let topic = topic.to_owned();
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&bootstrap))
            .await
            .expect("connect");
        let mut consumer = Consumer::new(
            &client,
            &topic,
            None,
            StartOffset::Earliest,
            ConsumerConfig::default(),
        )
        .await
        .expect("consumer");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut out = Vec::with_capacity(expected);
        while out.len() < expected {
            assert!(
                Instant::now() < deadline,
                "only {} of {expected} records arrived",
                out.len()
            );
            out.extend(consumer.poll().await.expect("poll"));
        }
        // Nothing more than what was produced.
        let extra = consumer.poll().await.expect("poll");
        assert!(extra.is_empty(), "{} unexpected records", extra.len());
        out
    })
}

/// Checks: every message in `range` exactly once; offsets and per-key
/// sequence increase within each partition; every key in the partition its
/// hash names.
fn check(records: &[ConsumedRecord], range: std::ops::Range<u64>) {
    let mut seen = HashSet::new();
    let mut last_offset: HashMap<u32, u64> = HashMap::new();
    let mut last_seq: HashMap<String, u64> = HashMap::new();
    let mut key_partition: HashMap<String, u32> = HashMap::new();
    for r in records {
        let key = String::from_utf8(r.key.clone().expect("key").to_vec()).unwrap();
        let value = String::from_utf8(r.value.clone().expect("value").to_vec()).unwrap();
        let (vkey, seq) = value.split_once(':').expect("value is key:seq");
        assert_eq!(vkey, key);
        let seq: u64 = seq.parse().unwrap();
        assert!(seen.insert(seq), "message {seq} delivered twice");
        if let Some(prev) = last_offset.insert(r.partition, r.offset) {
            assert!(r.offset > prev, "partition {} went back", r.partition);
        }
        if let Some(prev) = last_seq.insert(key.clone(), seq) {
            assert!(seq > prev, "key {key}: {seq} after {prev}");
        }
        let p = *key_partition.entry(key.clone()).or_insert(r.partition);
        assert_eq!(p, r.partition, "key {key} in two partitions");
        assert_eq!(p, partition_for_key(key.as_bytes(), PARTITIONS));
    }
    let want: HashSet<u64> = range.collect();
    assert_eq!(seen, want, "missing or extra messages");
}

#[test]
fn hundred_thousand_keyed_messages_round_trip() {
    let broker = Broker::start(&[]);
    let n = 100_000;
    produce(&broker.bootstrap(), "orders", true, 0..n);
    let records = consume_all(&broker.bootstrap(), "orders", n as usize);
    check(&records, 0..n);
}

#[test]
fn topics_and_data_survive_sigterm_and_sigkill() {
    let mut broker = Broker::start(&["--flush", "every-batch"]);
    let addr = broker.bootstrap();
    produce(&addr, "tasks", true, 0..10_000);

    let status = broker.stop_with(libc::SIGTERM);
    assert!(
        status.success(),
        "SIGTERM exit: {status}\n{}",
        broker.logs()
    );
    broker.restart();
    assert!(
        broker.wait_for_log("opened after a clean shutdown", Duration::from_secs(5)),
        "restart after SIGTERM was not clean\n{}",
        broker.logs()
    );
    check(&consume_all(&addr, "tasks", 10_000), 0..10_000);

    // Everything acknowledged under every-batch survives SIGKILL.
    produce(&addr, "tasks", false, 10_000..20_000);
    broker.stop_with(libc::SIGKILL);
    broker.restart();
    check(&consume_all(&addr, "tasks", 20_000), 0..20_000);
    let (status, out, err) = common::cli(&["topic", "list", "--bootstrap", &addr], "");
    assert!(status.success(), "{err}");
    assert!(out.contains("tasks partitions=8"), "{out}");
}
