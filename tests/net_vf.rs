//! Several microVMs on one NIC, each on its own SR-IOV VF: the testbed's
//! first igb stays with Linux's igb in L1 as the PF, which creates VFs with
//! fixed MACs (spoof checking on) bound to vfio-pci (`SHIMVMM_VFS`, from an
//! L1 started with `SHIMVMM_TESTBED_VFS=3`, as tools/devtool starts net_vf's:
//! that L1 has no RAM above 4 GiB, so its VF BARs lie below 4 GiB, the only
//! place QEMU's 82576 decodes them; docs/vfio-nic.md section 8). Each guest
//! runs `--net vfio=<its VF>` with no MAC of its own.
//!
//! - `three_guests_on_vfs_...`: three Alpine guests at once; each comes up
//!   with its VF's PF-assigned MAC, pings the peer (192.0.2.1 in netns
//!   `peer`, the second igb) and is pinged by it, pings the two other guests
//!   (VM to VM, switched inside the NIC), then all three move a payload to
//!   and from the peer at the same time, sha256-checked on both ends. Guest 0
//!   then sends frames with a foreign source MAC and with a VLAN tag (and
//!   ordinary ones) while the peer and the two other guests capture: only
//!   the ordinary frames arrive, the others are counted as dropped in guest
//!   0's metrics. Every frame is zero-copy in each VMM's metrics (the 14-byte
//!   checked TX header copy aside). Prints RSS minus guest RAM of each VMM
//!   with one and with three VMs running.
//! - `a_killed_vmm_...`: three guests; two move a payload to and from the
//!   peer while the third resets its virtio-net device (driver unbind/bind:
//!   status 0; its shimvmm logs the igbvf queues stopped, and no error),
//!   pings again and is then killed with SIGKILL; the two finish their
//!   transfers intact, and a new shimvmm on the freed VF comes up, pings the
//!   peer and the two others.
//! - `bench_vfs_against_taps` (ignored; `tools/bench vfs` runs it): 1 and 3
//!   guests on VFs against 1 and 3 on taps (a bridge in L1), the same
//!   transfers, each VMM's CPU time per GiB; `VFBENCH {json}` lines for
//!   benches/report.py's section 6 of docs/benchmarks.md.
//!
//! Build on the host: `cargo build --release -p shimvmm && cargo test --release
//! -p shimvmm-tests --test net_vf --no-run`, then
//! `SHIMVMM_TESTBED_VFS=3 tools/testbed run -- tools/devtool _guest-job target/release/deps/net_vf-<hash> <test>`.
//! `SHIMVMM_VF_PAYLOAD_MIB` sets the payload size (default 64). Elsewhere
//! the tests print a loud SKIPPED line (fail with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use net_util::*;
use shimvmm_tests::{
    one_vm_at_a_time, require_guest_env, test_image, GuestProcess, HarnessError, PowerAction, TempImage,
};

/// Boot of up to three guests at once under nested TCG, pings, transfers.
const GUEST_TIMEOUT: Duration = Duration::from_secs(1500);
const NET_ID: &str = "net0";
/// Guest RAM of each VM, MiB (three share L1's two vCPUs and 6 GiB).
const GUEST_MEM_MIB: u64 = 256;
/// Where the raw-frame helper lands in each guest image.
const HELPER: &str = "/rawsend";
/// Frames of each kind guest 0 sends in the isolation step.
const FRAMES: u64 = 5;
/// The peer's TCP port for guest i's upload: SINK_BASE + i.
const SINK_BASE: u16 = SINK_PORT + 10;

/// Guest i's address (i from 0).
fn guest_ip(i: usize) -> String {
    format!("192.0.2.{}", 20 + i)
}

/// The MAC tools/testbed.d/l1-vfs.sh has the PF assign to VF k.
fn vf_mac(k: usize) -> String {
    format!("52:54:00:c0:03:{:02x}", k + 1)
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run this test in tools/testbed"))
}

fn payload_len() -> usize {
    let mib: usize = std::env::var("SHIMVMM_VF_PAYLOAD_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(64);
    mib << 20
}

/// The testbed's VFs: `SHIMVMM_VFS` from an L1 started with
/// `SHIMVMM_TESTBED_VFS`, or else (an L1 with the PF on vfio-pci) made here
/// with the script the testbed uses, which hands the PF to Linux's igb and
/// refuses VF BARs above 4 GiB (an L1 with RAM above 4 GiB). Each guest test
/// runs in a fresh L1, so the PF is not given back.
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
    let vfs: Vec<String> = String::from_utf8_lossy(&out.stdout).split_whitespace().skip(1).map(String::from).collect();
    // Later calls in this process (the next test) find them here.
    std::env::set_var("SHIMVMM_VFS", vfs.join(" "));
    vfs
}

/// Shell helpers every guest script starts with.
fn prelude(me: usize, peer_ip: &str) -> String {
    prelude_at(&format!("{}/24", guest_ip(me)), peer_ip)
}

/// [`prelude`] for a guest at `cidr`.
fn prelude_at(cidr: &str, peer_ip: &str) -> String {
    format!(
        r#"
PEER={peer_ip}
CIDR={cidr}
elapsed() {{ awk -v a="$1" -v b="$2" 'BEGIN {{ printf "%.2f", b - a }}'; }}
wait_for() {{ n=$1; shift; while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 1; n=$((n - 1)); done; return 1; }}
gate() {{ wait_for 1500 sh -c "timeout 10 wget -q -O - http://$PEER:{http}/gate/$1 2>/dev/null | grep -q go"; }}
has_eth0() {{ [ -e /sys/class/net/eth0 ]; }}
has_carrier() {{ [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]; }}
ping_ok() {{ ping -c 1 -W 2 "$1" >/dev/null 2>&1; }}
eth0_up() {{
    wait_for 30 has_eth0 || return 1
    ip addr flush dev eth0
    ip addr add "$CIDR" dev eth0 || return 1
    ip link set eth0 up || return 1
    wait_for 30 has_carrier
}}
ping_marks() {{ # ping_marks NAME ADDRESS: wait for a first reply, then 5 pings
    wait_for 60 ping_ok "$2"
    out=$(ping -c 5 -W 3 "$2" 2>&1)
    marker "$1-rc" $?
    marker "$1-summary" "$(echo "$out" | grep 'packets transmitted')"
}}
modprobe virtio_net 2>/dev/null
eth0_up
marker eth0-up $?
marker mac "$(cat /sys/class/net/eth0/address)"
ping_marks ping-peer "$PEER"
"#,
        http = HTTP_PORT,
    )
}

