//! The virtio-mmio transport (VIRTIO 1.2, section 4.2), modern interface only.
//!
//! The VMM maps each device at its own 4 KiB window, forwards guest MMIO
//! accesses to [`MmioTransport::read`] / [`MmioTransport::write`], and registers
//! the device's queue eventfds (`VirtioDevice::queue_events()`) as KVM
//! ioeventfds at `base + QUEUE_NOTIFY_OFFSET` with datamatch = queue index (u32),
//! so queue kicks normally never reach the transport.

mod mmio;
pub mod regs;

pub use mmio::MmioTransport;
pub use regs::MMIO_WINDOW_SIZE;

/// Offset of the QueueNotify register, where the VMM puts the ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = regs::QUEUE_NOTIFY;

#[cfg(test)]
mod block_e2e_tests;
#[cfg(test)]
mod tests;
