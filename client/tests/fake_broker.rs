//! The client against a small in-process fake broker: enough of the
//! protocol (in memory, one executor thread) to check framing, pipelining,
//! batching, retries and the fetch loop. The end-to-end tests against the
//! real broker live in the root package.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_lite::io::AsyncReadExt;
use glommio::net::TcpListener;
use glommio::{LocalExecutorBuilder, Placement};
use ringmq_client::{
    Acks, Client, ClientConfig, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    StartOffset,
};
use ringmq_protocol::{ErrorCode, OffsetSpec, REQUEST_HEADER_LEN};

mod fake;

use fake::{config, small_executor, start_fake, start_fake_ctl, Faults};

#[test]
fn admin_round_trip() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        let admin = client.admin();
        admin.create_topic("orders", 3, 1).await.unwrap();
        admin.create_topic("audit", 1, 1).await.unwrap();
        let e = admin.create_topic("orders", 3, 1).await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::TopicAlreadyExists));
        let names: Vec<_> = admin
            .list_topics()
            .await
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.partitions))
            .collect();
        assert_eq!(names, [("audit".into(), 1), ("orders".to_string(), 3)]);
        assert_eq!(admin.partition_count("orders").await.unwrap(), 3);
        let e = admin.partition_count("nope").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::UnknownTopic));
        assert_eq!(
            admin
                .list_offsets("orders", 2, OffsetSpec::Latest)
                .await
                .unwrap(),
            0
        );
        assert!(!admin.api_versions().await.unwrap().apis.is_empty());
        admin.delete_topic("audit").await.unwrap();
        assert_eq!(admin.list_topics().await.unwrap().len(), 1);
    });
}

/// Produces `n` keyed records and reads them back; checks that every
/// record arrives once, in per-partition order, each key in one partition.
async fn produce_and_consume(client: &Client, topic: &str, n: u32, pc: ProducerConfig) -> u64 {
    let producer = Producer::new(client, topic, pc).await.unwrap();
    let conn = client.connection().await.unwrap();
    let mut max_in_flight = 0;
    let mut deliveries = Vec::new();
    for i in 0..n {
        max_in_flight = max_in_flight.max(conn.in_flight());
        let key = format!("key-{}", i % 97);
        let d = producer
            .send(Some(key.as_bytes()), format!("{i}").as_bytes())
            .await
            .unwrap();
        deliveries.push((key, d));
    }
    producer.flush().await.unwrap();
    let mut key_part = HashMap::new();
    for (key, d) in deliveries {
        let m = d.await.unwrap();
        assert!(m.offset.is_some());
        assert_eq!(*key_part.entry(key).or_insert(m.partition), m.partition);
    }
    let stats = producer.stats();
    assert_eq!((stats.acked, stats.failed), (u64::from(n), 0));
    assert!(max_in_flight > 1, "batches were not pipelined");

    let mut consumer = Consumer::new(
        client,
        topic,
        None,
        StartOffset::Earliest,
        ConsumerConfig::default(),
    )
    .await
    .unwrap();
    let mut seen = vec![false; n as usize];
    let mut last: HashMap<(u32, String), u32> = HashMap::new();
    for _ in 0..n {
        let r = consumer.next().await.unwrap();
        let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
        let i: u32 = std::str::from_utf8(&r.value.unwrap())
            .unwrap()
            .parse()
            .unwrap();
        assert!(!std::mem::replace(&mut seen[i as usize], true), "{i} twice");
        assert_eq!(key_part[&key], r.partition);
        // Records of one key were sent in increasing i: they must come back so.
        if let Some(prev) = last.insert((r.partition, key), i) {
            assert!(prev < i, "out of order: {prev} then {i}");
        }
    }
    stats.retries
}

#[test]
fn produce_then_consume_keyed() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 4, 1).await.unwrap();
        let pc = ProducerConfig {
            batch_bytes: 2048, // many batches, several in flight per partition
            ..ProducerConfig::default()
        };
        produce_and_consume(&client, "t", 20_000, pc).await;
    });
}

#[test]
fn retries_keep_partition_order() {
    let addr = start_fake(Faults {
        busy_every: Some(3),
        ..Faults::default()
    });
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 3, 1).await.unwrap();
        let pc = ProducerConfig {
            batch_bytes: 1024,
            max_in_flight_per_partition: 1,
            retry_backoff: Duration::from_millis(1),
            ..ProducerConfig::default()
        };
        let retries = produce_and_consume(&client, "t", 3_000, pc).await;
        assert!(retries > 0);
    });
}

