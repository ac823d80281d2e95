//! The API's handle on the VMM: InstanceStart hands the configuration to the
//! main thread (which builds and runs the VM); the other actions act on the
//! running VM through its [`vmm::VmmHandle`].

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;

use api::{ControllerError, VmSpec, VmState, VmmController};
use vmm::config::sync::lock_unpoisoned;

/// A start request and where to send the outcome of building the VM.
pub type StartRequest = (VmSpec, Sender<Result<(), ControllerError>>);

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
        *lock_unpoisoned(&self.running) = Some(handle);
    }

    /// The VM stopped: its handle (and so the last reference to its
    /// devices) is let go, so their drop (a pNIC's stop sequence) runs now.
    pub fn set_halted(&self) {
        *lock_unpoisoned(&self.halted) = true;
        lock_unpoisoned(&self.running).take();
    }

    fn handle(&self) -> Option<vmm::VmmHandle> {
        lock_unpoisoned(&self.running).clone()
    }

    fn running(&self) -> Result<vmm::VmmHandle, ControllerError> {
        self.handle().ok_or(ControllerError::NotRunning)
    }
}

impl VmmController for Controller {
    fn start(&self, spec: &VmSpec) -> Result<(), ControllerError> {
        let (reply_tx, reply_rx) = channel();
        lock_unpoisoned(&self.start_tx).send((spec.clone(), reply_tx)).map_err(|_| ControllerError::NotAccepting)?;
        reply_rx.recv().map_err(|_| ControllerError::StoppedBeforeStart)?
    }

    fn send_ctrl_alt_del(&self) -> Result<(), ControllerError> {
        self.running()?.send_ctrl_alt_del();
        Ok(())
    }

    fn flush_metrics(&self, path: Option<&Path>) -> Result<(), ControllerError> {
        let h = self.running()?;
        if let Some(p) = path {
            h.set_metrics_path(Some(p.to_path_buf()));
        }
        h.flush_metrics().map_err(|e| ControllerError::Vmm(Box::new(e)))
    }

    fn metrics(&self) -> serde_json::Value {
        self.handle().map(|h| h.metrics()).unwrap_or_else(|| serde_json::json!({}))
    }

    fn state(&self) -> VmState {
        if *lock_unpoisoned(&self.halted) {
            VmState::Halted
        } else if lock_unpoisoned(&self.running).is_some() {
            VmState::Running
        } else {
            VmState::NotStarted
        }
    }
}
