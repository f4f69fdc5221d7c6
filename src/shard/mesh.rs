//! The channels between cores: one bounded channel for every ordered pair of
//! shards, so any shard can send to any other.
//!
//! Built from glommio's `shared_channel` on the main thread, one set of ends
//! per core, rather than with glommio's `MeshBuilder`: that type shares an
//! `Rc` between threads (it is `Send` by an `unsafe impl` and cloned on every
//! executor), a refcount race that can corrupt the registry its `join` waits
//! on.

use std::sync::{Arc, Mutex};

use glommio::channels::shared_channel::{
    self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender,
};

/// The ends of the mesh that belong to one core, before it connects them.
/// `Send`: made on the main thread, moved to the core's executor.
pub struct MeshEnds<T: Send> {
    id: usize,
    /// To each other core, by core id (`None` for this core).
    senders: Vec<Option<SharedSender<T>>>,
    /// From each other core.
    receivers: Vec<SharedReceiver<T>>,
}

/// Builds the ends for `cores` cores; `capacity` messages fit in each
/// channel before a sender waits. Each core takes one set with [`take_ends`].
pub fn build<T: Send + 'static>(cores: usize, capacity: usize) -> Arc<Mutex<Vec<MeshEnds<T>>>> {
    let mut ends: Vec<MeshEnds<T>> = (0..cores)
        .map(|id| MeshEnds {
            id,
            senders: (0..cores).map(|_| None).collect(),
            receivers: Vec::with_capacity(cores.saturating_sub(1)),
        })
        .collect();
    for from in 0..cores {
        for to in (0..cores).filter(|to| *to != from) {
            let (tx, rx) = shared_channel::new_bounded(capacity);
            ends[from].senders[to] = Some(tx);
            ends[to].receivers.push(rx);
        }
    }
    Arc::new(Mutex::new(ends))
}

/// Takes a set of ends for the calling core; `None` once every set is taken.
pub fn take_ends<T: Send>(all: &Mutex<Vec<MeshEnds<T>>>) -> Option<MeshEnds<T>> {
    all.lock().ok()?.pop()
}

impl<T: Send + 'static> MeshEnds<T> {
    /// Connects every end on the calling executor. Returns once every other
    /// core has connected its side too. All connects are started before any
    /// is awaited: each one waits for the far side, and two cores awaiting
    /// their senders in turn would wait on each other.
    pub async fn connect(self) -> (Mesh<T>, Vec<ConnectedReceiver<T>>) {
        let senders: Vec<_> = self
            .senders
            .into_iter()
            .map(|s| s.map(|s| glommio::spawn_local(s.connect()).detach()))
            .collect();
        let receivers: Vec<_> = self
            .receivers
            .into_iter()
            .map(|r| glommio::spawn_local(r.connect()).detach())
            .collect();
        let mut connected = Vec::with_capacity(senders.len());
        for s in senders {
            connected.push(match s {
                Some(task) => task.await,
                None => None,
            });
        }
        let mut inbound = Vec::with_capacity(receivers.len());
        for r in receivers {
            inbound.extend(r.await);
        }
        let mesh = Mesh {
            id: self.id,
            senders: connected,
        };
        (mesh, inbound)
    }
}

/// One core's connected senders to every other core.
pub struct Mesh<T: Send> {
    id: usize,
    senders: Vec<Option<ConnectedSender<T>>>,
}

impl<T: Send + 'static> Mesh<T> {
    /// This core's id, 0..cores.
    pub fn id(&self) -> usize {
        self.id
    }

    pub fn cores(&self) -> usize {
        self.senders.len()
    }

    /// Sends to another core, waiting while its channel is full. Fails if
    /// that core has stopped (or is this core).
    pub async fn send_to(&self, core: usize, msg: T) -> Result<(), CoreGone> {
        match self.senders.get(core) {
            Some(Some(tx)) => tx.send(msg).await.map_err(|_| CoreGone(core)),
            _ => Err(CoreGone(core)),
        }
    }
}

/// A message could not be delivered: the core's end of the mesh is closed.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("core {0} is not receiving")]
pub struct CoreGone(pub usize);
