//! RX and TX descriptor rings of the e1000 family, generic over the
//! descriptor layout (legacy on the 82574L, advanced on the 82576).
//!
//! The rings do the bookkeeping both families share: which caller cookie sits
//! in which slot, head/tail/count, validation of what is posted, and reaping
//! by the DD bit. They never trust the NIC to say which buffer completed: a
//! completion's cookie comes from the slot, not from the descriptor. The
//! driver still owns the registers: it writes `tail()` to RDT/TDT.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, Ordering};

use super::regs::{DESC_SIZE, RXD_STAT_DD, RXD_STAT_EOP, TXD_STATUS_OFF, TXD_STAT_DD};
use crate::dma::DmaArea;
use crate::driver::{DriverError, RxCompletion, RxRunError, TxCompletion, TxOffload};

/// Per-descriptor buffer length limit (the length field is 16 bits).
pub const TX_MAX_SEG_LEN: u32 = 0xffff;

/// Where a family's descriptors keep their fields. Both layouts take the
/// buffer address in bytes 0..8 and clear bytes 8..16 when an RX buffer is
/// posted; the rest differs.
pub trait DescLayout {
    /// Byte offset of the RX write-back status word (DD bit 0, EOP bit 1).
    const RXD_STATUS_OFF: u64;
    /// Byte offset of the RX write-back length (u16).
    const RXD_LEN_OFF: u64;
    /// Status-word bits that flag a damaged frame.
    const RXD_ERR_FRAME: u32;
    /// Status-word bits saying the NIC checked a TCP or UDP checksum
    /// (TCPCS, UDPCS; set on the end-of-packet descriptor only).
    const RXD_L4_CHECKED: u32;
    /// Status-word bits of a bad TCP/UDP or IPv4 header checksum (TCPE,
    /// IPE): the frame is still delivered, its checksum left to the guest.
    const RXD_CSUM_ERR: u32;
    /// The TX descriptor words at bytes 8 and 12 for one segment of `len`
    /// bytes of a `frame_len`-byte frame; `last` marks its final segment.
    fn tx_words(len: u32, last: bool, frame_len: u32) -> [u32; 2];
    /// The four words of the context descriptor that sets up `off` for the
    /// next frame; `None` if the layout has no TX offloads.
    fn tx_context(off: &TxOffload) -> Option<[u32; 4]> {
        let _ = off;
        None
    }
    /// [`DescLayout::tx_words`] for a segment of a frame offloaded with
    /// `off` (set up by the context descriptor before it); `paylen` is the
    /// frame's length as the NIC wants it for `off`, `first` marks the
    /// frame's first segment.
    fn tx_offload_words(len: u32, first: bool, last: bool, paylen: u32, off: &TxOffload) -> [u32; 2] {
        let _ = (off, first);
        Self::tx_words(len, last, paylen)
    }
}

/// Ring sizes are driver constants, not input: a wrong one is a bug.
fn check_size(area: &DmaArea, size: usize) {
    assert!(
        size >= 2 && size.is_power_of_two() && size as u64 * DESC_SIZE <= area.len() as u64,
        "a ring of {size} descriptors (a power of two) does not fit its {}-byte DMA area",
        area.len()
    );
}

/// A descriptor field: its byte offset must leave room for the field inside
/// the descriptor and be naturally aligned. Layouts are constants, so a bad
/// one is a bug caught when the first ring is built.
fn check_field(off: u64, len: u64) {
    assert!(
        off + len <= DESC_SIZE && off.is_multiple_of(len),
        "descriptor field at byte {off} (+{len}) is misaligned or outside a {DESC_SIZE}-byte descriptor"
    );
}

/// The descriptors of one ring, addressed by slot. The area's bounds and the
/// layout's field offsets are checked once, in [`Descs::new`]; a slot index
/// is reduced modulo the (power-of-two) ring size, so no per-packet access
/// has an error path.
struct Descs {
    area: DmaArea,
    slots: Slots,
}

/// Where the descriptors are: what the per-packet accesses need, `Copy` so
/// a reaping loop keeps it in registers (the guest-memory writes its
/// callback makes would otherwise force a reload of every field per frame).
/// Only ever taken from a live [`Descs`] for the length of one borrow of it.
#[derive(Clone, Copy)]
struct Slots {
    base: NonNull<u8>,
    mask: usize,
}

impl Descs {
    fn new(area: DmaArea, size: usize, fields: &[(u64, u64)]) -> Self {
        check_size(&area, size);
        for &(off, len) in fields {
            check_field(off, len);
        }
        let base = area.host_ptr();
        Descs { area, slots: Slots { base, mask: size - 1 } }
    }

