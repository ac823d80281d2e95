//! User-space driver for the Intel 82574L (e1000e, 8086:10d3): one RX and one
//! TX queue with legacy descriptors.
//!
//! The 82574L has no per-queue frame cap register: with RCTL.LPE clear the NIC
//! drops frames over 1522 bytes, and RCTL.BSIZE = 2048 bytes. So, like the
//! igb, it never writes more than [`RX_MAX_FRAME`] bytes at a posted address.
//! It has no queue-enable bit to read back either: quiesce clears RCTL/TCTL.EN
//! and then waits for the GIO master to go idle (CTRL.GIO_MASTER_DISABLE,
//! STATUS.GIO_MASTER_EN), which is the datasheet's "no DMA in flight".

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
use crate::igb::{IgbConfig as NicConfig, IgbOpenError as OpenError};
use crate::vfio::{MmioRegs, VfioNic};
use regs::*;

pub const RX_RING_SIZE: usize = 256;
pub const TX_RING_SIZE: usize = 256;
/// Largest frame the NIC accepts with RCTL.LPE clear (1518 + VLAN tag).
pub const RX_MAX_FRAME: u32 = 1522;
pub const TX_MAX_FRAME: u32 = 1522;
pub const TX_MAX_SEGS: usize = 8;

const MASTER_TIMEOUT: Duration = Duration::from_millis(200);

/// The 82574L's legacy descriptors: RX length at byte 8, status at 12 with
/// the errors byte above it; TX command byte in the word at 8, no PAYLEN.
pub struct LegacyDesc;

impl DescLayout for LegacyDesc {
    const RXD_STATUS_OFF: u64 = RXD_STATUS_OFF;
    const RXD_LEN_OFF: u64 = RXD_LEN_OFF;
    const RXD_ERR_FRAME: u32 = RXD_ERR_FRAME;
    fn tx_words(len: u32, last: bool, _frame_len: u32) -> [u32; 2] {
        let mut cmd = len | TXD_CMD_IFCS;
        if last {
            cmd |= TXD_CMD_EOP | TXD_CMD_RS;
        }
        // The word at TXD_CMD_OFF, then status (cleared) and special.
        [cmd, 0]
    }
}

/// The 82574L driver over any register access.
pub struct E1000e<R: RegisterAccess> {
    regs: R,
    rx_ring: RxRing<LegacyDesc>,
    tx_ring: TxRing<LegacyDesc>,
    mac: [u8; 6],
    started: bool,
    removed: bool,
    msix_vectors: usize,
    mapper: Arc<dyn DmaMapper>,
    iova: IovaAllocator,
    nic: Option<VfioNic>,
}

/// Open `bdf` through VFIO, map `guest` and bring the 82574L up.
pub fn open_vfio(bdf: Bdf, guest: &GuestMemoryMmap, cfg: NicConfig) -> Result<E1000e<MmioRegs>, OpenError> {
    let mut nic = VfioNic::open(bdf, guest)?;
    nic.device_reset()?;
    let vectors = nic.enable_msix(2)?;
    let mut d = E1000e::new(nic.regs(), nic.dma_mapper(), IovaAllocator::above(guest), cfg, vectors)?;
    d.nic = Some(nic);
    Ok(d)
}