#[test]
fn a_consumer_outlasts_a_busy_broker() {
    // BUSY answers for longer than the consumer's retry timeout (at least
    // 300 x 1 ms against 50 ms): a busy broker asks to slow down, which is
    // no reason to give up.
    let addr = start_fake(Faults {
        busy_fetches: 300,
        ..Faults::default()
    });
    small_executor().run(async move {
        let (client, producer) = producer_on_t(addr, 1).await;
        drop(producer.send(None, b"after the storm").await.unwrap());
        producer.flush().await.unwrap();
        let cfg = ConsumerConfig {
            retry_backoff: Duration::from_millis(1),
            retry_timeout: Duration::from_millis(50),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(&client, "t", None, StartOffset::Earliest, cfg)
            .await
            .unwrap();
        let record = consumer
            .next()
            .await
            .expect("served once the broker is not busy");
        assert_eq!(record.value.as_deref(), Some(&b"after the storm"[..]));
    });
}

#[test]
fn a_consumer_waits_out_a_broker_outage() {
    let (addr, ctl) = start_fake_ctl(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        let send = |range: std::ops::Range<u32>| {
            let client = client.clone();
            async move {
                let producer = Producer::new(&client, "t", ProducerConfig::default())
                    .await
                    .unwrap();
                for i in range {
                    drop(producer.send(None, i.to_string().as_bytes()).await.unwrap());
                }
                producer.flush().await.unwrap();
            }
        };
        send(0..10).await;
        let cfg = ConsumerConfig {
            max_wait: Duration::from_millis(50),
            ..ConsumerConfig::default()
        };
        let mut consumer = Consumer::new(&client, "t", None, StartOffset::Earliest, cfg)
            .await
            .unwrap();
        let mut got = 0;
        while got < 10 {
            got += consumer.poll().await.unwrap().len();
        }
        // Refused connections for 2.5 s, as during a broker restart.
        ctl.down();
        let up = ctl.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(2500));
            up.up();
        });
        let back = Instant::now() + Duration::from_millis(2500);
        while Instant::now() < back {
            assert!(consumer.poll().await.unwrap().is_empty());
        }
        send(10..20).await;
        let deadline = Instant::now() + Duration::from_secs(10);
        while got < 20 {
            assert!(Instant::now() < deadline, "got {got} of 20");
            got += consumer.poll().await.unwrap().len();
        }
    });
}

#[test]
fn producer_reconnects_and_retries_in_order() {
    let addr = start_fake(Faults {
        close_every: Some(7),
        ..Faults::default()
    });
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 2, 1).await.unwrap();
        let pc = ProducerConfig {
            batch_bytes: 1024,
            max_in_flight_per_partition: 1,
            retry_backoff: Duration::from_millis(1),
            ..ProducerConfig::default()
        };
        let retries = produce_and_consume(&client, "t", 2_000, pc).await;
        assert!(retries > 0);
    });
}

#[test]
fn idempotent_retries_are_not_appended_twice() {
    // Every 5th Produce is appended and its answer lost: the retry must
    // not append it again (produce_and_consume checks each number once).
    let addr = start_fake(Faults {
        lose_answer_every: Some(5),
        ..Faults::default()
    });
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 4, 1).await.unwrap();
        let pc = ProducerConfig {
            batch_bytes: 1024,
            retry_backoff: Duration::from_millis(1),
            ..ProducerConfig::default()
        };
        let retries = produce_and_consume(&client, "t", 3_000, pc).await;
        assert!(retries > 0);
    });
}

#[test]
fn without_idempotence_a_lost_answer_duplicates() {
    // The fault above does duplicate without idempotence: the test above
    // proves something.
    let addr = start_fake(Faults {
        lose_answer_every: Some(5),
        ..Faults::default()
    });
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("t", 1, 1).await.unwrap();
        let pc = ProducerConfig {
            batch_bytes: 1024,
            retry_backoff: Duration::from_millis(1),
            idempotent: false,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(&client, "t", pc).await.unwrap();
        assert_eq!(producer.producer_id(), None);
        for i in 0..2_000u32 {
            drop(producer.send(None, i.to_string().as_bytes()).await.unwrap());
        }
        producer.flush().await.unwrap();
        assert_eq!(producer.stats().failed, 0);
        let end = client
            .admin()
            .list_offsets("t", 0, OffsetSpec::Latest)
            .await
            .unwrap();
        assert!(end > 2_000, "no duplicates: {end}");
    });
}

