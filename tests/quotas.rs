//! Issue #11: quotas. A client over its quota is paused, told by how much
//! (`throttle_ms`), and held back even when it ignores that; nothing it sent
//! is lost; another principal beside it is not throttled. Real `ringmq
//! serve` processes, loopback only. (How much throughput the other keeps is
//! measured by `bench/quota.sh`.)

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::raw::Raw;
use common::{batch, cli, small_executor, Broker};
use ringmq_client::{Acks, Client, ClientConfig, Password, Producer, ProducerConfig, SaslConfig};
use ringmq_protocol::{ListTopicsRequest, Request, ResponseBody};

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
    let metrics = broker.metrics_addr();
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
    let text = common::probe::scrape(metrics).expect("a scrape");
    let throttled: f64 = text
        .lines()
        .find(|l| l.starts_with("ringmq_throttled_requests_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .expect("the throttled counter");
    assert!(throttled >= 1.0, "{text}");
}

async fn connect_as(addr: &str, user: &str) -> Client {
    let mut config = ClientConfig::new(addr);
    config.connection.sasl = Some(SaslConfig {
        username: user.into(),
        password: Password::new(format!("{user}-password-0123")),
    });
    Client::connect(config).await.expect("connect")
}

/// Produces `n` records of 1000 bytes through `client`; returns how long it
/// took and how long the broker throttled its connection meanwhile.
async fn produce_on(client: &Client, topic: &str, n: u32) -> (Duration, Duration) {
    let conn = client.connection().await.expect("the connection");
    let throttled_before = conn.throttled();
    let producer = Producer::new(
        client,
        topic,
        ProducerConfig {
            acks: Acks::Leader,
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("a producer");
    let started = Instant::now();
    let value = vec![b'x'; 1000];
    let mut deliveries = Vec::new();
    for _ in 0..n {
        deliveries.push(producer.send_to(0, None, &value).await.expect("send"));
    }
    producer.flush().await.expect("flush");
    for d in deliveries {
        d.await.expect("delivered");
    }
    let conn = client.connection().await.expect("the connection");
    (
        started.elapsed(),
        conn.throttled().saturating_sub(throttled_before),
    )
}

/// Produces `n` records of 1000 bytes as `user`; returns how long it took
/// and how long the broker throttled the connection.
async fn produce_as(addr: &str, user: &str, topic: &str, n: u32) -> (Duration, Duration) {
    let client = connect_as(addr, user).await;
    produce_on(&client, topic, n).await
}

#[test]
fn one_principal_over_its_quota_does_not_throttle_another() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ringmq.toml"),
        "[quotas.\"User:noisy\"]\nproduce_bytes = \"64KiB\"\n",
    )
    .unwrap();
    let config = d.join("ringmq.toml").display().to_string();
    let (broker, admin_pw) = start_with_admin(d, &["--config", &config]);
    let b = broker.bootstrap();
    for user in ["noisy", "quiet"] {
        let pw = d.join(format!("{user}.pw"));
        std::fs::write(&pw, format!("{user}-password-0123\n")).unwrap();
        let pw = pw.display().to_string();
        admin_cli(
            &["user", "add", user, "--new-password-file", &pw],
            &admin_pw,
            &b,
        );
        let topic = format!("t-{user}");
        admin_cli(
            &["topic", "create", &topic, "--partitions", "1"],
            &admin_pw,
            &b,
        );
    }

    // 256 records of 1000 bytes each: noisy's 64 KiB/s quota makes that
    // about 3 s past its one-second burst; quiet has no quota.
    let ((noisy_took, noisy_throttled), (_, quiet_throttled)) = small_executor().run(async {
        let noisy = produce_as(&b, "noisy", "t-noisy", 256);
        let quiet = produce_as(&b, "quiet", "t-quiet", 256);
        futures_lite::future::zip(noisy, quiet).await
    });
    assert!(
        noisy_took >= Duration::from_secs(2),
        "noisy sent 256 KB in {noisy_took:?} under a 64 KiB/s quota"
    );
    assert!(
        noisy_throttled >= Duration::from_secs(1),
        "{noisy_throttled:?}"
    );
    assert_eq!(quiet_throttled, Duration::ZERO, "quiet was throttled");
}

/// A broker requiring authentication, whose bootstrap `admin` has its
/// password in a file under `dir`: (broker, that file).
fn start_with_admin(dir: &std::path::Path, extra: &[&str]) -> (Broker, String) {
    let admin_pw = dir.join("admin.pw");
    std::fs::write(&admin_pw, "admin-password-0123\n").unwrap();
    let admin_pw = admin_pw.display().to_string();
    let mut args = vec![
        "--authentication",
        "true",
        "--admin-user",
        "admin",
        "--admin-password-file",
        &admin_pw,
    ];
    args.extend_from_slice(extra);
    (Broker::start(&args), admin_pw)
}

/// Runs the CLI as admin against `bootstrap`: (success, stdout, stderr).
fn cli_as_admin(args: &[&str], admin_pw: &str, bootstrap: &str) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend([
        "--user",
        "admin",
        "--password-file",
        admin_pw,
        "--bootstrap",
        bootstrap,
    ]);
    let (st, out, err) = cli(&all, "");
    (st.success(), out, err)
}

