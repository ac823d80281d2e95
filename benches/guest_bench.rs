//! Guest benchmarks run inside the testbed (`tools/bench boot|mem` starts one
//! L1 for all of them): boot time and memory overhead of shimvmm side by side
//! with Firecracker v1.12.1 (`tools/firecracker`) and QEMU microvm on qboot,
//! all booting the same ELF kernel (the Alpine bzImage's payload), initrd,
//! command line and rootfs with 2 vCPUs and 512 MiB; shimvmm's bzImage boot
//! runs beside them. Prints one JSON object per measurement on stdout.
//!
//!   guest_bench boot [RUNS] [login|init] [mem]
//!       RUNS boots of each VMM, alternating (the order rotates every round);
//!       each boot is timed to the first kernel line, the first init and the
//!       login prompt (`init`: stop at the first init). With `mem`, every boot
//!       that reaches its login prompt is also measured for memory (below).
//!   guest_bench mem
//!       one boot of each VMM to its login prompt, then /proc/PID/smaps
//!
//! The VMMs: GUEST_BENCH_VMMS (space or comma separated) from
//! shimvmm, firecracker, qemu (qboot, legacy-free), qemu-rtc (qboot,
//! `microvm,rtc=on`), shimvmm-bzimage; default all five. shimvmm-musl (an
//! experimental static musl build named by SHIMVMM_MUSL_BIN) on request.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shimvmm_tests::{
    alpine_cmdline, alpine_vmlinux, artifacts, firecracker_bin, firecracker_command, firecracker_config, plain_image,
    qemu_bin, qemu_qboot_command, scaled, shimvmm_bin, GuestProcess, PeerBoot, QemuTuning, FIRST_INIT_MARKER,
};

/// Guest boots in the nested testbed on a loaded machine take minutes;
/// SHIMVMM_TIMEOUT_SCALE stretches this further.
const TIMEOUT_S: u64 = 600;
const MEM_MIB: u32 = 512;
const VCPUS: u32 = 2;
/// The kernel's first console line (the log is replayed from its start when
/// the serial console registers, so this is when the console came up).
const FIRST_KERNEL_LINE: &str = "Linux version";
/// The getty's prompt on ttyS0.
const LOGIN_PROMPT: &str = "login:";
/// How long a guest idles at its prompt before its VMM's memory is read.
const MEM_SETTLE: Duration = Duration::from_secs(5);
const ALL_VMMS: [&str; 5] = ["shimvmm", "firecracker", "qemu", "qemu-rtc", "shimvmm-bzimage"];
/// Known but only on request (GUEST_BENCH_VMMS).
const EXTRA_VMMS: [&str; 2] = ["shimvmm-musl", "firecracker-hugepages"];

fn vmms() -> Vec<String> {
    match std::env::var("GUEST_BENCH_VMMS") {
        Ok(v) if !v.trim().is_empty() => {
            let list: Vec<String> = v.split([' ', ',']).filter(|s| !s.is_empty()).map(str::to_string).collect();
            for l in &list {
                assert!(
                    ALL_VMMS.contains(&l.as_str()) || EXTRA_VMMS.contains(&l.as_str()),
                    "GUEST_BENCH_VMMS: unknown VMM {l:?} (know {ALL_VMMS:?} and {EXTRA_VMMS:?})"
                );
            }
            list
        }
        _ => ALL_VMMS.iter().map(|s| s.to_string()).collect(),
    }
}

