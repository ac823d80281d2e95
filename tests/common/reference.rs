//! The QEMU microvm reference boot: the yardstick shimvmm's boot time is
//! compared against. Same kernel, initrd, rootfs, command line, memory and
//! vCPUs; the timings are taken the same way (host wall clock from spawn).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::artifacts::{alpine_cmdline, artifacts, test_image, Artifacts, PowerAction};
use crate::error::{HarnessError, Result};
use crate::kernel::{guest_boot, guest_kernel_from_env, GuestBoot, GuestKernel};
use crate::process::GuestProcess;

/// Part of the kernel's `Run <init> as init process` line, printed (without
/// `quiet`) just before the guest's first userspace program runs: `/init` of
/// the Alpine initrd, or `/sbin/init` with the microVM kernel (no initrd).
pub const FIRST_INIT_MARKER: &str = " as init process";
/// Part of OpenRC's banner ("OpenRC 0.63 is starting up Linux 6.18..."), the
/// first line the root filesystem's init prints; it prints with `quiet` too,
/// where the kernel's [`FIRST_INIT_MARKER`] line and the initrd's own output
/// do not. The first init marker of the quiet boots.
pub const OPENRC_START_MARKER: &str = " is starting up Linux";
/// Marker name the boot probe script prints.
pub const BOOT_PROBE_MARKER: &str = "boot-probe";
/// Test script for boot measurements: reports as soon as openrc runs it
/// (value: guest uptime in seconds).
pub const BOOT_PROBE_SCRIPT: &str = "marker boot-probe \"$(guest_uptime)\"\n";

/// Timings of one boot, host wall clock from process spawn.
#[derive(Clone, Copy, Debug)]
pub struct BootTimings {
    /// Until the first init marker ([`QemuBootOptions::first_init_marker`]).
    pub first_init: Duration,
    /// Until the boot probe script's marker.
    pub test_script: Duration,
    /// Until the VMM process exited after the guest powered off.
    pub exited: Duration,
    /// Guest uptime (s) when the probe ran, as the guest saw it.
    pub guest_uptime_at_script: Option<f64>,
    /// The guest kernel flavour that was booted.
    pub kernel: GuestKernel,
}

/// QEMU accelerator for the reference boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// `-accel kvm -cpu host` (inside the testbed).
    Kvm,
    /// `-accel tcg -cpu max`: runs anywhere, several times slower; for
    /// developing images on a host whose KVM cannot run guests.
    Tcg,
}

impl Accel {
    /// From SHIMVMM_QEMU_ACCEL (`kvm` or `tcg`), default `kvm`.
    pub fn from_env() -> Accel {
        match std::env::var("SHIMVMM_QEMU_ACCEL").as_deref() {
            Ok("tcg") => Accel::Tcg,
            Ok("kvm") | Err(_) => Accel::Kvm,
            Ok(other) => panic!("SHIMVMM_QEMU_ACCEL must be kvm or tcg, not {other:?}"),
        }
    }
}

/// Settings of the reference boot.
#[derive(Clone, Debug)]
pub struct QemuBootOptions {
    /// Accelerator.
    pub accel: Accel,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// vCPUs.
    pub vcpus: u32,
    /// Limit for reaching the first init marker.
    pub first_init_timeout: Duration,
    /// The console line that counts as the first init: [`FIRST_INIT_MARKER`]
    /// (default) or, for a `quiet` boot, [`OPENRC_START_MARKER`].
    pub first_init_marker: &'static str,
    /// Append `quiet` to the kernel command line (as the guest tests do; the
    /// kernel log is where the nested testbed's faults come most often).
    pub quiet: bool,
    /// Limit for reaching the probe marker (from spawn).
    pub script_timeout: Duration,
    /// Limit for QEMU to exit after the probe (from spawn).
    pub exit_timeout: Duration,
    /// Kernel, initrd and command line; `None` boots the Alpine kernel +
    /// initrd of the `Artifacts` given to [`qemu_microvm_command`].
    /// Default: the microVM kernel if SHIMVMM_GUEST_KERNEL=microvm.
    pub boot: Option<GuestBoot>,
}

