//! API keys and the versions of each this build speaks.

use std::fmt;

/// Which request a frame carries. Values are part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum ApiKey {
    ApiVersions = 0,
    Metadata = 1,
    CreateTopic = 2,
    DeleteTopic = 3,
    ListTopics = 4,
    Produce = 5,
    Fetch = 6,
    ListOffsets = 7,
    JoinGroup = 8,
    Heartbeat = 9,
    LeaveGroup = 10,
    CommitOffsets = 11,
    FetchOffsets = 12,
    DescribeGroup = 13,
    ListGroups = 14,
    ForwardHello = 15,
    ReplicaFetch = 16,
    InitProducerId = 17,
    SaslHandshake = 18,
    SaslAuthenticate = 19,
    UpsertUser = 20,
    DeleteUser = 21,
    ListUsers = 22,
    AlterAcl = 23,
    ListAcls = 24,
    AlterQuota = 25,
    ListQuotas = 26,
}

impl ApiKey {
    /// Every api this build implements, in key order.
    pub const ALL: [ApiKey; 27] = [
        ApiKey::ApiVersions,
        ApiKey::Metadata,
        ApiKey::CreateTopic,
        ApiKey::DeleteTopic,
        ApiKey::ListTopics,
        ApiKey::Produce,
        ApiKey::Fetch,
        ApiKey::ListOffsets,
        ApiKey::JoinGroup,
        ApiKey::Heartbeat,
        ApiKey::LeaveGroup,
        ApiKey::CommitOffsets,
        ApiKey::FetchOffsets,
        ApiKey::DescribeGroup,
        ApiKey::ListGroups,
        ApiKey::ForwardHello,
        ApiKey::ReplicaFetch,
        ApiKey::InitProducerId,
        ApiKey::SaslHandshake,
        ApiKey::SaslAuthenticate,
        ApiKey::UpsertUser,
        ApiKey::DeleteUser,
        ApiKey::ListUsers,
        ApiKey::AlterAcl,
        ApiKey::ListAcls,
        ApiKey::AlterQuota,
        ApiKey::ListQuotas,
    ];

    pub fn from_u16(v: u16) -> Option<ApiKey> {
        ApiKey::ALL.get(usize::from(v)).copied()
    }

    pub fn as_u16(self) -> u16 {
        self as u16
    }

    pub fn name(self) -> &'static str {
        match self {
            ApiKey::ApiVersions => "ApiVersions",
            ApiKey::Metadata => "Metadata",
            ApiKey::CreateTopic => "CreateTopic",
            ApiKey::DeleteTopic => "DeleteTopic",
            ApiKey::ListTopics => "ListTopics",
            ApiKey::Produce => "Produce",
            ApiKey::Fetch => "Fetch",
            ApiKey::ListOffsets => "ListOffsets",
            ApiKey::JoinGroup => "JoinGroup",
            ApiKey::Heartbeat => "Heartbeat",
            ApiKey::LeaveGroup => "LeaveGroup",
            ApiKey::CommitOffsets => "CommitOffsets",
            ApiKey::FetchOffsets => "FetchOffsets",
            ApiKey::DescribeGroup => "DescribeGroup",
            ApiKey::ListGroups => "ListGroups",
            ApiKey::ForwardHello => "ForwardHello",
            ApiKey::ReplicaFetch => "ReplicaFetch",
            ApiKey::InitProducerId => "InitProducerId",
            ApiKey::SaslHandshake => "SaslHandshake",
            ApiKey::SaslAuthenticate => "SaslAuthenticate",
            ApiKey::UpsertUser => "UpsertUser",
            ApiKey::DeleteUser => "DeleteUser",
            ApiKey::ListUsers => "ListUsers",
            ApiKey::AlterAcl => "AlterAcl",
            ApiKey::ListAcls => "ListAcls",
            ApiKey::AlterQuota => "AlterQuota",
            ApiKey::ListQuotas => "ListQuotas",
        }
    }

    /// Oldest version of this api this build decodes. Every api serves its
    /// newest version only: Produce and Fetch v0 had no `throttle_ms` (a
    /// broker enforcing quotas must be able to tell every client), and
    /// ForwardHello v0 carried no proof of the cluster secret (SPEC.md 5.17).
    pub fn min_version(self) -> u16 {
        self.max_version()
    }

    /// Newest version of this api this build decodes; requests are encoded at it.
    pub fn max_version(self) -> u16 {
        match self {
            ApiKey::Produce | ApiKey::Fetch | ApiKey::ForwardHello => 1,
            _ => 0,
        }
    }

    pub fn supports(self, version: u16) -> bool {
        (self.min_version()..=self.max_version()).contains(&version)
    }

    /// Whether the body starts with `group str`: the group apis, which the
    /// broker serves on the group's coordinator core.
    pub fn is_group_addressed(self) -> bool {
        matches!(
            self,
            ApiKey::JoinGroup
                | ApiKey::Heartbeat
                | ApiKey::LeaveGroup
                | ApiKey::CommitOffsets
                | ApiKey::FetchOffsets
                | ApiKey::DescribeGroup
        )
    }

    /// Whether the body starts with `topic str, partition u32`, the key the
    /// broker routes on (see [`crate::messages::route_key`]).
    pub fn is_partition_addressed(self) -> bool {
        matches!(self, ApiKey::Produce | ApiKey::Fetch | ApiKey::ListOffsets)
    }

    /// Whether a connection may send it before it has authenticated
    /// (when the broker requires authentication, SPEC.md 5.21).
    pub fn allowed_before_auth(self) -> bool {
        matches!(
            self,
            ApiKey::ApiVersions
                | ApiKey::SaslHandshake
                | ApiKey::SaslAuthenticate
                | ApiKey::ForwardHello
        )
    }

    /// The two apis of the SASL exchange, which the broker answers in
    /// order on the connection's reader, before reading further.
    pub fn is_sasl(self) -> bool {
        matches!(self, ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for (i, k) in ApiKey::ALL.iter().enumerate() {
            assert_eq!(k.as_u16() as usize, i);
            assert_eq!(ApiKey::from_u16(k.as_u16()), Some(*k));
        }
        assert_eq!(ApiKey::from_u16(27), None);
        assert_eq!(ApiKey::from_u16(u16::MAX), None);
    }
}