/// Ping each of `others` (guest numbers) by address.
fn ping_others(others: &[usize]) -> String {
    others.iter().map(|j| format!("ping_marks ping-vm{j} {}\n", guest_ip(*j))).collect()
}

/// Upload /payload to the peer's sink `port`, then download the peer's
/// payload over HTTP and hash it.
fn transfer(port: u16) -> String {
    transfer_tagged(port, "")
}

/// [`transfer`] with its markers named `{tag}payload-sha` and so on (a guest
/// that transfers more than once).
fn transfer_tagged(port: u16, tag: &str) -> String {
    format!(
        r#"
marker {tag}payload-sha "$(sha256sum {payload} | cut -d' ' -f1)"
t0=$(guest_uptime)
timeout 1500 nc "$PEER" {port} < {payload}
marker {tag}tx-rc $?
t1=$(guest_uptime)
marker {tag}tx-secs "$(elapsed "$t0" "$t1")"
t0=$(guest_uptime)
sha=$(timeout 1500 wget -q -O - "http://$PEER:{http}/payload" | sha256sum | cut -d' ' -f1)
t1=$(guest_uptime)
marker {tag}rx-sha "$sha"
marker {tag}rx-secs "$(elapsed "$t0" "$t1")"
"#,
        payload = GUEST_PAYLOAD,
        http = HTTP_PORT,
    )
}

const EPILOGUE: &str = r#"
marker kernel-complaints "$(dmesg | grep -ciE 'call trace|timed out|virtio_net.*(error|bug)')"
marker done 1
"#;

/// shimvmm for one small guest (1 vCPU, [`GUEST_MEM_MIB`]: three of them
/// share L1's two vCPUs) with the NIC `net` (`vfio=<VF>` with no MAC
/// configured: the VF's is taken; or the bench's `tap=...`).
fn command(image: &Path, metrics: &Path, net: &str) -> Command {
    let art = shimvmm_tests::artifacts();
    let mut cmd = Command::new(shimvmm_tests::shimvmm_bin());
    cmd.arg("--kernel")
        .arg(&art.kernel)
        .arg("--initrd")
        .arg(&art.initrd)
        .arg("--cmdline")
        .arg(shimvmm_tests::alpine_test_cmdline())
        .args(["--mem", &GUEST_MEM_MIB.to_string(), "--vcpus", "1", "--no-api", "--log-level", "info"])
        .arg("--metrics-path")
        .arg(metrics)
        .arg("--disk")
        .arg(format!("path={},root=on", image.display()))
        .arg("--net")
        .arg(format!("{net},id={NET_ID}"));
    cmd
}

/// One guest: its image, metrics file and shimvmm.
struct Vm {
    name: String,
    vf: String,
    proc: GuestProcess,
    metrics: PathBuf,
    _image: TempImage,
}

impl Vm {
    /// Boot `script` on `vf`; `files` go into the image first.
    fn spawn(name: &str, vf: &str, script: &str, files: &[(&[u8], &str)]) -> Vm {
        Vm::spawn_net(name, vf, &format!("vfio={vf}"), script, files)
    }

    /// Boot `script` with the NIC `net` (a `--net` spec without its id);
    /// `label` names the NIC in messages.
    fn spawn_net(name: &str, label: &str, net: &str, script: &str, files: &[(&[u8], &str)]) -> Vm {
        let image = test_image(script, PowerAction::Reboot);
        for (data, dst) in files {
            put_file_in_image(image.path(), data, dst);
        }
        let metrics = image.path().with_extension("metrics.json");
        let proc = GuestProcess::spawn(name, command(image.path(), &metrics, net))
            .unwrap_or_else(|e| panic!("spawn shimvmm on {label}: {e}"));
        Vm { name: name.to_string(), vf: label.to_string(), proc, metrics, _image: image }
    }

    fn marker(&self, name: &str) -> String {
        self.proc
            .wait_for_marker(name, GUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("{}: no marker {name}: {e}\n{}", self.name, self.proc.tail(60)))
            .value
    }

    /// Asserts a `ping_marks` result.
    fn pinged(&self, what: &str) -> String {
        let rc = self.marker(&format!("ping-{what}-rc"));
        let summary = self.marker(&format!("ping-{what}-summary"));
        assert_eq!(rc, "0", "{}: ping {what} failed: {summary}\n{}", self.name, self.proc.tail(60));
        summary
    }

    /// eth0 up with a PF-assigned MAC, the peer pinged, and the peer's ping
    /// of the guest answered.
    fn check_up(&self, ns: &str, ip: &str) -> String {
        assert_eq!(self.marker("eth0-up"), "0", "{}: eth0 did not come up\n{}", self.name, self.proc.tail(60));
        let mac = self.marker("mac");
        assert!((0..7).any(|k| vf_mac(k) == mac), "{}: MAC {mac} is not a PF-assigned VF MAC", self.name);
        let summary = self.pinged("peer");
        eprintln!("{} ({}): MAC {mac}, ping peer: {summary}", self.name, self.vf);
        let (stats, text) = host_ping(Some(ns), ip, 5);
        eprintln!("peer -> {}: {stats:?}", self.name);
        assert!(stats.received > 0, "the peer cannot ping {}:\n{text}", self.name);
        mac
    }

    /// Checks the guest's two transfers (the sink's result `got`, the
    /// guest's hash of what it downloaded); returns (tx, rx) seconds.
    fn check_transfer(&self, got: std::io::Result<Received>, tx_sha: &str, rx_sha: &str) -> (f64, f64) {
        self.check_transfer_tagged(got, tx_sha, rx_sha, "")
    }

