//! Guest RAM: memfd-backed (so a VFIO container can map it for DMA and it can be
//! shared with other processes later), laid out around the 32-bit MMIO gap.

use std::fs::File;
use std::os::fd::FromRawFd;

use vm_memory::{FileOffset, GuestAddress, GuestMemoryMmap};

use crate::layout::{MMIO_GAP_END, MMIO_GAP_START};

pub type GuestMemory = GuestMemoryMmap<()>;

/// Smallest guest we accept: the kernel, initrd and page tables must fit.
pub const MIN_MEM_MIB: u64 = 64;
/// Largest guest we accept (bounded to keep address arithmetic far from overflow).
pub const MAX_MEM_MIB: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("guest memory of {0} MiB is too small: at least {MIN_MEM_MIB} MiB is needed")]
    TooSmall(u64),
    #[error("guest memory of {0} MiB is too large: at most {MAX_MEM_MIB} MiB is supported")]
    TooLarge(u64),
    #[error("cannot create guest memory file (memfd_create): {0}")]
    Memfd(std::io::Error),
    #[error("cannot size guest memory to {mib} MiB: {err}")]
    Truncate { mib: u64, err: std::io::Error },
    #[error("cannot map guest memory: {0}")]
    Map(String),
}

/// The (guest address, size) RAM ranges for a guest of `mem_mib` MiB.
pub fn ram_ranges(mem_mib: u64) -> Result<Vec<(GuestAddress, u64)>, MemoryError> {
    if mem_mib < MIN_MEM_MIB {
        return Err(MemoryError::TooSmall(mem_mib));
    }
    if mem_mib > MAX_MEM_MIB {
        return Err(MemoryError::TooLarge(mem_mib));
    }
    let size = mem_mib << 20;
    if size <= MMIO_GAP_START {
        Ok(vec![(GuestAddress(0), size)])
    } else {
        Ok(vec![
            (GuestAddress(0), MMIO_GAP_START),
            (GuestAddress(MMIO_GAP_END), size - MMIO_GAP_START),
        ])
    }
}

/// Allocates guest RAM of `mem_mib` MiB in one memfd, one mapping per range.
pub fn create_guest_memory(mem_mib: u64) -> Result<GuestMemory, MemoryError> {
    let ranges = ram_ranges(mem_mib)?;
    // SAFETY: the name is a valid NUL-terminated string and the flags are valid;
    // the returned fd (checked below) is owned by the File made from it.
    let fd = unsafe { libc::memfd_create(c"shimvmm-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid file descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(mem_mib << 20).map_err(|err| MemoryError::Truncate { mib: mem_mib, err })?;
    let file = std::sync::Arc::new(file);
    let mut offset = 0u64;
    let mut with_files = Vec::with_capacity(ranges.len());
    for (addr, size) in ranges {
        with_files.push((addr, size as usize, Some(FileOffset::from_arc(file.clone(), offset))));
        offset += size;
    }
    let mem = GuestMemoryMmap::from_ranges_with_files(with_files).map_err(|e| MemoryError::Map(e.to_string()))?;
    advise_huge_pages(&mem);
    Ok(mem)
}

/// Asks for transparent huge pages on guest RAM: fewer nested page-table walks
/// make a guest markedly faster (about 2x to first init in the nested testbed).
/// For memfd (shmem) memory the host must allow it
/// (/sys/kernel/mm/transparent_hugepage/shmem_enabled = advise); where it
/// doesn't, this is a no-op.
fn advise_huge_pages(mem: &GuestMemory) {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
    for region in mem.iter() {
        let Ok(host) = region.get_host_address(MemoryRegionAddress(0)) else { continue };
        // SAFETY: the range is exactly one live mapping owned by `mem`; madvise
        // with MADV_HUGEPAGE only changes the kernel's paging policy for it.
        let rc = unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
        if rc != 0 {
            log::debug!("madvise(MADV_HUGEPAGE) on guest RAM: {}", std::io::Error::last_os_error());
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
    fn bounds_are_enforced() {
        assert!(matches!(ram_ranges(1), Err(MemoryError::TooSmall(1))));
        assert!(matches!(ram_ranges(MAX_MEM_MIB + 1), Err(MemoryError::TooLarge(_))));
    }

    #[test]
    fn memory_is_usable() {
        let mem = create_guest_memory(64).unwrap();
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000)).unwrap();
        assert_eq!(mem.read_obj::<u32>(GuestAddress(0x1000)).unwrap(), 0xdead_beef);
        assert_eq!(mem.last_addr(), GuestAddress((64 << 20) - 1));
    }
}
