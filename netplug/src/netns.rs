//! Network namespace set-up.
//!
//! A netlink socket is bound to the network namespace of the thread that creates it. The
//! pod supervisor creates the pod's namespace and then configures it from inside with
//! blocking netlink requests; the daemon never enters a pod namespace on a tokio thread.

use std::io;

use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use rtnetlink::packet_core::{NLM_F_ACK, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{LinkFlags, LinkMessage};

use crate::ErrorKind;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("set loopback up in the current network namespace: {0}")]
    Loopback(io::Error),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// Index of `lo`: the loopback device is the first device of every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Sets `lo` up in the calling thread's network namespace with one blocking netlink
/// request. For a process that just created its namespace (the pod supervisor), this costs
/// microseconds, where opening a namespace from outside costs a thread and a connection.
pub fn set_lo_up_here() -> Result<(), Error> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(Error::Loopback)?;
    socket.bind_auto().map_err(Error::Loopback)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(Error::Loopback)?;
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
