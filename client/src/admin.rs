//! [`Admin`]: topic administration and lookups, one request each; also the
//! read-only group calls (describe, list, committed offsets). They go to the
//! client's gateway, except ListOffsets, which goes to the partition's
//! leader (see the `router` module); every Metadata answer also updates the
//! client's map of the cluster.

use ringmq_protocol::{
    ApiVersionsRequest, ApiVersionsResponse, CreateTopicRequest, DeleteTopicRequest,
    DescribeGroupRequest, DescribeGroupResponse, ErrorCode, FetchOffsetsRequest, GroupSummary,
    ListGroupsRequest, ListOffsetsRequest, ListTopicsRequest, MetadataRequest, MetadataResponse,
    OffsetSpec, PartitionOffset, Request, TopicInfo, TopicMetadata,
};

use ringmq_protocol::{
    AclBinding, AlterAclRequest, AlterQuotaRequest, DeleteUserRequest, ListAclsRequest,
    ListQuotasRequest, ListUsersRequest, QuotaBinding, UpsertUserRequest, UserInfo, QUOTA_DEFAULT,
};

use crate::client::Client;
use crate::error::ClientError;

/// Admin calls on the client's connections. Errors from the broker
/// come back as [`ClientError::Broker`] with the code of SPEC.md section 6.
#[derive(Debug, Clone)]
pub struct Admin {
    client: Client,
}

impl Admin {
    pub fn new(client: Client) -> Admin {
        Admin { client }
    }

