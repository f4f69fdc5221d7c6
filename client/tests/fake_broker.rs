//! The client against a small in-process fake broker: enough of the
//! protocol (in memory, one executor thread) to check framing, pipelining,
//! batching, retries and the fetch loop. The end-to-end tests against the
//! real broker live in the root package.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use ringmq_client::{
    Acks, Client, ClientConfig, ClientError, Consumer, ConsumerConfig, Producer, ProducerConfig,
    StartOffset,
};
use ringmq_protocol::batch::{self, BatchHeader};
use ringmq_protocol::{
    encode_error_response, BrokerMetadata, ErrorCode, FetchResponse, ListOffsetsResponse,
    ListTopicsResponse, MetadataResponse, OffsetSpec, PartitionMetadata, ProduceResponse, Request,
    RequestHeader, ResponseBody, TopicInfo, TopicMetadata, REQUEST_HEADER_LEN,
};

/// How the fake misbehaves.
#[derive(Clone, Copy, Default)]
struct Faults {
    /// Answer every n-th Produce `BUSY` (without appending it).
    busy_every: Option<u32>,
    /// Never answer anything.
    silent: bool,
}

#[derive(Default)]
struct Broker {
    faults: Faults,
    produces: u32,
    /// topic -> partition -> batches (stamped with their base offset).
    topics: HashMap<String, Vec<Vec<Bytes>>>,
}

fn small_executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .make()
        .unwrap()
}

/// Starts a fake broker on its own executor thread; returns its address.
fn start_fake(faults: Faults) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .name("fake-broker")
        .spawn(move || async move {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            tx.send(l.local_addr().unwrap()).unwrap();
            let broker = Rc::new(RefCell::new(Broker {
                faults,
                ..Broker::default()
            }));
            loop {
                let Ok(s) = l.accept().await else { return };
                glommio::spawn_local(serve(broker.clone(), s)).detach();
            }
        })
        .unwrap();
    rx.recv().unwrap()
}

