//! A follower's fetch loop: one task per partition this node follows,
//! pulling the leader's batches (ReplicaFetch, SPEC.md 5.19) and appending
//! them as they are, until the partition's role changes.

use std::rc::Rc;
use std::time::Duration;

use ringmq_protocol::{ErrorCode, ReplicaFetchRequest, Request, ResponseBody};

use super::{Partition, Shard};

/// Bytes asked for per fetch.
const FETCH_BYTES: u32 = 1 << 20;
/// How long the leader may hold a fetch when it has nothing new.
const FETCH_WAIT_MS: u32 = 500;
/// Pause after a refusal that a newer view will resolve (another leader,
/// another epoch).
const VIEW_WAIT: Duration = Duration::from_millis(100);
/// Backoff after a failure to reach the leader, doubling up to the last.
const BACKOFF: [Duration; 2] = [Duration::from_millis(50), Duration::from_secs(1)];

/// Follows the leader of `topic`/`partition` while `generation` is the
/// partition's role generation.
pub async fn follow(
    shard: Rc<Shard>,
    topic: String,
    partition: u32,
    part: Rc<Partition>,
    generation: u64,
) {
    let Some(me) = shard.config.node_id else {
        return;
    };
    let mut backoff = BACKOFF[0];
    while let Some(target) = part.following(generation) {
        let log = part.log();
        let req = Request::ReplicaFetch(ReplicaFetchRequest {
            replica: me,
            topic: topic.clone(),
            partition,
            leader_epoch: super::replica::epoch32(target.epoch),
            fetch_offset: log.next_offset(),
            last_fetched_epoch: log.last_epoch().map_or(-1, i64::from),
            max_bytes: FETCH_BYTES,
            max_wait_ms: FETCH_WAIT_MS,
        });
        let answer = shard
            .forward(target.leader, target.addr, &req, ErrorCode::NotLeader)
            .await;
        if part.following(generation).is_none() {
            return;
        }
        let pause = match answer {
            Ok(Some(ResponseBody::ReplicaFetch(r))) => {
                backoff = BACKOFF[0];
                if let Some(d) = r.diverging {
                    match part.truncate_diverged(d).await {
                        Ok(to) => {
                            tracing::info!(
                                topic,
                                partition,
                                epoch = d.epoch,
                                to,
                                "log diverged from the leader's: truncated"
                            );
                            None
                        }
                        Err(e) => {
                            tracing::error!(topic, partition, error = %e, "truncating a diverged log failed");
                            Some(BACKOFF[1])
                        }
                    }
                } else {
                    match part.append_replicated(&r.records, r.high_watermark) {
                        Ok(()) => match part.follow_log_start(r.log_start_offset).await {
                            Ok(true) => {
                                tracing::info!(
                                    topic,
                                    partition,
                                    start = r.log_start_offset,
                                    "the leader's log starts past this copy's end: started over there"
                                );
                                None
                            }
                            Ok(false) => None,
                            Err(e) => {
                                tracing::error!(topic, partition, error = %e, "following the leader's log start failed");
                                Some(BACKOFF[1])
                            }
                        },
                        Err(e) => {
                            tracing::error!(topic, partition, error = %e, "appending the leader's batches failed");
                            Some(BACKOFF[1])
                        }
                    }
                }
            }
            Ok(other) => {
                tracing::warn!(
                    topic,
                    partition,
                    ?other,
                    "unexpected answer to ReplicaFetch"
                );
                Some(BACKOFF[1])
            }
            Err(f) if matches!(f.code, ErrorCode::NotLeader | ErrorCode::StaleLeaderEpoch) => {
                tracing::debug!(topic, partition, error = %f, "leader refused the fetch; waiting for a newer view");
                Some(VIEW_WAIT)
            }
            Err(f) => {
                tracing::debug!(topic, partition, error = %f, "replica fetch failed");
                let b = backoff;
                backoff = (backoff * 2).min(BACKOFF[1]);
                Some(b)
            }
        };
        if let Some(d) = pause {
            glommio::timer::sleep(d).await;
        }
    }
}
