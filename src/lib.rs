//! ringmq: a thread-per-core message broker for task and event streams.
//!
//! Rooms (see `docs/architecture.md` in the shared folder): `log` stores
//! partitions, `shard` owns them per core, `net` turns frames into calls on a
//! shard, `server` and `service` start and stop a node, `client` talks to
//! one, `cli` is the `ringmq` command.

pub mod auth;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod group;
pub mod log;
pub mod metrics;
pub mod net;
pub mod quota;
pub mod ring;
pub mod security;
pub mod server;
pub mod service;
pub mod shard;
pub mod topics;

#[cfg(test)]
mod testdata;
