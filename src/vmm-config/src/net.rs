//! `network-interfaces`: virtio-net devices and their host backends.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{MacAddr, PciBdf};
use crate::rate_limiter::{none_if_unlimited, RateLimiter};
use crate::validate::{check_id, Result, ValidationError, MAX_IFNAME_LEN};

/// `PUT /network-interfaces/{iface_id}`, an entry of `"network-interfaces"`
/// in a config file, `--net` on the command line.
///
/// Exactly one backend: `host_dev_name` (a tap device, Firecracker's field)
/// or `pnic_bdf` (shimvmm's extension: a physical NIC bound to vfio-pci that
/// the zero-copy shim drives). [`NetworkInterface::backend`] is the one place
/// that rule lives.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    #[serde(default)]
    pub host_dev_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pnic_bdf: Option<PciBdf>,
    /// How the pNIC reaches guest RAM (shimvmm's extension, with `pnic_bdf`
    /// only); [`PnicDma::Ram`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pnic_dma: Option<PnicDma>,
    /// The guest's address (and the pNIC's filter); random when absent.
    #[serde(default)]
    pub guest_mac: Option<MacAddr>,
    /// shimvmm's extension: the guest's MTU ([`MTU_MIN`]..=[`MTU_MAX`],
    /// [`MTU_DEFAULT`] when absent), offered as VIRTIO_NET_F_MTU; the pNIC's
    /// frame cap or the tap's MTU follows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u16>,
    /// Token buckets on what the guest receives and sends.
    #[serde(default, deserialize_with = "none_if_unlimited")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, deserialize_with = "none_if_unlimited")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// What of guest RAM a pNIC behind VFIO can reach through the IOMMU
/// (IOVA = guest-physical address either way).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PnicDma {
    /// All of guest RAM, mapped once at start (no per-packet IOMMU work).
    #[default]
    Ram,
    /// Only the pages of the guest buffers the NIC owns, mapped when a buffer
    /// is handed to the NIC and unmapped when it comes back: a NIC write
    /// anywhere else is an IOMMU fault the host kernel logs. A debugging and
    /// proof mode; every buffer costs map and unmap calls.
    Strict,
}

impl PnicDma {
    /// The `--net ...,dma=` value.
    pub fn as_str(self) -> &'static str {
        match self {
            PnicDma::Ram => "ram",
            PnicDma::Strict => "strict",
        }
    }
}

impl std::str::FromStr for PnicDma {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "ram" => Ok(PnicDma::Ram),
            "strict" => Ok(PnicDma::Strict),
            _ => Err(format!(
                "{s:?} is not a DMA mode: give ram (all guest RAM mapped) or strict (only the buffers the NIC owns)"
            )),
        }
    }
}

/// `PATCH /network-interfaces/{iface_id}`: new rate limiters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterfaceUpdate {
    pub iface_id: String,
    #[serde(default, deserialize_with = "none_if_unlimited")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, deserialize_with = "none_if_unlimited")]
    pub tx_rate_limiter: Option<RateLimiter>,
}

/// The MTU range `mtu` takes: IPv4's minimum to 9000 (jumbo frames).
pub const MTU_MIN: u16 = 68;
pub const MTU_MAX: u16 = 9000;
pub const MTU_DEFAULT: u16 = 1500;

/// The backend of a [`NetworkInterface`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetBackendSpec<'a> {
    /// A tap device with this name.
    Tap(&'a str),
    /// A physical NIC at this PCI address, bound to vfio-pci.
    Pnic(PciBdf),
}

impl fmt::Display for NetBackendSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetBackendSpec::Tap(name) => write!(f, "tap {name}"),
            NetBackendSpec::Pnic(bdf) => write!(f, "vfio-pci NIC {bdf}"),
        }
    }
}

impl NetworkInterface {
    /// The backend, if exactly one is given.
    pub fn backend(&self) -> Result<NetBackendSpec<'_>> {
        match (&self.host_dev_name, self.pnic_bdf) {
            (Some(tap), None) => Ok(NetBackendSpec::Tap(tap)),
            (None, Some(bdf)) => Ok(NetBackendSpec::Pnic(bdf)),
            (Some(_), Some(_)) => Err(ValidationError::new(
                "host_dev_name",
                "give exactly one of host_dev_name (a tap device) or pnic_bdf (a vfio-pci NIC), not both",
            )),
            (None, None) => Err(ValidationError::new(
                "host_dev_name",
                "missing: give exactly one of host_dev_name (a tap device) or pnic_bdf (a vfio-pci NIC)",
            )),
        }
    }

    pub fn validate(&self) -> Result {
        check_id("iface_id", &self.iface_id)?;
        if let Some(mtu) = self.mtu {
            if !(MTU_MIN..=MTU_MAX).contains(&mtu) {
                return Err(ValidationError::new(
                    "mtu",
                    format!("{mtu} is outside {MTU_MIN}..={MTU_MAX} (default {MTU_DEFAULT})"),
                ));
            }
        }
        match self.backend()? {
            NetBackendSpec::Tap(_) if self.pnic_dma.is_some() => {
                Err(ValidationError::new("pnic_dma", "applies to a pNIC (pnic_bdf) only; remove it for a tap device"))
            }
            NetBackendSpec::Tap(name) => check_ifname("host_dev_name", name),
            // PciBdf and MacAddr were checked when parsed.
            NetBackendSpec::Pnic(_) => Ok(()),
        }
    }
}

