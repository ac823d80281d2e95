//! The virtqueues, lent to the backend for one pass at a time: the one
//! interface between the device and what moves frames.
//!
//! For the zero-copy shim the loops over buffers and completions *are* the
//! datapath (buffer → NIC descriptor, NIC completion → used entry); handing
//! lists between device and backend would cost more than the work. An
//! [`RxQueue`] (a [`TxQueue`]) lends the backend the device's ring instead:
//! the backend pulls buffers (frames) and pushes completions in its own loop,
//! and the device's rules still apply to each of them, in the device's code:
//! - a buffer comes out of [`RxQueue::pop`] only after the ring validated it
//!   (direction, length, inside guest RAM) and the device marked its head
//!   held; a head already held or beyond the queue never comes out;
//! - [`RxQueue::complete`] takes only heads the device marked held, with at
//!   most their length, and counts the frame;
//! - a buffer [`RxQueue::pop_if`] or `pop` gave out as an [`RxDesc`] is
//!   *lent*: the device's book keeps its addresses, so a backend that had a
//!   frame written at GPA + 12 needs no record of its own:
//!   [`RxQueue::complete_frame`] checks the head is lent and the frame fits,
//!   and writes the virtio-net header and the used element;
//! - used elements are published once per pass (when the queue is dropped).

use std::ptr::NonNull;

use log::error;
use vm_memory::GuestAddress;

use super::backend::{write_one_buffer_header, write_rx_header, ChainRef, DropReason, RxHeader, VNET_HDR_LEN};
use super::chain::Direction;
use super::metrics::NetMetrics;
use super::mmds::take_if_mmds;
use super::ring::SplitRing;
use crate::mem::RamMap;
use crate::rate_limiter::RateLimiter;

/// A guest RX buffer that the device validated and now counts as held by the
/// backend: one device-writable descriptor of at least the virtio-net
/// header, inside one guest RAM mapping. Only [`RxQueue::pop`] makes one, so
/// holding an `RxDesc` is the proof that the check was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxDesc {
    head: u16,
    gpa: u64,
    len: u32,
    host: NonNull<u8>,
}

impl RxDesc {
    /// The virtqueue head: what [`RxQueue::complete`] and
    /// [`RxQueue::refuse`] take.
    #[inline]
    pub fn head(&self) -> u16 {
        self.head
    }

    /// The buffer's guest-physical address.
    #[inline]
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// Its length in bytes (>= [`VNET_HDR_LEN`]).
    #[inline]
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Never true (the header fits); here for API symmetry with `len`.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The host address of its first byte, valid for `len` bytes while the
    /// guest memory the device was activated with is alive.
    #[inline]
    pub fn host(&self) -> NonNull<u8> {
        self.host
    }
}

/// One entry of the device's book of RX buffers the backend holds, indexed
/// by head (shared by the generic and the direct path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Held {
    /// The buffer's length; 0 when the backend does not hold it (a posted
    /// buffer is never empty).
    pub len: u32,
    /// Its guest and host addresses when it was lent as an [`RxDesc`]: what
    /// [`RxQueue::complete_frame`] and [`RxQueue::lent`] need.
    pub desc: Option<(u64, NonNull<u8>)>,
}

impl Held {
    pub const NONE: Held = Held { len: 0, desc: None };

    /// A buffer held in any other shape (its length only).
    pub fn of_len(len: u32) -> Held {
        Held { len, desc: None }
    }

    /// The backend no longer holds it: its length, now 0. `desc` is left
    /// as it was: it counts only while `len` is set, and every hold writes
    /// both.
    #[inline(always)]
    pub fn release(&mut self) -> u32 {
        std::mem::take(&mut self.len)
    }
}

// SAFETY: the host address points into the guest RAM mappings the device
// keeps alive while it is activated; it is only written through on the
// device's thread.
unsafe impl Send for Held {}

