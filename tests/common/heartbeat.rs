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
    /// Every vCPU thread was inside `KVM_RUN` in at least one sample.
    AllInGuest(usize),
    /// These vCPU threads (name, last /proc syscall line) never were.
    Outside(Vec<(String, String)>),
    /// No vCPU thread could be found or read.
    Unknown(String),
}

/// Samples the vCPU threads under `proc_root` (normally /proc) `samples`
/// times, `gap` apart.
pub fn vcpu_state(proc_root: &Path, pid: u32, samples: u32, gap: Duration) -> VcpuState {
    let threads = vcpu_threads(proc_root, pid);
    if threads.is_empty() {
        return VcpuState::Unknown(format!("no vCPU thread under process {pid}"));
    }
    let mut seen_in_guest = vec![false; threads.len()];
    let mut last = vec![String::new(); threads.len()];
    for n in 0..samples.max(1) {
        if n > 0 {
            std::thread::sleep(gap);
        }
        for (i, (_, dir)) in threads.iter().enumerate() {
            let Ok(line) = std::fs::read_to_string(dir.join("syscall")) else {
                continue;
            };
            let mut fields = line.split_whitespace();
            if fields.next() == Some(SYS_IOCTL) && fields.nth(1) == Some(KVM_RUN) {
                seen_in_guest[i] = true;
            }
            last[i] = line.trim().to_string();
        }
    }
    if last.iter().all(String::is_empty) {
        return VcpuState::Unknown(format!("the vCPU threads' syscalls could not be read under process {pid}"));
    }
    let outside: Vec<(String, String)> = threads
        .iter()
        .zip(seen_in_guest.iter().zip(last))
        .filter(|(_, (in_guest, _))| !**in_guest)
        .map(|((comm, _), (_, last))| (comm.clone(), last))
        .collect();
    if outside.is_empty() {
        VcpuState::AllInGuest(threads.len())
    } else {
        VcpuState::Outside(outside)
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

    fn fake_task(root: &Path, pid: u32, tid: u32, comm: &str, syscall: &str, children: &str) {
        let d = root.join(pid.to_string()).join("task").join(tid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(d.join("syscall"), format!("{syscall}\n")).unwrap();
        std::fs::write(d.join("children"), children).unwrap();
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
        // QEMU's names; and a process with no vCPU thread.
        fake_task(&root, 20, 21, "CPU 0/KVM", "16 0x10 0xae80 0x0", "");
        assert_eq!(vcpu_state(&root, 20, 1, gap), VcpuState::AllInGuest(1));
        assert!(matches!(vcpu_state(&root, 30, 1, gap), VcpuState::Unknown(_)));
        std::fs::remove_dir_all(&root).unwrap();
    }
}
