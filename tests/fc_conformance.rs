//! Side by side with Firecracker: the same requests, good and bad, go to
//! the real Firecracker v1.12.1 and to shimvmm, and their answers are
//! compared. Two phases, each with a fresh pair of processes: before boot
//! (a dummy kernel file, so InstanceStart fails on both), and around a real
//! boot of the guest artifacts' ELF kernel (no root file system: the guest
//! stops at its panic, `panic=0` keeps it there), when `/dev/kvm` and that
//! kernel are there. After the boot phase, the metrics lines both wrote on
//! FlushMetrics are compared: every Firecracker-named counter shimvmm
//! writes must be one Firecracker writes.
//!
//! Every request is one of:
//! - `Same`: the status codes must be equal and, for a 2xx with a body, the
//!   JSON bodies too; error bodies must both be `{"fault_message": ...}`
//!   (their wording differs, it is not compared);
//! - `Differs`: a difference listed in docs/firecracker-compatibility.md
//!   with its reason; the test checks it is still exactly that difference
//!   (Firecracker's status, shimvmm's), so the table stays true.
//!
//! The Firecracker binary is `$SHIMVMM_FIRECRACKER`, or what
//! `tools/firecracker path` fetches (pinned by sha256). The test is skipped,
//! saying why, only when it cannot be had (no network, no python3).
//! `cargo test --test fc_conformance -- --nocapture` prints the comparison.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shimvmm_tests::{repo_root, shimvmm_bin};

/// What the two answers must have in common.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// Same status; same JSON body for a 2xx with a body.
    Same,
    /// Same status and the same JSON body except these top-level keys.
    SameExcept(&'static [&'static str]),
    /// A listed difference: (Firecracker's status, shimvmm's status, why).
    Differs(u16, u16, &'static str),
}

struct Step {
    method: &'static str,
    path: &'static str,
    body: Option<Value>,
    expect: Expect,
}

fn step(method: &'static str, path: &'static str, body: Option<Value>, expect: Expect) -> Step {
    Step { method, path, body, expect }
}

/// A VMM process serving the API on `sock`; killed on drop.
struct Vmm {
    name: &'static str,
    child: Child,
    sock: PathBuf,
}

impl Vmm {
    fn start(name: &'static str, bin: &Path, sock: PathBuf, log: &Path) -> Vmm {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new(bin)
            .arg("--api-sock")
            .arg(&sock)
            .args(["--id", "conformance"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {name} ({}): {e}", bin.display()));
        let vmm = Vmm { name, child, sock };
        let t = Instant::now();
        while UnixStream::connect(&vmm.sock).is_err() {
            assert!(t.elapsed() < Duration::from_secs(10), "{name} never listened on {}", vmm.sock.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        vmm
    }

    /// One request over a fresh connection: (status, body).
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let body = body.map(Value::to_string).unwrap_or_default();
        let mut s = UnixStream::connect(&self.sock).unwrap_or_else(|e| panic!("{}: connect: {e}", self.name));
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAccept: application/json\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut resp = Vec::new();
        // Firecracker may leave the connection open: read until the body is complete.
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => resp.extend_from_slice(&buf[..n]),
                Err(e) => panic!("{}: {method} {path}: read: {e}", self.name),
            }
            if let Some(done) = complete(&resp) {
                resp.truncate(done);
                break;
            }
        }
        let text = String::from_utf8_lossy(&resp).into_owned();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("{}: bad response {text:?}", self.name));
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }
}

/// The length of a whole response (head and Content-Length body), once read.
fn complete(resp: &[u8]) -> Option<usize> {
    let text = std::str::from_utf8(resp).ok()?;
    let (head, _) = text.split_once("\r\n\r\n")?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let total = head.len() + 4 + len;
    (resp.len() >= total).then_some(total)
}

