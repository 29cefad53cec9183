//! Addresses as `u128` numbers, so that ranges of any size (a whole IPv6 `/64`
//! or wider) are arithmetic rather than enumeration.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// "4" or "6": the family component of store keys.
    pub fn tag(self) -> &'static str {
        match self {
            Family::V4 => "4",
            Family::V6 => "6",
        }
    }

    /// Hex digits of a key component: fixed width, so keys sort numerically.
    fn hex_width(self) -> usize {
        match self {
            Family::V4 => 8,
            Family::V6 => 32,
        }
    }

    /// Address length in bits.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The address as a number (IPv4 widened).
pub fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// The address of a number in a family (IPv4 values are truncated to 32 bits).
pub fn from_u128(family: Family, v: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(v as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    }
}

/// Fixed-width lower-case hex of an address number, for store keys.
pub fn hex(family: Family, v: u128) -> String {
    format!("{v:0w$x}", w = family.hex_width())
}

/// Parses a key component written by [`hex`].
pub fn parse_hex(family: Family, s: &str) -> Option<u128> {
    if s.len() != family.hex_width() {
        return None;
    }
    u128::from_str_radix(s, 16).ok()
}

/// Number of addresses in a block: blocks are aligned runs of 64 addresses
/// (IPv4 `/26`, IPv6 `/122`), the unit a node claims.
pub const BLOCK_SIZE: u128 = 64;

/// First address of the block holding `v`.
pub fn block_base(v: u128) -> u128 {
    v & !(BLOCK_SIZE - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_keys_sort_like_numbers() {
        let a = hex(Family::V6, 0xff);
        let b = hex(Family::V6, 0x100);
        assert!(a < b);
        assert_eq!(parse_hex(Family::V6, &b), Some(0x100));
        assert_eq!(
            hex(Family::V4, to_u128("10.0.0.1".parse().unwrap())),
            "0a000001"
        );
    }

    #[test]
    fn round_trips_both_families() {
        for s in ["10.1.2.3", "fd00::1:2", "255.255.255.255", "ffff::"] {
            let ip: IpAddr = s.parse().unwrap();
            assert_eq!(from_u128(Family::of(ip), to_u128(ip)), ip);
        }
    }
}
