//! ApiVersions (key 0): which versions of which apis the broker speaks.
//! A client may send it first on a connection to pick versions.

use bytes::{BufMut, BytesMut};

use crate::api::ApiKey;
use crate::codec::{put_vec, Reader, Wire};
use crate::frame::FrameError;

/// Request body: empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiVersionsRequest {}

/// The versions of one api the broker accepts, `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersionRange {
    pub api_key: u16,
    pub min_version: u16,
    pub max_version: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    pub apis: Vec<ApiVersionRange>,
}

impl ApiVersionsResponse {
    /// What this build supports: every [`ApiKey`] with its version range.
    pub fn supported() -> Self {
        ApiVersionsResponse {
            apis: ApiKey::ALL
                .iter()
                .map(|a| ApiVersionRange {
                    api_key: a.as_u16(),
                    min_version: a.min_version(),
                    max_version: a.max_version(),
                })
                .collect(),
        }
    }
}

impl Wire for ApiVersionsRequest {
    const MIN_LEN: usize = 0;

    fn encode(&self, _buf: &mut BytesMut) {}

    fn decode(_r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ApiVersionsRequest {})
    }
}

impl Wire for ApiVersionRange {
    const MIN_LEN: usize = 6;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u16_le(self.api_key);
        buf.put_u16_le(self.min_version);
        buf.put_u16_le(self.max_version);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ApiVersionRange {
            api_key: r.u16()?,
            min_version: r.u16()?,
            max_version: r.u16()?,
        })
    }
}

impl Wire for ApiVersionsResponse {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, &self.apis);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ApiVersionsResponse { apis: r.vec()? })
    }
}
