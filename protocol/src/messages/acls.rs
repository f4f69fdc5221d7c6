//! AlterAcl (key 23) and ListAcls (key 24): allow rules, per principal,
//! on topics, groups and the cluster (SPEC.md 5.24). What they mean to
//! each request is the broker's (`src/auth/acl.rs`); these are the bytes.

use bytes::{BufMut, BytesMut};

use crate::codec::{put_str, put_vec, Reader, Wire};
use crate::frame::FrameError;

/// What a rule is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ResourceType {
    Topic = 0,
    Group = 1,
    /// The broker itself: `alter` manages users, ACLs and quotas.
    Cluster = 2,
}

/// How a rule's name matches a resource name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PatternType {
    /// The name exactly.
    Literal = 0,
    /// Every name starting with it (`""` matches all).
    Prefix = 1,
}

/// What a rule allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operation {
    Produce = 0,
    Consume = 1,
    Describe = 2,
    Create = 3,
    Delete = 4,
    Join = 5,
    Commit = 6,
    Alter = 7,
}

impl ResourceType {
    pub const ALL: [ResourceType; 3] = [
        ResourceType::Topic,
        ResourceType::Group,
        ResourceType::Cluster,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ResourceType::Topic => "topic",
            ResourceType::Group => "group",
            ResourceType::Cluster => "cluster",
        }
    }

    /// The operations a rule on this kind of resource may name.
    pub fn operations(self) -> &'static [Operation] {
        use Operation::*;
        match self {
            ResourceType::Topic => &[Produce, Consume, Describe, Create, Delete],
            ResourceType::Group => &[Join, Describe, Commit],
            ResourceType::Cluster => &[Alter],
        }
    }
}

impl PatternType {
    pub fn as_str(self) -> &'static str {
        match self {
            PatternType::Literal => "literal",
            PatternType::Prefix => "prefix",
        }
    }
}

impl Operation {
    pub const ALL: [Operation; 8] = [
        Operation::Produce,
        Operation::Consume,
        Operation::Describe,
        Operation::Create,
        Operation::Delete,
        Operation::Join,
        Operation::Commit,
        Operation::Alter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Produce => "produce",
            Operation::Consume => "consume",
            Operation::Describe => "describe",
            Operation::Create => "create",
            Operation::Delete => "delete",
            Operation::Join => "join",
            Operation::Commit => "commit",
            Operation::Alter => "alter",
        }
    }

    pub fn parse(s: &str) -> Option<Operation> {
        Operation::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// One allow rule: `principal` may do `operation` on the resources of
/// `resource` type whose name matches `name` per `pattern`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AclBinding {
    /// `User:<name>`.
    pub principal: String,
    pub resource: ResourceType,
    pub pattern: PatternType,
    pub name: String,
    pub operation: Operation,
}

/// Adds (`add = true`) or removes one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterAclRequest {
    pub add: bool,
    pub binding: AclBinding,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AlterAclResponse {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListAclsRequest {}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListAclsResponse {
    pub acls: Vec<AclBinding>,
}

empty_body!(AlterAclResponse, ListAclsRequest);

fn enum_u8<T: Copy>(r: &mut Reader<'_>, all: &[T], what: &str) -> Result<T, FrameError> {
    let v = r.u8()?;
    all.get(usize::from(v))
        .copied()
        .ok_or_else(|| FrameError::Malformed(format!("{what} {v} is unknown").into()))
}

impl Wire for AclBinding {
    const MIN_LEN: usize = 2 + 1 + 1 + 2 + 1;

    fn encode(&self, buf: &mut BytesMut) {
        put_str(buf, &self.principal);
        buf.put_u8(self.resource as u8);
        buf.put_u8(self.pattern as u8);
        put_str(buf, &self.name);
        buf.put_u8(self.operation as u8);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(AclBinding {
            principal: r.string()?,
            resource: enum_u8(r, &ResourceType::ALL, "resource type")?,
            pattern: enum_u8(
                r,
                &[PatternType::Literal, PatternType::Prefix],
                "pattern type",
            )?,
            name: r.string()?,
            operation: enum_u8(r, &Operation::ALL, "operation")?,
        })
    }
}

impl Wire for AlterAclRequest {
    const MIN_LEN: usize = 1 + AclBinding::MIN_LEN;

    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(u8::from(self.add));
        self.binding.encode(buf);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        let add = match r.u8()? {
            0 => false,
            1 => true,
            v => {
                return Err(FrameError::Malformed(
                    format!("action {v} is not 0 or 1").into(),
                ))
            }
        };
        Ok(AlterAclRequest {
            add,
            binding: AclBinding::decode(r)?,
        })
    }
}

impl Wire for ListAclsResponse {
    const MIN_LEN: usize = 4;

    fn encode(&self, buf: &mut BytesMut) {
        put_vec(buf, &self.acls);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, FrameError> {
        Ok(ListAclsResponse { acls: r.vec()? })
    }
}
