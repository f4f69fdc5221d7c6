//! The broker's configuration: one validated `Config`, built from command-line
//! flags over built-in defaults. Every value is checked here, at start, so the
//! rest of the broker never sees an invalid setting.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::log::{FlushPolicy, LogConfig};

/// Port the broker listens on when none is given.
pub const DEFAULT_PORT: u16 = 9292;

/// A setting that cannot be used, named so the operator can fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value {value:?} for `{key}`: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
}

fn invalid(key: &'static str, value: impl ToString, reason: impl ToString) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// Everything a running broker needs to know.
#[derive(Debug, Clone)]
pub struct Config {
    /// Client listener; port 0 picks a free port (logged at start).
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Executors (one per core).
    pub cores: usize,
    pub log: LogConfig,
    /// Requests a connection may have in flight before its socket stops being read.
    pub max_in_flight_per_connection: usize,
    /// Bytes of request and response data a shard may hold; past it, sockets stop being read.
    pub shard_memory_budget: u64,
    /// Connections a shard accepts; more are closed at once.
    pub max_connections_per_shard: usize,
    /// How long SIGTERM may take before the broker gives up waiting on clients.
    pub shutdown_timeout: Duration,
    /// io_uring registered buffer memory per executor.
    pub io_memory: usize,
    /// How often each shard applies retention to its partitions.
    pub retention_check_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_PORT)),
            data_dir: PathBuf::from("./data"),
            cores: available_cores(),
            log: LogConfig::default(),
            max_in_flight_per_connection: 1024,
            shard_memory_budget: 256 << 20,
            max_connections_per_shard: 10_000,
            shutdown_timeout: Duration::from_secs(10),
            io_memory: 1 << 20,
            retention_check_interval: Duration::from_secs(60),
        }
    }
}

/// Cores this process may run on.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

impl Config {
    /// Checks the cross-field rules that single parsers cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let cores = available_cores();
        if self.cores == 0 || self.cores > cores {
            return Err(invalid(
                "cores",
                self.cores,
                format!("must be between 1 and the {cores} cores this machine has"),
            ));
        }
        if self.log.segment_bytes < (1 << 20) {
            return Err(invalid(
                "segment_bytes",
                self.log.segment_bytes,
                "must be at least 1MiB",
            ));
        }
        if self.log.segment_bytes > u64::from(u32::MAX) {
            return Err(invalid(
                "segment_bytes",
                self.log.segment_bytes,
                "must be below 4GiB",
            ));
        }
        if self.max_in_flight_per_connection == 0 {
            return Err(invalid(
                "max_in_flight_per_connection",
                0,
                "must be at least 1",
            ));
        }
        let min_budget = 4 * ringmq_protocol::limits::MAX_REQUEST_FRAME as u64;
        if self.shard_memory_budget < min_budget {
            return Err(invalid(
                "shard_memory_budget",
                self.shard_memory_budget,
                format!("must be at least {min_budget} bytes (four maximal requests)"),
            ));
        }
        Ok(())
    }
}

/// Parses `every-batch` or a duration such as `100ms`, `1s`.
pub fn parse_flush(s: &str) -> Result<FlushPolicy, String> {
    if s == "every-batch" {
        return Ok(FlushPolicy::EveryBatch);
    }
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("an interval of 0 means every batch: say `every-batch`".into());
    }
    Ok(FlushPolicy::Interval(d))
}

/// Parses a human-readable duration: `250ms`, `30s`, `10min`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 250ms, 30s, 10min)"))
}

/// Parses a human-readable size: `64MiB`, `1GiB`, `4096`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>()
        .map(|b| b.as_u64())
        .map_err(|e| format!("{e} (examples: 4096, 64MiB, 1GiB)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flush_policies() {
        assert!(matches!(
            parse_flush("every-batch"),
            Ok(FlushPolicy::EveryBatch)
        ));
        assert!(
            matches!(parse_flush("50ms"), Ok(FlushPolicy::Interval(d)) if d == Duration::from_millis(50))
        );
        assert!(parse_flush("0s").is_err());
        assert!(parse_flush("often").is_err());
    }

    #[test]
    fn parses_sizes() {
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
    }

    #[test]
    fn default_is_valid() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn names_the_bad_key() {
        let c = Config {
            cores: 0,
            ..Config::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(msg.contains("`cores`"), "{msg}");
    }
}
