//! [`ClusterMap`]: what the client knows of the cluster from the Metadata
//! answers it has seen (SPEC.md 5.2, 5.18): the brokers' client addresses
//! and, per topic, the leader of each partition. Pure data; when to refresh
//! it and which connection a request takes are the
//! [`router`](crate::router)'s business.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Instant;

use ringmq_protocol::{ErrorCode, MetadataResponse, NO_LEADER};

/// Where a partition's leader can be reached, as far as the map knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Leader {
    /// At this address.
    At(SocketAddr),
    /// Not directly: the topic or partition is not in the map, it has no
    /// leader right now, the leader's address is unusable (an unspecified
    /// IP such as `0.0.0.0`, a name that does not resolve), or the cluster
    /// has a single broker, which is the one the client bootstrapped with
    /// whatever address it advertises.
    Unknown,
}

#[derive(Debug, Default)]
pub(crate) struct ClusterMap {
    /// Node id → client address; `None` when the advertised one is unusable.
    brokers: HashMap<u32, Option<SocketAddr>>,
    /// Topic → leader node id of each partition (`NO_LEADER` for none).
    topics: HashMap<String, Vec<u32>>,
    /// When the last Metadata answer was taken in.
    updated: Option<Instant>,
    /// Bumped by every answer taken in, so a caller can tell whether the
    /// map changed since it routed a request.
    version: u64,
}

impl ClusterMap {
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn updated(&self) -> Option<Instant> {
        self.updated
    }

    pub(crate) fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains_key(topic)
    }

    /// The client addresses of the brokers, those that are usable.
    pub(crate) fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.brokers.values().flatten().copied()
    }

    /// Takes in a Metadata answer: the broker list is replaced, the topics
    /// it names are replaced (a topic answered with an error is dropped),
    /// other topics are kept.
    pub(crate) fn update(&mut self, resp: &MetadataResponse) {
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| (b.node_id, usable_addr(&b.host, b.port)))
            .collect();
        for t in &resp.topics {
            if t.error_code != ErrorCode::None {
                self.topics.remove(&t.name);
                continue;
            }
            let n = t
                .partitions
                .iter()
                .map(|p| p.partition as usize + 1)
                .max()
                .unwrap_or(0);
            let mut leaders = vec![NO_LEADER; n];
            for p in &t.partitions {
                leaders[p.partition as usize] = p.leader;
            }
            self.topics.insert(t.name.clone(), leaders);
        }
        self.updated = Some(Instant::now());
        self.version += 1;
    }

    /// Where `topic`/`partition`'s leader is.
    pub(crate) fn leader(&self, topic: &str, partition: u32) -> Leader {
        if self.brokers.len() <= 1 {
            // The only live broker answered our Metadata: it is the one we
            // talk to already, whatever address it advertises.
            return Leader::Unknown;
        }
        let node = self
            .topics
            .get(topic)
            .and_then(|l| l.get(partition as usize))
            .copied()
            .unwrap_or(NO_LEADER);
        match self.brokers.get(&node) {
            Some(Some(addr)) => Leader::At(*addr),
            _ => Leader::Unknown,
        }
    }
}

/// `host:port` as a socket address a client can connect to, or `None`: an
/// unspecified IP (a broker listening on `0.0.0.0` advertises it), port 0,
/// or a name that does not resolve. A name is resolved with the system
/// resolver, which blocks: brokers advertise IPs, so that is rare.
fn usable_addr(host: &str, port: u16) -> Option<SocketAddr> {
    if port == 0 {
        return None;
    }
    let addr = match host.parse::<IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => (host, port).to_socket_addrs().ok()?.next()?,
    };
    (!addr.ip().is_unspecified()).then_some(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringmq_protocol::{BrokerMetadata, PartitionMetadata, TopicMetadata};

    fn answer(brokers: &[(u32, &str, u16)], leaders: &[u32]) -> MetadataResponse {
        MetadataResponse {
            brokers: brokers
                .iter()
                .map(|(id, host, port)| BrokerMetadata {
                    node_id: *id,
                    host: (*host).into(),
                    port: *port,
                })
                .collect(),
            topics: vec![TopicMetadata {
                name: "t".into(),
                error_code: ErrorCode::None,
                partitions: leaders
                    .iter()
                    .enumerate()
                    .map(|(p, l)| PartitionMetadata {
                        partition: p as u32,
                        leader: *l,
                        leader_epoch: 0,
                        replicas: vec![*l],
                        isr: vec![*l],
                    })
                    .collect(),
            }],
        }
    }

    #[test]
    fn leaders_by_partition() {
        let mut m = ClusterMap::default();
        assert_eq!(m.leader("t", 0), Leader::Unknown);
        m.update(&answer(
            &[
                (1, "127.0.0.1", 9001),
                (2, "127.0.0.1", 9002),
                (3, "0.0.0.0", 9003),
            ],
            &[1, 2, 3, NO_LEADER, 7],
        ));
        let at = |port| Leader::At(SocketAddr::from(([127, 0, 0, 1], port)));
        assert_eq!(m.leader("t", 0), at(9001));
        assert_eq!(m.leader("t", 1), at(9002));
        // Unspecified address, no leader, a node not listed, no partition.
        for p in 2..6 {
            assert_eq!(m.leader("t", p), Leader::Unknown, "partition {p}");
        }
        assert_eq!(m.leader("other", 0), Leader::Unknown);
        assert_eq!(m.version(), 1);

        // An answer without the topic keeps it; one with an error drops it.
        let mut brokers_only = answer(&[(1, "127.0.0.1", 9001), (2, "::1", 9002)], &[]);
        brokers_only.topics.clear();
        m.update(&brokers_only);
        assert_eq!(m.leader("t", 0), at(9001));
        assert_eq!(
            m.leader("t", 1),
            Leader::At(SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], 9002)))
        );
        let mut gone = answer(&[(1, "127.0.0.1", 9001), (2, "127.0.0.1", 9002)], &[]);
        gone.topics[0].error_code = ErrorCode::UnknownTopic;
        m.update(&gone);
        assert!(!m.has_topic("t"));
    }

    #[test]
    fn a_single_broker_is_the_bootstrap_one() {
        let mut m = ClusterMap::default();
        m.update(&answer(&[(1, "10.9.8.7", 9292)], &[1, 1]));
        assert_eq!(m.leader("t", 0), Leader::Unknown);
        assert_eq!(m.leader("t", 1), Leader::Unknown);
    }
}
