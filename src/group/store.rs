//! How groups are kept on disk: records in the internal log `__offsets`.
//!
//! `__offsets` has [`OFFSETS_PARTITIONS`] partitions, in
//! `data_dir/__offsets/<p>`, outside the topic catalogue. A group lives on
//! partition `xxh3_64(group id) % OFFSETS_PARTITIONS`; the core that owns
//! that partition (by the same placement ring as every partition) is the
//! group's coordinator; in a cluster, on the node that leads the partition,
//! whose copies on other nodes are replicated like a topic's (batches carry
//! the leader's epoch). The count can never change: a different count would
//! look for every group on another partition than the one holding it.
//!
//! Records are ordinary record batches (`ringmq_protocol::batch`) with a key
//! and a value. Replaying a partition from its start, in log order, restores
//! every group on it: an offset or membership record replaces what its key
//! held, a drop record removes offsets recorded before it, a forget record
//! removes the whole group as recorded before it. All integers
//! little-endian; `str` is a `u16` byte length and UTF-8 bytes.
//!
//! ```text
//! offset key:      u8 1 | str group | str topic | u32 partition
//! offset value:    u8 version=1 | u64 offset (next offset to consume)
//!
//! membership key:  u8 2 | str group
//! membership value: u8 version=2 | u32 generation
//!                  | u16 topic count | str topic ...
//!                  | u32 member count | member ...
//!                  | u32 fenced count | str member_id ...   (oldest first)
//! member:          str member_id | u8 has_instance (0/1) | [str instance_id]
//!                  | u32 session_timeout_ms | u32 acked_generation
//!                  | u32 target count | partition ... | u32 held count | partition ...
//! partition:       u16 index into the topics above | u32 partition
//!
//! drop key:        u8 3 | str group | str topic
//! drop value:      u8 version=1 | u8 whole (1: every partition of the topic;
//!                  0: those listed) | [u32 count | u32 partition ...] if 0
//!
//! forget key:      u8 4 | str group
//! forget value:    u8 version=1
//! ```
//!
//! Version 1 of the membership value (written by older brokers, still read)
//! had a `u16` member count and no fenced list.
//!
//! A drop record is written when a topic is deleted (whole topic: its
//! offsets must not come back, not even for a topic recreated under the
//! name), and to undo a commit that could not be made durable (the
//! partitions that had no offset before it). A forget record is written
//! when a group is left with no members and no committed offsets.
//!
//! A membership record is written on every membership change: a generation
//! bump, a static member replacing itself, a partition handed over. A
//! heartbeat that changes nothing writes nothing. A commit writes one offset
//! record per partition, in one batch.
//!
//! Compaction: a partition that grew past [`COMPACT_SEGMENTS`] segments gets
//! the live state of its groups (one membership record per group, one offset
//! record per committed offset) appended at its head, and once that is
//! durable the whole segments before it are dropped.

use std::collections::BTreeMap;

use bytes::{Buf, BufMut, Bytes};
use xxhash_rust::xxh3::xxh3_64;

use ringmq_protocol::batch::BatchBuilder;

use super::assignor::PartitionId;
use super::coordinator::{Group, Membership, StoredMember};

/// Name of the internal log (under the data dir; `__` keeps it out of the
/// user's topic names).
pub const OFFSETS_TOPIC: &str = "__offsets";

/// Partitions of `__offsets`. Fixed forever: see the module doc.
pub const OFFSETS_PARTITIONS: u32 = 8;

/// Segments an `__offsets` partition may have before it is compacted.
pub const COMPACT_SEGMENTS: usize = 4;

/// Segment size of `__offsets` partitions: small, so compaction frees space
/// early and an idle broker reserves little.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// Reserve-ahead window of `__offsets` partitions.
pub const RESERVE_AHEAD_BYTES: u64 = 256 << 10;

/// Records per batch are cut below this many bytes (the batch limit is 1 MiB).
const BATCH_TARGET_BYTES: usize = 256 << 10;