impl Default for QemuBootOptions {
    fn default() -> Self {
        QemuBootOptions {
            accel: Accel::from_env(),
            memory_mib: 512,
            vcpus: 2,
            first_init_timeout: scaled(Duration::from_secs(300)),
            first_init_marker: FIRST_INIT_MARKER,
            quiet: false,
            script_timeout: scaled(Duration::from_secs(600)),
            exit_timeout: scaled(Duration::from_secs(660)),
            boot: (guest_kernel_from_env() == GuestKernel::Microvm).then(guest_boot),
        }
    }
}

/// `d` times SHIMVMM_TIMEOUT_SCALE (a positive number, default 1): guest
/// boots inside the nested testbed slow down by an order of magnitude when
/// the host is busy, so CI can stretch every guest timeout at once.
pub fn scaled(d: Duration) -> Duration {
    let scale = match std::env::var("SHIMVMM_TIMEOUT_SCALE") {
        Err(_) => 1.0,
        Ok(v) => match v.parse::<f64>() {
            Ok(f) if f > 0.0 && f.is_finite() => f,
            _ => panic!("SHIMVMM_TIMEOUT_SCALE must be a positive number, not {v:?}"),
        },
    };
    d.mul_f64(scale)
}

/// The QEMU binary: $SHIMVMM_QEMU or `qemu-system-x86_64` (10.x from
/// bookworm-backports on the testbed).
pub fn qemu_bin() -> String {
    std::env::var("SHIMVMM_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".to_string())
}

/// The QEMU microvm command booting `opts.boot` (default: `art`'s kernel and
/// initrd) with `rootfs` as a virtio-mmio block device; the serial console is
/// on stdout.
pub fn qemu_microvm_command(art: &Artifacts, rootfs: &Path, opts: &QemuBootOptions) -> Command {
    let boot = opts.boot.clone().unwrap_or_else(|| GuestBoot {
        flavour: GuestKernel::Alpine,
        kernel: art.kernel.clone(),
        vmlinux: None,
        initrd: Some(art.initrd.clone()),
        cmdline: alpine_cmdline().to_string(),
    });
    let mut cmd = Command::new(qemu_bin());
    let (accel, cpu) = match opts.accel {
        Accel::Kvm => ("kvm", "host"),
        Accel::Tcg => ("tcg", "max"),
    };
    cmd.args(["-accel", accel, "-M", "microvm,rtc=on", "-cpu", cpu])
        .args(["-m", &opts.memory_mib.to_string(), "-smp", &opts.vcpus.to_string()])
        .args(["-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio"])
        .arg("-kernel")
        .arg(&boot.kernel);
    if let Some(initrd) = &boot.initrd {
        cmd.arg("-initrd").arg(initrd);
    }
    let mut cmdline = boot.cmdline.clone();
    if opts.quiet {
        cmdline.push_str(" quiet");
    }
    if opts.accel == Accel::Tcg {
        // Under TCG on a loaded host the kernel's PIT-based TSC
        // calibration fails and boot stalls; give it a frequency.
        cmdline.push_str(" tsc_early_khz=2000000");
    }
    cmd.arg("-append")
        .arg(cmdline)
        .arg("-drive")
        .arg(format!("id=root,file={},format=raw,if=none", rootfs.display()))
        .args(["-device", "virtio-blk-device,drive=root"]);
    cmd
}

/// Console lines the guest kernel prints before every reset or power-off it
/// makes itself (a panic with `panic=-1` ends in "Restarting system" too).
const KERNEL_RESET_LINES: [&str; 3] = ["reboot: Restarting system", "reboot: Power down", "Kernel panic"];

