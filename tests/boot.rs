//! shimvmm boots the Alpine guest from the command line (issue: boot).
//!
//! Guest tests: they run inside the testbed (`tools/devtool test` does that);
//! elsewhere they say SKIPPED loudly, or fail when SHIMVMM_REQUIRE_GUEST=1.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use shimvmm_tests::{
    alpine_test_cmdline, artifacts, plain_image, require_guest_env, shimvmm_bin, test_image, GuestProcess, PowerAction,
};

// Generous: a nested-TCG guest on a loaded 2-core host takes minutes; a hang still fails.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// shimvmm with the Alpine kernel + initrd, 2 vCPUs, 512 MiB and `root` as
/// /dev/vda, on the quiet test command line.
fn shimvmm(kernel: &Path, root: &Path, extra: &[String]) -> Command {
    let art = artifacts();
    let mut c = Command::new(shimvmm_bin());
    c.arg("--kernel").arg(kernel).arg("--initrd").arg(&art.initrd);
    c.args(["--cmdline", &alpine_test_cmdline(), "--vcpus", "2", "--mem", "512"]);
    c.arg("--disk").arg(format!("path={}", root.display()));
    c.args(extra);
    c
}

fn boot(name: &str, kernel: &Path, root: &Path, extra: &[String]) -> GuestProcess {
    GuestProcess::spawn(name, shimvmm(kernel, root, extra)).unwrap_or_else(|e| panic!("spawn shimvmm: {e}"))
}

/// Waits for the test script's exit line and for shimvmm to exit; returns shimvmm's status code.
fn finish(vm: &mut GuestProcess) -> i32 {
    let script = vm.wait_for_guest_exit(BOOT_TIMEOUT).unwrap_or_else(|e| panic!("guest script did not finish: {e}"));
    assert_eq!(script, 0, "guest test script failed; console:\n{}", vm.tail(40));
    let st = vm.exit_status(EXIT_TIMEOUT).unwrap_or_else(|e| panic!("shimvmm did not exit: {e}"));
    st.code().unwrap_or_else(|| panic!("shimvmm killed by a signal: {st:?}\n{}", vm.tail(40)))
}

fn marker(vm: &GuestProcess, name: &str) -> String {
    vm.marker(name).unwrap_or_else(|| panic!("no marker {name}; console:\n{}", vm.tail(40))).value
}

#[test]
fn alpine_reaches_login_prompt_and_sigterm_stops_cleanly() {
    if !require_guest_env("alpine_reaches_login_prompt_and_sigterm_stops_cleanly") {
        return;
    }
    let image = plain_image();
    let mut vm = boot("shimvmm-login", &artifacts().kernel, image.path(), &[]);
    let at = vm.wait_for_line("login:", BOOT_TIMEOUT).unwrap_or_else(|e| panic!("no login prompt: {e}"));
    println!("shimvmm: Alpine login prompt on ttyS0 after {:.2} s", at.as_secs_f64());
    let st = Command::new("kill").args(["-TERM", &vm.pid().to_string()]).status().unwrap();
    assert!(st.success());
    let st = vm.exit_status(Duration::from_secs(20)).unwrap_or_else(|e| panic!("SIGTERM did not stop shimvmm: {e}"));
    assert_eq!(st.code(), Some(0), "SIGTERM must be a clean stop; console:\n{}", vm.tail(20));
}

