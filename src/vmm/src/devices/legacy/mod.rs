//! Legacy PC devices: 16550 serial (COM1), i8042 keyboard controller (reset and
//! Ctrl-Alt-Del), ACPI sleep registers (poweroff).

pub mod acpi_pm;
pub mod i8042;
pub mod serial;

use vmm_sys_util::eventfd::EventFd;

/// Raises an interrupt through a KVM irqfd (or any eventfd).
pub struct EventFdTrigger(pub EventFd);

impl vm_superio::Trigger for EventFdTrigger {
    type E = std::io::Error;
    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}
