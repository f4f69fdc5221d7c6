//! Issue #11: quotas. A client over its quota is paused, told by how much
//! (`throttle_ms`), and held back even when it ignores that; nothing it sent
//! is lost. Real `ringmq serve` processes, loopback only.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::raw::Raw;
use common::{batch, Broker};
use ringmq_protocol::{ListTopicsRequest, Request, ResponseBody};

fn metrics_addr(broker: &Broker) -> SocketAddr {
    assert!(
        broker.wait_for_log("serving metrics on ", Duration::from_secs(10)),
        "{}",
        broker.logs()
    );
    let logs = broker.logs();
    logs.split("serving metrics on ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("metrics address in the log")
}

fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

fn throttle_ms(body: ResponseBody) -> u32 {
    match body {
        ResponseBody::Produce(p) => p.throttle_ms,
        other => panic!("not a produce answer: {other:?}"),
    }
}

#[test]
fn a_client_over_its_quota_is_paused_and_told_by_how_much() {
    let broker = Broker::start(&[
        "--quota-produce-bytes",
        "64KiB",
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    let metrics = metrics_addr(&broker);
    let addr: SocketAddr = broker.bootstrap().parse().unwrap();
    let mut raw = Raw::connect(addr);
    raw.create_topic("t", 1);

    // Within the burst (one second's worth): not throttled.
    let small = batch(1, 16, 1000, 1);
    let r = raw.produce("t", 0, small.clone());
    assert_eq!(throttle_ms(r.result.expect("first produce")), 0);

    // About 64 KiB past the bucket at 64 KiB/s: about a second's pause.
    let big = batch(2, 96, 1000, 2);
    let r = raw.produce("t", 0, big.clone());
    let answered = Instant::now();
    let throttle = throttle_ms(r.result.expect("second produce"));
    assert!((700..=1000).contains(&throttle), "throttle_ms {throttle}");

    // A client that ignores it is held back all the same: the broker reads
    // its next request only once the pause is over.
    let list = raw.call(Request::ListTopics(ListTopicsRequest {}));
    let waited = answered.elapsed();
    assert!(list.result.is_ok());
    assert!(
        waited >= Duration::from_millis(u64::from(throttle) - 100),
        "answered {waited:?} after a throttle of {throttle} ms"
    );

    // Nothing was refused or lost.
    assert_eq!(raw.values("t", 0).len(), 16 + 96);
    let text = scrape(metrics);
    let throttled: f64 = text
        .lines()
        .find(|l| l.starts_with("ringmq_throttled_requests_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the throttled counter");
    assert!(throttled >= 1.0, "{text}");
}
