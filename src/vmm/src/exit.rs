//! Why the VM stops, and how any thread asks the main loop to stop it.

use std::sync::Mutex;

use vmm_config::sync::lock_unpoisoned;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// The reasons shimvmm ends; the first one reported wins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The guest rebooted (i8042 reset line or ACPI reset): exit status 0.
    GuestReset,
    /// The guest powered off through ACPI: exit status 0.
    GuestPoweroff,
    /// SIGINT/SIGTERM: a clean stop.
    Signal(i32),
    /// A vCPU stopped with an error (triple fault, internal error, ...).
    VcpuError(String),
    /// The VMM itself failed while running.
    VmmError(String),
    /// A vCPU thread stopped because the VMM is tearing the VM down (never
    /// the first reason: something else asked for the stop).
    Stopped,
}

impl ExitReason {
    pub fn exit_code(&self) -> i32 {
        match self {
            ExitReason::GuestReset | ExitReason::GuestPoweroff | ExitReason::Signal(_) | ExitReason::Stopped => 0,
            ExitReason::VcpuError(_) => 2,
            ExitReason::VmmError(_) => 3,
        }
    }
}

pub struct ExitHandle {
    evt: EventFd,
    reason: Mutex<Option<ExitReason>>,
}

impl ExitHandle {
    pub fn new() -> std::io::Result<Self> {
        Ok(ExitHandle { evt: EventFd::new(EFD_NONBLOCK)?, reason: Mutex::new(None) })
    }

    /// Records `reason` (unless one is already recorded) and wakes the main loop.
    pub fn request(&self, reason: ExitReason) {
        let mut r = lock_unpoisoned(&self.reason);
        if r.is_none() {
            *r = Some(reason);
        }
        let _ = self.evt.write(1);
    }

    pub fn reason(&self) -> Option<ExitReason> {
        lock_unpoisoned(&self.reason).clone()
    }

    pub fn eventfd(&self) -> &EventFd {
        &self.evt
    }
}

/// Event-loop side of stopping: wakes the loop when any thread requests an
/// exit, and turns the ACPI poweroff event into [`ExitReason::GuestPoweroff`].
pub struct ExitEvents {
    exit: std::sync::Arc<ExitHandle>,
    poweroff: EventFd,
}

impl ExitEvents {
    pub fn new(exit: std::sync::Arc<ExitHandle>, poweroff: EventFd) -> Self {
        ExitEvents { exit, poweroff }
    }
}

impl event_manager::MutEventSubscriber for ExitEvents {
    fn init(&mut self, ops: &mut event_manager::EventOps) {
        use event_manager::{EventSet, Events};
        for fd in [&self.exit.evt, &self.poweroff] {
            if let Err(e) = ops.add(Events::new(fd, EventSet::IN)) {
                log::error!("cannot watch exit events: {e}");
            }
        }
    }

    fn process(&mut self, events: event_manager::Events, _ops: &mut event_manager::EventOps) {
        use std::os::fd::AsRawFd;
        if events.fd() == self.poweroff.as_raw_fd() {
            let _ = self.poweroff.read();
            self.exit.request(ExitReason::GuestPoweroff);
        } else {
            let _ = self.exit.evt.read();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins() {
        let h = ExitHandle::new().unwrap();
        assert_eq!(h.reason(), None);
        h.request(ExitReason::GuestPoweroff);
        h.request(ExitReason::VmmError("late".into()));
        assert_eq!(h.reason(), Some(ExitReason::GuestPoweroff));
        assert_eq!(h.eventfd().read().unwrap(), 2);
        assert_eq!(ExitReason::VcpuError("x".into()).exit_code(), 2);
    }
}
