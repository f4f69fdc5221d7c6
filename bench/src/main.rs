//! `ringmq-bench`: load generator and micro-benchmarks for ringmq. One
//! subcommand per benchmark, each in its own module.

use clap::{Parser, Subcommand};

mod common;
mod consume;
mod e2e;
mod log_append;
mod produce;

#[derive(Parser)]
#[command(name = "ringmq-bench", about = "Benchmarks for ringmq")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Partition-log append throughput under both flush policies, next to dd.
    LogAppend(log_append::Args),
    /// Produce throughput and ack latency (`--rate` for a fixed offered load).
    Produce(produce::Args),
    /// Consume throughput: preloads `--messages`, then reads them back.
    Consume(consume::Args),
    /// Producers and consumers at once; latency from a timestamp in each payload.
    E2e(e2e::Args),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::LogAppend(a) => log_append::run(a),
        Cmd::Produce(a) => produce::run(a).map_err(|e| e.to_string()),
        Cmd::Consume(a) => consume::run(a).map_err(|e| e.to_string()),
        Cmd::E2e(a) => e2e::run(a).map_err(|e| e.to_string()),
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
