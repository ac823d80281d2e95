//! The shim's receive side: guest buffers into NIC RX descriptors
//! (zero-copy at GPA + 12 when the buffer allows, else through a bounce
//! buffer), and NIC completions back to the guest through the lent
//! [`RxQueue`].

use std::ptr::NonNull;

use smallvec::SmallVec;
use virtio_devices::mem::RamMap;
use virtio_devices::net::backend::{
    write_rx_header, ChainRef, DropReason, RxHeader, Used, HDR_F_DATA_VALID, VNET_HDR_LEN,
};
use virtio_devices::net::direct::{RxDesc, RxNext, RxQueue};
use vm_memory::GuestAddress;

use super::rx_table::{HostPtr, RxHeld, RxKind, RxTable};
use super::{in_ram, ShimBackend, HDR, NIC_BUF_MAX};
use crate::driver::{DriverError, DriverLimits, PnicDriver, RxCompletion, RxRunError};

/// Write the virtio-net header of a received frame into a zero-copy buffer.
#[inline]
pub(super) fn write_header(host: NonNull<u8>, hdr: RxHeader) {
    // SAFETY: `host` is the first byte of a buffer of at least
    // `zc_min_len` (> 12) bytes inside one guest RAM mapping that the shim
    // keeps alive (`zero_copy_target`).
    unsafe { write_rx_header(host, hdr) };
}

/// The header of a frame in one buffer: DATA_VALID when the guest takes it
/// (`csum`, GUEST_CSUM negotiated) and the NIC validated the checksum.
#[inline(always)]
pub(super) fn one_buffer_header(csum: bool, c: &RxCompletion) -> RxHeader {
    RxHeader { flags: if csum && c.csum_ok { HDR_F_DATA_VALID } else { 0 }, num_buffers: 1 }
}

/// Whether the NIC says it wrote a whole, undamaged frame it was allowed to
/// write.
#[inline]
pub(super) fn frame_is_good(c: &RxCompletion, limits: &DriverLimits) -> bool {
    !c.error && c.eop && c.len != 0 && c.len <= limits.rx_max_write
}

/// Frames one reaping pass finished zero-copy, and completions for cookies
/// the shim never issued.
#[derive(Default)]
pub(super) struct Tally {
    frames: u64,
    bytes: u64,
    unknown: u64,
    /// Frames given DATA_VALID.
    csum_valid: u64,
}

impl Tally {
    #[inline(always)]
    fn frame(&mut self, len: u32) {
        self.frames += 1;
        self.bytes += u64::from(len);
    }

    #[inline(always)]
    fn header(&mut self, h: RxHeader) -> RxHeader {
        self.csum_valid += u64::from(h.flags & HDR_F_DATA_VALID != 0);
        h
    }
}

/// What became of one NIC completion in [`complete_zero_copy`].
pub(super) enum Reaped {
    /// A good frame in a zero-copy buffer: header written, this is its used
    /// entry.
    Done(Used),
    /// Needs [`ShimBackend::complete_rx_other`].
    Other(u16, RxHeld, RxCompletion),
    /// A cookie the shim did not issue (or issued for a buffer since
    /// completed): to be counted and ignored.
    Unknown,
}

/// One NIC completion, the common case: a good frame in a zero-copy buffer
/// gets its header and a used entry.
#[inline(always)]
pub(super) fn complete_zero_copy(table: &mut RxTable, c: RxCompletion, hdr: RxHeader) -> Reaped {
    let Some((head, held)) = table.take(c.cookie) else {
        return Reaped::Unknown;
    };
    let total = HDR + u64::from(c.len);
    // The buffer's own length bounds the frame here (every zero-copy buffer
    // has room for `rx_max_write`); `frame_is_good` is for the other kinds.
    let good = !c.error && c.eop && c.len != 0;
    match held.kind {
        RxKind::ZeroCopy { host, .. } if good && total <= u64::from(held.len) => {
            write_header(host.0, hdr);
            Reaped::Done(Used { head, len: total as u32 })
        }
        _ => Reaped::Other(head, held, c),
    }
}

