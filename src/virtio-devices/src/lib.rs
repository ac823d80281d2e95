//! virtio devices for shimvmm: the virtio-mmio transport, virtio-blk, virtio-net and virtio-rng.
//!
//! A device implements [`VirtioDevice`] (what the transport needs) and
//! `event_manager::MutEventSubscriber` (its queue kicks and backend fds are
//! handled on the VMM's event-loop thread). The transport runs on vCPU threads.

pub mod block;
pub mod files;
pub mod interrupt;
pub mod mem;
pub mod net;
pub mod rate_limiter;
pub mod rng;
pub mod transport;
pub mod vsock;

use std::sync::Arc;

use virtio_queue::QueueT;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

pub use interrupt::Interrupt;

/// Guest memory as every device sees it.
pub type GuestMemory = GuestMemoryMmap<()>;

/// virtio device ids (VIRTIO 1.2, section 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;

/// What a device gets when the driver sets DRIVER_OK.
pub struct ActivateContext {
    pub mem: GuestMemory,
    /// One per queue, in queue order; size/addresses already set by the driver.
    pub queues: Vec<virtio_queue::Queue>,
    pub interrupt: Arc<Interrupt>,
}

impl ActivateContext {
    /// The one check of what the driver set up: `want` queues, each inside guest memory.
    pub fn check_queues(&self, want: usize) -> Result<(), ActivateError> {
        if self.queues.len() != want {
            return Err(ActivateError::QueueCount { got: self.queues.len(), want });
        }
        match self.queues.iter().position(|q| !q.is_valid(&self.mem)) {
            Some(i) => Err(ActivateError::InvalidQueue(i)),
            None => Ok(()),
        }
    }

    /// For single-queue devices: the checked queue with the memory and interrupt.
    pub fn into_single_queue(self) -> Result<(GuestMemory, virtio_queue::Queue, Arc<Interrupt>), ActivateError> {
        self.check_queues(1)?;
        let ActivateContext { mem, queues, interrupt } = self;
        let queue = queues.into_iter().next().ok_or(ActivateError::InvalidQueue(0))?;
        Ok((mem, queue, interrupt))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("driver configured {got} queues, device needs {want}")]
    QueueCount { got: usize, want: usize },
    #[error("queue {0} is not valid (size or ring addresses outside guest memory)")]
    InvalidQueue(usize),
    #[error("device backend failed to start: {0}")]
    Backend(String),
}

/// The device side of a virtio device, as the transport drives it.
pub trait VirtioDevice: Send {
    fn device_type(&self) -> u32;
    /// Maximum size of each queue; its length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers (must include VIRTIO_F_VERSION_1).
    fn avail_features(&self) -> u64;
    /// The features the driver accepted (subset of `avail_features`).
    fn set_acked_features(&mut self, features: u64);
    fn read_config(&self, offset: u64, data: &mut [u8]);
    fn write_config(&mut self, offset: u64, data: &[u8]);
    /// Queue notification eventfds, one per queue, registered by the VMM as
    /// KVM ioeventfds on the transport's QueueNotify register.
    fn queue_events(&self) -> &[EventFd];
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError>;
    fn is_activated(&self) -> bool;
    /// Virtio reset. Returns only once the device (and any hardware behind it)
    /// can no longer write guest memory.
    fn reset(&mut self);
    /// Device counters for the metrics file and API, if the device keeps any.
    fn metrics(&self) -> Option<serde_json::Value> {
        None
    }
    /// The concrete device, for the operations only one kind has (a drive's
    /// image swap); `None` for devices that offer none.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}
