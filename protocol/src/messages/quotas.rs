//! AlterQuota (key 25) and ListQuotas (key 26): per-principal quotas kept
//! with the users and ACLs (SPEC.md 5.26). What a value means to the
//! broker's buckets is the broker's (`src/quota.rs`); these are the bytes.

use bytes::{BufMut, BytesMut};

use crate::codec::{put_str, put_vec, Reader, Wire};
use crate::frame::FrameError;

/// A quota field that is not set: the node's configured value applies.
pub const QUOTA_DEFAULT: i64 = -1;
/// A quota field of no limit.
pub const QUOTA_UNLIMITED: i64 = 0;

/// One principal's quotas: per field [`QUOTA_DEFAULT`], [`QUOTA_UNLIMITED`]
/// or a per-second limit (> 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaBinding {
    pub principal: String,
    pub produce_bytes: i64,
    pub fetch_bytes: i64,
    pub requests: i64,
}

/// Sets a principal's quotas (replacing all three fields), or removes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterQuotaRequest {
    pub quota: QuotaBinding,
    /// The principal's entry goes; the three values are ignored.
    pub remove: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlterQuotaResponse {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuotasRequest {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuotasResponse {
    pub quotas: Vec<QuotaBinding>,
}

empty_body!(AlterQuotaResponse, ListQuotasRequest);

impl Wire for QuotaBinding {
    const MIN_LEN: usize = 2 + 8 + 8 + 8;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.principal);
        buf.put_i64_le(self.produce_bytes);
        buf.put_i64_le(self.fetch_bytes);
        buf.put_i64_le(self.requests);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(QuotaBinding {
            principal: r.string()?,
            produce_bytes: r.i64()?,
            fetch_bytes: r.i64()?,
            requests: r.i64()?,
        })
    }
}

impl Wire for AlterQuotaRequest {
    const MIN_LEN: usize = QuotaBinding::MIN_LEN + 1;

    fn encode(&self, buf: &mut BytesMut) {
        self.quota.encode(buf);
        buf.put_u8(u8::from(self.remove));
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let quota = QuotaBinding::decode(r)?;
        let remove = match r.u8()? {
            0 => false,
            1 => true,
            v => {
                return Err(FrameError::Malformed(
                    format!("remove {v} is not 0 or 1").into(),
                ))
            }
        };
        Ok(AlterQuotaRequest { quota, remove })
    }
}

impl Wire for ListQuotasResponse {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, &self.quotas);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ListQuotasResponse { quotas: r.vec()? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout of SPEC.md 5.26, byte for byte.
    #[test]
    fn alter_quota_bytes_are_as_specified() {
        let req = AlterQuotaRequest {
            quota: QuotaBinding {
                principal: "User:a".into(),
                produce_bytes: 65_536,
                fetch_bytes: QUOTA_UNLIMITED,
                requests: QUOTA_DEFAULT,
            },
            remove: true,
        };
        let mut buf = BytesMut::new();
        req.encode(&mut buf);
        let mut want = vec![6, 0];
        want.extend_from_slice(b"User:a");
        want.extend_from_slice(&65_536i64.to_le_bytes());
        want.extend_from_slice(&0i64.to_le_bytes());
        want.extend_from_slice(&(-1i64).to_le_bytes());
        want.push(1);
        assert_eq!(&buf[..], &want[..]);
        assert_eq!(
            AlterQuotaRequest::decode(&mut Reader::new(&buf.clone().freeze())).unwrap(),
            req
        );
        // `remove` other than 0 or 1 is a decode error.
        *want.last_mut().unwrap() = 2;
        assert!(AlterQuotaRequest::decode(&mut Reader::new(&bytes::Bytes::from(want))).is_err());
    }
}