const KIND_OFFSET: u8 = 1;
const KIND_MEMBERSHIP: u8 = 2;
const KIND_DROP: u8 = 3;
const KIND_FORGET: u8 = 4;
/// Version of the offset, drop and forget values.
const VERSION: u8 = 1;
/// Version of the membership value written now (1 is still read).
const MEMBERSHIP_VERSION: u8 = 2;

/// The `__offsets` partition a group lives on.
pub fn partition_of(group: &str) -> u32 {
    (xxh3_64(group.as_bytes()) % u64::from(OFFSETS_PARTITIONS)) as u32
}

/// A record that could not be decoded. A valid batch holding one means a
/// bug or a newer broker's format; replay skips it and says so.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("undecodable __offsets record: {0}")]
pub struct StoreError(pub &'static str);

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredRecord {
    Offset {
        group: String,
        partition: PartitionId,
        offset: u64,
    },
    Membership {
        group: String,
        membership: Membership,
    },
    /// Committed offsets of `topic` dropped: `partitions`, or all if `None`.
    Dropped {
        group: String,
        topic: String,
        partitions: Option<Vec<u32>>,
    },
    /// The group forgotten.
    Forgotten { group: String },
}

/// A key and a value, ready for a batch.
pub type KeyValue = (Vec<u8>, Vec<u8>);

fn put_str(buf: &mut Vec<u8>, s: &str) {
    // Every string stored here is bounded far below 64 KiB (group and
    // instance ids 249, topic names 249, member ids 64).
    let len = s.len().min(usize::from(u16::MAX));
    buf.put_u16_le(len as u16);
    buf.put_slice(&s.as_bytes()[..len]);
}

fn get_str(buf: &mut &[u8]) -> Result<String, StoreError> {
    if buf.remaining() < 2 {
        return Err(StoreError("string length"));
    }
    let len = usize::from(buf.get_u16_le());
    if buf.remaining() < len {
        return Err(StoreError("string bytes"));
    }
    let s = std::str::from_utf8(&buf[..len]).map_err(|_| StoreError("string is not UTF-8"))?;
    let s = s.to_owned();
    buf.advance(len);
    Ok(s)
}

fn get_u8(buf: &mut &[u8]) -> Result<u8, StoreError> {
    if buf.remaining() < 1 {
        return Err(StoreError("truncated"));
    }
    Ok(buf.get_u8())
}

fn get_u16(buf: &mut &[u8]) -> Result<u16, StoreError> {
    if buf.remaining() < 2 {
        return Err(StoreError("truncated"));
    }
    Ok(buf.get_u16_le())
}

fn get_u32(buf: &mut &[u8]) -> Result<u32, StoreError> {
    if buf.remaining() < 4 {
        return Err(StoreError("truncated"));
    }
    Ok(buf.get_u32_le())
}

fn get_u64(buf: &mut &[u8]) -> Result<u64, StoreError> {
    if buf.remaining() < 8 {
        return Err(StoreError("truncated"));
    }
    Ok(buf.get_u64_le())
}

/// The record of one committed offset.
pub fn offset_record(group: &str, partition: &PartitionId, offset: u64) -> KeyValue {
    let mut key = Vec::with_capacity(1 + 2 + group.len() + 2 + partition.topic.len() + 4);
    key.put_u8(KIND_OFFSET);
    put_str(&mut key, group);
    put_str(&mut key, &partition.topic);
    key.put_u32_le(partition.partition);
    let mut value = Vec::with_capacity(9);
    value.put_u8(VERSION);
    value.put_u64_le(offset);
    (key, value)
}

/// The record of a group's membership.
pub fn membership_record(group: &str, m: &Membership) -> KeyValue {
    let mut key = Vec::with_capacity(3 + group.len());
    key.put_u8(KIND_MEMBERSHIP);
    put_str(&mut key, group);
    let mut value = Vec::with_capacity(64 + m.members.len() * 64);
    value.put_u8(MEMBERSHIP_VERSION);
    value.put_u32_le(m.generation);
    value.put_u16_le(m.topics.len() as u16);
    for t in &m.topics {
        put_str(&mut value, t);
    }
    let index: BTreeMap<&str, u16> = m
        .topics
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i as u16))
        .collect();
    let put_partitions = |value: &mut Vec<u8>, ps: &[PartitionId]| {
        let known: Vec<(u16, u32)> = ps
            .iter()
            .filter_map(|p| index.get(p.topic.as_str()).map(|i| (*i, p.partition)))
            .collect();
        value.put_u32_le(known.len() as u32);
        for (i, p) in known {
            value.put_u16_le(i);
            value.put_u32_le(p);
        }
    };
    // Members are at most MAX_GROUP_MEMBERS, far below u32::MAX.
    value.put_u32_le(m.members.len() as u32);
    for member in &m.members {
        put_str(&mut value, &member.member_id);
        match &member.instance_id {
            Some(i) => {
                value.put_u8(1);
                put_str(&mut value, i);
            }
            None => value.put_u8(0),
        }
        value.put_u32_le(member.session_timeout_ms);
        value.put_u32_le(member.acked_generation);
        put_partitions(&mut value, &member.target);
        put_partitions(&mut value, &member.held);
    }
    value.put_u32_le(m.fenced.len() as u32);
    for f in &m.fenced {
        put_str(&mut value, f);
    }
    (key, value)
}

