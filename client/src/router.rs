//! The [`Router`]: which connection a partition's requests take. It keeps
//! the cluster's map ([`ClusterMap`]) fresh and a shared connection per
//! broker node; [`Client`] methods here are what the producer, the fetcher
//! and the admin calls use.
//!
//! **Routing.** A partition's Produce, Fetch and ListOffsets go to its
//! leader ([`Target::Node`]) when the map knows the leader's address and it
//! is usable; otherwise to the gateway ([`Target::Gateway`], the bootstrap
//! connection), which forwards them (SPEC.md 5.18). The gateway is used when
//! the partition has no leader, the topic is not in the map yet, the leader
//! advertises an unusable address (`0.0.0.0`), the cluster has a single
//! broker (the gateway itself, whatever address it advertises), or the
//! leader refused a connection lately: a node whose connect failed is left
//! alone for a backoff (100 ms, doubled per failure in a row, up to 1 s).
//!
//! **Refreshing the map.** A Metadata request (on the gateway, for the
//! topics routed so far) is made when a topic is first routed, when the map
//! is older than `metadata_max_age`, and when an answer says the map is
//! stale: `NOT_LEADER`, `UNKNOWN_TOPIC`, `UNKNOWN_PARTITION` (SPEC.md 5.2),
//! a lost connection to a leader, a leader that refused a connection.
//! Refreshes are coalesced and rate-limited: one runs at a time, in a
//! background task, at least `metadata_min_interval` after the previous
//! one; a failure routed with a map that was refreshed since, or while a
//! refresh is under way, asks for none. So a storm of `NOT_LEADER` answers
//! costs one Metadata request.
//!
//! **Node connections** are opened lazily, in a background task (a caller
//! that cannot wait, like the producer's driver, is woken when it is done),
//! and reopened when found closed. Connections to nodes no longer in the
//! map are dropped once idle; at most one per broker of the map is kept.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_lite::future;
use glommio::timer::Timer;
use ringmq_protocol::{ErrorCode, MetadataRequest, MetadataResponse, Request};

use crate::client::Client;
use crate::connection::Connection;
use crate::consumer::backoff;
use crate::error::ClientError;
use crate::metadata::{ClusterMap, Leader};
use crate::wait::WaitList;

/// The first wait before connecting again to a node that refused; doubled
/// per failure in a row, up to [`crate::MAX_RETRY_BACKOFF`].
const NODE_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The client's shared bootstrap connection.
    Gateway,
    /// The broker node at this client address.
    Node(SocketAddr),
}

/// The routing state of one [`Client`]. Borrows never cross an `.await`.
#[derive(Debug, Default)]
pub(crate) struct Router {
    map: RefCell<ClusterMap>,
    /// Topics routed so far: what a refresh asks about.
    watched: RefCell<BTreeSet<String>>,
    refresh: RefCell<Refresh>,
    nodes: RefCell<HashMap<SocketAddr, Node>>,
    /// Tasks waiting for a node connection or a refresh to end.
    waiters: RefCell<WaitList>,
}

#[derive(Debug, Default)]
struct Refresh {
    /// The refresh task runs (waiting for its turn or asking).
    running: bool,
    /// A Metadata request is out.
    asking: bool,
    /// Someone asked for a refresh the task has not started yet.
    wanted: bool,
    /// When the last Metadata request went out.
    last: Option<Instant>,
    /// Refreshes completed, and how the last one ended.
    done: u64,
    last_error: Option<ClientError>,
    /// Metadata requests made by the task, for tests and logs.
    requests: u64,
}

#[derive(Debug, Default)]
struct Node {
    conn: Option<Rc<Connection>>,
    connecting: bool,
    /// Connects failed in a row, and no attempt before `retry_at`.
    failures: u32,
    retry_at: Option<Instant>,
}

impl Node {
    fn open(&self) -> Option<&Rc<Connection>> {
        self.conn.as_ref().filter(|c| !c.is_closed())
    }
}

impl Client {
    /// Where requests for `topic`/`partition` go now, and the version of
    /// the map that said so (for [`report_failure`](Self::report_failure)).
    pub(crate) fn target(&self, topic: &str, partition: u32) -> (Target, u64) {
        let r = self.router();
        let new_topic = {
            let mut w = r.watched.borrow_mut();
            !w.contains(topic) && w.insert(topic.to_owned())
        };
        let (leader, version, needs_refresh) = {
            let map = r.map.borrow();
            let old = map
                .updated()
                .map_or(true, |t| t.elapsed() >= self.config().metadata_max_age);
            (
                map.leader(topic, partition),
                map.version(),
                old || (new_topic && !map.has_topic(topic)),
            )
        };
        if needs_refresh && !r.refresh.borrow().running {
            self.request_refresh();
        }
        let target = match leader {
            Leader::At(addr) if Some(addr) != self.gateway_addr() && !self.node_resting(addr) => {
                Target::Node(addr)
            }
            _ => Target::Gateway,
        };
        (target, version)
    }

