//! `podbay doctor`'s network checks: whether this kernel can make what the pod network is
//! made of (a bridge, veth pairs, a VXLAN device, an nftables table). Each is tried for real
//! in a network namespace of its own, made on a throwaway thread and gone when it ends, so
//! the node's network is never touched.

use nix::sched::CloneFlags;
use rtnetlink::packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::{LinkBridge, LinkVeth, LinkVxlan};

use crate::netns::Rtnl;
use crate::nft::{Attr, Batch, Msg, NFTA_TABLE_NAME};

/// One feature tried: `Err` says what the kernel answered.
pub struct Probe {
    pub feature: &'static str,
    pub result: Result<(), String>,
}

/// Tries each feature in a fresh network namespace.
pub fn network_features() -> Vec<Probe> {
    let tried = std::thread::spawn(|| -> Result<Vec<Probe>, String> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("create a network namespace: {e}"))?;
        let mut rtnl = Rtnl::open().map_err(|e| e.to_string())?;
        let mut link = |what: &'static str, msg| {
            rtnl.request(what, RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
                .map(drop)
                .map_err(|e| e.to_string())
        };
        let mut probes = vec![
            Probe { feature: "bridge", result: link("bridge", LinkBridge::new("pb0").build()) },
            Probe { feature: "veth", result: link("veth", LinkVeth::new("pb1", "pb2").build()) },
            Probe {
                feature: "vxlan",
                result: link("vxlan", LinkVxlan::new("pb3", 1).port(8472).build()),
            },
        ];
        let mut batch = Batch::new();
        let table = [Attr::str(NFTA_TABLE_NAME, "podbay_probe")];
        batch.create(Msg::NewTable, &table, "add table ip podbay_probe".into());
        probes.push(Probe { feature: "nftables", result: batch.send().map_err(|e| e.to_string()) });
        Ok(probes)
    })
    .join();
    match tried {
        Ok(Ok(probes)) => probes,
        Ok(Err(reason)) => ["bridge", "veth", "vxlan", "nftables"]
            .into_iter()
            .map(|feature| Probe { feature, result: Err(reason.clone()) })
            .collect(),
        Err(_) => panic!("network probe thread panicked"),
    }
}

/// The kind (`bridge`, `vxlan`, …) of the link called `name` in the calling thread's
/// network namespace, if there is one; `Some("")` for a link of no particular kind.
pub fn link_kind(name: &str) -> Result<Option<String>, String> {
    use rtnetlink::LinkUnspec;
    use rtnetlink::packet_route::link::{LinkAttribute, LinkInfo};
    let mut rtnl = Rtnl::open().map_err(|e| e.to_string())?;
    let query = LinkUnspec::new_with_name(name).build();
    let answers = match rtnl.request("look up a link", RouteNetlinkMessage::GetLink(query), 0) {
        Ok(a) => a,
        Err(crate::netns::Error::Request { source, .. })
            if source.raw_os_error() == Some(nix::errno::Errno::ENODEV as i32) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    let kind = answers.into_iter().find_map(|m| match m {
        RouteNetlinkMessage::NewLink(l) => Some(
            l.attributes
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::LinkInfo(infos) => infos.iter().find_map(|i| match i {
                        LinkInfo::Kind(k) => Some(k.to_string()),
                        _ => None,
                    }),
                    _ => None,
                })
                .unwrap_or_default(),
        ),
        _ => None,
    });
    Ok(kind)
}
