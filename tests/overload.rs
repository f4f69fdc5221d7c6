//! Overload: producers offering far more than the disk takes (every batch
//! fdatasynced) are slowed down by TCP backpressure, the broker's memory
//! stays within its budget, and every acknowledged batch is stored.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::raw::{batch_of, Raw};
use common::Broker;
use ringmq_protocol::{
    Acks, ApiKey, ProduceRequest, Request, Response, ResponseHeader, RESPONSE_HEADER_LEN,
};

const CONNECTIONS: usize = 12;
const REQUESTS: usize = 48;
const PARTITIONS: u32 = 4;

fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("RssAnon line")
        << 10
}

/// Sends every frame of `frames` on `stream` while another thread reads the
/// answers; returns (acknowledged, refused) counts.
fn offer(mut stream: TcpStream, frames: Bytes, requests: usize) -> (usize, usize) {
    let mut reader = stream.try_clone().expect("clone stream");
    let read = std::thread::spawn(move || {
        let (mut ok, mut refused) = (0, 0);
        for _ in 0..requests {
            let mut head = [0u8; RESPONSE_HEADER_LEN];
            reader.read_exact(&mut head).expect("response header");
            let h = ResponseHeader::parse(&head).expect("valid header");
            let mut body = vec![0u8; h.body_len()];
            reader.read_exact(&mut body).expect("response body");
            let r = Response::decode(ApiKey::Produce, &h, Bytes::from(body)).expect("decodable");
            match r.result {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert!(e.code.is_retriable(), "produce failed for good: {e}");
                    refused += 1;
                }
            }
        }
        (ok, refused)
    });
    stream.write_all(&frames).expect("send the offered load");
    read.join().expect("reader")
}

#[test]
fn producers_far_beyond_the_disk_are_pushed_back_within_budget() {
    const BUDGET_MIB: u64 = 8;
    let broker = Broker::start(&[
        "--flush",
        "every-batch",
        "--shard-memory-budget",
        "8MiB",
        "--retention",
        "off",
    ]);
    let pid = broker.pid();
    let mut admin = Raw::connect(broker.addr);
    admin.create_topic("load", PARTITIONS);
    let base = rss_anon(pid);

    let value = vec![b'v'; 32 << 10];
    let batch = batch_of(&[&value[..]; 16]); // 512 KiB
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(Ordering::Relaxed) {
                peak = peak.max(rss_anon(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };
    let producers: Vec<_> = (0..CONNECTIONS)
        .map(|c| {
            let mut frames = BytesMut::new();
            for i in 0..REQUESTS {
                Request::Produce(ProduceRequest {
                    topic: "load".into(),
                    partition: c as u32 % PARTITIONS,
                    acks: Acks::Leader,
                    timeout_ms: 30_000,
                    batch: batch.clone(),
                })
                .encode(i as u32, &mut frames);
            }
            let stream = TcpStream::connect(broker.addr).expect("connect");
            let frames = frames.freeze();
            std::thread::spawn(move || offer(stream, frames, REQUESTS))
        })
        .collect();
    let (mut acked, mut refused) = (0, 0);
    for p in producers {
        let (a, r) = p.join().expect("producer");
        acked += a;
        refused += r;
    }
    let took = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().expect("sampler");
    let offered_mib = (CONNECTIONS * REQUESTS * batch.len()) as f64 / (1 << 20) as f64;
    println!(
        "offered {offered_mib:.0} MiB at once from {CONNECTIONS} connections; {acked} batches acknowledged, {refused} refused (retriable) in {:.1} s; RssAnon {:.1} -> peak {:.1} MiB (budget {BUDGET_MIB} MiB per core)",
        took.as_secs_f64(),
        base as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64,
    );
    // Two cores' budgets, plus what is not requests: answers, per-connection
    // read buffers, allocator slack.
    let allowed = base + 2 * (BUDGET_MIB << 20) + (24 << 20);
    assert!(
        peak <= allowed,
        "RssAnon peaked at {peak} bytes, allowed {allowed}"
    );

    // Every acknowledged batch is there, whole.
    let stored: usize = (0..PARTITIONS).map(|p| admin.values("load", p).len()).sum();
    assert_eq!(
        stored,
        acked * 16,
        "acknowledged {acked} batches of 16 records"
    );
}
