//! The split virtqueues of the virtio-net device, on the per-packet path.
//!
//! virtio-queue's `Queue` resolves every ring access through vm-memory (a
//! region lookup and a bounds check per field) and builds an iterator per
//! chain: about 750 instructions per received packet, more than the rest of
//! the shim's path together. [`SplitRing`] resolves the three rings to host
//! addresses once, when the device is activated, and then reads descriptors
//! and writes used elements directly. What the guest controls is still
//! checked on every access: the avail index (at most a queue ahead), every
//! head and next index (below the queue size), the chain length, and every
//! buffer address (inside guest RAM, through [`RamMap`]).
//!
//! It implements the same protocol as virtio-queue (VIRTIO 1.2, 2.7): the
//! same memory ordering, EVENT_IDX suppression with Linux's inequality, and
//! the same verdicts on malformed chains (the device tests drive both).

use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU16, Ordering};

use log::warn;
use virtio_bindings::virtio_ring::{
    VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE, VRING_USED_F_NO_NOTIFY,
};
use virtio_queue::desc::RawDescriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

use super::backend::{DropReason, VNET_HDR_LEN};
use super::chain::{ChainInfo, Direction, MAX_CHAIN_DESCS};
use crate::mem::RamMap;
use crate::GuestMemory;

/// Bytes of one descriptor, one avail entry, one used element.
const DESC_SIZE: u64 = 16;
const AVAIL_ELEM: u64 = 2;
const USED_ELEM: u64 = 8;
/// flags + idx in front of the avail and used rings.
const RING_HEADER: u64 = 4;
/// Offset of `idx` in both ring headers.
const IDX_OFFSET: usize = 2;
/// The trailing event field (used_event / avail_event) of a ring.
const EVENT_FIELD: u64 = 2;

const F_NEXT: u16 = VRING_DESC_F_NEXT as u16;
const F_WRITE: u16 = VRING_DESC_F_WRITE as u16;
const F_INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

