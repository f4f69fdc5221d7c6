//! Authentication and authorization against real brokers (issue #11):
//! SASL SCRAM-SHA-256 refuses a connection with no credentials, a wrong
//! password, an unknown user (indistinguishably from a wrong password)
//! and a client-final replayed on another connection; the ACLs let a user
//! do exactly what it was allowed; users and ACLs made through one node of
//! a cluster hold on the others; and no password or key material shows in
//! the logs (at debug), the metrics, `cluster status` or `user list`.

mod common;

use std::net::SocketAddr;
use std::path::Path;

use bytes::Bytes;
use common::cluster::TestCluster;
use common::probe::{eventually, healthy, scrape};
use common::raw::Raw;
use common::Broker;
use ringmq_protocol::scram::{nonce_from_bytes, ClientExchange};
use ringmq_protocol::{
    ErrorCode, ListTopicsRequest, Request, ResponseBody, SaslAuthenticateRequest,
    SaslHandshakeRequest,
};

const ADMIN_PASSWORD: &str = "admin-Pa55word-xyzzy";
const ALICE_PASSWORD: &str = "alice-Pa55word-plugh";
const WRITER_PASSWORD: &str = "writer-Pa55word-frotz";

/// Writes the password files the broker and the CLI read.
fn password_files(dir: &Path) {
    for (name, pw) in [
        ("admin.pw", ADMIN_PASSWORD),
        ("alice.pw", ALICE_PASSWORD),
        ("writer.pw", WRITER_PASSWORD),
        ("wrong.pw", "not-the-password"),
    ] {
        std::fs::write(dir.join(name), format!("{pw}\n")).unwrap();
    }
}

fn secure_flags(dir: &Path) -> Vec<String> {
    [
        "--authentication",
        "true",
        "--authorization",
        "true",
        "--admin-user",
        "admin",
        "--admin-password-file",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([dir.join("admin.pw").display().to_string()])
    .collect()
}

/// The CLI as `user` (its password from `<dir>/<pwfile>`): (ok, stdout, stderr).
fn cli_as(
    dir: &Path,
    bootstrap: &str,
    user: &str,
    pwfile: &str,
    args: &[&str],
    stdin: &str,
) -> (bool, String, String) {
    let pw = dir.join(pwfile).display().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.extend([
        "--bootstrap",
        bootstrap,
        "--user",
        user,
        "--password-file",
        &pw,
    ]);
    common::probe::cli(&all, stdin)
}

fn admin(dir: &Path, bootstrap: &str, args: &[&str]) -> String {
    let (ok, out, err) = cli_as(dir, bootstrap, "admin", "admin.pw", args, "");
    assert!(ok, "{args:?} as admin: {err}");
    out
}

/// Handshake and client-first on `raw`: the exchange and the server-first.
fn scram_start(raw: &mut Raw, user: &str, password: &str) -> (ClientExchange, Bytes) {
    let r = raw.call(Request::SaslHandshake(SaslHandshakeRequest {
        mechanism: "SCRAM-SHA-256".into(),
    }));
    assert!(
        matches!(r.result, Ok(ResponseBody::SaslHandshake(_))),
        "{r:?}"
    );
    let mut nonce = [0u8; 18];
    getrandom(&mut nonce);
    let (ex, first) = ClientExchange::new(user, password.as_bytes(), &nonce_from_bytes(&nonce));
    let r = raw.call(Request::SaslAuthenticate(SaslAuthenticateRequest {
        auth_bytes: first.into(),
    }));
    match r.result {
        Ok(ResponseBody::SaslAuthenticate(a)) => (ex, a.auth_bytes),
        other => panic!("server-first expected: {other:?}"),
    }
}

/// Not cryptographic: distinct nonces per call are all the tests need.
fn getrandom(buf: &mut [u8]) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let seed = N.fetch_add(1, Ordering::Relaxed) ^ u64::from(std::process::id()) << 32;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (seed.rotate_left(i as u32 * 7) >> (i % 8)) as u8;
    }
}

