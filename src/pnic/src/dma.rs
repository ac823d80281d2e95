//! DMA-able memory that is not guest RAM (descriptor rings, bounce buffers)
//! and the IOVA space it lives in.
//!
//! Guest RAM is mapped with IOVA = guest-physical address. The VMM's own DMA
//! memory gets IOVAs *above* the highest guest address so a NIC address can
//! always be classified: inside a guest region, inside a VMM area, or invalid.

use std::ptr::NonNull;
use std::sync::atomic::Ordering;

use vm_memory::{
    Address, AtomicAccess, AtomicInteger, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

/// Alignment of the first VMM IOVA above guest RAM (keeps it visibly apart).
pub const IOVA_GAP_ALIGN: u64 = 1 << 30;
/// Page size used for VMM DMA areas.
pub const PAGE_SIZE: u64 = 4096;
/// Unmapped IOVA space at least between the end of guest RAM and the first
/// VMM DMA area: a NIC running past the last guest byte faults instead of
/// reaching a ring or bounce buffer.
pub const GUARD: u64 = PAGE_SIZE;

#[derive(Debug, thiserror::Error)]
pub enum DmaError {
    #[error("cannot allocate {len} bytes of DMA memory: {source}")]
    Alloc {
        len: usize,
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    #[error("IOVA space exhausted: {0} more bytes requested above guest RAM")]
    IovaExhausted(u64),
    #[error("DMA area access at offset {offset:#x} (+{len}) is outside the {size}-byte area")]
    OutOfBounds { offset: u64, len: usize, size: usize },
    #[error("atomic DMA area access at offset {offset:#x} is not {len}-byte aligned")]
    Misaligned { offset: u64, len: usize },
}

/// Something that installs IOMMU mappings for a NIC: VFIO's type1 container,
/// or the model's emulated IOMMU. Every region of `mem` is mapped with
/// IOVA = its start address.
pub trait DmaMapper: Send + Sync {
    fn map(&self, mem: &GuestMemoryMmap) -> Result<(), String>;
    fn unmap(&self, mem: &GuestMemoryMmap) -> Result<(), String>;
    /// Map the one [`PAGE_SIZE`] page of `guest` at guest-physical `gpa`
    /// (page-aligned) with IOVA = `gpa` (strict DMA, `shim::strict`).
    fn map_page(&self, guest: &GuestMemoryMmap, gpa: u64) -> Result<(), String>;
    /// Undo [`DmaMapper::map_page`] for `gpa`.
    fn unmap_page(&self, gpa: u64) -> Result<(), String>;
}

/// Hands out page-aligned IOVA ranges above guest RAM.
#[derive(Debug, Clone)]
pub struct IovaAllocator {
    next: u64,
}

impl IovaAllocator {
    /// Start allocating at the first `IOVA_GAP_ALIGN` boundary at least a
    /// guard page ([`GUARD`]) above `guest`: RAM that ends on the boundary
    /// (1 GiB, 2 GiB...) is not followed directly by a descriptor ring.
    pub fn above(guest: &GuestMemoryMmap) -> Self {
        let end = guest.iter().map(|r| r.start_addr().raw_value() + r.len()).max().unwrap_or(0);
        let next = (end + GUARD).div_ceil(IOVA_GAP_ALIGN) * IOVA_GAP_ALIGN;
        IovaAllocator { next }
    }

    pub fn alloc(&mut self, len: usize) -> Result<u64, DmaError> {
        let len = (len as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        let iova = self.next;
        // Stay below 2^48: the width every IOMMU we target supports.
        let end = iova.checked_add(len).filter(|e| *e <= 1 << 48);
        match end {
            Some(e) => {
                self.next = e;
                Ok(iova)
            }
            None => Err(DmaError::IovaExhausted(len)),
        }
    }
}

/// Anonymous host memory visible to the NIC at `iova..iova+len`.
///
/// Backed by a one-region `GuestMemoryMmap` whose "guest address" is the
/// IOVA, so the same bounds-checked accessors serve the driver, the IOMMU
/// mapping and the NIC model.
pub struct DmaArea {
    mem: GuestMemoryMmap,
    iova: u64,
    len: usize,
    /// Start of `mem`'s one mapping: the driver's descriptor loads and stores
    /// (several per packet) go straight here after their bounds check,
    /// instead of through vm-memory's region lookup each time.
    host: NonNull<u8>,
}

// SAFETY: `host` points into the mapping owned by `mem` (itself Send and
// Sync), which lives exactly as long as the area; through `host` the area only
// does atomic accesses, which are sound from any thread.
unsafe impl Send for DmaArea {}
// SAFETY: as for Send.
unsafe impl Sync for DmaArea {}

impl std::fmt::Debug for DmaArea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DmaArea({:#x}+{:#x})", self.iova, self.len)
    }
}

impl DmaArea {
    /// Allocate zeroed memory (not yet mapped in any IOMMU).
    pub fn new(iova: u64, len: usize) -> Result<Self, DmaError> {
        let len = ((len as u64).div_ceil(PAGE_SIZE) * PAGE_SIZE) as usize;
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(iova), len)])
            .map_err(|source| DmaError::Alloc { len, source })?;
        let host = mem
            .get_host_address(GuestAddress(iova))
            .ok()
            .and_then(NonNull::new)
            .ok_or(DmaError::OutOfBounds { offset: 0, len, size: len })?;
        Ok(DmaArea { mem, iova, len, host })
    }

    pub fn iova(&self) -> u64 {
        self.iova
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The area as memory addressed by IOVA.
    pub fn mem(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// Start of the area's host mapping (page-aligned, `len()` bytes, alive
    /// as long as `self`). For views that check their bounds once, when they
    /// are built (the descriptor rings), instead of on every access.
    pub(crate) fn host_ptr(&self) -> NonNull<u8> {
        self.host
    }

    /// Whether `[iova, iova+len)` lies inside this area.
    pub fn contains(&self, iova: u64, len: u64) -> bool {
        iova >= self.iova && iova.checked_add(len).is_some_and(|e| e <= self.iova + self.len as u64)
    }

    fn check(&self, offset: u64, len: usize) -> Result<GuestAddress, DmaError> {
        if offset.checked_add(len as u64).is_some_and(|e| e <= self.len as u64) {
            Ok(GuestAddress(self.iova + offset))
        } else {
            Err(DmaError::OutOfBounds { offset, len, size: self.len })
        }
    }

    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), DmaError> {
        let a = self.check(offset, data.len())?;
        self.mem.write_slice(data, a).map_err(|_| DmaError::OutOfBounds { offset, len: data.len(), size: self.len })
    }

    pub fn read(&self, offset: u64, data: &mut [u8]) -> Result<(), DmaError> {
        let a = self.check(offset, data.len())?;
        self.mem.read_slice(data, a).map_err(|_| DmaError::OutOfBounds { offset, len: data.len(), size: self.len })
    }

    /// The atomic at `offset`, after checking it lies inside the area and is
    /// naturally aligned.
    fn atomic<T: AtomicAccess>(&self, offset: u64) -> Result<&T::A, DmaError> {
        let len = std::mem::size_of::<T>();
        self.check(offset, len)?;
        if !offset.is_multiple_of(len as u64) || std::mem::size_of::<T::A>() != len {
            return Err(DmaError::Misaligned { offset, len });
        }
        // SAFETY: [offset, offset+len) lies inside the mapping (checked above)
        // that `host` starts and that lives as long as `self`; the mapping is
        // page-aligned and `offset` a multiple of `len`, so the address is
        // aligned for `T::A`, an atomic integer of exactly `len` bytes. The
        // memory is shared with the NIC, which is why it is only ever
        // accessed atomically through this reference.
        Ok(unsafe { &*(self.host.as_ptr().add(offset as usize) as *const T::A) })
    }

    /// Atomic naturally-aligned load (descriptor words the NIC writes).
    pub fn load<T: AtomicAccess>(&self, offset: u64, order: Ordering) -> Result<T, DmaError> {
        Ok(self.atomic::<T>(offset)?.load(order).into())
    }

    /// Atomic naturally-aligned store.
    pub fn store<T: AtomicAccess>(&self, offset: u64, value: T, order: Ordering) -> Result<(), DmaError> {
        self.atomic::<T>(offset)?.store(value.into(), order);
        Ok(())
    }
}

/// Whether `[addr, addr+len)` is entirely guest RAM (may span adjacent regions).
pub fn in_guest_ram(mem: &GuestMemoryMmap, addr: u64, len: u64) -> bool {
    if len == 0 || addr.checked_add(len).is_none() {
        return false;
    }
    usize::try_from(len).is_ok_and(|l| virtio_devices::mem::range_in_ram(mem, GuestAddress(addr), l))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_starts_above_guest_ram_aligned() {
        let g =
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000), (GuestAddress(0x1_0000_0000), 0x1000)])
                .unwrap();
        let mut a = IovaAllocator::above(&g);
        let x = a.alloc(10).unwrap();
        assert_eq!(x, 0x1_4000_0000);
        assert_eq!(a.alloc(1).unwrap(), x + PAGE_SIZE);
    }

    #[test]
    fn a_guard_page_follows_ram_that_ends_on_the_boundary() {
        for mib in [1024u64, 2048] {
            let g = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), (mib << 20) as usize)]).unwrap();
            let first = IovaAllocator::above(&g).alloc(4096).unwrap();
            assert!(first >= (mib << 20) + GUARD, "{mib} MiB: first DMA area at {first:#x}");
        }
        let g = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).unwrap();
        assert_eq!(IovaAllocator::above(&g).alloc(1).unwrap(), IOVA_GAP_ALIGN);
    }

    #[test]
    fn area_bounds_checked() {
        let d = DmaArea::new(0x4000_0000, 100).unwrap();
        assert_eq!(d.len(), 4096);
        d.write(4090, &[1; 6]).unwrap();
        assert!(d.write(4091, &[1; 6]).is_err());
        assert!(d.write(u64::MAX, &[1]).is_err());
        assert!(d.contains(0x4000_0000, 4096));
        assert!(!d.contains(0x4000_0000, 4097));
        assert!(!d.contains(0x3fff_ffff, 2));
    }

    #[test]
    fn atomics_are_bounds_and_alignment_checked_and_see_plain_writes() {
        let d = DmaArea::new(0x4000_0000, 4096).unwrap();
        d.store(8, 0x1122_3344_5566_7788u64, Ordering::Release).unwrap();
        let mut b = [0u8; 8];
        d.read(8, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), 0x1122_3344_5566_7788);
        d.write(12, &0xabcdu16.to_le_bytes()).unwrap();
        assert_eq!(d.load::<u16>(12, Ordering::Acquire).unwrap(), 0xabcd);
        assert_eq!(d.load::<u32>(8, Ordering::Acquire).unwrap(), 0x5566_7788);
        assert!(matches!(d.load::<u32>(4094, Ordering::Acquire), Err(DmaError::OutOfBounds { .. })));
        assert!(matches!(d.load::<u32>(4096, Ordering::Acquire), Err(DmaError::OutOfBounds { .. })));
        assert!(matches!(d.load::<u32>(u64::MAX - 1, Ordering::Acquire), Err(DmaError::OutOfBounds { .. })));
        assert!(matches!(d.store(6, 1u32, Ordering::Release), Err(DmaError::Misaligned { .. })));
        assert!(matches!(d.load::<u64>(4, Ordering::Acquire), Err(DmaError::Misaligned { .. })));
    }

    #[test]
    fn guest_ram_check() {
        let g = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0x1000), 0x2000)]).unwrap();
        assert!(in_guest_ram(&g, 0x1000, 0x2000));
        assert!(!in_guest_ram(&g, 0x1000, 0x2001));
        assert!(!in_guest_ram(&g, 0xfff, 2));
        assert!(!in_guest_ram(&g, u64::MAX, 2));
        assert!(!in_guest_ram(&g, 0x1000, 0));
    }
}
