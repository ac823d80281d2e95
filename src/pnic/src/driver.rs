//! The pNIC driver interface, independent of virtio.
//!
//! A driver owns one RX and one TX hardware queue. Buffers are described by
//! IOVAs (the addresses the NIC uses through the IOMMU) plus a caller cookie
//! that comes back on completion, so the shim never has to trust anything the
//! NIC writes to find out *which* guest buffer a completion belongs to.

use std::os::unix::io::RawFd;

use crate::dma::DmaArea;

/// Register access for a NIC: volatile MMIO on a BAR mapping, or a model in
/// unit tests. Offsets are byte offsets into BAR0.
pub trait RegisterAccess: Send {
    fn read32(&self, offset: u32) -> u32;
    fn write32(&self, offset: u32, value: u32);
}

/// One received frame (or frame fragment) handed back by the NIC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxCompletion {
    /// The cookie given to [`PnicDriver::post_rx_with`].
    pub cookie: u64,
    /// Bytes the NIC wrote at the posted IOVA.
    pub len: u32,
    /// End of packet: the frame is complete in this buffer.
    pub eop: bool,
    /// The NIC flagged a receive error (CRC, symbol, sequence, RX data error).
    pub error: bool,
    /// End of packet only: the NIC checked the frame's TCP/UDP checksum (and
    /// its IPv4 header checksum, if any) and found no error.
    pub csum_ok: bool,
}

/// Why a run of RX posts ([`PnicDriver::post_rx_with`]) ended early.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxRunError {
    /// The cookie of the buffer that was yielded but not posted, if one was.
    pub refused: Option<u64>,
    pub error: DriverError,
}

/// One finished transmission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxCompletion {
    /// The cookie given to [`PnicDriver::queue_tx`].
    pub cookie: u64,
}

/// Why a driver call failed.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DriverError {
    #[error("the NIC is gone (register reads return all ones): surprise removal or a PCI error")]
    Removed,
    #[error("timed out waiting for {0}; the NIC did not respond, check the device and its link")]
    Timeout(&'static str),
    #[error("the {0} ring is full; reap completions first")]
    RingFull(&'static str),
    #[error("a TX frame needs {got} segments but the ring takes at most {max} per frame")]
    TooManySegments { got: usize, max: usize },
    #[error("DMA buffer rejected: {0}")]
    BadBuffer(String),
    #[error("the queues are stopped; call start() first")]
    Stopped,
    #[error("DMA mapping failed: {0}")]
    DmaMap(String),
    /// A setting this NIC (or its driver) cannot honour.
    #[error("{0}")]
    Unsupported(String),
    /// The NIC broke an invariant or would not stop/reset; it is latched
    /// failed (no start, no reset) and its DMA is stopped.
    #[error("the NIC is latched failed: {0}")]
    Failed(String),
    /// The NIC did not confirm that its DMA stopped: latched failed, bus
    /// mastering off as far as the host could turn it off, and every buffer
    /// it held must stay held (neither reused nor handed back).
    #[error("the NIC did not confirm that its DMA stopped: {0}")]
    DmaNotStopped(String),
    /// An SR-IOV virtual function's physical function refused a request or
    /// answered out of protocol (the PF is the host's driver).
    #[error("the PF {0}")]
    Pf(String),
    /// A TX offload the driver does not perform (see `tx_offload_caps`).
    #[error("this NIC does not perform the TX offload {0:?}")]
    OffloadUnsupported(TxOffload),
}

/// The layer-4 protocol whose checksum the NIC inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Proto {
    /// Checksum at byte 16 of the TCP header.
    Tcp,
    /// Checksum at byte 6 of the UDP header.
    Udp,
}

/// Where a frame's headers are, as a NIC's checksum and segmentation
/// engines need them (the 82576's advanced context descriptor: MACLEN,
/// IPLEN, TUCMD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CsumLayout {
    pub l4: L4Proto,
    /// IPv4 (else IPv6).
    pub ipv4: bool,
    /// Bytes before the IP header (the Ethernet header).
    pub mac_len: u8,
    /// Bytes of the IP header, extension headers included: the L4 header
    /// starts at `mac_len + ip_len`.
    pub ip_len: u16,
}

/// What the NIC does to a TX frame besides sending its bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxOffload {
    /// Insert the L4 checksum (the checksum field holds the pseudo-header
    /// sum, as virtio's NEEDS_CSUM has it).
    Csum(CsumLayout),
    /// TCP segmentation: the NIC cuts the payload after the first
    /// `mac_len + ip_len + l4_len` bytes (the header, which must be wholly in
    /// the frame's first segment) into `mss`-byte segments and gives each
    /// a copy of the header with its lengths, IPv4 id and checksums, TCP
    /// sequence number and checksum fixed. The header must be prepared as
    /// the NIC wants it: IPv4 total length and checksum 0, IPv6 payload
    /// length 0, the TCP checksum field the pseudo-header sum without the
    /// length.
    Tso { layout: CsumLayout, l4_len: u8, mss: u16 },
}

