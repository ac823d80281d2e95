//! Guest-memory range checks on the per-packet path.
//!
//! `GuestMemoryBackend::check_range` builds a volatile slice per region just to
//! find out whether a range is backed; [`range_in_ram`] answers the same
//! question from the region table alone (binary search, then the region's
//! end), which matters when every descriptor and every DMA address of every
//! packet is checked. [`write_to_ram`] / [`read_from_ram`] likewise copy small
//! objects (headers) through the one region that holds them instead of
//! vm-memory's multi-region slice iterator.

use vm_memory::{
    Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
};

use crate::GuestMemory;

/// Whether `[addr, addr + len)` is entirely backed by guest RAM: the same
/// answer as `mem.check_range(addr, len)` (a range may span adjacent regions,
/// a hole or the end of the address space makes it fail, an empty range is
/// accepted), without building slices.
pub fn range_in_ram(mem: &GuestMemory, addr: GuestAddress, len: usize) -> bool {
    if len == 0 {
        return true;
    }
    // Last byte of the range; a range that wraps past 2^64 is never backed.
    let Some(last) = addr.0.checked_add(len as u64 - 1) else {
        return false;
    };
    let mut cur = addr.0;
    loop {
        let Some(r) = mem.find_region(GuestAddress(cur)) else {
            return false;
        };
        let region_last = r.last_addr().0;
        if last <= region_last {
            return true;
        }
        // region_last < last <= u64::MAX: cannot overflow.
        cur = region_last + 1;
    }
}

/// `mem.write_slice(data, addr).is_ok()`: writes all of `data` at `addr` or
/// nothing. A range inside one region is written straight through that
/// region; anything else takes vm-memory's general path.
pub fn write_to_ram(mem: &GuestMemory, addr: GuestAddress, data: &[u8]) -> bool {
    if let Some(r) = mem.find_region(addr) {
        let off = MemoryRegionAddress(addr.0 - r.start_addr().0);
        // Err when the range leaves the region: fall through.
        if let Ok(s) = r.get_slice(off, data.len()) {
            s.copy_from(data);
            return true;
        }
    }
    mem.write_slice(data, addr).is_ok()
}

/// `mem.read_slice(buf, addr).is_ok()`, with the same one-region fast path as
/// [`write_to_ram`].
pub fn read_from_ram(mem: &GuestMemory, addr: GuestAddress, buf: &mut [u8]) -> bool {
    if let Some(r) = mem.find_region(addr) {
        let off = MemoryRegionAddress(addr.0 - r.start_addr().0);
        if let Ok(s) = r.get_slice(off, buf.len()) {
            s.copy_to(buf);
            return true;
        }
    }
    mem.read_slice(buf, addr).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn write_and_read_match_bytes_including_across_regions() {
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x4000), 0x1000),
        ])
        .unwrap();
        let data: Vec<u8> = (0..16u8).collect();
        for at in [0u64, 0x10, 0xff8, 0x1ff0, 0x4ff0, 0x1ff9, 0x4ff1, 0x3ff8, 0x5000, u64::MAX - 3] {
            let ok = write_to_ram(&mem, GuestAddress(at), &data);
            assert_eq!(ok, mem.check_range(GuestAddress(at), data.len()), "write at {at:#x}");
            let mut back = [0u8; 16];
            assert_eq!(read_from_ram(&mem, GuestAddress(at), &mut back), ok, "read at {at:#x}");
            if ok {
                assert_eq!(back.as_slice(), data.as_slice(), "at {at:#x}");
                let mut check = [0u8; 16];
                mem.read_slice(&mut check, GuestAddress(at)).unwrap();
                assert_eq!(check.as_slice(), data.as_slice(), "vm-memory sees the write at {at:#x}");
            }
        }
        assert!(write_to_ram(&mem, GuestAddress(0x10), &[]));
    }

    /// Agrees with check_range on every (start, len) around the edges of a
    /// layout with adjacent regions, a hole and a region at the top of the
    /// low 4 GiB.
    #[test]
    fn same_answer_as_check_range() {
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x2000), // adjacent to the first
            (GuestAddress(0x5000), 0x1000), // after a hole at 0x3000..0x5000
            (GuestAddress(0xffff_f000), 0x1000),
        ])
        .unwrap();
        let edges = [0u64, 0x1000, 0x3000, 0x5000, 0x6000, 0xffff_f000, 0x1_0000_0000, u64::MAX];
        let mut starts = Vec::new();
        for e in edges {
            for d in [-2i64, -1, 0, 1] {
                starts.push(e.wrapping_add_signed(d));
            }
        }
        let lens = [0usize, 1, 2, 0xfff, 0x1000, 0x1001, 0x2000, 0x2fff, 0x3000, 0x3001, 0x5000, usize::MAX];
        let mut n = 0;
        for &a in &starts {
            for &l in &lens {
                assert_eq!(
                    range_in_ram(&mem, GuestAddress(a), l),
                    mem.check_range(GuestAddress(a), l),
                    "start {a:#x} len {l:#x}"
                );
                n += 1;
            }
        }
        assert!(n > 300);
        assert!(range_in_ram(&mem, GuestAddress(0x800), 0x2800), "spans two adjacent regions");
        assert!(!range_in_ram(&mem, GuestAddress(0x2800), 0x2801), "runs into the hole");
    }
}
