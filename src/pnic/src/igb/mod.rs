//! User-space driver for the Intel 82576 (igb, 8086:10c9): one RX and one TX
//! queue with advanced descriptors.
//!
//! Safety argument for the zero-copy shim: the NIC is programmed with a 2 KiB
//! packet buffer size but RCTL.LPE + RLPML cap every accepted frame at
//! [`RX_MAX_FRAME`] bytes, and CRC stripping is on, so the NIC never writes more
//! than `RX_MAX_FRAME` bytes at a posted address. Interrupts are wakeups only:
//! completions are found by polling the descriptors' DD bits.

pub mod regs;

use std::os::unix::io::RawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vm_memory::GuestMemoryMmap;

use crate::bdf::Bdf;
use crate::dma::{DmaArea, DmaMapper, IovaAllocator};
use crate::driver::{
    DriverError, DriverLimits, PnicDriver, RegisterAccess, RxCompletion, TxCompletion,
};
use crate::e1000_common::ring::{DescLayout, RxRing, TxRing};
use crate::e1000_common::{self as common, poll_until};
use crate::vfio::{MmioRegs, VfioError, VfioNic};
use regs::*;

/// RX descriptors in the ring (ring bytes must be a multiple of 128).
pub const RX_RING_SIZE: usize = 256;
pub const TX_RING_SIZE: usize = 256;
/// Frame cap programmed in RLPML: an Ethernet frame with one VLAN tag and
/// without CRC (1514 + 4) plus slack for a CRC counted by RLPML; the most the NIC
/// writes into one RX buffer.
pub const RX_MAX_FRAME: u32 = 1522;
/// NIC packet buffer size (SRRCTL.BSIZEPACKET), in bytes.
pub const RX_BUF_SIZE: u32 = 2048;
/// Largest frame we ask the NIC to transmit (no TSO on the shim path).
pub const TX_MAX_FRAME: u32 = 1522;
pub const TX_MAX_SEGS: usize = 8;
/// Per-descriptor buffer length limit (DTALEN is 16 bits).
pub use crate::e1000_common::ring::TX_MAX_SEG_LEN;

const QUEUE_TIMEOUT: Duration = Duration::from_millis(200);

/// Bring-up options.
#[derive(Debug, Clone)]
pub struct IgbConfig {
    pub mac: [u8; 6],
    /// How long `new` waits for STATUS.LU after restarting autonegotiation
    /// (the link may still come up later; `link_up` tells).
    pub link_timeout: Duration,
}

impl IgbConfig {
    pub fn new(mac: [u8; 6]) -> Self {
        IgbConfig {
            mac,
            link_timeout: Duration::from_secs(3),
        }
    }
}

/// The 82576's advanced descriptors: RX write-back status/errors at byte 8,
/// length at 12; TX data descriptors carry DTYP/DEXT and the frame's PAYLEN.
pub struct AdvancedDesc;

impl DescLayout for AdvancedDesc {
    const RXD_STATUS_OFF: u64 = RXD_STATUS_OFF;
    const RXD_LEN_OFF: u64 = RXD_LEN_OFF;
    const RXD_ERR_FRAME: u32 = RXD_ERR_FRAME;
    fn tx_words(len: u32, last: bool, frame_len: u32) -> [u32; 2] {
        let mut cmd = len | TXD_DTYP_DATA | TXD_CMD_DEXT | TXD_CMD_IFCS;
        if last {
            cmd |= TXD_CMD_EOP | TXD_CMD_RS;
        }
        [cmd, frame_len << TXD_PAYLEN_SHIFT]
    }
}

/// The 82576 driver over any register access.
pub struct Igb<R: RegisterAccess> {
    regs: R,
    rx_ring: RxRing<AdvancedDesc>,
    tx_ring: TxRing<AdvancedDesc>,
    mac: [u8; 6],
    started: bool,
    removed: bool,
    msix_vectors: usize,
    mapper: Arc<dyn DmaMapper>,
    iova: IovaAllocator,
    /// The VFIO handle when running on hardware; dropped last.
    nic: Option<VfioNic>,
}

