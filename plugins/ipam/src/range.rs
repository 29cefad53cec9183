//! Ranges and pools: which addresses may be handed out, as numbers.
//!
//! A [`Range`] is a subnet with a first and last address and the addresses
//! it must never give (network, IPv4 broadcast, gateway, exclusions), kept as
//! sorted disjoint intervals so that the next free address, or the size,
//! is computed without enumerating the range.

use crate::addr::{self, Family};
use ipnet::IpNet;
use manifold_common::{CniError, CniResult};
use std::net::IpAddr;

/// One contiguous range inside a subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The subnet (host bits cleared); addresses are returned with its prefix length.
    pub subnet: IpNet,
    /// First address that may be handed out (inclusive).
    pub first: u128,
    /// Last address that may be handed out (inclusive).
    pub last: u128,
    /// Gateway returned with every address, never handed out.
    pub gateway: Option<IpAddr>,
    /// Configured exclusions, as given (for descriptions).
    pub exclude: Vec<IpNet>,
    /// Sorted, disjoint, inclusive intervals inside `first..=last` never handed out.
    reserved: Vec<(u128, u128)>,
}

fn net_bounds(n: &IpNet) -> (u128, u128) {
    (addr::to_u128(n.network()), addr::to_u128(n.broadcast()))
}

/// Sorts and merges inclusive intervals.
fn merge(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

impl Range {
    /// Builds and checks a range. `subnet` may carry host bits; `first`/`last`
    /// default to the subnet's first and last usable address.
    pub fn new(
        subnet: IpNet,
        first: Option<IpAddr>,
        last: Option<IpAddr>,
        gateway: Option<IpAddr>,
        exclude: Vec<IpNet>,
    ) -> CniResult<Self> {
        let subnet = subnet.trunc();
        let family = Family::of(subnet.addr());
        let (net, bcast) = net_bounds(&subnet);
        // The network address (and the IPv4 broadcast) are only real
        // addresses in point-to-point subnets (/31, /32, /127, /128).
        let prefix = subnet.prefix_len();
        let skip_network = prefix + 2 <= family.bits();
        let skip_broadcast = family == Family::V4 && skip_network;
        let check = |what: &str, ip: IpAddr| -> CniResult<u128> {
            if Family::of(ip) != family {
                return Err(CniError::config(format!(
                    "{what} {ip} is not an {family} address like subnet {subnet}"
                )));
            }
            if !subnet.contains(&ip) {
                return Err(CniError::config(format!(
                    "{what} {ip} is outside subnet {subnet}"
                )));
            }
            Ok(addr::to_u128(ip))
        };
        let first = match first {
            Some(ip) => check("range start", ip)?,
            None => net + u128::from(skip_network),
        };
        let last = match last {
            Some(ip) => check("range end", ip)?,
            None => bcast - u128::from(skip_broadcast),
        };
        if first > last {
            return Err(CniError::config(format!(
                "range start {} is after range end {} in subnet {subnet}",
                addr::from_u128(family, first),
                addr::from_u128(family, last)
            )));
        }
        let mut reserved = Vec::new();
        if skip_network {
            reserved.push((net, net));
        }
        if skip_broadcast {
            reserved.push((bcast, bcast));
        }
        if let Some(gw) = gateway {
            let g = check("gateway", gw)?;
            reserved.push((g, g));
        }
        for e in &exclude {
            if Family::of(e.addr()) != family {
                return Err(CniError::config(format!(
                    "exclude {e} is not an {family} network like subnet {subnet}"
                )));
            }
            reserved.push(net_bounds(&e.trunc()));
        }
        let reserved = merge(
            reserved
                .into_iter()
                .filter(|&(a, b)| b >= first && a <= last)
                .map(|(a, b)| (a.max(first), b.min(last)))
                .collect(),
        );
        let r = Range {
            subnet,
            first,
            last,
            gateway,
            exclude,
            reserved,
        };
        if r.size() == 0 {
            return Err(CniError::config(format!(
                "range {} has no address to hand out: the network address, broadcast, gateway and exclude cover all of it",
                r.describe()
            )));
        }
        Ok(r)
    }

    /// The range's family.
    pub fn family(&self) -> Family {
        Family::of(self.subnet.addr())
    }

    /// True when `v` lies between the first and last address.
    pub fn contains(&self, v: u128) -> bool {
        (self.first..=self.last).contains(&v)
    }

    /// True when `v` is in the range and not reserved.
    pub fn is_allocatable(&self, v: u128) -> bool {
        self.contains(v) && self.reserved_interval(v).is_none()
    }

    fn reserved_interval(&self, v: u128) -> Option<(u128, u128)> {
        let i = self.reserved.partition_point(|&(_, b)| b < v);
        self.reserved.get(i).copied().filter(|&(a, _)| a <= v)
    }

    /// The first allocatable address at or after `from`, if any.
    pub fn next_allocatable(&self, from: u128) -> Option<u128> {
        let mut v = from.max(self.first);
        while v <= self.last {
            match self.reserved_interval(v) {
                None => return Some(v),
                Some((_, b)) => v = b.checked_add(1)?,
            }
        }
        None
    }

    /// Number of addresses that can be handed out (saturating at `u128::MAX`).
    pub fn size(&self) -> u128 {
        let span = (self.last - self.first).saturating_add(1);
        let reserved: u128 = self.reserved.iter().map(|&(a, b)| b - a + 1).sum();
        span - reserved
    }

    /// The address `v` with the subnet's prefix length.
    pub fn with_prefix(&self, v: u128) -> IpNet {
        IpNet::new(addr::from_u128(self.family(), v), self.subnet.prefix_len())
            .expect("prefix length comes from the subnet")
    }

    /// Stable identifier used in store keys: family, first and last address in hex.
    pub fn id(&self) -> String {
        let f = self.family();
        format!(
            "{}-{}-{}",
            f.tag(),
            addr::hex(f, self.first),
            addr::hex(f, self.last)
        )
    }

    /// "10.1.0.0/24 (10.1.0.1-10.1.0.254)" for messages.
    pub fn describe(&self) -> String {
        let f = self.family();
        format!(
            "{} ({}-{})",
            self.subnet,
            addr::from_u128(f, self.first),
            addr::from_u128(f, self.last)
        )
    }

    /// True when the two ranges share an address.
    pub fn overlaps(&self, other: &Range) -> bool {
        self.family() == other.family() && self.first <= other.last && other.first <= self.last
    }
}

/// A pool: the ranges one address per attachment is taken from (a host-local
/// range set, or one Whereabouts range), all of one family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Ranges, tried in order.
    pub ranges: Vec<Range>,
}

