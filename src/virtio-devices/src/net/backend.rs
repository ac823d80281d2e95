//! The interface between the virtio-net device and what moves frames.
//!
//! The device pops and validates descriptor chains (every segment inside guest
//! RAM, right direction, non-zero length, bounded chain) and hands them to the
//! backend as [`RxBuffer`]s / [`TxFrame`]s. The backend either fills them at
//! once (tap: readv/writev on the guest memory itself) or gives them to hardware
//! (shim: the pNIC DMAs straight into them) and reports completions later.
//! Backends write the virtio-net header of received frames themselves.
//!
//! One method per operation. RX: the device posts validated chains through
//! [`NetBackend::post_rx_chain`] and ends each refill with
//! [`NetBackend::rx_posted_batch_done`] (one tail write), or, for a backend
//! whose frames never span buffers, lends its RX queue
//! ([`NetBackend::refill_direct`] / [`NetBackend::complete_direct`], see
//! [`super::direct`]). TX: [`NetBackend::send_chain`] per frame and
//! [`NetBackend::tx_batch_done`] per batch. Owned-buffer conveniences for
//! tests and benchmarks (`post_rx`, `send`) are in
//! [`testing::NetBackendTestExt`] (feature `testing`), not in the trait.

use std::os::unix::io::RawFd;

use vm_memory::GuestAddress;

use super::direct::RxQueue;

use crate::GuestMemory;

/// Size of `struct virtio_net_hdr_v1` (VERSION_1, no hash report).
pub const VNET_HDR_LEN: usize = 12;

/// One guest-writable buffer (a whole RX descriptor chain), validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxBuffer {
    /// Head descriptor index: what goes into the used ring.
    pub head: u16,
    /// (guest-physical address, length) of each writable segment, in order.
    pub segs: Vec<(GuestAddress, u32)>,
    /// Sum of the segment lengths.
    pub len: u32,
}

/// One guest frame to send (a whole TX descriptor chain), validated. The first
/// `VNET_HDR_LEN` bytes across `segs` are the virtio-net header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFrame {
    pub head: u16,
    pub segs: Vec<(GuestAddress, u32)>,
    pub len: u32,
}

/// A validated descriptor chain lent to the backend for the duration of one
/// call ([`NetBackend::post_rx_chain`], [`NetBackend::send_chain`]): the
/// device reuses the segment storage for the next chain, so a backend that
/// keeps the buffer copies what it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainRef<'a> {
    /// Head descriptor index: what goes into the used ring.
    pub head: u16,
    /// (guest-physical address, length) of each segment, in order.
    pub segs: &'a [(GuestAddress, u32)],
    /// Sum of the segment lengths.
    pub len: u32,
}

impl ChainRef<'_> {
    /// An owned RX buffer with the same contents (allocates).
    pub fn to_rx_buffer(&self) -> RxBuffer {
        RxBuffer { head: self.head, segs: self.segs.to_vec(), len: self.len }
    }

    /// An owned TX frame with the same contents (allocates).
    pub fn to_tx_frame(&self) -> TxFrame {
        TxFrame { head: self.head, segs: self.segs.to_vec(), len: self.len }
    }
}

/// A used-ring entry to publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Used {
    pub head: u16,
    /// Bytes written into the buffer (RX: header + frame); 0 for TX.
    pub len: u32,
}

/// Why a frame or buffer was dropped (keys of the metrics' drop counters).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// A descriptor address/length outside guest RAM (or a chain/indirect
    /// table that cannot be read at all).
    BadAddress,
    /// A readable descriptor in an RX chain or writable one in a TX chain.
    WrongDirection,
    ZeroLength,
    /// Too many descriptors, or a loop.
    ChainTooLong,
    /// Shorter than the virtio-net header.
    ShortHeader,
    /// RX: the frame does not fit the buffers the guest posted.
    BufferTooSmall,
    /// RX: no guest buffer was available.
    NoBuffer,
    /// The backend (tap or NIC) failed or is gone.
    BackendError,
    /// TX: frame larger than the backend accepts.
    FrameTooLong,
}

