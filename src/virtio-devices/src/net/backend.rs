//! The interface between the virtio-net device and what moves frames.
//!
//! The device lends the backend its queues for one pass at a time: an
//! [`RxQueue`] ([`NetBackend::rx`]) and a [`TxQueue`] ([`NetBackend::tx`]).
//! The backend pops buffers and frames from them, which the queue hands out
//! only after validating them (every segment inside guest RAM, right
//! direction, non-zero length, bounded chain, a head not already held), and
//! completes them through the queue, which checks that the head is one it
//! holds and the length fits. The backend either fills buffers at once (tap:
//! readv/writev on guest memory itself) or gives them to hardware (shim: the
//! pNIC DMAs straight into them) and completes them in a later pass.
//! Backends write the virtio-net header of received frames themselves
//! (or have the queue write it, [`RxQueue::complete_frame`]).
//!
//! Owned-buffer conveniences for tests and benchmarks live next to each
//! backend under the feature `testing`, not in the trait.

use std::os::unix::io::RawFd;
use std::ptr::NonNull;

use vm_memory::GuestAddress;

use super::direct::{RxQueue, TxQueue};

use crate::GuestMemory;

/// Size of `struct virtio_net_hdr_v1` (VERSION_1, no hash report).
pub const VNET_HDR_LEN: usize = 12;

/// The virtio-net header of a received frame that fits one buffer: no
/// offloads, no checksum to finish, num_buffers (le16, the last field of
/// virtio_net_hdr_v1) = 1.
pub const ONE_BUFFER_HEADER: [u8; VNET_HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

/// `flags` bit of a received frame's header: the device (here: the NIC)
/// validated its checksum (VIRTIO_NET_HDR_F_DATA_VALID; only with
/// VIRTIO_NET_F_GUEST_CSUM negotiated).
pub const HDR_F_DATA_VALID: u8 = 2;

/// The fields of a received frame's virtio-net header the RX side sets
/// (no GSO is ever delivered: `gso_type` NONE, the rest 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxHeader {
    /// `flags`: 0 or [`HDR_F_DATA_VALID`].
    pub flags: u8,
    /// `num_buffers`: how many buffers the frame spans (MRG_RXBUF).
    pub num_buffers: u16,
}

impl RxHeader {
    /// One buffer, nothing validated: [`ONE_BUFFER_HEADER`].
    pub const ONE: RxHeader = RxHeader { flags: 0, num_buffers: 1 };

    /// The header's bytes (virtio_net_hdr_v1, little endian).
    #[inline(always)]
    pub fn bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = self.flags;
        h[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        h
    }
}

/// Writes `hdr` at `host` (volatile: guest memory the guest may be reading).
///
/// # Safety
/// As [`write_one_buffer_header`].
#[inline(always)]
pub unsafe fn write_rx_header(host: NonNull<u8>, hdr: RxHeader) {
    // SAFETY: the caller guarantees VNET_HDR_LEN writable bytes at `host`;
    // [u8; N] has alignment 1.
    unsafe { host.as_ptr().cast::<[u8; VNET_HDR_LEN]>().write_volatile(hdr.bytes()) };
}

/// Writes [`ONE_BUFFER_HEADER`] at `host` (volatile: guest memory the guest
/// may be reading).
///
/// # Safety
/// `host` must be the first byte of at least [`VNET_HDR_LEN`] writable
/// bytes of guest RAM that stay mapped for the call.
#[inline(always)]
pub unsafe fn write_one_buffer_header(host: NonNull<u8>) {
    // SAFETY: the caller guarantees VNET_HDR_LEN writable bytes at `host`;
    // [u8; N] has alignment 1.
    unsafe { host.as_ptr().cast::<[u8; VNET_HDR_LEN]>().write_volatile(ONE_BUFFER_HEADER) };
}

/// One guest-writable buffer (a whole RX descriptor chain), owned (a
/// backend's copy of a [`ChainRef`], or a test's buffer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxBuffer {
    /// Head descriptor index: what goes into the used ring.
    pub head: u16,
    /// (guest-physical address, length) of each writable segment, in order.
    pub segs: Vec<(GuestAddress, u32)>,
    /// Sum of the segment lengths.
    pub len: u32,
}

/// One guest frame to send (a whole TX descriptor chain), owned. The first
/// `VNET_HDR_LEN` bytes across `segs` are the virtio-net header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxFrame {
    pub head: u16,
    pub segs: Vec<(GuestAddress, u32)>,
    pub len: u32,
}