/// The command booting `vmm` with `rootfs`; `dir` holds per-boot files.
fn vmm_cmd(vmm: &str, rootfs: &Path, dir: &Path) -> Command {
    let art = artifacts();
    let vmlinux = alpine_vmlinux();
    let kernel: &Path = if vmm == "shimvmm-bzimage" { &art.kernel } else { &vmlinux };
    let b = PeerBoot {
        kernel,
        initrd: Some(&art.initrd),
        cmdline: alpine_cmdline(),
        rootfs,
        vcpus: VCPUS,
        mem_mib: MEM_MIB,
    };
    match vmm {
        "shimvmm" | "shimvmm-bzimage" | "shimvmm-musl" => {
            // shimvmm-musl: an experimental static musl build of the same
            // source (SHIMVMM_MUSL_BIN), to weigh glibc's share of the start-up
            // and memory overhead; not a product build.
            let bin = if vmm == "shimvmm-musl" {
                PathBuf::from(std::env::var_os("SHIMVMM_MUSL_BIN").expect("shimvmm-musl needs SHIMVMM_MUSL_BIN"))
            } else {
                shimvmm_bin()
            };
            let mut c = Command::new(bin);
            c.arg("--kernel").arg(b.kernel).arg("--initrd").arg(&art.initrd);
            c.args(["--cmdline", b.cmdline, "--vcpus", &VCPUS.to_string(), "--mem", &MEM_MIB.to_string()]);
            c.arg("--disk").arg(format!("path={}", rootfs.display()));
            c
        }
        "firecracker" => firecracker_command(&b, dir),
        "firecracker-hugepages" => {
            // Firecracker's own tuning for guest memory: 2 MiB hugetlbfs pages
            // (machine-config huge_pages, from a pool reserved beforehand).
            ensure_hugepages();
            let mut cfg: serde_json::Value = serde_json::from_str(&firecracker_config(&b)).expect("config JSON");
            cfg["machine-config"]["huge_pages"] = "2M".into();
            let path = dir.join("firecracker-hugepages.json");
            std::fs::write(&path, cfg.to_string()).expect("write the Firecracker config");
            let mut c = Command::new(firecracker_bin());
            c.args(["--no-api", "--level", "Warning", "--config-file"]).arg(&path);
            c
        }
        "qemu" => qemu_qboot_command(&b, QemuTuning::LegacyFree),
        "qemu-rtc" => qemu_qboot_command(&b, QemuTuning::Rtc),
        other => panic!("unknown VMM {other}"),
    }
}

/// Reserves the 2 MiB hugetlbfs pages Firecracker's `huge_pages: 2M` takes its
/// guest memory from (guest RAM plus slack), if fewer are reserved.
fn ensure_hugepages() {
    let want = u64::from(MEM_MIB) / 2 + 16;
    let path = "/proc/sys/vm/nr_hugepages";
    let have: u64 = std::fs::read_to_string(path).ok().and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    if have < want {
        if let Err(e) = std::fs::write(path, want.to_string()) {
            eprintln!("guest_bench: cannot reserve {want} huge pages in {path}: {e}");
        }
    }
}

fn command_line(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// One boot: times (s from spawn) to the first kernel line, the first init
/// and (unless `to_login` is false) the login prompt, plus the memory record
/// if `mem`.
fn boot_once(vmm: &str, to_login: bool, mem: bool) -> Result<(serde_json::Value, Option<serde_json::Value>), String> {
    let image = plain_image();
    let dir = image.path().parent().map(Path::to_path_buf).unwrap_or_else(std::env::temp_dir);
    let cmd = vmm_cmd(vmm, image.path(), &dir);
    let mut p = GuestProcess::spawn(vmm, cmd).map_err(|e| e.to_string())?;
    let timeout = scaled(Duration::from_secs(TIMEOUT_S));
    let r = (|| {
        let init = p.wait_for_line(FIRST_INIT_MARKER, timeout).map_err(|e| e.to_string())?;
        // Already arrived: the kernel prints it long before init.
        let first = p.wait_for_line(FIRST_KERNEL_LINE, Duration::from_secs(1)).map_err(|e| e.to_string())?;
        let mut v = serde_json::json!({"first_kernel_line_s": first.as_secs_f64(), "first_init_s": init.as_secs_f64(),
            "kvm_at_init": kvm_counters(p.pid())});
        if !to_login {
            return Ok((v, None));
        }
        let login = p.wait_for_line(LOGIN_PROMPT, timeout).map_err(|e| e.to_string())?;
        v["login_s"] = serde_json::json!(login.as_secs_f64());
        v["kvm_at_login"] = kvm_counters(p.pid());
        if !mem {
            return Ok((v, None));
        }
        std::thread::sleep(MEM_SETTLE);
        let m = mem_record(vmm, p.pid(), login.as_secs_f64())?;
        Ok((v, Some(m)))
    })();
    // Only the times to the lines are measured: stop the VMM right away.
    p.kill();
    r
}

/// Rss of all mappings and of the guest-RAM mapping (kB) from /proc/PID/smaps;
/// guest RAM is the largest anonymous mapping of at least the guest RAM size
/// (for every VMM here). Also returns the largest other mappings
/// ("rss_kib name"), so a report says where the overhead is.
fn smaps_rss(pid: u32) -> Result<(u64, u64, String, Vec<String>), String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).map_err(|e| format!("smaps: {e}"))?;
    let mut total = 0u64;
    let mut best: Option<(u64, u64, String)> = None; // (size kB, rss kB, header)
    let mut cur: Option<(String, u64, u64)> = None;
    let mut all: Vec<(u64, String)> = Vec::new();
    // Guest RAM on hugetlbfs (Firecracker's huge_pages): its pages are not in
    // Rss (smaps counts them as *_Hugetlb), so it is found by those instead.
    let mut hugetlb: Option<(u64, String)> = None; // (kB, header)
    let mut header = String::new();
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
            header = line.to_string();
        } else if let Some(v) = line.strip_prefix("Private_Hugetlb:").or_else(|| line.strip_prefix("Shared_Hugetlb:")) {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            if kb > 0 && hugetlb.as_ref().is_none_or(|h| kb > h.0) {
                hugetlb = Some((kb, header.clone()));
            }
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
    let (ram_rss, hdr) = match (best, hugetlb) {
        // On hugetlbfs the guest RAM is outside Rss: the total is all overhead.
        (_, Some((_, hdr))) => (0, format!("{hdr} (hugetlbfs, not in Rss)")),
        (Some((_, rss, hdr)), None) => (rss, hdr),
        (None, None) => return Err(format!("no guest RAM mapping found in /proc/{pid}/smaps")),
    };
    all.sort_by_key(|a| std::cmp::Reverse(a.0));
    // The first entry is the guest RAM itself.
    let top = all.iter().skip(1).take(8).map(|(k, n)| format!("{k} {n}")).collect();
    Ok((total, ram_rss, hdr, top))
}

