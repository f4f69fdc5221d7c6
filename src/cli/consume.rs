//! `ringmq consume TOPIC`: message values to stdout, one per line; with
//! `--group`, as a member of a consumer group that commits what it printed.
//!
//! Group events go to stderr as one line each, in formats scripts (and the
//! end-to-end tests) parse; see [`event_line`].

use std::error::Error;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use ringmq_client::{
    ConsumedRecord, Consumer, ConsumerConfig, GroupConfig, GroupConsumer, GroupEvent, OffsetReset,
    StartOffset, TopicPartition,
};

use super::connect::{block_on, describe, describe_member_error, BootstrapArgs};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    /// Topic to read.
    topic: String,
    /// Start at the first message still stored, not at new ones.
    #[arg(long, conflicts_with = "offset")]
    from_beginning: bool,
    /// Stop after this many messages.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Read only this partition [default: all].
    #[arg(long, value_name = "P", conflicts_with = "group")]
    partition: Option<u32>,
    /// Start at this offset (of the partition given with --partition).
    #[arg(
        long,
        value_name = "O",
        requires = "partition",
        conflicts_with = "group"
    )]
    offset: Option<u64>,
    /// Stop when no message arrived for this long, e.g. 5s.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    timeout: Option<Duration>,
    /// Print `KEY<separator>VALUE` instead of the value alone.
    #[arg(long)]
    print_key: bool,
    /// Between key and value with --print-key.
    #[arg(long, value_name = "C", default_value_t = '\t')]
    key_separator: char,
    /// Consume as a member of this consumer group: share the topic's
    /// partitions with the group's other members, start at the group's
    /// committed offsets (else as --from-beginning says), commit what was
    /// printed. SIGINT/SIGTERM commit, leave the group and exit 0; a second
    /// one exits at once (130/143) without committing.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Static membership: a restart with the same id within the session
    /// timeout takes back the same partitions without a rebalance.
    #[arg(long, value_name = "ID", requires = "group")]
    instance_id: Option<String>,
    /// The group removes this member when it is silent for this long.
    #[arg(long, value_name = "DURATION", requires = "group", default_value = "10s",
          value_parser = humantime::parse_duration)]
    session_timeout: Duration,
    /// Commit what was printed this often (and on exit).
    #[arg(long, value_name = "DURATION", requires = "group", default_value = "1s",
          value_parser = humantime::parse_duration)]
    commit_interval: Duration,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

pub fn run(args: ConsumeArgs) -> Result<(), Box<dyn Error>> {
    block_on(consume(args))?
}

async fn consume(args: ConsumeArgs) -> Result<(), Box<dyn Error>> {
    if let Some(group) = args.group.clone() {
        return consume_group(args, group).await;
    }
    let client = args.bootstrap.connect().await?;
    let start = match (args.offset, args.from_beginning) {
        (Some(o), _) => StartOffset::At(o),
        (None, true) => StartOffset::Earliest,
        (None, false) => StartOffset::Latest,
    };
    let mut config = ConsumerConfig::default();
    if let Some(t) = args.timeout {
        // Come back often enough to notice the timeout on time.
        config.max_wait = config.max_wait.min(t.max(Duration::from_millis(1)));
    }
    let partitions = args.partition.map(|p| [p]);
    let mut consumer = Consumer::new(
        &client,
        &args.topic,
        partitions.as_ref().map(|p| &p[..]),
        start,
        config,
    )
    .await
    .map_err(|e| describe(&e, &args.topic))?;

    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut got = 0u64;
    let mut last_arrival = Instant::now();
    let mut sep = [0u8; 4];
    let sep = &*args.key_separator.encode_utf8(&mut sep);
    loop {
        if args.count.is_some_and(|n| got >= n) {
            break;
        }
        let records = consumer
            .poll()
            .await
            .map_err(|e| describe(&e, &args.topic))?;
        if records.is_empty() {
            if let Some(t) = args.timeout.filter(|t| last_arrival.elapsed() >= *t) {
                if let Some(n) = args.count {
                    return Err(format!(
                        "only {got} of {n} messages arrived before {} passed without one",
                        humantime::format_duration(t)
                    )
                    .into());
                }
                break;
            }
            continue;
        }
        last_arrival = Instant::now();
        for r in records {
            if args.count.is_some_and(|n| got >= n) {
                break;
            }
            if let Err(e) = write_record(&mut out, &r, args.print_key, sep) {
                return stdout_closed(e);
            }
            got += 1;
        }
        // Lines reach a pipe or a terminal as they arrive, not at exit.
        if let Err(e) = out.flush() {
            return stdout_closed(e);
        }
    }
    out.flush().or_else(stdout_closed)
}