/// Sends the client-final; the broker's answer code and whether it then
/// closed the connection.
fn scram_finish(raw: &mut Raw, client_final: Vec<u8>) -> Result<Bytes, (ErrorCode, String)> {
    let r = raw.call(Request::SaslAuthenticate(SaslAuthenticateRequest {
        auth_bytes: client_final.into(),
    }));
    match r.result {
        Ok(ResponseBody::SaslAuthenticate(a)) => Ok(a.auth_bytes),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err((e.code, e.message)),
    }
}

/// A whole exchange on a fresh connection: the refusal if any.
fn login(addr: SocketAddr, user: &str, password: &str) -> (Raw, Result<(), (ErrorCode, String)>) {
    let mut raw = Raw::connect(addr);
    let (mut ex, server_first) = scram_start(&mut raw, user, password);
    let fin = ex
        .final_message(&server_first)
        .expect("a valid server-first");
    let r = scram_finish(&mut raw, fin).map(|server_final| {
        ex.verify_server(&server_final)
            .expect("the broker proves it knows the credential")
    });
    (raw, r)
}

fn salt_of(server_first: &[u8]) -> String {
    String::from_utf8_lossy(server_first)
        .split(',')
        .find_map(|a| a.strip_prefix("s=").map(str::to_owned))
        .expect("a salt")
}

/// Every way a secret could be printed: as text, hex, base64, and the
/// byte lists of `Debug` and JSON.
fn forms(secret: &[u8]) -> Vec<String> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let list = |sep: &str| {
        secret
            .iter()
            .map(|b| b.to_string())
            .collect::<Vec<_>>()
            .join(sep)
    };
    vec![
        secret.iter().map(|b| format!("{b:02x}")).collect(),
        b64.encode(secret),
        b64.encode(secret).trim_end_matches('=').to_owned(),
        list(", "),
        list(","),
    ]
}

/// The salt, StoredKey and ServerKey of every user in `security.json`.
fn stored_secrets(data_dir: &Path) -> Vec<Vec<u8>> {
    let text = std::fs::read_to_string(data_dir.join("security.json")).expect("security.json");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    for (_, cred) in v["users"].as_object().expect("users").iter() {
        for field in ["salt", "stored_key", "server_key"] {
            let bytes: Vec<u8> = cred[field]
                .as_array()
                .expect("a byte list")
                .iter()
                .map(|b| b.as_u64().unwrap() as u8)
                .collect();
            assert!(bytes.len() >= 16, "{field}");
            out.push(bytes);
        }
    }
    out
}

fn assert_no_secrets(what: &str, text: &str, secrets: &[Vec<u8>]) {
    for pw in [ADMIN_PASSWORD, ALICE_PASSWORD, WRITER_PASSWORD] {
        assert!(!text.contains(pw), "{what} shows a password");
    }
    for s in secrets {
        for f in forms(s) {
            assert!(!text.contains(&f), "{what} shows key material ({f})");
        }
    }
}

