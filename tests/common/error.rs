//! The harness's error type: every failure that involves a guest carries the
//! tail of its console, so a failed test shows what the guest was doing.

use std::fmt;
use std::process::ExitStatus;
use std::time::Duration;

/// Result alias for harness operations.
pub type Result<T> = std::result::Result<T, HarnessError>;

/// Why a harness operation failed.
#[derive(Debug)]
pub enum HarnessError {
    /// Preparing the test failed (artifacts, tools, spawning a process).
    Setup(String),
    /// The awaited output or exit did not come in time; the process was killed
    /// if it was an exit we waited for.
    Timeout {
        /// What we waited for.
        what: String,
        /// How long we waited.
        after: Duration,
        /// The last console lines.
        tail: String,
    },
    /// The process ended (or closed its output) before the awaited output.
    Exited {
        /// What we waited for.
        what: String,
        /// The exit status, if it was already collected.
        status: Option<ExitStatus>,
        /// The last console lines.
        tail: String,
    },
    /// The guest kernel reported an RCU stall or a soft lockup (a vCPU stopped making progress),
    /// or the guest caused no VM exits (host interrupts aside) for a minute (it hung). Waiting any longer
    /// cannot help, so the wait fails at once.
    GuestStalled {
        /// What we waited for.
        what: String,
        /// The kernel's stall line.
        line: String,
        /// The last console lines.
        tail: String,
    },
    /// The guest's heartbeat stopped while a vCPU thread of the VMM stayed
    /// outside `KVM_RUN`: the VMM, not the guest, stopped running it.
    VmmStuck {
        /// What we waited for.
        what: String,
        /// The silence and the threads.
        why: String,
        /// The last console lines.
        tail: String,
    },
    /// QEMU (run with `-no-reboot`) exited cleanly although the guest kernel
    /// never announced a reboot, power-off or panic: the vCPU reset on its
    /// own, a triple fault, which QEMU does not report (shimvmm does).
    GuestReset {
        /// What we waited for.
        what: String,
        /// The last console lines.
        tail: String,
    },
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Setup(msg) => write!(f, "test setup failed: {msg}"),
            HarnessError::Timeout { what, after, tail } => write!(
                f,
                "timed out after {:.1} s waiting for {what}; last console lines:\n{tail}",
                after.as_secs_f64()
            ),
            HarnessError::Exited { what, status, tail } => {
                let status = status.map_or_else(|| "closed its output".to_string(), |s| format!("exited ({s})"));
                write!(f, "process {status} before {what}; last console lines:\n{tail}")
            }
            HarnessError::GuestReset { what, tail } => write!(
                f,
                "the guest TRIPLE-FAULTED under QEMU while we waited for {what}: QEMU (-no-reboot) \
                 exited 0 and the guest kernel announced no reboot, power-off or panic; \
                 last console lines:\n{tail}"
            ),
            HarnessError::VmmStuck { what, why, tail } => {
                write!(
                    f,
                    "the VMM stopped running its guest while we waited for {what} ({why}); last console lines:\n{tail}"
                )
            }
            HarnessError::GuestStalled { what, line, tail } => write!(
                f,
                "the guest stopped while we waited for {what} ({line}); \
                 last console lines:\n{tail}"
            ),
        }
    }
}

impl std::error::Error for HarnessError {}

impl From<std::io::Error> for HarnessError {
    fn from(e: std::io::Error) -> Self {
        HarnessError::Setup(e.to_string())
    }
}
