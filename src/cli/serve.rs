//! `ringmq serve`: flags over defaults, then run the broker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::config::{self, Config};
use crate::log::FlushPolicy;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address for clients (port 0 picks a free one and logs it).
    #[arg(long, default_value_t = SocketAddr::from(([127, 0, 0, 1], config::DEFAULT_PORT)))]
    listen: SocketAddr,
    /// Where partitions and the topic catalogue are kept.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// Executors to run, one per core [default: all cores].
    #[arg(long)]
    cores: Option<usize>,
    /// `every-batch` (acknowledged means on disk) or an interval such as `100ms`.
    #[arg(long, default_value = "100ms", value_parser = config::parse_flush)]
    flush: FlushPolicy,
    /// Size of one segment file, e.g. 256MiB.
    #[arg(long, value_parser = config::parse_size)]
    segment_bytes: Option<u64>,
    /// Delete old segments once a partition is larger than this, e.g. 10GiB.
    #[arg(long, value_parser = config::parse_size)]
    retention_bytes: Option<u64>,
    /// Delete segments older than this, e.g. 7days.
    #[arg(long, value_parser = config::parse_duration)]
    retention: Option<Duration>,
    /// Bytes of requests and responses one core may buffer before it stops reading sockets.
    #[arg(long, value_parser = config::parse_size)]
    shard_memory_budget: Option<u64>,
    /// Requests one connection may have in flight.
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// How long a SIGTERM may wait for clients before the broker closes anyway.
    #[arg(long, value_parser = config::parse_duration)]
    shutdown_timeout: Option<Duration>,
}

impl ServeArgs {
    fn into_config(self) -> Config {
        let mut c = Config {
            listen: self.listen,
            data_dir: self.data_dir,
            ..Config::default()
        };
        c.log.flush = self.flush;
        if let Some(n) = self.cores {
            c.cores = n;
        }
        if let Some(b) = self.segment_bytes {
            c.log.segment_bytes = b;
        }
        if let Some(b) = self.retention_bytes {
            c.log.retention_bytes = Some(b);
        }
        if let Some(d) = self.retention {
            c.log.retention_ms = Some(d.as_millis() as u64);
        }
        if let Some(b) = self.shard_memory_budget {
            c.shard_memory_budget = b;
        }
        if let Some(n) = self.max_in_flight {
            c.max_in_flight_per_connection = n;
        }
        if let Some(d) = self.shutdown_timeout {
            c.shutdown_timeout = d;
        }
        c
    }
}

pub fn run(args: ServeArgs) -> Result<(), Box<dyn std::error::Error>> {
    crate::server::serve(args.into_config())?;
    Ok(())
}