/// Errors of opening and bringing up an igb through VFIO.
#[derive(Debug, thiserror::Error)]
pub enum IgbOpenError {
    #[error(transparent)]
    Vfio(#[from] VfioError),
    #[error("igb bring-up failed: {0}")]
    Driver(#[from] DriverError),
}

/// Open `bdf` through VFIO, map `guest` for DMA and bring the 82576 up with
/// `mac` as its only unicast address.
pub fn open_vfio(bdf: Bdf, guest: &GuestMemoryMmap, cfg: IgbConfig) -> Result<Igb<MmioRegs>, IgbOpenError> {
    let mut nic = VfioNic::open(bdf, guest)?;
    nic.device_reset()?;
    let vectors = nic.enable_msix(2)?;
    let regs = nic.regs();
    let mapper = nic.dma_mapper();
    let iova = IovaAllocator::above(guest);
    let mut igb = Igb::new(regs, mapper, iova, cfg, vectors)?;
    igb.nic = Some(nic);
    Ok(igb)
}

impl<R: RegisterAccess> Igb<R> {
    /// Reset and initialise the NIC; queues stay stopped until `start`.
    /// `msix_vectors` is how many MSI-X vectors are wired to eventfds.
    pub fn new(
        regs: R,
        mapper: Arc<dyn DmaMapper>,
        mut iova: IovaAllocator,
        cfg: IgbConfig,
        msix_vectors: usize,
    ) -> Result<Self, DriverError> {
        let desc = DESC_SIZE as usize;
        let rx = common::alloc_dma(mapper.as_ref(), &mut iova, RX_RING_SIZE * desc)?;
        let tx = common::alloc_dma(mapper.as_ref(), &mut iova, TX_RING_SIZE * desc)?;
        let mut igb = Igb {
            regs,
            rx_ring: RxRing::new(rx, RX_RING_SIZE, RX_MAX_FRAME),
            tx_ring: TxRing::new(tx, TX_RING_SIZE, TX_MAX_FRAME, TX_MAX_SEGS),
            mac: cfg.mac,
            started: false,
            removed: false,
            msix_vectors,
            mapper,
            iova,
            nic: None,
        };
        igb.init_hw()?;
        if !poll_until(cfg.link_timeout, || igb.regs.read32(STATUS) & STATUS_LU != 0) {
            log::warn!("igb: link still down after {:?}; frames flow once it comes up", cfg.link_timeout);
        }
        Ok(igb)
    }

    fn read(&mut self, off: u32) -> Result<u32, DriverError> {
        common::read_checked(&self.regs, &mut self.removed, off)
    }

    fn check_alive(&mut self) -> Result<(), DriverError> {
        common::check_alive(&self.regs, &mut self.removed)
    }

    fn mask_irqs(&self) {
        self.regs.write32(EIMC, u32::MAX);
        self.regs.write32(IMC, u32::MAX);
    }

    /// Global reset and the static configuration (everything but queue enable).
    fn init_hw(&mut self) -> Result<(), DriverError> {
        self.mask_irqs();
        common::global_reset(&self.regs, &mut self.removed)?;
        self.mask_irqs();
        let ext = self.regs.read32(CTRL_EXT);
        self.regs.write32(CTRL_EXT, ext | CTRL_EXT_DRV_LOAD);
        let ctrl = self.read(CTRL)?;
        self.regs.write32(CTRL, ctrl | CTRL_SLU | CTRL_FD);
        // QEMU's igb (and a PHY after FLR) keeps the link down until
        // autonegotiation is restarted.
        common::mdic_write(&self.regs, PHY_CTRL, PHY_CTRL_AUTONEG_RESTART)?;

        // Both queues stopped; descriptor rings, buffer size, frame cap.
        self.regs.write32(RCTL, 0);
        self.regs.write32(RXDCTL0, 0);
        self.regs.write32(TCTL, 0);
        self.regs.write32(TXDCTL0, 0);
        common::program_rings(&self.regs, &self.rx_ring, &self.tx_ring);
        self.regs.write32(
            SRRCTL0,
            ((RX_BUF_SIZE / SRRCTL_BSIZEPKT_UNIT) << SRRCTL_BSIZEPKT_SHIFT)
                | SRRCTL_DESCTYPE_ADV_ONEBUF
                | SRRCTL_DROP_EN,
        );
        self.regs.write32(RLPML, RX_MAX_FRAME);

        let mac = self.mac;
        self.set_mac_filter(mac)?;

        // MSI-X: vector 0 = RX0 + TX0, vector 1 = other causes (link).
        if self.msix_vectors > 0 {
            self.regs
                .write32(GPIE, GPIE_NSICR | GPIE_MULTIPLE_MSIX | GPIE_EIAME | GPIE_PBA);
            self.regs.write32(
                IVAR0,
                IVAR_VALID | ((IVAR_VALID) << IVAR_TX_SHIFT),
            );
            let mut mask = 1u32;
            if self.msix_vectors > 1 {
                self.regs
                    .write32(IVAR_MISC, (IVAR_VALID | 1) << IVAR_MISC_OTHER_SHIFT);
                mask |= 1 << 1;
                self.regs.write32(IMS, ICR_LSC);
            }
            self.regs.write32(EIAC, mask);
            self.regs.write32(EIAM, 0);
            self.regs.write32(EITR0, 0);
            self.regs.write32(EIMS, mask);
        }
        self.reset_ring_state();
        self.started = false;
        Ok(())
    }

    fn reset_ring_state(&mut self) {
        self.rx_ring.reset();
        self.tx_ring.reset();
    }

    fn enable_queue(&mut self, reg: u32, bit: u32, what: &'static str) -> Result<(), DriverError> {
        let v = self.regs.read32(reg);
        self.regs.write32(reg, v | bit);
        if !poll_until(QUEUE_TIMEOUT, || self.regs.read32(reg) & bit != 0) {
            return Err(DriverError::Timeout(what));
        }
        Ok(())
    }

    fn disable_queue(&mut self, reg: u32, bit: u32, what: &'static str) -> Result<(), DriverError> {
        let v = self.regs.read32(reg);
        self.regs.write32(reg, v & !bit);
        if !poll_until(QUEUE_TIMEOUT, || self.regs.read32(reg) & bit == 0) {
            return Err(DriverError::Timeout(what));
        }
        Ok(())
    }

    /// Posting needs running queues and a NIC that is still there.
    fn check_postable(&self) -> Result<(), DriverError> {
        if !self.started {
            return Err(DriverError::Stopped);
        }
        if self.removed {
            return Err(DriverError::Removed);
        }
        Ok(())
    }

    /// The register accessor (tests and diagnostics).
    pub fn regs(&self) -> &R {
        &self.regs
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }
}

impl<R: RegisterAccess> PnicDriver for Igb<R> {
    fn name(&self) -> &'static str {
        "igb"
    }

    fn limits(&self) -> DriverLimits {
        DriverLimits {
            rx_capacity: RX_RING_SIZE - 1,
            tx_capacity: TX_RING_SIZE - 1,
            rx_max_write: RX_MAX_FRAME,
            rx_align: 2,
            tx_max_frame: TX_MAX_FRAME,
            tx_max_segs: TX_MAX_SEGS,
        }
    }

    fn start(&mut self) -> Result<(), DriverError> {
        if self.started {
            return Ok(());
        }
        self.check_alive()?;
        common::zero_heads_and_tails(&self.regs);
        self.enable_queue(RXDCTL0, RXDCTL_ENABLE, "RXDCTL.ENABLE to read back set")?;
        self.enable_queue(TXDCTL0, TXDCTL_ENABLE, "TXDCTL.ENABLE to read back set")?;
        let rctl = self.regs.read32(RCTL);
        self.regs
            .write32(RCTL, rctl | RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_LPE | RCTL_MPE);
        self.regs.write32(TCTL, common::TCTL_START);
        self.started = true;
        Ok(())
    }

    fn rx_free(&self) -> usize {
        if self.started { self.rx_ring.free() } else { 0 }
    }

    fn post_rx(&mut self, iova: u64, len: u32, cookie: u64) -> Result<(), DriverError> {
        self.check_postable()?;
        self.rx_ring.post(iova, len, cookie)
    }

    fn flush_rx(&mut self) -> Result<(), DriverError> {
        if !self.started {
            return Ok(());
        }
        // Descriptors must be in memory before the NIC sees the new tail.
        fence(Ordering::Release);
        self.regs.write32(RDT0, self.rx_ring.tail());
        Ok(())
    }

    fn reap_rx(&mut self, out: &mut Vec<RxCompletion>) -> Result<(), DriverError> {
        self.rx_ring.reap(out)
    }

    fn tx_free(&self) -> usize {
        if self.started { self.tx_ring.free() } else { 0 }
    }

    fn post_tx(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<(), DriverError> {
        self.check_postable()?;
        self.tx_ring.post(segs, cookie)?;
        fence(Ordering::Release);
        self.regs.write32(TDT0, self.tx_ring.tail());
        Ok(())
    }

    fn reap_tx(&mut self, out: &mut Vec<TxCompletion>) -> Result<(), DriverError> {
        self.tx_ring.reap(out)
    }

    fn link_up(&mut self) -> Result<bool, DriverError> {
        if self.removed {
            return Err(DriverError::Removed);
        }
        Ok(self.read(STATUS)? & STATUS_LU != 0)
    }

    fn set_mac_filter(&mut self, mac: [u8; 6]) -> Result<(), DriverError> {
        self.mac = mac;
        common::write_mac_filter(&self.regs, mac);
        Ok(())
    }

    fn quiesce(&mut self) -> Result<(), DriverError> {
        let rctl = self.regs.read32(RCTL);
        self.regs.write32(RCTL, rctl & !RCTL_EN);
        let r1 = self.disable_queue(RXDCTL0, RXDCTL_ENABLE, "RXDCTL.ENABLE to read back clear");
        let r2 = self.disable_queue(TXDCTL0, TXDCTL_ENABLE, "TXDCTL.ENABLE to read back clear");
        let tctl = self.regs.read32(TCTL);
        self.regs.write32(TCTL, tctl & !TCTL_EN);
        self.started = false;
        self.reset_ring_state();
        match (r1, r2) {
            (Err(e), _) | (_, Err(e)) => {
                // The queue did not confirm it stopped: a full reset stops all
                // DMA (and bus mastering goes off if that fails too).
                log::error!("igb quiesce: {e}; resetting the NIC");
                self.reset()?;
                Err(e)
            }
            _ => Ok(()),
        }
    }

    fn reset(&mut self) -> Result<(), DriverError> {
        self.started = false;
        // Belt and braces: no DMA while the function resets.
        let nic = self.nic.take();
        let r = common::with_bus_master_off(nic.as_ref(), || self.init_hw());
        self.nic = nic;
        r
    }

    fn irq_fds(&self) -> Vec<RawFd> {
        self.nic.as_ref().map(|n| n.raw_irq_fds()).unwrap_or_default()
    }

    fn handle_irq(&mut self, index: usize) -> Result<(), DriverError> {
        common::drain_irq_fd(self.nic.as_ref(), index);
        // Vector 0 (queues): EIAC already cleared the cause; one read tells a
        // live NIC from a vanished one. Vector 1: read ICR for the link cause.
        let eicr = self.regs.read32(EICR);
        let icr = if index > 0 || self.msix_vectors < 2 { self.regs.read32(ICR) } else { 0 };
        if eicr == u32::MAX {
            self.check_alive()?;
        }
        if icr & ICR_LSC != 0 {
            log::info!("igb: link changed, now {}", if self.regs.read32(STATUS) & STATUS_LU != 0 { "up" } else { "down" });
        }
        Ok(())
    }

    fn alloc_dma(&mut self, len: usize) -> Result<DmaArea, DriverError> {
        common::alloc_dma(self.mapper.as_ref(), &mut self.iova, len)
    }
}

impl<R: RegisterAccess> Drop for Igb<R> {
    fn drop(&mut self) {
        // Stop DMA into buffers we are about to forget; then reset so the NIC
        // is idle before the IOMMU mappings go away (VfioNic's drop).
        if !self.removed {
            let _ = self.quiesce();
            self.mask_irqs();
            common::reset_on_drop(&self.regs);
        }
    }
}

#[cfg(test)]
mod tests;
