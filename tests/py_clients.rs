//! Firecracker client libraries from PyPI boot the Alpine guest through
//! shimvmm, their code unchanged, with shimvmm installed where each looks for
//! `firecracker`:
//! - firecracker-python 0.0.5 (module `firecracker`): fixed binary path
//!   /usr/local/bin/firecracker, configures the VM call by call over the API;
//! - microheart 0.3.0: `$MICROHEART_HOME/firecracker`, boots with
//!   `--api-sock --config-file --enable-pci` and waits until SSH into the guest
//!   works. It boots the module-free kernel (ACPI needs its `CONFIG_PCI=y`,
//!   see resources/guest/microvm.config).
//!
//! Each client is installed by `tools/pyclients install` (wheel pinned by
//! version and sha256, a venv in the cache; on the host, since the testbed
//! sees the cache read-only). A driver in tests/pyclients/ calls the client's
//! public API; it runs in tests/pyclients/sandbox.sh inside fresh mount, net
//! and pid namespaces (`unshare`), which lays overlays over the system paths
//! the clients write to, puts shimvmm there as `firecracker`, and gives the
//! namespace an uplink with a default route. The driver prints `PYCLIENT`
//! lines; the guest proves it reached userspace with a marker from its openrc
//! `local` service, then its login prompt (or, for microheart, SSH).
//!
//! The guest is the Alpine rootfs. firecracker-python boots it with the Alpine
//! kernel and an initrd (the Alpine one plus an /init that mounts /dev/vda:
//! the client gives no `root=` with an initrd); microheart has no initrd
//! option, so it boots shimvmm's module-free kernel
//! (resources/guest/build-kernel.sh, built on the host first).
//!
//! Build on the host: `tools/pyclients install && resources/guest/build-kernel.sh &&
//! cargo build --release -p shimvmm && cargo test --release -p shimvmm-tests
//! --test py_clients --no-run`, then run the binary in the testbed. Elsewhere
//! it prints a loud SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shimvmm_tests::{
    artifacts, microvm_boot, one_vm_at_a_time, repo_root, require_guest_env, shimvmm_bin, test_image, PowerAction,
};

/// Boot to the guest's login under nested TCG, plus the client's own steps.
const GUEST_TIMEOUT_S: u64 = 300;
/// The whole driver run (python starts slowly in the testbed).
const DRIVER_TIMEOUT: Duration = Duration::from_secs(GUEST_TIMEOUT_S + 300);
/// The guest's proof that userspace runs.
const MARKER: &str = "pyclient-userspace";

/// A scratch directory, removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn scratch(name: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("shimvmm-pyclient-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

