//! The whole VM configuration: the `GET /vm/config` body, the `--config-file`
//! format, and the validated [`VmSpec`] handed to the VMM.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::types::{BootSource, Drive, MachineConfig, Metrics, NetworkInterface};
use crate::validate::{check_config, parse_json, ValidationError};

/// Largest config file read: far above any real one, small enough to never hurt.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// The configuration as it is being assembled (API) or written (config file).
///
/// Same objects and names as Firecracker's full VM configuration; the boot
/// source may still be missing while the API is collecting the pieces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(rename = "boot-source", default, skip_serializing_if = "Option::is_none")]
    pub boot_source: Option<BootSource>,
    #[serde(rename = "machine-config", default)]
    pub machine_config: MachineConfig,
    #[serde(default)]
    pub drives: Vec<Drive>,
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

impl VmConfig {
    /// Check every object and the rules between them.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_config(self)
    }
}

/// A complete, validated configuration: what the VMM boots.
///
/// Invariants: every object passed its validation; there is a boot source;
/// ids, tap names, NIC addresses and MACs are unique; at most one root drive,
/// and it comes first in `drives` (it becomes `/dev/vda`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VmSpec {
    #[serde(rename = "boot-source")]
    pub boot_source: BootSource,
    #[serde(rename = "machine-config")]
    pub machine_config: MachineConfig,
    pub drives: Vec<Drive>,
    #[serde(rename = "network-interfaces")]
    pub network_interfaces: Vec<NetworkInterface>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {} is larger than {MAX_CONFIG_FILE_BYTES} bytes; is it the right file?", path.display())]
    TooLarge { path: PathBuf },
    #[error("config file {}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("config file {}: {source}", path.display())]
    Invalid { path: PathBuf, source: ValidationError },
}

impl TryFrom<VmConfig> for VmSpec {
    type Error = ValidationError;

    fn try_from(cfg: VmConfig) -> Result<Self, Self::Error> {
        cfg.validate()?;
        let boot_source = cfg.boot_source.ok_or_else(|| {
            ValidationError::new("boot-source", "is required: set kernel_image_path (PUT /boot-source)")
        })?;
        let mut drives = cfg.drives;
        // Stable: the other drives keep the order the user gave.
        drives.sort_by_key(|d| !d.is_root_device);
        Ok(VmSpec {
            boot_source,
            machine_config: cfg.machine_config,
            drives,
            network_interfaces: cfg.network_interfaces,
            metrics: cfg.metrics,
        })
    }
}

impl From<VmSpec> for VmConfig {
    fn from(spec: VmSpec) -> Self {
        VmConfig {
            boot_source: Some(spec.boot_source),
            machine_config: spec.machine_config,
            drives: spec.drives,
            network_interfaces: spec.network_interfaces,
            metrics: spec.metrics,
        }
    }
}