/// A backend completed (or refused) a head of queue `queue` that it does
/// not hold: a backend bug, counted and logged, never passed to the guest.
#[cold]
fn bogus_completion(metrics: &mut NetMetrics, id: &str, queue: &str, head: u16) {
    metrics.backend_bogus_completions += 1;
    error!("virtio-net {id}: backend completed {queue} head {head} it does not hold");
}

/// What [`RxQueue::pop`] hands out.
#[derive(Debug)]
pub enum RxNext<'q> {
    /// The common shape (a Linux guest's MRG_RXBUF buffer).
    One(RxDesc),
    /// Any other valid shape, as the segments the ring validated.
    Chain(ChainRef<'q>),
}

/// The device's RX ring for one backend pass. See the module documentation.
pub struct RxQueue<'a> {
    ring: &'a mut SplitRing,
    /// The device's own book of the buffers the backend holds (see [`Held`]).
    held: &'a mut [Held],
    metrics: &'a mut NetMetrics,
    segs: &'a mut Vec<(GuestAddress, u32)>,
    id: &'a str,
    /// The ring's next avail index when the pass began (what was taken
    /// is the difference).
    start: u16,
    /// The ring's next used index when the pass began: the elements the
    /// pass wrote are the ones after it (published when it ends).
    used_start: u16,
    /// A used element was published at once (a malformed chain).
    added: bool,
    /// Counters of this pass, added to `metrics` when it ends (one store
    /// each per pass instead of per frame): buffers completed, those of them
    /// shorter than the header (no packet), those that continue a frame
    /// (MRG_RXBUF), and the bytes of the others, header included.
    buffers: u64,
    short: u64,
    more: u64,
    bytes: u64,
    /// The RX rate limiter, when it has buckets: received frames are charged
    /// to it (`charged_*`: what was charged so far this pass) and no buffer
    /// is handed out while it has no budget.
    limit: Option<&'a mut RateLimiter>,
    charged_bytes: u64,
    charged_frames: u64,
}

impl<'a> RxQueue<'a> {
    pub(crate) fn new(
        ring: &'a mut SplitRing,
        held: &'a mut [Held],
        metrics: &'a mut NetMetrics,
        segs: &'a mut Vec<(GuestAddress, u32)>,
        id: &'a str,
    ) -> Self {
        // Every head `complete` accepts is then inside the queue.
        assert!(held.len() <= usize::from(ring.size()), "held book larger than the queue");
        let start = ring.next_avail();
        let used_start = ring.next_used();
        RxQueue {
            ring,
            held,
            metrics,
            segs,
            id,
            start,
            used_start,
            added: false,
            buffers: 0,
            short: 0,
            more: 0,
            bytes: 0,
            limit: None,
            charged_bytes: 0,
            charged_frames: 0,
        }
    }

    /// Throttles the pass with `limit` (an active limiter, or `None`).
    pub(crate) fn limited(mut self, limit: Option<&'a mut RateLimiter>) -> Self {
        self.limit = limit;
        self
    }

    /// Whether the rate limiter holds back further buffers: what was
    /// received since the last look is charged first.
    #[inline(always)]
    fn throttled(&mut self) -> bool {
        self.limit.is_some() && self.charge_and_check()
    }

    #[cold]
    fn charge_and_check(&mut self) -> bool {
        self.charge_received();
        self.limit.as_deref_mut().is_some_and(|l| !l.has_budget())
    }

    /// Charges the frames completed since the last charge to the limiter.
    fn charge_received(&mut self) {
        let Some(l) = self.limit.as_deref_mut() else { return };
        let frames = self.buffers - self.short - self.more;
        let bytes = self.bytes;
        let (new_frames, new_bytes) = (frames - self.charged_frames, bytes - self.charged_bytes);
        if new_frames != 0 || new_bytes != 0 {
            // Frame bytes: the virtio-net header of each frame is not traffic.
            l.charge(new_bytes.saturating_sub(new_frames * VNET_HDR_LEN as u64), new_frames);
            (self.charged_frames, self.charged_bytes) = (frames, bytes);
        }
    }

