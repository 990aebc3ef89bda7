//! IPAM: which address of a node subnet a new pod gets.
//!
//! This module only decides. The leases themselves are kept by the caller (the runtime
//! persists them in the same state-database transaction as the sandbox record), which
//! passes in what is taken. Like the CNI host-local plugin, allocation is round-robin:
//! the search starts after the address handed out last, so a released address is not
//! reused right away. The network address, the gateway (the subnet's first host, held by
//! the bridge) and the broadcast address are never handed out.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use crate::ErrorKind;

/// Longest prefix a node subnet may have: a /30 still leaves one pod address.
pub const MAX_PREFIX: u8 = 30;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("subnet {subnet}: {reason}")]
    InvalidSubnet { subnet: String, reason: String },
    #[error("no free pod address left in subnet {subnet} ({capacity} addresses, all leased)")]
    Exhausted { subnet: Ipv4Net, capacity: u32 },
}

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidSubnet { .. } => ErrorKind::InvalidArgument,
            Error::Exhausted { .. } => ErrorKind::ResourceExhausted,
        }
    }
}

/// A node's pod subnet, e.g. 10.244.0.0/24: gateway .1, pods .2 to .254.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSubnet {
    net: Ipv4Net,
}

impl NodeSubnet {
    /// Checks that `net` is a network address (no host bits) with room for a pod.
    pub fn new(net: Ipv4Net) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidSubnet { subnet: net.to_string(), reason };
        if net.prefix_len() > MAX_PREFIX {
            return Err(invalid(format!("prefix is longer than /{MAX_PREFIX}")));
        }
        if net.trunc() != net {
            return Err(invalid(format!("host bits are set; did you mean {}?", net.trunc())));
        }
        Ok(Self { net })
    }

    /// Parses CIDR text such as `10.244.0.0/24`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let net = text.parse::<Ipv4Net>().map_err(|e| Error::InvalidSubnet {
            subnet: text.to_owned(),
            reason: format!("not an IPv4 CIDR ({e})"),
        })?;
        Self::new(net)
    }

    pub fn net(&self) -> Ipv4Net {
        self.net
    }

    /// The gateway: the subnet's first host address, held by the bridge.
    pub fn gateway(&self) -> Ipv4Addr {
        offset(self.net.network(), 1)
    }

    fn first_pod(&self) -> Ipv4Addr {
        offset(self.net.network(), 2)
    }

    fn last_pod(&self) -> Ipv4Addr {
        offset(self.net.broadcast(), -1)
    }

    /// How many addresses pods can get.
    pub fn capacity(&self) -> u32 {
        u32::from(self.last_pod()) - u32::from(self.first_pod()) + 1
    }

    /// Whether `ip` may be given to a pod.
    pub fn is_assignable(&self, ip: Ipv4Addr) -> bool {
        (self.first_pod()..=self.last_pod()).contains(&ip)
    }

    /// The next free pod address after `last` (round-robin, wrapping around), given what
    /// is in use.
    pub fn next_free(
        &self,
        last: Option<Ipv4Addr>,
        in_use: impl Fn(Ipv4Addr) -> bool,
    ) -> Result<Ipv4Addr, Error> {
        let (first, count) = (u32::from(self.first_pod()), self.capacity());
        let start = match last.filter(|ip| self.is_assignable(*ip)) {
            Some(ip) => (u32::from(ip) - first + 1) % count,
            None => 0,
        };
        (0..count)
            .map(|i| Ipv4Addr::from(first + (start + i) % count))
            .find(|ip| !in_use(*ip))
            .ok_or(Error::Exhausted { subnet: self.net, capacity: count })
    }
}

fn offset(ip: Ipv4Addr, by: i64) -> Ipv4Addr {
    Ipv4Addr::from((i64::from(u32::from(ip)) + by) as u32)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    #[test]
    fn reserved_addresses_are_never_handed_out() {
        let s = NodeSubnet::parse("10.244.0.0/24").unwrap();
        assert_eq!(s.gateway(), ip("10.244.0.1"));
        assert_eq!(s.capacity(), 253);
        for reserved in ["10.244.0.0", "10.244.0.1", "10.244.0.255", "10.244.1.2"] {
            assert!(!s.is_assignable(ip(reserved)), "{reserved}");
        }
        assert!(s.is_assignable(ip("10.244.0.2")) && s.is_assignable(ip("10.244.0.254")));
    }

    #[test]
    fn round_robin_after_the_last_one_and_wraps() {
        let s = NodeSubnet::parse("10.244.0.0/29").unwrap(); // pods .2 to .6
        let none = |_| false;
        assert_eq!(s.next_free(None, none).unwrap(), ip("10.244.0.2"));
        assert_eq!(s.next_free(Some(ip("10.244.0.2")), none).unwrap(), ip("10.244.0.3"));
        // A released address is not reused right away: .2 is free, yet .4 comes next.
        assert_eq!(s.next_free(Some(ip("10.244.0.3")), none).unwrap(), ip("10.244.0.4"));
        assert_eq!(s.next_free(Some(ip("10.244.0.6")), none).unwrap(), ip("10.244.0.2"));
        let used: BTreeSet<_> = [ip("10.244.0.2"), ip("10.244.0.3")].into();
        assert_eq!(
            s.next_free(Some(ip("10.244.0.6")), |a| used.contains(&a)).unwrap(),
            ip("10.244.0.4")
        );
        // A `last` outside the range (say, from an old subnet) starts from the beginning.
        assert_eq!(s.next_free(Some(ip("192.168.0.9")), none).unwrap(), ip("10.244.0.2"));
    }

    #[test]
    fn a_full_subnet_is_exhausted_naming_it() {
        let s = NodeSubnet::parse("10.244.7.0/30").unwrap(); // one pod address: .2
        assert_eq!(s.capacity(), 1);
        let err = s.next_free(None, |a| a == ip("10.244.7.2")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::ResourceExhausted);
        assert!(err.to_string().contains("10.244.7.0/30"), "{err}");
    }

    #[test]
    fn bad_subnets_are_named() {
        for (text, why) in [
            ("10.244.0.0/31", "longer than /30"),
            ("10.244.0.5/24", "10.244.0.0/24"),
            ("10.244.0.0", "not an IPv4 CIDR"),
            ("fd00::/64", "not an IPv4 CIDR"),
        ] {
            let err = NodeSubnet::parse(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidArgument);
            assert!(err.to_string().contains(why) && err.to_string().contains(text), "{err}");
        }
    }
}
