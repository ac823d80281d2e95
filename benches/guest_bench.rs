//! Guest benchmarks run inside the testbed (`tools/bench boot|mem` starts one
//! L1 for all of them): boot time and memory overhead, shimvmm next to QEMU
//! `-M microvm,rtc=on` with the same kernel, initrd, command line, 2 vCPUs
//! and 512 MiB. Prints one JSON object per measurement on stdout.
//!
//!   guest_bench boot [RUNS] [init]   RUNS boots of each VMM, alternating; with
//!                                    `init`, each boot stops at the first init
//!                                    marker (no boot-probe time through openrc)
//!   guest_bench mem           one boot of each to the login prompt, then smaps

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use shimvmm_tests::{
    alpine_cmdline, artifacts, plain_image, qemu_microvm_command, scaled, shimvmm_bin, test_image, GuestProcess,
    PowerAction, QemuBootOptions, BOOT_PROBE_MARKER, BOOT_PROBE_SCRIPT, FIRST_INIT_MARKER,
};

/// Guest boots in the nested testbed on a loaded machine take minutes;
/// SHIMVMM_TIMEOUT_SCALE stretches this further.
const TIMEOUT_S: u64 = 900;
const MEM_MIB: u32 = 512;

fn shimvmm_cmd(root: &Path) -> Command {
    let art = artifacts();
    let mut c = Command::new(shimvmm_bin());
    c.arg("--kernel").arg(&art.kernel).arg("--initrd").arg(&art.initrd);
    c.args(["--cmdline", alpine_cmdline(), "--vcpus", "2", "--mem", &MEM_MIB.to_string()]);
    c.arg("--disk").arg(format!("path={}", root.display()));
    c
}

fn qemu_cmd(root: &Path) -> Command {
    let opts = QemuBootOptions { memory_mib: MEM_MIB, vcpus: 2, ..QemuBootOptions::default() };
    qemu_microvm_command(artifacts(), root, &opts)
}

/// One boot to the probe marker (or only to the first init); returns
/// (first init s, probe s).
fn boot_once(vmm: &str, probe: bool) -> Result<(f64, Option<f64>), String> {
    let image = test_image(BOOT_PROBE_SCRIPT, PowerAction::Poweroff);
    let cmd = if vmm == "shimvmm" { shimvmm_cmd(image.path()) } else { qemu_cmd(image.path()) };
    let mut p = GuestProcess::spawn(vmm, cmd).map_err(|e| e.to_string())?;
    let r = (|| {
        let init =
            p.wait_for_line(FIRST_INIT_MARKER, scaled(Duration::from_secs(TIMEOUT_S))).map_err(|e| e.to_string())?;
        if !probe {
            return Ok((init.as_secs_f64(), None));
        }
        let probe =
            p.wait_for_marker(BOOT_PROBE_MARKER, scaled(Duration::from_secs(TIMEOUT_S))).map_err(|e| e.to_string())?;
        Ok((init.as_secs_f64(), Some(probe.at.as_secs_f64())))
    })();
    // Only the time to the markers is measured: stop the VMM right away.
    p.kill();
    r
}

