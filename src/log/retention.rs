//! Which old segments retention deletes: a pure function of the segments'
//! sizes and newest timestamps, so the rule is tested without files.

/// What retention needs to know about one segment, oldest first.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentInfo {
    pub size: u64,
    /// Newest record timestamp in the segment (ms), `i64::MIN` if unknown.
    pub max_timestamp: i64,
    /// Only whole, finalized, non-active segments may go.
    pub deletable: bool,
}

/// Number of leading segments to delete. A segment goes if the log without
/// it still holds at least `retention_bytes`, or if its newest record is
/// older than `retention_ms`. Deletion stops at the first segment that must
/// stay (or may not be deleted), so the log stays contiguous.
pub(crate) fn plan(
    segments: &[SegmentInfo],
    retention_bytes: Option<u64>,
    retention_ms: Option<u64>,
    now_ms: i64,
) -> usize {
    let mut total: u64 = segments.iter().map(|s| s.size).sum();
    let mut n = 0;
    for s in segments {
        if !s.deletable {
            break;
        }
        let by_bytes = retention_bytes.is_some_and(|r| total - s.size >= r);
        let by_age = retention_ms.is_some_and(|r| {
            s.max_timestamp != i64::MIN
                && now_ms.saturating_sub(s.max_timestamp) > r.min(i64::MAX as u64) as i64
        });
        if !(by_bytes || by_age) {
            break;
        }
        total -= s.size;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(size: u64, ts: i64) -> SegmentInfo {
        SegmentInfo {
            size,
            max_timestamp: ts,
            deletable: true,
        }
    }

    #[test]
    fn by_bytes_keeps_at_least_the_limit() {
        let mut s = vec![seg(100, 0), seg(100, 0), seg(100, 0), seg(50, 0)];
        s[3].deletable = false;
        assert_eq!(plan(&s, Some(150), None, 0), 2);
        assert_eq!(plan(&s, Some(151), None, 0), 1);
        assert_eq!(plan(&s, Some(0), None, 0), 3);
        assert_eq!(plan(&s, None, None, 0), 0);
    }

    #[test]
    fn by_age_stops_at_the_first_young_segment() {
        let s = vec![seg(1, 10), seg(1, 20), seg(1, 950), seg(1, 0)];
        assert_eq!(plan(&s, None, Some(100), 1000), 2);
        assert_eq!(plan(&s, None, Some(1000), 1000), 0);
    }
}
