//! From a request frame to an encoded answer: decode the body, call the
//! api's handler, encode what it returns (or the failure).

use std::cell::Cell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};

use super::connection::Encoded;
use super::handlers::{self, Answer};
use super::session::Session;
use super::throttle::Throttle;
use super::{access, groups, security};
use crate::quota::Usage;
use crate::shard::{Failure, GroupRequest, Origin, Shard};
use ringmq_protocol::{
    encode_error_response, ApiKey, ErrorCode, FrameError, Request, RequestHeader, ResponseBody,
};

/// What a request knows of the connection it came on.
pub struct Conn {
    /// Set by a ForwardHello: another node's connection.
    pub origin: Rc<Cell<Origin>>,
    pub session: Rc<Session>,
    pub throttle: Rc<Throttle>,
}

/// Answers a request. `None` when the request wants no answer (produce with acks=0).
pub async fn handle(
    shard: Rc<Shard>,
    conn: Conn,
    header: RequestHeader,
    api: ApiKey,
    body: Bytes,
) -> Option<Encoded> {
    let (origin, session) = (conn.origin, conn.session);
    let corr = header.correlation_id;
    let started = std::time::Instant::now();
    let bytes_in = body.len();
    let request = match Request::decode(&header, body) {
        Ok(r) => r,
        Err(e) => {
            crate::metrics::request(api, Some(e.error_code()), bytes_in, 0, started.elapsed());
            return Some(refuse(corr, &e));
        }
    };
    let wants_answer = request.expects_response();
    let from = origin.get();
    let s = &shard;
    // One branch when authorization is off: the hot path pays nothing more.
    let checked = access::applies(s, from);
    let named = matches!(&request, Request::Metadata(m) if m.topics.is_some());
    if checked {
        if let Err(f) = access::check(s, &session, &request) {
            crate::metrics::request(api, Some(f.code), bytes_in, 0, started.elapsed());
            return wants_answer.then(|| failure(corr, &f));
        }
    }
    let mut result = match request {
        Request::ApiVersions(_) => Ok(handlers::api_versions()),
        Request::Metadata(r) => handlers::metadata(s, r),
        Request::CreateTopic(r) => handlers::create_topic(s, r, from).await,
        Request::DeleteTopic(r) => handlers::delete_topic(s, r, from).await,
        Request::ListTopics(_) => Ok(handlers::list_topics(s)),
        Request::Produce(r) => handlers::produce(s, r, from).await,
        Request::Fetch(r) => handlers::fetch(s, r, from).await,
        Request::ListOffsets(r) => handlers::list_offsets(s, r, from).await,
        Request::JoinGroup(r) => groups::group(s, GroupRequest::Join(r), from).await,
        Request::Heartbeat(r) => groups::group(s, GroupRequest::Heartbeat(r), from).await,
        Request::LeaveGroup(r) => groups::group(s, GroupRequest::Leave(r), from).await,
        Request::CommitOffsets(r) => groups::group(s, GroupRequest::Commit(r), from).await,
        Request::FetchOffsets(r) => groups::group(s, GroupRequest::FetchOffsets(r), from).await,
        Request::DescribeGroup(r) => groups::group(s, GroupRequest::Describe(r), from).await,
        Request::ListGroups(_) => groups::list_groups(s, from).await,
        // Answered by the connection itself (net/hello.rs), never here.
        Request::ForwardHello(_) => Err(Failure::new(
            ErrorCode::InvalidRequest,
            "ForwardHello is answered by the connection",
        )),
        Request::ReplicaFetch(r) => handlers::replica_fetch(s, r, from).await,
        Request::InitProducerId(_) => Ok(handlers::init_producer_id(s)),
        Request::UpsertUser(r) => security::upsert_user(s, r, from).await,
        Request::DeleteUser(r) => security::delete_user(s, r, from).await,
        Request::ListUsers(_) => Ok(security::list_users(s)),
        Request::AlterAcl(r) => security::alter_acl(s, r, from).await,
        Request::ListAcls(_) => Ok(security::list_acls(s)),
        Request::AlterQuota(r) => security::alter_quota(s, r, from).await,
        Request::ListQuotas(_) => Ok(security::list_quotas(s)),
        // Answered by the connection's reader (`session.rs`) before dispatch.
        Request::SaslHandshake(_) | Request::SaslAuthenticate(_) => Err(Failure::new(
            ErrorCode::InvalidRequest,
            "SASL requests are answered by the connection",
        )),
    };
    if checked {
        if let Ok(answer) = &mut result {
            access::filter(s, &session, named, answer);
        }
    }
    let (error, bytes_out) = match &result {
        Ok(Answer::Fetch(f)) => (None, f.records.len()),
        Ok(Answer::Replica(r)) => (None, r.records.len()),
        Ok(Answer::Body(_)) => (None, 0),
        Err(f) => (Some(f.code), 0),
    };
    crate::metrics::request(api, error, bytes_in, bytes_out, started.elapsed());
    // Another node's requests were charged where their client sent them.
    let mut result = result;
    if origin.get() == Origin::Client {
        let usage = Usage {
            produce_bytes: if api == ApiKey::Produce {
                bytes_in as u64
            } else {
                0
            },
            fetch_bytes: if api == ApiKey::Fetch {
                bytes_out as u64
            } else {
                0
            },
        };
        let wait = conn.throttle.charge(usage);
        if !wait.is_zero() {
            if let Ok(answer) = &mut result {
                answer.set_throttle(wait);
            }
        }
    }
    if !wants_answer {
        if let Err(f) = &result {
            tracing::debug!(api = %api, error = %f, "acks=0 request failed; the client is not told");
        }
        return None;
    }
    Some(match result {
        Ok(answer) => encode(corr, answer),
        Err(f) => failure(corr, &f),
    })
}

fn encode(corr: u32, answer: Answer) -> Encoded {
    let mut head = BytesMut::with_capacity(64);
    match answer {
        Answer::Body(body) => {
            body.encode(corr, &mut head);
            Encoded { head, tail: None }
        }
        Answer::Fetch(f) => {
            f.encode_head(corr, &mut head);
            Encoded {
                head,
                tail: Some(f.records),
            }
        }
        Answer::Replica(r) => {
            r.encode_head(corr, &mut head);
            Encoded {
                head,
                tail: Some(r.records),
            }
        }
    }
}

/// The answer to a frame that could not be decoded.
pub fn refuse(corr: u32, e: &FrameError) -> Encoded {
    failure(corr, &Failure::new(e.error_code(), e.to_string()))
}

/// A success answer with a body.
pub fn encode_body(corr: u32, body: ResponseBody) -> Encoded {
    encode(corr, Answer::Body(body))
}

/// An error answer.
pub fn failure(corr: u32, f: &Failure) -> Encoded {
    let mut head = BytesMut::with_capacity(32 + f.message.len());
    encode_error_response(corr, f.code, &f.message, &mut head);
    Encoded { head, tail: None }
}
