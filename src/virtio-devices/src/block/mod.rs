//! virtio-blk on a raw image file (VIRTIO 1.2, 5.2).
//!
//! [`Block`] implements `VirtioDevice` (driven by the mmio transport) and
//! `event_manager::MutEventSubscriber` (its queue eventfd is served on the
//! event-loop thread). Data moves with pread/pwrite directly between the image
//! and guest RAM; the guest's descriptor chains are checked first
//! ([`request`]) and a bad one fails only its own request.

mod device;
mod disk;
mod metrics;
pub mod request;
#[cfg(test)]
pub(crate) mod test_util;
#[cfg(test)]
mod tests;

pub use device::{Block, CONFIG_LEN, QUEUE_SIZE};
pub use device::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO, VIRTIO_BLK_F_SEG_MAX, VIRTIO_F_VERSION_1,
    VIRTIO_RING_F_EVENT_IDX,
};
pub use disk::{BlockConfig, BlockError, Disk, ID_BYTES, SECTOR_SIZE};
pub use metrics::BlockMetrics;
