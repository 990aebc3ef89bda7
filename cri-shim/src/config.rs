//! Daemon configuration: `/etc/podbay/config.toml` (optional) over embedded defaults,
//! then command-line flags. Unknown keys and invalid values stop start-up with a message
//! naming the key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use podbay_runtime::image::registry::{Credentials, HostConfig, Mirror, RegistryConfig};
use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/podbay/config.toml";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Persistent state: the database, (later) images and container layers.
    pub root: PathBuf,
    /// Volatile state: pod dirs, pinned namespaces. Empty after a reboot.
    pub run_dir: PathBuf,
    /// The CRI socket kubelet and crictl connect to.
    pub socket: PathBuf,
    /// The pod supervisor executable; empty means `podbay-supervisor` beside `podbay`.
    pub supervisor_path: PathBuf,
    pub log: LogConfig,
    pub sandbox: SandboxConfig,
    pub container: ContainerSection,
    pub image: ImageSection,
    pub network: NetworkSection,
    pub stream: StreamSection,
    pub metrics: MetricsSection,
    /// Per registry host: `[registries."registry.k8s.io"]`.
    pub registries: BTreeMap<String, RegistrySection>,
}

/// `[registries."<host>"]`: how to reach one registry (the role of containerd's hosts.toml).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySection {
    /// Tried in order before the registry itself: `http://127.0.0.1:5000`,
    /// `https://mirror.example` (no scheme: https).
    pub mirrors: Vec<String>,
    /// Speak plain HTTP to this host.
    pub plain_http: bool,
    /// Accept any TLS certificate from this host.
    pub skip_verify: bool,
    /// Credentials used when a pull brings none.
    pub username: String,
    pub password: String,
}

impl Config {
    /// The registry settings in the runtime's terms; errors name the key.
    pub fn registry_config(&self) -> Result<RegistryConfig, Error> {
        let mut out = RegistryConfig::default();
        for (host, section) in &self.registries {
            let key = |field: &str| format!("registries.\"{host}\".{field}");
            if host.is_empty() || host.contains(['/', ' ']) {
                return Err(Error::InvalidKey {
                    key: format!("registries.\"{host}\""),
                    reason: "not a registry host (host[:port])".into(),
                });
            }
            let mut mirrors = Vec::new();
            for (i, m) in section.mirrors.iter().enumerate() {
                mirrors.push(Mirror::parse(m).map_err(|reason| Error::InvalidKey {
                    key: key(&format!("mirrors[{i}]")),
                    reason,
                })?);
            }
            let credentials = match (section.username.is_empty(), section.password.is_empty()) {
                (true, true) => None,
                (false, _) => Some(Credentials::Basic {
                    username: section.username.clone(),
                    password: section.password.clone(),
                }),
                (true, false) => {
                    return Err(Error::InvalidKey {
                        key: key("username"),
                        reason: "a password needs a username".into(),
                    });
                }
            };
            out.hosts.insert(
                host.clone(),
                HostConfig {
                    mirrors,
                    plain_http: section.plain_http,
                    skip_verify: section.skip_verify,
                    credentials,
                },
            );
        }
        Ok(out)
    }
}

/// `[network]`: the node's pod network (bridge, subnet, masquerade).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetworkSection {
    /// The cluster's pod CIDR (flannel's Network); pod-to-pod traffic inside it is never
    /// masqueraded.
    pub cluster_cidr: String,
    /// This node's pod subnet; empty: the cluster CIDR's first /24.
    pub node_subnet: String,
    /// The bridge pods are attached to; its address is the subnet's .1.
    pub bridge: String,
    /// MTU of the bridge and every pod's eth0; 0: the MTU of the default route's interface.
    pub mtu: u32,
    /// Masquerade pod traffic leaving the cluster CIDR.
    pub masquerade: bool,
    /// Hairpin mode on every pod's bridge port.
    pub hairpin: bool,
    /// Where the node subnet comes from: `local` (node_subnet, one node) or `etcd` (leased,
    /// with a VXLAN overlay to every other node).
    pub subnet_store: String,
    /// Size of each node's subnet with `etcd`; 0: 24.
    pub subnet_len: u8,
    /// The address other nodes send VXLAN to; empty: the underlay interface's first.
    pub public_ip: String,
    /// The underlay interface; empty: the one holding the default route.
    pub iface: String,
    pub etcd: EtcdSection,
    pub vxlan: VxlanSection,
}