/// The client's venv, installed on the host by `tools/pyclients install`.
fn venv(client: &str) -> PathBuf {
    let out = Command::new(repo_root().join("tools/pyclients"))
        .args(["venv", client])
        .stderr(Stdio::inherit())
        .output()
        .expect("run tools/pyclients");
    assert!(out.status.success(), "no venv for {client}: run `tools/pyclients install` on the host first");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The module-free kernel (ELF vmlinux: Firecracker's x86 kernel format).
fn kernel() -> PathBuf {
    let boot = microvm_boot().unwrap_or_else(|| {
        panic!("the microVM kernel is not built: run resources/guest/build-kernel.sh on the host first")
    });
    boot.vmlinux.unwrap_or(boot.kernel)
}

/// Runs `driver` (tests/pyclients/NAME.py) with the client's python inside
/// the sandbox; returns (success, output).
fn run_driver(client: &str, driver: &str, work: &Path, args: &[&str]) -> (bool, String) {
    run_driver_env(client, driver, work, args, &[])
}

/// [`run_driver`] with extra environment variables.
fn run_driver_env(client: &str, driver: &str, work: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let python = venv(client).join("bin/python");
    let dir = repo_root().join("tests/pyclients");
    let mut child = Command::new("unshare")
        .args(["--mount", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--propagation", "private"])
        .arg(dir.join("sandbox.sh"))
        .arg(work)
        .arg(shimvmm_bin())
        .arg(&python)
        .arg(dir.join(driver))
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unshare (util-linux)");
    // Both streams are echoed as they come (a hang shows how far it got) and kept.
    let echo = |stream: Box<dyn Read + Send>, tag: &'static str| {
        std::thread::spawn(move || {
            let mut kept = String::new();
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                eprintln!("[{tag}] {line}");
                kept.push_str(&line);
                kept.push('\n');
            }
            kept
        })
    };
    let o = echo(Box::new(child.stdout.take().unwrap()), "driver");
    let e = echo(Box::new(child.stderr.take().unwrap()), "driver stderr");
    let deadline = Instant::now() + DRIVER_TIMEOUT;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for the driver") {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = format!("{}\n--- stderr ---\n{}", o.join().unwrap(), e.join().unwrap());
    match status {
        Some(st) => (st.success(), text),
        None => (false, format!("{text}\n(killed after {DRIVER_TIMEOUT:?})")),
    }
}

fn assert_steps(text: &str, steps: &[&str]) {
    for s in steps {
        assert!(text.lines().any(|l| l.starts_with(&format!("PYCLIENT {s}"))), "no `PYCLIENT {s}` line:\n{text}");
    }
}

#[test]
fn firecracker_python_boots_the_alpine_guest_through_shimvmm() {
    if !require_guest_env("firecracker_python_boots_the_alpine_guest_through_shimvmm") {
        return;
    }
    let _vm = one_vm_at_a_time();
    let work = scratch("fcpy");
    let image = test_image(&format!("marker {MARKER} \"$(uname -r)\"\n"), PowerAction::None);
    let art = artifacts();
    let initrd = work.0.join("initrd");
    write_initrd_with_root_init(&art.initrd, &initrd);
    let (ok, text) = run_driver(
        "firecracker-python",
        "firecracker_python.py",
        &work.0,
        &[
            art.kernel.to_str().unwrap(),
            image.path().to_str().unwrap(),
            MARKER,
            &GUEST_TIMEOUT_S.to_string(),
            initrd.to_str().unwrap(),
        ],
    );
    assert!(ok, "the firecracker-python driver failed:\n{text}");
    assert_steps(
        &text,
        &[
            "create VMM",
            "process",
            "guest-userspace",
            "guest-login-prompt",
            "config",
            "pause",
            "resume",
            "delete",
            "OK",
        ],
    );
    assert!(text.contains("comm=firecracker"), "the VMM does not run under the name `firecracker`:\n{text}");
}

/// firecracker-python passes no `root=` when it is given an initrd (it marks
/// the drive `is_root_device` only without one), and the Alpine initrd's
/// /init needs `root=` and `modules=`. This /init, appended to the Alpine
/// initrd (a later cpio member replaces an earlier one), does what Alpine's
/// does for `root=/dev/vda`: install busybox's applet links, load virtio_blk
/// and ext4, mount /dev/vda
/// read-write, move /dev, /proc, /sys there and switch_root to /sbin/init.
const ROOT_INIT: &str = r#"#!/bin/sh
export PATH=/usr/bin:/bin:/usr/sbin:/sbin
/bin/busybox mkdir -p /dev /proc /sys /sysroot
/bin/busybox --install -s
mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
modprobe -a virtio_blk ext4
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /sysroot || { echo "py_clients init: cannot mount /dev/vda"; exec sh; }
for d in dev proc sys; do mount -o move /$d /sysroot/$d; done
exec switch_root /sysroot /sbin/init
"#;

/// One newc cpio member (`070701` header, name and data padded to 4 bytes).
fn cpio_member(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let fields = [0, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0, name.len() as u32 + 1, 0];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The Alpine initrd followed by an uncompressed cpio holding [`ROOT_INIT`].
fn write_initrd_with_root_init(alpine: &Path, out: &Path) {
    let mut data = std::fs::read(alpine).expect("read the Alpine initrd");
    // The kernel finds the next archive after zero padding to 4 bytes.
    while !data.len().is_multiple_of(4) {
        data.push(0);
    }
    cpio_member(&mut data, "init", 0o100755, ROOT_INIT.as_bytes());
    cpio_member(&mut data, "TRAILER!!!", 0, &[]);
    std::fs::write(out, data).expect("write the initrd");
}

/// Writes files into the ext4 image with one `debugfs -w -f` script:
/// `(host file, guest path, mode)`; the directories in `dirs` are made first
/// (with their modes). debugfs takes owner and mode from the host file, so
/// the mode is set again explicitly.
fn add_to_image(image: &Path, dirs: &[(&str, u32)], files: &[(PathBuf, String, u32)], scratch: &Path) {
    let mut cmds = String::new();
    for (d, mode) in dirs {
        cmds += &format!("mkdir {d}\nsif {d} mode 0{:o}\nsif {d} uid 0\nsif {d} gid 0\n", 0o040000 | mode);
    }
    for (src, dst, mode) in files {
        cmds += &format!(
            "write {} {dst}\nsif {dst} mode 0{:o}\nsif {dst} uid 0\nsif {dst} gid 0\n",
            src.display(),
            0o100000 | mode
        );
    }
    let script = scratch.join("debugfs.cmds");
    std::fs::write(&script, cmds).unwrap();
    let out = Command::new("debugfs").arg("-w").arg("-f").arg(&script).arg(image).output().expect("run debugfs");
    assert!(out.status.success(), "debugfs failed: {}", String::from_utf8_lossy(&out.stderr));
    for (src, dst, _) in files {
        let len = std::fs::metadata(src).unwrap().len();
        let stat = Command::new("debugfs").arg("-R").arg(format!("stat {dst}")).arg(image).output().unwrap();
        assert!(
            String::from_utf8_lossy(&stat.stdout).contains(&format!("Size: {len}")),
            "{dst} did not land in the image: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The guest script for microheart: start the SSH server (Debian's dropbear
/// with its glibc libraries, see `tools/pyclients dropbear`), then the marker.
/// microheart's own 05-net.start has set the address by then (local.d runs
/// its scripts in name order).
const MICROHEART_GUEST_SCRIPT: &str = r#"
mkdir -p /etc/dropbear
LD_LIBRARY_PATH=/opt/dropbear /opt/dropbear/dropbear -R -p 22 2>&1
marker dropbear-rc $?
marker guest-addr "$(ip -4 addr show dev eth0 | grep inet)"
"#;

#[test]
fn microheart_boots_the_alpine_guest_through_shimvmm() {
    if !require_guest_env("microheart_boots_the_alpine_guest_through_shimvmm") {
        return;
    }
    let _vm = one_vm_at_a_time();
    let work = scratch("microheart");
    let venv = venv("microheart");

    // The guest: the Alpine image with an SSH server, microheart's network
    // script (from its wheel: the one its own rootfs recipe installs) and the
    // test key.
    let script = format!("{MICROHEART_GUEST_SCRIPT}marker {MARKER} \"$(uname -r)\"\n");
    let image = test_image(&script, PowerAction::None);
    let key = work.0.join("id_ed25519");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "shimvmm-py-clients", "-f"])
        .arg(&key)
        .status()
        .expect("run ssh-keygen (openssh-client)");
    assert!(st.success(), "ssh-keygen failed");
    let dropbear = {
        let out = Command::new(repo_root().join("tools/pyclients")).arg("dropbear").output().unwrap();
        assert!(out.status.success(), "no dropbear for the guest: run `tools/pyclients install` on the host first");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    let net_script = std::fs::read_dir(venv.join("lib"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/microheart/data/files/etc/local.d/05-net.start"))
        .find(|p| p.is_file())
        .expect("microheart's 05-net.start in its venv");
    let mut files = vec![
        (dropbear.join("ld-linux-x86-64.so.2"), "/lib64/ld-linux-x86-64.so.2".to_string(), 0o755),
        (key.with_extension("pub"), "/root/.ssh/authorized_keys".to_string(), 0o600),
        (net_script, "/etc/local.d/05-net.start".to_string(), 0o755),
    ];
    for e in std::fs::read_dir(&dropbear).unwrap().filter_map(|e| e.ok()) {
        let name = e.file_name().into_string().unwrap();
        if !name.starts_with('.') {
            files.push((e.path(), format!("/opt/dropbear/{name}"), 0o755));
        }
    }
    add_to_image(image.path(), &[("/lib64", 0o755), ("/opt/dropbear", 0o755), ("/root/.ssh", 0o700)], &files, &work.0);

    // microheart's home: shimvmm as `firecracker` (a symlink: exec names the
    // process after the link), the kernel as `vmlinux-*`.
    let home = work.0.join("microheart-home");
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::symlink(shimvmm_bin(), home.join("firecracker")).unwrap();
    // A copy: shimvmm opens the kernel with O_NOFOLLOW.
    std::fs::copy(kernel(), home.join("vmlinux-6.12")).expect("copy the kernel");

    let (ok, text) = run_driver_env(
        "microheart",
        "microheart_boot.py",
        &work.0,
        &[image.path().to_str().unwrap(), key.to_str().unwrap(), MARKER, &GUEST_TIMEOUT_S.to_string()],
        &[("MICROHEART_HOME", home.to_str().unwrap())],
    );
    assert!(ok, "the microheart driver failed:\n{text}");
    assert_steps(
        &text,
        &["start", "process", "guest-userspace", "ssh-run ", "ssh-run-alpine", "machine-config", "clean", "OK"],
    );
    assert!(text.contains("--enable-pci"), "microheart did not start the VMM with --enable-pci:\n{text}");
}
