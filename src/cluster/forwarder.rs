//! How one core sends a request it cannot serve to the node that can: over
//! that node's client listener, on connections that start with ForwardHello
//! (SPEC.md 5.17) so the other node never forwards them again. With TLS the
//! connections are TLS (the other node checked against `tls_ca`); with a
//! cluster secret each side proves it holds it during the ForwardHello.
//!
//! One core keeps its own connections (nothing shared between cores), per
//! node: one for short requests and a small pool for fetches. Answers on a
//! connection come in request order, so a long-polling fetch would hold
//! back every produce queued behind it; fetches get connections of their
//! own, a new one while every open one is busy, up to [`FETCH_CONNECTIONS`].

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use glommio::sync::Semaphore;
use ringmq_client::{ClientError, Connection, ConnectionConfig};
use ringmq_protocol::{ErrorCode, ForwardHelloRequest, Request, ResponseBody};

use super::metadata::NodeId;
use crate::security::secret::{self, ClusterSecret, Purpose};
use crate::security::tls::TlsContext;

/// Fetch connections to one node, per core, at most.
pub const FETCH_CONNECTIONS: usize = 8;
/// Requests in flight on one forwarding connection before senders wait.
const MAX_IN_FLIGHT: usize = 1024;

/// Why a forwarded request got no answer from the other node.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ForwardError {
    /// Not sent: the node could not be reached.
    #[error("node {node} at {addr} cannot be reached: {reason}")]
    Unreachable {
        node: NodeId,
        addr: SocketAddr,
        reason: String,
    },
    /// Sent, then the connection broke or timed out: it may have been applied.
    #[error("node {node} at {addr} did not answer: {reason}")]
    Lost {
        node: NodeId,
        addr: SocketAddr,
        reason: String,
    },
    /// The node answered with an error code.
    #[error("{code}: {message}")]
    Answered { code: ErrorCode, message: String },
}

/// Which connections a request uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Lane {
    Fetch,
    /// Followers' fetches: long polls too, kept apart from consumers'.
    Replica,
    Other,
}

/// Open connections to one node's address, for one lane.
type Pool = HashMap<(NodeId, SocketAddr, Lane), Vec<Rc<Connection>>>;

/// The forwarding connections of one core.
pub struct Forwarder {
    me: NodeId,
    cluster_id: String,
    /// Read at each new connection, so a SIGHUP reload is picked up.
    tls: Option<Arc<TlsContext>>,
    secret: Option<ClusterSecret>,
    conns: RefCell<Pool>,
    /// One connect at a time per core, so a burst of requests to a node
    /// that has no connection yet opens one, not one each.
    connecting: Semaphore,
}

impl Forwarder {
    pub fn new(
        me: NodeId,
        cluster_id: String,
        tls: Option<Arc<TlsContext>>,
        secret: Option<ClusterSecret>,
    ) -> Forwarder {
        Forwarder {
            me,
            cluster_id,
            tls,
            secret,
            conns: RefCell::new(HashMap::new()),
            connecting: Semaphore::new(1),
        }
    }

    /// Sends `req` to `node` at `addr` and waits for its answer (`None` for
    /// a request that gets none: produce with acks=0).
    pub async fn request(
        &self,
        node: NodeId,
        addr: SocketAddr,
        req: &Request,
    ) -> Result<Option<ResponseBody>, ForwardError> {
        let lane = match req {
            Request::Fetch(_) => Lane::Fetch,
            Request::ReplicaFetch(_) => Lane::Replica,
            _ => Lane::Other,
        };
        let conn = self.connection(node, addr, lane).await?;
        match conn.request(req).await {
            Ok(answer) => Ok(answer),
            Err(ClientError::Broker { code, message }) => {
                Err(ForwardError::Answered { code, message })
            }
            Err(e) => {
                if conn.is_closed() {
                    self.forget(node, addr, lane, &conn);
                }
                Err(ForwardError::Lost {
                    node,
                    addr,
                    reason: e.to_string(),
                })
            }
        }
    }

    /// Closes every connection (at shutdown; their requests fail).
    pub fn close_all(&self) {
        for conn in self.conns.borrow_mut().drain().flat_map(|(_, v)| v) {
            conn.close();
        }
    }

