//! One shard per core: the partitions this core owns, its copy of the topic
//! catalogue, and the mesh to the other cores. Nothing here is shared between
//! threads; another core's partition is reached by a [`ShardMsg`] and a reply.
//!
//! Shard 0 also owns the catalogue file: topic creation and deletion go
//! through it, so the changes are serialised in one place and then applied
//! by every shard. In a cluster the catalogue mirrors the cluster metadata
//! (see [`cluster`]).

mod cluster;
mod failure;
mod follow;
mod groups;
mod mesh;
mod messages;
mod partition;
mod placement;
mod replica;
mod security;

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_channel::oneshot;
use glommio::sync::Semaphore;

pub use cluster::{follow_cluster, Origin, Route};
pub use failure::Failure;
use groups::Groups;
pub use mesh::{build as build_mesh, take_ends, Mesh, MeshEnds};
pub use messages::{Fetched, GroupRequest, Produced, Reply, ShardMsg};
pub use partition::Partition;
pub use placement::place_partitions;

use crate::config::Config;
use crate::group::store::{OFFSETS_PARTITIONS, OFFSETS_TOPIC};
use crate::log::LogConfig;
use crate::topics::{self, Catalogue, TopicMeta};
use ringmq_protocol::{Acks, ErrorCode, ReplicaFetchRequest, ReplicaFetchResponse};

/// The shard that owns the catalogue.
const CATALOGUE_SHARD: usize = 0;

/// A topic as one shard sees it: its definition, which core owns each
/// partition, and the partitions this core owns.
struct LocalTopic {
    meta: TopicMeta,
    /// Owning core of each partition, by partition number.
    owners: Vec<usize>,
    /// Open logs of the partitions this core owns, by partition number.
    local: Vec<Option<Rc<Partition>>>,
}

/// Where a partition lives, from the point of view of one shard.
enum Location {
    Here(Rc<Partition>),
    Core(usize),
}

/// The state of one core.
pub struct Shard {
    /// Index of this shard, 0..cores.
    pub id: usize,
    pub config: Arc<Config>,
    topics: RefCell<HashMap<String, LocalTopic>>,
    mesh: Mesh<ShardMsg>,
    /// Bytes of buffered requests and responses this shard may still take.
    pub memory: Rc<Semaphore>,
    /// Serialises catalogue changes on the catalogue shard.
    catalogue_lock: Semaphore,
    /// The consumer groups this core coordinates.
    groups: Groups,
    /// In a cluster: routing, forwarding, the view of the cluster.
    cluster: Option<cluster::ClusterSide>,
    /// This shard, for the tasks it starts (a follower's fetch loop).
    me: Weak<Shard>,
    /// Users and ACLs as this core knows them: from `security.json` on a
    /// single node (changed through shard 0), from the view in a cluster.
    security: RefCell<Arc<crate::auth::Security>>,
}

impl Shard {
    /// Builds the shard and opens the partitions it owns.
    pub async fn open(
        config: Arc<Config>,
        mesh: Mesh<ShardMsg>,
        catalogue: Catalogue,
    ) -> Result<Rc<Shard>, Failure> {
        let groups = Groups::open(
            &config.data_dir,
            &config.log,
            mesh.id(),
            mesh.cores(),
            now_ms(),
            &catalogue.keys().cloned().collect(),
            || cluster::initial_role(config.node_id.is_some()),
        )
        .await?;
        let cluster = config
            .node_id
            .map(|me| cluster::ClusterSide::new(me, &config));
        // A cluster's users come with its first view; a single node's from its file.
        let security = match cluster {
            Some(_) => crate::auth::Security::default(),
            None => crate::auth::store::load(&config.data_dir).map_err(Failure::internal)?,
        };
        crate::quota::set_metadata(security.quotas());
        let shard = Rc::new_cyclic(|me| Shard {
            me: me.clone(),
            groups,
            cluster,
            id: mesh.id(),
            memory: Rc::new(Semaphore::new(config.shard_memory_budget)),
            config,
            topics: RefCell::new(HashMap::new()),
            mesh,
            catalogue_lock: Semaphore::new(1),
            security: RefCell::new(Arc::new(security)),
        });
        for meta in catalogue.into_values() {
            shard.add_topic(meta).await?;
        }
        Ok(shard)
    }

