//! `ringmq cluster status|remove`: the operator's view of a cluster and
//! decommissioning, through a node's metrics listener (`metrics_listen`),
//! which serves `GET /cluster` and `POST /cluster/remove/N` as JSON (see
//! `cluster::admin` for why there and not in the client protocol).

use std::error::Error;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use std::path::PathBuf;

use clap::{Args, Subcommand};

use crate::cluster::admin::ClusterStatus;
use crate::config::Settings;
use crate::security::secret::ClusterSecret;

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Nodes (addresses, alive or dead, member or not, partitions led), the
    /// controller leader and the topic count, as one node sees them.
    Status(StatusArgs),
    /// Decommission node N: it leaves the ring and its partitions move.
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// A node's metrics_listen address (HOST:PORT).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9100")]
    http: String,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print the node's answer as JSON instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The node to remove.
    #[arg(value_parser = clap::value_parser!(u32).range(1..))]
    node_id: u32,
    #[command(flatten)]
    node: NodeArgs,
    /// File holding the cluster secret, needed when the cluster has one
    /// (proved to the node, never sent).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    cluster_secret_file: Option<PathBuf>,
    /// The node's config file, to take `cluster_secret` or
    /// `cluster_secret_file` from.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl RemoveArgs {
    /// The secret from --cluster-secret-file, else from --config, else from
    /// RINGMQ_CLUSTER_SECRET; `None` when none is given.
    fn secret(&self) -> Result<Option<ClusterSecret>, Box<dyn Error>> {
        if let Some(path) = &self.cluster_secret_file {
            return Ok(Some(ClusterSecret::from_file(path)?));
        }
        if let Some(path) = &self.config {
            return Ok(Settings::from_file(path)?.into_config()?.cluster_secret);
        }
        match std::env::var("RINGMQ_CLUSTER_SECRET") {
            Ok(s) => Ok(Some(ClusterSecret::new(s.as_bytes())?)),
            Err(_) => Ok(None),
        }
    }
}

/// Why a cluster command failed, in a sentence.
#[derive(Debug, thiserror::Error)]
pub enum ClusterCliError {
    #[error("{addr} is not an address: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot reach {addr} (is it the node's metrics_listen?): {source}")]
    Connect {
        addr: String,
        source: std::io::Error,
    },
    #[error("{addr} answered something that is not a cluster answer: {reason}")]
    BadAnswer { addr: String, reason: String },
    #[error("{0}")]
    Refused(String),
}

pub fn run(cmd: ClusterCommand) -> Result<(), Box<dyn Error>> {
    match cmd {
        ClusterCommand::Status(a) => {
            let body = request(&a.node.http, "GET", "/cluster", None)?;
            if a.json {
                println!("{body}");
                return Ok(());
            }
            let status: ClusterStatus =
                serde_json::from_str(&body).map_err(|e| ClusterCliError::BadAnswer {
                    addr: a.node.http.clone(),
                    reason: e.to_string(),
                })?;
            print_status(&status);
        }
        ClusterCommand::Remove(a) => {
            let path = format!("/cluster/remove/{}", a.node_id);
            let authorization = match a.secret()? {
                Some(secret) => {
                    let answer = request(&a.node.http, "GET", "/cluster/challenge", None)?;
                    let nonce =
                        field(&answer, "nonce").ok_or_else(|| ClusterCliError::BadAnswer {
                            addr: a.node.http.clone(),
                            reason: "no nonce in the challenge".into(),
                        })?;
                    let header =
                        crate::metrics::admin_authorization(&secret, &nonce, "POST", &path)
                            .ok_or_else(|| ClusterCliError::BadAnswer {
                                addr: a.node.http.clone(),
                                reason: "the challenge's nonce is not hex".into(),
                            })?;
                    Some(header)
                }
                None => None,
            };
            let body = request(&a.node.http, "POST", &path, authorization.as_deref())?;
            println!("{}", field(&body, "message").unwrap_or(body));
        }
    }
    Ok(())
}

fn print_status(s: &ClusterStatus) {
    let leader = s.leader.map_or("none".to_owned(), |l| l.to_string());
    println!(
        "cluster {} (seen from node {}): controller leader {leader}, term {}, {} topics, {} partitions under-replicated, {} offline",
        s.cluster_id, s.node_id, s.term, s.topics, s.under_replicated, s.offline
    );
    println!("NODE  STATE       MEMBER  CONTROLLER  LEADS  REPLICAS  CLIENT                 PEER");
    for n in &s.nodes {
        let state = match n.alive {
            Some(true) => "alive",
            Some(false) => "dead",
            None => "-",
        };
        println!(
            "{:<5} {:<11} {:<7} {:<11} {:<6} {:<9} {:<22} {}",
            n.id,
            state,
            if n.member { "yes" } else { "no" },
            if n.controller { "yes" } else { "no" },
            n.partitions_led,
            n.replicas,
            n.client_addr.as_deref().unwrap_or("-"),
            n.peer_addr.as_deref().unwrap_or("-"),
        );
    }
}

/// `body[key]` as a string, when `body` is a JSON object that has it.
fn field(body: &str, key: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get(key)?.as_str().map(str::to_owned)
}

/// One HTTP/1.1 request; the body of a 200 answer, else the error the node
/// gave.
fn request(
    addr: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
) -> Result<String, ClusterCliError> {
    let target: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| ClusterCliError::Address {
            addr: addr.into(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ClusterCliError::Address {
            addr: addr.into(),
            reason: "resolves to nothing".into(),
        })?;
    let connect = |source| ClusterCliError::Connect {
        addr: addr.into(),
        source,
    };
    let mut stream =
        TcpStream::connect_timeout(&target, Duration::from_secs(5)).map_err(connect)?;
    // A removal may wait on a proposal forwarded to the leader.
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .map_err(connect)?;
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .map_err(connect)?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(connect)?;
    let bad = |reason: &str| ClusterCliError::BadAnswer {
        addr: addr.into(),
        reason: reason.into(),
    };
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no HTTP header"))?;
    let code = head
        .split(' ')
        .nth(1)
        .ok_or_else(|| bad("no HTTP status"))?;
    if code == "200" {
        Ok(body.to_owned())
    } else {
        Err(ClusterCliError::Refused(
            field(body, "error").unwrap_or_else(|| format!("HTTP {code}: {body}")),
        ))
    }
}