/// The record dropping a group's committed offsets of `topic`: `partitions`,
/// or every one if `None`.
pub fn drop_record(group: &str, topic: &str, partitions: Option<&[u32]>) -> KeyValue {
    let mut key = Vec::with_capacity(5 + group.len() + topic.len());
    key.put_u8(KIND_DROP);
    put_str(&mut key, group);
    put_str(&mut key, topic);
    let mut value = Vec::with_capacity(6 + partitions.map_or(0, |p| p.len() * 4));
    value.put_u8(VERSION);
    match partitions {
        None => value.put_u8(1),
        Some(ps) => {
            value.put_u8(0);
            value.put_u32_le(ps.len() as u32);
            for p in ps {
                value.put_u32_le(*p);
            }
        }
    }
    (key, value)
}

/// The record forgetting a group.
pub fn forget_record(group: &str) -> KeyValue {
    let mut key = Vec::with_capacity(3 + group.len());
    key.put_u8(KIND_FORGET);
    put_str(&mut key, group);
    (key, vec![VERSION])
}

/// Decodes one record.
pub fn decode(key: &[u8], value: &[u8]) -> Result<StoredRecord, StoreError> {
    let mut k = key;
    let kind = get_u8(&mut k)?;
    let group = get_str(&mut k)?;
    let mut v = value;
    let version = get_u8(&mut v)?;
    let known = match kind {
        KIND_MEMBERSHIP => version == 1 || version == MEMBERSHIP_VERSION,
        _ => version == VERSION,
    };
    if !known {
        return Err(StoreError("unknown record version"));
    }
    match kind {
        KIND_DROP => {
            let topic = get_str(&mut k)?;
            let partitions = match get_u8(&mut v)? {
                1 => None,
                0 => {
                    let n = get_u32(&mut v)?;
                    // n is untrusted: each entry is 4 bytes.
                    if v.remaining() / 4 < n as usize {
                        return Err(StoreError("partition list overruns the record"));
                    }
                    Some((0..n).map(|_| get_u32(&mut v)).collect::<Result<_, _>>()?)
                }
                _ => return Err(StoreError("drop flag")),
            };
            Ok(StoredRecord::Dropped {
                group,
                topic,
                partitions,
            })
        }
        KIND_FORGET => Ok(StoredRecord::Forgotten { group }),
        KIND_OFFSET => {
            let topic = get_str(&mut k)?;
            let partition = get_u32(&mut k)?;
            let offset = get_u64(&mut v)?;
            Ok(StoredRecord::Offset {
                group,
                partition: PartitionId::new(topic, partition),
                offset,
            })
        }
        KIND_MEMBERSHIP => {
            let generation = get_u32(&mut v)?;
            let topics = (0..get_u16(&mut v)?)
                .map(|_| get_str(&mut v))
                .collect::<Result<Vec<_>, _>>()?;
            let get_partitions = |v: &mut &[u8]| -> Result<Vec<PartitionId>, StoreError> {
                let n = get_u32(v)?;
                // n is untrusted: each entry is 6 bytes.
                if v.remaining() / 6 < n as usize {
                    return Err(StoreError("partition list overruns the record"));
                }
                (0..n)
                    .map(|_| {
                        let t = get_u16(v)?;
                        let p = get_u32(v)?;
                        let topic = topics
                            .get(usize::from(t))
                            .ok_or(StoreError("topic index out of range"))?;
                        Ok(PartitionId::new(topic.clone(), p))
                    })
                    .collect()
            };
            let n = if version == 1 {
                u32::from(get_u16(&mut v)?)
            } else {
                get_u32(&mut v)?
            };
            // n is untrusted: reserve no more than the bytes left could hold.
            let mut members = Vec::with_capacity((n as usize).min(v.remaining()));
            for _ in 0..n {
                let member_id = get_str(&mut v)?;
                let instance_id = match get_u8(&mut v)? {
                    0 => None,
                    1 => Some(get_str(&mut v)?),
                    _ => return Err(StoreError("instance id flag")),
                };
                let session_timeout_ms = get_u32(&mut v)?;
                let acked_generation = get_u32(&mut v)?;
                let target = get_partitions(&mut v)?;
                let held = get_partitions(&mut v)?;
                members.push(StoredMember {
                    member_id,
                    instance_id,
                    session_timeout_ms,
                    acked_generation,
                    target,
                    held,
                });
            }
            let fenced = if version == 1 {
                Vec::new()
            } else {
                let n = get_u32(&mut v)?;
                // n is untrusted: each id takes at least its 2-byte length.
                if v.remaining() / 2 < n as usize {
                    return Err(StoreError("fenced list overruns the record"));
                }
                (0..n)
                    .map(|_| get_str(&mut v))
                    .collect::<Result<Vec<_>, _>>()?
            };
            Ok(StoredRecord::Membership {
                group,
                membership: Membership {
                    generation,
                    topics,
                    members,
                    fenced,
                },
            })
        }
        _ => Err(StoreError("unknown record kind")),
    }
}

