//! The shim's wire policy from the peer's point of view, one boot: shimvmm
//! drives the testbed's first igb through VFIO; the Alpine guest sends raw
//! frames (a small static helper, `net_util/rawsend.c`, built here with
//! `cc -static` and copied into the guest image) with a foreign source MAC,
//! an 802.1Q tag, ethertype 0x8808 (MAC control, and a PAUSE frame), LLDP
//! and an STP BPDU, plus ordinary frames of a local experimental ethertype.
//! The peer (netns `peer`, its igb in promiscuous mode, an AF_PACKET socket)
//! must see the ordinary frames and none of the others; the metrics must
//! count every dropped frame under its reason; ping works before and after.
//! (64 MiB each way, sha256-checked, under the same policy: tests/net_shim.rs.)
//!
//! Build on the host: `cargo build --release -p shimvmm && cargo test --release
//! -p shimvmm-tests --test net_wire_policy --no-run`, then
//! `tools/testbed run -- target/release/deps/net_wire_policy-<hash> --nocapture --test-threads=1`.
//! Elsewhere it prints a loud SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use net_util::*;
use shimvmm_tests::{one_vm_at_a_time, require_guest_env, test_image, PowerAction};

const GUEST_CIDR: &str = "192.0.2.10/24";
const NET_ID: &str = "net0";
const GUEST_TIMEOUT: Duration = Duration::from_secs(600);
/// Frames of each kind the guest sends.
const COUNT: u64 = 5;
/// What the guest sends that must not reach the wire, and the drop reason
/// each is counted under.
const BLOCKED: [(&str, &str); 6] = [
    ("spoof", "spoofed_source"),
    ("vlan", "vlan_tagged"),
    ("macctl", "mac_control"),
    ("pause", "mac_control"),
    ("lldp", "link_local"),
    ("bpdu", "link_local"),
];
const HELPER: &str = "/rawsend";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run this test in tools/testbed"))
}

/// The guest side: helpers as in the other net tests, then each kind of
/// frame, gated so the host's capture runs first.
fn guest_script(peer_ip: &str) -> String {
    let kinds: Vec<&str> = std::iter::once("ok").chain(BLOCKED.iter().map(|b| b.0)).collect();
    format!(
        r#"
PEER={peer_ip}
wait_for() {{ n=$1; shift; while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 1; n=$((n - 1)); done; return 1; }}
gate() {{ wait_for 300 sh -c "timeout 10 wget -q -O - http://$PEER:{http}/gate/$1 2>/dev/null | grep -q go"; }}
has_eth0() {{ [ -e /sys/class/net/eth0 ]; }}
has_carrier() {{ [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]; }}
modprobe virtio_net 2>/dev/null
wait_for 30 has_eth0
ip addr add {cidr} dev eth0 && ip link set eth0 up && wait_for 30 has_carrier
marker eth0-up $?
marker mac "$(cat /sys/class/net/eth0/address)"
cp {helper} /tmp/rawsend && chmod 755 /tmp/rawsend
marker helper $?
ping -c 3 -W 3 "$PEER" >/dev/null 2>&1
marker ping-before $?
gate capture || {{ marker gate capture-timeout; exit 1; }}
for k in {kinds}; do
    /tmp/rawsend eth0 "$k" {count}
    marker "send-$k" $?
done
gate sent || {{ marker gate sent-timeout; exit 1; }}
out=$(ping -c 5 -W 3 "$PEER" 2>&1)
marker ping-after $?
marker ping-after-summary "$(echo "$out" | grep 'packets transmitted')"
marker done 1
"#,
        http = HTTP_PORT,
        cidr = GUEST_CIDR,
        helper = HELPER,
        kinds = kinds.join(" "),
        count = COUNT,
    )
}

