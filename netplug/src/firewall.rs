//! podbay's one nftables table, `ip podbay`: masquerade, hostPort DNAT, forward accept.
//!
//! ```text
//! table ip podbay {
//!   map hostports    { type inet_proto . inet_service : ipv4_addr . inet_service }
//!   map hostports_ip { type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }
//!   chain prerouting  { type nat hook prerouting priority dstnat   (hostPort DNAT) }
//!   chain output      { type nat hook output priority dstnat       (the node's own connections) }
//!   chain postrouting { type nat hook postrouting priority srcnat  (hairpin, localhost, masquerade) }
//!   chain forward     { type filter hook forward priority filter   (accept the cluster CIDR) }
//! }
//! ```
//! `podbay net show` prints the rules in full. A hostPort is one map element, never a
//! chain or a rule per pod. At daemon start the table is rebuilt in one atomic batch with
//! exactly the elements the running pods explain, so nothing stale survives a crash.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ErrorKind;
use crate::config::NetworkConfig;
use crate::nft::{self, Attr, Batch, BatchError, Msg};

pub const TABLE: &str = "podbay";
const HOSTPORTS: &str = "hostports";
const HOSTPORTS_IP: &str = "hostports_ip";

/// kube-proxy marks packets it will masquerade itself with this bit (flannel honours it).
pub const KUBE_MASQ_MARK: u32 = 0x4000;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Batch(#[from] BatchError),
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        ErrorKind::Internal
    }
}

/// A transport protocol a hostPort can map.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// One hostPort: traffic to `host_ip:host_port` (any local address when None) goes to
/// `pod_ip:pod_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortMap {
    pub protocol: Protocol,
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub pod_ip: Ipv4Addr,
    pub pod_port: u16,
}

impl PortMap {
    fn map(&self) -> &'static str {
        if self.host_ip.is_some() { HOSTPORTS_IP } else { HOSTPORTS }
    }

    /// The element key: (host address .) protocol . port, each field in a 4-byte register.
    fn key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(12);
        if let Some(ip) = self.host_ip {
            k.extend(ip.octets());
        }
        k.extend([self.protocol.number(), 0, 0, 0]);
        k.extend(port_reg(self.host_port));
        k
    }

    /// The element data: pod address . pod port.
    fn data(&self) -> Vec<u8> {
        let mut d = self.pod_ip.octets().to_vec();
        d.extend(port_reg(self.pod_port));
        d
    }

    fn element(&self, with_data: bool) -> Attr {
        let mut attrs = vec![Attr::data(nft::NFTA_SET_ELEM_KEY, self.key())];
        if with_data {
            attrs.push(Attr::data(nft::NFTA_SET_ELEM_DATA, self.data()));
        }
        Attr::elem(attrs)
    }
}

impl std::fmt::Display for PortMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}/{} -> {}:{}",
            self.host_port,
            self.protocol.name(),
            self.pod_ip,
            self.pod_port
        )
    }
}

fn port_reg(port: u16) -> [u8; 4] {
    let p = port.to_be_bytes();
    [p[0], p[1], 0, 0]
}

/// A match of a rule.
#[derive(Debug, Clone, Copy)]
enum Match {
    Saddr(Ipv4Net),
    Daddr(Ipv4Net),
    NotDaddr(Ipv4Net),
    /// `meta mark & m == m`
    Mark(u32),
    /// `ct status dnat`: the connection was DNATed (a hostPort).
    CtDnat,
}

/// What a rule does.
#[derive(Debug, Clone, Copy)]
enum Action {
    Accept,
    Return,
    Masquerade {
        fully_random: bool,
    },
    /// `fib daddr type local dnat ip to meta l4proto . th dport map @hostports`
    DnatLocal,
    /// `dnat ip to ip daddr . meta l4proto . th dport map @hostports_ip`
    DnatAddr,
}

struct Rule {
    matches: Vec<Match>,
    action: Action,
    comment: &'static str,
}

struct Chain {
    name: &'static str,
    kind: &'static str,
    hook: u32,
    priority: i32,
    rules: Vec<Rule>,
}

// Netfilter IPv4 hooks.
const HOOK_PREROUTING: u32 = 0;
const HOOK_FORWARD: u32 = 2;
const HOOK_OUTPUT: u32 = 3;
const HOOK_POSTROUTING: u32 = 4;

