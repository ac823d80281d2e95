//! Guest network, side by side: shimvmm's tap backend and Firecracker
//! v1.12.1's tap path (`tools/firecracker`), one after the other in one L1,
//! each booting the Alpine guest (ELF vmlinux, initrd, `quiet` command line,
//! 2 vCPUs, 512 MiB) with one virtio-net on its own tap and running the very
//! same guest script as `tests/net_tap.rs` (`net_util::guest_script`): ping
//! both ways, 64 MiB guest->host and 64 MiB host->guest, sha256 checked on both
//! ends. Each VMM's CPU time (utime+stime of /proc/PID/stat) over the ping and
//! the two transfers is printed per GiB moved.
//!
//! Then the UDP phase: for payloads of 18 B (64-byte frames) and 1472 B
//! (1500-byte IP packets), the guest sends for 5 s (`net_util/udpblast.c`,
//! built static here and copied into the image: the guest has no iperf3)
//! while the host counts what arrives, then the host sends for 5 s while the
//! guest counts; packets per second delivered and the VMM's CPU time per
//! million delivered are printed. `shimvmm-shim` runs the same over the
//! zero-copy shim (`--net vfio=$SHIMVMM_PNIC`), its peer the testbed's second
//! igb in netns `$SHIMVMM_PEER_NS`; `shimvmm-shim9000` (on request, in
//! SHIMVMM_GUESTNET_VMMS) the same with `mtu=9000` and the peer's igb at MTU
//! 9000. Beside the VMM process's CPU the VMM's own share is printed (minus
//! the vCPU threads' guest_time), with KVM's exit and injection counters per
//! GiB, the guest's acked features and mean frame sizes, and shimvmm's
//! backend metrics.
//!
//! Run by `tools/bench guestnet` (in the testbed). Elsewhere it prints a loud
//! SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use net_util::*;
use shimvmm_tests::{
    alpine_test_cmdline, alpine_vmlinux, artifacts, firecracker_bin, one_vm_at_a_time, require_guest_env, shimvmm_bin,
    test_image, GuestProcess, PowerAction,
};

const HOST_IP: &str = "192.0.2.129";
const HOST_CIDR: &str = "192.0.2.129/25";
const GUEST_IP: &str = "192.0.2.130";
const GUEST_CIDR: &str = "192.0.2.130/25";
/// MTU of `shimvmm-shim9000`: the shim with jumbo frames (the guest and
/// the peer's igb at 9000).
const JUMBO_MTU: u16 = 9000;
/// The shim path's guest (the testbed's peer is 192.0.2.1/24 in its netns).
const SHIM_GUEST_IP: &str = "192.0.2.10";
const SHIM_GUEST_CIDR: &str = "192.0.2.10/24";
const GUEST_TIMEOUT: Duration = Duration::from_secs(1200);

/// A tap for one run, deleted on drop.
struct Tap(String);

impl Tap {
    fn create(tag: &str) -> Tap {
        let name = format!("pt{tag}{}", std::process::id() % 100_000);
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

/// A tap routed to the 82576 PF's netdev (`SHIMVMM_PF_IF`): how a host
/// without the shim puts a tap guest on the wire. L1 forwards between the
/// two (proxy ARP on both, a host route each way), the kernel's GSO/TSO
/// and GRO on the way. The peer is the same igb in netns `SHIMVMM_PEER_NS`
/// as the shim's, over the same emulated 82576, so the `-tap-wire` paths and
/// `shimvmm-shim-vf` differ only in the datapath. (A bridge does not work
/// here: QEMU's 82576 with VFs delivers the PF no frame for another MAC.)
struct WireTap {
    tap: Tap,
    peer_route: String,
}

impl WireTap {
    fn create(tag: &str, peer_ip: &str, guest_ip: &str) -> WireTap {
        let pf = std::env::var("SHIMVMM_PF_IF")
            .expect("SHIMVMM_PF_IF is not set: run this in tools/testbed with SHIMVMM_TESTBED_VFS=1 or more");
        let name = format!("pw{tag}{}", std::process::id() % 100_000);
        run(&["ip", "tuntap", "add", "dev", &name, "mode", "tap"]);
        let tap = Tap(name);
        run(&["ip", "link", "set", &tap.0, "up"]);
        for key in [
            "net.ipv4.ip_forward=1".to_string(),
            "net.ipv4.conf.all.rp_filter=0".to_string(),
            format!("net.ipv4.conf.{pf}.rp_filter=0"),
            format!("net.ipv4.conf.{}.rp_filter=0", tap.0),
            format!("net.ipv4.conf.{pf}.proxy_arp=1"),
            format!("net.ipv4.conf.{}.proxy_arp=1", tap.0),
        ] {
            run(&["sysctl", "-qw", &key]);
        }
        let peer_route = format!("{peer_ip}/32");
        run(&["ip", "route", "replace", &peer_route, "dev", &pf]);
        run(&["ip", "route", "replace", &format!("{guest_ip}/32"), "dev", &tap.0]);
        WireTap { tap, peer_route }
    }
}

impl Drop for WireTap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["route", "del", &self.peer_route]).status();
    }
}

