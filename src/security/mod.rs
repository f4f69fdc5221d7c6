//! Who may talk to this broker: TLS on its listeners and on its connections
//! to other nodes ([`tls`]), and the cluster secret nodes prove they hold
//! before a peer or forwarding connection is heard ([`secret`]).
//!
//! Pure material and checks: the handshakes on sockets live with the
//! connections they guard (`net/`, `cluster/peer_net.rs`, `metrics.rs`).

pub mod secret;
pub mod tls;
