//! virtio-vsock with a real Linux guest, Firecracker's host-side model: the
//! Alpine guest's vmw_vsock_virtio_transport talks to shimvmm's vsock
//! device, and a host process exchanges 64 MiB each way with a guest process
//! (sha256 checked on both ends), in both connection directions:
//! - host to guest: the host connects to `uds_path`, sends `CONNECT 5000\n`,
//!   gets `OK <port>\n` once the guest's `vsockcat listen 5000` accepted;
//! - guest to host: the guest's `vsockcat connect 2 6000` reaches the host
//!   listener at `<uds_path>_6000`.
//!
//! The guest program (resources/guest/vsockcat.c, the image has no vsock
//! tool) is built static with `cc` and put into the test image with its
//! payload (debugfs). Throughput is printed.
//!
//! Build on the host: `cargo build --release -p shimvmm && cargo test --release
//! -p shimvmm-tests --test vsock --no-run`, then
//! `tools/testbed run -- target/release/deps/vsock-<hash> --nocapture`.
//! Elsewhere it prints a loud SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use net_util::{
    mbit_per_s, payload, put_file_in_image, put_vsockcat_in_image, sha256_hex, u64_at, vsock_connect, PAYLOAD_LEN,
};
use shimvmm_tests::{
    alpine_test_cmdline, artifacts, one_vm_at_a_time, require_guest_env, shimvmm_bin, test_image, GuestProcess,
    PowerAction,
};

const GUEST_CID: u32 = 3;
const GUEST_PORT: u32 = 5000;
const HOST_PORT: u32 = 6000;
/// Boot plus 2 x 2 x 64 MiB under nested TCG: minutes.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1200);

const GUEST_SCRIPT: &str = r#"
modprobe vmw_vsock_virtio_transport 2>&1
marker vsock-dev "$(test -c /dev/vsock && echo yes || echo no)"
chmod +x /root/vsockcat
marker g-sha "$(sha256sum /root/g.bin | cut -d' ' -f1)"
# vsockcat exits 3 or 4 when a connection was never made or was reset
# before any byte came (vsockcat.c): nothing was exchanged, try again.
vsock_try() {
    tries=0
    while :; do
        tries=$((tries + 1))
        /root/vsockcat "$@" < /root/g.bin > /root/in.bin
        rc=$?
        case $rc in 3|4) [ $tries -lt 5 ] && continue ;; esac
        break
    done
}
vsock_try listen 5000
marker h2g-tries $tries
marker h2g-rc $rc
marker h2g-sha "$(sha256sum /root/in.bin | cut -d' ' -f1)"
rm -f /root/in.bin
vsock_try connect 2 6000
marker g2h-tries $tries
marker g2h-rc $rc
marker g2h-sha "$(sha256sum /root/in.bin | cut -d' ' -f1)"
rm -f /root/in.bin
"#;

/// A directory for the sockets, removed on drop.
struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends `data` then shuts down the write half, while reading to EOF;
/// returns the sha256 of what was read and how long the exchange took, or
/// None if the connection was reset before the guest sent a byte (its
/// connect timed out after shimvmm had reached the host socket: the guest
/// tries again, see GUEST_SCRIPT).
fn exchange(stream: UnixStream, data: Arc<Vec<u8>>) -> Option<(String, usize, Duration)> {
    let t = Instant::now();
    let mut w = stream.try_clone().expect("clone the host stream");
    let writer = std::thread::spawn(move || {
        w.write_all(&data)?;
        w.shutdown(std::net::Shutdown::Write)
    });
    let mut got = Vec::with_capacity(PAYLOAD_LEN);
    let mut r = stream;
    r.set_read_timeout(Some(GUEST_TIMEOUT)).unwrap();
    let read = r.read_to_end(&mut got);
    let wrote = writer.join().expect("writer thread");
    if got.is_empty() && (read.is_err() || wrote.is_err()) {
        eprintln!("vsock: connection reset before the guest sent a byte (read {read:?}, write {wrote:?})");
        return None;
    }
    read.expect("host receive");
    wrote.expect("host send");
    Some((sha256_hex(&got), got.len(), t.elapsed()))
}

/// Host-initiated: `CONNECT <port>` until the guest listens (before that the
/// guest answers RST and shimvmm closes the socket without `OK`).
fn connect_to_guest(uds: &Path, port: u32, vm: &GuestProcess) -> (UnixStream, String) {
    let deadline = Instant::now() + GUEST_TIMEOUT;
    let mut attempts = 0;
    loop {
        assert!(Instant::now() < deadline, "no OK to CONNECT {port} after {attempts} attempts\n{}", vm.tail(40));
        // The guest's listener gave up (each try ended before an OK reached
        // us): say so now rather than at the deadline.
        if let Some(rc) = vm.marker("h2g-rc").map(|m| m.value) {
            panic!("the guest stopped listening (rc {rc}) before any CONNECT {port} was answered OK\n{}", vm.tail(40));
        }
        attempts += 1;
        if let Some((s, line)) = vsock_connect(uds, port) {
            s.set_read_timeout(None).unwrap();
            return (s, line);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn accept_from_guest(listener: &UnixListener, vm: &GuestProcess) -> UnixStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + GUEST_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the guest never connected to host port {HOST_PORT}\n{}",
                    vm.tail(40)
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => panic!("accept on the host port listener: {e}"),
        }
    }
}

