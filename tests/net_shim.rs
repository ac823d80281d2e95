//! The zero-copy shim with a real Linux guest, one boot: shimvmm drives the
//! testbed's first igb through VFIO (`--net vfio=$SHIMVMM_PNIC`); the Alpine
//! guest talks to the second igb in netns `peer` (192.0.2.1): pings it and is
//! pinged back, sends and receives 64 MiB (sha256 on both ends, throughput
//! printed). Then, while the peer floods the guest with UDP, the guest unbinds
//! and rebinds its virtio_net driver (a device reset: the shim must stop the
//! NIC before it forgets the guest's buffers), brings eth0 back, pings the
//! peer again, and reboots; shimvmm must exit 0. The metrics must show every
//! frame zero-copy both ways (no RX copy fallback at MTU 1500; TX copies only
//! headers: the 14-byte Ethernet headers, the wire policy, and a TSO frame's
//! Ethernet + IP + TCP header), no NIC error, and the quiesce on reset.
//! TX offloads: the guest sends its bulk TCP as TSO frames (the shim's
//! `tx_tso_frames`), the NIC cuts them into MSS-sized segments, and the
//! peer's kernel counts no checksum error (its /proc/net/snmp).
//!
//! Build on the host: `cargo build --release -p shimvmm && cargo test --release
//! -p shimvmm-tests --test net_shim --no-run`, then
//! `tools/testbed run -- target/release/deps/net_shim-<hash> --nocapture --test-threads=1`.
//! Elsewhere it prints a loud SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use net_util::*;
use shimvmm_tests::{one_vm_at_a_time, require_guest_env, test_image, GuestProcess, PowerAction};

const GUEST_IP: &str = "192.0.2.10";
const GUEST_CIDR: &str = "192.0.2.10/24";
const NET_ID: &str = "net0";
/// Boot plus 2 x 64 MiB under nested TCG: minutes.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1200);
/// Upper bound of the flood; it is stopped as soon as the guest pinged again.
const FLOOD_MAX: Duration = Duration::from_secs(180);
/// Flood datagram size (a full-size frame with headers).
const FLOOD_SIZE: usize = 1400;

/// A file of the peer namespace's `/proc/net` (read inside it).
fn peer_proc(ns: &str, file: &str) -> String {
    let path = format!("/proc/net/{file}");
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "cat", &path])
        .output()
        .unwrap_or_else(|e| panic!("run ip netns exec {ns} cat {path}: {e}"));
    assert!(out.status.success(), "reading the peer's {path}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The peer namespace's IP/TCP/UDP counters (`/proc/net/snmp`) as
/// "Tcp.InCsumErrors" -> value, and its interfaces' received frames and
/// bytes (`/proc/net/dev`, loopback left out) as "dev.rx_packets" and
/// "dev.rx_bytes".
fn peer_snmp(ns: &str) -> std::collections::HashMap<String, u64> {
    let mut m = std::collections::HashMap::new();
    let snmp = peer_proc(ns, "snmp");
    let lines: Vec<&str> = snmp.lines().collect();
    // Pairs of lines: "Tcp: Name1 Name2 ..." then "Tcp: v1 v2 ...".
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        let (Some((proto, names)), Some((_, values))) = (names.split_once(':'), values.split_once(':')) else {
            continue;
        };
        for (n, v) in names.split_whitespace().zip(values.split_whitespace()) {
            if let Ok(v) = v.parse::<u64>() {
                m.insert(format!("{proto}.{n}"), v);
            }
        }
    }
    // "  eth1: rx_bytes rx_packets ..." after two title lines (with '|').
    for l in peer_proc(ns, "dev").lines().filter(|l| !l.contains('|')) {
        let Some((name, v)) = l.split_once(':') else { continue };
        let v: Vec<u64> = v.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        if name.trim() != "lo" && v.len() >= 2 {
            *m.entry("dev.rx_bytes".to_string()).or_insert(0) += v[0];
            *m.entry("dev.rx_packets".to_string()).or_insert(0) += v[1];
        }
    }
    m
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run this test in tools/testbed"))
}

