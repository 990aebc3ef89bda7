//! The VXLAN device (`flannel.1`) and what it holds for each peer node, as flannel's vxlan
//! backend programs it: a permanent ARP entry (the peer subnet's network address → the
//! peer's VTEP MAC), a permanent FDB entry (that MAC → the peer's public IP) and a route
//! (`<peer subnet> via <peer network address> dev flannel.1 onlink`). Learning is off: the
//! kernel never guesses, so what is on the device is exactly what the leases say.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;

use ipnet::Ipv4Net;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute};
use rtnetlink::packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol,
};
use rtnetlink::{LinkUnspec, LinkVxlan, RouteMessageBuilder};

use crate::lease::Lease;
use crate::netlink::{self, Netlink, link_mac};
use crate::pod::format_mac;

/// VXLAN over IPv4 adds 50 bytes (outer IP 20, UDP 8, VXLAN 8, inner Ethernet 14).
pub const OVERHEAD: u32 = 50;
pub const DEFAULT_DEVICE: &str = "flannel.1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Netlink(#[from] netlink::Error),
    #[error("set tx checksum offload on {device}: {source}")]
    Checksum { device: String, source: nix::Error },
    #[error("lease of {subnet}: VtepMAC {mac:?} is not a MAC address")]
    BadMac { subnet: Ipv4Net, mac: String },
}

/// The device as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSpec {
    pub name: String,
    pub vni: u32,
    pub port: u16,
    pub local: Ipv4Addr,
    pub underlay_index: u32,
    pub mtu: u32,
    pub mac: [u8; 6],
    /// Leave tx checksum offload on (resolved from the config: see [`set_tx_checksum`]).
    pub tx_checksum_offload: bool,
}

/// A peer node as the kernel needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub subnet: Ipv4Net,
    pub public_ip: Ipv4Addr,
    pub mac: [u8; 6],
}

impl Peer {
    pub fn from_lease(lease: &Lease) -> Result<Peer, Error> {
        let mac = parse_mac(&lease.attrs.backend_data.vtep_mac).ok_or_else(|| Error::BadMac {
            subnet: lease.subnet,
            mac: lease.attrs.backend_data.vtep_mac.clone(),
        })?;
        Ok(Peer { subnet: lease.subnet, public_ip: lease.attrs.public_ip, mac })
    }

    /// The peer subnet's network address: the far end of the route, held by the peer's
    /// VXLAN device.
    pub fn vtep_ip(&self) -> Ipv4Addr {
        self.subnet.network()
    }
}

pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// A random, locally administered unicast MAC.
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    getrandom::fill(&mut mac).expect("the kernel's random source");
    mac[0] = (mac[0] & 0xfe) | 0x02;
    mac
}

/// What is on the device now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Programmed {
    /// (subnet, gateway) of each route through the device.
    pub routes: BTreeSet<(Ipv4Net, Ipv4Addr)>,
    /// (IP, MAC) of each ARP entry.
    pub arp: BTreeSet<(Ipv4Addr, [u8; 6])>,
    /// (MAC, remote IP) of each FDB entry.
    pub fdb: BTreeSet<([u8; 6], Ipv4Addr)>,
}

impl Programmed {
    pub fn has_route(&self, p: &Peer) -> bool {
        self.routes.contains(&(p.subnet, p.vtep_ip()))
    }
    pub fn has_arp(&self, p: &Peer) -> bool {
        self.arp.contains(&(p.vtep_ip(), p.mac))
    }
    pub fn has_fdb(&self, p: &Peer) -> bool {
        self.fdb.contains(&(p.mac, p.public_ip))
    }
}

/// The VXLAN device of this node.
#[derive(Clone)]
pub struct Device {
    nl: Netlink,
    pub spec: DeviceSpec,
    pub index: u32,
}

impl Device {
    /// The MAC of an existing device called `name`, to keep it across restarts.
    pub async fn existing_mac(nl: &Netlink, name: &str) -> Result<Option<[u8; 6]>, Error> {
        Ok(nl.link_by_name(name).await?.as_ref().and_then(link_mac))
    }