    /// The guest RAM the ring's buffers are in (for a backend that does its
    /// own I/O into them, e.g. readv).
    pub fn ram(&self) -> &RamMap {
        self.ring.ram()
    }

    /// Whether the pass wrote used elements (the device then decides on an
    /// interrupt).
    pub(crate) fn added(&self) -> bool {
        self.added || self.ring.next_used() != self.used_start
    }

    /// How many heads the pass took from the avail ring.
    pub(crate) fn popped(&self) -> u32 {
        u32::from(self.ring.next_avail().wrapping_sub(self.start))
    }

    /// The pass took a whole queue's worth of heads. A driver can post no
    /// more than that between two passes; a ring that keeps yielding heads
    /// (rings placed so that the device's own used-ring writes move the
    /// avail index, found by fuzzing) would otherwise keep one pass, and the
    /// event loop, busy forever.
    #[inline(always)]
    fn lap_done(&self) -> bool {
        self.popped() >= u32::from(self.ring.size())
    }

    /// The next buffer the guest made available, validated and marked held;
    /// `None` when the guest has posted no more. Malformed buffers are
    /// completed empty and counted on the way, as on the generic path; a head
    /// beyond the queue or already held is counted and skipped. A pass takes
    /// at most one lap of the ring (see [`RxQueue::lap_done`]).
    #[inline]
    pub fn pop(&mut self) -> Option<RxNext<'_>> {
        if self.throttled() {
            return None;
        }
        loop {
            if self.lap_done() {
                return None;
            }
            // The guest's index is re-read only once the heads of its last
            // reading are taken (once per run, not per buffer).
            if !self.ring.avail_cached() && self.ring.avail_count() == 0 {
                return None;
            }
            let head = self.ring.pop_counted();
            let i = usize::from(head);
            let Some(held) = self.held.get(i) else {
                // Cannot even be completed (the used ring would refuse it).
                self.metrics.rx_drops.add(DropReason::BadAddress);
                continue;
            };
            if held.len != 0 {
                self.metrics.duplicate_heads += 1;
                continue;
            }
            if let Some((gpa, len, host)) = self.ring.single_mapped(head) {
                self.held[i] = Held { len, desc: Some((gpa, host)) };
                return Some(RxNext::One(RxDesc { head, gpa, len, host }));
            }
            if let Some(len) = self.parse_other(head) {
                return Some(RxNext::Chain(ChainRef { head, segs: self.segs, len }));
            }
        }
    }

    /// The next buffer, if it has the common shape (an [`RxDesc`]) and
    /// `accept` takes it: then it is marked held and taken. Anything else
    /// (no buffer, another shape, a head that is not free, or `accept`
    /// saying no) leaves the ring as it was for [`RxQueue::pop`]. A
    /// backend's run of buffers that all go the same way (the shim's
    /// zero-copy refill) stops at the first one that does not, with nothing
    /// taken that it would have to give back.
    #[inline(always)]
    pub fn pop_if(&mut self, accept: impl FnOnce(&RxDesc) -> bool) -> Option<RxDesc> {
        if self.throttled() {
            return None;
        }
        if self.lap_done() || !self.ring.avail_cached() && self.ring.avail_count() == 0 {
            return None;
        }
        let head = self.ring.peek_counted();
        let i = usize::from(head);
        if self.held.get(i).is_none_or(|h| h.len != 0) {
            return None;
        }
        let (gpa, len, host) = self.ring.single_mapped(head)?;
        let d = RxDesc { head, gpa, len, host };
        if !accept(&d) {
            return None;
        }
        self.ring.skip_counted();
        self.held[i] = Held { len, desc: Some((gpa, host)) };
        Some(d)
    }

    /// Any shape but the common one: validated into `segs` and marked held
    /// (its length), or completed empty and counted (`None`).
    #[cold]
    fn parse_other(&mut self, head: u16) -> Option<u32> {
        match self.ring.parse(head, Direction::DeviceWrites, self.segs) {
            Ok(p) => {
                self.held[usize::from(head)] = Held::of_len(p.len);
                Some(p.len)
            }
            Err(reason) => {
                self.metrics.rx_drops.add(reason);
                self.ring.add_used(head, 0);
                self.added = true;
                None
            }
        }
    }

    /// The backend cannot take buffer `head` (which `pop` gave it): it goes
    /// back to the guest empty, counted under `reason`. A head the backend
    /// was not given is a backend bug, counted and logged as in `complete`.
    #[cold]
    pub fn refuse(&mut self, head: u16, reason: DropReason) {
        match self.held.get_mut(usize::from(head)) {
            Some(h) if h.len != 0 => _ = h.release(),
            _ => return self.bogus_head(head),
        }
        self.metrics.rx_drops.add(reason);
        self.push(head, 0);
    }

    /// Buffer `head` now holds a frame: `len` bytes, header included. A head
    /// the backend does not hold, or a length beyond the buffer, is a backend
    /// bug: counted and logged, never passed on to the guest as such.
    #[inline(always)]
    pub fn complete(&mut self, head: u16, len: u32) {
        self.complete_part(head, len, true);
    }

    /// [`RxQueue::complete`] for a frame spread over several buffers
    /// (MRG_RXBUF): `first` for its first buffer (whose header, with
    /// num_buffers, the backend wrote), false for each buffer after it, in
    /// order. Only first buffers count as packets.
    #[inline(always)]
    pub fn complete_part(&mut self, head: u16, len: u32, first: bool) {
        let held = match self.held.get_mut(usize::from(head)) {
            Some(h) if h.len != 0 => h.release(),
            _ => return self.bogus_head(head),
        };
        let len = if len > held { self.bogus_len(len, held) } else { len };
        if first {
            self.used(head, len);
        } else {
            self.buffers += 1;
            self.more += 1;
            self.bytes += u64::from(len);
            self.ring.push_used_in_queue(head, len);
        }
    }

    /// Buffer `head`, which `pop` lent as an [`RxDesc`], holds a frame of
    /// `frame_len` bytes right after the header space (the backend had it
    /// written at GPA + [`VNET_HDR_LEN`]): the device writes the frame's
    /// virtio-net header and completes it. The zero-copy path's whole
    /// completion: one look at the book, no copy. A head not lent as an
    /// `RxDesc` is a backend bug, counted and logged, and nothing is
    /// written; a frame that does not fit is one too, and its buffer goes
    /// back empty.
    #[inline(always)]
    pub fn complete_frame(&mut self, head: u16, frame_len: u32) {
        let Some(h) = self.held.get_mut(usize::from(head)) else {
            return self.bogus_head(head);
        };
        let (len, host) = match *h {
            Held { len, desc: Some((_, host)) } if len != 0 => {
                h.release();
                (len, host)
            }
            _ => return self.bogus_head(head),
        };
        let total = u64::from(frame_len) + VNET_HDR_LEN as u64;
        if total > u64::from(len) {
            self.bogus_len(total.min(u64::from(u32::MAX)) as u32, len);
            return self.used(head, 0);
        }
        // SAFETY: `host` is the first byte of a buffer of `len` (>=
        // VNET_HDR_LEN) bytes inside one guest RAM mapping, resolved by
        // `pop` and alive while the device is activated.
        unsafe { write_one_buffer_header(host) };
        self.used(head, total as u32);
    }

    /// The first buffer of a frame the NIC wrote into a lent buffer (see
    /// [`RxQueue::complete_frame`]), with its header fields `hdr`: a frame
    /// over several buffers continues with [`RxQueue::complete_part`] for
    /// each of the `hdr.num_buffers - 1` others. `data_len` bytes are at
    /// GPA + [`VNET_HDR_LEN`], or, with `at_start`, at GPA: the device then
    /// moves them up by the header's length first (a copy inside the buffer,
    /// which the caller counts). Returns whether the frame was completed as
    /// such; a head not lent or a frame that does not fit is a backend bug
    /// (counted and logged; the buffer goes back empty).
    #[inline(always)]
    pub fn complete_first(&mut self, head: u16, data_len: u32, hdr: RxHeader, at_start: bool) -> bool {
        let Some(h) = self.held.get_mut(usize::from(head)) else {
            self.bogus_head(head);
            return false;
        };
        let (len, host) = match *h {
            Held { len, desc: Some((_, host)) } if len != 0 => {
                h.release();
                (len, host)
            }
            _ => {
                self.bogus_head(head);
                return false;
            }
        };
        let total = u64::from(data_len) + VNET_HDR_LEN as u64;
        if total > u64::from(len) {
            self.bogus_len(total.min(u64::from(u32::MAX)) as u32, len);
            self.used(head, 0);
            return false;
        }
        if at_start {
            // SAFETY: `host` is the first byte of `len` >= data_len + 12
            // bytes of one guest RAM mapping (checked above, resolved by
            // `pop`); source and destination lie inside it (ptr::copy
            // allows the overlap).
            unsafe { std::ptr::copy(host.as_ptr(), host.as_ptr().add(VNET_HDR_LEN), data_len as usize) };
        }
        // SAFETY: as in `complete_frame`.
        unsafe { write_rx_header(host, hdr) };
        self.used(head, total as u32);
        true
    }

    /// The [`RxDesc`] of buffer `head` if the backend holds it as one (it
    /// stays held): for a backend that gives a buffer back to its NIC after
    /// a frame it drops.
    pub fn lent(&self, head: u16) -> Option<RxDesc> {
        match self.held.get(usize::from(head)) {
            Some(&Held { len, desc: Some((gpa, host)) }) if len != 0 => Some(RxDesc { head, gpa, len, host }),
            _ => None,
        }
    }

    /// The used element of a buffer the book just released, `len` within it.
    #[inline(always)]
    fn used(&mut self, head: u16, len: u32) {
        self.buffers += 1;
        if (len as usize) < VNET_HDR_LEN {
            self.short += 1;
        } else {
            self.bytes += u64::from(len);
        }
        // `head` indexes `held`, so it is inside the queue (`new`).
        self.ring.push_used_in_queue(head, len);
    }

    /// A used element for a head the book holds (so inside the queue).
    #[inline(always)]
    fn push(&mut self, head: u16, len: u32) {
        self.ring.push_used_in_queue(head, len);
    }

    #[cold]
    fn bogus_head(&mut self, head: u16) {
        bogus_completion(self.metrics, self.id, "RX", head);
    }

    #[cold]
    fn bogus_len(&mut self, len: u32, held: u32) -> u32 {
        self.metrics.backend_bogus_completions += 1;
        error!("virtio-net {}: backend reported {len} bytes in a {held}-byte buffer", self.id);
        held
    }
}