    /// Zero every descriptor.
    fn clear(&self) {
        let _ = self.area.write(0, &vec![0u8; self.area.len()]);
    }
}

impl std::ops::Deref for Descs {
    type Target = Slots;
    fn deref(&self) -> &Slots {
        &self.slots
    }
}

impl Slots {
    /// Pointer to byte `off` of descriptor `slot` (taken modulo the size).
    #[inline]
    fn field(&self, slot: usize, off: u64) -> *mut u8 {
        let at = (slot & self.mask) as u64 * DESC_SIZE + off;
        // SAFETY: slot & mask < size and size * DESC_SIZE <= area.len()
        // (check_size); every caller passes an `off` that check_field
        // accepted (field + its length inside the descriptor), so the byte
        // lies inside the area's mapping, which outlives every `Slots` (each
        // is a copy used within one borrow of its `Descs`).
        unsafe { self.base.as_ptr().add(at as usize) }
    }

    #[inline]
    fn u64_at(&self, slot: usize, off: u64) -> &AtomicU64 {
        // SAFETY: inside the area (see `field`), 8-byte aligned (the area is
        // page-aligned, DESC_SIZE and `off` multiples of 8: check_field);
        // the NIC shares this memory, so it is only accessed atomically.
        unsafe { &*self.field(slot, off).cast::<AtomicU64>() }
    }

    #[inline]
    fn u32_at(&self, slot: usize, off: u64) -> &AtomicU32 {
        // SAFETY: as for u64_at, with 4-byte alignment.
        unsafe { &*self.field(slot, off).cast::<AtomicU32>() }
    }

    #[inline]
    fn u16_at(&self, slot: usize, off: u64) -> &AtomicU16 {
        // SAFETY: as for u64_at, with 2-byte alignment.
        unsafe { &*self.field(slot, off).cast::<AtomicU16>() }
    }
}

// SAFETY: `base` points into the mapping `area` owns (DmaArea is Send and
// Sync); Descs only reaches it through atomics.
unsafe impl Send for Descs {}

/// Byte offsets of the RX descriptor's second quadword and the TX
/// descriptor's command/status words.
const QW1: u64 = 8;
const TXD_CMD_WORD: u64 = 8;
const TXD_OLINFO_WORD: u64 = 12;

/// The RX ring: posted buffers wait here until the NIC writes DD.
pub struct RxRing<L> {
    descs: Descs,
    /// The caller's cookie of each posted slot; valid for the `count` slots
    /// from `head`.
    cookies: Vec<u64>,
    size: usize,
    head: usize,
    tail: usize,
    count: usize,
    /// Smallest buffer accepted and largest length ever reported: the most
    /// the NIC writes into one buffer. A frame over several buffers comes
    /// back as several completions, the last with EOP; the caller puts
    /// them together.
    max_frame: u32,
    layout: PhantomData<fn() -> L>,
}

impl<L: DescLayout> RxRing<L> {
    /// A ring of `size` descriptors (a power of two) at the start of `area`
    /// for a NIC that never writes more than `max_frame` bytes into one
    /// buffer.
    pub fn new(area: DmaArea, size: usize, max_frame: u32) -> Self {
        let fields = [(0, 8), (QW1, 8), (L::RXD_STATUS_OFF, 4), (L::RXD_LEN_OFF, 2)];
        RxRing {
            descs: Descs::new(area, size, &fields),
            cookies: vec![0; size],
            size,
            head: 0,
            tail: 0,
            count: 0,
            max_frame,
            layout: PhantomData,
        }
    }

    /// The descriptor memory (the NIC's RDBA; tests poke write-backs here).
    pub fn area(&self) -> &DmaArea {
        &self.descs.area
    }

    /// Ring length in bytes (RDLEN).
    pub fn bytes(&self) -> u32 {
        (self.size as u64 * DESC_SIZE) as u32
    }

    /// The slot after the last posted buffer (RDT).
    pub fn tail(&self) -> u32 {
        self.tail as u32
    }

    /// Buffers that can still be posted (one slot stays empty: head == tail
    /// means empty to the NIC).
    pub fn free(&self) -> usize {
        self.size - 1 - self.count
    }

    /// Forget every posted buffer and zero the descriptors (after the NIC
    /// stopped DMA or was reset).
    pub fn reset(&mut self) {
        self.head = 0;
        self.tail = 0;
        self.count = 0;
        self.descs.clear();
    }

    /// Put a buffer at the tail; the NIC sees it after the driver writes RDT.
    /// A run of one (`post_run` has the checks and the descriptor writes).
    #[inline(always)]
    pub fn post(&mut self, iova: u64, len: u32, cookie: u64) -> Result<(), DriverError> {
        let mut one = Some((iova, cookie));
        match self.post_run(len, || one.take()) {
            (1, Ok(())) => Ok(()),
            (_, Ok(())) => Err(DriverError::RingFull("RX")),
            (_, Err(e)) => Err(e.error),
        }
    }

