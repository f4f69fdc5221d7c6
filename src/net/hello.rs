//! ForwardHello (SPEC.md 5.17) on the client listener: a connection that
//! claims to be another node's, carrying its forwarded requests, must prove
//! it. Forwarded requests are served from this node's state without the
//! checks a client's get, so a stranger must not get here by saying so.
//!
//! With a cluster secret the hello takes two steps: the first gets a fresh
//! challenge, the second carries the sender's HMAC over it (and over the
//! sender's own nonce, which our proof answers in turn). Without a secret,
//! a connection whose client certificate was verified against
//! `tls_client_ca` is taken as a node's; otherwise the hello is taken on
//! its word, as before the secret existed (the broker warns at start).
//! A wrong proof closes the connection.

use std::cell::Cell;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use ringmq_protocol::{
    encode_error_response, ApiKey, ErrorCode, ForwardHelloRequest, ForwardHelloResponse, Request,
    RequestHeader, ResponseBody,
};

use super::connection::Encoded;
use crate::security::secret::{self, ClusterSecret, Nonce, Purpose};
use crate::shard::{Origin, Shard};

/// A challenge handed out and not yet answered.
struct Pending {
    node: u32,
    challenge: Nonce,
    their_nonce: Bytes,
}

/// The hello state of one connection.
pub struct Hello {
    /// Who the client's verified certificate names (mutual TLS), if any.
    identity: Option<String>,
    pending: Option<Pending>,
}

/// Why a hello was refused, and whether the connection must close.
struct Refusal {
    message: String,
    close: bool,
}

fn refuse(message: impl Into<String>) -> Refusal {
    Refusal {
        message: message.into(),
        close: false,
    }
}

fn close(message: impl Into<String>) -> Refusal {
    Refusal {
        message: message.into(),
        close: true,
    }
}

impl Hello {
    pub fn new(identity: Option<String>) -> Hello {
        Hello {
            identity,
            pending: None,
        }
    }

    /// Who the connection's client certificate names (mutual TLS).
    #[allow(dead_code)] // for the per-connection principal (issue #11, SASL/ACLs)
    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// Answers one ForwardHello frame. The second value is `Some(why)` when
    /// the connection must close after the answer.
    pub fn answer(
        &mut self,
        shard: &Shard,
        origin: &Cell<Origin>,
        header: &RequestHeader,
        body: Bytes,
    ) -> (Encoded, Option<String>) {
        let started = Instant::now();
        let bytes_in = body.len();
        let corr = header.correlation_id;
        let result = match Request::decode(header, body) {
            Ok(Request::ForwardHello(req)) => self.check(shard, origin, req),
            Ok(_) => Err(refuse("not a ForwardHello")),
            Err(e) => Err(refuse(e.to_string())),
        };
        let mut head = BytesMut::with_capacity(80);
        let (code, closes) = match result {
            Ok(resp) => {
                ResponseBody::ForwardHello(resp).encode(corr, &mut head);
                (None, None)
            }
            Err(r) => {
                encode_error_response(corr, ErrorCode::InvalidRequest, &r.message, &mut head);
                (
                    Some(ErrorCode::InvalidRequest),
                    r.close.then_some(r.message),
                )
            }
        };
        crate::metrics::request(ApiKey::ForwardHello, code, bytes_in, 0, started.elapsed());
        (Encoded { head, tail: None }, closes)
    }

    fn check(
        &mut self,
        shard: &Shard,
        origin: &Cell<Origin>,
        req: ForwardHelloRequest,
    ) -> Result<ForwardHelloResponse, Refusal> {
        shard
            .accept_forwarder(req.node_id, &req.cluster_id)
            .map_err(|f| refuse(f.message))?;
        let Some(secret) = &shard.config.cluster_secret else {
            // Mutual TLS, if on, has verified the certificate already.
            origin.set(Origin::Node(req.node_id));
            return Ok(ForwardHelloResponse::default());
        };
        let me = shard.config.node_id.unwrap_or(0);
        if req.proof.is_empty() {
            return self.challenge(req);
        }
        self.verify(secret, me, origin, req)
    }

    /// First step: a fresh challenge, remembered for the second.
    fn challenge(&mut self, req: ForwardHelloRequest) -> Result<ForwardHelloResponse, Refusal> {
        if req.nonce.is_empty() {
            return Err(close(
                "this node requires the cluster secret: a ForwardHello must carry a nonce and then a proof",
            ));
        }
        let challenge = secret::nonce().map_err(|e| close(e.to_string()))?;
        self.pending = Some(Pending {
            node: req.node_id,
            challenge,
            their_nonce: req.nonce,
        });
        Ok(ForwardHelloResponse {
            challenge: Bytes::copy_from_slice(&challenge),
            proof: Bytes::new(),
        })
    }

    /// Second step: the proof over our challenge; ours in return. A
    /// challenge answers one proof at most.
    fn verify(
        &mut self,
        secret: &ClusterSecret,
        me: u32,
        origin: &Cell<Origin>,
        req: ForwardHelloRequest,
    ) -> Result<ForwardHelloResponse, Refusal> {
        let Some(p) = self.pending.take() else {
            return Err(close("a ForwardHello proof without a challenge"));
        };
        if p.node != req.node_id || p.their_nonce != req.nonce {
            return Err(close("a ForwardHello proof for another challenge"));
        }
        let context = secret::node_context(&req.cluster_id, req.node_id, me);
        let nonces: [&[u8]; 2] = [&p.challenge, &p.their_nonce];
        if !secret.verify(Purpose::ForwardClient, &nonces, &context, &req.proof) {
            tracing::warn!(
                node = req.node_id,
                "ForwardHello with a wrong proof (not the cluster secret); connection closed"
            );
            return Err(close("the proof does not match this cluster's secret"));
        }
        origin.set(Origin::Node(req.node_id));
        let ours = secret.prove(Purpose::ForwardServer, &nonces, &context);
        Ok(ForwardHelloResponse {
            challenge: Bytes::new(),
            proof: Bytes::copy_from_slice(&ours),
        })
    }
}