impl Drop for Vmm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The pinned Firecracker binary, or why it cannot be had.
fn firecracker() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("SHIMVMM_FIRECRACKER") {
        return Ok(PathBuf::from(p));
    }
    let script = repo_root().join("tools/firecracker");
    let out =
        Command::new(&script).arg("path").output().map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!("{} path failed: {}", script.display(), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn is_fault(body: &str) -> bool {
    serde_json::from_str::<Value>(body).ok().and_then(|v| v.get("fault_message").map(Value::is_string)) == Some(true)
}

/// `body` as JSON without `keys`.
fn without(body: &str, keys: &[&str]) -> Value {
    let mut v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    if let Some(obj) = v.as_object_mut() {
        for k in keys {
            obj.remove(*k);
        }
    }
    v
}

/// The requests, in order. Paths under `dir` exist unless named "missing".
fn steps(dir: &Path, tap: Option<&str>) -> Vec<Step> {
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let kernel = p("vmlinux");
    let mut s = vec![
        step("GET", "/", None, Expect::SameExcept(&["vmm_version", "app_name"])),
        step("GET", "/version", None, Expect::Same),
        step("GET", "/machine-config", None, Expect::Same),
        step("GET", "/vm/config", None, Expect::Same),
        step("GET", "/no-such-path", None, Expect::Same),
        step("GET", "/boot-source", None, Expect::Same),
        step("PUT", "/version", Some(json!({})), Expect::Same),
        // Machine configuration.
        step("PUT", "/machine-config", Some(json!({"vcpu_count": 2})), Expect::Same),
        step("PUT", "/machine-config", Some(json!({"vcpu_count": 2, "mem_size_mib": 256, "x": 1})), Expect::Same),
        step("PUT", "/machine-config", Some(json!({"vcpu_count": 0, "mem_size_mib": 256})), Expect::Same),
        step("PUT", "/machine-config", Some(json!({"vcpu_count": 33, "mem_size_mib": 256})), Expect::Same),
        step("PUT", "/machine-config", Some(json!({"vcpu_count": "2", "mem_size_mib": 256})), Expect::Same),
        // Explicit nulls, as Python clients built on dataclasses send them.
        step(
            "PUT",
            "/machine-config",
            Some(json!({"vcpu_count": 1, "mem_size_mib": 128, "smt": null, "track_dirty_pages": null,
                "huge_pages": null})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/machine-config",
            Some(json!({"vcpu_count": 1, "mem_size_mib": 128, "cpu_template": null})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/machine-config",
            Some(json!({"vcpu_count": 2, "mem_size_mib": 32})),
            Expect::Differs(204, 400, "shimvmm refuses less than 64 MiB when it is set; Firecracker fails at boot"),
        ),
        step(
            "PUT",
            "/machine-config",
            Some(json!({"vcpu_count": 2, "mem_size_mib": 256, "smt": true})),
            Expect::Differs(204, 400, "SMT is not supported by shimvmm yet"),
        ),
        step("PUT", "/machine-config", Some(json!({"vcpu_count": 2, "mem_size_mib": 256})), Expect::Same),
        step("PATCH", "/machine-config", Some(json!({})), Expect::Same),
        step("PATCH", "/machine-config", Some(json!({"mem_size_mib": 512})), Expect::Same),
        step("PATCH", "/machine-config", Some(json!({"vcpu_count": 0})), Expect::Same),
        step("GET", "/machine-config", None, Expect::Same),
        // Boot source.
        step("PUT", "/boot-source", Some(json!({"kernel_image_path": p("missing-kernel")})), Expect::Same),
        step("PUT", "/boot-source", Some(json!({"kernel_image_path": kernel, "bootargs": "x"})), Expect::Same),
        step(
            "PUT",
            "/boot-source",
            Some(json!({"kernel_image_path": kernel, "initrd_path": p("missing-initrd")})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/boot-source",
            Some(json!({"kernel_image_path": kernel, "boot_args": null, "initrd_path": null})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/boot-source",
            Some(json!({"kernel_image_path": kernel, "boot_args": "console=ttyS0"})),
            Expect::Same,
        ),
        // Drives.
        step(
            "PUT",
            "/drives/rootfs",
            Some(json!({"drive_id": "rootfs", "path_on_host": p("rootfs.img"), "is_root_device": true})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "other", "path_on_host": p("data.img"), "is_root_device": false})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("missing.img"), "is_root_device": false})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("data.img"), "is_root_device": true})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("data.img"), "is_root_device": false, "bogus": 1})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("data.img"), "is_root_device": false,
                "rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100},
                    "ops": {"size": 10, "one_time_burst": 5, "refill_time": 1000}}})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("data.img"), "is_root_device": false,
                "rate_limiter": {"bandwidth": {"size": 1000}}})),
            Expect::Same,
        ),
        // Firecracker accepts these; the good PUT after them makes both equal again.
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("data.img"), "is_root_device": false,
                "partuuid": "0eaa91a0-01"})),
            Expect::Differs(204, 400, "partuuid (root=PARTUUID=) is not supported by shimvmm yet"),
        ),
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("data.img"), "is_root_device": false,
                "cache_type": "Bogus"})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("data.img"), "is_root_device": false})),
            Expect::Same,
        ),
        step(
            "PATCH",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("data2.img")})),
            Expect::Differs(400, 204, "shimvmm swaps a drive's file before boot; Firecracker only after"),
        ),
        step(
            "PUT",
            "/drives/data",
            Some(json!({"drive_id": "data", "path_on_host": p("data.img"), "is_root_device": false,
                "is_read_only": true, "partuuid": null, "cache_type": "Unsafe", "io_engine": "Sync",
                "rate_limiter": {"bandwidth": null, "ops": null}, "socket": null})),
            Expect::Same,
        ),
        step("PATCH", "/drives/data", Some(json!({"drive_id": "data", "is_read_only": true})), Expect::Same),
        step(
            "PUT",
            "/drives/nulls",
            Some(json!({"drive_id": "nulls", "is_root_device": false, "partuuid": null, "cache_type": null,
                "is_read_only": null, "path_on_host": p("data.img"), "io_engine": null, "socket": null})),
            Expect::Same,
        ),
        step(
            "PUT",
            "/drives/nulls",
            Some(json!({"drive_id": "nulls", "is_root_device": false, "path_on_host": null})),
            Expect::Same,
        ),
        // Logger and metrics (the files exist: Firecracker requires it).
        step("PUT", "/logger", Some(json!({"level": "Bogus"})), Expect::Same),
        step("PUT", "/logger", Some(json!({"x": 1})), Expect::Same),
        step(
            "PUT",
            "/logger",
            Some(json!({"log_path": null, "level": null, "show_level": null, "show_log_origin": null, "module": null})),
            Expect::Same,
        ),
        step("PUT", "/logger", Some(json!({"log_path": p("no-such-dir/log")})), Expect::Same),
        step(
            "PUT",
            "/logger",
            Some(json!({"log_path": p("missing.log")})),
            Expect::Differs(400, 204, "shimvmm creates a missing log or metrics file; Firecracker requires it"),
        ),
        step(
            "PUT",
            "/logger",
            Some(json!({"log_path": p("vmm.log"), "level": "Info", "show_level": true, "show_log_origin": false})),
            Expect::Same,
        ),
        step("PUT", "/metrics", Some(json!({})), Expect::Same),
        step("PUT", "/metrics", Some(json!({"metrics_path": p("metrics.json")})), Expect::Same),
        step("PUT", "/metrics", Some(json!({"metrics_path": p("metrics.json")})), Expect::Same),
        // Actions before boot.
        step("PUT", "/actions", Some(json!({"action_type": "FlushMetrics"})), Expect::Same),
        step("PUT", "/actions", Some(json!({"action_type": "SendCtrlAltDel"})), Expect::Same),
        step("PUT", "/actions", Some(json!({"action_type": "Bogus"})), Expect::Same),
        step("PUT", "/actions", Some(json!({})), Expect::Same),
        step("PATCH", "/vm", Some(json!({"state": "Paused"})), Expect::Same),
        step("PATCH", "/vm", Some(json!({"state": "Frozen"})), Expect::Same),
        // Devices and features shimvmm does not build yet.
        // vsock: Firecracker listens on uds_path at once, shimvmm at boot
        // (see `compare`). Firecracker unlinks its previous socket when a
        // PUT replaces it, and fails if it cannot (after the empty path).
        step("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": p("v.sock")})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"guest_cid": 3})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"uds_path": p("v.sock")})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": p("v.sock"), "x": 1})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"guest_cid": "3", "uds_path": p("v.sock")})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"guest_cid": -1, "uds_path": p("v.sock")})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"guest_cid": 4294967296_u64, "uds_path": p("v.sock")})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": null})), Expect::Same),
        step(
            "PUT",
            "/vsock",
            Some(json!({"guest_cid": 2, "uds_path": p("w.sock")})),
            Expect::Differs(204, 400, "CIDs 0 to 2 are reserved (VIRTIO 1.2, 5.10.4); shimvmm refuses them"),
        ),
        step(
            "PUT",
            "/vsock",
            Some(json!({"guest_cid": 3, "uds_path": ""})),
            Expect::Differs(204, 400, "shimvmm refuses an empty uds_path; Firecracker binds an unnamed socket"),
        ),
        step("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": p("no-such-dir/v.sock")})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": p("rootfs.img")})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": format!("/{}", "a".repeat(120))})), Expect::Same),
        step(
            "PUT",
            "/vsock",
            Some(json!({"vsock_id": "vsock0", "guest_cid": 5, "uds_path": p("w.sock")})),
            Expect::Same,
        ),
        step("PUT", "/vsock", Some(json!({"guest_cid": 4, "uds_path": p("v.sock")})), Expect::Same),
        step("PATCH", "/vsock", Some(json!({"guest_cid": 4, "uds_path": p("v.sock")})), Expect::Same),
        step("GET", "/vsock", None, Expect::Same),
        // MMDS: the document before and after a PUT, merge patches, and
        // configurations refused before any interface exists.
        step("GET", "/mmds", None, Expect::Same),
        step("PATCH", "/mmds", Some(json!({"a": 1})), Expect::Same),
        step("PUT", "/mmds", Some(json!("just a string")), Expect::Same),
        step("GET", "/mmds", None, Expect::Same),
        step(
            "PUT",
            "/mmds",
            Some(json!({"latest": {"meta-data": {"id": "i-1", "tags": {"a": "b"}, "n": [1, 2]}}})),
            Expect::Same,
        ),
        step(
            "PATCH",
            "/mmds",
            Some(json!({"latest": {"meta-data": {"tags": null, "zone": "z"}}, "top": true})),
            Expect::Same,
        ),
        step("GET", "/mmds", None, Expect::Same),
        step("PATCH", "/mmds", Some(json!(["not", "an", "object"])), Expect::Same),
        step("GET", "/mmds", None, Expect::Same),
        step("PUT", "/mmds", Some(json!({"latest": {"meta-data": {"id": "i-2"}}})), Expect::Same),
        step("PUT", "/mmds", None, Expect::Same),
        step("PUT", "/mmds/config", Some(json!({"network_interfaces": ["nope"]})), Expect::Same),
        step("PUT", "/mmds/config", Some(json!({"network_interfaces": []})), Expect::Same),
        step("PUT", "/mmds/config", Some(json!({"version": "V3", "network_interfaces": ["nope"]})), Expect::Same),
        step("PUT", "/mmds/config", Some(json!({"network_interfaces": ["nope"], "bogus": 1})), Expect::Same),
        step("PUT", "/mmds/config", Some(json!({"version": "V2"})), Expect::Same),
        step("GET", "/mmds/config", None, Expect::Same),
        step(
            "PUT",
            "/entropy",
            Some(json!({"rate_limiter": {"bandwidth": {"size": 1000, "refill_time": 100}}})),
            Expect::Same,
        ),
        step("PUT", "/entropy", Some(json!({"x": 1})), Expect::Same),
        step("PUT", "/entropy", Some(json!({})), Expect::Same),
        step(
            "PUT",
            "/balloon",
            Some(json!({"amount_mib": 10, "deflate_on_oom": true})),
            Expect::Differs(204, 400, "the balloon device is not supported by shimvmm yet"),
        ),
        step("GET", "/balloon/statistics", None, Expect::Same),
        step("PATCH", "/balloon", Some(json!({"amount_mib": 5})), Expect::Same),
        step(
            "PUT",
            "/cpu-config",
            Some(json!({})),
            Expect::Differs(204, 400, "CPU templates are not supported by shimvmm yet"),
        ),
        step("PUT", "/snapshot/create", Some(json!({})), Expect::Same),
        step("PUT", "/snapshot/load", Some(json!({})), Expect::Same),
        step("PUT", "/serial", Some(json!({"serial_out_path": p("serial")})), Expect::Same),
        step("GET", "/metrics", None, Expect::Differs(400, 200, "GET /metrics is a shimvmm extension (live counters)")),
    ];
    if let Some(tap) = tap {
        s.extend([
            step("PUT", "/network-interfaces/eth0", Some(json!({"iface_id": "eth0"})), Expect::Same),
            step(
                "PUT",
                "/network-interfaces/eth0",
                Some(json!({"iface_id": "eth1", "host_dev_name": tap})),
                Expect::Same,
            ),
            step(
                "PUT",
                "/network-interfaces/eth0",
                Some(json!({"iface_id": "eth0", "host_dev_name": tap, "guest_mac": "zz"})),
                Expect::Same,
            ),
            step(
                "PUT",
                "/network-interfaces/eth0",
                Some(json!({"iface_id": "eth0", "host_dev_name": tap, "rx_rate_limiter":
                    {"ops": {"size": 10, "refill_time": 1000}}})),
                Expect::Same,
            ),
            step(
                "PUT",
                "/network-interfaces/eth0",
                Some(json!({"iface_id": "eth0", "host_dev_name": tap, "guest_mac": "06:00:ac:10:00:02",
                    "rx_rate_limiter": null, "tx_rate_limiter": {"bandwidth": null, "ops": null}})),
                Expect::Same,
            ),
            step(
                "PATCH",
                "/network-interfaces/eth0",
                Some(json!({"iface_id": "eth0", "rx_rate_limiter": null})),
                Expect::Same,
            ),
            // MMDS on the interface that now exists.
            step("PUT", "/mmds/config", Some(json!({"version": "V2", "network_interfaces": ["eth0"]})), Expect::Same),
            step(
                "PUT",
                "/mmds/config",
                Some(json!({"network_interfaces": ["eth0"], "ipv4_address": "10.0.0.1"})),
                Expect::Same,
            ),
            step("PUT", "/mmds/config", Some(json!({"network_interfaces": ["eth0", "nope"]})), Expect::Same),
            step(
                "PUT",
                "/mmds/config",
                Some(json!({"network_interfaces": ["eth0"], "ipv4_address": "169.254.170.2", "imds_compat": true})),
                Expect::Differs(400, 204, "imds_compat is Firecracker v1.13's; shimvmm accepts it"),
            ),
            step(
                "PUT",
                "/mmds/config",
                Some(json!({"version": "V1", "network_interfaces": ["eth0"], "ipv4_address": "169.254.170.2"})),
                Expect::Same,
            ),
        ]);
    }
    // What both now hold; logger and metrics: Firecracker reports null even
    // once set; the sections it accepted above are shimvmm's refusals.
    s.push(step("GET", "/vm/config", None, Expect::SameExcept(&["logger", "metrics", "balloon", "cpu-config"])));
    // The dummy kernel does not boot on either.
    s.push(step("PUT", "/actions", Some(json!({"action_type": "InstanceStart"})), Expect::Same));
    s
}

