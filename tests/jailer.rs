//! shimvmm-jailer (issue 19), host tests; they need root (namespaces, mknod,
//! pivot_root) and the statically linked binaries:
//! `RUSTFLAGS='-C target-feature=+crt-static' cargo build --release -p shimvmm -p jailer --target x86_64-unknown-linux-gnu`
//! (or SHIMVMM_STATIC_BIN / SHIMVMM_JAILER). Without them the tests say
//! SKIPPED, or fail with SHIMVMM_REQUIRE_JAILER=1.
//!
//! - `jailed_vmm_sees_only_what_it_was_given`: a host file the jail was not
//!   given is "No such file" to the jailed VMM; a file given with
//!   `--ro-file` is there at the same path (the VMM gets past it to
//!   /dev/kvm, which it was not given).
//! - `jailed_vmm_runs_unprivileged_as_pid_1_and_stops_on_sigterm`: an
//!   API-only VMM in the jail runs as uid/gid 1000, PID 1 of its own PID
//!   namespace, in its own mount namespace, with every thread filtered; its
//!   root holds only the VMM and /run; its API answers through the jail's
//!   /run; SIGTERM to the jailer stops it with status 0 and the per-VM
//!   directory is removed.
//!
//! Guest test (testbed; SKIPPED elsewhere, fails with SHIMVMM_REQUIRE_GUEST=1):
//! - `jailed_shim_guest_pings_the_peer`: the Alpine guest on the VFIO shim,
//!   started by the jailer as uid/gid 1000 in new mount, PID and (empty)
//!   network namespaces, with only the kernel, initrd, its image, /dev/kvm,
//!   the VFIO nodes and a read-only /sys; RLIMIT_MEMLOCK = RAM + 64 MiB. The
//!   VMM runs as uid 1000 with every thread filtered, the guest pings the
//!   peer, powers off, and the jailer exits 0.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shimvmm_tests::{require_guest_env, test_image, GuestProcess, PowerAction};

const UID: u32 = 1000;

fn static_bins() -> Option<(PathBuf, PathBuf)> {
    let dir = shimvmm_tests::repo_root().join("target/x86_64-unknown-linux-gnu/release");
    let vmm = std::env::var_os("SHIMVMM_STATIC_BIN").map(PathBuf::from).unwrap_or_else(|| dir.join("shimvmm"));
    let jailer = std::env::var_os("SHIMVMM_JAILER").map(PathBuf::from).unwrap_or_else(|| dir.join("shimvmm-jailer"));
    (vmm.is_file() && jailer.is_file()).then_some((vmm, jailer))
}

fn ready(test: &str) -> Option<(PathBuf, PathBuf)> {
    let required = std::env::var_os("SHIMVMM_REQUIRE_JAILER").is_some();
    // SAFETY: geteuid takes no arguments.
    let root = unsafe { libc::geteuid() } == 0;
    let bins = static_bins();
    if root && bins.is_some() {
        return bins;
    }
    let why = if !root { "not root" } else { "no static shimvmm/shimvmm-jailer built" };
    assert!(!required, "{test}: {why}");
    eprintln!("SKIPPED {test}: {why}");
    None
}

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("shimvmm-jailer-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

fn jailer(jailer: &Path, vmm: &Path, base: &Path, id: &str) -> Command {
    let mut c = Command::new(jailer);
    c.args(["--id", id, "--uid", &UID.to_string(), "--gid", &UID.to_string()]);
    c.arg("--exec-file").arg(vmm).arg("--chroot-base-dir").arg(base);
    c.stdin(Stdio::null());
    c
}

#[test]
fn jailed_vmm_sees_only_what_it_was_given() {
    let Some((vmm, jail)) = ready("jailed_vmm_sees_only_what_it_was_given") else { return };
    let d = dir("files");
    let base = d.0.join("base");
    let secret = d.0.join("secret-kernel");
    std::fs::write(&secret, vec![0u8; 4096]).unwrap();
    let given = d.0.join("given-kernel");
    std::fs::write(&given, vec![0u8; 4096]).unwrap();

    let out = jailer(&jail, &vmm, &base, "files-1").args(["--", "--no-api", "--kernel"]).arg(&secret).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot open kernel") && err.contains("No such file"), "a host file is invisible: {err}");

    let out = jailer(&jail, &vmm, &base, "files-2")
        .arg("--ro-file")
        .arg(&given)
        .args(["--", "--no-api", "--kernel"])
        .arg(&given)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("cannot open kernel"), "the given file is there: {err}");
    assert!(err.contains("/dev/kvm"), "and /dev/kvm (not given) is not: {err}");
    assert!(!base.join("shimvmm/files-1").exists() && !base.join("shimvmm/files-2").exists(), "per-VM dirs removed");
}