/// Runs the CLI as admin, which must succeed; answers stdout.
fn admin_cli(args: &[&str], admin_pw: &str, bootstrap: &str) -> String {
    let (ok, out, err) = cli_as_admin(args, admin_pw, bootstrap);
    assert!(ok, "{args:?}: {err}");
    out
}

#[test]
fn a_quota_set_at_run_time_takes_effect_and_its_removal_lifts_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (broker, admin_pw) = start_with_admin(d, &[]);
    let b = broker.bootstrap();
    let pw = d.join("noisy.pw");
    std::fs::write(&pw, "noisy-password-0123\n").unwrap();
    let pw = pw.display().to_string();
    admin_cli(
        &["user", "add", "noisy", "--new-password-file", &pw],
        &admin_pw,
        &b,
    );
    admin_cli(
        &["topic", "create", "t", "--partitions", "1"],
        &admin_pw,
        &b,
    );

    // One connection throughout: a quota set at run time reaches it.
    small_executor().run(async {
        let noisy = connect_as(&b, "noisy").await;
        // No quota configured: 256 KB go through unthrottled.
        let (_, throttled) = produce_on(&noisy, "t", 256).await;
        assert_eq!(throttled, Duration::ZERO, "throttled without a quota");

        let out = admin_cli(
            &[
                "quota",
                "set",
                "User:noisy",
                "--produce-bytes",
                "64KiB",
                "--requests",
                "off",
            ],
            &admin_pw,
            &b,
        );
        assert!(out.contains("User:noisy"), "{out}");
        let list = admin_cli(&["quota", "list"], &admin_pw, &b);
        let row: Vec<&str> = list
            .lines()
            .find(|l| l.starts_with("User:noisy"))
            .unwrap_or_else(|| panic!("no row for User:noisy in {list}"))
            .split_whitespace()
            .collect();
        assert_eq!(row, ["User:noisy", "65536", "default", "off"], "{list}");
        assert!(list.starts_with("PRINCIPAL"), "{list}");

        // The same broker and connection, no restart: now held back.
        let (took, throttled) = produce_on(&noisy, "t", 256).await;
        assert!(
            took >= Duration::from_secs(2),
            "256 KB in {took:?} under a 64 KiB/s quota set at run time"
        );
        assert!(throttled >= Duration::from_secs(1), "{throttled:?}");

        admin_cli(&["quota", "remove", "User:noisy"], &admin_pw, &b);
        let list = admin_cli(&["quota", "list"], &admin_pw, &b);
        assert!(!list.contains("User:noisy"), "{list}");
        let (_, throttled) = produce_on(&noisy, "t", 256).await;
        assert_eq!(
            throttled,
            Duration::ZERO,
            "throttled after the quota was removed"
        );
    });

    // Bad input is refused with a clear error, not a crash.
    let set_zero = ["quota", "set", "User:noisy", "--produce-bytes", "0"];
    let (ok, _, err) = cli_as_admin(&set_zero, &admin_pw, &b);
    assert!(!ok && err.contains("off"), "{err}");
    let remove_none = ["quota", "remove", "User:nobody"];
    let (ok, _, err) = cli_as_admin(&remove_none, &admin_pw, &b);
    assert!(!ok && err.contains("no quota"), "{err}");
}
