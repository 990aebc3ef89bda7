//! Subnet leases in etcd, in flannel's layout (see [`crate::lease`]).
//!
//! A lease record is attached to an etcd lease with a TTL; etcd deletes the record when
//! the TTL runs out, which every watching node sees as the peer going away. Allocation
//! never hands one subnet to two nodes: a free subnet is taken with a transaction that
//! only succeeds while the key does not exist, and a node's existing record is rewritten
//! only if nobody changed it since it was read.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use ipnet::Ipv4Net;

use crate::lease::{
    self, Error, Event, Lease, LeaseAttrs, Network, NetworkDoc, SubnetStore, parse_subnet_key,
};

/// flannel's default prefix.
pub const DEFAULT_PREFIX: &str = "/coreos.com/network";
/// flannel's lease TTL.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// How many times a lost allocation race is retried.
const ATTEMPTS: u32 = 20;

/// How to reach etcd (config.toml's `[network.etcd]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    pub endpoints: Vec<String>,
    pub prefix: String,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub lease_ttl: Duration,
}

impl EtcdConfig {
    pub fn endpoints_text(&self) -> String {
        self.endpoints.join(",")
    }
}

/// A lease store in etcd.
pub struct EtcdStore {
    client: Client,
    cfg: EtcdConfig,
    network: Network,
    doc: NetworkDoc,
    /// The etcd lease our record is attached to.
    lease_id: Mutex<Option<i64>>,
}

/// A raw record: the parsed lease and the revision it was last changed at.
struct Record {
    lease: Lease,
    key: String,
    mod_revision: i64,
    etcd_lease: i64,
}

