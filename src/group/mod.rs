//! Consumer groups (issue 6): members of a group share the partitions of the
//! topics they subscribe to, each partition consumed by exactly one member.
//!
//! Only the assignment rule lives here so far: [`assignor::assign`], a pure
//! function that the group coordinator calls on every membership change.

pub mod assignor;

pub use assignor::{assign, reassigned, Assignment, MemberId, PartitionId};
