//! The limits, the error type and the checks shared by every resource.
//!
//! All input is untrusted (API clients, config files, the command line):
//! each rule names the field and the problem, so one line tells the user
//! what to fix. Checks that need the host (does the file exist, is the NIC
//! bound to vfio-pci) are the VMM's job when it builds the VM; here
//! everything is structural.

use std::path::Path;

/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u32 = 32;
/// Least guest memory: the kernel, initrd and page tables must fit.
pub const MIN_MEM_SIZE_MIB: u64 = 64;
/// Most guest memory (256 GiB): a bound on what a request can make us mmap.
pub const MAX_MEM_SIZE_MIB: u64 = 256 * 1024;
/// Most drives.
pub const MAX_DRIVES: usize = 16;
/// Most network interfaces.
pub const MAX_NETWORK_INTERFACES: usize = 8;
/// Most virtio devices (drives and interfaces together): each takes one of
/// the IOAPIC's 24 pins, and pins 5 to 23 are theirs.
pub const MAX_VIRTIO_DEVICES: usize = 19;
/// Longest drive or interface id.
pub const MAX_ID_LEN: usize = 64;
/// Longest kernel command line the user may pass (x86 COMMAND_LINE_SIZE).
pub const MAX_BOOT_ARGS_LEN: usize = 2048;
/// Longest host path (Linux PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest network device name (Linux IFNAMSIZ minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// A configuration value that breaks a rule: `field: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// Where: `vcpu_count`, `drives[1].path_on_host`, ...
    pub field: String,
    /// What is wrong and, where useful, what is expected instead.
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ValidationError { field: field.into(), problem: problem.into() }
    }

    /// Prefix the field with the object it belongs to (`drives[0]`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

pub(crate) type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Drive and interface ids: short, and safe to show in paths and logs.
pub fn check_id(field: &str, id: &str) -> Result {
    if id.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(ValidationError::new(field, format!("is {} bytes long; at most {MAX_ID_LEN} allowed", id.len())));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ValidationError::new(
            field,
            format!("\"{}\" may only contain ASCII letters, digits, '_' and '-'", id.escape_debug()),
        ));
    }
    Ok(())
}

/// A host path: present, bounded, and without the NUL byte no syscall accepts.
pub(crate) fn check_path(field: &str, path: &Path) -> Result {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if bytes.len() > MAX_PATH_LEN {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes long; at most {MAX_PATH_LEN} allowed", bytes.len()),
        ));
    }
    if bytes.contains(&0) {
        return Err(ValidationError::new(field, "contains a NUL byte"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(check_id("drive_id", "rootfs_1-a").is_ok());
        assert_eq!(check_id("drive_id", "").unwrap_err().to_string(), "drive_id: must not be empty");
        assert!(check_id("drive_id", "a/b").unwrap_err().to_string().contains("may only contain"));
        assert!(check_id("iface_id", &"x".repeat(65)).unwrap_err().to_string().contains("at most 64"));
    }

    #[test]
    fn paths_are_checked() {
        assert!(check_path("p", Path::new("/x")).is_ok());
        assert_eq!(check_path("p", Path::new("")).unwrap_err().problem, "must not be empty");
        assert_eq!(check_path("p", Path::new("a\0b")).unwrap_err().problem, "contains a NUL byte");
        assert!(check_path("p", Path::new(&"x".repeat(MAX_PATH_LEN + 1))).is_err());
    }
}
