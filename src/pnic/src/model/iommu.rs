//! An emulated IOMMU for the NIC model: the model can only reach memory that
//! was mapped, exactly like the NIC behind VFIO; anything else is a fault.

use std::collections::btree_map::{BTreeMap, Entry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

use crate::dma::{DmaMapper, PAGE_SIZE};
use vmm_config::sync::lock_unpoisoned as lock;

/// The model's IOMMU domain: a list of mapped memory objects (IOVA = their
/// addresses).
#[derive(Default)]
pub struct ModelIommu {
    windows: Mutex<Vec<GuestMemoryMmap>>,
    /// Single guest pages (`map_page`), by IOVA, with the memory behind them.
    pages: Mutex<BTreeMap<u64, GuestMemoryMmap>>,
    /// Whether DMA accesses are recorded in `log` (tests that check where
    /// the NIC wrote; off by default, so benchmarks pay one load).
    logging: AtomicBool,
    log: Mutex<Vec<DmaAccess>>,
}

/// One DMA access the model's NIC made (recorded with
/// [`ModelIommu::start_log`]), faulted or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaAccess {
    pub iova: u64,
    pub len: usize,
    pub write: bool,
}

impl DmaAccess {
    /// Whether the access touches any byte of `[addr, addr + len)`.
    pub fn overlaps(&self, addr: u64, len: u64) -> bool {
        self.iova < addr.saturating_add(len) && addr < self.iova.saturating_add(self.len as u64)
    }
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
        if let Some(m) = w.iter().find(|m| m.check_range(GuestAddress(iova), len)) {
            return Some(f(m));
        }
        // Else every page of the range must be mapped on its own.
        let pages = lock(&self.pages);
        let first = iova & !(PAGE_SIZE - 1);
        let end = iova + len as u64;
        let all = (first..end).step_by(PAGE_SIZE as usize).all(|p| pages.contains_key(&p));
        pages.get(&first).filter(|_| all).map(f)
    }

    /// Whether guest page `gpa` is mapped on its own (strict DMA).
    pub fn page_mapped(&self, gpa: u64) -> bool {
        lock(&self.pages).contains_key(&(gpa & !(PAGE_SIZE - 1)))
    }

    /// Single pages mapped (tests).
    pub fn pages(&self) -> usize {
        lock(&self.pages).len()
    }

    /// Record every DMA access from now on (see [`ModelIommu::take_log`]).
    pub fn start_log(&self) {
        self.logging.store(true, Ordering::Release);
    }

    /// The accesses recorded since the last call, oldest first.
    pub fn take_log(&self) -> Vec<DmaAccess> {
        std::mem::take(&mut *lock(&self.log))
    }

    fn record(&self, iova: u64, len: usize, write: bool) {
        if self.logging.load(Ordering::Acquire) {
            lock(&self.log).push(DmaAccess { iova, len, write });
        }
    }

    /// DMA write; `false` is an IOMMU fault (nothing written).
    pub fn write(&self, iova: u64, data: &[u8]) -> bool {
        self.record(iova, data.len(), true);
        self.with_window(iova, data.len(), |m| m.write_slice(data, GuestAddress(iova)).is_ok()).unwrap_or(false)
    }

    /// DMA read; `false` is an IOMMU fault.
    pub fn read(&self, iova: u64, data: &mut [u8]) -> bool {
        let len = data.len();
        self.record(iova, len, false);
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

    fn map_page(&self, guest: &GuestMemoryMmap, gpa: u64) -> Result<(), String> {
        if !gpa.is_multiple_of(PAGE_SIZE) || !guest.check_range(GuestAddress(gpa), PAGE_SIZE as usize) {
            return Err(format!("page {gpa:#x} is not a guest RAM page"));
        }
        match lock(&self.pages).entry(gpa) {
            Entry::Occupied(_) => Err(format!("page {gpa:#x} is mapped already")),
            Entry::Vacant(v) => {
                v.insert(guest.clone());
                Ok(())
            }
        }
    }

    fn unmap_page(&self, gpa: u64) -> Result<(), String> {
        lock(&self.pages).remove(&gpa).map(|_| ()).ok_or_else(|| format!("page {gpa:#x} is not mapped"))
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

    #[test]
    fn single_pages_are_reachable_only_while_mapped_and_only_whole() {
        let io = ModelIommu::new();
        let g = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x4000)]).unwrap();
        io.map_page(&g, 0x1000).unwrap();
        assert!(io.write(0x1ffe, &[1, 2]));
        assert!(!io.write(0x1fff, &[1, 2]), "straddles into an unmapped page");
        io.map_page(&g, 0x2000).unwrap();
        assert!(io.write(0x1fff, &[1, 2]), "two mapped pages");
        assert!(io.map_page(&g, 0x2000).is_err(), "mapped twice");
        assert!(io.map_page(&g, 0x2001).is_err(), "not aligned");
        assert!(io.map_page(&g, 0x4000).is_err(), "not guest RAM");
        io.unmap_page(0x1000).unwrap();
        assert!(!io.write(0x1ffe, &[1]));
        assert!(io.unmap_page(0x1000).is_err());
        assert_eq!(io.pages(), 1);
    }
}