impl Pool {
    /// The pool's family (every range has it).
    pub fn family(&self) -> Family {
        self.ranges[0].family()
    }

    /// The range holding `ip`, if any.
    pub fn range_of(&self, ip: IpAddr) -> Option<&Range> {
        let v = addr::to_u128(ip);
        self.ranges
            .iter()
            .find(|r| r.family() == Family::of(ip) && r.contains(v))
    }

    /// Total addresses that can be handed out.
    pub fn size(&self) -> u128 {
        self.ranges
            .iter()
            .fold(0u128, |n, r| n.saturating_add(r.size()))
    }

    /// The ranges, described, for messages.
    pub fn describe(&self) -> String {
        self.ranges
            .iter()
            .map(Range::describe)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn n(s: &str) -> u128 {
        addr::to_u128(ip(s))
    }

    #[test]
    fn ipv4_skips_network_broadcast_and_gateway() {
        let r = Range::new(net("10.0.0.0/29"), None, None, Some(ip("10.0.0.1")), vec![]).unwrap();
        assert_eq!(r.size(), 5);
        assert_eq!(r.next_allocatable(0), Some(n("10.0.0.2")));
        assert!(!r.is_allocatable(n("10.0.0.7")));
        assert!(!r.is_allocatable(n("10.0.0.0")));
    }

    #[test]
    fn exclusions_are_jumped_over_not_walked() {
        let r = Range::new(
            net("fd00::/64"),
            None,
            None,
            None,
            vec![net("fd00::/65"), net("fd00:0:0:0:8000::/120")],
        )
        .unwrap();
        assert_eq!(r.next_allocatable(0), Some(n("fd00::8000:0:0:100")));
        assert_eq!(r.size(), (1u128 << 63) - 256);
    }

    #[test]
    fn exclude_covering_everything_is_invalid_config() {
        let e = Range::new(
            net("10.0.0.0/30"),
            None,
            None,
            None,
            vec![net("10.0.0.0/31"), net("10.0.0.2/32")],
        )
        .unwrap_err();
        assert_eq!(e.code, manifold_common::ErrorCode::InvalidConfig);
        assert!(e.msg.contains("no address to hand out"), "{}", e.msg);
    }

    #[test]
    fn start_after_end_and_outside_subnet_are_invalid() {
        assert!(Range::new(
            net("10.0.0.0/24"),
            Some(ip("10.0.0.9")),
            Some(ip("10.0.0.3")),
            None,
            vec![]
        )
        .is_err());
        let e =
            Range::new(net("10.0.0.0/24"), Some(ip("10.0.1.9")), None, None, vec![]).unwrap_err();
        assert!(e.msg.contains("outside subnet 10.0.0.0/24"), "{}", e.msg);
    }

    #[test]
    fn point_to_point_subnets_use_every_address() {
        assert_eq!(
            Range::new(net("10.0.0.4/31"), None, None, None, vec![])
                .unwrap()
                .size(),
            2
        );
        assert_eq!(
            Range::new(net("fd00::1/128"), None, None, None, vec![])
                .unwrap()
                .size(),
            1
        );
    }
}
