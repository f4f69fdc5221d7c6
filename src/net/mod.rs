//! The gateway: accepts client connections on every core (SO_REUSEPORT
//! spreads them), in the clear or over TLS (`tls_cert`), turns frames into
//! calls on the shard, and never touches a file. The wire format itself
//! lives in `ringmq-protocol`.

mod access;
mod connection;
mod dispatch;
mod groups;
mod handlers;
mod hello;
mod security;
mod session;
mod stop;
mod throttle;

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
        let peer = stream.peer_addr().ok();
        // Two monomorphized paths: the plaintext one never sees TLS.
        match shard.config.tls.clone() {
            None => connection::serve(shard, stream, stop, peer, None).await,
            Some(tls) => match handshake(&tls, stream).await {
                Ok((stream, identity)) => {
                    connection::serve(shard, stream, stop, peer, identity).await
                }
                Err(e) => {
                    tracing::debug!(?peer, error = %e, "TLS handshake failed; connection closed")
                }
            },
        }
        open.count.set(open.count.get() - 1);
        crate::metrics::connection_closed();
        open.closed.notify(usize::MAX);
    })
    .detach();
}

/// Why a TLS connection never got past its handshake.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    #[error("no handshake within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Tls(std::io::Error),
}

/// Runs the server side of a TLS handshake, bounded by
/// `tls_handshake_timeout` (a client that says nothing, or plaintext, is
/// closed rather than held). Returns the stream and who the client's
/// verified certificate names, if it showed one.
async fn handshake(
    tls: &crate::security::tls::TlsContext,
    stream: glommio::net::TcpStream,
) -> Result<
    (
        futures_rustls::server::TlsStream<glommio::net::TcpStream>,
        Option<String>,
    ),
    HandshakeError,
> {
    let limit = tls.handshake_timeout();
    let accept = tls.acceptor().accept(stream);
    let stream = glommio::timer::timeout(limit, async { Ok(accept.await) })
        .await
        .map_err(|_| HandshakeError::Timeout(limit))?
        .map_err(HandshakeError::Tls)?;
    let identity = crate::security::tls::identity(stream.get_ref().1.peer_certificates());
    Ok((stream, identity))
}
