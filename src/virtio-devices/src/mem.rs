//! Guest-memory range checks on the per-packet path.
//!
//! `GuestMemoryBackend::check_range` builds a volatile slice per region just to
//! find out whether a range is backed; [`range_in_ram`] answers the same
//! question from the region table alone (binary search, then the region's
//! end), which matters when every descriptor and every DMA address of every
//! packet is checked. [`write_to_ram`] / [`read_from_ram`] likewise copy small
//! objects (headers) through the one region that holds them instead of
//! vm-memory's multi-region slice iterator.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

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

/// One guest RAM region as [`RamMap`] keeps it.
#[derive(Debug, Clone, Copy)]
struct RamRegion {
    start: u64,
    /// Last guest-physical byte of the region.
    last: u64,
    host: *mut u8,
}

/// Guest RAM's layout resolved once, for the per-packet path: range checks
/// and host addresses without vm-memory's region lookup (a binary search
/// behind an `Arc` per call). Guest RAM never changes while a VM runs, so a
/// device builds one at activation and keeps it with the memory handle that
/// keeps the mappings alive.
#[derive(Debug, Clone)]
pub struct RamMap {
    /// The lowest region, looked at first without walking `regions` (where
    /// almost every buffer of a small guest lives); an empty range when
    /// there is no RAM.
    first: RamRegion,
    regions: Vec<RamRegion>,
    /// Runs of adjacent regions merged: what a range check walks.
    spans: Vec<(u64, u64)>,
    /// Holds the mappings `regions[..].host` point into.
    mem: GuestMemory,
}

// SAFETY: the raw pointers are host addresses of mappings owned by `mem`
// (shared, reference-counted regions that are themselves Send + Sync); a
// RamMap only hands them out as addresses, every access goes through the
// volatile helpers below.
unsafe impl Send for RamMap {}
// SAFETY: as for Send: no interior state, the mappings are shared memory.
unsafe impl Sync for RamMap {}

impl RamMap {
    pub fn new(mem: &GuestMemory) -> RamMap {
        let mut regions: Vec<RamRegion> = mem
            .iter()
            .filter_map(|r| {
                let host = r.get_host_address(MemoryRegionAddress(0)).ok()?;
                Some(RamRegion { start: r.start_addr().0, last: r.last_addr().0, host })
            })
            .collect();
        regions.sort_by_key(|r| r.start);
        let mut spans: Vec<(u64, u64)> = Vec::new();
        for r in &regions {
            match spans.last_mut() {
                Some(last) if last.1.checked_add(1) == Some(r.start) => last.1 = r.last,
                _ => spans.push((r.start, r.last)),
            }
        }
        let first = regions.first().copied().unwrap_or(RamRegion { start: 1, last: 0, host: std::ptr::null_mut() });
        RamMap { first, regions, spans, mem: mem.clone() }
    }

    /// The memory this map describes.
    pub fn mem(&self) -> &GuestMemory {
        &self.mem
    }

