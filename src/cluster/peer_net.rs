//! The peer listener and the TCP [`Transport`]: how the nodes of a cluster
//! reach each other over the peer protocol (`protocol/src/peer`, SPEC.md
//! section 11). Runs on the shard that drives the Raft node (shard 0).
//!
//! - Outgoing: one connection per peer, dialed by a task of its own that
//!   reconnects with backoff. The peers are the controllers (`peers`) and,
//!   on a controller, every member that is not one (a learner, which the
//!   leader must reach with the log): their dialers start and stop as the
//!   applied membership changes, with the member's `peer_addr`. [`Transport::send`] never waits: it encodes the
//!   frame and puts it on that peer's bounded queue, dropping it when the
//!   queue is full (Raft retransmits, heartbeats repeat). A failed dial or a
//!   lost connection is reported to Raft ([`NodeHandle::report_unreachable`]).
//! - Incoming: every accepted connection must start with a Hello naming this
//!   cluster and a node id other than this node's; anything else is answered
//!   with a Reject and closed, logged once per sender and reason so a
//!   misconfigured node retrying every second does not flood the log. A
//!   node id the cluster does not know (neither controller, learner nor
//!   member) is a stranger that may only ask to join: its frames are small
//!   ones at most, a Forward of its own Join is taken, its raft messages are
//!   dropped (logged once), and anything else it forwards is refused. After
//!   the Hello, frames go to [`NodeHandle::receive`], which checks them again
//!   against the applied configuration, so a stranger that joins is heard
//!   on the same connection.
//! - Any frame that does not decode closes that one connection and nothing
//!   else: the sender (if it is a node) reconnects and says Hello again.
//!
//! - Authentication: with TLS (`tls_cert`) every peer connection is TLS,
//!   the acceptor's certificate checked against `tls_ca` and, with
//!   `tls_client_ca`, the dialer's against that. With a cluster secret the
//!   acceptor answers a Hello with a Challenge (a fresh nonce); the dialer
//!   answers with a Proof (HMAC over both nonces, `security::secret`), and
//!   the acceptor with its own Proof before its Hello. A dialer that cannot
//!   prove it is refused (Reject `UNAUTHENTICATED`, one log line) before any
//!   frame of it is heard, so it changes nothing; a dialer with a secret
//!   refuses an acceptor that does not prove one in turn.
//!
//! Both directions of a pair get a connection of their own (each node dials
//! every other), and each end reads whatever arrives on either, so a frame
//! sent back on an accepted connection would be handled too.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use glommio::Task;
use ringmq_protocol::peer::{
    self, Challenge, Hello, PeerError, PeerHeader, Proof, Reject, RejectReason, PEER_HEADER_LEN,
    PEER_PROTOCOL_VERSION,
};
use std::sync::Arc;

use crate::security::secret::{self, ClusterSecret, Purpose};
use crate::security::tls::TlsContext;

use super::metadata::{Command, NodeId};
use super::node::{NodeHandle, ReceiveError};
use super::transport::{from_wire, to_wire, PeerMessage, Transport, WireError};

/// Frames queued towards one peer before new ones are dropped.
pub const PEER_QUEUE: usize = 1024;
/// Largest frame accepted before the Hello: a Hello is under 100 bytes, and
/// a stranger must not make us allocate a 32 MiB body.
const MAX_HELLO_FRAME: usize = 4096;
/// How long a new connection may take to say Hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Reconnection backoff, doubling from the first to the last.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Incoming connections open at once; more are closed at once. A cluster
/// needs one per peer; the rest is slack for restarts and strangers.
const MAX_INCOMING: usize = 64;
/// Forwarded commands being proposed at once; more are dropped (the sender
/// retries).
const MAX_FORWARDED: usize = 64;
/// Bytes written to a socket in one write at most (frames are batched).
const WRITE_BATCH: usize = 1 << 20;
/// Distinct "logged once" keys remembered before the memory is reset.
const MAX_LOGGED: usize = 1024;
/// How often a controller compares its dialers with the applied members.
const MEMBERS_POLL: Duration = Duration::from_millis(200);