/// `[network.etcd]`: where subnet leases are kept with `subnet_store = "etcd"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EtcdSection {
    pub endpoints: Vec<String>,
    /// flannel's key prefix: `<prefix>/config`, `<prefix>/subnets/…`.
    pub prefix: String,
    /// TLS: the CA that signed etcd's certificate, and a client certificate and key.
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// TTL of this node's lease; renewed every third of it.
    pub lease_ttl_seconds: u64,
}

impl Default for EtcdSection {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            prefix: podbay_netplug::etcd::DEFAULT_PREFIX.into(),
            ca_file: PathBuf::new(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            lease_ttl_seconds: podbay_netplug::etcd::DEFAULT_LEASE_TTL.as_secs(),
        }
    }
}

/// `[network.vxlan]`: the overlay device (flannel's defaults).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VxlanSection {
    pub device: String,
    pub vni: u32,
    pub port: u16,
    /// Tx checksum offload on flannel.1: `"auto"` (on for Linux ≥ 5.7), `true`, `false`.
    pub tx_checksum_offload: TxChecksumSetting,
}

/// `tx_checksum_offload` as written: a boolean, or `"auto"`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TxChecksumSetting {
    Fixed(bool),
    Word(AutoWord),
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AutoWord {
    Auto,
}

impl TxChecksumSetting {
    fn to_netplug(self) -> podbay_netplug::config::TxChecksum {
        use podbay_netplug::config::TxChecksum;
        match self {
            TxChecksumSetting::Fixed(true) => TxChecksum::On,
            TxChecksumSetting::Fixed(false) => TxChecksum::Off,
            TxChecksumSetting::Word(AutoWord::Auto) => TxChecksum::Auto,
        }
    }
}

impl Default for VxlanSection {
    fn default() -> Self {
        let d = podbay_netplug::config::VxlanConfig::default();
        Self {
            device: d.device,
            vni: d.vni,
            port: d.port,
            tx_checksum_offload: TxChecksumSetting::Word(AutoWord::Auto),
        }
    }
}

impl Default for NetworkSection {
    fn default() -> Self {
        Self {
            cluster_cidr: podbay_netplug::config::DEFAULT_CLUSTER_CIDR.into(),
            node_subnet: String::new(),
            bridge: podbay_netplug::config::DEFAULT_BRIDGE.into(),
            mtu: 0,
            masquerade: true,
            hairpin: true,
            subnet_store: "local".into(),
            subnet_len: 0,
            public_ip: String::new(),
            iface: String::new(),
            etcd: EtcdSection::default(),
            vxlan: VxlanSection::default(),
        }
    }
}

impl NetworkSection {
    pub fn to_config(&self) -> Result<podbay_netplug::NetworkConfig, Error> {
        podbay_netplug::NetworkConfig::from_settings(&podbay_netplug::config::NetworkSettings {
            cluster_cidr: &self.cluster_cidr,
            node_subnet: &self.node_subnet,
            bridge: &self.bridge,
            mtu: self.mtu,
            masquerade: self.masquerade,
            hairpin: self.hairpin,
            subnet_store: &self.subnet_store,
            subnet_len: self.subnet_len,
            etcd: Some(podbay_netplug::etcd::EtcdConfig {
                endpoints: self.etcd.endpoints.clone(),
                prefix: self.etcd.prefix.clone(),
                ca_file: non_empty(&self.etcd.ca_file),
                cert_file: non_empty(&self.etcd.cert_file),
                key_file: non_empty(&self.etcd.key_file),
                lease_ttl: std::time::Duration::from_secs(self.etcd.lease_ttl_seconds),
            }),
            vxlan: podbay_netplug::config::VxlanConfig {
                device: self.vxlan.device.clone(),
                vni: self.vxlan.vni,
                port: self.vxlan.port,
                tx_checksum_offload: self.vxlan.tx_checksum_offload.to_netplug(),
            },
            public_ip: &self.public_ip,
            iface: &self.iface,
        })
        .map_err(Error::Network)
    }
}