fn write_record(
    out: &mut impl Write,
    r: &ConsumedRecord,
    print_key: bool,
    sep: &str,
) -> std::io::Result<()> {
    if print_key {
        out.write_all(r.key.as_deref().unwrap_or_default())?;
        out.write_all(sep.as_bytes())?;
    }
    out.write_all(r.value.as_deref().unwrap_or_default())?;
    out.write_all(b"\n")
}

/// `consume --group`: like the plain loop, but a record counts as processed
/// (and may be committed) only once it was flushed to stdout, and every way
/// out (a signal, --count, --timeout, a closed stdout) commits and leaves
/// the group first.
async fn consume_group(args: ConsumeArgs, group: String) -> Result<(), Box<dyn Error>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal exits at once, without committing, with the
        // status a shell gives a process killed by it (128 + the signal).
        signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, stop.clone())
            .and_then(|_| signal_hook::flag::register(sig, stop.clone()))
            .map_err(|e| format!("cannot handle signal {sig}: {e}"))?;
    }
    let client = args.bootstrap.connect().await?;
    let mut config = GroupConfig::new(&group, &[args.topic.as_str()]);
    config.instance_id = args.instance_id.clone();
    config.session_timeout = args.session_timeout;
    config.auto_commit_interval = Some(args.commit_interval);
    config.auto_offset_reset = if args.from_beginning {
        OffsetReset::Earliest
    } else {
        OffsetReset::Latest
    };
    // Come back often enough to notice a signal or the timeout on time.
    config.fetch.max_wait = Duration::from_millis(200);
    if let Some(t) = args.timeout {
        config.fetch.max_wait = config.fetch.max_wait.min(t.max(Duration::from_millis(1)));
    }
    let instance_id = args.instance_id.as_deref();
    let describe_err =
        |e: &ringmq_client::ClientError| describe_member_error(e, &group, instance_id, &args.topic);
    let mut consumer = GroupConsumer::join(&client, config)
        .await
        .map_err(|e| describe_err(&e))?;
    print_events(&mut consumer);

    let mut out = std::io::BufWriter::with_capacity(64 << 10, std::io::stdout().lock());
    let mut got = 0u64;
    let mut last_arrival = Instant::now();
    let mut sep = [0u8; 4];
    let sep = &*args.key_separator.encode_utf8(&mut sep);
    let mut shortfall = None;
    let mut printed = Vec::new();
    let outcome: Result<(), Box<dyn Error>> = loop {
        if stop.load(Ordering::Relaxed) || args.count.is_some_and(|n| got >= n) {
            break Ok(());
        }
        let polled = consumer.poll().await;
        print_events(&mut consumer);
        let records = match polled {
            Ok(r) => r,
            // Replaced by another process: the error says it, and nothing
            // more is printed (close neither commits nor leaves).
            Err(e) => break Err(describe_err(&e).into()),
        };
        if records.is_empty() {
            if let Some(t) = args.timeout.filter(|t| last_arrival.elapsed() >= *t) {
                if let Some(n) = args.count {
                    shortfall = Some(format!(
                        "only {got} of {n} messages arrived before {} passed without one",
                        humantime::format_duration(t)
                    ));
                }
                break Ok(());
            }
            continue;
        }
        last_arrival = Instant::now();
        printed.clear();
        let mut written = Ok(());
        for r in records {
            if args.count.is_some_and(|n| got >= n) {
                break;
            }
            written = write_record(&mut out, &r, args.print_key, sep);
            if written.is_err() {
                break;
            }
            got += 1;
            printed.push(r);
        }
        // Printed means flushed: only then may a commit cover the records.
        if let Err(e) = written.and_then(|()| out.flush()) {
            break stdout_closed(e);
        }
        for r in &printed {
            consumer.mark_processed(r);
        }
    };
    let closed = consumer.close().await;
    print_events(&mut consumer);
    outcome?;
    closed.map_err(|e| describe_err(&e))?;
    match shortfall {
        Some(s) => Err(s.into()),
        None => Ok(()),
    }
}

fn print_events(consumer: &mut GroupConsumer) {
    let group = consumer.group().to_owned();
    for e in consumer.take_events() {
        // Being replaced ends the command with an error that says so in
        // one sentence; an event line first would only repeat it.
        if !matches!(e, GroupEvent::Replaced { .. }) {
            eprintln!("{}", event_line(&group, &e));
        }
    }
}

