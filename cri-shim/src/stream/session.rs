//! One SPDY/3.1 connection, server side: the client opens streams (each gets its
//! SYN_REPLY at once, which Kubernetes' clients wait for before they write), their data
//! arrives on a channel per stream, and frames go out through one writer task.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot, watch};

use super::spdy::{Frame, Headers, Reader, Writer, data_head};

/// A stream the client opened.
pub struct Incoming {
    pub id: u32,
    pub headers: Headers,
    /// Its data; the channel ends with the client's FIN (or RST_STREAM).
    pub data: mpsc::Receiver<Vec<u8>>,
}

impl Incoming {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.first()).map(String::as_str)
    }
}

/// What goes out on a connection, in order.
pub enum Out {
    Frame(Frame),
    /// A DATA frame whose payload waits in a pipe: spliced to the connection, never
    /// copied through the daemon (only on a plain TCP connection).
    Piped(Piped),
}

pub struct Piped {
    pub stream_id: u32,
    /// The pipe's read end; it holds exactly `len` bytes for this frame.
    pub pipe: Arc<OwnedFd>,
    pub len: usize,
    /// True once the payload is on the connection (the pipe is empty again); false, or
    /// dropped, when the connection broke.
    pub sent: oneshot::Sender<bool>,
}

/// Sends frames on the connection.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Out>,
    splices: bool,
}

impl Sender {
    /// A sender whose frames go to `tx` (another transport's writer, which never splices).
    pub fn from_channel(tx: mpsc::Sender<Out>) -> Self {
        Sender { tx, splices: false }
    }

    /// Whether `piped` may be used: the connection is a plain TCP socket.
    pub fn splices(&self) -> bool {
        self.splices
    }

    /// Data on a stream (`fin` closes the server's side of it). False once the connection
    /// is gone.
    pub async fn data(&self, stream_id: u32, data: Vec<u8>, fin: bool) -> bool {
        self.tx.send(Out::Frame(Frame::Data { stream_id, fin, data })).await.is_ok()
    }

    /// A DATA frame of the `len` bytes waiting in `pipe`; the answer turns true once
    /// they are on the connection. None once the connection is gone.
    pub async fn piped(
        &self,
        stream_id: u32,
        pipe: Arc<OwnedFd>,
        len: usize,
    ) -> Option<oneshot::Receiver<bool>> {
        let (sent, done) = oneshot::channel();
        let out = Out::Piped(Piped { stream_id, pipe, len, sent });
        self.tx.send(out).await.ok().map(|()| done)
    }

    pub async fn reset(&self, stream_id: u32, status: u32) {
        let _ = self.tx.send(Out::Frame(Frame::RstStream { stream_id, status })).await;
    }

    /// Tells the client the session is over; the writer then closes the connection.
    pub async fn go_away(&self) {
        let _ = self.tx.send(Out::Frame(Frame::GoAway { last_good: 0, status: 0 })).await;
    }

    async fn frame(&self, frame: Frame) -> bool {
        self.tx.send(Out::Frame(frame)).await.is_ok()
    }
}

pub struct Session {
    pub sender: Sender,
    pub incoming: mpsc::Receiver<Incoming>,
    /// Turns true when the client's side of the connection is gone.
    pub closed: watch::Receiver<bool>,
}

/// When a connection last carried a frame either way.
#[derive(Clone)]
pub struct Activity(Arc<(Instant, AtomicU64)>);

impl Default for Activity {
    fn default() -> Self {
        Activity(Arc::new((Instant::now(), AtomicU64::new(0))))
    }
}

impl Activity {
    pub fn touch(&self) {
        let ms = self.0.0.elapsed().as_millis() as u64;
        self.0.1.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.0.1.load(Ordering::Relaxed));
        self.0.0.elapsed().saturating_sub(last)
    }
}

/// Ends a session that carried nothing for `idle` (the streaming server's idle timeout,
/// containerd's 4 h by default): GOAWAY to the client, and the session's handler sees it
/// closed (an exec's command is killed, an attach detaches).
pub fn watch_idle(
    activity: Activity,
    idle: Duration,
    sender: Sender,
    closed: Arc<watch::Sender<bool>>,
) {
    tokio::spawn(async move {
        let step = (idle / 4).clamp(Duration::from_millis(50), Duration::from_secs(30));
        loop {
            tokio::time::sleep(step).await;
            if *closed.borrow() {
                return;
            }
            if activity.idle_for() >= idle {
                tracing::debug!(?idle, "streaming connection idle; closing it");
                sender.go_away().await;
                let _ = closed.send(true);
                return;
            }
        }
    });
}

/// Streams one connection may have open at once, and streams waiting for the handler.
const MAX_OPEN_STREAMS: usize = 256;

/// RST_STREAM REFUSED_STREAM.
fn refused(stream_id: u32) -> Frame {
    Frame::RstStream { stream_id, status: super::spdy::RST_REFUSED_STREAM }
}

/// At most this many queued frames go out in one vectored write.
pub(crate) const WRITE_BATCH: usize = 16;

/// Data chunks buffered per stream before the reader waits for the handler.
const STREAM_BUFFER: usize = 16;

/// A connection's writing side, and the socket DATA payloads may be spliced to.
trait SpliceTarget: AsyncWrite + Unpin + Send + 'static {
    fn socket(&self) -> Option<&TcpStream>;
}

impl SpliceTarget for OwnedWriteHalf {
    fn socket(&self) -> Option<&TcpStream> {
        Some(self.as_ref())
    }
}

impl<IO: AsyncWrite + Send + 'static> SpliceTarget for tokio::io::WriteHalf<IO> {
    fn socket(&self) -> Option<&TcpStream> {
        None
    }
}

