//! Node and pod networking for podbay.
//!
//! This crate knows nothing of CRI or of sandboxes: it gets network namespace paths and
//! addresses and programs the kernel through netlink. For now it holds the netns handle
//! (a netlink connection opened inside a pod's network namespace) and loopback set-up;
//! the bridge, IPAM, VXLAN and firewall modules arrive with the network issues.

pub mod netns;

/// What kind of failure an error is, so the CRI edge can pick a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    Unavailable,
    Internal,
}