    /// [`Vm::check_transfer`] of a [`transfer_tagged`] with `tag`.
    fn check_transfer_tagged(
        &self,
        got: std::io::Result<Received>,
        tx_sha: &str,
        rx_sha: &str,
        tag: &str,
    ) -> (f64, f64) {
        let len = payload_len() as u64;
        let m = |name: &str| self.marker(&format!("{tag}{name}"));
        assert_eq!(m("payload-sha"), tx_sha, "{}: /payload in the guest is not what was written", self.name);
        assert_eq!(m("tx-rc"), "0", "{}: guest nc failed\n{}", self.name, self.proc.tail(60));
        let got = got.unwrap_or_else(|e| panic!("{}: sink: {e}\n{}", self.name, self.proc.tail(60)));
        assert_eq!(got.bytes, len, "{}: the peer received {} of {len} bytes", self.name, got.bytes);
        assert_eq!(got.sha256, tx_sha, "{}: guest->peer payload corrupted", self.name);
        assert_eq!(m("rx-sha"), rx_sha, "{}: peer->guest payload corrupted\n{}", self.name, self.proc.tail(60));
        let tx: f64 = m("tx-secs").parse().expect("tx-secs");
        let rx: f64 = m("rx-secs").parse().expect("rx-secs");
        eprintln!(
            "{}: guest->peer {} MiB in {tx:.1} s = {:.1} Mbit/s, peer->guest in {rx:.1} s = {:.1} Mbit/s",
            self.name,
            len >> 20,
            mbit_per_s(len, tx),
            mbit_per_s(len, rx)
        );
        (tx, rx)
    }

    /// The guest finished its script, rebooted, and shimvmm exited 0
    /// without an error line.
    fn check_clean_exit(&mut self) {
        assert_eq!(
            self.marker("kernel-complaints"),
            "0",
            "{}: guest kernel complained\n{}",
            self.name,
            self.proc.tail(60)
        );
        self.marker("done");
        let guest_exit = self.proc.wait_for_guest_exit(GUEST_TIMEOUT);
        let status = self.proc.exit_status(Duration::from_secs(120));
        let tail = self.proc.tail(60);
        assert_eq!(guest_exit.as_ref().ok(), Some(&0), "{}: guest script failed: {guest_exit:?}\n{tail}", self.name);
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "{}: shimvmm did not exit 0: {status:?}\n{tail}",
            self.name
        );
        let errors: Vec<String> = self
            .proc
            .lines()
            .into_iter()
            .filter(|l| l.text.contains("Z ERROR]") || l.text.contains("panicked"))
            .map(|l| l.text)
            .collect();
        assert!(errors.is_empty(), "{}: shimvmm logged errors: {errors:#?}", self.name);
    }

    /// The metrics shimvmm wrote at exit: the igbvf backend, every frame
    /// zero-copy (the VMM copies only the 14-byte checked TX headers), no
    /// NIC error, at least `min_bytes` each way.
    fn check_zero_copy(&self, min_bytes: u64) -> serde_json::Value {
        let net = net_metrics(&self.metrics, NET_ID);
        let b = &net["backend"];
        let n = &self.name;
        assert_eq!(b["pnic"], "igbvf", "{n}: {b:#}");
        assert_eq!(
            u64_at(&net, "/vmm_copied_bytes"),
            u64_at(b, "/tx_header_bytes"),
            "{n}: the VMM copied payload: {net:#}"
        );
        assert_eq!(u64_at(b, "/rx_copy_fallback/frames"), 0, "{n}: RX frames copied: {b:#}");
        assert_eq!(u64_at(b, "/tx_copy_fallback/frames"), 0, "{n}: TX frames copied: {b:#}");
        assert_eq!(u64_at(b, "/rx_zero_copy"), u64_at(b, "/rx_packets"), "{n}: not every RX frame zero-copy: {b:#}");
        assert_eq!(u64_at(b, "/tx_zero_copy"), u64_at(b, "/tx_packets"), "{n}: not every TX frame zero-copy: {b:#}");
        assert!(u64_at(b, "/rx_zero_copy") > 0 && u64_at(b, "/tx_zero_copy") > 0, "{n}: no traffic: {b:#}");
        assert!(u64_at(&net, "/tx_bytes") >= min_bytes, "{n}: tx_bytes below {min_bytes}: {net:#}");
        assert!(u64_at(&net, "/rx_bytes") >= min_bytes, "{n}: rx_bytes below {min_bytes}: {net:#}");
        assert_eq!(u64_at(b, "/nic_errors"), 0, "{n}: NIC errors: {b:#}");
        eprintln!(
            "{n}: metrics rx {} frames / tx {} frames, all zero-copy; {} TX header bytes copied",
            u64_at(b, "/rx_packets"),
            u64_at(b, "/tx_packets"),
            u64_at(b, "/tx_header_bytes")
        );
        net
    }
}

/// VmRSS of `pid` minus the guest's RAM (VFIO pins all of it, so all of it
/// is resident), in KiB.
fn rss_overhead_kib(pid: u32) -> i64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let rss: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    rss - (GUEST_MEM_MIB as i64) * 1024
}

/// A sink on the peer for guest `i`'s upload.
fn sink(ns: &str, peer_ip: &str, i: usize) -> TcpListener {
    listen(Some(ns), peer_ip, SINK_BASE + i as u16)
}

