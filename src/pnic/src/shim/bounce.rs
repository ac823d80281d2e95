//! Bounce buffers for the counted copy fallback: NIC-owned DMA memory (mapped
//! above guest RAM) used when a guest buffer cannot be handed to the NIC.
//!
//! Each buffer is [`BOUNCE_BUF_SIZE`] bytes. The NIC writes a received frame at
//! offset [`VNET_HDR_LEN`] so the copy into guest memory (header + frame at
//! the guest address) has source and destination equally aligned: memcpy to a
//! destination offset by 12 from an aligned source runs many times slower on
//! some CPUs.

use virtio_devices::net::backend::VNET_HDR_LEN;

use crate::dma::{DmaArea, DmaError};

pub const BOUNCE_BUF_SIZE: u64 = 2048;

pub struct BouncePool {
    area: DmaArea,
    free: Vec<u32>,
    count: u32,
}

impl BouncePool {
    /// A pool over `area`, carved into `BOUNCE_BUF_SIZE` buffers.
    pub fn new(area: DmaArea) -> Self {
        let count = (area.len() as u64 / BOUNCE_BUF_SIZE) as u32;
        BouncePool { area, free: (0..count).rev().collect(), count }
    }

    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    pub fn release(&mut self, idx: u32) {
        debug_assert!(idx < self.count && !self.free.contains(&idx));
        if idx < self.count {
            self.free.push(idx);
        }
    }

    /// Make every buffer free again (after the NIC was quiesced).
    pub fn reset(&mut self) {
        self.free = (0..self.count).rev().collect();
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn capacity(&self) -> usize {
        self.count as usize
    }

    /// Start IOVA of buffer `idx`.
    pub fn iova(&self, idx: u32) -> u64 {
        self.area.iova() + u64::from(idx) * BOUNCE_BUF_SIZE
    }

    /// Where the NIC should write a received frame, and how much room there is.
    pub fn rx_target(&self, idx: u32) -> (u64, u32) {
        (self.iova(idx) + VNET_HDR_LEN as u64, (BOUNCE_BUF_SIZE - VNET_HDR_LEN as u64) as u32)
    }

    pub fn write(&self, idx: u32, offset: u64, data: &[u8]) -> Result<(), DmaError> {
        self.check(offset, data.len())?;
        self.area.write(u64::from(idx) * BOUNCE_BUF_SIZE + offset, data)
    }

    pub fn read(&self, idx: u32, offset: u64, data: &mut [u8]) -> Result<(), DmaError> {
        self.check(offset, data.len())?;
        self.area.read(u64::from(idx) * BOUNCE_BUF_SIZE + offset, data)
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), DmaError> {
        if offset + len as u64 > BOUNCE_BUF_SIZE {
            return Err(DmaError::OutOfBounds { offset, len, size: BOUNCE_BUF_SIZE as usize });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_hands_out_distinct_buffers() {
        let mut p = BouncePool::new(DmaArea::new(0x4000_0000, 4 * 2048).unwrap());
        assert_eq!(p.capacity(), 4);
        let a = p.alloc().unwrap();
        let b = p.alloc().unwrap();
        assert_ne!(p.iova(a), p.iova(b));
        assert_eq!(p.rx_target(a).0, p.iova(a) + 12);
        assert!(p.write(a, 2040, &[0; 9]).is_err(), "stays inside its buffer");
        p.release(a);
        p.reset();
        assert_eq!(p.available(), 4);
    }
}
