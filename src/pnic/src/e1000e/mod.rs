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

use std::collections::VecDeque;
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
use crate::igb::{poll_until, IgbConfig as NicConfig, IgbOpenError as OpenError};
use crate::vfio::{MmioRegs, VfioNic};
use regs::*;

pub const RX_RING_SIZE: usize = 256;
pub const TX_RING_SIZE: usize = 256;
/// Largest frame the NIC accepts with RCTL.LPE clear (1518 + VLAN tag).
pub const RX_MAX_FRAME: u32 = 1522;
pub const TX_MAX_FRAME: u32 = 1522;
pub const TX_MAX_SEGS: usize = 8;

const RESET_TIMEOUT: Duration = Duration::from_millis(200);
const MASTER_TIMEOUT: Duration = Duration::from_millis(200);
const MDIC_TIMEOUT: Duration = Duration::from_millis(100);

#[derive(Debug, Clone, Copy)]
struct TxInFlight {
    last: usize,
    ndesc: usize,
    cookie: u64,
}

/// The 82574L driver over any register access.
pub struct E1000e<R: RegisterAccess> {
    regs: R,
    rx_ring: DmaArea,
    tx_ring: DmaArea,
    rx_cookies: Vec<Option<u64>>,
    rx_head: usize,
    rx_tail: usize,
    rx_count: usize,
    rx_in_fragment: bool,
    tx_tail: usize,
    tx_used: usize,
    tx_inflight: VecDeque<TxInFlight>,
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
        let ring = |iova: &mut IovaAllocator, n: usize| -> Result<DmaArea, DriverError> {
            let len = n * DESC_SIZE as usize;
            let at = iova.alloc(len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
            let area = DmaArea::new(at, len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
            mapper.map(area.mem()).map_err(DriverError::DmaMap)?;
            Ok(area)
        };
        let rx_ring = ring(&mut iova, RX_RING_SIZE)?;
        let tx_ring = ring(&mut iova, TX_RING_SIZE)?;
        let mut d = E1000e {
            regs,
            rx_ring,
            tx_ring,
            rx_cookies: vec![None; RX_RING_SIZE],
            rx_head: 0,
            rx_tail: 0,
            rx_count: 0,
            rx_in_fragment: false,
            tx_tail: 0,
            tx_used: 0,
            tx_inflight: VecDeque::new(),
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
        let v = self.regs.read32(off);
        if v == u32::MAX && (off == STATUS || off == CTRL) {
            self.removed = true;
            return Err(DriverError::Removed);
        }
        Ok(v)
    }

    fn check_alive(&mut self) -> Result<(), DriverError> {
        if self.removed {
            return Err(DriverError::Removed);
        }
        self.read(STATUS).map(|_| ())
    }

    fn mask_irqs(&self) {
        self.regs.write32(IMC, u32::MAX);
    }

    fn mdic_write(&mut self, reg: u32, value: u32) -> Result<(), DriverError> {
        let cmd = (value & MDIC_DATA_MASK) | (reg << MDIC_REG_SHIFT) | (PHY_ADDR << MDIC_PHY_SHIFT) | MDIC_OP_WRITE;
        self.regs.write32(MDIC, cmd);
        let mut last = 0;
        if !poll_until(MDIC_TIMEOUT, || {
            last = self.regs.read32(MDIC);
            last & MDIC_READY != 0
        }) {
            return Err(DriverError::Timeout("MDIC ready (PHY write)"));
        }
        if last & MDIC_ERROR != 0 {
            return Err(DriverError::Timeout("MDIC without error (PHY did not answer)"));
        }
        Ok(())
    }

    fn init_hw(&mut self) -> Result<(), DriverError> {
        self.mask_irqs();
        let ctrl = self.read(CTRL)?;
        self.regs.write32(CTRL, ctrl | CTRL_RST);
        std::thread::sleep(Duration::from_millis(2));
        if !poll_until(RESET_TIMEOUT, || self.regs.read32(CTRL) & CTRL_RST == 0) {
            return Err(DriverError::Timeout("CTRL.RST to clear after reset"));
        }
        self.check_alive()?;
        self.mask_irqs();
        let _ = self.regs.read32(ICR);
        let ext = self.regs.read32(CTRL_EXT);
        self.regs.write32(CTRL_EXT, ext | CTRL_EXT_DRV_LOAD | CTRL_EXT_PBA_SUPPORT);
        let ctrl = self.read(CTRL)?;
        self.regs
            .write32(CTRL, (ctrl | CTRL_SLU | CTRL_FD) & !CTRL_GIO_MASTER_DISABLE);
        self.mdic_write(PHY_CTRL, PHY_CTRL_AUTONEG_RESTART)?;

        self.regs.write32(RCTL, 0);
        self.regs.write32(TCTL, 0);
        // Legacy RX descriptors.
        let rfctl = self.regs.read32(RFCTL);
        self.regs.write32(RFCTL, rfctl & !RFCTL_EXTEN);
        let rx = self.rx_ring.iova();
        self.regs.write32(RDBAL0, rx as u32);
        self.regs.write32(RDBAH0, (rx >> 32) as u32);
        self.regs.write32(RDLEN0, (RX_RING_SIZE as u64 * DESC_SIZE) as u32);
        self.regs.write32(RDH0, 0);
        self.regs.write32(RDT0, 0);
        let tx = self.tx_ring.iova();
        self.regs.write32(TDBAL0, tx as u32);
        self.regs.write32(TDBAH0, (tx >> 32) as u32);
        self.regs.write32(TDLEN0, (TX_RING_SIZE as u64 * DESC_SIZE) as u32);
        self.regs.write32(TDH0, 0);
        self.regs.write32(TDT0, 0);
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
        self.rx_cookies.iter_mut().for_each(|c| *c = None);
        self.rx_head = 0;
        self.rx_tail = 0;
        self.rx_count = 0;
        self.rx_in_fragment = false;
        self.tx_tail = 0;
        self.tx_used = 0;
        self.tx_inflight.clear();
        let zero = vec![0u8; self.rx_ring.len()];
        let _ = self.rx_ring.write(0, &zero);
        let zero = vec![0u8; self.tx_ring.len()];
        let _ = self.tx_ring.write(0, &zero);
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
        self.regs.write32(RDH0, 0);
        self.regs.write32(RDT0, 0);
        self.regs.write32(TDH0, 0);
        self.regs.write32(TDT0, 0);
        let rctl = self.regs.read32(RCTL) & !(RCTL_BSIZE_MASK | RCTL_BSEX | RCTL_LPE | RCTL_UPE);
        self.regs.write32(RCTL, rctl | RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_MPE);
        self.regs
            .write32(TCTL, TCTL_EN | TCTL_PSP | (0x0f << TCTL_CT_SHIFT) | (0x3f << TCTL_COLD_SHIFT));
        self.started = true;
        Ok(())
    }

    fn rx_free(&self) -> usize {
        if !self.started {
            return 0;
        }
        RX_RING_SIZE - 1 - self.rx_count
    }

    fn post_rx(&mut self, iova: u64, len: u32, cookie: u64) -> Result<(), DriverError> {
        if !self.started {
            return Err(DriverError::Stopped);
        }
        if self.removed {
            return Err(DriverError::Removed);
        }
        if len < RX_MAX_FRAME || iova & 1 != 0 {
            return Err(DriverError::BadBuffer(format!(
                "RX buffer {iova:#x}+{len} must be 2-byte aligned and at least {RX_MAX_FRAME} bytes"
            )));
        }
        if self.rx_count >= RX_RING_SIZE - 1 {
            return Err(DriverError::RingFull("RX"));
        }
        let slot = self.rx_tail;
        let off = slot as u64 * DESC_SIZE;
        self.rx_ring
            .store(off, iova, Ordering::Relaxed)
            .and_then(|_| self.rx_ring.store(off + 8, 0u64, Ordering::Relaxed))
            .map_err(|e| DriverError::BadBuffer(e.to_string()))?;
        self.rx_cookies[slot] = Some(cookie);
        self.rx_tail = (slot + 1) % RX_RING_SIZE;
        self.rx_count += 1;
        Ok(())
    }

    fn flush_rx(&mut self) -> Result<(), DriverError> {
        if !self.started {
            return Ok(());
        }
        fence(Ordering::Release);
        self.regs.write32(RDT0, self.rx_tail as u32);
        Ok(())
    }

    fn reap_rx(&mut self, out: &mut Vec<RxCompletion>) -> Result<(), DriverError> {
        while self.rx_count > 0 {
            let slot = self.rx_head;
            let off = slot as u64 * DESC_SIZE;
            let st: u32 = self
                .rx_ring
                .load(off + RXD_STATUS_OFF, Ordering::Acquire)
                .map_err(|e| DriverError::BadBuffer(e.to_string()))?;
            if st & RXD_STAT_DD == 0 {
                break;
            }
            let len: u16 = self
                .rx_ring
                .load(off + RXD_LEN_OFF, Ordering::Acquire)
                .map_err(|e| DriverError::BadBuffer(e.to_string()))?;
            let cookie = self.rx_cookies[slot].take();
            self.rx_head = (slot + 1) % RX_RING_SIZE;
            self.rx_count -= 1;
            let eop = st & RXD_STAT_EOP != 0;
            let fragment = self.rx_in_fragment;
            self.rx_in_fragment = !eop;
            if let Some(cookie) = cookie {
                out.push(RxCompletion {
                    cookie,
                    len: u32::from(len).min(RX_MAX_FRAME),
                    eop,
                    error: fragment || st & RXD_ERR_FRAME != 0 || u32::from(len) > RX_MAX_FRAME,
                });
            }
        }
        Ok(())
    }

    fn tx_free(&self) -> usize {
        if !self.started {
            return 0;
        }
        TX_RING_SIZE - 1 - self.tx_used
    }

    fn post_tx(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<(), DriverError> {
        if !self.started {
            return Err(DriverError::Stopped);
        }
        if self.removed {
            return Err(DriverError::Removed);
        }
        if segs.is_empty() || segs.len() > TX_MAX_SEGS {
            return Err(DriverError::TooManySegments { got: segs.len(), max: TX_MAX_SEGS });
        }
        let total: u64 = segs.iter().map(|s| u64::from(s.1)).sum();
        if total > u64::from(TX_MAX_FRAME) || segs.iter().any(|s| s.1 == 0 || s.1 > 0xffff) {
            return Err(DriverError::BadBuffer(format!("TX frame of {total} bytes (max {TX_MAX_FRAME})")));
        }
        if self.tx_free() < segs.len() {
            return Err(DriverError::RingFull("TX"));
        }
        let mut slot = self.tx_tail;
        let mut last = slot;
        for (i, (iova, len)) in segs.iter().enumerate() {
            let off = slot as u64 * DESC_SIZE;
            let mut cmd = *len | TXD_CMD_IFCS;
            if i + 1 == segs.len() {
                cmd |= TXD_CMD_EOP | TXD_CMD_RS;
            }
            self.tx_ring
                .store(off, *iova, Ordering::Relaxed)
                .and_then(|_| self.tx_ring.store(off + TXD_CMD_OFF, cmd, Ordering::Relaxed))
                .and_then(|_| self.tx_ring.store(off + TXD_STATUS_OFF, 0u32, Ordering::Relaxed))
                .map_err(|e| DriverError::BadBuffer(e.to_string()))?;
            last = slot;
            slot = (slot + 1) % TX_RING_SIZE;
        }
        self.tx_tail = slot;
        self.tx_used += segs.len();
        self.tx_inflight.push_back(TxInFlight { last, ndesc: segs.len(), cookie });
        fence(Ordering::Release);
        self.regs.write32(TDT0, self.tx_tail as u32);
        Ok(())
    }

    fn reap_tx(&mut self, out: &mut Vec<TxCompletion>) -> Result<(), DriverError> {
        while let Some(f) = self.tx_inflight.front().copied() {
            let st: u32 = self
                .tx_ring
                .load(f.last as u64 * DESC_SIZE + TXD_STATUS_OFF, Ordering::Acquire)
                .map_err(|e| DriverError::BadBuffer(e.to_string()))?;
            if st & TXD_STAT_DD == 0 {
                break;
            }
            self.tx_inflight.pop_front();
            self.tx_used -= f.ndesc;
            out.push(TxCompletion { cookie: f.cookie });
        }
        Ok(())
    }

    fn link_up(&mut self) -> Result<bool, DriverError> {
        if self.removed {
            return Err(DriverError::Removed);
        }
        Ok(self.read(STATUS)? & STATUS_LU != 0)
    }

    fn set_mac_filter(&mut self, mac: [u8; 6]) -> Result<(), DriverError> {
        self.mac = mac;
        self.regs.write32(RAL0, u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]));
        self.regs.write32(RAH0, u32::from(u16::from_le_bytes([mac[4], mac[5]])) | RAH_AV);
        for i in 1..RA_ENTRIES {
            self.regs.write32(RAL0 + 8 * i, 0);
            self.regs.write32(RAH0 + 8 * i, 0);
        }
        for i in 0..MTA_ENTRIES {
            self.regs.write32(MTA + 4 * i, 0);
        }
        let rctl = self.regs.read32(RCTL);
        self.regs.write32(RCTL, (rctl & !RCTL_UPE) | RCTL_BAM | RCTL_MPE);
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
        if let Some(nic) = &self.nic {
            let _ = nic.set_bus_master(false);
        }
        let r = self.init_hw();
        if let Some(nic) = &self.nic {
            let _ = nic.set_bus_master(true);
        }
        r
    }

    fn irq_fds(&self) -> Vec<RawFd> {
        self.nic.as_ref().map(|n| n.raw_irq_fds()).unwrap_or_default()
    }

    fn handle_irq(&mut self, index: usize) -> Result<(), DriverError> {
        if let Some(fd) = self.nic.as_ref().and_then(|n| n.irq_fds().get(index)) {
            let _ = fd.read();
        }
        let icr = self.regs.read32(ICR);
        if icr == u32::MAX {
            self.check_alive()?;
        }
        Ok(())
    }

    fn alloc_dma(&mut self, len: usize) -> Result<DmaArea, DriverError> {
        let at = self.iova.alloc(len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
        let area = DmaArea::new(at, len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
        self.mapper.map(area.mem()).map_err(DriverError::DmaMap)?;
        Ok(area)
    }
}

impl<R: RegisterAccess> Drop for E1000e<R> {
    fn drop(&mut self) {
        if !self.removed {
            let _ = self.quiesce();
            self.mask_irqs();
            let ctrl = self.regs.read32(CTRL);
            if ctrl != u32::MAX {
                self.regs.write32(CTRL, ctrl | CTRL_RST);
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

#[cfg(test)]
mod tests;