impl Drop for RxQueue<'_> {
    /// The pass is over: the driver sees its used elements.
    fn drop(&mut self) {
        if self.ring.next_used() != self.used_start {
            self.ring.publish_used();
        }
        self.charge_received();
        let packets = self.buffers - self.short - self.more;
        self.metrics.rx_packets += packets;
        self.metrics.rx_bytes += self.bytes - packets * VNET_HDR_LEN as u64;
        self.metrics.rx_buffers_used += self.buffers;
    }
}

/// The device's TX ring for one backend pass: the twin of [`RxQueue`].
/// [`TxQueue::pop`] hands out only frames the ring validated (direction,
/// length, inside guest RAM, bounded chain) whose head is free, and marks
/// them in flight; [`TxQueue::complete`] and [`TxQueue::drop_frame`] take
/// only heads in flight. A pass pops at most its budget of heads (the
/// device then re-arms itself), asks the guest for kicks once it caught up,
/// and publishes its used elements when it ends.
pub struct TxQueue<'a> {
    ring: &'a mut SplitRing,
    /// Indexed by head: the length of each frame the backend holds.
    in_flight: &'a mut [Option<u32>],
    metrics: &'a mut NetMetrics,
    segs: &'a mut Vec<(GuestAddress, u32)>,
    one: [(GuestAddress, u32); 1],
    id: &'a str,
    budget: usize,
    popped: usize,
    /// Guest kicks were turned off by this pass (and are turned on again
    /// when it catches up).
    quiet: bool,
    over_budget: bool,
    /// The ring's next used index when the pass began (see [`RxQueue`]).
    used_start: u16,
    packets: u64,
    bytes: u64,
    /// The TX rate limiter, when it has buckets: a frame is taken only if
    /// it pays for it, else it stays in the ring until the limiter's timer.
    limit: Option<&'a mut RateLimiter>,
    /// The interface's metadata service, when configured: frames for it are
    /// handed to it and completed here, never to the backend.
    mmds: Option<&'a mut mmds::MmdsStack>,
}

