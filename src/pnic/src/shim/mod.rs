//! The zero-copy shim: a virtio-net [`NetBackend`] over any [`PnicDriver`].
//!
//! RX: a guest buffer that is one segment of at least [`MIN_ZERO_COPY_BUF`]
//! bytes (what a Linux guest posts with MRG_RXBUF) is handed to the NIC as
//! IOVA = GPA + 12; the NIC writes the frame there and the shim only writes the
//! 12-byte virtio-net header in front. Anything else (chained, short,
//! misaligned, across two RAM mappings) takes the counted copy fallback
//! through a bounce buffer.
//! TX: the chain's segments after the 12-byte header become NIC descriptors.
//!
//! Every address given to the NIC lies inside guest RAM with the full length
//! the NIC may touch. Buffers handed over as [`RxDesc`] carry that proof from
//! the device, which resolved them inside one RAM mapping; every other
//! buffer is re-checked here against the shim's own map, although the
//! device validated it already.
//!
//! Per packet (`NetBackend::rx`): the device lends its RX queue; the pass
//! first takes the NIC's completions as the driver finds them
//! (`reap_rx_with`): for a good frame in a lent buffer the device writes the
//! header and the used entry ([`RxQueue::complete_frame`]), nothing else.
//! Then one driver run turns each guest buffer the NIC can fill directly
//! into one NIC descriptor; the buffer stays in the device's book (it is
//! *lent*, `LENT_COOKIE`) and the refill ends with one RX tail write.
//! Buffers that go another way (bounce buffers) have an entry in the
//! head-indexed [`rx_table::RxTable`]. TX (`NetBackend::tx`): the frames the
//! lent TX queue gives are queued on the NIC and started with one tail write
//! per pass; the NIC's completions go back through the queue.

pub mod bounce;
pub mod metrics;
pub mod rx_table;
pub mod slab;

use std::collections::VecDeque;
use std::os::unix::io::RawFd;
use std::ptr::NonNull;

use smallvec::SmallVec;
use virtio_devices::mem::RamMap;
#[cfg(any(test, feature = "testing"))]
use virtio_devices::net::backend::RxBuffer;
use virtio_devices::net::backend::{ChainRef, DropReason, NetBackend, RxPass, TxFrame, Used, VNET_HDR_LEN};
use virtio_devices::net::direct::{RxDesc, RxNext, RxQueue, TxQueue};
use virtio_devices::GuestMemory;
use vm_memory::{Bytes, GuestAddress};

use crate::bdf::{Bdf, BdfError};
use crate::driver::{DriverError, DriverLimits, PnicDriver, RxCompletion, RxRunError};
use crate::e1000_common::{NicConfig, OpenError};
use crate::e1000e;
use crate::igb;
use crate::nic::Pnic;
use crate::vfio::{precheck, HostPaths, DEVICE_82574L};
use bounce::{BouncePool, BOUNCE_BUF_SIZE};
pub use metrics::ShimMetrics;
use rx_table::{HostPtr, RxHeld, RxKind, RxTable};
use slab::CookieSlab;

/// VIRTIO_NET_F_MRG_RXBUF: makes a Linux guest post single-segment buffers
/// of >= 1536 bytes, the shape the NIC can fill directly.
pub const VIRTIO_NET_F_MRG_RXBUF: u64 = 1 << 15;
/// Smallest guest RX buffer (header included) used zero-copy.
pub const MIN_ZERO_COPY_BUF: u32 = 1536;
/// NIC buffer size the shim describes to the NIC at most.
pub const NIC_BUF_MAX: u32 = 2048;
/// TX frames queued while the NIC ring is full.
pub const TX_BACKLOG: usize = 256;
/// TX bounce buffers (frames with more segments than the NIC takes).
pub const TX_BOUNCE_BUFS: usize = 64;

const HDR: u64 = VNET_HDR_LEN as u64;

/// Segments of a bounced RX buffer the shim keeps inline (no allocation): a
/// guest without MRG_RXBUF posts header + data, two.
const RX_INLINE_SEGS: usize = 2;
/// The guest segments a bounce buffer's frame is copied into.
type RxSegs = SmallVec<[(GuestAddress, u32); RX_INLINE_SEGS]>;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error(transparent)]
    Bdf(#[from] BdfError),
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("pNIC setup failed: {0}")]
    Driver(#[from] DriverError),
    #[error("NIC accepts RX buffers of {0} bytes, more than the shim can offer ({NIC_BUF_MAX})")]
    Limits(u32),
    #[error("NIC wants RX buffers aligned to {0} bytes, which is not a power of two")]
    Align(u64),
}

#[derive(Debug)]
struct TxSlot {
    head: u16,
    bytes: u32,
    bounce: Option<u32>,
}

/// The virtio-net header of a received frame: no offloads, one buffer
/// (num_buffers, le16, is the last field of virtio_net_hdr_v1).
const RX_HEADER: [u8; VNET_HDR_LEN] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0];

/// Write the virtio-net header of a received frame into a zero-copy buffer.
#[inline]
fn write_header(host: NonNull<u8>) {
    let p = host.as_ptr();
    // SAFETY: `host` is the first byte of a buffer of at least
    // `zc_min_len` (> 12) bytes inside one guest RAM mapping that the shim
    // keeps alive (`zero_copy_target`); [u8; N] has alignment 1. Volatile:
    // the guest may be reading the same bytes.
    unsafe { p.cast::<[u8; VNET_HDR_LEN]>().write_volatile(RX_HEADER) };
}

