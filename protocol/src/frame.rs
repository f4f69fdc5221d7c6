//! Framing: every message is a little-endian `u32 length` (the bytes that
//! follow it) and a fixed header, then the body.
//!
//! ```text
//! request:  u32 length · u16 api_key · u16 api_version · u32 correlation_id · body
//! response: u32 length · u32 correlation_id · u16 error_code · body
//! ```
//!
//! The broker reads the 12-byte request header first ([`RequestHeader::parse`]),
//! then [`RequestHeader::validate`]s it: a length outside the limits is
//! answered and the connection closed (its framing can no longer be trusted),
//! an unknown api or version is answered after skipping the body, and only
//! then is a body read and decoded.

use std::borrow::Cow;

use bytes::{BufMut, BytesMut};

use crate::api::ApiKey;
use crate::codec::put_str_truncated;
use crate::error_code::ErrorCode;
use crate::limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};

/// Bytes of a request header, the length field included.
pub const REQUEST_HEADER_LEN: usize = 12;
/// Bytes of a response header, the length field included.
pub const RESPONSE_HEADER_LEN: usize = 10;
/// Size of the `length` field that starts every frame.
pub const LENGTH_FIELD_LEN: usize = 4;

/// Why bytes are not an acceptable frame or body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame's `length` field is over the limit; the frame is not read.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge { len: usize, max: usize },
    /// The frame's `length` field cannot even hold the rest of the header.
    #[error("frame of {len} bytes is shorter than its header ({min})")]
    TooShort { len: usize, min: usize },
    /// Fewer bytes than a header, or a body that ends inside a field.
    #[error("frame truncated")]
    Truncated,
    #[error("unknown api key {0}")]
    UnknownApi(u16),
    #[error("api {api} does not support version {version}")]
    UnsupportedVersion { api: u16, version: u16 },
    /// A body that decodes to nonsense: bad UTF-8, an out-of-range enum,
    /// trailing bytes, an array count past the limit.
    #[error("malformed frame: {0}")]
    Malformed(Cow<'static, str>),
}

impl FrameError {
    /// The code the broker answers this error with.
    pub fn error_code(&self) -> ErrorCode {
        match self {
            FrameError::TooLarge { .. } => ErrorCode::MessageTooLarge,
            FrameError::TooShort { .. } | FrameError::Truncated | FrameError::Malformed(_) => {
                ErrorCode::InvalidRequest
            }
            FrameError::UnknownApi(_) => ErrorCode::UnknownApi,
            FrameError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
        }
    }

    /// Whether the framing of the stream is lost, so the broker closes the
    /// connection after its error response. Every other error concerns one
    /// frame whose length is known, and the connection goes on.
    pub fn closes_connection(&self) -> bool {
        matches!(
            self,
            FrameError::TooLarge { .. } | FrameError::TooShort { .. }
        )
    }
}

/// The fixed start of a request frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    /// Bytes after the length field: the rest of the header and the body.
    pub length: u32,
    pub api_key: u16,
    pub api_version: u16,
    /// Chosen by the client, echoed in the response.
    pub correlation_id: u32,
}

impl RequestHeader {
    /// Reads the first [`REQUEST_HEADER_LEN`] bytes of `buf` as they are;
    /// fails only if there are fewer. Call [`validate`](Self::validate) next:
    /// this split leaves the broker a correlation id to answer even a frame
    /// it refuses.
    pub fn parse(buf: &[u8]) -> Result<RequestHeader, FrameError> {
        let b = buf.get(..REQUEST_HEADER_LEN).ok_or(FrameError::Truncated)?;
        Ok(RequestHeader {
            length: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            api_key: u16::from_le_bytes([b[4], b[5]]),
            api_version: u16::from_le_bytes([b[6], b[7]]),
            correlation_id: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        })
    }

