//! A fake ringmq broker, in memory, on one executor thread: enough of the
//! protocol to test the client (framing, pipelining, batches, retries, the
//! fetch loop, the group consumer) before and apart from the real broker.
//! Shared by the tests and `examples/fake_broker.rs`.
//!
//! [`start_fake_cluster`] starts several such nodes sharing one state, for
//! the client's routing: each partition has a leader node, Metadata lists
//! the nodes (at the addresses a test chooses to advertise), and a node
//! serves a partition it does not lead as if it forwarded it (counted), or
//! answers `NOT_LEADER` when told to or when there is no live leader.
//!
//! Its Produce checks idempotent producers as the broker does (SPEC.md
//! 5.20): ids from InitProducerId, a retry of one of a producer's last five
//! batches answered with its original offset, a sequence gap refused
//! `OUT_OF_ORDER_SEQUENCE`, an older epoch `PRODUCER_FENCED`.
//!
//! Its group coordinator ([`Group`]) follows SPEC.md 5.9 where a member can
//! tell: generations, holding until released, sessions, static membership,
//! the commit rules, `FENCED_INSTANCE_ID` for a member a static member
//! replaced. Its assignment is balanced and sticky but simpler than
//! the broker's ring-driven one.
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutor, LocalExecutorBuilder, Placement};
use ringmq_protocol::batch::{self, BatchHeader};
use ringmq_protocol::limits::{MAX_SESSION_TIMEOUT_MS, MIN_SESSION_TIMEOUT_MS};
use ringmq_protocol::{
    encode_error_response, BrokerMetadata, DescribeGroupResponse, ErrorCode, FetchOffsetsResponse,
    FetchResponse, GroupState, GroupSummary, HeartbeatResponse, JoinGroupResponse,
    ListGroupsResponse, ListOffsetsResponse, ListTopicsResponse, MemberAssignment,
    MemberDescription, MetadataResponse, OffsetSpec, PartitionDescription, PartitionMetadata,
    PartitionOffset, ProduceResponse, Request, RequestHeader, ResponseBody, TopicInfo,
    TopicMetadata, TopicPartitions, NO_LEADER, REQUEST_HEADER_LEN,
};

/// How the fake misbehaves.
#[derive(Clone, Copy, Default)]
pub struct Faults {
    /// Answer every n-th Produce `BUSY` (without appending it).
    pub busy_every: Option<u32>,
    /// Answer the first n Fetches `BUSY`.
    pub busy_fetches: u32,
    /// Never answer anything.
    pub silent: bool,
    /// Hang up, without appending, on every n-th Produce.
    pub close_every: Option<u32>,
    /// Append every n-th Produce, then hang up without answering: the
    /// client cannot tell it from a lost request, and retries it.
    pub lose_answer_every: Option<u32>,
}

/// Misbehaviour switched on while the fake runs (it lives on another
/// thread, hence the atomics).
#[derive(Clone, Default)]
pub struct Control {
    down: Arc<AtomicBool>,
    stale_heartbeats: Arc<AtomicU32>,
    fenced: Arc<AtomicBool>,
    forget_next: Arc<AtomicU32>,
    throttle_ms: Arc<AtomicU32>,
    watermark_lag: Arc<AtomicU64>,
}

impl Control {
    /// Takes the fake off the network: connections open now are closed at
    /// their next request, new ones are refused (the listener is closed),
    /// until [`up`](Self::up). Its state (topics, groups) is kept, as a
    /// broker restart keeps it.
    pub fn down(&self) {
        self.down.store(true, Ordering::SeqCst);
    }

    pub fn up(&self) {
        self.down.store(false, Ordering::SeqCst);
    }

    /// Answers the next `n` Heartbeats `STALE_GENERATION`, as a broker
    /// whose group state went back would.
    pub fn stale_heartbeats(&self, n: u32) {
        self.stale_heartbeats.store(n, Ordering::SeqCst);
    }

    /// Answers every idempotent Produce from now on `PRODUCER_FENCED`, as
    /// when another instance took the producer's id over.
    pub fn fence_producers(&self) {
        self.fenced.store(true, Ordering::SeqCst);
    }

    /// Answers the next Produce with this `throttle_ms`, as a broker whose
    /// quota the client went over.
    pub fn throttle_next_produce(&self, ms: u32) {
        self.throttle_ms.store(ms, Ordering::SeqCst);
    }

    /// Keeps every partition's high watermark `n` records behind its log
    /// end, as a new leader's is for a moment after a failover: Fetch and
    /// ListOffsets see only up to it, and a Fetch between it and the log
    /// end is answered with nothing (not `OFFSET_OUT_OF_RANGE`).
    pub fn lag_watermark(&self, n: u64) {
        self.watermark_lag.store(n, Ordering::SeqCst);
    }

    /// Acknowledges the next `n` Produces without keeping them, as a
    /// leader that acked with `acks = 1` and then lost the batch in a
    /// failover.
    pub fn forget_next_produces(&self, n: u32) {
        self.forget_next.store(n, Ordering::SeqCst);
    }
}

/// The shared state of a fake cluster's nodes, for the test to steer and
/// read (the nodes run on another thread, hence the lock).
#[derive(Clone)]
pub struct ClusterControl(Arc<Mutex<ClusterState>>);

