//! Allow rules and the one question dispatch asks of them: may this
//! principal do this operation on this resource? Deny by default: only a
//! rule allows, and super users need none.
//!
//! A rule names a principal (`User:alice`), a resource type (topic, group,
//! cluster), a name matched literally or as a prefix (`orders.*` on the
//! command line is the prefix `orders.`), and one operation. `describe` is
//! implied by every other operation on the same resource: whoever may
//! consume a topic may also see it in Metadata.

use std::fmt;

use ringmq_protocol::{AclBinding, Operation, PatternType, ResourceType};
use serde::{Deserialize, Serialize};

use super::store::{validate_user_name, Security, SecurityError};

/// The principal of every user: `User:<name>`.
pub const USER_PREFIX: &str = "User:";

/// How a rule's name matches.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Pattern {
    Literal(String),
    /// Every name starting with it; `""` matches every name.
    Prefix(String),
}

impl Pattern {
    pub fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Literal(l) => l == name,
            Pattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }

    /// `orders.*` is the prefix `orders.`, `*` every name, anything else
    /// the literal name; `prefix` forces a prefix.
    pub fn parse(text: &str, prefix: bool) -> Pattern {
        match text.strip_suffix('*') {
            Some(p) => Pattern::Prefix(p.to_owned()),
            None if prefix => Pattern::Prefix(text.to_owned()),
            None => Pattern::Literal(text.to_owned()),
        }
    }
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AclRule {
    pub principal: String,
    #[serde(with = "resource_text")]
    pub resource: ResourceType,
    pub pattern: Pattern,
    #[serde(with = "operation_text")]
    pub operation: Operation,
}

impl fmt::Display for AclRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match &self.pattern {
            Pattern::Literal(n) => n.clone(),
            Pattern::Prefix(p) => format!("{p}*"),
        };
        write!(
            f,
            "{} may {} {} {}",
            self.principal,
            self.operation.as_str(),
            self.resource.as_str(),
            name
        )
    }
}

