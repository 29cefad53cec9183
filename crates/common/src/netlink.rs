//! A synchronous rtnetlink socket bound to one network namespace: links,
//! addresses and routes. Opened once per namespace and reused for every
//! operation of a call (no async runtime in a short-lived plugin).

use crate::error::{CniError, CniResult};
use crate::mac::Mac;
use crate::netns::NetNs;
use ipnet::IpNet;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_MULTIPART, NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoMacVlan, IpVlanMode, LinkAttribute, LinkExtentMask,
    LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteMetric,
    RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::os::fd::AsRawFd;
use std::str::FromStr;

/// Macvlan modes, named as the reference plugin's `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MacvlanMode {
    /// No traffic between macvlans of one master.
    Private,
    /// Traffic between macvlans goes out to the switch.
    Vepa,
    /// Macvlans of one master talk directly.
    Bridge,
    /// The single macvlan takes over the master.
    Passthru,
}

/// Ipvlan modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpvlanMode {
    /// Layer 2: shares the master's MAC, ARP/ND on the wire.
    L2,
    /// Layer 3: routed by the master, no broadcast.
    L3,
    /// Layer 3 with netfilter on the slave.
    L3s,
}

macro_rules! named_enum {
    ($ty:ty, $what:literal, $($v:ident => $s:literal),+) => {
        impl $ty {
            /// The config spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$v => $s),+ }
            }
        }
        impl FromStr for $ty {
            type Err = CniError;
            fn from_str(s: &str) -> CniResult<Self> {
                match s {
                    $($s => Ok(Self::$v),)+
                    other => Err(CniError::config(format!(
                        concat!("unknown ", $what, " mode {:?}: use one of {}"),
                        other,
                        [$($s),+].join(", ")
                    ))),
                }
            }
        }
    };
}

named_enum!(MacvlanMode, "macvlan", Bridge => "bridge", Private => "private", Vepa => "vepa", Passthru => "passthru");
named_enum!(IpvlanMode, "ipvlan", L2 => "l2", L3 => "l3", L3s => "l3s");

/// A link as the kernel reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `IFLA_INFO_KIND` ("macvlan", "veth", ...), if any.
    pub kind: Option<String>,
    /// Hardware address.
    pub mac: Option<Mac>,
    /// MTU.
    pub mtu: u32,
    /// Administratively up.
    pub up: bool,
    /// `IFLA_LINK`: the parent (master) index.
    pub parent_index: Option<u32>,
    /// Mode, for macvlans.
    pub macvlan_mode: Option<MacvlanMode>,
    /// Mode, for ipvlans.
    pub ipvlan_mode: Option<IpvlanMode>,
}

/// Kind-specific attributes of a link to create.
#[derive(Debug, Clone)]
pub enum NewLinkKind {
    /// A macvlan.
    Macvlan {
        /// Mode.
        mode: MacvlanMode,
        /// Broadcast queue length.
        bcqueuelen: Option<u32>,
    },
    /// An ipvlan.
    Ipvlan {
        /// Mode.
        mode: IpvlanMode,
    },
}

/// A link to create on a parent.
#[derive(Debug, Clone)]
pub struct NewLink<'a> {
    /// Name to create it under.
    pub name: String,
    /// Parent (master) index, in the socket's netns.
    pub parent_index: u32,
    /// Kind and its attributes.
    pub kind: NewLinkKind,
    /// Create it directly in this netns (`IFLA_NET_NS_FD`).
    pub netns: Option<&'a NetNs>,
    /// MTU.
    pub mtu: Option<u32>,
    /// MAC.
    pub mac: Option<Mac>,
}

/// An address on a link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Link index.
    pub index: u32,
    /// Address and prefix.
    pub addr: IpNet,
    /// `IFA_F_*` flags.
    pub flags: u32,
}

impl Address {
    /// Still undergoing duplicate address detection.
    pub fn is_tentative(&self) -> bool {
        self.flags & AddressFlags::Tentative.bits() != 0
    }
}