/// Why a peer connection ended. Each ends only its own connection.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad peer frame: {0}")]
    Frame(#[from] PeerError),
    #[error("peer frame of {len} bytes before Hello (at most {max})")]
    HelloTooLarge { len: usize, max: usize },
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("no Hello within {0:?}")]
    Timeout(Duration),
    #[error("refused by the peer ({reason:?}): {message}")]
    Rejected {
        reason: RejectReason,
        message: String,
    },
    #[error("refused: {0}")]
    Refused(String),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("unexpected {0} frame")]
    Unexpected(&'static str),
    #[error("connection closed")]
    Closed,
}

impl ConnError {
    /// A short name of what went wrong, to log each kind once per sender.
    fn kind(&self) -> &'static str {
        match self {
            ConnError::Io(_) => "i/o",
            ConnError::Frame(_) | ConnError::HelloTooLarge { .. } => "bad frame",
            ConnError::Wire(_) => "bad message",
            ConnError::Timeout(_) => "no hello",
            ConnError::Rejected { .. } => "rejected",
            ConnError::Refused(_) => "refused",
            ConnError::Tls(_) => "tls",
            ConnError::Unexpected(_) => "unexpected frame",
            ConnError::Closed => "closed",
        }
    }
}

/// Who this node is on the peer network.
#[derive(Debug, Clone)]
pub struct PeerNetConfig {
    pub me: NodeId,
    pub cluster_id: String,
    /// The controllers and their peer addresses (this node included).
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Changes on every start of the process (NodeHeartbeat).
    pub incarnation: u64,
    /// `Some`: every peer connection is TLS.
    pub tls: Option<Arc<TlsContext>>,
    /// `Some`: every peer proves it holds this secret (Challenge, Proof).
    pub secret: Option<ClusterSecret>,
}

/// A one-shot stop signal all tasks of the peer network wait on.
#[derive(Default)]
struct Stopper {
    stopped: Cell<bool>,
    event: event_listener::Event,
}

impl Stopper {
    fn stop(&self) {
        self.stopped.set(true);
        self.event.notify(usize::MAX);
    }

    async fn wait(&self) {
        loop {
            if self.stopped.get() {
                return;
            }
            let listener = self.event.listen();
            if self.stopped.get() {
                return;
            }
            listener.await;
        }
    }

    /// Runs `work` until it ends or the stop signal comes.
    async fn until<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        futures_lite::future::or(async { Some(work.await) }, async {
            self.wait().await;
            None
        })
        .await
    }
}

/// The peer network of one node: the transport its Raft node sends through,
/// and, once [`PeerNet::start`]ed, the listener and the dialers.
pub struct PeerNet {
    config: PeerNetConfig,
    /// Outgoing queues: the controllers', then the members' that are not
    /// controllers (on a controller). Never borrowed across an `.await`.
    queues: RefCell<BTreeMap<NodeId, LocalSender<Bytes>>>,
    /// The other ends of the controllers' queues, until the dialers take them.
    receivers: RefCell<BTreeMap<NodeId, LocalReceiver<Bytes>>>,
    /// Dialers of members that are not controllers, with the address each
    /// dials; dropping the task ends it (and its connection).
    member_dialers: RefCell<BTreeMap<NodeId, (SocketAddr, Task<()>)>>,
    stop: Rc<Stopper>,
    dropped: Cell<u64>,
    incoming: Cell<usize>,
    /// Forwarded commands being proposed (shared with their tasks).
    forwarded: Rc<Cell<usize>>,
    /// What was logged once already (sender and reason).
    logged: RefCell<BTreeSet<String>>,
}

impl PeerNet {
    pub fn new(config: PeerNetConfig) -> Rc<PeerNet> {
        let mut queues = BTreeMap::new();
        let mut receivers = BTreeMap::new();
        for &id in config.peers.keys().filter(|&&id| id != config.me) {
            let (tx, rx) = local_channel::new_bounded(PEER_QUEUE);
            queues.insert(id, tx);
            receivers.insert(id, rx);
        }
        Rc::new(PeerNet {
            config,
            queues: RefCell::new(queues),
            receivers: RefCell::new(receivers),
            member_dialers: RefCell::new(BTreeMap::new()),
            stop: Rc::new(Stopper::default()),
            dropped: Cell::new(0),
            incoming: Cell::new(0),
            forwarded: Rc::new(Cell::new(0)),
            logged: RefCell::new(BTreeSet::new()),
        })
    }

