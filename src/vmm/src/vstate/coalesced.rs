//! KVM's coalesced I/O ring: port writes KVM records instead of exiting.
//!
//! A guest printing to the 16550 console does two port accesses per byte:
//! it reads LSR, then writes the byte to THR. In a nested testbed each exit to
//! user space costs ~80 µs, so the console was most of a verbose boot. Writes
//! to a port registered with `KVM_REGISTER_COALESCED_MMIO` (PIO flavour) are
//! appended to a page shared with user space and the guest continues; the VMM
//! replays them, in order, before it handles the next exit (serial.rs decides
//! when the THR port may be coalesced at all).
//!
//! There is one ring per VM, reachable through any vCPU's mmap; shimvmm maps
//! it once and every vCPU thread drains it under one lock, so entries are
//! replayed exactly once and in the order the guest wrote them.

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use kvm_bindings::{kvm_coalesced_mmio, kvm_coalesced_mmio_ring};
use vmm_config::sync::lock_unpoisoned;

/// Data bytes one ring entry holds.
const ENTRY_DATA: usize = 8;

pub struct CoalescedRing {
    page: *mut u8,
    page_len: usize,
    /// Entries in the ring (KVM_COALESCED_MMIO_MAX).
    max: u32,
    /// Serializes drains: `first` is ours to advance, once per entry.
    drain: Mutex<()>,
}

// SAFETY: the page is a MAP_SHARED mapping owned by this struct; `first` and
// `last` are only accessed atomically and entries only read between them, all
// under `drain`.
unsafe impl Send for CoalescedRing {}
// SAFETY: as above; every access from a shared reference goes through `drain`.
unsafe impl Sync for CoalescedRing {}

impl CoalescedRing {
    /// Maps the ring through `vcpu_fd`; `page_offset` is what
    /// KVM_CHECK_EXTENSION(KVM_CAP_COALESCED_PIO) returned (in pages).
    pub fn map(vcpu_fd: &impl AsRawFd, page_offset: i32) -> io::Result<CoalescedRing> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page_len = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if page_offset <= 0 || page_len <= 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let page_len = page_len as usize;
        let off = libc::off_t::from(page_offset) * page_len as libc::off_t;
        // SAFETY: a fresh shared mapping of one page of the vCPU fd at the
        // offset KVM documents for the coalesced ring; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu_fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let header = offset_of!(kvm_coalesced_mmio_ring, coalesced_mmio);
        let max = ((page_len - header) / size_of::<kvm_coalesced_mmio>()) as u32;
        Ok(CoalescedRing { page: p.cast(), page_len, max, drain: Mutex::new(()) })
    }

    fn index(&self, field: usize) -> &AtomicU32 {
        // SAFETY: `first` and `last` are aligned u32 fields at the start of
        // the mapped page, which lives as long as `self`.
        unsafe { &*self.page.add(field).cast::<AtomicU32>() }
    }

    /// Whether the guest wrote anything since the last drain (no lock taken).
    pub fn is_empty(&self) -> bool {
        let first = self.index(offset_of!(kvm_coalesced_mmio_ring, first)).load(Ordering::Relaxed);
        let last = self.index(offset_of!(kvm_coalesced_mmio_ring, last)).load(Ordering::Acquire);
        first == last
    }

    /// Hands every recorded write, oldest first, to `replay(port, data)`.
    pub fn drain(&self, mut replay: impl FnMut(u64, &[u8])) {
        if self.is_empty() {
            return;
        }
        let _g = lock_unpoisoned(&self.drain);
        let first_at = self.index(offset_of!(kvm_coalesced_mmio_ring, first));
        let last_at = self.index(offset_of!(kvm_coalesced_mmio_ring, last));
        let mut first = first_at.load(Ordering::Relaxed);
        // KVM fills an entry before it publishes `last` (smp_wmb).
        let last = last_at.load(Ordering::Acquire);
        if first >= self.max || last >= self.max {
            log::error!("coalesced I/O ring indices out of range ({first}, {last}); dropping its contents");
            first_at.store(last.min(self.max - 1), Ordering::Release);
            return;
        }
        let entries = offset_of!(kvm_coalesced_mmio_ring, coalesced_mmio);
        while first != last {
            // SAFETY: first < max, so the entry lies inside the mapped page;
            // KVM does not rewrite it until we advance `first` past it.
            let e: kvm_coalesced_mmio = unsafe {
                std::ptr::read_volatile(
                    self.page.add(entries + first as usize * size_of::<kvm_coalesced_mmio>()).cast(),
                )
            };
            let len = (e.len as usize).min(ENTRY_DATA);
            replay(e.phys_addr, &e.data[..len]);
            first = (first + 1) % self.max;
            first_at.store(first, Ordering::Release);
        }
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the page `map` mapped; nothing refers to it
        // once the ring is dropped.
        unsafe { libc::munmap(self.page.cast(), self.page_len) };
    }
}