pub struct ClusterState {
    /// The client address each node lists in Metadata, by node id - 1.
    pub advertised: Vec<(String, u16)>,
    /// Leader of each partition, by topic; a partition not set here is led
    /// by node `partition % nodes + 1`.
    pub leaders: HashMap<String, Vec<u32>>,
    /// Whether a node serves a partition it does not lead (as a gateway
    /// forwarding it), or answers `NOT_LEADER`.
    pub forward: bool,
    /// Nodes off the network (connections closed at their next request,
    /// new ones refused), by node id - 1.
    pub down: Vec<bool>,
    /// Requests each node served for partitions it leads, by api name.
    pub served: Vec<HashMap<&'static str, u32>>,
    /// Requests each node served for partitions led by another node.
    pub forwarded: Vec<HashMap<&'static str, u32>>,
    /// Requests each node answered `NOT_LEADER`.
    pub refused: Vec<HashMap<&'static str, u32>>,
    /// Metadata requests each node answered.
    pub metadata: Vec<u32>,
}

impl ClusterState {
    pub fn leader(&self, topic: &str, partition: u32) -> u32 {
        self.leaders
            .get(topic)
            .and_then(|l| l.get(partition as usize))
            .copied()
            .unwrap_or(partition % self.advertised.len() as u32 + 1)
    }
}

impl ClusterControl {
    pub fn lock(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.0.lock().unwrap()
    }

    /// Every partition of `topic` (of `n`) led by `node`.
    pub fn lead_all(&self, topic: &str, n: u32, node: u32) {
        self.lock()
            .leaders
            .insert(topic.into(), vec![node; n as usize]);
    }

    pub fn set_down(&self, node: u32, down: bool) {
        self.lock().down[node as usize - 1] = down;
    }

    pub fn metadata_requests(&self) -> u32 {
        self.lock().metadata.iter().sum()
    }

    /// `api` requests node `node` served for partitions it leads.
    pub fn served(&self, node: u32, api: &str) -> u32 {
        self.lock().served[node as usize - 1]
            .get(api)
            .copied()
            .unwrap_or(0)
    }

    /// `api` requests node `node` forwarded.
    pub fn forwarded(&self, node: u32, api: &str) -> u32 {
        self.lock().forwarded[node as usize - 1]
            .get(api)
            .copied()
            .unwrap_or(0)
    }

    /// `api` requests forwarded, over all nodes.
    pub fn forwarded_total(&self, api: &str) -> u32 {
        let st = self.lock();
        st.forwarded.iter().filter_map(|m| m.get(api)).sum()
    }

    /// `api` requests answered `NOT_LEADER`, over all nodes.
    pub fn refused_total(&self, api: &str) -> u32 {
        let st = self.lock();
        st.refused.iter().filter_map(|m| m.get(api)).sum()
    }
}

/// Starts `n` fake nodes (ids 1..=n) sharing one state on one executor
/// thread; returns their addresses (index = id - 1) and the control.
pub fn start_fake_cluster(n: usize) -> (Vec<SocketAddr>, ClusterControl) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (ctl_tx, ctl_rx) = std::sync::mpsc::channel::<ClusterControl>();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .name("fake-cluster")
        .spawn(move || async move {
            let listeners: Vec<TcpListener> = (0..n)
                .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
                .collect();
            let addrs: Vec<SocketAddr> =
                listeners.iter().map(|l| l.local_addr().unwrap()).collect();
            tx.send(addrs).unwrap();
            let ctl = ctl_rx.recv().unwrap();
            let broker = Rc::new(RefCell::new(Broker {
                cluster: Some(ctl.clone()),
                ..Broker::default()
            }));
            let tasks: Vec<_> = listeners
                .into_iter()
                .enumerate()
                .map(|(i, l)| {
                    glommio::spawn_local(accept_node(broker.clone(), ctl.clone(), i as u32 + 1, l))
                })
                .collect();
            for t in tasks {
                t.await;
            }
        })
        .unwrap();
    let addrs: Vec<SocketAddr> = rx.recv().unwrap();
    let ctl = ClusterControl(Arc::new(Mutex::new(ClusterState {
        advertised: addrs
            .iter()
            .map(|a| (a.ip().to_string(), a.port()))
            .collect(),
        leaders: HashMap::new(),
        forward: true,
        down: vec![false; n],
        served: vec![HashMap::new(); n],
        forwarded: vec![HashMap::new(); n],
        refused: vec![HashMap::new(); n],
        metadata: vec![0; n],
    })));
    ctl_tx.send(ctl.clone()).unwrap();
    (addrs, ctl)
}