    /// The cookie of every posted slot the caller has not reaped yet, in
    /// ring order.
    pub fn posted_cookies(&self, mut f: impl FnMut(u64)) {
        for k in 0..self.count {
            f(self.cookies[(self.head + k) & (self.size - 1)]);
        }
    }

    /// Post buffers as `next` yields them (see `PnicDriver::post_rx_with`):
    /// the length and the room are checked once for the run, the ring's
    /// state lives in locals (see `Slots`), and each buffer costs its
    /// alignment check and two descriptor stores.
    #[inline(always)]
    pub fn post_run(
        &mut self,
        len: u32,
        mut next: impl FnMut() -> Option<(u64, u64)>,
    ) -> (usize, Result<(), RxRunError>) {
        if len < self.max_frame {
            let error = DriverError::BadBuffer(format!(
                "RX buffers of {len} bytes: the NIC may write {} bytes into each",
                self.max_frame
            ));
            return (0, Err(RxRunError { refused: None, error }));
        }
        let (slots, cookies) = (*self.descs, &mut self.cookies[..]);
        // cookies.len() is the ring size: indices taken `& mask` need no
        // bounds check.
        let mask = cookies.len() - 1;
        let (mut tail, mut count) = (self.tail, self.count);
        let mut bad = None;
        while count < mask {
            let Some((iova, cookie)) = next() else { break };
            if iova & 1 != 0 {
                bad = Some((iova, cookie));
                break;
            }
            // Buffer address; the second quadword zeroed (which also clears DD).
            slots.u64_at(tail, 0).store(iova.to_le(), Ordering::Relaxed);
            slots.u64_at(tail, QW1).store(0, Ordering::Relaxed);
            cookies[tail & mask] = cookie;
            tail = (tail + 1) & mask;
            count += 1;
        }
        let posted = count - self.count;
        self.tail = tail;
        self.count = count;
        match bad {
            None => (posted, Ok(())),
            Some((iova, cookie)) => {
                (posted, Err(RxRunError { refused: Some(cookie), error: Self::bad_rx_buffer(iova, len) }))
            }
        }
    }

    #[cold]
    fn bad_rx_buffer(iova: u64, len: u32) -> DriverError {
        DriverError::BadBuffer(format!("RX buffer {iova:#x}+{len} must be 2-byte aligned"))
    }

    /// Hand back every buffer the NIC finished, in ring order.
    /// (Tests; the driver uses `reap_each`.)
    #[cfg(test)]
    pub fn reap(&mut self, out: &mut Vec<RxCompletion>) -> Result<(), DriverError> {
        self.reap_each(|c| out.push(c));
        Ok(())
    }

    /// Hand every buffer the NIC finished to `f`, in ring order.
    #[inline(always)]
    pub fn reap_each(&mut self, mut f: impl FnMut(RxCompletion)) {
        // The ring's state lives in locals for the loop and is stored back
        // once (see `Slots`).
        let (slots, cookies, max_frame) = (*self.descs, &self.cookies[..], self.max_frame);
        // As in `post_run`: indices `& mask` need no bounds check.
        let mask = cookies.len() - 1;
        let (mut head, mut count) = (self.head, self.count);
        while count > 0 {
            let slot = head & mask;
            let status = u32::from_le(slots.u32_at(slot, L::RXD_STATUS_OFF).load(Ordering::Acquire));
            if status & RXD_STAT_DD == 0 {
                break;
            }
            let len = u32::from(u16::from_le(slots.u16_at(slot, L::RXD_LEN_OFF).load(Ordering::Relaxed)));
            head = (slot + 1) & mask;
            count -= 1;
            let eop = status & RXD_STAT_EOP != 0;
            f(RxCompletion {
                cookie: cookies[slot],
                // As the NIC wrote it: a length above the cap is a broken
                // invariant the caller must see (and flagged an error too).
                len,
                eop,
                error: status & L::RXD_ERR_FRAME != 0 || len > max_frame,
                csum_ok: eop && status & L::RXD_L4_CHECKED != 0 && status & L::RXD_CSUM_ERR == 0,
            });
        }
        self.head = head;
        self.count = count;
    }
}

/// What the TX ring keeps about a queued frame, at the slot of its first
/// descriptor.
#[derive(Debug, Clone, Copy, Default)]
struct TxQueued {
    ndesc: usize,
    cookie: u64,
}

