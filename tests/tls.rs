//! TLS on the client listener (issue #11, acceptance 2), against real
//! brokers with certificates made here by rcgen: a client trusting the CA
//! produces and consumes; plaintext on the TLS port is closed quickly; an
//! expired certificate and one from a foreign CA are refused by the client;
//! with `tls_client_ca` a client without a certificate, or with a foreign
//! one, is refused; SIGHUP reloads the certificate files.

mod common;

use std::io::Read;
use std::net::TcpStream;
use std::path::Path;
use std::time::{Duration, Instant};

use common::certs::Ca;
use common::probe::cli;
use common::Broker;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `topic list` against `broker` with these TLS flags: (ok, stderr).
fn list(broker: &Broker, tls: &[&str]) -> (bool, String) {
    let b = broker.bootstrap();
    let mut args = vec!["topic", "list", "--bootstrap", &b];
    args.extend_from_slice(tls);
    let (ok, _, err) = cli(&args, "");
    (ok, err)
}

#[test]
fn tls_clients_produce_and_consume_and_everything_else_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ca = Ca::new(d, "test-ca");
    let foreign = Ca::new(d, "foreign-ca");
    let (cert, key) = ca.issue(d, "broker", false);
    let broker = Broker::start(&[
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
        "--tls-handshake-timeout",
        "1s",
    ]);
    let b = broker.bootstrap();
    let tls = ["--tls-ca", s(&ca.path)];

    // Produce and consume through TLS.
    let (ok, _, err) = cli(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "2",
            "--bootstrap",
            &b,
            tls[0],
            tls[1],
        ],
        "",
    );
    assert!(ok, "create over TLS: {err}");
    let (ok, _, err) = cli(
        &["produce", "orders", "--bootstrap", &b, tls[0], tls[1]],
        "one\ntwo\nthree\n",
    );
    assert!(ok, "produce over TLS: {err}");
    let (ok, out, err) = cli(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--count",
            "3",
            "--timeout",
            "10s",
            "--bootstrap",
            &b,
            tls[0],
            tls[1],
        ],
        "",
    );
    assert!(ok, "consume over TLS: {err}");
    let mut got: Vec<&str> = out.lines().collect();
    got.sort();
    assert_eq!(got, ["one", "three", "two"]);

    // A plaintext client is closed quickly, not left hanging.
    let started = Instant::now();
    let (ok, err) = list(&broker, &[]);
    assert!(!ok, "plaintext against the TLS port must fail");
    assert!(started.elapsed() < Duration::from_secs(8), "{err}");
    // A connection that says nothing is closed at the handshake timeout.
    let mut raw = TcpStream::connect(broker.addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = raw.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "a silent connection gets nothing but a close");
    assert!(started.elapsed() < Duration::from_secs(5));

    // The client refuses a certificate from a CA it does not trust.
    let (ok, err) = list(&broker, &["--tls-ca", s(&foreign.path)]);
    assert!(!ok && err.contains("TLS"), "{err}");

    // ... and an expired one from the right CA.
    let (old_cert, old_key) = ca.issue(d, "expired-broker", true);
    let expired = Broker::start(&["--tls-cert", s(&old_cert), "--tls-key", s(&old_key)]);
    let (ok, err) = list(&expired, &tls);
    assert!(!ok && err.to_lowercase().contains("expired"), "{err}");
    drop(expired);

    // Mutual TLS: a certificate from the CA is needed.
    let (client_cert, client_key) = ca.issue(d, "worker-1", false);
    let (stranger_cert, stranger_key) = foreign.issue(d, "stranger", false);
    let mtls = Broker::start(&[
        "--tls-cert",
        s(&cert),
        "--tls-key",
        s(&key),
        "--tls-client-ca",
        s(&ca.path),
    ]);
    let (ok, err) = list(&mtls, &tls);
    assert!(!ok, "no client certificate must be refused: {err}");
    let (ok, err) = list(
        &mtls,
        &[
            tls[0],
            tls[1],
            "--tls-cert",
            s(&stranger_cert),
            "--tls-key",
            s(&stranger_key),
        ],
    );
    assert!(!ok, "a foreign client certificate must be refused: {err}");
    let (ok, err) = list(
        &mtls,
        &[
            tls[0],
            tls[1],
            "--tls-cert",
            s(&client_cert),
            "--tls-key",
            s(&client_key),
        ],
    );
    assert!(ok, "a client certificate from the CA is taken: {err}");
}

#[test]
fn bad_tls_settings_stop_the_broker_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let (status, _, err) = common::cli(
        &[
            "serve",
            "--data-dir",
            s(dir.path()),
            "--tls-key",
            "/nonexistent/k.pem",
        ],
        "",
    );
    assert!(!status.success());
    assert!(
        err.contains("`tls_key`") && err.contains("tls_cert"),
        "{err}"
    );
    let (status, _, err) = common::cli(
        &[
            "serve",
            "--data-dir",
            s(dir.path()),
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            "/nonexistent/c.pem",
            "--tls-key",
            "/nonexistent/k.pem",
        ],
        "",
    );
    assert!(!status.success());
    assert!(err.contains("/nonexistent/c.pem"), "{err}");
}

/// SIGHUP reloads the certificate files: new connections get the new
/// certificate; a reload of bad files is logged and the old ones stay.
#[test]
fn sighup_reloads_the_certificate_and_a_bad_reload_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (old_ca, new_ca) = (Ca::new(d, "old-ca"), Ca::new(d, "new-ca"));
    let (cert, key) = old_ca.issue(d, "broker", false);
    let broker = Broker::start(&["--tls-cert", s(&cert), "--tls-key", s(&key)]);
    let hup = |want: &str, times: usize| {
        // kill(2) of exactly the PID this test started.
        assert_eq!(unsafe { libc::kill(broker.pid() as i32, libc::SIGHUP) }, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        while broker.logs().matches(want).count() < times {
            assert!(Instant::now() < deadline, "no {want:?}:\n{}", broker.logs());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    assert!(list(&broker, &["--tls-ca", s(&old_ca.path)]).0);

    // The same paths now hold a certificate of another CA.
    let (c2, k2) = new_ca.issue(d, "broker-next", false);
    std::fs::copy(&c2, &cert).unwrap();
    std::fs::copy(&k2, &key).unwrap();
    hup("TLS certificates reloaded", 1);
    let (ok, err) = list(&broker, &["--tls-ca", s(&new_ca.path)]);
    assert!(ok, "the new certificate after SIGHUP: {err}");
    let (ok, _) = list(&broker, &["--tls-ca", s(&old_ca.path)]);
    assert!(!ok, "the old certificate still served after SIGHUP");

    // Garbage in the files: logged, and the last good ones stay in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    hup("TLS reload failed", 1);
    let (ok, err) = list(&broker, &["--tls-ca", s(&new_ca.path)]);
    assert!(ok, "a failed reload took TLS down: {err}");
}
