//! The zero-copy shim: a virtio-net [`NetBackend`] over any [`PnicDriver`].
//!
//! RX: a guest buffer that is one segment of at least [`MIN_ZERO_COPY_BUF`]
//! bytes (what a Linux guest posts with MRG_RXBUF) is handed to the NIC as
//! IOVA = GPA + 12; the NIC writes the frame there and the shim only writes the
//! 12-byte virtio-net header in front. Anything else (chained, short,
//! misaligned, across two RAM mappings) takes the counted copy fallback
//! through a bounce buffer.
//! TX: the frame's Ethernet header is copied into a VMM-owned DMA slot and
//! checked there (the wire policy, [`wire`]); the NIC gets that copy as the
//! first descriptor and the chain's segments after it, zero-copy.
//!
//! Every address given to the NIC lies inside guest RAM with the full length
//! the NIC may touch. Buffers handed over as an `RxDesc` carry that proof from
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
mod rx;
pub mod rx_table;
pub mod slab;
pub mod strict;
#[cfg(any(test, feature = "testing"))]
mod testing;
mod tx;
pub mod tx_offload;
pub mod wire;

use std::collections::VecDeque;
use std::os::unix::io::RawFd;

use smallvec::SmallVec;
use virtio_devices::mem::RamMap;
use virtio_devices::net::backend::{DropReason, NetBackend, RxPass, TxFrame, Used, VNET_HDR_LEN};
use virtio_devices::net::config::{F_CSUM, F_GUEST_CSUM, F_HOST_TSO4, F_HOST_TSO6};
use virtio_devices::net::direct::{RxQueue, TxQueue};
use virtio_devices::GuestMemory;
use vm_memory::GuestAddress;
use vmm_config::PnicDma;

use crate::bdf::{Bdf, BdfError};
use crate::driver::{DriverError, DriverLimits, PnicDriver, RxCompletion};
use crate::e1000_common::{NicConfig, OpenError};
use crate::nic::Pnic;

use bounce::{BouncePool, BOUNCE_BUF_SIZE};
pub use metrics::ShimMetrics;
use rx_table::{RxHeld, RxTable};
use slab::CookieSlab;
use strict::{StrictDma, StrictDmaMetrics};
use tx::TxSlot;
use wire::{HdrSlots, HDR_SLOT};

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
    /// The guest's MAC is not the one the VF's PF assigned.
    #[error(
        "{bdf} is an SR-IOV VF whose PF assigned it the MAC {}, but the guest is configured with {}: \
         give the guest {} (or no MAC, to take the VF's), or change the VF's MAC on the host \
         (`ip link set <PF> vf <N> mac {}`)",
        fmt_mac(vf),
        fmt_mac(guest),
        fmt_mac(vf),
        fmt_mac(guest)
    )]
    MacMismatch { bdf: Bdf, vf: [u8; 6], guest: [u8; 6] },
}

/// Whether `[addr, addr + len)` is non-empty and inside guest RAM.
#[inline]
fn in_ram(ram: &RamMap, addr: u64, len: u64) -> bool {
    len != 0 && ram.contains(addr, len)
}

/// The shim backend. See the module documentation.
pub struct ShimBackend<D: PnicDriver> {
    driver: D,
    mem: GuestMemory,
    /// `mem`'s layout for the per-packet range checks and header writes.
    ram: RamMap,
    limits: DriverLimits,
    mac: [u8; 6],
    /// `mac` as the TX source check compares it (`wire::mac_word`).
    mac_word: u64,
    /// Guest RX buffers the NIC holds, by head (the cookie encodes it).
    rx: RxTable,
    rx_bounce: BouncePool,
    /// The guest segments of the buffer each RX bounce buffer stands for.
    rx_bounce_segs: Vec<RxSegs>,
    /// Smallest one-segment buffer taken zero-copy: room for the header and
    /// the most the NIC writes after it.
    zc_min_len: u32,
    /// Where in a zero-copy buffer the NIC writes: GPA + 12 when every frame
    /// fits one buffer; GPA + 0 when frames span several (jumbo frames: a
    /// buffer may continue a frame, and continuation buffers carry no
    /// header; the first buffer's bytes are moved up by the header).
    rx_off: u64,
    /// Frames may span several NIC buffers (`limits.rx_max_frame >
    /// limits.rx_max_write`).
    multi: bool,
    /// The guest negotiated GUEST_CSUM: frames the NIC validated get
    /// VIRTIO_NET_HDR_F_DATA_VALID.
    csum: bool,
    /// One-buffer mode: the last completion lacked EOP, so the ones up to
    /// the next EOP are the rest of a frame the cap should have stopped:
    /// dropped, never shown as frames.
    rx_in_frag: bool,
    /// Multi-buffer mode: the parts of a frame whose EOP has not come yet.
    rx_parts: Vec<RxCompletion>,
    /// Interrupt vectors the driver wired (fixed after bring-up).
    irq_vectors: usize,
    tx: CookieSlab<TxSlot>,
    tx_bounce: BouncePool,
    /// The VMM's copies of the Ethernet headers of the TX frames on the NIC
    /// (the wire policy, see [`wire`]).
    tx_hdrs: HdrSlots,
    /// NIC segments of a TX frame being queued (header copy first); reused.
    tx_nic_segs: Vec<(u64, u32)>,
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
    /// The NIC failed and nothing proves its DMA stopped: the buffers it
    /// held stay held (see `fail`).
    dma_unstopped: bool,
    link: bool,
    acked: u64,
}