impl TxOffload {
    pub fn layout(&self) -> &CsumLayout {
        match self {
            TxOffload::Csum(l) | TxOffload::Tso { layout: l, .. } => l,
        }
    }
}

/// The TX offloads a driver performs ([`PnicDriver::queue_tx_offload`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOffloadCaps {
    /// TCP/UDP checksum insertion over IPv4 and IPv6.
    pub csum: bool,
    /// TCP segmentation over IPv4 and IPv6.
    pub tso: bool,
    /// Largest TSO frame (header included).
    pub tso_max_frame: u32,
    /// Most segments of an offloaded frame (the header's included).
    pub max_segs: usize,
}

/// Static limits of a driver, known after construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriverLimits {
    /// RX buffers the ring holds at once.
    pub rx_capacity: usize,
    /// TX descriptors the ring holds at once (a frame uses one per segment).
    pub tx_capacity: usize,
    /// Upper bound of bytes the NIC ever writes into one posted RX buffer,
    /// whatever arrives on the wire (the frame-length cap it was programmed
    /// with, or its buffer size when frames may span several buffers).
    pub rx_max_write: u32,
    /// Upper bound of the bytes of one received frame (the frame cap); above
    /// `rx_max_write` a frame spans several buffers (jumbo frames).
    pub rx_max_frame: u32,
    /// Required alignment of an RX buffer IOVA (a power of two).
    pub rx_align: u64,
    /// Largest frame the NIC transmits.
    pub tx_max_frame: u32,
    /// Most segments one TX frame may use.
    pub tx_max_segs: usize,
}

/// A physical NIC queue pair as the shim drives it: lifecycle (start,
/// quiesce, reset, link, MAC filter, interrupts, DMA memory) and one method
/// per datapath operation. The batch methods take closures that are inlined
/// into the driver's ring loops, so the trait is used through generics or
/// the [`crate::nic::Pnic`] enum, never as a trait object. Conveniences for
/// tests (posting one buffer, reaping into a `Vec`) are in
/// `testing::DriverTestExt` (feature `testing`).
pub trait PnicDriver: Send {
    /// Short name for logs and metrics ("igb", "e1000e").
    fn name(&self) -> &'static str;
    fn limits(&self) -> DriverLimits;

    // ------------------------------------------------------- lifecycle ---
    /// Bring the queues up (empty rings). Idempotent.
    fn start(&mut self) -> Result<(), DriverError>;
    /// Stop both queues and wait until the NIC no longer accesses any posted
    /// buffer. Every posted buffer is forgotten (no completion for it).
    /// `Err(DriverError::DmaNotStopped)` is the one outcome after which the
    /// NIC may still access posted buffers: the caller then keeps every one
    /// of them (any other error means DMA stopped, by a reset if need be).
    fn quiesce(&mut self) -> Result<(), DriverError>;
    /// Full NIC reset and re-initialisation; queues end up stopped.
    fn reset(&mut self) -> Result<(), DriverError>;
    fn link_up(&mut self) -> Result<bool, DriverError>;
    /// Accept unicast to `mac`, broadcast and all multicast; drop the rest in
    /// the NIC (whatever the NIC DMAs is visible to the guest).
    fn set_mac_filter(&mut self, mac: [u8; 6]) -> Result<(), DriverError>;
    /// Interrupt eventfds (readable when the NIC signalled).
    fn irq_fds(&self) -> Vec<RawFd>;
    /// Acknowledge interrupt `index` (drain its eventfd, read the cause).
    fn handle_irq(&mut self, index: usize) -> Result<(), DriverError>;
    /// Memory the NIC may DMA to that is not guest RAM (rings, bounce
    /// buffers): allocated and mapped in the NIC's IOMMU domain at an IOVA
    /// outside guest RAM.
    fn alloc_dma(&mut self, len: usize) -> Result<DmaArea, DriverError>;

