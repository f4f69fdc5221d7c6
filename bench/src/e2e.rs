//! `e2e`: producers and consumers at once. Each payload carries its send
//! time (its scheduled send time with `--rate`); latency is from there to
//! the consumer's receipt.

use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ringmq_client::{Client, Consumer, ConsumerConfig, StartOffset};

use crate::common::{self, now_ns, read_stamp, share, BoxError, Broker, Common, Recorder};
use crate::produce::{run_producer, setup_topic, Progress};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
}

pub fn run(a: Args) -> Result<(), BoxError> {
    let c = Arc::new(a.common);
    let broker = Broker::start(&c)?;
    let partitions = setup_topic(&c, &broker.bootstrap)?;
    let progress = Arc::new(Progress::default());
    let consumed = Arc::new(AtomicU64::new(0));
    let bootstrap = broker.bootstrap.clone();
    let cc = c.clone();
    let summary = common::run_executors(&c, "e2e", &broker, move |e, rec| {
        let c = cc.clone();
        let bootstrap = bootstrap.clone();
        let progress = progress.clone();
        let consumed = consumed.clone();
        async move {
            let mut tasks = Vec::new();
            for k in share(c.consumers, c.cores, e) {
                let (c, bootstrap, rec) = (c.clone(), bootstrap.clone(), rec.clone());
                let (progress, consumed) = (progress.clone(), consumed.clone());
                tasks.push(glommio::spawn_local(async move {
                    let parts: Vec<u32> = share(partitions as usize, c.consumers, k)
                        .map(|p| p as u32)
                        .collect();
                    consume(&c, &bootstrap, &parts, rec, &progress, &consumed).await
                }));
            }
            // Producers go on the executors after the consumers' (with
            // --cores 2, one consumer and one producer: one executor each).
            let cores = c.cores.max(1);
            for p in (0..c.producers).filter(|p| (p + c.consumers) % cores == e) {
                let (c, bootstrap, progress) = (c.clone(), bootstrap.clone(), progress.clone());
                tasks.push(glommio::spawn_local(async move {
                    run_producer(&c, &bootstrap, p, None, Some(progress)).await
                }));
            }
            for t in tasks {
                t.await?;
            }
            Ok(())
        }
    })?;
    summary.print(c.json, "end-to-end");
    Ok(())
}

async fn consume(
    c: &Common,
    bootstrap: &str,
    parts: &[u32],
    rec: Rc<Recorder>,
    progress: &Progress,
    consumed: &AtomicU64,
) -> Result<(), BoxError> {
    let client = Client::connect(c.client_config(bootstrap)?).await?;
    let cfg = ConsumerConfig {
        max_wait: Duration::from_millis(50),
        ..Default::default()
    };
    let mut consumer = if parts.is_empty() {
        None
    } else {
        Some(Consumer::new(&client, &c.topic, Some(parts), StartOffset::Latest, cfg).await?)
    };
    progress.consumers_ready.fetch_add(1, Ordering::AcqRel);
    let mut idle_since: Option<u64> = None;
    loop {
        let done = progress.producers_done.load(Ordering::Acquire) >= c.producers;
        if done && consumed.load(Ordering::Acquire) >= progress.acked.load(Ordering::Acquire) {
            return Ok(());
        }
        let Some(consumer) = consumer.as_mut() else {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let records = consumer.poll().await?;
        let now = now_ns();
        if records.is_empty() {
            // Producers done and nothing more arriving for 5 s: stop, and
            // count what never came as errors.
            if done {
                let since = *idle_since.get_or_insert(now);
                if now - since > 5_000_000_000 {
                    let missing = progress
                        .acked
                        .load(Ordering::Acquire)
                        .saturating_sub(consumed.load(Ordering::Acquire));
                    rec.error(missing);
                    consumed.fetch_add(missing, Ordering::AcqRel);
                    return Ok(());
                }
            }
            continue;
        }
        idle_since = None;
        for r in &records {
            let v = r.value.as_deref().unwrap_or(&[]);
            match read_stamp(v) {
                Some(t) => rec.record(now.saturating_sub(t), 1, v.len() as u64),
                None => rec.error(1),
            }
        }
        consumed.fetch_add(records.len() as u64, Ordering::AcqRel);
    }
}