/// The vsock socket names the steps use (`uds_path` under the test's directory).
const FC_VSOCK_SOCKETS: [&str; 3] = ["v.sock", "w.sock", "bv.sock"];

/// Sends every step to both and records the comparison.
fn compare(fc: &Vmm, shim: &Vmm, dir: &Path, steps: Vec<Step>, results: &mut Vec<String>, failures: &mut Vec<String>) {
    for st in steps {
        // The two must not share files another step checks: a missing file
        // one creates would exist for the other. Firecracker listens on the
        // vsock socket at PUT /vsock (and unlinks its previous one then);
        // shimvmm only at boot: Firecracker's socket files are in place for
        // its own requests only.
        let _ = std::fs::remove_file(dir.join("missing.log"));
        for f in FC_VSOCK_SOCKETS {
            let _ = std::fs::rename(dir.join(format!("{f}.fc")), dir.join(f));
        }
        let (fs, fb) = fc.request(st.method, st.path, st.body.as_ref());
        for f in FC_VSOCK_SOCKETS {
            let _ = std::fs::rename(dir.join(f), dir.join(format!("{f}.fc")));
        }
        let _ = std::fs::remove_file(dir.join("missing.log"));
        let (ss, sb) = shim.request(st.method, st.path, st.body.as_ref());
        let what = format!("{} {} {}", st.method, st.path, st.body.as_ref().map(Value::to_string).unwrap_or_default());
        let mut problem = None;
        match st.expect {
            Expect::Same | Expect::SameExcept(_) => {
                if fs != ss {
                    problem = Some(format!("status: firecracker {fs}, shimvmm {ss}"));
                } else if (200..300).contains(&fs) && !fb.is_empty() {
                    let keys: &[&str] = match st.expect {
                        Expect::SameExcept(k) => k,
                        _ => &[],
                    };
                    if without(&fb, keys) != without(&sb, keys) {
                        problem = Some("bodies differ".into());
                    }
                } else if fs >= 400 && !is_fault(&sb) {
                    problem = Some("shimvmm's error body is not a fault_message".into());
                }
            }
            Expect::Differs(want_fc, want_shim, _) => {
                if (fs, ss) != (want_fc, want_shim) {
                    problem = Some(format!(
                        "listed difference changed: firecracker {fs} (listed {want_fc}), shimvmm {ss} (listed {want_shim})"
                    ));
                }
            }
        }
        let verdict = match (&problem, st.expect) {
            (Some(_), _) => "MISMATCH".to_string(),
            (None, Expect::Differs(_, _, why)) => format!("differs: {why}"),
            (None, Expect::SameExcept(keys)) => format!("same but {}", keys.join(", ")),
            (None, _) => "same".to_string(),
        };
        results.push(format!("fc {fs} shimvmm {ss}  {what}\n      -> {verdict}"));
        if let Some(p) = problem {
            failures.push(format!("{what}: {p}\n    firecracker: {}\n    shimvmm:     {}", fb.trim(), sb.trim()));
        }
    }
}