/// utime + stime of PID in seconds (all threads), from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    cpu_times(pid).0
}

/// KVM's per-VM counters (`exits`, `io_exits`, `mmio_exits`,
/// `irq_injections`, `halt_exits`, ...: the files of debugfs's
/// `kvm/<pid>-<fd>/`, mounted in the testbed's L1) summed over the VMs of
/// `pid`; empty where debugfs is not mounted.
fn kvm_counters(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dirs) = std::fs::read_dir("/sys/kernel/debug/kvm") else {
        return out;
    };
    for d in dirs.flatten().filter(|d| d.file_name().to_string_lossy().starts_with(&format!("{pid}-"))) {
        for f in std::fs::read_dir(d.path()).into_iter().flatten().flatten() {
            let v = std::fs::read_to_string(f.path()).ok().and_then(|t| t.trim().parse::<u64>().ok());
            if let Some(v) = v {
                *out.entry(f.file_name().to_string_lossy().into_owned()).or_insert(0) += v;
            }
        }
    }
    out
}

/// The KVM counters that say where a VM's time per byte goes, per GiB moved
/// between two readings.
fn kvm_per_gib(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, gib: f64) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    for k in ["exits", "irq_exits", "io_exits", "mmio_exits", "halt_exits", "irq_injections", "irq_window_exits"] {
        if let (Some(a), Some(b)) = (before.get(k), after.get(k)) {
            m.insert(k.to_string(), serde_json::json!((b.saturating_sub(*a) as f64 / gib).round()));
        }
    }
    serde_json::Value::Object(m)
}