/// One node's listener: closed while the node is down.
async fn accept_node(broker: Rc<RefCell<Broker>>, ctl: ClusterControl, node: u32, l: TcpListener) {
    let addr = l.local_addr().unwrap();
    let is_down = move |ctl: &ClusterControl| ctl.lock().down[node as usize - 1];
    let mut l = Some(l);
    loop {
        let Some(listener) = l.as_ref() else {
            while is_down(&ctl) {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            l = Some(TcpListener::bind(addr).unwrap());
            continue;
        };
        let went_down = async {
            while !is_down(&ctl) {
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
            None
        };
        match futures_lite::future::or(async { Some(listener.accept().await) }, went_down).await {
            Some(Ok(s)) => {
                glommio::spawn_local(serve_as(broker.clone(), s, node)).detach();
            }
            Some(Err(_)) => return,
            None => l = None,
        }
    }
}

/// What a node of a fake cluster does with a request before the broker
/// logic sees it: `Err` is the answer (Metadata, `NOT_LEADER`), `Ok` lets
/// it through.
fn cluster_gate(
    b: &Broker,
    ctl: &ClusterControl,
    node: u32,
    req: &Request,
) -> Result<(), Result<ResponseBody, (ErrorCode, String)>> {
    let mut st = ctl.lock();
    let i = node as usize - 1;
    let (api, topic, partition) = match req {
        Request::Metadata(m) => {
            st.metadata[i] += 1;
            let names = m
                .topics
                .clone()
                .unwrap_or_else(|| b.topics.keys().cloned().collect());
            let topics = names
                .into_iter()
                .map(|name| match b.topics.get(&name) {
                    Some(parts) => TopicMetadata {
                        partitions: (0..parts.len() as u32)
                            .map(|partition| {
                                let leader = st.leader(&name, partition);
                                PartitionMetadata {
                                    partition,
                                    leader,
                                    leader_epoch: 0,
                                    replicas: vec![leader],
                                    isr: vec![leader],
                                }
                            })
                            .collect(),
                        name,
                        error_code: ErrorCode::None,
                    },
                    None => TopicMetadata {
                        name,
                        error_code: ErrorCode::UnknownTopic,
                        partitions: vec![],
                    },
                })
                .collect();
            let brokers = st
                .advertised
                .iter()
                .enumerate()
                .filter(|(j, _)| !st.down[*j])
                .map(|(j, (host, port))| BrokerMetadata {
                    node_id: j as u32 + 1,
                    host: host.clone(),
                    port: *port,
                })
                .collect();
            return Err(Ok(ResponseBody::Metadata(MetadataResponse {
                brokers,
                topics,
            })));
        }
        Request::Produce(p) => ("produce", &p.topic, p.partition),
        Request::Fetch(f) => ("fetch", &f.topic, f.partition),
        Request::ListOffsets(l) => ("list_offsets", &l.topic, l.partition),
        _ => return Ok(()),
    };
    let leader = st.leader(topic, partition);
    if leader == node {
        *st.served[i].entry(api).or_default() += 1;
        return Ok(());
    }
    let live = leader != NO_LEADER && !st.down.get(leader as usize - 1).copied().unwrap_or(true);
    if live && st.forward {
        *st.forwarded[i].entry(api).or_default() += 1;
        return Ok(());
    }
    *st.refused[i].entry(api).or_default() += 1;
    Err(Err((
        ErrorCode::NotLeader,
        format!("partition {topic}/{partition} is led by node {leader}"),
    )))
}

#[derive(Default)]
struct Broker {
    faults: Faults,
    control: Control,
    /// Set for the nodes of a fake cluster.
    cluster: Option<ClusterControl>,
    produces: u32,
    fetches: u32,
    /// topic -> partition -> batches (stamped with their base offset).
    topics: HashMap<String, Vec<Vec<Bytes>>>,
    groups: BTreeMap<String, Group>,
    /// For member ids unique across groups.
    next_member: u32,
    /// Produces seen by the `lose_answer_every` fault.
    answerable: u32,
    /// Idempotent producers per partition: (topic, partition, id).
    producers: HashMap<(String, u32, i64), FakeProducer>,
    next_producer_id: i64,
}

/// An idempotent producer as one partition knows it.
struct FakeProducer {
    epoch: i16,
    /// Its last batches, oldest first: (first seq, last seq, base offset).
    batches: std::collections::VecDeque<(i32, i32, u64)>,
}

/// What a partition does with a batch, as the broker's producer state
/// decides (src/log/producers.rs): `Ok(Some(base))` for a retry, `Ok(None)`
/// to append.
fn check_producer(
    b: &Broker,
    topic: &str,
    partition: u32,
    h: &BatchHeader,
) -> Result<Option<u64>, (ErrorCode, String)> {
    if h.producer_id < 0 {
        return Ok(None);
    }
    let Some(p) = b
        .producers
        .get(&(topic.to_owned(), partition, h.producer_id))
    else {
        return Ok(None);
    };
    let span = i64::from(h.record_count) - 1;
    let first = h.base_sequence;
    let last = ((i64::from(first) + span) % (i64::from(i32::MAX) + 1)) as i32;
    if h.producer_epoch < p.epoch {
        return Err((
            ErrorCode::ProducerFenced,
            format!("epoch {} < {}", h.producer_epoch, p.epoch),
        ));
    }
    if h.producer_epoch > p.epoch {
        return match first {
            0 => Ok(None),
            got => Err((ErrorCode::OutOfOrderSequence, format!("new epoch at {got}"))),
        };
    }
    if let Some((_, _, base)) = p.batches.iter().find(|(f, l, _)| *f == first && *l == last) {
        return Ok(Some(*base));
    }
    let expected = p
        .batches
        .back()
        .map_or(0, |(_, l, _)| if *l == i32::MAX { 0 } else { l + 1 });
    if first == expected {
        Ok(None)
    } else {
        Err((
            ErrorCode::OutOfOrderSequence,
            format!("expected {expected}, got {first}"),
        ))
    }
}

fn record_producer(b: &mut Broker, topic: &str, partition: u32, h: &BatchHeader, base: u64) {
    if h.producer_id < 0 {
        return;
    }
    let span = i64::from(h.record_count) - 1;
    let last = ((i64::from(h.base_sequence) + span) % (i64::from(i32::MAX) + 1)) as i32;
    let p = b
        .producers
        .entry((topic.to_owned(), partition, h.producer_id))
        .or_insert(FakeProducer {
            epoch: h.producer_epoch,
            batches: Default::default(),
        });
    if p.epoch != h.producer_epoch {
        p.epoch = h.producer_epoch;
        p.batches.clear();
    }
    if p.batches.len() >= 5 {
        p.batches.pop_front();
    }
    p.batches.push_back((h.base_sequence, last, base));
}

type Tp = (String, u32);

/// A consumer group, as the fake coordinates it.
#[derive(Default)]
struct Group {
    generation: u32,
    topics: Vec<String>,
    members: BTreeMap<String, Member>,
    /// Who holds each partition; a partition moves only once released.
    holders: BTreeMap<Tp, String>,
    offsets: BTreeMap<Tp, u64>,
    /// Member ids a static member replaced, most recent last (a few).
    replaced: Vec<String>,
}

struct Member {
    instance_id: Option<String>,
    session: Duration,
    last_seen: Instant,
    /// What the member is due at the current generation.
    assigned: BTreeSet<Tp>,
}

type GroupResult<T> = Result<T, (ErrorCode, String)>;

impl Group {
    fn state(&self) -> GroupState {
        if self.members.is_empty() {
            GroupState::Empty
        } else if self
            .members
            .iter()
            .all(|(id, m)| m.assigned.iter().all(|tp| self.holders.get(tp) == Some(id)))
        {
            GroupState::Stable
        } else {
            GroupState::Rebalancing
        }
    }

    /// Removes members whose session ran out, releasing what they held.
    fn expire(&mut self, parts: &BTreeSet<Tp>) {
        let now = Instant::now();
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > m.session)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            self.remove(&id, parts);
        }
    }

    /// A member leaves or times out: what it held is released at once.
    fn remove(&mut self, id: &str, parts: &BTreeSet<Tp>) {
        self.members.remove(id);
        self.holders.retain(|_, h| h != id);
        self.rebalance(parts);
        self.grant();
    }

    /// A membership change: bump the generation, keep what balance allows
    /// where it is, hand the rest to the members below their share.
    fn rebalance(&mut self, parts: &BTreeSet<Tp>) {
        self.generation += 1;
        let n = self.members.len();
        if n == 0 {
            self.topics.clear();
            return;
        }
        let (q, mut extra) = (parts.len() / n, parts.len() % n);
        let mut free: Vec<Tp> = Vec::new();
        for m in self.members.values_mut() {
            m.assigned.retain(|tp| parts.contains(tp));
            let cap = if m.assigned.len() > q && extra > 0 {
                extra -= 1;
                q + 1
            } else {
                q
            };
            while m.assigned.len() > cap {
                let last = m.assigned.iter().next_back().cloned().unwrap();
                m.assigned.remove(&last);
                free.push(last);
            }
        }
        let taken: BTreeSet<Tp> = self
            .members
            .values()
            .flat_map(|m| m.assigned.iter().cloned())
            .collect();
        free.extend(parts.iter().filter(|tp| !taken.contains(*tp)).cloned());
        free.sort();
        free.dedup();
        free.reverse();
        for m in self.members.values_mut() {
            while m.assigned.len() < q {
                let Some(tp) = free.pop() else { break };
                m.assigned.insert(tp);
            }
        }
        // What is left are the q+1 slots not taken by a member keeping one.
        for m in self.members.values_mut() {
            if m.assigned.len() == q {
                let Some(tp) = free.pop() else { break };
                m.assigned.insert(tp);
            }
        }
    }

    /// Hands every partition nobody holds to the member it is assigned to.
    fn grant(&mut self) {
        for (id, m) in &self.members {
            for tp in &m.assigned {
                self.holders.entry(tp.clone()).or_insert_with(|| id.clone());
            }
        }
    }

    fn assignment(&self, id: &str) -> MemberAssignment {
        let m = &self.members[id];
        let mut by_topic: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut pending = 0;
        for tp in &m.assigned {
            if self.holders.get(tp).map(String::as_str) == Some(id) {
                by_topic.entry(tp.0.clone()).or_default().push(tp.1);
            } else {
                pending += 1;
            }
        }
        MemberAssignment {
            generation: self.generation,
            partitions: by_topic
                .into_iter()
                .map(|(topic, partitions)| TopicPartitions { topic, partitions })
                .collect(),
            pending,
        }
    }

    fn member(&mut self, id: &str) -> GroupResult<&mut Member> {
        if self.replaced.iter().any(|r| r == id) {
            return Err((
                ErrorCode::FencedInstanceId,
                format!("member {id} was replaced by a member with its instance id"),
            ));
        }
        self.members
            .get_mut(id)
            .ok_or_else(|| (ErrorCode::UnknownMember, format!("no member {id}")))
    }
}

