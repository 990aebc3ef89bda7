//! PortForward over SPDY (`portforward.k8s.io`): for every forwarded connection the
//! client opens a pair of streams, `error` and `data`, with the same `port` and
//! `requestID` headers; podbay connects to `localhost:<port>` inside the pod's network
//! namespace (the node's for a hostNetwork pod) and copies both ways (the pod's bytes by
//! splice, never through the daemon's memory, on a plain TCP connection). What goes wrong
//! with one connection is written on its error stream; the others go on.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::unistd::pipe2;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::oneshot;

use super::session::{Incoming, Sender, Session, splice};
use super::spdy::{RST_CANCEL, RST_PROTOCOL_ERROR};

/// The most read from a forwarded connection at once: one DATA frame.
const COPY_CHUNK: usize = 256 << 10;
/// A read shorter than this gives its buffer's spare room back before it is queued.
const SHRINK_BELOW: usize = 64 << 10;

/// The next DATA frame's payload from a forwarded connection, read straight into the
/// buffer the frame carries (no copy on the way out); `None` at its end or on an error.
/// A short read keeps only its bytes while it waits in the queue.
pub(crate) async fn read_chunk(rd: &mut (impl AsyncRead + Unpin)) -> Option<Vec<u8>> {
    let mut buf = Vec::with_capacity(COPY_CHUNK);
    match rd.read_buf(&mut buf).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            if n < SHRINK_BELOW {
                buf.shrink_to_fit();
            }
            Some(buf)
        }
    }
}

/// How long the second stream of a pair may take (Kubernetes' stream creation timeout).
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);

/// A PortForward request, validated, waiting for its client.
#[derive(Debug, Clone)]
pub struct PortForwardSpec {
    pub sandbox_id: String,
    /// The pod's pinned network namespace; none: the node's (hostNetwork).
    pub netns: Option<PathBuf>,
    /// The ports the request named; empty: any.
    pub ports: Vec<i32>,
}

#[derive(Default)]
struct Pair {
    error: Option<Incoming>,
    data: Option<Incoming>,
    since: Option<Instant>,
}

pub async fn run(mut session: Session, spec: PortForwardSpec) {
    let sender = session.sender.clone();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut sweep = tokio::time::interval(Duration::from_secs(5));
    loop {
        let stream = tokio::select! {
            s = session.incoming.recv() => match s {
                Some(s) => s,
                None => break,
            },
            _ = sweep.tick() => {
                let now = Instant::now();
                let stale: Vec<String> = pairs
                    .iter()
                    .filter(|(_, p)| p.since.is_some_and(|t| now.duration_since(t) > PAIR_TIMEOUT))
                    .map(|(k, _)| k.clone())
                    .collect();
                for key in stale {
                    if let Some(p) = pairs.remove(&key) {
                        for s in [p.error, p.data].into_iter().flatten() {
                            sender.reset(s.id, RST_CANCEL).await;
                        }
                    }
                }
                continue;
            }
        };
        let kind = stream.header("streamtype").unwrap_or_default().to_owned();
        // Clients that send no requestID pair streams by id: data = error + 2.
        let request = match stream.header("requestid") {
            Some(r) => r.to_owned(),
            None if kind == "data" => stream.id.saturating_sub(2).to_string(),
            None => stream.id.to_string(),
        };
        let pair = pairs.entry(request.clone()).or_default();
        pair.since.get_or_insert_with(Instant::now);
        let slot = match kind.as_str() {
            "error" => &mut pair.error,
            "data" => &mut pair.data,
            other => {
                tracing::debug!(stream_type = other, "unexpected port-forward stream refused");
                sender.reset(stream.id, RST_PROTOCOL_ERROR).await;
                continue;
            }
        };
        if slot.is_some() {
            sender.reset(stream.id, RST_PROTOCOL_ERROR).await;
            continue;
        }
        *slot = Some(stream);
        if pair.error.is_some() && pair.data.is_some() {
            let p = pairs.remove(&request).expect("the pair just completed");
            let (error, data) = (p.error.expect("error stream"), p.data.expect("data stream"));
            tokio::spawn(forward(error, data, spec.clone(), sender.clone(), false));
        }
    }
}

/// PortForward over WebSocket: the connection stands for `ports` pairs of streams, known
/// up front. Each is forwarded until the pod's side closes; then the connection closes.
pub async fn run_pairs(mut session: Session, spec: PortForwardSpec, ports: usize) {
    let sender = session.sender.clone();
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    for _ in 0..ports * 2 {
        let Some(stream) = session.incoming.recv().await else { break };
        let request = stream.header("requestid").unwrap_or_default().to_owned();
        let pair = pairs.entry(request).or_default();
        match stream.header("streamtype") {
            Some("data") => pair.data = Some(stream),
            _ => pair.error = Some(stream),
        }
    }
    let forwards = pairs
        .into_values()
        .filter_map(|p| Some((p.error?, p.data?)))
        .map(|(e, d)| forward(e, d, spec.clone(), sender.clone(), true));
    futures_util::future::join_all(forwards).await;
    sender.go_away().await;
}

