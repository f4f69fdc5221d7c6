//! The admin apis of users and ACLs (SPEC.md 5.23, 5.24): check what the
//! request asks, then change the state through the shard
//! (`shard/security.rs`), or list it. Listings carry names, mechanisms and
//! rules, never key material.

use ringmq_protocol::{
    AlterAclRequest, AlterAclResponse, DeleteUserRequest, DeleteUserResponse, ErrorCode,
    ListAclsResponse, ListUsersResponse, Request, UpsertUserRequest, UpsertUserResponse, UserInfo,
};

use super::handlers::Answer;
use crate::auth::acl::AclRule;
use crate::auth::store::validate_user_name;
use crate::auth::{Secret, SecurityCommand, StoredCredential};
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