#[test]
fn guest_and_host_exchange_64mib_each_way_in_both_directions() {
    if !require_guest_env("guest_and_host_exchange_64mib_each_way_in_both_directions") {
        return;
    }
    let _vm = one_vm_at_a_time();
    let dir = Dir(std::env::temp_dir().join(format!("shimvmm-vsock-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    let image = test_image(GUEST_SCRIPT, PowerAction::Poweroff);
    put_vsockcat_in_image(image.path(), &dir.0);
    let guest_data = payload(PAYLOAD_LEN, 0x0007_50c4_0001);
    let guest_sha = sha256_hex(&guest_data);
    put_file_in_image(image.path(), &guest_data, "/root/g.bin");
    drop(guest_data);
    let host_data = Arc::new(payload(PAYLOAD_LEN, 0x0007_50c4_0002));
    let host_sha = sha256_hex(&host_data);

    let uds = dir.0.join("v.sock");
    let host_listener = UnixListener::bind(format!("{}_{HOST_PORT}", uds.display())).expect("bind <uds>_6000");
    let metrics = dir.0.join("metrics.json");
    let art = artifacts();
    let mut cmd = Command::new(shimvmm_bin());
    cmd.arg("--kernel")
        .arg(&art.kernel)
        .arg("--initrd")
        .arg(&art.initrd)
        .arg("--cmdline")
        .arg(alpine_test_cmdline())
        .args(["--mem", "512", "--vcpus", "2", "--no-api", "--log-level", "info"])
        .arg("--metrics-path")
        .arg(&metrics)
        .arg("--disk")
        .arg(format!("path={},root=on", image.path().display()))
        .arg("--vsock")
        .arg(format!("cid={GUEST_CID},uds={}", uds.display()));
    let mut vm = GuestProcess::spawn("shimvmm", cmd).expect("spawn shimvmm");

    // Host to guest.
    vm.wait_for_marker("g-sha", GUEST_TIMEOUT)
        .unwrap_or_else(|e| panic!("guest never got ready: {e:?}\n{}", vm.tail(60)));
    let (stream, ok) = connect_to_guest(&uds, GUEST_PORT, &vm);
    let port: u32 =
        ok.trim_end().strip_prefix("OK ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("bad OK line {ok:?}"));
    assert!(port >= 1 << 30, "host port {port} is not an ephemeral one");
    // The guest accepted, so it sends: a reset here is a failure.
    let (h2g_got_sha, h2g_len, h2g_time) = exchange(stream, host_data.clone())
        .unwrap_or_else(|| panic!("host-initiated connection reset\n{}", vm.tail(40)));
    let m = |vm: &GuestProcess, name: &str| {
        vm.wait_for_marker(name, GUEST_TIMEOUT)
            .map(|m| m.value)
            .unwrap_or_else(|e| panic!("no marker {name}: {e:?}\n{}", vm.tail(60)))
    };
    assert_eq!(m(&vm, "h2g-rc"), "0", "{}", vm.tail(40));
    assert_eq!(h2g_len, PAYLOAD_LEN, "host received {h2g_len} bytes from the guest");
    assert_eq!(h2g_got_sha, guest_sha, "guest-to-host bytes differ (host-initiated connection)");
    assert_eq!(m(&vm, "h2g-sha"), host_sha, "host-to-guest bytes differ (host-initiated connection)");

    // Guest to host.
    let (g2h_got_sha, g2h_len, g2h_time) = loop {
        let stream = accept_from_guest(&host_listener, &vm);
        if let Some(done) = exchange(stream, host_data.clone()) {
            break done;
        }
    };
    assert_eq!(m(&vm, "g2h-rc"), "0", "{}", vm.tail(40));
    assert_eq!(g2h_len, PAYLOAD_LEN, "host received {g2h_len} bytes from the guest");
    assert_eq!(g2h_got_sha, guest_sha, "guest-to-host bytes differ (guest-initiated connection)");
    assert_eq!(m(&vm, "g2h-sha"), host_sha, "host-to-guest bytes differ (guest-initiated connection)");

    for (what, t) in [("host-initiated", h2g_time), ("guest-initiated", g2h_time)] {
        eprintln!(
            "vsock: {what} connection: 64 MiB each way at once in {:.2} s ({:.0} Mbit/s per direction)",
            t.as_secs_f64(),
            mbit_per_s(PAYLOAD_LEN as u64, t.as_secs_f64())
        );
    }

    let guest_exit = vm.wait_for_guest_exit(GUEST_TIMEOUT);
    let status = vm.exit_status(Duration::from_secs(120));
    let tail = vm.tail(60);
    assert_eq!(guest_exit.as_ref().ok(), Some(&0), "guest script did not finish cleanly: {guest_exit:?}\n{tail}");
    assert!(status.as_ref().is_ok_and(|s| s.success()), "shimvmm exit: {status:?}\n{tail}");
    assert!(!uds.exists(), "shimvmm left {} behind", uds.display());

    let text = std::fs::read_to_string(&metrics).expect("metrics file");
    let last = text.lines().rev().find(|l| !l.trim().is_empty()).expect("a metrics line");
    let v: serde_json::Value = serde_json::from_str(last).expect("metrics lines are JSON");
    let vs = v.pointer("/shimvmm/vsock/vsock").cloned().unwrap_or_else(|| panic!("no vsock metrics: {last}"));
    eprintln!("vsock: metrics {vs}");
    for dir in ["h2g", "g2h"] {
        eprintln!("vsock: {dir}: the guest's vsockcat ran {} time(s)", m(&vm, &format!("{dir}-tries")));
    }
    let both = 2 * PAYLOAD_LEN as u64;
    assert!(u64_at(&vs, "/rx_bytes_count") >= both, "{vs:#}");
    assert!(u64_at(&vs, "/tx_bytes_count") >= both, "{vs:#}");
    assert!(u64_at(&vs, "/conns_added") >= 2, "{vs:#}");
    assert_eq!(u64_at(&vs, "/malformed_packets"), 0, "{vs:#}");
}
