//! What the API needs from the VMM; the `shimvmm` binary implements it.

use std::path::Path;

use vmm_config::{BootSource, Drive, Logger, Metrics, RateLimiter, VmSpec};

use crate::types::VmState;

/// Why an action the API asked of the VMM failed. The client sees
/// `400 {"fault_message": "<Action> failed: <this error>"}`, so every
/// message is one line that says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("the VM is not running")]
    NotRunning,
    #[error("the VMM is not accepting a start request (it is shutting down)")]
    NotAccepting,
    #[error("the VMM stopped before the VM started")]
    StoppedBeforeStart,
    /// The VMM failed (building the VM, writing metrics); its own error,
    /// boxed because the API does not depend on the VMM crate.
    #[error(transparent)]
    Vmm(Box<dyn std::error::Error + Send + Sync>),
}

impl ControllerError {
    /// A VMM error with this message (for controllers in tests).
    pub fn vmm(message: impl Into<String>) -> Self {
        ControllerError::Vmm(message.into().into())
    }
}

/// An object about to be accepted, for the VMM to check against the host
/// (Firecracker opens the kernel and drive files when they are PUT).
#[derive(Debug, Clone, Copy)]
pub enum Preflight<'a> {
    BootSource(&'a BootSource),
    Drive(&'a Drive),
}

/// The VMM side of the API.
///
/// Methods are called from the API's worker thread, one request at a time
/// for `start` and the other actions (the API serialises them), while
/// `state` and `metrics` may run concurrently with them. A panic becomes a
/// 500 and the API keeps serving.
pub trait VmmController: Send + Sync + 'static {
    /// Build and boot the VM described by `spec` (already validated). Called
    /// once per successful InstanceStart. If it fails the API stays in the
    /// pre-boot state: the user may fix the configuration and retry, so a
    /// failed start must release what it took.
    fn start(&self, spec: &VmSpec) -> Result<(), ControllerError>;
    /// Press Ctrl+Alt+Del (i8042 reset request) in a running guest.
    fn send_ctrl_alt_del(&self) -> Result<(), ControllerError>;
    /// Write the current metrics to `path` (the `PUT /metrics` path, if set).
    fn flush_metrics(&self, path: Option<&Path>) -> Result<(), ControllerError>;
    /// The current counters, served as `GET /metrics`.
    fn metrics(&self) -> serde_json::Value;
    /// The life-cycle state reported by `GET /`.
    fn state(&self) -> VmState;
    /// Check that the host can provide `item` (its files exist and open);
    /// the error is the client's one-line fault message.
    fn preflight(&self, item: Preflight<'_>) -> Result<(), ControllerError> {
        let _ = item;
        Ok(())
    }
    /// Send the log to `logger.log_path` (which must exist) with its level
    /// and format, from now on (`PUT /logger`).
    fn configure_logger(&self, logger: &Logger) -> Result<(), ControllerError>;
    /// Open `metrics.metrics_path` (which must exist, a file or a FIFO) for
    /// the periodic and FlushMetrics writes (`PUT /metrics`).
    fn configure_metrics(&self, metrics: &Metrics) -> Result<(), ControllerError>;
    /// Put the image at `path` (already checked to open) behind the running
    /// drive `drive_id` (`PATCH /drives/{id}` after InstanceStart).
    fn replace_drive(&self, drive_id: &str, path: &Path) -> Result<(), ControllerError>;
    /// Set the token buckets of the running drive `drive_id` (`None`: no
    /// limit), `PATCH /drives/{id}` with a `rate_limiter` after InstanceStart.
    fn set_drive_rate_limiter(&self, drive_id: &str, limiter: Option<&RateLimiter>) -> Result<(), ControllerError>;
    /// Set the RX and TX token buckets of the running interface `iface_id`
    /// (`None`: no limit), `PATCH /network-interfaces/{id}`.
    fn set_net_rate_limiters(
        &self,
        iface_id: &str,
        rx: Option<&RateLimiter>,
        tx: Option<&RateLimiter>,
    ) -> Result<(), ControllerError>;
    /// Stop the vCPUs and the devices of the running VM (`PATCH /vm`
    /// Paused); returns once none of them runs. Pausing a paused VM is
    /// not an error.
    fn pause(&self) -> Result<(), ControllerError>;
    /// Let a paused VM run again (`PATCH /vm` Resumed); resuming a running
    /// VM is not an error.
    fn resume(&self) -> Result<(), ControllerError>;
}
