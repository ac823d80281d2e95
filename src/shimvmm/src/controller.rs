//! The API's handle on the VMM: InstanceStart hands the configuration to the
//! main thread (which builds and runs the VM); the other actions act on the
//! running VM through its [`vmm::VmmHandle`].

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use api::{VmSpec, VmState, VmmController};

/// A start request and where to send the outcome of building the VM.
pub type StartRequest = (VmSpec, Sender<Result<(), String>>);

pub struct Controller {
    start_tx: Mutex<Sender<StartRequest>>,
    running: Mutex<Option<vmm::VmmHandle>>,
    halted: Mutex<bool>,
}

impl Controller {
    pub fn new() -> (Controller, Receiver<StartRequest>) {
        let (tx, rx) = channel();
        (Controller { start_tx: Mutex::new(tx), running: Mutex::new(None), halted: Mutex::new(false) }, rx)
    }

    pub fn set_running(&self, handle: vmm::VmmHandle) {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }

    pub fn set_halted(&self) {
        *self.halted.lock().unwrap_or_else(|p| p.into_inner()) = true;
    }

    fn handle(&self) -> Option<vmm::VmmHandle> {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl VmmController for Controller {
    fn start(&self, spec: &VmSpec) -> Result<(), String> {
        let (reply_tx, reply_rx) = channel();
        self.start_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send((spec.clone(), reply_tx))
            .map_err(|_| "the VMM is not accepting a start request".to_string())?;
        reply_rx.recv().map_err(|_| "the VMM stopped before the VM started".to_string())?
    }

    fn send_ctrl_alt_del(&self) -> Result<(), String> {
        let h = self.handle().ok_or("the VM is not running")?;
        h.send_ctrl_alt_del();
        Ok(())
    }

    fn flush_metrics(&self, path: Option<&Path>) -> Result<(), String> {
        let h = self.handle().ok_or("the VM is not running")?;
        if let Some(p) = path {
            h.set_metrics_path(Some(p.to_path_buf()));
        }
        h.flush_metrics().map_err(|e| format!("cannot write metrics: {e}"))
    }

    fn metrics(&self) -> serde_json::Value {
        self.handle().map(|h| h.metrics()).unwrap_or_else(|| serde_json::json!({}))
    }

    fn state(&self) -> VmState {
        if *self.halted.lock().unwrap_or_else(|p| p.into_inner()) {
            VmState::Halted
        } else if self.handle().is_some() {
            VmState::Running
        } else {
            VmState::NotStarted
        }
    }
}