/// QEMU runs with `-no-reboot`, so a guest reset makes it exit 0, the same as a
/// power-off. If QEMU did so while we still waited and the guest kernel never
/// announced a reset, the vCPU reset on its own (a triple fault, which QEMU does
/// not report): turn `err` into [`HarnessError::GuestReset`] so it reads as such.
pub(crate) fn name_unannounced_reset(qemu: &mut GuestProcess, err: HarnessError) -> HarnessError {
    let HarnessError::Exited { what, .. } = &err else {
        return err;
    };
    let what = what.clone();
    match qemu.exit_status(Duration::from_secs(5)) {
        Ok(status) if status.success() => {}
        _ => return err,
    }
    let announced = qemu.lines().iter().any(|l| KERNEL_RESET_LINES.iter().any(|k| l.text.contains(k)));
    if announced {
        return err;
    }
    HarnessError::GuestReset { what, tail: qemu.tail(crate::process::TAIL_LINES) }
}

/// Boots the Alpine guest under QEMU microvm with the boot probe script and
/// returns the timings. The guest powers off; QEMU must exit cleanly.
pub fn qemu_reference_boot(opts: &QemuBootOptions) -> Result<BootTimings> {
    let art = artifacts();
    let image = test_image(BOOT_PROBE_SCRIPT, PowerAction::Poweroff);
    let cmd = qemu_microvm_command(art, image.path(), opts);
    let kernel = opts.boot.as_ref().map_or(GuestKernel::Alpine, |b| b.flavour);
    let mut qemu = GuestProcess::spawn("qemu", cmd)?;
    // The probe is the whole script: silence before it is QEMU's guest hanging.
    qemu.set_booted_by(BOOT_PROBE_MARKER);
    let first_init = qemu
        .wait_for_line(opts.first_init_marker, opts.first_init_timeout)
        .map_err(|e| name_unannounced_reset(&mut qemu, e))?;
    let probe = qemu
        .wait_for_marker(BOOT_PROBE_MARKER, opts.script_timeout.saturating_sub(qemu.elapsed()))
        .map_err(|e| name_unannounced_reset(&mut qemu, e))?;
    let status = qemu
        .wait_for_guest_exit(opts.exit_timeout.saturating_sub(qemu.elapsed()))
        .map_err(|e| name_unannounced_reset(&mut qemu, e))?;
    if status != 0 {
        return Err(HarnessError::Setup(format!(
            "boot probe script exited with {status}; console:\n{}",
            qemu.tail(crate::process::TAIL_LINES)
        )));
    }
    let exit = qemu.exit_status(opts.exit_timeout.saturating_sub(qemu.elapsed()))?;
    let exited = qemu.elapsed();
    if !exit.success() {
        return Err(HarnessError::Exited {
            what: "a clean exit after the guest powered off".into(),
            status: Some(exit),
            tail: qemu.tail(crate::process::TAIL_LINES),
        });
    }
    Ok(BootTimings {
        first_init,
        test_script: probe.at,
        exited,
        guest_uptime_at_script: probe.value.parse().ok(),
        kernel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited_early(script: &str) -> (GuestProcess, HarnessError) {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        let vm = GuestProcess::spawn("fake-qemu", cmd).unwrap();
        let err = vm.wait_for_line("never printed", Duration::from_secs(20)).unwrap_err();
        (vm, err)
    }

    #[test]
    fn clean_exit_without_a_kernel_reset_line_is_a_triple_fault() {
        let (mut vm, err) = exited_early("echo 'smp: Brought up 1 node, 2 CPUs'; exit 0");
        let err = name_unannounced_reset(&mut vm, err);
        assert!(matches!(err, HarnessError::GuestReset { .. }), "{err}");
        assert!(err.to_string().contains("TRIPLE-FAULTED under QEMU"), "{err}");
    }

    #[test]
    fn announced_resets_and_failed_exits_stay_what_they_were() {
        for script in [
            "echo '[ 9.1] reboot: Power down'; exit 0",
            "echo '[ 9.1] reboot: Restarting system'; exit 0",
            "echo 'Kernel panic - not syncing: VFS'; exit 0",
            "echo 'qemu-system-x86_64: cannot open kernel'; exit 1",
        ] {
            let (mut vm, err) = exited_early(script);
            let err = name_unannounced_reset(&mut vm, err);
            assert!(matches!(err, HarnessError::Exited { .. }), "{script}: {err}");
        }
    }
}