#[test]
fn shim_guest_pings_moves_64mib_each_way_and_survives_reset_under_flood() {
    if !require_guest_env("shim_guest_pings_moves_64mib_each_way_and_survives_reset_under_flood") {
        return;
    }
    let pnic = env("SHIMVMM_PNIC");
    let ns = env("SHIMVMM_PEER_NS");
    let peer_ip = env("SHIMVMM_PEER_IP");
    let _vm = one_vm_at_a_time();
    let script = guest_script(&GuestNet { peer_ip: &peer_ip, guest_cidr: GUEST_CIDR, reset_step: true, udp: false });
    let image = test_image(&script, PowerAction::Reboot);
    let tx_payload = payload(PAYLOAD_LEN, 0x5e1_0001);
    let tx_sha = sha256_hex(&tx_payload);
    put_file_in_image(image.path(), &tx_payload, GUEST_PAYLOAD);
    drop(tx_payload);
    let rx_payload = Arc::new(payload(PAYLOAD_LEN, 0x5e1_0002));
    let rx_sha = sha256_hex(&rx_payload);

    let sink = spawn_sink(listen(Some(&ns), &peer_ip, SINK_PORT), PAYLOAD_LEN, GUEST_TIMEOUT);
    let server = HttpServer::start(listen(Some(&ns), &peer_ip, HTTP_PORT), rx_payload);
    let metrics = image.path().with_extension("metrics.json");

    let cmd = shimvmm_guest_command(image.path(), &metrics, &format!("vfio={pnic},id={NET_ID}"));
    let mut vm = GuestProcess::spawn("shimvmm", cmd).expect("spawn shimvmm");

    let snmp0 = peer_snmp(&ns);
    let report = exercise(&vm, "shim", Some(&ns), GUEST_IP, &server, sink, &tx_sha, &rx_sha, GUEST_TIMEOUT);
    let snmp1 = peer_snmp(&ns);
    let delta = |k: &str| snmp1.get(k).copied().unwrap_or(0).saturating_sub(snmp0.get(k).copied().unwrap_or(0));
    eprintln!(
        "shim: peer counters over both transfers: Tcp.InSegs +{} Tcp.InCsumErrors +{} Udp.InCsumErrors +{} \
         Ip.InHdrErrors +{}",
        delta("Tcp.InSegs"),
        delta("Tcp.InCsumErrors"),
        delta("Udp.InCsumErrors"),
        delta("Ip.InHdrErrors")
    );
    for k in ["Tcp.InCsumErrors", "Udp.InCsumErrors", "Ip.InHdrErrors", "Tcp.InErrs"] {
        assert!(snmp1.contains_key(k), "the peer's /proc/net/snmp has no {k}: {snmp1:?}");
        assert_eq!(delta(k), 0, "the peer counted {k} while the guest sent through the shim");
    }
    // 64 MiB arrived (sha-checked) as wire frames no larger than the MTU:
    // at least one frame per MSS at the peer's NIC (its GRO may merge them
    // before TCP counts them, so the NIC's count, not Tcp.InSegs).
    let frames = delta("dev.rx_packets");
    eprintln!("shim: the peer's NIC received {frames} frames, {} bytes", delta("dev.rx_bytes"));
    assert!(frames >= (PAYLOAD_LEN / 1448) as u64, "the peer's NIC saw {frames} frames for 64 MiB");
    assert_eq!(
        vm.wait_for_marker("mtu", GUEST_TIMEOUT).unwrap().value,
        "1500",
        "the zero-copy RX check below assumes MTU 1500"
    );

    // Reset under flood.
    let m = |name: &str| {
        vm.wait_for_marker(name, GUEST_TIMEOUT).unwrap_or_else(|e| panic!("shim: no marker {name}: {e}")).value
    };
    let dev = m("virtio-dev");
    assert!(dev.starts_with("virtio"), "eth0's device is {dev:?}");
    if let Err(e) = server.wait_asked("flood", GUEST_TIMEOUT, &vm) {
        panic!("guest never reached gate flood: {e}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let dst = format!("{GUEST_IP}:9").parse().unwrap();
    let flood = spawn_udp_flood(Some(&ns), dst, FLOOD_SIZE, FLOOD_MAX, stop.clone(), sent.clone());
    std::thread::sleep(Duration::from_secs(1));
    server.open_gate("flood");
    let unbinding = vm.wait_for_marker("unbinding", GUEST_TIMEOUT).expect("marker unbinding");
    let at_unbind = sent.load(Ordering::Relaxed);
    assert_eq!(m("unbind-rc"), "0", "unbind failed\n{}", vm.tail(40));
    assert_eq!(m("bind-rc"), "0", "bind failed\n{}", vm.tail(40));
    let at_bind = sent.load(Ordering::Relaxed);
    assert_eq!(m("reset-eth0-up"), "0", "eth0 did not come back after rebind\n{}", vm.tail(40));
    assert_eq!(m("reset-first-ping"), "0", "no ping reply from the peer within 60 s after rebind\n{}", vm.tail(40));
    let rc = m("reset-ping-rc");
    stop.store(true, Ordering::Relaxed);
    flood.join().expect("flood thread");
    let total = sent.load(Ordering::Relaxed);
    let reset_ping = parse_ping(&format!("{}\n{}", m("reset-ping-summary"), m("reset-ping-rtt")));
    eprintln!(
        "shim: flood sent {total} UDP datagrams of {FLOOD_SIZE} B ({} during unbind/bind); after rebind ping {:?}",
        at_bind - at_unbind,
        reset_ping
    );
    assert_eq!(rc, "0", "ping after rebind failed: {reset_ping:?}");
    assert!(at_bind > at_unbind, "the flood was not running during unbind/bind ({at_unbind} -> {at_bind})");
    assert_eq!(m("kernel-complaints"), "0", "guest kernel logged traces or TX timeouts\n{}", vm.tail(60));
    m("done");

    let guest_exit = vm.wait_for_guest_exit(GUEST_TIMEOUT);
    let status = vm.exit_status(Duration::from_secs(120));
    let tail = vm.tail(60);
    assert_eq!(guest_exit.as_ref().ok(), Some(&0), "guest script did not finish cleanly: {guest_exit:?}\n{tail}");
    assert!(status.as_ref().is_ok_and(|s| s.success()), "a guest reboot must end shimvmm with 0: {status:?}\n{tail}");
    // The driver's probe resets the device too; the unbind's reset is the
    // one logged after the guest announced it.
    let quiesce_logs: Vec<String> = vm
        .lines()
        .into_iter()
        .filter(|l| l.text.contains("queues stopped on device reset") && l.at >= unbinding.at)
        .map(|l| l.text)
        .collect();
    eprintln!("shim: quiesce log lines after unbind: {quiesce_logs:#?}");
    assert!(!quiesce_logs.is_empty(), "no quiesce logged on the guest's unbind reset\n{tail}");
    let errors: Vec<String> = vm
        .lines()
        .into_iter()
        .filter(|l| l.text.contains("Z ERROR]") || l.text.contains("panicked"))
        .map(|l| l.text)
        .collect();
    assert!(errors.is_empty(), "shimvmm logged errors: {errors:#?}");

    let net = net_metrics(&metrics, NET_ID);
    eprintln!("shim: metrics {net}");
    let min = PAYLOAD_LEN as u64;
    assert!(u64_at(&net, "/tx_bytes") >= min, "tx_bytes below 64 MiB: {net:#}");
    assert!(u64_at(&net, "/rx_bytes") >= min, "rx_bytes below 64 MiB: {net:#}");
    let b = &net["backend"];
    // The wire policy copies each TX frame's Ethernet header (14 bytes) and
    // nothing else.
    assert_eq!(u64_at(&net, "/vmm_copied_bytes"), u64_at(b, "/tx_header_bytes"), "the VMM copied payload: {net:#}");
    assert!(u64_at(b, "/tx_header_bytes") >= 14 * u64_at(b, "/tx_packets"), "{b:#}");
    assert_eq!(u64_at(b, "/rx_copy_fallback/frames"), 0, "RX frames copied at MTU 1500: {b:#}");
    assert_eq!(u64_at(b, "/tx_copy_fallback/frames"), 0, "TX frames copied: {b:#}");
    assert_eq!(u64_at(b, "/rx_zero_copy"), u64_at(b, "/rx_packets"), "not every RX frame zero-copy: {b:#}");
    assert_eq!(u64_at(b, "/tx_zero_copy"), u64_at(b, "/tx_packets"), "not every TX frame zero-copy: {b:#}");
    assert!(u64_at(b, "/rx_zero_copy") >= min / 1514, "{b:#}");
    // TX offloads: the guest's bulk TCP went as TSO frames the NIC cut into
    // MSS-sized segments; each TSO frame is one zero-copy frame here.
    let (tso, segs) = (u64_at(b, "/tx_tso_frames"), u64_at(b, "/tx_tso_segments"));
    eprintln!(
        "shim: TX offloads: {tso} TSO frames -> {segs} segments ({:.1} per frame), {} checksum-only frames, \
         {} software checksums; {} TX frames for {} bytes",
        segs as f64 / tso.max(1) as f64,
        u64_at(b, "/tx_csum_offload"),
        u64_at(b, "/tx_sw_csum"),
        u64_at(b, "/tx_packets"),
        u64_at(b, "/tx_bytes"),
    );
    assert!(tso > 0 && segs > tso, "the guest sent no multi-segment TSO frame: {b:#}");
    assert_eq!(u64_at(b, "/tx_sw_csum"), 0, "TCP/UDP checksums finished in software: {b:#}");
    assert!(u64_at(b, "/tx_zero_copy") - tso + segs >= min / 1514, "{b:#}");
    for r in ["bad_vnet_header", "offload_unsupported"] {
        assert_eq!(u64_at(b, &format!("/drops/{r}")), 0, "{r}: {b:#}");
    }
    assert_eq!(u64_at(b, "/nic_errors"), 0, "NIC errors: {b:#}");
    assert!(u64_at(b, "/quiesces") >= 1, "no quiesce counted: {b:#}");
    // The bulk transfers moved the queue vector to the bulk interrupt rate
    // (and the pings back): docs/vfio-nic.md, section 2.
    assert!(u64_at(b, "/irq_rate_changes") >= 1, "the interrupt rate never adapted: {b:#}");
    assert!(report.host_ping.received > 0);
}
