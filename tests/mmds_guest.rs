//! MMDS with a real Linux guest, booted as an orchestrator does (a
//! Firecracker config file with `mmds-config` V2, the document from
//! `--metadata`, the API socket for a PATCH while it runs):
//!
//! - the Alpine guest routes 169.254.169.254 to eth0, gets a session token
//!   with `curl -X PUT /latest/api/token`, and reads a nested key with
//!   busybox `wget --header X-metadata-token:` (text), an object's keys, and
//!   the same object as JSON (`Accept: application/json`);
//! - V1-style requests (no token) and a forged token are refused with 401;
//! - `PATCH /mmds` on the running VM changes what the guest reads;
//! - a raw capture on the host side of the interface (the tap; the peer's
//!   igb for the shim) sees no frame for the MMDS address: it never reaches
//!   the wire;
//! - the net metrics count the intercepted and injected frames, the token
//!   and the refusals.
//!
//! `mmds_v2_over_tap` runs it on a tap, `mmds_v2_over_shim` on the
//! zero-copy shim (the testbed's igb through VFIO).
//!
//! Build on the host: `cargo build --release -p shimvmm && cargo test --release
//! -p shimvmm-tests --test mmds_guest --no-run`, then in the testbed
//! `tools/devtool _guest-job target/release/deps/mmds_guest-<hash> <test name>`.
//! Elsewhere it prints a loud SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use net_util::*;
use serde_json::{json, Value};
use shimvmm_tests::{one_vm_at_a_time, require_guest_env, test_image, GuestProcess, PowerAction};

const NET_ID: &str = "net0";
const MMDS_IP: [u8; 4] = [169, 254, 169, 254];
const GUEST_TIMEOUT: Duration = Duration::from_secs(900);

/// The guest side: network up, route to MMDS, then the requests; each
/// answer is a marker.
fn script(guest_cidr: &str) -> String {
    format!(
        r#"
M=http://169.254.169.254
wait_for() {{ n=$1; shift; while [ "$n" -gt 0 ]; do "$@" && return 0; sleep 1; n=$((n - 1)); done; return 1; }}
has_eth0() {{ [ -e /sys/class/net/eth0 ]; }}
has_carrier() {{ [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]; }}
modprobe virtio_net 2>/dev/null
wait_for 30 has_eth0
ip addr add {guest_cidr} dev eth0
ip link set eth0 up
wait_for 30 has_carrier
marker eth0-up $?
ip route add 169.254.169.254 dev eth0
marker route-rc $?
TOKEN=$(curl -s -m 30 -X PUT -H 'X-metadata-token-ttl-seconds: 300' $M/latest/api/token)
marker token-rc $?
marker token-len "${{#TOKEN}}"
marker neigh "$(ip neigh show 169.254.169.254)"
marker eth0-stats "rx $(cat /sys/class/net/eth0/statistics/rx_packets) tx $(cat /sys/class/net/eth0/statistics/tx_packets) drop $(cat /sys/class/net/eth0/statistics/rx_dropped)"
marker zone "$(wget -q -T 30 -O - --header "X-metadata-token: $TOKEN" $M/latest/meta-data/placement/availability-zone)"
marker keys "$(wget -q -T 30 -O - --header "X-metadata-token: $TOKEN" $M/latest/meta-data/ | tr '\n' ',')"
marker json "$(curl -s -m 30 -H "X-metadata-token: $TOKEN" -H 'Accept: application/json' $M/latest/meta-data/placement)"
marker v1-code "$(curl -s -m 30 -o /dev/null -w '%{{http_code}}' $M/latest/meta-data/placement/availability-zone)"
marker v1-body "$(curl -s -m 30 $M/latest/meta-data/placement/availability-zone)"
wget -q -T 30 -O /dev/null $M/latest/meta-data/ 2>/dev/null
marker v1-wget-rc $?
marker forged-code "$(curl -s -m 30 -o /dev/null -w '%{{http_code}}' -H 'X-metadata-token: forged' $M/latest/meta-data/)"
marker missing-code "$(curl -s -m 30 -o /dev/null -w '%{{http_code}}' -H "X-metadata-token: $TOKEN" $M/latest/no-such-key)"
zone_is() {{ [ "$(curl -s -m 10 -H "X-metadata-token: $TOKEN" $M/latest/meta-data/placement/availability-zone)" = "$1" ]; }}
wait_for 300 zone_is patched-1b
marker patched $?
marker done 1
"#
    )
}