    // -------------------------------------------------------------- RX ---
    /// Free RX ring slots.
    fn rx_free(&self) -> usize;
    /// Post RX buffers as `next` yields them (IOVA and cookie; the NIC may
    /// write up to `limits().rx_max_write` bytes at each IOVA, and `len`,
    /// which must be at least that, is what the caller guarantees writable
    /// there) until it yields `None` or the ring is full; no tail write
    /// ([`PnicDriver::flush_rx`]). Returns how many were posted and, if the
    /// run stopped on an error, the error and the buffer yielded but not
    /// posted (if any). What holds for a whole run (queue state, length,
    /// room) is checked once, not per buffer.
    fn post_rx_with<F: FnMut() -> Option<(u64, u64)>>(&mut self, len: u32, next: F) -> (usize, Result<(), RxRunError>);
    /// Make posted RX buffers visible to the NIC (one tail write per batch).
    fn flush_rx(&mut self) -> Result<(), DriverError>;
    /// Hand every finished RX buffer to `f`, in ring order.
    fn reap_rx_with<F: FnMut(RxCompletion)>(&mut self, f: F) -> Result<(), DriverError>;
    /// The cookie of every RX buffer posted and not yet handed back (filled
    /// or not), in ring order: what a caller must account for when the NIC
    /// goes away with them.
    fn rx_posted_with<F: FnMut(u64)>(&self, f: F);

    // -------------------------------------------------------------- TX ---
    /// Free TX ring slots (descriptors).
    fn tx_free(&self) -> usize;
    /// Queue one frame made of `segs` (IOVA, length), invisible to the NIC
    /// (no tail write) until [`PnicDriver::flush_tx`]: a burst of frames
    /// costs one MMIO write.
    fn queue_tx(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<(), DriverError>;
    /// The TX offloads [`PnicDriver::queue_tx_offload`] performs (none
    /// unless the family says otherwise).
    fn tx_offload_caps(&self) -> TxOffloadCaps {
        TxOffloadCaps::default()
    }
    /// [`PnicDriver::queue_tx`] with the NIC doing `off` to the frame: one
    /// more descriptor (the context) than `segs`. For TSO, `segs[0]` is the
    /// whole header, prepared as [`TxOffload::Tso`] says.
    fn queue_tx_offload(&mut self, segs: &[(u64, u32)], off: &TxOffload, cookie: u64) -> Result<(), DriverError> {
        let _ = (segs, cookie);
        Err(DriverError::OffloadUnsupported(*off))
    }
    /// Start sending the frames queued with `queue_tx` (one tail write).
    fn flush_tx(&mut self) -> Result<(), DriverError>;
    /// Hand every finished TX frame to `f`, in order.
    fn reap_tx_with<F: FnMut(TxCompletion)>(&mut self, f: F) -> Result<(), DriverError>;

    /// The strict-DMA mapper's counters, when the driver maps guest buffers
    /// one by one ([`crate::shim::strict::StrictDma`]); `None` otherwise.
    fn strict_dma(&self) -> Option<&crate::shim::strict::StrictDmaMetrics> {
        None
    }

    /// How many times the driver changed its queue vector's interrupt rate
    /// (`e1000_common::moderation`); `None` for a NIC it does not adapt.
    fn irq_rate_changes(&self) -> Option<u64> {
        None
    }
}

/// Conveniences over [`PnicDriver`] for tests and benchmarks: one buffer
/// or frame at a time, completions collected in a `Vec`.
#[cfg(any(test, feature = "testing"))]
pub mod testing {
    use super::{DriverError, PnicDriver, RxCompletion, TxCompletion};

    /// See the module documentation; implemented for every driver.
    pub trait DriverTestExt: PnicDriver {
        /// Post one RX buffer (no tail write, as `post_rx_with`).
        fn post_rx(&mut self, iova: u64, len: u32, cookie: u64) -> Result<(), DriverError> {
            let mut one = Some((iova, cookie));
            match self.post_rx_with(len, || one.take()) {
                (1, Ok(())) => Ok(()),
                (_, Ok(())) => Err(DriverError::RingFull("RX")),
                (_, Err(e)) => Err(e.error),
            }
        }
        /// Append finished RX buffers in ring order.
        fn reap_rx(&mut self, out: &mut Vec<RxCompletion>) -> Result<(), DriverError> {
            self.reap_rx_with(|c| out.push(c))
        }
        /// Queue one frame and start sending it at once.
        fn post_tx(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<(), DriverError> {
            self.queue_tx(segs, cookie)?;
            self.flush_tx()
        }
        /// Append finished TX frames in order.
        fn reap_tx(&mut self, out: &mut Vec<TxCompletion>) -> Result<(), DriverError> {
            self.reap_tx_with(|c| out.push(c))
        }
        /// The cookies of the posted RX buffers, in ring order.
        fn rx_posted_cookies(&self) -> Vec<u64> {
            let mut v = Vec::new();
            self.rx_posted_with(|c| v.push(c));
            v
        }
    }

    impl<D: PnicDriver> DriverTestExt for D {}
}
