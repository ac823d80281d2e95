//! Guest network, side by side: shimvmm's tap backend and Firecracker
//! v1.12.1's tap path (`tools/firecracker`), one after the other in one L1,
//! each booting the Alpine guest (ELF vmlinux, initrd, `quiet` command line,
//! 2 vCPUs, 512 MiB) with one virtio-net on its own tap and running the very
//! same guest script as `tests/net_tap.rs` (`net_util::guest_script`): ping
//! both ways, 64 MiB guest->host and 64 MiB host->guest, sha256 checked on both
//! ends. Each VMM's CPU time (utime+stime of /proc/PID/stat) over the ping and
//! the two transfers is printed per GiB moved.
//!
//! Run by `tools/bench guestnet` (in the testbed). Elsewhere it prints a loud
//! SKIPPED line (fails with SHIMVMM_REQUIRE_GUEST=1).

mod net_util;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use net_util::*;
use shimvmm_tests::{
    alpine_test_cmdline, alpine_vmlinux, artifacts, firecracker_bin, one_vm_at_a_time, require_guest_env, shimvmm_bin,
    test_image, GuestProcess, PowerAction,
};

const HOST_IP: &str = "192.0.2.129";
const HOST_CIDR: &str = "192.0.2.129/25";
const GUEST_IP: &str = "192.0.2.130";
const GUEST_CIDR: &str = "192.0.2.130/25";
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

/// utime + stime of PID in seconds (all threads), from /proc/PID/stat.
fn cpu_secs(pid: u32) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let f: Vec<&str> = text.rsplit_once(')').map(|(_, r)| r.split_whitespace().collect()).unwrap_or_default();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / hz
}

fn command(vmm: &str, image: &Path, tap: &str, dir: &Path) -> Command {
    let art = artifacts();
    let vmlinux = alpine_vmlinux();
    let cmdline = alpine_test_cmdline();
    match vmm {
        "shimvmm-tap" => {
            let mut c = Command::new(shimvmm_bin());
            c.arg("--kernel").arg(&vmlinux).arg("--initrd").arg(&art.initrd).arg("--cmdline").arg(&cmdline);
            c.args(["--mem", "512", "--vcpus", "2", "--no-api"]);
            c.arg("--disk").arg(format!("path={}", image.display()));
            c.arg("--net").arg(format!("tap={tap},id=net0"));
            c
        }
        "firecracker-tap" => {
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

fn one(vmm: &str, round: usize) {
    let script = guest_script(&GuestNet { peer_ip: HOST_IP, guest_cidr: GUEST_CIDR, reset_step: false });
    let image = test_image(&script, PowerAction::Poweroff);
    let tx_payload = payload(PAYLOAD_LEN, 0x7a9_0101);
    let tx_sha = sha256_hex(&tx_payload);
    put_file_in_image(image.path(), &tx_payload, GUEST_PAYLOAD);
    drop(tx_payload);
    let rx_payload = Arc::new(payload(PAYLOAD_LEN, 0x7a9_0102));
    let rx_sha = sha256_hex(&rx_payload);

    let tap = Tap::create(&round.to_string());
    let sink = spawn_sink(listen(None, HOST_IP, SINK_PORT), PAYLOAD_LEN, GUEST_TIMEOUT);
    let server = HttpServer::start(listen(None, HOST_IP, HTTP_PORT), rx_payload);
    let dir = image.path().parent().expect("image dir").to_path_buf();
    let mut vm = GuestProcess::spawn(vmm, command(vmm, image.path(), &tap.0, &dir)).expect("spawn the VMM");
    let pid = vm.pid();
    vm.wait_for_marker("net-up", GUEST_TIMEOUT).unwrap_or_else(|e| panic!("{vmm}: {e}"));
    let cpu0 = cpu_secs(pid);
    let report = exercise(&vm, vmm, None, GUEST_IP, &server, sink, &tx_sha, &rx_sha, GUEST_TIMEOUT);
    let cpu1 = cpu_secs(pid);
    let gib = 2.0 * PAYLOAD_LEN as f64 / f64::from(1u32 << 30);
    eprintln!(
        "{vmm}: VMM CPU {:.2} s over the pings and both transfers = {:.1} CPU s per GiB moved (round {round})",
        cpu1 - cpu0,
        (cpu1 - cpu0) / gib
    );
    println!(
        "{}",
        serde_json::json!({"bench": "guestnet", "vmm": vmm, "round": round,
            "guest_to_host_mbit_s": mbit_per_s(PAYLOAD_LEN as u64, report.tx_secs),
            "host_to_guest_mbit_s": mbit_per_s(PAYLOAD_LEN as u64, report.rx_secs),
            "host_ping_rtt_ms": report.host_ping.rtt, "guest_ping_rtt_ms": report.guest_ping.as_ref().and_then(|g| g.rtt),
            "vmm_cpu_s": cpu1 - cpu0, "vmm_cpu_s_per_gib": (cpu1 - cpu0) / gib})
    );
    let _ = vm.wait_for_guest_exit(Duration::from_secs(300));
    vm.kill();
}

#[test]
fn tap_side_by_side_with_firecracker() {
    if !require_guest_env("tap_side_by_side_with_firecracker") {
        return;
    }
    let _vm = one_vm_at_a_time();
    let rounds: usize = std::env::var("SHIMVMM_GUESTNET_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(1);
    // SHIMVMM_GUESTNET_VMMS: one or both (tools/bench runs each in its own
    // process, so a guest lost to the testbed does not cost the other's run).
    let only = std::env::var("SHIMVMM_GUESTNET_VMMS").unwrap_or_default();
    for round in 0..rounds {
        let order =
            if round % 2 == 0 { ["shimvmm-tap", "firecracker-tap"] } else { ["firecracker-tap", "shimvmm-tap"] };
        for vmm in order {
            if only.is_empty() || only.split([' ', ',']).any(|o| o == vmm) {
                one(vmm, round);
            }
        }
    }
}
