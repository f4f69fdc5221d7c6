//! One TCP connection to one broker, carrying pipelined requests, in the
//! clear or over TLS ([`ConnectionConfig::tls`]). The reader and writer are
//! generic over the stream, so a plaintext connection pays nothing for TLS.
//!
//! The broker answers the requests of a connection in the order it received
//! them (SPEC.md 2.3), so the connection keeps the requests awaiting an
//! answer in a queue, in send order, and matches each response to the front
//! of it (checking the correlation id).
//!
//! Two background tasks own the socket's halves:
//! - the **writer** takes every frame queued since its last write as one
//!   buffer and sends it with one `write_all` (glommio's `TcpStream` writes
//!   are unbuffered and `write_vectored` sends only the first slice, so
//!   gathering is done here);
//! - the **reader** reads one response frame at a time and hands it to the
//!   request waiting for it.
//!
//! Callers never touch the socket: [`Connection::send`] appends a frame to
//! the shared output buffer (after waiting for a free in-flight slot and for
//! buffer room, so every queue is bounded) and returns a [`PendingResponse`].
//! A request that gets no answer within its timeout closes the connection:
//! since answers come in order, every later request would wait behind it.
//! Once closed, a connection stays closed; [`crate::Client`] opens a new one.
//!
//! An answer with `throttle_ms` (the broker's quota, SPEC.md 5.25) holds the
//! writer for that long: the broker reads nothing from this connection
//! meanwhile, so anything sent would only wait in its socket.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use futures_lite::{future, FutureExt};
use glommio::net::TcpStream;
use glommio::timer::Timer;
use glommio::Task;
use ringmq_protocol::{
    ApiKey, Request, Response, ResponseBody, ResponseHeader, RESPONSE_HEADER_LEN,
};

use crate::error::ClientError;
use crate::wait::WaitList;

/// Limits of one connection.
#[derive(Debug, Clone)]
pub struct ConnectionConfig {
    /// How long a TCP connect may take.
    pub connect_timeout: Duration,
    /// How long a request may wait for its response, counted from when it
    /// was queued. Fetch adds its own `max_wait_ms` to this.
    pub request_timeout: Duration,
    /// Requests sent and not yet answered; [`Connection::send`] waits for a
    /// free slot past it. The broker has its own cap (1024 by default).
    pub max_in_flight: usize,
    /// Bytes of frames queued and not yet written; [`Connection::send`]
    /// waits past it (a frame is accepted whenever the buffer is below it, so
    /// one frame of any size always fits).
    pub max_buffered_bytes: usize,
    /// `Some`: the connection speaks TLS (the handshake counts in
    /// `connect_timeout`). `None`: plaintext.
    pub tls: Option<crate::tls::TlsOptions>,
    /// Who to authenticate as (SASL SCRAM-SHA-256) right after connecting;
    /// `None`: no authentication.
    pub sasl: Option<crate::sasl::SaslConfig>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 1024,
            max_buffered_bytes: 8 << 20,
            tls: None,
            sasl: None,
        }
    }
}