fn chains(cfg: &NetworkConfig) -> Vec<Chain> {
    let subnet = cfg.node_subnet.net();
    let cluster = cfg.cluster_cidr;
    let dnat = || {
        vec![
            Rule {
                matches: vec![],
                action: Action::DnatLocal,
                comment: "hostPort on any node address",
            },
            Rule {
                matches: vec![],
                action: Action::DnatAddr,
                comment: "hostPort on one node address",
            },
        ]
    };
    let loopback: Ipv4Net = "127.0.0.0/8".parse().expect("valid CIDR");
    let multicast: Ipv4Net = "224.0.0.0/4".parse().expect("valid CIDR");
    let mut post = vec![
        Rule {
            matches: vec![Match::CtDnat, Match::Saddr(loopback)],
            action: Action::Masquerade { fully_random: false },
            comment: "hostPort reached via 127.0.0.1",
        },
        Rule {
            matches: vec![Match::CtDnat, Match::Saddr(subnet)],
            action: Action::Masquerade { fully_random: false },
            comment: "hostPort reached from a pod (hairpin)",
        },
    ];
    if cfg.masquerade {
        post.extend([
            Rule {
                matches: vec![Match::Mark(KUBE_MASQ_MARK)],
                action: Action::Return,
                comment: "kube-proxy masquerades these",
            },
            Rule {
                matches: vec![
                    Match::Saddr(subnet),
                    Match::NotDaddr(cluster),
                    Match::NotDaddr(multicast),
                ],
                action: Action::Masquerade { fully_random: true },
                comment: "pods to outside the cluster",
            },
        ]);
    }
    vec![
        Chain {
            name: "prerouting",
            kind: "nat",
            hook: HOOK_PREROUTING,
            priority: -100,
            rules: dnat(),
        },
        Chain { name: "output", kind: "nat", hook: HOOK_OUTPUT, priority: -100, rules: dnat() },
        Chain {
            name: "postrouting",
            kind: "nat",
            hook: HOOK_POSTROUTING,
            priority: 100,
            rules: post,
        },
        Chain {
            name: "forward",
            kind: "filter",
            hook: HOOK_FORWARD,
            priority: 0,
            rules: vec![
                Rule {
                    matches: vec![Match::Saddr(cluster)],
                    action: Action::Accept,
                    comment: "from pods",
                },
                Rule {
                    matches: vec![Match::Daddr(cluster)],
                    action: Action::Accept,
                    comment: "to pods",
                },
            ],
        },
    ]
}

// Expression attribute numbers (nf_tables.h), per expression.
mod ex {
    pub const PAYLOAD_DREG: u16 = 1;
    pub const PAYLOAD_BASE: u16 = 2;
    pub const PAYLOAD_OFFSET: u16 = 3;
    pub const PAYLOAD_LEN: u16 = 4;
    pub const BASE_NETWORK: u32 = 1;
    pub const BASE_TRANSPORT: u32 = 2;
    pub const CMP_SREG: u16 = 1;
    pub const CMP_OP: u16 = 2;
    pub const CMP_DATA: u16 = 3;
    pub const CMP_EQ: u32 = 0;
    pub const CMP_NEQ: u32 = 1;
    pub const BITWISE_SREG: u16 = 1;
    pub const BITWISE_DREG: u16 = 2;
    pub const BITWISE_LEN: u16 = 3;
    pub const BITWISE_MASK: u16 = 4;
    pub const BITWISE_XOR: u16 = 5;
    pub const META_DREG: u16 = 1;
    pub const META_KEY: u16 = 2;
    pub const META_MARK: u32 = 3;
    pub const META_L4PROTO: u32 = 16;
    pub const CT_DREG: u16 = 1;
    pub const CT_KEY: u16 = 2;
    pub const CT_STATUS: u32 = 2;
    pub const IPS_DST_NAT: u32 = 0x20;
    pub const FIB_DREG: u16 = 1;
    pub const FIB_RESULT: u16 = 2;
    pub const FIB_FLAGS: u16 = 3;
    pub const FIB_RESULT_ADDRTYPE: u32 = 3;
    pub const FIB_F_DADDR: u32 = 2;
    pub const RTN_LOCAL: u32 = 2;
    pub const LOOKUP_SET: u16 = 1;
    pub const LOOKUP_SREG: u16 = 2;
    pub const LOOKUP_DREG: u16 = 3;
    pub const NAT_TYPE: u16 = 1;
    pub const NAT_FAMILY: u16 = 2;
    pub const NAT_REG_ADDR_MIN: u16 = 3;
    pub const NAT_REG_PROTO_MIN: u16 = 5;
    pub const NAT_FLAGS: u16 = 7;
    pub const NAT_DNAT: u32 = 1;
    pub const NAT_MAP_IPS_PROTO: u32 = 0x1 | 0x2;
    pub const MASQ_FLAGS: u16 = 1;
    pub const NAT_RANDOM_FULLY: u32 = 0x10;
    pub const IMMEDIATE_DREG: u16 = 1;
    pub const IMMEDIATE_DATA: u16 = 2;
}

