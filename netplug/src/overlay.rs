//! The overlay: this node's lease kept alive, and every other node's lease mirrored onto
//! the VXLAN device as it comes, changes and goes.
//!
//! One task per node runs [`Overlay::run`]: list every lease, make the device hold exactly
//! those peers (removing stale entries), then follow the watch from the list's revision.
//! When the watch breaks (etcd restarted, history compacted, connection lost), it lists
//! again and carries on from there: a fresh list is the truth, so nothing is missed or
//! programmed twice. Meanwhile the kernel keeps what it has: pods keep talking while etcd
//! is away.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use ipnet::Ipv4Net;

use crate::lease::{self, Event, Lease, SubnetStore};
use crate::pod::format_mac;
use crate::vxlan::{self, Device, Peer};

const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] lease::Error),
    #[error(transparent)]
    Device(#[from] vxlan::Error),
}

pub struct Overlay<S> {
    store: S,
    device: Device,
    own: Mutex<Lease>,
    peers: Mutex<BTreeMap<Ipv4Net, Peer>>,
    /// Why the store cannot be followed right now.
    store_error: Mutex<Option<String>>,
    /// When the device last matched the leases: a full list, or a change applied.
    synced: Mutex<Option<SystemTime>>,
    renew_every: Duration,
}

/// The overlay as `podbay net show` prints it.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OverlayReport {
    pub device: String,
    pub vni: u32,
    pub port: u16,
    pub local_vtep: Ipv4Addr,
    pub vtep_mac: String,
    pub mtu: u32,
    /// Tx checksum offload (and TSO) in effect on the device.
    pub tx_checksum_offload: bool,
    pub subnet: String,
    pub store: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    pub peers: Vec<PeerReport>,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PeerReport {
    pub node_ip: Ipv4Addr,
    pub subnet: String,
    pub vtep_mac: String,
    pub route: bool,
    pub arp: bool,
    pub fdb: bool,
}

impl<S: SubnetStore> Overlay<S> {
    pub fn new(store: S, device: Device, own: Lease, renew_every: Duration) -> Self {
        Self {
            store,
            device,
            own: Mutex::new(own),
            peers: Mutex::new(BTreeMap::new()),
            store_error: Mutex::new(None),
            synced: Mutex::new(None),
            renew_every,
        }
    }

    pub fn subnet(&self) -> Ipv4Net {
        self.own.lock().expect("own lease lock").subnet
    }

    /// How many peers the device holds, and when it last matched the leases.
    pub fn sync_state(&self) -> (usize, Option<SystemTime>) {
        let peers = self.peers.lock().expect("peers lock").len();
        (peers, *self.synced.lock().expect("synced lock"))
    }

    fn set_synced(&self) {
        *self.synced.lock().expect("synced lock") = Some(SystemTime::now());
    }

    fn set_error(&self, e: Option<String>) {
        *self.store_error.lock().expect("store error lock") = e;
    }