    /// Whether `addr` refused a connection lately and is left alone.
    fn node_resting(&self, addr: SocketAddr) -> bool {
        self.router()
            .nodes
            .borrow()
            .get(&addr)
            .and_then(|n| n.retry_at)
            .is_some_and(|t| Instant::now() < t)
    }

    /// The shared connection to node `addr` if it is open; else starts
    /// opening it (once) and has `cx` woken when that is done, either way.
    pub(crate) fn ready_node(&self, addr: SocketAddr, cx: &Context<'_>) -> Option<Rc<Connection>> {
        let r = self.router();
        let mut nodes = r.nodes.borrow_mut();
        let node = nodes.entry(addr).or_default();
        if let Some(c) = node.open() {
            return Some(c.clone());
        }
        node.conn = None;
        let start = !std::mem::replace(&mut node.connecting, true);
        drop(nodes);
        r.waiters.borrow_mut().register(cx.waker());
        // Spawned after the borrows end: the task may run at once.
        if start {
            glommio::spawn_local(connect_node(self.clone(), addr)).detach();
        }
        None
    }

    /// The shared connection for `target`: the node's, opened if needed,
    /// or the gateway's when that is the target or the node cannot be
    /// reached. Returns the target actually used.
    pub(crate) async fn connection_to(
        &self,
        target: Target,
    ) -> Result<(Rc<Connection>, Target), ClientError> {
        if let Target::Node(addr) = target {
            let node = future::poll_fn(|cx| {
                if self.node_resting(addr) {
                    return Poll::Ready(None);
                }
                match self.ready_node(addr, cx) {
                    Some(c) => Poll::Ready(Some(c)),
                    None => Poll::Pending,
                }
            })
            .await;
            if let Some(c) = node {
                return Ok((c, target));
            }
        }
        Ok((self.connection().await?, Target::Gateway))
    }

    /// A new connection of its own for `target` (see
    /// [`open_connection`](Self::open_connection)). A node that refuses is
    /// left alone for a while, so the caller's retry takes the gateway.
    pub(crate) async fn open_connection_to(
        &self,
        target: Target,
    ) -> Result<Connection, ClientError> {
        let Target::Node(addr) = target else {
            return self.open_connection().await;
        };
        match Connection::connect(addr, self.config().connection.clone()).await {
            Ok(c) => {
                self.node_connected(addr, None);
                Ok(c)
            }
            Err(e) => {
                self.node_failed(addr, &e);
                Err(ClientError::Connect {
                    addrs: vec![addr.to_string()],
                    errors: vec![e.to_string()],
                })
            }
        }
    }

    fn node_connected(&self, addr: SocketAddr, conn: Option<Connection>) {
        let r = self.router();
        {
            let mut nodes = r.nodes.borrow_mut();
            let node = nodes.entry(addr).or_default();
            node.failures = 0;
            node.retry_at = None;
            if let Some(c) = conn {
                node.conn = Some(Rc::new(c));
            }
        }
        r.waiters.borrow_mut().wake_all();
    }

    fn node_failed(&self, addr: SocketAddr, e: &ClientError) {
        let r = self.router();
        {
            let mut nodes = r.nodes.borrow_mut();
            let node = nodes.entry(addr).or_default();
            node.failures = node.failures.saturating_add(1);
            let wait = backoff(NODE_RETRY_BACKOFF, node.failures);
            node.retry_at = Some(Instant::now() + wait);
            tracing::debug!(%addr, error = %e, ?wait, "broker node did not accept a connection; using the gateway meanwhile");
        }
        r.waiters.borrow_mut().wake_all();
        // Its address may be stale, or it may be dead and lead nothing.
        self.request_refresh();
    }

    /// A request routed to `target` with map `version` failed with `e`:
    /// asks for a refresh if `e` says the map is stale (see the module doc).
    pub(crate) fn report_failure(&self, target: Target, version: u64, e: &ClientError) {
        let stale = match e {
            ClientError::Broker { code, .. } => matches!(
                code,
                ErrorCode::NotLeader | ErrorCode::UnknownTopic | ErrorCode::UnknownPartition
            ),
            ClientError::Closed { .. } | ClientError::Timeout { .. } | ClientError::Io(_) => {
                matches!(target, Target::Node(_))
            }
            _ => false,
        };
        if !stale {
            return;
        }
        let r = self.router();
        if r.map.borrow().version() > version || r.refresh.borrow().running {
            return;
        }
        self.request_refresh();
    }