#[test]
fn three_guests_on_vfs_ping_each_other_move_data_zero_copy_and_cannot_spoof() {
    if !require_guest_env("three_guests_on_vfs_ping_each_other_move_data_zero_copy_and_cannot_spoof") {
        return;
    }
    let vfs = vfs();
    assert!(vfs.len() >= 3, "three VFs needed, have {vfs:?}");
    let (ns, peer_ip, peer_if) = (env("SHIMVMM_PEER_NS"), env("SHIMVMM_PEER_IP"), env("SHIMVMM_PEER_IF"));
    let _lock = one_vm_at_a_time();
    let len = payload_len();
    let rx_payload = Arc::new(payload(len, 7));
    let rx_sha = sha256_hex(&rx_payload);
    let server = HttpServer::start(listen(Some(&ns), &peer_ip, HTTP_PORT), rx_payload);
    let helper_path = std::env::temp_dir().join(format!("net_vf-rawsend-{}", std::process::id()));
    let helper = build_rawsend(&helper_path);

    let n = 3;
    let mut vms: Vec<Vm> = Vec::new();
    let mut sinks = Vec::new();
    let mut tx_shas = Vec::new();
    let mut rss_one = 0;
    for (i, vf) in vfs.iter().take(n).enumerate() {
        let others: Vec<usize> = (0..n).filter(|j| *j != i).collect();
        let isolation = if i == 0 {
            format!("sleep 8\nfor k in ok spoof vlan; do /tmp/rawsend eth0 $k {FRAMES}; marker send-$k $?; done\n")
        } else {
            "marker seen \"$(/tmp/rawsend eth0 listen 30)\"\n".to_string()
        };
        let script = format!(
            "{}cp {HELPER} /tmp/rawsend && chmod 755 /tmp/rawsend\nmarker helper $?\ngate all-up\n{}gate xfer\n{}gate isolation\n{isolation}gate finish\n{EPILOGUE}",
            prelude(i, &peer_ip),
            ping_others(&others),
            transfer(SINK_BASE + i as u16),
        );
        let tx = payload(len, 100 + i as u64);
        tx_shas.push(sha256_hex(&tx));
        sinks.push(Some(spawn_sink(sink(&ns, &peer_ip, i), len, GUEST_TIMEOUT)));
        let vm = Vm::spawn(&format!("vf{i}"), vf, &script, &[(&tx, GUEST_PAYLOAD), (&helper, HELPER)]);
        if i == 0 {
            // The single-VM figure: vm0 up and idle at its first gate.
            vm.check_up(&ns, &guest_ip(0));
            assert_eq!(vm.marker("helper"), "0");
            if let Err(e) = server.wait_asked("all-up", GUEST_TIMEOUT, &vm.proc) {
                panic!("vf0 never reached gate all-up: {e}");
            }
            rss_one = rss_overhead_kib(vm.proc.pid());
            eprintln!("rss: 1 VM: vf0 RSS - guest RAM = {rss_one} KiB");
        }
        vms.push(vm);
    }
    let _ = std::fs::remove_file(&helper_path);
    let mut macs = Vec::new();
    for (i, vm) in vms.iter().enumerate().skip(1) {
        macs.push(vm.check_up(&ns, &guest_ip(i)));
        assert_eq!(vm.marker("helper"), "0");
    }
    macs.push(vms[0].marker("mac"));
    macs.sort();
    macs.dedup();
    assert_eq!(macs.len(), n, "each VF has its own MAC: {macs:?}");
    let rss_three: Vec<i64> = vms.iter().map(|vm| rss_overhead_kib(vm.proc.pid())).collect();
    eprintln!("rss: 3 VMs: RSS - guest RAM per VMM = {rss_three:?} KiB (1 VM: {rss_one} KiB)");

    server.open_gate("all-up");
    for (i, vm) in vms.iter().enumerate() {
        for j in (0..n).filter(|j| *j != i) {
            let summary = vm.pinged(&format!("vm{j}"));
            eprintln!("vf{i} -> vf{j}: {summary}");
        }
    }

    let t = Instant::now();
    server.open_gate("xfer");
    for (i, vm) in vms.iter().enumerate() {
        let got = sinks[i].take().expect("sink").join().expect("sink thread");
        vm.check_transfer(got, &tx_shas[i], &rx_sha);
    }
    eprintln!("three guests moved {} MiB each way each, all at once, in {:.1} s", len >> 20, t.elapsed().as_secs_f64());
    assert_eq!(server.served.load(Ordering::Relaxed), 3 * len as u64, "the peer did not serve the payload thrice");
    let rss_after: Vec<i64> = vms.iter().map(|vm| rss_overhead_kib(vm.proc.pid())).collect();
    eprintln!("rss: 3 VMs after the transfers: RSS - guest RAM per VMM = {rss_after:?} KiB");

    // Isolation: guest 0 sends ordinary, spoofed and tagged frames; the peer
    // and the two other guests listen.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(BTreeMap::new()));
    let capture = spawn_wire_capture(ns.clone(), peer_if, stop.clone(), seen.clone());
    server.open_gate("isolation");
    for k in ["ok", "spoof", "vlan"] {
        assert_eq!(vms[0].marker(&format!("send-{k}")), "0", "vf0 could not send its {k} frames");
    }
    let guest_seen: Vec<String> = vms.iter().skip(1).map(|vm| vm.marker("seen")).collect();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    capture.join().expect("capture thread");
    let seen = seen.lock().unwrap().clone();
    eprintln!("isolation: the peer saw {seen:?}; the other guests: {guest_seen:?} ({FRAMES} of each kind sent)");
    assert!(seen.get("ok").copied().unwrap_or(0) >= 1, "the peer saw no ordinary frame: the capture proves nothing");
    for kind in ["spoof", "vlan"] {
        assert_eq!(seen.get(kind), None, "{kind} frames reached the peer: {seen:?}");
    }
    for (i, s) in guest_seen.iter().enumerate() {
        assert!(!s.contains(" ok=0 ") && s.contains(" ok="), "vf{}: saw no ordinary frame from vf0: {s}", i + 1);
        assert!(
            s.contains(" spoof=0 ") && s.contains(" vlan=0 "),
            "vf{}: spoofed or tagged frames arrived: {s}",
            i + 1
        );
    }

    server.open_gate("finish");
    for vm in vms.iter_mut() {
        vm.check_clean_exit();
    }
    for vm in &vms {
        vm.check_zero_copy(len as u64);
    }
    let net = net_metrics(&vms[0].metrics, NET_ID);
    let b = &net["backend"];
    for reason in ["spoofed_source", "vlan_tagged"] {
        assert!(u64_at(b, &format!("/drops/{reason}")) >= FRAMES, "vf0: backend drops/{reason} below {FRAMES}: {b:#}");
        assert!(
            u64_at(&net, &format!("/tx_drops/{reason}")) >= FRAMES,
            "vf0: tx_drops/{reason} below {FRAMES}: {net:#}"
        );
    }
    eprintln!(
        "vf0: dropped spoofed_source {}, vlan_tagged {}",
        u64_at(b, "/drops/spoofed_source"),
        u64_at(b, "/drops/vlan_tagged")
    );
}

