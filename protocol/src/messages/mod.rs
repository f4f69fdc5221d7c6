//! Requests and responses of every api, and the enums the broker dispatches
//! on and the client matches on. One file per api; this module ties them to
//! the frame.
//!
//! Broker side: [`RequestHeader::parse`] + [`RequestHeader::validate`], then
//! [`route_key`] to pick the owning shard from the body without decoding it,
//! then [`Request::decode`]; answer with [`ResponseBody::encode`],
//! [`FetchResponse::encode_head`] (zero copy) or
//! [`crate::frame::encode_error_response`].
//!
//! Client side: [`Request::encode`] (or [`ProduceRequest::encode_head`]),
//! then [`ResponseHeader::parse`] and [`Response::decode`] with the api it
//! sent under that correlation id.

/// Wire impls for bodies with no fields.
macro_rules! empty_body {
    ($($t:ident),*) => {$(
        impl $crate::codec::Wire for $t {
            const MIN_LEN: usize = 0;

            fn encode(&self, _buf: &mut bytes::BytesMut) {}

            fn decode(
                _r: &mut $crate::codec::Reader<'_>,
            ) -> Result<Self, $crate::frame::FrameError> {
                Ok($t {})
            }
        }
    )*};
}

mod acls;
mod api_versions;
mod fetch;
mod forward;
mod groups;
mod list_offsets;
mod metadata;
mod produce;
mod producer_id;
mod quotas;
mod replica;
mod sasl;
mod topics;
mod users;

use bytes::{BufMut, Bytes, BytesMut};

pub use acls::{
    AclBinding, AlterAclRequest, AlterAclResponse, ListAclsRequest, ListAclsResponse, Operation,
    PatternType, ResourceType,
};
pub use api_versions::{ApiVersionRange, ApiVersionsRequest, ApiVersionsResponse};
pub use fetch::{FetchRequest, FetchResponse};
pub use forward::{ForwardHelloRequest, ForwardHelloResponse};
pub use groups::{
    CommitOffsetsRequest, CommitOffsetsResponse, DescribeGroupRequest, DescribeGroupResponse,
    FetchOffsetsRequest, FetchOffsetsResponse, GroupState, GroupSummary, HeartbeatRequest,
    HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    ListGroupsRequest, ListGroupsResponse, MemberAssignment, MemberDescription,
    PartitionDescription, PartitionOffset, TopicPartitions,
};
pub use list_offsets::{ListOffsetsRequest, ListOffsetsResponse, OffsetSpec};
pub use metadata::{
    BrokerMetadata, MetadataRequest, MetadataResponse, PartitionMetadata, TopicMetadata, NO_LEADER,
};
pub use produce::{Acks, ProduceRequest, ProduceResponse};
pub use producer_id::{InitProducerIdRequest, InitProducerIdResponse};
pub use quotas::{
    AlterQuotaRequest, AlterQuotaResponse, ListQuotasRequest, ListQuotasResponse, QuotaBinding,
    QUOTA_DEFAULT, QUOTA_UNLIMITED,
};
pub use replica::{EpochEnd, ReplicaFetchRequest, ReplicaFetchResponse};
pub use sasl::{
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
pub use topics::{
    CreateTopicRequest, CreateTopicResponse, DeleteTopicRequest, DeleteTopicResponse,
    ListTopicsRequest, ListTopicsResponse, TopicInfo,
};
pub use users::{
    DeleteUserRequest, DeleteUserResponse, ListUsersRequest, ListUsersResponse, UpsertUserRequest,
    UpsertUserResponse, UserInfo,
};

use crate::api::ApiKey;
use crate::codec::{Reader, Wire};
use crate::error_code::ErrorCode;
use crate::frame::{
    begin_frame, end_frame, FrameError, RequestHeader, ResponseHeader, REQUEST_HEADER_LEN,
    RESPONSE_HEADER_LEN,
};

/// Declares the request and response enums, one variant per api, with the
/// dispatch between an [`ApiKey`] and the per-api types.
macro_rules! apis {
    ($($api:ident($req:ident, $resp:ident),)*) => {
        /// A decoded request body, one variant per api.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum Request {
            $($api($req),)*
        }

        /// A successful response body, one variant per api.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub enum ResponseBody {
            $($api($resp),)*
        }

        impl Request {
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(Request::$api(_) => ApiKey::$api,)*
                }
            }

            fn encode_body(&self, buf: &mut BytesMut) {
                match self {
                    $(Request::$api(m) => m.encode(buf),)*
                }
            }

            fn decode_body(api: ApiKey, r: &mut Reader<'_>) -> Result<Request, FrameError> {
                match api {
                    $(ApiKey::$api => $req::decode(r).map(Request::$api),)*
                }
            }
        }

        impl ResponseBody {
            pub fn api_key(&self) -> ApiKey {
                match self {
                    $(ResponseBody::$api(_) => ApiKey::$api,)*
                }
            }

            fn encode_body(&self, buf: &mut BytesMut) {
                match self {
                    $(ResponseBody::$api(m) => m.encode(buf),)*
                }
            }

            fn decode_body(api: ApiKey, r: &mut Reader<'_>) -> Result<ResponseBody, FrameError> {
                match api {
                    $(ApiKey::$api => $resp::decode(r).map(ResponseBody::$api),)*
                }
            }
        }

        $(
            impl From<$req> for Request {
                fn from(m: $req) -> Request {
                    Request::$api(m)
                }
            }

            impl From<$resp> for ResponseBody {
                fn from(m: $resp) -> ResponseBody {
                    ResponseBody::$api(m)
                }
            }
        )*
    };
}

