//! The request sequences of Firecracker's orchestrators
//! (tests/common/orchestrators.rs, also sent in-process by
//! tests/api_clients.rs) over a real API socket to a real shimvmm, which
//! boots the Alpine guest:
//!
//! - `go_sdk_boots_describes_pauses_and_shuts_down`: firecracker-go-sdk's
//!   handler chain (`--api-sock --id`; logger and metrics to FIFOs, machine,
//!   boot source, root drive, tap, vsock, MMDS, InstanceStart); the guest's
//!   script runs; then DescribeInstance, the VM config, the version, MMDS,
//!   pause / resume, FlushMetrics (every metrics FIFO line is JSON; the log
//!   FIFO got lines) and SendCtrlAltDel, after which shimvmm exits 0.
//! - `containerd_swaps_a_placeholder_drive_the_agent_mounts`:
//!   firecracker-containerd: root and two placeholder ("stub") drives, the
//!   agent's vsock, logger and metrics FIFOs; the guest's "agent" reads the
//!   stub's header, the runtime PATCHes `stub0` to an ext4 image with a known
//!   file, tells the agent over the hybrid vsock (`CONNECT 10789`), and the
//!   agent mounts `/dev/vdb` and reads the file; pause / resume, FlushMetrics,
//!   SendCtrlAltDel (StopVM).
//! - `kata_config_file_boot_swaps_a_pool_drive`: Kata: `--version` parsed as
//!   Kata does, `--api-sock --config-file` with its image as a non-root drive,
//!   8 empty pool drives, a tap with rate limiters, logger / metrics FIFOs and
//!   a hybrid vsock; DescribeInstance says Running; vCPU threads found by
//!   their `fc_vcpu` name; the pool drive `drive_0` PATCHed to an ext4 image
//!   which the agent (over `CONNECT 1024`) mounts and reads; a metrics line
//!   arrives on the FIFO by itself; SIGTERM ends shimvmm (Kata's StopVM).
//!
//! Differences from the orchestrators, for the Alpine guest: the boot source
//! adds the Alpine initrd and command line, firecracker-containerd's root
//! drive is read-write (the Alpine init mounts its root rw), and the "agent"
//! is a script with `vsockcat` (resources/guest/vsockcat.c).
//!
//! Build on the host: `cargo build --release -p shimvmm && cargo test --release
//! -p shimvmm-tests --test fc_orchestrators --no-run`, then in the testbed
//! `tools/devtool _guest-job target/release/deps/fc_orchestrators-<hash> <test name>`.
//! Elsewhere it prints a loud SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use net_util::{put_vsockcat_in_image, vsock_connect};
use serde_json::{json, Value};
use shimvmm_tests::orchestrators::{self, Containerd, GoSdk, Guest, Kata, Request};
use shimvmm_tests::{
    alpine_test_cmdline, api_request, artifacts, one_vm_at_a_time, require_guest_env, scaled, shimvmm_bin, test_image,
    try_api_request, GuestProcess, PowerAction, Scratch,
};

/// Boot to the guest script and its steps under the nested testbed: minutes.
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);
/// From SendCtrlAltDel / SIGTERM to shimvmm's exit (openrc's shutdown first).
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(300);
/// How long shimvmm may take to create its API socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a FIFO may take to get its line (metrics: every 60 s by itself).
const FIFO_TIMEOUT: Duration = Duration::from_secs(150);
/// firecracker-containerd's agent port.
const CONTAINERD_AGENT_PORT: u32 = 10789;
/// Kata's agent port.
const KATA_AGENT_PORT: u32 = 1024;
/// The file the swapped-in image holds, and its content's prefix.
const CONTENT_FILE: &str = "hello.txt";

