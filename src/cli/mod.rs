//! The command line: `ringmq serve` runs a broker; the other subcommands are
//! a client of one. Errors are printed as one sentence and end in a non-zero
//! exit code.

mod cluster;
mod connect;
mod consume;
mod group;
mod produce;
mod quota;
mod security;
mod serve;
mod topic;

use clap::{Parser, Subcommand};

/// For other tools that take a password the way the CLI does (the bench).
pub use connect::read_password;

#[derive(Debug, Parser)]
#[command(name = "ringmq", version, about = "A thread-per-core message broker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a broker.
    Serve(Box<serve::ServeArgs>),
    /// Create, list or delete topics.
    #[command(subcommand)]
    Topic(topic::TopicCommand),
    /// Send stdin to a topic, one message per line.
    Produce(produce::ProduceArgs),
    /// Print the messages of a topic, one per line.
    Consume(consume::ConsumeArgs),
    /// List consumer groups or describe one.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Show a cluster's nodes and controller leader, or remove a node.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Add, remove or list users (SASL SCRAM-SHA-256).
    #[command(subcommand)]
    User(security::UserCommand),
    /// Add, remove or list ACLs (allow rules).
    #[command(subcommand)]
    Acl(security::AclCommand),
    /// Set, remove or list per-principal quotas (over the configured ones).
    #[command(subcommand)]
    Quota(quota::QuotaCommand),
}

/// Parses the command line, runs the command and returns the exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Serve(args) => serve::run(*args),
        Command::Topic(cmd) => topic::run(cmd),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Group(cmd) => group::run(cmd),
        Command::Cluster(cmd) => cluster::run(cmd),
        Command::User(cmd) => security::run_user(cmd),
        Command::Acl(cmd) => security::run_acl(cmd),
        Command::Quota(cmd) => quota::run_quota(cmd),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("ringmq: {e}");
            1
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). glommio's own
/// `log` records come through too, so its warnings are not lost.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_thread_names(true)
        // A closed stderr (a reader gone) loses log lines; reporting that
        // on stderr itself would panic.
        .log_internal_errors(false)
        .try_init();
}
