//! `produce`: producers as fast as they go (or at `--rate`); latency is the
//! time from a record's send (its scheduled send with `--rate`) to its
//! acknowledgement.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_lite::future;
use ringmq_client::{Client, Delivery, Producer};

use crate::common::{
    self, ensure_topic, now_ns, payload, share, stamp, BoxError, Broker, Common, Recorder,
};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
}

pub fn run(a: Args) -> Result<(), BoxError> {
    let c = Arc::new(a.common);
    let broker = Broker::start(&c)?;
    setup_topic(&c, &broker.bootstrap)?;
    let bootstrap = broker.bootstrap.clone();
    let cc = c.clone();
    let summary = common::run_executors(&c, "produce", &broker, move |e, rec| {
        let c = cc.clone();
        let bootstrap = bootstrap.clone();
        async move {
            let tasks: Vec<_> = share(c.producers, c.cores, e)
                .map(|p| {
                    let c = c.clone();
                    let bootstrap = bootstrap.clone();
                    let rec = rec.clone();
                    glommio::spawn_local(async move {
                        run_producer(&c, &bootstrap, p, Some(rec), None).await
                    })
                })
                .collect();
            for t in tasks {
                t.await?;
            }
            Ok(())
        }
    })?;
    summary.print(c.json, "ack");
    Ok(())
}

/// Creates the topic (on a short-lived executor of the main thread).
pub fn setup_topic(c: &Common, bootstrap: &str) -> Result<u32, BoxError> {
    let cfg = c.client_config(bootstrap)?;
    let topic = c.topic.clone();
    let partitions = c.partitions;
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .io_memory(1 << 20)
        .make()
        .map_err(|e| e.to_string())?;
    ex.run(async move {
        let client = Client::connect(cfg).await?;
        Ok(ensure_topic(&client, &topic, partitions).await?)
    })
}

/// Counters shared by the producers and consumers of an `e2e` run.
#[derive(Default)]
pub struct Progress {
    pub acked: AtomicU64,
    pub producers_done: AtomicUsize,
    pub consumers_ready: AtomicUsize,
}

/// Producer number `idx`: sends its share of the messages (or until the
/// duration ends), then flushes. With `rec`, records each message's ack
/// latency; with `progress`, counts acknowledged messages there (e2e).
pub async fn run_producer(
    c: &Common,
    bootstrap: &str,
    idx: usize,
    rec: Option<Rc<Recorder>>,
    progress: Option<Arc<Progress>>,
) -> Result<(), BoxError> {
    let client = Client::connect(c.client_config(bootstrap)?).await?;
    let producer = Producer::new(&client, &c.topic, c.producer_config()).await?;
    let parts = producer.partitions();
    let n: Option<u64> = c.total_messages().map(|t| {
        let p = c.producers.max(1) as u64;
        t / p + u64::from((idx as u64) < t % p)
    });
    let rate = c
        .rate
        .map(|r| (r as f64 / c.producers.max(1) as f64).max(1e-3));
    let mut buf = payload(c.size);
    let size = buf.len() as u64;

    if let Some(p) = &progress {
        // e2e: consumers first, so they start at the end before we send.
        while p.consumers_ready.load(Ordering::Acquire) < c.consumers {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
    }

    let queues: Vec<Rc<AckQueue>> = (0..parts).map(|_| Rc::new(AckQueue::default())).collect();
    let ackers: Vec<_> = queues
        .iter()
        .map(|q| {
            let q = q.clone();
            let rec = rec.clone();
            let progress = progress.clone();
            glommio::spawn_local(
                async move { q.drain(rec.as_deref(), progress.as_deref(), size).await },
            )
        })
        .collect();

    let start = now_ns();
    let deadline = c.duration.map(|d| start + d.as_nanos() as u64);
    let mut part = (idx as u32) % parts;
    let mut i: u64 = 0;
    // The clock is read once per CLOCK_EVERY messages (and when ahead of a
    // --rate schedule): a read costs as much as a quarter of a send here.
    // Flat out, stamps are then at most that many sends early:
    // microseconds against the milliseconds measured.
    const CLOCK_EVERY: u64 = 32;
    let mut now = start;
    loop {
        if n.is_some_and(|n| i >= n) {
            break;
        }
        if i % CLOCK_EVERY == 0 {
            now = now_ns();
            if deadline.is_some_and(|d| now >= d) {
                break;
            }
        }
        let t = match rate {
            Some(r) => {
                let due = start + (i as f64 * 1e9 / r) as u64;
                if due > now {
                    now = now_ns();
                    if deadline.is_some_and(|d| now >= d) {
                        break;
                    }
                    if due > now + 50_000 {
                        glommio::timer::sleep(Duration::from_nanos(due - now)).await;
                        now = now_ns();
                    }
                }
                due
            }
            None => now,
        };
        stamp(&mut buf, t);
        let d = producer.send_to(part, None, &buf).await?;
        queues[part as usize].push(d, t);
        part += 1;
        if part == parts {
            part = 0;
        }
        i += 1;
    }
    producer.flush().await?;
    for q in &queues {
        q.close();
    }
    for a in ackers {
        a.await;
    }
    if let Some(p) = &progress {
        p.producers_done.fetch_add(1, Ordering::AcqRel);
    }
    let stats = producer.stats();
    if stats.failed > 0 {
        if let Some(e) = stats.last_error {
            eprintln!(
                "producer {idx}: {} records failed, last error: {e}",
                stats.failed
            );
        }
    }
    Ok(())
}

/// Deliveries of one partition, in send order (so in completion order), and
/// the task that waits on them.
#[derive(Default)]
struct AckQueue {
    q: RefCell<VecDeque<(Delivery, u64)>>,
    waker: Cell<Option<Waker>>,
    closed: Cell<bool>,
}

impl AckQueue {
    fn push(&self, d: Delivery, t: u64) {
        let mut q = self.q.borrow_mut();
        q.push_back((d, t));
        if q.len() == 1 {
            drop(q);
            if let Some(w) = self.waker.take() {
                w.wake();
            }
        }
    }

    fn close(&self) {
        self.closed.set(true);
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    async fn drain(&self, rec: Option<&Recorder>, progress: Option<&Progress>, size: u64) {
        future::poll_fn(|cx| {
            let mut q = self.q.borrow_mut();
            let mut now = 0;
            let mut acked = 0u64;
            let res = loop {
                let Some((d, t)) = q.front_mut() else {
                    if self.closed.get() {
                        break Poll::Ready(());
                    }
                    self.waker.set(Some(cx.waker().clone()));
                    break Poll::Pending;
                };
                match Pin::new(d).poll(cx) {
                    Poll::Pending => break Poll::Pending,
                    Poll::Ready(r) => {
                        if now == 0 {
                            now = now_ns();
                        }
                        match (r, rec) {
                            (Ok(_), Some(rec)) => rec.record(now.saturating_sub(*t), 1, size),
                            (Ok(_), None) => {}
                            (Err(_), Some(rec)) => rec.error(1),
                            (Err(_), None) => {}
                        }
                        acked += 1;
                        q.pop_front();
                    }
                }
            };
            if let Some(p) = progress {
                if acked > 0 {
                    p.acked.fetch_add(acked, Ordering::AcqRel);
                }
            }
            res
        })
        .await
    }
}
