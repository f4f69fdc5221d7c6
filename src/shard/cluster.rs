//! A shard in a cluster: where a request goes (this node, or the node that
//! leads its partition or coordinates its group), which partitions this
//! node opens (those it holds a replica of), and topic changes made through
//! the cluster's Raft log and mirrored into the node's own catalogue.
//!
//! Shard 0 follows the applied metadata ([`follow_cluster`]): after every
//! applied change it builds a [`ClusterView`], hands it to every core, and
//! brings the node's catalogue in line with it (creating and deleting local
//! topics as the metadata says). Each core then opens the partitions it
//! owns that the view places on this node, gives each its replication role
//! (`replica.rs`; a new follower starts its fetch loop, `follow.rs`), and
//! deletes the copies the view no longer places here: by then the new
//! copies are in sync, since the metadata keeps an old copy until they are.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use glommio::sync::Semaphore;
use ringmq_protocol::{ErrorCode, Request, ResponseBody};

use super::replica::{Assignment, Role};
use super::{now_ms, Failure, Partition, Shard, ShardMsg, CATALOGUE_SHARD};
use crate::cluster::forwarder::{ForwardError, Forwarder};
use crate::cluster::metadata::{default_replication, Command, CommandError, NodeId};
use crate::cluster::node::{NodeHandle, ProposeError};
use crate::cluster::peer_net::PeerNet;
use crate::cluster::view::{ClusterView, Leader};
use crate::group::store::{OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::topics::TopicMeta;

/// How often shard 0 looks for newly applied metadata.
const VIEW_POLL: Duration = Duration::from_millis(10);
/// How long a topic change may take, the controller's election included.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between attempts of a topic change while there is no leader.
const ADMIN_RETRY: Duration = Duration::from_millis(100);
/// How long the controller leader waits for every controller to join before
/// it places `__offsets` on the members there are.
const OFFSETS_PLACEMENT_GRACE: Duration = Duration::from_secs(30);

/// Who sent a request: a client, or another node forwarding one (SPEC.md
/// 5.17), which must be served here or refused, never forwarded again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Node(NodeId),
}

/// Where a request is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Local,
    Remote { node: NodeId, addr: SocketAddr },
}

/// A shard's part of the cluster.
pub(super) struct ClusterSide {
    me: NodeId,
    cluster_id: String,
    forwarder: Forwarder,
    view: RefCell<Option<Arc<ClusterView>>>,
    /// Shard 0 only: the Raft node, which takes proposals, and the peer
    /// network, which carries them to the controller leader.
    controller: RefCell<Option<(NodeHandle, Rc<PeerNet>)>>,
    /// Serialises opening partitions on this core, so one is never opened twice.
    hosting: Semaphore,
}

impl ClusterSide {
    pub(super) fn new(me: NodeId, config: &crate::config::Config) -> ClusterSide {
        let cluster_id = config.cluster_id.clone();
        ClusterSide {
            me,
            forwarder: Forwarder::new(
                me,
                cluster_id.clone(),
                config.tls.clone(),
                config.cluster_secret.clone(),
            ),
            cluster_id,
            view: RefCell::new(None),
            controller: RefCell::new(None),
            hosting: Semaphore::new(1),
        }
    }
}

impl Shard {
    pub fn is_clustered(&self) -> bool {
        self.cluster.is_some()
    }

    /// The cluster as this core last heard of it; `None` on a single node
    /// and before the first view arrives.
    pub fn view(&self) -> Option<Arc<ClusterView>> {
        self.cluster.as_ref()?.view.borrow().clone()
    }

    fn cluster_view(&self) -> Result<Arc<ClusterView>, Failure> {
        self.view().ok_or_else(not_loaded)
    }

    /// Reads the view without cloning its `Arc`: every core holds the same
    /// one, and a reference count bumped by every request would bounce its
    /// cache line between cores.
    fn with_view<T>(
        &self,
        f: impl FnOnce(&ClusterView) -> Result<T, Failure>,
    ) -> Result<T, Failure> {
        let c = self.cluster.as_ref().ok_or_else(not_loaded)?;
        let view = c.view.borrow();
        f(view.as_deref().ok_or_else(not_loaded)?)
    }

