//! host-local's allocation strategy: round-robin over a range set, starting
//! after the set's last reserved address (or at the first range's start),
//! skipping gateways, giving up after one full turn.

use super::config::{next_ip, RangeSet};
use super::fail;
use super::store::Store;
use crate::error::CniResult;
use crate::result::IpConfig;
use ipnet::IpNet;
use std::net::IpAddr;

/// Walks a range set's candidate addresses in allocation order.
pub struct RangeIter<'a> {
    set: &'a RangeSet,
    range: usize,
    cur: Option<IpAddr>,
    start: Option<IpAddr>,
}

impl<'a> RangeIter<'a> {
    /// Starts after `last_reserved` when it lies in `set`, else at the first
    /// range's start.
    pub fn new(set: &'a RangeSet, last_reserved: Option<IpAddr>) -> Self {
        match last_reserved.and_then(|l| Some((set.0.iter().position(|r| r.contains(l))?, l))) {
            Some((range, last)) => RangeIter {
                set,
                range,
                cur: Some(last),
                start: None,
            },
            None => RangeIter {
                set,
                range: 0,
                cur: None,
                start: Some(set.0[0].range_start),
            },
        }
    }
}

impl Iterator for RangeIter<'_> {
    /// An address with its subnet's prefix, and its range's gateway.
    type Item = (IpNet, IpAddr);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let mut r = &self.set.0[self.range];
            let cur = match self.cur {
                None => {
                    self.cur = Some(r.range_start);
                    self.start = self.cur;
                    r.range_start
                }
                Some(cur) => {
                    let next = if cur == r.range_end {
                        self.range = (self.range + 1) % self.set.0.len();
                        r = &self.set.0[self.range];
                        r.range_start
                    } else {
                        next_ip(cur)
                    };
                    self.cur = Some(next);
                    match self.start {
                        None => self.start = Some(next),
                        Some(s) if s == next => return None,
                        Some(_) => {}
                    }
                    next
                }
            };
            if cur != r.gateway {
                let net = IpNet::new(cur, r.subnet.prefix_len()).expect("prefix fits the family");
                return Some((net, r.gateway));
            }
        }
    }
}

/// Allocates one address from range set `idx` for (`id`, `ifname`): the
/// `requested` one, else the next free one in round-robin order.
pub fn get(
    store: &Store,
    set: &RangeSet,
    idx: usize,
    id: &str,
    ifname: &str,
    requested: Option<IpAddr>,
) -> CniResult<IpConfig> {
    let (address, gateway) = match requested {
        Some(ip) => {
            let r = set
                .range_for(ip)
                .ok_or_else(|| fail(format!("{ip} not in range set {set}")))?;
            if ip == r.gateway {
                return Err(fail(format!("requested ip {ip} is subnet's gateway")));
            }
            if !store.reserve(id, ifname, ip, idx)? {
                let holder = store
                    .holder(ip)
                    .unwrap_or_else(|| "another container".into());
                return Err(fail(format!(
                    "requested IP address {ip} is not available in range set {set}"
                ))
                .with_details(format!(
                    "{ip} is reserved by {holder} ({}); request another address or release it with DEL",
                    store.dir().join(ip.to_string()).display()
                )));
            }
            let net = IpNet::new(ip, r.subnet.prefix_len()).expect("prefix fits the family");
            (net, r.gateway)
        }
        None => {
            if let Some(ip) = store
                .get_by_id(id, ifname)?
                .into_iter()
                .find(|ip| set.contains(*ip))
            {
                return Err(fail(format!(
                    "{ip} has been allocated to {id}, duplicate allocation is not allowed"
                ))
                .with_details(format!(
                    "{} already holds {ip} for this container and interface; DEL the attachment before adding it again",
                    store.dir().display()
                )));
            }
            let mut found = None;
            for (net, gw) in RangeIter::new(set, store.last_reserved(idx)) {
                if store.reserve(id, ifname, net.addr(), idx)? {
                    found = Some((net, gw));
                    break;
                }
            }
            found.ok_or_else(|| {
                fail(format!("no IP addresses available in range set: {set}")).with_details(format!(
                    "every address is reserved in {} (one file per address, holding its container ID); \
                     remove the files of containers that no longer exist or widen the range",
                    store.dir().display()
                ))
            })?
        }
    };
    Ok(IpConfig {
        interface: None,
        address,
        gateway: Some(gateway),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostlocal::config::IpamConfig;
    use serde_json::json;

    fn set(ranges: serde_json::Value) -> RangeSet {
        let raw = json!({"name": "n", "ipam": {"ranges": [ranges]}});
        IpamConfig::load(&raw, "").unwrap().ranges.remove(0)
    }

    fn order(s: &RangeSet, last: Option<&str>) -> Vec<String> {
        RangeIter::new(s, last.map(|l| l.parse().unwrap()))
            .map(|(n, _)| n.to_string())
            .collect()
    }

    #[test]
    fn starts_at_range_start_and_skips_the_gateway() {
        let s = set(json!([{"subnet": "10.0.0.0/29"}]));
        assert_eq!(
            order(&s, None),
            [
                "10.0.0.2/29",
                "10.0.0.3/29",
                "10.0.0.4/29",
                "10.0.0.5/29",
                "10.0.0.6/29"
            ]
        );
    }

    #[test]
    fn resumes_after_the_last_reserved_and_wraps_across_ranges() {
        let s = set(
            json!([{"subnet": "10.0.0.0/30"}, {"subnet": "10.0.1.0/29", "gateway": "10.0.1.3"}]),
        );
        assert_eq!(
            order(&s, Some("10.0.1.4")),
            [
                "10.0.1.5/29",
                "10.0.1.6/29",
                "10.0.0.2/30",
                "10.0.1.1/29",
                "10.0.1.2/29",
                "10.0.1.4/29"
            ]
        );
        assert_eq!(
            order(&s, Some("192.168.0.1")),
            [
                "10.0.0.2/30",
                "10.0.1.1/29",
                "10.0.1.2/29",
                "10.0.1.4/29",
                "10.0.1.5/29",
                "10.0.1.6/29"
            ],
            "a last reserved address outside the set restarts at the beginning"
        );
    }

    #[test]
    fn a_range_holding_only_its_gateway_yields_nothing() {
        let s = set(
            json!([{"subnet": "10.0.0.0/24", "rangeStart": "10.0.0.1", "rangeEnd": "10.0.0.1"}]),
        );
        assert!(order(&s, None).is_empty());
        assert!(order(&s, Some("10.0.0.1")).is_empty());
    }

    #[test]
    fn ipv6_ranges_end_at_the_last_address() {
        let s = set(json!([{"subnet": "fd00::/126"}]));
        assert_eq!(order(&s, Some("fd00::2")), ["fd00::3/126", "fd00::2/126"]);
    }
}
