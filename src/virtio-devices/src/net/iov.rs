//! Host iovecs over guest memory, so readv/writev move frames straight between
//! a file descriptor and guest buffers (no copy through a VMM buffer).

use vm_memory::{GuestAddress, GuestMemoryBackend};

use crate::mem::RamMap;
use crate::GuestMemory;

/// `IOV_MAX` on Linux: the most iovecs one readv/writev takes.
pub const IOV_MAX: usize = 1024;

/// A reusable iovec list over guest memory. Whoever fills it keeps that
/// memory mapped (a borrow or a `GuestMemory` clone) while entries exist.
#[derive(Default)]
pub struct IovecBuf(Vec<libc::iovec>);

// SAFETY: the raw pointers only point into guest memory mappings, which all
// VMM threads share anyway and which the owner keeps alive while the entries
// exist; moving the list between threads creates no new aliasing.
unsafe impl Send for IovecBuf {}

impl IovecBuf {
    pub fn clear(&mut self) {
        self.0.clear();
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_slice(&self) -> &[libc::iovec] {
        &self.0
    }

    /// Replaces the contents with `iovs` (entries of another list, which must
    /// stay valid as long as these are).
    pub fn set_from(&mut self, iovs: &[libc::iovec]) {
        self.0.clear();
        self.0.extend_from_slice(iovs);
    }

    /// Appends one entry for `len` bytes at `ptr` (VMM memory the caller keeps
    /// alive while the entry exists).
    pub fn push_raw(&mut self, ptr: *mut u8, len: usize) {
        self.0.push(libc::iovec { iov_base: ptr.cast(), iov_len: len });
    }

    /// Drops the first `n` entries (a consumed prefix).
    pub fn drain_front(&mut self, n: usize) {
        self.0.drain(..n.min(self.0.len()));
    }

    /// Appends iovecs covering `segs` (a region boundary inside a segment
    /// splits it). Returns the bytes added, or `None` if a segment is no longer
    /// in guest memory or the list would exceed `limit` entries; then nothing
    /// is added.
    pub fn push_segs(&mut self, mem: &GuestMemory, segs: &[(GuestAddress, u32)], limit: usize) -> Option<usize> {
        self.push_segs_with(None, mem, segs, limit)
    }

    /// [`IovecBuf::push_segs`] with guest RAM's resolved layout (`ram`, built
    /// from `ram.mem()`): a segment inside one region costs a table lookup
    /// instead of vm-memory's slice iterator. Same result.
    pub fn push_segs_in(&mut self, ram: &RamMap, segs: &[(GuestAddress, u32)], limit: usize) -> Option<usize> {
        self.push_segs_with(Some(ram), ram.mem(), segs, limit)
    }

    fn push_segs_with(
        &mut self,
        ram: Option<&RamMap>,
        mem: &GuestMemory,
        segs: &[(GuestAddress, u32)],
        limit: usize,
    ) -> Option<usize> {
        let start = self.0.len();
        let mut total = 0usize;
        for &(addr, len) in segs {
            if let Some(p) = ram.and_then(|r| r.host_range(addr.0, u64::from(len))) {
                if self.0.len() >= limit {
                    self.0.truncate(start);
                    return None;
                }
                self.push_raw(p, len as usize);
                total += len as usize;
                continue;
            }
            for slice in GuestMemoryBackend::get_slices(mem, addr, len as usize) {
                let Ok(slice) = slice else {
                    self.0.truncate(start);
                    return None;
                };
                if self.0.len() >= limit {
                    self.0.truncate(start);
                    return None;
                }
                self.0.push(libc::iovec { iov_base: slice.ptr_guard_mut().as_ptr().cast(), iov_len: slice.len() });
                total += slice.len();
            }
        }
        Some(total)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn the_resolved_layout_gives_the_same_iovecs() {
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x4000), 0x1000),
        ])
        .unwrap();
        let ram = RamMap::new(&mem);
        let cases: [&[(GuestAddress, u32)]; 5] = [
            &[(GuestAddress(0x10), 0x100), (GuestAddress(0x4000), 0x1000)],
            &[(GuestAddress(0xff0), 0x20)],
            &[(GuestAddress(0x1ff0), 0x20)],
            &[(GuestAddress(0x10), 0), (GuestAddress(0x20), 4)],
            &[(GuestAddress(u64::MAX - 2), 8)],
        ];
        for segs in cases {
            let (mut a, mut b) = (IovecBuf::default(), IovecBuf::default());
            let ra = a.push_segs(&mem, segs, IOV_MAX);
            let rb = b.push_segs_in(&ram, segs, IOV_MAX);
            assert_eq!(ra, rb, "{segs:x?}");
            let key = |v: &IovecBuf| v.as_slice().iter().map(|i| (i.iov_base as usize, i.iov_len)).collect::<Vec<_>>();
            assert_eq!(key(&a), key(&b), "{segs:x?}");
        }
        let mut c = IovecBuf::default();
        assert_eq!(c.push_segs_in(&ram, &[(GuestAddress(0x10), 8), (GuestAddress(0x20), 8)], 1), None);
        assert!(c.is_empty(), "nothing added past the limit");
    }

    #[test]
    fn iovecs_follow_regions_and_reject_holes() {
        // Two regions with a hole between them.
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x4000), 0x1000),
        ])
        .unwrap();
        let mut iov = IovecBuf::default();
        // Crosses the 0x1000 region boundary: two iovecs.
        assert_eq!(iov.push_segs(&mem, &[(GuestAddress(0xff0), 0x20)], IOV_MAX), Some(0x20));
        assert_eq!(iov.len(), 2);
        assert_eq!(iov.as_slice()[0].iov_len, 0x10);
        // Into the hole: rejected, list unchanged.
        assert_eq!(iov.push_segs(&mem, &[(GuestAddress(0x100), 8), (GuestAddress(0x1ff0), 0x20)], IOV_MAX), None);
        assert_eq!(iov.len(), 2);
        // Over the entry limit: rejected too.
        assert_eq!(iov.push_segs(&mem, &[(GuestAddress(0xff0), 0x20)], 3), None);
        iov.drain_front(1);
        assert_eq!(iov.len(), 1);
        iov.clear();
        assert!(iov.is_empty());
    }
}