/// The stderr line of a group event. Stable formats, parsed by scripts:
///
/// - `group G: member M generation N holds T/P T/P…` (`holds nothing`
///   when empty), on joining; after a reassignment followed by
///   ` (added T/P…; removed T/P…)` (`-` for none; never both: a new
///   generation that moves nothing of this member's has no line).
/// - `group G: commit rejected: CODE (message)`
/// - `group G: member M fenced: CODE (message); rejoining`
/// - `group G: member M replaced by another consumer with instance id I;
///   stopping` (not printed by `consume`, whose error says it)
/// - `group G: offset O of T/P is out of range [E, L]; going on at X`
/// - `group G: member M left`
pub fn event_line(group: &str, e: &GroupEvent) -> String {
    fn list(parts: &[TopicPartition], empty: &str) -> String {
        if parts.is_empty() {
            return empty.to_owned();
        }
        parts
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    }
    match e {
        GroupEvent::Joined {
            member_id,
            generation,
            partitions,
        } => format!(
            "group {group}: member {member_id} generation {generation} holds {}",
            list(partitions, "nothing")
        ),
        GroupEvent::AssignmentChanged {
            member_id,
            generation,
            added,
            removed,
            partitions,
        } => format!(
            "group {group}: member {member_id} generation {generation} holds {} (added {}; removed {})",
            list(partitions, "nothing"),
            list(added, "-"),
            list(removed, "-")
        ),
        GroupEvent::CommitRejected { code, message } => {
            format!("group {group}: commit rejected: {code} ({message})")
        }
        GroupEvent::Fenced {
            member_id,
            code,
            message,
        } => format!("group {group}: member {member_id} fenced: {code} ({message}); rejoining"),
        GroupEvent::Replaced {
            member_id,
            instance_id,
            ..
        } => format!(
            "group {group}: member {member_id} replaced by another consumer with instance id \
             {instance_id}; stopping"
        ),
        GroupEvent::OutOfRange {
            partition,
            offset,
            earliest,
            latest,
            position,
        } => format!(
            "group {group}: offset {offset} of {partition} is out of range \
             [{earliest}, {latest}]; going on at {position}"
        ),
        GroupEvent::Left { member_id } => format!("group {group}: member {member_id} left"),
    }
}

/// A reader that went away (`| head`) ends the command quietly.
fn stdout_closed(e: std::io::Error) -> Result<(), Box<dyn Error>> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("cannot write to stdout: {e}").into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::ErrorCode;

    fn parse(args: &[&str]) -> Result<ConsumeArgs, clap::Error> {
        use clap::Parser;
        let argv = ["ringmq", "consume"]
            .into_iter()
            .chain(args.iter().copied());
        match crate::cli::Cli::try_parse_from(argv)?.command {
            crate::cli::Command::Consume(a) => Ok(a),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn group_flags() {
        let a = parse(&[
            "t",
            "--group",
            "g",
            "--session-timeout",
            "3s",
            "--from-beginning",
        ])
        .unwrap();
        assert_eq!(a.group.as_deref(), Some("g"));
        assert_eq!(a.session_timeout, Duration::from_secs(3));
        assert_eq!(a.commit_interval, Duration::from_secs(1));
        assert!(a.from_beginning && a.instance_id.is_none());
        assert!(parse(&["t", "--group", "g", "--partition", "1"]).is_err());
        assert!(parse(&["t", "--group", "g", "--partition", "1", "--offset", "3"]).is_err());
        assert!(parse(&["t", "--instance-id", "w1"]).is_err());
        assert!(parse(&["t", "--commit-interval", "5s"]).is_err());
        // The plain consumer is unchanged.
        let a = parse(&["t", "--partition", "1", "--offset", "3", "--print-key"]).unwrap();
        assert!(a.group.is_none() && a.print_key);
    }

    #[test]
    fn event_lines() {
        let tp = |p| TopicPartition::new("tasks", p);
        let joined = GroupEvent::Joined {
            member_id: "m-1".into(),
            generation: 3,
            partitions: vec![tp(0), tp(3)],
        };
        assert_eq!(
            event_line("g", &joined),
            "group g: member m-1 generation 3 holds tasks/0 tasks/3"
        );
        let changed = GroupEvent::AssignmentChanged {
            member_id: "m-1".into(),
            generation: 4,
            added: vec![],
            removed: vec![tp(3)],
            partitions: vec![tp(0)],
        };
        assert_eq!(
            event_line("g", &changed),
            "group g: member m-1 generation 4 holds tasks/0 (added -; removed tasks/3)"
        );
        let rejected = GroupEvent::CommitRejected {
            code: ErrorCode::UnknownMember,
            message: "no member m-1".into(),
        };
        assert_eq!(
            event_line("g", &rejected),
            "group g: commit rejected: UNKNOWN_MEMBER (no member m-1)"
        );
        let fenced = GroupEvent::Fenced {
            member_id: "m-1".into(),
            code: ErrorCode::UnknownMember,
            message: "no member m-1".into(),
        };
        assert_eq!(
            event_line("g", &fenced),
            "group g: member m-1 fenced: UNKNOWN_MEMBER (no member m-1); rejoining"
        );
        let reset = GroupEvent::OutOfRange {
            partition: tp(2),
            offset: 5075,
            earliest: 0,
            latest: 3,
            position: 0,
        };
        assert_eq!(
            event_line("g", &reset),
            "group g: offset 5075 of tasks/2 is out of range [0, 3]; going on at 0"
        );
    }
}
