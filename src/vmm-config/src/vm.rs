//! The whole VM: [`VmConfig`] as it is assembled (API) or written (config
//! file, command line), and [`VmSpec`], the validated configuration the VMM
//! builds from.

use std::collections::HashSet;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::boot_source::BootSource;
use crate::drive::Drive;
use crate::entropy::Entropy;
use crate::json::{parse_json, JsonError};
use crate::logger::Logger;
use crate::machine_config::MachineConfig;
use crate::metrics::Metrics;
use crate::mmds::MmdsConfig;
use crate::net::NetworkInterface;
use crate::validate::{Result, ValidationError, MAX_DRIVES, MAX_NETWORK_INTERFACES, MAX_VIRTIO_DEVICES};
use crate::vsock::Vsock;

/// Largest config file read: far above any real one, small enough to never hurt.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// Firecracker's configuration sections whose devices shimvmm does not
/// build yet, and how an error names them. A config file or request with
/// one of them is refused with this message, never silently accepted.
pub const UNSUPPORTED_SECTIONS: &[(&str, &str)] =
    &[("balloon", "the balloon device"), ("cpu-config", "custom CPU templates")];

/// `"<what> is not supported by shimvmm yet"` for a section of
/// [`UNSUPPORTED_SECTIONS`] (or any feature named `what`).
pub fn not_supported_yet(what: &str) -> String {
    let what = UNSUPPORTED_SECTIONS.iter().find(|(section, _)| *section == what).map_or(what, |(_, w)| w);
    format!("{what} is not supported by shimvmm yet")
}

/// The configuration as it is being assembled (API) or written (config file).
///
/// Same objects and names as Firecracker's full VM configuration; the boot
/// source may still be missing while the API is collecting the pieces.
/// The sections of [`UNSUPPORTED_SECTIONS`] are parsed as any JSON so that
/// `validate` can refuse them by name; `null` (or absent) passes.
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    /// A virtio-vsock device.
    #[serde(default)]
    pub vsock: Option<Vsock>,
    /// The metadata service: which interfaces reach it, and how.
    #[serde(rename = "mmds-config", default)]
    pub mmds_config: Option<MmdsConfig>,
    #[serde(default)]
    pub balloon: Option<serde_json::Value>,
    /// A virtio-rng device.
    #[serde(default)]
    pub entropy: Option<Entropy>,
    #[serde(rename = "cpu-config", default)]
    pub cpu_config: Option<serde_json::Value>,
}

impl VmConfig {
    /// Check every object on its own, then the rules that span objects.
    /// This is the one place each rule is checked, whatever the front end.
    pub fn validate(&self) -> Result {
        for (section, value) in [("balloon", &self.balloon), ("cpu-config", &self.cpu_config)] {
            if value.is_some() {
                return Err(ValidationError::new(section, format!("{}; remove it", not_supported_yet(section))));
            }
        }
        if let Some(logger) = &self.logger {
            logger.validate().map_err(|e| e.within("logger"))?;
        }
        if let Some(entropy) = &self.entropy {
            entropy.validate().map_err(|e| e.within("entropy"))?;
        }
        if let Some(vsock) = &self.vsock {
            vsock.validate().map_err(|e| e.within("vsock"))?;
        }
        if let Some(boot) = &self.boot_source {
            boot.validate().map_err(|e| e.within("boot-source"))?;
        }
        self.machine_config.validate().map_err(|e| e.within("machine-config"))?;
        if let Some(metrics) = &self.metrics {
            metrics.validate().map_err(|e| e.within("metrics"))?;
        }
        self.check_drives()?;
        self.check_network_interfaces()?;
        self.check_mmds()?;
        let rng = usize::from(self.entropy.is_some());
        let vsock = usize::from(self.vsock.is_some());
        let devices = self.drives.len() + self.network_interfaces.len() + rng + vsock;
        if devices > MAX_VIRTIO_DEVICES {
            return Err(ValidationError::new(
                "network-interfaces",
                format!(
                    "{} drives, {} interfaces, {rng} entropy and {vsock} vsock device make {devices} devices; at most {MAX_VIRTIO_DEVICES} fit (one interrupt line each)",
                    self.drives.len(),
                    self.network_interfaces.len()
                ),
            ));
        }
        Ok(())
    }

    fn check_drives(&self) -> Result {
        if self.drives.len() > MAX_DRIVES {
            return Err(ValidationError::new(
                "drives",
                format!("{} drives given; at most {MAX_DRIVES} allowed", self.drives.len()),
            ));
        }
        let mut ids = HashSet::new();
        let mut root: Option<&str> = None;
        for (i, drive) in self.drives.iter().enumerate() {
            let at = format!("drives[{i}]");
            drive.validate().map_err(|e| e.within(&at))?;
            if !ids.insert(drive.drive_id.as_str()) {
                return Err(ValidationError::new(
                    format!("{at}.drive_id"),
                    format!("\"{}\" is used by two drives", drive.drive_id),
                ));
            }
            if drive.is_root_device {
                if let Some(other) = root {
                    return Err(ValidationError::new(
                        format!("{at}.is_root_device"),
                        format!("drive \"{other}\" is already the root device; only one drive can be"),
                    ));
                }
                root = Some(&drive.drive_id);
            }
        }
        Ok(())
    }