fn debugfs_cat(image: &Path, file: &str) -> String {
    let out = Command::new("debugfs").args(["-R", &format!("cat {file}")]).arg(image).output().expect("run debugfs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One boot checks the topology, a read-only second disk, and that a file
/// written to the root disk survives a guest `reboot` (which ends shimvmm with 0).
#[test]
fn topology_readonly_disk_and_durable_write_across_reboot() {
    if !require_guest_env("topology_readonly_disk_and_durable_write_across_reboot") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("shimvmm-ro-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("content")).unwrap();
    std::fs::write(dir.join("content/hello"), "read-only data\n").unwrap();
    let ro = dir.join("ro.ext4");
    let st = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(dir.join("content"))
        .arg(&ro)
        .arg("8M")
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.ext4 failed");
    let before = std::fs::read(&ro).unwrap();
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let token = format!("durable-{}-{nanos}", std::process::id());
    let script = format!(
        "marker nproc \"$(nproc)\"\n\
         marker memtotal_kib \"$(awk '/MemTotal/ {{print $2}}' /proc/meminfo)\"\n\
         marker getro \"$(blockdev --getro /dev/vdb)\"\n\
         if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct conv=notrunc 2>/dev/null; then marker ddwrite ok; else marker ddwrite refused; fi\n\
         mkdir -p /mnt/ro && mount -t ext4 /dev/vdb /mnt/ro 2>/dev/null; marker content \"$(cat /mnt/ro/hello)\"\n\
         if touch /mnt/ro/new 2>/dev/null; then marker fswrite ok; else marker fswrite refused; fi\n\
         umount /mnt/ro\n\
         echo {token} > /root/durable.txt\nsync\nmarker written 1\n"
    );
    let image = test_image(&script, PowerAction::Reboot);
    let extra = vec!["--disk".to_string(), format!("path={},readonly=on", ro.display())];
    let mut vm = boot("shimvmm-boot", &artifacts().kernel, image.path(), &extra);
    let code = finish(&mut vm);
    assert_eq!(marker(&vm, "nproc"), "2");
    let kib: f64 = marker(&vm, "memtotal_kib").parse().expect("MemTotal is a number");
    let ratio = kib / (512.0 * 1024.0);
    // MemTotal excludes the kernel's own reservations; within a few percent of 512 MiB.
    assert!((0.90..=1.0).contains(&ratio), "MemTotal {kib} KiB is {:.1}% of 512 MiB", ratio * 100.0);
    assert_eq!(marker(&vm, "getro"), "1", "the guest must see /dev/vdb as read-only");
    assert_eq!(marker(&vm, "ddwrite"), "refused");
    assert_eq!(marker(&vm, "content"), "read-only data");
    assert_eq!(marker(&vm, "fswrite"), "refused");
    assert_eq!(code, 0, "a guest reboot must end shimvmm with status 0");
    assert!(std::fs::read(&ro).unwrap() == before, "the read-only image changed");
    assert_eq!(
        debugfs_cat(image.path(), "/root/durable.txt").trim(),
        token,
        "file not in the image after the VM stopped"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Extracts the ELF vmlinux from the bzImage's gzip payload (python3's zlib).
fn extract_vmlinux(bzimage: &Path, out: &Path) {
    // A raw string: Rust's `\` line continuation would strip the indentation.
    let py = r#"
import sys, zlib
d = open(sys.argv[1], 'rb').read()
i = 0
while True:
    i = d.find(b'\x1f\x8b\x08', i)
    if i < 0:
        sys.exit('no gzip payload with an ELF inside')
    try:
        o = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(d[i:])
        if o[:4] == b'\x7fELF':
            open(sys.argv[2], 'wb').write(o)
            break
    except zlib.error:
        pass
    i += 1
"#;
    let st = Command::new("python3").args(["-c", py]).arg(bzimage).arg(out).status().expect("python3");
    assert!(st.success(), "cannot extract vmlinux from {}", bzimage.display());
}

#[test]
fn elf_vmlinux_boots_and_init_poweroff_exits_zero() {
    if !require_guest_env("elf_vmlinux_boots_and_init_poweroff_exits_zero") {
        return;
    }
    let vmlinux: PathBuf = std::env::temp_dir().join(format!("shimvmm-vmlinux-{}", std::process::id()));
    extract_vmlinux(&artifacts().kernel, &vmlinux);
    // A full `poweroff` through busybox init and openrc (not the forced syscall).
    let image = test_image("marker elf-booted \"$(uname -r)\"\n(sleep 1; poweroff) &\n", PowerAction::None);
    let mut vm = boot("shimvmm-elf", &vmlinux, image.path(), &[]);
    let code = finish(&mut vm);
    assert!(!marker(&vm, "elf-booted").is_empty());
    assert_eq!(code, 0, "guest poweroff must end shimvmm with status 0");
    let _ = std::fs::remove_file(&vmlinux);
}
