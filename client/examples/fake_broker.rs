//! Runs the tests' in-memory fake broker, to try the client or the CLI
//! without a real one: `cargo run -p ringmq-client --example fake_broker
//! [HOST:PORT]` (default 127.0.0.1:9292). Nothing is stored on disk.

#[path = "../tests/fake/mod.rs"]
mod fake;

fn main() {
    let listen = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9292".to_owned());
    let addr = fake::start_fake_on(&listen, fake::Faults::default());
    eprintln!("fake broker listening on {addr}");
    loop {
        std::thread::park();
    }
}
