//! shimvmm started as an orchestrator starts Firecracker, on the host with
//! a guest that only spins (a tiny ELF built here, as in vcpu_exits.rs):
//! `--id --api-sock --config-file --log-path --level --show-level
//! --metrics-path FIFO --boot-timer --no-seccomp`. Checks what such an
//! orchestrator relies on: the vCPU threads are named `fc_vcpu N` (Kata finds
//! them so), the metrics FIFO gets one Firecracker-format JSON line per
//! FlushMetrics (Kata and firecracker-containerd read it), the log file has
//! Firecracker's line layout, `GET /` shows the id and "Running".

use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shimvmm_tests::shimvmm_bin;

const LOAD_ADDR: u64 = 0x100_0000;
const CODE_OFFSET: u64 = 0x1000;

/// A minimal ELF64 executable with one PT_LOAD segment holding `code`.
fn tiny_elf(code: &[u8]) -> Vec<u8> {
    let mut f = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&0x3eu16.to_le_bytes()); // x86-64
    f.extend_from_slice(&1u32.to_le_bytes());
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes()); // e_entry
    f.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    f.extend_from_slice(&0u64.to_le_bytes());
    f.extend_from_slice(&0u32.to_le_bytes());
    f.extend_from_slice(&64u16.to_le_bytes());
    f.extend_from_slice(&56u16.to_le_bytes());
    f.extend_from_slice(&1u16.to_le_bytes());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    f.extend_from_slice(&5u32.to_le_bytes()); // R+X
    f.extend_from_slice(&CODE_OFFSET.to_le_bytes());
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    f.extend_from_slice(&LOAD_ADDR.to_le_bytes());
    f.extend_from_slice(&(code.len() as u64).to_le_bytes());
    f.extend_from_slice(&(code.len() as u64).to_le_bytes());
    f.extend_from_slice(&0x1000u64.to_le_bytes());
    f.resize(CODE_OFFSET as usize, 0);
    f.extend_from_slice(code);
    f
}

fn kvm_usable() -> bool {
    if Path::new("/dev/kvm").exists() {
        return true;
    }
    assert_ne!(std::env::var("SHIMVMM_REQUIRE_GUEST").as_deref(), Ok("1"), "/dev/kvm is missing");
    println!("*** SKIPPED: /dev/kvm is missing on this host ***");
    false
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn thread_names(pid: u32) -> Vec<String> {
    let mut names = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        if let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) {
            names.push(comm.trim_end().to_string());
        }
    }
    names.sort();
    names
}