/// Applies a replayed record to the groups of one partition. Members come
/// back with `last_seen = now_ms`.
pub fn apply(groups: &mut BTreeMap<String, Group>, record: StoredRecord, now_ms: i64) {
    match record {
        StoredRecord::Offset {
            group,
            partition,
            offset,
        } => groups
            .entry(group.clone())
            .or_insert_with(|| Group::new(group))
            .apply_commit([(partition, offset)]),
        StoredRecord::Membership { group, membership } => groups
            .entry(group.clone())
            .or_insert_with(|| Group::new(group))
            .restore(membership, now_ms),
        StoredRecord::Dropped {
            group,
            topic,
            partitions,
        } => {
            if let Some(g) = groups.get_mut(&group) {
                g.drop_offsets(&topic, partitions.as_deref());
            }
        }
        StoredRecord::Forgotten { group } => {
            groups.remove(&group);
        }
    }
}

/// Everything to keep of a group: its membership and its committed offsets.
pub fn snapshot(group: &Group) -> Vec<KeyValue> {
    let mut out = Vec::with_capacity(1 + group.offsets().len());
    out.push(membership_record(group.id(), &group.membership()));
    out.extend(
        group
            .offsets()
            .iter()
            .map(|(p, o)| offset_record(group.id(), p, *o)),
    );
    out
}