/// A route, read or to add.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteEntry {
    /// Destination; `None` is the default route.
    pub dst: Option<IpNet>,
    /// Gateway.
    pub gw: Option<IpAddr>,
    /// Output link.
    pub oif: Option<u32>,
    /// Table (0 means main when adding).
    pub table: u32,
    /// Metric.
    pub priority: Option<u32>,
    /// Scope (`RT_SCOPE_*`).
    pub scope: u8,
    /// Route MTU.
    pub mtu: Option<u32>,
    /// Advertised MSS.
    pub advmss: Option<u32>,
    /// Protocol (`RTPROT_*`); 0 means boot when adding.
    pub protocol: u8,
    /// IPv6 (needed for a default route, which has no `dst` to tell).
    pub v6: bool,
}

const RT_TABLE_MAIN: u32 = 254;
const RTPROT_BOOT: u8 = 3;

/// An rtnetlink socket in one network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
}

/// A kernel refusal: the errno, for callers that treat some as success.
struct Refused(i32);

fn io_err(op: &str, e: impl std::fmt::Display) -> CniError {
    CniError::kernel(format!("{op}: {e}"))
}

fn refused_msg(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

impl Netlink {
    /// Opens a socket in the calling thread's netns.
    pub fn open() -> CniResult<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| io_err("netlink socket", e))?;
        socket.bind_auto().map_err(|e| io_err("netlink bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| io_err("netlink connect", e))?;
        Ok(Netlink { socket, seq: 0 })
    }

    /// Opens a socket inside `ns`; it stays bound to `ns` whatever thread uses it.
    pub fn open_in(ns: &NetNs) -> CniResult<Self> {
        ns.run(Self::open)?
    }

    /// Sends one request and collects the replies: for a dump until DONE,
    /// otherwise until the ACK. A kernel error comes back as `Refused`.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> CniResult<Result<Vec<RouteNetlinkMessage>, Refused>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket
            .send(&buf, 0)
            .map_err(|e| io_err("netlink send", e))?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut replies = Vec::new();
        loop {
            let (data, _) = self
                .socket
                .recv_from_full()
                .map_err(|e| io_err("netlink receive", e))?;
            let mut off = 0;
            while off + 16 <= data.len() {
                let len =
                    u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]])
                        as usize;
                if len < 16 || off + len > data.len() {
                    return Err(CniError::kernel("netlink: truncated message"));
                }
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[off..off + len])
                    .map_err(|e| io_err("netlink decode", e))?;
                off += (len + 3) & !3;
                if msg.header.sequence_number != self.seq {
                    continue;
                }
                let multipart = msg.header.flags & NLM_F_MULTIPART != 0;
                match msg.payload {
                    NetlinkPayload::Error(e) => {
                        return Ok(match e.code {
                            None => Ok(replies),
                            Some(code) => Err(Refused(-code.get())),
                        })
                    }
                    NetlinkPayload::Done(_) => return Ok(Ok(replies)),
                    NetlinkPayload::InnerMessage(m) => {
                        replies.push(m);
                        if !dump && !multipart && flags & NLM_F_ACK == 0 {
                            return Ok(Ok(replies));
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    /// A request whose kernel refusal is an error with context `op`.
    fn must(
        &mut self,
        op: impl FnOnce() -> String,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> CniResult<Vec<RouteNetlinkMessage>> {
        self.request(msg, flags)?
            .map_err(|Refused(errno)| CniError::kernel(format!("{}: {}", op(), refused_msg(errno))))
    }

    fn get_link(&mut self, msg: LinkMessage, what: &str) -> CniResult<Option<Link>> {
        match self.request(RouteNetlinkMessage::GetLink(msg), 0)? {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(&l)),
                _ => None,
            })),
            Err(Refused(errno)) if errno == libc_errno::ENODEV => Ok(None),
            Err(Refused(errno)) => Err(CniError::kernel(format!(
                "look up link {what}: {}",
                refused_msg(errno)
            ))),
        }
    }

    /// The raw link message of the link named `name`, if it exists; with
    /// `vf_info` the kernel includes its SR-IOV VF list (`RTEXT_FILTER_VF`).
    pub fn link_message_by_name(
        &mut self,
        name: &str,
        vf_info: bool,
    ) -> CniResult<Option<LinkMessage>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        if vf_info {
            msg.attributes
                .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Vf]));
        }
        match self.request(RouteNetlinkMessage::GetLink(msg), 0)? {
            Ok(replies) => Ok(replies.into_iter().find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            })),
            Err(Refused(errno)) if errno == libc_errno::ENODEV => Ok(None),
            Err(Refused(errno)) => Err(CniError::kernel(format!(
                "look up link {name:?}: {}",
                refused_msg(errno)
            ))),
        }
    }

    /// The link named `name`, if it exists.
    pub fn link_by_name(&mut self, name: &str) -> CniResult<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        self.get_link(msg, &format!("{name:?}"))
    }

    /// The link with index `index`, if it exists.
    pub fn link_by_index(&mut self, index: u32) -> CniResult<Option<Link>> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.get_link(msg, &format!("#{index}"))
    }

    /// Every link.
    pub fn links(&mut self) -> CniResult<Vec<Link>> {
        let replies = self.must(
            || "list links".into(),
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(parse_link(l)),
                _ => None,
            })
            .collect())
    }

    /// Creates a link (fails if the name exists).
    pub fn create_link(&mut self, link: &NewLink) -> CniResult<()> {
        let mut msg = LinkMessage::default();
        msg.attributes
            .push(LinkAttribute::IfName(link.name.clone()));
        msg.attributes.push(LinkAttribute::Link(link.parent_index));
        if let Some(ns) = link.netns {
            msg.attributes.push(LinkAttribute::NetNsFd(
                std::os::fd::AsFd::as_fd(ns).as_raw_fd(),
            ));
        }
        if let Some(mtu) = link.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = link.mac {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        let (kind, data) = match link.kind {
            NewLinkKind::Macvlan { mode, bcqueuelen } => {
                let mut d = vec![InfoMacVlan::Mode(match mode {
                    MacvlanMode::Private => MacVlanMode::Private,
                    MacvlanMode::Vepa => MacVlanMode::Vepa,
                    MacvlanMode::Bridge => MacVlanMode::Bridge,
                    MacvlanMode::Passthru => MacVlanMode::Passthrough,
                })];
                if let Some(q) = bcqueuelen {
                    d.push(InfoMacVlan::BcQueueLen(q));
                }
                (InfoKind::MacVlan, InfoData::MacVlan(d))
            }
            NewLinkKind::Ipvlan { mode } => (
                InfoKind::IpVlan,
                InfoData::IpVlan(vec![InfoIpVlan::Mode(match mode {
                    IpvlanMode::L2 => IpVlanMode::L2,
                    IpvlanMode::L3 => IpVlanMode::L3,
                    IpvlanMode::L3s => IpVlanMode::L3S,
                })]),
            ),
        };
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(kind),
            LinkInfo::Data(data),
        ]));
        self.must(
            || format!("create link {:?}", link.name),
            RouteNetlinkMessage::NewLink(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Sends a link request that names a link (or links) which may be gone
    /// already: `false` on ENODEV, an error naming `what` on any other refusal.
    fn unless_gone(&mut self, what: &str, msg: RouteNetlinkMessage) -> CniResult<bool> {
        match self.request(msg, NLM_F_ACK)? {
            Ok(_) => Ok(true),
            Err(Refused(errno)) if errno == libc_errno::ENODEV => Ok(false),
            Err(Refused(errno)) => Err(CniError::kernel(format!("{what}: {}", refused_msg(errno)))),
        }
    }

    /// Deletes a link; `false` if it was already gone.
    pub fn delete_link(&mut self, index: u32) -> CniResult<bool> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.unless_gone(
            &format!("delete link #{index}"),
            RouteNetlinkMessage::DelLink(msg),
        )
    }

    /// Deletes, in one request, every link of group `group` (`ip link del
    /// group G`): the kernel waits out one RCU grace period for all of them
    /// instead of one per link. `false` if the group had no link.
    pub fn delete_link_group(&mut self, group: NonZeroU32) -> CniResult<bool> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::Group(group.get()));
        self.unless_gone(
            &format!("delete the links of group {group}"),
            RouteNetlinkMessage::DelLink(msg),
        )
    }

    /// Puts a link into link group `group` (`IFLA_GROUP`); `false` if the
    /// link is gone (deleted meanwhile).
    pub fn set_group(&mut self, index: u32, group: u32) -> CniResult<bool> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.attributes.push(LinkAttribute::Group(group));
        self.unless_gone(
            &format!("set group {group} of link #{index}"),
            RouteNetlinkMessage::SetLink(msg),
        )
    }

    /// Sends one `RTM_SETLINK` for link `index`, built by `edit` (`what` names
    /// the change in errors): for link attributes no dedicated method covers,
    /// such as a PF's VF settings.
    pub fn set_link(
        &mut self,
        index: u32,
        what: &str,
        edit: impl FnOnce(&mut LinkMessage),
    ) -> CniResult<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        edit(&mut msg);
        self.must(
            || format!("{what} of link #{index}"),
            RouteNetlinkMessage::SetLink(msg),
            NLM_F_ACK,
        )
        .map(drop)
    }

    /// Renames a (down) link.
    pub fn rename_link(&mut self, index: u32, name: &str) -> CniResult<()> {
        self.set_link(index, &format!("rename to {name:?}"), |m| {
            m.attributes.push(LinkAttribute::IfName(name.to_string()))
        })
    }

    /// Sets a link administratively up.
    pub fn set_up(&mut self, index: u32) -> CniResult<()> {
        self.set_link(index, "set up", |m| {
            m.header.flags = LinkFlags::Up;
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Sets a link administratively down.
    pub fn set_down(&mut self, index: u32) -> CniResult<()> {
        self.set_link(index, "set down", |m| {
            m.header.flags = LinkFlags::empty();
            m.header.change_mask = LinkFlags::Up;
        })
    }

    /// Sets the MTU.
    pub fn set_mtu(&mut self, index: u32, mtu: u32) -> CniResult<()> {
        self.set_link(index, &format!("set MTU {mtu}"), |m| {
            m.attributes.push(LinkAttribute::Mtu(mtu))
        })
    }

    /// Sets the MAC.
    pub fn set_mac(&mut self, index: u32, mac: Mac) -> CniResult<()> {
        self.set_link(index, &format!("set MAC {mac}"), |m| {
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()))
        })
    }

    /// Moves a link into another netns.
    pub fn move_to_netns(&mut self, index: u32, ns: &NetNs) -> CniResult<()> {
        let fd = std::os::fd::AsFd::as_fd(ns).as_raw_fd();
        self.set_link(
            index,
            &format!("move to netns {}", ns.path().display()),
            |m| m.attributes.push(LinkAttribute::NetNsFd(fd)),
        )
    }

    /// Addresses of one link (or every link), both families.
    pub fn addresses(&mut self, index: Option<u32>) -> CniResult<Vec<Address>> {
        let replies = self.must(
            || "list addresses".into(),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewAddress(a) => parse_address(a),
                _ => None,
            })
            .filter(|a| index.is_none_or(|i| a.index == i))
            .collect())
    }

    /// Adds an address. With `nodad`, an IPv6 address is usable at once
    /// (`IFA_F_NODAD`) instead of tentative until DAD completes.
    pub fn add_address(&mut self, index: u32, addr: IpNet, nodad: bool) -> CniResult<()> {
        let mut msg = AddressMessage::default();
        msg.header.index = index;
        msg.header.prefix_len = addr.prefix_len();
        match addr {
            IpNet::V4(v4) => {
                msg.header.family = AddressFamily::Inet;
                msg.attributes
                    .push(AddressAttribute::Local(IpAddr::V4(v4.addr())));
                msg.attributes
                    .push(AddressAttribute::Address(IpAddr::V4(v4.addr())));
                if v4.prefix_len() < 31 {
                    msg.attributes
                        .push(AddressAttribute::Broadcast(v4.broadcast()));
                }
            }
            IpNet::V6(v6) => {
                msg.header.family = AddressFamily::Inet6;
                msg.attributes
                    .push(AddressAttribute::Address(IpAddr::V6(v6.addr())));
                if nodad {
                    msg.attributes
                        .push(AddressAttribute::Flags(AddressFlags::Nodad));
                }
            }
        }
        self.must(
            || format!("add address {addr} to link #{index}"),
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Every route of both families in every table, cached clones excluded.
    pub fn routes(&mut self) -> CniResult<Vec<RouteEntry>> {
        let replies = self.must(
            || "list routes".into(),
            RouteNetlinkMessage::GetRoute(RouteMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewRoute(r)
                    if !r.header.flags.contains(RouteFlags::Cloned) =>
                {
                    Some(parse_route(r))
                }
                _ => None,
            })
            .collect())
    }

    /// Adds a route (an existing identical one is an error; one with another
    /// next hop is kept beside it).
    pub fn add_route(&mut self, route: &RouteEntry) -> CniResult<()> {
        let table = if route.table == 0 {
            RT_TABLE_MAIN
        } else {
            route.table
        };
        let mut msg = route_message(route, table);
        msg.header.protocol = RouteProtocol::from(if route.protocol == 0 {
            RTPROT_BOOT
        } else {
            route.protocol
        });
        msg.header.kind = RouteType::Unicast;
        let mut metrics = Vec::new();
        if let Some(m) = route.mtu {
            metrics.push(RouteMetric::Mtu(m));
        }
        if let Some(m) = route.advmss {
            metrics.push(RouteMetric::Advmss(m));
        }
        if !metrics.is_empty() {
            msg.attributes.push(RouteAttribute::Metrics(metrics));
        }
        self.must(
            || {
                format!(
                    "add route {} via {}",
                    route
                        .dst
                        .map(|d| d.to_string())
                        .unwrap_or_else(|| "default".into()),
                    route
                        .gw
                        .map(|g| g.to_string())
                        .unwrap_or_else(|| "(on link)".into())
                )
            },
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_ACK,
        )
        .map(drop)
    }

    /// Deletes a route as [`Netlink::routes`] listed it; `false` if it was already gone.
    pub fn delete_route(&mut self, route: &RouteEntry) -> CniResult<bool> {
        let msg = route_message(route, route.table);
        match self.request(RouteNetlinkMessage::DelRoute(msg), NLM_F_ACK)? {
            Ok(_) => Ok(true),
            Err(Refused(errno)) if errno == libc_errno::ESRCH => Ok(false),
            Err(Refused(errno)) => Err(CniError::kernel(format!(
                "delete route {}: {}",
                route
                    .dst
                    .map(|d| d.to_string())
                    .unwrap_or_else(|| "default".into()),
                refused_msg(errno)
            ))),
        }
    }

    /// The output link of the main table's default route, IPv4 first.
    pub fn default_route_link(&mut self) -> CniResult<Option<u32>> {
        let routes = self.routes()?;
        let default = |v6: bool| {
            routes
                .iter()
                .find(|r| {
                    r.dst.is_none() && r.v6 == v6 && r.table == RT_TABLE_MAIN && r.oif.is_some()
                })
                .and_then(|r| r.oif)
        };
        Ok(default(false).or_else(|| default(true)))
    }
}

