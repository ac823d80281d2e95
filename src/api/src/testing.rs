//! A [`VmmController`] that records what the API asked of it, for tests of
//! the API itself (feature `testing`). It boots nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use vmm_config::sync::lock_unpoisoned as lock;
use vmm_config::{Logger, Metrics, RateLimiter, VmSpec};

use crate::controller::{ControllerError, VmmController};
use crate::types::VmState;

/// One call the API made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Start(Box<VmSpec>),
    SendCtrlAltDel,
    FlushMetrics(Option<PathBuf>),
    ConfigureLogger(Logger),
    ConfigureMetrics(Metrics),
    ReplaceDrive(String, PathBuf),
    SetDriveRateLimiter(String, Option<RateLimiter>),
    SetNetRateLimiters(String, Option<RateLimiter>, Option<RateLimiter>),
    Pause,
    Resume,
}

/// Records calls; can be told to fail, panic or be slow in `start`.
#[derive(Debug, Default)]
pub struct RecordingController {
    calls: Mutex<Vec<Call>>,
    state: Mutex<Option<VmState>>,
    start_error: Mutex<Option<String>>,
    start_delay: Mutex<Option<Duration>>,
    panic_on_start: Mutex<bool>,
    metrics_reads: AtomicU64,
}

impl RecordingController {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The specs `start` was called with.
    pub fn started_specs(&self) -> Vec<VmSpec> {
        lock(&self.calls)
            .iter()
            .filter_map(|c| match c {
                Call::Start(spec) => Some((**spec).clone()),
                _ => None,
            })
            .collect()
    }

    /// Make the next starts fail with `message` (`None`: succeed again).
    pub fn fail_start_with(&self, message: Option<&str>) {
        *lock(&self.start_error) = message.map(str::to_owned);
    }

    /// Make `start` take this long, as loading a kernel would.
    pub fn set_start_delay(&self, delay: Option<Duration>) {
        *lock(&self.start_delay) = delay;
    }

    /// Make `start` panic, as a VMM bug would.
    pub fn panic_on_start(&self, on: bool) {
        *lock(&self.panic_on_start) = on;
    }
}

impl VmmController for RecordingController {
    fn start(&self, spec: &VmSpec) -> Result<(), ControllerError> {
        if let Some(delay) = *lock(&self.start_delay) {
            std::thread::sleep(delay);
        }
        if *lock(&self.panic_on_start) {
            panic!("RecordingController: start panics as asked");
        }
        if let Some(message) = lock(&self.start_error).clone() {
            return Err(ControllerError::vmm(message));
        }
        lock(&self.calls).push(Call::Start(Box::new(spec.clone())));
        *lock(&self.state) = Some(VmState::Running);
        Ok(())
    }

    fn send_ctrl_alt_del(&self) -> Result<(), ControllerError> {
        lock(&self.calls).push(Call::SendCtrlAltDel);
        Ok(())
    }

    fn flush_metrics(&self, path: Option<&Path>) -> Result<(), ControllerError> {
        lock(&self.calls).push(Call::FlushMetrics(path.map(Path::to_owned)));
        Ok(())
    }

    fn metrics(&self) -> serde_json::Value {
        let reads = self.metrics_reads.fetch_add(1, Ordering::Relaxed) + 1;
        serde_json::json!({ "api": { "metrics_reads": reads, "calls": lock(&self.calls).len() } })
    }

    fn state(&self) -> VmState {
        lock(&self.state).unwrap_or(VmState::NotStarted)
    }

    fn configure_logger(&self, logger: &Logger) -> Result<(), ControllerError> {
        lock(&self.calls).push(Call::ConfigureLogger(logger.clone()));
        Ok(())
    }

    fn configure_metrics(&self, metrics: &Metrics) -> Result<(), ControllerError> {
        lock(&self.calls).push(Call::ConfigureMetrics(metrics.clone()));
        Ok(())
    }

    fn replace_drive(&self, drive_id: &str, path: &Path) -> Result<(), ControllerError> {
        lock(&self.calls).push(Call::ReplaceDrive(drive_id.to_string(), path.to_owned()));
        Ok(())
    }

    fn set_drive_rate_limiter(&self, drive_id: &str, limiter: Option<&RateLimiter>) -> Result<(), ControllerError> {
        lock(&self.calls).push(Call::SetDriveRateLimiter(drive_id.to_string(), limiter.copied()));
        Ok(())
    }

    fn set_net_rate_limiters(
        &self,
        iface_id: &str,
        rx: Option<&RateLimiter>,
        tx: Option<&RateLimiter>,
    ) -> Result<(), ControllerError> {
        lock(&self.calls).push(Call::SetNetRateLimiters(iface_id.to_string(), rx.copied(), tx.copied()));
        Ok(())
    }

    fn pause(&self) -> Result<(), ControllerError> {
        lock(&self.calls).push(Call::Pause);
        *lock(&self.state) = Some(VmState::Paused);
        Ok(())
    }

    fn resume(&self) -> Result<(), ControllerError> {
        lock(&self.calls).push(Call::Resume);
        *lock(&self.state) = Some(VmState::Running);
        Ok(())
    }
}