/// The requests of the second phase, around a real boot: configuration, InstanceStart
/// (the guest kernel boots and, with no root file system, stops at its
/// panic: `panic=0` keeps it there), then what may and may not be done to a
/// running VM.
fn boot_steps(dir: &Path, kernel: &Path) -> Vec<Step> {
    let p = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let refused_after_boot = [
        ("PUT", "/boot-source", json!({"kernel_image_path": kernel})),
        ("PUT", "/machine-config", json!({"vcpu_count": 1, "mem_size_mib": 128})),
        ("PATCH", "/machine-config", json!({"vcpu_count": 1})),
        ("PUT", "/drives/other", json!({"drive_id": "other", "path_on_host": p("data.img"), "is_root_device": false})),
        ("PUT", "/logger", json!({"level": "Info"})),
        ("PUT", "/metrics", json!({"metrics_path": p("metrics2.json")})),
        ("PUT", "/entropy", json!({})),
        ("PUT", "/vsock", json!({"guest_cid": 3, "uds_path": p("v2.sock")})),
        ("PUT", "/vsock", json!({"guest_cid": 3, "uds_path": p("bv.sock")})),
        ("PUT", "/vsock", json!({"guest_cid": 2})),
        ("PUT", "/actions", json!({"action_type": "InstanceStart"})),
    ];
    let mut s = vec![
        step(
            "PUT",
            "/boot-source",
            Some(json!({"kernel_image_path": kernel, "boot_args": "console=ttyS0 reboot=k panic=0 pci=off"})),
            Expect::Same,
        ),
        step("PUT", "/machine-config", Some(json!({"vcpu_count": 1, "mem_size_mib": 128})), Expect::Same),
        step(
            "PUT",
            "/drives/stub",
            Some(json!({"drive_id": "stub", "path_on_host": p("rootfs.img"), "is_root_device": false})),
            Expect::Same,
        ),
        step("PUT", "/metrics", Some(json!({"metrics_path": p("metrics.json")})), Expect::Same),
        step("PUT", "/vsock", Some(json!({"guest_cid": 3, "uds_path": p("bv.sock")})), Expect::Same),
        step("PUT", "/mmds", Some(json!({"latest": {"meta-data": {"id": "i-boot"}}})), Expect::Same),
        step("PUT", "/actions", Some(json!({"action_type": "InstanceStart"})), Expect::Same),
        step("GET", "/", None, Expect::SameExcept(&["vmm_version", "app_name"])),
        step("GET", "/machine-config", None, Expect::Same),
        // The document stays writable after boot; its configuration does not.
        step("GET", "/mmds", None, Expect::Same),
        step("PATCH", "/mmds", Some(json!({"latest": {"meta-data": {"zone": "z"}}})), Expect::Same),
        step("PUT", "/mmds", Some(json!({"latest": {"meta-data": {"id": "i-after"}}})), Expect::Same),
        step("GET", "/mmds", None, Expect::Same),
        step("PUT", "/mmds/config", Some(json!({"network_interfaces": ["nope"]})), Expect::Same),
    ];
    for (method, path, body) in refused_after_boot {
        s.push(step(method, path, Some(body), Expect::Same));
    }
    s.extend([
        step("PUT", "/actions", Some(json!({"action_type": "FlushMetrics"})), Expect::Same),
        step("PATCH", "/drives/stub", Some(json!({"drive_id": "stub", "path_on_host": p("data2.img")})), Expect::Same),
        step(
            "PATCH",
            "/drives/stub",
            Some(json!({"drive_id": "stub", "path_on_host": p("missing.img")})),
            Expect::Same,
        ),
        step("PATCH", "/drives/nope", Some(json!({"drive_id": "nope", "path_on_host": p("data.img")})), Expect::Same),
        step("PATCH", "/network-interfaces/nope", Some(json!({"iface_id": "nope"})), Expect::Same),
        step("GET", "/vm/config", None, Expect::SameExcept(&["metrics"])),
        step(
            "PATCH",
            "/drives/stub",
            Some(json!({"drive_id": "stub", "rate_limiter": {"bandwidth": {"size": 100000, "refill_time": 100}}})),
            Expect::Same,
        ),
        step(
            "PATCH",
            "/drives/stub",
            Some(json!({"drive_id": "stub", "rate_limiter": {"ops": {"size": 0, "refill_time": 100}}})),
            Expect::Same,
        ),
        step("PATCH", "/drives/stub", Some(json!({"drive_id": "stub", "rate_limiter": {"bogus": 1}})), Expect::Same),
        step("GET", "/vm/config", None, Expect::SameExcept(&["metrics"])),
        step(
            "PATCH",
            "/network-interfaces/nope",
            Some(json!({"iface_id": "nope", "tx_rate_limiter": {"ops": {"size": 1, "refill_time": 1}}})),
            Expect::Same,
        ),
        // Pause and resume, each twice, with the state GET / reports.
        step("PATCH", "/vm", Some(json!({"state": "Paused"})), Expect::Same),
        step("GET", "/", None, Expect::SameExcept(&["vmm_version", "app_name"])),
        step("PATCH", "/vm", Some(json!({"state": "Paused"})), Expect::Same),
        step("PUT", "/actions", Some(json!({"action_type": "FlushMetrics"})), Expect::Same),
        step("PATCH", "/vm", Some(json!({"state": "Resumed"})), Expect::Same),
        step("GET", "/", None, Expect::SameExcept(&["vmm_version", "app_name"])),
        step("PATCH", "/vm", Some(json!({"state": "Resumed"})), Expect::Same),
        step("PATCH", "/vm", Some(json!({"state": "Frozen"})), Expect::Same),
        step("PATCH", "/vm", Some(json!({"state": "Paused", "extra": 1})), Expect::Same),
        step("PUT", "/actions", Some(json!({"action_type": "SendCtrlAltDel"})), Expect::Same),
    ]);
    s
}

