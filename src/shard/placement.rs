//! Which core of this node owns each partition: the ring over core ids with
//! ε = 0, so the partitions of a topic are spread evenly and every shard
//! computes the same answer on its own.

use crate::ring::{Ring, CORE_EPSILON};

/// Owning core of each partition of `topic`, by partition number.
pub fn place_partitions(topic: &str, partitions: u32, cores: usize) -> Vec<usize> {
    let ring = Ring::new(0..cores);
    let keys: Vec<String> = (0..partitions).map(|p| format!("{topic}/{p}")).collect();
    ring.assign(&keys, CORE_EPSILON)
}