fn non_empty(p: &Path) -> Option<PathBuf> {
    (!p.as_os_str().is_empty()).then(|| p.to_path_buf())
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// error, warn, info, debug or trace (or a tracing filter such as `podbay=debug`).
    pub level: String,
    /// text or json.
    pub format: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxConfig {
    /// Seconds StopPodSandbox waits after SIGTERM before it sends SIGKILL.
    pub stop_grace_seconds: u64,
    /// Size of each pod's /dev/shm tmpfs in bytes (kubelet's default is 64 MiB).
    pub shm_size_bytes: u64,
}

/// `[container]`: defaults for what a CreateContainer request leaves unset.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContainerSection {
    /// The seccomp profile of a container whose request names none. The CRI says
    /// Unconfined (kubelet sends RuntimeDefault itself when the pod or the node's
    /// `seccompDefault` asks for it); `runtime-default` is the stricter choice, as
    /// containerd's `unset_seccomp_profile`.
    pub unset_seccomp_profile: UnsetSeccompProfile,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnsetSeccompProfile {
    #[default]
    Unconfined,
    RuntimeDefault,
}

impl UnsetSeccompProfile {
    pub fn profile(self) -> podbay_runtime::container::SeccompProfile {
        match self {
            Self::Unconfined => podbay_runtime::container::SeccompProfile::Unconfined,
            Self::RuntimeDefault => podbay_runtime::container::SeccompProfile::RuntimeDefault,
        }
    }
}

/// `[image]`: how large an image may make the image store. A pull that crosses one stops
/// with ResourceExhausted naming the image, the layer and the key, and keeps nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImageSection {
    /// Uncompressed bytes of one layer.
    pub max_layer_bytes: u64,
    /// Uncompressed bytes of all the layers a pull unpacks.
    pub max_image_bytes: u64,
    /// Entries (files, directories, links) in one layer.
    pub max_layer_entries: u64,
    /// Bytes the image store's file system keeps free; a pull stops below it.
    pub min_free_bytes: u64,
}

impl Default for ImageSection {
    fn default() -> Self {
        let l = podbay_runtime::image::Limits::default();
        Self {
            max_layer_bytes: l.max_layer_bytes,
            max_image_bytes: l.max_image_bytes,
            max_layer_entries: l.max_layer_entries,
            min_free_bytes: l.min_free_bytes,
        }
    }
}

impl ImageSection {
    pub fn limits(&self) -> podbay_runtime::image::Limits {
        podbay_runtime::image::Limits {
            max_layer_bytes: self.max_layer_bytes,
            max_image_bytes: self.max_image_bytes,
            max_layer_entries: self.max_layer_entries,
            min_free_bytes: self.min_free_bytes,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            root: "/var/lib/podbay".into(),
            run_dir: "/run/podbay".into(),
            socket: "/run/podbay/podbay.sock".into(),
            supervisor_path: PathBuf::new(),
            log: LogConfig::default(),
            sandbox: SandboxConfig::default(),
            container: ContainerSection::default(),
            image: ImageSection::default(),
            network: NetworkSection::default(),
            stream: StreamSection::default(),
            metrics: MetricsSection::default(),
            registries: BTreeMap::new(),
        }
    }
}

/// `[stream]`: the streaming server for Exec, Attach and PortForward (kubelet and crictl
/// connect to the URL those calls return).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSection {
    /// The address it listens on (containerd's default: loopback only).
    pub address: String,
    /// 0: a port the kernel picks.
    pub port: u16,
    /// A streaming connection that carries nothing this long is closed (containerd's
    /// default: 4 h).
    pub idle_timeout_seconds: u64,
    /// TLS for the streaming server (PEM files): both, or neither for plain HTTP.
    pub tls_cert_file: PathBuf,
    pub tls_key_file: PathBuf,
}

