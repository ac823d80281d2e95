//! What the Intel e1000-family drivers ([`crate::igb`], [`crate::e1000e`])
//! share: the common registers ([`regs`]), the descriptor rings ([`ring`]),
//! the one `PnicDriver` implementation ([`driver::E1000`]) and the small
//! register sequences every family member has. A new family is one new
//! module: its own `regs` (re-exporting [`regs`]), a [`ring::DescLayout`] and
//! a [`driver::Family`]; it does not copy the ring or driver logic.

pub mod driver;
pub mod moderation;
pub mod regs;
pub mod ring;
#[cfg(test)]
pub(crate) mod testutil;

use std::time::{Duration, Instant};

use crate::dma::{DmaArea, DmaMapper, IovaAllocator};
use crate::driver::{DriverError, RegisterAccess};
use crate::vfio::VfioError;
use regs::*;
use ring::{DescLayout, RxRing, TxRing};

/// What stops a NIC's DMA from outside the NIC, when its own registers do
/// not: PCI bus mastering and a function-level reset (VFIO on hardware, the
/// NIC model in tests).
pub trait PciControl: Send {
    fn set_bus_master(&self, on: bool) -> Result<(), String>;
    /// Function-level reset (`VFIO_DEVICE_RESET`); `Ok` only when the reset
    /// was performed. Leaves bus mastering off.
    fn function_reset(&self) -> Result<(), String>;
}

/// Bring-up options of an e1000-family NIC.
#[derive(Debug, Clone)]
pub struct NicConfig {
    pub mac: [u8; 6],
    /// How long bring-up waits for STATUS.LU after restarting
    /// autonegotiation (the link may still come up later; `link_up` tells).
    pub link_timeout: Duration,
    /// What of guest RAM the NIC's IOMMU domain maps at open: all of it, or
    /// nothing (strict: the shim maps each buffer's pages, `shim::strict`).
    pub dma: vmm_config::PnicDma,
    /// The guest's MTU: the NIC's frame cap is this plus the Ethernet
    /// header (and, on hardware, a VLAN tag), see [`RxGeometry`].
    pub mtu: u16,
}

impl NicConfig {
    pub fn new(mac: [u8; 6]) -> Self {
        NicConfig { mac, link_timeout: Duration::from_secs(3), dma: vmm_config::PnicDma::Ram, mtu: ETH_MTU }
    }
}

/// Ethernet's MTU: frames of one buffer each up to this.
pub const ETH_MTU: u16 = 1500;
/// Ethernet header and CRC: what a frame cap adds to the MTU.
pub const ETH_HLEN: u32 = 14;
pub const ETH_FCS_LEN: u32 = 4;
pub const VLAN_HLEN: u32 = 4;

/// How the NIC receives for one MTU: its frame cap and its per-descriptor
/// buffer size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxGeometry {
    /// The most bytes of one frame the NIC writes (CRC stripped).
    pub max_frame: u32,
    /// The NIC's buffer size per descriptor (82576: SRRCTL.BSIZEPACKET).
    pub buf_size: u32,
}

impl RxGeometry {
    /// The most the NIC writes into one buffer.
    pub fn max_write(&self) -> u32 {
        self.max_frame.min(self.buf_size)
    }

    /// Whether a frame may span several buffers.
    pub fn multi_buffer(&self) -> bool {
        self.max_frame > self.buf_size
    }
}

/// Errors of opening an e1000-family NIC through VFIO and bringing it up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Vfio(#[from] VfioError),
    /// `family` is the driver's name ("igb", "e1000e").
    #[error("{family} bring-up failed: {source}")]
    Driver { family: &'static str, source: DriverError },
}

const MDIC_TIMEOUT: Duration = Duration::from_millis(100);
const POLL_STEP: Duration = Duration::from_micros(100);
/// How long CTRL.RST takes before the first register read is meaningful.
const RESET_SETTLE: Duration = Duration::from_millis(2);
const RESET_TIMEOUT: Duration = Duration::from_millis(200);

/// Poll `f` every 100 µs until it holds or `timeout` passes (one last try then).
pub(crate) fn poll_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return f();
        }
        std::thread::sleep(POLL_STEP);
    }
}

