//! The partition log: append-only, memory-mapped segment files.
//!
//! A partition directory holds segments named by the offset of their first
//! batch (`00000000000000000000.log` and its sparse `.index`). Batches are
//! stored exactly as received, with `base_offset` and `leader_epoch` stamped
//! in (outside the CRC). Modules:
//!
//! - [`config`]: `LogConfig`, `FlushPolicy`.
//! - [`error`]: `LogError`, mapped by callers to protocol error codes.
//! - `partition`: [`PartitionLog`], the API the broker calls.
//! - `segment`: one data file (preallocation, mapping, append, reads); the
//!   only place a glommio file handle appears.
//! - `index`: the sparse offset index and its file format.
//! - `scan`: walking chains of batches in a buffer (reads, recovery).
//! - `recovery`: what `open` does to a directory a crash left behind.
//! - `replica`: `append_replica`, a follower storing the leader's batches
//!   as they are.
//! - `epochs`: the leader-epoch cache (epoch → start offset) followers use
//!   to find where their log and a new leader's agree.
//! - `producers`: idempotent producers' last batches, to answer retries
//!   with the original offsets.
//! - `state`: loading, checking and rebuilding those two from their files
//!   and the batch headers.
//! - `retention`: which old segments go.
//! - `flush`: group commit and the interval flusher.
//! - `disk`: blocking file-system helpers, run on the blocking pool.
//! - [`read_budget`]: the bound on memory held by reads of sealed segments.

pub mod config;
mod disk;
mod epochs;
pub mod error;
mod flush;
mod index;
mod partition;
mod producers;
pub mod read_budget;
mod recovery;
mod replica;
mod retention;
mod scan;
mod segment;
mod state;
#[cfg(test)]
mod tests;

pub use config::{FlushPolicy, LogConfig};
pub use epochs::EpochEntry;
pub use error::{BatchLocation, LogError};
pub use partition::{Appended, PartitionLog};
pub use producers::{ProducerLimits, ProducerSummary};
pub use read_budget::ReadBudget;

/// Name of the file whose presence marks a clean shutdown.
pub const CLEAN_SHUTDOWN_MARKER: &str = recovery::CLEAN_MARKER;
