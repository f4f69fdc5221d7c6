//! The partition log: append-only, memory-mapped segment files.