/// One completion for a buffer posted through the table: a good zero-copy
/// frame to `emit` (counted in `tally`), the rest set aside in `slow` for
/// `complete_rx_other`, an unknown cookie counted.
#[inline(always)]
pub(super) fn reap_table(
    table: &mut RxTable,
    c: RxCompletion,
    csum: bool,
    tally: &mut Tally,
    slow: &mut Vec<(u16, RxHeld, RxCompletion)>,
    emit: impl FnOnce(Used),
) {
    let frame_len = c.len;
    let hdr = one_buffer_header(csum, &c);
    match complete_zero_copy(table, c, hdr) {
        Reaped::Done(u) => {
            tally.frame(frame_len);
            tally.header(hdr);
            emit(u);
        }
        Reaped::Other(head, held, c) => slow.push((head, held, c)),
        Reaped::Unknown => tally.unknown += 1,
    }
}

/// Cookies of RX buffers the device lent through [`RxQueue`] and the shim
/// posted zero-copy: this bit and the head. The device's book holds them,
/// not the shim's table, whose cookies (`generation << 16 | head`, below
/// 2^48) never have it.
pub(super) const LENT_COOKIE: u64 = 1 << 63;

/// Whether the NIC can fill buffer `d` directly at GPA + 12: room for the
/// header and the most the NIC writes after it (`zc_min_len`), and the NIC's
/// alignment there.
#[inline(always)]
pub(super) fn fits_zero_copy(d: &RxDesc, zc_min_len: u32, align_mask: u64) -> bool {
    d.len() >= zc_min_len && nic_can_address(d.gpa(), align_mask)
}

/// Whether the NIC can write a buffer at `gpa` directly: its alignment at
/// GPA + 12 (GPA + 0, where jumbo frames go, is equally aligned for the NIC's
/// 2-byte rule), and not GPA 0, which would be a null address at GPA + 0 (the
/// NIC skips such a descriptor).
#[inline(always)]
fn nic_can_address(gpa: u64, align_mask: u64) -> bool {
    gpa != 0 && gpa.wrapping_add(HDR) & align_mask == 0
}

/// The bytes the NIC may write into a zero-copy buffer of `len` (after the
/// header, at most one NIC buffer).
#[inline(always)]
pub(super) fn nic_len(len: u32) -> u32 {
    (len - HDR as u32).min(NIC_BUF_MAX)
}

/// Post one RX buffer (a run of one) without the tail write.
#[inline(always)]
pub(super) fn post_one<D: PnicDriver>(driver: &mut D, iova: u64, len: u32, cookie: u64) -> Result<(), DriverError> {
    let mut one = Some((iova, cookie));
    match driver.post_rx_with(len, || one.take()) {
        (1, Ok(())) => Ok(()),
        (_, Ok(())) => Err(DriverError::RingFull("RX")),
        (_, Err(e)) => Err(e.error),
    }
}

/// Write `data` at byte offset `off` of the buffer described by `segs`.
pub(super) fn write_scatter(ram: &RamMap, segs: &[(GuestAddress, u32)], mut off: u64, mut data: &[u8]) -> bool {
    for (addr, len) in segs {
        let len = u64::from(*len);
        if off >= len {
            off -= len;
            continue;
        }
        let n = (len - off).min(data.len() as u64) as usize;
        let Some(at) = addr.0.checked_add(off) else {
            return false;
        };
        if !in_ram(ram, at, n as u64) || !ram.write(at, &data[..n]) {
            return false;
        }
        data = &data[n..];
        off = 0;
        if data.is_empty() {
            return true;
        }
    }
    data.is_empty()
}

impl<D: PnicDriver> ShimBackend<D> {
    /// Make the RX buffers posted since the last flush visible to the NIC:
    /// one tail-register write for the whole batch.
    pub(super) fn flush_rx_posted(&mut self) {
        if !self.rx_unflushed {
            return;
        }
        self.rx_unflushed = false;
        if let Err(e) = self.driver.flush_rx() {
            self.driver_err(e);
        }
    }

    /// Hand guest buffer `head` (`segs`, `len` bytes, validated by
    /// `post_checked`) to the NIC, zero-copy if its shape allows. The NIC
    /// sees it only after the next [`Self::flush_rx_posted`].
    pub(super) fn post_slot(&mut self, head: u16, segs: &[(GuestAddress, u32)], len: u32) -> Result<(), DropReason> {
        if let [(gpa, seg_len)] = segs {
            if let Some(host) = self.zero_copy_target(*gpa, *seg_len) {
                return self.post_zero_copy(head, gpa.0, *seg_len, host);
            }
        }
        let Some(idx) = self.rx_bounce.alloc() else {
            return Err(DropReason::NoBuffer);
        };
        let (iova, nic_len) = self.rx_bounce.rx_target(idx);
        let slot = &mut self.rx_bounce_segs[idx as usize];
        slot.clear();
        slot.extend_from_slice(segs);
        let held = RxHeld { len, kind: RxKind::Bounce(idx) };
        self.hand_to_nic(head, held, iova, nic_len)
    }

