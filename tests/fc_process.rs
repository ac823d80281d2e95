//! shimvmm started as an orchestrator starts Firecracker, on the host with
//! a guest that only spins (a tiny ELF built here, as in vcpu_exits.rs):
//! `--id --api-sock --config-file --log-path --level --show-level
//! --metrics-path FIFO --boot-timer --no-seccomp`. Checks what such an
//! orchestrator relies on: the vCPU threads are named `fc_vcpu N` (Kata finds
//! them so), the metrics FIFO gets one Firecracker-format JSON line per
//! FlushMetrics (Kata and firecracker-containerd read it), the log file has
//! Firecracker's line layout, `GET /` shows the id and "Running".

use std::io::{BufRead, BufReader, Read, Write};
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

fn request(sock: &Path, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
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

    let (code, body) = request(&sock, "GET", "/", None);
    let info: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((code, info["id"].as_str(), info["state"].as_str()), (200, Some("fc-proc-1"), Some("Running")));

    let names = thread_names(pid);
    assert!(names.contains(&"fc_vcpu 0".to_string()) && names.contains(&"fc_vcpu 1".to_string()), "{names:?}");
    assert!(names.contains(&"fc_api".to_string()), "{names:?}");

    // The FIFO: opened by shimvmm at start; one line per FlushMetrics.
    let reader = std::fs::OpenOptions::new().read(true).open(&fifo).unwrap();
    let mut lines = BufReader::new(reader).lines();
    for _ in 0..2 {
        let (code, body) = request(&sock, "PUT", "/actions", Some(json!({"action_type": "FlushMetrics"})));
        assert_eq!(code, 204, "{body}");
        let line = lines.next().expect("a metrics line").unwrap();
        let m: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(m["utc_timestamp_ms"].as_u64().unwrap() > 1_600_000_000_000, "{line}");
        for key in ["block", "net", "shimvmm"] {
            assert!(m[key].is_object(), "{key} missing: {line}");
        }
        assert_eq!(m["net"]["tx_packets_count"], 0, "{line}");
        // The entropy device was built (the spinning guest never uses it).
        assert_eq!(m["shimvmm"]["entropy"]["entropy"]["requests"], 0, "{line}");
    }

    // The placeholder drive gets its real image while the guest runs
    // (firecracker-containerd's and Kata's PATCH /drives).
    let patch = json!({"drive_id": "stub", "path_on_host": dir.join("image.img")});
    let (code, body) = request(&sock, "PATCH", "/drives/stub", Some(patch));
    assert_eq!(code, 204, "{body}");
    let (_, body) = request(&sock, "GET", "/vm/config", None);
    let cfg: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(cfg["drives"][0]["path_on_host"], json!(dir.join("image.img")));
    let missing = json!({"drive_id": "stub", "path_on_host": dir.join("missing.img")});
    let (code, body) = request(&sock, "PATCH", "/drives/stub", Some(missing));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("missing.img"), "{body}");

    // A second metrics set-up is refused, as in Firecracker.
    let (code, _) = request(&sock, "PUT", "/metrics", Some(json!({"metrics_path": dir.join("m2")})));
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
