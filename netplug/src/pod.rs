//! A pod's side of the network, set up from inside the pod's new network namespace by the
//! pod supervisor (single-threaded, blocking netlink, no thread ever changes namespace).
//!
//! One request creates the veth pair: `eth0` here (up), and its peer `veth<hash>` directly
//! in the node's namespace (given as an fd), both with the MTU. Nothing is ever moved
//! between namespaces (a move costs 15–55 ms). Then the address and the default route via
//! the bridge's gateway. The daemon attaches the peer to the bridge. Neither end sends
//! IPv6: eth0 gets no link-local address (`no_link_local`), the peer has IPv6 turned off
//! (`Node::attach`); the pod's `lo` keeps `::1`.
//!
//! Teardown is the kernel's: when the namespace's last reference goes (the supervisor
//! exits and the pin is unmounted), the pair is destroyed in the background.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
};
use rtnetlink::{
    AddressMessageBuilder, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::netns::{self, Rtnl};

/// The pod's interface name, as Kubernetes users expect it.
pub const POD_IFNAME: &str = "eth0";

/// What the supervisor needs to wire a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodInterface {
    /// The node-side end: `veth` + 8 hex digits of the sandbox id.
    pub host_veth: String,
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
}

/// The node-side veth name of a sandbox: fits IFNAMSIZ, stable for the sandbox's life,
/// unique with high probability (the id is random).
pub fn host_veth_name(sandbox_id: &str) -> String {
    let hash: String = sandbox_id.chars().filter(char::is_ascii_hexdigit).take(8).collect();
    format!("veth{hash}")
}

/// The pod's MAC: 0a:58 followed by its IPv4 address (the CNI bridge plugin's scheme), so
/// a MAC on the wire tells which pod it is.
pub fn pod_mac(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x0a, 0x58, o[0], o[1], o[2], o[3]]
}

pub fn format_mac(mac: &[u8]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// Brings `lo` up and, with `iface`, wires the pod: the calling process must be alone in
/// its fresh network namespace; `node_netns` is an fd of the node's namespace.
pub fn setup_here(
    iface: Option<&PodInterface>,
    node_netns: BorrowedFd<'_>,
) -> Result<(), netns::Error> {
    let mut rtnl = Rtnl::open()?;
    netns::set_lo_up(&mut rtnl)?;
    let Some(iface) = iface else {
        return Ok(());
    };
    // The peer is not set up here: a veth end cannot open before the pair is linked
    // (ENOTCONN); the daemon sets it up as it attaches it to the bridge.
    let peer = LinkUnspec::new_with_name(&iface.host_veth)
        .mtu(iface.mtu)
        .setns_by_fd(node_netns.as_raw_fd())
        .build();
    let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(POD_IFNAME.to_owned())
        .mtu(iface.mtu)
        .address(pod_mac(iface.address).to_vec())
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    let create = NLM_F_CREATE | NLM_F_EXCL;
    rtnl.request("create veth pair", RouteNetlinkMessage::NewLink(veth), create)?;
    let query = LinkUnspec::new_with_name(POD_IFNAME).build();
    let index = rtnl
        .request("look up eth0", RouteNetlinkMessage::GetLink(query), 0)?
        .into_iter()
        .find_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
            _ => None,
        })
        .ok_or(netns::Error::Request {
            what: "look up eth0",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        })?;
    // No carrier until the daemon sets the peer up, so IPv6 has sent nothing yet.
    no_link_local(&mut rtnl, index)?;
    let addr = AddressMessageBuilder::<Ipv4Addr>::new()
        .index(index)
        .address(iface.address, iface.prefix_len)
        .build();
    rtnl.request("add pod address", RouteNetlinkMessage::NewAddress(addr), create)?;
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(iface.gateway)
        .output_interface(index)
        .build();
    rtnl.request("add default route", RouteNetlinkMessage::NewRoute(route), create)?;
    Ok(())
}

/// Gives eth0 no IPv6 link-local address. podbay's pod network is IPv4: the address
/// would only send multicast (DAD, MLD reports, router solicitations for as long as the
/// pod lives) that the bridge floods to every other pod of the node. Without an address
/// eth0 sends no IPv6 at all; the pod's `lo` keeps `::1`, and a pod that wants IPv6 on
/// eth0 may still add an address. A kernel without IPv6 has nothing to turn off.
fn no_link_local(rtnl: &mut Rtnl, index: u32) -> Result<(), netns::Error> {
    let spec = AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]);
    let link = LinkUnspec::new_with_index(index)
        .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![spec]))
        .build();
    match rtnl.request("turn off eth0's IPv6 link-local", RouteNetlinkMessage::SetLink(link), 0) {
        Err(netns::Error::Request { source, .. })
            if source.raw_os_error() == Some(nix::libc::EAFNOSUPPORT) =>
        {
            Ok(())
        }
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_macs() {
        let id = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(host_veth_name(id), "veth01234567");
        assert!(host_veth_name(id).len() <= 15);
        let mac = pod_mac("10.244.0.5".parse().unwrap());
        assert_eq!(format_mac(&mac), "0a:58:0a:f4:00:05");
    }
}