    /// Where the header of the one-segment buffer `gpa`+`len` goes, if the
    /// buffer can take a frame straight from the NIC at GPA+12: big enough
    /// for the largest frame the NIC writes after the header (so every NIC
    /// write lies inside the segment), the NIC's alignment, and the whole
    /// segment inside one guest RAM region.
    #[inline(always)]
    pub(super) fn zero_copy_target(&self, gpa: GuestAddress, len: u32) -> Option<NonNull<u8>> {
        if len < self.zc_min_len || !nic_can_address(gpa.0, self.limits.rx_align - 1) {
            return None;
        }
        // The segment is in RAM, so gpa + HDR (< gpa + len) cannot overflow.
        NonNull::new(self.ram.host_range(gpa.0, u64::from(len))?)
    }

    /// Give the NIC the frame area (GPA + 12) of a buffer that
    /// `zero_copy_target` accepted.
    #[inline(always)]
    pub(super) fn post_zero_copy(
        &mut self,
        head: u16,
        gpa: u64,
        len: u32,
        host: NonNull<u8>,
    ) -> Result<(), DropReason> {
        let held = RxHeld { len, kind: RxKind::ZeroCopy { host: HostPtr(host), gpa } };
        self.hand_to_nic(head, held, gpa + self.rx_off, nic_len(len))
    }

    /// Give the NIC `nic_len` bytes at `iova` for buffer `head` (the tail
    /// write comes later). On failure everything is undone and the reason
    /// returned.
    #[inline(always)]
    pub(super) fn hand_to_nic(&mut self, head: u16, held: RxHeld, iova: u64, nic_len: u32) -> Result<(), DropReason> {
        let Some(cookie) = self.rx.insert(head, held) else {
            return Err(self.post_refused(head, held));
        };
        match post_one(&mut self.driver, iova, nic_len, cookie) {
            Ok(()) => {
                self.rx_unflushed = true;
                Ok(())
            }
            Err(e) => Err(self.post_failed(cookie, e)),
        }
    }

    /// `head` is still with the NIC: the device never posts a head it holds,
    /// so a direct caller did. The new buffer is dropped.
    #[cold]
    pub(super) fn post_refused(&mut self, head: u16, held: RxHeld) -> DropReason {
        log::warn!("shim: RX buffer {head} posted while the NIC still holds it; dropped");
        if let RxKind::Bounce(i) = held.kind {
            self.rx_bounce.release(i);
        }
        DropReason::BackendError
    }

    /// The driver refused buffer `cookie`: undo its posting.
    #[cold]
    pub(super) fn post_failed(&mut self, cookie: u64, e: DriverError) -> DropReason {
        if let Some((_, RxHeld { kind: RxKind::Bounce(i), .. })) = self.rx.take(cookie) {
            self.rx_bounce.release(i);
        }
        let reason = match e {
            DriverError::RingFull(_) => DropReason::NoBuffer,
            _ => DropReason::BackendError,
        };
        self.driver_err(e);
        reason
    }

    /// Everything but a good frame in a zero-copy buffer
    /// ([`complete_zero_copy`] took those): bad frames (the buffer goes back
    /// to the NIC), frames too big for the buffer, and the copy fallback.
    #[cold]
    pub(super) fn complete_rx_other(&mut self, head: u16, held: RxHeld, c: RxCompletion, out: &mut Vec<Used>) {
        let frame_len = u64::from(c.len);
        if c.len > self.limits.rx_max_write {
            let max = self.limits.rx_max_write;
            self.fail_invariant(format_args!("the NIC reported a {}-byte frame; it may write {max} at most", c.len));
            // Out of the table already: back to the guest empty, unless
            // nothing proves the NIC stopped.
            if !self.dma_unstopped {
                out.push(Used { head, len: 0 });
            }
            return;
        }
        let good = frame_is_good(&c, &self.limits);
        if !good || HDR + frame_len > u64::from(held.len) {
            // The guest never sees it; the buffer goes back to the NIC.
            let reason = if good {
                DropReason::BufferTooSmall
            } else {
                self.metrics.rx_nic_errors += 1;
                DropReason::BackendError
            };
            self.metrics.drop(reason);
            self.recycle(head, held, out);
            return;
        }
        let hdr = one_buffer_header(self.csum, &c);
        let ok = match held.kind {
            RxKind::Bounce(i) => self.complete_bounce(i, frame_len, hdr),
            // complete_zero_copy took every good frame that fits a zero-copy buffer.
            RxKind::ZeroCopy { .. } => false,
        };
        if ok {
            self.metrics.rx_packets += 1;
            self.metrics.rx_bytes += frame_len;
            self.metrics.rx_csum_valid += u64::from(hdr.flags & HDR_F_DATA_VALID != 0);
            out.push(Used { head, len: (HDR + frame_len) as u32 });
        } else {
            self.metrics.drop(DropReason::BadAddress);
            out.push(Used { head, len: 0 });
        }
    }

