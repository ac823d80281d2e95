//! The peers shimvmm is benchmarked against, with the same guest:
//! Firecracker v1.12.1 (pinned by `tools/firecracker`) and QEMU microvm on
//! qboot without legacy devices. Each helper returns a ready [`Command`]
//! whose serial console is on stdout, like shimvmm's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::artifacts::{guest_artifacts_tool, repo_root};
use crate::reference::qemu_bin;

/// qboot, the minimal firmware QEMU's microvm is meant to run with (Debian's
/// qemu-system-data ships it). SHIMVMM_QBOOT overrides the path.
pub const QBOOT_ROM: &str = "/usr/share/qemu/qboot.rom";

fn tool_path(tool: &Path, arg: &str) -> PathBuf {
    let out =
        Command::new(tool).arg(arg).output().unwrap_or_else(|e| panic!("cannot run {} {arg}: {e}", tool.display()));
    if !out.status.success() {
        panic!("`{} {arg}` failed: {}", tool.display(), String::from_utf8_lossy(&out.stderr).trim());
    }
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim().lines().last().unwrap_or_default())
}

/// The pinned Firecracker binary: $SHIMVMM_FIRECRACKER, else
/// `tools/firecracker path` (downloads and verifies it on first use; in the
/// testbed the cache is read-only, so fetch it on the host first).
pub fn firecracker_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("SHIMVMM_FIRECRACKER") {
        Some(p) => PathBuf::from(p),
        None => tool_path(&repo_root().join("tools/firecracker"), "path"),
    })
    .clone()
}

/// The Alpine kernel as an ELF vmlinux (the bzImage's gzip payload, unpacked
/// once into the cache by `tools/guest-artifacts vmlinux`).
pub fn alpine_vmlinux() -> PathBuf {
    static VMLINUX: OnceLock<PathBuf> = OnceLock::new();
    VMLINUX.get_or_init(|| tool_path(&guest_artifacts_tool(), "vmlinux")).clone()
}

/// What every VMM boots in a side-by-side run.
#[derive(Clone, Debug)]
pub struct PeerBoot<'a> {
    pub kernel: &'a Path,
    pub initrd: Option<&'a Path>,
    pub cmdline: &'a str,
    pub rootfs: &'a Path,
    pub vcpus: u32,
    pub mem_mib: u32,
}

/// Firecracker's configuration file (the `--config-file` JSON) for `b`. The
/// drive is not the root device, so Firecracker adds nothing to the command
/// line but its `virtio_mmio.device=` entries.
pub fn firecracker_config(b: &PeerBoot) -> String {
    let mut boot = serde_json::json!({
        "kernel_image_path": b.kernel, "boot_args": b.cmdline,
    });
    if let Some(i) = b.initrd {
        boot["initrd_path"] = serde_json::json!(i);
    }
    serde_json::json!({
        "boot-source": boot,
        "drives": [{"drive_id": "rootfs", "path_on_host": b.rootfs, "is_root_device": false, "is_read_only": false}],
        "machine-config": {"vcpu_count": b.vcpus, "mem_size_mib": b.mem_mib},
    })
    .to_string()
}

/// `firecracker --no-api --config-file DIR/firecracker.json`: boots at once,
/// like `shimvmm --kernel`. Its log (level Warning, so only problems) and the
/// guest's serial console both go to stdout.
pub fn firecracker_command(b: &PeerBoot, dir: &Path) -> Command {
    let cfg = dir.join("firecracker.json");
    std::fs::write(&cfg, firecracker_config(b)).unwrap_or_else(|e| panic!("cannot write {}: {e}", cfg.display()));
    let mut c = Command::new(firecracker_bin());
    c.args(["--no-api", "--level", "Warning", "--config-file"]).arg(&cfg);
    c
}

/// QEMU microvm settings for [`qemu_qboot_command`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuTuning {
    /// qboot, no option ROMs, no PIT or PIC, no ACPI (devices on the command
    /// line, as with Firecracker), modern virtio-mmio: of the legacy devices
    /// only the ISA serial port (the console all peers share) and the RTC are
    /// left. Without the RTC (`rtc=off`) this kernel hangs at boot: it still
    /// registers rtc_cmos and spins on the update-in-progress bit of the
    /// absent CMOS (soft lockup in the testbed, 2026-12-06).
    LegacyFree,
    /// qboot with `-M microvm,rtc=on` and QEMU's other defaults (PIT, PIC,
    /// ACPI, option ROMs): the "quick configuration" of issue 23.
    Rtc,
}

impl QemuTuning {
    /// The `-M` value.
    pub fn machine(self) -> &'static str {
        match self {
            QemuTuning::LegacyFree => "microvm,x-option-roms=off,pit=off,pic=off,rtc=on,acpi=off,isa-serial=on",
            QemuTuning::Rtc => "microvm,rtc=on",
        }
    }
}

/// QEMU microvm on qboot with KVM (`-cpu host`), `b`'s kernel (bzImage, or
/// an ELF with a PVH note), the rootfs as a virtio-mmio block device, the
/// serial console on stdout, nothing else.
pub fn qemu_qboot_command(b: &PeerBoot, tuning: QemuTuning) -> Command {
    let bios = std::env::var("SHIMVMM_QBOOT").unwrap_or_else(|_| QBOOT_ROM.to_string());
    let mut c = Command::new(qemu_bin());
    c.args(["-accel", "kvm", "-cpu", "host", "-M", tuning.machine(), "-bios", &bios])
        .args(["-m", &b.mem_mib.to_string(), "-smp", &b.vcpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio"]);
    if tuning == QemuTuning::LegacyFree {
        c.args(["-global", "virtio-mmio.force-legacy=false"]);
    }
    c.arg("-kernel").arg(b.kernel);
    if let Some(i) = b.initrd {
        c.arg("-initrd").arg(i);
    }
    c.arg("-append")
        .arg(b.cmdline)
        .arg("-drive")
        .arg(format!("id=root,file={},format=raw,if=none,cache=unsafe", b.rootfs.display()))
        .args(["-device", "virtio-blk-device,drive=root"]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecracker_config_keeps_the_command_line() {
        let b = PeerBoot {
            kernel: Path::new("/k"),
            initrd: Some(Path::new("/i")),
            cmdline: "console=ttyS0 root=/dev/vda",
            rootfs: Path::new("/r"),
            vcpus: 2,
            mem_mib: 512,
        };
        let v: serde_json::Value = serde_json::from_str(&firecracker_config(&b)).unwrap();
        assert_eq!(v["boot-source"]["boot_args"], "console=ttyS0 root=/dev/vda");
        assert_eq!(v["boot-source"]["initrd_path"], "/i");
        assert_eq!(v["drives"][0]["is_root_device"], false);
        assert_eq!(v["machine-config"]["mem_size_mib"], 512);
    }
}