/// A client of the fake at `addr`, topic `t` with `partitions`, and a
/// producer to it with the default (idempotent) settings.
async fn producer_on_t(addr: std::net::SocketAddr, partitions: u32) -> (Client, Producer) {
    let client = Client::connect(config(addr)).await.unwrap();
    client
        .admin()
        .create_topic("t", partitions, 1)
        .await
        .unwrap();
    let producer = Producer::new(&client, "t", ProducerConfig::default())
        .await
        .unwrap();
    (client, producer)
}

/// Sends one record to partition 0 and waits for its delivery.
async fn send_one(
    producer: &Producer,
    v: &str,
) -> Result<ringmq_client::RecordMetadata, ClientError> {
    let d = producer.send_to(0, None, v.as_bytes()).await?;
    producer.flush().await.unwrap();
    d.await
}

/// A throttled answer holds the connection: the next request is not sent
/// before `throttle_ms` has passed (the broker would not read it anyway).
#[test]
fn a_throttled_connection_waits_before_sending_again() {
    let (addr, ctl) = start_fake_ctl(Faults::default());
    small_executor().run(async move {
        let (client, producer) = producer_on_t(addr, 1).await;
        let conn = client.connection().await.unwrap();
        ctl.throttle_next_produce(400);
        send_one(&producer, "a").await.unwrap();
        let answered = Instant::now();
        assert_eq!(conn.throttled(), Duration::from_millis(400));
        send_one(&producer, "b").await.unwrap();
        let waited = answered.elapsed();
        assert!(
            waited >= Duration::from_millis(390),
            "sent again after {waited:?}"
        );
        // Not throttled again: no further wait.
        let t = Instant::now();
        send_one(&producer, "c").await.unwrap();
        assert!(t.elapsed() < Duration::from_millis(390));
        assert_eq!(conn.throttled(), Duration::from_millis(400));
    });
}

#[test]
fn a_fenced_producer_stops() {
    let (addr, ctl) = start_fake_ctl(Faults::default());
    small_executor().run(async move {
        let (_client, producer) = producer_on_t(addr, 2).await;
        let id = producer.producer_id().expect("idempotent by default");
        send_one(&producer, "a").await.unwrap();
        ctl.fence_producers();
        let e = send_one(&producer, "b").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::ProducerFenced), "{e}");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("producer {id} (epoch 0) was fenced on t/0"))
                && msg.contains("sends nothing more"),
            "{msg}"
        );
        // Stopped: any partition, at once, with the same words.
        let e = producer.send_to(1, None, b"c").await.unwrap_err();
        assert_eq!(e.to_string(), msg);
        let stats = producer.stats();
        assert_eq!((stats.acked, stats.failed, stats.retries), (1, 1, 0));
    });
}