    /// Copy header and frame from bounce buffer `i` into the guest buffer it
    /// stands for, and free it.
    pub(super) fn complete_bounce(&mut self, i: u32, frame_len: u64, hdr: RxHeader) -> bool {
        // Header + frame in one copy with equal alignment on both sides.
        let total = (HDR + frame_len) as usize;
        let mut tmp = vec![0u8; total];
        tmp[..HDR as usize].copy_from_slice(&hdr.bytes());
        let read = self.rx_bounce.read(i, HDR, &mut tmp[HDR as usize..]).is_ok();
        self.rx_bounce.release(i);
        let ok = read && write_scatter(&self.ram, &self.rx_bounce_segs[i as usize], 0, &tmp);
        if ok {
            self.metrics.rx_copied(frame_len);
        }
        ok
    }

    /// Give a guest buffer whose frame was dropped straight back to the NIC
    /// (the caller flushes).
    pub(super) fn recycle(&mut self, head: u16, held: RxHeld, out: &mut Vec<Used>) {
        let r = match held.kind {
            RxKind::ZeroCopy { host, gpa } => self.post_zero_copy(head, gpa, held.len, host.0),
            RxKind::Bounce(i) => {
                // Keep the segments: the buffer takes the same bounce buffer again.
                let (iova, nic_len) = self.rx_bounce.rx_target(i);
                self.hand_to_nic(head, held, iova, nic_len)
            }
        };
        if r.is_err() {
            out.push(Used { head, len: 0 });
        }
    }

    #[cfg(any(test, feature = "testing"))]
    /// The common case, a Linux guest's MRG_RXBUF buffer: one segment the
    /// NIC can fill directly. The checks of `post_checked` and `post_slot`
    /// in one pass (the segment and everything the NIC may write inside guest
    /// RAM); any other shape takes `post_checked`.
    #[inline(always)]
    pub(super) fn post_one_segment(&mut self, head: u16, gpa: GuestAddress, len: u32) -> Result<(), DropReason> {
        let target = if self.started && !self.failed { self.zero_copy_target(gpa, len) } else { None };
        let Some(host) = target else {
            let segs = [(gpa, len)];
            return self.post_checked(ChainRef { head, segs: &segs, len });
        };
        self.post_zero_copy(head, gpa.0, len, host).inspect_err(|r| self.metrics.drop(*r))
    }

    /// Post a buffer the device validated ([`RxDesc`]: one segment of at
    /// least the header inside one guest RAM mapping, `host` its first byte),
    /// zero-copy when the NIC can fill it (`zero_copy_target`'s size and
    /// alignment rules; the device already did the RAM check and lookup).
    #[inline(always)]
    pub(super) fn post_desc(&mut self, d: RxDesc) -> Result<(), DropReason> {
        if !self.started {
            self.ensure_started();
        }
        let (gpa, len) = (d.gpa(), d.len());
        if !fits_zero_copy(&d, self.zc_min_len, self.limits.rx_align - 1) || !self.started || self.failed {
            let segs = [(GuestAddress(gpa), len)];
            return self.post_checked(ChainRef { head: d.head(), segs: &segs, len });
        }
        self.post_zero_copy(d.head(), gpa, len, d.host()).inspect_err(|r| self.metrics.drop(*r))
    }

