//! The REST API and the config file driving a real guest (issue: api).
//!
//! - `api_configures_boots_and_ctrl_alt_del_ends_the_guest`: shimvmm with only
//!   `--api-sock`; curl over the Unix socket sets boot-source, machine-config,
//!   the root drive, a tap NIC and metrics, starts the VM (a first start with a
//!   missing kernel fails with a 400 and can be retried), checks `GET /`, the
//!   guest's view (2 vCPUs, 512 MiB, the MAC, a ping over the tap, the AT
//!   keyboard), `GET /metrics`, FlushMetrics, that configuration is refused
//!   after start, and that SendCtrlAltDel makes the guest reboot and shimvmm
//!   exit 0 and remove its socket.
//! - `config_file_with_api_boots_the_same_guest`: the same objects as a JSON
//!   `--config-file`, with `--api-sock` beside it: the API reports the VM
//!   running with that configuration and refuses changes; the guest powers
//!   off and shimvmm exits 0 with its metrics file written.
//! - `config_file_with_no_api_boots_the_same_guest`: `--config-file --no-api`
//!   boots the same guest and exits 0.
//!
//! Guest tests: run them in the testbed (`tools/devtool test` does), e.g.
//! `cargo build --release -p shimvmm && cargo test --release -p shimvmm-tests --test api_boot --no-run`,
//! then `tools/testbed run -- target/release/deps/api_boot-<hash> --nocapture --test-threads=1`.
//! Elsewhere they print a loud SKIPPED line (fail with SHIMVMM_REQUIRE_GUEST=1).
//! They need `curl` and `ip` (iproute2) on the machine that runs them.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use shimvmm_tests::orchestrators::assert_subset;
use shimvmm_tests::{
    alpine_test_cmdline, artifacts, one_vm_at_a_time, require_guest_env, scaled, shimvmm_bin, test_image, GuestProcess,
    PowerAction, Scratch,
};

/// Boot to the test script: 1-3 min in the nested testbed, over 10 min
/// when the 2-core host is loaded (measured: openrc started after 500 s).
const BOOT_TIMEOUT: Duration = Duration::from_secs(900);
/// From Ctrl-Alt-Del (or the script's end) to shimvmm's exit: openrc's
/// shutdown runs first, which is slow under nested TCG.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long shimvmm may take to create its API socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);
/// One curl request (a slow InstanceStart builds the VM meanwhile).
const CURL_MAX_TIME_SECS: &str = "60";
/// The guest's MAC, set through the API / config file and read in the guest.
const GUEST_MAC: &str = "06:00:ac:10:00:02";

/// The guest side: report what the VM looks like from inside, bring eth0 up
/// on the tap's subnet (GUEST_IP/HOST_IP substituted), ping the host, and
/// say `ready`.
const GUEST_SCRIPT: &str = r#"
marker nproc "$(nproc)"
marker memtotal_kib "$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
marker atkbd "$(dmesg | grep -c 'input: AT Raw Set 2 keyboard')"
modprobe virtio_net 2>/dev/null
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
marker eth0-mac "$(cat /sys/class/net/eth0/address 2>/dev/null)"
ip link set eth0 up
ip addr add @GUEST_IP@/28 dev eth0
if ping -c 3 -W 10 @HOST_IP@ >/dev/null 2>&1; then marker ping ok; else marker ping failed; fi
marker ready 1
"#;

/// A tap device in the test's network namespace, with the host side of a
/// point-to-point subnet; deleted on drop.
struct Tap {
    name: String,
}

impl Tap {
    fn create(name: &str, host_ip: &str) -> Tap {
        // A leftover from a killed run would make `ip tuntap add` fail.
        let _ = Command::new("ip").args(["link", "del", name]).output();
        let tap = Tap { name: name.to_string() };
        for args in [
            vec!["tuntap", "add", "dev", name, "mode", "tap"],
            vec!["addr", "add", &format!("{host_ip}/28"), "dev", name],
            vec!["link", "set", name, "up"],
        ] {
            let out = Command::new("ip")
                .args(&args)
                .output()
                .unwrap_or_else(|e| panic!("cannot run ip (apt-get install -y iproute2): {e}"));
            assert!(
                out.status.success(),
                "ip {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        tap
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.name]).output();
    }
}