/// What identifies `route` in table `table` (family, destination, gateway,
/// output link, priority, scope): the part of a message adding or deleting it.
fn route_message(route: &RouteEntry, table: u32) -> RouteMessage {
    let mut msg = RouteMessage::default();
    let v6 = route.dst.map(|d| d.addr().is_ipv6()).unwrap_or(route.v6);
    msg.header.address_family = if v6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    msg.header.destination_prefix_length = route.dst.map(|d| d.prefix_len()).unwrap_or(0);
    msg.header.table = u8::try_from(table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC);
    msg.header.scope = RouteScope::from(route.scope);
    msg.attributes.push(RouteAttribute::Table(table));
    if let Some(d) = route.dst {
        msg.attributes
            .push(RouteAttribute::Destination(route_addr(d.network())));
    }
    if let Some(gw) = route.gw {
        msg.attributes.push(RouteAttribute::Gateway(route_addr(gw)));
    }
    if let Some(oif) = route.oif {
        msg.attributes.push(RouteAttribute::Oif(oif));
    }
    if let Some(p) = route.priority {
        msg.attributes.push(RouteAttribute::Priority(p));
    }
    msg
}

/// errno values we treat specially (stable Linux numbers).
mod libc_errno {
    pub const ESRCH: i32 = 3;
    pub const ENODEV: i32 = 19;
}

