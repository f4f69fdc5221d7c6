//! Helpers shared by the log integration tests.
#![allow(dead_code)]

use bytes::Bytes;
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use ringmq_protocol::batch::BatchBuilder;

/// A glommio executor that is cheap to create (64 KiB io memory, depth 64).
pub fn small_executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .make()
        .expect("create a test executor")
}

/// A batch of `records` records whose values are `value_len` bytes derived
/// from `seed`, with first timestamp `ts`.
pub fn batch(seed: u64, records: u32, value_len: usize, ts: i64) -> Bytes {
    let mut b = BatchBuilder::with_capacity(ts, 64 + records as usize * (value_len + 16));
    for r in 0..records {
        let v: Vec<u8> = (0..value_len)
            .map(|i| {
                (seed
                    .wrapping_mul(31)
                    .wrapping_add(u64::from(r) * 7 + i as u64)
                    % 251) as u8
            })
            .collect();
        b.push(ts, Some(&seed.to_le_bytes()), Some(&v), &[]);
    }
    b.finish(None)
}

/// Splits a read result into its batches (each verified).
pub fn split_batches(buf: &Bytes) -> Vec<Bytes> {
    ringmq_protocol::batch::batches(buf)
        .map(|b| b.expect("a read served a bad batch"))
        .collect()
}
