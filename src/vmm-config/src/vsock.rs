//! `vsock`: a virtio-vsock device with Firecracker's host side, a Unix
//! socket at `uds_path` (Firecracker's `PUT /vsock`).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::{check_path, Result, ValidationError};

/// Lowest CID a guest may have: 0 and 1 are reserved, 2 is the host.
pub const MIN_GUEST_CID: u32 = 3;
/// Longest `uds_path`: a Unix socket path (sun_path) holds 107 bytes and a NUL.
pub const MAX_UDS_PATH_LEN: usize = 107;

/// `PUT /vsock`, `"vsock"` in a config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    /// Deprecated by Firecracker; accepted and ignored.
    #[serde(default, skip_serializing)]
    pub vsock_id: Option<String>,
    /// The guest's context id (3 and up; 0xffffffff is VMADDR_CID_ANY).
    pub guest_cid: u32,
    /// Where host processes connect; guest connections to host port P go to `<uds_path>_P`.
    pub uds_path: PathBuf,
}

impl Vsock {
    pub fn validate(&self) -> Result {
        if self.guest_cid < MIN_GUEST_CID || self.guest_cid == u32::MAX {
            return Err(ValidationError::new(
                "guest_cid",
                format!(
                    "{} is reserved (0 and 1: hypervisor, 2: host, 4294967295: any); use 3 or more",
                    self.guest_cid
                ),
            ));
        }
        check_path("uds_path", &self.uds_path)?;
        let len = self.uds_path.as_os_str().len();
        if len > MAX_UDS_PATH_LEN {
            return Err(ValidationError::new(
                "uds_path",
                format!("is {len} bytes long; a Unix socket path holds at most {MAX_UDS_PATH_LEN}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecrackers_bodies() {
        let v: Vsock = serde_json::from_str(r#"{"guest_cid": 3, "uds_path": "/run/v.sock"}"#).unwrap();
        assert!(v.validate().is_ok());
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"guest_cid":3,"uds_path":"/run/v.sock"}"#);
        let v: Vsock = serde_json::from_str(r#"{"vsock_id": "vsock0", "guest_cid": 52, "uds_path": "v"}"#).unwrap();
        assert!(v.validate().is_ok());
        assert!(serde_json::from_str::<Vsock>(r#"{"guest_cid": 3}"#).is_err());
        assert!(serde_json::from_str::<Vsock>(r#"{"guest_cid": 3, "uds_path": "v", "x": 1}"#).is_err());
        assert!(serde_json::from_str::<Vsock>(r#"{"guest_cid": -1, "uds_path": "v"}"#).is_err());
        for cid in [0, 1, 2, u32::MAX] {
            let v = Vsock { vsock_id: None, guest_cid: cid, uds_path: "v".into() };
            assert!(v.validate().unwrap_err().to_string().starts_with("guest_cid: "), "{cid}");
        }
        let v = Vsock { vsock_id: None, guest_cid: 3, uds_path: "".into() };
        assert_eq!(v.validate().unwrap_err().to_string(), "uds_path: must not be empty");
        let v = Vsock { vsock_id: None, guest_cid: 3, uds_path: "a".repeat(108).into() };
        assert!(v.validate().unwrap_err().to_string().contains("at most 107"));
    }
}
