//! Authorization of each request against the ACLs (`auth::acl`): before
//! the handler runs ([`check`]), and on the answers that list things
//! ([`filter`]: Metadata, ListTopics, ListGroups show only what the
//! principal may describe). Off (`authorization = false`), or for another
//! node of the cluster (a super principal), both are one branch.

use ringmq_protocol::{ErrorCode, Operation, Request, ResourceType, ResponseBody, TopicMetadata};

use super::handlers::Answer;
use super::session::{Session, ANONYMOUS};
use crate::auth::acl::principal_of;
use crate::auth::Authorizer;
use crate::shard::{Failure, Origin, Shard};

/// Whether requests of this connection are checked at all.
pub fn applies(shard: &Shard, origin: Origin) -> bool {
    shard.config.authorization && origin == Origin::Client
}

/// Runs `f` with the connection's authorizer.
fn with_authorizer<T>(shard: &Shard, session: &Session, f: impl FnOnce(&Authorizer) -> T) -> T {
    let principal = session.principal();
    let principal = principal.as_deref().unwrap_or(ANONYMOUS);
    let is_super = shard.config.super_users.iter().any(|s| s == principal)
        || shard
            .config
            .admin_user
            .as_deref()
            .and_then(|a| principal_of(a).ok())
            .is_some_and(|a| a == principal);
    shard.with_security(|s| f(&Authorizer::new(s, principal, is_super)))
}

/// What `req` needs, each `(resource, name, operation)`.
fn needs(req: &Request) -> Vec<(ResourceType, &str, Operation)> {
    use Operation::*;
    use ResourceType::*;
    match req {
        Request::CreateTopic(r) => vec![(Topic, &r.name, Create)],
        Request::DeleteTopic(r) => vec![(Topic, &r.name, Delete)],
        Request::Produce(r) => vec![(Topic, &r.topic, Produce)],
        Request::Fetch(r) => vec![(Topic, &r.topic, Consume)],
        Request::ListOffsets(r) => vec![(Topic, &r.topic, Consume)],
        Request::JoinGroup(r) => std::iter::once((Group, r.group.as_str(), Join))
            .chain(r.topics.iter().map(|t| (Topic, t.as_str(), Consume)))
            .collect(),
        Request::Heartbeat(r) => vec![(Group, &r.group, Join)],
        Request::LeaveGroup(r) => vec![(Group, &r.group, Join)],
        Request::CommitOffsets(r) => std::iter::once((Group, r.group.as_str(), Commit))
            .chain(r.offsets.iter().map(|o| (Topic, o.topic.as_str(), Consume)))
            .collect(),
        Request::FetchOffsets(r) => vec![(Group, &r.group, Describe)],
        Request::DescribeGroup(r) => vec![(Group, &r.group, Describe)],
        Request::UpsertUser(_)
        | Request::DeleteUser(_)
        | Request::ListUsers(_)
        | Request::AlterAcl(_)
        | Request::ListAcls(_)
        | Request::AlterQuota(_)
        | Request::ListQuotas(_) => vec![(Cluster, "", Alter)],
        // Filtered afterwards, or open to every principal: ApiVersions,
        // Metadata, ListTopics, ListGroups, InitProducerId, and the node and
        // SASL apis (which check their own origin).
        Request::ApiVersions(_)
        | Request::Metadata(_)
        | Request::ListTopics(_)
        | Request::ListGroups(_)
        | Request::InitProducerId(_)
        | Request::ForwardHello(_)
        | Request::ReplicaFetch(_)
        | Request::SaslHandshake(_)
        | Request::SaslAuthenticate(_) => Vec::new(),
    }
}

/// Refuses `req` with NOT_AUTHORIZED unless the ACLs allow all it needs.
pub fn check(shard: &Shard, session: &Session, req: &Request) -> Result<(), Failure> {
    let needs = needs(req);
    if needs.is_empty() {
        return Ok(());
    }
    let denied = with_authorizer(shard, session, |a| {
        needs.into_iter().find(|(r, n, o)| !a.allows(*r, n, *o))
    });
    let Some((resource, name, operation)) = denied else {
        return Ok(());
    };
    crate::metrics::authorization_denied(operation.as_str());
    let principal = session.principal();
    let principal = principal.as_deref().unwrap_or(ANONYMOUS);
    if session.first_refusal() {
        tracing::info!(
            principal,
            operation = operation.as_str(),
            resource = resource.as_str(),
            name,
            "request refused by the ACLs (logged once per connection)"
        );
    }
    let what = match resource {
        ResourceType::Cluster => "the cluster (users and ACLs)".to_owned(),
        r => format!("{} {name:?}", r.as_str()),
    };
    Err(Failure::new(
        ErrorCode::NotAuthorized,
        format!("{principal} may not {} {what}", operation.as_str()),
    ))
}

/// Leaves in a listing only what the principal may describe. Topics a
/// Metadata request named (`named`) are answered NOT_AUTHORIZED in place
/// rather than left out, so the client learns why.
pub fn filter(shard: &Shard, session: &Session, named: bool, answer: &mut Answer) {
    let Answer::Body(body) = answer else { return };
    with_authorizer(shard, session, |a| {
        let topic = |n: &str| a.allows(ResourceType::Topic, n, Operation::Describe);
        match body {
            ResponseBody::Metadata(m) if named => {
                for t in m.topics.iter_mut().filter(|t| !topic(&t.name)) {
                    *t = TopicMetadata {
                        name: std::mem::take(&mut t.name),
                        error_code: ErrorCode::NotAuthorized,
                        partitions: Vec::new(),
                    };
                }
            }
            ResponseBody::Metadata(m) => m.topics.retain(|t| topic(&t.name)),
            ResponseBody::ListTopics(l) => l.topics.retain(|t| topic(&t.name)),
            ResponseBody::ListGroups(l) => l
                .groups
                .retain(|g| a.allows(ResourceType::Group, &g.group, Operation::Describe)),
            _ => {}
        }
    });
}