/// A glommio executor that is cheap to create, for one test's client.
pub fn small_executor() -> LocalExecutor {
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .make()
        .unwrap()
}

/// A client config for the fake broker at `addr`.
pub fn config(addr: SocketAddr) -> ringmq_client::ClientConfig {
    ringmq_client::ClientConfig::new(&addr.to_string())
}

/// Starts a fake broker on its own executor thread; returns its address.
pub fn start_fake(faults: Faults) -> SocketAddr {
    start_fake_on("127.0.0.1:0", faults)
}

/// Like [`start_fake`], on a given address.
pub fn start_fake_on(listen: &str, faults: Faults) -> SocketAddr {
    start_fake_with(listen, faults, Control::default())
}

/// Like [`start_fake`], with a [`Control`] to switch faults on later.
pub fn start_fake_ctl(faults: Faults) -> (SocketAddr, Control) {
    let control = Control::default();
    (
        start_fake_with("127.0.0.1:0", faults, control.clone()),
        control,
    )
}

fn start_fake_with(listen: &str, faults: Faults, control: Control) -> SocketAddr {
    let listen = listen.to_owned();
    let (tx, rx) = std::sync::mpsc::channel();
    LocalExecutorBuilder::new(Placement::Unbound)
        .io_memory(64 << 10)
        .ring_depth(64)
        .name("fake-broker")
        .spawn(move || async move {
            let mut l = TcpListener::bind(listen.as_str()).unwrap();
            let addr = l.local_addr().unwrap();
            tx.send(addr).unwrap();
            let down = control.down.clone();
            let broker = Rc::new(RefCell::new(Broker {
                faults,
                control,
                ..Broker::default()
            }));
            loop {
                let went_down = async {
                    while !down.load(Ordering::SeqCst) {
                        glommio::timer::sleep(Duration::from_millis(10)).await;
                    }
                    None
                };
                let accepted =
                    futures_lite::future::or(async { Some(l.accept().await) }, went_down).await;
                match accepted {
                    Some(Ok(s)) => {
                        glommio::spawn_local(serve(broker.clone(), s)).detach();
                    }
                    Some(Err(_)) => return,
                    None => {
                        // Closed: connecting is refused until it is back up.
                        drop(l);
                        while down.load(Ordering::SeqCst) {
                            glommio::timer::sleep(Duration::from_millis(10)).await;
                        }
                        l = TcpListener::bind(addr).unwrap();
                    }
                }
            }
        })
        .unwrap();
    rx.recv().unwrap()
}

