//! The `ringmq` command line as a user types it: the README quickstart, and
//! clear errors with a non-zero exit for the usual mistakes.

mod common;

use common::{cli, Broker};

#[test]
fn readme_quickstart_works_as_written() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();
    let (st, out, err) = cli(
        &[
            "topic",
            "create",
            "orders",
            "--partitions",
            "8",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(st.success(), "create: {out}{err}");
    let (st, out, err) = cli(
        &[
            "produce",
            "orders",
            "--key-separator",
            ":",
            "--bootstrap",
            &b,
        ],
        "alice:1 book\nbob:2 pens\nalice:3 ink\n",
    );
    assert!(st.success(), "produce: {out}{err}");
    let (st, out, err) = cli(
        &[
            "consume",
            "orders",
            "--from-beginning",
            "--count",
            "3",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(st.success(), "consume: {err}");
    let mut lines: Vec<&str> = out.lines().collect();
    // Same key, same partition, order kept: "1 book" comes before "3 ink".
    let book = lines.iter().position(|l| *l == "1 book").expect(&out);
    let ink = lines.iter().position(|l| *l == "3 ink").expect(&out);
    assert!(book < ink, "{out}");
    lines.sort_unstable();
    assert_eq!(lines, ["1 book", "2 pens", "3 ink"]);

    let (st, out, _) = cli(&["topic", "list", "--bootstrap", &b], "");
    assert!(st.success());
    assert_eq!(out.trim(), "orders partitions=8 replication=1");

    let (st, _, err) = cli(&["topic", "delete", "orders", "--bootstrap", &b], "");
    assert!(st.success(), "{err}");
    let (_, out, _) = cli(&["topic", "list", "--bootstrap", &b], "");
    assert_eq!(out.trim(), "");
}

#[test]
fn mistakes_get_one_clear_sentence_and_a_failing_exit() {
    let broker = Broker::start(&[]);
    let b = broker.bootstrap();

    // No broker at the address.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let (st, _, err) = cli(&["topic", "list", "--bootstrap", &dead], "");
    assert!(!st.success());
    assert!(err.contains(&dead), "names the address: {err}");

    // Unknown topic, for produce and consume.
    let (st, _, err) = cli(&["produce", "nope", "--bootstrap", &b], "x\n");
    assert!(!st.success());
    assert!(err.to_lowercase().contains("nope"), "{err}");
    let (st, _, err) = cli(&["consume", "nope", "--count", "1", "--bootstrap", &b], "");
    assert!(!st.success());
    assert!(err.to_lowercase().contains("nope"), "{err}");

    // Bad flags and bad values.
    let (st, _, _) = cli(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "lots",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(!st.success());
    let (st, _, err) = cli(
        &[
            "topic",
            "create",
            "bad/name",
            "--partitions",
            "1",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(!st.success());
    assert!(
        err.contains("INVALID_TOPIC_NAME") || err.to_lowercase().contains("name"),
        "{err}"
    );
    let (st, _, err) = cli(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "0",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(!st.success(), "{err}");

    // Creating twice is an error that says so.
    let (st, _, _) = cli(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "1",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(st.success());
    let (st, _, err) = cli(
        &[
            "topic",
            "create",
            "t",
            "--partitions",
            "1",
            "--bootstrap",
            &b,
        ],
        "",
    );
    assert!(!st.success());
    assert!(
        err.contains("exists") || err.contains("TOPIC_ALREADY_EXISTS"),
        "{err}"
    );

    // The broker itself refuses a bad flag value with the key's name.
    let (st, _, err) = cli(&["serve", "--flush", "often"], "");
    assert!(!st.success());
    assert!(err.contains("--flush"), "{err}");
}
