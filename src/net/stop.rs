//! The "stop taking requests" signal of one shard, shared by its listener and
//! every connection it serves.

use std::cell::Cell;

use event_listener::Event;

#[derive(Debug, Default)]
pub struct Stop {
    stopped: Cell<bool>,
    event: Event,
}

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn trigger(&self) {
        self.stopped.set(true);
        self.event.notify(usize::MAX);
    }

    /// Resolves once [`trigger`](Self::trigger) has been called.
    pub async fn wait(&self) {
        loop {
            let listener = self.event.listen();
            if self.stopped.get() {
                return;
            }
            listener.await;
        }
    }
}