fn command(vmm: &str, image: &Path, tap: &str, dir: &Path) -> Command {
    let art = artifacts();
    let vmlinux = alpine_vmlinux();
    let cmdline = alpine_test_cmdline();
    match vmm {
        "shimvmm-shim" | "shimvmm-shim9000" | "shimvmm-shim-vf" => {
            let pnic = if vmm == "shimvmm-shim-vf" {
                let vfs = std::env::var("SHIMVMM_VFS")
                    .expect("SHIMVMM_VFS is not set: run this in tools/testbed with SHIMVMM_TESTBED_VFS=1 or more");
                vfs.split_whitespace().next().expect("SHIMVMM_VFS lists no VF").to_string()
            } else {
                std::env::var("SHIMVMM_PNIC").expect("SHIMVMM_PNIC is not set: run this in tools/testbed")
            };
            let mut c = Command::new(shimvmm_bin());
            c.arg("--kernel").arg(&vmlinux).arg("--initrd").arg(&art.initrd).arg("--cmdline").arg(&cmdline);
            c.args(["--mem", "512", "--vcpus", "2", "--no-api"]);
            c.arg("--disk").arg(format!("path={}", image.display()));
            let mtu = if vmm == "shimvmm-shim9000" { format!(",mtu={JUMBO_MTU}") } else { String::new() };
            c.arg("--net").arg(format!("vfio={pnic},id=net0{mtu}"));
            c.arg("--metrics-path").arg(dir.join("shimvmm-metrics.json"));
            c
        }
        "shimvmm-tap" | "shimvmm-tap-wire" => {
            let mut c = Command::new(shimvmm_bin());
            c.arg("--kernel").arg(&vmlinux).arg("--initrd").arg(&art.initrd).arg("--cmdline").arg(&cmdline);
            c.args(["--mem", "512", "--vcpus", "2", "--no-api"]);
            c.arg("--disk").arg(format!("path={}", image.display()));
            c.arg("--net").arg(format!("tap={tap},id=net0"));
            c.arg("--metrics-path").arg(dir.join("shimvmm-metrics.json"));
            c
        }
        "firecracker-tap" | "firecracker-tap-wire" => {
            let cfg = serde_json::json!({
                "boot-source": {"kernel_image_path": vmlinux, "initrd_path": art.initrd, "boot_args": cmdline},
                "drives": [{"drive_id": "rootfs", "path_on_host": image, "is_root_device": false, "is_read_only": false}],
                "machine-config": {"vcpu_count": 2, "mem_size_mib": 512},
                "network-interfaces": [{"iface_id": "net0", "host_dev_name": tap}],
            });
            let path = dir.join("firecracker-net.json");
            std::fs::write(&path, cfg.to_string()).expect("write the Firecracker config");
            let mut c = Command::new(firecracker_bin());
            c.args(["--no-api", "--level", "Warning", "--config-file"]).arg(&path);
            c
        }
        other => panic!("unknown VMM {other}"),
    }
}

/// Where a path's peer is: (netns, peer ip, guest ip, guest cidr).
fn endpoints(vmm: &str) -> (Option<String>, String, &'static str, &'static str) {
    if is_shim(vmm) || on_wire(vmm) {
        let ns = std::env::var("SHIMVMM_PEER_NS").expect("SHIMVMM_PEER_NS is not set: run this in tools/testbed");
        let ip = std::env::var("SHIMVMM_PEER_IP").expect("SHIMVMM_PEER_IP is not set: run this in tools/testbed");
        (Some(ns), ip, SHIM_GUEST_IP, SHIM_GUEST_CIDR)
    } else {
        (None, HOST_IP.to_string(), GUEST_IP, GUEST_CIDR)
    }
}

/// The paths over the shim (the testbed's first igb, peer in its netns).
fn is_shim(vmm: &str) -> bool {
    vmm.starts_with("shimvmm-shim")
}

/// The taps bridged to the PF ([`WireTap`]): their peer is the shim's.
fn on_wire(vmm: &str) -> bool {
    vmm.ends_with("-tap-wire")
}

/// The peer's igb MTU for this path (`ip -n NS link set IF mtu N`), put
/// back to 1500 on drop.
struct PeerMtu(Option<(String, String)>);

impl PeerMtu {
    fn set(vmm: &str, ns: Option<&str>) -> PeerMtu {
        let (Some(ns), true) = (ns, vmm == "shimvmm-shim9000") else {
            return PeerMtu(None);
        };
        let dev = std::env::var("SHIMVMM_PEER_IF").expect("SHIMVMM_PEER_IF is not set: run this in tools/testbed");
        run(&["ip", "-n", ns, "link", "set", &dev, "mtu", &JUMBO_MTU.to_string()]);
        PeerMtu(Some((ns.to_string(), dev)))
    }
}

impl Drop for PeerMtu {
    fn drop(&mut self) {
        if let Some((ns, dev)) = &self.0 {
            let _ = Command::new("ip").args(["-n", ns, "link", "set", dev, "mtu", "1500"]).status();
        }
    }
}

/// One UDP figure: packets delivered per second and the VMM's CPU seconds
/// per million delivered.
fn udp_figure(delivered: u64, secs: f64, cpu: f64) -> serde_json::Value {
    let pps = if secs > 0.0 { delivered as f64 / secs } else { 0.0 };
    let per_mpkt = if delivered > 0 { cpu / (delivered as f64 / 1e6) } else { f64::NAN };
    serde_json::json!({"delivered": delivered, "secs": secs, "pps": pps, "vmm_cpu_s": cpu, "vmm_cpu_s_per_mpkt": per_mpkt})
}

