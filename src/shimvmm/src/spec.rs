//! Translation between the API/config-file objects ([`api::VmSpec`]) and the
//! VMM's own [`vmm::VmConfig`].

use std::str::FromStr;

use api::{BootSource, Drive, MacAddr, MachineConfig, NetworkInterface, PciBdf, VmSpec};
use vmm::config::{self, DiskConfig, NetBackendConfig, NetConfig, VmConfig};

pub fn spec_to_config(spec: &VmSpec) -> Result<VmConfig, String> {
    let vcpus = u8::try_from(spec.machine_config.vcpu_count)
        .map_err(|_| format!("machine-config.vcpu_count {} is too large", spec.machine_config.vcpu_count))?;
    let disks = spec
        .drives
        .iter()
        .map(|d| DiskConfig {
            id: d.drive_id.clone(),
            path: d.path_on_host.clone(),
            read_only: d.is_read_only,
            root: d.is_root_device,
        })
        .collect();
    let nets = spec
        .network_interfaces
        .iter()
        .map(|n| {
            let backend = match (&n.host_dev_name, &n.pnic_bdf) {
                (Some(tap), None) => NetBackendConfig::Tap { name: tap.clone() },
                (None, Some(bdf)) => NetBackendConfig::Vfio { bdf: bdf.to_string() },
                _ => {
                    return Err(format!(
                        "network-interfaces[{}]: give exactly one of host_dev_name or pnic_bdf",
                        n.iface_id
                    ))
                }
            };
            Ok(NetConfig { id: n.iface_id.clone(), backend, mac: n.guest_mac.map(|m| m.octets()) })
        })
        .collect::<Result<_, _>>()?;
    let c = VmConfig {
        kernel: spec.boot_source.kernel_image_path.clone(),
        initrd: spec.boot_source.initrd_path.clone(),
        cmdline: spec.boot_source.boot_args.clone().unwrap_or_else(|| config::DEFAULT_CMDLINE.to_string()),
        vcpus,
        mem_mib: spec.machine_config.mem_size_mib,
        disks,
        nets,
        metrics_path: spec.metrics.as_ref().map(|m| m.metrics_path.clone()),
    };
    c.validate().map_err(|e| e.to_string())?;
    Ok(c)
}

/// The API's view of a VM booted from the command line (for GET /vm/config).
pub fn config_to_spec(c: &VmConfig) -> api::VmConfig {
    let machine_config =
        MachineConfig { vcpu_count: u32::from(c.vcpus), mem_size_mib: c.mem_mib, ..Default::default() };
    api::VmConfig {
        boot_source: Some(BootSource {
            kernel_image_path: c.kernel.clone(),
            boot_args: Some(c.cmdline.clone()),
            initrd_path: c.initrd.clone(),
        }),
        machine_config,
        drives: c
            .disks
            .iter()
            .map(|d| Drive {
                drive_id: d.id.clone(),
                path_on_host: d.path.clone(),
                is_root_device: d.root,
                is_read_only: d.read_only,
            })
            .collect(),
        network_interfaces: c
            .nets
            .iter()
            .map(|n| NetworkInterface {
                iface_id: n.id.clone(),
                host_dev_name: match &n.backend {
                    NetBackendConfig::Tap { name } => Some(name.clone()),
                    NetBackendConfig::Vfio { .. } => None,
                },
                pnic_bdf: match &n.backend {
                    NetBackendConfig::Vfio { bdf } => PciBdf::from_str(bdf).ok(),
                    NetBackendConfig::Tap { .. } => None,
                },
                guest_mac: n.mac.map(MacAddr),
            })
            .collect(),
        metrics: c.metrics_path.clone().map(|metrics_path| api::Metrics { metrics_path }),
    }
}