impl EtcdStore {
    /// Whether etcd answers (for `podbay doctor`): connects and asks one endpoint for its
    /// status, writing nothing; returns the server's version.
    pub async fn probe(cfg: &EtcdConfig) -> Result<String, Error> {
        let unreachable =
            |reason: String| Error::Unreachable { endpoints: cfg.endpoints_text(), reason };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(3));
        if let Some(tls) = tls_options(cfg)? {
            options = options.with_tls(tls);
        }
        let mut client = Client::connect(&cfg.endpoints, Some(options))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let status = client.status().await.map_err(|e| unreachable(e.to_string()))?;
        Ok(status.version().to_owned())
    }

    /// Connects and makes sure `<prefix>/config` describes this network (written if absent,
    /// checked if present).
    pub async fn connect(cfg: &EtcdConfig, network: &Network) -> Result<EtcdStore, Error> {
        let unreachable =
            |reason: String| Error::Unreachable { endpoints: cfg.endpoints_text(), reason };
        let mut options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(10))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        if let Some(tls) = tls_options(cfg)? {
            options = options.with_tls(tls);
        }
        let client = Client::connect(&cfg.endpoints, Some(options))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut store = EtcdStore {
            client,
            cfg: cfg.clone(),
            network: network.clone(),
            doc: network.doc(),
            lease_id: Mutex::new(None),
        };
        store.doc = store.ensure_config().await?;
        Ok(store)
    }

    fn config_key(&self) -> String {
        format!("{}/config", self.cfg.prefix)
    }

    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.cfg.prefix)
    }

    fn subnet_key(&self, subnet: Ipv4Net) -> String {
        format!("{}{}", self.subnets_prefix(), lease::subnet_key(subnet))
    }

    fn unreachable(&self, e: etcd_client::Error) -> Error {
        Error::Unreachable { endpoints: self.cfg.endpoints_text(), reason: e.to_string() }
    }

    async fn ensure_config(&self) -> Result<NetworkDoc, Error> {
        let key = self.config_key();
        let mut kv = self.client.kv_client();
        let ours = serde_json::to_string(&self.network.doc()).expect("config serializes");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), ours, None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let resp = kv.txn(txn).await.map_err(|e| self.unreachable(e))?;
        if resp.succeeded() {
            tracing::info!(%key, "wrote the network config");
            return Ok(self.network.doc());
        }
        let stored = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                _ => None,
            })
            .unwrap_or_default();
        let doc: NetworkDoc = serde_json::from_slice(&stored)
            .map_err(|e| Error::BadRecord { key: key.clone(), reason: e.to_string() })?;
        self.network.check(&key, &doc)?;
        Ok(doc)
    }

    async fn records(&self) -> Result<(Vec<Record>, i64), Error> {
        let prefix = self.subnets_prefix();
        let resp = self
            .client
            .kv_client()
            .get(prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(|e| self.unreachable(e))?;
        let revision = resp.header().map(|h| h.revision()).unwrap_or(0);
        let mut out = Vec::new();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(subnet) = key.strip_prefix(&prefix).and_then(parse_subnet_key) else {
                tracing::warn!(%key, "ignoring a key that is not a subnet lease");
                continue;
            };
            match lease::parse_attrs(&key, kv.value()) {
                Ok(attrs) => out.push(Record {
                    lease: Lease { subnet, attrs },
                    key,
                    mod_revision: kv.mod_revision(),
                    etcd_lease: kv.lease(),
                }),
                Err(e) => tracing::warn!(error = %e, "ignoring a lease record"),
            }
        }
        Ok((out, revision))
    }

    async fn grant(&self) -> Result<i64, Error> {
        let ttl = self.cfg.lease_ttl.as_secs().max(1) as i64;
        let resp =
            self.client.lease_client().grant(ttl, None).await.map_err(|e| self.unreachable(e))?;
        Ok(resp.id())
    }

    async fn revoke(&self, id: i64) {
        if id != 0
            && let Err(e) = self.client.lease_client().revoke(id).await
        {
            tracing::debug!(lease = id, error = %e, "revoke an etcd lease");
        }
    }

    /// Writes `attrs` under `key` attached to a new etcd lease if `guard` holds.
    async fn put_if(&self, key: &str, attrs: &LeaseAttrs, guard: Compare) -> Result<bool, Error> {
        let id = self.grant().await?;
        let value = serde_json::to_string(attrs).expect("lease serializes");
        let txn = Txn::new().when([guard]).and_then([TxnOp::put(
            key,
            value,
            Some(PutOptions::new().with_lease(id)),
        )]);
        let resp = self.client.kv_client().txn(txn).await.map_err(|e| self.unreachable(e))?;
        if resp.succeeded() {
            let old = self.lease_id.lock().expect("lease id lock").replace(id);
            if let Some(old) = old.filter(|old| *old != id) {
                self.revoke(old).await;
            }
        } else {
            self.revoke(id).await;
        }
        Ok(resp.succeeded())
    }
}

fn tls_options(cfg: &EtcdConfig) -> Result<Option<etcd_client::TlsOptions>, Error> {
    let read = |path: &PathBuf, what: &str| {
        std::fs::read(path).map_err(|e| Error::BadRecord {
            key: format!("network.etcd.{what}"),
            reason: format!("read {}: {e}", path.display()),
        })
    };
    if cfg.ca_file.is_none() && cfg.cert_file.is_none() {
        return Ok(None);
    }
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &cfg.ca_file {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca, "ca_file")?));
    }
    if let (Some(cert), Some(key)) = (&cfg.cert_file, &cfg.key_file) {
        tls = tls.identity(etcd_client::Identity::from_pem(
            read(cert, "cert_file")?,
            read(key, "key_file")?,
        ));
    }
    Ok(Some(tls))
}