#[test]
fn a_killed_vmm_leaves_the_others_moving_and_its_vf_works_again() {
    if !require_guest_env("a_killed_vmm_leaves_the_others_moving_and_its_vf_works_again") {
        return;
    }
    let vfs = vfs();
    assert!(vfs.len() >= 3, "three VFs needed, have {vfs:?}");
    let (ns, peer_ip) = (env("SHIMVMM_PEER_NS"), env("SHIMVMM_PEER_IP"));
    let _lock = one_vm_at_a_time();
    let len = payload_len();
    let rx_payload = Arc::new(payload(len, 9));
    let rx_sha = sha256_hex(&rx_payload);
    let server = HttpServer::start(listen(Some(&ns), &peer_ip, HTTP_PORT), rx_payload);

    // vf0 and vf1 move data; vf2 resets its virtio-net device, pings, and
    // keeps pinging until it is killed.
    let mut vms: Vec<Vm> = Vec::new();
    let mut sinks = Vec::new();
    let mut tx_shas = Vec::new();
    for (i, vf) in vfs.iter().take(2).enumerate() {
        let script =
            format!("{}gate xfer\n{}gate finish\n{EPILOGUE}", prelude(i, &peer_ip), transfer(SINK_BASE + i as u16));
        let tx = payload(len, 200 + i as u64);
        tx_shas.push(sha256_hex(&tx));
        sinks.push(Some(spawn_sink(sink(&ns, &peer_ip, i), len, GUEST_TIMEOUT)));
        vms.push(Vm::spawn(&format!("vf{i}"), vf, &script, &[(&tx, GUEST_PAYLOAD)]));
    }
    let victim_script = format!(
        r#"{}gate reset
dev=$(basename "$(readlink /sys/class/net/eth0/device)")
echo "$dev" > /sys/bus/virtio/drivers/virtio_net/unbind
marker unbind-rc $?
sleep 2
echo "$dev" > /sys/bus/virtio/drivers/virtio_net/bind
marker bind-rc $?
eth0_up
marker reset-eth0-up $?
ping_marks ping-reset-peer "$PEER"
marker pinging 1
ping -i 0.2 "$PEER" >/dev/null 2>&1
"#,
        prelude(2, &peer_ip)
    );
    let mut victim = Vm::spawn("vf2", &vfs[2], &victim_script, &[]);
    for (i, vm) in vms.iter().enumerate() {
        vm.check_up(&ns, &guest_ip(i));
    }
    victim.check_up(&ns, &guest_ip(2));

    // The transfers start (each guest hashes its payload, then starts nc
    // at once); meanwhile vf2 resets its device and is killed.
    server.open_gate("xfer");
    for vm in &vms {
        vm.marker("payload-sha");
    }
    let quiesces_before = vf_quiesces(&victim).len();
    server.open_gate("reset");
    assert_eq!(victim.marker("unbind-rc"), "0");
    assert_eq!(victim.marker("bind-rc"), "0");
    assert_eq!(victim.marker("reset-eth0-up"), "0", "vf2: eth0 did not come back after the reset");
    eprintln!("vf2 after its virtio reset: ping peer {}", victim.pinged("reset-peer"));
    // The reset reached the VF path: the shim stopped the VF's queues before
    // the guest's buffers were forgotten (metrics are flushed only at exit,
    // and this VMM is killed, so its log says it), with no error. (The
    // guest's virtio core also resets the device once at boot.)
    let quiesces = vf_quiesces(&victim);
    eprintln!(
        "vf2's igbvf quiesces: {quiesces_before} before its virtio reset, then: {:#?}",
        &quiesces[quiesces_before.min(quiesces.len())..]
    );
    assert!(
        quiesces.len() > quiesces_before,
        "vf2: its virtio reset did not stop the igbvf queues\n{}",
        victim.proc.tail(60)
    );
    let errors = victim.proc.lines().into_iter().filter(|l| l.text.contains("Z ERROR]")).count();
    assert_eq!(errors, 0, "vf2: shimvmm logged errors around the reset\n{}", victim.proc.tail(60));
    victim.marker("pinging");
    std::thread::sleep(Duration::from_secs(3));
    let moving: Vec<bool> = vms.iter().map(|vm| vm.proc.marker("rx-sha").is_none()).collect();
    eprintln!("kill -9 vf2's shimvmm (pid {}); transfers of vf0/vf1 still running: {moving:?}", victim.proc.pid());
    victim.proc.kill();
    assert!(
        moving.iter().all(|m| *m),
        "a transfer ended before vf2's reset and kill: nothing shows traffic moving through them (raise SHIMVMM_VF_PAYLOAD_MIB)"
    );

    // A new shimvmm on the freed VF.
    let script = format!("{}{}gate finish\n{EPILOGUE}", prelude(2, &peer_ip), ping_others(&[0, 1]));
    let mut fresh = Vm::spawn("vf2-new", &vfs[2], &script, &[]);
    let mac = fresh.check_up(&ns, &guest_ip(2));
    assert_eq!(mac, victim.marker("mac"), "the new VMM on the freed VF has another MAC");
    for j in [0, 1] {
        eprintln!("vf2-new -> vf{j}: {}", fresh.pinged(&format!("vm{j}")));
    }

    for (i, vm) in vms.iter().enumerate() {
        let got = sinks[i].take().expect("sink").join().expect("sink thread");
        vm.check_transfer(got, &tx_shas[i], &rx_sha);
    }
    server.open_gate("finish");
    for vm in vms.iter_mut().chain(std::iter::once(&mut fresh)) {
        vm.check_clean_exit();
    }
    for vm in &vms {
        vm.check_zero_copy(len as u64);
    }
    fresh.check_zero_copy(0);
}