#[test]
fn a_lost_acknowledged_batch_is_reported_and_the_partition_starts_over() {
    let (addr, ctl) = start_fake_ctl(Faults::default());
    small_executor().run(async move {
        let (client, producer) = producer_on_t(addr, 1).await;
        assert_eq!(send_one(&producer, "a").await.unwrap().offset, Some(0));
        // Acknowledged, then lost (acks=1 and a failover, say).
        ctl.forget_next_produces(1);
        send_one(&producer, "b").await.unwrap();
        let e = send_one(&producer, "c").await.unwrap_err();
        assert_eq!(e.code(), Some(ErrorCode::OutOfOrderSequence), "{e}");
        assert!(
            e.to_string()
                .contains("lacks batches of this producer it had acknowledged"),
            "{e}"
        );
        // A new epoch at sequence 0: the partition takes writes again.
        assert_eq!(send_one(&producer, "d").await.unwrap().offset, Some(1));
        let stats = producer.stats();
        assert_eq!(
            (stats.acked, stats.failed, stats.sequence_resets),
            (3, 1, 1)
        );
        let mut c = Consumer::new(
            &client,
            "t",
            None,
            StartOffset::Earliest,
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
        let got: Vec<_> = [c.next().await.unwrap(), c.next().await.unwrap()]
            .into_iter()
            .map(|r| r.value.unwrap())
            .collect();
        assert_eq!(got, [&b"a"[..], &b"d"[..]]);
    });
}

#[test]
fn round_robin_without_key_and_acks_none() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("rr", 4, 1).await.unwrap();
        let pc = ProducerConfig {
            acks: Acks::None,
            ..ProducerConfig::default()
        };
        let producer = Producer::new(&client, "rr", pc).await.unwrap();
        assert_eq!(producer.producer_id(), None, "no idempotence with acks=0");
        let mut parts = Vec::new();
        for i in 0..8 {
            parts.push(producer.send(None, &[i]).await.unwrap().partition());
        }
        assert_eq!(parts, [0, 1, 2, 3, 0, 1, 2, 3]);
        producer.flush().await.unwrap();
        let admin = client.admin();
        for p in 0..4 {
            // acks=0: the writes are on the socket, not necessarily applied yet.
            let mut n = 0;
            for _ in 0..100 {
                n = admin
                    .list_offsets("rr", p, OffsetSpec::Latest)
                    .await
                    .unwrap();
                if n == 2 {
                    break;
                }
                glommio::timer::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(n, 2);
        }
        let e = producer.send_to(9, None, b"x").await.unwrap_err();
        assert!(matches!(e, ClientError::InvalidInput(_)), "{e}");
    });
}

#[test]
fn consumer_skips_records_below_its_offset() {
    let addr = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        client.admin().create_topic("s", 1, 1).await.unwrap();
        let producer = Producer::new(&client, "s", ProducerConfig::default())
            .await
            .unwrap();
        for i in 0..10u8 {
            drop(producer.send(None, &[i]).await.unwrap());
        }
        producer.flush().await.unwrap(); // one batch of ten records
        let mut c = Consumer::new(
            &client,
            "s",
            Some(&[0]),
            StartOffset::At(7),
            ConsumerConfig::default(),
        )
        .await
        .unwrap();
        let r = c.next().await.unwrap();
        assert_eq!((r.offset, r.value.as_deref()), (7, Some(&[7u8][..])));
        assert_eq!(c.next().await.unwrap().offset, 8);
        assert_eq!(c.next().await.unwrap().offset, 9);
        assert_eq!(c.position(0), Some(10));
        // Nothing more: a poll comes back empty after the long poll.
        assert!(c.poll().await.unwrap().is_empty());
    });
}

#[test]
fn bootstrap_names_every_address() {
    let dead: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let live = start_fake(Faults::default());
    small_executor().run(async move {
        let e = Client::connect(ClientConfig::new(&dead.join(",")))
            .await
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(&dead[0]) && msg.contains(&dead[1]), "{msg}");
        // A live address after dead ones is found.
        let list = format!("{},{live}", dead.join(","));
        let c = Client::connect(ClientConfig::new(&list)).await.unwrap();
        assert_eq!(c.connection().await.unwrap().addr(), live);
    });
}

#[test]
fn silent_broker_times_out() {
    let addr = start_fake(Faults {
        silent: true,
        ..Faults::default()
    });
    small_executor().run(async move {
        let mut cfg = config(addr);
        cfg.connection.request_timeout = Duration::from_millis(100);
        let client = Client::connect(cfg).await.unwrap();
        let e = client.admin().list_topics().await.unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        // The connection was closed; the next call opens a new one.
        let e = client.admin().list_topics().await.unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
    });
}

#[test]
fn closed_by_broker_is_a_clear_error() {
    let (tx, rx) = std::sync::mpsc::channel();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .spawn(move || async move {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            // Read one request header, then hang up.
            let mut s = l.accept().await.unwrap();
            let mut hdr = [0u8; REQUEST_HEADER_LEN];
            s.read_exact(&mut hdr).await.unwrap();
        })
        .unwrap();
    let addr = rx.recv().unwrap();
    small_executor().run(async move {
        let client = Client::connect(config(addr)).await.unwrap();
        let e = client.admin().list_topics().await.unwrap_err();
        assert!(
            matches!(&e, ClientError::Closed { reason, .. } if reason.contains("closed the connection")),
            "{e}"
        );
    });
}
