//! The API's handle on the VMM: InstanceStart hands the configuration to the
//! main thread (which builds and runs the VM); the other actions act on the
//! running VM through its [`vmm::VmmHandle`]; the logger and the metrics
//! file are the process's.

use std::path::Path;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};

use api::{ControllerError, Logger, Metrics, Preflight, RateLimiter, VmSpec, VmState, VmmController};
use vmm::config::sync::lock_unpoisoned;

use crate::metrics::MetricsSink;

/// A start request and where to send the outcome of building the VM.
pub type StartRequest = (VmSpec, Sender<Result<(), ControllerError>>);

pub struct Controller {
    start_tx: Mutex<Sender<StartRequest>>,
    running: Mutex<Option<vmm::VmmHandle>>,
    halted: Mutex<bool>,
    metrics: Mutex<Option<MetricsSink>>,
}

impl Controller {
    pub fn new() -> (Controller, Receiver<StartRequest>) {
        let (tx, rx) = channel();
        let ctl = Controller {
            start_tx: Mutex::new(tx),
            running: Mutex::new(None),
            halted: Mutex::new(false),
            metrics: Mutex::new(None),
        };
        (ctl, rx)
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

    /// Append a metrics line, if a metrics file is set up and the VM runs.
    pub fn write_metrics(&self) -> Result<(), ControllerError> {
        let Some(vm) = self.handle() else { return Ok(()) };
        let mut sink = lock_unpoisoned(&self.metrics);
        match sink.as_mut() {
            Some(s) => s
                .write(&vm.metrics())
                .map_err(|e| ControllerError::vmm(format!("cannot write metrics to {}: {e}", s.path().display()))),
            None => Ok(()),
        }
    }

    /// Write metrics every [`crate::metrics::PERIOD`] from a thread of its own.
    pub fn spawn_periodic_metrics(self: &Arc<Self>) {
        let ctl = Arc::downgrade(self);
        let spawned = std::thread::Builder::new().name("fc_metrics".into()).spawn(move || loop {
            std::thread::sleep(crate::metrics::PERIOD);
            let Some(ctl) = ctl.upgrade() else { return };
            if let Err(e) = ctl.write_metrics() {
                log::warn!("{e}");
            }
        });
        if let Err(e) = spawned {
            log::warn!("no periodic metrics: cannot start their thread: {e}");
        }
    }
}

/// The spec the VMM builds: metrics are written by [`Controller`] (as lines,
/// to a file or FIFO), not by the VMM's own exit-time snapshot.
pub fn vmm_spec(spec: &VmSpec) -> Result<VmSpec, String> {
    let config = api::VmConfig { metrics: None, ..spec.clone().into() };
    VmSpec::try_from(config).map_err(|e| e.to_string())
}

/// Open `path` as the VMM will (read-only or read-write), to refuse at once
/// a file it could not use.
fn check_opens(field: &str, path: &Path, write: bool) -> Result<(), ControllerError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open(path)
        .map(drop)
        .map_err(|e| ControllerError::vmm(format!("{field}: cannot open {}: {e}", path.display())))
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

    fn flush_metrics(&self, _path: Option<&Path>) -> Result<(), ControllerError> {
        self.running()?;
        self.write_metrics()
    }

    fn metrics(&self) -> serde_json::Value {
        self.handle().map(|h| h.metrics()).unwrap_or_else(|| serde_json::json!({}))
    }

    fn state(&self) -> VmState {
        if *lock_unpoisoned(&self.halted) {
            VmState::Halted
        } else if let Some(h) = lock_unpoisoned(&self.running).as_ref() {
            if h.is_paused() {
                VmState::Paused
            } else {
                VmState::Running
            }
        } else {
            VmState::NotStarted
        }
    }

    fn preflight(&self, item: Preflight<'_>) -> Result<(), ControllerError> {
        match item {
            Preflight::BootSource(boot) => {
                check_opens("kernel_image_path", &boot.kernel_image_path, false)?;
                if let Some(initrd) = &boot.initrd_path {
                    check_opens("initrd_path", initrd, false)?;
                }
                Ok(())
            }
            Preflight::Drive(drive) => check_opens("path_on_host", &drive.path_on_host, !drive.is_read_only),
        }
    }

    fn configure_logger(&self, logger: &Logger) -> Result<(), ControllerError> {
        crate::logger::configure(logger).map_err(|e| ControllerError::Vmm(Box::new(e)))
    }

    fn replace_drive(&self, drive_id: &str, path: &Path) -> Result<(), ControllerError> {
        self.running()?.replace_drive(drive_id, path).map_err(|e| ControllerError::Vmm(Box::new(e)))
    }

    fn set_drive_rate_limiter(&self, drive_id: &str, limiter: Option<&RateLimiter>) -> Result<(), ControllerError> {
        self.running()?.set_drive_rate_limiter(drive_id, limiter).map_err(|e| ControllerError::Vmm(Box::new(e)))
    }

    fn set_net_rate_limiters(
        &self,
        iface_id: &str,
        rx: Option<&RateLimiter>,
        tx: Option<&RateLimiter>,
    ) -> Result<(), ControllerError> {
        self.running()?.set_net_rate_limiters(iface_id, rx, tx).map_err(|e| ControllerError::Vmm(Box::new(e)))
    }

    fn pause(&self) -> Result<(), ControllerError> {
        self.running()?.pause().map_err(|e| ControllerError::Vmm(Box::new(e)))
    }

    fn resume(&self) -> Result<(), ControllerError> {
        self.running()?.resume();
        Ok(())
    }

    fn configure_metrics(&self, metrics: &Metrics) -> Result<(), ControllerError> {
        let sink = MetricsSink::open(&metrics.metrics_path)
            .map_err(|e| ControllerError::vmm(format!("cannot open {}: {e}", metrics.metrics_path.display())))?;
        *lock_unpoisoned(&self.metrics) = Some(sink);
        Ok(())
    }
}