fn payload(base: u32, offset: u32, len: u32, reg: u32) -> Attr {
    Attr::expr(
        "payload",
        vec![
            Attr::u32(ex::PAYLOAD_DREG, reg),
            Attr::u32(ex::PAYLOAD_BASE, base),
            Attr::u32(ex::PAYLOAD_OFFSET, offset),
            Attr::u32(ex::PAYLOAD_LEN, len),
        ],
    )
}

fn cmp(op: u32, data: Vec<u8>) -> Attr {
    Attr::expr(
        "cmp",
        vec![
            Attr::u32(ex::CMP_SREG, nft::REG32_00),
            Attr::u32(ex::CMP_OP, op),
            Attr::data(ex::CMP_DATA, data),
        ],
    )
}

fn bitwise(mask: Vec<u8>) -> Attr {
    let len = mask.len() as u32;
    let xor = vec![0; mask.len()];
    Attr::expr(
        "bitwise",
        vec![
            Attr::u32(ex::BITWISE_SREG, nft::REG32_00),
            Attr::u32(ex::BITWISE_DREG, nft::REG32_00),
            Attr::u32(ex::BITWISE_LEN, len),
            Attr::data(ex::BITWISE_MASK, mask),
            Attr::data(ex::BITWISE_XOR, xor),
        ],
    )
}

fn meta(key: u32, reg: u32) -> Attr {
    Attr::expr("meta", vec![Attr::u32(ex::META_DREG, reg), Attr::u32(ex::META_KEY, key)])
}

fn immediate_verdict(code: i32) -> Attr {
    Attr::expr(
        "immediate",
        vec![
            Attr::u32(ex::IMMEDIATE_DREG, nft::REG_VERDICT),
            Attr::verdict(ex::IMMEDIATE_DATA, code),
        ],
    )
}

/// `ip saddr|daddr [!=] net` as payload, mask, compare.
fn addr_match(offset: u32, net: Ipv4Net, op: u32) -> Vec<Attr> {
    vec![
        payload(ex::BASE_NETWORK, offset, 4, nft::REG32_00),
        bitwise(net.netmask().octets().to_vec()),
        cmp(op, net.network().octets().to_vec()),
    ]
}

impl Match {
    fn exprs(self) -> Vec<Attr> {
        match self {
            Match::Saddr(net) => addr_match(12, net, ex::CMP_EQ),
            Match::Daddr(net) => addr_match(16, net, ex::CMP_EQ),
            Match::NotDaddr(net) => addr_match(16, net, ex::CMP_NEQ),
            // Registers hold mark and ct status in host byte order.
            Match::Mark(m) => vec![
                meta(ex::META_MARK, nft::REG32_00),
                bitwise(m.to_ne_bytes().to_vec()),
                cmp(ex::CMP_EQ, m.to_ne_bytes().to_vec()),
            ],
            Match::CtDnat => vec![
                Attr::expr(
                    "ct",
                    vec![
                        Attr::u32(ex::CT_DREG, nft::REG32_00),
                        Attr::u32(ex::CT_KEY, ex::CT_STATUS),
                    ],
                ),
                bitwise(ex::IPS_DST_NAT.to_ne_bytes().to_vec()),
                cmp(ex::CMP_NEQ, 0u32.to_ne_bytes().to_vec()),
            ],
        }
    }

    fn render(self) -> String {
        match self {
            Match::Saddr(net) => format!("ip saddr {}", cidr(net)),
            Match::Daddr(net) => format!("ip daddr {}", cidr(net)),
            Match::NotDaddr(net) => format!("ip daddr != {}", cidr(net)),
            Match::Mark(m) => format!("meta mark & {m:#010x} == {m:#010x}"),
            Match::CtDnat => "ct status dnat".into(),
        }
    }
}

