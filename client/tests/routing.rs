//! The client's routing against a fake cluster of three nodes sharing one
//! state (`fake::start_fake_cluster`): Produce, Fetch and ListOffsets go to
//! each partition's leader, the map is refreshed (once) on `NOT_LEADER` and
//! on a lost leader, the bootstrap connection carries what cannot go to a
//! leader, and bootstrap starts from the broker that answered last.

use std::net::SocketAddr;
use std::time::Duration;

use ringmq_client::{
    Client, ClientConfig, Consumer, ConsumerConfig, Producer, ProducerConfig, StartOffset,
};

mod fake;

use fake::{small_executor, start_fake, start_fake_cluster, start_fake_ctl, Faults};

/// A port nothing listens on.
fn dead_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn quick_retries() -> ProducerConfig {
    ProducerConfig {
        batch_bytes: 512,
        retry_backoff: Duration::from_millis(10),
        ..ProducerConfig::default()
    }
}

/// Sends `range` as numbered records, keyed by number, and waits for every
/// delivery; panics on a failed one.
async fn produce(producer: &Producer, range: std::ops::Range<u32>) {
    let mut deliveries = Vec::new();
    for i in range {
        let v = i.to_string();
        deliveries.push(
            producer
                .send(Some(v.as_bytes()), v.as_bytes())
                .await
                .unwrap(),
        );
    }
    producer.flush().await.unwrap();
    for d in deliveries {
        d.await.expect("delivered");
    }
}

/// Reads records of every partition of `topic` until `n` came; their
/// numbers, sorted.
async fn consume(client: &Client, topic: &str, n: usize) -> Vec<u32> {
    let cfg = ConsumerConfig {
        max_wait: Duration::from_millis(20),
        ..ConsumerConfig::default()
    };
    let mut c = Consumer::new(client, topic, None, StartOffset::Earliest, cfg)
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < n {
        for r in c.poll().await.unwrap() {
            got.push(
                std::str::from_utf8(&r.value.unwrap())
                    .unwrap()
                    .parse()
                    .unwrap(),
            );
        }
    }
    got.sort_unstable();
    got
}

#[test]
fn produce_fetch_and_list_offsets_go_to_each_leader() {
    let (addrs, ctl) = start_fake_cluster(3);
    small_executor().run(async move {
        // Node 3 only: the others are learned from Metadata.
        let client = Client::connect(ClientConfig::new(&addrs[2].to_string()))
            .await
            .unwrap();
        client.admin().create_topic("t", 12, 1).await.unwrap();
        let producer = Producer::new(&client, "t", quick_retries()).await.unwrap();
        produce(&producer, 0..1200).await;
        assert_eq!(producer.stats().retries, 0);
        assert_eq!(
            consume(&client, "t", 1200).await,
            (0..1200).collect::<Vec<_>>()
        );
        for api in ["produce", "fetch", "list_offsets"] {
            assert_eq!(ctl.forwarded_total(api), 0, "{api} forwarded");
            for node in 1..=3 {
                assert!(ctl.served(node, api) > 0, "node {node} served no {api}");
            }
        }
        // One Metadata for the producer's partition count, one for the
        // consumer's: the map was warm, no refresh was needed.
        assert_eq!(client.metadata_refreshes(), 0);
    });
}

#[test]
fn not_leader_refreshes_the_map_once_and_the_retries_reach_the_new_leader() {
    let (addrs, ctl) = start_fake_cluster(3);
    ctl.lock().forward = false;
    const PARTS: u32 = 16;
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&addrs[2].to_string()))
            .await
            .unwrap();
        client.admin().create_topic("t", PARTS, 1).await.unwrap();
        ctl.lead_all("t", PARTS, 1);
        let producer = Producer::new(&client, "t", quick_retries()).await.unwrap();
        produce(&producer, 0..100).await;
        assert_eq!(ctl.served(1, "produce") as u64, PARTS as u64);

        // The leadership moves; node 1 answers NOT_LEADER to a batch per
        // partition, all in flight at once.
        ctl.lead_all("t", PARTS, 2);
        let (metadata, refreshes) = (ctl.metadata_requests(), client.metadata_refreshes());
        let mut deliveries = Vec::new();
        for p in 0..PARTS {
            deliveries.push(producer.send_to(p, None, b"moved").await.unwrap());
        }
        producer.flush().await.unwrap();
        for d in deliveries {
            d.await.expect("delivered by the new leader");
        }
        assert_eq!(
            ctl.refused_total("produce"),
            PARTS,
            "every partition met NOT_LEADER"
        );
        assert_eq!(ctl.served(2, "produce"), PARTS);
        assert_eq!(
            (
                ctl.metadata_requests() - metadata,
                client.metadata_refreshes() - refreshes
            ),
            (1, 1),
            "{PARTS} NOT_LEADER answers cost one Metadata request"
        );
        assert_eq!(producer.stats().retries, u64::from(PARTS));
    });
}

