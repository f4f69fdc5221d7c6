//! One connection's identity: the principal it authenticated as, its SASL
//! exchange in progress, and whether a refusal was already logged (refusals
//! are logged once per connection, counted every time).
//!
//! The reader answers the SASL requests itself, in order, before it reads
//! the next frame ([`Session::intercept`]), so a client may pipeline its
//! first requests right behind SaslAuthenticate; and while the broker
//! requires authentication it refuses, and closes, a connection whose
//! first other request comes before it authenticated.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use bytes::Bytes;
use ringmq_protocol::scram::{self, ClientFirst, ServerExchange};
use ringmq_protocol::{
    ApiKey, ErrorCode, Request, RequestHeader, ResponseBody, SaslAuthenticateResponse,
    SaslHandshakeResponse,
};

use super::connection::Encoded;
use super::dispatch;
use crate::auth::acl::USER_PREFIX;
use crate::shard::{Failure, Origin, Shard};

pub use crate::auth::ANONYMOUS;

/// Where the SASL exchange of a connection stands.
enum Sasl {
    Idle,
    /// SaslHandshake chose SCRAM-SHA-256.
    Chosen,
    /// The server-first message went out.
    Exchanging {
        exchange: ServerExchange,
        user: String,
        known: bool,
    },
    /// Authenticated, or refused (the connection then closes).
    Over,
}

/// The per-connection security state, beside [`Origin`].
pub struct Session {
    principal: RefCell<Option<Rc<str>>>,
    sasl: RefCell<Sasl>,
    refusal_logged: Cell<bool>,
}

/// A request the reader answered itself.
pub struct Intercepted {
    pub answer: Encoded,
    /// Close the connection once the answer is written.
    pub close: bool,
}

impl Session {
    /// A new connection's session. `tls_identity`, the subject of a client
    /// certificate checked by a mutual-TLS listener, is the principal
    /// `User:<identity>` with no SASL exchange.
    pub fn new(tls_identity: Option<String>) -> Session {
        Session {
            principal: RefCell::new(tls_identity.map(|id| Rc::from(format!("{USER_PREFIX}{id}")))),
            sasl: RefCell::new(Sasl::Idle),
            refusal_logged: Cell::new(false),
        }
    }

    /// `User:<name>` once authenticated.
    pub fn principal(&self) -> Option<Rc<str>> {
        self.principal.borrow().clone()
    }

    /// Whether this is the connection's first refusal (to log it once).
    pub fn first_refusal(&self) -> bool {
        !self.refusal_logged.replace(true)
    }

    /// Answers the SASL requests, and refuses any other request that comes
    /// before authentication when it is required. `None`: dispatch it.
    pub fn intercept(
        &self,
        shard: &Shard,
        origin: Origin,
        header: &RequestHeader,
        api: ApiKey,
        body: &Bytes,
    ) -> Option<Intercepted> {
        let corr = header.correlation_id;
        if api.is_sasl() {
            let started = std::time::Instant::now();
            let result = match Request::decode(header, body.clone()) {
                Ok(Request::SaslHandshake(r)) => self.handshake(&r.mechanism),
                Ok(Request::SaslAuthenticate(r)) => self.authenticate(shard, &r.auth_bytes),
                Ok(_) => Err(Failure::internal("not a SASL request")),
                Err(e) => Err(Failure::new(e.error_code(), e.to_string())),
            };
            let code = result.as_ref().err().map(|f| f.code);
            crate::metrics::request(api, code, body.len(), 0, started.elapsed());
            let close = matches!(code, Some(ErrorCode::AuthFailed));
            let answer = match result {
                Ok(body) => dispatch::encode_body(corr, body),
                Err(f) => dispatch::failure(corr, &f),
            };
            return Some(Intercepted { answer, close });
        }
        let must_authenticate = shard.config.authentication
            && origin == Origin::Client
            && !api.allowed_before_auth()
            && self.principal.borrow().is_none();
        if !must_authenticate {
            return None;
        }
        crate::metrics::auth_failure("none");
        crate::metrics::request(
            api,
            Some(ErrorCode::AuthFailed),
            body.len(),
            0,
            std::time::Duration::ZERO,
        );
        if self.first_refusal() {
            tracing::info!(api = %api, "request before authentication refused; connection closed");
        }
        let f = Failure::new(
            ErrorCode::AuthFailed,
            format!("{api} needs an authenticated connection: authenticate first (SaslHandshake, SaslAuthenticate)"),
        );
        Some(Intercepted {
            answer: dispatch::failure(corr, &f),
            close: true,
        })
    }

