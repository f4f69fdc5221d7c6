//! The `ringmq` binary: the broker (`ringmq serve`) and its command-line client.

fn main() {
    std::process::exit(ringmq::cli::main());
}