/// Packs records into batches of at most about [`BATCH_TARGET_BYTES`]
/// (a single larger record gets a batch of its own).
pub fn batches(records: &[KeyValue], now_ms: i64) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut b = BatchBuilder::new(now_ms);
    for (k, v) in records {
        let size = BatchBuilder::record_size(Some(k), Some(v), &[]);
        if !b.is_empty() && b.size_bytes() + size > BATCH_TARGET_BYTES {
            out.push(std::mem::replace(&mut b, BatchBuilder::new(now_ms)).finish(None));
        }
        b.push(now_ms, Some(k), Some(v), &[]);
    }
    if !b.is_empty() {
        out.push(b.finish(None));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::batch::decode_records;

    fn membership() -> Membership {
        Membership {
            generation: 7,
            topics: vec!["a".into(), "b".into()],
            members: vec![
                StoredMember {
                    member_id: "m-1".into(),
                    instance_id: Some("worker-1".into()),
                    session_timeout_ms: 10_000,
                    acked_generation: 6,
                    target: vec![PartitionId::new("a", 0), PartitionId::new("b", 3)],
                    held: vec![PartitionId::new("a", 0)],
                },
                StoredMember {
                    member_id: "m-2".into(),
                    instance_id: None,
                    session_timeout_ms: 500,
                    acked_generation: 7,
                    target: vec![],
                    held: vec![PartitionId::new("b", 3)],
                },
            ],
            fenced: vec!["m-0".into()],
        }
    }

    #[test]
    fn records_round_trip() {
        let (k, v) = offset_record("g", &PartitionId::new("tasks", 5), 42);
        assert_eq!(
            decode(&k, &v).unwrap(),
            StoredRecord::Offset {
                group: "g".into(),
                partition: PartitionId::new("tasks", 5),
                offset: 42
            }
        );
        let m = membership();
        let (k, v) = membership_record("g", &m);
        assert_eq!(
            decode(&k, &v).unwrap(),
            StoredRecord::Membership {
                group: "g".into(),
                membership: m
            }
        );
    }

    #[test]
    fn the_offset_layout_is_as_documented() {
        let (k, v) = offset_record("g", &PartitionId::new("t", 2), 9);
        assert_eq!(k, [1, 1, 0, b'g', 1, 0, b't', 2, 0, 0, 0]);
        assert_eq!(v, [1, 9, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let (k, v) = membership_record("g", &membership());
        for cut in 0..v.len() {
            assert!(decode(&k, &v[..cut]).is_err(), "{cut}");
        }
        for cut in 0..k.len() {
            assert!(decode(&k[..cut], &v).is_err());
        }
        assert!(decode(&[9, 0, 0], &[1]).is_err());
        let mut huge = v.clone();
        // Claim 2^32-1 target partitions for the first member.
        let at = 1 + 4 + 2 + 3 + 3 + 4 + 5 + 1 + 10 + 4 + 4;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&k, &huge).is_err());
    }

    #[test]
    fn huge_counts_are_errors_not_allocations() {
        let (k, v) = membership_record("g", &membership());
        // The member count, then the fenced count (the last 4 + 2 + 3 bytes
        // are its count and the one id "m-0").
        let mut members = v.clone();
        members[1 + 4 + 2 + 3 + 3..][..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&k, &members).is_err());
        let mut fenced = v.clone();
        let at = v.len() - 4 - 2 - 3;
        fenced[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&k, &fenced).is_err());
        let (k, mut v) = drop_record("g", "t", Some(&[1, 2]));
        v[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&k, &v).is_err());
    }

    #[test]
    fn more_than_u16_members_round_trip() {
        let mut m = membership();
        let template = m.members[1].clone();
        m.members = (0..70_000)
            .map(|i| StoredMember {
                member_id: format!("m-{i}"),
                ..template.clone()
            })
            .collect();
        let (k, v) = membership_record("g", &m);
        assert_eq!(
            decode(&k, &v).unwrap(),
            StoredRecord::Membership {
                group: "g".into(),
                membership: m
            }
        );
    }

    #[test]
    fn version_1_membership_records_are_still_read() {
        // Written by the broker before fenced ids: u16 member count, no
        // fenced list, version byte 1.
        let m = membership();
        let (k, v2) = membership_record("g", &m);
        let members_at = 1 + 4 + 2 + 3 + 3;
        let fenced_len = 4 + 2 + 3;
        let mut v1 = vec![1];
        v1.extend_from_slice(&v2[1..members_at]);
        v1.extend_from_slice(&(m.members.len() as u16).to_le_bytes());
        v1.extend_from_slice(&v2[members_at + 4..v2.len() - fenced_len]);
        assert_eq!(
            decode(&k, &v1).unwrap(),
            StoredRecord::Membership {
                group: "g".into(),
                membership: Membership {
                    fenced: vec![],
                    ..m
                }
            }
        );
        let mut v3 = v2.clone();
        v3[0] = 3;
        assert!(decode(&k, &v3).is_err());
    }

    #[test]
    fn the_drop_and_forget_layouts_are_as_documented() {
        let (k, v) = drop_record("g", "t", None);
        assert_eq!(k, [3, 1, 0, b'g', 1, 0, b't']);
        assert_eq!(v, [1, 1]);
        let (_, v) = drop_record("g", "t", Some(&[2]));
        assert_eq!(v, [1, 0, 1, 0, 0, 0, 2, 0, 0, 0]);
        let (k, v) = forget_record("g");
        assert_eq!((k, v), (vec![4, 1, 0, b'g'], vec![1]));
    }

    #[test]
    fn drop_and_forget_records_apply_to_what_came_before() {
        let now = 1000;
        let mut g = BTreeMap::new();
        let (a0, a1, b0) = (
            PartitionId::new("a", 0),
            PartitionId::new("a", 1),
            PartitionId::new("b", 0),
        );
        for (k, v) in [
            offset_record("g", &a0, 1),
            offset_record("g", &a1, 2),
            offset_record("g", &b0, 3),
            membership_record("g", &membership()),
            drop_record("g", "a", None),
            // The topic recreated: new offsets count.
            offset_record("g", &a0, 7),
            drop_record("g", "b", Some(&[0])),
            offset_record("h", &a0, 9),
            drop_record("nobody", "a", None),
        ] {
            apply(&mut g, decode(&k, &v).unwrap(), now);
        }
        assert_eq!(g["g"].offsets().clone(), BTreeMap::from([(a0.clone(), 7)]));
        assert_eq!(g["g"].membership().fenced, vec!["m-0".to_string()]);
        let (k, v) = forget_record("g");
        apply(&mut g, decode(&k, &v).unwrap(), now);
        assert!(!g.contains_key("g"));
        assert!(!g.contains_key("nobody"));
        assert_eq!(g["h"].offsets()[&a0], 9);
    }

    #[test]
    fn the_newest_record_wins_on_replay() {
        let now = 1000;
        let mut g = BTreeMap::new();
        let p = PartitionId::new("a", 0);
        for (k, v) in [
            offset_record("g", &p, 1),
            membership_record("g", &membership()),
            offset_record("g", &p, 5),
        ] {
            apply(&mut g, decode(&k, &v).unwrap(), now);
        }
        let group = &g["g"];
        assert_eq!(group.generation(), 7);
        assert_eq!(group.offsets()[&p], 5);
        assert_eq!(group.members().len(), 2);
        assert!(group.members().values().all(|m| m.last_seen_ms == now));
    }

    #[test]
    fn snapshots_split_into_valid_batches() {
        let mut group = Group::new("g");
        group.apply_commit((0..20_000).map(|p| (PartitionId::new("t", p), u64::from(p))));
        let records = snapshot(&group);
        let out = batches(&records, 5);
        assert!(out.len() > 1);
        let mut n = 0;
        for b in &out {
            assert!(b.len() <= ringmq_protocol::batch::MAX_BATCH_BYTES);
            n += decode_records(b).unwrap().len();
        }
        assert_eq!(n, records.len());
    }

    #[test]
    fn groups_spread_over_the_partitions() {
        let mut seen = [0; OFFSETS_PARTITIONS as usize];
        for i in 0..800 {
            seen[partition_of(&format!("group-{i}")) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }
}
