//! An emulated IOMMU for the NIC model: the model can only reach memory that
//! was mapped, exactly like the NIC behind VFIO; anything else is a fault.

use std::sync::Mutex;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::dma::DmaMapper;
use vmm_config::sync::lock_unpoisoned as lock;

/// The model's IOMMU domain: a list of mapped memory objects (IOVA = their
/// addresses).
#[derive(Default)]
pub struct ModelIommu {
    windows: Mutex<Vec<GuestMemoryMmap>>,
}

impl ModelIommu {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_window<T>(&self, iova: u64, len: usize, f: impl FnOnce(&GuestMemoryMmap) -> T) -> Option<T> {
        if len == 0 || iova.checked_add(len as u64).is_none() {
            return None;
        }
        let w = lock(&self.windows);
        w.iter().find(|m| m.check_range(GuestAddress(iova), len)).map(f)
    }

    /// DMA write; `false` is an IOMMU fault (nothing written).
    pub fn write(&self, iova: u64, data: &[u8]) -> bool {
        self.with_window(iova, data.len(), |m| m.write_slice(data, GuestAddress(iova)).is_ok()).unwrap_or(false)
    }

    /// DMA read; `false` is an IOMMU fault.
    pub fn read(&self, iova: u64, data: &mut [u8]) -> bool {
        let len = data.len();
        self.with_window(iova, len, |m| m.read_slice(data, GuestAddress(iova)).is_ok()).unwrap_or(false)
    }

    /// Number of mapped windows (tests).
    pub fn windows(&self) -> usize {
        lock(&self.windows).len()
    }
}

fn key(mem: &GuestMemoryMmap) -> Vec<(u64, u64)> {
    mem.iter().map(|r| (r.start_addr().raw_value(), r.len())).collect()
}

impl DmaMapper for ModelIommu {
    fn map(&self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let mut w = lock(&self.windows);
        for r in mem.iter() {
            let (s, l) = (r.start_addr().raw_value(), r.len());
            let overlaps = w.iter().any(|m| {
                m.iter().any(|x| s < x.start_addr().raw_value() + x.len() && x.start_addr().raw_value() < s + l)
            });
            if overlaps {
                return Err(format!("IOVA {s:#x}+{l:#x} overlaps an existing mapping"));
            }
        }
        w.push(mem.clone());
        Ok(())
    }

    fn unmap(&self, mem: &GuestMemoryMmap) -> Result<(), String> {
        let k = key(mem);
        let mut w = lock(&self.windows);
        w.retain(|m| key(m) != k);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_mapped_memory_is_reachable() {
        let io = ModelIommu::new();
        let g = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x1000)]).unwrap();
        assert!(!io.write(0x1000, &[1]));
        io.map(&g).unwrap();
        assert!(io.write(0x1000, &[1, 2]));
        assert!(!io.write(0x1fff, &[1, 2]), "straddles the end");
        assert!(!io.write(u64::MAX, &[1]));
        let mut b = [0u8; 2];
        assert!(io.read(0x1000, &mut b));
        assert_eq!(b, [1, 2]);
        assert!(io.map(&g).is_err(), "overlap rejected");
        io.unmap(&g).unwrap();
        assert!(!io.read(0x1000, &mut b));
    }
}
