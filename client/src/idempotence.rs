//! The idempotent producer's bookkeeping (SPEC.md 5.20): asking for a
//! producer id, the per-partition sequence each batch is stamped with, and
//! the words for the two errors that only idempotence brings
//! (`PRODUCER_FENCED`, `OUT_OF_ORDER_SEQUENCE`). The producer module decides
//! when; this one knows the numbers.
//!
//! A partition's sequence advances when a batch is first sent: a retry
//! resends the same bytes, so the leader recognises it and answers with the
//! original offset. A batch that fails for good leaves the leader's view of
//! the sequence unknown (it may or may not have been appended), so the
//! partition starts over: its epoch goes up by one and its sequence back to
//! 0, which a leader takes whatever it saw before (a newer epoch restarts at
//! 0, SPEC.md 5.20). The epoch is per partition, as the leader's producer
//! state is; ids are unique per `InitProducerId`, so no other producer can
//! see or fence these epochs.

use std::time::Duration;

use glommio::timer::Timer;
use ringmq_protocol::batch::ProducerStamp;
use ringmq_protocol::{ErrorCode, InitProducerIdRequest, Request};

use crate::client::Client;
use crate::consumer::backoff;
use crate::error::ClientError;

/// Who the producer is to the partition leaders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProducerIdentity {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Asks the gateway for a producer id (InitProducerId, key 17), retrying a
/// retriable failure up to `retries` times.
pub(crate) async fn init_producer_id(
    client: &Client,
    retries: u32,
    retry_backoff: Duration,
) -> Result<ProducerIdentity, ClientError> {
    let req = Request::InitProducerId(InitProducerIdRequest {});
    let mut failures = 0;
    loop {
        let result = match client.request(&req).await {
            Ok(body) => expect!(body, InitProducerId),
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => {
                return Ok(ProducerIdentity {
                    producer_id: r.producer_id,
                    producer_epoch: r.producer_epoch,
                })
            }
            Err(e)
                if (e.is_retriable() || matches!(e, ClientError::Connect { .. }))
                    && failures < retries =>
            {
                failures += 1;
                tracing::debug!(error = %e, attempt = failures, "InitProducerId failed, will retry");
                Timer::new(backoff(retry_backoff, failures)).await;
            }
            Err(e) => {
                return Err(match e.code() {
                    Some(
                        ErrorCode::UnknownApi
                        | ErrorCode::UnsupportedVersion
                        | ErrorCode::InvalidRequest,
                    ) => ClientError::InvalidInput(format!(
                        "the broker hands out no producer ids ({e}); an idempotent producer \
                         needs them: turn idempotence off (ProducerConfig::idempotent = false, \
                         `ringmq produce --no-idempotence`)"
                    )),
                    _ => e,
                })
            }
        }
    }
}

/// One partition's place in the producer's sequence.
#[derive(Debug, Clone)]
pub(crate) struct Sequencer {
    producer_id: i64,
    epoch: i16,
    /// `base_sequence` of the next batch sent.
    next: i32,
}

impl Sequencer {
    pub fn new(id: ProducerIdentity) -> Sequencer {
        Sequencer {
            producer_id: id.producer_id,
            epoch: id.producer_epoch,
            next: 0,
        }
    }

    /// The stamp of a batch of `records` sent now; the next one follows it.
    pub fn stamp(&mut self, records: u32) -> ProducerStamp {
        let stamp = ProducerStamp {
            producer_id: self.producer_id,
            producer_epoch: self.epoch,
            base_sequence: self.next,
        };
        self.next = advance(self.next, records);
        stamp
    }

    /// A sent batch failed for good: start over with a new epoch at
    /// sequence 0. `false` when the epochs ran out (the producer must
    /// stop: a new one gets a new id).
    pub fn start_over(&mut self) -> bool {
        match self.epoch.checked_add(1) {
            Some(e) => {
                self.epoch = e;
                self.next = 0;
                true
            }
            None => false,
        }
    }

