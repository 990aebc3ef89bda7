//! Node and pod networking for podbay.
//!
//! This crate knows nothing of CRI or of sandboxes: it programs the kernel through netlink
//! and decides which pod address is free. For now it holds loopback set-up for a new pod
//! namespace and the IPAM allocator; the bridge, veth, VXLAN and firewall modules arrive
//! with the network issues.

pub mod ipam;
pub mod netns;

/// What kind of failure an error is, so the CRI edge can pick a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    Internal,
}