    /// The transport the Raft node sends through.
    pub fn transport(self: &Rc<Self>) -> Rc<dyn Transport> {
        Rc::new(TcpTransport(self.clone()))
    }

    /// Frames dropped because a peer's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Starts accepting on `listener` and dialing every controller (and, on
    /// a controller, every other member); the node's `handle` receives what
    /// arrives.
    pub fn start(self: &Rc<Self>, listener: TcpListener, handle: NodeHandle) {
        let receivers = std::mem::take(&mut *self.receivers.borrow_mut());
        for (peer, rx) in receivers {
            let Some(&addr) = self.config.peers.get(&peer) else {
                continue;
            };
            let net = self.clone();
            let handle = handle.clone();
            glommio::spawn_local(async move {
                let stop = net.stop.clone();
                stop.until(net.dial_forever(peer, addr, rx, handle)).await;
            })
            .detach();
        }
        if self.config.peers.contains_key(&self.config.me) {
            let net = self.clone();
            let handle = handle.clone();
            glommio::spawn_local(async move {
                let stop = net.stop.clone();
                stop.until(net.clone().follow_members(handle)).await;
                // Stopped: the member dialers end with their tasks.
                net.member_dialers.borrow_mut().clear();
            })
            .detach();
        }
        let net = self.clone();
        glommio::spawn_local(async move {
            let stop = net.stop.clone();
            stop.until(net.accept_forever(listener, handle)).await;
        })
        .detach();
    }

