//! The virtio-mmio interrupt: an InterruptStatus register plus a KVM irqfd.

use std::sync::atomic::{AtomicU32, Ordering};

use vmm_sys_util::eventfd::EventFd;

/// InterruptStatus bit: a used buffer notification (VIRTIO 1.2, 4.2.2).
pub const INT_VRING: u32 = 0x1;
/// InterruptStatus bit: the configuration changed.
pub const INT_CONFIG: u32 = 0x2;

pub struct Interrupt {
    status: AtomicU32,
    irqfd: EventFd,
}

impl Interrupt {
    /// `irqfd` must already be registered with KVM for the device's GSI.
    pub fn new(irqfd: EventFd) -> Self {
        Interrupt { status: AtomicU32::new(0), irqfd }
    }

    pub fn irqfd(&self) -> &EventFd {
        &self.irqfd
    }

    pub fn signal_used_queue(&self) -> std::io::Result<()> {
        self.signal(INT_VRING)
    }

    pub fn signal_config_change(&self) -> std::io::Result<()> {
        self.signal(INT_CONFIG)
    }

    fn signal(&self, bit: u32) -> std::io::Result<()> {
        self.status.fetch_or(bit, Ordering::SeqCst);
        self.irqfd.write(1)
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// InterruptACK: the driver clears the bits it handled.
    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }

    pub fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
    }
}