    /// Asks the refresh task for a Metadata request, starting it if needed.
    fn request_refresh(&self) {
        let start = {
            let mut rf = self.router().refresh.borrow_mut();
            rf.wanted = true;
            !std::mem::replace(&mut rf.running, true)
        };
        // Spawned after the borrow ends: the task may run at once.
        if start {
            glommio::spawn_local(refresh_task(self.clone())).detach();
        }
    }

    /// Fetches the cluster's map now (within the rate limit) and waits
    /// for it; the error of the Metadata request, if it failed.
    pub async fn refresh_metadata(&self) -> Result<(), ClientError> {
        let goal = {
            let rf = self.router().refresh.borrow();
            // A request already out may predate the caller's reason.
            rf.done + 1 + u64::from(rf.asking)
        };
        self.request_refresh();
        future::poll_fn(|cx| {
            let r = self.router();
            let rf = r.refresh.borrow();
            if rf.done >= goal {
                return Poll::Ready(match &rf.last_error {
                    Some(e) => Err(e.clone()),
                    None => Ok(()),
                });
            }
            r.waiters.borrow_mut().register(cx.waker());
            Poll::Pending
        })
        .await
    }

    /// Metadata requests the client made to refresh its map.
    pub fn metadata_refreshes(&self) -> u64 {
        self.router().refresh.borrow().requests
    }

    /// Takes in a Metadata answer, whoever asked: the map follows it, and
    /// idle connections to brokers no longer listed are dropped.
    pub(crate) fn observe_metadata(&self, resp: &MetadataResponse) {
        let r = self.router();
        let listed: BTreeSet<SocketAddr> = {
            let mut map = r.map.borrow_mut();
            map.update(resp);
            map.addrs().collect()
        };
        let dropped: Vec<Rc<Connection>> = {
            let mut nodes = r.nodes.borrow_mut();
            let gone: Vec<SocketAddr> = nodes
                .iter()
                .filter(|(a, n)| {
                    !listed.contains(a)
                        && !n.connecting
                        && n.conn.as_ref().map_or(true, |c| c.in_flight() == 0)
                })
                .map(|(a, _)| *a)
                .collect();
            gone.iter()
                .filter_map(|a| nodes.remove(a).and_then(|n| n.conn))
                .collect()
        };
        // Closed here, after the borrows: closing wakes tasks.
        drop(dropped);
        r.waiters.borrow_mut().wake_all();
    }

    /// Waits until every frame queued so far on the gateway and the node
    /// connections was handed to the socket.
    pub(crate) async fn flush_all(&self) -> Result<(), ClientError> {
        let mut conns: Vec<Rc<Connection>> = self
            .router()
            .nodes
            .borrow()
            .values()
            .filter_map(|n| n.open().cloned())
            .collect();
        conns.push(self.connection().await?);
        for c in conns {
            c.flushed().await?;
        }
        Ok(())
    }
}

/// Opens the shared connection to node `addr`.
async fn connect_node(client: Client, addr: SocketAddr) {
    let result = Connection::connect(addr, client.config().connection.clone()).await;
    if let Some(n) = client.router().nodes.borrow_mut().get_mut(&addr) {
        n.connecting = false;
    }
    match result {
        Ok(c) => client.node_connected(addr, Some(c)),
        Err(e) => client.node_failed(addr, &e),
    }
}

/// The refresh task: one Metadata request per round while someone wants
/// one, rounds at least `metadata_min_interval` apart.
async fn refresh_task(client: Client) {
    let r = client.router();
    loop {
        let wait = r.refresh.borrow().last.map(|t| {
            (t + client.config().metadata_min_interval).saturating_duration_since(Instant::now())
        });
        if let Some(w) = wait.filter(|w| !w.is_zero()) {
            Timer::new(w).await;
        }
        let topics: Vec<String> = {
            let mut rf = r.refresh.borrow_mut();
            if !rf.wanted {
                rf.running = false;
                break;
            }
            rf.wanted = false;
            rf.asking = true;
            rf.last = Some(Instant::now());
            rf.requests += 1;
            r.watched.borrow().iter().cloned().collect()
        };
        let req = Request::Metadata(MetadataRequest {
            topics: Some(topics),
        });
        let result = match client.request(&req).await {
            Ok(body) => expect!(body, Metadata).map(|m| client.observe_metadata(&m)),
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::debug!(error = %e, "metadata refresh failed");
        }
        let mut rf = r.refresh.borrow_mut();
        rf.asking = false;
        rf.done += 1;
        rf.last_error = result.err();
        drop(rf);
        r.waiters.borrow_mut().wake_all();
    }
    r.waiters.borrow_mut().wake_all();
}
