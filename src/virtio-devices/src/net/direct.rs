//! The RX virtqueue, lent to a backend that moves buffers itself.
//!
//! Through the generic [`NetBackend`](super::NetBackend) interface a received
//! frame crosses four loops: the device collects a run of guest buffers, the
//! backend posts the run, the backend reaps completions into a list, the
//! device moves the list to the used ring. For the zero-copy shim those
//! loops *are* the datapath (buffer → NIC descriptor, NIC completion → used
//! entry), and the hand-overs between them cost more than the work. An
//! [`RxQueue`] lends the backend the device's RX ring for one refill or one
//! completion pass instead: the backend pulls buffers and pushes completions
//! in its own loop, and the device's rules still apply to each of them, in
//! the device's code:
//! - a buffer comes out of [`RxQueue::pop`] only after the ring validated it
//!   (direction, length, inside guest RAM) and the device marked its head
//!   held; a head already held or beyond the queue never comes out;
//! - [`RxQueue::complete`] takes only heads the device marked held, with at
//!   most their length, and counts the frame;
//! - used elements are published once per pass (when the queue is dropped).

use std::ptr::NonNull;

use log::error;
use vm_memory::GuestAddress;

use super::backend::{ChainRef, DropReason, VNET_HDR_LEN};
use super::chain::Direction;
use super::metrics::NetMetrics;
use super::ring::SplitRing;

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
    /// Indexed by head: the length of each buffer the backend holds, 0 for
    /// one it does not (the device's own book, shared with the generic path).
    held: &'a mut [u32],
    metrics: &'a mut NetMetrics,
    segs: &'a mut Vec<(GuestAddress, u32)>,
    id: &'a str,
    /// Heads the driver published that `pop` has not taken yet.
    avail: u16,
    /// Heads taken from the avail ring (whatever became of them).
    popped: u32,
    /// Used elements written (some maybe not yet published).
    added: bool,
    unpublished: bool,
    /// Counters of this pass, added to `metrics` when it ends (one store
    /// each per pass instead of per frame): buffers completed, those of them
    /// shorter than the header (no packet), and the bytes of the others,
    /// header included.
    buffers: u64,
    short: u64,
    bytes: u64,
}

impl<'a> RxQueue<'a> {
    pub(crate) fn new(
        ring: &'a mut SplitRing,
        held: &'a mut [u32],
        metrics: &'a mut NetMetrics,
        segs: &'a mut Vec<(GuestAddress, u32)>,
        id: &'a str,
    ) -> Self {
        // Every head `complete` accepts is then inside the queue.
        assert!(held.len() <= usize::from(ring.size()), "held book larger than the queue");
        RxQueue { ring, held, metrics, segs, id, avail: 0, popped: 0, added: false, unpublished: false, buffers: 0, short: 0, bytes: 0 }
    }

    /// Whether the pass wrote used elements (the device then decides on an
    /// interrupt).
    pub(crate) fn added(&self) -> bool {
        self.added
    }

    /// How many heads the pass took from the avail ring.
    pub(crate) fn popped(&self) -> u32 {
        self.popped
    }

    /// The next buffer the guest made available, validated and marked held;
    /// `None` when the guest has posted no more. Malformed buffers are
    /// completed empty and counted on the way, as on the generic path; a head
    /// beyond the queue or already held is counted and skipped.
    #[inline]
    pub fn pop(&mut self) -> Option<RxNext<'_>> {
        loop {
            if self.avail == 0 {
                // Re-read the guest's index once per run, not per buffer.
                self.avail = self.ring.avail_count();
                if self.avail == 0 {
                    return None;
                }
            }
            self.avail -= 1;
            self.popped += 1;
            let head = self.ring.pop_counted();
            let i = usize::from(head);
            let Some(&held) = self.held.get(i) else {
                // Cannot even be completed (the used ring would refuse it).
                self.metrics.rx_drops.add(DropReason::BadAddress);
                continue;
            };
            if held != 0 {
                self.metrics.duplicate_heads += 1;
                continue;
            }
            if let Some((gpa, len, host)) = self.ring.single_mapped(head) {
                self.held[i] = len;
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
        if self.avail == 0 {
            self.avail = self.ring.avail_count();
            if self.avail == 0 {
                return None;
            }
        }
        let head = self.ring.peek_counted();
        let i = usize::from(head);
        if self.held.get(i) != Some(&0) {
            return None;
        }
        let (gpa, len, host) = self.ring.single_mapped(head)?;
        let d = RxDesc { head, gpa, len, host };
        if !accept(&d) {
            return None;
        }
        self.ring.skip_counted();
        self.avail -= 1;
        self.popped += 1;
        self.held[i] = len;
        Some(d)
    }

    /// Any shape but the common one: validated into `segs` and marked held
    /// (its length), or completed empty and counted (`None`).
    #[cold]
    fn parse_other(&mut self, head: u16) -> Option<u32> {
        match self.ring.parse(head, Direction::DeviceWrites, self.segs) {
            Ok(p) => {
                self.held[usize::from(head)] = p.len;
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
            Some(h) if *h != 0 => *h = 0,
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
        let held = match self.held.get_mut(usize::from(head)) {
            Some(h) if *h != 0 => std::mem::take(h),
            _ => return self.bogus_head(head),
        };
        let len = if len > held { self.bogus_len(len, held) } else { len };
        self.buffers += 1;
        if (len as usize) < VNET_HDR_LEN {
            self.short += 1;
        } else {
            self.bytes += u64::from(len);
        }
        // `head` indexes `held`, so it is inside the queue (`new`).
        self.ring.push_used_in_queue(head, len);
        self.added = true;
        self.unpublished = true;
    }

    #[inline(always)]
    fn push(&mut self, head: u16, len: u32) {
        if self.ring.push_used(head, len) {
            self.added = true;
            self.unpublished = true;
        }
    }

    #[cold]
    fn bogus_head(&mut self, head: u16) {
        self.metrics.backend_bogus_completions += 1;
        error!("virtio-net {}: backend completed RX head {head} it does not hold", self.id);
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
        if self.unpublished {
            self.ring.publish_used();
        }
        let packets = self.buffers - self.short;
        self.metrics.rx_packets += packets;
        self.metrics.rx_bytes += self.bytes - packets * VNET_HDR_LEN as u64;
        self.metrics.rx_buffers_used += self.buffers;
    }
}
