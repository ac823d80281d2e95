//! Checks that the nested testbed (`tools/testbed`) gives tests what it
//! promises: a working /dev/kvm, VFIO with the first igb bound to vfio-pci,
//! and a peer namespace reachable from the e1000e.
//!
//! Outside the testbed each test prints a loud `SKIPPED (not in testbed)` line
//! and passes, unless SHIMVMM_REQUIRE_TESTBED=1, where it fails. Run it there:
//! `cargo test -p shimvmm-tests --test testbed --no-run`, then
//! `tools/testbed run -- target/debug/deps/testbed-<hash>`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set to 1 by the testbed inside L1.
const TESTBED_ENV: &str = "SHIMVMM_TESTBED";
/// Set to 1 to turn a skip outside the testbed into a failure.
const REQUIRE_TESTBED_ENV: &str = "SHIMVMM_REQUIRE_TESTBED";

/// `_IO(KVMIO, 0x00)`; KVMIO = 0xAE.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
/// The only KVM API version Linux has ever reported.
const KVM_API_VERSION: libc::c_int = 12;
/// `_IO(VFIO_TYPE, VFIO_BASE + 0)`; VFIO_TYPE = ';' (0x3B), VFIO_BASE = 100.
const VFIO_GET_API_VERSION: libc::c_ulong = 0x3B64;
/// VFIO_API_VERSION from linux/vfio.h.
const VFIO_API_VERSION: libc::c_int = 0;
/// Type1 IOMMU with unmap semantics v2, what shimvmm's VFIO code uses.
const VFIO_TYPE1V2_IOMMU: libc::c_ulong = 3;
/// `_IO(VFIO_TYPE, VFIO_BASE + 1)`.
const VFIO_CHECK_EXTENSION: libc::c_ulong = 0x3B65;

/// PCI vendor/device of QEMU's igb (Intel 82576).
const IGB_VENDOR_DEVICE: (&str, &str) = ("0x8086", "0x10c9");
/// The peer igb's address inside namespace `peer` (see tools/testbed.d/l1-stage2.sh).
const DEFAULT_PEER_IP: &str = "192.0.2.1";

/// True inside the testbed. Outside: a loud skip line and false, or a panic
/// when SHIMVMM_REQUIRE_TESTBED=1 so CI cannot skip silently.
fn in_testbed(test: &str) -> bool {
    if std::env::var(TESTBED_ENV).as_deref() == Ok("1") {
        return true;
    }
    if std::env::var(REQUIRE_TESTBED_ENV).as_deref() == Ok("1") {
        panic!("{test}: {REQUIRE_TESTBED_ENV}=1 but {TESTBED_ENV} is not 1: run it with tools/testbed run -- <test binary>");
    }
    // Straight to fd 2: libtest captures eprintln! of passing tests, and a skip
    // must be visible.
    let line = format!(
        "\n*** SKIPPED (not in testbed): {test}: {TESTBED_ENV} is not 1; run it with tools/testbed run -- <test binary> ***\n"
    );
    let _ = std::io::stderr().write_all(line.as_bytes());
    false
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set inside the testbed"))
}

fn assert_char_device(path: &str) {
    let meta = fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert!(meta.file_type().is_char_device(), "{path} is not a character device: {:?}", meta.file_type());
}

fn open_rw(path: &str) -> fs::File {
    fs::OpenOptions::new().read(true).write(true).open(path).unwrap_or_else(|e| panic!("open {path}: {e}"))
}

/// An argument-less ioctl's return value, or the errno it failed with.
fn ioctl_noarg(file: &fs::File, request: libc::c_ulong, arg: libc::c_ulong) -> std::io::Result<libc::c_int> {
    // SAFETY: the fd is open for the whole call, and the requests used here
    // (KVM_GET_API_VERSION, VFIO_GET_API_VERSION, VFIO_CHECK_EXTENSION) take an
    // integer argument or none, so the kernel reads or writes no user memory.
    let ret = unsafe { libc::ioctl(file.as_raw_fd(), request as _, arg) };
    if ret < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn read_trimmed(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).trim().to_string()
}