fn route_addr(ip: IpAddr) -> RouteAddress {
    match ip {
        IpAddr::V4(a) => RouteAddress::Inet(a),
        IpAddr::V6(a) => RouteAddress::Inet6(a),
    }
}

fn parse_link(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        kind: None,
        mac: None,
        mtu: 0,
        up: l.header.flags.contains(LinkFlags::Up),
        parent_index: None,
        macvlan_mode: None,
        ipvlan_mode: None,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Link(p) => link.parent_index = Some(*p),
            LinkAttribute::Address(b) if b.len() == 6 => {
                link.mac = Some(Mac([b[0], b[1], b[2], b[3], b[4], b[5]]))
            }
            LinkAttribute::LinkInfo(infos) => parse_link_info(infos, &mut link),
            _ => {}
        }
    }
    link
}

fn parse_link_info(infos: &[LinkInfo], link: &mut Link) {
    for i in infos {
        match i {
            LinkInfo::Kind(k) => link.kind = Some(k.to_string()),
            LinkInfo::Data(InfoData::MacVlan(d)) => {
                link.macvlan_mode = d.iter().find_map(|x| match x {
                    InfoMacVlan::Mode(MacVlanMode::Private) => Some(MacvlanMode::Private),
                    InfoMacVlan::Mode(MacVlanMode::Vepa) => Some(MacvlanMode::Vepa),
                    InfoMacVlan::Mode(MacVlanMode::Bridge) => Some(MacvlanMode::Bridge),
                    InfoMacVlan::Mode(MacVlanMode::Passthrough) => Some(MacvlanMode::Passthru),
                    _ => None,
                })
            }
            LinkInfo::Data(InfoData::IpVlan(d)) => {
                link.ipvlan_mode = d.iter().find_map(|x| match x {
                    InfoIpVlan::Mode(IpVlanMode::L2) => Some(IpvlanMode::L2),
                    InfoIpVlan::Mode(IpVlanMode::L3) => Some(IpvlanMode::L3),
                    InfoIpVlan::Mode(IpVlanMode::L3S) => Some(IpvlanMode::L3s),
                    _ => None,
                })
            }
            _ => {}
        }
    }
}