    /// The common case in one loop: every buffer the guest posted that the
    /// NIC can fill directly ([`fits_zero_copy`]) goes into a NIC
    /// descriptor, its frame area (GPA + 12) the DMA target, with the
    /// driver's state, length and room checks done once for the run. The
    /// device's book holds these buffers (the cookie is the head, tagged
    /// [`LENT_COOKIE`]); the device writes their header when the frame is
    /// in ([`RxQueue::complete_frame`]). Stops, with nothing taken, at the
    /// first buffer that must go another way. Returns how many were posted.
    #[inline(always)]
    pub(super) fn zero_copy_run(&mut self, q: &mut RxQueue<'_>) -> usize {
        let (zc_min_len, align_mask, off) = (self.zc_min_len, self.limits.rx_align - 1, self.rx_off);
        // Every buffer of the run has at least nic_len(zc_min_len) bytes of
        // room after the header (and so from its start).
        let (posted, r) = self.driver.post_rx_with(
            nic_len(zc_min_len),
            #[inline(always)]
            || {
                let d = q.pop_if(
                    #[inline(always)]
                    |d| fits_zero_copy(d, zc_min_len, align_mask),
                )?;
                Some((d.gpa() + off, LENT_COOKIE | u64::from(d.head())))
            },
        );
        if posted > 0 {
            self.rx_unflushed = true;
        }
        match r {
            Ok(()) => {}
            Err(RxRunError { refused: Some(cookie), error }) => {
                let reason = self.post_failed(cookie, error);
                self.metrics.drop(reason);
                q.refuse(cookie as u16, reason);
            }
            Err(RxRunError { refused: None, error }) => self.driver_err(error),
        }
        posted
    }

    /// A frame the NIC flagged bad in a lent buffer: dropped, and the buffer
    /// goes straight back to the NIC (or to the guest, empty, if the NIC
    /// cannot take it).
    #[cold]
    pub(super) fn recycle_lent(&mut self, q: &mut RxQueue<'_>, head: u16) {
        self.metrics.rx_nic_errors += 1;
        self.metrics.drop(DropReason::BackendError);
        self.repost_lent(q, head);
    }

    /// Give lent buffer `head`, whose contents are dropped, straight back to
    /// the NIC (or to the guest, empty, if the NIC cannot take it).
    #[cold]
    pub(super) fn repost_lent(&mut self, q: &mut RxQueue<'_>, head: u16) {
        let (zc_min_len, align_mask) = (self.zc_min_len, self.limits.rx_align - 1);
        let lent = q.lent(head).filter(|d| !self.rx.holds(head) && fits_zero_copy(d, zc_min_len, align_mask));
        let Some(d) = lent else {
            // Not a buffer the shim lent the NIC: a cookie the driver was
            // never given.
            self.metrics.nic_errors += 1;
            return;
        };
        if self.dma_unstopped {
            // The NIC may still write it: it stays lent (see `fail`).
            return;
        }
        if self.failed || !self.started {
            return q.refuse(head, DropReason::BackendError);
        }
        let cookie = LENT_COOKIE | u64::from(head);
        match post_one(&mut self.driver, d.gpa() + self.rx_off, nic_len(d.len()), cookie) {
            Ok(()) => self.rx_unflushed = true,
            Err(e) => {
                let reason = self.post_failed(cookie, e);
                q.refuse(head, reason);
            }
        }
    }

    /// Heads of the lent buffers the NIC holds (see [`LENT_COOKIE`]).
    /// The parts of an unfinished multi-buffer frame count too: the NIC
    /// filled them, the guest has not had them.
    pub(super) fn lent_heads(&self) -> Vec<u16> {
        let mut heads = Vec::new();
        let mut add = |c: u64| {
            if c & LENT_COOKIE != 0 {
                heads.push(c as u16);
            }
        };
        self.rx_parts.iter().for_each(|p| add(p.cookie));
        self.driver.rx_posted_with(add);
        heads
    }

    /// Validate a guest RX buffer and post it (without the tail write).
    pub(super) fn post_checked(&mut self, buf: ChainRef<'_>) -> Result<(), DropReason> {
        if buf.segs.iter().any(|s| s.1 == 0) {
            self.metrics.drop(DropReason::ZeroLength);
            return Err(DropReason::ZeroLength);
        }
        if buf.segs.iter().any(|(a, l)| !in_ram(&self.ram, a.0, u64::from(*l))) {
            self.metrics.drop(DropReason::BadAddress);
            return Err(DropReason::BadAddress);
        }
        // Trust the segments, not the summary: the length the completion
        // check uses is recomputed here.
        let total: u64 = buf.segs.iter().map(|s| u64::from(s.1)).sum();
        let len = u32::try_from(total).unwrap_or(u32::MAX);
        if (len as usize) <= VNET_HDR_LEN {
            self.metrics.drop(DropReason::BufferTooSmall);
            return Err(DropReason::BufferTooSmall);
        }
        if !self.ensure_started() {
            self.metrics.drop(DropReason::BackendError);
            return Err(DropReason::BackendError);
        }
        self.post_slot(buf.head, buf.segs, len).inspect_err(|r| self.metrics.drop(*r))
    }

