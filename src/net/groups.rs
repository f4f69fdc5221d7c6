//! The consumer group apis (SPEC 5.10-5.16): a group's request goes to the
//! group's coordinator (in a cluster, the node that leads the group's
//! `__offsets` partition; on the node, the core that owns it, see
//! src/shard/groups.rs); ListGroups asks every core, and in a cluster every
//! live node.

use ringmq_protocol::{ErrorCode, ListGroupsRequest, ListGroupsResponse, Request, ResponseBody};

use super::handlers::Answer;
use crate::shard::{Failure, GroupRequest, Origin, Route, Shard};

/// JoinGroup, Heartbeat, LeaveGroup, CommitOffsets, FetchOffsets, DescribeGroup.
pub async fn group(shard: &Shard, req: GroupRequest, origin: Origin) -> Result<Answer, Failure> {
    match shard.group_route(req.group(), origin)? {
        Route::Local => shard.group_request(req).await.map(Answer::Body),
        Route::Remote { node, addr } => {
            let answer = shard
                .forward(node, addr, &req.into_request(), ErrorCode::NotCoordinator)
                .await?;
            answer
                .map(Answer::Body)
                .ok_or_else(|| Failure::internal(format!("node {node} did not answer")))
        }
    }
}

/// Every group this node coordinates and, asked by a client in a cluster,
/// every group the other live nodes coordinate. A node that cannot be
/// reached is left out (and logged): its groups cannot be served either.
pub async fn list_groups(shard: &Shard, origin: Origin) -> Result<Answer, Failure> {
    let mut groups = shard.list_groups().await?;
    if let (Some(view), Origin::Client) = (shard.view(), origin) {
        for (node, addr) in view.other_live_brokers() {
            let req = Request::ListGroups(ListGroupsRequest {});
            match shard
                .forward(node, addr, &req, ErrorCode::NotCoordinator)
                .await
            {
                Ok(Some(ResponseBody::ListGroups(r))) => groups.extend(r.groups),
                Ok(other) => tracing::warn!(node, ?other, "unexpected answer to ListGroups"),
                Err(e) => tracing::warn!(node, error = %e, "ListGroups: node left out"),
            }
        }
        groups.sort_by(|a, b| a.group.cmp(&b.group));
    }
    Ok(Answer::Body(ListGroupsResponse { groups }.into()))
}