    pub fn cores(&self) -> usize {
        self.mesh.cores()
    }

    fn log_config(&self) -> LogConfig {
        self.config.log.clone()
    }

    fn partition_dir(&self, topic: &str, partition: u32) -> PathBuf {
        topics::partition_dir(&self.config.data_dir, topic, partition)
    }

    /// The catalogue as this shard knows it.
    pub fn topics(&self) -> Vec<TopicMeta> {
        let mut v: Vec<TopicMeta> = self
            .topics
            .borrow()
            .values()
            .map(|t| t.meta.clone())
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    pub fn topic(&self, name: &str) -> Option<TopicMeta> {
        self.topics.borrow().get(name).map(|t| t.meta.clone())
    }

    fn locate(&self, topic: &str, partition: u32) -> Result<Location, Failure> {
        let topics = self.topics.borrow();
        let Some(t) = topics.get(topic) else {
            return Err(match self.is_clustered() {
                true => not_ready(format!("topic {topic:?} is not set up on this node yet")),
                false => Failure::unknown_topic(topic),
            });
        };
        let i = partition as usize;
        let owner = *t
            .owners
            .get(i)
            .ok_or_else(|| Failure::unknown_partition(topic, partition, t.meta.partitions))?;
        if owner != self.id {
            return Ok(Location::Core(owner));
        }
        t.local[i]
            .clone()
            .map(Location::Here)
            .ok_or_else(|| match self.is_clustered() {
                true => not_ready(format!(
                    "partition {topic}/{partition} is not open on this node yet"
                )),
                false => Failure::internal(format!("{topic}/{partition} is not open here")),
            })
    }

    /// Where this node's copy of a partition lives, `__offsets` included
    /// (which [`Shard::locate`] leaves out: clients never reach it). For
    /// replication only.
    fn locate_copy(&self, topic: &str, partition: u32) -> Result<Location, Failure> {
        if topic != OFFSETS_TOPIC {
            return self.locate(topic, partition);
        }
        let owner = self
            .groups
            .owner_of(partition)
            .ok_or_else(|| Failure::unknown_partition(topic, partition, OFFSETS_PARTITIONS))?;
        if owner != self.id {
            return Ok(Location::Core(owner));
        }
        self.groups
            .partition(partition)
            .map(Location::Here)
            .ok_or_else(|| Failure::internal(format!("{topic}/{partition} is not open here")))
    }

    /// Sends `msg` (built around a reply channel) to `core` and waits for the answer.
    async fn ask<T>(
        &self,
        core: usize,
        msg: impl FnOnce(Reply<T>) -> ShardMsg,
    ) -> Result<T, Failure> {
        let (tx, rx) = oneshot::channel();
        if self.mesh.send_to(core, msg(tx)).await.is_err() {
            return Err(Failure::new(
                ErrorCode::ShuttingDown,
                format!("core {core} is shutting down"),
            ));
        }
        rx.await.unwrap_or_else(|_| {
            Err(Failure::new(
                ErrorCode::ShuttingDown,
                format!("core {core} dropped the request"),
            ))
        })
    }

    /// Appends a batch to a partition, wherever on this node it lives.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batch: Bytes,
        acks: Acks,
        timeout: Duration,
    ) -> Result<Produced, Failure> {
        match self.locate(topic, partition)? {
            Location::Here(p) => p.produce(batch, acks, timeout).await,
            Location::Core(c) => {
                let topic = topic.to_owned();
                self.ask(c, |reply| ShardMsg::Produce {
                    topic,
                    partition,
                    batch,
                    acks,
                    timeout,
                    reply,
                })
                .await
            }
        }
    }

