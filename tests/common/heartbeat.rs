//! The guest's heartbeat, and what its silence means.
//!
//! Every test image's runner (tools/guest-artifacts) writes
//! [`HEARTBEAT_TOKEN`] to /dev/kmsg every [`HEARTBEAT_EVERY`] while its
//! script runs. The kernel prints it on the console by polling the UART, not
//! through the tty's interrupt-driven path, so a lost serial interrupt does
//! not stop it; only a guest kernel that stopped running, or a VMM that
//! stopped running its vCPUs, does. When it stops, the VMM's vCPU threads say
//! which: all of them inside `KVM_RUN` means the guest's own CPUs are stuck
//! (the testbed's silent hang, seen with QEMU's and Firecracker's guests too);
//! a vCPU thread outside `KVM_RUN` the whole time means the VMM is stuck.

use std::path::Path;
use std::time::Duration;

/// What the runner writes to /dev/kmsg.
pub const HEARTBEAT_TOKEN: &str = "SHIMVMM-HEARTBEAT";
/// How often it writes it.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
/// A heartbeat missing this long (12 beats) means the guest stopped.
pub const HEARTBEAT_SILENCE: Duration = Duration::from_secs(120);

/// A console line that carries a heartbeat: the text of an interrupted line
/// that came before it (printk may land in the middle of a line a process is
/// writing), without the kernel's timestamp. `None` for other lines.
pub fn split_heartbeat(text: &str) -> Option<&str> {
    let i = text.find(HEARTBEAT_TOKEN)?;
    let before = text[..i].trim_end();
    // "[   33.164012]" (printk.time) precedes the token.
    let before = match before.rfind('[') {
        Some(j) if before.ends_with(']') && is_timestamp(&before[j + 1..before.len() - 1]) => &before[..j],
        _ => before,
    };
    Some(before)
}

fn is_timestamp(s: &str) -> bool {
    let s = s.trim();
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.')
}

/// `ioctl(vcpu_fd, KVM_RUN)` as /proc/PID/task/TID/syscall shows it.
const SYS_IOCTL: &str = "16";
const KVM_RUN: &str = "0xae80";

/// Whether a thread name is a vCPU's: shimvmm's and Firecracker's `fc_vcpu N`,
/// QEMU's `CPU N/KVM`.
fn is_vcpu_thread(comm: &str) -> bool {
    comm.starts_with("fc_vcpu") || (comm.starts_with("CPU ") && comm.ends_with("/KVM"))
}

/// Where the vCPU threads of process `pid` and its descendants are.
#[derive(Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Every vCPU thread was in the guest: inside `KVM_RUN` in a sample, or
    /// running guest code (its `guest_time` grew).
    AllInGuest(usize),
    /// These vCPU threads (name, last /proc syscall line) were in the VMM the
    /// whole time: blocked in another syscall in every sample, or running in
    /// user space (`utime` grew, `guest_time` did not).
    Outside(Vec<(String, String)>),
    /// Neither could be shown (no vCPU thread found or readable, or one
    /// running in the host kernel outside the guest).
    Unknown(String),
}

/// One thread's look: its /proc syscall line, and its user and guest CPU
/// ticks (/proc stat fields 14 and 43).
fn look(dir: &Path) -> Option<(String, u64, u64)> {
    let syscall = std::fs::read_to_string(dir.join("syscall")).ok()?.trim().to_string();
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    // Fields after the ")" that ends the name start at field 3.
    let rest: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((syscall, field(14)?, field(43)?))
}

