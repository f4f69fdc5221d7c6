//! The consumer group apis (SPEC 5.10-5.16): a group's request goes to the
//! group's coordinator core, which answers it (src/shard/groups.rs);
//! ListGroups asks every core.

use ringmq_protocol::ListGroupsResponse;

use super::handlers::Answer;
use crate::shard::{Failure, GroupRequest, Shard};

/// JoinGroup, Heartbeat, LeaveGroup, CommitOffsets, FetchOffsets, DescribeGroup.
pub async fn group(shard: &Shard, req: GroupRequest) -> Result<Answer, Failure> {
    shard.group_request(req).await.map(Answer::Body)
}

pub async fn list_groups(shard: &Shard) -> Result<Answer, Failure> {
    let groups = shard.list_groups().await?;
    Ok(Answer::Body(ListGroupsResponse { groups }.into()))
}
