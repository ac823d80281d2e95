//! Request and response bodies, with Firecracker's field names.
//!
//! Every request type denies unknown fields: a misspelt field is an error the
//! user sees, not a setting silently ignored.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::ids::{MacAddr, PciBdf};

/// Application name reported by `GET /`.
pub const APP_NAME: &str = "shimvmm";
/// Version reported by `GET /` and `GET /version`.
pub const VMM_VERSION: &str = env!("CARGO_PKG_VERSION");
/// Firecracker's default vCPU count when machine-config is never set.
pub const DEFAULT_VCPU_COUNT: u32 = 1;
/// Firecracker's default guest memory when machine-config is never set.
pub const DEFAULT_MEM_SIZE_MIB: u64 = 128;

/// `PUT /boot-source`: what to boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    /// Host path of the guest kernel (bzImage or ELF vmlinux).
    pub kernel_image_path: PathBuf,
    /// Kernel command line; the VMM appends its device entries to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Host path of an initramfs, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

/// `PUT /machine-config` and `GET /machine-config`.
///
/// `smt`, `track_dirty_pages`, `cpu_template` and `huge_pages` exist so that
/// Firecracker clients sending their defaults keep working; any non-default
/// value is refused because shimvmm does not implement it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    #[serde(default)]
    pub smt: bool,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpu_count: DEFAULT_VCPU_COUNT,
            mem_size_mib: DEFAULT_MEM_SIZE_MIB,
            smt: false,
            track_dirty_pages: false,
            cpu_template: None,
            huge_pages: None,
        }
    }
}

/// `PATCH /machine-config`: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

impl MachineConfigUpdate {
    /// The configuration that results from applying this update to `base`.
    pub fn apply_to(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            cpu_template: self.cpu_template.clone().or_else(|| base.cpu_template.clone()),
            huge_pages: self.huge_pages.clone().or_else(|| base.huge_pages.clone()),
        }
    }
}

/// `PUT /drives/{drive_id}`: a virtio-blk disk backed by a host file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    /// The root device is the first virtio-blk device (`/dev/vda`).
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: bool,
}

/// `PUT /network-interfaces/{iface_id}`: a virtio-net device.
///
/// Exactly one backend: `host_dev_name` (a tap device, Firecracker's field)
/// or `pnic_bdf` (shimvmm's extension: a physical NIC bound to vfio-pci that
/// the zero-copy shim drives).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkInterface {
    pub iface_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_dev_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pnic_bdf: Option<PciBdf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_mac: Option<MacAddr>,
}

/// The backend of a validated [`NetworkInterface`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetBackendSpec<'a> {
    /// A tap device with this name.
    Tap(&'a str),
    /// A physical NIC at this PCI address, bound to vfio-pci.
    Pnic(PciBdf),
}

impl NetworkInterface {
    /// The backend; `None` only for an interface that failed validation.
    pub fn backend(&self) -> Option<NetBackendSpec<'_>> {
        match (&self.host_dev_name, self.pnic_bdf) {
            (Some(tap), None) => Some(NetBackendSpec::Tap(tap)),
            (None, Some(bdf)) => Some(NetBackendSpec::Pnic(bdf)),
            _ => None,
        }
    }
}

impl std::fmt::Display for NetBackendSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetBackendSpec::Tap(name) => write!(f, "tap {name}"),
            NetBackendSpec::Pnic(bdf) => write!(f, "vfio-pci NIC {bdf}"),
        }
    }
}

/// `PUT /metrics`: where FlushMetrics writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

/// The actions of `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

/// The VM's life-cycle state as `GET /` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
    /// The guest has shut down or crashed; the process still answers.
    Halted,
}

/// `GET /` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceInfo {
    pub id: String,
    pub state: VmState,
    pub vmm_version: String,
    pub app_name: String,
}

/// `GET /version` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmmVersion {
    pub vmm_version: String,
}

/// Every 4xx/5xx body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub fault_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<BootSource>(r#"{"kernel_image_path":"/k","bootargs":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `bootargs`"), "{err}");
        let err = serde_json::from_str::<Drive>(
            r#"{"drive_id":"a","path_on_host":"/d","is_root_device":true,"partuuid":"x"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("unknown field `partuuid`"), "{err}");
    }

    #[test]
    fn state_uses_firecracker_spelling() {
        assert_eq!(serde_json::to_string(&VmState::NotStarted).unwrap(), "\"Not started\"");
        assert_eq!(serde_json::to_string(&VmState::Running).unwrap(), "\"Running\"");
    }

    #[test]
    fn machine_config_defaults_and_patch() {
        let mc: MachineConfig = serde_json::from_str(r#"{"vcpu_count":2,"mem_size_mib":256}"#).unwrap();
        assert!(!mc.smt && !mc.track_dirty_pages);
        let patched = MachineConfigUpdate { mem_size_mib: Some(512), ..Default::default() }.apply_to(&mc);
        assert_eq!((patched.vcpu_count, patched.mem_size_mib), (2, 512));
        assert_eq!(MachineConfig::default().mem_size_mib, DEFAULT_MEM_SIZE_MIB);
    }

    #[test]
    fn interface_backend_is_exactly_one() {
        let tap: NetworkInterface = serde_json::from_str(r#"{"iface_id":"eth0","host_dev_name":"tap0"}"#).unwrap();
        assert_eq!(tap.backend(), Some(NetBackendSpec::Tap("tap0")));
        let pnic: NetworkInterface = serde_json::from_str(r#"{"iface_id":"eth0","pnic_bdf":"0000:01:00.0"}"#).unwrap();
        assert!(matches!(pnic.backend(), Some(NetBackendSpec::Pnic(_))));
        let neither: NetworkInterface = serde_json::from_str(r#"{"iface_id":"eth0"}"#).unwrap();
        assert_eq!(neither.backend(), None);
    }
}