    /// Keeps one dialer per member that is not a controller, at the peer
    /// address the metadata gives it: started when it joins (or its address
    /// changes), stopped when it leaves.
    async fn follow_members(self: Rc<Self>, handle: NodeHandle) {
        loop {
            let wanted: BTreeMap<NodeId, SocketAddr> = handle.read(|md| {
                md.members()
                    .values()
                    .filter(|m| {
                        m.info.id != self.config.me && !self.config.peers.contains_key(&m.info.id)
                    })
                    .filter_map(|m| match m.info.peer_addr.parse() {
                        Ok(addr) => Some((m.info.id, addr)),
                        Err(_) => {
                            self.log_once(
                                format!("node {} (peer address)", m.info.id),
                                "member with a peer address that is not host:port: not dialed",
                                &m.info.peer_addr,
                            );
                            None
                        }
                    })
                    .collect()
            });
            let gone: Vec<NodeId> = self
                .member_dialers
                .borrow()
                .iter()
                .filter(|(id, (addr, _))| wanted.get(id) != Some(addr))
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                self.queues.borrow_mut().remove(&id);
                self.member_dialers.borrow_mut().remove(&id);
                tracing::debug!(peer = id, "stopped dialing a former member");
            }
            for (id, addr) in wanted {
                if self.member_dialers.borrow().contains_key(&id) {
                    continue;
                }
                let (tx, rx) = local_channel::new_bounded(PEER_QUEUE);
                self.queues.borrow_mut().insert(id, tx);
                let net = self.clone();
                let h = handle.clone();
                let task = glommio::spawn_local(async move {
                    let stop = net.stop.clone();
                    stop.until(net.dial_forever(id, addr, rx, h)).await;
                });
                self.member_dialers.borrow_mut().insert(id, (addr, task));
                tracing::debug!(peer = id, %addr, "dialing a member");
            }
            glommio::timer::sleep(MEMBERS_POLL).await;
        }
    }

    /// Ends every task of the peer network (connections close as their
    /// tasks end).
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Sends `cmd` to `leader` as a Forward frame (SPEC.md 11.3.5).
    pub fn forward(&self, leader: NodeId, cmd: &Command) {
        match serde_json::to_vec(cmd) {
            Ok(json) => {
                let frame = peer::PeerMessage::Forward(peer::Forward {
                    command: json.into(),
                });
                self.enqueue(leader, &frame);
            }
            Err(e) => tracing::error!(?cmd, error = %e, "cannot encode a command to forward"),
        }
    }

    fn enqueue(&self, to: NodeId, frame: &peer::PeerMessage) {
        let queues = self.queues.borrow();
        let Some(queue) = queues.get(&to) else {
            tracing::debug!(to, "peer message to a node with no peer address dropped");
            return;
        };
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        if queue.try_send(buf.freeze()).is_err() {
            self.dropped.set(self.dropped.get() + 1);
            tracing::trace!(to, "peer queue full: message dropped");
        }
    }

    /// Logs at warn the first time `key` is seen, at debug after that.
    fn log_once(&self, key: String, what: &str, error: &dyn std::fmt::Display) {
        let mut logged = self.logged.borrow_mut();
        if logged.len() >= MAX_LOGGED {
            logged.clear();
        }
        if logged.insert(key.clone()) {
            tracing::warn!(peer = %key, error = %error, "{what}");
        } else {
            tracing::debug!(peer = %key, error = %error, "{what}");
        }
    }

    fn hello(&self) -> peer::PeerMessage {
        peer::PeerMessage::Hello(Hello {
            protocol_version: PEER_PROTOCOL_VERSION,
            cluster_id: self.config.cluster_id.clone(),
            node_id: self.config.me,
        })
    }

    // ---- outgoing ----

    async fn dial_forever(
        self: Rc<Self>,
        peer: NodeId,
        addr: SocketAddr,
        rx: LocalReceiver<Bytes>,
        handle: NodeHandle,
    ) {
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.dial_once(peer, addr, &rx, &handle, &mut backoff).await {
                Ok(()) => return, // the queue closed: the node is stopping
                Err(e) => {
                    handle.report_unreachable(peer);
                    match &e {
                        ConnError::Rejected { .. } | ConnError::Refused(_) => self.log_once(
                            format!("node {peer} at {addr}"),
                            "peer connection refused",
                            &e,
                        ),
                        _ => tracing::debug!(peer, %addr, error = %e, "peer connection failed"),
                    }
                }
            }
            glommio::timer::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// One connection to `peer`: Hello both ways, then send what is queued
    /// and handle what arrives until either fails.
    async fn dial_once(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        rx: &LocalReceiver<Bytes>,
        handle: &NodeHandle,
        backoff: &mut Duration,
    ) -> Result<(), ConnError> {
        let stream = TcpStream::connect_timeout(addr, CONNECT_TIMEOUT)
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.config.tls else {
            return self.dialed(peer, addr, stream, rx, handle, backoff).await;
        };
        let options = tls
            .node_client()
            .ok_or_else(|| ConnError::Tls("no tls_ca to check other nodes against".into()))?;
        let name = rustls::pki_types::ServerName::IpAddress(addr.ip().into());
        let connect = futures_rustls::TlsConnector::from(options.config).connect(name, stream);
        let stream = glommio::timer::timeout(HELLO_TIMEOUT, async { Ok(connect.await) })
            .await
            .map_err(|_| ConnError::Timeout(HELLO_TIMEOUT))?
            .map_err(|e| ConnError::Tls(e.to_string()))?;
        self.dialed(peer, addr, stream, rx, handle, backoff).await
    }

    /// The dialed connection after TCP (and TLS): the handshake, then
    /// frames both ways.
    async fn dialed<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        stream: S,
        rx: &LocalReceiver<Bytes>,
        handle: &NodeHandle,
        backoff: &mut Duration,
    ) -> Result<(), ConnError> {
        let (reader, mut writer) = futures_lite::io::split(stream);
        let mut reader = BufReader::with_capacity(64 << 10, reader);
        glommio::timer::timeout(HELLO_TIMEOUT, async {
            Ok(self
                .dial_handshake(peer, addr, &mut reader, &mut writer)
                .await)
        })
        .await
        .map_err(|_| ConnError::Timeout(HELLO_TIMEOUT))??;
        tracing::debug!(peer, %addr, "peer connection up");
        *backoff = BACKOFF_MIN;
        let send = async {
            let mut buf = Vec::with_capacity(64 << 10);
            loop {
                let Some(frame) = rx.recv().await else {
                    return Ok(());
                };
                buf.clear();
                buf.extend_from_slice(&frame);
                // Whatever else is queued goes in the same write.
                while buf.len() < WRITE_BATCH {
                    match futures_lite::future::poll_once(rx.recv()).await {
                        Some(Some(frame)) => buf.extend_from_slice(&frame),
                        _ => break,
                    }
                }
                writer.write_all(&buf).await?;
                writer.flush().await?;
            }
        };
        let receive = async {
            self.read_loop(peer, &mut reader, handle).await?;
            Err(ConnError::Closed)
        };
        futures_lite::future::or(send, receive).await
    }

    /// Hello, and with a cluster secret the Challenge and Proofs, as the
    /// dialer; `Ok` once the acceptor's Hello arrived.
    async fn dial_handshake<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &self,
        peer: NodeId,
        addr: SocketAddr,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<(), ConnError> {
        write_frame(writer, &self.hello()).await?;
        let mut answer = read_frame(reader, MAX_HELLO_FRAME).await?;
        let context = secret::node_context(&self.config.cluster_id, self.config.me, peer);
        match (&answer, &self.config.secret) {
            (Some(peer::PeerMessage::Challenge(c)), Some(key)) => {
                let ours = secret::nonce().map_err(|e| ConnError::Refused(e.to_string()))?;
                let nonces: [&[u8]; 2] = [&c.nonce, &ours];
                let proof = key.prove(Purpose::PeerDialer, &nonces, &context);
                write_frame(
                    writer,
                    &peer::PeerMessage::Proof(Proof { nonce: ours, proof }),
                )
                .await?;
                match read_frame(reader, MAX_HELLO_FRAME).await? {
                    Some(peer::PeerMessage::Proof(p))
                        if p.nonce == c.nonce
                            && key.verify(Purpose::PeerAcceptor, &nonces, &context, &p.proof) => {}
                    Some(peer::PeerMessage::Reject(r)) => {
                        return Err(ConnError::Rejected {
                            reason: r.reason,
                            message: r.message,
                        })
                    }
                    Some(_) => {
                        return Err(ConnError::Refused(format!(
                            "{addr} did not prove it holds the cluster secret"
                        )))
                    }
                    None => return Err(ConnError::Closed),
                }
                answer = read_frame(reader, MAX_HELLO_FRAME).await?;
            }
            (Some(peer::PeerMessage::Challenge(_)), None) => {
                return Err(ConnError::Refused(format!(
                    "{addr} requires the cluster secret (cluster_secret), which this node has not"
                )))
            }
            (Some(peer::PeerMessage::Hello(_)), Some(_)) => {
                return Err(ConnError::Refused(format!(
                    "{addr} does not check the cluster secret; not talking to it"
                )))
            }
            _ => {}
        }
        match answer {
            Some(peer::PeerMessage::Hello(h)) => {
                if h.cluster_id != self.config.cluster_id || h.node_id != peer {
                    return Err(ConnError::Refused(format!(
                        "{addr} answered as node {} of cluster {:?}, expected node {peer} of {:?}",
                        h.node_id, h.cluster_id, self.config.cluster_id
                    )));
                }
                Ok(())
            }
            Some(peer::PeerMessage::Reject(r)) => Err(ConnError::Rejected {
                reason: r.reason,
                message: r.message,
            }),
            Some(_) => Err(ConnError::Unexpected("non-Hello")),
            None => Err(ConnError::Closed),
        }
    }

    // ---- incoming ----

    async fn accept_forever(self: Rc<Self>, listener: TcpListener, handle: NodeHandle) {
        loop {
            let stream = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "peer listener: accept failed");
                    glommio::timer::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if self.incoming.get() >= MAX_INCOMING {
                tracing::warn!(
                    max = MAX_INCOMING,
                    "peer listener: too many connections, closing a new one"
                );
                continue;
            }
            self.incoming.set(self.incoming.get() + 1);
            let net = self.clone();
            let handle = handle.clone();
            glommio::spawn_local(async move {
                let remote = stream
                    .peer_addr()
                    .map_or_else(|_| "?".into(), |a| a.to_string());
                let stop = net.stop.clone();
                if let Some(Err(e)) = stop.until(net.serve_incoming(stream, &handle)).await {
                    match e {
                        ConnError::Closed => {}
                        ConnError::Io(e) => {
                            tracing::debug!(%remote, error = %e, "peer connection lost")
                        }
                        e => net.log_once(
                            format!(
                                "{} ({})",
                                remote.rsplit_once(':').map_or(remote.as_str(), |r| r.0),
                                e.kind()
                            ),
                            "peer connection closed",
                            &e,
                        ),
                    }
                }
                net.incoming.set(net.incoming.get() - 1);
            })
            .detach();
        }
    }

    async fn serve_incoming(
        &self,
        stream: TcpStream,
        handle: &NodeHandle,
    ) -> Result<(), ConnError> {
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.config.tls else {
            return self.serve_accepted(stream, handle).await;
        };
        let accept = tls.acceptor().accept(stream);
        let stream = glommio::timer::timeout(HELLO_TIMEOUT, async { Ok(accept.await) })
            .await
            .map_err(|_| ConnError::Timeout(HELLO_TIMEOUT))?
            .map_err(|e| ConnError::Tls(e.to_string()))?;
        self.serve_accepted(stream, handle).await
    }

    /// An accepted connection after TCP (and TLS): the handshake, then
    /// frames both ways.
    async fn serve_accepted<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        stream: S,
        handle: &NodeHandle,
    ) -> Result<(), ConnError> {
        let (reader, mut writer) = futures_lite::io::split(stream);
        let mut reader = BufReader::with_capacity(64 << 10, reader);
        let first = glommio::timer::timeout(HELLO_TIMEOUT, async {
            Ok(read_frame(&mut reader, MAX_HELLO_FRAME).await)
        })
        .await
        .map_err(|_| ConnError::Timeout(HELLO_TIMEOUT))?;
        let hello = match first {
            Ok(Some(peer::PeerMessage::Hello(h))) => h,
            Ok(None) => return Err(ConnError::Closed),
            Ok(Some(_)) => {
                let e = ConnError::Unexpected("non-Hello first");
                reject(&mut writer, RejectReason::BadInput, &e.to_string()).await;
                return Err(e);
            }
            Err(e) => {
                reject(&mut writer, RejectReason::BadInput, &e.to_string()).await;
                return Err(e);
            }
        };
        let from = hello.node_id;
        let refusal = if hello.cluster_id != self.config.cluster_id {
            Some((
                RejectReason::WrongCluster,
                format!(
                    "node {from} is of cluster {:?}, this is {:?}",
                    hello.cluster_id, self.config.cluster_id
                ),
            ))
        } else if from == self.config.me {
            Some((
                RejectReason::UnknownNode,
                format!("node id {from} is this node's own"),
            ))
        } else {
            // Any other id is heard: a node the cluster knows, or a stranger
            // that may only ask to join (checked frame by frame).
            None
        };
        if let Some((reason, message)) = refusal {
            reject(&mut writer, reason, &message).await;
            return Err(ConnError::Refused(message));
        }
        if let Some(key) = &self.config.secret {
            let proved = glommio::timer::timeout(HELLO_TIMEOUT, async {
                Ok(self.challenge(key, from, &mut reader, &mut writer).await)
            })
            .await
            .map_err(|_| ConnError::Timeout(HELLO_TIMEOUT))?;
            if let Err((reason, e)) = proved {
                reject(&mut writer, reason, &e.to_string()).await;
                return Err(e);
            }
        }
        write_frame(&mut writer, &self.hello()).await?;
        self.read_loop(from, &mut reader, handle).await
    }

    /// The acceptor's side of the secret: a Challenge, the dialer's Proof
    /// checked, ours sent. Nothing from the dialer is heard before this
    /// passes.
    async fn challenge<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
        &self,
        key: &ClusterSecret,
        from: NodeId,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<(), (RejectReason, ConnError)> {
        let bad = |e: ConnError| (RejectReason::BadInput, e);
        let challenge = secret::nonce().map_err(|e| bad(ConnError::Refused(e.to_string())))?;
        write_frame(
            writer,
            &peer::PeerMessage::Challenge(Challenge { nonce: challenge }),
        )
        .await
        .map_err(bad)?;
        let proof = match read_frame(reader, MAX_HELLO_FRAME).await.map_err(bad)? {
            Some(peer::PeerMessage::Proof(p)) => p,
            Some(_) => return Err(bad(ConnError::Unexpected("non-Proof after a Challenge"))),
            None => return Err(bad(ConnError::Closed)),
        };
        let context = secret::node_context(&self.config.cluster_id, from, self.config.me);
        let nonces: [&[u8]; 2] = [&challenge, &proof.nonce];
        if !key.verify(Purpose::PeerDialer, &nonces, &context, &proof.proof) {
            return Err((
                RejectReason::Unauthenticated,
                ConnError::Refused(format!(
                    "node {from} did not prove it holds the cluster secret"
                )),
            ));
        }
        let ours = key.prove(Purpose::PeerAcceptor, &nonces, &context);
        write_frame(
            writer,
            &peer::PeerMessage::Proof(Proof {
                nonce: challenge,
                proof: ours,
            }),
        )
        .await
        .map_err(bad)
    }

    /// Handles the frames node `from` sends after the Hellos, until the
    /// connection ends (`Ok` on a clean close) or a frame is bad.
    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        from: NodeId,
        reader: &mut R,
        handle: &NodeHandle,
    ) -> Result<(), ConnError> {
        loop {
            // Checked per frame: a stranger may join during the connection.
            let known = handle.knows(from);
            let max = if known { usize::MAX } else { MAX_HELLO_FRAME };
            let Some(frame) = read_frame(reader, max).await? else {
                return Ok(());
            };
            match frame {
                peer::PeerMessage::Hello(_) => return Err(ConnError::Unexpected("second Hello")),
                peer::PeerMessage::Challenge(_) | peer::PeerMessage::Proof(_) => {
                    return Err(ConnError::Unexpected("handshake frame after the handshake"))
                }
                peer::PeerMessage::Reject(r) => {
                    return Err(ConnError::Rejected {
                        reason: r.reason,
                        message: r.message,
                    })
                }
                peer::PeerMessage::Forward(f) => self.take_forward(from, known, &f.command, handle),
                frame => {
                    if let Some(msg) = from_wire(from, frame)? {
                        let raft = matches!(msg, super::transport::PeerMessage::Raft(_));
                        match handle.receive(from, msg) {
                            Ok(()) => {}
                            Err(e @ ReceiveError::UnknownNode(_)) if raft => self.log_once(
                                format!("node {from} (raft message from a non-member)"),
                                "raft message from a node that is neither a voter nor a learner dropped",
                                &e,
                            ),
                            Err(e) => tracing::debug!(from, error = %e, "peer message dropped"),
                        }
                    }
                }
            }
        }
    }

    /// A command forwarded to this node as controller leader: proposed if it
    /// is one peers may forward and this node leads, else dropped (the
    /// sender sees nothing change and tries again). `known`: whether `from`
    /// is a node of the cluster; a stranger may only ask to join as itself.
    fn take_forward(&self, from: NodeId, known: bool, json: &[u8], handle: &NodeHandle) {
        let cmd = match serde_json::from_slice::<Command>(json) {
            Ok(cmd) => cmd,
            Err(e) => {
                tracing::warn!(from, error = %e, "forwarded command does not decode: dropped");
                return;
            }
        };
        let allowed = match &cmd {
            Command::Join { node } => node.id == from,
            Command::Remove { .. } => known,
            // Only a partition's leader changes its in-sync set.
            Command::AlterIsr { leader, .. } => known && *leader == from,
            _ => false,
        };
        if !allowed {
            self.log_once(
                format!("node {from} (forwarded command)"),
                "forwarded command not taken from this peer: dropped",
                &format_args!("{cmd:?}"),
            );
            return;
        }
        if let Command::Join { node } = &cmd {
            if handle.read(|md| md.member(node.id).is_some_and(|m| m.info == *node)) {
                // Applied already; the joiner has not caught up to see it.
                tracing::debug!(from, "forwarded join of a member: dropped");
                return;
            }
        }
        if !handle.status().is_leader || self.forwarded.get() >= MAX_FORWARDED {
            tracing::debug!(
                from,
                ?cmd,
                "forwarded command dropped (not leader, or busy)"
            );
            return;
        }
        self.forwarded.set(self.forwarded.get() + 1);
        let forwarded = self.forwarded.clone();
        let handle = handle.clone();
        glommio::spawn_local(async move {
            match handle.propose(cmd.clone()).await {
                Ok(()) => tracing::info!(from, ?cmd, "forwarded command applied"),
                Err(e) => tracing::info!(from, ?cmd, error = %e, "forwarded command not applied"),
            }
            forwarded.set(forwarded.get().saturating_sub(1));
        })
        .detach();
    }
}

