//! The admin apis of users, ACLs and quotas (SPEC.md 5.23, 5.24, 5.26): check what the
//! request asks, then change the state through the shard
//! (`shard/security.rs`), or list it. Listings carry names, mechanisms and
//! rules, never key material.

use ringmq_protocol::{
    AlterAclRequest, AlterAclResponse, AlterQuotaRequest, AlterQuotaResponse, DeleteUserRequest,
    DeleteUserResponse, ErrorCode, ListAclsResponse, ListQuotasResponse, ListUsersResponse,
    QuotaBinding, Request, UpsertUserRequest, UpsertUserResponse, UserInfo, QUOTA_DEFAULT,
};

use super::handlers::Answer;
use crate::auth::acl::AclRule;
use crate::auth::store::{validate_quota, validate_user_name};
use crate::auth::{Secret, SecurityCommand, StoredCredential};
use crate::quota::QuotaEntry;
use crate::shard::{Failure, Origin, Shard};

fn invalid(e: impl std::fmt::Display) -> Failure {
    Failure::new(ErrorCode::InvalidRequest, e.to_string())
}

pub async fn upsert_user(
    shard: &Shard,
    req: UpsertUserRequest,
    origin: Origin,
) -> Result<Answer, Failure> {
    let credential = StoredCredential {
        mechanism: req.mechanism.clone(),
        salt: Secret(req.salt.to_vec()),
        iterations: req.iterations,
        stored_key: Secret(req.stored_key.to_vec()),
        server_key: Secret(req.server_key.to_vec()),
    };
    validate_user_name(&req.name).map_err(invalid)?;
    credential.validate().map_err(invalid)?;
    let cmd = SecurityCommand::PutUser {
        name: req.name.clone(),
        credential,
    };
    shard
        .change_security(cmd, Request::UpsertUser(req), origin)
        .await?;
    Ok(Answer::Body(UpsertUserResponse {}.into()))
}

pub async fn delete_user(
    shard: &Shard,
    req: DeleteUserRequest,
    origin: Origin,
) -> Result<Answer, Failure> {
    let cmd = SecurityCommand::RemoveUser {
        name: req.name.clone(),
    };
    shard
        .change_security(cmd, Request::DeleteUser(req), origin)
        .await?;
    Ok(Answer::Body(DeleteUserResponse {}.into()))
}

pub fn list_users(shard: &Shard) -> Answer {
    let users = shard.with_security(|s| {
        s.user_list()
            .map(|(name, mechanism)| UserInfo {
                name: name.to_owned(),
                mechanism: mechanism.to_owned(),
            })
            .collect()
    });
    Answer::Body(ListUsersResponse { users }.into())
}

pub async fn alter_acl(
    shard: &Shard,
    req: AlterAclRequest,
    origin: Origin,
) -> Result<Answer, Failure> {
    let acl = AclRule::from_binding(req.binding.clone());
    acl.validate().map_err(invalid)?;
    let cmd = match req.add {
        true => SecurityCommand::AddAcl { acl },
        false => SecurityCommand::RemoveAcl { acl },
    };
    shard
        .change_security(cmd, Request::AlterAcl(req), origin)
        .await?;
    Ok(Answer::Body(AlterAclResponse {}.into()))
}

pub fn list_acls(shard: &Shard) -> Answer {
    let acls = shard.with_security(|s| s.acls().iter().map(AclRule::to_binding).collect());
    Answer::Body(ListAclsResponse { acls }.into())
}

/// A wire quota field as kept: -1 not set, 0 no limit, else the limit.
fn quota_field(name: &str, v: i64) -> Result<Option<u64>, Failure> {
    match v {
        QUOTA_DEFAULT => Ok(None),
        v => u64::try_from(v)
            .map(Some)
            .map_err(|_| invalid(format!("{name} {v}: -1 (default), 0 (no limit) or a limit"))),
    }
}

fn wire_field(v: Option<u64>) -> i64 {
    // Limits come in as i64, so they fit; saturate all the same.
    v.map_or(QUOTA_DEFAULT, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

pub async fn alter_quota(
    shard: &Shard,
    req: AlterQuotaRequest,
    origin: Origin,
) -> Result<Answer, Failure> {
    let q = &req.quota;
    let principal = q.principal.clone();
    let cmd = if req.remove {
        SecurityCommand::RemoveQuota { principal }
    } else {
        let quota = QuotaEntry {
            produce_bytes: quota_field("produce_bytes", q.produce_bytes)?,
            fetch_bytes: quota_field("fetch_bytes", q.fetch_bytes)?,
            requests: quota_field("requests", q.requests)?,
        };
        validate_quota(&principal, &quota).map_err(invalid)?;
        SecurityCommand::SetQuota { principal, quota }
    };
    shard
        .change_security(cmd, Request::AlterQuota(req), origin)
        .await?;
    Ok(Answer::Body(AlterQuotaResponse {}.into()))
}

pub fn list_quotas(shard: &Shard) -> Answer {
    let quotas = shard.with_security(|s| {
        s.quotas()
            .iter()
            .map(|(principal, q)| QuotaBinding {
                principal: principal.clone(),
                produce_bytes: wire_field(q.produce_bytes),
                fetch_bytes: wire_field(q.fetch_bytes),
                requests: wire_field(q.requests),
            })
            .collect()
    });
    Answer::Body(ListQuotasResponse { quotas }.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_fields_map_between_wire_and_state() {
        assert_eq!(quota_field("requests", -1).ok(), Some(None));
        assert_eq!(quota_field("requests", 0).ok(), Some(Some(0)));
        assert_eq!(quota_field("requests", 5).ok(), Some(Some(5)));
        assert!(quota_field("requests", -2).is_err());
        assert!(quota_field("requests", i64::MIN).is_err());
        for v in [None, Some(0), Some(5)] {
            assert_eq!(quota_field("x", wire_field(v)).ok(), Some(v));
        }
    }
}
