//! Node and pod networking for podbay.
//!
//! This crate knows nothing of CRI or of sandboxes: it programs the kernel through netlink.
//! For now it holds loopback set-up for a new pod namespace; the bridge, veth, IPAM, VXLAN
//! and firewall modules arrive with the network issues.

pub mod netns;

/// What kind of failure an error is, so the CRI edge can pick a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    Unavailable,
    Internal,
}
