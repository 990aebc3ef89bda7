//! One SPDY/3.1 connection, server side: the client opens streams (each gets its
//! SYN_REPLY at once, which Kubernetes' clients wait for before they write), their data
//! arrives on a channel per stream, and frames go out through one writer task.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::spdy::{Frame, Headers, Reader, Writer};

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

/// Sends frames on the connection.
#[derive(Clone)]
pub struct Sender {
    tx: mpsc::Sender<Frame>,
}

impl Sender {
    /// A sender whose frames go to `tx` (another transport's writer).
    pub fn from_channel(tx: mpsc::Sender<Frame>) -> Self {
        Sender { tx }
    }

    /// Data on a stream (`fin` closes the server's side of it). False once the connection
    /// is gone.
    pub async fn data(&self, stream_id: u32, data: Vec<u8>, fin: bool) -> bool {
        self.tx.send(Frame::Data { stream_id, fin, data }).await.is_ok()
    }

    pub async fn reset(&self, stream_id: u32, status: u32) {
        let _ = self.tx.send(Frame::RstStream { stream_id, status }).await;
    }

    /// Tells the client the session is over; the writer then closes the connection.
    pub async fn go_away(&self) {
        let _ = self.tx.send(Frame::GoAway { last_good: 0, status: 0 }).await;
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

/// Drives a connection whose upgrade was answered.
pub fn serve<IO>(io: IO, idle: Duration) -> Session
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (read, mut write) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Frame>(64);
    let sender = Sender { tx };
    let (incoming_tx, incoming) = mpsc::channel(MAX_OPEN_STREAMS);
    let (closed_tx, closed) = watch::channel(false);
    let closed_tx = Arc::new(closed_tx);
    let activity = Activity::default();
    watch_idle(activity.clone(), idle, sender.clone(), closed_tx.clone());
    let wrote = activity.clone();
    tokio::spawn(async move {
        let mut w = Writer::default();
        // Frames that queued up while the last write went out leave together.
        let mut batch = Vec::with_capacity(WRITE_BATCH);
        while rx.recv_many(&mut batch, WRITE_BATCH).await > 0 {
            wrote.touch();
            let last = batch.iter().any(|f| matches!(f, Frame::GoAway { .. }));
            if w.write_frames(&batch, &mut write).await.is_err() || last {
                break;
            }
            batch.clear();
        }
        let _ = write.shutdown().await;
    });
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
                        let _ = replies.tx.send(refused(stream_id)).await;
                        continue;
                    }
                    let reply = Frame::SynReply { stream_id, fin: false, headers: Headers::new() };
                    if replies.tx.send(reply).await.is_err() {
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
                        let _ = replies.tx.send(refused(stream_id)).await;
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
                    let _ = replies.tx.send(Frame::Ping { id }).await;
                }
                Frame::GoAway { .. } => break,
                _ => {}
            }
        }
        let _ = closed_tx.send(true);
    });
    Session { sender, incoming, closed }
}