/// Whether the NIC says it wrote a whole, undamaged frame it was allowed to
/// write.
#[inline]
fn frame_is_good(c: &RxCompletion, limits: &DriverLimits) -> bool {
    !c.error && c.eop && c.len != 0 && c.len <= limits.rx_max_write
}

/// Frames one reaping pass finished zero-copy, and completions for cookies
/// the shim never issued.
#[derive(Default)]
struct Tally {
    frames: u64,
    bytes: u64,
    unknown: u64,
}

impl Tally {
    #[inline(always)]
    fn frame(&mut self, len: u32) {
        self.frames += 1;
        self.bytes += u64::from(len);
    }
}

/// What became of one NIC completion in [`complete_zero_copy`].
enum Reaped {
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
fn complete_zero_copy(table: &mut RxTable, c: RxCompletion) -> Reaped {
    let Some((head, held)) = table.take(c.cookie) else {
        return Reaped::Unknown;
    };
    let total = HDR + u64::from(c.len);
    // The buffer's own length bounds the frame here (every zero-copy buffer
    // has room for `rx_max_write`); `frame_is_good` is for the other kinds.
    let good = !c.error && c.eop && c.len != 0;
    match held.kind {
        RxKind::ZeroCopy { host, .. } if good && total <= u64::from(held.len) => {
            write_header(host.0);
            Reaped::Done(Used { head, len: total as u32 })
        }
        _ => Reaped::Other(head, held, c),
    }
}

/// One completion for a buffer posted through the table: a good zero-copy
/// frame to `emit` (counted in `tally`), the rest set aside in `slow` for
/// `complete_rx_other`, an unknown cookie counted.
#[inline(always)]
fn reap_table(
    table: &mut RxTable,
    c: RxCompletion,
    tally: &mut Tally,
    slow: &mut Vec<(u16, RxHeld, RxCompletion)>,
    emit: impl FnOnce(Used),
) {
    let frame_len = c.len;
    match complete_zero_copy(table, c) {
        Reaped::Done(u) => {
            tally.frame(frame_len);
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
const LENT_COOKIE: u64 = 1 << 63;

/// Whether the NIC can fill buffer `d` directly at GPA + 12: room for the
/// header and the most the NIC writes after it (`zc_min_len`), and the NIC's
/// alignment there.
#[inline(always)]
fn fits_zero_copy(d: &RxDesc, zc_min_len: u32, align_mask: u64) -> bool {
    d.len() >= zc_min_len && d.gpa().wrapping_add(HDR) & align_mask == 0
}

/// The bytes the NIC may write into a zero-copy buffer of `len` (after the
/// header, at most one NIC buffer).
#[inline(always)]
fn nic_len(len: u32) -> u32 {
    (len - HDR as u32).min(NIC_BUF_MAX)
}

/// Post one RX buffer (a run of one) without the tail write.
#[inline(always)]
fn post_one<D: PnicDriver>(driver: &mut D, iova: u64, len: u32, cookie: u64) -> Result<(), DriverError> {
    let mut one = Some((iova, cookie));
    match driver.post_rx_with(len, || one.take()) {
        (1, Ok(())) => Ok(()),
        (_, Ok(())) => Err(DriverError::RingFull("RX")),
        (_, Err(e)) => Err(e.error),
    }
}

/// Whether `[addr, addr + len)` is non-empty and inside guest RAM.
#[inline]
fn in_ram(ram: &RamMap, addr: u64, len: u64) -> bool {
    len != 0 && ram.contains(addr, len)
}

/// Write `data` at byte offset `off` of the buffer described by `segs`.
fn write_scatter(ram: &RamMap, segs: &[(GuestAddress, u32)], mut off: u64, mut data: &[u8]) -> bool {
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

/// The NIC-visible segments of a TX chain, everything after the header,
/// into `out` (cleared first).
fn tx_payload_segments(ram: &RamMap, frame: &ChainRef<'_>, out: &mut Vec<(u64, u32)>) -> Result<(), DropReason> {
    let mut skip = HDR;
    out.clear();
    for (addr, len) in frame.segs {
        let len = u64::from(*len);
        if len == 0 {
            return Err(DropReason::ZeroLength);
        }
        if skip >= len {
            skip -= len;
            continue;
        }
        let start = addr.0.checked_add(skip).ok_or(DropReason::BadAddress)?;
        let l = len - skip;
        skip = 0;
        if !in_ram(ram, start, l) {
            return Err(DropReason::BadAddress);
        }
        out.push((start, l as u32));
    }
    if skip > 0 {
        return Err(DropReason::ShortHeader);
    }
    Ok(())
}

/// The shim backend. See the module documentation.
pub struct ShimBackend<D: PnicDriver> {
    driver: D,
    mem: GuestMemory,
    /// `mem`'s layout for the per-packet range checks and header writes.
    ram: RamMap,
    limits: DriverLimits,
    mac: [u8; 6],
    /// Guest RX buffers the NIC holds, by head (the cookie encodes it).
    rx: RxTable,
    rx_bounce: BouncePool,
    /// The guest segments of the buffer each RX bounce buffer stands for.
    rx_bounce_segs: Vec<RxSegs>,
    /// Smallest one-segment buffer taken zero-copy: room for the header and
    /// the most the NIC writes after it.
    zc_min_len: u32,
    /// Interrupt vectors the driver wired (fixed after bring-up).
    irq_vectors: usize,
    tx: CookieSlab<TxSlot>,
    tx_bounce: BouncePool,
    backlog: VecDeque<TxFrame>,
    /// RX buffers to hand back empty (NIC failed) in the next RX pass.
    rx_returned: Vec<Used>,
    /// TX frames to complete in the next `tx` pass: sent (`None`, reaped
    /// while making room) or dropped without the NIC (the reason).
    tx_returned: Vec<(u16, Option<DropReason>)>,
    /// RX buffers were posted to the driver since the last `flush_rx` (the
    /// tail write that makes them visible to the NIC).
    rx_unflushed: bool,
    /// TX frames were queued since the last `flush_tx` (the tail write that
    /// starts sending them).
    tx_unflushed: bool,
    /// RX completions that need the whole shim (recycling, the copy
    /// fallback), kept until the driver finished reaping; reused.
    rx_slow: Vec<(u16, RxHeld, RxCompletion)>,
    /// Lent buffers whose frame the NIC flagged bad, kept until the driver
    /// finished reaping (then recycled); reused.
    rx_dropped: Vec<u16>,
    /// NIC segments of the TX frame being sent (reused: no allocation per
    /// frame).
    tx_segs: Vec<(u64, u32)>,
    metrics: ShimMetrics,
    started: bool,
    failed: bool,
    link: bool,
    acked: u64,
}

/// The shim over whichever NIC family `open_vfio` found.
pub type VfioShim = ShimBackend<Pnic>;

/// Open the NIC at `bdf` (`0000:01:00.0` or `01:00.0`) through VFIO, map all of
/// `mem` for DMA (IOVA = GPA), bring it up with `mac` as its unicast filter,
/// and wrap it in a shim. The driver is chosen by PCI id (82576 or 82574L).
/// Every host-setup problem is reported before the NIC is touched.
pub fn open_vfio(bdf: &str, mem: &GuestMemory, mac: [u8; 6]) -> Result<VfioShim, ShimError> {
    let bdf: Bdf = bdf.parse()?;
    let info = precheck(&HostPaths::default(), bdf).map_err(OpenError::from)?;
    let cfg = NicConfig::new(mac);
    let nic = match info.device {
        DEVICE_82574L => Pnic::E1000e(e1000e::open_vfio(bdf, mem, cfg)?),
        _ => Pnic::Igb(igb::open_vfio(bdf, mem, cfg)?),
    };
    ShimBackend::new(nic, mem, mac)
}

impl<D: PnicDriver> ShimBackend<D> {
    /// Wrap `driver` (already mapped to `mem` with IOVA = GPA). Allocates the
    /// bounce pools in the driver's DMA space and programs the MAC filter.
    pub fn new(mut driver: D, mem: &GuestMemory, mac: [u8; 6]) -> Result<Self, ShimError> {
        let limits = driver.limits();
        if limits.rx_max_write + HDR as u32 > BOUNCE_BUF_SIZE as u32 {
            return Err(ShimError::Limits(limits.rx_max_write));
        }
        if !limits.rx_align.is_power_of_two() {
            return Err(ShimError::Align(limits.rx_align));
        }
        let rx_area = driver.alloc_dma(limits.rx_capacity * BOUNCE_BUF_SIZE as usize)?;
        let tx_area = driver.alloc_dma(TX_BOUNCE_BUFS * BOUNCE_BUF_SIZE as usize)?;
        driver.set_mac_filter(mac)?;
        let link = driver.link_up().unwrap_or(false);
        let irq_vectors = driver.irq_fds().len();
        Ok(ShimBackend {
            driver,
            mem: mem.clone(),
            ram: RamMap::new(mem),
            limits,
            mac,
            // Heads are below the device's queue size; the table grows if not.
            rx: RxTable::with_capacity(usize::from(virtio_devices::net::device::QUEUE_SIZE)),
            rx_bounce: BouncePool::new(rx_area),
            rx_bounce_segs: vec![RxSegs::new(); limits.rx_capacity],
            zc_min_len: MIN_ZERO_COPY_BUF.max(limits.rx_max_write + HDR as u32),
            irq_vectors,
            tx: CookieSlab::with_capacity(limits.tx_capacity),
            tx_bounce: BouncePool::new(tx_area),
            backlog: VecDeque::new(),
            rx_returned: Vec::new(),
            tx_returned: Vec::new(),
            rx_unflushed: false,
            tx_unflushed: false,
            rx_slow: Vec::with_capacity(limits.rx_capacity),
            rx_dropped: Vec::with_capacity(limits.rx_capacity),
            tx_segs: Vec::with_capacity(virtio_devices::net::chain::MAX_CHAIN_DESCS),
            metrics: ShimMetrics::default(),
            started: false,
            failed: false,
            link,
            acked: 0,
        })
    }

    pub fn driver(&self) -> &D {
        &self.driver
    }

    pub fn driver_mut(&mut self) -> &mut D {
        &mut self.driver
    }

    pub fn shim_metrics(&self) -> &ShimMetrics {
        &self.metrics
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Guest buffers currently owned by the NIC.
    pub fn rx_posted(&self) -> usize {
        self.rx.len() + self.lent_heads().len()
    }

    /// The NIC failed (surprise removal, error): link down, everything it
    /// held goes back to the guest empty, and the VM keeps running.
    fn fail(&mut self, e: &DriverError) {
        self.metrics.nic_errors += 1;
        if self.failed {
            return;
        }
        log::error!("pNIC {} failed: {e}; link down, the VM keeps running", self.driver.name());
        self.failed = true;
        self.link = false;
        // Asked before the queues stop (which forgets them).
        let lent = self.lent_heads();
        let _ = self.driver.quiesce();
        self.started = false;
        self.rx_unflushed = false;
        self.tx_unflushed = false;
        for head in self.rx.drain().into_iter().map(|(head, _)| head).chain(lent) {
            self.rx_returned.push(Used { head, len: 0 });
            self.metrics.drop(DropReason::BackendError);
        }
        for t in self.tx.drain() {
            self.tx_returned.push((t.head, Some(DropReason::BackendError)));
            self.metrics.drop(DropReason::BackendError);
        }
        for f in self.backlog.drain(..) {
            self.tx_returned.push((f.head, Some(DropReason::BackendError)));
            self.metrics.drop(DropReason::BackendError);
        }
        self.rx_bounce.reset();
        self.tx_bounce.reset();
    }

    fn driver_err(&mut self, e: DriverError) {
        match e {
            DriverError::Removed => self.fail(&e),
            _ => {
                self.metrics.nic_errors += 1;
                log::warn!("pNIC {}: {e}", self.driver.name());
            }
        }
    }

    fn ensure_started(&mut self) -> bool {
        if self.failed {
            return false;
        }
        if !self.started {
            match self.driver.start() {
                Ok(()) => self.started = true,
                Err(e) => {
                    self.driver_err(e);
                    return false;
                }
            }
        }
        true
    }

    /// Make the RX buffers posted since the last flush visible to the NIC:
    /// one tail-register write for the whole batch.
    fn flush_rx_posted(&mut self) {
        if !self.rx_unflushed {
            return;
        }
        self.rx_unflushed = false;
        if let Err(e) = self.driver.flush_rx() {
            self.driver_err(e);
        }
    }

    /// Start sending the TX frames queued since the last flush: one tail
    /// write for all of them.
    fn flush_tx_queued(&mut self) {
        if !self.tx_unflushed {
            return;
        }
        self.tx_unflushed = false;
        if let Err(e) = self.driver.flush_tx() {
            self.driver_err(e);
        }
    }

    /// Hand guest buffer `head` (`segs`, `len` bytes, validated by
    /// `post_checked`) to the NIC, zero-copy if its shape allows. The NIC
    /// sees it only after the next [`Self::flush_rx_posted`].
    fn post_slot(&mut self, head: u16, segs: &[(GuestAddress, u32)], len: u32) -> Result<(), DropReason> {
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
    fn zero_copy_target(&self, gpa: GuestAddress, len: u32) -> Option<NonNull<u8>> {
        if len < self.zc_min_len || gpa.0.wrapping_add(HDR) & (self.limits.rx_align - 1) != 0 {
            return None;
        }
        // The segment is in RAM, so gpa + HDR (< gpa + len) cannot overflow.
        NonNull::new(self.ram.host_range(gpa.0, u64::from(len))?)
    }

    /// Give the NIC the frame area (GPA + 12) of a buffer that
    /// `zero_copy_target` accepted.
    #[inline(always)]
    fn post_zero_copy(&mut self, head: u16, gpa: u64, len: u32, host: NonNull<u8>) -> Result<(), DropReason> {
        let held = RxHeld { len, kind: RxKind::ZeroCopy { host: HostPtr(host), gpa } };
        self.hand_to_nic(head, held, gpa + HDR, nic_len(len))
    }

    /// Give the NIC `nic_len` bytes at `iova` for buffer `head` (the tail
    /// write comes later). On failure everything is undone and the reason
    /// returned.
    #[inline(always)]
    fn hand_to_nic(&mut self, head: u16, held: RxHeld, iova: u64, nic_len: u32) -> Result<(), DropReason> {
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
    fn post_refused(&mut self, head: u16, held: RxHeld) -> DropReason {
        log::warn!("shim: RX buffer {head} posted while the NIC still holds it; dropped");
        if let RxKind::Bounce(i) = held.kind {
            self.rx_bounce.release(i);
        }
        DropReason::BackendError
    }

    /// The driver refused buffer `cookie`: undo its posting.
    #[cold]
    fn post_failed(&mut self, cookie: u64, e: DriverError) -> DropReason {
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
    fn complete_rx_other(&mut self, head: u16, held: RxHeld, c: RxCompletion, out: &mut Vec<Used>) {
        let frame_len = u64::from(c.len);
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
        let ok = match held.kind {
            RxKind::Bounce(i) => self.complete_bounce(i, frame_len),
            // complete_zero_copy took every good frame that fits a zero-copy buffer.
            RxKind::ZeroCopy { .. } => false,
        };
        if ok {
            self.metrics.rx_packets += 1;
            self.metrics.rx_bytes += frame_len;
            out.push(Used { head, len: (HDR + frame_len) as u32 });
        } else {
            self.metrics.drop(DropReason::BadAddress);
            out.push(Used { head, len: 0 });
        }
    }

    /// Copy header and frame from bounce buffer `i` into the guest buffer it
    /// stands for, and free it.
    fn complete_bounce(&mut self, i: u32, frame_len: u64) -> bool {
        // Header + frame in one copy with equal alignment on both sides.
        let total = (HDR + frame_len) as usize;
        let mut tmp = vec![0u8; total];
        tmp[..VNET_HDR_LEN].copy_from_slice(&RX_HEADER);
        let read = self.rx_bounce.read(i, HDR, &mut tmp[VNET_HDR_LEN..]).is_ok();
        self.rx_bounce.release(i);
        let ok = read && write_scatter(&self.ram, &self.rx_bounce_segs[i as usize], 0, &tmp);
        if ok {
            self.metrics.rx_copied(frame_len);
        }
        ok
    }

    /// Give a guest buffer whose frame was dropped straight back to the NIC
    /// (the caller flushes).
    fn recycle(&mut self, head: u16, held: RxHeld, out: &mut Vec<Used>) {
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

    /// Queue one checked frame on the NIC (started by the next
    /// `flush_tx_queued`); a frame in more segments than the NIC takes is
    /// copied into a bounce buffer first.
    #[inline]
    fn submit_tx(&mut self, head: u16, segs: &[(u64, u32)]) -> Result<(), DropReason> {
        if segs.len() > self.limits.tx_max_segs {
            return self.submit_tx_bounced(head, segs);
        }
        let bytes: u32 = segs.iter().map(|s| s.1).sum();
        let cookie = self.tx.insert(TxSlot { head, bytes, bounce: None });
        match self.driver.queue_tx(segs, cookie) {
            Ok(()) => {
                self.tx_unflushed = true;
                self.metrics.tx_zero_copy += 1;
                Ok(())
            }
            Err(e) => Err(self.tx_refused(cookie, e)),
        }
    }

    /// Too fragmented for the NIC: copy into one bounce buffer and queue that.
    #[cold]
    fn submit_tx_bounced(&mut self, head: u16, segs: &[(u64, u32)]) -> Result<(), DropReason> {
        let bytes: u32 = segs.iter().map(|s| s.1).sum();
        let Some(i) = self.tx_bounce.alloc() else {
            return Err(DropReason::NoBuffer);
        };
        let mut tmp = vec![0u8; bytes as usize];
        let mut off = 0usize;
        for (a, l) in segs {
            if self.mem.read_slice(&mut tmp[off..off + *l as usize], GuestAddress(*a)).is_err() {
                self.tx_bounce.release(i);
                return Err(DropReason::BadAddress);
            }
            off += *l as usize;
        }
        if self.tx_bounce.write(i, 0, &tmp).is_err() {
            self.tx_bounce.release(i);
            return Err(DropReason::FrameTooLong);
        }
        self.metrics.tx_copied(u64::from(bytes));
        let cookie = self.tx.insert(TxSlot { head, bytes, bounce: Some(i) });
        match self.driver.queue_tx(&[(self.tx_bounce.iova(i), bytes)], cookie) {
            Ok(()) => {
                self.tx_unflushed = true;
                Ok(())
            }
            Err(e) => Err(self.tx_refused(cookie, e)),
        }
    }

    /// The driver refused frame `cookie`: forget it.
    #[cold]
    fn tx_refused(&mut self, cookie: u64, e: DriverError) -> DropReason {
        if let Some(TxSlot { bounce: Some(i), .. }) = self.tx.remove(cookie) {
            self.tx_bounce.release(i);
        }
        self.driver_err(e);
        DropReason::BackendError
    }

    /// The NIC segment of a one-descriptor TX frame that passes every check
    /// of `validate_tx` (header and at least one byte, no more than the NIC
    /// sends, all in guest RAM); `None` sends it through `validate_tx`,
    /// which gives the verdict.
    #[inline]
    fn one_segment_payload(&self, gpa: GuestAddress, len: u32) -> Option<(u64, u32)> {
        let payload = len.checked_sub(HDR as u32).filter(|&p| p > 0 && p <= self.limits.tx_max_frame)?;
        let start = gpa.0.checked_add(HDR)?;
        in_ram(&self.ram, start, u64::from(payload)).then_some((start, payload))
    }

    /// The NIC segments of a guest frame, checked, into `segs`.
    fn validate_tx(&self, frame: &ChainRef<'_>, segs: &mut Vec<(u64, u32)>) -> Result<(), DropReason> {
        if (frame.len as usize) <= VNET_HDR_LEN {
            return Err(DropReason::ShortHeader);
        }
        if u64::from(frame.len) - HDR > u64::from(self.limits.tx_max_frame) {
            return Err(DropReason::FrameTooLong);
        }
        tx_payload_segments(&self.ram, frame, segs)?;
        // Trust the segments, not the summary (`frame.len`).
        let bytes: u64 = segs.iter().map(|s| u64::from(s.1)).sum();
        if bytes > u64::from(self.limits.tx_max_frame) {
            return Err(DropReason::FrameTooLong);
        }
        Ok(())
    }

    /// Send `frame` now, or queue it behind the frames already waiting for
    /// room in the NIC ring. `segs` is scratch space for its NIC segments.
    fn send_checked(&mut self, frame: &ChainRef<'_>, segs: &mut Vec<(u64, u32)>) -> Result<bool, DropReason> {
        self.validate_tx(frame, segs).inspect_err(|r| self.metrics.drop(*r))?;
        let need = segs.len().min(self.limits.tx_max_segs);
        let mut free = self.driver.tx_free();
        if !self.backlog.is_empty() || free < need {
            // The ring was full: make room, oldest frames first (this path
            // may allocate a scratch list; the common one does not).
            self.reap_tx_completions(false);
            self.drain_backlog();
            free = self.driver.tx_free();
        }
        if self.backlog.is_empty() && free >= need {
            self.submit_tx(frame.head, segs).inspect_err(|r| self.metrics.drop(*r))?;
            return Ok(false);
        }
        if self.backlog.len() >= TX_BACKLOG {
            self.metrics.drop(DropReason::NoBuffer);
            return Err(DropReason::NoBuffer);
        }
        self.backlog.push_back(frame.to_tx_frame());
        Ok(false)
    }

    /// Send queued frames while the NIC ring has room; dropped ones are
    /// completed through `tx_returned`.
    fn drain_backlog(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let mut segs = std::mem::take(&mut self.tx_segs);
        while let Some(f) = self.backlog.front() {
            let chain = ChainRef { head: f.head, segs: &f.segs, len: f.len };
            match self.validate_tx(&chain, &mut segs) {
                Ok(()) => {}
                Err(r) => {
                    let f = self.backlog.pop_front().expect("front exists");
                    self.metrics.drop(r);
                    self.tx_returned.push((f.head, Some(r)));
                    continue;
                }
            };
            let need = segs.len().min(self.limits.tx_max_segs);
            if self.driver.tx_free() < need {
                break;
            }
            let f = self.backlog.pop_front().expect("front exists");
            let head = f.head;
            if let Err(r) = self.submit_tx(head, &segs) {
                self.metrics.drop(r);
                self.tx_returned.push((head, Some(r)));
            }
        }
        self.tx_segs = segs;
    }

    #[cfg(any(test, feature = "testing"))]
    /// The common case, a Linux guest's MRG_RXBUF buffer: one segment the
    /// NIC can fill directly. The checks of `post_checked` and `post_slot`
    /// in one pass (the segment and everything the NIC may write inside guest
    /// RAM); any other shape takes `post_checked`.
    #[inline(always)]
    fn post_one_segment(&mut self, head: u16, gpa: GuestAddress, len: u32) -> Result<(), DropReason> {
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
    fn post_desc(&mut self, d: RxDesc) -> Result<(), DropReason> {
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
    fn zero_copy_run(&mut self, q: &mut RxQueue<'_>) -> usize {
        let (zc_min_len, align_mask) = (self.zc_min_len, self.limits.rx_align - 1);
        // Every buffer of the run has at least nic_len(zc_min_len) bytes of
        // room after the header.
        let (posted, r) = self.driver.post_rx_with(
            nic_len(zc_min_len),
            #[inline(always)]
            || {
                let d = q.pop_if(
                    #[inline(always)]
                    |d| fits_zero_copy(d, zc_min_len, align_mask),
                )?;
                Some((d.gpa() + HDR, LENT_COOKIE | u64::from(d.head())))
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
    fn recycle_lent(&mut self, q: &mut RxQueue<'_>, head: u16) {
        self.metrics.rx_nic_errors += 1;
        self.metrics.drop(DropReason::BackendError);
        let (zc_min_len, align_mask) = (self.zc_min_len, self.limits.rx_align - 1);
        let lent = q.lent(head).filter(|d| !self.rx.holds(head) && fits_zero_copy(d, zc_min_len, align_mask));
        let Some(d) = lent else {
            // Not a buffer the shim lent the NIC: a cookie the driver was
            // never given.
            self.metrics.nic_errors += 1;
            return;
        };
        if self.failed || !self.started {
            return q.refuse(head, DropReason::BackendError);
        }
        let cookie = LENT_COOKIE | u64::from(head);
        match post_one(&mut self.driver, d.gpa() + HDR, nic_len(d.len()), cookie) {
            Ok(()) => self.rx_unflushed = true,
            Err(e) => {
                let reason = self.post_failed(cookie, e);
                q.refuse(head, reason);
            }
        }
    }

    /// Heads of the lent buffers the NIC holds (see [`LENT_COOKIE`]).
    fn lent_heads(&self) -> Vec<u16> {
        let mut heads = Vec::new();
        self.driver.rx_posted_with(|c| {
            if c & LENT_COOKIE != 0 {
                heads.push(c as u16);
            }
        });
        heads
    }

    /// Validate a guest RX buffer and post it (without the tail write).
    fn post_checked(&mut self, buf: ChainRef<'_>) -> Result<(), DropReason> {
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
    fn reap_rx_into(&mut self, mut emit: impl FnMut(Used)) {
        self.rx_returned.drain(..).for_each(&mut emit);
        if self.failed || !self.started {
            return;
        }
        let mut slow = std::mem::take(&mut self.rx_slow);
        let table = &mut self.rx;
        let mut tally = Tally::default();
        let r = self.driver.reap_rx_with(
            #[inline(always)]
            |c| reap_table(table, c, &mut tally, &mut slow, &mut emit),
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
    fn count_reaped(&mut self, t: Tally, r: Result<(), DriverError>) {
        self.metrics.rx_zero_copy += t.frames;
        self.metrics.rx_packets += t.frames;
        self.metrics.rx_bytes += t.bytes;
        self.metrics.nic_errors += t.unknown;
        if let Err(e) = r {
            self.driver_err(e);
        }
    }

    /// The completions a reaping pass set aside for `complete_rx_other`.
    fn complete_slow(&mut self, slow: &mut Vec<(u16, RxHeld, RxCompletion)>, mut emit: impl FnMut(Used)) {
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

    fn refresh_link(&mut self) {
        match self.driver.link_up() {
            Ok(up) => self.link = up && !self.failed,
            Err(e) => self.driver_err(e),
        }
    }
}

impl<D: PnicDriver> NetBackend for ShimBackend<D> {
    fn features(&self) -> u64 {
        VIRTIO_NET_F_MRG_RXBUF
    }

    fn set_features(&mut self, acked: u64) -> std::io::Result<()> {
        self.acked = acked;
        Ok(())
    }

    fn event_fds(&self) -> Vec<RawFd> {
        self.driver.irq_fds()
    }

    fn process_event(&mut self, _mem: &GuestMemory, index: usize) {
        if let Err(e) = self.driver.handle_irq(index) {
            self.driver_err(e);
        }
        if !self.failed {
            // With two vectors, link changes arrive on vector 1 only: spare the
            // MMIO read of STATUS on every RX/TX interrupt.
            if index > 0 || self.irq_vectors < 2 {
                self.refresh_link();
            }
            self.drain_backlog();
            self.flush_tx_queued();
        }
    }

    /// Completions first (a good frame in a lent buffer: the device writes
    /// header and used entry), then the refill, ended by one tail write.
    fn rx(&mut self, q: &mut RxQueue<'_>) -> RxPass {
        self.complete_rx(q);
        let posted = self.refill(q);
        self.flush_rx_posted();
        RxPass { posted, full: self.rx_room() == 0 }
    }

    /// Every frame is one NIC buffer is one guest buffer: the shim never
    /// waits for more buffers before taking a frame.
    fn rx_stalled(&self) -> bool {
        false
    }

    /// The guest's frames go to the NIC (zero-copy: their segments after the
    /// header become TX descriptors), started by one tail write; then the
    /// frames the NIC finished, and those dropped without it, are completed.
    fn tx(&mut self, q: &mut TxQueue<'_>) {
        while let Some(frame) = q.pop() {
            let head = frame.head;
            match self.send_chain(frame) {
                Ok(true) => q.complete(head),
                Ok(false) => {}
                Err(reason) => q.drop_frame(head, reason),
            }
        }
        self.flush_tx_queued();
        if !self.failed && self.started {
            self.reap_tx_into(true, |head| q.complete(head));
            // Frames that waited for room, and the ones dropped meanwhile.
            self.drain_backlog();
            self.flush_tx_queued();
        }
        for (head, dropped) in self.tx_returned.drain(..) {
            match dropped {
                None => q.complete(head),
                Some(reason) => q.drop_frame(head, reason),
            }
        }
    }

    fn quiesce(&mut self) {
        let rx_held = self.rx_posted();
        let held = (rx_held + self.tx.len() + self.backlog.len()) as u64;
        if let Err(e) = self.driver.quiesce() {
            // The igb driver already fell back to a full reset.
            self.metrics.nic_errors += 1;
            log::error!("pNIC quiesce: {e}");
        }
        self.metrics.quiesces += 1;
        self.metrics.quiesce_forgotten_buffers += held;
        // Only now, with the NIC's queues stopped, are the buffers dropped.
        log::info!(
            "pNIC {}: queues stopped on device reset; forgetting {} RX, {} TX and {} queued TX buffers",
            self.driver.name(),
            rx_held,
            self.tx.len(),
            self.backlog.len()
        );
        self.started = false;
        self.rx_unflushed = false;
        self.tx_unflushed = false;
        self.rx.clear();
        self.tx.clear();
        self.backlog.clear();
        self.rx_returned.clear();
        self.tx_returned.clear();
        self.rx_bounce.reset();
        self.tx_bounce.reset();
    }

    fn link_up(&self) -> bool {
        self.link && !self.failed
    }

    fn discard_pending(&mut self, index: usize) {
        // Drain the eventfd and acknowledge the cause; nothing is posted
        // while the device is not activated, so nothing else is pending.
        if let Err(e) = self.driver.handle_irq(index) {
            self.driver_err(e);
        }
    }

    fn metrics(&self) -> serde_json::Value {
        #[derive(serde::Serialize)]
        struct Doc<'a> {
            pnic: &'static str,
            link_up: bool,
            #[serde(flatten)]
            counters: &'a ShimMetrics,
        }
        let doc = Doc { pnic: self.driver.name(), link_up: self.link_up(), counters: &self.metrics };
        // Integers and strings: cannot fail.
        serde_json::to_value(doc).unwrap_or(serde_json::Value::Null)
    }
}

impl<D: PnicDriver> ShimBackend<D> {
    /// How many more RX buffers the shim takes now.
    fn rx_room(&self) -> usize {
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
    fn refill(&mut self, q: &mut RxQueue<'_>) -> usize {
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
    /// buffer goes to [`RxQueue::complete_frame`] (the device writes header
    /// and used entry), a bad one is recycled to the NIC after the reap;
    /// buffers posted through the table (bounce buffers) through [`reap_table`].
    fn complete_rx(&mut self, q: &mut RxQueue<'_>) {
        self.rx_returned.drain(..).for_each(|u| q.complete(u.head, u.len));
        if self.failed || !self.started {
            return;
        }
        let mut slow = std::mem::take(&mut self.rx_slow);
        let mut dropped = std::mem::take(&mut self.rx_dropped);
        let table = &mut self.rx;
        let mut tally = Tally::default();
        let r = self.driver.reap_rx_with(
            #[inline(always)]
            |c| {
                // A lent buffer's cookie is LENT_COOKIE | head: without the tag
                // it is the head (one test for both).
                let lent = c.cookie ^ LENT_COOKIE;
                if lent > u64::from(u16::MAX) {
                    if c.cookie & LENT_COOKIE == 0 {
                        // Posted through the table (a bounce buffer).
                        return reap_table(table, c, &mut tally, &mut slow, |u| q.complete(u.head, u.len));
                    }
                    tally.unknown += 1;
                } else if !c.error && c.eop && c.len != 0 {
                    // The NIC wrote the frame at GPA + 12 of the buffer: the
                    // device adds the header and the used entry.
                    tally.frame(c.len);
                    q.complete_frame(lent as u16, c.len);
                } else {
                    dropped.push(lent as u16);
                }
            },
        );
        self.count_reaped(tally, r);
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

    /// Copies the segment list only when the frame has to wait in the backlog.
    fn send_chain(&mut self, frame: ChainRef<'_>) -> Result<bool, DropReason> {
        if !self.ensure_started() {
            self.metrics.drop(DropReason::BackendError);
            return Err(DropReason::BackendError);
        }
        if let [(gpa, len)] = frame.segs {
            // The common shape: header and frame in one descriptor.
            if let Some(payload) = self.one_segment_payload(*gpa, *len) {
                if self.backlog.is_empty() && self.driver.tx_free() >= 1 {
                    self.submit_tx(frame.head, &[payload]).inspect_err(|r| self.metrics.drop(*r))?;
                    return Ok(false);
                }
            }
        }
        let mut segs = std::mem::take(&mut self.tx_segs);
        let r = self.send_checked(&frame, &mut segs);
        self.tx_segs = segs;
        r
    }
}

/// Owned-buffer conveniences for tests and benchmarks: a buffer or frame at
/// a time, completions into a list, without the device's queues.
#[cfg(any(test, feature = "testing"))]
impl<D: PnicDriver> ShimBackend<D> {
    /// Post `buf` and make it visible to the NIC at once.
    pub fn post_rx(&mut self, _mem: &GuestMemory, buf: RxBuffer) -> Result<(), (RxBuffer, DropReason)> {
        let chain = ChainRef { head: buf.head, segs: &buf.segs, len: buf.len };
        let r = match chain.segs {
            [(gpa, len)] => self.post_one_segment(chain.head, *gpa, *len),
            _ => self.post_checked(chain),
        };
        self.flush_rx_posted();
        r.map_err(|reason| (buf, reason))
    }

    /// [`Self::post_rx`] without the tail write (a run of buffers, ended by
    /// [`Self::flush_rx`]).
    pub fn post_rx_chain(&mut self, chain: ChainRef<'_>) -> Result<(), DropReason> {
        match chain.segs {
            [(gpa, len)] => self.post_one_segment(chain.head, *gpa, *len),
            _ => self.post_checked(chain),
        }
    }

    /// Make the buffers posted since the last flush visible to the NIC.
    pub fn flush_rx(&mut self) {
        self.flush_rx_posted();
    }

    /// Completed RX buffers, in order, header already written.
    pub fn reap_rx(&mut self, _mem: &GuestMemory, out: &mut Vec<Used>) {
        self.reap_rx_into(|u| out.push(u));
    }

    /// How many more RX buffers the shim takes now.
    pub fn rx_room_now(&self) -> usize {
        self.rx_room()
    }

    /// Send `frame` at once (a batch of one): `Ok(false)`, in flight.
    pub fn send(&mut self, _mem: &GuestMemory, frame: TxFrame) -> Result<bool, DropReason> {
        let r = self.send_chain(ChainRef { head: frame.head, segs: &frame.segs, len: frame.len });
        self.flush_tx_queued();
        r
    }

    /// Start sending the frames queued since the last flush.
    pub fn flush_tx(&mut self) {
        self.flush_tx_queued();
    }

    /// TX frames that finished (sent or dropped), in order.
    pub fn reap_tx(&mut self, out: &mut Vec<Used>) {
        let mut take =
            |v: &mut Vec<(u16, Option<DropReason>)>| out.extend(v.drain(..).map(|(head, _)| Used { head, len: 0 }));
        take(&mut self.tx_returned);
        if !self.failed && self.started {
            self.reap_tx_completions(true);
            self.drain_backlog();
            self.flush_tx_queued();
            take(&mut self.tx_returned);
        }
    }
}

impl<D: PnicDriver> ShimBackend<D> {
    /// Collect the NIC's TX completions; a driver error is handled (counted,
    /// removal fails the NIC) only when `report` is set.
    fn reap_tx_completions(&mut self, report: bool) {
        let mut out = std::mem::take(&mut self.tx_returned);
        self.reap_tx_into(report, |head| out.push((head, None)));
        self.tx_returned = out;
    }

    /// Hand the head of every frame the NIC finished to `emit`.
    #[inline(always)]
    fn reap_tx_into(&mut self, report: bool, mut emit: impl FnMut(u16)) {
        let (tx, bounce, metrics) = (&mut self.tx, &mut self.tx_bounce, &mut self.metrics);
        let r = self.driver.reap_tx_with(
            #[inline(always)]
            |c| match tx.remove(c.cookie) {
                Some(t) => {
                    if let Some(i) = t.bounce {
                        bounce.release(i);
                    }
                    metrics.tx_packets += 1;
                    metrics.tx_bytes += u64::from(t.bytes);
                    emit(t.head);
                }
                // Not a frame we queued (or a stale cookie): ignored.
                None => metrics.nic_errors += 1,
            },
        );
        if let Err(e) = r {
            if report {
                self.driver_err(e);
            }
        }
    }
}

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod tests;