/// One HTTP exchange.
#[derive(Debug)]
struct Reply {
    status: u16,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {:?}", self.body))
    }

    /// The fault message of an error reply (panics if there is none).
    fn fault(&self) -> String {
        self.json()["fault_message"]
            .as_str()
            .unwrap_or_else(|| panic!("no fault_message in {:?}", self.body))
            .to_string()
    }
}

/// curl over the API's Unix socket.
struct Client {
    sock: PathBuf,
}

impl Client {
    fn request(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        const STATUS_SEP: &str = "\n--curl-status--";
        let mut cmd = Command::new("curl");
        cmd.args(["--silent", "--show-error", "--max-time", CURL_MAX_TIME_SECS, "--unix-socket"])
            .arg(&self.sock)
            .args(["-X", method, "-w", &format!("{STATUS_SEP}%{{http_code}}")]);
        if let Some(b) = body {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", &b.to_string()]);
        }
        cmd.arg(format!("http://localhost{path}"));
        let out = cmd.output().unwrap_or_else(|e| panic!("cannot run curl (apt-get install -y curl): {e}"));
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "curl {method} {path} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let (body, status) =
            text.rsplit_once(STATUS_SEP).unwrap_or_else(|| panic!("curl {method} {path}: no status in {text:?}"));
        Reply {
            status: status.trim().parse().unwrap_or_else(|_| panic!("curl {method} {path}: bad status {status:?}")),
            body: body.to_string(),
        }
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    fn put(&self, path: &str, body: Value) -> Reply {
        self.request("PUT", path, Some(&body))
    }

    /// PUT that must succeed with 204.
    fn put_ok(&self, path: &str, body: Value) {
        let r = self.put(path, body.clone());
        assert_eq!(r.status, 204, "PUT {path} {body} -> {} {}", r.status, r.body);
    }

    /// PUT that must be refused with 400 and a fault message containing `want`.
    fn put_refused(&self, path: &str, body: Value, want: &str) -> String {
        let r = self.put(path, body.clone());
        assert_eq!(r.status, 400, "PUT {path} {body} must be refused, got {} {}", r.status, r.body);
        let fault = r.fault();
        assert!(fault.contains(want), "PUT {path}: fault {fault:?} does not mention {want:?}");
        assert!(!fault.contains('\n'), "fault message must be one line: {fault:?}");
        fault
    }

    fn state(&self) -> String {
        let r = self.get("/");
        assert_eq!(r.status, 200, "GET / -> {} {}", r.status, r.body);
        r.json()["state"].as_str().unwrap_or_else(|| panic!("GET /: no state in {}", r.body)).to_string()
    }
}

/// Waits until `sock` exists (shimvmm creates it before anything else).
fn wait_for_socket(vm: &GuestProcess, sock: &Path) {
    let timeout = scaled(SOCKET_TIMEOUT);
    let deadline = Instant::now() + timeout;
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {timeout:?}; shimvmm output:\n{}",
            sock.display(),
            vm.tail(20)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The objects every test boots: Alpine kernel + initrd, 2 vCPUs, 512 MiB,
/// `rootfs` as /dev/vda, `eth0` on `tap`, metrics to `metrics`.
struct Objects {
    boot_source: Value,
    machine_config: Value,
    rootfs: Value,
    eth0: Value,
    metrics: Value,
}

impl Objects {
    fn new(root: &Path, tap: &str, metrics: &Path) -> Objects {
        let art = artifacts();
        Objects {
            boot_source: json!({
                "kernel_image_path": art.kernel,
                "initrd_path": art.initrd,
                "boot_args": alpine_test_cmdline(),
            }),
            machine_config: json!({"vcpu_count": 2, "mem_size_mib": 512}),
            rootfs: json!({"drive_id": "rootfs", "path_on_host": root, "is_root_device": true, "is_read_only": false}),
            eth0: json!({"iface_id": "eth0", "host_dev_name": tap, "guest_mac": GUEST_MAC}),
            metrics: json!({"metrics_path": metrics}),
        }
    }

    /// The `--config-file` / `GET /vm/config` document.
    fn config_file(&self) -> Value {
        json!({
            "boot-source": self.boot_source,
            "machine-config": self.machine_config,
            "drives": [self.rootfs],
            "network-interfaces": [self.eth0],
            "metrics": self.metrics,
        })
    }
}

fn guest_script(guest_ip: &str, host_ip: &str) -> String {
    GUEST_SCRIPT.replace("@GUEST_IP@", guest_ip).replace("@HOST_IP@", host_ip)
}

fn marker(vm: &GuestProcess, name: &str) -> String {
    vm.marker(name).unwrap_or_else(|| panic!("no marker {name}; console:\n{}", vm.tail(40))).value
}

/// What every boot must show from inside the guest: the configured topology,
/// MAC and a working tap link.
fn check_guest_view(vm: &GuestProcess) {
    assert_eq!(marker(vm, "nproc"), "2", "machine-config vcpu_count");
    let kib: f64 = marker(vm, "memtotal_kib").parse().expect("MemTotal is a number");
    let ratio = kib / (512.0 * 1024.0);
    assert!((0.90..=1.0).contains(&ratio), "MemTotal {kib} KiB is {:.1}% of 512 MiB", ratio * 100.0);
    assert_eq!(marker(vm, "eth0-mac"), GUEST_MAC, "guest_mac must reach the guest's eth0");
    assert_eq!(marker(vm, "ping"), "ok", "the guest must ping the host over the tap; console:\n{}", vm.tail(40));
}

/// Net and block counters of a metrics document after the guest pinged.
fn check_counters(m: &Value, what: &str) {
    let net = &m["net"]["eth0"];
    let block = &m["block"]["rootfs"];
    for (v, field) in [(net, "tx_packets"), (net, "rx_packets"), (net, "tx_bytes"), (net, "rx_bytes"), (block, "reads")]
    {
        let n = v[field].as_u64().unwrap_or_else(|| panic!("{what}: no counter {field} in {m}"));
        assert!(n > 0, "{what}: {field} is 0 after the guest booted and pinged: {m}");
    }
    assert_eq!(net["vmm_copied_bytes"].as_u64(), Some(0), "{what}: the tap path copies no payload in the VMM: {m}");
}

/// shimvmm's counters in the last line of a metrics file (one
/// Firecracker-format JSON object per line, shimvmm's under "shimvmm").
fn read_metrics(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let last =
        text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_else(|| panic!("{} is empty", path.display()));
    let line: Value =
        serde_json::from_str(last).unwrap_or_else(|e| panic!("{} is not JSON lines ({e}): {text}", path.display()));
    assert!(line["utc_timestamp_ms"].is_u64() && line["net"].is_object(), "not Firecracker's format: {last}");
    line["shimvmm"].clone()
}

/// Exit status code of shimvmm, which must exit by itself within `timeout`.
fn exit_code(vm: &mut GuestProcess, timeout: Duration, what: &str) -> i32 {
    let st = vm.exit_status(timeout).unwrap_or_else(|e| panic!("{what}: shimvmm did not exit: {e}"));
    st.code().unwrap_or_else(|| panic!("{what}: shimvmm killed by a signal: {st:?}\n{}", vm.tail(40)))
}

/// Each test's tap gets its own /28 inside 192.0.2.0/24 (the testbed's only
/// address range): 192.0.2.160/28, .176/28, .192/28. More specific than the
/// testbed's own 192.0.2.0/24 routes, so the tap route wins.
fn subnet_base(subnet: u8) -> u8 {
    144 + 16 * subnet
}

fn host_addr(subnet: u8) -> String {
    format!("192.0.2.{}", subnet_base(subnet) + 1)
}

fn guest_addr(subnet: u8) -> String {
    format!("192.0.2.{}", subnet_base(subnet) + 2)
}

#[test]
fn api_configures_boots_and_ctrl_alt_del_ends_the_guest() {
    if !require_guest_env("api_configures_boots_and_ctrl_alt_del_ends_the_guest") {
        return;
    }
    let _one = one_vm_at_a_time();
    let (host_ip, guest_ip) = (host_addr(1), guest_addr(1));
    let (host_ip, guest_ip) = (host_ip.as_str(), guest_ip.as_str());
    let tap = Tap::create(&format!("apitap{}", std::process::id() % 100_000), host_ip);
    let scratch = Scratch::new("api-boot-api");
    let sock = scratch.path("api.sock");
    let metrics_path = scratch.path("metrics.json");
    let image = test_image(&guest_script(guest_ip, host_ip), PowerAction::None);
    let objects = Objects::new(image.path(), &tap.name, &metrics_path);

    let mut cmd = Command::new(shimvmm_bin());
    cmd.arg("--api-sock").arg(&sock);
    let started = Instant::now();
    let mut vm = GuestProcess::spawn("shimvmm-api", cmd).unwrap_or_else(|e| panic!("spawn shimvmm: {e}"));
    wait_for_socket(&vm, &sock);
    let api = Client { sock: sock.clone() };
    assert_eq!(api.state(), "Not started");

    // A kernel that does not exist is refused when PUT, as in Firecracker.
    let mut bad_boot = objects.boot_source.clone();
    bad_boot["kernel_image_path"] = json!(scratch.path("no-such-kernel"));
    let fault = api.put_refused("/boot-source", bad_boot.clone(), "cannot open");
    assert!(fault.contains("no-such-kernel"), "the refusal must name the kernel path: {fault:?}");
    // Configure with a file that is no kernel: the start fails in the VMM
    // (not in the API's validation), says why, and leaves the configuration
    // open for a fix.
    let not_a_kernel = scratch.path("no-such-kernel");
    std::fs::write(&not_a_kernel, b"not a kernel").unwrap();
    api.put_ok("/boot-source", bad_boot);
    api.put_ok("/machine-config", objects.machine_config.clone());
    api.put_ok("/drives/rootfs", objects.rootfs.clone());
    api.put_ok("/network-interfaces/eth0", objects.eth0.clone());
    api.put_ok("/metrics", objects.metrics.clone());
    let fault = api.put_refused("/actions", json!({"action_type": "InstanceStart"}), "InstanceStart failed");
    assert!(fault.contains("no-such-kernel"), "the failed start must name the kernel path: {fault:?}");
    println!("InstanceStart with a file that is no kernel: 400 {fault:?}");
    assert_eq!(api.state(), "Not started", "a failed start must leave the VM not started");

    api.put_ok("/boot-source", objects.boot_source.clone());
    let t = Instant::now();
    let r = api.put("/actions", json!({"action_type": "InstanceStart"}));
    assert_eq!(r.status, 204, "InstanceStart -> {} {}", r.status, r.body);
    println!("InstanceStart answered 204 in {:.3} s", t.elapsed().as_secs_f64());
    // Right after the 204, without waiting: the VMM must already say Running.
    assert_eq!(api.state(), "Running");

    let exit =
        vm.wait_for_guest_exit(scaled(BOOT_TIMEOUT)).unwrap_or_else(|e| panic!("guest script did not finish: {e}"));
    assert_eq!(exit, 0, "guest test script failed; console:\n{}", vm.tail(40));
    println!("guest script ready {:.1} s after shimvmm started", marker_at(&vm, "ready"));
    check_guest_view(&vm);
    assert_ne!(marker(&vm, "atkbd"), "0", "the guest registered no AT keyboard, so Ctrl-Alt-Del cannot reach it");
    assert_eq!(api.state(), "Running");

    // Counters of the running VM.
    let r = api.get("/metrics");
    assert_eq!(r.status, 200, "GET /metrics -> {} {}", r.status, r.body);
    let live = r.json();
    check_counters(&live, "GET /metrics");
    println!(
        "GET /metrics: eth0 tx {} rx {} packets, rootfs {} reads",
        live["net"]["eth0"]["tx_packets"], live["net"]["eth0"]["rx_packets"], live["block"]["rootfs"]["reads"]
    );

    // FlushMetrics writes the PUT /metrics file now.
    api.put_ok("/actions", json!({"action_type": "FlushMetrics"}));
    check_counters(&read_metrics(&metrics_path), "FlushMetrics file");

    // What was booted, as the API reports it.
    let r = api.get("/vm/config");
    assert_eq!(r.status, 200, "GET /vm/config -> {} {}", r.status, r.body);
    let cfg = r.json();
    assert_subset(&cfg["boot-source"], &objects.boot_source, "GET /vm/config boot-source");
    assert_eq!(cfg["drives"][0]["path_on_host"], objects.rootfs["path_on_host"]);
    assert_eq!(cfg["network-interfaces"][0]["host_dev_name"], json!(tap.name));

    // The configuration is frozen once the VM runs.
    let after = "after InstanceStart";
    api.put_refused("/machine-config", json!({"vcpu_count": 1, "mem_size_mib": 256}), after);
    api.put_refused("/boot-source", objects.boot_source.clone(), after);
    api.put_refused(
        "/drives/data",
        json!({"drive_id": "data", "path_on_host": image.path(), "is_root_device": false}),
        after,
    );
    api.put_refused("/network-interfaces/eth1", json!({"iface_id": "eth1", "host_dev_name": "tapx"}), after);
    api.put_refused("/metrics", json!({"metrics_path": scratch.path("other.json")}), after);
    let r = api.request("PATCH", "/machine-config", Some(&json!({"mem_size_mib": 1024})));
    assert_eq!(r.status, 400, "PATCH /machine-config after start -> {} {}", r.status, r.body);
    assert!(r.fault().contains(after), "{}", r.body);
    api.put_refused("/actions", json!({"action_type": "InstanceStart"}), "already started");
    assert_eq!(api.state(), "Running", "refused requests must not disturb the VM");

    // Ctrl-Alt-Del: the guest's init runs its ctrlaltdel action (reboot), the
    // kernel resets through the i8042 (reboot=k) and shimvmm exits 0.
    let cad = vm.elapsed();
    api.put_ok("/actions", json!({"action_type": "SendCtrlAltDel"}));
    let code = exit_code(&mut vm, scaled(SHUTDOWN_TIMEOUT), "after SendCtrlAltDel");
    let took = vm.elapsed() - cad;
    println!("SendCtrlAltDel -> shimvmm exited {code} after {:.1} s", took.as_secs_f64());
    assert!(
        vm.lines().iter().any(|l| l.at >= cad && l.text.contains("reboot: Restarting system")),
        "the guest did not reboot after Ctrl-Alt-Del; console:\n{}",
        vm.tail(40)
    );
    assert_eq!(code, 0, "a guest reboot must end shimvmm with status 0; console:\n{}", vm.tail(40));
    assert!(!sock.exists(), "shimvmm left its API socket {} behind", sock.display());
    // The exit-time metrics are the file's last line.
    check_counters(&read_metrics(&metrics_path), "metrics file at exit");
    println!("API boot test: {:.1} s in total", started.elapsed().as_secs_f64());
}

/// Boots the test guest from a config file; `api_sock` adds the API beside it.
fn boot_from_config_file(tag: &str, subnet: u8, api_sock: bool) {
    let _one = one_vm_at_a_time();
    let (host_ip, guest_ip) = (host_addr(subnet), guest_addr(subnet));
    let tap = Tap::create(&format!("{tag}{}", std::process::id() % 100_000), &host_ip);
    let scratch = Scratch::new(&format!("api-boot-{tag}"));
    let sock = scratch.path("api.sock");
    let metrics_path = scratch.path("metrics.json");
    let config_path = scratch.path("vm.json");
    let image = test_image(&guest_script(&guest_ip, &host_ip), PowerAction::Poweroff);
    let objects = Objects::new(image.path(), &tap.name, &metrics_path);
    let file = objects.config_file();
    std::fs::write(&config_path, serde_json::to_string_pretty(&file).unwrap()).unwrap();

    let mut cmd = Command::new(shimvmm_bin());
    cmd.arg("--config-file").arg(&config_path);
    if api_sock {
        cmd.arg("--api-sock").arg(&sock);
    } else {
        cmd.arg("--no-api");
    }
    let mut vm = GuestProcess::spawn(&format!("shimvmm-{tag}"), cmd).unwrap_or_else(|e| panic!("spawn shimvmm: {e}"));
    if api_sock {
        wait_for_socket(&vm, &sock);
        let api = Client { sock: sock.clone() };
        assert_eq!(api.state(), "Running", "a config-file VM runs without InstanceStart");
        let r = api.get("/vm/config");
        assert_eq!(r.status, 200, "GET /vm/config -> {} {}", r.status, r.body);
        let cfg = r.json();
        for key in ["boot-source", "drives", "network-interfaces", "metrics"] {
            assert_subset(&cfg[key], &file[key], &format!("GET /vm/config {key} must be the config file's"));
        }
        assert_eq!(cfg["machine-config"]["vcpu_count"], 2);
        assert_eq!(cfg["machine-config"]["mem_size_mib"], 512);
        api.put_refused("/machine-config", json!({"vcpu_count": 1, "mem_size_mib": 256}), "after InstanceStart");
        api.put_refused("/drives/rootfs", objects.rootfs.clone(), "after InstanceStart");
        api.put_refused("/actions", json!({"action_type": "InstanceStart"}), "already started");
    }
    let exit =
        vm.wait_for_guest_exit(scaled(BOOT_TIMEOUT)).unwrap_or_else(|e| panic!("guest script did not finish: {e}"));
    assert_eq!(exit, 0, "guest test script failed; console:\n{}", vm.tail(40));
    check_guest_view(&vm);
    let code = exit_code(&mut vm, scaled(SHUTDOWN_TIMEOUT), "after poweroff");
    assert_eq!(code, 0, "poweroff must end shimvmm with status 0; console:\n{}", vm.tail(40));
    println!(
        "{tag}: guest ready at {:.1} s, shimvmm exited 0 at {:.1} s",
        marker_at(&vm, "ready"),
        vm.elapsed().as_secs_f64()
    );
    check_counters(&read_metrics(&metrics_path), "config-file metrics at exit");
    if api_sock {
        assert!(!sock.exists(), "shimvmm left its API socket {} behind", sock.display());
    }
}

fn marker_at(vm: &GuestProcess, name: &str) -> f64 {
    vm.marker(name).map(|m| m.at.as_secs_f64()).unwrap_or(f64::NAN)
}

#[test]
fn config_file_with_api_boots_the_same_guest() {
    if !require_guest_env("config_file_with_api_boots_the_same_guest") {
        return;
    }
    boot_from_config_file("cfgapi", 2, true);
}

#[test]
fn config_file_with_no_api_boots_the_same_guest() {
    if !require_guest_env("config_file_with_no_api_boots_the_same_guest") {
        return;
    }
    boot_from_config_file("cfgnoapi", 3, false);
}
