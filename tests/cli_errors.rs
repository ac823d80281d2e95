//! Bad command-line input: a one-line error naming the problem, a non-zero
//! status, no panic, and no guest started. These run on any host.

use std::path::Path;
use std::process::{Command, Output};

use shimvmm_tests::shimvmm_bin;

fn run(args: &[&str]) -> Output {
    Command::new(shimvmm_bin()).args(args).output().unwrap_or_else(|e| panic!("run shimvmm: {e}"))
}

/// The error is one line on stderr, starts with "shimvmm: error:" and mentions `needle`.
fn assert_clear_error(out: &Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got {:?}; stderr: {err}", out.status);
    assert_ne!(out.status.code(), Some(101), "shimvmm panicked: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected a one-line error, got: {err}");
    assert!(lines[0].starts_with("shimvmm: error:") || lines[0].starts_with("error:"), "{err}");
    assert!(lines[0].contains(needle), "error {:?} does not mention {needle:?}", lines[0]);
}

fn tmp(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("shimvmm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// A file that passes as a bzImage header-wise is hard to fake; a real-looking
/// but tiny ELF is enough to get past format detection where needed.
fn some_kernel() -> std::path::PathBuf {
    // Any ELF works for the checks that fail before loading (memory, vCPUs, disks).
    Path::new("/proc/self/exe").canonicalize().unwrap()
}

#[test]
fn missing_kernel() {
    assert_clear_error(&run(&["--kernel", "/nonexistent/bzImage"]), "/nonexistent/bzImage");
}

/// A kernel file the user may not read (root-only, shimvmm run as nobody).
#[test]
fn unreadable_kernel() {
    use std::os::unix::fs::PermissionsExt;
    let p = tmp("root-only-kernel");
    std::fs::write(&p, b"secret").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The directory must be traversable for the permission error to be about the file.
    std::fs::set_permissions(p.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(shimvmm_bin())
        .arg("--kernel")
        .arg(&p)
        .output()
        .unwrap();
    assert_clear_error(&out, "Permission denied");
    assert_clear_error(&out, p.to_str().unwrap());
}

#[test]
fn kernel_is_a_directory() {
    assert_clear_error(&run(&["--kernel", "/tmp"]), "not a regular file");
}

#[test]
fn kernel_is_not_bzimage_or_elf() {
    let p = tmp("not-a-kernel");
    std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
    assert_clear_error(&run(&["--kernel", p.to_str().unwrap()]), "neither a bzImage nor an ELF");
}

#[test]
fn no_kernel_at_all() {
    assert_clear_error(&run(&[]), "nothing to boot");
}

#[test]
fn zero_vcpus() {
    let out = run(&["--kernel", some_kernel().to_str().unwrap(), "--vcpus", "0"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "clap usage error expected: {err}");
    assert!(err.contains("--vcpus"), "{err}");
}

#[test]
fn memory_too_small_and_too_large() {
    let k = some_kernel();
    assert_clear_error(&run(&["--kernel", k.to_str().unwrap(), "--mem", "1"]), "too small");
    assert_clear_error(&run(&["--kernel", k.to_str().unwrap(), "--mem", "99999999"]), "too large");
}

#[test]
fn missing_disk() {
    let k = shimvmm_tests::artifacts().kernel.clone();
    let out = run(&["--kernel", k.to_str().unwrap(), "--disk", "path=/nonexistent/root.img"]);
    assert_clear_error(&out, "/nonexistent/root.img");
}

#[test]
fn malformed_disk_and_net_specs() {
    let k = some_kernel();
    let k = k.to_str().unwrap();
    assert_clear_error(&run(&["--kernel", k, "--disk", "readonly=on"]), "path=PATH is required");
    assert_clear_error(&run(&["--kernel", k, "--disk", "path=/x,speed=fast"]), "unknown key");
    assert_clear_error(&run(&["--kernel", k, "--net", "tap=t0,mac=zz:zz"]), "invalid MAC");
    // Both backends, each valid on its own (a malformed "vfio=b" is reported as such first).
    assert_clear_error(&run(&["--kernel", k, "--net", "tap=a,vfio=01:00.0"]), "exactly one");
    assert_clear_error(&run(&["--kernel", k, "--net", "tap=a,vfio=b"]), "invalid PCI address \"b\"");
}

#[test]
fn initrd_too_big_for_memory() {
    // 80 MiB of initrd can't fit in a 64 MiB guest. The kernel must load first, so
    // this needs the real Alpine kernel; fetch it (cached) through the harness.
    let art = shimvmm_tests::artifacts();
    let big = tmp("big-initrd");
    std::fs::File::create(&big).unwrap().set_len(80 << 20).unwrap();
    let out = run(&["--kernel", art.kernel.to_str().unwrap(), "--initrd", big.to_str().unwrap(), "--mem", "64"]);
    assert_clear_error(&out, "does not fit");
}

#[test]
fn missing_initrd() {
    let art = shimvmm_tests::artifacts();
    let out = run(&["--kernel", art.kernel.to_str().unwrap(), "--initrd", "/nonexistent/initrd"]);
    assert_clear_error(&out, "/nonexistent/initrd");
}

/// Runs shimvmm in a private mount namespace whose /dev has no kvm node.
#[test]
fn dev_kvm_absent() {
    if Command::new("unshare").arg("--version").output().is_err() {
        panic!("unshare (util-linux) is needed for this test");
    }
    let art = shimvmm_tests::artifacts();
    let script =
        format!("mount -t tmpfs none /dev && exec {} --kernel {}", shimvmm_bin().display(), art.kernel.display());
    let out = Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]).output().unwrap();
    if String::from_utf8_lossy(&out.stderr).contains("unshare failed") {
        panic!("cannot create a mount namespace here (need root): {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_clear_error(&out, "/dev/kvm does not exist");
}

/// An unprivileged user can't open root's 0600 /dev/kvm.
#[test]
fn dev_kvm_not_permitted() {
    let art = shimvmm_tests::artifacts();
    let meta = std::fs::metadata("/dev/kvm");
    use std::os::unix::fs::PermissionsExt;
    match meta {
        Ok(m) if m.permissions().mode() & 0o006 == 0 => {}
        _ => {
            println!("SKIPPED dev_kvm_not_permitted: /dev/kvm is missing or world-accessible here");
            return;
        }
    }
    // A kernel copy nobody may read, so the first error is about /dev/kvm.
    let kernel = tmp("world-readable-kernel");
    std::fs::copy(&art.kernel, &kernel).unwrap();
    std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(kernel.parent().unwrap(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(shimvmm_bin())
        .arg("--kernel")
        .arg(&kernel)
        .output()
        .unwrap();
    assert_clear_error(&out, "permission denied opening /dev/kvm");
}

/// `--net vfio=` with a device that isn't there, or an address that isn't one.
#[test]
fn bad_vfio_bdf() {
    let art = shimvmm_tests::artifacts();
    let k = art.kernel.to_str().unwrap();
    assert_clear_error(&run(&["--kernel", k, "--net", "vfio=0000:99:1f.7"]), "not found in /sys/bus/pci/devices");
    assert_clear_error(&run(&["--kernel", k, "--net", "vfio=zz:zz"]), "invalid PCI address");
}
