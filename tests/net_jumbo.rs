//! Jumbo frames and the RX checksum offload through the zero-copy shim, one
//! boot: shimvmm drives the testbed's first igb through VFIO with
//! `--net vfio=$SHIMVMM_PNIC,mtu=9000`; the peer's igb (netns `peer`) gets
//! MTU 9000 too. The Alpine guest sees MTU 9000 (VIRTIO_NET_F_MTU), pings the
//! peer with 8972-byte payloads (one 9014-byte frame each way), sends and
//! receives 64 MiB (sha256 on both ends). The peer's frames one byte over the
//! MTU (its MTU raised to 9001 for that) never reach the guest: the NIC drops
//! them. The metrics show frames over several buffers (`num_buffers` > 1),
//! the bytes moved inside first buffers as designed (at most 1 KiB per frame,
//! no other RX copy) and frames delivered with DATA_VALID (GUEST_CSUM).
//!
//! Build on the host: `cargo build --release -p shimvmm && cargo test --release
//! -p shimvmm-tests --test net_jumbo --no-run`, then
//! `tools/testbed run -- target/release/deps/net_jumbo-<hash> --nocapture --test-threads=1`.
//! Elsewhere it prints a loud SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::sync::Arc;
use std::time::Duration;

use net_util::*;
use shimvmm_tests::{one_vm_at_a_time, require_guest_env, test_image, GuestProcess, PowerAction};

const GUEST_IP: &str = "192.0.2.10";
const GUEST_CIDR: &str = "192.0.2.10/24";
const NET_ID: &str = "net0";
const MTU: u16 = 9000;
/// ICMP payload of a ping whose IP packet is exactly the MTU.
const BIG_PING: u32 = MTU as u32 - 28;
const GUEST_TIMEOUT: Duration = Duration::from_secs(1200);

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run this test in tools/testbed"))
}

/// `ip -n NS link set IF mtu MTU`.
fn peer_mtu(ns: &str, dev: &str, mtu: u16) {
    run(&["ip", "-n", ns, "link", "set", dev, "mtu", &mtu.to_string()]);
}