    #[cfg(any(test, feature = "testing"))]
    /// Every RX completion, in order, to `emit`: buffers returned earlier
    /// (recycling failed), then what the NIC finished. Good zero-copy frames
    /// are handled as the driver finds them; the rare ones that need the
    /// whole shim (recycling, the copy fallback) wait in `rx_slow` until the
    /// driver is done.
    #[inline(always)]
    pub(super) fn reap_rx_into(&mut self, mut emit: impl FnMut(Used)) {
        self.rx_returned.drain(..).for_each(&mut emit);
        if self.failed || !self.started {
            return;
        }
        let mut slow = std::mem::take(&mut self.rx_slow);
        let table = &mut self.rx;
        let mut tally = Tally::default();
        let csum = self.csum;
        let r = self.driver.reap_rx_with(
            #[inline(always)]
            |c| reap_table(table, c, csum, &mut tally, &mut slow, &mut emit),
        );
        self.count_reaped(tally, r);
        self.complete_slow(&mut slow, &mut emit);
        self.rx_slow = slow;
        // Buffers recycled above (dropped frames) go back to the NIC now.
        self.flush_rx_posted();
        self.rx_returned.drain(..).for_each(emit);
    }

    /// The counters of one reaping pass (added once per pass, not per
    /// frame), and the driver's error if it had one.
    pub(super) fn count_reaped(&mut self, t: Tally, r: Result<(), DriverError>) {
        self.metrics.rx_zero_copy += t.frames;
        self.metrics.rx_packets += t.frames;
        self.metrics.rx_bytes += t.bytes;
        self.metrics.rx_csum_valid += t.csum_valid;
        self.metrics.nic_errors += t.unknown;
        if let Err(e) = r {
            self.driver_err(e);
        }
    }

    /// The completions a reaping pass set aside for `complete_rx_other`.
    pub(super) fn complete_slow(&mut self, slow: &mut Vec<(u16, RxHeld, RxCompletion)>, mut emit: impl FnMut(Used)) {
        if slow.is_empty() {
            return;
        }
        // Rare: a list of their own, since a NIC failing meanwhile returns
        // every held buffer through `rx_returned`.
        let mut out = Vec::new();
        for (head, held, c) in slow.drain(..) {
            self.complete_rx_other(head, held, c, &mut out);
        }
        out.into_iter().for_each(&mut emit);
    }

    /// How many more RX buffers the shim takes now.
    pub(super) fn rx_room(&self) -> usize {
        if self.failed {
            return 0;
        }
        if self.started {
            self.driver.rx_free()
        } else {
            self.limits.rx_capacity.saturating_sub(self.rx.len())
        }
    }

    /// The datapath proper: every guest buffer the device validated goes
    /// straight into a NIC descriptor, in one loop (see
    /// `virtio_devices::net::direct`).
    pub(super) fn refill(&mut self, q: &mut RxQueue<'_>) -> usize {
        let mut room = self.rx_room();
        let mut posted = 0;
        while room > 0 {
            if self.started && !self.failed {
                let n = self.zero_copy_run(q);
                posted += n;
                room = room.saturating_sub(n);
                if room == 0 {
                    break;
                }
            }
            // Whatever the run stopped at (not started yet, another shape,
            // too small, misaligned...) goes its own way.
            let Some(next) = q.pop() else { break };
            let r = match next {
                RxNext::One(d) => self.post_desc(d).map_err(|r| (d.head(), r)),
                RxNext::Chain(c) => self.post_checked(c).map_err(|r| (c.head, r)),
            };
            room -= 1;
            match r {
                Ok(()) => posted += 1,
                Err((head, reason)) => q.refuse(head, reason),
            }
        }
        // A NIC that failed during this pass gave back every buffer it held:
        // they go back to the guest now, since a vanished NIC raises no
        // interrupt that would start a completion pass.
        for u in self.rx_returned.drain(..) {
            q.complete(u.head, u.len);
        }
        posted
    }