    /// Checks, in this order: the length holds the header
    /// ([`FrameError::TooShort`]) and is within [`MAX_REQUEST_FRAME`]
    /// ([`FrameError::TooLarge`]), both closing the connection; the api is
    /// known ([`FrameError::UnknownApi`]) and speaks this version
    /// ([`FrameError::UnsupportedVersion`]), after which the broker skips
    /// [`body_len`](Self::body_len) bytes and goes on.
    pub fn validate(&self) -> Result<ApiKey, FrameError> {
        let len = self.length as usize;
        let min = REQUEST_HEADER_LEN - LENGTH_FIELD_LEN;
        if len < min {
            return Err(FrameError::TooShort { len, min });
        }
        if len > MAX_REQUEST_FRAME {
            return Err(FrameError::TooLarge {
                len,
                max: MAX_REQUEST_FRAME,
            });
        }
        let api = ApiKey::from_u16(self.api_key).ok_or(FrameError::UnknownApi(self.api_key))?;
        if !api.supports(self.api_version) {
            return Err(FrameError::UnsupportedVersion {
                api: self.api_key,
                version: self.api_version,
            });
        }
        Ok(api)
    }

    /// Bytes of body that follow the header.
    pub fn body_len(&self) -> usize {
        (self.length as usize).saturating_sub(REQUEST_HEADER_LEN - LENGTH_FIELD_LEN)
    }
}

/// The fixed start of a response frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHeader {
    /// Bytes after the length field.
    pub length: u32,
    pub correlation_id: u32,
    /// Raw code; see [`ErrorCode::from_u16`].
    pub error_code: u16,
}

impl ResponseHeader {
    /// Reads the first [`RESPONSE_HEADER_LEN`] bytes of `buf` and checks the
    /// length is within 6..=[`MAX_RESPONSE_FRAME`]. The client closes the
    /// connection on any error here.
    pub fn parse(buf: &[u8]) -> Result<ResponseHeader, FrameError> {
        let b = buf
            .get(..RESPONSE_HEADER_LEN)
            .ok_or(FrameError::Truncated)?;
        let h = ResponseHeader {
            length: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            correlation_id: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            error_code: u16::from_le_bytes([b[8], b[9]]),
        };
        let len = h.length as usize;
        let min = RESPONSE_HEADER_LEN - LENGTH_FIELD_LEN;
        if len < min {
            return Err(FrameError::TooShort { len, min });
        }
        if len > MAX_RESPONSE_FRAME {
            return Err(FrameError::TooLarge {
                len,
                max: MAX_RESPONSE_FRAME,
            });
        }
        Ok(h)
    }

    /// Bytes of body that follow the header.
    pub fn body_len(&self) -> usize {
        (self.length as usize).saturating_sub(RESPONSE_HEADER_LEN - LENGTH_FIELD_LEN)
    }
}

/// Reserves a frame's length field; returns where it starts, for
/// [`end_frame`].
pub(crate) fn begin_frame(buf: &mut BytesMut) -> usize {
    let start = buf.len();
    buf.put_u32_le(0);
    start
}

/// Fills the length field reserved by [`begin_frame`], counting `extra`
/// bytes the caller writes after the buffer (zero-copy tails).
pub(crate) fn end_frame(buf: &mut BytesMut, start: usize, extra: usize) {
    let len = buf.len() - start - LENGTH_FIELD_LEN + extra;
    let len = u32::try_from(len).expect("a frame is shorter than 4 GiB");
    buf[start..start + LENGTH_FIELD_LEN].copy_from_slice(&len.to_le_bytes());
}

/// Writes a request header whose length counts `body_len` body bytes.
pub fn encode_request_header(
    api: ApiKey,
    api_version: u16,
    correlation_id: u32,
    body_len: usize,
    buf: &mut BytesMut,
) {
    let len = u32::try_from(body_len + REQUEST_HEADER_LEN - LENGTH_FIELD_LEN)
        .expect("a frame is shorter than 4 GiB");
    buf.put_u32_le(len);
    buf.put_u16_le(api.as_u16());
    buf.put_u16_le(api_version);
    buf.put_u32_le(correlation_id);
}