fn status_field(pid: u32, field: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines().find_map(|l| l.strip_prefix(field)).map(|v| v.trim().to_string()).unwrap_or_default()
}

#[test]
fn jailed_vmm_runs_unprivileged_as_pid_1_and_stops_on_sigterm() {
    let Some((vmm, jail)) = ready("jailed_vmm_runs_unprivileged_as_pid_1_and_stops_on_sigterm") else { return };
    let d = dir("api");
    let base = d.0.join("base");
    let mut child = jailer(&jail, &vmm, &base, "api-1")
        .args(["--rlimit-nofile", "512", "--", "--api-sock", "/run/api.sock"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The VMM is the jailer's only child.
    let deadline = Instant::now() + Duration::from_secs(20);
    let pid = loop {
        let kids =
            std::fs::read_to_string(format!("/proc/{}/task/{}/children", child.id(), child.id())).unwrap_or_default();
        if let Some(p) = kids.split_whitespace().next() {
            let p: u32 = p.parse().unwrap();
            let sock = PathBuf::from(format!("/proc/{p}/root/run/api.sock"));
            if status_field(p, "Name:") == "shimvmm" && sock.exists() {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "the jailed VMM did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status_field(pid, "Uid:").split_whitespace().collect::<Vec<_>>(), ["1000"; 4]);
    assert_eq!(status_field(pid, "Gid:").split_whitespace().collect::<Vec<_>>(), ["1000"; 4]);
    assert_eq!(status_field(pid, "Groups:"), "");
    assert_eq!(status_field(pid, "NSpid:").split_whitespace().last(), Some("1"), "PID 1 in its own PID namespace");
    let ns = |p: &str, n: &str| std::fs::read_link(format!("/proc/{p}/ns/{n}")).unwrap();
    assert_ne!(ns(&pid.to_string(), "mnt"), ns("self", "mnt"), "own mount namespace");
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let st = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        assert!(st.contains("Seccomp:\t2"), "{st}");
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    assert!(limits.lines().any(|l| l.starts_with("Max open files") && l.contains(" 512 ")), "{limits}");
    let mut seen: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/root/"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["run", "shimvmm"], "the jail's root holds only what it was given");
    assert!(!Path::new(&format!("/proc/{pid}/root/etc/passwd")).exists());

    let mut s = UnixStream::connect(format!("/proc/{pid}/root/run/api.sock")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 200") && reply.contains("Not started"), "{reply}");

    // SAFETY: kill(2) on our own child (the jailer), which forwards it.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "SIGTERM did not stop the jailed VMM");
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(st.code(), Some(0), "{err}");
    assert!(!base.join("shimvmm/api-1").exists(), "per-VM dir removed");
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run this test in tools/testbed"))
}

#[test]
fn jailed_shim_guest_pings_the_peer() {
    if !require_guest_env("jailed_shim_guest_pings_the_peer") {
        return;
    }
    let (vmm, jail) = static_bins().expect("static shimvmm and shimvmm-jailer (see the top of tests/jailer.rs)");
    let pnic = env("SHIMVMM_PNIC");
    let peer_ip = env("SHIMVMM_PEER_IP");
    let group = std::fs::read_link(format!("/sys/bus/pci/devices/{pnic}/iommu_group")).unwrap();
    let group = group.file_name().unwrap().to_string_lossy().into_owned();
    let script = format!(
        r#"
modprobe virtio_net 2>/dev/null
n=30; while [ $n -gt 0 ] && [ ! -e /sys/class/net/eth0 ]; do sleep 1; n=$((n-1)); done
ip addr add 192.0.2.10/24 dev eth0
ip link set eth0 up
n=60; while [ $n -gt 0 ] && ! ping -c 1 -W 2 {peer_ip} >/dev/null 2>&1; do n=$((n-1)); done
out=$(ping -c 5 -W 3 {peer_ip} 2>&1)
marker ping-rc $?
marker ping-summary "$(echo "$out" | grep 'packets transmitted')"
"#
    );
    let image = test_image(&script, PowerAction::Poweroff);
    let c = std::ffi::CString::new(image.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: chown on a NUL-terminated path we own.
    assert_eq!(unsafe { libc::chown(c.as_ptr(), UID, UID) }, 0, "chown the image");
    let art = shimvmm_tests::artifacts();
    let base = std::env::temp_dir().join(format!("shimvmm-jail-guest-{}", std::process::id()));
    let mem_mib = 512u64;
    let mut cmd = jailer(&jail, &vmm, &base, "shim-guest");
    cmd.arg("--ro-file").arg(&art.kernel).arg("--ro-file").arg(&art.initrd).arg("--file").arg(image.path());
    cmd.args(["--device", "/dev/kvm", "--device", "/dev/vfio/vfio", "--device", &format!("/dev/vfio/{group}")]);
    cmd.args(["--sysfs", "--new-netns", "--rlimit-memlock", &((mem_mib + 64) << 20).to_string(), "--"]);
    cmd.arg("--kernel").arg(&art.kernel).arg("--initrd").arg(&art.initrd);
    cmd.args(["--cmdline", &shimvmm_tests::alpine_test_cmdline(), "--vcpus", "2", "--mem", &mem_mib.to_string()]);
    cmd.arg("--disk").arg(format!("path={},root=on", image.path().display()));
    cmd.args(["--net", &format!("vfio={pnic},id=net0"), "--no-api", "--log-level", "info"]);
    let mut vm = GuestProcess::spawn("jailed-shim", cmd).expect("spawn the jailer");

    // The VMM: the jailer's child, as uid 1000, every thread filtered.
    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        let kids = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", vm.pid())).unwrap_or_default();
        if let Some(p) = kids.split_whitespace().next().and_then(|p| p.parse::<u32>().ok()) {
            if status_field(p, "Name:") == "shimvmm" {
                break p;
            }
        }
        assert!(Instant::now() < deadline, "the jailed VMM did not start\n{}", vm.tail(20));
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(status_field(pid, "Uid:").split_whitespace().collect::<Vec<_>>(), ["1000"; 4]);
    assert_eq!(status_field(pid, "NSpid:").split_whitespace().last(), Some("1"));
    let rc = vm.wait_for_marker("ping-rc", Duration::from_secs(900)).unwrap_or_else(|e| panic!("{e}\n{}", vm.tail(40)));
    let summary = vm.marker("ping-summary").map(|m| m.value).unwrap_or_default();
    eprintln!("jailed shim guest: ping {summary}");
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        let comm = std::fs::read_to_string(t.join("comm")).unwrap_or_default();
        let st = std::fs::read_to_string(t.join("status")).unwrap_or_default();
        assert!(comm.starts_with("kvm-") || st.contains("Seccomp:\t2"), "{comm}: {st}");
    }
    assert_eq!(rc.value, "0", "the guest could not ping the peer: {summary}\n{}", vm.tail(40));
    let exit = vm.wait_for_guest_exit(Duration::from_secs(300));
    let st = vm.exit_status(Duration::from_secs(120));
    assert_eq!(exit.as_ref().ok(), Some(&0), "{}", vm.tail(40));
    assert!(st.as_ref().is_ok_and(|s| s.success()), "jailer exit {st:?}\n{}", vm.tail(40));
    let _ = std::fs::remove_dir_all(&base);
}
