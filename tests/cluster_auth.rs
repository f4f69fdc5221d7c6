//! Authenticated peers (issue #11, acceptance 3): a 3-node cluster with a
//! cluster secret; a fourth node with a wrong secret, then one with none,
//! cannot join (membership and topics unchanged, the cluster keeps
//! serving, the refusal only a log line); a raw ForwardHello without the
//! proof is refused and its connection closed; the admin endpoint wants
//! the secret.

mod common;

use std::sync::Mutex;
use std::time::Duration;

use common::cluster::TestCluster;
use common::probe::{cli, create_topic, healthy};
use common::raw::Raw;
use ringmq_protocol::{ErrorCode, ForwardHelloRequest, Request};

const SECRET: &str = "s3cret-shared-by-the-three-nodes";

/// One cluster at a time (each is three brokers), with small segments:
/// every partition preallocates one, and the disk is shared.
static SERIAL: Mutex<()> = Mutex::new(());
const SMALL: [&str; 2] = ["--segment-bytes", "1MiB"];

#[test]
fn only_nodes_with_the_secret_join_and_forward() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut cluster = TestCluster::start(3, &["--cluster-secret", SECRET, SMALL[0], SMALL[1]]);
    cluster.wait_until("3 healthy nodes", Duration::from_secs(60), healthy(3));
    create_topic(&cluster.node(1).client.to_string(), "orders", 3, Some(3));
    let before = cluster.node(1).status().unwrap();

    // A node with the wrong secret, then one with none: refused, nothing changes.
    for (extra, name) in [
        (
            vec!["--cluster-secret", "not-the-secret-of-this-cluster"],
            "wrong secret",
        ),
        (vec![], "no secret"),
    ] {
        let id = cluster.add_member(&extra);
        let refused = |n: u32| {
            cluster
                .node(n)
                .logs()
                .contains("did not prove it holds the cluster secret")
                || cluster
                    .node(n)
                    .logs()
                    .contains("requires the cluster secret")
        };
        common::probe::eventually(&format!("node {id} ({name}) is refused"), || {
            (refused(id) || (1..=3).any(refused)).then_some(())
        });
        // Give it time to try (it retries every second) and check nothing moved.
        std::thread::sleep(Duration::from_secs(3));
        for n in 1..=3 {
            let s = cluster.node(n).status().unwrap();
            let ids: Vec<u32> = s.nodes.iter().filter(|v| v.member).map(|v| v.id).collect();
            assert_eq!(ids, [1, 2, 3], "node {n} after {name}: {s:?}");
            assert_eq!(s.topics, before.topics);
        }
        assert!(
            cluster.node(id).is_running(),
            "the stranger is refused, not crashed"
        );
        cluster.node_mut(id).kill();
    }
    // The cluster keeps serving, through every node (forwarding with proofs).
    for n in 1..=3 {
        let b = cluster.node(n).client.to_string();
        let (ok, _, err) = cli(
            &["produce", "orders", "--acks", "all", "--bootstrap", &b],
            "x\ny\n",
        );
        assert!(ok, "produce through node {n}: {err}");
    }

    // A raw ForwardHello without the proof: a challenge, and no more.
    let mut raw = Raw::connect(cluster.node(1).client);
    let hello = |proof: &[u8]| {
        Request::ForwardHello(ForwardHelloRequest {
            node_id: 2,
            cluster_id: cluster.cluster_id.clone(),
            nonce: vec![1u8; 32].into(),
            proof: proof.to_vec().into(),
        })
    };
    let first = raw.call(hello(&[]));
    assert!(
        first.result.is_ok(),
        "a first hello gets a challenge: {first:?}"
    );
    let second = raw.call(hello(&[0u8; 32]));
    match second.result {
        Err(e) => assert_eq!(e.code, ErrorCode::InvalidRequest),
        Ok(b) => panic!("a wrong proof was taken: {b:?}"),
    }
    assert!(
        raw.is_closed_by_peer(),
        "a wrong proof closes the connection"
    );
    // Without a nonce at all: refused and closed too.
    let mut raw = Raw::connect(cluster.node(2).client);
    let resp = raw.call(Request::ForwardHello(ForwardHelloRequest {
        node_id: 1,
        cluster_id: cluster.cluster_id.clone(),
        nonce: Default::default(),
        proof: Default::default(),
    }));
    assert!(resp.result.is_err());
    assert!(raw.is_closed_by_peer());

    // The admin endpoint: refused without the secret, heard with it.
    let (ok, _, err) = cluster.node(1).cli(&["remove", "9"]);
    assert!(!ok && err.contains("Ringmq-HMAC"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let (_, _, err) = cluster.node(1).cli(&[
        "remove",
        "9",
        "--cluster-secret-file",
        secret_file.to_str().unwrap(),
    ]);
    assert!(
        !err.contains("Ringmq-HMAC"),
        "authenticated, then judged: {err}"
    );
    let s = cluster.node(1).status().unwrap();
    assert_eq!(s.nodes.iter().filter(|v| v.member).count(), 3);
}

#[test]
fn a_cluster_without_a_secret_warns_at_start() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::start(3, &SMALL);
    cluster.wait_until("3 healthy nodes", Duration::from_secs(60), healthy(3));
    assert!(cluster.node(1).logs().contains("peers are unauthenticated"));
}

/// TLS between nodes too: three nodes with one CA's certificate (for
/// 127.0.0.1) and the cluster secret agree, replicate acks=all writes over
/// TLS, and serve a TLS client through any node.
#[test]
fn a_cluster_speaks_tls_between_its_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = common::certs::Ca::new(dir.path(), "cluster-ca");
    let (cert, key) = ca.issue(dir.path(), "node", false);
    let [cert, key, ca_path] = [&cert, &key, &ca.path].map(|p| p.display().to_string());
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let cluster = TestCluster::start(
        3,
        &[
            SMALL[0],
            SMALL[1],
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-ca",
            &ca_path,
            "--cluster-secret",
            SECRET,
        ],
    );
    cluster.wait_until("3 healthy nodes", Duration::from_secs(60), healthy(3));
    let via = |n: u32| cluster.node(n).client.to_string();
    let tls = ["--tls-ca", ca_path.as_str()];
    let (n1, n2, n3) = (via(1), via(2), via(3));
    let create = [
        "topic",
        "create",
        "secure",
        "--partitions",
        "6",
        "--replication",
        "3",
        "--bootstrap",
        &n1,
        tls[0],
        tls[1],
    ];
    let (ok, _, err) = cli(&create, "");
    assert!(ok, "create over TLS: {err}");
    let lines: String = (0..300).map(|i| format!("{i}\n")).collect();
    let produce = [
        "produce",
        "secure",
        "--acks",
        "all",
        "--bootstrap",
        &n3,
        tls[0],
        tls[1],
    ];
    let (ok, _, err) = cli(&produce, &lines);
    assert!(ok, "acks=all produce over TLS, replicated over TLS: {err}");
    let consume = [
        "consume",
        "secure",
        "--from-beginning",
        "--count",
        "300",
        "--timeout",
        "20s",
        "--bootstrap",
        &n2,
        tls[0],
        tls[1],
    ];
    let (ok, out, err) = cli(&consume, "");
    assert!(ok, "consume over TLS: {err}");
    let mut got: Vec<u32> = out.lines().map(|l| l.parse().unwrap()).collect();
    got.sort_unstable();
    assert_eq!(got, (0..300).collect::<Vec<_>>());
    // Plaintext is not served on a TLS cluster's client port.
    let (ok, _, _) = cli(&["topic", "list", "--bootstrap", &n2], "");
    assert!(!ok, "a plaintext client was served");
}