    /// Follows the leases for as long as the daemon runs, from `revision`: the one the
    /// first [`Overlay::resync`] returned.
    pub async fn run(self: Arc<Self>, revision: i64) {
        let mut from = Some(revision);
        let mut backoff = Duration::from_millis(500);
        loop {
            let round = async {
                let revision = match from.take() {
                    Some(revision) => revision,
                    None => self.resync().await.map_err(|e| e.to_string())?,
                };
                self.follow(revision).await
            };
            match round.await {
                Ok(()) => backoff = Duration::from_millis(500),
                Err(reason) => {
                    tracing::warn!(store = %self.store.describe(), error = %reason, retry_in = ?backoff, "subnet leases: not following; retrying");
                    self.set_error(Some(reason));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Lists every lease and makes the device hold exactly those peers (removing what no
    /// lease explains); takes this node's lease back if it is gone. Returns the revision
    /// the list was read at, to watch from.
    pub async fn resync(&self) -> Result<i64, Error> {
        let (leases, revision) = self.store.list().await?;
        let own = self.own.lock().expect("own lease lock").clone();
        if !leases.contains(&own) {
            self.reclaim().await?;
        }
        let mut peers = BTreeMap::new();
        for lease in leases.iter().filter(|l| l.subnet != own.subnet) {
            match Peer::from_lease(lease) {
                Ok(p) => {
                    peers.insert(p.subnet, p);
                }
                Err(e) => tracing::warn!(error = %e, "ignoring a peer"),
            }
        }
        let list: Vec<Peer> = peers.values().copied().collect();
        let stale = self.device.sync(&list).await?;
        tracing::info!(peers = list.len(), stale, revision, "overlay in sync with the leases");
        *self.peers.lock().expect("peers lock") = peers;
        self.set_error(None);
        self.set_synced();
        Ok(revision)
    }

    /// Watches from `revision` until the watch breaks (then `Ok`, to list again right away)
    /// or something fails (`Err`, to back off).
    async fn follow(&self, revision: i64) -> Result<(), String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(256);
        let watch = self.store.watch(revision, tx);
        tokio::pin!(watch);
        let mut renew = tokio::time::interval_at(
            tokio::time::Instant::now() + self.renew_every,
            self.renew_every,
        );
        loop {
            tokio::select! {
                err = &mut watch => {
                    tracing::info!(error = %err, "lease watch ended; listing again");
                    return Ok(());
                }
                Some(event) = rx.recv() => self.apply(event).await,
                _ = renew.tick() => {
                    let own = self.own.lock().expect("own lease lock").clone();
                    match self.store.renew(&own).await {
                        Ok(true) => tracing::debug!(subnet = %own.subnet, "lease renewed"),
                        Ok(false) => self.reclaim().await.map_err(|e| e.to_string())?,
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
        }
    }

    /// Our lease is gone (expired while etcd was away, or deleted by hand): take the same
    /// subnet back.
    async fn reclaim(&self) -> Result<(), lease::Error> {
        let own = self.own.lock().expect("own lease lock").clone();
        tracing::warn!(subnet = %own.subnet, "this node's lease is gone; taking it back");
        let got = self.store.acquire(&own.attrs, Some(own.subnet)).await?;
        if got.subnet != own.subnet {
            tracing::error!(
                held = %own.subnet, leased = %got.subnet,
                "this node's subnet was taken by another node meanwhile; pods here keep {} until the daemon restarts",
                own.subnet
            );
        }
        Ok(())
    }

    async fn apply(&self, event: Event) {
        let own = self.subnet();
        let result = match event {
            Event::Put(lease) if lease.subnet == own => {
                let mine = self.own.lock().expect("own lease lock").attrs.clone();
                if lease.attrs != mine {
                    tracing::error!(subnet = %own, found = ?lease.attrs, "another writer changed this node's lease");
                }
                Ok(())
            }
            Event::Removed(subnet) if subnet == own => {
                self.reclaim().await.map_err(|e| e.to_string())
            }
            Event::Put(lease) => match Peer::from_lease(&lease) {
                Ok(peer) => self.put_peer(peer).await,
                Err(e) => Err(e.to_string()),
            },
            Event::Removed(subnet) => self.remove_peer(subnet).await,
        };
        match result {
            Ok(()) => self.set_synced(),
            Err(e) => tracing::warn!(error = %e, "overlay: applying a lease change failed"),
        }
    }

    async fn put_peer(&self, peer: Peer) -> Result<(), String> {
        let old = self.peers.lock().expect("peers lock").get(&peer.subnet).copied();
        if old == Some(peer) {
            return Ok(());
        }
        self.device.add_peer(&peer).await.map_err(|e| e.to_string())?;
        if let Some(old) = old {
            // The route was replaced; ARP and FDB entries of the old address or MAC go.
            let arp: Vec<_> =
                (old.mac != peer.mac).then_some((old.vtep_ip(), old.mac)).into_iter().collect();
            let fdb: Vec<_> = (old.mac != peer.mac || old.public_ip != peer.public_ip)
                .then_some((old.mac, old.public_ip))
                .into_iter()
                .collect();
            self.device.remove_entries(&[], &arp, &fdb).await.map_err(|e| e.to_string())?;
        }
        tracing::info!(subnet = %peer.subnet, node = %peer.public_ip, vtep_mac = %format_mac(&peer.mac), "peer programmed");
        self.peers.lock().expect("peers lock").insert(peer.subnet, peer);
        Ok(())
    }

    async fn remove_peer(&self, subnet: Ipv4Net) -> Result<(), String> {
        let Some(old) = self.peers.lock().expect("peers lock").remove(&subnet) else {
            return Ok(());
        };
        self.device.remove_peer(&old).await.map_err(|e| e.to_string())?;
        tracing::info!(subnet = %subnet, node = %old.public_ip, "peer removed");
        Ok(())
    }

    pub async fn report(&self) -> OverlayReport {
        let programmed = self.device.programmed().await.unwrap_or_default();
        let spec = &self.device.spec;
        let peers = self
            .peers
            .lock()
            .expect("peers lock")
            .values()
            .map(|p| PeerReport {
                node_ip: p.public_ip,
                subnet: p.subnet.to_string(),
                vtep_mac: format_mac(&p.mac),
                route: programmed.has_route(p),
                arp: programmed.has_arp(p),
                fdb: programmed.has_fdb(p),
            })
            .collect();
        OverlayReport {
            device: spec.name.clone(),
            vni: spec.vni,
            port: spec.port,
            local_vtep: spec.local,
            vtep_mac: format_mac(&spec.mac),
            mtu: spec.mtu,
            tx_checksum_offload: spec.tx_checksum_offload,
            subnet: self.subnet().to_string(),
            store: self.store.describe(),
            store_error: self.store_error.lock().expect("store error lock").clone(),
            peers,
        }
    }
}