/// Both appended a line to the metrics file on FlushMetrics: every
/// Firecracker-named counter shimvmm writes must be one Firecracker writes.
fn check_metrics_names(path: &Path, failures: &mut Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let fc = lines.iter().find(|l| l.get("api_server").is_some());
    let shim = lines.iter().find(|l| l.get("shimvmm").is_some());
    let (Some(fc), Some(shim)) = (fc, shim) else {
        failures.push(format!("metrics: expected a line from each after FlushMetrics, got:\n{text}"));
        return;
    };
    for group in ["block", "net", "block_stub", "vsock"] {
        let theirs = fc[group].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default();
        for key in shim[group].as_object().map(|o| o.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            if !theirs.contains(&key) {
                failures.push(format!("metrics: shimvmm writes {group}.{key}, which Firecracker does not"));
            }
        }
        if shim[group].as_object().is_none_or(|o| o.is_empty()) {
            failures.push(format!("metrics: shimvmm's line has no {group} counters"));
        }
    }
    if !shim["utc_timestamp_ms"].is_u64() {
        failures.push("metrics: shimvmm's line has no utc_timestamp_ms".into());
    }
}

/// An ELF guest kernel both can boot (Firecracker takes ELF only): the
/// guest artifacts' vmlinux, if it is there.
fn elf_kernel() -> Option<PathBuf> {
    let out = Command::new(repo_root().join("tools/guest-artifacts")).arg("paths").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kernel = text.lines().find_map(|l| l.strip_prefix("KERNEL="))?;
    let vmlinux = Path::new(kernel).with_extension("vmlinux");
    vmlinux.is_file().then_some(vmlinux)
}