    /// Same answer as [`range_in_ram`].
    #[inline]
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let Some(last) = addr.checked_add(len - 1) else {
            return false;
        };
        self.spans.iter().any(|&(s, l)| addr >= s && last <= l)
    }

    /// Host address of `[addr, addr + len)` when the range lies inside one
    /// region (`len` > 0).
    #[inline]
    pub fn host_range(&self, addr: u64, len: u64) -> Option<*mut u8> {
        let last = addr.checked_add(len.checked_sub(1)?)?;
        let f = &self.first;
        let r = if addr >= f.start && last <= f.last {
            f
        } else {
            self.regions.iter().find(|r| addr >= r.start && last <= r.last)?
        };
        // SAFETY: addr - start is inside the region's mapping (checked above),
        // so the offset pointer stays inside the same allocation.
        Some(unsafe { r.host.add((addr - r.start) as usize) })
    }

    /// Writes `data` at `addr` (all or nothing), byte by byte through
    /// volatile stores: the guest may be reading the same bytes.
    #[inline]
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        if data.is_empty() {
            return true;
        }
        match self.host_range(addr, data.len() as u64) {
            Some(p) => {
                let mut words = data.chunks_exact(8);
                let mut off = 0;
                for w in &mut words {
                    let w: [u8; 8] = w.try_into().expect("chunks of 8");
                    // SAFETY: p..p+len is inside one mapped region
                    // (host_range); [u8; 8] has alignment 1.
                    unsafe { p.add(off).cast::<[u8; 8]>().write_volatile(w) };
                    off += 8;
                }
                for b in words.remainder() {
                    // SAFETY: as above, one byte inside the range.
                    unsafe { p.add(off).write_volatile(*b) };
                    off += 1;
                }
                true
            }
            None => write_to_ram(&self.mem, GuestAddress(addr), data),
        }
    }

    /// Reads `buf.len()` bytes at `addr` (all or nothing).
    #[inline]
    pub fn read(&self, addr: u64, buf: &mut [u8]) -> bool {
        if buf.is_empty() {
            return true;
        }
        match self.host_range(addr, buf.len() as u64) {
            Some(p) => {
                for (i, b) in buf.iter_mut().enumerate() {
                    // SAFETY: as in `write`.
                    *b = unsafe { p.add(i).read_volatile() };
                }
                true
            }
            None => read_from_ram(&self.mem, GuestAddress(addr), buf),
        }
    }
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

    /// RamMap agrees with check_range, writes and reads where vm-memory does.
    #[test]
    fn ram_map_agrees_with_check_range() {
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x2000),
            (GuestAddress(0x5000), 0x1000),
            (GuestAddress(0xffff_f000), 0x1000),
        ])
        .unwrap();
        let map = RamMap::new(&mem);
        let edges = [0u64, 0x1000, 0x3000, 0x5000, 0x6000, 0xffff_f000, 0x1_0000_0000, u64::MAX];
        let lens = [0u64, 1, 2, 0xfff, 0x1000, 0x1001, 0x2000, 0x3000, 0x3001, u64::MAX];
        for e in edges {
            for d in [-2i64, -1, 0, 1] {
                let a = e.wrapping_add_signed(d);
                for &l in &lens {
                    let want = usize::try_from(l).is_ok_and(|l| mem.check_range(GuestAddress(a), l));
                    assert_eq!(map.contains(a, l), want, "start {a:#x} len {l:#x}");
                }
            }
        }
        let data: Vec<u8> = (1..=16u8).collect();
        for at in [0u64, 0xff8, 0x2ff0, 0x5ff8, 0x3ff8, u64::MAX - 3] {
            let ok = map.write(at, &data);
            assert_eq!(ok, mem.check_range(GuestAddress(at), data.len()), "write at {at:#x}");
            let mut back = [0u8; 16];
            assert_eq!(map.read(at, &mut back), ok, "read at {at:#x}");
            if ok {
                let mut check = [0u8; 16];
                mem.read_slice(&mut check, GuestAddress(at)).unwrap();
                assert_eq!(check.as_slice(), data.as_slice(), "vm-memory sees the write at {at:#x}");
                assert_eq!(back, check);
            }
        }
        assert!(map.host_range(0x800, 0x1000).is_none(), "spans two regions: no single host range");
        assert!(map.contains(0x800, 0x1000));
        // host_range: vm-memory's host address, for ranges inside one region
        // (the first one, looked at before the others, included).
        for e in edges {
            for d in [-2i64, -1, 0, 1] {
                let a = e.wrapping_add_signed(d);
                for &l in &lens {
                    let one_region = l != 0
                        && mem
                            .find_region(GuestAddress(a))
                            .is_some_and(|r| a.checked_add(l - 1).is_some_and(|last| last <= r.last_addr().0));
                    let want = one_region.then(|| mem.get_host_address(GuestAddress(a)).unwrap());
                    assert_eq!(map.host_range(a, l), want, "start {a:#x} len {l:#x}");
                }
            }
        }
        assert_eq!(RamMap::new(&GuestMemory::default()).host_range(0, 1), None, "no RAM at all");
    }
}
