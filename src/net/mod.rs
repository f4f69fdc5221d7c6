//! The gateway: accepts client connections on every core (SO_REUSEPORT
//! spreads them), turns frames into calls on the shard, and never touches a
//! file. The wire format itself lives in `ringmq-protocol`.

mod access;
mod connection;
mod dispatch;
mod groups;
mod handlers;
mod security;
mod session;
mod stop;

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use event_listener::Event;
use futures_lite::FutureExt;
use glommio::net::TcpListener;

use crate::service;
use crate::shard::Shard;
pub use connection::Encoded;
use stop::Stop;

/// Connections this shard is serving, and a signal when one ends.
#[derive(Default)]
struct Open {
    count: Cell<usize>,
    closed: Event,
}

/// Accepts and serves connections until the process is asked to stop, then
/// stops reading requests, lets the ones in flight finish (at most
/// `drain_timeout`) and returns.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener, drain_timeout: Duration) {
    let stop = Rc::new(Stop::new());
    let open = Rc::new(Open::default());
    let accept = async {
        loop {
            match listener.accept().await {
                Ok(stream) => admit(&shard, &stop, &open, stream),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    glommio::timer::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    };
    accept.or(service::stopped()).await;
    drop(listener);
    stop.trigger();
    shard.wake_all();
    let drained = async {
        while open.count.get() > 0 {
            let l = open.closed.listen();
            if open.count.get() == 0 {
                break;
            }
            l.await;
        }
        Ok(())
    };
    if glommio::timer::timeout(drain_timeout, drained)
        .await
        .is_err()
    {
        tracing::warn!(
            connections = open.count.get(),
            "clients still connected after the shutdown timeout; closing anyway"
        );
    }
}

fn admit(shard: &Rc<Shard>, stop: &Rc<Stop>, open: &Rc<Open>, stream: glommio::net::TcpStream) {
    if open.count.get() >= shard.config.max_connections_per_shard {
        tracing::warn!(
            limit = shard.config.max_connections_per_shard,
            "connection limit reached; refusing a connection"
        );
        return; // dropping the stream closes it
    }
    let _ = stream.set_nodelay(true);
    open.count.set(open.count.get() + 1);
    crate::metrics::connection_opened();
    let (shard, stop, open) = (shard.clone(), stop.clone(), open.clone());
    glommio::spawn_local(async move {
        connection::serve(shard, stream, stop).await;
        open.count.set(open.count.get() - 1);
        crate::metrics::connection_closed();
        open.closed.notify(usize::MAX);
    })
    .detach();
}
