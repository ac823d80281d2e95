//! `mmds-config`: which interfaces reach the microVM metadata service, at
//! which address, and which version of its protocol the guest speaks
//! (Firecracker's `PUT /mmds/config`).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::validate::{Result, ValidationError};

/// The address the guest reaches MMDS at unless `ipv4_address` says otherwise.
pub const MMDS_DEFAULT_IPV4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// Firecracker's default limit on the MMDS document (bytes of its JSON).
pub const MMDS_DEFAULT_SIZE_LIMIT: usize = 51200;

/// The protocol the guest must speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum MmdsVersion {
    /// GETs need no session token.
    #[default]
    V1,
    /// GETs need a token from `PUT /latest/api/token`.
    V2,
}

/// `PUT /mmds/config`, `"mmds-config"` in a config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmdsConfig {
    #[serde(default)]
    pub version: MmdsVersion,
    /// Ids of the network interfaces whose guest traffic to `ipv4_address`
    /// goes to MMDS instead of the backend.
    pub network_interfaces: Vec<String>,
    /// Where the guest reaches MMDS; `None`: [`MMDS_DEFAULT_IPV4`].
    #[serde(default)]
    pub ipv4_address: Option<Ipv4Addr>,
    /// Answer as EC2's IMDS does: plain text whatever the Accept header.
    /// (Firecracker v1.13's; left out of the output when false, as v1.12
    /// has no such field.)
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub imds_compat: bool,
}

impl MmdsConfig {
    /// The address MMDS answers on.
    pub fn ipv4(&self) -> Ipv4Addr {
        self.ipv4_address.unwrap_or(MMDS_DEFAULT_IPV4)
    }

    /// The rules of the object on its own (that each interface exists is
    /// [`crate::VmConfig::validate`]'s).
    pub fn validate(&self) -> Result {
        if self.network_interfaces.is_empty() {
            return Err(ValidationError::new(
                "network_interfaces",
                "is empty; name at least one network interface that may reach MMDS",
            ));
        }
        if let Some(ip) = self.ipv4_address {
            if !ip.is_link_local() {
                return Err(ValidationError::new(
                    "ipv4_address",
                    format!("{ip} is not link-local; use an address in 169.254.0.0/16"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecrackers_bodies() {
        let c: MmdsConfig = serde_json::from_str(r#"{"network_interfaces":["eth0"]}"#).unwrap();
        assert_eq!(c.version, MmdsVersion::V1);
        assert_eq!(c.ipv4(), MMDS_DEFAULT_IPV4);
        assert!(c.validate().is_ok());
        let c: MmdsConfig = serde_json::from_str(
            r#"{"version":"V2","network_interfaces":["a","b"],"ipv4_address":"169.254.170.2","imds_compat":true}"#,
        )
        .unwrap();
        assert_eq!((c.version, c.ipv4(), c.imds_compat), (MmdsVersion::V2, Ipv4Addr::new(169, 254, 170, 2), true));
        assert!(serde_json::from_str::<MmdsConfig>(r#"{"version":"V3","network_interfaces":[]}"#).is_err());
        assert!(serde_json::from_str::<MmdsConfig>(r#"{"network_interfaces":[],"x":1}"#).is_err());
        assert!(serde_json::from_str::<MmdsConfig>(r#"{}"#).is_err());
    }

    #[test]
    fn rules() {
        let c: MmdsConfig = serde_json::from_str(r#"{"network_interfaces":[]}"#).unwrap();
        assert!(c.validate().unwrap_err().to_string().starts_with("network_interfaces: is empty"));
        let c: MmdsConfig = serde_json::from_str(r#"{"network_interfaces":["a"],"ipv4_address":"10.0.0.1"}"#).unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("not link-local"));
    }
}