/// Samples the vCPU threads under `proc_root` (normally /proc) `samples`
/// times, `gap` apart. A thread executing guest code shows as "running" in
/// /proc, like one spinning in the VMM; their CPU time tells them apart.
pub fn vcpu_state(proc_root: &Path, pid: u32, samples: u32, gap: Duration) -> VcpuState {
    let threads = vcpu_threads(proc_root, pid);
    if threads.is_empty() {
        return VcpuState::Unknown(format!("no vCPU thread under process {pid}"));
    }
    let mut looks: Vec<Vec<(String, u64, u64)>> = vec![Vec::new(); threads.len()];
    for n in 0..samples.max(2) {
        if n > 0 {
            std::thread::sleep(gap);
        }
        for (i, (_, dir)) in threads.iter().enumerate() {
            looks[i].extend(look(dir));
        }
    }
    let mut outside = Vec::new();
    let mut unsure = Vec::new();
    for ((comm, _), l) in threads.iter().zip(&looks) {
        let (Some(first), Some(last)) = (l.first(), l.last()) else {
            unsure.push(format!("'{comm}' unreadable"));
            continue;
        };
        let in_kvm_run = l.iter().any(|(sc, ..)| {
            let mut f = sc.split_whitespace();
            f.next() == Some(SYS_IOCTL) && f.nth(1) == Some(KVM_RUN)
        });
        let guest_ran = last.2 > first.2;
        if in_kvm_run || guest_ran {
            continue;
        }
        let blocked_elsewhere = l.iter().all(|(sc, ..)| sc != "running");
        let user_spin = last.1 > first.1;
        if blocked_elsewhere || user_spin {
            outside.push((comm.clone(), last.0.clone()));
        } else {
            unsure.push(format!("'{comm}' running outside the guest and outside user space"));
        }
    }
    if !outside.is_empty() {
        VcpuState::Outside(outside)
    } else if unsure.is_empty() {
        VcpuState::AllInGuest(threads.len())
    } else {
        VcpuState::Unknown(unsure.join(", "))
    }
}

