//! ringmq: a thread-per-core message broker. See `docs/` and `protocol/SPEC.md`.

pub mod log;
pub mod ring;