impl<'a> TxQueue<'a> {
    pub(crate) fn new(
        ring: &'a mut SplitRing,
        in_flight: &'a mut [Option<u32>],
        metrics: &'a mut NetMetrics,
        segs: &'a mut Vec<(GuestAddress, u32)>,
        id: &'a str,
        budget: usize,
    ) -> Self {
        assert!(in_flight.len() <= usize::from(ring.size()), "in-flight book larger than the queue");
        let used_start = ring.next_used();
        TxQueue {
            ring,
            in_flight,
            metrics,
            segs,
            one: [(GuestAddress(0), 0)],
            id,
            budget,
            popped: 0,
            quiet: false,
            over_budget: false,
            used_start,
            packets: 0,
            bytes: 0,
            limit: None,
            mmds: None,
        }
    }

    /// Throttles the pass with `limit` (an active limiter, or `None`).
    pub(crate) fn limited(mut self, limit: Option<&'a mut RateLimiter>) -> Self {
        self.limit = limit;
        self
    }

    /// Hands the frames for the metadata service to `mmds` (if any).
    pub(crate) fn intercepting(mut self, mmds: Option<&'a mut mmds::MmdsStack>) -> Self {
        self.mmds = mmds;
        self
    }

    /// Whether the rate limiter lets a frame of `len` bytes (header
    /// included) go; if not, the head the pass just took goes back.
    #[inline(always)]
    fn admit(&mut self, len: u32) -> bool {
        match self.limit.as_deref_mut() {
            None => true,
            Some(l) => {
                if l.consume(u64::from(len).saturating_sub(VNET_HDR_LEN as u64), 1) {
                    return true;
                }
                self.ring.unpop();
                self.popped -= 1;
                false
            }
        }
    }