    /// Gets or creates the device as `spec` says; an existing device with other VXLAN
    /// parameters is recreated (as flannel does), one that matches is kept.
    pub async fn ensure(nl: &Netlink, spec: &DeviceSpec) -> Result<Device, Error> {
        let name = &spec.name;
        let device = |index| Device { nl: nl.clone(), spec: spec.clone(), index };
        if let Some(existing) = nl.link_by_name(name).await? {
            if matches_spec(&existing, spec) {
                let set =
                    LinkUnspec::new_with_index(existing.header.index).mtu(spec.mtu).up().build();
                nl.set_link(set, &format!("set {name} up")).await?;
                set_tx_checksum(name, spec.tx_checksum_offload)?;
                return Ok(device(existing.header.index));
            }
            tracing::warn!(device = %name, "the VXLAN device has other parameters; recreating it");
            nl.delete_link(existing.header.index).await?;
        }
        let vxlan = LinkVxlan::new(name, spec.vni)
            .dev(spec.underlay_index)
            .local(spec.local)
            .port(spec.port)
            .learning(false)
            .mtu(spec.mtu)
            .address(spec.mac.to_vec())
            .build();
        nl.create_link(vxlan, name).await?;
        let index = nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| netlink::Error {
                what: format!("look up {name} after creating it"),
                source: rtnetlink::Error::RequestFailed,
            })?
            .header
            .index;
        set_tx_checksum(name, spec.tx_checksum_offload)?;
        let up = LinkUnspec::new_with_index(index).up().build();
        nl.set_link(up, &format!("set {name} up")).await?;
        Ok(device(index))
    }

    /// Puts `ip/32` on the device (the node subnet's network address) and removes any other
    /// IPv4 address (a subnet this node held before).
    pub async fn set_address(&self, ip: Ipv4Addr) -> Result<(), Error> {
        let mut present = false;
        for (v, len, msg) in self.nl.ipv4_addresses(self.index).await? {
            if v == ip && len == 32 {
                present = true;
            } else {
                tracing::info!(device = %self.spec.name, address = %v, "removing an old address");
                self.nl.delete_address(msg).await?;
            }
        }
        if !present {
            self.nl.add_address(self.index, ip, 32).await?;
        }
        Ok(())
    }

    /// Programs a peer: ARP, then FDB, then the route (replacing what was there).
    pub async fn add_peer(&self, p: &Peer) -> Result<(), Error> {
        let what = |w: &str| format!("{w} for peer {} ({})", p.subnet, p.public_ip);
        self.nl.replace_arp(self.index, p.vtep_ip(), &p.mac, &what("ARP entry")).await?;
        self.nl.replace_fdb(self.index, &p.mac, p.public_ip, &what("FDB entry")).await?;
        self.nl.replace_route(self.route(p.subnet, p.vtep_ip()), &what("route")).await?;
        Ok(())
    }

    /// Removes a peer's route, ARP and FDB entries; ones already gone count as removed.
    pub async fn remove_peer(&self, p: &Peer) -> Result<(), Error> {
        self.remove_entries(
            &[(p.subnet, p.vtep_ip())],
            &[(p.vtep_ip(), p.mac)],
            &[(p.mac, p.public_ip)],
        )
        .await
    }

    /// Removes routes, ARP and FDB entries; ones already gone count as removed.
    pub async fn remove_entries(
        &self,
        routes: &[(Ipv4Net, Ipv4Addr)],
        arp: &[(Ipv4Addr, [u8; 6])],
        fdb: &[([u8; 6], Ipv4Addr)],
    ) -> Result<(), Error> {
        for (subnet, gw) in routes {
            // Any protocol: a stale route someone added by hand is `proto boot`.
            let mut route = self.route(*subnet, *gw);
            route.header.protocol = RouteProtocol::Unspec;
            self.nl.delete_route(route, &format!("delete route {subnet}")).await?;
        }
        for (ip, mac) in arp {
            self.nl.delete_arp(self.index, *ip, mac).await?;
        }
        for (mac, dst) in fdb {
            self.nl.delete_fdb(self.index, mac, *dst).await?;
        }
        Ok(())
    }

    fn route(&self, subnet: Ipv4Net, gw: Ipv4Addr) -> RouteMessage {
        RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(subnet.network(), subnet.prefix_len())
            .gateway(gw)
            .output_interface(self.index)
            .onlink()
            .build()
    }

    /// What the device holds now: routes through it, its ARP and FDB entries.
    pub async fn programmed(&self) -> Result<Programmed, Error> {
        let mut out = Programmed::default();
        let routes = self.nl.ipv4_routes().await?;
        for r in routes.iter().filter(|r| r.header.table == RouteHeader::RT_TABLE_MAIN) {
            let attr = |f: fn(&RouteAttribute) -> Option<Ipv4Addr>| r.attributes.iter().find_map(f);
            let oif = r.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            let dst = attr(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            let gw = attr(|a| match a {
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            });
            if let (Some(self_index), Some(dst), Some(gw)) = (oif, dst, gw)
                && self_index == self.index
                && let Ok(net) = Ipv4Net::new(dst, r.header.destination_prefix_length)
            {
                out.routes.insert((net, gw));
            }
        }
        for family in [AddressFamily::Inet, AddressFamily::Bridge] {
            let neighbours = self.nl.neighbours(family).await?;
            for n in neighbours.iter().filter(|n| n.header.ifindex == self.index) {
                // An FDB entry's destination comes as raw bytes (its family is AF_BRIDGE).
                let ip = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => {
                        <[u8; 4]>::try_from(b.as_slice()).ok().map(Ipv4Addr::from)
                    }
                    _ => None,
                });
                let mac = n.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(m) => {
                        <[u8; 6]>::try_from(m.as_slice()).ok()
                    }
                    _ => None,
                });
                match (family, ip, mac) {
                    (AddressFamily::Inet, Some(ip), Some(mac)) => {
                        out.arp.insert((ip, mac));
                    }
                    (AddressFamily::Bridge, Some(ip), Some(mac)) => {
                        out.fdb.insert((mac, ip));
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Makes the device hold exactly `peers`: removes every route, ARP and FDB entry no
    /// peer explains (stale ones a previous run or someone else left), then programs every
    /// peer. Returns how many stale entries were removed.
    pub async fn sync(&self, peers: &[Peer]) -> Result<usize, Error> {
        let now = self.programmed().await?;
        let want_routes: BTreeSet<_> = peers.iter().map(|p| (p.subnet, p.vtep_ip())).collect();
        let want_arp: BTreeSet<_> = peers.iter().map(|p| (p.vtep_ip(), p.mac)).collect();
        let want_fdb: BTreeSet<_> = peers.iter().map(|p| (p.mac, p.public_ip)).collect();
        let routes: Vec<_> = now.routes.difference(&want_routes).copied().collect();
        let arp: Vec<_> = now.arp.difference(&want_arp).copied().collect();
        let fdb: Vec<_> = now.fdb.difference(&want_fdb).copied().collect();
        let stale = routes.len() + arp.len() + fdb.len();
        if stale > 0 {
            tracing::warn!(
                device = %self.spec.name,
                routes = ?routes,
                arp = ?arp.iter().map(|(ip, mac)| format!("{ip} {}", format_mac(mac))).collect::<Vec<_>>(),
                fdb = ?fdb.iter().map(|(mac, ip)| format!("{} {ip}", format_mac(mac))).collect::<Vec<_>>(),
                "removing entries no live lease explains"
            );
            self.remove_entries(&routes, &arp, &fdb).await?;
        }
        for p in peers {
            self.add_peer(p).await?;
        }
        Ok(stale)
    }
}

fn matches_spec(l: &LinkMessage, spec: &DeviceSpec) -> bool {
    let Some(info) = l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Data(InfoData::Vxlan(v)) => Some(v.clone()),
            _ => None,
        }),
        _ => None,
    }) else {
        return false;
    };
    let has = |want: InfoVxlan| info.contains(&want);
    has(InfoVxlan::Id(spec.vni))
        && has(InfoVxlan::Port(spec.port))
        && has(InfoVxlan::Local(spec.local))
        && has(InfoVxlan::Link(spec.underlay_index))
        && has(InfoVxlan::Learning(false))
        && link_mac(l) == Some(spec.mac)
}

