//! Blocking netlink inside the caller's own network namespace.
//!
//! A netlink socket is bound to the network namespace of the thread that creates it. The
//! pod supervisor creates the pod's namespace and then configures it from inside with
//! blocking requests on one socket; the daemon never enters a pod namespace on a tokio
//! thread.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkFlags, LinkMessage};

use crate::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("open a netlink socket in the current network namespace: {0}")]
    Socket(io::Error),
    #[error("{what}: {source}")]
    Request { what: &'static str, source: io::Error },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// Index of `lo`: the loopback device is the first device of every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// A blocking rtnetlink socket in the calling thread's network namespace.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    pub fn open() -> Result<Self, Error> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(Error::Socket)?;
        socket.bind_auto().map_err(Error::Socket)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(Error::Socket)?;
        Ok(Self { socket, seq: 0, buf: Vec::with_capacity(8192) })
    }

    /// Sends one request with `flags` (plus REQUEST and ACK) and waits for its ack.
    /// Returns the data messages the kernel answered with before the ack (for GET).
    pub fn request(
        &mut self,
        what: &'static str,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, Error> {
        let fail = |source| Error::Request { what, source };
        self.seq += 1;
        let mut msg = NetlinkMessage::from(msg);
        msg.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        msg.header.sequence_number = self.seq;
        msg.finalize();
        let mut out = vec![0u8; msg.buffer_len()];
        msg.serialize(&mut out);
        self.socket.send(&out, 0).map_err(fail)?;
        let mut answers = Vec::new();
        loop {
            self.buf.clear();
            self.socket.recv(&mut self.buf, 0).map_err(fail)?;
            let mut offset = 0;
            while offset < self.buf.len() {
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..])
                    .map_err(|e| fail(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
                let len = reply.header.length as usize;
                offset += len.max(1).next_multiple_of(4);
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            Some(_) => Err(fail(e.to_io())),
                            None => Ok(answers),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::InnerMessage(m) => answers.push(m),
                    _ => {}
                }
            }
        }
    }
}

/// Sets `lo` up in the calling thread's network namespace with one blocking netlink
/// request. For a process that just created its namespace (the pod supervisor), this costs
/// microseconds, where opening a namespace from outside costs a thread and a connection.
pub fn set_lo_up_here() -> Result<(), Error> {
    let mut rtnl = Rtnl::open()?;
    set_lo_up(&mut rtnl)
}

pub(crate) fn set_lo_up(rtnl: &mut Rtnl) -> Result<(), Error> {
    let mut link = LinkMessage::default();
    link.header.index = LOOPBACK_IFINDEX;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    rtnl.request("set lo up", RouteNetlinkMessage::SetLink(link), 0).map(drop)
}
