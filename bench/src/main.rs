//! `ringmq-bench`: load generator and micro-benchmarks for ringmq. One
//! subcommand per benchmark, each in its own module.

use clap::{Parser, Subcommand};

mod log_append;

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
    };
    if let Err(e) = r {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