/// The document `--metadata` loads.
fn document() -> Value {
    json!({"latest": {"meta-data": {
        "instance-id": "i-0123456789",
        "local-hostname": "mmds-guest",
        "placement": {"availability-zone": "local-1a", "region": "local-1"}
    }}})
}

/// Frames for the MMDS address (ARP about it, IPv4 to it) seen on `ifname`
/// (in netns `ns`, or the test's own), counted until `stop`.
fn spawn_mmds_capture(
    ns: Option<String>,
    ifname: String,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicU64>,
) -> JoinHandle<()> {
    spawn_capture(ns, ifname, stop, move |f| {
        if f.len() < 42 {
            return;
        }
        let arp_for_mmds = f[12..14] == [0x08, 0x06] && f[38..42] == MMDS_IP;
        let ip_to_mmds = f[12..14] == [0x08, 0x00] && f[30..34] == MMDS_IP;
        if arp_for_mmds || ip_to_mmds {
            seen.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// A persistent tap (no address: the guest talks only to MMDS), deleted on drop.
struct Tap(String);

impl Tap {
    fn create() -> Tap {
        let name = format!("mmtap{}", std::process::id() % 100_000);
        run(&["ip", "tuntap", "add", "dev", &name, "mode", "tap"]);
        let tap = Tap(name);
        run(&["ip", "link", "set", &tap.0, "up"]);
        tap
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

/// Boots the guest with `iface` (a `network-interfaces` entry) and MMDS V2
/// on it, captures on `capture` (netns, interface), and checks everything
/// the module documentation lists.
fn mmds_v2(label: &str, guest_cidr: &str, iface: Value, capture: (Option<String>, String)) {
    let _vm = one_vm_at_a_time();
    let image = test_image(&script(guest_cidr), PowerAction::Reboot);
    let art = shimvmm_tests::artifacts();
    let cfg = json!({
        "boot-source": {"kernel_image_path": art.kernel, "initrd_path": art.initrd,
            "boot_args": shimvmm_tests::alpine_test_cmdline()},
        "machine-config": {"vcpu_count": 2, "mem_size_mib": 512},
        "drives": [{"drive_id": "rootfs", "path_on_host": image.path(), "is_root_device": true, "is_read_only": false}],
        "network-interfaces": [iface],
        "mmds-config": {"version": "V2", "network_interfaces": [NET_ID]},
    });
    let config = image.path().with_extension("vm.json");
    std::fs::write(&config, cfg.to_string()).unwrap();
    let metadata = image.path().with_extension("metadata.json");
    std::fs::write(&metadata, document().to_string()).unwrap();
    let metrics = image.path().with_extension("metrics.json");
    let sock = image.path().with_extension("sock");
    let _ = std::fs::remove_file(&sock);

    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicU64::new(0));
    let cap = spawn_mmds_capture(capture.0, capture.1, stop.clone(), seen.clone());

    let mut cmd = Command::new(shimvmm_tests::shimvmm_bin());
    cmd.arg("--api-sock").arg(&sock).arg("--config-file").arg(&config).arg("--metrics-path").arg(&metrics);
    cmd.arg("--metadata").arg(&metadata).args(["--level", "Info"]);
    let mut vm = GuestProcess::spawn("shimvmm", cmd).expect("spawn shimvmm");
    let marker = |name: &str| {
        vm.wait_for_marker(name, GUEST_TIMEOUT)
            .unwrap_or_else(|e| panic!("no marker {name}: {e}\n{}", vm.tail(40)))
            .value
    };

    assert_eq!(marker("eth0-up"), "0", "{}", vm.tail(40));
    assert_eq!(marker("route-rc"), "0");
    let token_rc = marker("token-rc");
    // What both sides saw of the first exchange (printed for every run).
    let (neigh, stats) = (marker("neigh"), marker("eth0-stats"));
    let (_, live) = shimvmm_tests::api_request(&sock, "GET", "/metrics", None);
    eprintln!("{label}: after the token request: guest neighbour {neigh:?}, eth0 {stats:?}; metrics {live}");
    assert_eq!(token_rc, "0", "{}", vm.tail(40));
    assert_eq!(marker("token-len"), "64", "no token: {}", vm.tail(40));
    assert_eq!(marker("zone"), "local-1a", "nested key with the token");
    // The keys one a line, the last without a newline (as Firecracker).
    assert_eq!(marker("keys"), "instance-id,local-hostname,placement/", "keys of an object");
    let placement: Value = serde_json::from_str(&marker("json")).expect("JSON with Accept: application/json");
    assert_eq!(placement, json!({"availability-zone": "local-1a", "region": "local-1"}));
    assert_eq!(marker("v1-code"), "401", "a V1 request (no token) under V2");
    let v1_body = marker("v1-body");
    assert!(v1_body.starts_with("No MMDS token provided."), "{v1_body}");
    assert_ne!(marker("v1-wget-rc"), "0", "busybox wget without a token must fail");
    assert_eq!(marker("forged-code"), "401", "a forged token");
    assert_eq!(marker("missing-code"), "404");

    // The running VM's document changes under the guest.
    let (code, body) = shimvmm_tests::api_request(
        &sock,
        "PATCH",
        "/mmds",
        Some(json!({"latest": {"meta-data": {"placement": {"availability-zone": "patched-1b"}}}})),
    );
    assert_eq!(code, 204, "{body}");
    let (code, body) = shimvmm_tests::api_request(&sock, "GET", "/mmds", None);
    assert_eq!(code, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["latest"]["meta-data"]["placement"]["region"], "local-1");
    assert_eq!(marker("patched"), "0", "the guest never read the patched value");
    marker("done");

    let guest_exit = vm.wait_for_guest_exit(GUEST_TIMEOUT);
    let status = vm.exit_status(Duration::from_secs(120));
    let tail = vm.tail(40);
    stop.store(true, Ordering::Relaxed);
    cap.join().expect("capture thread");
    assert_eq!(guest_exit.as_ref().ok(), Some(&0), "guest script did not finish cleanly: {guest_exit:?}\n{tail}");
    assert!(status.as_ref().is_ok_and(|s| s.success()), "shimvmm exit: {status:?}\n{tail}");

    let net = net_metrics(&metrics, NET_ID);
    eprintln!("{label}: metrics {net}");
    let on_wire = seen.load(Ordering::Relaxed);
    assert_eq!(on_wire, 0, "{on_wire} frames for the MMDS address reached the wire");
    assert!(u64_at(&net, "/mmds_frames_intercepted") >= 10, "{net:#}");
    assert!(u64_at(&net, "/mmds_frames_injected") >= 10, "{net:#}");
    assert!(u64_at(&net, "/mmds_copied_bytes") > 0, "{net:#}");
    assert_eq!(u64_at(&net, "/mmds/tokens_issued"), 1, "{net:#}");
    // Without a valid token: v1-code, v1-body, v1-wget, forged.
    assert!(u64_at(&net, "/mmds/requests_unauthorized") >= 4, "{net:#}");
    // With one: zone, keys, json, and the patched zone (at least one read).
    assert!(u64_at(&net, "/mmds/requests_served") >= 4, "{net:#}");
}

#[test]
fn mmds_v2_over_tap() {
    if !require_guest_env("mmds_v2_over_tap") {
        return;
    }
    let tap = Tap::create();
    let iface = json!({"iface_id": NET_ID, "host_dev_name": tap.0});
    mmds_v2("tap", "192.0.2.130/25", iface, (None, tap.0.clone()));
}

#[test]
fn mmds_v2_over_shim() {
    if !require_guest_env("mmds_v2_over_shim") {
        return;
    }
    let env = |n: &str| std::env::var(n).unwrap_or_else(|_| panic!("{n} is not set: run this test in tools/testbed"));
    let (pnic, ns, peer_if) = (env("SHIMVMM_PNIC"), env("SHIMVMM_PEER_NS"), env("SHIMVMM_PEER_IF"));
    let iface = json!({"iface_id": NET_ID, "pnic_bdf": pnic, "guest_mac": "06:00:c0:00:02:0a"});
    mmds_v2("shim", "192.0.2.10/24", iface, (Some(ns), peer_if));
}
