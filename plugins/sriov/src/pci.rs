//! PCI addresses and SR-IOV discovery in sysfs: a VF's PF, its index among
//! the PF's VFs, its netdev and its driver.
//!
//! The sysfs root is `/sys`; `MANIFOLD_SRIOV_SYSFS_ROOT` overrides it for
//! tests only (a fake tree of `bus/pci/devices/*` directories with
//! `physfn`, `virtfnN`, `net/*` and `driver` entries).

use manifold_common::{CniError, CniResult};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Test-only override of the sysfs root.
pub const SYSFS_ROOT_ENV: &str = "MANIFOLD_SRIOV_SYSFS_ROOT";

/// Drivers that hand a VF to user space (DPDK): the VF has no netdev.
const DPDK_DRIVERS: [&str; 3] = ["vfio-pci", "uio_pci_generic", "igb_uio"];

/// A PCI address in canonical form `dddd:bb:dd.f`, lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddr(String);

impl PciAddr {
    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A link name derived from the address, unique per VF and at most 15
    /// bytes: the VF's netdev carries it while it moves between namespaces,
    /// so it never collides with a name already in use on either side.
    pub fn transit_name(&self) -> String {
        let digits: String = self.0.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        format!("mfs{digits}")
    }
}

impl FromStr for PciAddr {
    type Err = CniError;

    /// Accepts exactly `dddd:bb:dd.f` (hex domain, bus and device up to 1f,
    /// function 0-7), in either case: nothing that could walk a path.
    fn from_str(s: &str) -> CniResult<Self> {
        let bad = || {
            CniError::config(format!(
                "{s:?} is not a PCI address of the form dddd:bb:dd.f (e.g. 0000:03:02.1)"
            ))
        };
        let b = s.as_bytes();
        if b.len() != 12 || b[4] != b':' || b[7] != b':' || b[10] != b'.' {
            return Err(bad());
        }
        let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
        if !(hex(0..4) && hex(5..7) && hex(8..10) && (b'0'..=b'7').contains(&b[11])) {
            return Err(bad());
        }
        let device = u8::from_str_radix(&s[8..10], 16).map_err(|_| bad())?;
        if device > 0x1f {
            return Err(bad());
        }
        Ok(PciAddr(s.to_ascii_lowercase()))
    }
}

impl fmt::Display for PciAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What sysfs says about a VF.
#[derive(Debug, Clone)]
pub struct VfDevice {
    /// The VF.
    pub pci: PciAddr,
    /// Its PF.
    pub pf_pci: PciAddr,
    /// The PF's netdev, which takes the VF settings.
    pub pf_name: String,
    /// The VF's index on the PF (`virtfnN`).
    pub index: u32,
    /// The bound driver.
    pub driver: Option<String>,
}

impl VfDevice {
    /// Bound to a user-space (DPDK) driver.
    pub fn is_dpdk(&self) -> bool {
        self.driver
            .as_deref()
            .is_some_and(|d| DPDK_DRIVERS.contains(&d))
    }
}

/// A VF's netdev as sysfs lists it (`net/<name>/ifindex`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysNetdev {
    /// Its name when sysfs was read.
    pub name: String,
    /// Its index, which survives renames.
    pub ifindex: Option<u32>,
}

/// A sysfs tree.
#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

fn base_name(p: &Path) -> Option<String> {
    p.file_name().map(|n| n.to_string_lossy().into_owned())
}

/// Entries of a directory, sorted; none when it does not exist.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