/// (name, /proc task directory) of every vCPU thread of `pid` and its
/// descendants (the jailer runs the VMM as its child in a new PID namespace).
fn vcpu_threads(proc_root: &Path, pid: u32) -> Vec<(String, std::path::PathBuf)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    let mut seen = 0;
    while let Some(p) = todo.pop() {
        seen += 1;
        if seen > 64 {
            break;
        }
        let Ok(tasks) = std::fs::read_dir(proc_root.join(p.to_string()).join("task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default().trim().to_string();
            if is_vcpu_thread(&comm) {
                out.push((comm, dir.clone()));
            }
            let children = std::fs::read_to_string(dir.join("children")).unwrap_or_default();
            todo.extend(children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_found_and_what_they_interrupted_is_kept() {
        assert_eq!(split_heartbeat("[   33.164012] SHIMVMM-HEARTBEAT"), Some(""));
        assert_eq!(split_heartbeat("SHIMVMM-HEARTBEAT"), Some(""));
        assert_eq!(
            split_heartbeat("SHIMVMM-MARKER ping-sum[   33.164012] SHIMVMM-HEARTBEAT"),
            Some("SHIMVMM-MARKER ping-sum")
        );
        assert_eq!(split_heartbeat("SHIMVMM-MARKER x [a] SHIMVMM-HEARTBEAT"), Some("SHIMVMM-MARKER x [a]"));
        assert_eq!(split_heartbeat("SHIMVMM-MARKER ping-rc 0"), None);
    }

    /// The runner in tools/guest-artifacts writes what this module reads.
    #[test]
    fn the_image_runner_beats_as_the_harness_expects() {
        let tool = crate::artifacts::repo_root().join("tools/guest-artifacts");
        let text = std::fs::read_to_string(&tool).unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
        let line =
            format!("while sleep {}; do echo \"<2>{HEARTBEAT_TOKEN}\" > /dev/kmsg; done", HEARTBEAT_EVERY.as_secs());
        assert!(text.contains(&line), "{} has no line with: {line}", tool.display());
        assert!(HEARTBEAT_SILENCE >= 10 * HEARTBEAT_EVERY);
    }

    #[test]
    fn a_real_threads_syscall_and_ticks_are_read() {
        let me = Path::new("/proc/self/task").join(std::process::id().to_string());
        let (syscall, _, guest) = look(&me).expect("this process's main thread");
        assert!(!syscall.is_empty());
        assert_eq!(guest, 0, "a test process runs no guest");
    }

    fn fake_task(root: &Path, pid: u32, tid: u32, comm: &str, syscall: &str, children: &str) {
        let d = root.join(pid.to_string()).join("task").join(tid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(d.join("syscall"), format!("{syscall}\n")).unwrap();
        std::fs::write(d.join("children"), children).unwrap();
        set_ticks(root, pid, tid, comm, 0, 0);
    }

    /// /proc's stat line with `utime` (field 14) and `guest_time` (field 43).
    fn set_ticks(root: &Path, pid: u32, tid: u32, comm: &str, utime: u64, guest: u64) {
        let mut f: Vec<String> = (3..=52).map(|_| "0".to_string()).collect();
        f[14 - 3] = utime.to_string();
        f[43 - 3] = guest.to_string();
        let d = root.join(pid.to_string()).join("task").join(tid.to_string());
        std::fs::write(d.join("stat"), format!("{tid} ({comm}) {}\n", f.join(" "))).unwrap();
    }

    /// Runs `vcpu_state` while a thread moves a vCPU's ticks between samples.
    fn state_while(root: &Path, pid: u32, tick: impl Fn(u64) + Send + 'static) -> VcpuState {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let t = std::thread::spawn(move || {
            let mut n = 1;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                tick(n);
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let state = vcpu_state(root, pid, 5, Duration::from_millis(20));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        t.join().unwrap();
        state
    }

    #[test]
    fn vcpu_threads_inside_or_outside_kvm_run_are_told_apart() {
        let root = std::env::temp_dir().join(format!("heartbeat-proc-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // A jailer (pid 10) whose child (pid 11) runs the vCPUs.
        fake_task(&root, 10, 10, "jailer", "61 0x1 0x0", "11 ");
        fake_task(&root, 11, 11, "shimvmm", "232 0x5 0x0", "");
        fake_task(&root, 11, 12, "fc_vcpu 0", "16 0x1c 0xae80 0x0 0x0 0x0 0x0 0x7ffd 0x7f00", "");
        fake_task(&root, 11, 13, "fc_vcpu 1", "16 0x1d 0xae80 0x0 0x0 0x0 0x0 0x7ffd 0x7f00", "");
        let gap = Duration::from_millis(1);
        assert_eq!(vcpu_state(&root, 10, 2, gap), VcpuState::AllInGuest(2));
        // vCPU 1 waits on a lock in the VMM.
        fake_task(&root, 11, 13, "fc_vcpu 1", "202 0x7f01 0x80 0x2 0x0 0x0 0x0 0x7ffd 0x7f00", "");
        match vcpu_state(&root, 10, 2, gap) {
            VcpuState::Outside(v) => assert_eq!(
                v,
                vec![("fc_vcpu 1".to_string(), "202 0x7f01 0x80 0x2 0x0 0x0 0x0 0x7ffd 0x7f00".to_string())]
            ),
            other => panic!("{other:?}"),
        }
        // Both "running" (as /proc shows a thread in guest mode, or one on a
        // CPU in user space): guest time tells the stuck guest's spin from
        // the VMM's.
        fake_task(&root, 11, 13, "fc_vcpu 1", "running", "");
        let r = root.clone();
        let spin_in_guest = state_while(&root, 10, move |n| set_ticks(&r, 11, 13, "fc_vcpu 1", 5, n));
        assert_eq!(spin_in_guest, VcpuState::AllInGuest(2));
        let r = root.clone();
        match state_while(&root, 10, move |n| set_ticks(&r, 11, 13, "fc_vcpu 1", n, 7)) {
            VcpuState::Outside(v) => assert_eq!(v, vec![("fc_vcpu 1".to_string(), "running".to_string())]),
            other => panic!("{other:?}"),
        }
        // Running with neither time moving (in the host kernel): not proof.
        assert!(matches!(vcpu_state(&root, 10, 2, gap), VcpuState::Unknown(_)));
        // QEMU's names; and a process with no vCPU thread.
        fake_task(&root, 20, 21, "CPU 0/KVM", "16 0x10 0xae80 0x0", "");
        assert_eq!(vcpu_state(&root, 20, 1, gap), VcpuState::AllInGuest(1));
        assert!(matches!(vcpu_state(&root, 30, 1, gap), VcpuState::Unknown(_)));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