    fn handshake(&self, mechanism: &str) -> Result<ResponseBody, Failure> {
        let mut sasl = self.sasl.borrow_mut();
        if !matches!(*sasl, Sasl::Idle) {
            *sasl = Sasl::Over;
            return Err(self.refuse("unsupported", "SaslHandshake sent twice".into()));
        }
        if mechanism != scram::MECHANISM {
            *sasl = Sasl::Over;
            let shown: String = mechanism.chars().take(64).collect();
            self.refuse("unsupported", format!("mechanism {shown:?} asked for"));
            return Err(Failure::new(
                ErrorCode::AuthFailed,
                format!(
                    "mechanism {shown:?} is not enabled; this broker speaks {}",
                    scram::MECHANISM
                ),
            ));
        }
        *sasl = Sasl::Chosen;
        Ok(SaslHandshakeResponse {
            mechanisms: vec![scram::MECHANISM.into()],
        }
        .into())
    }

    fn authenticate(&self, shard: &Shard, msg: &[u8]) -> Result<ResponseBody, Failure> {
        let state = std::mem::replace(&mut *self.sasl.borrow_mut(), Sasl::Over);
        let out = match state {
            Sasl::Chosen => {
                let first = ClientFirst::parse(msg)
                    .map_err(|e| self.refuse(scram::MECHANISM, format!("client-first: {e}")))?;
                let (credential, known) = shard.with_security(|s| {
                    crate::auth::scram::lookup(s, shard.config.auth_secrets.as_deref(), &first.user)
                });
                // A fresh server nonce per exchange: a client-final recorded
                // on another connection names another nonce and fails.
                let random = crate::auth::random_bytes(18).map_err(Failure::internal)?;
                let nonce = scram::nonce_from_bytes(&random);
                let (exchange, server_first) = ServerExchange::start(&first, credential, &nonce);
                *self.sasl.borrow_mut() = Sasl::Exchanging {
                    exchange,
                    user: first.user,
                    known,
                };
                server_first
            }
            Sasl::Exchanging {
                exchange,
                user,
                known,
            } => {
                let why = match exchange.finish(msg) {
                    Ok(server_final) if known => {
                        tracing::debug!(user = %user, "authenticated");
                        *self.principal.borrow_mut() =
                            Some(Rc::from(format!("{USER_PREFIX}{user}")));
                        return Ok(SaslAuthenticateResponse {
                            auth_bytes: server_final.into(),
                        }
                        .into());
                    }
                    Ok(_) => "unknown user".to_owned(),
                    Err(e) => e.to_string(),
                };
                return Err(self.refuse(scram::MECHANISM, format!("user {user:?}: {why}")));
            }
            Sasl::Idle => {
                return Err(self.refuse("none", "SaslAuthenticate before SaslHandshake".into()))
            }
            Sasl::Over => {
                return Err(self.refuse("none", "SaslAuthenticate after the exchange ended".into()))
            }
        };
        Ok(SaslAuthenticateResponse {
            auth_bytes: out.into(),
        }
        .into())
    }

    /// A failed exchange: counted, logged once, and the same words to the
    /// client whatever the reason (`why` is for the log only).
    fn refuse(&self, mechanism: &str, why: String) -> Failure {
        crate::metrics::auth_failure(mechanism);
        if self.first_refusal() {
            tracing::info!(mechanism, reason = %why, "authentication failed; connection closed");
        }
        Failure::new(ErrorCode::AuthFailed, "authentication failed")
    }
}
