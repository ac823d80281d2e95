//! `drives`: virtio-blk disks backed by host files.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::rate_limiter::{none_if_unlimited, RateLimiter};
use crate::validate::{check_id, check_path, Result, ValidationError};

/// Longest drive id: the guest reads it as the disk's serial
/// (VIRTIO_BLK_T_GET_ID), which has 20 bytes.
pub const MAX_DRIVE_ID_LEN: usize = 20;

/// Firecracker's `cache_type`. shimvmm always offers the guest a flush
/// command and honours it, which is `Writeback`; `Unsafe` (no flush offered)
/// is accepted and served the same, safer way.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheType {
    #[default]
    Unsafe,
    Writeback,
}

/// Firecracker's `io_engine`: shimvmm does synchronous I/O only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum IoEngine {
    #[default]
    Sync,
    Async,
}

/// `PUT /drives/{drive_id}`, an entry of `"drives"` in a config file,
/// `--disk` on the command line.
///
/// Firecracker's fields that shimvmm does not implement yet (`partuuid`,
/// `socket`, `io_engine` `Async`) are parsed so that a
/// client gets a clear refusal (`validate`), not an "unknown field".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    /// The root device is the first virtio-blk device (`/dev/vda`); at most
    /// one drive may be it.
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
    #[serde(default)]
    pub partuuid: Option<String>,
    #[serde(default)]
    pub cache_type: CacheType,
    #[serde(default)]
    pub io_engine: IoEngine,
    #[serde(default, deserialize_with = "none_if_unlimited")]
    pub rate_limiter: Option<RateLimiter>,
    /// vhost-user-blk backend socket (not supported).
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

/// `PATCH /drives/{drive_id}`: a new backing file and/or rate limiter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriveUpdate {
    pub drive_id: String,
    #[serde(default)]
    pub path_on_host: Option<PathBuf>,
    #[serde(default, deserialize_with = "none_if_unlimited")]
    pub rate_limiter: Option<RateLimiter>,
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
        check_path("path_on_host", &self.path_on_host)?;
        if self.partuuid.is_some() {
            return Err(ValidationError::new(
                "partuuid",
                "booting from a partition UUID is not supported by shimvmm yet; omit it (the root drive is /dev/vda)",
            ));
        }
        if self.socket.is_some() {
            return Err(ValidationError::new("socket", "vhost-user drives are not supported by shimvmm yet; omit it"));
        }
        if self.io_engine == IoEngine::Async {
            return Err(ValidationError::new(
                "io_engine",
                "\"Async\" (io_uring) is not supported by shimvmm yet; omit it or use \"Sync\"",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let err =
            serde_json::from_str::<Drive>(r#"{"drive_id":"a","path_on_host":"/d","is_root_device":true,"bogus":"x"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("unknown field `bogus`"), "{err}");
    }

    #[test]
    fn id_and_path_are_checked() {
        let d = Drive { drive_id: "a".into(), path_on_host: "/d".into(), is_root_device: true, ..Default::default() };
        assert!(d.validate().is_ok());
        assert_eq!(Drive { drive_id: "a b".into(), ..d.clone() }.validate().unwrap_err().field, "drive_id");
        assert!(Drive { drive_id: "x".repeat(MAX_DRIVE_ID_LEN), ..d.clone() }.validate().is_ok());
        let e = Drive { drive_id: "x".repeat(MAX_DRIVE_ID_LEN + 1), ..d.clone() }.validate().unwrap_err();
        assert!(e.to_string().starts_with("drive_id: is 21 bytes long; at most 20 allowed"), "{e}");
        assert_eq!(Drive { path_on_host: "".into(), ..d.clone() }.validate().unwrap_err().field, "path_on_host");
        assert_eq!(Drive { partuuid: Some("x".into()), ..d.clone() }.validate().unwrap_err().field, "partuuid");
        assert_eq!(Drive { io_engine: IoEngine::Async, ..d.clone() }.validate().unwrap_err().field, "io_engine");
        let fc: Drive = serde_json::from_str(
            r#"{"drive_id":"a","path_on_host":"/d","is_root_device":false,"cache_type":"Writeback",
                "io_engine":"Sync","rate_limiter":{"bandwidth":null,"ops":null},"partuuid":null,"socket":null}"#,
        )
        .unwrap();
        assert!(fc.validate().is_ok());
    }
}