    /// Checks a ForwardHello (SPEC.md 5.17): the sender must be a member of
    /// this cluster.
    pub fn accept_forwarder(&self, node: NodeId, cluster_id: &str) -> Result<(), Failure> {
        let refuse = |why: String| Failure::new(ErrorCode::InvalidRequest, why);
        let Some(c) = &self.cluster else {
            return Err(refuse("this broker is not part of a cluster".into()));
        };
        if cluster_id != c.cluster_id {
            return Err(refuse(format!(
                "this node belongs to cluster {:?}, not {cluster_id:?}",
                c.cluster_id
            )));
        }
        let view = self.cluster_view()?;
        if !view.brokers.contains_key(&node) {
            return Err(refuse(format!(
                "node {node} is not a member of the cluster"
            )));
        }
        Ok(())
    }

    /// Where a request for `topic`/`partition` is served (SPEC.md 5.18).
    pub fn route(&self, topic: &str, partition: u32, origin: Origin) -> Result<Route, Failure> {
        if self.cluster.is_none() {
            return Ok(Route::Local);
        }
        self.with_view(|view| route_in(view, topic, partition, origin))
    }
    /// Where a request of `group` is served: its coordinator node.
    pub fn group_route(&self, group: &str, origin: Origin) -> Result<Route, Failure> {
        if self.cluster.is_none() {
            return Ok(Route::Local);
        }
        let not_coordinator = |why: String| Failure::new(ErrorCode::NotCoordinator, why);
        self.with_view(|view| match (view.coordinator(group), origin) {
            (None, _) => Err(not_coordinator(
                "the cluster has not placed its group coordinators yet; retry".into(),
            )),
            (Some(Leader::Me), _) => Ok(Route::Local),
            (Some(Leader::Node { id, addr }), Origin::Client) => {
                Ok(Route::Remote { node: id, addr })
            }
            (Some(Leader::Node { id, .. }), Origin::Node(_)) => Err(not_coordinator(format!(
                "group {group:?} is coordinated by {}",
                view.describe_node(id)
            ))),
            (Some(Leader::None { why }), _) => Err(not_coordinator(why)),
        })
    }

    /// Sends `req` to `node` and returns its answer; `unreachable` is the
    /// code when the node cannot be reached (the request was not sent).
    pub async fn forward(
        &self,
        node: NodeId,
        addr: SocketAddr,
        req: &Request,
        unreachable: ErrorCode,
    ) -> Result<Option<ResponseBody>, Failure> {
        let Some(c) = &self.cluster else {
            return Err(Failure::internal("forwarding on a single node"));
        };
        if !matches!(req, Request::ReplicaFetch(_)) {
            crate::metrics::forwarded(req.api_key(), node);
        }
        c.forwarder
            .request(node, addr, req)
            .await
            .map_err(|e| match e {
                ForwardError::Answered { code, message } => Failure::new(code, message),
                e @ ForwardError::Unreachable { .. } => Failure::new(unreachable, e.to_string()),
                e @ ForwardError::Lost { .. } => {
                    Failure::new(ErrorCode::RequestTimedOut, e.to_string())
                }
            })
    }

    /// The end offset of a partition wherever in the cluster it is led
    /// (group lag and DescribeGroup).
    pub async fn end_offset(&self, topic: &str, partition: u32) -> Result<u64, Failure> {
        const LATEST: i64 = -1;
        match self.route(topic, partition, Origin::Client)? {
            Route::Local => self.list_offsets(topic, partition, LATEST).await,
            Route::Remote { node, addr } => {
                let req = Request::ListOffsets(ringmq_protocol::ListOffsetsRequest {
                    topic: topic.to_owned(),
                    partition,
                    spec: ringmq_protocol::OffsetSpec::Latest,
                });
                match self.forward(node, addr, &req, ErrorCode::NotLeader).await? {
                    Some(ResponseBody::ListOffsets(r)) => Ok(r.offset),
                    other => Err(Failure::internal(format!(
                        "node {node} answered ListOffsets with {other:?}"
                    ))),
                }
            }
        }
    }

