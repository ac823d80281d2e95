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
    /// The guest's address (and the pNIC's filter); random when absent.
    #[serde(default)]
    pub guest_mac: Option<MacAddr>,
    /// Token buckets on what the guest receives and sends.
    #[serde(default, deserialize_with = "none_if_unlimited")]
    pub rx_rate_limiter: Option<RateLimiter>,
    #[serde(default, deserialize_with = "none_if_unlimited")]
    pub tx_rate_limiter: Option<RateLimiter>,
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
        match self.backend()? {
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
