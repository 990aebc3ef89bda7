//! Node and pod networking for podbay.
//!
//! This crate knows nothing of CRI or of sandboxes: it programs the kernel through netlink
//! and decides which pod address is free.
//!
//! - [`config`]: the node network's settings, validated.
//! - [`netlink`]: the daemon's rtnetlink requests, one method per change.
//! - [`node`]: the bridge, sysctls and attaching pod veths (daemon side).
//! - [`pod`]: a pod's eth0, address and route, set up from inside the pod's namespace.
//! - [`firewall`] over [`nft`]: masquerade, hostPort DNAT maps, forward accept.
//! - [`ipam`]: which address a new pod gets.
//! - [`lease`]: node subnet leases in flannel's records, behind one store trait, kept
//!   [`lease::LocalStore`] (one node) or in [`etcd`] (many nodes).
//! - [`vxlan`]: the `flannel.1` device and its per-peer route, ARP and FDB entries.
//! - [`overlay`]: the watch loop that mirrors every peer's lease onto the device.

pub mod config;
pub mod etcd;
pub mod firewall;
pub mod ipam;
pub mod lease;
pub mod netlink;
pub mod netns;
mod nft;
pub mod node;
pub mod overlay;
pub mod pod;
pub mod probe;
pub mod vxlan;

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