/// `ethtool -K <dev> tx off|on`: the legacy ETHTOOL_STXCSUM request sets every tx checksum
/// feature, `tx-checksum-ip-generic` included. Off before Linux 5.7 by default
/// (`config::TxChecksum::Auto`), as flannel's users had to: with it on, the kernel's NAT
/// rewrote VXLAN's outer UDP checksum wrongly (fixed in 5.7 by commit ea64d8d6c675), and
/// the receiver drops the packets. Off also turns off TSO on the device, which costs
/// throughput.
fn set_tx_checksum(device: &str, on: bool) -> Result<(), Error> {
    use nix::sys::socket::{AddressFamily as Af, SockFlag, SockType, socket};
    const SIOCETHTOOL: u64 = 0x8946;
    const ETHTOOL_STXCSUM: u32 = 0x17;
    #[repr(C)]
    struct EthtoolValue {
        cmd: u32,
        data: u32,
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut EthtoolValue,
        _pad: [u8; 16],
    }
    let fail = |source| Error::Checksum { device: device.to_owned(), source };
    let sock = socket(Af::Inet, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None).map_err(fail)?;
    let mut value = EthtoolValue { cmd: ETHTOOL_STXCSUM, data: u32::from(on) };
    let mut req = IfReq { name: [0; 16], data: &mut value, _pad: [0; 16] };
    req.name[..device.len().min(15)].copy_from_slice(&device.as_bytes()[..device.len().min(15)]);
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points to, both alive
    // for the call.
    let rc = unsafe { nix::libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    if rc < 0 {
        return Err(fail(nix::errno::Errno::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(parse_mac("0e:00:0a:ff:10:01"), Some([0x0e, 0, 0x0a, 0xff, 0x10, 1]));
        for bad in
            ["0e:00:0a:ff:10", "0e:00:0a:ff:10:01:02", "0e:0:0a:ff:10:01", "zz:00:00:00:00:00"]
        {
            assert_eq!(parse_mac(bad), None, "{bad}");
        }
        let m = random_mac();
        assert_eq!(m[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(parse_mac(&format_mac(&m)), Some(m));
    }
}