/// A connection to one broker. Dropping it closes the socket and fails the
/// requests still waiting with [`ClientError::Closed`].
pub struct Connection {
    shared: Rc<Shared>,
    _reader: Task<()>,
    _writer: Task<()>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

/// State shared by the connection handle, its two tasks and the pending
/// responses (weakly). Borrows of `state` never cross an `.await`.
struct Shared {
    addr: SocketAddr,
    config: ConnectionConfig,
    state: RefCell<State>,
}

struct State {
    /// Frames queued since the writer's last write, back to back.
    out: BytesMut,
    /// Bytes ever queued and ever written; `flushed()` compares them.
    queued_total: u64,
    written_total: u64,
    /// Requests written or queued that await a response, in send order.
    pending: VecDeque<Pending>,
    next_correlation_id: u32,
    /// Set once; every later call fails with it.
    closed: Option<String>,
    /// The broker throttled this connection until then: nothing is written.
    hold_until: Option<Instant>,
    /// Time the broker has throttled this connection for, in total.
    throttled: Duration,
    /// The writer, parked until `out` is not empty or the connection closes.
    writer: Option<Waker>,
    /// The reader, parked until the connection closes (it is also woken by
    /// the socket).
    reader: Option<Waker>,
    /// Callers waiting for an in-flight slot, buffer room, or `flushed()`.
    waiters: WaitList,
}

/// A request awaiting its response.
struct Pending {
    correlation_id: u32,
    api: ApiKey,
    slot: Rc<Slot>,
}

/// Where the reader leaves a response for its [`PendingResponse`]. A
/// one-shot channel, local to the executor.
#[derive(Default)]
struct Slot(RefCell<SlotState>);

#[derive(Default)]
enum SlotState {
    #[default]
    Waiting,
    Parked(Waker),
    Done(Result<ResponseBody, ClientError>),
    Taken,
}

impl Slot {
    fn fill(&self, result: Result<ResponseBody, ClientError>) {
        let prev = std::mem::replace(&mut *self.0.borrow_mut(), SlotState::Done(result));
        match prev {
            SlotState::Parked(w) => w.wake(),
            SlotState::Waiting => {}
            // Filled twice: keep the first answer.
            SlotState::Done(r) => *self.0.borrow_mut() = SlotState::Done(r),
            SlotState::Taken => *self.0.borrow_mut() = SlotState::Taken,
        }
    }

