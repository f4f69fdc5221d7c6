//! A blocking, one-request-at-a-time protocol client over std sockets, built
//! only from `ringmq-protocol`: for tests that must send bytes no real
//! client would.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ringmq_protocol::batch::BatchBuilder;
use ringmq_protocol::{
    Acks, ApiKey, CreateTopicRequest, FetchRequest, ProduceRequest, Request, Response,
    ResponseBody, ResponseHeader, RESPONSE_HEADER_LEN,
};

pub struct Raw {
    pub stream: TcpStream,
    next_corr: u32,
}

impl Raw {
    pub fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).expect("connect to broker");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Raw {
            stream,
            next_corr: 1,
        }
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Reads one response frame; `None` when the broker closed the connection.
    pub fn read_response(&mut self, api: ApiKey) -> Option<Response> {
        let mut head = [0u8; RESPONSE_HEADER_LEN];
        self.stream.read_exact(&mut head).ok()?;
        let h = ResponseHeader::parse(&head).expect("valid response header");
        let mut body = vec![0u8; h.body_len()];
        self.stream.read_exact(&mut body).ok()?;
        Some(Response::decode(api, &h, Bytes::from(body)).expect("decodable response"))
    }

    /// Whether the broker closed the connection (reads EOF or reset).
    pub fn is_closed_by_peer(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0) | Err(_))
    }

    pub fn call(&mut self, req: Request) -> Response {
        let corr = self.next_corr;
        self.next_corr += 1;
        let api = req.api_key();
        let mut buf = BytesMut::new();
        req.encode(corr, &mut buf);
        self.send_bytes(&buf).expect("send request");
        let resp = self.read_response(api).expect("broker answered");
        assert_eq!(resp.correlation_id, corr);
        resp
    }

    pub fn create_topic(&mut self, name: &str, partitions: u32) {
        let r = self.call(Request::CreateTopic(CreateTopicRequest {
            name: name.into(),
            partitions,
            replication: 1,
        }));
        r.result.expect("topic created");
    }

    pub fn produce(&mut self, topic: &str, partition: u32, batch: Bytes) -> Response {
        self.call(Request::Produce(ProduceRequest {
            topic: topic.into(),
            partition,
            acks: Acks::Leader,
            timeout_ms: 5_000,
            batch,
        }))
    }

    /// Every record value in the partition, from offset 0.
    pub fn values(&mut self, topic: &str, partition: u32) -> Vec<Bytes> {
        let mut out = Vec::new();
        let mut offset = 0u64;
        loop {
            let r = self.call(Request::Fetch(FetchRequest {
                topic: topic.into(),
                partition,
                offset,
                max_bytes: 1 << 20,
                min_bytes: 0,
                max_wait_ms: 0,
            }));
            let Ok(ResponseBody::Fetch(f)) = r.result else {
                panic!("fetch failed: {:?}", r.result)
            };
            if f.records.is_empty() {
                return out;
            }
            for batch in ringmq_protocol::batch::batches(&f.records) {
                let batch = batch.expect("broker serves valid batches");
                for rec in ringmq_protocol::batch::decode_records(&batch).unwrap() {
                    if rec.offset >= offset {
                        out.push(rec.value.unwrap_or_default());
                        offset = rec.offset + 1;
                    }
                }
            }
        }
    }
}

/// A valid batch of the given values, no keys.
pub fn batch_of(values: &[&[u8]]) -> Bytes {
    let mut b = BatchBuilder::new(1_000);
    for v in values {
        b.push(1_000, None, Some(v), &[]);
    }
    b.finish(None)
}