async fn serve(broker: Rc<RefCell<Broker>>, mut s: TcpStream) {
    loop {
        let mut hdr = [0u8; REQUEST_HEADER_LEN];
        if s.read_exact(&mut hdr).await.is_err() {
            return;
        }
        let h = RequestHeader::parse(&hdr).unwrap();
        let mut body = vec![0u8; h.body_len()];
        s.read_exact(&mut body).await.unwrap();
        let req = Request::decode(&h, Bytes::from(body)).unwrap();
        if broker.borrow().faults.silent {
            continue;
        }
        if let Request::Fetch(f) = &req {
            // A crude long poll: wait a little when there is nothing new.
            let hw = hwm(&broker.borrow(), &f.topic, f.partition);
            if hw == Some(f.offset) {
                glommio::timer::sleep(Duration::from_millis(f.max_wait_ms.min(20).into())).await;
            }
        }
        let expects = req.expects_response();
        let answer = handle(&mut broker.borrow_mut(), req);
        if !expects {
            continue;
        }
        let mut out = BytesMut::new();
        match answer {
            Ok(b) => b.encode(h.correlation_id, &mut out),
            Err((code, msg)) => encode_error_response(h.correlation_id, code, &msg, &mut out),
        }
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn hwm(b: &Broker, topic: &str, p: u32) -> Option<u64> {
    let log = b.topics.get(topic)?.get(p as usize)?;
    Some(
        log.last()
            .map_or(0, |l| BatchHeader::parse(l).unwrap().next_offset()),
    )
}

fn handle(b: &mut Broker, req: Request) -> Result<ResponseBody, (ErrorCode, String)> {
    let unknown = |t: &str| (ErrorCode::UnknownTopic, format!("no topic {t}"));
    Ok(match req {
        Request::CreateTopic(c) => {
            if b.topics.contains_key(&c.name) {
                return Err((ErrorCode::TopicAlreadyExists, c.name));
            }
            b.topics
                .insert(c.name, vec![Vec::new(); c.partitions as usize]);
            ResponseBody::CreateTopic(Default::default())
        }
        Request::DeleteTopic(d) => {
            b.topics.remove(&d.name).ok_or_else(|| unknown(&d.name))?;
            ResponseBody::DeleteTopic(Default::default())
        }
        Request::ListTopics(_) => {
            let mut topics: Vec<TopicInfo> = b
                .topics
                .iter()
                .map(|(n, p)| TopicInfo {
                    name: n.clone(),
                    partitions: p.len() as u32,
                    replication: 1,
                })
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            ResponseBody::ListTopics(ListTopicsResponse { topics })
        }
        Request::Metadata(m) => {
            let names = m
                .topics
                .unwrap_or_else(|| b.topics.keys().cloned().collect());
            let topics = names
                .into_iter()
                .map(|name| match b.topics.get(&name) {
                    Some(parts) => TopicMetadata {
                        name,
                        error_code: ErrorCode::None,
                        partitions: (0..parts.len() as u32)
                            .map(|partition| PartitionMetadata {
                                partition,
                                leader: 0,
                                leader_epoch: 0,
                                replicas: vec![0],
                                isr: vec![0],
                            })
                            .collect(),
                    },
                    None => TopicMetadata {
                        name,
                        error_code: ErrorCode::UnknownTopic,
                        partitions: vec![],
                    },
                })
                .collect();
            ResponseBody::Metadata(MetadataResponse {
                brokers: vec![BrokerMetadata {
                    node_id: 0,
                    host: "127.0.0.1".into(),
                    port: 0,
                }],
                topics,
            })
        }
        Request::Produce(p) => {
            b.produces += 1;
            if b.faults.busy_every.is_some_and(|n| b.produces % n == 0) {
                return Err((ErrorCode::Busy, "busy, try again".into()));
            }
            let base = hwm(b, &p.topic, p.partition).ok_or_else(|| unknown(&p.topic))?;
            p.verify_batch()
                .map_err(|e| (ErrorCode::CorruptBatch, e.to_string()))?;
            let mut stored = BytesMut::from(&p.batch[..]);
            batch::stamp(&mut stored, base, 0);
            b.topics.get_mut(&p.topic).unwrap()[p.partition as usize].push(stored.freeze());
            ResponseBody::Produce(ProduceResponse {
                base_offset: base,
                log_start_offset: 0,
            })
        }
        Request::Fetch(f) => {
            let hw = hwm(b, &f.topic, f.partition).ok_or_else(|| unknown(&f.topic))?;
            if f.offset > hw {
                return Err((ErrorCode::OffsetOutOfRange, format!("{} > {hw}", f.offset)));
            }
            let mut records = BytesMut::new();
            for batch in &b.topics[&f.topic][f.partition as usize] {
                let h = BatchHeader::parse(batch).unwrap();
                if h.next_offset() <= f.offset {
                    continue;
                }
                if !records.is_empty() && records.len() + batch.len() > f.max_bytes as usize {
                    break;
                }
                records.extend_from_slice(batch);
            }
            ResponseBody::Fetch(FetchResponse {
                high_watermark: hw,
                log_start_offset: 0,
                records: records.freeze(),
            })
        }
        Request::ListOffsets(l) => {
            let hw = hwm(b, &l.topic, l.partition).ok_or_else(|| unknown(&l.topic))?;
            let offset = match l.spec {
                OffsetSpec::Earliest => 0,
                _ => hw,
            };
            ResponseBody::ListOffsets(ListOffsetsResponse { offset })
        }
        Request::ApiVersions(_) => {
            ResponseBody::ApiVersions(ringmq_protocol::ApiVersionsResponse::supported())
        }
    })
}

fn config(addr: SocketAddr) -> ClientConfig {
    ClientConfig::new(&addr.to_string())
}

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
    let mut deliveries = Vec::new();
    for i in 0..n {
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