    /// An open connection of `lane` to the node, opened if need be.
    async fn connection(
        &self,
        node: NodeId,
        addr: SocketAddr,
        lane: Lane,
    ) -> Result<Rc<Connection>, ForwardError> {
        if let Some(c) = self.pick(node, addr, lane) {
            return Ok(c);
        }
        let _one =
            self.connecting
                .acquire_permit(1)
                .await
                .map_err(|e| ForwardError::Unreachable {
                    node,
                    addr,
                    reason: e.to_string(),
                })?;
        // Another request may have connected while this one waited.
        if let Some(c) = self.pick(node, addr, lane) {
            return Ok(c);
        }
        let conn = Rc::new(self.connect(node, addr).await?);
        self.conns
            .borrow_mut()
            .entry((node, addr, lane))
            .or_default()
            .push(conn.clone());
        Ok(conn)
    }

    /// An idle open connection; else, for fetches below the pool size,
    /// none (so a new one is opened); else the least busy one.
    fn pick(&self, node: NodeId, addr: SocketAddr, lane: Lane) -> Option<Rc<Connection>> {
        let mut conns = self.conns.borrow_mut();
        let list = conns.get_mut(&(node, addr, lane))?;
        list.retain(|c| !c.is_closed());
        let least = list.iter().min_by_key(|c| c.in_flight())?;
        let pool = match lane {
            Lane::Fetch | Lane::Replica => FETCH_CONNECTIONS,
            Lane::Other => 1,
        };
        if least.in_flight() > 0 && list.len() < pool {
            return None;
        }
        Some(least.clone())
    }

    fn forget(&self, node: NodeId, addr: SocketAddr, lane: Lane, conn: &Rc<Connection>) {
        if let Some(list) = self.conns.borrow_mut().get_mut(&(node, addr, lane)) {
            list.retain(|c| !Rc::ptr_eq(c, conn));
        }
    }

    async fn connect(&self, node: NodeId, addr: SocketAddr) -> Result<Connection, ForwardError> {
        let unreachable = |reason: String| ForwardError::Unreachable { node, addr, reason };
        let tls = match &self.tls {
            Some(ctx) => Some(ctx.node_client().ok_or_else(|| {
                unreachable("TLS is on but no tls_ca to check other nodes against".into())
            })?),
            None => None,
        };
        let config = ConnectionConfig {
            connect_timeout: Duration::from_secs(2),
            max_in_flight: MAX_IN_FLIGHT,
            tls,
            ..ConnectionConfig::default()
        };
        let conn = Connection::connect(addr, config)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        self.hello(&conn, node)
            .await
            .map_err(|e| unreachable(format!("ForwardHello refused: {e}")))?;
        tracing::debug!(node, %addr, "forwarding connection open");
        Ok(conn)
    }

    /// ForwardHello, and with a cluster secret its second step: our proof
    /// over the other node's challenge, and a check of its proof over ours.
    async fn hello(&self, conn: &Connection, node: NodeId) -> Result<(), String> {
        let nonce = match &self.secret {
            Some(_) => Bytes::copy_from_slice(&secret::nonce().map_err(|e| e.to_string())?),
            None => Bytes::new(),
        };
        let mut req = ForwardHelloRequest {
            node_id: self.me,
            cluster_id: self.cluster_id.clone(),
            nonce: nonce.clone(),
            proof: Bytes::new(),
        };
        let first = hello_answer(conn, &req).await?;
        let Some(key) = &self.secret else {
            if !first.challenge.is_empty() {
                return Err(format!(
                    "node {node} requires the cluster secret (cluster_secret), which this node has not"
                ));
            }
            return Ok(());
        };
        if first.challenge.is_empty() {
            return Err(format!(
                "node {node} does not check the cluster secret; refusing to forward to it"
            ));
        }
        let context = secret::node_context(&self.cluster_id, self.me, node);
        let nonces: [&[u8]; 2] = [&first.challenge, &nonce];
        req.proof = Bytes::copy_from_slice(&key.prove(Purpose::ForwardClient, &nonces, &context));
        let second = hello_answer(conn, &req).await?;
        if !key.verify(Purpose::ForwardServer, &nonces, &context, &second.proof) {
            return Err(format!(
                "node {node} did not prove it holds the cluster secret"
            ));
        }
        Ok(())
    }
}

async fn hello_answer(
    conn: &Connection,
    req: &ForwardHelloRequest,
) -> Result<ringmq_protocol::ForwardHelloResponse, String> {
    match conn.request(&Request::ForwardHello(req.clone())).await {
        Ok(Some(ResponseBody::ForwardHello(r))) => Ok(r),
        Ok(other) => Err(format!("unexpected answer to ForwardHello: {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