impl<R: RegisterAccess> E1000e<R> {
    pub fn new(
        regs: R,
        mapper: Arc<dyn DmaMapper>,
        mut iova: IovaAllocator,
        cfg: NicConfig,
        msix_vectors: usize,
    ) -> Result<Self, DriverError> {
        let desc = DESC_SIZE as usize;
        let rx = common::alloc_dma(mapper.as_ref(), &mut iova, RX_RING_SIZE * desc)?;
        let tx = common::alloc_dma(mapper.as_ref(), &mut iova, TX_RING_SIZE * desc)?;
        let mut d = E1000e {
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
        d.init_hw()?;
        if !poll_until(cfg.link_timeout, || d.regs.read32(STATUS) & STATUS_LU != 0) {
            log::warn!("e1000e: link still down after {:?}", cfg.link_timeout);
        }
        Ok(d)
    }

    fn read(&mut self, off: u32) -> Result<u32, DriverError> {
        common::read_checked(&self.regs, &mut self.removed, off)
    }

    fn check_alive(&mut self) -> Result<(), DriverError> {
        common::check_alive(&self.regs, &mut self.removed)
    }

    fn mask_irqs(&self) {
        self.regs.write32(IMC, u32::MAX);
    }

    fn init_hw(&mut self) -> Result<(), DriverError> {
        self.mask_irqs();
        common::global_reset(&self.regs, &mut self.removed)?;
        self.mask_irqs();
        let _ = self.regs.read32(ICR);
        let ext = self.regs.read32(CTRL_EXT);
        self.regs.write32(CTRL_EXT, ext | CTRL_EXT_DRV_LOAD | CTRL_EXT_PBA_SUPPORT);
        let ctrl = self.read(CTRL)?;
        self.regs
            .write32(CTRL, (ctrl | CTRL_SLU | CTRL_FD) & !CTRL_GIO_MASTER_DISABLE);
        common::mdic_write(&self.regs, PHY_CTRL, PHY_CTRL_AUTONEG_RESTART)?;

        self.regs.write32(RCTL, 0);
        self.regs.write32(TCTL, 0);
        // Legacy RX descriptors.
        let rfctl = self.regs.read32(RFCTL);
        self.regs.write32(RFCTL, rfctl & !RFCTL_EXTEN);
        common::program_rings(&self.regs, &self.rx_ring, &self.tx_ring);
        self.regs.write32(TIPG, TIPG_DEFAULT);
        let mac = self.mac;
        self.set_mac_filter(mac)?;
        if self.msix_vectors > 0 {
            let other = if self.msix_vectors > 1 { 1 } else { 0 };
            self.regs.write32(
                IVAR,
                (IVAR_VALID << IVAR_RXQ0_SHIFT)
                    | (IVAR_VALID << IVAR_TXQ0_SHIFT)
                    | ((IVAR_VALID | other) << IVAR_OTHER_SHIFT),
            );
            self.regs.write32(EIAC, ICR_RXQ0 | ICR_TXQ0 | ICR_OTHER);
            self.regs.write32(ITR, 0);
            self.regs.write32(IMS, ICR_RXQ0 | ICR_TXQ0 | ICR_OTHER | ICR_LSC);
        }
        self.reset_ring_state();
        self.started = false;
        Ok(())
    }

    fn reset_ring_state(&mut self) {
        self.rx_ring.reset();
        self.tx_ring.reset();
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

    pub fn regs(&self) -> &R {
        &self.regs
    }
}

impl<R: RegisterAccess> PnicDriver for E1000e<R> {
    fn name(&self) -> &'static str {
        "e1000e"
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
        let ctrl = self.regs.read32(CTRL);
        self.regs.write32(CTRL, ctrl & !CTRL_GIO_MASTER_DISABLE);
        common::zero_heads_and_tails(&self.regs);
        let rctl = self.regs.read32(RCTL) & !(RCTL_BSIZE_MASK | RCTL_BSEX | RCTL_LPE | RCTL_UPE);
        self.regs.write32(RCTL, rctl | RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_MPE);
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
        let tctl = self.regs.read32(TCTL);
        self.regs.write32(TCTL, tctl & !TCTL_EN);
        let ctrl = self.regs.read32(CTRL);
        self.regs.write32(CTRL, ctrl | CTRL_GIO_MASTER_DISABLE);
        let idle = poll_until(MASTER_TIMEOUT, || self.regs.read32(STATUS) & STATUS_GIO_MASTER_EN == 0);
        self.started = false;
        self.reset_ring_state();
        if !idle {
            log::error!("e1000e quiesce: GIO master did not go idle; resetting the NIC");
            self.reset()?;
            return Err(DriverError::Timeout("STATUS.GIO_MASTER_EN to clear"));
        }
        Ok(())
    }

    fn reset(&mut self) -> Result<(), DriverError> {
        self.started = false;
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
        let icr = self.regs.read32(ICR);
        if icr == u32::MAX {
            self.check_alive()?;
        }
        Ok(())
    }

    fn alloc_dma(&mut self, len: usize) -> Result<DmaArea, DriverError> {
        common::alloc_dma(self.mapper.as_ref(), &mut self.iova, len)
    }
}

impl<R: RegisterAccess> Drop for E1000e<R> {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.quiesce();
            self.mask_irqs();
            common::reset_on_drop(&self.regs);
        }
    }
}

#[cfg(test)]
mod tests;