    /// Every NIC completion as the driver finds it: a good frame in a lent
    /// buffer goes to [`RxQueue::complete_first`] (the device writes header
    /// and used entry), a bad one is recycled to the NIC after the reap;
    /// buffers posted through the table (bounce buffers) through [`reap_table`].
    /// Frames over several buffers (jumbo MTU) take [`Self::complete_rx_multi`].
    pub(super) fn complete_rx(&mut self, q: &mut RxQueue<'_>) {
        self.rx_returned.drain(..).for_each(|u| q.complete(u.head, u.len));
        if self.failed || !self.started {
            return;
        }
        if self.multi {
            return self.complete_rx_multi(q);
        }
        let mut slow = std::mem::take(&mut self.rx_slow);
        let mut dropped = std::mem::take(&mut self.rx_dropped);
        let table = &mut self.rx;
        let mut tally = Tally::default();
        let max = self.limits.rx_max_write;
        let csum = self.csum;
        let mut in_frag = self.rx_in_frag;
        let mut oversize = 0u32;
        let r = self.driver.reap_rx_with(
            #[inline(always)]
            |c| {
                // After a part without EOP, everything up to the next EOP is
                // the rest of that frame: dropped like it.
                let frag = in_frag;
                in_frag = !c.eop;
                let c = RxCompletion { error: c.error || frag, ..c };
                // A lent buffer's cookie is LENT_COOKIE | head: without the tag
                // it is the head (one test for both).
                let lent = c.cookie ^ LENT_COOKIE;
                if lent > u64::from(u16::MAX) {
                    if c.cookie & LENT_COOKIE == 0 {
                        // Posted through the table (a bounce buffer).
                        return reap_table(table, c, csum, &mut tally, &mut slow, |u| q.complete(u.head, u.len));
                    }
                    tally.unknown += 1;
                } else if !c.error && c.eop && c.len != 0 && c.len.max(oversize) <= max {
                    // (Once the NIC broke the length invariant in this pass,
                    // nothing more it reports reaches the guest.)
                    // The NIC wrote the frame at GPA + 12 of the buffer: the
                    // device adds the header and the used entry.
                    tally.frame(c.len);
                    let hdr = tally.header(one_buffer_header(csum, &c));
                    q.complete_first(lent as u16, c.len, hdr, false);
                } else {
                    oversize = oversize.max(c.len);
                    dropped.push(lent as u16);
                }
            },
        );
        self.rx_in_frag = in_frag;
        self.count_reaped(tally, r);
        if oversize > max {
            self.fail_invariant(format_args!("the NIC reported a {oversize}-byte frame; it may write {max} at most"));
        }
        for head in dropped.drain(..) {
            self.recycle_lent(q, head);
        }
        self.rx_dropped = dropped;
        self.complete_slow(&mut slow, |u| q.complete(u.head, u.len));
        self.rx_slow = slow;
        // Buffers recycled above (dropped frames) go back to the NIC now.
        self.flush_rx_posted();
        self.rx_returned.drain(..).for_each(|u| q.complete(u.head, u.len));
    }

    /// Jumbo MTU: the NIC writes each buffer from its start (GPA + 0) and a
    /// frame spans as many buffers as it needs, the last with EOP. The parts
    /// are kept until their EOP comes (maybe in a later pass); then the
    /// frame goes to the guest as one virtio frame over the same buffers
    /// (`num_buffers` = parts): the first buffer's bytes are moved up by the
    /// header (a copy of at most one NIC buffer, `rx_shifted_bytes`), the
    /// others are left where the NIC wrote them.
    #[cold]
    pub(super) fn complete_rx_multi(&mut self, q: &mut RxQueue<'_>) {
        let mut parts = std::mem::take(&mut self.rx_parts);
        let r = self.driver.reap_rx_with(|c| parts.push(c));
        if let Err(e) = r {
            self.driver_err(e);
        }
        if self.failed {
            // `fail` handed back every buffer the NIC held (the parts were
            // out of its sight, taken above): they are handed back here.
            for p in parts.drain(..) {
                self.return_part(p.cookie);
            }
            self.rx_returned.drain(..).for_each(|u| q.complete(u.head, u.len));
            return;
        }
        let mut start = 0;
        for end in 0..parts.len() {
            if parts[end].eop {
                self.deliver_parts(q, &parts[start..=end]);
                start = end + 1;
                if self.failed {
                    for p in &parts[start..] {
                        self.return_part(p.cookie);
                    }
                    start = parts.len();
                    break;
                }
            }
        }
        parts.drain(..start);
        self.metrics.rx_parts_carried += u64::from(!parts.is_empty());
        self.rx_parts = parts;
        self.flush_rx_posted();
        self.rx_returned.drain(..).for_each(|u| q.complete(u.head, u.len));
    }

