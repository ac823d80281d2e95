//! Shared pieces of the fuzz targets: guest RAM fenced by guard pages, and a
//! reader that turns the fuzzer's bytes into values.
//!
//! Guest RAM is three regions, each its own host mapping with an
//! inaccessible page on both sides: a host access that leaves guest RAM
//! (a buffer that runs past its region, an address computed wrong) faults
//! and libFuzzer reports it as a crash. Region A and B are adjacent in
//! guest-physical space (so chains and buffers may span them, as they span
//! KVM memory slots), C sits after a hole (so "inside RAM" has a gap to get
//! wrong).

use std::cell::RefCell;

use vm_memory::mmap::MmapRegion;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap};

/// Guest-physical layout: (start, size) of each region.
pub const REGIONS: [(u64, usize); 3] = [(0x0, 0x8000), (0x8000, 0x1000), (0x1_0000, 0x1000)];
/// Bytes of the image a target copies to guest-physical address 0 (regions
/// A and B, which are contiguous).
pub const IMAGE_MAX: usize = 0x9000;

const PAGE: usize = 4096;

/// One region with guard pages around it; the mapping is never unmapped
/// (one set per fuzzing thread, reused for every input).
fn guarded_region(gpa: u64, size: usize) -> GuestRegionMmap {
    // SAFETY: a fresh anonymous reservation; no existing memory is touched.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size + 2 * PAGE,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    assert!(base != libc::MAP_FAILED, "cannot reserve fuzz guest RAM");
    // SAFETY: base + PAGE .. + size lies inside the reservation just made.
    let inner = unsafe { base.cast::<u8>().add(PAGE) };
    // SAFETY: as above; the guard pages on either side stay PROT_NONE.
    let rc = unsafe { libc::mprotect(inner.cast(), size, libc::PROT_READ | libc::PROT_WRITE) };
    assert_eq!(rc, 0, "cannot open fuzz guest RAM");
    // SAFETY: `inner` is a readable and writable private anonymous mapping of
    // `size` bytes that lives for the rest of the process.
    let mapping = unsafe {
        MmapRegion::build_raw(inner, size, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS)
    }
    .expect("fuzz guest RAM region");
    GuestRegionMmap::new(mapping, GuestAddress(gpa)).expect("fuzz guest RAM region address")
}

thread_local! {
    static MEM: RefCell<Option<GuestMemoryMmap>> = const { RefCell::new(None) };
}

/// Guest RAM (see the module documentation), zeroed, with `image` copied at
/// guest-physical address 0 (at most [`IMAGE_MAX`] bytes of it).
pub fn guest_memory(image: &[u8]) -> GuestMemoryMmap {
    let mem = MEM.with(|m| {
        m.borrow_mut()
            .get_or_insert_with(|| {
                let regions = REGIONS.iter().map(|&(gpa, size)| guarded_region(gpa, size)).collect();
                GuestMemoryMmap::from_regions(regions).expect("fuzz guest RAM layout")
            })
            .clone()
    });
    for r in mem.iter() {
        let zero = vec![0u8; r.len() as usize];
        mem.write_slice(&zero, r.start_addr()).expect("zero fuzz guest RAM");
    }
    let n = image.len().min(IMAGE_MAX);
    mem.write_slice(&image[..n], GuestAddress(0)).expect("fill fuzz guest RAM");
    mem
}

/// Whether `[addr, addr + len)` is guest RAM (the answer the code under test
/// must agree with).
pub fn in_ram(addr: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let Some(last) = addr.checked_add(len - 1) else { return false };
    // A and B are contiguous: one span.
    let spans = [(0u64, 0x8fffu64), (0x1_0000, 0x1_0fff)];
    spans.iter().any(|&(s, e)| addr >= s && last <= e)
}

/// The fuzzer's bytes as values; past the end every value is 0.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        head
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }

    pub fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    pub fn u16(&mut self) -> u16 {
        let mut b = [0u8; 2];
        let s = self.bytes(2);
        b[..s.len()].copy_from_slice(s);
        u16::from_le_bytes(b)
    }

    pub fn u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        let s = self.bytes(4);
        b[..s.len()].copy_from_slice(s);
        u32::from_le_bytes(b)
    }

    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        let s = self.bytes(8);
        b[..s.len()].copy_from_slice(s);
        u64::from_le_bytes(b)
    }

    /// A length-prefixed (u16) slice.
    pub fn chunk(&mut self) -> &'a [u8] {
        let n = self.u16() as usize;
        self.bytes(n)
    }
}

/// Splits an input into a script (length-prefixed) and a guest RAM image
/// (the rest): the layout of the virtio targets' inputs.
pub fn split_script(data: &[u8]) -> (&[u8], &[u8]) {
    let mut r = Reader::new(data);
    let script = r.chunk();
    (script, r.rest())
}

/// Where a target that builds its queues itself puts them: back to back
/// from guest-physical address 0, each queue's descriptor table, avail ring
/// and used ring packed as tightly as their alignment allows (so a small
/// seed input holds every ring): (desc, avail, used) per queue size.
pub fn ring_layout(sizes: &[u16]) -> Vec<(u64, u64, u64)> {
    let mut at = 0u64;
    sizes
        .iter()
        .map(|&n| {
            let n = u64::from(n);
            let desc = at;
            let avail = desc + 16 * n;
            let used = (avail + 6 + 2 * n + 3) & !3;
            at = (used + 6 + 8 * n + 15) & !15;
            (desc, avail, used)
        })
        .collect()
}

/// The used ring's elements `[from, to)` of a queue of `size` entries whose
/// used ring is at `used`: (id, len) each.
pub fn used_elems(mem: &GuestMemoryMmap, used: u64, size: u16, from: u16, to: u16) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut i = from;
    while i != to {
        let slot = u64::from(i % size);
        let at = used.wrapping_add(4 + slot * 8);
        let id: u32 = mem.read_obj(GuestAddress(at)).unwrap_or(u32::MAX);
        let len: u32 = mem.read_obj(GuestAddress(at.wrapping_add(4))).unwrap_or(u32::MAX);
        out.push((id, len));
        i = i.wrapping_add(1);
    }
    out
}

/// The used ring's idx field.
pub fn used_idx(mem: &GuestMemoryMmap, used: u64) -> u16 {
    used.checked_add(2).and_then(|a| mem.read_obj(GuestAddress(a)).ok()).unwrap_or(0)
}
