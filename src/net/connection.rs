//! One client connection: read frames, hand each to the dispatcher as its
//! own task, write the answers back in request order. Generic over the
//! stream (a `TcpStream`, or a TLS stream over one), so each kind is
//! compiled on its own and plaintext pays nothing for TLS.
//!
//! ForwardHello is answered here, not by the dispatcher: it decides what
//! the connection is (a client's, or a node's carrying forwarded
//! requests), and it takes two steps whose state is the connection's
//! (see `hello`).
//!
//! Two limits keep a connection from growing without bound: at most
//! `max_in_flight_per_connection` requests are queued for an answer, and each
//! frame's bytes are taken from the shard's memory budget before its body is
//! read. When either is exhausted the socket is simply not read, and TCP
//! pushes back on the client.
//!
//! Writes are gathered: every answer that is ready is appended to one buffer
//! and the buffer goes out in one `write_all` (glommio's socket writes are
//! not buffered, and frame-by-frame writes cost an order of magnitude).

use std::cell::Cell;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt, FutureExt};
use glommio::channels::local_channel;
use glommio::sync::StaticPermit;
use glommio::task::JoinHandle;

use super::dispatch;
use super::hello::Hello;
use super::session::Session;
use super::stop::Stop;
use super::throttle::Throttle;
use crate::shard::{Origin, Shard};
use ringmq_protocol::frame::{FrameError, RequestHeader, REQUEST_HEADER_LEN};
use ringmq_protocol::limits::MAX_REQUEST_FRAME;
use ringmq_protocol::ApiKey;

/// Largest socket read: large enough to take many small frames per syscall.
const READ_CHUNK: usize = 64 << 10;
/// First socket read size. The chunk doubles each time a read fills all the
/// room it had, so a busy connection soon reads `READ_CHUNK` at a time while
/// an idle one holds only this much (1,000 idle connections held 75 MiB
/// when every one started at `READ_CHUNK`).
const FIRST_READ_CHUNK: usize = 4 << 10;
/// Answers gathered before a write is forced even if more are ready.
const WRITE_GATHER: usize = 256 << 10;
/// An answer's payload larger than this is written from where it lies
/// (e.g. the segment mapping) instead of being copied into the write buffer.
const COPY_LIMIT: usize = 64 << 10;

/// An encoded response: a frame head and, for fetches, the records that
/// follow it, kept apart so they need not be copied.
#[derive(Debug, Default)]
pub struct Encoded {
    pub head: BytesMut,
    pub tail: Option<Bytes>,
}

/// What the writer receives for each request, in request order. `None` for
/// requests that get no answer (produce with acks=0).
type Pending = JoinHandle<Option<Encoded>>;

/// Serves one connection until the client closes it, the framing breaks,
/// or the broker stops. `identity`: who the client's verified TLS
/// certificate names (mutual TLS), else `None`.
pub async fn serve<S>(
    shard: Rc<Shard>,
    stream: S,
    stop: Rc<Stop>,
    peer: Option<std::net::SocketAddr>,
    identity: Option<String>,
) where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let (reader, writer) = futures_lite::io::split(stream);
    let cap = shard.config.max_in_flight_per_connection;
    let (tx, rx) = local_channel::new_bounded::<(Pending, Option<StaticPermit>)>(cap);
    let queued = Rc::new(Cell::new(0usize));
    let write = glommio::spawn_local(write_loop(writer, rx, queued.clone()));
    let read = read_loop(shard, reader, Queue { tx, queued }, Hello::new(identity));
    if let Err(e) = read.or(stopped(stop)).await {
        tracing::debug!(?peer, error = %e, "connection closed");
    }
    // The sender is gone: the writer drains what is queued, then returns.
    write.await;
}

async fn stopped(stop: Rc<Stop>) -> Result<(), ReadEnd> {
    stop.wait().await;
    Ok(())
}