/// Pss of the whole process and of its guest-RAM mapping (kB; the mapping
/// named by its smaps header line `ram_hdr`): shared library pages count in Rss
/// in full, in Pss divided by the processes mapping them.
fn smaps_pss(pid: u32, ram_hdr: &str) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let (mut total, mut ram, mut in_ram) = (0u64, 0u64, false);
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            in_ram = line == ram_hdr;
        } else if let Some(v) = line.strip_prefix("Pss:") {
            let kb: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
            total += kb;
            if in_ram {
                ram += kb;
            }
        }
    }
    (total, ram)
}

/// KVM's per-VM counters (debugfs, /sys/kernel/debug/kvm/PID-FD/) of the VMs
/// process `pid` made, summed: where the exits went (null without debugfs).
fn kvm_counters(pid: u32) -> serde_json::Value {
    const NAMES: [&str; 8] =
        ["exits", "io_exits", "mmio_exits", "halt_exits", "irq_exits", "pf_fixed", "pf_taken", "nmi_window_exits"];
    let Ok(dir) = std::fs::read_dir("/sys/kernel/debug/kvm") else {
        return serde_json::Value::Null;
    };
    let mut sums = serde_json::Map::new();
    for entry in dir.flatten() {
        if !entry.file_name().to_string_lossy().starts_with(&format!("{pid}-")) {
            continue;
        }
        for n in NAMES {
            let v: u64 =
                std::fs::read_to_string(entry.path().join(n)).ok().and_then(|t| t.trim().parse().ok()).unwrap_or(0);
            let cur = sums.get(n).and_then(serde_json::Value::as_u64).unwrap_or(0);
            sums.insert(n.to_string(), (cur + v).into());
        }
    }
    serde_json::Value::Object(sums)
}

/// Threads of PID (from /proc/PID/status), for the memory record.
fn threads(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok())
}

fn mem_record(vmm: &str, pid: u32, login_s: f64) -> Result<serde_json::Value, String> {
    let (total, ram, hdr, top) = smaps_rss(pid)?;
    let (pss, pss_ram) = smaps_pss(pid, &hdr);
    Ok(serde_json::json!({
        "pss_kib": pss, "overhead_pss_kib": pss.saturating_sub(pss_ram),
        "bench": "mem", "vmm": vmm, "login_prompt_s": login_s,
        "rss_kib": total, "guest_ram_rss_kib": ram, "overhead_kib": total - ram, "threads": threads(pid),
        "guest_ram_mapping": hdr, "largest_other_mappings_kib": top,
    }))
}