#[test]
fn a_lost_leader_has_the_map_refreshed_and_its_partitions_move() {
    let (addrs, ctl) = start_fake_cluster(3);
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&addrs[2].to_string()))
            .await
            .unwrap();
        client.admin().create_topic("t", 6, 1).await.unwrap();
        let producer = Producer::new(&client, "t", quick_retries()).await.unwrap();
        produce(&producer, 0..600).await;
        let on_node_2 = ctl.served(2, "produce");
        assert!(on_node_2 > 0);

        // Node 2 goes away and node 1 takes over its partitions.
        {
            let mut st = ctl.lock();
            st.down[1] = true;
            st.leaders.insert(
                "t".into(),
                (0..6)
                    .map(|p| if p % 3 == 1 { 1 } else { p % 3 + 1 })
                    .collect(),
            );
        }
        let on_node_1 = ctl.served(1, "produce");
        produce(&producer, 600..1200).await;
        assert_eq!(ctl.served(2, "produce"), on_node_2, "node 2 is down");
        assert!(
            producer.stats().retries > 0,
            "the lost connection was retried"
        );
        // Until the map is refreshed, a batch may take the gateway (node 2
        // refuses connections); the rest go straight to node 1.
        let (direct, forwarded) = (
            ctl.served(1, "produce") - on_node_1,
            ctl.forwarded_total("produce"),
        );
        assert!(
            direct > 4 * forwarded,
            "{direct} to node 1, {forwarded} forwarded"
        );
        assert_eq!(
            consume(&client, "t", 1200).await,
            (0..1200).collect::<Vec<_>>()
        );
        assert_eq!(ctl.forwarded_total("fetch"), 0);
    });
}

#[test]
fn unusable_leader_addresses_fall_back_to_the_bootstrap_connection() {
    let (addrs, ctl) = start_fake_cluster(3);
    {
        let mut st = ctl.lock();
        st.advertised[0] = ("0.0.0.0".into(), addrs[0].port());
        let dead = dead_addr();
        st.advertised[1] = (dead.ip().to_string(), dead.port());
    }
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&addrs[2].to_string()))
            .await
            .unwrap();
        client.admin().create_topic("t", 12, 1).await.unwrap();
        let producer = Producer::new(&client, "t", quick_retries()).await.unwrap();
        produce(&producer, 0..1200).await;
        assert_eq!(
            consume(&client, "t", 1200).await,
            (0..1200).collect::<Vec<_>>()
        );
        for api in ["produce", "fetch"] {
            // Nodes 1 and 2 were reached through node 3 only.
            assert_eq!(ctl.served(1, api) + ctl.served(2, api), 0, "{api}");
            assert!(ctl.forwarded(3, api) > 0, "{api}");
            assert!(ctl.served(3, api) > 0, "{api}");
        }
    });
}

#[test]
fn a_single_broker_is_used_through_the_bootstrap_address_whatever_it_advertises() {
    let (addrs, ctl) = start_fake_cluster(1);
    // Another address of "the same broker": usable, but not where we are.
    ctl.lock().advertised[0] = ("127.0.0.1".into(), dead_addr().port());
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&addrs[0].to_string()))
            .await
            .unwrap();
        client.admin().create_topic("t", 4, 1).await.unwrap();
        let producer = Producer::new(&client, "t", quick_retries()).await.unwrap();
        produce(&producer, 0..400).await;
        assert_eq!(producer.stats().retries, 0);
        assert_eq!(
            consume(&client, "t", 400).await,
            (0..400).collect::<Vec<_>>()
        );
    });
}

#[test]
fn bootstrap_starts_from_the_broker_that_answered_last() {
    let (a, ctl_a) = start_fake_ctl(Faults::default());
    let b = start_fake(Faults::default());
    small_executor().run(async move {
        let client = Client::connect(ClientConfig::new(&format!("{a},{b}")))
            .await
            .unwrap();
        assert_eq!(client.connection().await.unwrap().addr(), a);
        ctl_a.down();
        // (The fake closes its listener within 10 ms.)
        glommio::timer::sleep(Duration::from_millis(50)).await;
        // The next request finds the connection closed; the one after
        // that reconnects, to b.
        assert!(client.admin().list_topics().await.is_err());
        client.admin().list_topics().await.unwrap();
        assert_eq!(client.connection().await.unwrap().addr(), b);
        ctl_a.up();
        // a is back, but b answered last: reconnecting starts there.
        client.connection().await.unwrap().close();
        assert_eq!(client.connection().await.unwrap().addr(), b);
        assert_eq!(client.open_connection().await.unwrap().addr(), b);
    });
}
