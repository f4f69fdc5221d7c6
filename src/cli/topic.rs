//! `ringmq topic create|list|delete`: topic administration.

use std::error::Error;

use clap::{Args, Subcommand};

use super::connect::{block_on, describe, BootstrapArgs};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics, one per line: `NAME partitions=N replication=R`.
    List(BootstrapArgs),
    /// Delete a topic and all its data.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Topic name: 1 to 249 characters of [A-Za-z0-9._-].
    name: String,
    /// Number of partitions.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(ringmq_protocol::limits::MAX_PARTITIONS)))]
    partitions: u32,
    /// Copies of each partition, at most the number of nodes [default: 1 on a single node, 3 in a cluster (fewer with fewer nodes)].
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    replication: u16,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Topic to delete.
    name: String,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

pub fn run(cmd: TopicCommand) -> Result<(), Box<dyn Error>> {
    block_on(async move {
        match cmd {
            TopicCommand::Create(a) => {
                let client = a.bootstrap.connect().await?;
                client
                    .admin()
                    .create_topic(&a.name, a.partitions, a.replication)
                    .await
                    .map_err(|e| describe(&e, &a.name))?;
                // The broker picks the default replication: ask what it chose.
                let replication = match a.replication {
                    0 => client
                        .admin()
                        .list_topics()
                        .await?
                        .into_iter()
                        .find(|t| t.name == a.name)
                        .map_or(0, |t| t.replication),
                    r => r,
                };
                println!(
                    "created topic {} partitions={} replication={replication}",
                    a.name, a.partitions
                );
            }
            TopicCommand::List(a) => {
                let client = a.connect().await?;
                for t in client.admin().list_topics().await? {
                    println!(
                        "{} partitions={} replication={}",
                        t.name, t.partitions, t.replication
                    );
                }
            }
            TopicCommand::Delete(a) => {
                let client = a.bootstrap.connect().await?;
                client
                    .admin()
                    .delete_topic(&a.name)
                    .await
                    .map_err(|e| describe(&e, &a.name))?;
                println!("deleted topic {}", a.name);
            }
        }
        Ok::<(), Box<dyn Error>>(())
    })?
}