impl AclRule {
    /// Checks the principal, and that the operation applies to the resource.
    pub fn validate(&self) -> Result<(), SecurityError> {
        let bad = |why: String| Err(SecurityError::InvalidAcl(why));
        principal_of(&self.principal)?;
        if !self.resource.operations().contains(&self.operation) {
            return bad(format!(
                "{} is not an operation on a {} (those are: {})",
                self.operation.as_str(),
                self.resource.as_str(),
                self.resource
                    .operations()
                    .iter()
                    .map(|o| o.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        let name = match &self.pattern {
            Pattern::Literal(n) | Pattern::Prefix(n) => n,
        };
        if name.len() > 255 {
            return bad("resource name longer than 255 bytes".into());
        }
        Ok(())
    }

    pub fn from_binding(b: AclBinding) -> AclRule {
        AclRule {
            principal: b.principal,
            resource: b.resource,
            pattern: match b.pattern {
                PatternType::Literal => Pattern::Literal(b.name),
                PatternType::Prefix => Pattern::Prefix(b.name),
            },
            operation: b.operation,
        }
    }

    pub fn to_binding(&self) -> AclBinding {
        let (pattern, name) = match &self.pattern {
            Pattern::Literal(n) => (PatternType::Literal, n.clone()),
            Pattern::Prefix(p) => (PatternType::Prefix, p.clone()),
        };
        AclBinding {
            principal: self.principal.clone(),
            resource: self.resource,
            pattern,
            name,
            operation: self.operation,
        }
    }
}

/// `User:alice`, or a bare `alice` read as `User:alice`.
pub fn principal_of(text: &str) -> Result<String, SecurityError> {
    let name = text.strip_prefix(USER_PREFIX).unwrap_or(text);
    validate_user_name(name)?;
    Ok(format!("{USER_PREFIX}{name}"))
}

/// Answers "may this principal do that" for one request.
pub struct Authorizer<'a> {
    security: &'a Security,
    principal: &'a str,
    is_super: bool,
}

impl<'a> Authorizer<'a> {
    /// `is_super`: a super user (config), the bootstrap admin, or another
    /// node of the cluster; such a principal needs no rule.
    pub fn new(security: &'a Security, principal: &'a str, is_super: bool) -> Authorizer<'a> {
        Authorizer {
            security,
            principal,
            is_super,
        }
    }

    pub fn allows(&self, resource: ResourceType, name: &str, operation: Operation) -> bool {
        if self.is_super {
            return true;
        }
        self.security.acls().iter().any(|r| {
            r.principal == self.principal
                && r.resource == resource
                && (r.operation == operation || operation == Operation::Describe)
                && r.pattern.matches(name)
        })
    }
}

mod resource_text {
    use ringmq_protocol::ResourceType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &ResourceType, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ResourceType, D::Error> {
        let text = String::deserialize(d)?;
        ResourceType::ALL
            .into_iter()
            .find(|r| r.as_str() == text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown resource type {text:?}")))
    }
}

mod operation_text {
    use ringmq_protocol::Operation;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(o: &Operation, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(o.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Operation, D::Error> {
        let text = String::deserialize(d)?;
        Operation::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown operation {text:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::store::SecurityCommand;
    use Operation::*;
    use ResourceType::*;

    fn with(rules: &[(&str, ResourceType, Pattern, Operation)]) -> Security {
        let mut s = Security::default();
        for (p, r, pat, op) in rules {
            s.apply(&SecurityCommand::AddAcl {
                acl: AclRule {
                    principal: (*p).into(),
                    resource: *r,
                    pattern: pat.clone(),
                    operation: *op,
                },
            })
            .unwrap();
        }
        s
    }

    #[test]
    fn literal_prefix_and_deny_by_default() {
        let s = with(&[
            ("User:alice", Topic, Pattern::Literal("a".into()), Consume),
            (
                "User:alice",
                Topic,
                Pattern::parse("orders.*", false),
                Produce,
            ),
            ("User:alice", Group, Pattern::parse("billing", true), Join),
        ]);
        let alice = Authorizer::new(&s, "User:alice", false);
        // (resource, name, operation, allowed)
        let cases = [
            (Topic, "a", Consume, true),
            (Topic, "a", Describe, true),
            (Topic, "a", Produce, false),
            (Topic, "ab", Consume, false),
            (Topic, "b", Consume, false),
            (Topic, "orders.eu", Produce, true),
            (Topic, "orders", Produce, false),
            (Topic, "orders.eu", Consume, false),
            (Group, "billing-2", Join, true),
            (Group, "billing-2", Commit, false),
            (Group, "a", Consume, false),
            (Cluster, "", Alter, false),
        ];
        for (r, n, o, want) in cases {
            assert_eq!(alice.allows(r, n, o), want, "{r:?} {n} {o:?}");
        }
        let bob = Authorizer::new(&s, "User:bob", false);
        assert!(!bob.allows(Topic, "a", Consume), "no rule: denied");
        assert!(!bob.allows(Topic, "a", Describe));
        let root = Authorizer::new(&s, "User:bob", true);
        assert!(root.allows(Topic, "anything", Delete), "super user");
        assert!(root.allows(Cluster, "", Alter));
        let all = with(&[("User:c", Topic, Pattern::parse("*", false), Describe)]);
        assert!(Authorizer::new(&all, "User:c", false).allows(Topic, "x", Describe));
        assert!(!Authorizer::new(&all, "User:c", false).allows(Topic, "x", Consume));
    }

    #[test]
    fn rules_are_checked() {
        let bad = AclRule {
            principal: "User:alice".into(),
            resource: Group,
            pattern: Pattern::Literal("g".into()),
            operation: Produce,
        };
        assert!(bad.validate().is_err());
        assert!(principal_of("User:has space").is_err());
        assert_eq!(principal_of("alice").unwrap(), "User:alice");
        let ok = AclRule {
            operation: Join,
            ..bad
        };
        assert_eq!(AclRule::from_binding(ok.to_binding()), ok);
        let json = serde_json::to_string(&ok).unwrap();
        assert!(json.contains("\"join\""), "{json}");
        assert_eq!(serde_json::from_str::<AclRule>(&json).unwrap(), ok);
    }
}
