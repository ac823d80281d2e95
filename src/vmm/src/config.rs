//! What a VM is made of, as the CLI, config file and API describe it.

use std::path::PathBuf;

/// Default kernel command line when the user gives none.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1";
pub const DEFAULT_VCPUS: u8 = 1;
pub const DEFAULT_MEM_MIB: u64 = 256;
/// The IOAPIC has 24 pins; virtio devices use GSIs 5..=23.
pub const MAX_VIRTIO_DEVICES: usize = 19;

#[derive(Debug, Clone, PartialEq)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub vcpus: u8,
    pub mem_mib: u64,
    pub disks: Vec<DiskConfig>,
    pub nets: Vec<NetConfig>,
    pub metrics_path: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DiskConfig {
    pub id: String,
    pub path: PathBuf,
    pub read_only: bool,
    /// Adds `root=/dev/vdX` to the command line (unless it has a root= already).
    pub root: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum NetBackendConfig {
    /// An existing or new tap device.
    Tap { name: String },
    /// A physical NIC bound to vfio-pci, driven through the zero-copy shim.
    Vfio { bdf: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    pub id: String,
    pub backend: NetBackendConfig,
    pub mac: Option<[u8; 6]>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("--vcpus must be between 1 and 255, got {0}")]
    Vcpus(u64),
    #[error("too many devices: {0} disks and network interfaces, at most {MAX_VIRTIO_DEVICES}")]
    TooManyDevices(usize),
    #[error("more than one disk is marked root=on")]
    MultipleRoots,
    #[error("duplicate device id {0:?}")]
    DuplicateId(String),
    #[error("invalid MAC address {0:?}: expected six hex bytes like 02:00:00:00:00:01")]
    Mac(String),
    #[error("MAC address {0} is multicast; a NIC needs a unicast address (first byte even)")]
    MulticastMac(String),
}

pub fn parse_mac(s: &str) -> Result<[u8; 6], ConfigError> {
    let parts: Vec<&str> = s.split(':').collect();
    let mut mac = [0u8; 6];
    if parts.len() != 6 {
        return Err(ConfigError::Mac(s.to_string()));
    }
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(ConfigError::Mac(s.to_string()));
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| ConfigError::Mac(s.to_string()))?;
    }
    if mac[0] & 1 != 0 {
        return Err(ConfigError::MulticastMac(s.to_string()));
    }
    Ok(mac)
}

impl VmConfig {
    /// Checks what can be checked without touching the host.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.vcpus == 0 {
            return Err(ConfigError::Vcpus(0));
        }
        let n = self.disks.len() + self.nets.len();
        if n > MAX_VIRTIO_DEVICES {
            return Err(ConfigError::TooManyDevices(n));
        }
        if self.disks.iter().filter(|d| d.root).count() > 1 {
            return Err(ConfigError::MultipleRoots);
        }
        let mut ids: Vec<&str> =
            self.disks.iter().map(|d| d.id.as_str()).chain(self.nets.iter().map(|n| n.id.as_str())).collect();
        ids.sort();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::DuplicateId(w[0].to_string()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(parse_mac("02:00:0a:0B:ff:01").unwrap(), [2, 0, 10, 11, 255, 1]);
        assert!(matches!(parse_mac("02:00:00:00:00"), Err(ConfigError::Mac(_))));
        assert!(matches!(parse_mac("02:00:00:00:00:zz"), Err(ConfigError::Mac(_))));
        assert!(matches!(parse_mac("01:00:00:00:00:00"), Err(ConfigError::MulticastMac(_))));
    }

    #[test]
    fn validation() {
        let mut c = VmConfig {
            kernel: "k".into(),
            initrd: None,
            cmdline: DEFAULT_CMDLINE.into(),
            vcpus: 0,
            mem_mib: 128,
            disks: vec![],
            nets: vec![],
            metrics_path: None,
        };
        assert_eq!(c.validate(), Err(ConfigError::Vcpus(0)));
        c.vcpus = 2;
        let d = DiskConfig { id: "a".into(), path: "x".into(), read_only: false, root: true };
        c.disks = vec![d.clone(), DiskConfig { id: "b".into(), ..d.clone() }];
        assert_eq!(c.validate(), Err(ConfigError::MultipleRoots));
        c.disks[1].root = false;
        c.disks[1].id = "a".into();
        assert_eq!(c.validate(), Err(ConfigError::DuplicateId("a".into())));
        c.disks[1].id = "b".into();
        assert_eq!(c.validate(), Ok(()));
    }
}
