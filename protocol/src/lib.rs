//! The ringmq wire format, and nothing else: frames, requests and responses,
//! record batches and error codes, as pure encode/decode over byte buffers.
//! No I/O and no runtime, so the broker, the client and the fuzzers share one
//! implementation. `SPEC.md` beside this crate is the normative description.

pub mod batch;
pub mod varint;