    pub fn producer_id(&self) -> i64 {
        self.producer_id
    }

    pub fn epoch(&self) -> i16 {
        self.epoch
    }
}

/// `seq + records`, wrapping from `i32::MAX` to 0 (SPEC.md 5.20).
fn advance(seq: i32, records: u32) -> i32 {
    let m = i64::from(i32::MAX) + 1;
    ((i64::from(seq) + i64::from(records)).rem_euclid(m)) as i32
}

/// `e` from a partition leader, said for what it means to an idempotent
/// producer: a fence or a sequence gap in plain words; anything else as is.
pub(crate) fn explain(
    e: ClientError,
    topic: &str,
    partition: u32,
    stamp: &ProducerStamp,
    records: u32,
) -> ClientError {
    let ClientError::Broker { code, message } = &e else {
        return e;
    };
    let (id, epoch, seq) = (stamp.producer_id, stamp.producer_epoch, stamp.base_sequence);
    let message = match code {
        ErrorCode::ProducerFenced => format!(
            "producer {id} (epoch {epoch}) was fenced on {topic}/{partition}: a newer epoch of \
             its id wrote there, so another instance took over; this producer sends nothing \
             more (broker: {message})"
        ),
        ErrorCode::OutOfOrderSequence => format!(
            "{topic}/{partition} refused the batch at sequence {seq} (producer {id}, epoch \
             {epoch}) as out of order: the leader lacks batches of this producer it had \
             acknowledged before (lost in a failover, as acks=1 allows), so those may be \
             gone; these {records} records were not written, and the partition's next \
             batches start a new sequence (broker: {message})"
        ),
        _ => return e,
    };
    ClientError::Broker {
        code: *code,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_advance_by_record_count_and_wrap() {
        let mut s = Sequencer::new(ProducerIdentity {
            producer_id: 7,
            producer_epoch: 0,
        });
        assert_eq!(s.stamp(3).base_sequence, 0);
        assert_eq!(s.stamp(10).base_sequence, 3);
        assert_eq!(s.stamp(1).base_sequence, 13);
        s.next = i32::MAX - 1;
        assert_eq!(s.stamp(2).base_sequence, i32::MAX - 1);
        assert_eq!(s.stamp(1).base_sequence, 0, "wraps from i32::MAX to 0");
        assert_eq!(advance(i32::MAX, 1), 0);
        assert_eq!(advance(i32::MAX, 5), 4);
    }

    #[test]
    fn starting_over_bumps_the_epoch_and_resets_the_sequence() {
        let mut s = Sequencer::new(ProducerIdentity {
            producer_id: 7,
            producer_epoch: 0,
        });
        s.stamp(5);
        assert!(s.start_over());
        let st = s.stamp(2);
        assert_eq!(
            (st.producer_id, st.producer_epoch, st.base_sequence),
            (7, 1, 0)
        );
        s.epoch = i16::MAX;
        assert!(!s.start_over());
    }

    #[test]
    fn fences_and_gaps_are_explained() {
        let stamp = ProducerStamp {
            producer_id: 9,
            producer_epoch: 2,
            base_sequence: 40,
        };
        let e = |code| ClientError::Broker {
            code,
            message: "m".into(),
        };
        let f = explain(e(ErrorCode::ProducerFenced), "t", 3, &stamp, 5);
        assert_eq!(f.code(), Some(ErrorCode::ProducerFenced));
        assert!(
            f.to_string()
                .contains("producer 9 (epoch 2) was fenced on t/3"),
            "{f}"
        );
        let g = explain(e(ErrorCode::OutOfOrderSequence), "t", 3, &stamp, 5);
        assert!(g.to_string().contains("sequence 40"), "{g}");
        let other = explain(e(ErrorCode::NotLeader), "t", 3, &stamp, 5);
        assert_eq!(other.to_string(), e(ErrorCode::NotLeader).to_string());
    }
}
