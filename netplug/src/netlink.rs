//! A thin layer over rtnetlink for the daemon's side of the network (node and VXLAN
//! device): one method per thing podbay does to links, addresses, routes and neighbours,
//! each naming what failed, and "already gone" treated as done where a delete asks for it.
//! (The pod's side, inside a fresh namespace, uses the blocking socket in `netns.rs`.)

use std::net::{IpAddr, Ipv4Addr};

use futures_util::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::{Handle, RouteMessageBuilder};

/// A netlink request failed; `what` says which.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {source}")]
pub struct Error {
    pub what: String,
    pub source: rtnetlink::Error,
}

impl Error {
    /// The kernel's errno, if the kernel answered with one.
    pub fn errno(&self) -> Option<Errno> {
        errno(&self.source)
    }
}

fn fail(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> Error {
    let what = what.into();
    move |source| Error { what, source }
}

/// errno of a netlink error, if it is one.
fn errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| Errno::from_raw(-c.get())),
        _ => None,
    }
}

/// Errors that mean "already gone" for a delete.
fn gone(e: &rtnetlink::Error) -> bool {
    matches!(errno(e), Some(Errno::ENOENT | Errno::ESRCH | Errno::ENODEV))
}

/// An rtnetlink connection in the daemon's (the node's) network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a connection; its driver runs on the current tokio runtime.
    pub fn connect() -> std::io::Result<Netlink> {
        let (conn, handle, _) = rtnetlink::new_connection()?;
        tokio::spawn(conn);
        Ok(Netlink { handle })
    }

    /// The link called `name`, if there is one.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkMessage>, Error> {
        let mut request = self.handle.link().get().match_name(name.to_owned()).execute();
        match request.try_next().await {
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
            other => other.map_err(fail(format!("look up {name}"))),
        }
    }

    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkMessage>, Error> {
        let mut request = self.handle.link().get().match_index(index).execute();
        match request.try_next().await {
            Err(e) if errno(&e) == Some(Errno::ENODEV) => Ok(None),
            other => other.map_err(fail(format!("look up link {index}"))),
        }
    }

    pub async fn links(&self) -> Result<Vec<LinkMessage>, Error> {
        self.handle.link().get().execute().try_collect().await.map_err(fail("list links"))
    }

    /// Creates a link; one that exists already is `Ok(false)`.
    pub async fn create_link(&self, link: LinkMessage, what: &str) -> Result<bool, Error> {
        match self.handle.link().add(link).execute().await {
            Err(e) if errno(&e) == Some(Errno::EEXIST) => Ok(false),
            other => other.map(|()| true).map_err(fail(format!("create {what}"))),
        }
    }

    /// Changes a link (up, MTU, master) as `link` says.
    pub async fn set_link(&self, link: LinkMessage, what: &str) -> Result<(), Error> {
        self.handle.link().set(link).execute().await.map_err(fail(what.to_owned()))
    }

    /// Changes a bridge port's settings (hairpin).
    pub async fn set_port(&self, port: LinkMessage, what: &str) -> Result<(), Error> {
        self.handle.link().set_port(port).execute().await.map_err(fail(what.to_owned()))
    }

    /// Deletes a link; one already gone counts as deleted.
    pub async fn delete_link(&self, index: u32) -> Result<(), Error> {
        match self.handle.link().del(index).execute().await {
            Err(e) if gone(&e) => Ok(()),
            other => other.map_err(fail(format!("delete link {index}"))),
        }
    }

    /// The IPv4 addresses of a link, with their messages (to delete them).
    pub async fn ipv4_addresses(
        &self,
        index: u32,
    ) -> Result<Vec<(Ipv4Addr, u8, AddressMessage)>, Error> {
        let request = self.handle.address().get().set_link_index_filter(index).execute();
        let addrs: Vec<AddressMessage> =
            request.try_collect().await.map_err(fail("list addresses"))?;
        Ok(addrs
            .into_iter()
            .filter(|a| a.header.index == index)
            .filter_map(|a| {
                let ip = a.attributes.iter().find_map(|attr| match attr {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })?;
                Some((ip, a.header.prefix_len, a))
            })
            .collect())
    }

    pub async fn add_address(&self, index: u32, ip: Ipv4Addr, len: u8) -> Result<(), Error> {
        let request = self.handle.address().add(index, IpAddr::V4(ip), len).execute();
        request.await.map_err(fail(format!("add address {ip}/{len} to link {index}")))
    }

    pub async fn delete_address(&self, address: AddressMessage) -> Result<(), Error> {
        self.handle.address().del(address).execute().await.map_err(fail("delete address"))
    }

    /// Every IPv4 route.
    pub async fn ipv4_routes(&self) -> Result<Vec<RouteMessage>, Error> {
        let request = self.handle.route().get(RouteMessageBuilder::<Ipv4Addr>::new().build());
        request.execute().try_collect().await.map_err(fail("list routes"))
    }

    /// The interface of the IPv4 default route in the main table, if there is one.
    pub async fn default_route_link(&self) -> Result<Option<LinkMessage>, Error> {
        let routes = self.ipv4_routes().await?;
        let oif = routes
            .iter()
            .filter(|r| {
                r.header.destination_prefix_length == 0
                    && r.header.table == RouteHeader::RT_TABLE_MAIN
            })
            .find_map(|r| {
                r.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                })
            });
        match oif {
            Some(oif) => self.link_by_index(oif).await,
            None => Ok(None),
        }
    }

    /// Adds a route, replacing one to the same destination.
    pub async fn replace_route(&self, route: RouteMessage, what: &str) -> Result<(), Error> {
        let request = self.handle.route().add(route).replace().execute();
        request.await.map_err(fail(what.to_owned()))
    }

    /// Deletes a route; one already gone counts as deleted.
    pub async fn delete_route(&self, route: RouteMessage, what: &str) -> Result<(), Error> {
        match self.handle.route().del(route).execute().await {
            Err(e) if !gone(&e) => Err(fail(what.to_owned())(e)),
            _ => Ok(()),
        }
    }

    /// A permanent ARP entry `ip → mac` on a link, replacing one for the same IP.
    pub async fn replace_arp(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: &[u8; 6],
        what: &str,
    ) -> Result<(), Error> {
        let request = self
            .handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        request.await.map_err(fail(what.to_owned()))
    }

    /// A permanent FDB entry `mac → remote` on a VXLAN link, replacing one for the MAC.
    pub async fn replace_fdb(
        &self,
        index: u32,
        mac: &[u8; 6],
        remote: Ipv4Addr,
        what: &str,
    ) -> Result<(), Error> {
        let request = self
            .handle
            .neighbours()
            .add_bridge(index, mac)
            .destination(IpAddr::V4(remote))
            .flags(NeighbourFlags::Own)
            .state(NeighbourState::Permanent)
            .replace()
            .execute();
        request.await.map_err(fail(what.to_owned()))
    }

    /// Deletes an ARP entry; one already gone counts as deleted.
    pub async fn delete_arp(&self, index: u32, ip: Ipv4Addr, mac: &[u8; 6]) -> Result<(), Error> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.ifindex = index;
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        self.delete_neighbour(m, format!("delete ARP entry {ip}")).await
    }

    /// Deletes an FDB entry; one already gone counts as deleted.
    pub async fn delete_fdb(
        &self,
        index: u32,
        mac: &[u8; 6],
        remote: Ipv4Addr,
    ) -> Result<(), Error> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = index;
        m.header.flags = NeighbourFlags::Own;
        m.attributes.push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        m.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(remote)));
        self.delete_neighbour(m, format!("delete FDB entry {}", crate::pod::format_mac(mac))).await
    }

    async fn delete_neighbour(&self, m: NeighbourMessage, what: String) -> Result<(), Error> {
        match self.handle.neighbours().del(m).execute().await {
            Err(e) if !gone(&e) => Err(fail(what)(e)),
            _ => Ok(()),
        }
    }

    /// The neighbour entries of one family (ARP: `Inet`, FDB: `Bridge`).
    pub async fn neighbours(&self, family: AddressFamily) -> Result<Vec<NeighbourMessage>, Error> {
        let request = self.handle.neighbours().get().set_address_family(family).execute();
        request.try_collect().await.map_err(fail("list neighbours"))
    }
}

