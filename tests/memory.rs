//! Memory stays bounded under the two loads that grow naive brokers: many
//! idle connections, and consumers that ask for much and read nothing.
//! Measured as the broker's anonymous RSS (`RssAnon` in /proc/PID/status):
//! file-backed pages of the segment mappings are the page cache's to evict.

mod common;

use std::io::Write;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::raw::{batch_of, Raw};
use common::Broker;
use ringmq_protocol::{ApiKey, ApiVersionsRequest, ErrorCode, FetchRequest, Request};

const MIB: u64 = 1 << 20;

fn rss_anon(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon line");
    kib << 10
}

/// The highest anonymous RSS seen over `d`, sampled every 50 ms.
fn peak_over(pid: u32, d: Duration) -> u64 {
    let end = Instant::now() + d;
    let mut peak = rss_anon(pid);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        peak = peak.max(rss_anon(pid));
    }
    peak
}

fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

#[test]
fn idle_connections_and_slow_consumers_stay_within_budget() {
    const BUDGET: u64 = 8 * MIB;
    const COLD: u64 = 40 * MIB;
    let broker = Broker::start(&[
        "--shard-memory-budget",
        "8MiB",
        "--cold-read-budget",
        "40MiB",
        "--segment-bytes",
        "2MiB",
        "--max-in-flight-per-connection",
        "64",
    ]);
    let pid = broker.pid();
    let mut admin = Raw::connect(broker.addr);
    admin.create_topic("big", 2);
    // 48 MiB over two partitions, most of it in sealed segments whose pages
    // the broker has dropped, so fetches read from disk.
    let value = vec![7u8; 64 << 10];
    let batch = batch_of(&[&value[..]; 8]);
    for i in 0..96 {
        admin
            .produce("big", i % 2, batch.clone())
            .result
            .expect("produce");
    }
    let base = peak_over(pid, Duration::from_millis(500));

    // 1,000 idle connections, each served once so the broker holds its state.
    let mut idle = Vec::with_capacity(1_000);
    for _ in 0..1_000 {
        let mut c = Raw::connect(broker.addr);
        let r = c.call(Request::ApiVersions(ApiVersionsRequest {}));
        assert!(r.result.is_ok());
        idle.push(c);
    }
    let with_idle = peak_over(pid, Duration::from_millis(500));
    let per_conn = with_idle.saturating_sub(base) / 1_000;
    println!(
        "RssAnon: {:.1} MiB at rest, {:.1} MiB with 1,000 idle connections ({} bytes each)",
        mib(base),
        mib(with_idle),
        per_conn
    );
    assert!(per_conn <= 32 << 10, "{per_conn} bytes per idle connection");

    // Slow consumers: each pipelines 64 fetches of up to 8 MiB and reads
    // no answer, which could pin 4 x 64 x 8 MiB if nothing bounded it.
    let mut slow = Vec::new();
    for c in 0..4u32 {
        let mut raw = Raw::connect(broker.addr);
        let mut frames = BytesMut::new();
        for i in 0..64u32 {
            Request::Fetch(FetchRequest {
                topic: "big".into(),
                partition: c % 2,
                offset: u64::from(i % 16) * 8,
                max_bytes: 8 << 20,
                min_bytes: 0,
                max_wait_ms: 0,
            })
            .encode(i, &mut frames);
        }
        raw.stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // The broker may stop reading once its bounds are reached; what does
        // not fit the socket buffers stays unsent, as with a real slow client.
        let _ = raw.stream.write_all(&frames);
        slow.push(raw);
    }
    let with_slow = peak_over(pid, Duration::from_secs(2));
    println!(
        "RssAnon: {:.1} MiB with 4 slow consumers (budgets: {:.0} MiB per core for requests, 2 cores; {:.0} MiB for reads of old data)",
        mib(with_slow),
        mib(BUDGET),
        mib(COLD)
    );
    let allowed = with_idle + 2 * BUDGET + COLD + 16 * MIB;
    assert!(
        with_slow <= allowed,
        "slow consumers grew RssAnon to {:.1} MiB (allowed {:.1} MiB)",
        mib(with_slow),
        mib(allowed)
    );

    // Everyone else is still served.
    let mut fresh = Raw::connect(broker.addr);
    let r = fresh.call(Request::ApiVersions(ApiVersionsRequest {}));
    assert!(r.result.is_ok());
    let r = idle[0].call(Request::ApiVersions(ApiVersionsRequest {}));
    assert!(r.result.is_ok());
    // A slow consumer that finally reads gets its answers, in order: the
    // records, or BUSY for a read that did not fit the budget.
    let mut busy = 0;
    for i in 0..64u32 {
        let r = slow[0].read_response(ApiKey::Fetch).expect("answer");
        assert_eq!(r.correlation_id, i);
        match r.result {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::Busy => busy += 1,
            Err(e) => panic!("fetch {i} failed: {e}"),
        }
    }
    println!(
        "the slow consumer's 64 fetches: {} served, {busy} BUSY",
        64 - busy
    );
}