/// Why reading stopped.
#[derive(Debug, thiserror::Error)]
enum ReadEnd {
    #[error("client closed the connection")]
    Closed,
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(FrameError),
    #[error("ForwardHello refused: {0}")]
    Refused(String),
    #[error("not authenticated")]
    Unauthenticated,
}

/// The reader's end of the answer queue. `queued` counts what the writer has
/// not taken yet, so it knows when to stop gathering and write.
struct Queue {
    tx: local_channel::LocalSender<(Pending, Option<StaticPermit>)>,
    queued: Rc<Cell<usize>>,
}

impl Queue {
    /// Queues an answer; false when the writer is gone (the socket is dead).
    async fn push(&self, task: Pending, permit: Option<StaticPermit>) -> bool {
        self.queued.set(self.queued.get() + 1);
        self.tx.send((task, permit)).await.is_ok()
    }
}

/// Reads frames and queues one task per request until the stream ends.
async fn read_loop<R: futures_lite::AsyncRead + Unpin>(
    shard: Rc<Shard>,
    mut reader: R,
    queue: Queue,
    mut hello: Hello,
) -> Result<(), ReadEnd> {
    // `buf[..filled]` holds bytes read and not yet taken as frames; the
    // rest of `buf` is initialized scratch space that reads go into, so a
    // read does not zero its target first (that memset of the whole spare
    // buffer was 2.5% of the broker's CPU with small requests).
    let mut buf = BytesMut::new();
    let mut filled = 0usize;
    let mut chunk = FIRST_READ_CHUNK;
    // Set by a ForwardHello: the connection then carries another node's
    // forwarded requests.
    let origin = Rc::new(Cell::new(Origin::Client));
    // Who the client is: its certificate's identity (mutual TLS), else
    // what SASL proves; its quota follows (anonymous until then).
    let session = Rc::new(Session::new(hello.identity().map(str::to_owned)));
    let throttle = Rc::new(Throttle::new(session.principal()));
    loop {
        fill(
            &mut reader,
            &mut buf,
            &mut filled,
            &mut chunk,
            REQUEST_HEADER_LEN,
        )
        .await?;
        // Over a quota: no request is taken until the throttle passes (it
        // is known by now if the client waited for the answer that set it).
        throttle.wait().await;
        let header = RequestHeader::parse(&buf).map_err(ReadEnd::Frame)?;
        let api = match header.validate() {
            Ok(api) => Ok(api),
            Err(e) if e.closes_connection() => {
                // The length cannot be trusted, so neither can anything after it.
                let answer = dispatch::refuse(header.correlation_id, &e);
                queue.push(ready(Some(answer)), None).await;
                return Err(ReadEnd::Frame(e));
            }
            Err(e) => Err(e),
        };
        let frame_len = REQUEST_HEADER_LEN + header.body_len();
        debug_assert!(frame_len <= MAX_REQUEST_FRAME + REQUEST_HEADER_LEN);
        // Take the frame's bytes from the shard budget before reading its body.
        let permit = shard
            .memory
            .acquire_static_permit(frame_len as u64)
            .await
            .ok();
        fill(&mut reader, &mut buf, &mut filled, &mut chunk, frame_len).await?;
        let frame = buf.split_to(frame_len).freeze();
        filled -= frame_len;
        let body = frame.slice(REQUEST_HEADER_LEN..);
        let task = match api {
            Ok(ApiKey::ForwardHello) => {
                // Answered before the next frame is read, so what follows
                // is served as the hello decided.
                let (answer, refused) = hello.answer(&shard, &origin, &header, body);
                if let Some(why) = refused {
                    queue.push(ready(Some(answer)), permit).await;
                    return Err(ReadEnd::Refused(why));
                }
                ready(Some(answer))
            }
            Ok(api) => {
                if let Some(i) = session.intercept(&shard, origin.get(), &header, api, &body) {
                    throttle.follow(session.principal());
                    if !queue.push(ready(Some(i.answer)), permit).await {
                        return Ok(());
                    }
                    match i.close {
                        true => return Err(ReadEnd::Unauthenticated),
                        false => continue,
                    }
                }
                let conn = dispatch::Conn {
                    origin: origin.clone(),
                    session: session.clone(),
                    throttle: throttle.clone(),
                };
                let shard = shard.clone();
                glommio::spawn_local(dispatch::handle(shard, conn, header, api, body)).detach()
            }
            Err(e) => ready(Some(dispatch::refuse(header.correlation_id, &e))),
        };
        if !queue.push(task, permit).await {
            return Ok(());
        }
    }
}