/// Drives a connection whose upgrade was answered.
pub fn serve<IO>(io: IO, idle: Duration) -> Session
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, write) = tokio::io::split(io);
    drive(read, write, idle)
}

/// Drives a plain TCP connection whose upgrade was answered (`buffered`: what the HTTP
/// server had read past the request): DATA payloads from sockets go out by splice.
pub fn serve_tcp(tcp: TcpStream, buffered: Bytes, idle: Duration) -> Session {
    let (read, write) = tcp.into_split();
    drive(std::io::Cursor::new(buffered).chain(read), write, idle)
}

/// Writes what the session sends until the connection breaks or a GOAWAY went out.
async fn write_out<W: SpliceTarget>(mut rx: mpsc::Receiver<Out>, mut io: W, wrote: Activity) {
    let mut w = Writer::default();
    // Frames that queued up while the last write went out leave together.
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut frames = Vec::with_capacity(WRITE_BATCH);
    'conn: while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
        wrote.touch();
        for out in batch.drain(..) {
            match out {
                Out::Frame(f) => {
                    let last = matches!(f, Frame::GoAway { .. });
                    frames.push(f);
                    if last {
                        let _ = w.write_frames(&frames, &mut io).await;
                        break 'conn;
                    }
                }
                Out::Piped(p) => {
                    let flushed = w.write_frames(&frames, &mut io).await.is_ok();
                    frames.clear();
                    let sent = flushed && splice_frame(&mut io, &p).await.is_ok();
                    let _ = p.sent.send(sent);
                    if !sent {
                        break 'conn;
                    }
                }
            }
        }
        if w.write_frames(&frames, &mut io).await.is_err() {
            break;
        }
        frames.clear();
    }
    let _ = io.shutdown().await;
}

/// A DATA frame's head, then its payload from the pipe to the socket.
async fn splice_frame<W: SpliceTarget>(io: &mut W, p: &Piped) -> std::io::Result<()> {
    let socket = io.socket().ok_or_else(|| std::io::Error::other("not a TCP connection"))?;
    // The head leaves with the payload's first segment (MSG_MORE), not in one of its own.
    let head = data_head(p.stream_id, false, p.len);
    let mut at = 0;
    while at < head.len() {
        let more = || {
            nix::sys::socket::send(
                socket.as_raw_fd(),
                &head[at..],
                MsgFlags::from_bits_retain(nix::libc::MSG_MORE),
            )
            .map_err(std::io::Error::from)
        };
        at += socket.async_io(Interest::WRITABLE, more).await?;
    }
    let mut left = p.len;
    while left > 0 {
        let n = socket.async_io(Interest::WRITABLE, || splice(&p.pipe, socket, left)).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        left -= n;
    }
    Ok(())
}

/// splice(2) of up to `len` bytes, never blocking (the caller waits for readiness).
pub(crate) fn splice(
    from: impl std::os::fd::AsFd,
    to: impl std::os::fd::AsFd,
    len: usize,
) -> std::io::Result<usize> {
    use nix::fcntl::SpliceFFlags as F;
    nix::fcntl::splice(from, None, to, None, len, F::SPLICE_F_MOVE | F::SPLICE_F_NONBLOCK)
        .map_err(std::io::Error::from)
}

fn drive<R, W>(read: R, write: W, idle: Duration) -> Session
where
    R: AsyncRead + Unpin + Send + 'static,
    W: SpliceTarget,
{
    let (tx, rx) = mpsc::channel::<Out>(64);
    let sender = Sender { tx, splices: write.socket().is_some() };
    let (incoming_tx, incoming) = mpsc::channel(MAX_OPEN_STREAMS);
    let (closed_tx, closed) = watch::channel(false);
    let closed_tx = Arc::new(closed_tx);
    let activity = Activity::default();
    watch_idle(activity.clone(), idle, sender.clone(), closed_tx.clone());
    tokio::spawn(write_out(rx, write, activity.clone()));
    let replies = sender.clone();
    tokio::spawn(async move {
        let mut r = Reader::new(read);
        let mut streams: HashMap<u32, mpsc::Sender<Vec<u8>>> = HashMap::new();
        loop {
            let frame = match r.next().await {
                Ok(Some(f)) => {
                    activity.touch();
                    f
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "streaming connection ends");
                    break;
                }
            };
            match frame {
                Frame::SynStream { stream_id, fin, headers } => {
                    // A bound on what one client can make the daemon hold: open streams
                    // beyond it are refused.
                    if streams.len() >= MAX_OPEN_STREAMS {
                        replies.frame(refused(stream_id)).await;
                        continue;
                    }
                    let reply = Frame::SynReply { stream_id, fin: false, headers: Headers::new() };
                    if !replies.frame(reply).await {
                        break;
                    }
                    let (data_tx, data) = mpsc::channel(STREAM_BUFFER);
                    if !fin {
                        streams.insert(stream_id, data_tx);
                    }
                    let stream = Incoming { id: stream_id, headers, data };
                    // A handler that takes no more streams (an exec has its own) must not
                    // stop this reader: streams it does not take are refused.
                    if incoming_tx.try_send(stream).is_err() {
                        streams.remove(&stream_id);
                        replies.frame(refused(stream_id)).await;
                    }
                }
                Frame::Data { stream_id, fin, data } => {
                    if let Some(tx) = streams.get(&stream_id)
                        && !data.is_empty()
                    {
                        let _ = tx.send(data).await;
                    }
                    if fin {
                        streams.remove(&stream_id);
                    }
                }
                Frame::Headers { stream_id, fin: true, .. }
                | Frame::RstStream { stream_id, .. } => {
                    streams.remove(&stream_id);
                }
                Frame::Ping { id } => {
                    replies.frame(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break,
                _ => {}
            }
        }
        let _ = closed_tx.send(true);
    });
    Session { sender, incoming, closed }
}