pub fn link_name(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

pub fn link_mtu(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Mtu(m) => Some(*m),
        _ => None,
    })
}

/// The link's kind (`bridge`, `veth`, `vxlan`…), if it says.
pub fn link_kind(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
            LinkInfo::Kind(k) => Some(k.to_string()),
            _ => None,
        }),
        _ => None,
    })
}

pub fn link_mac(l: &LinkMessage) -> Option<[u8; 6]> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
        _ => None,
    })
}

/// The bridge (master) a link is enslaved to.
pub fn link_controller(l: &LinkMessage) -> Option<u32> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Controller(i) => Some(*i),
        _ => None,
    })
}

/// Link deletions in the daemon's network namespace, as the kernel announces them
/// (rtnetlink's link multicast group): subscribed on creation, so nothing deleted after
/// that is missed.
pub struct LinkWatch {
    events: futures_util::stream::BoxStream<
        'static,
        (
            rtnetlink::packet_core::NetlinkMessage<rtnetlink::packet_route::RouteNetlinkMessage>,
            rtnetlink::sys::SocketAddr,
        ),
    >,
}

/// RTMGRP_LINK: the multicast group of link changes.
const RTMGRP_LINK: u32 = 1;

impl LinkWatch {
    pub fn subscribe() -> std::io::Result<LinkWatch> {
        use rtnetlink::proto::sys::AsyncSocket;
        let (mut conn, _handle, events) = rtnetlink::new_connection()?;
        conn.socket_mut().socket_mut().bind(&rtnetlink::sys::SocketAddr::new(0, RTMGRP_LINK))?;
        tokio::spawn(conn);
        Ok(LinkWatch { events: Box::pin(events) })
    }

    /// Resolves when the link with this index is deleted (true), or when the subscription
    /// ends without that (false: e.g. the kernel dropped events for an overflowing socket).
    pub async fn deleted(mut self, index: u32) -> bool {
        use futures_util::StreamExt;
        use rtnetlink::packet_core::NetlinkPayload;
        use rtnetlink::packet_route::RouteNetlinkMessage;
        while let Some((message, _)) = self.events.next().await {
            if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) =
                message.payload
                && link.header.index == index
            {
                return true;
            }
        }
        false
    }
}