    fn poll_take(&self, cx: &Context<'_>) -> Poll<Result<ResponseBody, ClientError>> {
        let mut s = self.0.borrow_mut();
        match std::mem::take(&mut *s) {
            SlotState::Done(r) => {
                *s = SlotState::Taken;
                Poll::Ready(r)
            }
            SlotState::Taken => panic!("PendingResponse polled after it completed"),
            SlotState::Waiting | SlotState::Parked(_) => {
                *s = SlotState::Parked(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

/// The response to one request sent with [`Connection::send`]: a future of
/// the response body, or the broker's error as [`ClientError::Broker`].
///
/// Dropping it does not cancel the request (it is already on its way); the
/// response is read and discarded. If no response comes within the
/// request's timeout it resolves to [`ClientError::Timeout`] and the
/// connection is closed.
#[must_use = "a PendingResponse does nothing unless awaited"]
pub struct PendingResponse {
    slot: Rc<Slot>,
    timer: Timer,
    after: Duration,
    api: ApiKey,
    conn: Weak<Shared>,
}

impl Future for PendingResponse {
    type Output = Result<ResponseBody, ClientError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(r) = self.slot.poll_take(cx) {
            return Poll::Ready(r);
        }
        if Pin::new(&mut self.timer).poll(cx).is_pending() {
            return Poll::Pending;
        }
        let addr = match self.conn.upgrade() {
            Some(shared) => {
                let reason = format!(
                    "a {} request got no answer within {:?}",
                    self.api, self.after
                );
                shared.close(reason);
                shared.addr
            }
            None => SocketAddr::from(([0, 0, 0, 0], 0)),
        };
        // The close may just have filled the slot with `Closed`: the
        // timeout is the better explanation for this request.
        *self.slot.0.borrow_mut() = SlotState::Taken;
        Poll::Ready(Err(ClientError::Timeout {
            what: self.api.name(),
            addr,
            after: self.after,
        }))
    }
}

/// Runs the SASL exchange on a new connection when the config asks for
/// it, before anything else is sent on it.
async fn authenticated(conn: Connection) -> Result<Connection, ClientError> {
    if let Some(sasl) = &conn.shared.config.sasl {
        crate::sasl::authenticate(&conn, sasl).await?;
    }
    Ok(conn)
}

impl Connection {
    /// Connects to `addr` (TCP_NODELAY on), shakes hands when the config
    /// asks for TLS, and starts the reader and writer tasks on the current
    /// executor.
    pub async fn connect(
        addr: SocketAddr,
        config: ConnectionConfig,
    ) -> Result<Connection, ClientError> {
        let started = std::time::Instant::now();
        let stream = TcpStream::connect_timeout(addr, config.connect_timeout)
            .await
            .map_err(std::io::Error::from)?;
        stream.set_nodelay(true).map_err(std::io::Error::from)?;
        let Some(tls) = &config.tls else {
            return authenticated(Connection::from_stream(addr, stream, config)).await;
        };
        let name = tls.name_for(addr)?;
        let connector = futures_rustls::TlsConnector::from(tls.config.clone());
        let left = config.connect_timeout.saturating_sub(started.elapsed());
        let handshake = async { Some(connector.connect(name, stream).await) }
            .or(async {
                Timer::new(left).await;
                None
            })
            .await;
        match handshake {
            Some(Ok(stream)) => authenticated(Connection::from_stream(addr, stream, config)).await,
            Some(Err(e)) => Err(ClientError::Tls(format!("handshake with {addr}: {e}"))),
            None => Err(ClientError::Tls(format!(
                "handshake with {addr}: no answer within {:?}",
                config.connect_timeout
            ))),
        }
    }

    fn from_stream<S>(addr: SocketAddr, stream: S, config: ConnectionConfig) -> Connection
    where
        S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
    {
        let shared = Rc::new(Shared {
            addr,
            config,
            state: RefCell::new(State {
                out: BytesMut::with_capacity(64 << 10),
                queued_total: 0,
                written_total: 0,
                pending: VecDeque::new(),
                next_correlation_id: 1,
                closed: None,
                hold_until: None,
                throttled: Duration::ZERO,
                writer: None,
                reader: None,
                waiters: WaitList::default(),
            }),
        });
        let (r, w) = futures_lite::io::split(stream);
        let reader = glommio::spawn_local(read_loop(shared.clone(), r));
        let writer = glommio::spawn_local(write_loop(shared.clone(), w));
        Connection {
            shared,
            _reader: reader,
            _writer: writer,
        }
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// Whether the connection closed; every call on it then fails.
    pub fn is_closed(&self) -> bool {
        self.shared.state.borrow().closed.is_some()
    }

    /// How long, in total, the broker has throttled this connection for a
    /// quota.
    pub fn throttled(&self) -> Duration {
        self.shared.state.borrow().throttled
    }

    /// Requests sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.shared.state.borrow().pending.len()
    }

    /// Queues `req` for sending, after waiting for an in-flight slot and
    /// buffer room. Returns `None` for a request the broker does not answer
    /// (a Produce with `acks = 0`), else the future of its response.
    ///
    /// Frames go out in the order `send` calls complete, and their responses
    /// come back in that order.
    pub async fn send(&self, req: &Request) -> Result<Option<PendingResponse>, ClientError> {
        self.send_with_timeout(req, self.shared.config.request_timeout)
            .await
    }

    /// [`send`](Self::send) with a timeout of its own (a long-polling Fetch
    /// needs its `max_wait_ms` on top of the usual one).
    pub async fn send_with_timeout(
        &self,
        req: &Request,
        timeout: Duration,
    ) -> Result<Option<PendingResponse>, ClientError> {
        let expects = req.expects_response();
        let shared = &self.shared;
        future::poll_fn(|cx| {
            let mut st = shared.state.borrow_mut();
            if let Some(reason) = &st.closed {
                return Poll::Ready(Err(shared.closed_error(reason)));
            }
            let room = st.out.len() < shared.config.max_buffered_bytes;
            let slot = !expects || st.pending.len() < shared.config.max_in_flight;
            if room && slot {
                Poll::Ready(Ok(()))
            } else {
                st.waiters.register(cx.waker());
                Poll::Pending
            }
        })
        .await?;

        let mut st = shared.state.borrow_mut();
        let correlation_id = st.next_correlation_id;
        st.next_correlation_id = st.next_correlation_id.wrapping_add(1);
        let before = st.out.len();
        match req {
            // The batch is copied once, into the gathered write buffer.
            Request::Produce(p) => {
                p.encode_head(correlation_id, &mut st.out);
                st.out.extend_from_slice(&p.batch);
            }
            _ => req.encode(correlation_id, &mut st.out),
        }
        st.queued_total += (st.out.len() - before) as u64;
        if let Some(w) = st.writer.take() {
            w.wake();
        }
        if !expects {
            return Ok(None);
        }
        let slot = Rc::new(Slot::default());
        st.pending.push_back(Pending {
            correlation_id,
            api: req.api_key(),
            slot: slot.clone(),
        });
        Ok(Some(PendingResponse {
            slot,
            timer: Timer::new(timeout),
            after: timeout,
            api: req.api_key(),
            conn: Rc::downgrade(shared),
        }))
    }

    /// Sends `req` and waits for its response. For a request that gets no
    /// response (Produce with `acks = 0`) it returns once the request is
    /// queued, with `None`.
    pub async fn request(&self, req: &Request) -> Result<Option<ResponseBody>, ClientError> {
        match self.send(req).await? {
            Some(p) => p.await.map(Some),
            None => Ok(None),
        }
    }

    /// Waits until every frame queued so far was handed to the socket. For a
    /// caller that sends requests without responses and wants them gone
    /// before it exits.
    pub async fn flushed(&self) -> Result<(), ClientError> {
        let target = self.shared.state.borrow().queued_total;
        future::poll_fn(|cx| {
            let mut st = self.shared.state.borrow_mut();
            if st.written_total >= target {
                Poll::Ready(Ok(()))
            } else if let Some(reason) = &st.closed {
                Poll::Ready(Err(self.shared.closed_error(reason)))
            } else {
                st.waiters.register(cx.waker());
                Poll::Pending
            }
        })
        .await
    }

    /// Closes the connection: requests still waiting fail with
    /// [`ClientError::Closed`] and the socket is shut.
    pub fn close(&self) {
        self.shared.close("closed by the client".to_owned());
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.shared
            .close("the connection handle was dropped".to_owned());
    }
}

impl Shared {
    fn closed_error(&self, reason: &str) -> ClientError {
        ClientError::Closed {
            addr: self.addr,
            reason: reason.to_owned(),
        }
    }

    /// Marks the connection closed (keeping the first reason), fails every
    /// pending request and wakes everyone, so both tasks exit.
    fn close(&self, reason: String) {
        let (pending, mut waiters, writer, reader) = {
            let mut st = self.state.borrow_mut();
            if st.closed.is_some() {
                return;
            }
            tracing::debug!(addr = %self.addr, %reason, "connection closed");
            st.closed = Some(reason.clone());
            (
                std::mem::take(&mut st.pending),
                st.waiters.take(),
                st.writer.take(),
                st.reader.take(),
            )
        };
        for p in pending {
            p.slot.fill(Err(self.closed_error(&reason)));
        }
        waiters.wake_all();
        writer.into_iter().chain(reader).for_each(Waker::wake);
    }

    /// Resolves when the connection is closed.
    async fn wait_closed(&self, reader: bool) {
        future::poll_fn(|cx| {
            let mut st = self.state.borrow_mut();
            if st.closed.is_some() {
                return Poll::Ready(());
            }
            let w = if reader {
                &mut st.reader
            } else {
                &mut st.writer
            };
            *w = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// The writer task: one `write_all` of everything queued per wake-up.
async fn write_loop<W: futures_lite::AsyncWrite + Unpin>(shared: Rc<Shared>, mut w: W) {
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        let ready = future::poll_fn(|cx| {
            let mut st = shared.state.borrow_mut();
            if st.closed.is_some() {
                return Poll::Ready(false);
            }
            if st.out.is_empty() {
                st.writer = Some(cx.waker().clone());
                return Poll::Pending;
            }
            Poll::Ready(true)
        })
        .await;
        if !ready {
            return;
        }
        // Throttled: what is queued waits here (bounded by the buffer cap).
        let hold = shared.state.borrow_mut().hold_until.take();
        if let Some(until) = hold {
            let wait = until.saturating_duration_since(Instant::now());
            let held = async {
                Timer::new(wait).await;
                true
            }
            .or(async {
                shared.wait_closed(false).await;
                false
            })
            .await;
            if !held {
                return;
            }
        }
        {
            let mut st = shared.state.borrow_mut();
            std::mem::swap(&mut st.out, &mut buf);
            // Room in `out` again: wake callers waiting for it.
            st.waiters.wake_all();
        }
        // `flush` pushes out what a TLS stream still holds (a no-op in the clear).
        let written = async { Some(write_out(&mut w, &buf).await) }
            .or(async {
                shared.wait_closed(false).await;
                None
            })
            .await;
        match written {
            Some(Ok(())) => {}
            Some(Err(e)) => {
                shared.close(format!("writing failed: {e}"));
                return;
            }
            None => return,
        }
        let mut st = shared.state.borrow_mut();
        st.written_total += buf.len() as u64;
        st.waiters.wake_all();
        drop(st);
        buf.clear();
    }
}

async fn write_out<W: futures_lite::AsyncWrite + Unpin>(
    w: &mut W,
    buf: &[u8],
) -> std::io::Result<()> {
    w.write_all(buf).await?;
    w.flush().await
}

/// The reader task: reads responses and hands each to the request at the
/// front of the queue.
async fn read_loop<R: futures_lite::AsyncRead + Unpin>(shared: Rc<Shared>, r: R) {
    let mut r = BufReader::with_capacity(64 << 10, r);
    loop {
        let frame = async { Some(read_frame(&mut r).await) }
            .or(async {
                shared.wait_closed(true).await;
                None
            })
            .await;
        let (header, body) = match frame {
            None => return,
            Some(Ok(f)) => f,
            Some(Err(reason)) => {
                shared.close(reason);
                return;
            }
        };
        if let Err(reason) = deliver(&shared, &header, body) {
            shared.close(reason);
            return;
        }
    }
}

/// Reads one response frame; on failure, the reason to close with.
async fn read_frame<R: futures_lite::AsyncRead + Unpin>(
    r: &mut BufReader<R>,
) -> Result<(ResponseHeader, BytesMut), String> {
    let mut hdr = [0u8; RESPONSE_HEADER_LEN];
    if let Err(e) = r.read_exact(&mut hdr).await {
        return Err(match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "the broker closed the connection".to_owned(),
            _ => format!("reading failed: {e}"),
        });
    }
    let header = ResponseHeader::parse(&hdr).map_err(|e| format!("bad response frame: {e}"))?;
    let mut body = BytesMut::zeroed(header.body_len());
    r.read_exact(&mut body).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            "the broker closed the connection in the middle of a response".to_owned()
        }
        _ => format!("reading failed: {e}"),
    })?;
    Ok((header, body))
}

/// Matches a response to its request and fills the request's slot.
fn deliver(shared: &Shared, header: &ResponseHeader, body: BytesMut) -> Result<(), String> {
    let cid = header.correlation_id;
    let (pending, waiters) = {
        let mut st = shared.state.borrow_mut();
        match st.pending.front() {
            Some(p) if p.correlation_id == cid => {}
            _ if st.pending.iter().any(|p| p.correlation_id == cid) => {
                return Err(format!(
                    "the broker answered request {cid} before an earlier one"
                ));
            }
            _ => {
                // SPEC 2.3: possible only for an undecodable acks=0 Produce.
                tracing::warn!(addr = %shared.addr, cid, "response matches no request, ignored");
                return Ok(());
            }
        }
        let p = st.pending.pop_front().expect("front checked above");
        (p, st.waiters.take())
    };
    let result = match Response::decode(pending.api, header, body.freeze()) {
        Ok(Response { result: Ok(b), .. }) => {
            let throttle_ms = match &b {
                ResponseBody::Produce(p) => p.throttle_ms,
                ResponseBody::Fetch(f) => f.throttle_ms,
                _ => 0,
            };
            if throttle_ms > 0 {
                let wait = Duration::from_millis(u64::from(throttle_ms));
                let mut st = shared.state.borrow_mut();
                let until = Instant::now() + wait;
                st.hold_until = Some(st.hold_until.map_or(until, |u| u.max(until)));
                st.throttled += wait;
            }
            Ok(b)
        }
        Ok(Response { result: Err(e), .. }) => Err(ClientError::Broker {
            code: e.code,
            message: e.message,
        }),
        // The frame's length was right, so the stream is still in step:
        // only this request fails.
        Err(e) => Err(ClientError::Protocol(e)),
    };
    pending.slot.fill(result);
    let mut waiters = waiters;
    waiters.wake_all();
    Ok(())
}
