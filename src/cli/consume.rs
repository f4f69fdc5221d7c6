//! `ringmq consume TOPIC`: message values to stdout, one per line.

use std::error::Error;
use std::io::Write;
use std::time::{Duration, Instant};

use clap::Args;
use ringmq_client::{Consumer, ConsumerConfig, StartOffset};

use super::connect::{block_on, describe, BootstrapArgs};

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
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// Start at this offset (of the partition given with --partition).
    #[arg(long, value_name = "O", requires = "partition")]
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
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

pub fn run(args: ConsumeArgs) -> Result<(), Box<dyn Error>> {
    block_on(consume(args))?
}

async fn consume(args: ConsumeArgs) -> Result<(), Box<dyn Error>> {
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
    let sep = args.key_separator.encode_utf8(&mut sep).as_bytes();
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
            let written = (|| {
                if args.print_key {
                    out.write_all(r.key.as_deref().unwrap_or_default())?;
                    out.write_all(sep)?;
                }
                out.write_all(r.value.as_deref().unwrap_or_default())?;
                out.write_all(b"\n")
            })();
            if let Err(e) = written {
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

/// A reader that went away (`| head`) ends the command quietly.
fn stdout_closed(e: std::io::Error) -> Result<(), Box<dyn Error>> {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(format!("cannot write to stdout: {e}").into())
    }
}