impl Default for StreamSection {
    fn default() -> Self {
        Self {
            address: "127.0.0.1".into(),
            port: 0,
            idle_timeout_seconds: 4 * 3600,
            tls_cert_file: PathBuf::new(),
            tls_key_file: PathBuf::new(),
        }
    }
}

/// `[metrics]`: Prometheus metrics over HTTP.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSection {
    /// `IP:PORT` to serve `/metrics` on (e.g. `127.0.0.1:9460`); empty: off.
    pub address: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: "text".into() }
    }
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self { stop_grace_seconds: 10, shm_size_bytes: 64 << 20 }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("read config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("config key `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
    #[error("config key `{key}`: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("config key `network.{}`: {}", .0.key, .0.reason)]
    Network(podbay_netplug::config::ConfigError),
}

impl Config {
    /// Loads `path`; a missing file is fine only when it is the default path.
    pub fn load(path: Option<&Path>) -> Result<Config, Error> {
        let (path, required) = match path {
            Some(p) => (p, true),
            None => (Path::new(DEFAULT_CONFIG_PATH), false),
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(Error::Read { path: path.into(), source });
            }
        };
        Self::parse(&text).map_err(|e| match e {
            Error::Parse { source, .. } => Error::Parse { path: path.into(), source },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Config, Error> {
        let cfg: Config = toml::from_str(text)
            .map_err(|source| Error::Parse { path: PathBuf::new(), source: Box::new(source) })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The full default configuration as TOML (`podbay config default`).
    pub fn default_toml() -> String {
        toml::to_string_pretty(&Config::default()).expect("the default config serialises")
    }

    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |key, reason: String| Err(Error::Invalid { key, reason });
        for (key, path) in
            [("root", &self.root), ("run_dir", &self.run_dir), ("socket", &self.socket)]
        {
            if !path.is_absolute() {
                return invalid(key, format!("{} is not an absolute path", path.display()));
            }
        }
        if !self.supervisor_path.as_os_str().is_empty() && !self.supervisor_path.is_absolute() {
            return invalid("supervisor_path", "must be an absolute path or empty".into());
        }
        if self.socket.as_os_str().len() >= 108 {
            return invalid(
                "socket",
                "path is longer than a unix socket allows (107 bytes)".into(),
            );
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return invalid(
                "log.level",
                format!("{:?} is not error, warn, info, debug, trace or a filter", self.log.level),
            );
        }
        let (cert, key) = (&self.stream.tls_cert_file, &self.stream.tls_key_file);
        if cert.as_os_str().is_empty() != key.as_os_str().is_empty() {
            return invalid(
                "stream.tls_cert_file",
                "needs stream.tls_key_file (both or neither)".into(),
            );
        }
        if self.stream.idle_timeout_seconds == 0 {
            return invalid("stream.idle_timeout_seconds", "must be at least 1".into());
        }
        if self.stream.address.parse::<std::net::IpAddr>().is_err() {
            return invalid(
                "stream.address",
                format!("{:?} is not an IP address", self.stream.address),
            );
        }
        if !self.metrics.address.is_empty()
            && self.metrics.address.parse::<std::net::SocketAddr>().is_err()
        {
            return invalid(
                "metrics.address",
                format!("{:?} is not IP:PORT (or empty for off)", self.metrics.address),
            );
        }
        if !matches!(self.log.format.as_str(), "text" | "json") {
            return invalid("log.format", format!("{:?} is not text or json", self.log.format));
        }
        if self.sandbox.stop_grace_seconds > 3600 {
            return invalid("sandbox.stop_grace_seconds", "must be at most 3600".into());
        }
        if self.sandbox.shm_size_bytes < 1 << 20 {
            return invalid("sandbox.shm_size_bytes", "must be at least 1048576 (1 MiB)".into());
        }
        for (key, value) in [
            ("image.max_layer_bytes", self.image.max_layer_bytes),
            ("image.max_image_bytes", self.image.max_image_bytes),
            ("image.max_layer_entries", self.image.max_layer_entries),
        ] {
            if value == 0 {
                return invalid(key, "must be more than 0".into());
            }
        }
        self.network.to_config()?;
        self.registry_config()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips() {
        let text = Config::default_toml();
        assert_eq!(Config::parse(&text).unwrap(), Config::default());
        assert!(text.contains("socket = \"/run/podbay/podbay.sock\""));
        assert!(text.contains("[sandbox]"));
        assert!(text.contains("cluster_cidr = \"10.244.0.0/16\""));
    }

    #[test]
    fn registries_are_read() {
        let cfg = Config::parse(
            "[registries.\"registry.k8s.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\n\
             [registries.\"my.reg:5000\"]\nskip_verify = true\nusername = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        let r = cfg.registry_config().unwrap();
        let eps = r.endpoints("registry.k8s.io");
        assert_eq!(eps[0].describe(), "http://127.0.0.1:5000 (mirror)");
        assert_eq!(eps[1].describe(), "registry.k8s.io");
        let own = &r.hosts["my.reg:5000"];
        assert!(own.skip_verify);
        assert!(own.credentials.is_some());
    }

    #[test]
    fn empty_file_is_the_default() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::parse("[log]\nlevl = \"info\"\n").unwrap_err().to_string();
        assert!(err.contains("levl"), "{err}");
        let err = Config::parse("bogus = 1\n").unwrap_err().to_string();
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn invalid_values_are_named() {
        let cases = [
            ("[log]\nformat = \"xml\"\n", "log.format"),
            ("[log]\nlevel = \"lo[ud\"\n", "log.level"),
            ("root = \"relative\"\n", "root"),
            ("[sandbox]\nshm_size_bytes = 10\n", "sandbox.shm_size_bytes"),
            ("[sandbox]\nstop_grace_seconds = 99999\n", "sandbox.stop_grace_seconds"),
            ("[network]\nnode_subnet = \"10.9.0.0/24\"\n", "network.node_subnet"),
            ("[network]\ncluster_cidr = \"10.244.0.0\"\n", "network.cluster_cidr"),
            ("[network]\nnode_subnet = \"10.244.3.0/31\"\n", "network.node_subnet"),
            ("[network]\nbridge = \"way-too-long-bridge\"\n", "network.bridge"),
            ("[registries.\"r.io\"]\nmirrors = [\"ftp://m\"]\n", "registries.\"r.io\".mirrors[0]"),
            ("[registries.\"r.io\"]\npassword = \"x\"\n", "registries.\"r.io\".username"),
        ];
        for (text, key) in cases {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = Config::parse("[sandbox]\nshm_size_bytes = \"big\"\n").unwrap_err().to_string();
        assert!(err.contains("shm_size_bytes"), "{err}");
    }

    #[test]
    fn tx_checksum_offload_is_auto_or_a_boolean() {
        use podbay_netplug::config::TxChecksum;
        let offload = |text: &str| {
            let cfg = Config::parse(&format!("[network.vxlan]\n{text}")).map_err(|e| e.to_string());
            cfg.map(|c| c.network.vxlan.tx_checksum_offload.to_netplug())
        };
        assert_eq!(offload("").unwrap(), TxChecksum::Auto);
        assert_eq!(offload("tx_checksum_offload = \"auto\"\n").unwrap(), TxChecksum::Auto);
        assert_eq!(offload("tx_checksum_offload = true\n").unwrap(), TxChecksum::On);
        assert_eq!(offload("tx_checksum_offload = false\n").unwrap(), TxChecksum::Off);
        let err = offload("tx_checksum_offload = \"yes\"\n").unwrap_err();
        assert!(err.contains("tx_checksum_offload"), "{err}");
    }
}