/// The guest's "agent": reads the placeholder (`/dev/vdb`) as it is, waits
/// for the runtime on vsock port @PORT@, then for the drive's new size
/// (from the config-change interrupt of the swap), mounts it and reads the
/// container's file. @STUB_SECTORS@: the placeholder's size.
const AGENT_SCRIPT: &str = r#"
modprobe vmw_vsock_virtio_transport 2>&1
chmod +x /root/vsockcat
marker nproc "$(nproc)"
marker disks "$(ls /sys/block | grep -c '^vd')"
marker stub "$(head -c 5 /dev/vdb | tr -d '\0')"
marker stub-size "$(cat /sys/block/vdb/size)"
echo agent-ok | /root/vsockcat listen @PORT@ > /root/cmd
marker agent-rc $?
marker cmd "$(cat /root/cmd)"
i=0
while [ "$(cat /sys/block/vdb/size)" = @STUB_SECTORS@ ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
marker new-size "$(cat /sys/block/vdb/size)"
mkdir -p /container
mount -t ext4 -o ro /dev/vdb /container
marker mount-rc $?
marker content "$(cat /container/hello.txt)"
umount /container
"#;

/// A tap without an address (the sequences attach one; the guest does not
/// use it), deleted on drop.
struct Tap(String);

impl Tap {
    fn create(prefix: &str) -> Tap {
        let name = format!("{prefix}{}", std::process::id() % 100_000);
        let _ = Command::new("ip").args(["link", "del", &name]).output();
        net_util::run(&["ip", "tuntap", "add", "dev", &name, "mode", "tap"]);
        let tap = Tap(name);
        net_util::run(&["ip", "link", "set", &tap.0, "up"]);
        tap
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// A FIFO the orchestrator made (mkfifo) and reads all the time, as go-sdk,
/// firecracker-containerd and Kata do with the logger and metrics FIFOs.
struct Fifo {
    path: PathBuf,
    data: Arc<Mutex<Vec<u8>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Fifo {
    fn create(path: PathBuf) -> Fifo {
        net_util::run(&["mkfifo", "-m", "600", &path.to_string_lossy()]);
        // Non-blocking: the open does not wait for shimvmm, and the reader
        // sees no end of file before it.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open FIFO {}: {e}", path.display()));
        let (data, stop) = (Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicBool::new(false)));
        let (d, s) = (data.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !s.load(Ordering::Relaxed) {
                match file.read(&mut buf) {
                    Ok(n) if n > 0 => d.lock().unwrap().extend_from_slice(&buf[..n]),
                    // 0: no writer (yet or any more); WouldBlock: nothing new.
                    Ok(_) => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(50)),
                    Err(e) => panic!("reading a FIFO: {e}"),
                }
            }
        });
        Fifo { path, data, stop, reader: Some(reader) }
    }

    /// The complete lines so far.
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8_lossy(&self.data.lock().unwrap()).into_owned();
        let complete = text.rsplit_once('\n').map(|(c, _)| c.to_string()).unwrap_or_default();
        complete.lines().filter(|l| !l.trim().is_empty()).map(str::to_string).collect()
    }

    /// Waits until at least `n` complete lines arrived.
    fn wait_lines(&self, n: usize, what: &str) -> Vec<String> {
        let deadline = Instant::now() + scaled(FIFO_TIMEOUT);
        loop {
            let lines = self.lines();
            if lines.len() >= n {
                return lines;
            }
            assert!(Instant::now() < deadline, "{what}: {} of {n} lines on {}", lines.len(), self.path.display());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every metrics line is one Firecracker-format JSON object; the last.
    fn metrics(&self, n: usize) -> Value {
        let lines = self.wait_lines(n, "metrics FIFO");
        for l in &lines {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("metrics line is not JSON ({e}): {l}"));
            assert!(v["utc_timestamp_ms"].is_u64(), "not Firecracker's metrics format: {l}");
        }
        serde_json::from_str(lines.last().unwrap()).unwrap()
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Waits until `sock` exists.
fn wait_for_socket(vm: &GuestProcess, sock: &Path) {
    let deadline = Instant::now() + scaled(SOCKET_TIMEOUT);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "{} did not appear; shimvmm output:\n{}", sock.display(), vm.tail(20));
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a sequence over the API socket; each request must succeed.
fn send(sock: &Path, vm: &GuestProcess, reqs: &[Request]) -> Vec<Value> {
    for r in reqs {
        println!("{} {} {}", r.method, r.path, r.body.as_ref().map(Value::to_string).unwrap_or_default());
    }
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        orchestrators::run(reqs, |method, path, body| {
            try_api_request(sock, method, path, body.cloned()).unwrap_or_else(|e| (0, e.to_string()))
        })
    }));
    run.unwrap_or_else(|e| {
        eprintln!("shimvmm output:\n{}", vm.tail(40));
        std::panic::resume_unwind(e)
    })
}