impl VmSpec {
    /// Read, parse and validate a `--config-file`.
    pub fn from_config_file(path: &Path) -> Result<VmSpec, ConfigError> {
        let read_err = |source| ConfigError::Read { path: path.to_owned(), source };
        // Bounded read: the path may be a FIFO or a device that never ends.
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = Vec::new();
        file.take(MAX_CONFIG_FILE_BYTES + 1).read_to_end(&mut text).map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
            return Err(ConfigError::TooLarge { path: path.to_owned() });
        }
        let cfg: VmConfig =
            parse_json(&text).map_err(|message| ConfigError::Parse { path: path.to_owned(), message })?;
        VmSpec::try_from(cfg).map_err(|source| ConfigError::Invalid { path: path.to_owned(), source })
    }

    /// The root drive (`/dev/vda`), if one is configured.
    pub fn root_drive(&self) -> Option<&Drive> {
        self.drives.first().filter(|d| d.is_root_device)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write_tmp(name: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("api-spec-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().write_all(body.as_bytes()).unwrap();
        path
    }

    const GOOD: &str = r#"{
        "boot-source": {"kernel_image_path": "/k", "boot_args": "console=ttyS0", "initrd_path": "/i"},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 512},
        "drives": [
            {"drive_id": "data", "path_on_host": "/d", "is_root_device": false, "is_read_only": true},
            {"drive_id": "rootfs", "path_on_host": "/r", "is_root_device": true}
        ],
        "network-interfaces": [
            {"iface_id": "eth0", "host_dev_name": "tap0", "guest_mac": "06:00:ac:10:00:02"},
            {"iface_id": "eth1", "pnic_bdf": "0000:01:00.0"}
        ],
        "metrics": {"metrics_path": "/tmp/m.json"}
    }"#;

    #[test]
    fn good_file_parses_and_root_drive_goes_first() {
        let spec = VmSpec::from_config_file(&write_tmp("good.json", GOOD)).unwrap();
        assert_eq!(spec.machine_config.vcpu_count, 2);
        assert_eq!(spec.drives[0].drive_id, "rootfs");
        assert_eq!(spec.drives[1].drive_id, "data");
        assert_eq!(spec.root_drive().unwrap().path_on_host, Path::new("/r"));
        assert_eq!(spec.network_interfaces[1].pnic_bdf.unwrap().bus, 1);
        // The serialized spec is itself a valid config file.
        let again: VmConfig = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(VmSpec::try_from(again).unwrap(), spec);
    }

    #[test]
    fn minimal_file_takes_defaults() {
        let spec =
            VmSpec::from_config_file(&write_tmp("min.json", r#"{"boot-source":{"kernel_image_path":"/k"}}"#)).unwrap();
        assert_eq!(spec.machine_config, MachineConfig::default());
        assert!(spec.drives.is_empty() && spec.network_interfaces.is_empty() && spec.metrics.is_none());
        assert!(spec.root_drive().is_none());
    }

    #[test]
    fn errors_name_file_and_field() {
        let e = VmSpec::from_config_file(Path::new("/nonexistent/shimvmm.json")).unwrap_err().to_string();
        assert!(e.starts_with("cannot read config file /nonexistent/shimvmm.json:"), "{e}");

        let p = write_tmp("nob.json", r#"{"machine-config":{"vcpu_count":1,"mem_size_mib":128}}"#);
        let e = VmSpec::from_config_file(&p).unwrap_err().to_string();
        assert!(e.ends_with("boot-source: is required: set kernel_image_path (PUT /boot-source)"), "{e}");

        let p = write_tmp("typo.json", r#"{"boot-source":{"kernel_image_path":"/k"},"machine_config":{}}"#);
        let e = VmSpec::from_config_file(&p).unwrap_err().to_string();
        assert!(e.contains("unknown field `machine_config`"), "{e}");

        let p = write_tmp(
            "range.json",
            r#"{"boot-source":{"kernel_image_path":"/k"},"machine-config":{"vcpu_count":0,"mem_size_mib":128}}"#,
        );
        let e = VmSpec::from_config_file(&p).unwrap_err().to_string();
        assert!(e.contains("machine-config.vcpu_count: 0 is out of range"), "{e}");

        let p = write_tmp(
            "type.json",
            r#"{"boot-source":{"kernel_image_path":"/k"},"drives":[{"drive_id":"a","path_on_host":"/x","is_root_device":"yes"}]}"#,
        );
        let e = VmSpec::from_config_file(&p).unwrap_err().to_string();
        assert!(e.contains("drives[0].is_root_device: invalid type"), "{e}");

        let p = write_tmp("trunc.json", r#"{"boot-source":{"kernel_image_path":"/k""#);
        assert!(VmSpec::from_config_file(&p).unwrap_err().to_string().contains("ends early"));
    }

    #[test]
    fn oversized_file_is_refused_unread() {
        let p = write_tmp("big.json", &" ".repeat(MAX_CONFIG_FILE_BYTES as usize + 1));
        assert!(matches!(VmSpec::from_config_file(&p), Err(ConfigError::TooLarge { .. })));
    }
}