/// The line the shim logs when a virtio reset stops its igbvf's queues
/// (src/pnic/src/shim/mod.rs, `quiesce`).
const VF_QUIESCE_LOG: &str = "pNIC igbvf: queues stopped on device reset";

/// The VMM's log lines that say a virtio reset stopped its igbvf's queues.
fn vf_quiesces(vm: &Vm) -> Vec<String> {
    vm.proc.lines().into_iter().filter(|l| l.text.contains(VF_QUIESCE_LOG)).map(|l| l.text).collect()
}

/// The VMM's log lines that say its igbvf recovered from a PF-initiated reset.
fn recoveries_logged(vm: &Vm) -> usize {
    vm.proc.lines().iter().filter(|l| l.text.contains("VF reset by the PF handled")).count()
}

#[test]
fn a_guest_reboot_and_a_pf_reset_leave_the_others_moving_traffic() {
    if !require_guest_env("a_guest_reboot_and_a_pf_reset_leave_the_others_moving_traffic") {
        return;
    }
    let vfs = vfs();
    assert!(vfs.len() >= 3, "three VFs needed, have {vfs:?}");
    let (ns, peer_ip, pf_if) = (env("SHIMVMM_PEER_NS"), env("SHIMVMM_PEER_IP"), env("SHIMVMM_PF_IF"));
    let _lock = one_vm_at_a_time();
    let len = payload_len();
    let rx_payload = Arc::new(payload(len, 11));
    let rx_sha = sha256_hex(&rx_payload);
    let server = HttpServer::start(listen(Some(&ns), &peer_ip, HTTP_PORT), rx_payload);

    // After the PF reset each guest pings the peer and another guest again.
    let after_reset = |others: &[usize]| {
        format!("gate pf-reset\nping_marks ping-after-reset-peer \"$PEER\"\n{}", {
            let mut s = String::new();
            for j in others {
                s.push_str(&format!("ping_marks ping-after-reset-vm{j} {}\n", guest_ip(*j)));
            }
            s
        })
    };
    // vf0 and vf1 move data while vf2 reboots (its shimvmm exits 0).
    let mut vms: Vec<Vm> = Vec::new();
    let mut sinks = Vec::new();
    let mut tx_shas = Vec::new();
    for (i, vf) in vfs.iter().take(2).enumerate() {
        let script = format!(
            "{}gate xfer\n{}{}gate finish\n{EPILOGUE}",
            prelude(i, &peer_ip),
            transfer(SINK_BASE + i as u16),
            after_reset(&[1 - i, 2])
        );
        let tx = payload(len, 300 + i as u64);
        tx_shas.push(sha256_hex(&tx));
        sinks.push(Some(spawn_sink(sink(&ns, &peer_ip, i), len, GUEST_TIMEOUT)));
        vms.push(Vm::spawn(&format!("vf{i}"), vf, &script, &[(&tx, GUEST_PAYLOAD)]));
    }
    let mut victim = Vm::spawn("vf2", &vfs[2], &format!("{}gate reboot\n{EPILOGUE}", prelude(2, &peer_ip)), &[]);
    for (i, vm) in vms.iter().enumerate() {
        vm.check_up(&ns, &guest_ip(i));
    }
    let mac = victim.check_up(&ns, &guest_ip(2));

    // The transfers start; vf2 reboots meanwhile: its guest restarts, so
    // its shimvmm exits (0) and gives the VF back.
    // vf2 reboots once both uploads are under way (each guest hashes its
    // payload, then starts nc at once).
    server.open_gate("xfer");
    for vm in &vms {
        vm.marker("payload-sha");
    }
    std::thread::sleep(Duration::from_secs(5));
    let started: Vec<bool> = vms.iter().map(|vm| vm.proc.marker("tx-rc").is_none()).collect();
    server.open_gate("reboot");
    victim.check_clean_exit();
    let moving: Vec<bool> = vms.iter().map(|vm| vm.proc.marker("rx-sha").is_none()).collect();
    eprintln!("vf2 rebooted (its shimvmm exited 0); vf0/vf1 uploading when the reboot began: {started:?}, transfers still running after it: {moving:?}");
    assert!(
        moving.iter().all(|m| *m),
        "a transfer ended before vf2's reboot did: nothing shows traffic moving through it (raise SHIMVMM_VF_PAYLOAD_MIB)"
    );

    // A new shimvmm on the VF the reboot gave back.
    let script =
        format!("{}{}{}gate finish\n{EPILOGUE}", prelude(2, &peer_ip), ping_others(&[0, 1]), after_reset(&[0]));
    let mut fresh = Vm::spawn("vf2-new", &vfs[2], &script, &[]);
    assert_eq!(fresh.check_up(&ns, &guest_ip(2)), mac, "the new VMM on the freed VF has another MAC");
    for j in [0, 1] {
        eprintln!("vf2-new -> vf{j}: {}", fresh.pinged(&format!("vm{j}")));
    }
    for (i, vm) in vms.iter().enumerate() {
        let got = sinks[i].take().expect("sink").join().expect("sink thread");
        vm.check_transfer(got, &tx_shas[i], &rx_sha);
    }

    // The host admin resets the PF (Linux's igb pings every VF without
    // clear-to-send, turns their RX/TX off and resets the NIC); each VMM's
    // igbvf sees its VF reset and recovers; traffic resumes.
    let mut all: Vec<&mut Vm> = vms.iter_mut().chain(std::iter::once(&mut fresh)).collect();
    let before: Vec<usize> = all.iter().map(|vm| recoveries_logged(vm)).collect();
    let t = Instant::now();
    for state in ["down", "up"] {
        let st = Command::new("ip").args(["link", "set", &pf_if, state]).status().expect("run ip");
        assert!(st.success(), "ip link set {pf_if} {state} failed");
        std::thread::sleep(Duration::from_secs(2));
    }
    server.open_gate("pf-reset");
    for (k, vm) in all.iter().enumerate() {
        let summary = vm.pinged("after-reset-peer");
        let other = if k == 2 { "vm0".to_string() } else { "vm2".to_string() };
        eprintln!(
            "{} after the PF reset ({:.1} s): ping peer {summary}; ping {other} {}",
            vm.name,
            t.elapsed().as_secs_f64(),
            vm.pinged(&format!("after-reset-{other}"))
        );
    }
    let after: Vec<usize> = all.iter().map(|vm| recoveries_logged(vm)).collect();
    eprintln!("igbvf PF-reset recoveries logged per VMM: before {before:?}, after {after:?}");
    for (k, vm) in all.iter().enumerate() {
        assert!(after[k] > before[k], "{}: no PF-reset recovery logged: the PF reset did not reach its VF", vm.name);
    }

    server.open_gate("finish");
    for vm in all.iter_mut() {
        vm.check_clean_exit();
    }
    for vm in &vms {
        vm.check_zero_copy(len as u64);
    }
    fresh.check_zero_copy(0);
}