/// The UDP phase (see the module doc), after `exercise`.
fn udp_phase(
    vm: &GuestProcess,
    vmm: &str,
    pid: u32,
    ns: Option<&str>,
    peer_ip: &str,
    guest_ip: &str,
    server: &HttpServer,
) -> serde_json::Value {
    let m = |name: &str| {
        vm.wait_for_marker(name, GUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{vmm}: no marker {name}: {e}\n{}", vm.tail(40)))
            .value
    };
    let stop = Arc::new(AtomicBool::new(false));
    let sink_addr = format!("{peer_ip}:{UDP_TX_PORT}").parse().expect("UDP sink address");
    let counter = spawn_udp_counter(ns, sink_addr, stop.clone());
    server.open_gate("udp");
    assert_eq!(m("udp-helper"), "0", "{vmm}: udpblast did not land in the guest");
    let mut tx_cpu = Vec::new();
    for size in UDP_PAYLOADS {
        m(&format!("udp-tx-start-{size}"));
        let cpu0 = cpu_secs(pid);
        let sent = m(&format!("udp-tx-{size}"));
        tx_cpu.push((size, cpu_secs(pid) - cpu0, sent));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let counts = counter.join().expect("UDP counter thread");
    let mut out = serde_json::Map::new();
    for (size, cpu, sent) in tx_cpu {
        let (n, first, last) = counts.get(&size).copied().unwrap_or((0, Instant::now(), Instant::now()));
        let secs = last.duration_since(first).as_secs_f64();
        let mut f = udp_figure(n, secs, cpu);
        f["guest_sent"] = serde_json::Value::String(sent.clone());
        eprintln!("{vmm}: UDP guest->host {size} B payload: guest sent {sent} (count s); host got {n} in {secs:.2} s = {:.0} pkt/s; VMM CPU {cpu:.2} s", f["pps"].as_f64().unwrap_or(0.0));
        out.insert(format!("guest_to_host_{size}"), f);
    }
    for size in UDP_PAYLOADS {
        m(&format!("udp-rx-ready-{size}"));
        let dst = format!("{guest_ip}:{UDP_RX_PORT}").parse().expect("guest UDP address");
        let cpu0 = cpu_secs(pid);
        let sent = udp_blast(ns, dst, size, Duration::from_secs(UDP_SECS));
        std::thread::sleep(Duration::from_millis(200));
        let cpu = cpu_secs(pid) - cpu0;
        let got = m(&format!("udp-rx-{size}"));
        let v: Vec<f64> = got.split_whitespace().filter_map(|x| x.parse().ok()).collect();
        let (n, secs) = (v.first().copied().unwrap_or(0.0) as u64, v.get(1).copied().unwrap_or(0.0));
        let mut f = udp_figure(n, secs, cpu);
        f["host_sent"] = serde_json::json!(sent);
        eprintln!("{vmm}: UDP host->guest {size} B payload: host sent {sent}; guest got {n} in {secs:.2} s = {:.0} pkt/s; VMM CPU {cpu:.2} s", f["pps"].as_f64().unwrap_or(0.0));
        out.insert(format!("host_to_guest_{size}"), f);
    }
    serde_json::Value::Object(out)
}

fn one(vmm: &str, round: usize) {
    let (ns, peer_ip, guest_ip, guest_cidr) = endpoints(vmm);
    let ns = ns.as_deref();
    // SHIMVMM_GUESTNET_UDP=0: bulk TCP and pings only (the one-wire rounds of
    // docs/benchmarks.md 5c, where the UDP phase only costs time).
    let udp = std::env::var("SHIMVMM_GUESTNET_UDP").map_or(true, |v| v != "0");
    let script = guest_script(&GuestNet { peer_ip: &peer_ip, guest_cidr, reset_step: false, udp });
    let image = test_image(&script, PowerAction::Poweroff);
    let tx_payload = payload(PAYLOAD_LEN, 0x7a9_0101);
    let tx_sha = sha256_hex(&tx_payload);
    put_file_in_image(image.path(), &tx_payload, GUEST_PAYLOAD);
    drop(tx_payload);
    if udp {
        let helper = build_udpblast(&image.path().with_extension("udpblast"));
        put_file_in_image(image.path(), &helper, UDP_HELPER);
    }
    let rx_payload = Arc::new(payload(PAYLOAD_LEN, 0x7a9_0102));
    let rx_sha = sha256_hex(&rx_payload);

    // The shim's peer is the testbed's second igb; the taps need a tap.
    let tap = (!is_shim(vmm) && !on_wire(vmm)).then(|| Tap::create(&round.to_string()));
    let wire = on_wire(vmm).then(|| WireTap::create(&round.to_string(), &peer_ip, guest_ip));
    let _peer_mtu = PeerMtu::set(vmm, ns);
    let tap_name = tap.as_ref().or(wire.as_ref().map(|w| &w.tap)).map(|t| t.0.clone()).unwrap_or_default();
    let sink = spawn_sink(listen(ns, &peer_ip, SINK_PORT), PAYLOAD_LEN, GUEST_TIMEOUT);
    let server = HttpServer::start(listen(ns, &peer_ip, HTTP_PORT), rx_payload);
    let dir = image.path().parent().expect("image dir").to_path_buf();
    let mut vm = GuestProcess::spawn(vmm, command(vmm, image.path(), &tap_name, &dir)).expect("spawn the VMM");
    let pid = vm.pid();
    vm.wait_for_marker("net-up", GUEST_TIMEOUT).unwrap_or_else(|e| panic!("{vmm}: {e}"));
    let ((cpu0, guest0), kvm0, host0) = (cpu_times(pid), kvm_counters(pid), host_busy_secs());
    let report = exercise(&vm, vmm, ns, guest_ip, &server, sink, &tx_sha, &rx_sha, GUEST_TIMEOUT);
    let ((cpu1, guest1), kvm1, host1) = (cpu_times(pid), kvm_counters(pid), host_busy_secs());
    let own = (cpu1 - cpu0) - (guest1 - guest0);
    let gib = 2.0 * PAYLOAD_LEN as f64 / f64::from(1u32 << 30);
    eprintln!(
        "{vmm}: VMM CPU {:.2} s over the pings and both transfers = {:.1} CPU s per GiB moved (round {round})",
        cpu1 - cpu0,
        (cpu1 - cpu0) / gib
    );
    eprintln!(
        "{vmm}: of it in the guest (guest_time) {:.2} s; the VMM's own CPU {own:.2} s = {:.1} CPU s per GiB moved",
        guest1 - guest0,
        own / gib
    );
    eprintln!(
        "{vmm}: the whole machine's busy CPU over the same span {:.2} s = {:.1} CPU s per GiB moved (the peer's side included)",
        host1 - host0,
        (host1 - host0) / gib
    );
    let kvm = kvm_per_gib(&kvm0, &kvm1, gib);
    eprintln!("{vmm}: KVM counters per GiB moved over the same span: {kvm}");
    // How much of the VMM's memory (guest RAM above all) transparent huge
    // pages back: the NIC's IOMMU maps guest RAM in pages of that size.
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let kib = |key: &str| {
        rollup.lines().find(|l| l.starts_with(key)).unwrap_or("").split_whitespace().nth(1).unwrap_or("?").to_string()
    };
    eprintln!("{vmm}: VMM memory: Rss {} kB, AnonHugePages {} kB", kib("Rss:"), kib("AnonHugePages:"));
    let udp = if udp { udp_phase(&vm, vmm, pid, ns, &peer_ip, guest_ip, &server) } else { serde_json::Value::Null };
    println!(
        "{}",
        serde_json::json!({"bench": "guestnet", "vmm": vmm, "round": round,
            "guest_to_host_mbit_s": mbit_per_s(PAYLOAD_LEN as u64, report.tx_secs),
            "host_to_guest_mbit_s": mbit_per_s(PAYLOAD_LEN as u64, report.rx_secs),
            "host_ping_rtt_ms": report.host_ping.rtt, "guest_ping_rtt_ms": report.guest_ping.as_ref().and_then(|g| g.rtt),
            "vmm_cpu_s": cpu1 - cpu0, "vmm_cpu_s_per_gib": (cpu1 - cpu0) / gib, "udp": udp,
            "vmm_guest_cpu_s": guest1 - guest0, "vmm_own_cpu_s_per_gib": own / gib,
            "host_busy_cpu_s_per_gib": (host1 - host0) / gib,
            "kvm_per_gib": kvm, "guest_features": report.guest_features,
            "guest_tx_mean_frame": report.guest_eth0.tx_mean_frame(),
            "guest_rx_mean_frame": report.guest_eth0.rx_mean_frame()})
    );
    let _ = vm.wait_for_guest_exit(Duration::from_secs(300));
    let _ = vm.exit_status(Duration::from_secs(30));
    vm.kill();
    // shimvmm's own counters at its exit (the whole run, UDP phase included).
    let metrics = dir.join("shimvmm-metrics.json");
    if vmm.starts_with("shimvmm") && metrics.exists() {
        let d = net_metrics(&metrics, "net0");
        let n = |p: &str| d.pointer(p).and_then(serde_json::Value::as_u64).unwrap_or(0);
        eprintln!(
            "{vmm}: backend metrics over the whole run: tx_packets {} tx_tso_frames {} tx_tso_segments {} \
             tx_csum_offload {} tx_sw_csum {} rx_packets {} rx_csum_valid {} irq_rate_changes {} vmm_copied_bytes {}",
            n("/backend/tx_packets"),
            n("/backend/tx_tso_frames"),
            n("/backend/tx_tso_segments"),
            n("/backend/tx_csum_offload"),
            n("/backend/tx_sw_csum"),
            n("/backend/rx_packets"),
            n("/backend/rx_csum_valid"),
            n("/backend/irq_rate_changes"),
            n("/vmm_copied_bytes"),
        );
        // How often the guest was interrupted and how many frames each RX
        // pass carried: what the interrupt rate buys the guest.
        eprintln!(
            "{vmm}: device metrics over the whole run: used_irqs {} used_irqs_suppressed {} rx_passes {} \
             rx_buffers_used {} rx_packets {} backend_events {}",
            n("/used_irqs"),
            n("/used_irqs_suppressed"),
            n("/rx_passes"),
            n("/rx_buffers_used"),
            n("/rx_packets"),
            n("/backend_events"),
        );
    }
}

#[test]
fn side_by_side_with_firecracker() {
    if !require_guest_env("side_by_side_with_firecracker") {
        return;
    }
    let _vm = one_vm_at_a_time();
    let rounds: usize = std::env::var("SHIMVMM_GUESTNET_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    // SHIMVMM_GUESTNET_VMMS: one or both (tools/bench runs each in its own
    // process, so a guest lost to the testbed does not cost the other's run).
    let only = std::env::var("SHIMVMM_GUESTNET_VMMS").unwrap_or_default();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            ["shimvmm-tap", "firecracker-tap", "shimvmm-shim"]
        } else {
            ["firecracker-tap", "shimvmm-tap", "shimvmm-shim"]
        };
        for vmm in order {
            if only.is_empty() || only.split([' ', ',']).any(|o| o == vmm) {
                one(vmm, round);
            }
        }
        // On request only: the shim with jumbo frames; and in an L1 with
        // VFs, the taps bridged to the PF against the shim on a VF (one
        // wire, one peer), alternating which goes first.
        let wire = if round % 2 == 0 {
            ["shimvmm-shim9000", "shimvmm-tap-wire", "firecracker-tap-wire", "shimvmm-shim-vf"]
        } else {
            ["shimvmm-shim9000", "shimvmm-shim-vf", "firecracker-tap-wire", "shimvmm-tap-wire"]
        };
        for vmm in wire {
            if only.split([' ', ',']).any(|o| o == vmm) {
                one(vmm, round);
            }
        }
    }
}
