//! A consumer group outlives its coordinator node (issues #8 and #10): the
//! group's state lives in an `__offsets` partition copied to three nodes,
//! so when the node leading it dies another copy takes over with every
//! acknowledged commit, and committed offsets never go back. Three real
//! `ringmq serve` processes on loopback, one core each.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::cluster::TestCluster;
use common::probe::create_topic;
use ringmq::cluster::admin::ClusterStatus;
use ringmq::group::store::partition_of;

const WAIT: Duration = Duration::from_secs(60);
const FLAGS: &[&str] = common::probe::FAST_FAILURE;
const TOPIC: &str = "jobs";
const GROUP: &str = "billing";

fn cli(args: &[&str], stdin: &str) -> (bool, String, String) {
    let (status, out, err) = common::cli(args, stdin);
    (status.success(), out, err)
}

fn numbers(range: std::ops::Range<u32>) -> String {
    range.map(|i| format!("{i}\n")).collect()
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Every member alive, and every `__offsets` partition led with three
/// copies in sync.
fn settled(s: &ClusterStatus) -> bool {
    s.leader.is_some()
        && s.nodes.iter().filter(|n| n.member).count() == 3
        && s.nodes
            .iter()
            .filter(|n| n.member)
            .all(|n| n.alive == Some(true))
        && s.coordinators.len() == 8
        && s.coordinators
            .iter()
            .all(|c| c.leader.is_some() && c.isr.len() == 3)
}

/// The group's committed offset per partition of [`TOPIC`], as `ringmq
/// group describe` through `addr` prints them; `None` while it fails.
fn committed(addr: SocketAddr) -> Option<BTreeMap<u32, u64>> {
    let (ok, out, _) = cli(
        &["group", "describe", GROUP, "--bootstrap", &addr.to_string()],
        "",
    );
    if !ok {
        return None;
    }
    // `jobs/P  HOLDER  COMMITTED  END  LAG`
    Some(
        out.lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                let p = cols.first()?.strip_prefix("jobs/")?.parse().ok()?;
                Some((p, cols.get(2)?.parse().ok()?))
            })
            .collect(),
    )
}

fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `consume --group` through `bootstrap`: the numbers it printed.
fn consume(bootstrap: &str, extra: &[&str]) -> Vec<u32> {
    let mut args = vec![
        "consume",
        TOPIC,
        "--group",
        GROUP,
        "--from-beginning",
        "--bootstrap",
        bootstrap,
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = cli(&args, "");
    assert!(ok, "group consume: {err}");
    out.lines().map(|l| l.parse().expect("a number")).collect()
}

#[test]
fn committed_offsets_survive_the_coordinators_death_and_come_back_with_it() {
    let mut cluster = TestCluster::start(3, FLAGS);
    let statuses = cluster.wait_until("__offsets placed with three copies in sync", WAIT, settled);
    let p = partition_of(GROUP) as usize;
    let placed = statuses[0].coordinators[p].clone();
    let coordinator = placed.leader.expect("a coordinator");
    assert_eq!(placed.replicas.len(), 3, "{placed:?}");
    assert_eq!(
        placed.replicas[0], coordinator,
        "the preferred leader leads"
    );
    let all: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.client).collect();
    let survivors: Vec<SocketAddr> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != coordinator)
        .map(|n| n.client)
        .collect();

    create_topic(&list(&all), TOPIC, 6, Some(3));
    let (ok, _, err) = cli(
        &[
            "produce",
            TOPIC,
            "--acks",
            "all",
            "--bootstrap",
            &list(&all),
        ],
        &numbers(0..600),
    );
    assert!(ok, "produce: {err}");

    // Half of it read and committed (on exit) by a member of the group.
    let first = consume(&list(&all), &["--count", "300", "--timeout", "10s"]);
    assert_eq!(first.len(), 300, "{first:?}");
    let before = committed(survivors[0]).expect("describe");
    assert_eq!(before.values().sum::<u64>(), 300, "{before:?}");

    // The coordinator dies; a survivor takes its groups over, with the
    // offsets.
    cluster.node_mut(coordinator).kill();
    let t0 = Instant::now();
    let took_over = cluster.wait_on(
        &cluster
            .nodes
            .iter()
            .filter(|n| n.id != coordinator)
            .map(|n| n.id)
            .collect::<Vec<_>>(),
        "another coordinator",
        WAIT,
        |s| {
            s.coordinators
                .get(p)
                .is_some_and(|c| c.leader.is_some_and(|l| l != coordinator))
        },
    );
    let successor = took_over[0].coordinators[p].leader;
    let after = eventually("the offsets described through a survivor", || {
        committed(survivors[1]).filter(|c| !c.is_empty())
    });
    println!(
        "node {coordinator} killed; node {successor:?} coordinates after {:?}",
        t0.elapsed()
    );
    assert_eq!(after, before, "committed offsets after the failover");

    // A new member resumes at the committed offsets: nothing read before
    // is delivered again, nothing after is lost.
    let second = consume(&list(&survivors), &["--timeout", "5s"]);
    let mut both: Vec<u32> = first.iter().chain(&second).copied().collect();
    both.sort_unstable();
    assert_eq!(
        both,
        (0..600).collect::<Vec<_>>(),
        "first {} + second {} messages",
        first.len(),
        second.len()
    );
    let done = eventually("the second member's commit", || {
        committed(survivors[0]).filter(|c| c.values().sum::<u64>() == 600)
    });

    // Back: the node catches up, takes its coordination back, and the
    // offsets are those the survivors committed.
    cluster.node_mut(coordinator).restart();
    cluster.wait_until("the preferred coordinator back", WAIT, |s| {
        settled(s) && s.coordinators[p].leader == Some(coordinator)
    });
    let back = eventually("the offsets described through the returned node", || {
        committed(cluster.node(coordinator).client).filter(|c| !c.is_empty())
    });
    assert_eq!(
        back, done,
        "committed offsets after the coordinator returned"
    );
    // And the group goes on from there: nothing is left to read.
    let third = consume(&list(&all), &["--timeout", "3s"]);
    assert!(third.is_empty(), "delivered again: {third:?}");
}
