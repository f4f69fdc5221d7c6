//! A fake ringmq broker, in memory, on one executor thread: enough of the
//! protocol to test the client (framing, pipelining, batches, retries, the
//! fetch loop) before and apart from the real broker. Shared by the tests
//! and `examples/fake_broker.rs`.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use ringmq_protocol::batch::{self, BatchHeader};
use ringmq_protocol::{
    encode_error_response, BrokerMetadata, ErrorCode, FetchResponse, ListOffsetsResponse,
    ListTopicsResponse, MetadataResponse, OffsetSpec, PartitionMetadata, ProduceResponse, Request,
    RequestHeader, ResponseBody, TopicInfo, TopicMetadata, REQUEST_HEADER_LEN,
};

/// How the fake misbehaves.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Answer every n-th Produce `BUSY` (without appending it).
    pub busy_every: Option<u32>,
    /// Never answer anything.
    pub silent: bool,
    /// Hang up, without appending, on every n-th Produce.
    pub close_every: Option<u32>,
}

#[derive(Default)]
struct Broker {
    faults: Faults,
    produces: u32,
    /// topic -> partition -> batches (stamped with their base offset).
    topics: HashMap<String, Vec<Vec<Bytes>>>,
}

/// Starts a fake broker on its own executor thread; returns its address.
pub fn start_fake(faults: Faults) -> SocketAddr {
    start_fake_on("127.0.0.1:0", faults)
}

/// Like [`start_fake`], on a given address.
pub fn start_fake_on(listen: &str, faults: Faults) -> SocketAddr {
    let listen = listen.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .name("fake-broker")
        .spawn(move || async move {
            let l = TcpListener::bind(listen.as_str()).unwrap();
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
        let close_every = broker.borrow().faults.close_every;
        if let (Request::Produce(_), Some(n)) = (&req, close_every) {
            let mut b = broker.borrow_mut();
            b.produces += 1;
            if b.produces % n == 0 {
                return;
            }
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
        other => {
            return Err((
                ErrorCode::UnknownApi,
                format!("the fake broker does not serve {}", other.api_key()),
            ))
        }
    })
}
