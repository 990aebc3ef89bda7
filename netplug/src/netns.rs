//! Network namespace handles.
//!
//! A netlink socket is bound to the network namespace of the thread that creates it. We
//! open it on a throwaway `std::thread` that enters the target namespace, hand the socket
//! back, and let the thread end: no tokio worker ever changes namespace, and no thread is
//! left in a foreign namespace on an error path.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use netlink_sys::{AsyncSocket, Socket, SocketAddr, TokioSocket, protocols::NETLINK_ROUTE};
use nix::sched::{CloneFlags, setns};
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkFlags, LinkMessage};
use rtnetlink::{Handle, LinkUnspec};

use crate::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open network namespace {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("enter network namespace {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("open netlink socket in {path}: {source}")]
    Socket { path: PathBuf, source: io::Error },
    #[error("set loopback up in the current network namespace: {0}")]
    Loopback(io::Error),
    #[error("netlink request `{what}` in {path}: {source}")]
    Netlink {
        what: &'static str,
        path: PathBuf,
        source: rtnetlink::Error,
    },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Open { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ErrorKind::NotFound
            }
            _ => ErrorKind::Internal,
        }
    }
}

/// A netlink connection that lives in one network namespace.
pub struct NetnsHandle {
    path: PathBuf,
    handle: Handle,
    conn: tokio::task::JoinHandle<()>,
}

impl NetnsHandle {
    /// Opens a route netlink connection inside the namespace pinned at `path`.
    pub async fn open_in(path: &Path) -> Result<Self, Error> {
        // A plain thread, not the blocking pool: pool threads are reused and must never
        // carry a foreign namespace.
        let owned = path.to_path_buf();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send(socket_in(&owned));
        });
        let fd = rx
            .await
            .expect("netns socket thread ended without an answer")?;
        // SAFETY: `fd` is a netlink socket we just created and own; nothing else holds it.
        let mut socket = unsafe { TokioSocket::from_raw_fd(fd) };
        socket
            .socket_mut()
            .set_non_blocking(true)
            .map_err(|source| Error::Socket {
                path: path.to_path_buf(),
                source,
            })?;
        let (conn, handle, _) = rtnetlink::from_socket(socket);
        let conn = tokio::spawn(conn);
        Ok(Self {
            path: path.to_path_buf(),
            handle,
            conn,
        })
    }

    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the loopback device up (a new namespace starts with `lo` down).
    pub async fn set_lo_up(&self) -> Result<(), Error> {
        let lo = self
            .handle
            .link()
            .get()
            .match_name(String::from("lo"))
            .execute()
            .try_next()
            .await
            .map_err(|source| self.netlink("get lo", source))?;
        let Some(lo) = lo else { return Ok(()) };
        if lo.header.flags.contains(LinkFlags::Up) {
            return Ok(());
        }
        self.handle
            .link()
            .set(LinkUnspec::new_with_index(lo.header.index).up().build())
            .execute()
            .await
            .map_err(|source| self.netlink("set lo up", source))
    }

    fn netlink(&self, what: &'static str, source: rtnetlink::Error) -> Error {
        Error::Netlink {
            what,
            path: self.path.clone(),
            source,
        }
    }
}

impl Drop for NetnsHandle {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

/// Runs on a throwaway thread: enter the namespace, create and bind the socket, return it.
/// The thread ends right after, so its changed namespace dies with it.
fn socket_in(path: &Path) -> Result<i32, Error> {
    let ns = File::open(path).map_err(|source| Error::Open {
        path: path.into(),
        source,
    })?;
    setns(&ns, CloneFlags::CLONE_NEWNET).map_err(|source| Error::Enter {
        path: path.into(),
        source,
    })?;
    let sock_err = |source| Error::Socket {
        path: path.into(),
        source,
    };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(sock_err)?;
    socket.bind_auto().map_err(sock_err)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(sock_err)?;
    Ok(socket.into_raw_fd())
}

/// Sets `lo` up inside the namespace pinned at `path`.
pub async fn set_lo_up_in(path: &Path) -> Result<(), Error> {
    NetnsHandle::open_in(path).await?.set_lo_up().await
}

/// Index of `lo`: the loopback device is the first device of every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Sets `lo` up in the calling thread's network namespace with one blocking netlink
/// request. For a process that just created its namespace (the pod supervisor), this costs
/// microseconds, where opening a namespace from outside costs a thread and a connection.
pub fn set_lo_up_here() -> Result<(), Error> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(Error::Loopback)?;
    socket.bind_auto().map_err(Error::Loopback)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(Error::Loopback)?;
    let mut link = LinkMessage::default();
    link.header.index = LOOPBACK_IFINDEX;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    let mut msg = NetlinkMessage::from(RouteNetlinkMessage::SetLink(link));
    msg.header.flags = NLM_F_REQUEST | NLM_F_ACK;
    msg.header.sequence_number = 1;
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    socket.send(&buf, 0).map_err(Error::Loopback)?;
    let mut reply = Vec::with_capacity(4096);
    socket.recv(&mut reply, 0).map_err(Error::Loopback)?;
    let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply)
        .map_err(|e| Error::Loopback(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
    match reply.payload {
        NetlinkPayload::Error(e) if e.code.is_some() => Err(Error::Loopback(e.to_io())),
        _ => Ok(()),
    }
}