/// A Linux network device name as the kernel accepts it (dev_valid_name).
pub fn check_ifname(field: &str, name: &str) -> Result {
    if name.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(ValidationError::new(
            field,
            format!("\"{}\" is {} bytes long; Linux allows at most {MAX_IFNAME_LEN}", name.escape_debug(), name.len()),
        ));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(ValidationError::new(
            field,
            format!(
                "\"{}\" is not a valid Linux interface name (no '/', ':', spaces, \".\" or \"..\")",
                name.escape_debug()
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap(id: &str, name: &str) -> NetworkInterface {
        NetworkInterface { iface_id: id.into(), host_dev_name: Some(name.into()), ..Default::default() }
    }

    #[test]
    fn backend_is_exactly_one() {
        let t: NetworkInterface = serde_json::from_str(r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#).unwrap();
        assert_eq!(t.backend(), Ok(NetBackendSpec::Tap("tap0")));
        let p: NetworkInterface = serde_json::from_str(r#"{"iface_id":"eth0","pnic_bdf":"0000:01:00.0"}"#).unwrap();
        assert_eq!(p.backend().unwrap().to_string(), "vfio-pci NIC 0000:01:00.0");
        let neither: NetworkInterface = serde_json::from_str(r#"{"iface_id":"eth0"}"#).unwrap();
        assert!(neither.backend().unwrap_err().problem.contains("missing"));
        let both = NetworkInterface { pnic_bdf: p.pnic_bdf, ..t };
        assert!(both.validate().unwrap_err().problem.contains("not both"));
    }

    #[test]
    fn pnic_dma_is_ram_by_default_strict_on_request_and_pnic_only() {
        let p: NetworkInterface = serde_json::from_str(r#"{"iface_id":"eth0","pnic_bdf":"0000:01:00.0"}"#).unwrap();
        assert_eq!(p.pnic_dma.unwrap_or_default(), PnicDma::Ram);
        assert!(!serde_json::to_string(&p).unwrap().contains("pnic_dma"), "absent stays absent");
        let s: NetworkInterface =
            serde_json::from_str(r#"{"iface_id":"eth0","pnic_bdf":"0000:01:00.0","pnic_dma":"strict"}"#).unwrap();
        assert_eq!(s.pnic_dma, Some(PnicDma::Strict));
        assert!(s.validate().is_ok());
        assert!(serde_json::from_str::<NetworkInterface>(r#"{"iface_id":"e","pnic_bdf":"01:00.0","pnic_dma":"x"}"#)
            .is_err());
        let t = NetworkInterface { pnic_dma: Some(PnicDma::Strict), ..tap("eth0", "tap0") };
        assert_eq!(t.validate().unwrap_err().field, "pnic_dma");
        assert_eq!("strict".parse::<PnicDma>(), Ok(PnicDma::Strict));
        assert_eq!("ram".parse::<PnicDma>().map(PnicDma::as_str), Ok("ram"));
        assert!("on".parse::<PnicDma>().unwrap_err().contains("give ram"));
    }

    #[test]
    fn mtu_is_optional_and_bounded() {
        let n: NetworkInterface =
            serde_json::from_str(r#"{"iface_id":"eth0","pnic_bdf":"0000:01:00.0","mtu":9000}"#).unwrap();
        assert_eq!(n.mtu, Some(9000));
        assert!(n.validate().is_ok());
        for bad in [67u16, 9001] {
            let e = NetworkInterface { mtu: Some(bad), ..n.clone() }.validate().unwrap_err();
            assert_eq!(e.field, "mtu");
            assert!(e.problem.contains("68..=9000"), "{e}");
        }
        let plain = tap("eth0", "tap0");
        assert_eq!(serde_json::to_value(&plain).unwrap().get("mtu"), None, "absent unless set");
    }

    #[test]
    fn tap_names_follow_linux() {
        assert!(tap("eth0", "tap0").validate().is_ok());
        let e = tap("eth0", "a-very-long-tapname").validate().unwrap_err();
        assert_eq!(e.field, "host_dev_name");
        assert!(e.problem.contains("at most 15"), "{e}");
        assert!(tap("eth0", &"t".repeat(MAX_IFNAME_LEN)).validate().is_ok());
        for bad in ["..", "a/b", "a b", "a:1"] {
            assert!(tap("eth0", bad).validate().unwrap_err().problem.contains("not a valid"), "{bad}");
        }
        assert_eq!(tap("bad id", "t").validate().unwrap_err().field, "iface_id");
    }
}