/// The shim over whichever NIC family `open_vfio` found.
pub type VfioShim = ShimBackend<Pnic>;
/// The same in strict DMA mode ([`strict`]).
pub type StrictVfioShim = ShimBackend<StrictDma<Pnic>>;

/// Open the NIC at `bdf` (`0000:01:00.0` or `01:00.0`) through VFIO, map all of
/// `mem` for DMA (IOVA = GPA), bring it up and wrap it in a shim. The driver
/// is chosen by PCI id (82576, 82574L or 82576 VF). Every host-setup problem
/// is reported before the NIC is touched.
///
/// The MAC ([`ShimBackend::mac`], what the guest must be given): a whole NIC
/// takes `mac` (a random one if `None`) as its unicast filter. An SR-IOV VF's
/// MAC is the one its PF assigned: `mac` must be that one (else
/// [`ShimError::MacMismatch`]), and `None` means the VF's.
pub fn open_vfio(bdf: &str, mem: &GuestMemory, mac: Option<[u8; 6]>) -> Result<VfioShim, ShimError> {
    let (nic, mac) = open_pnic(bdf, mem, mac, PnicOptions::default())?;
    ShimBackend::new(nic, mem, mac)
}

/// How the VMM opens a pNIC beyond its address and MAC: one value per
/// `--net`/API setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PnicOptions {
    /// What of guest RAM the IOMMU maps: all of it, or each buffer while the
    /// NIC owns it.
    pub dma: PnicDma,
    /// The guest's MTU: the NIC's frame cap follows it (MTU + Ethernet
    /// header); above 1500 frames span several buffers (the 82576; the
    /// 82574L and VFs take 1500 at most).
    pub mtu: u16,
}

impl Default for PnicOptions {
    fn default() -> Self {
        PnicOptions { dma: PnicDma::Ram, mtu: crate::e1000_common::ETH_MTU }
    }
}

/// [`open_vfio`] with `opts`, as the VMM's net device takes it: the backend
/// and the guest's MAC. In strict mode no guest RAM is mapped at open;
/// [`StrictDma`] maps each buffer while the NIC owns it.
pub fn open_vfio_backend(
    bdf: &str,
    mem: &GuestMemory,
    mac: Option<[u8; 6]>,
    opts: PnicOptions,
) -> Result<(Box<dyn NetBackend>, [u8; 6]), ShimError> {
    let (nic, mac) = open_pnic(bdf, mem, mac, opts)?;
    match opts.dma {
        PnicDma::Ram => Ok((Box::new(ShimBackend::new(nic, mem, mac)?), mac)),
        PnicDma::Strict => {
            let mapper = nic.dma_mapper();
            log::info!(
                "pNIC {bdf}: strict DMA: guest buffers are in the IOMMU only while the NIC owns them \
                 (a NIC write elsewhere is an IOMMU fault in the host's kernel log)"
            );
            let shim: StrictVfioShim = ShimBackend::new(StrictDma::new(nic, mapper, mem), mem, mac)?;
            Ok((Box::new(shim), mac))
        }
    }
}