/// Describes the VMMs once per run: version and full command line.
fn describe(list: &[String]) {
    let dir = std::env::temp_dir();
    let fake = PathBuf::from("ROOTFS");
    for vmm in list {
        let version = match vmm.as_str() {
            "firecracker" => Command::new(firecracker_bin()).arg("--version").output().ok(),
            "qemu" | "qemu-rtc" => Command::new(qemu_bin()).arg("--version").output().ok(),
            _ => None,
        }
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string());
        let line = command_line(&vmm_cmd(vmm, &fake, &dir));
        println!("{}", serde_json::json!({"bench": "vmm", "vmm": vmm, "version": version, "command": line}));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    // The testbed loses some guests of every VMM (docs/testbed.md): a failed
    // boot is reported (as an "error" line) and tried again, up to
    // MAX_ATTEMPTS times per run, so RUNS good runs are the goal.
    const MAX_ATTEMPTS: usize = 3;
    let list = vmms();
    let (runs, to_login, mem) = match args.first().map(String::as_str) {
        Some("boot") => (
            args.get(1).and_then(|v| v.parse().ok()).unwrap_or(5usize),
            !args.iter().any(|a| a == "init"),
            args.iter().any(|a| a == "mem"),
        ),
        Some("mem") => (1, true, true),
        _ => {
            eprintln!("usage: guest_bench boot [RUNS] [login|init] [mem] | mem");
            std::process::exit(2);
        }
    };
    let boots = args.first().map(String::as_str) == Some("boot");
    // GUEST_BENCH_RUNS_CAP="vmm=N,...": at most N rounds of those VMMs (slow
    // or experimental ones), the others run all RUNS.
    let caps: Vec<(String, usize)> = std::env::var("GUEST_BENCH_RUNS_CAP")
        .unwrap_or_default()
        .split([',', ' '])
        .filter_map(|kv| kv.split_once('=').and_then(|(k, v)| Some((k.to_string(), v.parse().ok()?))))
        .collect();
    let login_rounds: Option<usize> = std::env::var("GUEST_BENCH_LOGIN_ROUNDS").ok().and_then(|v| v.parse().ok());
    describe(&list);
    // A VMM whose every attempt of a round failed (e.g. settings that do not
    // boot here) leaves the rotation, so it cannot eat the L1's time.
    let mut dropped: Vec<String> = Vec::new();
    for i in 0..runs {
        for k in 0..list.len() {
            let vmm = list[(i + k) % list.len()].as_str();
            if dropped.iter().any(|d| d == vmm) || caps.iter().any(|(k, n)| k == vmm && i >= *n) {
                continue;
            }
            let mut good = false;
            // GUEST_BENCH_LOGIN_ROUNDS=K: only the first K rounds go on to the
            // login prompt (and memory); later ones stop at the first init.
            let login_here = to_login && login_rounds.is_none_or(|k| i < k);
            for attempt in 1..=MAX_ATTEMPTS {
                let at = now_s();
                let (ok, v, m) = match boot_once(vmm, login_here, mem && login_here) {
                    Ok((mut v, m)) => {
                        v["bench"] = "boot".into();
                        (true, v, m)
                    }
                    Err(e) => {
                        (false, serde_json::json!({"bench": if boots { "boot" } else { "mem" }, "error": e}), None)
                    }
                };
                for mut rec in [Some(v), m].into_iter().flatten() {
                    if !boots && rec["bench"] == "boot" {
                        continue;
                    }
                    rec["vmm"] = vmm.into();
                    rec["run"] = i.into();
                    rec["attempt"] = attempt.into();
                    rec["started_unix_s"] = at.into();
                    println!("{rec}");
                }
                if ok {
                    good = true;
                    break;
                }
            }
            if !good {
                println!(
                    "{}",
                    serde_json::json!({"bench": "dropped", "vmm": vmm, "run": i,
                    "why": format!("all {MAX_ATTEMPTS} attempts of round {i} failed")})
                );
                dropped.push(vmm.to_string());
            }
        }
    }
}