/// A validated descriptor chain lent to the backend until its next pop
/// ([`RxQueue::pop`], [`TxQueue::pop`]): the device reuses the segment
/// storage for the next chain, so a backend that keeps the chain copies what
/// it needs.
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
    /// TX (wire policy): shorter than an Ethernet header (14 bytes).
    RuntFrame,
    /// TX (wire policy): the source MAC is not the VM's.
    SpoofedSource,
    /// TX (wire policy): an 802.1Q/802.1ad tag (no VLAN is configured, so
    /// every tagged frame is dropped).
    VlanTagged,
    /// TX (wire policy): MAC control (ethertype 0x8808: PAUSE, PFC).
    MacControl,
    /// TX (wire policy): a link-local control protocol the host's port
    /// speaks, not a guest: the IEEE 802.1 reserved group
    /// 01:80:C2:00:00:0X (STP BPDUs, 802.1X, LLDP, ...) as destination, or
    /// ethertype 0x8809 (slow protocols: LACP, OAM), 0x88CC (LLDP) or 0x888E
    /// (802.1X EAPOL).
    LinkLocal,
    /// TX: a virtio-net header the frame contradicts or that asks for what
    /// was not negotiated (checksum past the frame, gso_size 0, hdr_len
    /// past the frame, unknown gso_type or flags).
    BadVnetHeader,
    /// TX: a valid offload request the backend cannot carry out (a TSO
    /// layout its NIC does not segment).
    OffloadUnsupported,
}

impl DropReason {
    /// Every reason, in a fixed order (metrics list them all).
    pub const ALL: [DropReason; 16] = [
        DropReason::BadAddress,
        DropReason::WrongDirection,
        DropReason::ZeroLength,
        DropReason::ChainTooLong,
        DropReason::ShortHeader,
        DropReason::BufferTooSmall,
        DropReason::NoBuffer,
        DropReason::BackendError,
        DropReason::FrameTooLong,
        DropReason::RuntFrame,
        DropReason::SpoofedSource,
        DropReason::VlanTagged,
        DropReason::MacControl,
        DropReason::LinkLocal,
        DropReason::BadVnetHeader,
        DropReason::OffloadUnsupported,
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
            DropReason::RuntFrame => "runt_frame",
            DropReason::SpoofedSource => "spoofed_source",
            DropReason::VlanTagged => "vlan_tagged",
            DropReason::MacControl => "mac_control",
            DropReason::LinkLocal => "link_local",
            DropReason::BadVnetHeader => "bad_vnet_header",
            DropReason::OffloadUnsupported => "offload_unsupported",
        }
    }
}

/// What one [`NetBackend::rx`] pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxPass {
    /// Guest buffers the backend took (posted, or kept to read into).
    pub posted: usize,
    /// The backend takes no more buffers now: the device turns guest kicks
    /// off instead of asking for one.
    pub full: bool,
}

/// What moves frames for a virtio-net device. All methods run on the event-loop
/// thread; one method per operation.
pub trait NetBackend: Send {
    /// Offload/feature bits (VIRTIO_NET_F_*) this backend can honour.
    fn features(&self) -> u64;
    /// The driver's final feature set (e.g. to program tap offloads).
    fn set_features(&mut self, acked: u64) -> std::io::Result<()>;
    /// File descriptors to watch for readability; when one fires the device
    /// calls [`NetBackend::process_event`] with its index in this list.
    fn event_fds(&self) -> Vec<RawFd>;
    /// Handle a readable fd (tap data, pNIC MSI-X eventfd). The frames and
    /// completions it produced go to the guest in the `rx`/`tx` passes the
    /// device runs right after.
    fn process_event(&mut self, mem: &GuestMemory, index: usize);
    /// An fd of `event_fds()` fired while the device is not activated: consume
    /// and drop whatever is pending (no guest memory to put it in). The device
    /// stops watching the fd until activation anyway.
    fn discard_pending(&mut self, index: usize);
    /// One RX pass over the lent queue: complete every buffer whose frame is
    /// in ([`RxQueue::complete`], [`RxQueue::complete_part`],
    /// [`RxQueue::complete_frame`]), then take buffers ([`RxQueue::pop`],
    /// [`RxQueue::pop_if`]) while the backend has room, making them visible
    /// to its hardware before returning (one tail write), and
    /// [`RxQueue::refuse`] those it cannot use.
    fn rx(&mut self, q: &mut RxQueue<'_>) -> RxPass;
    /// True when the backend stopped taking frames because the buffers it
    /// holds may not hold the next one (the tap with MRG_RXBUF needs room for
    /// a maximum-size frame before it reads). The device then stops watching
    /// `event_fds()` and calls `process_event` for each of them after the
    /// backend took more buffers, re-watching once this turns false.
    fn rx_stalled(&self) -> bool;
    /// One TX pass over the lent queue: complete frames that finished
    /// ([`TxQueue::complete`], [`TxQueue::drop_frame`]), then send what
    /// [`TxQueue::pop`] gives, starting it before returning (one tail write).
    fn tx(&mut self, q: &mut TxQueue<'_>);
    /// Stop all I/O into guest memory and forget every buffer and frame.
    /// Returns only when nothing can write guest memory any more.
    fn quiesce(&mut self);
    fn link_up(&self) -> bool;
    /// Backend-specific counters, merged into the device's metrics.
    fn metrics(&self) -> serde_json::Value;
}
