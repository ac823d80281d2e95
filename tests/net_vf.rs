//! Several microVMs on one NIC, each on its own SR-IOV VF: the testbed with
//! `SHIMVMM_TESTBED_VFS=3` leaves the first igb's PF to Linux's igb in L1,
//! creates VFs with fixed MACs (spoof checking on) and binds them to
//! vfio-pci (`SHIMVMM_VFS`). Up to three Alpine guests (fewer with
//! `SHIMVMM_VF_GUESTS=N`) run at once, each with `--net vfio=<its VF>` and no
//! MAC of its own: each must come up with its VF's PF-assigned MAC, ping the
//! peer (192.0.2.1 in netns `peer`, the second igb) and be pinged by it, then
//! ping every other guest (VM to VM, switched inside the NIC), and reboot;
//! each shimvmm must exit 0 with every frame zero-copy in its metrics.
//!
//! Build on the host: `cargo build --release -p shimvmm && cargo test --release
//! -p shimvmm-tests --test net_vf --no-run`, then
//! `SHIMVMM_TESTBED_VFS=3 tools/testbed run -- target/release/deps/net_vf-<hash> --nocapture --test-threads=1`.
//! Without `SHIMVMM_TESTBED_VFS` (tools/devtool's run) the test makes the VFs
//! itself with tools/testbed.d/l1-vfs.sh. Elsewhere it prints a loud SKIPPED
//! line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use net_util::*;
use shimvmm_tests::{one_vm_at_a_time, require_guest_env, test_image, GuestProcess, PowerAction};

/// Boot of up to three guests at once under nested TCG, then a few pings.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1500);
const NET_ID: &str = "net0";

/// Guest i's address (i from 0).
fn guest_ip(i: usize) -> String {
    format!("192.0.2.{}", 20 + i)
}

/// The MAC tools/testbed.d/l1-stage2.sh has the PF assign to VF k.
fn vf_mac(k: usize) -> String {
    format!("52:54:00:c0:03:{:02x}", k + 1)
}

fn env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: run this test in tools/testbed with SHIMVMM_TESTBED_VFS=3"))
}

