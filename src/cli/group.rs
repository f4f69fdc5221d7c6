//! `ringmq group list|describe`: what the brokers know of consumer groups
//! (members, generation, who holds which partition, committed offsets and
//! lag). Read-only; a group changes only through its members.

use std::error::Error;
use std::fmt::Write as _;

use clap::{Args, Subcommand};
use ringmq_protocol::DescribeGroupResponse;

use super::connect::{block_on, describe_group_error, BootstrapArgs};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups: `GROUP STATE GENERATION MEMBERS`, one per line.
    List(BootstrapArgs),
    /// A group's members and, per partition, holder, committed offset,
    /// end offset and lag.
    Describe(DescribeArgs),
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// Group id.
    group: String,
    #[command(flatten)]
    bootstrap: BootstrapArgs,
}

pub fn run(cmd: GroupCommand) -> Result<(), Box<dyn Error>> {
    block_on(async move {
        match cmd {
            GroupCommand::List(a) => {
                let client = a.connect().await?;
                let groups = client
                    .admin()
                    .list_groups()
                    .await
                    .map_err(|e| describe_group_error(&e, "", ""))?;
                let mut rows = vec![row(["GROUP", "STATE", "GENERATION", "MEMBERS"])];
                for g in groups {
                    rows.push(vec![
                        g.group,
                        g.state.to_string(),
                        g.generation.to_string(),
                        g.members.to_string(),
                    ]);
                }
                print!("{}", table(&rows));
            }
            GroupCommand::Describe(a) => {
                let client = a.bootstrap.connect().await?;
                let d = client
                    .admin()
                    .describe_group(&a.group)
                    .await
                    .map_err(|e| describe_group_error(&e, &a.group, ""))?;
                print!("{}", describe_text(&d));
            }
        }
        Ok::<(), Box<dyn Error>>(())
    })?
}

fn row<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Left-aligned columns two spaces apart; the last column is not padded.
fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == r.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `ringmq group describe`'s output: a header line, the members, the
/// partitions.
fn describe_text(d: &DescribeGroupResponse) -> String {
    let mut out = format!(
        "group {}: state {}, generation {}, topics {}\n",
        d.group,
        d.state,
        d.generation,
        if d.topics.is_empty() {
            "-".to_owned()
        } else {
            d.topics.join(",")
        }
    );
    out.push('\n');
    let mut members = vec![row(["MEMBER", "INSTANCE", "IDLE", "PARTITIONS"])];
    for m in &d.members {
        let parts: Vec<String> = m
            .partitions
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| format!("{}/{p}", t.topic)))
            .collect();
        members.push(vec![
            m.member_id.clone(),
            m.instance_id.clone().unwrap_or_else(|| "-".into()),
            format!("{}ms", m.idle_ms),
            if parts.is_empty() {
                "-".into()
            } else {
                parts.join(" ")
            },
        ]);
    }
    out.push_str(&table(&members));
    out.push('\n');
    let mut parts = vec![row(["PARTITION", "HOLDER", "COMMITTED", "END", "LAG"])];
    let mut beyond = 0;
    for p in &d.partitions {
        let lag = match p.committed {
            None => "-".to_owned(),
            Some(c) if c <= p.end_offset => (p.end_offset - c).to_string(),
            // Not a lag of 0: the commit is of records the partition does
            // not hold (it was recreated, or lost its tail).
            Some(_) => {
                beyond += 1;
                "beyond-end!".to_owned()
            }
        };
        parts.push(vec![
            format!("{}/{}", p.topic, p.partition),
            p.holder.clone().unwrap_or_else(|| "-".into()),
            p.committed.map_or_else(|| "-".into(), |c| c.to_string()),
            p.end_offset.to_string(),
            lag,
        ]);
    }
    out.push_str(&table(&parts));
    if beyond > 0 {
        let _ = writeln!(
            out,
            "\n{beyond} committed offset(s) beyond the partition's end (the topic was \
             recreated?): the next member to hold such a partition starts where its \
             reset policy says"
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::{GroupState, MemberDescription, PartitionDescription, TopicPartitions};

    #[test]
    fn describe_shows_members_and_lag() {
        let d = DescribeGroupResponse {
            group: "g".into(),
            state: GroupState::Stable,
            generation: 3,
            topics: vec!["tasks".into()],
            members: vec![MemberDescription {
                member_id: "m-1".into(),
                instance_id: Some("w1".into()),
                session_timeout_ms: 10_000,
                idle_ms: 120,
                partitions: vec![TopicPartitions {
                    topic: "tasks".into(),
                    partitions: vec![0, 1],
                }],
            }],
            partitions: vec![
                PartitionDescription {
                    topic: "tasks".into(),
                    partition: 0,
                    holder: Some("m-1".into()),
                    committed: Some(10),
                    end_offset: 12,
                },
                PartitionDescription {
                    topic: "tasks".into(),
                    partition: 1,
                    holder: None,
                    committed: None,
                    end_offset: 5,
                },
            ],
        };
        assert_eq!(
            describe_text(&d),
            "group g: state stable, generation 3, topics tasks\n\
             \n\
             MEMBER  INSTANCE  IDLE   PARTITIONS\n\
             m-1     w1        120ms  tasks/0 tasks/1\n\
             \n\
             PARTITION  HOLDER  COMMITTED  END  LAG\n\
             tasks/0    m-1     10         12   2\n\
             tasks/1    -       -          5    -\n"
        );
    }

    #[test]
    fn describe_shows_a_commit_beyond_the_end_as_such() {
        let d = DescribeGroupResponse {
            group: "g".into(),
            state: GroupState::Empty,
            generation: 7,
            topics: vec![],
            members: vec![],
            partitions: vec![PartitionDescription {
                topic: "t2".into(),
                partition: 0,
                holder: None,
                committed: Some(5095),
                end_offset: 4,
            }],
        };
        let text = describe_text(&d);
        assert!(
            text.contains("t2/0       -       5095       4    beyond-end!\n"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\n1 committed offset(s) beyond the partition's end (the topic was recreated?): \
                 the next member to hold such a partition starts where its reset policy says\n"
            ),
            "{text}"
        );
    }
}