apis! {
    ApiVersions(ApiVersionsRequest, ApiVersionsResponse),
    Metadata(MetadataRequest, MetadataResponse),
    CreateTopic(CreateTopicRequest, CreateTopicResponse),
    DeleteTopic(DeleteTopicRequest, DeleteTopicResponse),
    ListTopics(ListTopicsRequest, ListTopicsResponse),
    Produce(ProduceRequest, ProduceResponse),
    Fetch(FetchRequest, FetchResponse),
    ListOffsets(ListOffsetsRequest, ListOffsetsResponse),
    JoinGroup(JoinGroupRequest, JoinGroupResponse),
    Heartbeat(HeartbeatRequest, HeartbeatResponse),
    LeaveGroup(LeaveGroupRequest, LeaveGroupResponse),
    CommitOffsets(CommitOffsetsRequest, CommitOffsetsResponse),
    FetchOffsets(FetchOffsetsRequest, FetchOffsetsResponse),
    DescribeGroup(DescribeGroupRequest, DescribeGroupResponse),
    ListGroups(ListGroupsRequest, ListGroupsResponse),
    ForwardHello(ForwardHelloRequest, ForwardHelloResponse),
    ReplicaFetch(ReplicaFetchRequest, ReplicaFetchResponse),
    InitProducerId(InitProducerIdRequest, InitProducerIdResponse),
    SaslHandshake(SaslHandshakeRequest, SaslHandshakeResponse),
    SaslAuthenticate(SaslAuthenticateRequest, SaslAuthenticateResponse),
    UpsertUser(UpsertUserRequest, UpsertUserResponse),
    DeleteUser(DeleteUserRequest, DeleteUserResponse),
    ListUsers(ListUsersRequest, ListUsersResponse),
    AlterAcl(AlterAclRequest, AlterAclResponse),
    ListAcls(ListAclsRequest, ListAclsResponse),
    AlterQuota(AlterQuotaRequest, AlterQuotaResponse),
    ListQuotas(ListQuotasRequest, ListQuotasResponse),
}

impl Request {
    /// Appends the whole frame, at the api's newest version.
    pub fn encode(&self, correlation_id: u32, buf: &mut BytesMut) {
        let api = self.api_key();
        let start = begin_frame(buf);
        buf.put_u16_le(api.as_u16());
        buf.put_u16_le(api.max_version());
        buf.put_u32_le(correlation_id);
        self.encode_body(buf);
        end_frame(buf, start, 0);
    }

    /// Decodes the body of the frame `header` introduces. `body` is exactly
    /// [`RequestHeader::body_len`] bytes; `bytes` fields come out as slices
    /// of it. Checks the api and version again, so this alone is enough.
    pub fn decode(header: &RequestHeader, body: Bytes) -> Result<Request, FrameError> {
        let api = header.validate()?;
        let mut r = Reader::new(&body);
        let req = Request::decode_body(api, &mut r)?;
        r.finish()?;
        Ok(req)
    }