fn cidr(net: Ipv4Net) -> String {
    if net.prefix_len() == 32 { net.addr().to_string() } else { net.to_string() }
}

/// The DNAT through a map: load the key fields into consecutive registers, look them up,
/// and translate to the address and port the map returns.
fn dnat_via(map: &str, with_daddr: bool) -> Vec<Attr> {
    let mut out = Vec::new();
    let mut reg = nft::REG32_00;
    if with_daddr {
        out.push(payload(ex::BASE_NETWORK, 16, 4, reg));
        reg += 1;
    } else {
        out.push(Attr::expr(
            "fib",
            vec![
                Attr::u32(ex::FIB_DREG, nft::REG32_00),
                Attr::u32(ex::FIB_RESULT, ex::FIB_RESULT_ADDRTYPE),
                Attr::u32(ex::FIB_FLAGS, ex::FIB_F_DADDR),
            ],
        ));
        out.push(cmp(ex::CMP_EQ, ex::RTN_LOCAL.to_ne_bytes().to_vec()));
    }
    out.push(meta(ex::META_L4PROTO, reg));
    out.push(payload(ex::BASE_TRANSPORT, 2, 2, reg + 1));
    out.push(Attr::expr(
        "lookup",
        vec![
            Attr::str(ex::LOOKUP_SET, map),
            Attr::u32(ex::LOOKUP_SREG, nft::REG32_00),
            Attr::u32(ex::LOOKUP_DREG, nft::REG32_00),
        ],
    ));
    out.push(Attr::expr(
        "nat",
        vec![
            Attr::u32(ex::NAT_TYPE, ex::NAT_DNAT),
            Attr::u32(ex::NAT_FAMILY, u32::from(nft::NFPROTO_IPV4)),
            Attr::u32(ex::NAT_REG_ADDR_MIN, nft::REG32_00),
            Attr::u32(ex::NAT_REG_PROTO_MIN, nft::REG32_00 + 1),
            Attr::u32(ex::NAT_FLAGS, ex::NAT_MAP_IPS_PROTO),
        ],
    ));
    out
}

impl Rule {
    fn exprs(&self) -> Vec<Attr> {
        let mut out: Vec<Attr> = self.matches.iter().flat_map(|m| m.exprs()).collect();
        match self.action {
            Action::Accept => out.push(immediate_verdict(nft::NF_ACCEPT)),
            Action::Return => out.push(immediate_verdict(nft::NFT_RETURN)),
            Action::Masquerade { fully_random } => {
                let flags = if fully_random {
                    vec![Attr::u32(ex::MASQ_FLAGS, ex::NAT_RANDOM_FULLY)]
                } else {
                    vec![]
                };
                out.push(Attr::expr("masq", flags));
            }
            Action::DnatLocal => out.extend(dnat_via(HOSTPORTS, false)),
            Action::DnatAddr => out.extend(dnat_via(HOSTPORTS_IP, true)),
        }
        out
    }

    fn render(&self) -> String {
        let mut parts: Vec<String> = self.matches.iter().map(|m| m.render()).collect();
        parts.push(match self.action {
            Action::Accept => "accept".into(),
            Action::Return => "return".into(),
            Action::Masquerade { fully_random: true } => "masquerade fully-random".into(),
            Action::Masquerade { fully_random: false } => "masquerade".into(),
            Action::DnatLocal => {
                format!("fib daddr type local dnat ip to meta l4proto . th dport map @{HOSTPORTS}")
            }
            Action::DnatAddr => {
                format!("dnat ip to ip daddr . meta l4proto . th dport map @{HOSTPORTS_IP}")
            }
        });
        format!("{} comment \"{}\"", parts.join(" "), self.comment)
    }
}

// nft's data type ids, so `nft list` shows the maps readably: a concatenation of types
// is encoded 6 bits per type.
const TYPE_IPADDR: u32 = 7;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;

fn concat(types: &[u32]) -> u32 {
    types.iter().fold(0, |acc, t| (acc << 6) | t)
}

/// The firewall of one node: its table, built from the network config.
#[derive(Debug, Clone)]
pub struct Firewall {
    cfg: NetworkConfig,
}

impl Firewall {
    pub fn new(cfg: &NetworkConfig) -> Self {
        Self { cfg: cfg.clone() }
    }

