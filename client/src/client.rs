//! [`Client`]: the bootstrap list and a shared connection to one of its
//! brokers (the *gateway*), reopened when it is lost; and, through the
//! `router` module, the cluster's map and a connection per broker
//! node. Admin, producer and consumer are built on it.
//!
//! Every request may go to the gateway: in a cluster any node serves any
//! request, forwarding it to the partition's leader or the group's
//! coordinator (SPEC.md 5.18). Produce, Fetch and ListOffsets go straight
//! to the partition's leader instead when the map knows where it is, which
//! saves the hop; group and topic requests stay on the gateway.
//!
//! Bootstrap: brokers are tried in list order, starting from the one that
//! answered last, so a dead first entry costs a connect timeout once, not at
//! every reconnect.

use std::cell::{Cell, RefCell};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use ringmq_protocol::{Request, ResponseBody};

use crate::admin::Admin;
use crate::connection::{Connection, ConnectionConfig};
use crate::error::ClientError;
use crate::router::Router;

/// Where the brokers are and how to talk to them.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` addresses, tried in this order (from the one that
    /// answered last).
    pub bootstrap: Vec<String>,
    pub connection: ConnectionConfig,
    /// The cluster's map is fetched again when it is older than this, at
    /// the next request it routes.
    pub metadata_max_age: Duration,
    /// Two Metadata requests of the map's are at least this far apart, so a
    /// burst of `NOT_LEADER` answers costs one refresh, not one each.
    pub metadata_min_interval: Duration,
}

impl ClientConfig {
    /// From a comma-separated list, `host:port,host:port`; blanks are
    /// ignored.
    pub fn new(bootstrap: &str) -> ClientConfig {
        ClientConfig {
            bootstrap: bootstrap
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            connection: ConnectionConfig::default(),
            metadata_max_age: Duration::from_secs(30),
            metadata_min_interval: Duration::from_millis(100),
        }
    }
}

/// A handle on the cluster: cheap to clone, local to one executor (it holds
/// `Rc`s, like everything built on glommio's local tasks).
#[derive(Clone, Debug)]
pub struct Client {
    inner: Rc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ClientConfig,
    /// The gateway: the shared connection, replaced when found closed.
    current: RefCell<Option<Rc<Connection>>>,
    /// Index in `bootstrap` of the broker that accepted the last connection.
    last_bootstrap: Cell<usize>,
    router: Router,
}

impl Client {
    /// Connects to the first broker of the bootstrap list that answers, so a
    /// wrong address shows up here rather than at the first request.
    pub async fn connect(config: ClientConfig) -> Result<Client, ClientError> {
        let client = Client {
            inner: Rc::new(Inner {
                config,
                current: RefCell::new(None),
                last_bootstrap: Cell::new(0),
                router: Router::default(),
            }),
        };
        client.connection().await?;
        Ok(client)
    }

    pub fn config(&self) -> &ClientConfig {
        &self.inner.config
    }

    pub(crate) fn router(&self) -> &Router {
        &self.inner.router
    }

    /// The gateway's address, if it was ever opened.
    pub(crate) fn gateway_addr(&self) -> Option<SocketAddr> {
        self.inner.current.borrow().as_ref().map(|c| c.addr())
    }

    /// The shared connection to the gateway, opened anew (through the
    /// bootstrap list) if there is none or it closed.
    pub async fn connection(&self) -> Result<Rc<Connection>, ClientError> {
        if let Some(c) = self.inner.current.borrow().as_ref() {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let conn = Rc::new(self.open_connection().await?);
        *self.inner.current.borrow_mut() = Some(conn.clone());
        Ok(conn)
    }

    /// A new connection of its own, to the first bootstrap broker that
    /// accepts one, starting from the one that accepted last; for a caller
    /// that must not share (a long-polling consumer would hold up every
    /// request queued behind its fetch).
    ///
    /// Host names are resolved with the system resolver, which blocks the
    /// executor thread: fine for a client, not for a broker.
    pub async fn open_connection(&self) -> Result<Connection, ClientError> {
        let config = &self.inner.config;
        let n = config.bootstrap.len();
        let start = self.inner.last_bootstrap.get();
        let mut addrs = Vec::with_capacity(n);
        let mut errors = Vec::with_capacity(n);
        for k in 0..n {
            let i = (start + k) % n;
            let addr = &config.bootstrap[i];
            match connect_one(addr, &config.connection).await {
                Ok(c) => {
                    self.inner.last_bootstrap.set(i);
                    return Ok(c);
                }
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "bootstrap broker did not answer");
                    addrs.push(addr.clone());
                    errors.push(e);
                }
            }
        }
        Err(ClientError::Connect { addrs, errors })
    }

    /// Sends `req` on the gateway connection and waits for the response.
    /// A Produce with `acks = 0` has none: use [`Connection::send`] for it.
    pub async fn request(&self, req: &Request) -> Result<ResponseBody, ClientError> {
        let conn = self.connection().await?;
        conn.request(req).await?.ok_or_else(|| {
            ClientError::InvalidInput("a produce with acks=0 has no response to wait for".into())
        })
    }

    /// Topic administration and lookups.
    pub fn admin(&self) -> Admin {
        Admin::new(self.clone())
    }
}

/// Tries every address `addr` resolves to; the error names the last failure.
async fn connect_one(addr: &str, config: &ConnectionConfig) -> Result<Connection, String> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve: {e}"))?
        .collect();
    let mut last = "resolves to no address".to_owned();
    for sa in resolved {
        match Connection::connect(sa, config.clone()).await {
            Ok(c) => return Ok(c),
            Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                last = format!("no answer within {:?}", config.connect_timeout);
            }
            Err(ClientError::Io(e)) => last = e.to_string(),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_list() {
        let c = ClientConfig::new(" a:1, b:2,,c:3 ");
        assert_eq!(c.bootstrap, ["a:1", "b:2", "c:3"]);
    }
}