/// Sends a Reject and lets the caller close the connection. Best effort: the
/// other side may be gone already.
async fn reject<W: AsyncWrite + Unpin>(writer: &mut W, reason: RejectReason, message: &str) {
    let frame = peer::PeerMessage::Reject(Reject {
        reason,
        message: message.to_owned(),
    });
    let _ = glommio::timer::timeout(Duration::from_secs(1), async {
        let _ = write_frame(writer, &frame).await;
        Ok(())
    })
    .await;
}

async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &peer::PeerMessage,
) -> Result<(), ConnError> {
    let mut buf = BytesMut::new();
    frame.encode(&mut buf);
    writer.write_all(&buf).await?;
    writer.flush().await?;
    Ok(())
}

/// Reads one frame; `None` on a clean close before its first byte. The
/// header is checked before the body is read, and a frame longer than `max`
/// is refused unread.
async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max: usize,
) -> Result<Option<peer::PeerMessage>, ConnError> {
    let mut header = [0u8; PEER_HEADER_LEN];
    let mut got = 0;
    while got < PEER_HEADER_LEN {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ConnError::Closed)
            };
        }
        got += n;
    }
    let parsed = PeerHeader::parse(&header)?;
    if parsed.frame_len() > max {
        return Err(ConnError::HelloTooLarge {
            len: parsed.frame_len(),
            max,
        });
    }
    let mut body = vec![0u8; parsed.body_len()];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            ConnError::Closed
        } else {
            ConnError::Io(e)
        }
    })?;
    Ok(Some(peer::PeerMessage::decode(&parsed, Bytes::from(body))?))
}