/// The peer pings the guest `count` times with `size`-byte payloads, DF set
/// (no fragmentation): the replies.
fn peer_big_ping(ns: &str, ip: &str, size: u32, count: u32) -> (u32, String) {
    let (size, count) = (size.to_string(), count.to_string());
    let out = output_bounded(&[
        "ip", "netns", "exec", ns, "ping", "-M", "do", "-s", &size, "-c", &count, "-i", "0.3", "-W", "3", ip,
    ]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (parse_ping(&text).map(|s| s.received).unwrap_or(0), text)
}

const GUEST_JUMBO: &str = r#"
out=$(ping -c 5 -s @SIZE@ -W 3 "$PEER" 2>&1)
marker big-ping-rc $?
marker big-ping-summary "$(echo "$out" | grep 'packets transmitted')"
gate oversize || { marker gate oversize-timeout; exit 1; }
marker csum-stats "$(cat /sys/class/net/eth0/statistics/rx_errors) $(cat /sys/class/net/eth0/statistics/rx_length_errors 2>/dev/null)"
"#;

#[test]
fn shim_jumbo_mtu_9000_pings_8972_moves_64mib_and_frames_span_buffers() {
    if !require_guest_env("shim_jumbo_mtu_9000_pings_8972_moves_64mib_and_frames_span_buffers") {
        return;
    }
    let pnic = env("SHIMVMM_PNIC");
    let ns = env("SHIMVMM_PEER_NS");
    let peer_ip = env("SHIMVMM_PEER_IP");
    let peer_if = env("SHIMVMM_PEER_IF");
    let _vm = one_vm_at_a_time();
    peer_mtu(&ns, &peer_if, MTU);
    let mut script =
        guest_script(&GuestNet { peer_ip: &peer_ip, guest_cidr: GUEST_CIDR, reset_step: false, udp: false });
    let done = script.rfind("marker done 1").expect("guest script ends with done");
    script.insert_str(done, &GUEST_JUMBO.replace("@SIZE@", &BIG_PING.to_string()));
    let image = test_image(&script, PowerAction::Poweroff);
    let tx_payload = payload(PAYLOAD_LEN, 0x30b0_0001);
    let tx_sha = sha256_hex(&tx_payload);
    put_file_in_image(image.path(), &tx_payload, GUEST_PAYLOAD);
    drop(tx_payload);
    let rx_payload = Arc::new(payload(PAYLOAD_LEN, 0x30b0_0002));
    let rx_sha = sha256_hex(&rx_payload);

    let sink = spawn_sink(listen(Some(&ns), &peer_ip, SINK_PORT), PAYLOAD_LEN, GUEST_TIMEOUT);
    let server = HttpServer::start(listen(Some(&ns), &peer_ip, HTTP_PORT), rx_payload);
    let metrics = image.path().with_extension("metrics.json");
    let cmd = shimvmm_guest_command(image.path(), &metrics, &format!("vfio={pnic},id={NET_ID},mtu={MTU}"));
    let mut vm = GuestProcess::spawn("shimvmm", cmd).expect("spawn shimvmm");
    let m = |name: &str| {
        vm.wait_for_marker(name, GUEST_TIMEOUT).unwrap_or_else(|e| panic!("jumbo: no marker {name}: {e}")).value
    };
    assert_eq!(m("mtu"), MTU.to_string(), "the guest took the MTU from the config space");

    let report = exercise(&vm, "jumbo", Some(&ns), GUEST_IP, &server, sink, &tx_sha, &rx_sha, GUEST_TIMEOUT);
    assert_eq!(m("big-ping-rc"), "0", "guest ping -s {BIG_PING} failed: {}\n{}", m("big-ping-summary"), vm.tail(40));
    eprintln!("jumbo: guest ping -s {BIG_PING}: {}", m("big-ping-summary"));
    let (got, text) = peer_big_ping(&ns, GUEST_IP, BIG_PING, 5);
    eprintln!("jumbo: peer ping -s {BIG_PING} -M do: {got}/5 replies");
    assert!(got > 0, "peer ping -s {BIG_PING} got no reply:\n{text}");
    // One byte over: the peer may send it (MTU 9001), the guest's NIC drops it.
    peer_mtu(&ns, &peer_if, MTU + 1);
    let (over, text) = peer_big_ping(&ns, GUEST_IP, BIG_PING + 1, 3);
    peer_mtu(&ns, &peer_if, MTU);
    eprintln!("jumbo: peer ping -s {} -M do (one byte over the MTU): {over}/3 replies", BIG_PING + 1);
    assert_eq!(over, 0, "a frame over the guest's MTU got through:\n{text}");
    server.open_gate("oversize");
    let stats = m("csum-stats");
    eprintln!("jumbo: guest eth0 rx_errors rx_length_errors: {stats}");
    m("done");

    let guest_exit = vm.wait_for_guest_exit(GUEST_TIMEOUT);
    let status = vm.exit_status(Duration::from_secs(120));
    let tail = vm.tail(60);
    peer_mtu(&ns, &peer_if, 1500);
    assert_eq!(guest_exit.as_ref().ok(), Some(&0), "guest script did not finish cleanly: {guest_exit:?}\n{tail}");
    assert!(status.as_ref().is_ok_and(|s| s.success()), "shimvmm did not exit 0: {status:?}\n{tail}");

    let net = net_metrics(&metrics, NET_ID);
    eprintln!("jumbo: metrics {net}");
    let b = &net["backend"];
    let frames = u64_at(b, "/rx_packets");
    let multi = u64_at(b, "/rx_multi_buffer_frames");
    let shifted = u64_at(b, "/rx_shifted_bytes");
    eprintln!(
        "jumbo: {frames} RX frames, {multi} over several buffers ({} buffers), {shifted} bytes moved in first buffers \
         ({:.2} % of {} RX bytes), {} with DATA_VALID; {:.1} / {:.1} Mbit/s guest->peer / peer->guest",
        u64_at(b, "/rx_multi_buffer_buffers"),
        100.0 * shifted as f64 / u64_at(b, "/rx_bytes").max(1) as f64,
        u64_at(b, "/rx_bytes"),
        u64_at(b, "/rx_csum_valid"),
        mbit_per_s(PAYLOAD_LEN as u64, report.tx_secs),
        mbit_per_s(PAYLOAD_LEN as u64, report.rx_secs),
    );
    assert!(multi >= (PAYLOAD_LEN / 9000) as u64 / 2, "too few frames over several buffers: {b:#}");
    assert!(u64_at(b, "/rx_multi_buffer_buffers") > 2 * multi, "{b:#}");
    assert!(shifted <= 1024 * frames, "more than one NIC buffer moved per frame: {b:#}");
    assert_eq!(u64_at(b, "/rx_copy_fallback/frames"), 0, "RX frames bounced: {b:#}");
    assert_eq!(
        u64_at(&net, "/vmm_copied_bytes"),
        shifted + u64_at(b, "/tx_header_bytes"),
        "copies other than the designed ones: {net:#}"
    );
    assert!(u64_at(b, "/rx_csum_valid") >= (PAYLOAD_LEN / 9000) as u64 / 2, "few DATA_VALID frames: {b:#}");
    assert_eq!(u64_at(b, "/nic_errors"), 0, "NIC errors: {b:#}");
    assert_eq!(u64_at(b, "/nic_invariant_breaks"), 0, "{b:#}");
}
