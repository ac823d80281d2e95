//! virtio-net over a tap with a real Linux guest, one boot: the Alpine guest's
//! virtio_net driver brings eth0 up, pings the host end of the tap and is
//! pinged back, sends 64 MiB to the host and receives 64 MiB from it (sha256
//! compared on both ends, throughput printed), then powers off; shimvmm exits
//! 0 and its metrics file shows the traffic and no VMM-copied payload byte.
//!
//! Addresses: host 192.0.2.129/25 on the tap, guest 192.0.2.130/25 (the /25
//! route wins over the testbed's 192.0.2.0/24 on the e1000e).
//!
//! Build on the host: `cargo build --release -p shimvmm && cargo test --release
//! -p shimvmm-tests --test net_tap --no-run`, then
//! `tools/testbed run -- target/release/deps/net_tap-<hash> --nocapture --test-threads=1`.
//! Elsewhere it prints a loud SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use net_util::*;
use shimvmm_tests::{one_vm_at_a_time, require_guest_env, test_image, GuestProcess, PowerAction};

const HOST_IP: &str = "192.0.2.129";
const HOST_CIDR: &str = "192.0.2.129/25";
const GUEST_IP: &str = "192.0.2.130";
const GUEST_CIDR: &str = "192.0.2.130/25";
const NET_ID: &str = "net0";
/// Boot plus 2 x 64 MiB under nested TCG: minutes.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1200);

/// A persistent tap created for the test, deleted on drop.
struct Tap(String);

impl Tap {
    fn create() -> Tap {
        let name = format!("svtap{}", std::process::id() % 100_000);
        run(&["ip", "tuntap", "add", "dev", &name, "mode", "tap"]);
        let tap = Tap(name);
        run(&["ip", "addr", "add", HOST_CIDR, "dev", &tap.0]);
        run(&["ip", "link", "set", &tap.0, "up"]);
        tap
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

#[test]
fn guest_pings_and_moves_64mib_each_way_over_tap() {
    if !require_guest_env("guest_pings_and_moves_64mib_each_way_over_tap") {
        return;
    }
    let _vm = one_vm_at_a_time();
    let script = guest_script(&GuestNet { peer_ip: HOST_IP, guest_cidr: GUEST_CIDR, reset_step: false, udp: false });
    let image = test_image(&script, PowerAction::Poweroff);
    let tx_payload = payload(PAYLOAD_LEN, 0x7a9_0001);
    let tx_sha = sha256_hex(&tx_payload);
    put_file_in_image(image.path(), &tx_payload, GUEST_PAYLOAD);
    drop(tx_payload);
    let rx_payload = Arc::new(payload(PAYLOAD_LEN, 0x7a9_0002));
    let rx_sha = sha256_hex(&rx_payload);

    let tap = Tap::create();
    let sink = spawn_sink(listen(None, HOST_IP, SINK_PORT), PAYLOAD_LEN, GUEST_TIMEOUT);
    let server = HttpServer::start(listen(None, HOST_IP, HTTP_PORT), rx_payload);
    let metrics = image.path().with_extension("metrics.json");

    let cmd = shimvmm_guest_command(image.path(), &metrics, &format!("tap={},id={NET_ID}", tap.0));
    let mut vm = GuestProcess::spawn("shimvmm", cmd).expect("spawn shimvmm");

    let report = exercise(&vm, "tap", None, GUEST_IP, &server, sink, &tx_sha, &rx_sha, GUEST_TIMEOUT);

    let guest_exit = vm.wait_for_guest_exit(GUEST_TIMEOUT);
    let status = vm.exit_status(Duration::from_secs(120));
    let tail = vm.tail(60);
    assert_eq!(guest_exit.as_ref().ok(), Some(&0), "guest script did not finish cleanly: {guest_exit:?}\n{tail}");
    assert!(status.as_ref().is_ok_and(|s| s.success()), "shimvmm exit: {status:?}\n{tail}");

    let net = net_metrics(&metrics, NET_ID);
    eprintln!("tap: metrics {net}");
    let min = PAYLOAD_LEN as u64;
    // Guest TX: the payload plus TCP/IP/Ethernet headers; guest RX likewise.
    assert!(u64_at(&net, "/tx_bytes") >= min, "tx_bytes below 64 MiB: {net:#}");
    assert!(u64_at(&net, "/rx_bytes") >= min, "rx_bytes below 64 MiB: {net:#}");
    // With HOST_TSO the guest hands over up to 64 KiB per frame.
    assert!(u64_at(&net, "/tx_packets") >= min / 65536, "too few tx_packets: {net:#}");
    assert!(u64_at(&net, "/rx_packets") >= min / 65536, "too few rx_packets: {net:#}");
    assert_eq!(u64_at(&net, "/vmm_copied_bytes"), 0, "the VMM copied payload: {net:#}");
    assert!(report.host_ping.received > 0);
}