    /// A part reaped after the NIC failed: its buffer goes back empty (a
    /// table buffer through the table, which `fail` drained already).
    #[cold]
    fn return_part(&mut self, cookie: u64) {
        if cookie & LENT_COOKIE != 0 && !self.dma_unstopped {
            self.rx_returned.push(Used { head: cookie as u16, len: 0 });
        }
    }

    /// One whole frame of `parts` (the last with EOP).
    #[cold]
    fn deliver_parts(&mut self, q: &mut RxQueue<'_>, parts: &[RxCompletion]) {
        let (max_write, max_frame) = (self.limits.rx_max_write, self.limits.rx_max_frame);
        let total: u64 = parts.iter().map(|p| u64::from(p.len)).sum();
        if parts.iter().any(|p| p.len > max_write) || total > u64::from(max_frame) {
            let what = format_args!("the NIC reported a {total}-byte frame in {} buffers; it may write {max_write} per buffer, {max_frame} per frame", parts.len());
            self.fail_invariant(what);
            for p in parts {
                self.return_part(p.cookie);
            }
            return;
        }
        // Each part's buffer: lent (the device's book) or in the table.
        let mut heads: SmallVec<[(u16, Option<RxHeld>); 9]> = SmallVec::new();
        for p in parts {
            if p.cookie & LENT_COOKIE != 0 {
                heads.push((p.cookie as u16, None));
            } else if let Some((head, held)) = self.rx.take(p.cookie) {
                heads.push((head, Some(held)));
            } else {
                self.metrics.nic_errors += 1;
            }
        }
        let last = parts[parts.len() - 1];
        // The header written into the first buffer counts every part: each
        // must be a buffer the guest lent, or the guest would take a buffer
        // of the next frame as this one's (a bounce buffer is never lent).
        let all_lent = heads.iter().all(|&(head, _)| q.lent(head).is_some());
        let good = heads.len() == parts.len() && !parts.iter().any(|p| p.error) && total != 0;
        // A table buffer is a zero-copy one (the device lent it too) or a
        // bounce buffer, which takes a frame of one part only.
        let bounce = heads.iter().find_map(|(_, h)| match h {
            Some(RxHeld { kind: RxKind::Bounce(i), .. }) => Some(i),
            _ => None,
        });
        if good && parts.len() == 1 {
            if let [(head, Some(held))] = heads[..] {
                if bounce.is_some() {
                    let mut out = Vec::new();
                    self.complete_rx_other(head, held, last, &mut out);
                    out.into_iter().for_each(|u| q.complete(u.head, u.len));
                    return;
                }
            }
        }
        if good && bounce.is_none() && !all_lent {
            self.metrics.nic_errors += 1;
        }
        let good = good && (bounce.is_some() || all_lent);
        if !good || bounce.is_some() {
            let reason = if good { DropReason::BufferTooSmall } else { DropReason::BackendError };
            if !good {
                self.metrics.rx_nic_errors += 1;
            }
            self.metrics.drop(reason);
            for (head, held) in heads {
                match held {
                    Some(held @ RxHeld { kind: RxKind::Bounce(_), .. }) => {
                        let mut out = Vec::new();
                        self.recycle(head, held, &mut out);
                        out.into_iter().for_each(|u| q.complete(u.head, u.len));
                    }
                    _ => self.repost_lent(q, head),
                }
            }
            return;
        }
        let n = parts.len() as u16;
        let flags = if self.csum && last.csum_ok { HDR_F_DATA_VALID } else { 0 };
        let hdr = RxHeader { flags, num_buffers: n };
        let (first, first_len) = (heads[0].0, parts[0].len);
        if !q.complete_first(first, first_len, hdr, true) {
            // A backend bug (logged by the queue): the rest goes back empty.
            for &(head, _) in &heads[1..] {
                q.complete(head, 0);
            }
            return;
        }
        for (&(head, _), p) in heads[1..].iter().zip(&parts[1..]) {
            q.complete_part(head, p.len, false);
        }
        let m = &mut self.metrics;
        m.rx_shifted(u64::from(first_len));
        m.rx_zero_copy += 1;
        m.rx_packets += 1;
        m.rx_bytes += total;
        m.rx_csum_valid += u64::from(flags != 0);
        if n > 1 {
            m.rx_multi_buffer_frames += 1;
            m.rx_multi_buffer_buffers += u64::from(n);
        }
    }
}