/// The NIC at `bdf` opened with `opts`, and the guest's MAC (see
/// [`open_vfio`]).
fn open_pnic(
    bdf: &str,
    mem: &GuestMemory,
    mac: Option<[u8; 6]>,
    opts: PnicOptions,
) -> Result<(Pnic, [u8; 6]), ShimError> {
    let bdf: Bdf = bdf.parse()?;
    let wanted = mac.unwrap_or_else(virtio_devices::net::config::random_mac);
    let cfg = NicConfig { dma: opts.dma, mtu: opts.mtu, ..NicConfig::new(wanted) };
    let nic = Pnic::open_vfio(bdf, mem, cfg)?;
    let mac = pick_mac(bdf, nic.assigned_mac(), mac, wanted)?;
    Ok((nic, mac))
}

/// The guest's MAC: a VF's `assigned` one (which a `configured` one must
/// equal), else the `configured` one, else `random`.
pub(crate) fn pick_mac(
    bdf: Bdf,
    assigned: Option<[u8; 6]>,
    configured: Option<[u8; 6]>,
    random: [u8; 6],
) -> Result<[u8; 6], ShimError> {
    match (assigned, configured) {
        (Some(vf), Some(guest)) if vf != guest => Err(ShimError::MacMismatch { bdf, vf, guest }),
        (Some(vf), _) => Ok(vf),
        (None, Some(guest)) => Ok(guest),
        (None, None) => Ok(random),
    }
}