impl Sysfs {
    /// `/sys`, or the test override.
    pub fn from_env() -> Self {
        let root = std::env::var_os(SYSFS_ROOT_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/sys"));
        Sysfs { root }
    }

    /// `bus/pci/devices`, which STATUS checks is readable.
    pub fn devices_dir(&self) -> PathBuf {
        self.root.join("bus/pci/devices")
    }

    fn device_dir(&self, pci: &PciAddr) -> PathBuf {
        self.devices_dir().join(pci.as_str())
    }

    /// The PCI address a sysfs link (`physfn`, `virtfnN`) points at.
    fn linked_device(&self, link: &Path) -> Option<String> {
        std::fs::canonicalize(link).ok().and_then(|p| base_name(&p))
    }

    /// Whether the PCI device exists.
    pub fn exists(&self, pci: &PciAddr) -> bool {
        self.device_dir(pci).exists()
    }

    /// The VF's netdev in the calling netns's view of sysfs, if any.
    pub fn netdev(&self, pci: &PciAddr) -> Option<SysNetdev> {
        let net = self.device_dir(pci).join("net");
        let name = entries(&net).into_iter().next()?;
        let ifindex = std::fs::read_to_string(net.join(&name).join("ifindex"))
            .ok()
            .and_then(|s| s.trim().parse().ok());
        Some(SysNetdev { name, ifindex })
    }

    /// Everything about the VF at `pci`; a missing device, a device that is
    /// not a VF or a PF without netdev is an invalid config (7).
    pub fn vf(&self, pci: &PciAddr) -> CniResult<VfDevice> {
        let dir = self.device_dir(pci);
        let real = std::fs::canonicalize(&dir)
            .map_err(|_| CniError::config(format!("deviceID {pci}: no such PCI device")))?;
        if base_name(&real).as_deref() != Some(pci.as_str()) {
            return Err(CniError::config(format!(
                "deviceID {pci}: sysfs entry does not name that device"
            )));
        }
        let pf = self.linked_device(&dir.join("physfn")).ok_or_else(|| {
            CniError::config(format!(
                "deviceID {pci} is not an SR-IOV VF (it has no physical function)"
            ))
        })?;
        let pf_pci: PciAddr = pf.parse().map_err(|e: CniError| {
            CniError::config(format!("deviceID {pci}: physical function {}", e.msg))
        })?;
        let pf_dir = self.device_dir(&pf_pci);
        let index = entries(&pf_dir)
            .iter()
            .filter_map(|n| n.strip_prefix("virtfn")?.parse::<u32>().ok())
            .find(|i| {
                self.linked_device(&pf_dir.join(format!("virtfn{i}")))
                    .as_deref()
                    == Some(pci.as_str())
            })
            .ok_or_else(|| {
                CniError::config(format!(
                    "deviceID {pci}: not among the VFs of its physical function {pf_pci}"
                ))
            })?;
        let pf_name = entries(&pf_dir.join("net"))
            .into_iter()
            .next()
            .ok_or_else(|| {
                CniError::config(format!(
                    "deviceID {pci}: physical function {pf_pci} has no network interface"
                ))
            })?;
        let driver = std::fs::read_link(dir.join("driver"))
            .ok()
            .and_then(|p| base_name(&p));
        Ok(VfDevice {
            pci: pci.clone(),
            pf_pci,
            pf_name,
            index,
            driver,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn transit_names_fit_and_differ() {
        let a: PciAddr = "0000:03:00.1".parse().unwrap();
        let b: PciAddr = "0000:03:00.2".parse().unwrap();
        assert_eq!(a.transit_name(), "mfs000003001");
        assert!(a.transit_name().len() <= 15);
        assert_ne!(a.transit_name(), b.transit_name());
    }

    /// A fake tree in a temp dir (unprivileged).
    #[test]
    fn discovers_pf_index_netdev_and_driver() {
        let root = std::env::temp_dir().join(format!("mfs-sysfs-unit-{}", std::process::id()));
        let dev = root.join("bus/pci/devices");
        let pf = dev.join("0000:03:00.0");
        let vf = dev.join("0000:03:00.3");
        std::fs::create_dir_all(pf.join("net/pf0")).unwrap();
        std::fs::create_dir_all(vf.join("net/vf2")).unwrap();
        std::fs::create_dir_all(root.join("bus/pci/drivers/vfio-pci")).unwrap();
        symlink("../0000:03:00.0", vf.join("physfn")).unwrap();
        symlink("../0000:03:00.3", pf.join("virtfn2")).unwrap();
        symlink("../../drivers/vfio-pci", vf.join("driver")).unwrap();
        let s = Sysfs { root: root.clone() };
        let v = s.vf(&"0000:03:00.3".parse().unwrap()).unwrap();
        assert_eq!(v.pf_name, "pf0");
        assert_eq!(v.pf_pci.as_str(), "0000:03:00.0");
        assert_eq!(v.index, 2);
        std::fs::write(vf.join("net/vf2/ifindex"), "42\n").unwrap();
        let n = s.netdev(&v.pci).unwrap();
        assert_eq!((n.name.as_str(), n.ifindex), ("vf2", Some(42)));
        assert!(v.is_dpdk());
        let e = s.vf(&"0000:03:00.0".parse().unwrap()).unwrap_err();
        assert!(e.msg.contains("not an SR-IOV VF"), "{e}");
        let e = s.vf(&"0000:09:00.0".parse().unwrap()).unwrap_err();
        assert!(e.msg.contains("no such PCI device"), "{e}");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