/// [`Transport`] over the peer network's queues.
struct TcpTransport(Rc<PeerNet>);

impl Transport for TcpTransport {
    fn send(&self, to: NodeId, msg: PeerMessage) {
        let net = &self.0;
        match to_wire(net.config.me, net.config.incarnation, &msg) {
            Ok(frame) => net.enqueue(to, &frame),
            Err(e) => tracing::error!(to, error = %e, "cannot encode a peer message"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_lite::future::block_on;
    use futures_lite::io::Cursor;

    fn encoded(frame: &peer::PeerMessage) -> Vec<u8> {
        let mut buf = BytesMut::new();
        frame.encode(&mut buf);
        buf.to_vec()
    }

    #[test]
    fn frames_are_read_whole_and_checked_before_their_body() {
        let hello = peer::PeerMessage::Hello(Hello {
            protocol_version: 0,
            cluster_id: "eu".into(),
            node_id: 3,
        });
        let mut bytes = encoded(&hello);
        bytes.extend_from_slice(&bytes.clone());
        let mut r = Cursor::new(bytes);
        for _ in 0..2 {
            let got = block_on(read_frame(&mut r, MAX_HELLO_FRAME)).unwrap();
            assert_eq!(got, Some(hello.clone()));
        }
        // A clean close between frames.
        assert!(block_on(read_frame(&mut r, MAX_HELLO_FRAME))
            .unwrap()
            .is_none());
        // Cut inside a frame.
        let mut r = Cursor::new(encoded(&hello)[..10].to_vec());
        assert!(matches!(
            block_on(read_frame(&mut r, MAX_HELLO_FRAME)),
            Err(ConnError::Closed)
        ));
        // Before Hello a large (valid) frame is refused unread.
        let big = peer::PeerMessage::Raft(peer::RaftMessage {
            message: Bytes::from(vec![0u8; 10_000]),
        });
        let mut r = Cursor::new(encoded(&big)[..8].to_vec());
        assert!(matches!(
            block_on(read_frame(&mut r, MAX_HELLO_FRAME)),
            Err(ConnError::HelloTooLarge { .. })
        ));
        // Garbage fails on its header.
        let mut r = Cursor::new(b"GET / HTTP/1.1\r\n\r\n".to_vec());
        assert!(matches!(
            block_on(read_frame(&mut r, usize::MAX)),
            Err(ConnError::Frame(_))
        ));
    }
}