impl SubnetStore for EtcdStore {
    async fn acquire(&self, attrs: &LeaseAttrs, prefer: Option<Ipv4Net>) -> Result<Lease, Error> {
        for _ in 0..ATTEMPTS {
            let (records, _) = self.records().await?;
            if let Some(mine) = records.iter().find(|r| r.lease.attrs.public_ip == attrs.public_ip)
            {
                let guard =
                    Compare::mod_revision(mine.key.clone(), CompareOp::Equal, mine.mod_revision);
                if self.put_if(&mine.key, attrs, guard).await? {
                    if mine.etcd_lease != 0 {
                        self.revoke_unless_ours(mine.etcd_lease).await;
                    }
                    return Ok(Lease { subnet: mine.lease.subnet, attrs: attrs.clone() });
                }
                continue;
            }
            let taken: BTreeSet<Ipv4Net> = records.iter().map(|r| r.lease.subnet).collect();
            let subnet = match prefer.filter(|p| !taken.contains(p)) {
                Some(p) => p,
                None => lease::first_free(&self.doc, self.network.subnet_len, &taken)?,
            };
            let key = self.subnet_key(subnet);
            let guard = Compare::create_revision(key.clone(), CompareOp::Equal, 0);
            if self.put_if(&key, attrs, guard).await? {
                return Ok(Lease { subnet, attrs: attrs.clone() });
            }
            tracing::debug!(%subnet, "lost the race for a subnet; trying the next one");
        }
        Err(Error::Contended(ATTEMPTS))
    }

    async fn find(&self, public_ip: Ipv4Addr) -> Result<Option<Lease>, Error> {
        let (records, _) = self.records().await?;
        Ok(records.into_iter().find(|r| r.lease.attrs.public_ip == public_ip).map(|r| r.lease))
    }

    async fn renew(&self, lease: &Lease) -> Result<bool, Error> {
        let Some(id) = *self.lease_id.lock().expect("lease id lock") else {
            return Ok(false);
        };
        let (mut keeper, mut stream) =
            self.client.lease_client().keep_alive(id).await.map_err(|e| self.unreachable(e))?;
        keeper.keep_alive().await.map_err(|e| self.unreachable(e))?;
        let alive = match stream.message().await.map_err(|e| self.unreachable(e))? {
            Some(resp) => resp.ttl() > 0,
            None => false,
        };
        if !alive {
            return Ok(false);
        }
        // The record itself may have been deleted (by hand) while the etcd lease lives on.
        let key = self.subnet_key(lease.subnet);
        let resp = self.client.kv_client().get(key, None).await.map_err(|e| self.unreachable(e))?;
        Ok(resp.kvs().first().is_some_and(|kv| kv.lease() == id))
    }

    async fn list(&self) -> Result<(Vec<Lease>, i64), Error> {
        let (records, revision) = self.records().await?;
        Ok((records.into_iter().map(|r| r.lease).collect(), revision))
    }

    async fn watch(&self, revision: i64, events: tokio::sync::mpsc::Sender<Event>) -> Error {
        let prefix = self.subnets_prefix();
        let options = WatchOptions::new().with_prefix().with_start_revision(revision + 1);
        let mut stream = match self.client.watch_client().watch(prefix.clone(), Some(options)).await
        {
            Ok(s) => s,
            Err(e) => return self.unreachable(e),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(resp)) => resp,
                Ok(None) => {
                    return self.unreachable(etcd_client::Error::WatchError("watch ended".into()));
                }
                Err(e) => return self.unreachable(e),
            };
            if resp.canceled() || resp.compact_revision() != 0 {
                let why = format!(
                    "watch canceled ({}; compacted at revision {})",
                    resp.cancel_reason(),
                    resp.compact_revision()
                );
                return self.unreachable(etcd_client::Error::WatchError(why));
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                let Some(subnet) = key.strip_prefix(&prefix).and_then(parse_subnet_key) else {
                    continue;
                };
                let event = match ev.event_type() {
                    EventType::Delete => Event::Removed(subnet),
                    EventType::Put => match lease::parse_attrs(&key, kv.value()) {
                        Ok(attrs) => Event::Put(Lease { subnet, attrs }),
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring a lease record");
                            continue;
                        }
                    },
                };
                if events.send(event).await.is_err() {
                    return Error::Unreachable {
                        endpoints: self.cfg.endpoints_text(),
                        reason: "stopped".into(),
                    };
                }
            }
        }
    }

    fn describe(&self) -> String {
        format!("etcd {}", self.cfg.endpoints_text())
    }
}

impl EtcdStore {
    async fn revoke_unless_ours(&self, id: i64) {
        if *self.lease_id.lock().expect("lease id lock") != Some(id) {
            self.revoke(id).await;
        }
    }
}