fn marker(vm: &GuestProcess, name: &str) -> String {
    vm.wait_for_marker(name, scaled(GUEST_TIMEOUT))
        .unwrap_or_else(|e| panic!("no marker {name}: {e}\n{}", vm.tail(40)))
        .value
}

/// The Alpine guest with the sequences' machine.
fn alpine(rootfs: &Path) -> Guest {
    let art = artifacts();
    Guest {
        kernel: art.kernel.clone(),
        initrd: Some(art.initrd.clone()),
        boot_args: alpine_test_cmdline(),
        rootfs: rootfs.to_owned(),
        vcpus: 2,
        mem_mib: 512,
    }
}

/// An 8 MiB ext4 image holding `CONTENT_FILE` with `content`: the container
/// image the runtime swaps in.
fn container_image(dir: &Path, content: &str) -> PathBuf {
    let files = dir.join("container-files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join(CONTENT_FILE), content).unwrap();
    let image = dir.join("container.ext4");
    std::fs::File::create(&image).unwrap().set_len(8 << 20).unwrap();
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&files)
        .arg(&image)
        .output()
        .expect("run mkfs.ext4 (e2fsprogs)");
    assert!(out.status.success(), "mkfs.ext4 -d failed: {}", String::from_utf8_lossy(&out.stderr));
    image
}

