//! `ringmq produce TOPIC`: one message per stdin line.

use std::error::Error;
use std::io::Read;
use std::time::Duration;

use clap::Args;
use ringmq_client::{Acks, ClientError, Producer, ProducerConfig};

use super::connect::{block_on, describe, BootstrapArgs};

#[derive(Debug, Args)]
pub struct ProduceArgs {
    /// Topic to send to.
    topic: String,
    /// Split each line at the first occurrence of this character: the text
    /// before it is the message key, the rest the value. A line without it
    /// is sent without a key.
    #[arg(long, value_name = "C")]
    key_separator: Option<char>,
    /// When the broker acknowledges: 0 (never: fire and forget), 1 (once
    /// the leader appended), all (once every in-sync replica has it).
    /// Messages not acknowledged are counted, and make the exit status
    /// non-zero.
    #[arg(long, default_value = "1", value_parser = parse_acks)]
    acks: Acks,
    /// Send without a producer id and sequence numbers: a retry after a
    /// lost answer may then store a message twice, but several batches per
    /// partition may be in flight. (Idempotence needs acks 1 or all; with
    /// acks 0 it is always off.)
    #[arg(long)]
    no_idempotence: bool,
    /// Send every message to this partition instead of choosing by key
    /// (xxh3 of the key) or round-robin (no key).
    #[arg(long, value_name = "P")]
    partition: Option<u32>,
    /// How long a batch waits for more lines before it is sent.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    linger: Duration,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

fn parse_acks(s: &str) -> Result<Acks, String> {
    match s {
        "0" => Ok(Acks::None),
        "1" => Ok(Acks::Leader),
        "all" | "-1" => Ok(Acks::All),
        _ => Err("expected 0, 1 or all".into()),
    }
}

pub fn run(args: ProduceArgs) -> Result<(), Box<dyn Error>> {
    block_on(produce(args))?
}

async fn produce(args: ProduceArgs) -> Result<(), Box<dyn Error>> {
    let client = args.bootstrap.connect().await?;
    let config = ProducerConfig {
        acks: args.acks,
        linger: args.linger,
        idempotent: !args.no_idempotence,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(&client, &args.topic, config)
        .await
        .map_err(|e| describe(&e, &args.topic))?;
    if let Some(p) = args.partition.filter(|p| *p >= producer.partitions()) {
        return Err(format!(
            "topic {} has no partition {p} (it has {})",
            args.topic,
            producer.partitions()
        )
        .into());
    }

    let mut lines = StdinLines::default();
    let mut sent = 0u64;
    let mut refused = 0u64;
    let mut first_refusal: Option<ClientError> = None;
    while let Some(chunk) = lines.next_chunk().await? {
        for line in chunk.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let (key, value) = split_key(line, args.key_separator);
            let r = match args.partition {
                Some(p) => producer.send_to(p, key, value).await,
                None => producer.send(key, value).await,
            };
            sent += 1;
            // The delivery is counted in the producer's stats; no need to
            // keep a future per line.
            if let Err(e) = r.map(drop) {
                refused += 1;
                first_refusal.get_or_insert(e);
            }
        }
    }
    // Fails only with acks=0, when a connection broke before every message
    // queued on it was written.
    let flushed = producer.flush().await;
    let stats = producer.stats();
    let failed = stats.failed + refused;
    if let Err(e) = flushed {
        return Err(format!(
            "{failed} of {sent} messages could not be sent, and with acks=0 some of the \
             others may not have been written either: {}",
            describe(&e, &args.topic)
        )
        .into());
    }
    if failed > 0 {
        let why = first_refusal
            .or(stats.last_error)
            .map_or_else(String::new, |e| format!(": {}", describe(&e, &args.topic)));
        let acked = match args.acks {
            Acks::None => "sent",
            Acks::Leader | Acks::All => "acknowledged",
        };
        return Err(format!("{failed} of {sent} messages were not {acked}{why}").into());
    }
    Ok(())
}

/// `(key, value)` of a line: split at the first `sep`, if given and present.
fn split_key(line: &[u8], sep: Option<char>) -> (Option<&[u8]>, &[u8]) {
    let Some(sep) = sep else {
        return (None, line);
    };
    let mut buf = [0u8; 4];
    let sep = sep.encode_utf8(&mut buf).as_bytes();
    match line.windows(sep.len()).position(|w| w == sep) {
        Some(i) => (Some(&line[..i]), &line[i + sep.len()..]),
        None => (None, line),
    }
}

/// Stdin read in chunks of whole lines on the executor's blocking thread,
/// so the producer's timers and sockets keep running while a terminal
/// waits for the next line.
#[derive(Default)]
struct StdinLines {
    /// Bytes read after the last newline, carried into the next chunk.
    partial: Vec<u8>,
    eof: bool,
}

impl StdinLines {
    /// The next run of whole lines, without its last newline; at end of
    /// input, a last line without newline. `None` when stdin is done.
    async fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        loop {
            if self.eof {
                if self.partial.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.partial)));
            }
            let (buf, n) = glommio::executor()
                .spawn_blocking(|| {
                    let mut buf = vec![0u8; 64 << 10];
                    let n = std::io::stdin().lock().read(&mut buf);
                    (buf, n)
                })
                .await;
            let n = n?;
            if n == 0 {
                self.eof = true;
                continue;
            }
            self.partial.extend_from_slice(&buf[..n]);
            if let Some(last_nl) = self.partial.iter().rposition(|b| *b == b'\n') {
                let rest = self.partial.split_off(last_nl + 1);
                let mut chunk = std::mem::replace(&mut self.partial, rest);
                chunk.pop(); // the last newline
                return Ok(Some(chunk));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(
            split_key(b"k:v:w", Some(':')),
            (Some(&b"k"[..]), &b"v:w"[..])
        );
        assert_eq!(split_key(b"kv", Some(':')), (None, &b"kv"[..]));
        assert_eq!(split_key(b"k:v", None), (None, &b"k:v"[..]));
        assert_eq!(split_key(b":v", Some(':')), (Some(&b""[..]), &b"v"[..]));
        assert_eq!(
            split_key("é→x".as_bytes(), Some('→')),
            (Some("é".as_bytes()), &b"x"[..])
        );
    }

    #[test]
    fn acks() {
        assert_eq!(parse_acks("all"), Ok(Acks::All));
        assert_eq!(parse_acks("0"), Ok(Acks::None));
        assert!(parse_acks("2").is_err());
    }
}