/// The TX ring: one descriptor per segment, one cookie per frame.
pub struct TxRing<L> {
    descs: Descs,
    size: usize,
    tail: usize,
    /// First descriptor of the oldest frame not yet reaped.
    clean: usize,
    used: usize,
    /// Indexed by a frame's first descriptor slot (valid for the frames
    /// between `clean` and `tail`).
    queued: Vec<TxQueued>,
    max_frame: u32,
    max_segs: usize,
    layout: PhantomData<fn() -> L>,
}

impl<L: DescLayout> TxRing<L> {
    /// A ring of `size` descriptors (a power of two) at the start of `area`
    /// for frames of at most `max_frame` bytes in at most `max_segs` segments.
    pub fn new(area: DmaArea, size: usize, max_frame: u32, max_segs: usize) -> Self {
        // The context descriptor's words at 0 and 4 besides the data
        // descriptor's fields.
        let fields = [(0, 8), (0, 4), (4, 4), (TXD_CMD_WORD, 4), (TXD_OLINFO_WORD, 4), (TXD_STATUS_OFF, 4)];
        TxRing {
            descs: Descs::new(area, size, &fields),
            size,
            tail: 0,
            clean: 0,
            used: 0,
            queued: vec![TxQueued::default(); size],
            max_frame,
            max_segs,
            layout: PhantomData,
        }
    }

    /// The descriptor memory (the NIC's TDBA; tests poke write-backs here).
    pub fn area(&self) -> &DmaArea {
        &self.descs.area
    }

    /// Ring length in bytes (TDLEN).
    pub fn bytes(&self) -> u32 {
        (self.size as u64 * DESC_SIZE) as u32
    }

    /// The slot after the last queued descriptor (TDT).
    pub fn tail(&self) -> u32 {
        self.tail as u32
    }

    /// Descriptors still free (one slot stays empty).
    pub fn free(&self) -> usize {
        self.size - 1 - self.used
    }

    /// Forget every queued frame and zero the descriptors.
    pub fn reset(&mut self) {
        self.tail = 0;
        self.clean = 0;
        self.used = 0;
        self.descs.clear();
    }