    /// Decodes one whole frame, length field included, that fills `frame`
    /// exactly. For tests and tools; the broker reads header and body apart.
    pub fn decode_frame(frame: Bytes) -> Result<(RequestHeader, Request), FrameError> {
        let header = RequestHeader::parse(&frame)?;
        header.validate()?;
        if frame.len() - REQUEST_HEADER_LEN != header.body_len() {
            return Err(FrameError::Malformed(
                "frame length does not match the bytes given".into(),
            ));
        }
        let req = Request::decode(&header, frame.slice(REQUEST_HEADER_LEN..))?;
        Ok((header, req))
    }

    /// The partition a Produce, Fetch or ListOffsets addresses.
    pub fn topic_partition(&self) -> Option<(&str, u32)> {
        match self {
            Request::Produce(m) => Some((&m.topic, m.partition)),
            Request::Fetch(m) => Some((&m.topic, m.partition)),
            Request::ListOffsets(m) => Some((&m.topic, m.partition)),
            _ => None,
        }
    }

    /// False only for a Produce with `acks = 0`, which gets no response,
    /// not even an error.
    pub fn expects_response(&self) -> bool {
        !matches!(
            self,
            Request::Produce(ProduceRequest {
                acks: Acks::None,
                ..
            })
        )
    }
}

/// `(topic, partition)` of a partition-addressed request body (Produce,
/// Fetch, ListOffsets all start with `topic str, partition u32`), read
/// without decoding the rest, so the broker can forward the body to the
/// owning shard untouched. `None` for other apis, or when the body is too
/// short or the topic not UTF-8: handle such a request locally and let
/// [`Request::decode`] report the error.
pub fn route_key(api: ApiKey, body: &[u8]) -> Option<(&str, u32)> {
    if !api.is_partition_addressed() {
        return None;
    }
    let len = usize::from(u16::from_le_bytes([*body.first()?, *body.get(1)?]));
    let topic = std::str::from_utf8(body.get(2..2 + len)?).ok()?;
    let p = body.get(2 + len..2 + len + 4)?;
    Some((topic, u32::from_le_bytes([p[0], p[1], p[2], p[3]])))
}

/// The body of a response whose error code is not `NONE`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ErrorResponse {
    pub code: ErrorCode,
    /// Human-readable detail, for logs and people; never parse it.
    pub message: String,
}

/// A decoded response frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub correlation_id: u32,
    pub result: Result<ResponseBody, ErrorResponse>,
}

impl ResponseBody {
    /// Appends the whole success frame. For Fetch this copies the records;
    /// the broker uses [`FetchResponse::encode_head`] instead.
    pub fn encode(&self, correlation_id: u32, buf: &mut BytesMut) {
        let start = begin_frame(buf);
        buf.put_u32_le(correlation_id);
        buf.put_u16_le(ErrorCode::None.as_u16());
        self.encode_body(buf);
        end_frame(buf, start, 0);
    }
}

impl Response {
    /// Decodes the body of a response to a request of `api`: the api's body
    /// when the header's error code is `NONE`, else the error message. The
    /// client knows `api` from the correlation id. `body` is exactly
    /// [`ResponseHeader::body_len`] bytes.
    pub fn decode(
        api: ApiKey,
        header: &ResponseHeader,
        body: Bytes,
    ) -> Result<Response, FrameError> {
        let mut r = Reader::new(&body);
        let result = match ErrorCode::from_u16(header.error_code) {
            ErrorCode::None => Ok(ResponseBody::decode_body(api, &mut r)?),
            code => Err(ErrorResponse {
                code,
                message: r.string()?,
            }),
        };
        r.finish()?;
        Ok(Response {
            correlation_id: header.correlation_id,
            result,
        })
    }

    /// Decodes one whole frame, length field included, that fills `frame`
    /// exactly.
    pub fn decode_frame(api: ApiKey, frame: Bytes) -> Result<Response, FrameError> {
        let header = ResponseHeader::parse(&frame)?;
        if frame.len() - RESPONSE_HEADER_LEN != header.body_len() {
            return Err(FrameError::Malformed(
                "frame length does not match the bytes given".into(),
            ));
        }
        Response::decode(api, &header, frame.slice(RESPONSE_HEADER_LEN..))
    }

    /// Appends the whole frame.
    pub fn encode(&self, buf: &mut BytesMut) {
        match &self.result {
            Ok(body) => body.encode(self.correlation_id, buf),
            Err(e) => {
                crate::frame::encode_error_response(self.correlation_id, e.code, &e.message, buf)
            }
        }
    }
}

#[cfg(any(test, feature = "samples"))]
pub mod samples;

#[cfg(test)]
mod tests;

#[cfg(test)]
mod spec_example;