/// Basename of a sysfs symlink (driver, iommu_group).
fn link_name(path: &Path) -> String {
    let target = fs::read_link(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

#[test]
fn kvm_device_answers_api_version_12() {
    if !in_testbed("kvm_device_answers_api_version_12") {
        return;
    }
    assert_char_device("/dev/kvm");
    let kvm = open_rw("/dev/kvm");
    let version = ioctl_noarg(&kvm, KVM_GET_API_VERSION, 0).expect("KVM_GET_API_VERSION");
    assert_eq!(version, KVM_API_VERSION, "KVM_GET_API_VERSION");
}

#[test]
fn vfio_container_supports_type1v2() {
    if !in_testbed("vfio_container_supports_type1v2") {
        return;
    }
    assert_char_device("/dev/vfio/vfio");
    let container = open_rw("/dev/vfio/vfio");
    assert_eq!(ioctl_noarg(&container, VFIO_GET_API_VERSION, 0).expect("VFIO_GET_API_VERSION"), VFIO_API_VERSION);
    let has_type1v2 = ioctl_noarg(&container, VFIO_CHECK_EXTENSION, VFIO_TYPE1V2_IOMMU).expect("VFIO_CHECK_EXTENSION");
    assert_eq!(has_type1v2, 1, "vfio_iommu_type1 must offer VFIO_TYPE1v2_IOMMU");
}

#[test]
fn pnic_is_an_igb_bound_to_vfio_pci() {
    if !in_testbed("pnic_is_an_igb_bound_to_vfio_pci") {
        return;
    }
    let bdf = env("SHIMVMM_PNIC");
    let dev = PathBuf::from("/sys/bus/pci/devices").join(&bdf);
    assert!(dev.exists(), "SHIMVMM_PNIC={bdf}: no such PCI device");
    let id = (read_trimmed(&dev.join("vendor")), read_trimmed(&dev.join("device")));
    assert_eq!((id.0.as_str(), id.1.as_str()), IGB_VENDOR_DEVICE, "SHIMVMM_PNIC={bdf} is not an igb (82576)");
    assert_eq!(link_name(&dev.join("driver")), "vfio-pci", "driver of {bdf}");
    let group = link_name(&dev.join("iommu_group"));
    assert_char_device(&format!("/dev/vfio/{group}"));
}

#[test]
fn peer_namespace_answers_ping_from_e1000e() {
    if !in_testbed("peer_namespace_answers_ping_from_e1000e") {
        return;
    }
    let ifname = env("SHIMVMM_E1000E_IF");
    let peer_ip = std::env::var("SHIMVMM_PEER_IP").unwrap_or_else(|_| DEFAULT_PEER_IP.to_string());
    let driver = link_name(&PathBuf::from("/sys/class/net").join(&ifname).join("device/driver"));
    assert_eq!(driver, "e1000e", "SHIMVMM_E1000E_IF={ifname} is not driven by e1000e");
    let ns = env("SHIMVMM_PEER_NS");
    assert!(Path::new("/run/netns").join(&ns).exists(), "network namespace {ns} does not exist");
    // -w bounds the whole run so a dead link fails instead of hanging.
    let out = Command::new("ping")
        .args(["-c", "3", "-w", "15", "-I", &ifname, &peer_ip])
        .output()
        .expect("run ping (iputils-ping)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ping -I {ifname} {peer_ip} failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(&format!("from {peer_ip}")), "no reply from {peer_ip}:\n{stdout}");
}

/// The runner itself, next to this package's manifest (the repository root).
fn testbed_tool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/testbed")
}

/// The runner's own checks belong to the host: inside L1 every python3 start
/// reads the interpreter over 9p under TCG (seconds each).
fn on_host(test: &str) -> bool {
    if std::env::var(TESTBED_ENV).as_deref() == Ok("1") {
        let _ = std::io::stderr().write_all(format!("{test}: runner check, skipped inside the testbed\n").as_bytes());
        return false;
    }
    true
}

/// `native-ok` must agree with /proc/cpuinfo: 0 with vmx/svm, 1 without.
#[test]
fn native_ok_matches_cpu_flags() {
    if !on_host("native_ok_matches_cpu_flags") {
        return;
    }
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").expect("read /proc/cpuinfo");
    let has_virt = cpuinfo
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    let status = Command::new(testbed_tool()).arg("native-ok").status().expect("run tools/testbed native-ok");
    assert_eq!(status.code(), Some(if has_virt { 0 } else { 1 }), "tools/testbed native-ok (vmx/svm: {has_virt})");
}

/// Bad invocations fail fast with status 2 and a one-line reason, before any
/// package install or VM start.
#[test]
fn bad_usage_is_rejected_with_status_2() {
    if !on_host("bad_usage_is_rejected_with_status_2") {
        return;
    }
    for (args, expect) in [
        (&["run", "true"][..], "unknown option 'true' (COMMAND goes after --)"),
        (&["run", "--"][..], "missing '-- COMMAND...'"),
        (&["run", "--timeout", "soon", "--", "true"][..], "--timeout needs a positive number"),
        (&["run", "--timeout", "0", "--", "true"][..], "--timeout needs a positive number"),
        (&["bogus"][..], "unknown subcommand 'bogus'"),
    ] {
        let out = Command::new(testbed_tool()).args(args).output().expect("run tools/testbed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "tools/testbed {args:?}: {stderr}");
        assert!(stderr.lines().next().unwrap_or("").contains(expect), "tools/testbed {args:?}: {stderr}");
    }
}