#[test]
fn shim_wire_policy_keeps_spoofed_tagged_and_control_frames_off_the_wire() {
    if !require_guest_env("shim_wire_policy_keeps_spoofed_tagged_and_control_frames_off_the_wire") {
        return;
    }
    let pnic = env("SHIMVMM_PNIC");
    let ns = env("SHIMVMM_PEER_NS");
    let peer_ip = env("SHIMVMM_PEER_IP");
    let peer_if = env("SHIMVMM_PEER_IF");
    let _vm = one_vm_at_a_time();
    let image = test_image(&guest_script(&peer_ip), PowerAction::Reboot);
    let helper = build_rawsend(&image.path().with_extension("rawsend"));
    put_file_in_image(image.path(), &helper, HELPER);

    let server = HttpServer::start(listen(Some(&ns), &peer_ip, HTTP_PORT), Arc::new(Vec::new()));
    let metrics = image.path().with_extension("metrics.json");
    let cmd = shimvmm_guest_command(image.path(), &metrics, &format!("vfio={pnic},id={NET_ID}"));
    let mut vm = shimvmm_tests::GuestProcess::spawn("shimvmm", cmd).expect("spawn shimvmm");
    let m = |name: &str| {
        vm.wait_for_marker(name, GUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("no marker {name}: {e}\n{}", vm.tail(40)))
            .value
    };
    assert_eq!(m("eth0-up"), "0", "eth0 did not come up\n{}", vm.tail(40));
    assert_eq!(m("helper"), "0", "the helper is not in the guest\n{}", vm.tail(40));
    assert_eq!(m("ping-before"), "0", "no ping reply before the test frames\n{}", vm.tail(40));

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    if let Err(e) = server.wait_asked("capture", GUEST_TIMEOUT, &vm) {
        panic!("guest never reached gate capture: {e}");
    }
    let capture = spawn_wire_capture(ns.clone(), peer_if, stop.clone(), seen.clone());
    server.open_gate("capture");
    for k in std::iter::once("ok").chain(BLOCKED.iter().map(|b| b.0)) {
        assert_eq!(m(&format!("send-{k}")), "0", "the guest could not send its {k} frames\n{}", vm.tail(40));
    }
    if let Err(e) = server.wait_asked("sent", GUEST_TIMEOUT, &vm) {
        panic!("guest never reached gate sent: {e}");
    }
    // Let the last frames cross the wire.
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    capture.join().expect("capture thread");
    server.open_gate("sent");
    let seen = seen.lock().unwrap().clone();
    eprintln!("wire policy: the peer saw {seen:?} (each kind sent {COUNT} times)");
    assert_eq!(m("ping-after"), "0", "ordinary traffic stopped: {}\n{}", m("ping-after-summary"), vm.tail(40));
    m("done");

    let guest_exit = vm.wait_for_guest_exit(GUEST_TIMEOUT);
    let status = vm.exit_status(Duration::from_secs(120));
    let tail = vm.tail(60);
    assert_eq!(guest_exit.as_ref().ok(), Some(&0), "guest script did not finish cleanly: {guest_exit:?}\n{tail}");
    assert!(status.as_ref().is_ok_and(|s| s.success()), "a guest reboot must end shimvmm with 0: {status:?}\n{tail}");

    assert!(
        seen.get("ok").copied().unwrap_or(0) >= 1,
        "the peer saw none of the ordinary frames: the capture proves nothing ({seen:?})"
    );
    for (kind, _) in BLOCKED {
        assert_eq!(seen.get(kind), None, "{kind} frames reached the peer: {seen:?}");
    }
    let net = net_metrics(&metrics, NET_ID);
    eprintln!("wire policy: metrics {net}");
    let b = &net["backend"];
    let mut want: BTreeMap<&str, u64> = BTreeMap::new();
    for (_, reason) in BLOCKED {
        *want.entry(reason).or_default() += COUNT;
    }
    for (reason, n) in want {
        assert!(u64_at(b, &format!("/drops/{reason}")) >= n, "backend drops/{reason} below {n}: {b:#}");
        assert!(u64_at(&net, &format!("/tx_drops/{reason}")) >= n, "device tx_drops/{reason} below {n}: {net:#}");
    }
    // Each frame's header is copied (14 bytes), nothing else.
    let hdr = u64_at(b, "/tx_header_bytes");
    assert!(hdr >= 14 * (u64_at(b, "/tx_packets") + 6 * COUNT), "{b:#}");
    assert_eq!(u64_at(&net, "/vmm_copied_bytes"), hdr, "the VMM copied more than headers: {net:#}");
    assert_eq!(u64_at(b, "/nic_errors"), 0, "{b:#}");
}