impl DropReason {
    /// Every reason, in a fixed order (metrics list them all).
    pub const ALL: [DropReason; 9] = [
        DropReason::BadAddress,
        DropReason::WrongDirection,
        DropReason::ZeroLength,
        DropReason::ChainTooLong,
        DropReason::ShortHeader,
        DropReason::BufferTooSmall,
        DropReason::NoBuffer,
        DropReason::BackendError,
        DropReason::FrameTooLong,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::BadAddress => "bad_address",
            DropReason::WrongDirection => "wrong_direction",
            DropReason::ZeroLength => "zero_length",
            DropReason::ChainTooLong => "chain_too_long",
            DropReason::ShortHeader => "short_header",
            DropReason::BufferTooSmall => "buffer_too_small",
            DropReason::NoBuffer => "no_buffer",
            DropReason::BackendError => "backend_error",
            DropReason::FrameTooLong => "frame_too_long",
        }
    }
}

/// What moves frames for a virtio-net device. All methods run on the event-loop
/// thread. `mem` is the guest memory; every address handed over was validated.
pub trait NetBackend: Send {
    /// Offload/feature bits (VIRTIO_NET_F_*) this backend can honour.
    fn features(&self) -> u64;
    /// The driver's final feature set (e.g. to program tap offloads).
    fn set_features(&mut self, acked: u64) -> std::io::Result<()>;
    /// File descriptors to watch for readability; when one fires the device
    /// calls [`NetBackend::process_event`] with its index in this list.
    fn event_fds(&self) -> Vec<RawFd>;
    /// Handle a readable fd (tap data, pNIC MSI-X eventfd). Completions are
    /// then collected with `reap_rx`/`reap_tx`.
    fn process_event(&mut self, mem: &GuestMemory, index: usize);
    /// How many more RX buffers the backend takes now. Posting one buffer
    /// takes at most one unit of it: the device asks once and posts up to
    /// that many before asking again.
    fn rx_room(&self) -> usize;
    /// Take a guest RX buffer whose segments are only lent for this call (the
    /// device's path: no allocation per buffer). `Err`: the device completes
    /// `chain.head` with length 0 and counts the drop.
    ///
    /// Batch contract: a backend may leave buffers posted this way invisible
    /// to its hardware (e.g. not write the NIC's RX tail register) until
    /// [`NetBackend::rx_posted_batch_done`]. The device calls that once after
    /// every batch in which at least one `post_rx_chain` succeeded, before it
    /// returns to the event loop, so no posted buffer stays unseen.
    fn post_rx_chain(&mut self, mem: &GuestMemory, chain: ChainRef<'_>) -> Result<(), DropReason>;
    /// End of a batch of [`NetBackend::post_rx_chain`] calls: make every
    /// buffer posted since the last call visible to the hardware (one tail
    /// write). Buffers a backend re-posts on its own (e.g. recycling a buffer
    /// whose frame it dropped) are its own business: it must make them
    /// visible before the call that re-posted them returns. Default: nothing
    /// (backends that post immediately).
    fn rx_posted_batch_done(&mut self) {}
    /// Completed RX buffers, in order, header already written.
    fn reap_rx(&mut self, mem: &GuestMemory, out: &mut Vec<Used>);
    /// Send a frame whose segments are lent for this call only. `Ok(true)`:
    /// done, the device completes it now; `Ok(false)`: in flight, it comes
    /// back through `reap_tx`. A backend that must keep the frame after
    /// returning (e.g. queued behind a full ring) copies it.
    fn send_chain(&mut self, mem: &GuestMemory, chain: ChainRef<'_>) -> Result<bool, DropReason>;
    /// End of a batch of [`NetBackend::send_chain`] calls: start sending
    /// every frame accepted since the last call (one NIC tail write). A
    /// backend may leave frames accepted by `send_chain` unsent until then;
    /// the device calls it after every batch in which it sent a frame,
    /// before it returns to the event loop. Frames a backend queues on its
    /// own (a backlog drained in `process_event`/`reap_tx`) it starts before
    /// that call returns. Default: nothing.
    fn tx_batch_done(&mut self) {}
    /// TX frames whose transmission finished.
    fn reap_tx(&mut self, out: &mut Vec<Used>);
    /// Stop all I/O into guest memory and forget every posted buffer. Returns
    /// only when nothing can write guest memory any more.
    fn quiesce(&mut self);
    fn link_up(&self) -> bool;
    /// True when the backend stopped taking frames because the posted RX
    /// buffers may not hold the next one (the tap with MRG_RXBUF needs room for
    /// a maximum-size frame before it reads). The device then stops watching
    /// `event_fds()` and calls `process_event` for each of them after posting
    /// more buffers, re-watching once this turns false.
    fn rx_stalled(&self) -> bool {
        false
    }
    /// An fd of `event_fds()` fired while the device is not activated: consume
    /// and drop whatever is pending (no guest memory to put it in). The device
    /// stops watching the fd until activation anyway.
    fn discard_pending(&mut self, _index: usize) {}
    /// Backend-specific counters, merged into the device's metrics.
    fn metrics(&self) -> serde_json::Value;
    /// True when every frame the backend delivers fills exactly one buffer
    /// (num_buffers is always 1), even with MRG_RXBUF: the device then counts
    /// one frame per completed buffer instead of reading num_buffers back
    /// from guest memory. Default `false` (frames may span buffers).
    fn single_buffer_frames(&self) -> bool {
        false
    }
    /// Direct RX ([`super::direct`]), refill half: take guest buffers from
    /// `q` ([`RxQueue::pop`]) while the backend has room, post them (no
    /// tail write: `rx_posted_batch_done` follows, as for `post_rx_chain`),
    /// and [`RxQueue::refuse`] those it cannot take. Returns how many it
    /// posted, or `None` (the default) for a backend that takes buffers
    /// through `post_rx_chain`. Offered only to backends with
    /// `single_buffer_frames`.
    fn refill_direct(&mut self, q: &mut RxQueue<'_>) -> Option<usize> {
        let _ = q;
        None
    }
    /// Direct RX, completion half: what `reap_rx` would return, given to
    /// [`RxQueue::complete`] instead, in the same order. `false` (the
    /// default): not supported, the device calls `reap_rx`.
    fn complete_direct(&mut self, q: &mut RxQueue<'_>) -> bool {
        let _ = q;
        false
    }
}

/// Owned-buffer conveniences over [`NetBackend`] for tests and benchmarks:
/// a buffer or frame handed over as a batch of its own.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::{ChainRef, DropReason, NetBackend, RxBuffer, TxFrame};
    use crate::GuestMemory;

    /// See the module documentation; implemented for every backend.
    pub trait NetBackendTestExt: NetBackend {
        /// Post `buf` and make it visible to the hardware at once
        /// (`post_rx_chain` + `rx_posted_batch_done`). `Err` gives it back
        /// with the reason.
        fn post_rx(&mut self, mem: &GuestMemory, buf: RxBuffer) -> Result<(), (RxBuffer, DropReason)> {
            let r = self.post_rx_chain(mem, ChainRef { head: buf.head, segs: &buf.segs, len: buf.len });
            self.rx_posted_batch_done();
            r.map_err(|reason| (buf, reason))
        }
        /// Send `frame` as a batch of one (`send_chain` + `tx_batch_done`).
        fn send(&mut self, mem: &GuestMemory, frame: TxFrame) -> Result<bool, DropReason> {
            let r = self.send_chain(mem, ChainRef { head: frame.head, segs: &frame.segs, len: frame.len });
            self.tx_batch_done();
            r
        }
    }

    impl<B: NetBackend + ?Sized> NetBackendTestExt for B {}
}
