//! Which guest kernel a test boots.
//!
//! Two flavours boot the same Alpine rootfs:
//! - `Alpine`: the wheel's linux-virt bzImage with its initrd (always
//!   available; the initrd loads virtio_blk/ext4 modules and probes devices,
//!   which is slow inside the nested testbed);
//! - `Microvm`: a module-free kernel built by `resources/guest/build-kernel.sh`
//!   from Debian's linux-source-6.12, booting the rootfs directly (no initrd).
//!
//! Tests choose with [`guest_boot`], which follows SHIMVMM_GUEST_KERNEL
//! (`alpine`, the default, or `microvm`), so one switch moves a whole run.

use std::path::PathBuf;
use std::process::Command;

use crate::artifacts::{alpine_cmdline, artifacts, repo_root};

/// Command line for the module-free microVM kernel: no initrd, root mounted
/// by the kernel itself.
const MICROVM_CMDLINE: &str = "console=ttyS0 reboot=k panic=-1 root=/dev/vda rootfstype=ext4 rw";

/// The microVM kernel's command line (see `resources/guest/build-kernel.sh`,
/// which prints the same; a unit test checks).
pub fn microvm_cmdline() -> &'static str {
    MICROVM_CMDLINE
}

/// Guest kernel flavour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestKernel {
    /// Alpine linux-virt + initrd (default).
    Alpine,
    /// Module-free microVM kernel, no initrd.
    Microvm,
}

/// Everything a VMM needs to boot the guest kernel (the disk comes separately).
#[derive(Clone, Debug)]
pub struct GuestBoot {
    /// Which flavour this is.
    pub flavour: GuestKernel,
    /// bzImage to load.
    pub kernel: PathBuf,
    /// Uncompressed ELF kernel, when the flavour has one on disk.
    pub vmlinux: Option<PathBuf>,
    /// initrd, if the flavour needs one.
    pub initrd: Option<PathBuf>,
    /// Kernel command line (root=/dev/vda, console on ttyS0).
    pub cmdline: String,
}

/// The Alpine kernel + initrd.
pub fn alpine_boot() -> GuestBoot {
    let art = artifacts();
    GuestBoot {
        flavour: GuestKernel::Alpine,
        kernel: art.kernel.clone(),
        vmlinux: None,
        initrd: Some(art.initrd.clone()),
        cmdline: alpine_cmdline().to_string(),
    }
}

/// Path of the kernel build script.
pub fn build_kernel_script() -> PathBuf {
    repo_root().join("resources/guest/build-kernel.sh")
}

/// The microVM kernel if it has been built on this machine (the testbed sees
/// the host's cache read-only, so build it on the host first).
pub fn microvm_boot() -> Option<GuestBoot> {
    let out = Command::new(build_kernel_script()).arg("--paths").output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let get = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .map(|v| PathBuf::from(v.replace('\\', "")))
    };
    let kernel = get("KERNEL")?;
    Some(GuestBoot {
        flavour: GuestKernel::Microvm,
        vmlinux: get("VMLINUX").filter(|p| p.is_file()),
        kernel,
        initrd: None,
        cmdline: MICROVM_CMDLINE.to_string(),
    })
}

/// The flavour SHIMVMM_GUEST_KERNEL asks for (`alpine` if unset).
pub fn guest_kernel_from_env() -> GuestKernel {
    match std::env::var("SHIMVMM_GUEST_KERNEL").as_deref() {
        Err(_) | Ok("") | Ok("alpine") => GuestKernel::Alpine,
        Ok("microvm") => GuestKernel::Microvm,
        Ok(other) => panic!("SHIMVMM_GUEST_KERNEL must be alpine or microvm, not {other:?}"),
    }
}

/// The guest kernel for this run (SHIMVMM_GUEST_KERNEL). Panics with a build
/// hint if `microvm` is asked for but not built.
pub fn guest_boot() -> GuestBoot {
    match guest_kernel_from_env() {
        GuestKernel::Alpine => alpine_boot(),
        GuestKernel::Microvm => microvm_boot().unwrap_or_else(|| {
            panic!(
                "SHIMVMM_GUEST_KERNEL=microvm but the microVM kernel is not built: run {} on the host",
                build_kernel_script().display()
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_script_cmdline_matches_harness() {
        let script = std::fs::read_to_string(build_kernel_script()).expect("read build-kernel.sh");
        let line = script
            .lines()
            .find_map(|l| l.strip_prefix("readonly CMDLINE=\""))
            .and_then(|l| l.strip_suffix('"'))
            .expect("CMDLINE in build-kernel.sh");
        assert_eq!(line, microvm_cmdline());
    }
}