    /// Serves a follower's fetch, wherever on this node the partition lives.
    pub async fn replica_fetch(
        &self,
        req: ReplicaFetchRequest,
    ) -> Result<ReplicaFetchResponse, Failure> {
        match self.locate_copy(&req.topic, req.partition)? {
            Location::Here(p) => {
                let (answer, change) = p.replica_fetch(&req, self.config.replica_lag).await?;
                if let Some(cmd) = change {
                    self.submit(cmd).await;
                }
                Ok(answer)
            }
            Location::Core(c) => {
                self.ask(c, |reply| ShardMsg::ReplicaFetch { req, reply })
                    .await
            }
        }
    }

    /// Reads from a partition, wherever on this node it lives.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: u32,
        min_bytes: u32,
        max_wait: Duration,
    ) -> Result<Fetched, Failure> {
        match self.locate(topic, partition)? {
            Location::Here(p) => p.fetch(offset, max_bytes, min_bytes, max_wait).await,
            Location::Core(c) => {
                let topic = topic.to_owned();
                self.ask(c, |reply| ShardMsg::Fetch {
                    topic,
                    partition,
                    offset,
                    max_bytes,
                    min_bytes,
                    max_wait,
                    reply,
                })
                .await
            }
        }
    }

    /// Resolves an offset spec (-2 earliest, -1 latest) for a partition.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partition: u32,
        spec: i64,
    ) -> Result<u64, Failure> {
        match self.locate(topic, partition)? {
            Location::Here(p) => p.list_offsets(spec),
            Location::Core(c) => {
                let topic = topic.to_owned();
                self.ask(c, |reply| ShardMsg::ListOffsets {
                    topic,
                    partition,
                    spec,
                    reply,
                })
                .await
            }
        }
    }

    /// Creates a topic on every core of this node and records it in the catalogue.
    pub async fn create_topic(&self, meta: TopicMeta) -> Result<(), Failure> {
        if self.id != CATALOGUE_SHARD {
            return self
                .ask(CATALOGUE_SHARD, |reply| ShardMsg::CreateTopic {
                    meta,
                    reply,
                })
                .await;
        }
        let _guard = self.lock_catalogue().await?;
        if self.topics.borrow().contains_key(&meta.name) {
            return Err(Failure::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {:?} already exists", meta.name),
            ));
        }
        self.apply_create(meta).await
    }

    /// Records a topic in the catalogue and opens it on every core; the
    /// caller holds the catalogue lock.
    async fn apply_create(&self, meta: TopicMeta) -> Result<(), Failure> {
        let mut catalogue = self.catalogue();
        catalogue.insert(meta.name.clone(), meta.clone());
        self.store_catalogue(catalogue).await?;
        self.add_topic(meta.clone()).await?;
        self.broadcast(|reply| ShardMsg::TopicAdded {
            meta: meta.clone(),
            reply,
        })
        .await?;
        tracing::info!(topic = %meta.name, partitions = meta.partitions, "topic created");
        Ok(())
    }

    /// Deletes a topic and its data on every core of this node.
    pub async fn delete_topic(&self, name: String) -> Result<(), Failure> {
        if self.id != CATALOGUE_SHARD {
            return self
                .ask(CATALOGUE_SHARD, |reply| ShardMsg::DeleteTopic {
                    name,
                    reply,
                })
                .await;
        }
        let _guard = self.lock_catalogue().await?;
        if !self.topics.borrow().contains_key(&name) {
            return Err(Failure::unknown_topic(&name));
        }
        self.apply_delete(name).await
    }

    /// Removes a topic from the catalogue and its data from every core; the
    /// caller holds the catalogue lock.
    async fn apply_delete(&self, name: String) -> Result<(), Failure> {
        let mut catalogue = self.catalogue();
        catalogue.remove(&name);
        self.store_catalogue(catalogue).await?;
        self.remove_topic(&name).await?;
        self.broadcast(|reply| ShardMsg::TopicRemoved {
            name: name.clone(),
            reply,
        })
        .await?;
        let dir = self.config.data_dir.join(&name);
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        })
        .await
        .map_err(|e| Failure::internal(format!("removing the data of topic {name:?}: {e}")))?;
        tracing::info!(topic = %name, "topic deleted");
        Ok(())
    }

    /// Serialises catalogue changes: held for the whole change, across awaits.
    async fn lock_catalogue(&self) -> Result<glommio::sync::Permit<'_>, Failure> {
        self.catalogue_lock
            .acquire_permit(1)
            .await
            .map_err(Failure::internal)
    }

    /// Sends a message to every other core and waits for each answer.
    async fn broadcast(&self, msg: impl Fn(Reply<()>) -> ShardMsg) -> Result<(), Failure> {
        for core in (0..self.cores()).filter(|c| *c != self.id) {
            self.ask(core, &msg).await?;
        }
        Ok(())
    }

    fn catalogue(&self) -> Catalogue {
        self.topics
            .borrow()
            .values()
            .map(|t| (t.meta.name.clone(), t.meta.clone()))
            .collect()
    }

    async fn store_catalogue(&self, catalogue: Catalogue) -> Result<(), Failure> {
        let dir = self.config.data_dir.clone();
        blocking(move || topics::store(&dir, &catalogue))
            .await
            .map_err(Failure::internal)
    }

    /// Opens this core's partitions of a topic.
    async fn add_topic(&self, meta: TopicMeta) -> Result<(), Failure> {
        let owners = place_partitions(&meta.name, meta.partitions, self.cores())?;
        let _one = self.hosting().await;
        let mut local = Vec::with_capacity(owners.len());
        for (p, owner) in owners.iter().enumerate() {
            if *owner != self.id || !self.opens_at_add(&meta, p as u32) {
                local.push(None);
                continue;
            }
            let dir = self.partition_dir(&meta.name, p as u32);
            let part = Partition::open(&dir, self.log_config(), self.initial_role()).await?;
            local.push(Some(Rc::new(part)));
        }
        let opened: Vec<(u32, Rc<Partition>)> = local
            .iter()
            .enumerate()
            .filter_map(|(p, part)| Some((p as u32, part.clone()?)))
            .collect();
        let name = meta.name.clone();
        self.topics.borrow_mut().insert(
            meta.name.clone(),
            LocalTopic {
                meta,
                owners,
                local,
            },
        );
        for (p, part) in opened {
            self.give_role(&name, p, &part);
        }
        Ok(())
    }

    /// Closes this core's partitions of a topic and removes their data.
    async fn remove_topic(&self, name: &str) -> Result<(), Failure> {
        let Some(topic) = self.topics.borrow_mut().remove(name) else {
            return Ok(());
        };
        crate::metrics::topic_removed(name);
        // Every core drops the offsets of the groups it coordinates, before
        // the deletion is answered: a recreate that follows must not find them.
        let counts = self.topic_counts();
        self.groups.topic_deleted(name, &counts).await;
        for (p, part) in topic.local.into_iter().enumerate() {
            if let Some(part) = part {
                crate::metrics::partition_removed(name, p as u32);
                // Closing stops the log's background flusher before its files go.
                if let Err(e) = part.close().await {
                    tracing::debug!(topic = name, partition = p, error = %e, "closing a deleted partition");
                }
                let dir = self.partition_dir(name, p as u32);
                blocking(move || std::fs::remove_dir_all(dir))
                    .await
                    .map_err(|e| Failure::internal(format!("removing {name}/{p}: {e}")))?;
            }
        }
        Ok(())
    }

    /// Serves one message from another core.
    pub async fn handle(&self, msg: ShardMsg) {
        match msg {
            ShardMsg::Produce {
                topic,
                partition,
                batch,
                acks,
                timeout,
                reply,
            } => {
                let _ = reply.send(self.produce(&topic, partition, batch, acks, timeout).await);
            }
            ShardMsg::ReplicaFetch { req, reply } => {
                let _ = reply.send(self.replica_fetch(req).await);
            }
            ShardMsg::Submit { cmd, reply } => {
                self.submit(cmd).await;
                let _ = reply.send(Ok(()));
            }
            ShardMsg::Fetch {
                topic,
                partition,
                offset,
                max_bytes,
                min_bytes,
                max_wait,
                reply,
            } => {
                let r = self
                    .fetch(&topic, partition, offset, max_bytes, min_bytes, max_wait)
                    .await;
                let _ = reply.send(r);
            }
            ShardMsg::ListOffsets {
                topic,
                partition,
                spec,
                reply,
            } => {
                let _ = reply.send(self.list_offsets(&topic, partition, spec).await);
            }
            ShardMsg::CreateTopic { meta, reply } => {
                let _ = reply.send(self.create_topic(meta).await);
            }
            ShardMsg::DeleteTopic { name, reply } => {
                let _ = reply.send(self.delete_topic(name).await);
            }
            ShardMsg::TopicAdded { meta, reply } => {
                let _ = reply.send(self.add_topic(meta).await);
            }
            ShardMsg::TopicRemoved { name, reply } => {
                let _ = reply.send(self.remove_topic(&name).await);
            }
            ShardMsg::Group { request, reply } => {
                let _ = reply.send(self.serve_group(request).await);
            }
            ShardMsg::ListGroups { reply } => {
                let _ = reply.send(Ok(self.local_group_summaries()));
            }
            ShardMsg::View { view, reply } => {
                self.take_view(view).await;
                self.follow_group_leadership().await;
                let _ = reply.send(Ok(()));
            }
            ShardMsg::Propose { cmd, reply } => {
                let _ = reply.send(self.serve_propose(cmd).await);
            }
            ShardMsg::ChangeSecurity { cmd, reply } => {
                let _ = reply.send(self.change_security_here(cmd).await);
            }
            ShardMsg::Security { state, reply } => {
                self.install_security(state);
                let _ = reply.send(Ok(()));
            }
        }
    }

    /// Applies retention to every partition this core owns.
    pub async fn apply_retention(&self) {
        let now_ms = now_ms();
        for part in self.local_partitions() {
            if let Err(e) = part.apply_retention(now_ms).await {
                tracing::warn!(error = %e, "retention failed");
            }
        }
    }

    /// Publishes this core's partitions and memory in use to the metrics.
    pub fn report_metrics(&self) {
        for t in self.topics.borrow().values() {
            for (p, part) in t.local.iter().enumerate() {
                if let Some(part) = part {
                    part.report(&t.meta.name, p as u32);
                }
            }
        }
        let free = self.memory.available();
        crate::metrics::memory_in_use(
            self.id,
            self.config.shard_memory_budget.saturating_sub(free),
        );
        if self.id == CATALOGUE_SHARD {
            crate::metrics::cold_reads_in_use(self.config.log.read_budget.used());
        }
    }

    /// Wakes every long poll so it answers now (used at shutdown).
    pub fn wake_all(&self) {
        for part in self.local_partitions() {
            part.shut_down();
        }
    }

    /// Syncs and closes every partition this core owns; a clean close lets the
    /// next start skip recovery.
    pub async fn close(&self) {
        self.groups.close().await;
        let topics: Vec<LocalTopic> = self.topics.borrow_mut().drain().map(|(_, t)| t).collect();
        for t in topics {
            for (p, part) in t.local.into_iter().enumerate() {
                let Some(part) = part else { continue };
                if let Err(e) = part.close().await {
                    tracing::error!(topic = %t.meta.name, partition = p, error = %e, "closing partition failed");
                }
            }
        }
    }

    fn local_partitions(&self) -> Vec<Rc<Partition>> {
        self.topics
            .borrow()
            .values()
            .flat_map(|t| t.local.iter().flatten().cloned())
            .collect()
    }
}

/// A retriable refusal for a partition this node is about to serve.
fn not_ready(why: String) -> Failure {
    Failure::new(ErrorCode::NotLeader, format!("{why}; retry"))
}

/// Runs blocking file-system work on the executor's blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    glommio::executor().spawn_blocking(f).await
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