#[test]
fn runs_as_an_orchestrator_runs_firecracker() {
    if !kvm_usable() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fcproc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("spin");
    std::fs::write(&kernel, tiny_elf(&[0xeb, 0xfe])).unwrap(); // jmp $
    std::fs::write(dir.join("stub.img"), [0u8; 512]).unwrap();
    std::fs::write(dir.join("image.img"), vec![7u8; 64 * 512]).unwrap();
    let config = dir.join("vm.json");
    let cfg = json!({
        "boot-source": {"kernel_image_path": kernel, "boot_args": "console=ttyS0"},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 64, "smt": false},
        "drives": [{"drive_id": "stub", "path_on_host": dir.join("stub.img"), "is_root_device": false}],
        "network-interfaces": [],
        "vsock": null,
        "balloon": null,
        "entropy": {"rate_limiter": null},
    });
    std::fs::write(&config, cfg.to_string()).unwrap();
    let fifo = dir.join("metrics.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo reads the NUL-terminated path we own.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo: {}", std::io::Error::last_os_error());
    let log = dir.join("fc.log");
    let sock: PathBuf = dir.join("api.sock");

    let child = Command::new(shimvmm_bin())
        .args(["--id", "fc-proc-1", "--boot-timer", "--level", "Info", "--show-level"])
        .arg("--api-sock")
        .arg(&sock)
        .arg("--config-file")
        .arg(&config)
        .arg("--log-path")
        .arg(&log)
        .arg("--metrics-path")
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut vm = Killed(child);
    let pid = vm.0.id();
    let t = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        if let Some(st) = vm.0.try_wait().unwrap() {
            let mut err = String::new();
            vm.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
            panic!("shimvmm exited ({st}): {err}");
        }
        assert!(t.elapsed() < Duration::from_secs(10), "no API socket");
        std::thread::sleep(Duration::from_millis(20));
    }

    let (code, body) = shimvmm_tests::api_request(&sock, "GET", "/", None);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, info["id"].as_str(), info["state"].as_str()), (200, Some("fc-proc-1"), Some("Running")));

    let names = thread_names(pid);
    assert!(names.contains(&"fc_vcpu 0".to_string()) && names.contains(&"fc_vcpu 1".to_string()), "{names:?}");
    assert!(names.contains(&"fc_api".to_string()), "{names:?}");

    // The FIFO: opened by shimvmm at start; one line per FlushMetrics.
    let reader = std::fs::OpenOptions::new().read(true).open(&fifo).unwrap();
    let mut lines = BufReader::new(reader).lines();
    for _ in 0..2 {
        let (code, body) =
            shimvmm_tests::api_request(&sock, "PUT", "/actions", Some(json!({"action_type": "FlushMetrics"})));
        assert_eq!(code, 204, "{body}");
        let line = lines.next().expect("a metrics line").unwrap();
        let m: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(m["utc_timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000, "{line}");
        for key in ["block", "net", "shimvmm"] {
            assert!(m[key].is_object(), "{key} missing: {line}");
        }
        assert_eq!(m["net"]["tx_packets_count"], 0, "{line}");
        // Firecracker's rate-limiter counters, under its names.
        assert_eq!(m["block"]["rate_limiter_throttled_events"], 0, "{line}");
        assert_eq!(m["net"]["tx_rate_limiter_throttled"], 0, "{line}");
        // The entropy device was built (the spinning guest never uses it).
        assert_eq!(m["shimvmm"]["entropy"]["entropy"]["requests"], 0, "{line}");
    }

    // The placeholder drive gets its real image while the guest runs
    // (firecracker-containerd's and Kata's PATCH /drives).
    let patch = json!({"drive_id": "stub", "path_on_host": dir.join("image.img")});
    let (code, body) = shimvmm_tests::api_request(&sock, "PATCH", "/drives/stub", Some(patch));
    assert_eq!(code, 204, "{body}");
    let (_, body) = shimvmm_tests::api_request(&sock, "GET", "/vm/config", None);
    let cfg: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["drives"][0]["path_on_host"], json!(dir.join("image.img")));
    let missing = json!({"drive_id": "stub", "path_on_host": dir.join("missing.img")});
    let (code, body) = shimvmm_tests::api_request(&sock, "PATCH", "/drives/stub", Some(missing));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("missing.img"), "{body}");

    // A second metrics set-up is refused, as in Firecracker.
    let (code, _) = shimvmm_tests::api_request(&sock, "PUT", "/metrics", Some(json!({"metrics_path": dir.join("m2")})));
    assert_eq!(code, 400);

    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let t = Instant::now();
    while vm.0.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "shimvmm ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The exit-time line.
    let last = lines.next().expect("the exit-time metrics line").unwrap();
    assert!(serde_json::from_str::<Value>(&last).unwrap()["shimvmm"].is_object(), "{last}");

    let text = std::fs::read_to_string(&log).unwrap();
    let line = text.lines().next().unwrap_or_else(|| panic!("nothing logged to {}", log.display()));
    // 2026-12-06T11:06:28.727252163 [fc-proc-1:main:INFO] ...
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert_eq!(stamp.len(), 29, "{line}");
    assert!(rest.starts_with("[fc-proc-1:") && rest.contains(":INFO] "), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// CPU time (utime + stime, clock ticks; a KVM guest's time counts as the
/// thread's utime) of each of `pid`'s threads named `fc_vcpu N`.
fn vcpu_ticks(pid: u32) -> Vec<u64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("fc_vcpu") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the ")" that ends the name: state is field 3, utime 14, stime 15.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<u64> = rest.split_whitespace().skip(11).take(2).filter_map(|x| x.parse().ok()).collect();
        out.push(f.iter().sum());
    }
    out
}

