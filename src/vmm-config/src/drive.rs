//! `drives`: virtio-blk disks backed by host files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::{check_id, check_path, Result, ValidationError};

/// Longest drive id: the guest reads it as the disk's serial
/// (VIRTIO_BLK_T_GET_ID), which has 20 bytes.
pub const MAX_DRIVE_ID_LEN: usize = 20;

/// `PUT /drives/{drive_id}`, an entry of `"drives"` in a config file,
/// `--disk` on the command line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    /// The root device is the first virtio-blk device (`/dev/vda`); at most
    /// one drive may be it.
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
}

impl Drive {
    pub fn validate(&self) -> Result {
        check_id("drive_id", &self.drive_id)?;
        if self.drive_id.len() > MAX_DRIVE_ID_LEN {
            return Err(ValidationError::new(
                "drive_id",
                format!(
                    "is {} bytes long; at most {MAX_DRIVE_ID_LEN} allowed (the guest reads it as the disk's serial)",
                    self.drive_id.len()
                ),
            ));
        }
        check_path("path_on_host", &self.path_on_host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<Drive>(
            r#"{"drive_id":"a","path_on_host":"/d","is_root_device":true,"partuuid":"x"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `partuuid`"), "{err}");
    }

    #[test]
    fn id_and_path_are_checked() {
        let d = Drive { drive_id: "a".into(), path_on_host: "/d".into(), is_root_device: true, is_read_only: false };
        assert!(d.validate().is_ok());
        assert_eq!(Drive { drive_id: "a b".into(), ..d.clone() }.validate().unwrap_err().field, "drive_id");
        assert!(Drive { drive_id: "x".repeat(MAX_DRIVE_ID_LEN), ..d.clone() }.validate().is_ok());
        let e = Drive { drive_id: "x".repeat(MAX_DRIVE_ID_LEN + 1), ..d.clone() }.validate().unwrap_err();
        assert!(e.to_string().starts_with("drive_id: is 21 bytes long; at most 20 allowed"), "{e}");
        assert_eq!(Drive { path_on_host: "".into(), ..d }.validate().unwrap_err().field, "path_on_host");
    }
}