#[test]
fn api_matches_firecracker_before_and_after_boot() {
    let fc_bin = match firecracker() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("fc_conformance: SKIPPED: the Firecracker binary cannot be had: {why}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("fcconf-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vmlinux"), b"not a kernel").unwrap();
    for f in ["rootfs.img", "data.img", "data2.img"] {
        std::fs::write(dir.join(f), vec![0u8; 1 << 20]).unwrap();
    }
    // Firecracker makes a tap at PUT /network-interfaces: only as root, with
    // a name of this run's own (gone when the process exits).
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tap = format!("fcc{}", std::process::id() % 100_000);

    let mut results = Vec::new();
    let mut failures = Vec::new();
    // Fresh processes per phase: the steps build up state.
    for f in ["vmm.log", "metrics.json"] {
        std::fs::write(dir.join(f), b"").unwrap();
    }
    {
        let fc = Vmm::start("firecracker", &fc_bin, dir.join("fc.sock"), &dir.join("fc.out"));
        let shim = Vmm::start("shimvmm", &shimvmm_bin(), dir.join("shim.sock"), &dir.join("shim.out"));
        compare(&fc, &shim, &dir, steps(&dir, root.then_some(tap.as_str())), &mut results, &mut failures);
    }
    let pre_boot = results.len();
    let booted = match (elf_kernel(), Path::new("/dev/kvm").exists()) {
        (Some(kernel), true) => {
            std::fs::write(dir.join("metrics.json"), b"").unwrap();
            let fc = Vmm::start("firecracker", &fc_bin, dir.join("fc2.sock"), &dir.join("fc2.out"));
            let shim = Vmm::start("shimvmm", &shimvmm_bin(), dir.join("shim2.sock"), &dir.join("shim2.out"));
            compare(&fc, &shim, &dir, boot_steps(&dir, &kernel), &mut results, &mut failures);
            check_metrics_names(&dir.join("metrics.json"), &mut failures);
            true
        }
        (kernel, kvm) => {
            println!(
                "fc_conformance: after-boot requests SKIPPED: {}",
                if kvm { "no ELF guest kernel (tools/guest-artifacts)" } else { "no /dev/kvm" }
            );
            let _ = kernel;
            false
        }
    };
    let differing = results.iter().filter(|r| r.contains("-> differs")).count();
    let partly = results.iter().filter(|r| r.contains("-> same but")).count();
    println!(
        "fc_conformance: {} requests ({} before boot{}{}): {} answered the same ({} of them except the listed fields), {} listed differences",
        results.len(),
        pre_boot,
        if booted { format!(", {} around a real boot", results.len() - pre_boot) } else { String::new() },
        if root { "" } else { "; no network-interface requests: not root" },
        results.len() - differing,
        partly,
        differing
    );
    for r in &results {
        println!("  {r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert!(failures.is_empty(), "shimvmm answers differently from Firecracker v1.12.1:\n{}", failures.join("\n"));
}