/// The bench's tap path: L1's end of the bridge the taps hang off (its
/// own /25 inside the testbed's 192.0.2.0/24, as guestnet_peers' taps).
const TAP_HOST_IP: &str = "192.0.2.129";
const TAP_HOST_CIDR: &str = "192.0.2.129/25";
const TAP_BRIDGE: &str = "brvfbench";

/// Guest i's address on the tap path.
fn tap_guest_cidr(i: usize) -> String {
    format!("192.0.2.{}/25", 130 + i)
}

/// The bench's bridge and taps in L1, deleted on drop.
struct TapNet(Vec<String>);

impl TapNet {
    fn create(n: usize) -> TapNet {
        let mut made = TapNet(vec![TAP_BRIDGE.to_string()]);
        run(&["ip", "link", "add", TAP_BRIDGE, "type", "bridge"]);
        run(&["ip", "addr", "add", TAP_HOST_CIDR, "dev", TAP_BRIDGE]);
        run(&["ip", "link", "set", TAP_BRIDGE, "up"]);
        for i in 0..n {
            let tap = format!("vfbt{i}");
            run(&["ip", "tuntap", "add", "dev", &tap, "mode", "tap"]);
            made.0.push(tap.clone());
            run(&["ip", "link", "set", &tap, "master", TAP_BRIDGE]);
            run(&["ip", "link", "set", &tap, "up"]);
        }
        made
    }
}

impl Drop for TapNet {
    fn drop(&mut self) {
        for dev in self.0.iter().rev() {
            let _ = Command::new("ip").args(["link", "del", dev]).status();
        }
    }
}

/// One path of the bench: the peer's HTTP server and where it is.
struct BenchPath<'a> {
    name: &'static str,
    server: &'a HttpServer,
    ns: Option<&'a str>,
    peer_ip: &'a str,
}

/// One round of the bench on `path`: guest 0 boots and moves the payload to
/// and from the peer alone; then guests 1 and 2 boot and all three move it
/// at once. Prints a `VFBENCH {json}` line per guest and phase.
fn bench_round(path: &BenchPath, vfs: &[String], run_no: usize, rx_sha: &str) {
    let len = payload_len();
    let gate = |what: &str| format!("r{run_no}-{}-{what}", path.name);
    // Ports of their own per round: a lost round's sinks may still listen.
    let port = |phase: usize, i: usize| SINK_BASE + 20 + (20 * run_no + 10 * phase + i) as u16;
    let mut vms: Vec<Vm> = Vec::new();
    let mut tx_shas = Vec::new();
    for (i, vf) in vfs.iter().take(3).enumerate() {
        let phase1 =
            if i == 0 { format!("gate {}\n{}", gate("x1"), transfer_tagged(port(0, 0), "a-")) } else { String::new() };
        let (cidr, net) = match path.name {
            "vf" => (format!("{}/24", guest_ip(i)), format!("vfio={vf}")),
            _ => (tap_guest_cidr(i), format!("tap=vfbt{i},mac=52:54:00:c0:04:{:02x}", i + 1)),
        };
        let script = format!(
            "{}{phase1}gate {}\n{}gate {}\n{EPILOGUE}",
            prelude_at(&cidr, path.peer_ip),
            gate("x3"),
            transfer_tagged(port(1, i), "b-"),
            gate("finish")
        );
        let tx = payload(len, 500 + i as u64);
        tx_shas.push(sha256_hex(&tx));
        vms.push(Vm::spawn_net(&format!("{}{i}-r{run_no}", path.name), &net, &net, &script, &[(&tx, GUEST_PAYLOAD)]));
        if i == 0 {
            // The one-VM phase, before the others boot.
            phase(path, &vms, &tx_shas, rx_sha, &gate("x1"), "a-", &|i| port(0, i), run_no);
        }
    }
    phase(path, &vms, &tx_shas, rx_sha, &gate("x3"), "b-", &|i| port(1, i), run_no);
    path.server.open_gate(&gate("finish"));
    for vm in vms.iter_mut() {
        vm.check_clean_exit();
    }
    if path.name == "vf" {
        for vm in &vms {
            vm.check_zero_copy(len as u64);
        }
    }
}