    /// Queue one frame of `segs` (IOVA, length); the NIC sees it after the
    /// driver writes TDT. Report-status is asked on the last segment only.
    /// Returns the frame's bytes.
    #[inline]
    pub fn post(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<u32, DriverError> {
        let n = segs.len();
        if n == 0 || n > self.max_segs {
            return Err(DriverError::TooManySegments { got: n, max: self.max_segs });
        }
        let mut total: u64 = 0;
        let mut bad_seg = false;
        for &(_, len) in segs {
            total += u64::from(len);
            bad_seg |= len == 0 || len > TX_MAX_SEG_LEN;
        }
        if bad_seg || total > u64::from(self.max_frame) {
            return Err(self.bad_tx_frame(total));
        }
        if self.free() < n {
            return Err(DriverError::RingFull("TX"));
        }
        let first = self.tail;
        let mut slot = first;
        for (i, &(iova, len)) in segs.iter().enumerate() {
            let [w8, w12] = L::tx_words(len, i + 1 == n, total as u32);
            self.descs.u64_at(slot, 0).store(iova.to_le(), Ordering::Relaxed);
            self.descs.u32_at(slot, TXD_CMD_WORD).store(w8.to_le(), Ordering::Relaxed);
            self.descs.u32_at(slot, TXD_OLINFO_WORD).store(w12.to_le(), Ordering::Relaxed);
            slot = (slot + 1) & (self.size - 1);
        }
        self.queued[first] = TxQueued { ndesc: n, cookie };
        self.tail = slot;
        self.used += n;
        // At most max_frame (a u32): checked above.
        Ok(total as u32)
    }

    /// Queue one frame of `segs` with the NIC doing `off` to it: a context
    /// descriptor, then one data descriptor per segment (at most
    /// `max_segs`, `max_frame` bytes in all). For TSO the first segment
    /// holds the whole header. Returns the frame's bytes.
    pub fn post_offload(
        &mut self,
        segs: &[(u64, u32)],
        off: &TxOffload,
        cookie: u64,
        max_frame: u32,
        max_segs: usize,
    ) -> Result<u32, DriverError> {
        let Some(ctx) = L::tx_context(off) else {
            return Err(DriverError::OffloadUnsupported(*off));
        };
        let n = segs.len();
        if n == 0 || n > max_segs {
            return Err(DriverError::TooManySegments { got: n, max: max_segs });
        }
        let mut total: u64 = 0;
        let mut bad_seg = false;
        for &(_, len) in segs {
            total += u64::from(len);
            bad_seg |= len == 0 || len > TX_MAX_SEG_LEN;
        }
        let paylen = match off {
            TxOffload::Csum(_) => Some(total),
            TxOffload::Tso { layout, l4_len, .. } => {
                let hdr = u64::from(layout.mac_len) + u64::from(layout.ip_len) + u64::from(*l4_len);
                (u64::from(segs[0].1) >= hdr && total > hdr).then(|| total - hdr)
            }
        };
        let Some(paylen) = paylen.filter(|_| !bad_seg && total <= u64::from(max_frame)) else {
            return Err(DriverError::BadBuffer(format!(
                "offloaded TX frame of {total} bytes in {n} segments (max {max_frame}, no empty segment, \
                 at most {TX_MAX_SEG_LEN} per segment, a TSO header wholly in the first)"
            )));
        };
        if self.free() < n + 1 {
            return Err(DriverError::RingFull("TX"));
        }
        let first = self.tail;
        let mut slot = first;
        for (i, w) in ctx.into_iter().enumerate() {
            self.descs.u32_at(slot, 4 * i as u64).store(w.to_le(), Ordering::Relaxed);
        }
        slot = (slot + 1) & (self.size - 1);
        for (i, &(iova, len)) in segs.iter().enumerate() {
            let [w8, w12] = L::tx_offload_words(len, i == 0, i + 1 == n, paylen as u32, off);
            self.descs.u64_at(slot, 0).store(iova.to_le(), Ordering::Relaxed);
            self.descs.u32_at(slot, TXD_CMD_WORD).store(w8.to_le(), Ordering::Relaxed);
            self.descs.u32_at(slot, TXD_OLINFO_WORD).store(w12.to_le(), Ordering::Relaxed);
            slot = (slot + 1) & (self.size - 1);
        }
        self.queued[first] = TxQueued { ndesc: n + 1, cookie };
        self.tail = slot;
        self.used += n + 1;
        // At most max_frame (a u32): checked above.
        Ok(total as u32)
    }

    #[cold]
    fn bad_tx_frame(&self, total: u64) -> DriverError {
        DriverError::BadBuffer(format!(
            "TX frame of {total} bytes (max {}, no empty segment, at most {TX_MAX_SEG_LEN} per segment)",
            self.max_frame
        ))
    }

    /// Hand back every frame whose last descriptor has DD, in order.
    /// (Tests; the driver uses `reap_each`.)
    #[cfg(test)]
    pub fn reap(&mut self, out: &mut Vec<TxCompletion>) -> Result<(), DriverError> {
        self.reap_each(|c| out.push(c));
        Ok(())
    }

    /// Hand every frame whose last descriptor has DD to `f`, in order.
    #[inline(always)]
    /// The cookie of every frame queued and not yet reaped, oldest first
    /// (what a caller must account for when the queue goes away with them).
    pub fn posted_cookies(&self, mut f: impl FnMut(u64)) {
        let (mut at, mut left) = (self.clean, self.used);
        while left > 0 {
            let q = self.queued[at & (self.size - 1)];
            f(q.cookie);
            let n = q.ndesc.max(1);
            at = (at + n) & (self.size - 1);
            left = left.saturating_sub(n);
        }
    }

    pub fn reap_each(&mut self, mut f: impl FnMut(TxCompletion)) {
        while self.used > 0 {
            let q = self.queued[self.clean];
            // A queued frame has at least one descriptor.
            let last = (self.clean + q.ndesc.max(1) - 1) & (self.size - 1);
            let status = u32::from_le(self.descs.u32_at(last, TXD_STATUS_OFF).load(Ordering::Acquire));
            if status & TXD_STAT_DD == 0 {
                break;
            }
            self.clean = (last + 1) & (self.size - 1);
            self.used = self.used.saturating_sub(q.ndesc);
            f(TxCompletion { cookie: q.cookie });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout with the fields where no family has them, so the ring cannot
    /// be relying on one family's offsets.
    struct Odd;
    impl DescLayout for Odd {
        const RXD_STATUS_OFF: u64 = 8;
        const RXD_LEN_OFF: u64 = 14;
        const RXD_ERR_FRAME: u32 = 1 << 7;
        const RXD_L4_CHECKED: u32 = 1 << 9;
        const RXD_CSUM_ERR: u32 = 1 << 10;
        fn tx_words(len: u32, last: bool, frame_len: u32) -> [u32; 2] {
            [len | if last { 1 << 31 } else { 0 }, frame_len]
        }
    }

    fn area(n: usize) -> DmaArea {
        DmaArea::new(0x4000_0000, n * DESC_SIZE as usize).unwrap()
    }

    #[test]
    fn ring_length_is_its_descriptors_not_the_page_rounded_area() {
        let r = RxRing::<Odd>::new(area(4), 4, 1522);
        let t = TxRing::<Odd>::new(area(8), 8, 1522, 2);
        assert!(r.area().len() >= 4096, "DMA areas are whole pages");
        assert_eq!((r.bytes(), r.free()), (64, 3));
        assert_eq!((t.bytes(), t.free()), (128, 7));
    }

    #[test]
    fn rx_ring_wraps_and_keeps_one_slot_empty() {
        let mut r = RxRing::<Odd>::new(area(4), 4, 1522);
        assert_eq!(r.free(), 3);
        let mut out = Vec::new();
        for round in 0..3u64 {
            for i in 0..3 {
                r.post(0x1000 * (i + 1), 2048, round * 10 + i).unwrap();
            }
            assert_eq!(r.post(0x1000, 2048, 99), Err(DriverError::RingFull("RX")));
            for k in 0..3u64 {
                let slot = (round * 3 + k) % 4;
                r.area().store(slot * 16 + 8, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
                r.area().store(slot * 16 + 14, 64u16, Ordering::Relaxed).unwrap();
            }
            out.clear();
            r.reap(&mut out).unwrap();
            let cookies: Vec<u64> = out.iter().map(|c| c.cookie).collect();
            assert_eq!(cookies, vec![round * 10, round * 10 + 1, round * 10 + 2]);
            assert!(out.iter().all(|c| c.len == 64 && c.eop && !c.error));
            assert_eq!(r.tail() as u64, (round * 3 + 3) % 4);
        }
    }

    #[test]
    fn a_post_run_fills_the_ring_in_order_and_asks_no_more_than_fits() {
        let mut r = RxRing::<Odd>::new(area(4), 4, 1522);
        r.post(0x1000, 2048, 1).unwrap();
        let mut asked = 0;
        let (posted, res) = r.post_run(2048, || {
            asked += 1;
            Some((0x1000 * (asked + 1), 10 + asked))
        });
        assert_eq!((posted, res), (2, Ok(())));
        assert_eq!(asked, 2, "not asked for a buffer the ring has no slot for");
        assert_eq!((r.free(), r.tail()), (0, 3));
        for (slot, iova) in [(1u64, 0x2000u64), (2, 0x3000)] {
            assert_eq!(r.area().load::<u64>(slot * 16, Ordering::Relaxed).unwrap(), iova);
            r.area().store(slot * 16 + 8, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
        }
        let mut posted = Vec::new();
        r.posted_cookies(&mut |c| posted.push(c));
        assert_eq!(posted, vec![1, 11, 12], "filled or not, they are the caller's until reaped");
        r.area().store(8, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
        let mut out = Vec::new();
        r.reap(&mut out).unwrap();
        assert_eq!(out.iter().map(|c| c.cookie).collect::<Vec<_>>(), vec![1, 11, 12]);
        posted.clear();
        r.posted_cookies(&mut |c| posted.push(c));
        assert!(posted.is_empty(), "handed back: {posted:?}");
    }

    #[test]
    fn a_post_run_stops_at_a_bad_buffer_with_what_it_posted() {
        let mut r = RxRing::<Odd>::new(area(8), 8, 1522);
        let mut next = [(0x1000, 1), (0x2001, 2), (0x3000, 3)].into_iter();
        let (posted, res) = r.post_run(2048, || next.next());
        assert_eq!(posted, 1);
        let e = res.unwrap_err();
        assert_eq!(e.refused, Some(2), "the bad buffer is named");
        assert!(matches!(e.error, DriverError::BadBuffer(ref m) if m.contains("0x2001")), "{e:?}");
        assert_eq!(next.next(), Some((0x3000, 3)), "nothing asked after the bad one");
        assert_eq!((r.free(), r.tail()), (6, 1));
        let mut called = false;
        let (posted, res) = r.post_run(1000, || {
            called = true;
            None
        });
        assert!(
            posted == 0 && matches!(res, Err(RxRunError { refused: None, error: DriverError::BadBuffer(_) })),
            "short buffers refused"
        );
        assert!(!called, "a run of short buffers takes none");
    }

    #[test]
    fn rx_error_bits_come_from_the_layout() {
        let mut r = RxRing::<Odd>::new(area(4), 4, 1522);
        r.post(0x1000, 2048, 1).unwrap();
        r.area().store(8, RXD_STAT_DD | RXD_STAT_EOP | (1 << 7), Ordering::Relaxed).unwrap();
        let mut out = Vec::new();
        r.reap(&mut out).unwrap();
        assert!(out[0].error);
    }

    #[test]
    fn rx_checksum_bits_come_from_the_layout_and_count_on_eop_only() {
        let mut r = RxRing::<Odd>::new(area(8), 8, 1522);
        for c in 1..=4 {
            r.post(0x1000 * c, 2048, c).unwrap();
        }
        let st = |slot: u64, v: u32| r.area().store(slot * 16 + 8, v, Ordering::Relaxed).unwrap();
        st(0, RXD_STAT_DD | RXD_STAT_EOP | (1 << 9));
        st(1, RXD_STAT_DD | RXD_STAT_EOP | (1 << 9) | (1 << 10));
        st(2, RXD_STAT_DD | (1 << 9));
        st(3, RXD_STAT_DD | RXD_STAT_EOP);
        let mut out = Vec::new();
        r.reap(&mut out).unwrap();
        let got: Vec<(bool, bool, bool)> = out.iter().map(|c| (c.eop, c.error, c.csum_ok)).collect();
        assert_eq!(
            got,
            vec![(true, false, true), (true, false, false), (false, false, false), (true, false, false)],
            "checked and good; checked and bad (delivered, not flagged); not EOP; not checked"
        );
    }

    #[test]
    fn a_frame_over_several_buffers_comes_back_as_parts_without_errors() {
        let mut r = RxRing::<Odd>::new(area(8), 8, 1024);
        for c in 1..=3 {
            r.post(0x1000 * c, 1024, c).unwrap();
        }
        for (slot, (status, len)) in
            [(RXD_STAT_DD, 1024u16), (RXD_STAT_DD, 1024), (RXD_STAT_DD | RXD_STAT_EOP, 10)].into_iter().enumerate()
        {
            r.area().store(slot as u64 * 16 + 8, status, Ordering::Relaxed).unwrap();
            r.area().store(slot as u64 * 16 + 14, len, Ordering::Relaxed).unwrap();
        }
        let mut out = Vec::new();
        r.reap(&mut out).unwrap();
        let got: Vec<(u64, u32, bool, bool)> = out.iter().map(|c| (c.cookie, c.len, c.eop, c.error)).collect();
        assert_eq!(got, vec![(1, 1024, false, false), (2, 1024, false, false), (3, 10, true, false)]);
    }

    #[test]
    fn rx_reset_forgets_posted_buffers() {
        let mut r = RxRing::<Odd>::new(area(4), 4, 1522);
        r.post(0x1000, 2048, 1).unwrap();
        r.reset();
        assert_eq!(r.free(), 3);
        assert_eq!(r.area().load::<u64>(0, Ordering::Relaxed).unwrap(), 0);
        r.area().store(8, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
        let mut out = Vec::new();
        r.reap(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn tx_ring_writes_layout_words_and_frees_on_last_dd() {
        let mut t = TxRing::<Odd>::new(area(4), 4, 1522, 2);
        t.post(&[(0x1000, 14), (0x2000, 50)], 7).unwrap();
        assert_eq!(t.free(), 1);
        assert_eq!(t.area().load::<u32>(8, Ordering::Relaxed).unwrap(), 14);
        assert_eq!(t.area().load::<u32>(24, Ordering::Relaxed).unwrap(), 50 | 1 << 31);
        assert_eq!(t.area().load::<u32>(28, Ordering::Relaxed).unwrap(), 64);
        assert_eq!(t.post(&[(0x1000, 14), (0x2000, 50)], 8), Err(DriverError::RingFull("TX")));
        let mut out = Vec::new();
        t.area().store(12, TXD_STAT_DD, Ordering::Relaxed).unwrap();
        t.reap(&mut out).unwrap();
        assert!(out.is_empty(), "DD on a middle segment does not finish the frame");
        t.area().store(16 + 12, TXD_STAT_DD, Ordering::Relaxed).unwrap();
        t.reap(&mut out).unwrap();
        assert_eq!(out, vec![TxCompletion { cookie: 7 }]);
        assert_eq!(t.free(), 3);
    }

    #[test]
    fn tx_frames_of_several_descriptors_wrap_the_ring_and_complete_in_order() {
        let mut t = TxRing::<Odd>::new(area(4), 4, 1522, 2);
        let mut out = Vec::new();
        let mut next_slot = 0u64;
        for round in 0..6u64 {
            // Two 2-descriptor frames do not fit a 4-slot ring (one stays
            // empty): one frame in flight, then it completes.
            t.post(&[(0x1000, 14), (0x2000, 50)], round).unwrap();
            assert_eq!(t.post(&[(0x1000, 14), (0x2000, 50)], 99), Err(DriverError::RingFull("TX")));
            let last = (next_slot + 1) % 4;
            assert_eq!(t.area().load::<u32>(last * 16 + 8, Ordering::Relaxed).unwrap(), 50 | 1 << 31, "round {round}");
            out.clear();
            t.reap(&mut out).unwrap();
            assert!(out.is_empty(), "no DD yet");
            t.area().store(last * 16 + 12, TXD_STAT_DD, Ordering::Relaxed).unwrap();
            t.reap(&mut out).unwrap();
            assert_eq!(out, vec![TxCompletion { cookie: round }]);
            assert_eq!(t.free(), 3);
            // The NIC's write-back is cleared when the slot is posted again.
            t.area().store(last * 16 + 12, 0u32, Ordering::Relaxed).unwrap();
            next_slot = (next_slot + 2) % 4;
            assert_eq!(u64::from(t.tail()), next_slot);
        }
    }

    #[test]
    fn an_offloaded_frame_takes_a_context_slot_and_completes_on_its_last_data_descriptor() {
        use crate::driver::{CsumLayout, L4Proto};
        use crate::igb::AdvancedDesc;
        let layout = CsumLayout { l4: L4Proto::Tcp, ipv4: true, mac_len: 14, ip_len: 20 };
        let tso = TxOffload::Tso { layout, l4_len: 32, mss: 1448 };
        // A layout without contexts refuses, untouched.
        let mut odd = TxRing::<Odd>::new(area(8), 8, 1522, 2);
        assert_eq!(odd.post_offload(&[(0x1000, 66)], &tso, 1, 65536, 8), Err(DriverError::OffloadUnsupported(tso)));
        assert_eq!(odd.free(), 7);
        let mut t = TxRing::<AdvancedDesc>::new(area(8), 8, 1522, 2);
        // The header must be wholly in the first segment, with a payload after it.
        assert!(matches!(
            t.post_offload(&[(0x1000, 60), (0x2000, 9000)], &tso, 1, 65536, 8),
            Err(DriverError::BadBuffer(_))
        ));
        assert!(matches!(t.post_offload(&[(0x1000, 66)], &tso, 1, 65536, 8), Err(DriverError::BadBuffer(_))));
        assert!(matches!(
            t.post_offload(&[(0x1000, 66), (0x2000, 9000)], &tso, 1, 4000, 8),
            Err(DriverError::BadBuffer(_))
        ));
        assert_eq!(
            t.post_offload(&[(0x1000, 66); 8], &tso, 1, 65536, 7),
            Err(DriverError::TooManySegments { got: 8, max: 7 })
        );
        t.post_offload(&[(0x1000, 66), (0x2000, 9000), (0x5000, 1000)], &tso, 7, 65536, 8).unwrap();
        assert_eq!(t.free(), 7 - 4, "context + 3 data descriptors");
        assert_eq!(
            t.post_offload(&[(0x1000, 66), (0x2000, 9000), (0x5000, 1000)], &tso, 8, 65536, 8),
            Err(DriverError::RingFull("TX"))
        );
        let ctx: Vec<u32> = (0..4).map(|i| t.area().load::<u32>(i * 4, Ordering::Relaxed).unwrap()).collect();
        assert_eq!(ctx, crate::igb::context_words(&tso).to_vec());
        // PAYLEN (payload only) and POPTS on the first data descriptor only.
        let olinfo = |slot: u64| t.area().load::<u32>(slot * 16 + 12, Ordering::Relaxed).unwrap();
        assert_eq!(olinfo(1), 10_000 << 14 | 0x300);
        assert_eq!((olinfo(2), olinfo(3)), (0, 0));
        let mut out = Vec::new();
        t.area().store(2 * 16 + 12, TXD_STAT_DD, Ordering::Relaxed).unwrap();
        t.reap(&mut out).unwrap();
        assert!(out.is_empty(), "DD on a middle descriptor does not finish the frame");
        t.area().store(3 * 16 + 12, TXD_STAT_DD, Ordering::Relaxed).unwrap();
        t.reap(&mut out).unwrap();
        assert_eq!(out, vec![TxCompletion { cookie: 7 }]);
        assert_eq!(t.free(), 7);
    }

    #[test]
    fn tx_rejects_bad_frames() {
        let mut t = TxRing::<Odd>::new(area(4), 4, 1522, 2);
        assert!(matches!(t.post(&[], 1), Err(DriverError::TooManySegments { got: 0, max: 2 })));
        assert!(matches!(t.post(&[(0, 1); 3], 1), Err(DriverError::TooManySegments { .. })));
        assert!(matches!(t.post(&[(0, 0)], 1), Err(DriverError::BadBuffer(_))));
        assert!(matches!(t.post(&[(0, 1000), (0, 600)], 1), Err(DriverError::BadBuffer(_))));
        assert_eq!(t.free(), 3);
    }
}
