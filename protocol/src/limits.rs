//! Every size limit of the protocol in one place, so the broker, the client
//! and SPEC.md agree. A frame or field past a limit is refused before anything
//! is allocated for it.

use crate::batch::MAX_BATCH_BYTES;

/// Largest request frame, counted as the bytes after the frame's `length`
/// field: one maximal record batch plus headroom for the header and the other
/// fields of a Produce request.
pub const MAX_REQUEST_FRAME: usize = MAX_BATCH_BYTES + (64 << 10);

/// Largest response frame, counted as the bytes after the `length` field.
/// A Fetch response holds at most [`MAX_FETCH_BYTES`] plus one batch that may
/// overshoot it, so it always fits.
pub const MAX_RESPONSE_FRAME: usize = 16 << 20;

/// Most record bytes one Fetch response carries; a larger `max_bytes` is
/// clamped to this.
pub const MAX_FETCH_BYTES: u32 = 8 << 20;

/// Longest a Fetch may long-poll; a larger `max_wait_ms` is clamped to this.
pub const MAX_FETCH_WAIT_MS: u32 = 30_000;

/// Longest topic name, in bytes.
pub const MAX_NAME_LEN: usize = 249;

/// Most partitions one topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// Most items a decoded array may claim. Independently of this cap, a count
/// whose items could not fit in the bytes that remain is refused, so a
/// decoder never reserves memory on the word of an untrusted count.
pub const MAX_ARRAY_LEN: usize = 1 << 20;

// A maximal Produce (header 8, topic 2+249, partition 4, acks 1, timeout 4,
// batch 4+max) fits a request; a maximal Fetch response fits a response.
const _: () = assert!(8 + 2 + MAX_NAME_LEN + 4 + 1 + 4 + 4 + MAX_BATCH_BYTES <= MAX_REQUEST_FRAME);
const _: () = assert!(MAX_FETCH_BYTES as usize + MAX_BATCH_BYTES + 64 <= MAX_RESPONSE_FRAME);

/// Shortest session timeout a group member may ask for, in ms.
pub const MIN_SESSION_TIMEOUT_MS: u32 = 500;

/// Longest session timeout a group member may ask for, in ms.
pub const MAX_SESSION_TIMEOUT_MS: u32 = 300_000;

/// Longest group id and instance id, in bytes.
pub const MAX_GROUP_ID_LEN: usize = 249;

/// Most members one group has; a join past it is `GROUP_FULL`.
pub const MAX_GROUP_MEMBERS: usize = 1_000;

/// Most topics one group consumes.
pub const MAX_GROUP_TOPICS: usize = 64;

/// Why a group id or instance id is refused (answered with `INVALID_GROUP_ID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum GroupIdError {
    #[error("group id is empty")]
    Empty,
    #[error("group id is {0} bytes, the limit is {max}", max = MAX_GROUP_ID_LEN)]
    TooLong(usize),
    #[error("group id may only hold printable ASCII without spaces")]
    BadChar,
}

/// Checks a group id (and a static member's instance id): 1..=249 bytes of
/// printable ASCII, no spaces.
pub fn validate_group_id(id: &str) -> Result<(), GroupIdError> {
    if id.is_empty() {
        return Err(GroupIdError::Empty);
    }
    if id.len() > MAX_GROUP_ID_LEN {
        return Err(GroupIdError::TooLong(id.len()));
    }
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(GroupIdError::BadChar);
    }
    Ok(())
}

/// Prefix of internal topic names (`__offsets`); users may not create them.
pub const INTERNAL_PREFIX: &str = "__";

/// Why a topic name is refused (answered with `INVALID_TOPIC_NAME`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TopicNameError {
    #[error("topic name is empty")]
    Empty,
    #[error("topic name is {0} bytes, the limit is {max}", max = MAX_NAME_LEN)]
    TooLong(usize),
    #[error("topic name may only hold [A-Za-z0-9._-]")]
    BadChar,
    #[error("topic names starting with `__` are reserved for internal topics")]
    Reserved,
    #[error("`.` and `..` are not topic names")]
    Dots,
}

/// Checks a name a user asks for: 1..=249 bytes of `[A-Za-z0-9._-]`, not `.`
/// or `..` (the name becomes a directory), not starting with `__`.
pub fn validate_topic_name(name: &str) -> Result<(), TopicNameError> {
    validate_name(name)?;
    if name.starts_with(INTERNAL_PREFIX) {
        return Err(TopicNameError::Reserved);
    }
    Ok(())
}

/// Like [`validate_topic_name`] but allows the reserved `__` prefix: for
/// names the broker itself creates.
pub fn validate_internal_topic_name(name: &str) -> Result<(), TopicNameError> {
    validate_name(name)
}

fn validate_name(name: &str) -> Result<(), TopicNameError> {
    if name.is_empty() {
        return Err(TopicNameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(TopicNameError::TooLong(name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(TopicNameError::BadChar);
    }
    if name == "." || name == ".." {
        return Err(TopicNameError::Dots);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        assert_eq!(validate_topic_name("orders.v1-EU_2"), Ok(()));
        assert_eq!(validate_topic_name(""), Err(TopicNameError::Empty));
        assert_eq!(validate_topic_name(&"a".repeat(249)), Ok(()));
        assert_eq!(
            validate_topic_name(&"a".repeat(250)),
            Err(TopicNameError::TooLong(250))
        );
        assert_eq!(validate_topic_name("a/b"), Err(TopicNameError::BadChar));
        assert_eq!(validate_topic_name("é"), Err(TopicNameError::BadChar));
        assert_eq!(validate_topic_name(".."), Err(TopicNameError::Dots));
        assert_eq!(
            validate_topic_name("__offsets"),
            Err(TopicNameError::Reserved)
        );
        assert_eq!(validate_internal_topic_name("__offsets"), Ok(()));
        assert_eq!(validate_topic_name("_x"), Ok(()));
    }

    #[test]
    fn group_ids() {
        assert_eq!(validate_group_id("workers/eu:1"), Ok(()));
        assert_eq!(validate_group_id(""), Err(GroupIdError::Empty));
        assert_eq!(validate_group_id(&"g".repeat(249)), Ok(()));
        assert_eq!(
            validate_group_id(&"g".repeat(250)),
            Err(GroupIdError::TooLong(250))
        );
        assert_eq!(validate_group_id("a b"), Err(GroupIdError::BadChar));
        assert_eq!(validate_group_id("a\nb"), Err(GroupIdError::BadChar));
        assert_eq!(validate_group_id("é"), Err(GroupIdError::BadChar));
    }
}