/// A task that is already finished, for answers known without dispatching.
fn ready(answer: Option<Encoded>) -> Pending {
    glommio::spawn_local(async move { answer }).detach()
}

/// Reads until `buf[..filled]` holds at least `n` bytes. Space past
/// `filled` is zeroed only when it is (re)allocated, not before each read.
/// `chunk` is the connection's current read size (see `FIRST_READ_CHUNK`).
async fn fill<R: futures_lite::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    filled: &mut usize,
    chunk: &mut usize,
    n: usize,
) -> Result<(), ReadEnd> {
    while *filled < n {
        if buf.len() < n || buf.len() - *filled < REQUEST_HEADER_LEN {
            // Too little room: a new allocation (earlier frames still hold
            // the old one), of which only the filled part is copied.
            buf.truncate(*filled);
            buf.reserve((n - *filled).max(*chunk));
            let cap = buf.capacity();
            buf.resize(cap, 0);
        }
        let room = buf.len() - *filled;
        let got = reader.read(&mut buf[*filled..]).await?;
        match got {
            0 if *filled == 0 => return Err(ReadEnd::Closed),
            0 => return Err(ReadEnd::Frame(FrameError::Truncated)),
            g => {
                *filled += g;
                if g == room {
                    *chunk = (*chunk * 2).min(READ_CHUNK);
                }
            }
        }
    }
    Ok(())
}

/// Writes answers in request order, gathering every one that is ready into
/// a single write.
async fn write_loop<W: futures_lite::AsyncWrite + Unpin>(
    mut writer: W,
    rx: local_channel::LocalReceiver<(Pending, Option<StaticPermit>)>,
    queued: Rc<Cell<usize>>,
) {
    let mut out = BytesMut::with_capacity(WRITE_GATHER);
    let mut held: Vec<StaticPermit> = Vec::new();
    let result: std::io::Result<()> = async {
        while let Some((mut task, permit)) = rx.recv().await {
            queued.set(queued.get() - 1);
            let answer = match futures_lite::future::poll_once(&mut task).await {
                Some(a) => a,
                None => {
                    // Not ready: send what is gathered before waiting on it.
                    flush(&mut writer, &mut out, &mut held).await?;
                    task.await
                }
            };
            held.extend(permit);
            if let Some(Some(enc)) = answer {
                out.extend_from_slice(&enc.head);
                if let Some(tail) = enc.tail {
                    if tail.len() > COPY_LIMIT {
                        flush(&mut writer, &mut out, &mut held).await?;
                        writer.write_all(&tail).await?;
                    } else {
                        out.extend_from_slice(&tail);
                    }
                }
            }
            if out.len() >= WRITE_GATHER || queued.get() == 0 {
                flush(&mut writer, &mut out, &mut held).await?;
            }
        }
        flush(&mut writer, &mut out, &mut held).await?;
        writer.close().await
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "writing to client failed");
    }
}

async fn flush<W: futures_lite::AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut BytesMut,
    held: &mut Vec<StaticPermit>,
) -> std::io::Result<()> {
    if !out.is_empty() {
        writer.write_all(out).await?;
        out.clear();
    }
    // Pushes out what a TLS stream still holds (a large tail is written
    // without `out`); a no-op in the clear.
    writer.flush().await?;
    held.clear(); // answers are out: their bytes go back to the budget
    Ok(())
}
