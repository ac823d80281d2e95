//! Guest RAM: anonymous memory with transparent huge pages, laid out around
//! the 32-bit MMIO gap.

use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{GuestAddress, GuestMemoryMmap, GuestRegionMmap};

use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};

pub type GuestMemory = GuestMemoryMmap<()>;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {0} MiB does not fit the guest physical address space")]
    TooLarge(u64),
    #[error("cannot map guest memory: {0}")]
    Map(String),
}

/// The (guest address, size) RAM ranges for a guest of `mem_mib` MiB.
///
/// The sizes a user may ask for are `vmm_config::MachineConfig`'s rule;
/// this only refuses what the address arithmetic cannot represent.
pub fn ram_ranges(mem_mib: u64) -> Result<Vec<(GuestAddress, u64)>, MemoryError> {
    let size = mem_mib
        .checked_mul(1 << 20)
        .and_then(|s| s.checked_add(MMIO_GAP_END - MMIO_GAP_START))
        .map(|_| mem_mib << 20)
        .ok_or(MemoryError::TooLarge(mem_mib))?;
    if size <= MMIO_GAP_START {
        Ok(vec![(GuestAddress(0), size)])
    } else {
        Ok(vec![(GuestAddress(0), MMIO_GAP_START), (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START)])
    }
}

/// Host alignment of each guest RAM mapping. KVM backs a guest page with a
/// 2 MiB (nested) page only where host and guest addresses agree modulo
/// 2 MiB; a mapping anywhere else costs one nested page fault per 4 KiB the
/// guest touches (measured in the testbed: 29 600 faults to the first init,
/// against QEMU's 525, which aligns its RAM the same way).
pub const HOST_RAM_ALIGN: usize = 2 << 20;

/// Allocates guest RAM of `mem_mib` MiB: private anonymous memory, one
/// mapping per range, each starting on a [`HOST_RAM_ALIGN`] boundary.
/// Anonymous (not memfd/shmem) because that is what the kernel backs best
/// with transparent huge pages, and VFIO maps it for DMA like any other user
/// memory (the pages are pinned while mapped).
///
/// The mappings are never unmapped: they live as long as the process (one VM
/// per shimvmm process), so no clone of the memory handle held by a device
/// thread can outlive them.
pub fn create_guest_memory(mem_mib: u64) -> Result<GuestMemory, MemoryError> {
    let regions = ram_ranges(mem_mib)?
        .into_iter()
        .map(|(addr, size)| {
            let mapping = map_aligned(size as usize)?;
            GuestRegionMmap::new(mapping, addr)
                .ok_or_else(|| MemoryError::Map(format!("guest range at {:#x} wraps the address space", addr.0)))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mem = GuestMemoryMmap::from_regions(regions).map_err(|e| MemoryError::Map(e.to_string()))?;
    advise_guest_ram(&mem);
    Ok(mem)
}

/// A private anonymous read-write mapping of `size` bytes at a
/// [`HOST_RAM_ALIGN`]-aligned address: maps `size + HOST_RAM_ALIGN` and
/// trims the unaligned head and the tail.
fn map_aligned(size: usize) -> Result<vm_memory::MmapRegion<()>, MemoryError> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
    let total = size
        .checked_add(HOST_RAM_ALIGN)
        .ok_or_else(|| MemoryError::Map(format!("{size} bytes is too large to map")))?;
    // SAFETY: a new anonymous mapping at an address the kernel chooses; no
    // existing memory is affected.
    let base = unsafe { libc::mmap(std::ptr::null_mut(), total, prot, flags, -1, 0) };
    if base == libc::MAP_FAILED {
        return Err(MemoryError::Map(std::io::Error::last_os_error().to_string()));
    }
    let base = base as usize;
    let start = (base + HOST_RAM_ALIGN - 1) & !(HOST_RAM_ALIGN - 1);
    let head = start - base;
    let tail = total - head - size;
    // SAFETY: both ranges lie inside the mapping made above, which nothing
    // else knows about yet; what stays mapped is exactly [start, start + size).
    unsafe {
        if head > 0 {
            libc::munmap(base as *mut libc::c_void, head);
        }
        if tail > 0 {
            libc::munmap((start + size) as *mut libc::c_void, tail);
        }
    }
    // SAFETY: [start, start + size) is a live private mapping made above and
    // never unmapped (see `create_guest_memory`), so the region stays valid.
    unsafe {
        MmapRegionBuilder::new(size)
            .with_mmap_prot(prot)
            .with_mmap_flags(flags)
            .with_raw_mmap_pointer(start as *mut u8)
            .build()
    }
    .map_err(|e| MemoryError::Map(e.to_string()))
}

/// Kernel hints for guest RAM. MADV_HUGEPAGE: fewer nested page-table walks
/// make a guest markedly faster (about 2x to first init in the nested testbed);
/// where the host disables THP it is a no-op. MADV_DONTFORK: a child process
/// must never share (copy-on-write) pages a pNIC may be DMAing into.
fn advise_guest_ram(mem: &GuestMemory) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
    for region in mem.iter() {
        let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else { continue };
        for (advice, name) in [(libc::MADV_HUGEPAGE, "MADV_HUGEPAGE"), (libc::MADV_DONTFORK, "MADV_DONTFORK")] {
            // SAFETY: the range is exactly one live mapping owned by `mem`; these
            // advices only change the kernel's paging/fork policy for it.
            let rc = unsafe { libc::madvise(host.cast(), region.len() as usize, advice) };
            if rc != 0 {
                log::debug!("madvise({name}) on guest RAM: {}", std::io::Error::last_os_error());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryBackend};

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(512).unwrap(), vec![(GuestAddress(0), 512 << 20)]);
    }

    #[test]
    fn big_guest_skips_the_mmio_gap() {
        let r = ram_ranges(4096).unwrap();
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START));
        assert_eq!(r[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(r[0].1 + r[1].1, 4096 << 20);
    }

    #[test]
    fn unrepresentable_sizes_are_refused() {
        assert!(matches!(ram_ranges(u64::MAX >> 20), Err(MemoryError::TooLarge(_))));
        assert!(ram_ranges(vmm_config::MAX_MEM_SIZE_MIB).is_ok());
    }

    #[test]
    fn guest_ram_is_huge_page_aligned_on_the_host() {
        use vm_memory::{GuestMemoryRegion, MemoryRegionAddress};
        // 65 MiB: not a multiple of 2 MiB, which recent kernels do not align
        // by themselves; 4096 MiB: two ranges around the MMIO gap.
        for mib in [65, 512, 4096] {
            let mem = create_guest_memory(mib).unwrap();
            let mut total = 0;
            for r in mem.iter() {
                let host = r.get_host_address(MemoryRegionAddress(0)).unwrap() as usize;
                assert_eq!(
                    host % HOST_RAM_ALIGN,
                    0,
                    "{mib} MiB guest: region at {:#x} maps to {host:#x}",
                    r.start_addr().0
                );
                total += r.len();
            }
            assert_eq!(total, mib << 20);
        }
    }

    #[test]
    fn memory_is_usable() {
        let mem = create_guest_memory(64).unwrap();
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0xdead_beef);
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