    /// Whether the pass wrote used elements.
    pub(crate) fn added(&self) -> bool {
        self.ring.next_used() != self.used_start
    }

    /// The guest RAM the ring's frames are in (for a backend that does its
    /// own I/O from them, e.g. writev).
    pub fn ram(&self) -> &RamMap {
        self.ring.ram()
    }

    /// Whether the pass stopped at its budget with frames maybe left.
    pub(crate) fn over_budget(&self) -> bool {
        self.over_budget
    }

    /// The next frame the guest made available, validated and marked in
    /// flight (the first [`VNET_HDR_LEN`] bytes are the virtio-net header);
    /// `None` when there is none (or the budget is spent). Malformed chains
    /// are completed empty and counted on the way; a head beyond the queue
    /// or still in flight is counted and skipped.
    #[inline]
    pub fn pop(&mut self) -> Option<ChainRef<'_>> {
        loop {
            if self.popped >= self.budget {
                self.over_budget = true;
                return None;
            }
            if !self.ring.avail_cached() && self.ring.avail_count() == 0 {
                if !self.quiet {
                    return None;
                }
                // Caught up: kicks on, and a last look for frames added
                // before the request became visible.
                self.quiet = false;
                if !self.ring.enable_notification() {
                    return None;
                }
                continue;
            }
            if !self.quiet {
                self.ring.disable_notification();
                self.quiet = true;
            }
            let head = self.ring.pop_counted();
            self.popped += 1;
            let i = usize::from(head);
            let Some(slot) = self.in_flight.get(i) else {
                self.metrics.tx_drops.add(DropReason::BadAddress);
                continue;
            };
            if slot.is_some() {
                // Still in flight with an asynchronous backend: ignore the
                // duplicate rather than complete the head twice.
                self.metrics.duplicate_heads += 1;
                continue;
            }
            if let Some(seg) = self.ring.single(head, Direction::DeviceReads) {
                // The common shape: no segment list to build.
                if let Some(stack) = self.mmds.as_deref_mut() {
                    if take_if_mmds(self.ring.ram(), &[seg], seg.1, stack, self.metrics) {
                        self.push(head);
                        continue;
                    }
                }
                if !self.admit(seg.1) {
                    return None;
                }
                self.in_flight[i] = Some(seg.1);
                self.one = [seg];
                return Some(ChainRef { head, segs: &self.one, len: seg.1 });
            }
            match self.ring.parse(head, Direction::DeviceReads, self.segs) {
                Ok(p) => {
                    if let Some(stack) = self.mmds.as_deref_mut() {
                        if take_if_mmds(self.ring.ram(), self.segs, p.len, stack, self.metrics) {
                            self.push(head);
                            continue;
                        }
                    }
                    if !self.admit(p.len) {
                        return None;
                    }
                    self.in_flight[i] = Some(p.len);
                    return Some(ChainRef { head, segs: self.segs, len: p.len });
                }
                Err(reason) => {
                    self.metrics.tx_drops.add(reason);
                    self.push(head);
                }
            }
        }
    }

    /// Frame `head` was sent (or handed to hardware that finished it). A
    /// head not in flight is a backend bug: counted and logged.
    #[inline(always)]
    pub fn complete(&mut self, head: u16) {
        let Some(len) = self.take(head) else { return };
        self.packets += 1;
        self.bytes += u64::from(len).saturating_sub(VNET_HDR_LEN as u64);
        self.push(head);
    }

    /// Frame `head` was not sent: it goes back to the guest counted under
    /// `reason`.
    #[cold]
    pub fn drop_frame(&mut self, head: u16, reason: DropReason) {
        if self.take(head).is_none() {
            return;
        }
        self.metrics.tx_drops.add(reason);
        self.push(head);
    }

    #[inline(always)]
    fn take(&mut self, head: u16) -> Option<u32> {
        let len = self.in_flight.get_mut(usize::from(head)).and_then(Option::take);
        if len.is_none() {
            self.bogus_head(head);
        }
        len
    }

    /// The used element of a head inside the queue (it indexes the book,
    /// or the ring just gave it out and `pop` checked it).
    #[inline(always)]
    fn push(&mut self, head: u16) {
        self.ring.push_used_in_queue(head, 0);
    }

    #[cold]
    fn bogus_head(&mut self, head: u16) {
        bogus_completion(self.metrics, self.id, "TX", head);
    }
}

impl Drop for TxQueue<'_> {
    /// The pass is over: the driver sees its used elements.
    fn drop(&mut self) {
        if self.ring.next_used() != self.used_start {
            self.ring.publish_used();
        }
        self.metrics.tx_packets += self.packets;
        self.metrics.tx_bytes += self.bytes;
    }
}