/// Why a queue could not be set up for direct access.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RingError {
    #[error("the {0} of the queue is not inside one guest RAM region")]
    NotInRam(&'static str),
    #[error("the {0} of the queue is misaligned")]
    Misaligned(&'static str),
    #[error("queue size {0} is not a power of two between 1 and 32768")]
    BadSize(u16),
}

/// One descriptor as it sits in guest memory (little-endian fields).
#[repr(C)]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

/// The device side of one split virtqueue. See the module documentation.
pub struct SplitRing {
    ram: RamMap,
    size: u16,
    desc: *const Desc,
    /// The avail ring (flags, idx, ring[size], used_event).
    avail: *const u8,
    /// The used ring (flags, idx, ring[size], avail_event).
    used: *mut u8,
    next_avail: u16,
    /// The driver's avail idx as last read (re-read only when caught up).
    avail_idx: u16,
    next_used: u16,
    /// `next_used` at the last `needs_notification`: the elements added
    /// since are the ones after it (no count kept per element).
    signalled_used: u16,
    event_idx: bool,
    /// Times the driver published an avail idx more than a queue ahead.
    pub bad_avail_idx: u64,
}

// SAFETY: the raw pointers point into guest RAM mappings that `ram` keeps
// alive (it holds the memory handle); they are only dereferenced through
// volatile/atomic accesses on the thread that owns the SplitRing.
unsafe impl Send for SplitRing {}

impl SplitRing {
    /// Takes over `q` as the driver configured it. `event_idx`: whether
    /// VIRTIO_RING_F_EVENT_IDX was negotiated.
    pub fn new(q: &Queue, mem: &GuestMemory, event_idx: bool) -> Result<SplitRing, RingError> {
        let size = q.size();
        if size == 0 || size > 32768 || !size.is_power_of_two() {
            return Err(RingError::BadSize(size));
        }
        let ram = RamMap::new(mem);
        let n = u64::from(size);
        let map = |what: &'static str, addr: u64, len: u64, align: u64| {
            if !addr.is_multiple_of(align) {
                return Err(RingError::Misaligned(what));
            }
            ram.host_range(addr, len).ok_or(RingError::NotInRam(what))
        };
        let desc = map("descriptor table", q.desc_table(), DESC_SIZE * n, 16)?;
        let avail = map("available ring", q.avail_ring(), RING_HEADER + AVAIL_ELEM * n + EVENT_FIELD, 2)?;
        let used = map("used ring", q.used_ring(), RING_HEADER + USED_ELEM * n + EVENT_FIELD, 4)?;
        let next_avail = q.next_avail();
        Ok(SplitRing {
            ram,
            size,
            desc: desc.cast_const().cast(),
            avail: avail.cast_const(),
            used,
            next_avail,
            avail_idx: next_avail,
            next_used: q.next_used(),
            signalled_used: q.next_used(),
            event_idx,
            bad_avail_idx: 0,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// The guest RAM map the ring checks buffers against.
    pub fn ram(&self) -> &RamMap {
        &self.ram
    }

    fn avail_idx_field(&self) -> &AtomicU16 {
        // SAFETY: avail + 2 is inside the mapped avail ring and 2-byte
        // aligned (checked in `new`); AtomicU16 has u16's layout, and the
        // mapping outlives `self`.
        unsafe { &*self.avail.add(IDX_OFFSET).cast::<AtomicU16>() }
    }

    fn used_idx_field(&self) -> &AtomicU16 {
        // SAFETY: as for avail_idx_field: inside the used ring, aligned.
        unsafe { &*self.used.add(IDX_OFFSET).cast::<AtomicU16>() }
    }

    fn used_flags_field(&self) -> &AtomicU16 {
        // SAFETY: the first field of the mapped, 4-byte-aligned used ring.
        unsafe { &*self.used.cast::<AtomicU16>() }
    }

    /// `used_event`, the avail ring's trailing field.
    fn used_event_field(&self) -> &AtomicU16 {
        let off = RING_HEADER + AVAIL_ELEM * u64::from(self.size);
        // SAFETY: the last 2 bytes of the mapped avail ring; even offset from
        // a 2-byte-aligned base.
        unsafe { &*self.avail.add(off as usize).cast::<AtomicU16>() }
    }

    /// `avail_event`, the used ring's trailing field.
    fn avail_event_field(&self) -> &AtomicU16 {
        let off = RING_HEADER + USED_ELEM * u64::from(self.size);
        // SAFETY: the last 2 bytes of the mapped used ring; even offset.
        unsafe { &*self.used.add(off as usize).cast::<AtomicU16>() }
    }

    /// Whether the driver has published chains we have not taken. A driver
    /// that publishes more than a queue ahead is broken: nothing is taken
    /// (as virtio-queue does) and it is counted.
    fn has_avail(&mut self) -> bool {
        self.avail_count() > 0
    }

    /// How many chains the driver has published that we have not taken
    /// (the index is re-read once we caught up with it). A driver that
    /// publishes more than a queue ahead is broken: nothing is taken (as
    /// virtio-queue does) and it is counted.
    pub fn avail_count(&mut self) -> u16 {
        if self.avail_idx == self.next_avail {
            // Acquire: the ring entries and descriptors written before the
            // index are visible once we see it.
            self.avail_idx = u16::from_le(self.avail_idx_field().load(Ordering::Acquire));
        }
        let pending = self.avail_idx.wrapping_sub(self.next_avail);
        if pending > self.size {
            self.bad_avail_idx += 1;
            if self.bad_avail_idx == 1 {
                warn!(
                    "virtio: driver published avail idx {} with next {} in a {}-entry queue; queue stalled",
                    self.avail_idx, self.next_avail, self.size
                );
            }
            self.avail_idx = self.next_avail;
            return 0;
        }
        pending
    }

    /// Whether heads of the avail index as last read are still untaken
    /// (no guest memory read; `avail_count` reads the index again).
    #[inline(always)]
    pub fn avail_cached(&self) -> bool {
        self.avail_idx != self.next_avail
    }

    /// The index of the next avail ring entry to take.
    #[inline(always)]
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    /// The index of the next used element to write.
    #[inline(always)]
    pub fn next_used(&self) -> u16 {
        self.next_used
    }

    /// Takes the next available head. The value is the guest's: it may be
    /// outside the queue, which [`SplitRing::parse`] and the caller check.
    #[inline]
    pub fn pop_head(&mut self) -> Option<u16> {
        if !self.has_avail() {
            return None;
        }
        Some(self.pop_counted())
    }

    /// Takes the next head of the `avail_count()` the caller was told are
    /// there (a run of them without re-checking the index each time). The
    /// value is the guest's, as for [`SplitRing::pop_head`].
    #[inline]
    pub fn pop_counted(&mut self) -> u16 {
        let head = self.peek_counted();
        self.skip_counted();
        head
    }

    /// The head [`SplitRing::pop_counted`] would take, left in the ring.
    #[inline]
    pub fn peek_counted(&self) -> u16 {
        debug_assert!(self.avail_idx != self.next_avail, "peek_counted past avail_count");
        // size is a power of two (checked in `new`).
        let slot = u64::from(self.next_avail & (self.size - 1));
        // SAFETY: slot < size, so the entry lies inside the mapped avail ring
        // (2-byte aligned); a volatile read because the guest owns the ring.
        let head = unsafe { self.avail.add((RING_HEADER + AVAIL_ELEM * slot) as usize).cast::<u16>().read_volatile() };
        u16::from_le(head)
    }

    /// Takes the head [`SplitRing::peek_counted`] showed.
    #[inline]
    pub fn skip_counted(&mut self) {
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    /// Puts back the head the last pop took: the next pop takes it again
    /// (a frame the rate limiter holds back stays the guest's).
    #[inline]
    pub fn unpop(&mut self) {
        self.next_avail = self.next_avail.wrapping_sub(1);
    }

    /// Descriptor `i` of the ring's table (`i` < size).
    fn desc(&self, i: u16) -> Desc {
        debug_assert!(i < self.size);
        // SAFETY: i < size (all callers check), so the descriptor lies inside
        // the mapped, 16-byte-aligned table; read once, by value, so a guest
        // changing it afterwards cannot affect what is validated.
        let d = unsafe { self.desc.add(usize::from(i)).read_volatile() };
        Desc {
            addr: u64::from_le(d.addr),
            len: u32::from_le(d.len),
            flags: u16::from_le(d.flags),
            next: u16::from_le(d.next),
        }
    }

    /// The chain at `head` if it is one lone descriptor that passes every
    /// check of [`SplitRing::parse`]: its address and length. This is the
    /// shape of RX buffers with MRG_RXBUF (and of most TX frames), checked
    /// without building a segment list. `None` for any other shape or a
    /// failed check; `parse` then gives the verdict.
    #[inline]
    pub fn single(&self, head: u16, dir: Direction) -> Option<(GuestAddress, u32)> {
        if head >= self.size {
            return None;
        }
        let d = self.desc(head);
        let want = if dir == Direction::DeviceWrites { F_WRITE } else { 0 };
        let ok = d.flags & (F_NEXT | F_INDIRECT | F_WRITE) == want
            && d.len as usize >= VNET_HDR_LEN
            && self.ram.contains(d.addr, u64::from(d.len));
        ok.then_some((GuestAddress(d.addr), d.len))
    }

    /// [`SplitRing::single`] for a buffer the device writes, also giving the
    /// host address of its first byte: the buffer lies inside one guest RAM
    /// mapping (a buffer that spans two gets `None`, and `parse` takes it).
    #[inline]
    pub fn single_mapped(&self, head: u16) -> Option<(u64, u32, NonNull<u8>)> {
        if head >= self.size {
            return None;
        }
        let d = self.desc(head);
        if d.flags & (F_NEXT | F_INDIRECT | F_WRITE) != F_WRITE || (d.len as usize) < VNET_HDR_LEN {
            return None;
        }
        let host = NonNull::new(self.ram.host_range(d.addr, u64::from(d.len))?)?;
        Some((d.addr, d.len, host))
    }

    /// Walks the chain at `head` and validates it for `dir` into `segs`
    /// (cleared first): every descriptor in the right direction, non-zero,
    /// inside guest RAM, at most [`MAX_CHAIN_DESCS`], no loop, at least the
    /// virtio-net header in total. An indirect table is followed when it is
    /// the head (VIRTIO 1.2, 2.7.5.3); one inside a table is refused.
    pub fn parse(
        &self,
        head: u16,
        dir: Direction,
        segs: &mut Vec<(GuestAddress, u32)>,
    ) -> Result<ChainInfo, DropReason> {
        segs.clear();
        if head >= self.size {
            return Err(DropReason::BadAddress);
        }
        let want_write = dir == Direction::DeviceWrites;
        let d = self.desc(head);
        if d.flags & (F_NEXT | F_INDIRECT) == 0 {
            // One descriptor: what a Linux guest posts for RX with
            // MRG_RXBUF, and for most TX frames.
            let len = self.check_desc(&d, want_write)?;
            segs.push((GuestAddress(d.addr), d.len));
            return finish(head, len);
        }
        let total = if d.flags & F_INDIRECT != 0 {
            self.walk_indirect(d, want_write, segs)?
        } else {
            self.walk(d, self.size, |i| Ok(self.desc(i)), want_write, segs)?
        };
        finish(head, total)
    }

    /// Follows a chain from its first descriptor `d`, reading successor `i`
    /// (< `entries`) with `read`; returns the chain's total length. An
    /// indirect descriptor anywhere but at a chain's head is refused.
    #[inline]
    fn walk(
        &self,
        mut d: Desc,
        entries: u16,
        read: impl Fn(u16) -> Result<Desc, DropReason>,
        want_write: bool,
        segs: &mut Vec<(GuestAddress, u32)>,
    ) -> Result<u64, DropReason> {
        let mut total: u64 = 0;
        loop {
            if segs.len() >= MAX_CHAIN_DESCS {
                return Err(DropReason::ChainTooLong);
            }
            if d.flags & F_INDIRECT != 0 {
                return Err(DropReason::BadAddress);
            }
            total += self.check_desc(&d, want_write)?;
            segs.push((GuestAddress(d.addr), d.len));
            if d.flags & F_NEXT == 0 {
                return Ok(total);
            }
            if d.next >= entries {
                return Err(DropReason::ChainTooLong);
            }
            d = read(d.next)?;
        }
    }

    /// One descriptor's checks; its length on success.
    #[inline]
    fn check_desc(&self, d: &Desc, want_write: bool) -> Result<u64, DropReason> {
        if (d.flags & F_WRITE != 0) != want_write {
            return Err(DropReason::WrongDirection);
        }
        if d.len == 0 {
            return Err(DropReason::ZeroLength);
        }
        if !self.ram.contains(d.addr, u64::from(d.len)) {
            return Err(DropReason::BadAddress);
        }
        Ok(u64::from(d.len))
    }

    /// The chain in the indirect table `ind` points to (rare on the per-packet
    /// path: read through vm-memory). A table of more than 65535 entries is
    /// refused: a chain's u16 `next` could not reach past that anyway.
    fn walk_indirect(
        &self,
        ind: Desc,
        want_write: bool,
        segs: &mut Vec<(GuestAddress, u32)>,
    ) -> Result<u64, DropReason> {
        let bytes = u64::from(ind.len);
        if ind.flags & F_NEXT != 0
            || bytes == 0
            || !bytes.is_multiple_of(DESC_SIZE)
            || bytes / DESC_SIZE > u64::from(u16::MAX)
            || !self.ram.contains(ind.addr, bytes)
        {
            return Err(DropReason::BadAddress);
        }
        let entries = (bytes / DESC_SIZE) as u16;
        let mem = self.ram.mem();
        let read = |i: u16| -> Result<Desc, DropReason> {
            let at = ind.addr + u64::from(i) * DESC_SIZE;
            let raw: RawDescriptor = mem.read_obj(GuestAddress(at)).map_err(|_| DropReason::BadAddress)?;
            // RawDescriptor is the 16 bytes in guest (little-endian) order.
            let b: [u8; 16] = desc_bytes(raw);
            Ok(Desc {
                addr: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
                len: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
                flags: u16::from_le_bytes(b[12..14].try_into().expect("2 bytes")),
                next: u16::from_le_bytes(b[14..16].try_into().expect("2 bytes")),
            })
        };
        self.walk(read(0)?, entries, read, want_write, segs)
    }

    /// Publishes a used element for `head` (a head the device took from this
    /// ring, so < size; anything else is refused and logged).
    pub fn add_used(&mut self, head: u16, len: u32) {
        if self.push_used(head, len) {
            self.publish_used();
        }
    }

    /// Writes a used element for `head` without publishing it: the driver
    /// sees it with the next [`SplitRing::publish_used`], which must come
    /// before `needs_notification`. One index store for a run of elements.
    /// A head beyond the queue is refused and logged (false).
    #[inline]
    pub fn push_used(&mut self, head: u16, len: u32) -> bool {
        if head >= self.size {
            return refuse_used(head);
        }
        self.push_used_in_queue(head, len);
        true
    }

    /// [`SplitRing::push_used`] for a head the caller knows is inside the
    /// queue (it indexes a book of the queue's size). A head beyond it would
    /// reach the driver as an invalid id, never memory outside the ring.
    #[inline(always)]
    pub fn push_used_in_queue(&mut self, head: u16, len: u32) {
        debug_assert!(head < self.size, "used head {head} beyond a {}-entry queue", self.size);
        let slot = u64::from(self.next_used & (self.size - 1));
        let off = (RING_HEADER + USED_ELEM * slot) as usize;
        // SAFETY: slot < size: the element lies inside the mapped used ring,
        // 4-byte aligned (ring base aligned to 4, header 4, elements 8).
        unsafe {
            let e = self.used.add(off).cast::<u32>();
            e.write_volatile(u32::from(head).to_le());
            e.add(1).write_volatile(len.to_le());
        }
        self.next_used = self.next_used.wrapping_add(1);
    }

    /// Makes every used element written so far visible to the driver.
    #[inline]
    pub fn publish_used(&mut self) {
        // Release: the elements are visible before the index that covers them.
        self.used_idx_field().store(self.next_used.to_le(), Ordering::Release);
    }

    /// Asks the driver to kick when it adds buffers; true when some were
    /// added meanwhile (the caller then keeps processing).
    pub fn enable_notification(&mut self) -> bool {
        if self.event_idx {
            // next_avail, not the current avail idx: a kick for every buffer
            // we have not taken yet.
            self.avail_event_field().store(self.next_avail.to_le(), Ordering::Relaxed);
        } else {
            self.used_flags_field().store(0, Ordering::Relaxed);
        }
        // The request is visible before we look at the index again.
        fence(Ordering::SeqCst);
        self.avail_idx = u16::from_le(self.avail_idx_field().load(Ordering::Acquire));
        self.avail_idx != self.next_avail
    }

    /// Tells the driver not to kick (without EVENT_IDX; with it, a kick is
    /// only requested by `enable_notification`).
    pub fn disable_notification(&mut self) {
        if !self.event_idx {
            self.used_flags_field().store((VRING_USED_F_NO_NOTIFY as u16).to_le(), Ordering::Relaxed);
        }
    }

    /// Whether the driver wants an interrupt for the elements added since the
    /// last call (EVENT_IDX: used_event among them; otherwise always, as
    /// virtio-queue: VRING_AVAIL_F_NO_INTERRUPT is only a hint).
    pub fn needs_notification(&mut self) -> bool {
        let used = self.next_used;
        // The used elements and index are visible before used_event is read.
        fence(Ordering::SeqCst);
        let old = std::mem::replace(&mut self.signalled_used, used);
        if !self.event_idx {
            return true;
        }
        let event = u16::from_le(self.used_event_field().load(Ordering::Relaxed));
        used.wrapping_sub(event).wrapping_sub(1) < used.wrapping_sub(old)
    }
}

#[cold]
fn refuse_used(head: u16) -> bool {
    warn!("virtio: refusing used element for head {head} beyond the queue");
    false
}

/// The 16 bytes of a descriptor as stored in guest memory.
fn desc_bytes(raw: RawDescriptor) -> [u8; 16] {
    use vm_memory::ByteValued;
    let mut b = [0u8; 16];
    b.copy_from_slice(raw.as_slice());
    b
}

fn finish(head: u16, total: u64) -> Result<ChainInfo, DropReason> {
    if total < VNET_HDR_LEN as u64 {
        return Err(DropReason::ShortHeader);
    }
    // At most 128 descriptors of < 2^32 bytes each: fits u64; a chain of
    // 4 GiB or more is refused rather than truncated.
    let len = u32::try_from(total).map_err(|_| DropReason::ChainTooLong)?;
    Ok(ChainInfo { head, len })
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemory {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    /// A 16-entry queue with the table at 0x1000, avail at 0x2000, used at
    /// 0x3000.
    struct Vq;
    impl Vq {
        fn desc_table_addr(&self) -> GuestAddress {
            GuestAddress(0x1000)
        }
        fn avail_addr(&self) -> GuestAddress {
            GuestAddress(0x2000)
        }
        fn used_addr(&self) -> GuestAddress {
            GuestAddress(0x3000)
        }
    }

    fn ring(m: &GuestMemory, _vq: &Vq, event_idx: bool) -> SplitRing {
        let mut q = Queue::new(16).unwrap();
        q.set_size(16);
        q.set_desc_table_address(Some(0x1000), Some(0));
        q.set_avail_ring_address(Some(0x2000), Some(0));
        q.set_used_ring_address(Some(0x3000), Some(0));
        SplitRing::new(&q, m, event_idx).unwrap()
    }

    /// Descriptor `i` of the table at 0x1000.
    fn put(m: &GuestMemory, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
        m.write_obj(d, GuestAddress(Vq.desc_table_addr().0 + 16 * i)).unwrap();
    }

    fn publish(m: &GuestMemory, vq: &Vq, heads: &[u16], idx: u16) {
        let avail = vq.avail_addr().0;
        for (k, h) in heads.iter().enumerate() {
            let slot = idx.wrapping_sub(heads.len() as u16).wrapping_add(k as u16) % 16;
            m.write_obj(*h, GuestAddress(avail + 4 + 2 * u64::from(slot))).unwrap();
        }
        m.write_obj(idx, GuestAddress(avail + 2)).unwrap();
    }

    #[test]
    fn single_takes_only_lone_valid_descriptors_and_agrees_with_parse() {
        let m = mem();
        let vq = Vq;
        put(&m, 0, 0x8000, 1536, F_WRITE, 0); // fine for RX
        put(&m, 1, 0x8000, 1536, 0, 0); // fine for TX
        put(&m, 2, 0x8000, 1536, F_WRITE | F_NEXT, 0); // a chain
        put(&m, 3, 0x8000, 256, F_INDIRECT, 0); // an indirect table
        put(&m, 4, 0x8000, 11, F_WRITE, 0); // shorter than the header
        put(&m, 5, 0x8000, 0, F_WRITE, 0); // empty
        put(&m, 6, 0x10_0000 - 100, 1536, F_WRITE, 0); // runs off the end of RAM
        put(&m, 7, u64::MAX - 10, 1536, F_WRITE, 0); // wraps the address space
        let r = ring(&m, &vq, false);
        assert_eq!(r.single(0, Direction::DeviceWrites), Some((GuestAddress(0x8000), 1536)));
        assert_eq!(r.single(1, Direction::DeviceReads), Some((GuestAddress(0x8000), 1536)));
        assert_eq!(r.single(0, Direction::DeviceReads), None, "wrong direction");
        assert_eq!(r.single(16, Direction::DeviceWrites), None, "head beyond the queue");
        let mut segs = Vec::new();
        for head in 2..8u16 {
            assert_eq!(r.single(head, Direction::DeviceWrites), None, "head {head}");
        }
        // Whatever `single` accepts, `parse` accepts the same way.
        for (head, dir) in [(0, Direction::DeviceWrites), (1, Direction::DeviceReads)] {
            let (addr, len) = r.single(head, dir).unwrap();
            let info = r.parse(head, dir, &mut segs).unwrap();
            assert_eq!((segs.as_slice(), info.len), (&[(addr, len)][..], len));
        }
        // And what it leaves to `parse` gets parse's verdict.
        for (head, want) in [
            (4, DropReason::ShortHeader),
            (5, DropReason::ZeroLength),
            (6, DropReason::BadAddress),
            (7, DropReason::BadAddress),
        ] {
            assert_eq!(r.parse(head, Direction::DeviceWrites, &mut segs).err(), Some(want), "head {head}");
        }
    }

    #[test]
    fn single_mapped_is_single_for_rx_with_the_host_address() {
        let m = mem();
        let vq = Vq;
        let put = |i: u64, addr: u64, len: u32, flags: u16| {
            let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0));
            m.write_obj(d, GuestAddress(vq.desc_table_addr().0 + 16 * i)).unwrap();
        };
        put(0, 0x8000, 1536, F_WRITE);
        put(1, 0x8000, 1536, 0); // device-readable
        put(2, 0x8000, 1536, F_WRITE | F_NEXT);
        put(3, 0x8000, 11, F_WRITE);
        put(4, 0x10_0000 - 100, 1536, F_WRITE);
        put(5, u64::MAX - 10, 1536, F_WRITE);
        let r = ring(&m, &vq, false);
        let (gpa, len, host) = r.single_mapped(0).unwrap();
        assert_eq!((gpa, len), (0x8000, 1536));
        assert_eq!(host.as_ptr(), vm_memory::GuestMemoryBackend::get_host_address(&m, GuestAddress(0x8000)).unwrap());
        for head in (1..6).chain([16, u16::MAX]) {
            assert_eq!(r.single_mapped(head), None, "head {head}");
            let single = r.single(head, Direction::DeviceWrites);
            assert_eq!(single, None, "single agrees for head {head}");
        }
    }

    #[test]
    fn pop_if_takes_accepted_lone_buffers_and_leaves_the_rest_for_pop() {
        use crate::net::direct::{Held, RxDesc, RxNext, RxQueue};
        use crate::net::metrics::NetMetrics;
        let m = mem();
        let vq = Vq;
        put(&m, 0, 0x8000, 1536, F_WRITE, 0);
        put(&m, 1, 0x9000, 100, F_WRITE, 0); // refused by the caller below
        put(&m, 2, 0xa000, 1536, F_WRITE | F_NEXT, 3); // a chain
        put(&m, 3, 0xb000, 1536, F_WRITE, 0);
        publish(&m, &vq, &[0, 1, 2, 0], 4); // head 0 twice
        let mut r = ring(&m, &vq, false);
        let (mut held, mut metrics, mut segs) = (vec![Held::NONE; 16], NetMetrics::default(), Vec::new());
        let mut q = RxQueue::new(&mut r, &mut held, &mut metrics, &mut segs, "t");
        let big = |d: &RxDesc| d.len() >= 1000;
        let d = q.pop_if(big).unwrap();
        assert_eq!((d.head(), d.gpa(), d.len()), (0, 0x8000, 1536));
        assert_eq!(
            d.host().as_ptr(),
            vm_memory::GuestMemoryBackend::get_host_address(&m, GuestAddress(0x8000)).unwrap()
        );
        assert!(q.pop_if(big).is_none(), "too small for the caller: left");
        assert!(matches!(q.pop(), Some(RxNext::One(d)) if d.head() == 1));
        assert!(q.pop_if(|_| true).is_none(), "a chain: left");
        assert!(matches!(q.pop(), Some(RxNext::Chain(c)) if c.head == 2 && c.len == 3072));
        assert!(q.pop_if(|_| true).is_none(), "head 0 again, still held: left");
        assert!(q.pop().is_none(), "pop skips and counts it");
        assert!(q.pop_if(|_| true).is_none(), "nothing left");
        assert_eq!(q.popped(), 4);
        drop(q);
        assert_eq!((held[0].len, held[1].len, held[2].len), (1536, 100, 3072));
        assert_eq!(metrics.duplicate_heads, 1);
    }

    #[test]
    fn complete_frame_writes_the_header_of_lent_buffers_and_nothing_else() {
        use crate::net::direct::{Held, RxQueue};
        use crate::net::metrics::NetMetrics;
        let m = mem();
        let vq = Vq;
        put(&m, 0, 0x8000, 1536, F_WRITE, 0);
        put(&m, 1, 0x9000, 1536, F_WRITE, 0);
        put(&m, 2, 0xa000, 1536, F_WRITE | F_NEXT, 3); // a chain
        put(&m, 3, 0xb000, 1536, F_WRITE, 0);
        put(&m, 4, 0xc000, 1536, F_WRITE, 0);
        publish(&m, &vq, &[0, 1, 2, 4], 4);
        for a in [0x8000u64, 0x9000, 0xa000, 0xc000] {
            m.write_slice(&[0xee; 12], GuestAddress(a)).unwrap();
        }
        let mut r = ring(&m, &vq, false);
        let (mut held, mut metrics, mut segs) = (vec![Held::NONE; 16], NetMetrics::default(), Vec::new());
        let mut q = RxQueue::new(&mut r, &mut held, &mut metrics, &mut segs, "t");
        for _ in 0..4 {
            assert!(q.pop().is_some());
        }
        assert_eq!(q.lent(0).map(|d| (d.gpa(), d.len())), Some((0x8000, 1536)));
        assert!(q.lent(2).is_none(), "a chain is not lent as one buffer");
        assert!(q.lent(5).is_none() && q.lent(u16::MAX).is_none(), "not held");
        q.complete_frame(0, 100);
        q.complete_frame(1, 1536 - 12 + 1); // one byte too many
        q.complete_frame(2, 100); // held, but as a chain
        q.complete_frame(0, 100); // no longer held
        q.complete_frame(300, 100); // beyond the queue
        assert!(q.lent(0).is_none(), "completed: no longer lent");
        assert!(q.pop().is_none());
        drop(q);
        let hdr = |a: u64| {
            let mut h = [0u8; 12];
            m.read_slice(&mut h, GuestAddress(a)).unwrap();
            h
        };
        assert_eq!(hdr(0x8000), [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "no offloads, one buffer");
        assert_eq!(hdr(0x9000), [0xee; 12], "a frame that does not fit gets no header");
        assert_eq!(hdr(0xa000), [0xee; 12], "nothing written into a chain");
        let used = vq.used_addr().0;
        assert_eq!(m.read_obj::<u16>(GuestAddress(used + 2)).unwrap(), 2, "published with the pass");
        let elem = |k: u64| {
            let id = m.read_obj::<u32>(GuestAddress(used + 4 + 8 * k)).unwrap();
            let len = m.read_obj::<u32>(GuestAddress(used + 8 + 8 * k)).unwrap();
            (id, len)
        };
        assert_eq!([elem(0), elem(1)], [(0, 112), (1, 0)], "the one that does not fit goes back empty");
        assert_eq!((held[0].len, held[1].len, held[2].len, held[4].len), (0, 0, 3072, 1536));
        assert_eq!(metrics.backend_bogus_completions, 4);
        assert_eq!((metrics.rx_packets, metrics.rx_bytes, metrics.rx_buffers_used), (1, 100, 2));
    }

    #[test]
    fn pushed_used_elements_are_invisible_until_published() {
        let m = mem();
        let vq = Vq;
        let mut r = ring(&m, &vq, false);
        let used = vq.used_addr().0;
        assert!(r.push_used(3, 100));
        assert!(r.push_used(5, 200));
        assert!(!r.push_used(16, 1), "beyond the queue: refused");
        assert_eq!(m.read_obj::<u16>(GuestAddress(used + 2)).unwrap(), 0, "not yet published");
        r.publish_used();
        assert_eq!(m.read_obj::<u16>(GuestAddress(used + 2)).unwrap(), 2);
        let elem = |k: u64| {
            let id = m.read_obj::<u32>(GuestAddress(used + 4 + 8 * k)).unwrap();
            let len = m.read_obj::<u32>(GuestAddress(used + 8 + 8 * k)).unwrap();
            (id, len)
        };
        assert_eq!([elem(0), elem(1)], [(3, 100), (5, 200)]);
    }

    #[test]
    fn avail_count_bounds_a_run_of_pops() {
        let m = mem();
        let vq = Vq;
        let mut r = ring(&m, &vq, false);
        assert_eq!(r.avail_count(), 0);
        publish(&m, &vq, &[5, 9, 2], 3);
        assert_eq!(r.avail_count(), 3);
        let run: Vec<u16> = (0..3).map(|_| r.pop_counted()).collect();
        assert_eq!(run, vec![5, 9, 2]);
        assert_eq!(r.avail_count(), 0);
        // A driver more than a queue ahead gets nothing (and is counted).
        m.write_obj(3u16 + 17, GuestAddress(vq.avail_addr().0 + 2)).unwrap();
        assert_eq!(r.avail_count(), 0);
        assert_eq!(r.bad_avail_idx, 1);
    }

    #[test]
    fn pops_parses_and_completes_like_the_spec() {
        let m = mem();
        let vq = Vq;
        let d = RawDescriptor::from(SplitDescriptor::new(0x8000, 1536, F_WRITE, 0));
        m.write_obj(d, GuestAddress(vq.desc_table_addr().0 + 16 * 3)).unwrap();
        let mut r = ring(&m, &vq, false);
        assert_eq!(r.pop_head(), None);
        publish(&m, &vq, &[3], 1);
        assert_eq!(r.pop_head(), Some(3));
        assert_eq!(r.pop_head(), None);
        let mut segs = Vec::new();
        let info = r.parse(3, Direction::DeviceWrites, &mut segs).unwrap();
        assert_eq!((info.head, info.len), (3, 1536));
        assert_eq!(segs, vec![(GuestAddress(0x8000), 1536)]);
        assert_eq!(r.parse(3, Direction::DeviceReads, &mut segs), Err(DropReason::WrongDirection));
        assert_eq!(r.parse(16, Direction::DeviceWrites, &mut segs), Err(DropReason::BadAddress));
        r.add_used(3, 100);
        r.add_used(16, 1); // beyond the queue: refused
        let used = vq.used_addr().0;
        assert_eq!(m.read_obj::<u16>(GuestAddress(used + 2)).unwrap(), 1);
        assert_eq!(m.read_obj::<u32>(GuestAddress(used + 4)).unwrap(), 3);
        assert_eq!(m.read_obj::<u32>(GuestAddress(used + 8)).unwrap(), 100);
        // Without EVENT_IDX: NO_NOTIFY in the used flags, always interrupt.
        r.disable_notification();
        assert_eq!(m.read_obj::<u16>(GuestAddress(used)).unwrap(), VRING_USED_F_NO_NOTIFY as u16);
        assert!(!r.enable_notification());
        assert_eq!(m.read_obj::<u16>(GuestAddress(used)).unwrap(), 0);
        assert!(r.needs_notification());
    }

    #[test]
    fn avail_index_more_than_a_queue_ahead_takes_nothing() {
        let m = mem();
        let vq = Vq;
        let mut r = ring(&m, &vq, false);
        publish(&m, &vq, &[], 17);
        assert_eq!(r.pop_head(), None);
        assert_eq!(r.bad_avail_idx, 1);
        // The driver comes back to its senses: the ring works again.
        publish(&m, &vq, &[5], 1);
        assert_eq!(r.pop_head(), Some(5));
    }

    #[test]
    fn event_idx_asks_for_kicks_and_suppresses_interrupts() {
        let m = mem();
        let vq = Vq;
        let mut r = ring(&m, &vq, true);
        let (avail, used) = (vq.avail_addr().0, vq.used_addr().0);
        publish(&m, &vq, &[0, 1], 2);
        assert_eq!(r.pop_head(), Some(0));
        // One buffer still pending: enabling reports it, avail_event = next_avail.
        assert!(r.enable_notification());
        assert_eq!(m.read_obj::<u16>(GuestAddress(used + 4 + 8 * 16)).unwrap(), 1);
        assert_eq!(r.pop_head(), Some(1));
        // used_event = 1: interrupt when the used index passes 1.
        m.write_obj(1u16, GuestAddress(avail + 4 + 2 * 16)).unwrap();
        r.add_used(0, 0);
        assert!(!r.needs_notification(), "used idx 1 does not pass used_event 1");
        r.add_used(1, 0);
        assert!(r.needs_notification(), "used idx 2 passes used_event 1");
        assert!(!r.needs_notification(), "nothing added since");
    }

    #[test]
    fn rings_must_sit_inside_one_region() {
        let m: GuestMemory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x1000), (GuestAddress(0x1000), 0x1000)]).unwrap();
        let mut q = Queue::new(16).unwrap();
        q.set_size(16);
        q.set_desc_table_address(Some(0xf80), Some(0)); // 256 bytes across 0x1000
        q.set_avail_ring_address(Some(0x1100), Some(0));
        q.set_used_ring_address(Some(0x1200), Some(0));
        assert_eq!(SplitRing::new(&q, &m, false).err(), Some(RingError::NotInRam("descriptor table")));
        q.set_desc_table_address(Some(0x800), Some(0));
        q.set_used_ring_address(Some(0x1f80), Some(0)); // runs past the end of RAM
        assert_eq!(SplitRing::new(&q, &m, false).err(), Some(RingError::NotInRam("used ring")));
        q.set_used_ring_address(Some(0x1400), Some(0));
        assert!(SplitRing::new(&q, &m, false).is_ok());
    }

    /// The chain bound: 128 descriptors pass, 129 do not; a next index beyond
    /// the queue and a loop end the walk as too long.
    #[test]
    fn chain_bound_loops_and_next_beyond_the_queue() {
        let m: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let mut q = Queue::new(256).unwrap();
        q.set_size(256);
        q.set_desc_table_address(Some(0x1000), Some(0));
        q.set_avail_ring_address(Some(0x2000), Some(0));
        q.set_used_ring_address(Some(0x3000), Some(0));
        let r = SplitRing::new(&q, &m, false).unwrap();
        let put = |i: u16, flags: u16, next: u16| {
            let d = RawDescriptor::from(SplitDescriptor::new(0x8000 + u64::from(i) * 64, 64, flags, next));
            m.write_obj(d, GuestAddress(0x1000 + 16 * u64::from(i))).unwrap();
        };
        let mut segs = Vec::new();
        for (k, ok) in [(MAX_CHAIN_DESCS, true), (MAX_CHAIN_DESCS + 1, false)] {
            for i in 0..k as u16 {
                let last = usize::from(i) == k - 1;
                put(i, if last { 0 } else { F_NEXT }, i + 1);
            }
            let got = r.parse(0, Direction::DeviceReads, &mut segs);
            if ok {
                assert_eq!(got.unwrap().len, 64 * k as u32);
                assert_eq!(segs.len(), k);
            } else {
                assert_eq!(got, Err(DropReason::ChainTooLong));
            }
        }
        put(0, F_NEXT, 1);
        put(1, F_NEXT, 0);
        assert_eq!(r.parse(0, Direction::DeviceReads, &mut segs), Err(DropReason::ChainTooLong), "loop");
        put(0, F_NEXT, 256);
        assert_eq!(r.parse(0, Direction::DeviceReads, &mut segs), Err(DropReason::ChainTooLong), "next beyond");
        put(0, 0, 0);
        assert_eq!(r.parse(0, Direction::DeviceReads, &mut segs).unwrap().len, 64);
        // Straddling the end of RAM, zero length, short.
        let d = RawDescriptor::from(SplitDescriptor::new(0x10_0000 - 8, 64, 0, 0));
        m.write_obj(d, GuestAddress(0x1000)).unwrap();
        assert_eq!(r.parse(0, Direction::DeviceReads, &mut segs), Err(DropReason::BadAddress));
        let d = RawDescriptor::from(SplitDescriptor::new(0x8000, 0, 0, 0));
        m.write_obj(d, GuestAddress(0x1000)).unwrap();
        assert_eq!(r.parse(0, Direction::DeviceReads, &mut segs), Err(DropReason::ZeroLength));
        let d = RawDescriptor::from(SplitDescriptor::new(0x8000, 11, 0, 0));
        m.write_obj(d, GuestAddress(0x1000)).unwrap();
        assert_eq!(r.parse(0, Direction::DeviceReads, &mut segs), Err(DropReason::ShortHeader));
    }
}