/// One forwarded connection.
/// With `end_with_pod`, the pod's side closing ends it (WebSocket, where the client has no
/// half-close); otherwise both directions run to their end (SPDY).
async fn forward(
    error: Incoming,
    mut data: Incoming,
    spec: PortForwardSpec,
    sender: Sender,
    end_with_pod: bool,
) {
    let port = data.header("port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
    let result = match port {
        None => Err(format!("invalid port {:?}", data.header("port").unwrap_or(""))),
        Some(p) if !spec.ports.is_empty() && !spec.ports.contains(&i32::from(p)) => {
            Err(format!("port {p} is not among the ports the PortForward request named"))
        }
        Some(p) => connect(spec.netns.clone(), p).await.map_err(|e| {
            format!(
                "error forwarding port {p} to pod {}: failed to connect to localhost:{p} inside the pod's network namespace: {e}",
                spec.sandbox_id
            )
        }),
    };
    let tcp = match result {
        Ok(t) => t,
        Err(message) => {
            sender.data(error.id, message.into_bytes(), true).await;
            sender.data(data.id, Vec::new(), true).await;
            return;
        }
    };
    let (mut rd, mut wr) = tcp.into_split();
    let data_id = data.id;
    let up = async move {
        while let Some(chunk) = data.data.recv().await {
            if wr.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = {
        let sender = sender.clone();
        async move {
            let ended = match Pipes::new(sender.splices()) {
                Some(pipes) => pipes.down(&rd, &sender, data_id).await,
                None => copy_down(&mut rd, &sender, data_id).await,
            };
            if ended {
                sender.data(data_id, Vec::new(), true).await;
            }
        }
    };
    if end_with_pod {
        tokio::pin!(up);
        tokio::pin!(down);
        tokio::select! {
            _ = &mut up => (&mut down).await,
            _ = &mut down => {}
        }
    } else {
        tokio::join!(up, down);
    }
    sender.data(error.id, Vec::new(), true).await;
}

/// The pod's data to the client through the daemon's memory; false when the connection
/// is gone.
async fn copy_down(rd: &mut OwnedReadHalf, sender: &Sender, id: u32) -> bool {
    while let Some(chunk) = read_chunk(rd).await {
        if !sender.data(id, chunk, false).await {
            return false;
        }
    }
    true
}

/// Two pipes the pod's data passes through on its way to the client's socket, spliced
/// both ways: the bytes never enter the daemon's memory. While the connection's writer
/// drains one, the other fills.
struct Pipes {
    ends: [(Arc<OwnedFd>, OwnedFd); 2],
    capacity: usize,
}

/// A pipe's size: the most one spliced DATA frame carries (as read_chunk's frames).
const PIPE_SIZE: usize = COPY_CHUNK;

impl Pipes {
    /// None where the connection cannot take spliced frames or pipes cannot be made.
    fn new(splices: bool) -> Option<Pipes> {
        if !splices {
            return None;
        }
        let mut capacity = PIPE_SIZE;
        let mut pipe = || -> Option<(Arc<OwnedFd>, OwnedFd)> {
            let (r, w) = pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).ok()?;
            // A smaller pipe (the node's pipe-max-size or its users' pipe budget) still
            // works, with smaller frames.
            let size = fcntl(&w, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE as i32))
                .or_else(|_| fcntl(&w, FcntlArg::F_GETPIPE_SZ))
                .ok()?;
            capacity = capacity.min(usize::try_from(size).ok()?);
            Some((Arc::new(r), w))
        };
        let ends = [pipe()?, pipe()?];
        Some(Pipes { ends, capacity })
    }

    /// Forwards until the pod's side ends (true) or the connection is gone (false).
    async fn down(self, rd: &OwnedReadHalf, sender: &Sender, id: u32) -> bool {
        let socket = rd.as_ref();
        let mut sending: [Option<oneshot::Receiver<bool>>; 2] = [None, None];
        let mut i = 0;
        loop {
            // A pipe is filled again only once the writer has emptied it.
            if let Some(sent) = sending[i].take()
                && !sent.await.unwrap_or(false)
            {
                return false;
            }
            let (r, w) = &self.ends[i];
            let fill = || splice(socket, w, self.capacity);
            let n = match socket.async_io(Interest::READABLE, fill).await {
                Ok(0) | Err(_) => return true,
                Ok(n) => n,
            };
            match sender.piped(id, r.clone(), n).await {
                Some(sent) => sending[i] = Some(sent),
                None => return false,
            }
            i ^= 1;
        }
    }
}

/// A TCP connection to the port on localhost (IPv4, then IPv6) in the network namespace:
/// made by a thread of its own that enters the namespace (a socket stays in the namespace
/// it was made in) and ends with it.
async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let made = tokio::task::spawn_blocking(move || {
        std::thread::spawn(move || -> std::io::Result<std::net::TcpStream> {
            if let Some(ns) = netns {
                let f = std::fs::File::open(&ns)?;
                nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
            }
            let timeout = Duration::from_secs(10);
            let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            std::net::TcpStream::connect_timeout(&v4, timeout).or_else(|e4| {
                let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
                std::net::TcpStream::connect_timeout(&v6, timeout).map_err(|_| e4)
            })
        })
        .join()
        .map_err(|_| std::io::Error::other("the connecting thread panicked"))?
    })
    .await
    .map_err(std::io::Error::other)??;
    made.set_nonblocking(true)?;
    made.set_nodelay(true)?;
    TcpStream::from_std(made)
}