/// Allocate `len` bytes of VMM DMA memory above guest RAM and map it for the NIC.
pub(crate) fn alloc_dma(mapper: &dyn DmaMapper, iova: &mut IovaAllocator, len: usize) -> Result<DmaArea, DriverError> {
    let at = iova.alloc(len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
    let area = DmaArea::new(at, len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
    mapper.map(area.mem()).map_err(DriverError::DmaMap)?;
    Ok(area)
}

/// Read `off`; STATUS/CTRL never read as all ones on a live NIC, so that
/// value marks it `removed` and is an error.
pub(crate) fn read_checked(regs: &impl RegisterAccess, removed: &mut bool, off: u32) -> Result<u32, DriverError> {
    let v = regs.read32(off);
    if v == u32::MAX && (off == STATUS || off == CTRL) {
        *removed = true;
        return Err(DriverError::Removed);
    }
    Ok(v)
}

/// Fail if the NIC was seen gone, or is gone now.
pub(crate) fn check_alive(regs: &impl RegisterAccess, removed: &mut bool) -> Result<(), DriverError> {
    if *removed {
        return Err(DriverError::Removed);
    }
    read_checked(regs, removed, STATUS).map(|_| ())
}

/// Global reset through CTRL.RST and wait for it to self-clear.
pub(crate) fn global_reset(regs: &impl RegisterAccess, removed: &mut bool) -> Result<(), DriverError> {
    let ctrl = read_checked(regs, removed, CTRL)?;
    regs.write32(CTRL, ctrl | CTRL_RST);
    std::thread::sleep(RESET_SETTLE);
    if !poll_until(RESET_TIMEOUT, || regs.read32(CTRL) & CTRL_RST == 0) {
        return Err(DriverError::Timeout("CTRL.RST to clear after reset"));
    }
    check_alive(regs, removed)
}

/// Last act before the driver forgets the NIC: a reset (unless it is gone),
/// so it is idle before the IOMMU mappings go away.
pub(crate) fn reset_on_drop(regs: &impl RegisterAccess) {
    let ctrl = regs.read32(CTRL);
    if ctrl != u32::MAX {
        regs.write32(CTRL, ctrl | CTRL_RST);
        std::thread::sleep(RESET_SETTLE);
    }
}

/// Write PHY register `reg` through MDIC and wait for the PHY's answer.
pub(crate) fn mdic_write(regs: &impl RegisterAccess, reg: u32, value: u32) -> Result<(), DriverError> {
    let cmd = (value & MDIC_DATA_MASK) | (reg << MDIC_REG_SHIFT) | (PHY_ADDR << MDIC_PHY_SHIFT) | MDIC_OP_WRITE;
    regs.write32(MDIC, cmd);
    let mut last = 0;
    if !poll_until(MDIC_TIMEOUT, || {
        last = regs.read32(MDIC);
        last & MDIC_READY != 0
    }) {
        return Err(DriverError::Timeout("MDIC ready (PHY write)"));
    }
    if last & MDIC_ERROR != 0 {
        return Err(DriverError::Timeout("MDIC without error (PHY did not answer)"));
    }
    Ok(())
}

/// Program the receive filter: unicast to `mac` only (receive address 0,
/// all other entries and the multicast table cleared); broadcast and all
/// multicast accepted.
pub(crate) fn write_mac_filter(regs: &impl RegisterAccess, mac: [u8; 6]) {
    regs.write32(RAL0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
    regs.write32(RAH0, u32::from(u16::from_le_bytes([mac[4], mac[5]])) | RAH_AV);
    for i in 1..RA_ENTRIES {
        regs.write32(RAL0 + 8 * i, 0);
        regs.write32(RAH0 + 8 * i, 0);
    }
    for i in 0..MTA_ENTRIES {
        regs.write32(MTA + 4 * i, 0);
    }
    let rctl = regs.read32(RCTL);
    regs.write32(RCTL, (rctl & !RCTL_UPE) | RCTL_BAM | RCTL_MPE);
}

/// TCTL value that starts transmission: pad short packets, collision
/// threshold 15, collision distance 63 (full duplex).
pub(crate) const TCTL_START: u32 = TCTL_EN | TCTL_PSP | (0x0f << TCTL_CT_SHIFT) | (0x3f << TCTL_COLD_SHIFT);

/// Point queue 0's descriptor base/length registers at the rings and zero
/// head and tail.
pub(crate) fn program_rings<L: DescLayout>(regs: &impl RegisterAccess, rx: &RxRing<L>, tx: &TxRing<L>) {
    let (rx_at, tx_at) = (rx.area().iova(), tx.area().iova());
    regs.write32(RDBAL0, rx_at as u32);
    regs.write32(RDBAH0, (rx_at >> 32) as u32);
    regs.write32(RDLEN0, rx.bytes());
    regs.write32(TDBAL0, tx_at as u32);
    regs.write32(TDBAH0, (tx_at >> 32) as u32);
    regs.write32(TDLEN0, tx.bytes());
    zero_heads_and_tails(regs);
}

/// RDH/RDT/TDH/TDT = 0: both rings empty from the NIC's point of view.
pub(crate) fn zero_heads_and_tails(regs: &impl RegisterAccess) {
    for r in [RDH0, RDT0, TDH0, TDT0] {
        regs.write32(r, 0);
    }
}