/// `aa:bb:cc:dd:ee:ff`.
fn fmt_mac(m: &[u8; 6]) -> String {
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", m[0], m[1], m[2], m[3], m[4], m[5])
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
        let multi = limits.rx_max_frame > limits.rx_max_write;
        let rx_area = driver.alloc_dma(limits.rx_capacity * BOUNCE_BUF_SIZE as usize)?;
        let tx_area = driver.alloc_dma(TX_BOUNCE_BUFS * BOUNCE_BUF_SIZE as usize)?;
        // A header slot per TX entry: at most one entry per frame on the NIC.
        let hdr_area = driver.alloc_dma((limits.tx_capacity + 1) * HDR_SLOT)?;
        driver.set_mac_filter(mac)?;
        let link = driver.link_up().unwrap_or(false);
        let irq_vectors = driver.irq_fds().len();
        Ok(ShimBackend {
            driver,
            mem: mem.clone(),
            ram: RamMap::new(mem),
            limits,
            mac,
            mac_word: wire::mac_word(&mac),
            // Heads are below the device's queue size; the table grows if not.
            rx: RxTable::with_capacity(usize::from(virtio_devices::net::device::QUEUE_SIZE)),
            rx_bounce: BouncePool::new(rx_area),
            rx_bounce_segs: vec![RxSegs::new(); limits.rx_capacity],
            zc_min_len: MIN_ZERO_COPY_BUF.max(limits.rx_max_write + HDR as u32),
            rx_off: if multi { 0 } else { HDR },
            multi,
            csum: false,
            rx_in_frag: false,
            rx_parts: Vec::new(),
            irq_vectors,
            tx: CookieSlab::with_capacity(limits.tx_capacity),
            tx_bounce: BouncePool::new(tx_area),
            tx_hdrs: HdrSlots::new(hdr_area),
            tx_nic_segs: Vec::with_capacity(virtio_devices::net::chain::MAX_CHAIN_DESCS + 1),
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
            dma_unstopped: false,
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

    /// The NIC failed (surprise removal, a broken invariant, a NIC that
    /// would not stop or reset): link down, and the VM keeps running. Once
    /// the NIC's DMA is stopped, everything it held goes back to the guest
    /// empty. If nothing proves it stopped (`DmaNotStopped`: stop, reset and
    /// function reset all failed; bus mastering is off), every buffer the
    /// NIC held stays held: not handed back, not forgotten, the bounce
    /// buffers never reused.
    fn fail(&mut self, why: &dyn std::fmt::Display) {
        self.metrics.nic_errors += 1;
        if self.failed {
            return;
        }
        log::error!("pNIC {} failed: {why}; link down, the VM keeps running", self.driver.name());
        self.failed = true;
        self.link = false;
        // Asked before the queues stop (which forgets them).
        let lent = self.lent_heads();
        // Parts of an unfinished frame: in `lent` (lent ones) or the table.
        self.rx_parts.clear();
        self.rx_in_frag = false;
        let stopped = self.driver.quiesce();
        self.started = false;
        self.rx_unflushed = false;
        self.tx_unflushed = false;
        // Frames still in the backlog never reached the NIC.
        for f in self.backlog.drain(..) {
            self.tx_returned.push((f.head, Some(DropReason::BackendError)));
            self.metrics.drop(DropReason::BackendError);
        }
        if let Err(e @ DriverError::DmaNotStopped(_)) = stopped {
            self.dma_unstopped = true;
            self.metrics.dma_held_buffers = (self.rx.len() + lent.len() + self.tx.len()) as u64;
            log::error!(
                "pNIC {}: {e}; holding the {} buffers it had (never handed back to the guest)",
                self.driver.name(),
                self.metrics.dma_held_buffers
            );
            return;
        }
        for head in self.rx.drain().into_iter().map(|(head, _)| head).chain(lent) {
            self.rx_returned.push(Used { head, len: 0 });
            self.metrics.drop(DropReason::BackendError);
        }
        for t in self.tx.drain() {
            self.tx_returned.push((t.head, Some(DropReason::BackendError)));
            self.metrics.drop(DropReason::BackendError);
        }
        self.rx_bounce.reset();
        self.tx_bounce.reset();
    }

    /// The NIC broke an invariant the shim relies on (e.g. it reported more
    /// bytes than it may write into a buffer): it is not trusted again.
    #[cold]
    fn fail_invariant(&mut self, what: std::fmt::Arguments<'_>) {
        self.metrics.nic_invariant_breaks += 1;
        self.fail(&what);
    }

    fn driver_err(&mut self, e: DriverError) {
        match e {
            DriverError::Removed | DriverError::Failed(_) | DriverError::DmaNotStopped(_) => self.fail(&e),
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

    fn refresh_link(&mut self) {
        match self.driver.link_up() {
            Ok(up) => self.link = up && !self.failed,
            Err(e) => self.driver_err(e),
        }
    }
}

impl<D: PnicDriver> NetBackend for ShimBackend<D> {
    /// MRG_RXBUF, and the TX offloads the NIC performs: CSUM, and with
    /// it HOST_TSO4/6 (not HOST_ECN: whether the NIC clears CWR after the
    /// first segment is not established; not HOST_UFO).
    fn features(&self) -> u64 {
        let caps = self.driver.tx_offload_caps();
        // GUEST_CSUM: the NIC checks TCP/UDP checksums on receive. No
        // GUEST_TSO*: the 82576 cannot coalesce received segments (no LRO).
        let mut f = VIRTIO_NET_F_MRG_RXBUF | F_GUEST_CSUM;
        if caps.csum {
            f |= F_CSUM;
            if caps.tso {
                f |= F_HOST_TSO4 | F_HOST_TSO6;
            }
        }
        f
    }

    fn set_features(&mut self, acked: u64) -> std::io::Result<()> {
        self.acked = acked;
        self.csum = acked & F_GUEST_CSUM != 0;
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
        match self.driver.quiesce() {
            Ok(()) => {}
            Err(e @ DriverError::DmaNotStopped(_)) => {
                // The guest reset its device and takes its memory back; all
                // the shim can still do is never reuse its own DMA memory.
                self.metrics.nic_errors += 1;
                self.dma_unstopped = true;
                log::error!("pNIC quiesce: {e}; the device reset proceeds without proof that DMA stopped");
            }
            Err(e) => {
                // The driver fell back to a full reset, which stopped DMA.
                self.metrics.nic_errors += 1;
                log::error!("pNIC quiesce: {e}");
            }
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
        self.rx_parts.clear();
        self.rx_in_frag = false;
        self.tx.clear();
        self.backlog.clear();
        self.rx_returned.clear();
        self.tx_returned.clear();
        if !self.dma_unstopped {
            self.rx_bounce.reset();
            self.tx_bounce.reset();
        }
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
            #[serde(skip_serializing_if = "Option::is_none")]
            strict_dma: Option<&'a StrictDmaMetrics>,
            /// The pNIC driver's queue-vector rate changes (igb, igbvf).
            #[serde(skip_serializing_if = "Option::is_none")]
            irq_rate_changes: Option<u64>,
        }
        let doc = Doc {
            pnic: self.driver.name(),
            link_up: self.link_up(),
            counters: &self.metrics,
            strict_dma: self.driver.strict_dma(),
            irq_rate_changes: self.driver.irq_rate_changes(),
        };
        // Integers and strings: cannot fail.
        serde_json::to_value(doc).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod offload_tests;
#[cfg(test)]
mod strict_tests;
#[cfg(test)]
mod teardown_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tx_offload_tests;
