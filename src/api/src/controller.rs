//! What the API needs from the VMM; the `shimvmm` binary implements it.

use std::path::Path;

use crate::spec::VmSpec;
use crate::types::VmState;

/// The VMM side of the API.
///
/// Methods are called from the API's worker thread, one request at a time
/// for `start` and the other actions (the API serialises them), while
/// `state` and `metrics` may run concurrently with them. An `Err(message)`
/// reaches the client as `400 {"fault_message": message}`, so make it a
/// one-line, actionable sentence. A panic becomes a 500 and the API keeps
/// serving.
pub trait VmmController: Send + Sync + 'static {
    /// Build and boot the VM described by `spec` (already validated). Called
    /// once per successful InstanceStart. If it fails the API stays in the
    /// pre-boot state: the user may fix the configuration and retry, so a
    /// failed start must release what it took.
    fn start(&self, spec: &VmSpec) -> Result<(), String>;
    /// Press Ctrl+Alt+Del (i8042 reset request) in a running guest.
    fn send_ctrl_alt_del(&self) -> Result<(), String>;
    /// Write the current metrics to `path` (the `PUT /metrics` path, if set).
    fn flush_metrics(&self, path: Option<&Path>) -> Result<(), String>;
    /// The current counters, served as `GET /metrics`.
    fn metrics(&self) -> serde_json::Value;
    /// The life-cycle state reported by `GET /`.
    fn state(&self) -> VmState;
}