    /// Creates a topic. `TOPIC_ALREADY_EXISTS`, `INVALID_TOPIC_NAME`,
    /// `INVALID_PARTITIONS`, `INVALID_REPLICATION_FACTOR` come back as
    /// [`ClientError::Broker`].
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication: u16,
    ) -> Result<(), ClientError> {
        let req = Request::CreateTopic(CreateTopicRequest {
            name: name.to_owned(),
            partitions,
            replication,
        });
        expect!(self.client.request(&req).await?, CreateTopic).map(drop)
    }

    /// Creates user `name` or replaces its password. The SCRAM credential is
    /// derived here; the password is never sent.
    pub async fn upsert_user(&self, name: &str, password: &str) -> Result<(), ClientError> {
        let c = crate::sasl::new_credential(password)?;
        let req = Request::UpsertUser(UpsertUserRequest {
            name: name.to_owned(),
            mechanism: ringmq_protocol::scram::MECHANISM.into(),
            salt: c.salt.into(),
            iterations: c.iterations,
            stored_key: c.stored_key.to_vec().into(),
            server_key: c.server_key.to_vec().into(),
        });
        expect!(self.client.request(&req).await?, UpsertUser).map(drop)
    }

    pub async fn delete_user(&self, name: &str) -> Result<(), ClientError> {
        let req = Request::DeleteUser(DeleteUserRequest {
            name: name.to_owned(),
        });
        expect!(self.client.request(&req).await?, DeleteUser).map(drop)
    }

    /// Users and their mechanisms, by name.
    pub async fn list_users(&self) -> Result<Vec<UserInfo>, ClientError> {
        let req = Request::ListUsers(ListUsersRequest {});
        Ok(expect!(self.client.request(&req).await?, ListUsers)?.users)
    }

    /// Adds (`add`) or removes an allow rule.
    pub async fn alter_acl(&self, add: bool, binding: AclBinding) -> Result<(), ClientError> {
        let req = Request::AlterAcl(AlterAclRequest { add, binding });
        expect!(self.client.request(&req).await?, AlterAcl).map(drop)
    }

    pub async fn list_acls(&self) -> Result<Vec<AclBinding>, ClientError> {
        let req = Request::ListAcls(ListAclsRequest {});
        Ok(expect!(self.client.request(&req).await?, ListAcls)?.acls)
    }

    /// Sets a principal's quotas, all three fields (SPEC.md 5.26: -1 the
    /// broker's configured value, 0 no limit, else per second).
    pub async fn set_quota(&self, quota: QuotaBinding) -> Result<(), ClientError> {
        let req = Request::AlterQuota(AlterQuotaRequest {
            quota,
            remove: false,
        });
        expect!(self.client.request(&req).await?, AlterQuota).map(drop)
    }

    /// Removes a principal's quotas: the configured ones apply again.
    pub async fn remove_quota(&self, principal: &str) -> Result<(), ClientError> {
        let req = Request::AlterQuota(AlterQuotaRequest {
            quota: QuotaBinding {
                principal: principal.to_owned(),
                produce_bytes: QUOTA_DEFAULT,
                fetch_bytes: QUOTA_DEFAULT,
                requests: QUOTA_DEFAULT,
            },
            remove: true,
        });
        expect!(self.client.request(&req).await?, AlterQuota).map(drop)
    }

    /// Every principal's quotas, by principal.
    pub async fn list_quotas(&self) -> Result<Vec<QuotaBinding>, ClientError> {
        let req = Request::ListQuotas(ListQuotasRequest {});
        Ok(expect!(self.client.request(&req).await?, ListQuotas)?.quotas)
    }

    /// Deletes a topic and its data.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        let req = Request::DeleteTopic(DeleteTopicRequest {
            name: name.to_owned(),
        });
        expect!(self.client.request(&req).await?, DeleteTopic).map(drop)
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        let req = Request::ListTopics(ListTopicsRequest {});
        Ok(expect!(self.client.request(&req).await?, ListTopics)?.topics)
    }

    /// Brokers and partition leaders; `None` asks for every topic.
    pub async fn metadata(&self, topics: Option<&[&str]>) -> Result<MetadataResponse, ClientError> {
        let req = Request::Metadata(MetadataRequest {
            topics: topics.map(|t| t.iter().map(|s| (*s).to_owned()).collect()),
        });
        let resp = expect!(self.client.request(&req).await?, Metadata)?;
        self.client.observe_metadata(&resp);
        Ok(resp)
    }

    /// The metadata of one topic; a topic the broker reports with an error
    /// (`UNKNOWN_TOPIC`) is returned as that error.
    pub async fn topic_metadata(&self, topic: &str) -> Result<TopicMetadata, ClientError> {
        let meta = self.metadata(Some(&[topic])).await?;
        let t = meta
            .topics
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| ClientError::Broker {
                code: ErrorCode::UnknownTopic,
                message: format!("topic {topic} does not exist"),
            })?;
        if t.error_code != ErrorCode::None {
            return Err(ClientError::Broker {
                code: t.error_code,
                message: format!("topic {topic}: {}", t.error_code),
            });
        }
        Ok(t)
    }

    /// The topic's partition count (from its metadata).
    pub async fn partition_count(&self, topic: &str) -> Result<u32, ClientError> {
        let t = self.topic_metadata(topic).await?;
        let n = u32::try_from(t.partitions.len()).unwrap_or(u32::MAX);
        if n == 0 {
            return Err(ClientError::Broker {
                code: ErrorCode::UnknownTopic,
                message: format!("topic {topic} has no partitions"),
            });
        }
        Ok(n)
    }

    /// The offset `spec` names in one partition: `Earliest` is the log start,
    /// `Latest` the high watermark (the offset of the next record).
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<u64, ClientError> {
        let req = Request::ListOffsets(ListOffsetsRequest {
            topic: topic.to_owned(),
            partition,
            spec,
        });
        let (target, version) = self.client.target(topic, partition);
        let (conn, target) = self.client.connection_to(target).await?;
        let answer = match conn.request(&req).await {
            Ok(Some(body)) => Ok(body),
            Ok(None) => Err(ClientError::InvalidInput(
                "a ListOffsets got no response".into(),
            )),
            Err(e) => {
                self.client.report_failure(target, version, &e);
                Err(e)
            }
        };
        Ok(expect!(answer?, ListOffsets)?.offset)
    }

    /// The apis and versions the broker speaks.
    pub async fn api_versions(&self) -> Result<ApiVersionsResponse, ClientError> {
        let req = Request::ApiVersions(ApiVersionsRequest {});
        expect!(self.client.request(&req).await?, ApiVersions)
    }

    /// Everything about one group: state, generation, members and, per
    /// partition, holder, committed offset and end offset. An unknown group
    /// is described as empty, generation 0.
    pub async fn describe_group(&self, group: &str) -> Result<DescribeGroupResponse, ClientError> {
        let req = Request::DescribeGroup(DescribeGroupRequest {
            group: group.to_owned(),
        });
        expect!(self.client.request(&req).await?, DescribeGroup)
    }

    /// Every group with members or committed offsets, by group id.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>, ClientError> {
        let req = Request::ListGroups(ListGroupsRequest {});
        Ok(expect!(self.client.request(&req).await?, ListGroups)?.groups)
    }

    /// A group's committed offsets in `topics` (every topic it has offsets
    /// for when empty), by topic then partition; a partition with none is
    /// absent.
    pub async fn fetch_offsets(
        &self,
        group: &str,
        topics: &[String],
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let req = Request::FetchOffsets(FetchOffsetsRequest {
            group: group.to_owned(),
            topics: topics.to_vec(),
        });
        Ok(expect!(self.client.request(&req).await?, FetchOffsets)?.offsets)
    }
}
