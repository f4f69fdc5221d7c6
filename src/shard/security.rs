//! Users, ACLs and quotas on a shard: every core holds the same `Arc<Security>`,
//! read by dispatch without a message. Changes go through the cluster's
//! Raft log (forwarded to the controller leader like a topic change) or,
//! on a single node, through shard 0, which rewrites `security.json` and
//! hands the new state to every core before answering.

use std::sync::Arc;

use ringmq_protocol::{ErrorCode, Request};

use super::{blocking, Failure, Origin, Shard, ShardMsg, CATALOGUE_SHARD};
use crate::auth::store::{self, Security, SecurityCommand, SecurityError};
use crate::cluster::metadata::Command;

impl Shard {
    /// Reads this core's users and ACLs (no reference count touched).
    pub fn with_security<T>(&self, f: impl FnOnce(&Security) -> T) -> T {
        f(&self.security.borrow())
    }

    /// Applies `cmd` wherever this broker keeps its users and ACLs, and
    /// answers once this core sees the result. `request` is what the
    /// client sent, forwarded as is to the controller leader in a cluster.
    pub async fn change_security(
        &self,
        cmd: SecurityCommand,
        request: Request,
        origin: Origin,
    ) -> Result<(), Failure> {
        if self.is_clustered() {
            let check = cmd.clone();
            return self
                .change_topics(Command::Security(cmd), request, origin, move |v| {
                    v.security.reflects(&check)
                })
                .await;
        }
        if self.id != CATALOGUE_SHARD {
            return self
                .ask(CATALOGUE_SHARD, |reply| ShardMsg::ChangeSecurity {
                    cmd,
                    reply,
                })
                .await;
        }
        self.change_security_here(cmd).await
    }

    /// Shard 0 of a single node: apply, persist, give every core the result.
    pub(super) async fn change_security_here(&self, cmd: SecurityCommand) -> Result<(), Failure> {
        let _guard = self.lock_catalogue().await?;
        let mut next = (**self.security.borrow()).clone();
        next.apply(&cmd).map_err(refused)?;
        let state = Arc::new(next);
        let (dir, saved) = (self.config.data_dir.clone(), state.clone());
        blocking(move || store::store(&dir, &saved))
            .await
            .map_err(Failure::internal)?;
        self.install_security(state.clone());
        self.broadcast(|reply| ShardMsg::Security {
            state: state.clone(),
            reply,
        })
        .await?;
        tracing::info!(change = %describe(&cmd), "users, ACLs or quotas changed");
        Ok(())
    }

    /// Makes `state` this core's, and its quotas the node's (every core
    /// does; only the first to see a change touches the buckets).
    pub(super) fn install_security(&self, state: Arc<Security>) {
        crate::quota::set_metadata(state.quotas());
        *self.security.borrow_mut() = state;
    }
}

/// A refused change, as the client is told.
fn refused(e: SecurityError) -> Failure {
    Failure::new(ErrorCode::InvalidRequest, e.to_string())
}

/// A change in words, for the log: names and rules, no key material.
fn describe(cmd: &SecurityCommand) -> String {
    match cmd {
        SecurityCommand::PutUser { name, .. } => format!("user {name} set"),
        SecurityCommand::RemoveUser { name } => format!("user {name} removed"),
        SecurityCommand::AddAcl { acl } => format!("ACL added: {acl}"),
        SecurityCommand::RemoveAcl { acl } => format!("ACL removed: {acl}"),
        SecurityCommand::SetQuota { principal, quota } => {
            format!("quota of {principal} set: {quota:?}")
        }
        SecurityCommand::RemoveQuota { principal } => format!("quota of {principal} removed"),
    }
}
