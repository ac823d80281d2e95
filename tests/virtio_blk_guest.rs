//! virtio-blk (and the virtio-mmio transport) with a real Linux guest: the
//! Alpine kernel's virtio_blk driver probes four shimvmm disks, reads a
//! read-only disk, is refused writes to it, copies one disk onto another with
//! fsync (IN, OUT, FLUSH), reads the copy back past its page cache, and reports
//! each disk's serial (GET_ID). The host then checks the image files.
//!
//! Needs KVM that runs guests: build with
//! `cargo build -p shimvmm && cargo test -p shimvmm-tests --test virtio_blk_guest --no-run`,
//! then `tools/testbed run -- target/debug/deps/virtio_blk_guest-<hash> --nocapture`.
//! Elsewhere it prints a loud SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shimvmm_tests::{
    alpine_test_cmdline, artifacts, one_vm_at_a_time, require_guest_env, shimvmm_bin, test_image, GuestProcess,
    PowerAction,
};

/// The guest side. Disks: vda root, vdb read-only pattern, vdc blank
/// writable, vdd read-only source for the copy.
const GUEST_SCRIPT: &str = r#"
for d in vdb vdc vdd; do
    marker "size-$d" "$(cat /sys/block/$d/size)"
    marker "ro-$d" "$(cat /sys/block/$d/ro)"
    marker "serial-$d" "$(cat /sys/block/$d/serial)"
done
marker md5-vdb "$(md5sum < /dev/vdb | cut -d' ' -f1)"
if dd if=/dev/zero of=/dev/vdb bs=512 count=1 conv=fsync 2>/dev/null; then
    marker ro-write accepted
else
    marker ro-write refused
fi
dd if=/dev/vdd of=/dev/vdc bs=64k conv=fsync 2>/dev/null
marker copy-rc $?
sync
echo 3 > /proc/sys/vm/drop_caches
marker md5-vdc "$(md5sum < /dev/vdc | cut -d' ' -f1)"
cmp /dev/vdd /dev/vdc >/dev/null 2>&1
marker cmp-rc $?
marker io-errors "$(dmesg | grep -ci 'i/o error')"
"#;

const RO_SIZE: usize = 1 << 20;
const COPY_SIZE: usize = 4 << 20;
const SECTOR: usize = 512;
/// Booting the Alpine guest under the nested testbed takes minutes.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// A directory of disk images, removed on drop.
struct Disks(PathBuf);

impl Disks {
    fn new() -> Disks {
        let dir = std::env::temp_dir().join(format!("shimvmm-blk-guest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        Disks(dir)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, bytes).unwrap_or_else(|e| panic!("cannot write {}: {e}", p.display()));
        p
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    // A cheap LCG: every sector differs, so a misplaced sector shows.
    let mut x = seed;
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            (x >> 16) as u8
        })
        .collect()
}

fn md5_of(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().expect("run md5sum");
    assert!(out.status.success(), "md5sum {} failed", path.display());
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}

fn disk_arg(path: &Path, extra: &str) -> String {
    format!("path={}{extra}", path.display())
}

#[test]
fn linux_guest_reads_writes_flushes_and_identifies_disks() {
    if !require_guest_env("linux_guest_reads_writes_flushes_and_identifies_disks") {
        return;
    }
    let _vm = one_vm_at_a_time();
    let art = artifacts();
    let root = test_image(GUEST_SCRIPT, PowerAction::Poweroff);
    let disks = Disks::new();
    let ro = disks.write("ro.img", &pattern(RO_SIZE, 1));
    let rw = disks.write("rw.img", &vec![0u8; COPY_SIZE]);
    let src = disks.write("src.img", &pattern(COPY_SIZE, 2));
    let metrics = disks.0.join("metrics.json");

    let mut cmd = Command::new(shimvmm_bin());
    cmd.arg("--kernel")
        .arg(&art.kernel)
        .arg("--initrd")
        .arg(&art.initrd)
        .arg("--cmdline")
        .arg(alpine_test_cmdline())
        .args(["--mem", "512", "--vcpus", "1", "--no-api", "--log-level", "info"])
        .arg("--metrics-path")
        .arg(&metrics)
        .arg("--disk")
        .arg(disk_arg(root.path(), ",root=on,id=rootdisk"))
        .arg("--disk")
        .arg(disk_arg(&ro, ",readonly=on,id=ro-disk-serial-20b"))
        .arg("--disk")
        .arg(disk_arg(&rw, ",id=rw-disk"))
        .arg("--disk")
        .arg(disk_arg(&src, ",readonly=on,id=src-disk"));
    let mut vm = GuestProcess::spawn("shimvmm", cmd).expect("spawn shimvmm");
    let guest_exit = vm.wait_for_guest_exit(GUEST_TIMEOUT);
    let status = vm.exit_status(Duration::from_secs(60));
    let tail = vm.tail(60);
    assert_eq!(guest_exit.as_ref().ok(), Some(&0), "guest script did not finish cleanly: {guest_exit:?}\n{tail}");
    assert!(status.as_ref().is_ok_and(|s| s.success()), "shimvmm exit: {status:?}\n{tail}");

    let m = |name: &str| vm.marker(name).map(|m| m.value).unwrap_or_else(|| panic!("no marker {name}\n{tail}"));
    // Config space (capacity) and GET_ID.
    assert_eq!(m("size-vdb"), (RO_SIZE / SECTOR).to_string());
    assert_eq!(m("size-vdc"), (COPY_SIZE / SECTOR).to_string());
    assert_eq!(m("serial-vdb"), "ro-disk-serial-20b");
    assert_eq!(m("serial-vdc"), "rw-disk");
    assert_eq!(m("serial-vdd"), "src-disk");
    // VIRTIO_BLK_F_RO: the guest marks the disk read-only and cannot write it.
    assert_eq!(m("ro-vdb"), "1");
    assert_eq!(m("ro-vdc"), "0");
    assert_eq!(m("ro-write"), "refused");
    // IN: the guest read exactly the host's bytes.
    assert_eq!(m("md5-vdb"), md5_of(&ro));
    // OUT + FLUSH, then IN past the page cache.
    assert_eq!(m("copy-rc"), "0");
    assert_eq!(m("cmp-rc"), "0");
    assert_eq!(m("md5-vdc"), md5_of(&src));
    assert_eq!(m("io-errors"), "0");
    // The host sees the guest's writes in the image; the read-only images are untouched.
    assert!(std::fs::read(&rw).unwrap() == pattern(COPY_SIZE, 2), "rw.img differs from what the guest copied");
    assert!(std::fs::read(&ro).unwrap() == pattern(RO_SIZE, 1), "ro.img was modified");

    // Device counters, if the VMM wrote them.
    if let Ok(text) = std::fs::read_to_string(&metrics) {
        // One Firecracker-format JSON object per line; shimvmm's counters under "shimvmm".
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_str(last).expect("metrics lines are JSON");
        if let Some(rw) = v.pointer("/shimvmm/block/rw-disk") {
            assert!(rw["writes"].as_u64().unwrap_or(0) >= 1, "{rw}");
            assert!(rw["write_bytes"].as_u64().unwrap_or(0) >= COPY_SIZE as u64, "{rw}");
            assert!(rw["flushes"].as_u64().unwrap_or(0) >= 1, "{rw}");
            assert_eq!(rw["errors"], 0, "{rw}");
            assert_eq!(rw["malformed_total"], 0, "{rw}");
        }
    }
}