    /// Makes the table exactly what it should be, holding `ports` and nothing else, in one
    /// atomic batch (the old table, if any, goes in the same transaction).
    pub fn ensure(&self, ports: &[PortMap]) -> Result<(), Error> {
        let table = || Attr::str(nft::NFTA_TABLE_NAME, TABLE);
        let mut b = Batch::new();
        // Create-if-absent then delete, so the delete never fails on a fresh node.
        b.create(Msg::NewTable, &[table()], format!("add table ip {TABLE}"));
        b.add(Msg::DelTable, 0, &[table()], format!("delete table ip {TABLE}"));
        b.create(Msg::NewTable, &[table()], format!("add table ip {TABLE}"));
        for (id, (name, key, key_len)) in [
            (HOSTPORTS, concat(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), 8),
            (HOSTPORTS_IP, concat(&[TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), 12),
        ]
        .into_iter()
        .enumerate()
        {
            b.create(
                Msg::NewSet,
                &[
                    Attr::str(nft::NFTA_SET_TABLE, TABLE),
                    Attr::str(nft::NFTA_SET_NAME, name),
                    Attr::u32(nft::NFTA_SET_FLAGS, nft::NFT_SET_MAP),
                    Attr::u32(nft::NFTA_SET_KEY_TYPE, key),
                    Attr::u32(nft::NFTA_SET_KEY_LEN, key_len),
                    Attr::u32(nft::NFTA_SET_DATA_TYPE, concat(&[TYPE_IPADDR, TYPE_INET_SERVICE])),
                    Attr::u32(nft::NFTA_SET_DATA_LEN, 8),
                    Attr::u32(nft::NFTA_SET_ID, id as u32 + 1),
                ],
                format!("add map {name}"),
            );
        }
        for chain in chains(&self.cfg) {
            b.create(
                Msg::NewChain,
                &[
                    Attr::str(nft::NFTA_CHAIN_TABLE, TABLE),
                    Attr::str(nft::NFTA_CHAIN_NAME, chain.name),
                    Attr::Nest(
                        nft::NFTA_CHAIN_HOOK,
                        vec![
                            Attr::u32(nft::NFTA_HOOK_HOOKNUM, chain.hook),
                            Attr::u32(nft::NFTA_HOOK_PRIORITY, chain.priority as u32),
                        ],
                    ),
                    Attr::u32(nft::NFTA_CHAIN_POLICY, nft::NF_ACCEPT as u32),
                    Attr::str(nft::NFTA_CHAIN_TYPE, chain.kind),
                ],
                format!("add chain {}", chain.name),
            );
            for rule in &chain.rules {
                b.create(
                    Msg::NewRule,
                    &[
                        Attr::str(nft::NFTA_RULE_TABLE, TABLE),
                        Attr::str(nft::NFTA_RULE_CHAIN, chain.name),
                        Attr::Nest(nft::NFTA_RULE_EXPRESSIONS, rule.exprs()),
                    ],
                    format!("add rule {}: {}", chain.name, rule.render()),
                );
            }
        }
        add_elements(&mut b, ports);
        b.send()?;
        Ok(())
    }

    /// Adds hostPort elements (one batch: all or none).
    pub fn add_ports(&self, ports: &[PortMap]) -> Result<(), Error> {
        let mut b = Batch::new();
        add_elements(&mut b, ports);
        b.send()?;
        Ok(())
    }

    /// Removes hostPort elements; ones already gone count as removed.
    pub fn remove_ports(&self, ports: &[PortMap]) -> Result<(), Error> {
        let batch = |ports: &[PortMap]| {
            let mut b = Batch::new();
            for p in ports {
                b.add(
                    Msg::DelSetElem,
                    0,
                    &elements_attrs(p.map(), vec![p.element(false)]),
                    format!("delete element {} {{ {p} }}", p.map()),
                );
            }
            b.send()
        };
        match batch(ports) {
            Err(e) if e.is_not_found() => {
                // One of them was gone, and a batch is all or nothing: retry one by one.
                for p in ports {
                    match batch(std::slice::from_ref(p)) {
                        Err(e) if !e.is_not_found() => return Err(e.into()),
                        _ => {}
                    }
                }
                Ok(())
            }
            other => Ok(other?),
        }
    }

    /// The table's rules in nft syntax, for `podbay net show`.
    pub fn render(&self) -> String {
        let mut s = format!("table ip {TABLE} {{\n");
        let _ = writeln!(
            s,
            "  map {HOSTPORTS} {{ type inet_proto . inet_service : ipv4_addr . inet_service }}"
        );
        let _ = writeln!(
            s,
            "  map {HOSTPORTS_IP} {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service }}"
        );
        for chain in chains(&self.cfg) {
            let prio = match chain.priority {
                -100 => "dstnat".to_owned(),
                100 => "srcnat".to_owned(),
                0 => "filter".to_owned(),
                p => p.to_string(),
            };
            let hook = match chain.hook {
                HOOK_PREROUTING => "prerouting",
                HOOK_FORWARD => "forward",
                HOOK_OUTPUT => "output",
                _ => "postrouting",
            };
            let _ = writeln!(
                s,
                "  chain {} {{\n    type {} hook {hook} priority {prio}; policy accept;",
                chain.name, chain.kind
            );
            for rule in &chain.rules {
                let _ = writeln!(s, "    {}", rule.render());
            }
            s.push_str("  }\n");
        }
        s.push('}');
        s
    }
}

fn elements_attrs(map: &str, elements: Vec<Attr>) -> Vec<Attr> {
    vec![
        Attr::str(nft::NFTA_SET_ELEM_LIST_TABLE, TABLE),
        Attr::str(nft::NFTA_SET_ELEM_LIST_SET, map),
        Attr::Nest(nft::NFTA_SET_ELEM_LIST_ELEMENTS, elements),
    ]
}

fn add_elements(b: &mut Batch, ports: &[PortMap]) {
    for map in [HOSTPORTS, HOSTPORTS_IP] {
        let chosen: Vec<&PortMap> = ports.iter().filter(|p| p.map() == map).collect();
        if chosen.is_empty() {
            continue;
        }
        let what = chosen.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let elements = chosen.iter().map(|p| p.element(true)).collect();
        b.create(
            Msg::NewSetElem,
            &elements_attrs(map, elements),
            format!("add element {map} {{ {what} }}"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DEFAULT_BRIDGE, DEFAULT_CLUSTER_CIDR, NetworkSettings};

    fn cfg(masquerade: bool) -> NetworkConfig {
        NetworkConfig::from_settings(&NetworkSettings {
            cluster_cidr: DEFAULT_CLUSTER_CIDR,
            node_subnet: "",
            bridge: DEFAULT_BRIDGE,
            mtu: 0,
            masquerade,
            hairpin: true,
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn keys_fill_one_register_per_field() {
        let p = PortMap {
            protocol: Protocol::Udp,
            host_ip: None,
            host_port: 8080,
            pod_ip: "10.244.0.7".parse().unwrap(),
            pod_port: 80,
        };
        assert_eq!(p.key(), vec![17, 0, 0, 0, 0x1f, 0x90, 0, 0]);
        assert_eq!(p.data(), vec![10, 244, 0, 7, 0, 80, 0, 0]);
        let q = PortMap { host_ip: Some("192.0.2.1".parse().unwrap()), ..p };
        assert_eq!(q.key().len(), 12);
        assert_eq!(q.map(), HOSTPORTS_IP);
        assert_eq!(p.to_string(), "8080/udp -> 10.244.0.7:80");
    }

    #[test]
    fn rendered_rules_follow_flannel() {
        let text = Firewall::new(&cfg(true)).render();
        assert!(text.contains("meta mark & 0x00004000 == 0x00004000 return"), "{text}");
        assert!(
            text.contains("ip saddr 10.244.0.0/24 ip daddr != 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random"),
            "{text}"
        );
        assert!(text.contains("ip saddr 10.244.0.0/16 accept"), "{text}");
        let off = Firewall::new(&cfg(false)).render();
        assert!(!off.contains("fully-random"), "{off}");
        assert!(off.contains("ct status dnat ip saddr 127.0.0.0/8 masquerade"), "{off}");
    }

    #[test]
    fn concatenated_types_match_nft() {
        // nft's `inet_proto . inet_service` and `ipv4_addr . inet_service`.
        assert_eq!(concat(&[TYPE_INET_PROTOCOL, TYPE_INET_SERVICE]), (12 << 6) | 13);
        assert_eq!(concat(&[TYPE_IPADDR, TYPE_INET_SERVICE]), (7 << 6) | 13);
    }
}
