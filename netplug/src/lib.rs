//! Node and pod networking for podbay.
//!
//! This crate knows nothing of CRI or of sandboxes: it programs the kernel through netlink
//! and decides which pod address is free.
//!
//! - [`config`]: the node network's settings, validated.
//! - [`node`]: the bridge, sysctls and attaching pod veths (daemon side, async rtnetlink).
//! - [`pod`]: a pod's eth0, address and route, set up from inside the pod's namespace.
//! - [`firewall`] over [`nft`]: masquerade, hostPort DNAT maps, forward accept.
//! - [`ipam`]: which address a new pod gets.

pub mod config;
pub mod firewall;
pub mod ipam;
pub mod netns;
mod nft;
pub mod node;
pub mod pod;

pub use config::NetworkConfig;
pub use firewall::{PortMap, Protocol};
pub use node::Node;

/// What kind of failure an error is, so the CRI edge can pick a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    Internal,
}
