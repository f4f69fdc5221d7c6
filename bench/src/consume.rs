//! `consume`: loads `--messages` into the topic first (not measured) unless
//! it already holds them, then reads them back from the start with
//! `--consumers` consumers. Latency is the time of each poll (one Fetch round).

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use ringmq_client::{Client, Consumer, ConsumerConfig, OffsetSpec, StartOffset};

use crate::common::{self, now_ns, share, BoxError, Broker, Common, Recorder};
use crate::produce::{run_producer, setup_topic};

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Do not preload: read whatever the topic holds.
    #[arg(long)]
    pub no_preload: bool,
}

pub fn run(a: Args) -> Result<(), BoxError> {
    let c = Arc::new(a.common);
    let broker = Broker::start(&c)?;
    let partitions = setup_topic(&c, &broker.bootstrap)?;
    if !a.no_preload {
        preload(&c, &broker.bootstrap, partitions)?;
    }
    let bootstrap = broker.bootstrap.clone();
    let cc = c.clone();
    let summary = common::run_executors(&c, "consume", &broker, move |e, rec| {
        let c = cc.clone();
        let bootstrap = bootstrap.clone();
        async move {
            let tasks: Vec<_> = share(c.consumers, c.cores, e)
                .map(|k| {
                    let c = c.clone();
                    let bootstrap = bootstrap.clone();
                    let rec = rec.clone();
                    glommio::spawn_local(async move {
                        let parts: Vec<u32> = share(partitions as usize, c.consumers, k)
                            .map(|p| p as u32)
                            .collect();
                        read_to_end(&c, &bootstrap, &parts, rec).await
                    })
                })
                .collect();
            for t in tasks {
                t.await?;
            }
            Ok(())
        }
    })?;
    summary.print(c.json, "poll");
    Ok(())
}

/// Produces `--messages` (acks=1, `--producers` producers) unless the topic
/// already holds that many.
fn preload(c: &Arc<Common>, bootstrap: &str, partitions: u32) -> Result<(), BoxError> {
    let Some(n) = c.messages else { return Ok(()) };
    let cfg = c.client_config(bootstrap)?;
    let c2 = c.clone();
    let bootstrap = bootstrap.to_owned();
    let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
        .make()
        .map_err(|e| e.to_string())?;
    ex.run(async move {
        let client = Client::connect(cfg).await?;
        let admin = client.admin();
        let mut have = 0;
        for p in 0..partitions {
            have += admin.list_offsets(&c2.topic, p, OffsetSpec::Latest).await?
                - admin
                    .list_offsets(&c2.topic, p, OffsetSpec::Earliest)
                    .await?;
        }
        if have >= n {
            return Ok(());
        }
        eprintln!("preloading {n} messages of {} B", c2.size);
        let mut pc = (*c2).clone();
        pc.rate = None;
        pc.duration = None;
        pc.acks = ringmq_client::Acks::Leader;
        let tasks: Vec<_> = (0..pc.producers.max(1))
            .map(|i| {
                let pc = pc.clone();
                let bootstrap = bootstrap.clone();
                glommio::spawn_local(
                    async move { run_producer(&pc, &bootstrap, i, None, None).await },
                )
            })
            .collect();
        for t in tasks {
            t.await?;
        }
        Ok::<(), BoxError>(())
    })
}

/// Reads `parts` from the start to the end they had when it began (or
/// until `--duration`).
async fn read_to_end(
    c: &Common,
    bootstrap: &str,
    parts: &[u32],
    rec: Rc<Recorder>,
) -> Result<(), BoxError> {
    if parts.is_empty() {
        return Ok(());
    }
    let client = Client::connect(c.client_config(bootstrap)?).await?;
    let admin = client.admin();
    let mut ends = Vec::new();
    for &p in parts {
        ends.push((
            p,
            admin.list_offsets(&c.topic, p, OffsetSpec::Latest).await?,
        ));
    }
    let cfg = ConsumerConfig {
        max_wait: Duration::from_millis(100),
        ..Default::default()
    };
    let mut consumer =
        Consumer::new(&client, &c.topic, Some(parts), StartOffset::Earliest, cfg).await?;
    let deadline = c.duration.map(|d| now_ns() + d.as_nanos() as u64);
    loop {
        if ends
            .iter()
            .all(|&(p, end)| consumer.position(p).is_some_and(|pos| pos >= end))
        {
            return Ok(());
        }
        let t0 = now_ns();
        if deadline.is_some_and(|d| t0 >= d) {
            return Ok(());
        }
        let records = consumer.poll().await?;
        let t1 = now_ns();
        let bytes: u64 = records
            .iter()
            .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum();
        rec.latency(t1 - t0);
        rec.count(records.len() as u64, bytes);
    }
}
