//! The API's own request and response bodies, with Firecracker's field
//! names; the configuration objects are `vmm_config`'s.
//!
//! Every request type denies unknown fields: a misspelt field is an error the
//! user sees, not a setting silently ignored.

use serde::{Deserialize, Serialize};

/// Application name reported by `GET /`.
pub const APP_NAME: &str = "shimvmm";
/// shimvmm's own version, reported by `GET /` (`vmm_version`).
pub const VMM_VERSION: &str = env!("CARGO_PKG_VERSION");
/// The Firecracker release whose API (paths, bodies, status codes) and
/// command line shimvmm implements: `GET /version` and `--version` report
/// it, as orchestrators check it (Kata requires at least 0.21.1).
pub const FIRECRACKER_API_VERSION: &str = "1.12.1";

/// The actions of `PUT /actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ActionType {
    InstanceStart,
    SendCtrlAltDel,
    FlushMetrics,
}

/// `PUT /actions` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceActionInfo {
    pub action_type: ActionType,
}

/// The VM's life-cycle state as `GET /` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    #[serde(rename = "Not started")]
    NotStarted,
    Running,
    Paused,
    /// The guest has shut down or crashed; the process still answers.
    Halted,
}

/// `GET /` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstanceInfo {
    pub id: String,
    pub state: VmState,
    pub vmm_version: String,
    pub app_name: String,
}

/// `GET /version` body (Firecracker's `FirecrackerVersion`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirecrackerVersion {
    pub firecracker_version: String,
}

/// The states `PATCH /vm` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestedVmState {
    Paused,
    Resumed,
}

/// `PATCH /vm` body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmStateUpdate {
    pub state: RequestedVmState,
}

/// Every 4xx/5xx body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    pub fault_message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_uses_firecracker_spelling() {
        assert_eq!(serde_json::to_string(&VmState::NotStarted).unwrap(), "\"Not started\"");
        assert_eq!(serde_json::to_string(&VmState::Running).unwrap(), "\"Running\"");
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<InstanceActionInfo>(r#"{"action_type":"FlushMetrics","x":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }
}