/// The runtime's side of the swap: `CONNECT port` on the hybrid vsock until
/// the guest's agent listens, the mount request, and the agent's answer.
fn tell_agent(uds: &Path, port: u32, request: &str, vm: &GuestProcess) -> String {
    let deadline = Instant::now() + scaled(GUEST_TIMEOUT);
    loop {
        assert!(Instant::now() < deadline, "the agent never answered CONNECT {port}\n{}", vm.tail(40));
        if let Some((mut s, _)) = vsock_connect(uds, port) {
            s.write_all(request.as_bytes()).expect("send the agent's request");
            s.shutdown(std::net::Shutdown::Write).expect("shutdown(Write)");
            s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            let mut answer = String::new();
            s.read_to_string(&mut answer).expect("read the agent's answer");
            return answer;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The guest side of a swap: what the agent saw and read.
fn check_swap(vm: &GuestProcess, stub: &str, stub_sectors: u64, image: &Path, content: &str) {
    assert_eq!(marker(vm, "stub"), stub, "the placeholder's header, read before the swap");
    assert_eq!(marker(vm, "stub-size"), stub_sectors.to_string());
    assert_eq!(marker(vm, "agent-rc"), "0", "{}", vm.tail(40));
    let sectors = std::fs::metadata(image).unwrap().len() / 512;
    assert_eq!(marker(vm, "new-size"), sectors.to_string(), "the guest never saw the new image's size");
    assert_eq!(marker(vm, "mount-rc"), "0", "mounting the swapped-in image failed\n{}", vm.tail(40));
    assert_eq!(marker(vm, "content"), content, "the guest read other content from the swapped drive");
}

fn agent_script(port: u32, stub_sectors: u64) -> String {
    AGENT_SCRIPT.replace("@PORT@", &port.to_string()).replace("@STUB_SECTORS@", &stub_sectors.to_string())
}

fn exit_code(vm: &mut GuestProcess, what: &str) -> i32 {
    let st = vm.exit_status(scaled(SHUTDOWN_TIMEOUT)).unwrap_or_else(|e| panic!("{what}: shimvmm did not exit: {e}"));
    st.code().unwrap_or_else(|| panic!("{what}: shimvmm killed by a signal: {st:?}\n{}", vm.tail(40)))
}

#[test]
fn go_sdk_boots_describes_pauses_and_shuts_down() {
    if !require_guest_env("go_sdk_boots_describes_pauses_and_shuts_down") {
        return;
    }
    let _one = one_vm_at_a_time();
    let scratch = Scratch::new("orch-gosdk");
    let tap = Tap::create("gosdk");
    let image = test_image("marker nproc \"$(nproc)\"\nmarker booted 1\n", PowerAction::None);
    let log = Fifo::create(scratch.path("log.fifo"));
    let metrics = Fifo::create(scratch.path("metrics.fifo"));
    let sock = scratch.path("api.sock");
    let cfg = GoSdk {
        id: "go-sdk-vm".into(),
        guest: alpine(image.path()),
        log: log.path.clone(),
        metrics: metrics.path.clone(),
        tap: tap.0.clone(),
        mac: "AA:FC:00:00:00:01".into(),
        vsock_uds: scratch.path("v.sock"),
        version: api::FIRECRACKER_API_VERSION.into(),
    };
    let mut cmd = Command::new(shimvmm_bin());
    cmd.arg("--api-sock").arg(&sock).args(["--id", &cfg.id]);
    let mut vm = GuestProcess::spawn("shimvmm-gosdk", cmd).expect("spawn shimvmm");
    wait_for_socket(&vm, &sock);

    send(&sock, &vm, &orchestrators::go_sdk_start(&cfg));
    assert!(cfg.vsock_uds.exists(), "no vsock socket at {} after the start", cfg.vsock_uds.display());
    let exit = vm.wait_for_guest_exit(scaled(GUEST_TIMEOUT)).unwrap_or_else(|e| panic!("guest did not boot: {e}"));
    assert_eq!(exit, 0, "guest script failed\n{}", vm.tail(40));
    assert_eq!(marker(&vm, "nproc"), "2");
    println!("go-sdk: guest script done {:.1} s after spawn", vm.elapsed().as_secs_f64());

    let before = metrics.lines().len();
    send(&sock, &vm, &orchestrators::go_sdk_running(&cfg));
    let m = metrics.metrics(before + 1);
    println!("go-sdk: {} metrics lines, all JSON; {} log lines", metrics.lines().len(), log.lines().len());
    assert!(m["block"].is_object(), "metrics without block counters: {m}");
    let logs = log.wait_lines(1, "log FIFO");
    println!("go-sdk: first log line {:?}", logs[0]);

    send(&sock, &vm, &orchestrators::go_sdk_stop());
    assert_eq!(exit_code(&mut vm, "after SendCtrlAltDel"), 0, "{}", vm.tail(40));
    println!("go-sdk: shimvmm exited 0 {:.1} s after spawn", vm.elapsed().as_secs_f64());
}

#[test]
fn containerd_swaps_a_placeholder_drive_the_agent_mounts() {
    if !require_guest_env("containerd_swaps_a_placeholder_drive_the_agent_mounts") {
        return;
    }
    let _one = one_vm_at_a_time();
    let scratch = Scratch::new("orch-containerd");
    let image = test_image(&agent_script(CONTAINERD_AGENT_PORT, 1), PowerAction::None);
    put_vsockcat_in_image(image.path(), scratch.dir());
    // Placeholders: one sector each, starting with their ID.
    let stubs: Vec<PathBuf> = (0..2)
        .map(|i| {
            let p = scratch.path(&format!("stub{i}"));
            let mut data = orchestrators::containerd_stub_id(i).into_bytes();
            data.resize(512, 0);
            std::fs::write(&p, data).unwrap();
            p
        })
        .collect();
    let content = format!("container image {}", std::process::id());
    let container = container_image(scratch.dir(), &content);
    let log = Fifo::create(scratch.path("log.fifo"));
    let metrics = Fifo::create(scratch.path("metrics.fifo"));
    let sock = scratch.path("api.sock");
    let cfg = Containerd {
        guest: alpine(image.path()),
        root_read_only: false,
        log: log.path.clone(),
        metrics: metrics.path.clone(),
        stubs,
        vsock_uds: scratch.path("v.sock"),
    };
    let mut cmd = Command::new(shimvmm_bin());
    cmd.arg("--api-sock").arg(&sock).args(["--id", "containerd-vm"]);
    let mut vm = GuestProcess::spawn("shimvmm-containerd", cmd).expect("spawn shimvmm");
    wait_for_socket(&vm, &sock);

    send(&sock, &vm, &orchestrators::containerd_start(&cfg));
    assert_eq!(marker(&vm, "disks"), "3", "root and two placeholders");
    marker(&vm, "stub-size");
    let stub0 = orchestrators::containerd_stub_id(0);
    send(&sock, &vm, &[orchestrators::drive_swap(&stub0, &container)]);
    let answer = tell_agent(&cfg.vsock_uds, CONTAINERD_AGENT_PORT, &format!("mount {stub0}\n"), &vm);
    assert_eq!(answer, "agent-ok\n");
    assert_eq!(marker(&vm, "cmd"), format!("mount {stub0}"));
    check_swap(&vm, &stub0, 1, &container, &content);
    let exit = vm.wait_for_guest_exit(scaled(GUEST_TIMEOUT)).unwrap_or_else(|e| panic!("guest script: {e}"));
    assert_eq!(exit, 0, "guest script failed\n{}", vm.tail(40));
    println!(
        "containerd: the agent read {content:?} from the swapped drive {:.1} s after spawn",
        vm.elapsed().as_secs_f64()
    );
    let (_, body) = api_request(&sock, "GET", "/vm/config", None);
    let cfg_now: Value = serde_json::from_str(&body).unwrap();
    let d = cfg_now["drives"].as_array().unwrap().iter().find(|d| d["drive_id"] == json!(stub0)).cloned();
    assert_eq!(d.map(|d| d["path_on_host"].clone()), Some(json!(container)), "GET /vm/config after the swap");

    let before = metrics.lines().len();
    send(&sock, &vm, &orchestrators::containerd_running());
    let m = metrics.metrics(before + 1);
    assert!(m["block"].is_object(), "metrics without block counters: {m}");
    println!("containerd: {} metrics lines, all JSON; {} log lines", metrics.lines().len(), log.lines().len());

    // StopVM: SendCtrlAltDel.
    send(&sock, &vm, &orchestrators::go_sdk_stop());
    assert_eq!(exit_code(&mut vm, "after SendCtrlAltDel"), 0, "{}", vm.tail(40));
}

#[test]
fn kata_config_file_boot_swaps_a_pool_drive() {
    if !require_guest_env("kata_config_file_boot_swaps_a_pool_drive") {
        return;
    }
    // getVersionNumber: `firecracker --version`, at least 0.21.1.
    let out = Command::new(shimvmm_bin()).arg("--version").output().expect("run shimvmm --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let version = orchestrators::kata_parse_version(&text);
    assert!(out.status.success() && version.is_some_and(|v| v >= (0, 21, 1)), "--version: {text:?} -> {version:?}");

    let _one = one_vm_at_a_time();
    let scratch = Scratch::new("orch-kata");
    let tap = Tap::create("katatap");
    let image = test_image(&agent_script(KATA_AGENT_PORT, 0), PowerAction::None);
    put_vsockcat_in_image(image.path(), scratch.dir());
    // createDiskPool: empty files.
    let pool: Vec<PathBuf> = (0..orchestrators::KATA_DISK_POOL)
        .map(|i| {
            let p = scratch.path(&orchestrators::kata_drive_id(i));
            std::fs::write(&p, b"").unwrap();
            p
        })
        .collect();
    let content = format!("kata container rootfs {}", std::process::id());
    let container = container_image(scratch.dir(), &content);
    let log = Fifo::create(scratch.path("logs.fifo"));
    let metrics = Fifo::create(scratch.path("metrics.fifo"));
    let k = Kata {
        guest: alpine(image.path()),
        log: log.path.clone(),
        metrics: metrics.path.clone(),
        pool,
        tap: tap.0.clone(),
        vsock_uds: scratch.path("kata.hvsock"),
    };
    let config = scratch.path("fcConfig.json");
    std::fs::write(&config, orchestrators::kata_config_file(&k).to_string()).unwrap();
    let sock = scratch.path("firecracker.socket");
    let mut cmd = Command::new(shimvmm_bin());
    cmd.args(orchestrators::kata_args(&sock, &config));
    let mut vm = GuestProcess::spawn("shimvmm-kata", cmd).expect("spawn shimvmm");
    wait_for_socket(&vm, &sock);
    send(&sock, &vm, &orchestrators::kata_running());

    assert_eq!(marker(&vm, "disks"), (1 + orchestrators::KATA_DISK_POOL).to_string(), "image and pool drives");
    // GetThreadIDs: the vCPU threads by name.
    let pid = vm.pid();
    let vcpus = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read /proc/PID/task")
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.starts_with("fc_vcpu"))
        .count();
    assert_eq!(vcpus, k.guest.vcpus as usize, "threads named fc_vcpu*");
    // The tap's rate limiters as the VM runs them.
    let (_, body) = api_request(&sock, "GET", "/vm/config", None);
    let running: Value = serde_json::from_str(&body).unwrap();
    for dir in ["rx_rate_limiter", "tx_rate_limiter"] {
        let size = &running["network-interfaces"][0][dir]["bandwidth"]["size"];
        assert_eq!(size, &json!(orchestrators::KATA_RATE_BYTES), "{dir} in GET /vm/config: {running}");
    }

    marker(&vm, "stub-size");
    let drive0 = orchestrators::kata_drive_id(0);
    send(&sock, &vm, &[orchestrators::drive_swap(&drive0, &container)]);
    let answer = tell_agent(&k.vsock_uds, KATA_AGENT_PORT, &format!("mount {drive0}\n"), &vm);
    assert_eq!(answer, "agent-ok\n");
    check_swap(&vm, "", 0, &container, &content);
    let exit = vm.wait_for_guest_exit(scaled(GUEST_TIMEOUT)).unwrap_or_else(|e| panic!("guest script: {e}"));
    assert_eq!(exit, 0, "guest script failed\n{}", vm.tail(40));
    println!("kata: the agent read {content:?} from {drive0} {:.1} s after spawn", vm.elapsed().as_secs_f64());

    // Kata reads the metrics FIFO; shimvmm writes a line every 60 s.
    let m = metrics.metrics(1);
    assert!(m["net"].is_object(), "metrics without net counters: {m}");
    println!("kata: {} metrics lines, all JSON", metrics.lines().len());

    // StopVM: SIGTERM.
    let st = Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("run kill");
    assert!(st.success(), "kill -TERM {pid}");
    let status =
        vm.exit_status(scaled(SHUTDOWN_TIMEOUT)).unwrap_or_else(|e| panic!("SIGTERM: shimvmm did not exit: {e}"));
    println!("kata: shimvmm after SIGTERM: {status:?}");
}