async fn serve(broker: Rc<RefCell<Broker>>, s: TcpStream) {
    serve_as(broker, s, 0).await
}

/// Serves one connection as node `node` (0 outside a cluster).
async fn serve_as(broker: Rc<RefCell<Broker>>, mut s: TcpStream, node: u32) {
    loop {
        let mut hdr = [0u8; REQUEST_HEADER_LEN];
        if s.read_exact(&mut hdr).await.is_err() {
            return;
        }
        let h = RequestHeader::parse(&hdr).unwrap();
        let mut body = vec![0u8; h.body_len()];
        s.read_exact(&mut body).await.unwrap();
        let req = Request::decode(&h, Bytes::from(body)).unwrap();
        if broker.borrow().control.down.load(Ordering::SeqCst) {
            return;
        }
        if broker.borrow().faults.silent {
            continue;
        }
        let close_every = broker.borrow().faults.close_every;
        if let (Request::Produce(_), Some(n)) = (&req, close_every) {
            let mut b = broker.borrow_mut();
            b.produces += 1;
            if b.produces % n == 0 {
                return;
            }
        }
        let lose_every = broker.borrow().faults.lose_answer_every;
        let lose_answer = match (&req, lose_every) {
            (Request::Produce(_), Some(n)) => {
                let mut b = broker.borrow_mut();
                b.answerable += 1;
                b.answerable % n == 0
            }
            _ => false,
        };
        if let Request::Fetch(f) = &req {
            // A crude long poll: wait a little when there is nothing new.
            let hw = hwm(&broker.borrow(), &f.topic, f.partition);
            if hw.is_some_and(|hw| hw <= f.offset) {
                glommio::timer::sleep(Duration::from_millis(f.max_wait_ms.min(20).into())).await;
            }
        }
        let expects = req.expects_response();
        let cluster = broker.borrow().cluster.clone();
        let gate = match &cluster {
            Some(ctl) if ctl.lock().down[node as usize - 1] => return,
            Some(ctl) => cluster_gate(&broker.borrow(), ctl, node, &req),
            None => Ok(()),
        };
        let answer = match gate {
            Ok(()) => handle(&mut broker.borrow_mut(), req),
            Err(answer) => answer,
        };
        if lose_answer {
            return;
        }
        if !expects {
            continue;
        }
        let mut out = BytesMut::new();
        match answer {
            Ok(b) => b.encode(h.correlation_id, &mut out),
            Err((code, msg)) => encode_error_response(h.correlation_id, code, &msg, &mut out),
        }
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn log_end(b: &Broker, topic: &str, p: u32) -> Option<u64> {
    let log = b.topics.get(topic)?.get(p as usize)?;
    Some(
        log.last()
            .map_or(0, |l| BatchHeader::parse(l).unwrap().next_offset()),
    )
}

/// The log end, less the lag the test set (but never inside a batch).
fn hwm(b: &Broker, topic: &str, p: u32) -> Option<u64> {
    let end = log_end(b, topic, p)?;
    let upto = end.saturating_sub(b.control.watermark_lag.load(Ordering::SeqCst));
    Some(
        b.topics[topic][p as usize]
            .iter()
            .map(|l| BatchHeader::parse(l).unwrap().next_offset())
            .take_while(|&next| next <= upto)
            .last()
            .unwrap_or(0),
    )
}

fn handle(b: &mut Broker, req: Request) -> Result<ResponseBody, (ErrorCode, String)> {
    let unknown = |t: &str| (ErrorCode::UnknownTopic, format!("no topic {t}"));
    Ok(match req {
        Request::CreateTopic(c) => {
            if b.topics.contains_key(&c.name) {
                return Err((ErrorCode::TopicAlreadyExists, c.name));
            }
            b.topics
                .insert(c.name, vec![Vec::new(); c.partitions as usize]);
            ResponseBody::CreateTopic(Default::default())
        }
        Request::DeleteTopic(d) => {
            b.topics.remove(&d.name).ok_or_else(|| unknown(&d.name))?;
            ResponseBody::DeleteTopic(Default::default())
        }
        Request::ListTopics(_) => {
            let mut topics: Vec<TopicInfo> = b
                .topics
                .iter()
                .map(|(n, p)| TopicInfo {
                    name: n.clone(),
                    partitions: p.len() as u32,
                    replication: 1,
                })
                .collect();
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            ResponseBody::ListTopics(ListTopicsResponse { topics })
        }
        Request::Metadata(m) => {
            let names = m
                .topics
                .unwrap_or_else(|| b.topics.keys().cloned().collect());
            let topics = names
                .into_iter()
                .map(|name| match b.topics.get(&name) {
                    Some(parts) => TopicMetadata {
                        name,
                        error_code: ErrorCode::None,
                        partitions: (0..parts.len() as u32)
                            .map(|partition| PartitionMetadata {
                                partition,
                                leader: 0,
                                leader_epoch: 0,
                                replicas: vec![0],
                                isr: vec![0],
                            })
                            .collect(),
                    },
                    None => TopicMetadata {
                        name,
                        error_code: ErrorCode::UnknownTopic,
                        partitions: vec![],
                    },
                })
                .collect();
            ResponseBody::Metadata(MetadataResponse {
                brokers: vec![BrokerMetadata {
                    node_id: 0,
                    host: "127.0.0.1".into(),
                    port: 0,
                }],
                topics,
            })
        }
        Request::Produce(p) => {
            b.produces += 1;
            if b.faults.busy_every.is_some_and(|n| b.produces % n == 0) {
                return Err((ErrorCode::Busy, "busy, try again".into()));
            }
            let base = log_end(b, &p.topic, p.partition).ok_or_else(|| unknown(&p.topic))?;
            p.verify_batch()
                .map_err(|e| (ErrorCode::CorruptBatch, e.to_string()))?;
            let h = BatchHeader::parse(&p.batch).unwrap();
            if h.producer_id >= 0 && b.control.fenced.load(Ordering::SeqCst) {
                return Err((
                    ErrorCode::ProducerFenced,
                    "another instance took over".into(),
                ));
            }
            if let Some(original) = check_producer(b, &p.topic, p.partition, &h)? {
                return Ok(ResponseBody::Produce(ProduceResponse {
                    base_offset: original,
                    log_start_offset: 0,
                    throttle_ms: 0,
                }));
            }
            let forget = b.control.forget_next.load(Ordering::SeqCst);
            if forget > 0 {
                b.control.forget_next.store(forget - 1, Ordering::SeqCst);
                return Ok(ResponseBody::Produce(ProduceResponse {
                    base_offset: base,
                    log_start_offset: 0,
                    throttle_ms: 0,
                }));
            }
            record_producer(b, &p.topic, p.partition, &h, base);
            let mut stored = BytesMut::from(&p.batch[..]);
            batch::stamp(&mut stored, base, 0);
            b.topics.get_mut(&p.topic).unwrap()[p.partition as usize].push(stored.freeze());
            ResponseBody::Produce(ProduceResponse {
                base_offset: base,
                log_start_offset: 0,
                throttle_ms: b.control.throttle_ms.swap(0, Ordering::SeqCst),
            })
        }
        Request::Fetch(f) => {
            b.fetches += 1;
            if b.fetches <= b.faults.busy_fetches {
                return Err((ErrorCode::Busy, "busy, try again".into()));
            }
            let end = log_end(b, &f.topic, f.partition).ok_or_else(|| unknown(&f.topic))?;
            if f.offset > end {
                return Err((ErrorCode::OffsetOutOfRange, format!("{} > {end}", f.offset)));
            }
            let hw = hwm(b, &f.topic, f.partition).unwrap_or(0);
            let mut records = BytesMut::new();
            for batch in &b.topics[&f.topic][f.partition as usize] {
                let h = BatchHeader::parse(batch).unwrap();
                if h.next_offset() <= f.offset {
                    continue;
                }
                if h.next_offset() > hw {
                    break;
                }
                if !records.is_empty() && records.len() + batch.len() > f.max_bytes as usize {
                    break;
                }
                records.extend_from_slice(batch);
            }
            ResponseBody::Fetch(FetchResponse {
                high_watermark: hw,
                log_start_offset: 0,
                throttle_ms: 0,
                records: records.freeze(),
            })
        }
        Request::ListOffsets(l) => {
            let hw = hwm(b, &l.topic, l.partition).ok_or_else(|| unknown(&l.topic))?;
            let offset = match l.spec {
                OffsetSpec::Earliest => 0,
                _ => hw,
            };
            ResponseBody::ListOffsets(ListOffsetsResponse { offset })
        }
        Request::JoinGroup(j) => {
            check_group(&j.group)?;
            if let Some(i) = &j.instance_id {
                check_group(i)?;
            }
            if !(MIN_SESSION_TIMEOUT_MS..=MAX_SESSION_TIMEOUT_MS).contains(&j.session_timeout_ms) {
                return Err((ErrorCode::InvalidSessionTimeout, "out of bounds".into()));
            }
            if let Some(t) = j.topics.iter().find(|t| !b.topics.contains_key(*t)) {
                return Err(unknown(t));
            }
            let parts = group_parts(b, &j.topics);
            b.next_member += 1;
            let new_id = format!("m-{}", b.next_member);
            let g = b.groups.entry(j.group.clone()).or_default();
            g.expire(&parts);
            if !j.member_id.is_empty() {
                g.member(&j.member_id)?;
                return Err((ErrorCode::InvalidRequest, "the fake does not rejoin".into()));
            }
            if !g.members.is_empty() && {
                let mut a = g.topics.clone();
                let mut c = j.topics.clone();
                a.sort();
                c.sort();
                a != c
            } {
                return Err((ErrorCode::InvalidRequest, "other topics".into()));
            }
            g.topics = j.topics.clone();
            let session = Duration::from_millis(j.session_timeout_ms.into());
            let old = g
                .members
                .iter()
                .find(|(_, m)| m.instance_id.is_some() && m.instance_id == j.instance_id)
                .map(|(id, _)| id.clone());
            match old {
                // Static membership: the new id takes the old one's place.
                Some(old) => {
                    if g.replaced.len() >= 16 {
                        g.replaced.remove(0);
                    }
                    g.replaced.push(old.clone());
                    let mut m = g.members.remove(&old).unwrap();
                    m.last_seen = Instant::now();
                    m.session = session;
                    for h in g.holders.values_mut() {
                        if *h == old {
                            *h = new_id.clone();
                        }
                    }
                    g.members.insert(new_id.clone(), m);
                }
                None => {
                    g.members.insert(
                        new_id.clone(),
                        Member {
                            instance_id: j.instance_id,
                            session,
                            last_seen: Instant::now(),
                            assigned: BTreeSet::new(),
                        },
                    );
                    g.rebalance(&parts);
                }
            }
            g.grant();
            ResponseBody::JoinGroup(JoinGroupResponse {
                assignment: g.assignment(&new_id),
                member_id: new_id,
                heartbeat_interval_ms: j.session_timeout_ms / 3,
            })
        }
        Request::Heartbeat(h) => {
            let parts = existing_group_parts(b, &h.group)?;
            let g = b
                .groups
                .get_mut(&h.group)
                .ok_or_else(|| unknown_member(&h.member_id))?;
            g.expire(&parts);
            let stale = &b.control.stale_heartbeats;
            if stale
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok()
            {
                return Err((ErrorCode::StaleGeneration, "told to be stale".into()));
            }
            let generation = g.generation;
            let m = g.member(&h.member_id)?;
            if h.generation > generation {
                return Err((
                    ErrorCode::StaleGeneration,
                    format!("{} > {generation}", h.generation),
                ));
            }
            m.last_seen = Instant::now();
            if h.generation == generation {
                // The acknowledgement: what it holds and is not due goes.
                let assigned = m.assigned.clone();
                g.holders
                    .retain(|tp, holder| *holder != h.member_id || assigned.contains(tp));
                g.grant();
            }
            ResponseBody::Heartbeat(HeartbeatResponse {
                assignment: g.assignment(&h.member_id),
            })
        }
        Request::LeaveGroup(l) => {
            let parts = existing_group_parts(b, &l.group)?;
            let g = b
                .groups
                .get_mut(&l.group)
                .ok_or_else(|| unknown_member(&l.member_id))?;
            g.member(&l.member_id)?;
            g.remove(&l.member_id, &parts);
            g.grant();
            ResponseBody::LeaveGroup(Default::default())
        }
        Request::CommitOffsets(c) => {
            let parts = existing_group_parts(b, &c.group)?;
            let g = b
                .groups
                .get_mut(&c.group)
                .ok_or_else(|| unknown_member(&c.member_id))?;
            g.expire(&parts);
            let generation = g.generation;
            g.member(&c.member_id)?.last_seen = Instant::now();
            if c.generation != generation {
                return Err((
                    ErrorCode::StaleGeneration,
                    format!("{} != {generation}", c.generation),
                ));
            }
            for o in &c.offsets {
                let tp = (o.topic.clone(), o.partition);
                if g.holders.get(&tp) != Some(&c.member_id) {
                    return Err((
                        ErrorCode::PartitionNotAssigned,
                        format!("{}/{} is not held by {}", o.topic, o.partition, c.member_id),
                    ));
                }
            }
            for o in c.offsets {
                g.offsets.insert((o.topic, o.partition), o.offset);
            }
            ResponseBody::CommitOffsets(Default::default())
        }
        Request::FetchOffsets(f) => {
            check_group(&f.group)?;
            let offsets = b.groups.get(&f.group).map_or_else(Vec::new, |g| {
                g.offsets
                    .iter()
                    .filter(|(tp, _)| f.topics.is_empty() || f.topics.contains(&tp.0))
                    .map(|((topic, partition), offset)| PartitionOffset {
                        topic: topic.clone(),
                        partition: *partition,
                        offset: *offset,
                    })
                    .collect()
            });
            ResponseBody::FetchOffsets(FetchOffsetsResponse { offsets })
        }
        Request::DescribeGroup(d) => {
            check_group(&d.group)?;
            let Some(g) = b.groups.get(&d.group) else {
                return Ok(ResponseBody::DescribeGroup(DescribeGroupResponse {
                    group: d.group,
                    state: GroupState::Empty,
                    generation: 0,
                    topics: vec![],
                    members: vec![],
                    partitions: vec![],
                }));
            };
            let mut tps = group_parts(b, &g.topics);
            tps.extend(g.offsets.keys().cloned());
            ResponseBody::DescribeGroup(DescribeGroupResponse {
                group: d.group,
                state: g.state(),
                generation: g.generation,
                topics: g.topics.clone(),
                members: g
                    .members
                    .iter()
                    .map(|(id, m)| MemberDescription {
                        member_id: id.clone(),
                        instance_id: m.instance_id.clone(),
                        session_timeout_ms: m.session.as_millis() as u32,
                        idle_ms: m.last_seen.elapsed().as_millis() as u32,
                        partitions: g.assignment(id).partitions,
                    })
                    .collect(),
                partitions: tps
                    .into_iter()
                    .map(|(topic, partition)| PartitionDescription {
                        holder: g.holders.get(&(topic.clone(), partition)).cloned(),
                        committed: g.offsets.get(&(topic.clone(), partition)).copied(),
                        end_offset: hwm(b, &topic, partition).unwrap_or(0),
                        topic,
                        partition,
                    })
                    .collect(),
            })
        }
        Request::ListGroups(_) => ResponseBody::ListGroups(ListGroupsResponse {
            groups: b
                .groups
                .iter()
                .filter(|(_, g)| !g.members.is_empty() || !g.offsets.is_empty())
                .map(|(id, g)| GroupSummary {
                    group: id.clone(),
                    state: g.state(),
                    generation: g.generation,
                    members: g.members.len() as u32,
                })
                .collect(),
        }),
        Request::InitProducerId(_) => {
            b.next_producer_id += 1;
            ResponseBody::InitProducerId(ringmq_protocol::InitProducerIdResponse {
                producer_id: 1000 + b.next_producer_id,
                producer_epoch: 0,
            })
        }
        Request::ForwardHello(_) | Request::ReplicaFetch(_) => {
            return Err((ErrorCode::InvalidRequest, "not a cluster".into()));
        }
        Request::SaslHandshake(_)
        | Request::SaslAuthenticate(_)
        | Request::UpsertUser(_)
        | Request::DeleteUser(_)
        | Request::ListUsers(_)
        | Request::AlterAcl(_)
        | Request::ListAcls(_)
        | Request::AlterQuota(_)
        | Request::ListQuotas(_) => {
            return Err((
                ErrorCode::UnknownApi,
                "the fake broker has no security".into(),
            ));
        }
        Request::ApiVersions(_) => {
            ResponseBody::ApiVersions(ringmq_protocol::ApiVersionsResponse::supported())
        }
    })
}

fn check_group(g: &str) -> GroupResult<()> {
    if g.is_empty() || g.len() > 249 || !g.bytes().all(|c| c.is_ascii_graphic()) {
        return Err((ErrorCode::InvalidGroupId, format!("{g:?}")));
    }
    Ok(())
}

fn unknown_member(id: &str) -> (ErrorCode, String) {
    (ErrorCode::UnknownMember, format!("no member {id}"))
}

/// Every partition of `topics`.
fn group_parts(b: &Broker, topics: &[String]) -> BTreeSet<Tp> {
    topics
        .iter()
        .flat_map(|t| {
            let n = b.topics.get(t).map_or(0, Vec::len) as u32;
            (0..n).map(move |p| (t.clone(), p))
        })
        .collect()
}

fn existing_group_parts(b: &Broker, group: &str) -> GroupResult<BTreeSet<Tp>> {
    check_group(group)?;
    Ok(b.groups
        .get(group)
        .map(|g| group_parts(b, &g.topics))
        .unwrap_or_default())
}