fn parse_address(a: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    let mut flags = u32::from(a.header.flags.bits());
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            AddressAttribute::Flags(f) => flags = f.bits(),
            _ => {}
        }
    }
    let ip = local.or(address)?;
    Some(Address {
        index: a.header.index,
        addr: IpNet::new(ip, a.header.prefix_len).ok()?,
        flags,
    })
}

fn parse_route(r: &RouteMessage) -> RouteEntry {
    let v6 = r.header.address_family == AddressFamily::Inet6;
    let mut e = RouteEntry {
        table: u32::from(r.header.table),
        scope: u8::from(r.header.scope),
        protocol: u8::from(r.header.protocol),
        v6,
        ..Default::default()
    };
    let ip = |a: &RouteAddress| match a {
        RouteAddress::Inet(x) => Some(IpAddr::V4(*x)),
        RouteAddress::Inet6(x) => Some(IpAddr::V6(*x)),
        _ => None,
    };
    for attr in &r.attributes {
        match attr {
            RouteAttribute::Destination(a) => {
                e.dst = ip(a).and_then(|x| IpNet::new(x, r.header.destination_prefix_length).ok())
            }
            RouteAttribute::Gateway(a) => e.gw = ip(a),
            RouteAttribute::Oif(i) => e.oif = Some(*i),
            RouteAttribute::Table(t) => e.table = *t,
            RouteAttribute::Priority(p) => e.priority = Some(*p),
            RouteAttribute::Metrics(ms) => {
                for m in ms {
                    match m {
                        RouteMetric::Mtu(x) => e.mtu = Some(*x),
                        RouteMetric::Advmss(x) => e.advmss = Some(*x),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    e
}