/// PATCH /vm on a spinning guest: while paused its vCPU thread uses no CPU and
/// GET / says Paused; resumed, it spins again; the drive's rate limiter
/// changes while the VM runs; a paused VMM still stops on SIGTERM.
#[test]
fn pause_stops_the_vcpus_and_resume_restarts_them() {
    if !kvm_usable() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("fcpause-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("spin");
    std::fs::write(&kernel, tiny_elf(&[0xeb, 0xfe])).unwrap(); // jmp $
    std::fs::write(dir.join("disk.img"), [0u8; 4096]).unwrap();
    let config = dir.join("vm.json");
    let limiter = json!({"bandwidth": {"size": 1_000_000, "refill_time": 100}, "ops": null});
    let cfg = json!({
        "boot-source": {"kernel_image_path": kernel, "boot_args": "console=ttyS0"},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "drives": [{"drive_id": "disk", "path_on_host": dir.join("disk.img"), "is_root_device": false,
            "rate_limiter": limiter}],
    });
    std::fs::write(&config, cfg.to_string()).unwrap();
    let sock: PathBuf = dir.join("api.sock");
    let child = Command::new(shimvmm_bin())
        .args(["--id", "fc-pause"])
        .arg("--api-sock")
        .arg(&sock)
        .arg("--config-file")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut vm = Killed(child);
    let pid = vm.0.id();
    let t = Instant::now();
    while UnixStream::connect(&sock).is_err() {
        assert!(vm.0.try_wait().unwrap().is_none(), "shimvmm exited");
        assert!(t.elapsed() < Duration::from_secs(10), "no API socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let state = |sock: &Path| -> String {
        let (_, body) = shimvmm_tests::api_request(sock, "GET", "/", None);
        serde_json::from_str::<Value>(&body).unwrap()["state"].as_str().unwrap().to_string()
    };
    // Ticks each vCPU used over `secs`.
    let used = |secs: u64| -> Vec<u64> {
        let a = vcpu_ticks(pid);
        std::thread::sleep(Duration::from_secs(secs));
        vcpu_ticks(pid).iter().zip(&a).map(|(b, a)| b - a).collect()
    };
    assert_eq!(state(&sock), "Running");
    // The machine is shared: a spinning vCPU gets at least a tenth of a core.
    let running = used(2);
    assert_eq!(running.len(), 1, "one vCPU thread");
    assert!(running.iter().all(|&t| t >= 20), "a spinning vCPU uses CPU: {running:?} ticks in 2 s");

    for _ in 0..2 {
        let (code, body) = shimvmm_tests::api_request(&sock, "PATCH", "/vm", Some(json!({"state": "Paused"})));
        assert_eq!(code, 204, "{body}");
        assert_eq!(state(&sock), "Paused");
        let paused = used(2);
        assert!(paused.iter().all(|&t| t <= 2), "a paused vCPU still ran: {paused:?} ticks in 2 s");
        // The API still works while paused.
        let patch = json!({"drive_id": "disk", "rate_limiter": {"ops": {"size": 100, "refill_time": 1000}}});
        let (code, body) = shimvmm_tests::api_request(&sock, "PATCH", "/drives/disk", Some(patch));
        assert_eq!(code, 204, "{body}");
        let (code, body) = shimvmm_tests::api_request(&sock, "PATCH", "/vm", Some(json!({"state": "Resumed"})));
        assert_eq!(code, 204, "{body}");
        assert_eq!(state(&sock), "Running");
        let resumed = used(2);
        assert!(resumed.iter().all(|&t| t >= 20), "a resumed vCPU does not run: {resumed:?} ticks in 2 s");
    }
    let (_, body) = shimvmm_tests::api_request(&sock, "GET", "/vm/config", None);
    let cfg: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        cfg["drives"][0]["rate_limiter"],
        json!({"bandwidth": {"size": 1_000_000, "one_time_burst": null, "refill_time": 100},
            "ops": {"size": 100, "one_time_burst": null, "refill_time": 1000}}),
        "the PATCH replaced the ops bucket and kept bandwidth"
    );

    // Paused, the VMM still stops on SIGTERM.
    let (code, _) = shimvmm_tests::api_request(&sock, "PATCH", "/vm", Some(json!({"state": "Paused"})));
    assert_eq!(code, 204);
    assert!(Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap().success());
    let t = Instant::now();
    while vm.0.try_wait().unwrap().is_none() {
        assert!(t.elapsed() < Duration::from_secs(10), "a paused shimvmm ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(&dir);
}