    /// Carries out a topic change through the controller leader: proposed
    /// here when this node leads the controllers, else forwarded to the one
    /// that does (never twice: a forwarded request is proposed or refused).
    /// Answers once this node applied it (`applied` says when), so the
    /// client can use the topic through this node at once.
    pub async fn change_topics(
        &self,
        cmd: Command,
        request: Request,
        origin: Origin,
        applied: impl Fn(&ClusterView) -> bool,
    ) -> Result<(), Failure> {
        let Some(c) = &self.cluster else {
            return Err(Failure::internal("a cluster change on a single node"));
        };
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            let view = self.cluster_view()?;
            let attempt = match view.controller {
                Some(leader) if leader == c.me => self.propose(cmd.clone()).await,
                Some(leader) => match (origin, view.brokers.get(&leader).and_then(|b| b.client_addr)) {
                    (Origin::Client, Some(addr)) => {
                        self.forward(leader, addr, &request, ErrorCode::NotLeader)
                            .await
                            .map(drop)
                    }
                    (Origin::Client, _) => Err(Failure::new(
                        ErrorCode::NotLeader,
                        format!("the controller leader, node {leader}, is not reachable as a member yet"),
                    )),
                    (Origin::Node(_), _) => {
                        return Err(Failure::new(
                            ErrorCode::NotLeader,
                            format!("the controller leader is {}", view.describe_node(leader)),
                        ))
                    }
                },
                None => Err(Failure::new(
                    ErrorCode::NotLeader,
                    "the controllers are electing a leader",
                )),
            };
            match attempt {
                Ok(()) => break,
                Err(f) if f.code == ErrorCode::NotLeader && Instant::now() < deadline => {
                    glommio::timer::sleep(ADMIN_RETRY).await;
                }
                Err(f) if f.code == ErrorCode::NotLeader => {
                    return Err(Failure::new(
                        ErrorCode::RequestTimedOut,
                        format!(
                            "no controller leader took the change within {ADMIN_TIMEOUT:?} ({})",
                            f.message
                        ),
                    ));
                }
                Err(f) => return Err(f),
            }
        }
        while !self.view().is_some_and(|v| applied(&v)) {
            if Instant::now() >= deadline {
                return Err(Failure::new(
                    ErrorCode::RequestTimedOut,
                    "the change was made but this node has not applied it yet; it will shortly",
                ));
            }
            glommio::timer::sleep(VIEW_POLL).await;
        }
        Ok(())
    }

    /// Proposes `cmd` to the Raft node on shard 0.
    async fn propose(&self, cmd: Command) -> Result<(), Failure> {
        if self.id != CATALOGUE_SHARD {
            return self
                .ask(CATALOGUE_SHARD, |reply| ShardMsg::Propose { cmd, reply })
                .await;
        }
        let handle = self
            .cluster
            .as_ref()
            .and_then(|c| c.controller.borrow().as_ref().map(|(h, _)| h.clone()))
            .ok_or_else(|| Failure::new(ErrorCode::NotLeader, "the cluster node is not running"))?;
        handle.propose(cmd).await.map_err(propose_failure)
    }

    /// Hands `cmd` to the controller leader and returns at once; what came
    /// of it shows in a later view. For changes the data path decides and
    /// repeats until applied (ISR changes).
    pub async fn submit(&self, cmd: Command) {
        if self.id != CATALOGUE_SHARD {
            let _ = self
                .ask(CATALOGUE_SHARD, |reply| ShardMsg::Submit { cmd, reply })
                .await;
            return;
        }
        let Some((handle, net)) = self
            .cluster
            .as_ref()
            .and_then(|c| c.controller.borrow().clone())
        else {
            return;
        };
        match handle.status().leader {
            Some(l) if l == handle.id() => {
                glommio::spawn_local(async move {
                    if let Err(e) = handle.propose(cmd.clone()).await {
                        tracing::debug!(?cmd, error = %e, "metadata change not applied");
                    }
                })
                .detach();
            }
            Some(l) => net.forward(l, &cmd),
            None => tracing::debug!(
                ?cmd,
                "no controller leader: change dropped (asked again later)"
            ),
        }
    }

    /// Serves [`ShardMsg::Propose`] on shard 0.
    pub(super) async fn serve_propose(&self, cmd: Command) -> Result<(), Failure> {
        self.propose(cmd).await
    }

    /// Shard 0: a new view for every core, then the catalogue brought in line.
    async fn install_view(&self, view: Arc<ClusterView>) {
        // Catalogue first, so other cores see the view only once its
        // topics exist here.
        self.take_view(view.clone()).await;
        self.reconcile(&view).await;
        // After the catalogue: a group's offsets of a topic the catalogue
        // does not have yet would be dropped as those of a deleted one.
        self.follow_group_leadership().await;
        if let Err(e) = self
            .broadcast(|reply| ShardMsg::View {
                view: view.clone(),
                reply,
            })
            .await
        {
            tracing::warn!(error = %e, "a core did not take the new cluster view");
        }
    }

    /// Every core: remember the view, open what it newly places here, give
    /// every partition its role, close the copies it no longer holds.
    pub(super) async fn take_view(&self, view: Arc<ClusterView>) {
        let Some(c) = &self.cluster else { return };
        self.install_security(view.security.clone());
        *c.view.borrow_mut() = Some(view);
        self.open_hosted().await;
        let parts: Vec<(String, u32, Rc<Partition>)> = self
            .topics
            .borrow()
            .values()
            .flat_map(|t| {
                t.local
                    .iter()
                    .enumerate()
                    .filter_map(|(p, part)| Some((t.meta.name.clone(), p as u32, part.clone()?)))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (topic, p, part) in parts {
            self.give_role(&topic, p, &part);
        }
        // The group coordinators' logs: never dropped here (the groups
        // room holds them open); an unplaced copy is merely Offline.
        for (p, part) in self.groups.partitions() {
            self.give_role(OFFSETS_TOPIC, p, &part);
        }
        self.drop_unheld().await;
    }

    /// The role the current view gives a local partition; a new follower
    /// starts fetching from its leader.
    pub(super) fn give_role(self: &Shard, topic: &str, partition: u32, part: &Rc<Partition>) {
        let Some(view) = self.view() else { return };
        let Some(t) = view.topics.get(topic) else {
            return;
        };
        let Some(placement) = t.partitions.get(partition as usize) else {
            return;
        };
        let min_insync = usize::from(
            self.config
                .min_insync_replicas
                .unwrap_or(if t.replication >= 3 { 2 } else { 1 }),
        );
        let leader_addr = placement
            .leader
            .and_then(|l| view.brokers.get(&l))
            .and_then(|b| b.client_addr);
        let now = Instant::now();
        let alive = |n: NodeId| view.brokers.get(&n).is_some_and(|b| b.alive);
        let assignment = Assignment {
            topic,
            partition,
            placement,
            me: view.me,
            leader_addr,
            min_insync,
            alive: &alive,
        };
        let follower =
            part.set_role(|old, log_end| Role::from_view(old, &assignment, log_end, now));
        if let Some(f) = follower {
            tracing::info!(
                topic,
                partition,
                leader = f.leader,
                epoch = f.epoch,
                "following"
            );
            let shard = self.me.upgrade();
            if let Some(shard) = shard {
                glommio::spawn_local(super::follow::follow(
                    shard,
                    topic.to_owned(),
                    partition,
                    part.clone(),
                    part.generation(),
                ))
                .detach();
            }
        }
    }

    /// Closes and deletes the copies the view no longer places on this
    /// node (their data now lives on the partition's new replicas).
    async fn drop_unheld(&self) {
        let Some(view) = self.view() else { return };
        let gone: Vec<(String, u32, Rc<Partition>)> = {
            let mut topics = self.topics.borrow_mut();
            let mut gone = Vec::new();
            for t in topics.values_mut() {
                let Some(vt) = view
                    .topics
                    .get(&t.meta.name)
                    .filter(|v| v.id == t.meta.cluster_id)
                else {
                    continue;
                };
                for (p, slot) in t.local.iter_mut().enumerate() {
                    let held = vt
                        .partitions
                        .get(p)
                        .is_some_and(|pl| pl.holders().any(|n| n == view.me));
                    if !held {
                        if let Some(part) = slot.take() {
                            gone.push((t.meta.name.clone(), p as u32, part));
                        }
                    }
                }
            }
            gone
        };
        for (topic, p, part) in gone {
            tracing::info!(topic = %topic, partition = p, "copy no longer placed on this node; removing it");
            crate::metrics::partition_removed(&topic, p);
            let _ = part.close().await;
            let dir = self.partition_dir(&topic, p);
            let removed = glommio::executor()
                .spawn_blocking(move || std::fs::remove_dir_all(dir))
                .await;
            if let Err(e) = removed {
                tracing::warn!(topic = %topic, partition = p, error = %e, "removing a dropped copy failed");
            }
        }
    }

    /// The ISR changes this core's leaders want now (laggards out).
    pub async fn tick_replication(&self) {
        if self.cluster.is_none() {
            return;
        }
        let lag = self.config.replica_lag;
        let mut changes: Vec<Command> = self
            .local_partitions()
            .iter()
            .filter_map(|p| p.isr_check(lag))
            .collect();
        changes.extend(
            self.groups
                .partitions()
                .iter()
                .filter_map(|(_, p)| p.isr_check(lag)),
        );
        for cmd in changes {
            self.submit(cmd).await;
        }
    }

    /// The role a partition starts in before any view.
    pub(super) fn initial_role(&self) -> Role {
        initial_role(self.cluster.is_some())
    }

    /// Shard 0: creates and deletes local topics until the catalogue holds
    /// exactly the view's user topics (same ids).
    async fn reconcile(&self, view: &ClusterView) {
        let Ok(_guard) = self.lock_catalogue().await else {
            return;
        };
        for (name, meta) in self.catalogue() {
            if view.topics.get(&name).map(|t| t.id) != Some(meta.cluster_id) {
                if let Err(e) = self.apply_delete(name.clone()).await {
                    tracing::error!(topic = %name, error = %e, "could not delete a topic the cluster deleted");
                }
            }
        }
        let local = self.catalogue();
        for t in view.user_topics() {
            if local.get(&t.name).map(|m| m.cluster_id) == Some(t.id) {
                continue;
            }
            let meta = TopicMeta {
                name: t.name.clone(),
                partitions: t.partition_count(),
                replication: t.replication,
                created_ms: now_ms(),
                cluster_id: t.id,
            };
            if let Err(e) = self.apply_create(meta).await {
                tracing::error!(topic = %t.name, error = %e, "could not create a topic the cluster created");
            }
        }
    }

    /// Whether this core opens partition `p` of `meta` when the topic is
    /// added: where the view places a replica; before the first view (at
    /// start), where this node has its data.
    pub(super) fn opens_at_add(&self, meta: &TopicMeta, p: u32) -> bool {
        let Some(c) = &self.cluster else { return true };
        match &*c.view.borrow() {
            Some(view) => {
                view.topics.get(&meta.name).map(|t| t.id) == Some(meta.cluster_id)
                    && view.hosts(&meta.name, p)
            }
            None => self.partition_dir(&meta.name, p).exists(),
        }
    }

    /// Holds the hosting lock (cluster mode) while partitions are opened.
    pub(super) async fn hosting(&self) -> Option<glommio::sync::Permit<'_>> {
        let c = self.cluster.as_ref()?;
        c.hosting.acquire_permit(1).await.ok()
    }

    /// Opens the partitions this core owns that the view places on this
    /// node and that are not open yet.
    async fn open_hosted(&self) {
        let Some(view) = self.view() else { return };
        let _one = self.hosting().await;
        let wanted: Vec<(String, u64, u32)> = self
            .topics
            .borrow()
            .values()
            .filter(|t| view.topics.get(&t.meta.name).map(|v| v.id) == Some(t.meta.cluster_id))
            .flat_map(|t| {
                let name = &t.meta.name;
                (0..t.meta.partitions)
                    .filter(|&p| {
                        t.owners[p as usize] == self.id
                            && t.local[p as usize].is_none()
                            && view.hosts(name, p)
                    })
                    .map(|p| (name.clone(), t.meta.cluster_id, p))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (name, id, p) in wanted {
            let dir = self.partition_dir(&name, p);
            let part = match Partition::open(&dir, self.log_config(), self.initial_role()).await {
                Ok(part) => Rc::new(part),
                Err(e) => {
                    tracing::error!(topic = %name, partition = p, error = %e, "cannot open a partition placed on this node");
                    continue;
                }
            };
            // The topic may have gone or come back as another while this opened.
            let unused = {
                let mut topics = self.topics.borrow_mut();
                match topics.get_mut(&name).filter(|t| t.meta.cluster_id == id) {
                    Some(t) if t.local[p as usize].is_none() => {
                        tracing::info!(topic = %name, partition = p, "partition placed on this node; opened");
                        t.local[p as usize] = Some(part.clone());
                        None
                    }
                    _ => Some(part.clone()),
                }
            };
            match unused {
                Some(part) => {
                    let _ = part.close().await;
                }
                None => self.give_role(&name, p, &part),
            }
        }
    }

    /// Shard 0: gives the shard its Raft node and peer network.
    fn attach_controller(&self, handle: NodeHandle, net: Rc<PeerNet>) {
        if let Some(c) = &self.cluster {
            *c.controller.borrow_mut() = Some((handle, net));
        }
    }

    /// Closes forwarding connections (at shutdown).
    pub fn close_forwarding(&self) {
        if let Some(c) = &self.cluster {
            c.forwarder.close_all();
        }
    }
}

/// The role a partition starts in before any view: a single node serves
/// it alone; a node of a cluster waits to be told.
pub(super) fn initial_role(clustered: bool) -> Role {
    match clustered {
        false => Role::Standalone,
        true => Role::Offline {
            why: "this node has not loaded the cluster metadata yet".into(),
        },
    }
}

/// [`Shard::route`] on a view.
fn route_in(
    view: &ClusterView,
    topic: &str,
    partition: u32,
    origin: Origin,
) -> Result<Route, Failure> {
    let t = view
        .topics
        .get(topic)
        .filter(|t| !t.name.starts_with("__"))
        .ok_or_else(|| Failure::unknown_topic(topic))?;
    let placement = t
        .partitions
        .get(partition as usize)
        .ok_or_else(|| Failure::unknown_partition(topic, partition, t.partition_count()))?;
    let what = || format!("partition {topic}/{partition}");
    match (view.leader_of(placement, what), origin) {
        (Leader::Me, _) => Ok(Route::Local),
        (Leader::Node { id, addr }, Origin::Client) => Ok(Route::Remote { node: id, addr }),
        (Leader::Node { id, .. }, Origin::Node(_)) => Err(Failure::new(
            ErrorCode::NotLeader,
            format!("{} is led by {}", what(), view.describe_node(id)),
        )),
        (Leader::None { why }, _) => Err(Failure::new(ErrorCode::NotLeader, why)),
    }
}

/// Shard 0 in cluster mode, for the life of the node: follows the applied
/// metadata into views for every core and the node's catalogue, and, on the
/// controller leader, places `__offsets` (the group coordinators) once.
pub async fn follow_cluster(
    shard: Rc<Shard>,
    handle: NodeHandle,
    net: Rc<PeerNet>,
    controllers: usize,
) {
    shard.attach_controller(handle.clone(), net);
    let started = Instant::now();
    let mut seen = None;
    loop {
        let status = handle.status();
        let now = (status.applied, status.leader);
        // A restarted node replays its log first: the states on the way are
        // older than its catalogue, and acting on one would delete topics.
        let replaying = status.applied < status.restored_commit;
        if seen != Some(now) && !replaying {
            seen = Some(now);
            let view = Arc::new(handle.read(|md| {
                crate::metrics::replication_health(md.under_replicated(), md.offline());
                ClusterView::new(handle.id(), status.applied, status.leader, md)
            }));
            shard.install_view(view.clone()).await;
            let everyone_joined = view.brokers.len() >= controllers;
            if status.is_leader
                && !view.has_offsets_topic()
                && !view.brokers.is_empty()
                && (everyone_joined || started.elapsed() > OFFSETS_PLACEMENT_GRACE)
            {
                place_offsets(&handle, view.brokers.len()).await;
                seen = None;
            }
            if status.is_leader && shard.config.unclean_leader_election {
                for cmd in unclean_elections(&view) {
                    tracing::warn!(?cmd, "no live in-sync copy: electing a copy that may lack acknowledged data (unclean_leader_election)");
                    if let Err(e) = handle.propose(cmd).await {
                        tracing::debug!(error = %e, "unclean election not applied");
                    }
                }
            }
        }
        glommio::timer::sleep(VIEW_POLL).await;
    }
}

/// Offline partitions with a live copy, each given to its first live copy.
fn unclean_elections(view: &ClusterView) -> Vec<Command> {
    let alive = |n: &NodeId| view.brokers.get(n).is_some_and(|b| b.alive);
    view.topics
        .values()
        .flat_map(|t| {
            t.partitions.iter().enumerate().filter_map(move |(i, p)| {
                if p.leader.is_some() {
                    return None;
                }
                let node = p.holders().find(|n| alive(n))?;
                Some(Command::UncleanElect {
                    topic: t.name.clone(),
                    partition: i as u32,
                    node,
                })
            })
        })
        .collect()
}

/// Places `__offsets` with the cluster's default replication, so a
/// group's state outlives its coordinator node.
async fn place_offsets(handle: &NodeHandle, members: usize) {
    let cmd = Command::CreateTopic {
        name: OFFSETS_TOPIC.into(),
        partitions: OFFSETS_PARTITIONS,
        replication: default_replication(members),
    };
    match handle.propose(cmd).await {
        Ok(()) => tracing::info!("group coordinators placed (topic {OFFSETS_TOPIC})"),
        Err(ProposeError::Rejected(CommandError::TopicExists(_))) => {}
        Err(e) => tracing::debug!(error = %e, "placing {OFFSETS_TOPIC} failed; trying again"),
    }
}

fn not_loaded() -> Failure {
    Failure::new(
        ErrorCode::NotLeader,
        "this node has not loaded the cluster metadata yet; retry",
    )
}

/// A refused or failed proposal, as the client is told.
fn propose_failure(e: ProposeError) -> Failure {
    let code = match &e {
        ProposeError::NotLeader { .. } => ErrorCode::NotLeader,
        ProposeError::Rejected(c) => match c {
            CommandError::TopicExists(_) => ErrorCode::TopicAlreadyExists,
            CommandError::UnknownTopic(_) => ErrorCode::UnknownTopic,
            CommandError::InvalidTopicName(_) => ErrorCode::InvalidTopicName,
            CommandError::InvalidPartitions { .. } => ErrorCode::InvalidPartitions,
            CommandError::InvalidReplication { .. } => ErrorCode::InvalidReplicationFactor,
            _ => ErrorCode::InvalidRequest,
        },
        ProposeError::Timeout(_) => ErrorCode::RequestTimedOut,
        ProposeError::Busy => ErrorCode::Busy,
        ProposeError::Stopped => ErrorCode::ShuttingDown,
        ProposeError::Encoding(_) => ErrorCode::UnknownServerError,
    };
    let message = match e {
        ProposeError::Rejected(c) => c.to_string(),
        e => e.to_string(),
    };
    Failure::new(code, message)
}