/// Rss of all mappings and of the guest-RAM mapping (kB) from /proc/PID/smaps;
/// guest RAM is the largest anonymous mapping of at least the guest RAM size
/// (for shimvmm and QEMU alike). Also returns the largest
/// other mappings ("rss_kib name"), so a report says where the overhead is.
fn smaps_rss(pid: u32) -> Result<(u64, u64, String, Vec<String>), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).map_err(|e| format!("smaps: {e}"))?;
    let mut total = 0u64;
    let mut best: Option<(u64, u64, String)> = None; // (size kB, rss kB, header)
    let mut cur: Option<(String, u64, u64)> = None;
    let mut all: Vec<(u64, String)> = Vec::new();
    let mut flush = |cur: &mut Option<(String, u64, u64)>, best: &mut Option<(u64, u64, String)>| {
        if let Some((hdr, size, rss)) = cur.take() {
            let f: Vec<&str> = hdr.split_whitespace().collect();
            let name = f.get(5).copied().unwrap_or("").to_string();
            all.push((
                rss,
                format!("{} {}", if name.is_empty() { "[anon]" } else { name.as_str() }, f.get(1).unwrap_or(&"")),
            ));
            let hit = name.is_empty() && size >= u64::from(MEM_MIB) * 1024;
            if hit && best.as_ref().is_none_or(|b| size > b.0) {
                *best = Some((size, rss, hdr));
            }
        }
    };
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            flush(&mut cur, &mut best);
            cur = Some((line.to_string(), 0, 0));
        } else if let (Some(c), Some(v)) = (cur.as_mut(), line.strip_prefix("Size:")) {
            c.1 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Rss:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            total += kb;
            if let Some(c) = cur.as_mut() {
                c.2 = kb;
            }
        }
    }
    flush(&mut cur, &mut best);
    let (_, ram_rss, hdr) = best.ok_or_else(|| format!("no guest RAM mapping found in /proc/{pid}/smaps"))?;
    all.sort_by_key(|a| std::cmp::Reverse(a.0));
    // The first entry is the guest RAM itself.
    let top = all.iter().skip(1).take(8).map(|(k, n)| format!("{k} {n}")).collect();
    Ok((total, ram_rss, hdr, top))
}

fn mem_once(vmm: &str) -> Result<serde_json::Value, String> {
    let image = plain_image();
    let cmd = if vmm == "shimvmm" { shimvmm_cmd(image.path()) } else { qemu_cmd(image.path()) };
    let mut p = GuestProcess::spawn(vmm, cmd).map_err(|e| e.to_string())?;
    let r = (|| {
        let at = p.wait_for_line("login:", scaled(Duration::from_secs(TIMEOUT_S))).map_err(|e| e.to_string())?;
        // Let the guest settle at its prompt.
        std::thread::sleep(Duration::from_secs(5));
        let (total, ram, hdr, top) = smaps_rss(p.pid())?;
        Ok(serde_json::json!({
            "bench": "mem", "vmm": vmm, "login_prompt_s": at.as_secs_f64(),
            "rss_kib": total, "guest_ram_rss_kib": ram, "overhead_kib": total - ram,
            "guest_ram_mapping": hdr, "largest_other_mappings_kib": top,
        }))
    })();
    p.kill();
    r
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    match args.first().map(String::as_str) {
        Some("boot") => {
            let runs: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(5);
            let probe = args.get(2).map(String::as_str) != Some("init");
            // The testbed loses some guests of both VMMs (docs/testbed.md): a
            // failed boot is reported (as an "error" line) and tried again, up
            // to MAX_ATTEMPTS times per run, so RUNS good runs are the goal.
            const MAX_ATTEMPTS: usize = 3;
            for i in 0..runs {
                for vmm in ["shimvmm", "qemu"] {
                    for attempt in 1..=MAX_ATTEMPTS {
                        let (v, ok) = match boot_once(vmm, probe) {
                            Ok((init, probe)) => (
                                serde_json::json!({"bench": "boot", "vmm": vmm, "run": i,
                                "attempt": attempt, "first_init_s": init, "boot_probe_s": probe}),
                                true,
                            ),
                            Err(e) => (
                                serde_json::json!({"bench": "boot", "vmm": vmm, "run": i,
                                "attempt": attempt, "error": e}),
                                false,
                            ),
                        };
                        println!("{v}");
                        if ok {
                            break;
                        }
                    }
                }
            }
        }
        Some("mem") => {
            // Like boots, a lost guest is reported and tried again.
            const MAX_ATTEMPTS: usize = 3;
            for vmm in ["shimvmm", "qemu"] {
                for attempt in 1..=MAX_ATTEMPTS {
                    let r = mem_once(vmm);
                    let ok = r.is_ok();
                    let v = r.unwrap_or_else(
                        |e| serde_json::json!({"bench": "mem", "vmm": vmm, "attempt": attempt, "error": e}),
                    );
                    println!("{v}");
                    if ok {
                        break;
                    }
                }
            }
        }
        _ => {
            eprintln!("usage: guest_bench boot [RUNS] | mem");
            std::process::exit(2);
        }
    }
}