/// One timed phase: every guest in `vms` moves the payload to and from the
/// peer at once (markers tagged `tag`), sha-checked; each VMM's CPU time is
/// read from /proc/PID/stat around it.
#[allow(clippy::too_many_arguments)]
fn phase(
    path: &BenchPath,
    vms: &[Vm],
    tx_shas: &[String],
    rx_sha: &str,
    gate: &str,
    tag: &str,
    port: &dyn Fn(usize) -> u16,
    run_no: usize,
) {
    let len = payload_len();
    let sinks: Vec<_> =
        (0..vms.len()).map(|i| spawn_sink(listen(path.ns, path.peer_ip, port(i)), len, GUEST_TIMEOUT)).collect();
    for vm in vms {
        assert_eq!(vm.marker("eth0-up"), "0", "{}: eth0 did not come up\n{}", vm.name, vm.proc.tail(60));
        vm.pinged("peer");
    }
    // Idle at the gate: RSS now (VFIO pins the VF guests' RAM, so RSS minus
    // guest RAM is their overhead; a tap guest's RAM is resident only as touched).
    let rss: Vec<i64> = vms.iter().map(|vm| rss_overhead_kib(vm.proc.pid())).collect();
    let before: Vec<(f64, f64)> = vms.iter().map(|vm| cpu_times(vm.proc.pid())).collect();
    let t = Instant::now();
    path.server.open_gate(gate);
    // Each VMM's CPU is read as soon as its guest's last marker shows.
    let mut ends: Vec<Option<((f64, f64), f64)>> = vec![None; vms.len()];
    while ends.iter().any(Option::is_none) {
        for (vm, end) in vms.iter().zip(ends.iter_mut()).filter(|(_, e)| e.is_none()) {
            // A short wait, not a peek: a guest that died or stalled ends the
            // phase now, not after GUEST_TIMEOUT.
            match vm.proc.wait_for_marker(&format!("{tag}rx-secs"), Duration::from_millis(50)) {
                Ok(_) => *end = Some((cpu_times(vm.proc.pid()), t.elapsed().as_secs_f64())),
                Err(HarnessError::Timeout { .. }) => {}
                Err(e) => panic!("{}: no {tag}rx-secs marker: {e}", vm.name),
            }
            assert!(t.elapsed() < GUEST_TIMEOUT, "{}: no {tag}rx-secs marker\n{}", vm.name, vm.proc.tail(60));
        }
    }
    for (i, (vm, sink)) in vms.iter().zip(sinks).enumerate() {
        let got = sink.join().expect("sink thread");
        let (tx, rx) = vm.check_transfer_tagged(got, &tx_shas[i], rx_sha, tag);
        let ((cpu1, guest1), wall) = ends[i].expect("read above");
        let (cpu0, guest0) = before[i];
        let gib = 2.0 * len as f64 / (1u64 << 30) as f64;
        let rec = serde_json::json!({
            "bench": "vfs", "run": run_no, "path": path.name, "vms": vms.len(), "vm": i,
            "bytes_each_way": len, "tx_mbit_s": mbit_per_s(len as u64, tx), "rx_mbit_s": mbit_per_s(len as u64, rx),
            "tx_secs": tx, "rx_secs": rx, "wall_secs": wall,
            "cpu_secs": cpu1 - cpu0, "vmm_own_cpu_secs": (cpu1 - cpu0) - (guest1 - guest0),
            "cpu_secs_per_gib": (cpu1 - cpu0) / gib,
            "vmm_own_cpu_secs_per_gib": ((cpu1 - cpu0) - (guest1 - guest0)) / gib,
            "rss_minus_guest_ram_kib": rss[i],
        });
        println!("VFBENCH {rec}");
    }
}

/// `tools/bench vfs`: 1 and 3 VMs on VFs against 1 and 3 VMs on taps in one
/// L1, side by side (`SHIMVMM_VF_BENCH_RUNS` rounds, 3 by default, the
/// paths' order alternating). Each VF guest's peer is the testbed's second
/// igb in netns `peer` (across QEMU's emulated wire); each tap guest's is
/// L1 itself, on a bridge of the three taps. The guests are the net_vf
/// guests (1 vCPU, 256 MiB); every transfer is sha256-checked on both ends.
#[test]
#[ignore = "a benchmark: tools/bench vfs runs it in the testbed"]
fn bench_vfs_against_taps() {
    if !require_guest_env("bench_vfs_against_taps") {
        return;
    }
    let vfs = vfs();
    assert!(vfs.len() >= 3, "three VFs needed, have {vfs:?}");
    let (ns, peer_ip) = (env("SHIMVMM_PEER_NS"), env("SHIMVMM_PEER_IP"));
    let runs: usize = std::env::var("SHIMVMM_VF_BENCH_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    // Round numbers go on from an earlier L1's (tools/bench starts another L1 after one dies).
    let first: usize = std::env::var("SHIMVMM_VF_BENCH_FIRST").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
    let _lock = one_vm_at_a_time();
    let rx_payload = Arc::new(payload(payload_len(), 15));
    let rx_sha = sha256_hex(&rx_payload);
    let _taps = TapNet::create(3);
    let vf_server = HttpServer::start(listen(Some(&ns), &peer_ip, HTTP_PORT), rx_payload.clone());
    let tap_server = HttpServer::start(listen(None, TAP_HOST_IP, HTTP_PORT), rx_payload);
    let vf = BenchPath { name: "vf", server: &vf_server, ns: Some(&ns), peer_ip: &peer_ip };
    let tap = BenchPath { name: "tap", server: &tap_server, ns: None, peer_ip: TAP_HOST_IP };
    for r in first..first + runs {
        let order = if r % 2 == 0 { [&vf, &tap] } else { [&tap, &vf] };
        for path in order {
            eprintln!("bench: round {r}, {}", path.name);
            // A lost round (a guest's triple fault, a stall, or a failed
            // check) is recorded with its reason and the bench goes on: the
            // report counts and names every loss, it never drops one.
            let lost = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| bench_round(path, &vfs, r, &rx_sha)));
            if let Err(e) = lost {
                let why = e
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| e.downcast_ref::<&str>().copied())
                    .unwrap_or("(no message)");
                let fault = guest_fault_kind(why);
                let rec = serde_json::json!({
                    "bench": "vfs", "run": r, "path": path.name, "testbed_fault": fault,
                    "reason": why.lines().next().unwrap_or(""),
                });
                println!("VFBENCH-LOST {rec}");
            }
        }
    }
}

/// The testbed fault a lost round's panic message shows, by the marks
/// devtool's `testbed_fault` reads in a test's output: "triple fault" or
/// "stall"; None when the round failed a check of ours.
fn guest_fault_kind(msg: &str) -> Option<&'static str> {
    if msg.contains("KVM_EXIT_SHUTDOWN: the guest triple-faulted") {
        Some("triple fault")
    } else if msg.contains("the guest stopped while we waited") || msg.contains("GuestStalled {") {
        Some("stall")
    } else {
        None
    }
}
