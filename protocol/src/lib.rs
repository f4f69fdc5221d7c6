//! The ringmq wire format, and nothing else: frames, requests and responses,
//! record batches and error codes, as pure encode/decode over byte buffers.
//! No I/O and no runtime, so the broker, the client and the fuzzers share one
//! implementation. `SPEC.md` beside this crate is the normative description.
//!
//! - [`frame`]: the length-prefixed frame and its headers, [`FrameError`].
//! - [`messages`]: every api's request and response, [`Request`],
//!   [`ResponseBody`], [`Response`], [`route_key`].
//! - [`api`], [`error_code`], [`limits`]: the numbers both sides agree on.
//! - [`codec`]: the primitive encodings the messages are made of.
//! - [`scram`]: the SCRAM-SHA-256 messages and arithmetic of SaslAuthenticate.
//! - [`batch`], [`varint`]: the record batch, same bytes on wire and disk.

pub mod api;
pub mod batch;
pub mod codec;
pub mod error_code;
pub mod frame;
pub mod limits;
pub mod messages;
pub mod peer;
pub mod scram;
pub mod varint;

pub use api::ApiKey;
pub use error_code::ErrorCode;
pub use frame::{
    encode_error_response, FrameError, RequestHeader, ResponseHeader, REQUEST_HEADER_LEN,
    RESPONSE_HEADER_LEN,
};
pub use messages::*;
