//! Which core of this node owns each partition: the ring over core ids with
//! ε = 0, so the partitions of a topic are spread evenly and every shard
//! computes the same answer on its own.

use super::failure::Failure;
use crate::ring::{Epsilon, Ring};

/// Owning core of each partition of `topic`, by partition number.
pub fn place_partitions(topic: &str, partitions: u32, cores: usize) -> Result<Vec<usize>, Failure> {
    let ring = Ring::new(0..cores);
    let keys: Vec<String> = (0..partitions).map(|p| format!("{topic}/{p}")).collect();
    let owners = ring
        .place(&keys, Epsilon::CORES)
        .map_err(Failure::internal)?;
    Ok(owners.into_iter().copied().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_topic_are_spread_evenly_over_cores() {
        let owners = place_partitions("orders", 8, 2).unwrap();
        assert_eq!(owners.iter().filter(|c| **c == 0).count(), 4);
        let owners = place_partitions("orders", 7, 3).unwrap();
        for core in 0..3 {
            let n = owners.iter().filter(|c| **c == core).count();
            assert!((2..=3).contains(&n), "{owners:?}");
        }
    }

    #[test]
    fn placement_is_deterministic() {
        assert_eq!(
            place_partitions("t", 100, 2).unwrap(),
            place_partitions("t", 100, 2).unwrap()
        );
    }
}