/// The guest side: up, ping the peer, wait for everyone, ping the others.
fn script(me: usize, n: usize, peer_ip: &str) -> String {
    let others: Vec<String> = (0..n).filter(|j| *j != me).map(|j| format!("{j}:{}", guest_ip(j))).collect();
    format!(
        r#"
PEER={peer_ip}
CIDR={ip}/24
wait_for() {{ n=$1; shift; while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 1; n=$((n - 1)); done; return 1; }}
gate() {{ wait_for 1200 sh -c "timeout 10 wget -q -O - http://$PEER:{http}/gate/$1 2>/dev/null | grep -q go"; }}
has_eth0() {{ [ -e /sys/class/net/eth0 ]; }}
has_carrier() {{ [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]; }}
modprobe virtio_net 2>/dev/null
wait_for 30 has_eth0
ip addr add "$CIDR" dev eth0 && ip link set eth0 up && wait_for 30 has_carrier
marker eth0-up $?
marker mac "$(cat /sys/class/net/eth0/address)"
ping_ok() {{ ping -c 1 -W 2 "$1" >/dev/null 2>&1; }}
wait_for 60 ping_ok "$PEER"
out=$(ping -c 5 -W 3 "$PEER" 2>&1)
marker ping-peer-rc $?
marker ping-peer-summary "$(echo "$out" | grep 'packets transmitted')"
gate all-up || {{ marker gate all-up-timeout; exit 1; }}
for o in {others}; do
    j=${{o%%:*}}; ip=${{o#*:}}
    wait_for 30 ping_ok "$ip"
    out=$(ping -c 5 -W 3 "$ip" 2>&1)
    marker "ping-vm$j-rc" $?
    marker "ping-vm$j-summary" "$(echo "$out" | grep 'packets transmitted')"
done
gate finish || {{ marker gate finish-timeout; exit 1; }}
marker kernel-complaints "$(dmesg | grep -ciE 'call trace|timed out|virtio_net.*(error|bug)')"
marker done 1
"#,
        ip = guest_ip(me),
        http = HTTP_PORT,
        others = others.join(" "),
    )
}

/// shimvmm for one small guest (1 vCPU, 256 MiB: three of them share L1's
/// two vCPUs) on `vf` with no MAC configured (the VF's is taken).
fn command(image: &std::path::Path, metrics: &std::path::Path, vf: &str) -> Command {
    let art = shimvmm_tests::artifacts();
    let mut cmd = Command::new(shimvmm_tests::shimvmm_bin());
    cmd.arg("--kernel")
        .arg(&art.kernel)
        .arg("--initrd")
        .arg(&art.initrd)
        .arg("--cmdline")
        .arg(shimvmm_tests::alpine_test_cmdline())
        .args(["--mem", "256", "--vcpus", "1", "--no-api", "--log-level", "info"])
        .arg("--metrics-path")
        .arg(metrics)
        .arg("--disk")
        .arg(format!("path={},root=on", image.display()))
        .arg("--net")
        .arg(format!("vfio={vf},id={NET_ID}"));
    cmd
}

/// The testbed's VFs: `SHIMVMM_VFS` from an L1 started with
/// `SHIMVMM_TESTBED_VFS`, or else (an L1 with the PF on vfio-pci, as
/// tools/devtool starts one for every guest test) made here with the script
/// the testbed uses, which hands the PF to Linux's igb. Each guest test runs
/// in a fresh L1, so the PF is not given back.
fn vfs() -> Vec<String> {
    if let Ok(v) = std::env::var("SHIMVMM_VFS") {
        return v.split_whitespace().map(String::from).collect();
    }
    let pf = env("SHIMVMM_PNIC");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/testbed.d/l1-vfs.sh");
    let out = Command::new("sh").args([script, &pf, "3"]).output().expect("run l1-vfs.sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("vf: {script} {pf} 3:\n{stderr}");
    assert!(out.status.success(), "SR-IOV setup of {pf} failed: {stderr}");
    // "PF_IF VF..."
    String::from_utf8_lossy(&out.stdout).split_whitespace().skip(1).map(String::from).collect()
}

#[test]
fn guests_on_vfs_ping_the_peer_and_each_other_zero_copy() {
    if !require_guest_env("guests_on_vfs_ping_the_peer_and_each_other_zero_copy") {
        return;
    }
    let vfs = vfs();
    let ns = env("SHIMVMM_PEER_NS");
    let peer_ip = env("SHIMVMM_PEER_IP");
    let want: usize = std::env::var("SHIMVMM_VF_GUESTS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    let n = want.min(vfs.len());
    assert!(n >= 1, "no VFs in SHIMVMM_VFS");
    eprintln!("vf: {n} guests on VFs {:?}", &vfs[..n]);
    let _lock = one_vm_at_a_time();
    let server = HttpServer::start(listen(Some(&ns), &peer_ip, HTTP_PORT), Arc::new(Vec::new()));

    let mut images = Vec::new();
    let mut metrics: Vec<PathBuf> = Vec::new();
    let mut vms = Vec::new();
    for (i, vf) in vfs.iter().take(n).enumerate() {
        let image = test_image(&script(i, n, &peer_ip), PowerAction::Reboot);
        let m = image.path().with_extension("metrics.json");
        let vm = GuestProcess::spawn(&format!("shimvmm-vf{i}"), command(image.path(), &m, vf))
            .unwrap_or_else(|e| panic!("spawn shimvmm on {vf}: {e}"));
        images.push(image);
        metrics.push(m);
        vms.push(vm);
    }
    let marker = |vm: &GuestProcess, i: usize, name: &str| {
        vm.wait_for_marker(name, GUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("vm{i}: no marker {name}: {e}\n{}", vm.tail(60)))
            .value
    };
    for (i, vm) in vms.iter().enumerate() {
        assert_eq!(marker(vm, i, "eth0-up"), "0", "vm{i}: eth0 did not come up\n{}", vm.tail(60));
        // VF k of the PF: its address's function number / 2 on QEMU's
        // 82576 (VFs at 10.0, 10.2, 10.4, ...); the MAC is checked by value.
        let mac = marker(vm, i, "mac");
        assert!((0..7).any(|k| vf_mac(k) == mac), "vm{i}: MAC {mac} is not a PF-assigned VF MAC");
        let rc = marker(vm, i, "ping-peer-rc");
        let summary = marker(vm, i, "ping-peer-summary");
        eprintln!("vm{i} ({}): MAC {mac}, ping peer: {summary}", vfs[i]);
        assert_eq!(rc, "0", "vm{i}: ping to the peer failed: {summary}\n{}", vm.tail(60));
        let (stats, text) = host_ping(Some(&ns), &guest_ip(i), 5);
        eprintln!("peer -> vm{i}: {stats:?}");
        assert!(stats.received > 0, "the peer cannot ping vm{i}:\n{text}");
    }
    let macs: Vec<String> = vms.iter().enumerate().map(|(i, vm)| marker(vm, i, "mac")).collect();
    let mut distinct = macs.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), n, "each VF has its own MAC: {macs:?}");

    server.open_gate("all-up");
    for (i, vm) in vms.iter().enumerate() {
        for j in (0..n).filter(|j| *j != i) {
            let rc = marker(vm, i, &format!("ping-vm{j}-rc"));
            let summary = marker(vm, i, &format!("ping-vm{j}-summary"));
            eprintln!("vm{i} -> vm{j}: {summary}");
            assert_eq!(rc, "0", "vm{i} cannot ping vm{j}: {summary}\n{}", vm.tail(60));
        }
    }
    server.open_gate("finish");
    for (i, vm) in vms.iter_mut().enumerate() {
        assert_eq!(marker(vm, i, "kernel-complaints"), "0", "vm{i}: guest kernel complained\n{}", vm.tail(60));
        marker(vm, i, "done");
        let guest_exit = vm.wait_for_guest_exit(GUEST_TIMEOUT);
        let status = vm.exit_status(Duration::from_secs(120));
        let tail = vm.tail(60);
        assert_eq!(guest_exit.as_ref().ok(), Some(&0), "vm{i}: guest script failed: {guest_exit:?}\n{tail}");
        assert!(status.as_ref().is_ok_and(|s| s.success()), "vm{i}: shimvmm did not exit 0: {status:?}\n{tail}");
        let errors: Vec<String> = vm
            .lines()
            .into_iter()
            .filter(|l| l.text.contains("Z ERROR]") || l.text.contains("panicked"))
            .map(|l| l.text)
            .collect();
        assert!(errors.is_empty(), "vm{i}: shimvmm logged errors: {errors:#?}");
    }
    for (i, m) in metrics.iter().enumerate() {
        let net = net_metrics(m, NET_ID);
        eprintln!("vm{i}: metrics {net}");
        let b = &net["backend"];
        assert_eq!(b["pnic"], "igbvf", "vm{i}: {b:#}");
        assert_eq!(u64_at(&net, "/vmm_copied_bytes"), 0, "vm{i}: the VMM copied payload: {net:#}");
        assert_eq!(u64_at(b, "/rx_copy_fallback/frames"), 0, "vm{i}: RX frames copied: {b:#}");
        assert_eq!(u64_at(b, "/tx_copy_fallback/frames"), 0, "vm{i}: TX frames copied: {b:#}");
        assert_eq!(u64_at(b, "/rx_zero_copy"), u64_at(b, "/rx_packets"), "vm{i}: not every RX frame zero-copy: {b:#}");
        assert_eq!(u64_at(b, "/tx_zero_copy"), u64_at(b, "/tx_packets"), "vm{i}: not every TX frame zero-copy: {b:#}");
        assert!(u64_at(b, "/rx_zero_copy") > 0 && u64_at(b, "/tx_zero_copy") > 0, "vm{i}: no traffic: {b:#}");
        assert_eq!(u64_at(b, "/nic_errors"), 0, "vm{i}: NIC errors: {b:#}");
    }
    drop(images);
}