    /// MMDS on its own, then every interface it names exists.
    fn check_mmds(&self) -> Result {
        let Some(mmds) = &self.mmds_config else { return Ok(()) };
        mmds.validate().map_err(|e| e.within("mmds-config"))?;
        for (i, id) in mmds.network_interfaces.iter().enumerate() {
            if !self.network_interfaces.iter().any(|n| &n.iface_id == id) {
                return Err(ValidationError::new(
                    format!("mmds-config.network_interfaces[{i}]"),
                    format!("no network interface \"{}\"; PUT it first", id.escape_debug()),
                ));
            }
        }
        Ok(())
    }

    fn check_network_interfaces(&self) -> Result {
        let ifaces = &self.network_interfaces;
        if ifaces.len() > MAX_NETWORK_INTERFACES {
            return Err(ValidationError::new(
                "network-interfaces",
                format!("{} interfaces given; at most {MAX_NETWORK_INTERFACES} allowed", ifaces.len()),
            ));
        }
        let (mut ids, mut taps, mut bdfs, mut macs) = (HashSet::new(), HashSet::new(), HashSet::new(), HashSet::new());
        for (i, iface) in ifaces.iter().enumerate() {
            let at = format!("network-interfaces[{i}]");
            iface.validate().map_err(|e| e.within(&at))?;
            if !ids.insert(iface.iface_id.as_str()) {
                return Err(ValidationError::new(
                    format!("{at}.iface_id"),
                    format!("\"{}\" is used by two interfaces", iface.iface_id),
                ));
            }
            if let Some(tap) = &iface.host_dev_name {
                if !taps.insert(tap.as_str()) {
                    return Err(ValidationError::new(
                        format!("{at}.host_dev_name"),
                        format!("tap \"{tap}\" is used by two interfaces"),
                    ));
                }
            }
            if let Some(bdf) = iface.pnic_bdf {
                if !bdfs.insert(bdf) {
                    return Err(ValidationError::new(
                        format!("{at}.pnic_bdf"),
                        format!("NIC {bdf} is used by two interfaces"),
                    ));
                }
            }
            if let Some(mac) = iface.guest_mac {
                if !macs.insert(mac) {
                    return Err(ValidationError::new(
                        format!("{at}.guest_mac"),
                        format!("{mac} is used by two interfaces"),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// A complete, validated configuration: what the VMM builds.
///
/// Made only by `VmSpec::try_from(VmConfig)` (or [`VmSpec::from_config_file`]),
/// which guarantees: every object passed its validation; there is a boot
/// source; ids, tap names, NIC addresses and MACs are unique; every network
/// interface has exactly one backend; at most one root drive, and it comes
/// first in `drives` (it becomes `/dev/vda`). Other crates may read the
/// fields but cannot make a `VmSpec` from parts (`non_exhaustive`); to
/// change one, go back to a [`VmConfig`] and validate again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logger: Option<Logger>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entropy: Option<Entropy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vsock: Option<Vsock>,
    #[serde(rename = "mmds-config", skip_serializing_if = "Option::is_none")]
    pub mmds_config: Option<MmdsConfig>,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {} is larger than {MAX_CONFIG_FILE_BYTES} bytes; is it the right file?", path.display())]
    TooLarge { path: PathBuf },
    #[error("config file {}: {source}", path.display())]
    Parse { path: PathBuf, source: JsonError },
    #[error("config file {}: {source}", path.display())]
    Invalid { path: PathBuf, source: ValidationError },
}

impl TryFrom<VmConfig> for VmSpec {
    type Error = ValidationError;

    fn try_from(cfg: VmConfig) -> Result<Self> {
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
            logger: cfg.logger,
            entropy: cfg.entropy,
            vsock: cfg.vsock,
            mmds_config: cfg.mmds_config,
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
            logger: spec.logger,
            entropy: spec.entropy,
            vsock: spec.vsock,
            mmds_config: spec.mmds_config,
            ..Default::default()
        }
    }
}

impl VmSpec {
    /// Read, parse and validate a `--config-file`.
    pub fn from_config_file(path: &Path) -> std::result::Result<VmSpec, ConfigError> {
        let read_err = |source| ConfigError::Read { path: path.to_owned(), source };
        // Bounded read: the path may be a FIFO or a device that never ends.
        let file = std::fs::File::open(path).map_err(read_err)?;
        let mut text = Vec::new();
        file.take(MAX_CONFIG_FILE_BYTES + 1).read_to_end(&mut text).map_err(read_err)?;
        if text.len() as u64 > MAX_CONFIG_FILE_BYTES {
            return Err(ConfigError::TooLarge { path: path.to_owned() });
        }
        let cfg: VmConfig = parse_json(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
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
        let dir = std::env::temp_dir().join(format!("vmm-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::File::create(&path).unwrap().write_all(body.as_bytes()).unwrap();
        path
    }

    fn drive(id: &str, root: bool) -> Drive {
        Drive { drive_id: id.into(), path_on_host: PathBuf::from("/img"), is_root_device: root, ..Default::default() }
    }

    fn tap(id: &str, name: &str) -> NetworkInterface {
        NetworkInterface { iface_id: id.into(), host_dev_name: Some(name.into()), ..Default::default() }
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
            "vsock.json",
            r#"{"boot-source":{"kernel_image_path":"/k"},"vsock":{"guest_cid":2,"uds_path":"v"}}"#,
        );
        let e = VmSpec::from_config_file(&p).unwrap_err().to_string();
        assert!(e.contains("vsock.guest_cid: 2 is reserved"), "{e}");
        let p = write_tmp(
            "vsock.json",
            r#"{"boot-source":{"kernel_image_path":"/k"},"vsock":{"guest_cid":3,"uds_path":"v"}}"#,
        );
        assert_eq!(VmSpec::from_config_file(&p).unwrap().vsock.map(|v| v.guest_cid), Some(3));
        let p = write_tmp(
            "mmds.json",
            r#"{"boot-source":{"kernel_image_path":"/k"},"mmds-config":{"network_interfaces":["eth0"]}}"#,
        );
        let e = VmSpec::from_config_file(&p).unwrap_err().to_string();
        assert!(e.ends_with("mmds-config.network_interfaces[0]: no network interface \"eth0\"; PUT it first"), "{e}");
        let p = write_tmp(
            "mmds-ok.json",
            r#"{"boot-source":{"kernel_image_path":"/k"},"network-interfaces":[{"iface_id":"eth0","host_dev_name":"tap0"}],
                "mmds-config":{"version":"V2","network_interfaces":["eth0"]}}"#,
        );
        let spec = VmSpec::from_config_file(&p).unwrap();
        assert_eq!(spec.mmds_config.map(|m| m.version), Some(crate::MmdsVersion::V2));
        let p = write_tmp("nulls.json", r#"{"boot-source":{"kernel_image_path":"/k"},"vsock":null,"balloon":null}"#);
        assert!(VmSpec::from_config_file(&p).is_ok());

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

    #[test]
    fn cross_object_rules() {
        let mut cfg = VmConfig { drives: vec![drive("a", true), drive("b", false)], ..Default::default() };
        assert!(cfg.validate().is_ok());
        cfg.drives.push(drive("c", true));
        let e = cfg.validate().unwrap_err();
        assert_eq!(e.field, "drives[2].is_root_device");
        assert!(e.problem.contains("\"a\" is already the root device"));
        cfg.drives = vec![drive("a", false), drive("a", false)];
        assert_eq!(cfg.validate().unwrap_err().field, "drives[1].drive_id");
        cfg.drives.clear();

        cfg.network_interfaces = vec![tap("eth0", "tap0"), tap("eth1", "tap0")];
        assert_eq!(cfg.validate().unwrap_err().field, "network-interfaces[1].host_dev_name");
        let mut p1 = tap("eth0", "x");
        p1.host_dev_name = None;
        p1.pnic_bdf = Some("01:00.0".parse().unwrap());
        let mut p2 = p1.clone();
        p2.iface_id = "eth1".into();
        cfg.network_interfaces = vec![p1, p2];
        assert_eq!(cfg.validate().unwrap_err().field, "network-interfaces[1].pnic_bdf");
        let mut m1 = tap("eth0", "tap0");
        m1.guest_mac = Some("02:00:00:00:00:01".parse().unwrap());
        let mut m2 = tap("eth1", "tap1");
        m2.guest_mac = m1.guest_mac;
        cfg.network_interfaces = vec![m1, m2];
        assert_eq!(cfg.validate().unwrap_err().field, "network-interfaces[1].guest_mac");

        cfg.network_interfaces =
            (0..=MAX_NETWORK_INTERFACES).map(|i| tap(&format!("e{i}"), &format!("t{i}"))).collect();
        assert_eq!(cfg.validate().unwrap_err().field, "network-interfaces");

        // Drives and interfaces share the interrupt lines.
        cfg.network_interfaces = (0..MAX_NETWORK_INTERFACES).map(|i| tap(&format!("e{i}"), &format!("t{i}"))).collect();
        cfg.drives = (0..MAX_VIRTIO_DEVICES - MAX_NETWORK_INTERFACES).map(|i| drive(&format!("d{i}"), false)).collect();
        assert!(cfg.validate().is_ok());
        cfg.drives.push(drive("one-too-many", false));
        assert!(cfg.validate().unwrap_err().problem.contains("at most 19 fit"));
        // The entropy device takes a line too.
        cfg.drives.pop();
        cfg.entropy = Some(Default::default());
        assert!(cfg.validate().unwrap_err().problem.contains("1 entropy and 0 vsock device make 20 devices"));
    }
}