/// Acceptance 1 and 5 on a single node.
#[test]
fn a_single_node_authenticates_authorizes_and_keeps_secrets() {
    let dir = tempfile::tempdir().unwrap();
    password_files(dir.path());
    let flags = secure_flags(dir.path());
    let mut args: Vec<&str> = flags.iter().map(String::as_str).collect();
    args.extend(["--metrics-listen", "127.0.0.1:0"]);
    let broker = Broker::start_with_env(&args, &[("RUST_LOG", "debug")]);
    let b = broker.bootstrap();
    let d = dir.path();

    // No credentials: refused and closed, whatever the request.
    let mut raw = Raw::connect(broker.addr);
    let r = raw.call(Request::ListTopics(ListTopicsRequest {}));
    assert_eq!(r.result.unwrap_err().code, ErrorCode::AuthFailed);
    assert!(raw.is_closed_by_peer());
    let (ok, _, err) = common::probe::cli(&["topic", "list", "--bootstrap", &b], "");
    assert!(!ok && err.contains("AUTH_FAILED"), "{err}");

    // Out of turn, or another mechanism: refused and closed too.
    let mut raw = Raw::connect(broker.addr);
    let r = raw.call(Request::SaslAuthenticate(SaslAuthenticateRequest {
        auth_bytes: Bytes::from_static(b"n,,n=alice,r=abc"),
    }));
    assert_eq!(r.result.unwrap_err().code, ErrorCode::AuthFailed);
    assert!(raw.is_closed_by_peer());
    let mut raw = Raw::connect(broker.addr);
    let r = raw.call(Request::SaslHandshake(SaslHandshakeRequest {
        mechanism: "PLAIN".into(),
    }));
    let e = r.result.unwrap_err();
    assert_eq!(e.code, ErrorCode::AuthFailed);
    assert!(e.message.contains("SCRAM-SHA-256"), "{}", e.message);
    assert!(raw.is_closed_by_peer());

    // Users and rules, made by the bootstrap admin.
    admin(d, &b, &["topic", "create", "a", "--partitions", "2"]);
    admin(d, &b, &["topic", "create", "b", "--partitions", "1"]);
    let pw = d.join("alice.pw").display().to_string();
    admin(d, &b, &["user", "add", "alice", "--new-password-file", &pw]);
    let (ok, _, err) = cli_as(
        d,
        &b,
        "admin",
        "admin.pw",
        &["user", "add", "writer", "--new-password-stdin"],
        &format!("{WRITER_PASSWORD}\n"),
    );
    assert!(ok, "{err}");
    admin(
        d,
        &b,
        &[
            "acl",
            "add",
            "--principal",
            "User:alice",
            "--topic",
            "a",
            "--operation",
            "consume",
        ],
    );
    admin(
        d,
        &b,
        &[
            "acl",
            "add",
            "--principal",
            "writer",
            "--topic",
            "a*",
            "--operation",
            "produce",
        ],
    );

    // A wrong password, an unknown user: the same refusal, and the
    // unknown user gets a salt as stable as a real one.
    let (mut raw, r) = login(broker.addr, "alice", "not-the-password");
    let wrong = r.unwrap_err();
    assert_eq!(wrong.0, ErrorCode::AuthFailed);
    assert!(raw.is_closed_by_peer());
    let (mut raw, r) = login(broker.addr, "mallory", "whatever");
    assert_eq!(
        r.unwrap_err(),
        wrong,
        "an unknown user reads like a wrong password"
    );
    assert!(raw.is_closed_by_peer());
    let salts: Vec<String> = (0..2)
        .map(|_| salt_of(&scram_start(&mut Raw::connect(broker.addr), "mallory", "x").1))
        .collect();
    assert_eq!(salts[0], salts[1]);
    let real = salt_of(&scram_start(&mut Raw::connect(broker.addr), "alice", "x").1);
    assert_eq!(salts[0].len(), real.len());

    // A replayed exchange: alice's client-final, captured on one
    // connection, sent on another (whose server nonce differs).
    let mut first = Raw::connect(broker.addr);
    let (mut ex, server_first) = scram_start(&mut first, "alice", ALICE_PASSWORD);
    let captured = ex.final_message(&server_first).unwrap();
    scram_finish(&mut first, captured.clone()).expect("alice logs in");
    let mut second = Raw::connect(broker.addr);
    let (_, other_first) = scram_start(&mut second, "alice", ALICE_PASSWORD);
    assert_ne!(other_first, server_first, "a fresh server nonce");
    assert_eq!(
        scram_finish(&mut second, captured).unwrap_err(),
        wrong,
        "a replayed client-final is refused"
    );
    assert!(second.is_closed_by_peer());
    // And the authenticated connection goes on.
    let r = first.call(Request::ListTopics(ListTopicsRequest {}));
    let Ok(ResponseBody::ListTopics(l)) = r.result else {
        panic!("{r:?}")
    };
    let names: Vec<&str> = l.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a"], "alice sees only what she may describe");

    // Alice may consume a, nothing else; writer may produce to a.
    let (ok, _, err) = cli_as(d, &b, "alice", "alice.pw", &["produce", "a"], "x\n");
    assert!(!ok && err.contains("NOT_AUTHORIZED"), "{err}");
    let consume = [
        "consume",
        "--from-beginning",
        "--count",
        "3",
        "--timeout",
        "5s",
    ];
    let mut read_b = consume.to_vec();
    read_b.insert(1, "b");
    let (ok, _, err) = cli_as(d, &b, "alice", "alice.pw", &read_b, "");
    assert!(!ok && err.contains("NOT_AUTHORIZED"), "{err}");
    let (ok, _, err) = cli_as(d, &b, "writer", "writer.pw", &["produce", "a"], "1\n2\n3\n");
    assert!(ok, "writer produces: {err}");
    let mut read_a = consume.to_vec();
    read_a.insert(1, "a");
    let (ok, out, err) = cli_as(d, &b, "alice", "alice.pw", &read_a, "");
    assert!(ok, "alice consumes: {err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(got, ["1", "2", "3"]);
    let (ok, _, err) = cli_as(d, &b, "writer", "writer.pw", &read_a, "");
    assert!(!ok && err.contains("NOT_AUTHORIZED"), "{err}");
    // Managing users needs a super user.
    let (ok, _, err) = cli_as(d, &b, "alice", "alice.pw", &["user", "list"], "");
    assert!(!ok && err.contains("NOT_AUTHORIZED"), "{err}");

    // Counted in the metrics.
    let metrics = scrape(broker.metrics_addr()).expect("metrics");
    assert!(
        metrics.contains("ringmq_auth_failures_total{mechanism=\"SCRAM-SHA-256\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("ringmq_auth_failures_total{mechanism=\"none\"}"));
    assert!(metrics.contains("ringmq_authorization_denied_total{operation=\"produce\"}"));

    // Acceptance 5: no secret in user list, the metrics or the debug log.
    let users = admin(d, &b, &["user", "list"]);
    assert_eq!(users, "alice SCRAM-SHA-256\nwriter SCRAM-SHA-256\n");
    let acls = admin(d, &b, &["acl", "list"]);
    assert!(
        acls.contains("User:writer topic a prefix produce"),
        "{acls}"
    );
    let secrets = stored_secrets(broker.data_dir());
    assert_no_secrets("user list", &users, &secrets);
    assert_no_secrets("/metrics", &metrics, &secrets);
    let logs = broker.logs();
    assert!(logs.contains("DEBUG"), "the broker logged at debug");
    assert!(logs.contains("request refused by the ACLs"));
    assert_no_secrets("the broker's log", &logs, &secrets);
    let secure = std::fs::read_to_string(broker.data_dir().join("security.json")).unwrap();
    assert_no_secrets("security.json (passwords)", &secure, &[]);
}

/// Acceptance 1, cluster case: users and ACLs made through node 1 hold on
/// node 3; acceptance 5 for `cluster status`.
#[test]
fn users_and_acls_made_through_one_node_hold_on_another() {
    let dir = tempfile::tempdir().unwrap();
    password_files(dir.path());
    let d = dir.path();
    let mut flags = secure_flags(d);
    // Authentication in a cluster needs nodes that prove who they are;
    // small segments, as every partition preallocates one.
    flags.extend(
        [
            "--cluster-secret",
            "a-test-cluster-secret-0123",
            "--segment-bytes",
            "1MiB",
        ]
        .map(String::from),
    );
    let args: Vec<&str> = flags.iter().map(String::as_str).collect();
    let cluster = TestCluster::start(3, &args);
    cluster.wait_until("3 healthy nodes", common::probe::WAIT, healthy(3));
    let (n1, n2, n3) = (
        cluster.node(1).client.to_string(),
        cluster.node(2).client.to_string(),
        cluster.node(3).client.to_string(),
    );

    admin(d, &n1, &["topic", "create", "a", "--partitions", "3"]);
    admin(d, &n1, &["topic", "create", "b", "--partitions", "1"]);
    let pw = d.join("alice.pw").display().to_string();
    admin(
        d,
        &n1,
        &["user", "add", "alice", "--new-password-file", &pw],
    );
    admin(
        d,
        &n1,
        &[
            "acl",
            "add",
            "--principal",
            "alice",
            "--topic",
            "a",
            "--operation",
            "consume",
        ],
    );
    let (ok, _, err) = cli_as(d, &n2, "admin", "admin.pw", &["produce", "a"], "1\n2\n");
    assert!(ok, "{err}");

    // Node 3 learned of alice and her rule through the Raft log.
    let out = eventually("alice consumes a through node 3", || {
        let args = [
            "consume",
            "a",
            "--from-beginning",
            "--count",
            "2",
            "--timeout",
            "5s",
        ];
        let (ok, out, _) = cli_as(d, &n3, "alice", "alice.pw", &args, "");
        ok.then_some(out)
    });
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(got, ["1", "2"]);
    let (ok, _, err) = cli_as(d, &n3, "alice", "alice.pw", &["produce", "a"], "x\n");
    assert!(!ok && err.contains("NOT_AUTHORIZED"), "{err}");
    let args = [
        "consume",
        "b",
        "--from-beginning",
        "--count",
        "1",
        "--timeout",
        "3s",
    ];
    let (ok, _, err) = cli_as(d, &n3, "alice", "alice.pw", &args, "");
    assert!(!ok && err.contains("NOT_AUTHORIZED"), "{err}");
    let (ok, _, err) = cli_as(d, &n3, "alice", "wrong.pw", &["topic", "list"], "");
    assert!(!ok && err.contains("AUTH_FAILED"), "{err}");
    assert_eq!(admin(d, &n3, &["user", "list"]), "alice SCRAM-SHA-256\n");

    // Quotas are cluster metadata too: set through node 1, listed on node
    // 3; managing them needs alter on the cluster.
    admin(
        d,
        &n1,
        &["quota", "set", "User:alice", "--fetch-bytes", "1MiB"],
    );
    let list = eventually("alice's quota shows on node 3", || {
        let out = admin(d, &n3, &["quota", "list"]);
        out.contains("User:alice").then_some(out)
    });
    let row: Vec<&str> = list
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["User:alice", "default", "1048576", "default"],
        "{list}"
    );
    let (ok, _, err) = cli_as(d, &n3, "alice", "alice.pw", &["quota", "list"], "");
    assert!(!ok && err.contains("NOT_AUTHORIZED"), "{err}");
    admin(d, &n3, &["quota", "remove", "User:alice"]);
    eventually("alice's quota is gone on node 1", || {
        let out = admin(d, &n1, &["quota", "list"]);
        (!out.contains("User:alice")).then_some(())
    });

    // Removed through node 2: refused on node 3.
    admin(d, &n2, &["user", "remove", "alice"]);
    eventually("alice is gone on node 3", || {
        let (ok, _, err) = cli_as(d, &n3, "alice", "alice.pw", &["topic", "list"], "");
        (!ok && err.contains("AUTH_FAILED")).then_some(())
    });

    let (ok, status, err) = cluster.node(3).cli(&["status", "--json"]);
    assert!(ok, "{err}");
    assert_no_secrets("cluster status", &status, &[]);
    for word in ["salt", "stored_key", "server_key", "alice"] {
        assert!(!status.contains(word), "cluster status shows {word}");
    }
}