/// Writes a whole error response: header with `code` (not `NONE`) and a
/// `str` message body, cut to 65535 bytes if longer.
pub fn encode_error_response(
    correlation_id: u32,
    code: ErrorCode,
    message: &str,
    buf: &mut BytesMut,
) {
    debug_assert!(code != ErrorCode::None, "an error response needs an error");
    let start = begin_frame(buf);
    buf.put_u32_le(correlation_id);
    buf.put_u16_le(code.as_u16());
    put_str_truncated(buf, message);
    end_frame(buf, start, 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(length: u32, api: u16, version: u16) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&length.to_le_bytes());
        v.extend_from_slice(&api.to_le_bytes());
        v.extend_from_slice(&version.to_le_bytes());
        v.extend_from_slice(&77u32.to_le_bytes());
        v
    }

    #[test]
    fn request_header_ok() {
        let h = RequestHeader::parse(&header(20, 5, 1)).unwrap();
        assert_eq!(h.correlation_id, 77);
        assert_eq!(h.body_len(), 12);
        assert_eq!(h.validate(), Ok(ApiKey::Produce));
        let mut b = BytesMut::new();
        encode_request_header(ApiKey::Produce, 1, 77, 12, &mut b);
        assert_eq!(&b[..], &header(20, 5, 1)[..]);
    }

    #[test]
    fn request_header_errors() {
        for n in 0..REQUEST_HEADER_LEN {
            assert_eq!(
                RequestHeader::parse(&header(8, 0, 0)[..n]),
                Err(FrameError::Truncated)
            );
        }
        let check = |len, api, ver| {
            RequestHeader::parse(&header(len, api, ver))
                .unwrap()
                .validate()
        };
        assert_eq!(check(8, 0, 0), Ok(ApiKey::ApiVersions));
        assert_eq!(check(7, 0, 0), Err(FrameError::TooShort { len: 7, min: 8 }));
        assert_eq!(check(0, 0, 0), Err(FrameError::TooShort { len: 0, min: 8 }));
        let max = MAX_REQUEST_FRAME;
        assert_eq!(check(max as u32, 0, 0), Ok(ApiKey::ApiVersions));
        assert_eq!(
            check(max as u32 + 1, 0, 0),
            Err(FrameError::TooLarge { len: max + 1, max })
        );
        assert_eq!(
            check(u32::MAX, 0, 0),
            Err(FrameError::TooLarge {
                len: u32::MAX as usize,
                max
            })
        );
        assert_eq!(check(8, 27, 0), Err(FrameError::UnknownApi(27)));
        assert_eq!(check(8, u16::MAX, 0), Err(FrameError::UnknownApi(u16::MAX)));
        assert_eq!(
            check(8, 6, 2),
            Err(FrameError::UnsupportedVersion { api: 6, version: 2 })
        );
        // Produce and Fetch v0 had no throttle_ms: no longer served.
        assert_eq!(
            check(8, 5, 0),
            Err(FrameError::UnsupportedVersion { api: 5, version: 0 })
        );
        // Length is checked before the api: a huge frame of an unknown api is TooLarge.
        assert!(matches!(
            check(u32::MAX, 99, 9),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn error_mapping() {
        use FrameError::*;
        let cases: [(FrameError, ErrorCode, bool); 6] = [
            (
                TooLarge { len: 9, max: 1 },
                ErrorCode::MessageTooLarge,
                true,
            ),
            (TooShort { len: 1, min: 8 }, ErrorCode::InvalidRequest, true),
            (Truncated, ErrorCode::InvalidRequest, false),
            (UnknownApi(9), ErrorCode::UnknownApi, false),
            (
                UnsupportedVersion { api: 1, version: 9 },
                ErrorCode::UnsupportedVersion,
                false,
            ),
            (Malformed("x".into()), ErrorCode::InvalidRequest, false),
        ];
        for (e, code, closes) in cases {
            assert_eq!(e.error_code(), code, "{e}");
            assert_eq!(e.closes_connection(), closes, "{e}");
        }
    }

    #[test]
    fn response_header() {
        let mut b = BytesMut::new();
        encode_error_response(5, ErrorCode::UnknownTopic, "no topic t", &mut b);
        let h = ResponseHeader::parse(&b).unwrap();
        assert_eq!(h.correlation_id, 5);
        assert_eq!(h.error_code, 3);
        assert_eq!(h.body_len(), 2 + 10);
        assert_eq!(b.len(), RESPONSE_HEADER_LEN + h.body_len());
        for n in 0..RESPONSE_HEADER_LEN {
            assert_eq!(ResponseHeader::parse(&b[..n]), Err(FrameError::Truncated));
        }
        let mut raw = b.to_vec();
        raw[..4].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(
            ResponseHeader::parse(&raw),
            Err(FrameError::TooShort { len: 5, min: 6 })
        );
        raw[..4].copy_from_slice(&(MAX_RESPONSE_FRAME as u32 + 1).to_le_bytes());
        assert!(matches!(
            ResponseHeader::parse(&raw),
            Err(FrameError::TooLarge { .. })
        ));
    }
}
