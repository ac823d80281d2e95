//! User-space driver for the Intel 82576 (igb, 8086:10c9): one RX and one TX
//! queue with advanced descriptors.
//!
//! Safety argument for the zero-copy shim: the NIC is programmed with a 2 KiB
//! packet buffer size but RCTL.LPE + RLPML cap every accepted frame at
//! [`RX_MAX_FRAME`] bytes, and CRC stripping is on, so the NIC never writes more
//! than `RX_MAX_FRAME` bytes at a posted address. Interrupts are wakeups only:
//! completions are found by polling the descriptors' DD bits.

pub mod regs;

use std::collections::VecDeque;
use std::os::unix::io::RawFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;

use crate::bdf::Bdf;
use crate::dma::{DmaArea, DmaMapper, IovaAllocator};
use crate::driver::{
    DriverError, DriverLimits, PnicDriver, RegisterAccess, RxCompletion, TxCompletion,
};
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
pub const TX_MAX_SEG_LEN: u32 = 0xffff;

const RESET_TIMEOUT: Duration = Duration::from_millis(200);
const QUEUE_TIMEOUT: Duration = Duration::from_millis(200);
const MDIC_TIMEOUT: Duration = Duration::from_millis(100);
const POLL_STEP: Duration = Duration::from_micros(100);

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

/// An in-flight TX frame: its last descriptor slot, descriptor count, cookie.
#[derive(Debug, Clone, Copy)]
struct TxInFlight {
    last: usize,
    ndesc: usize,
    cookie: u64,
}

/// The 82576 driver over any register access.
pub struct Igb<R: RegisterAccess> {
    regs: R,
    rx_ring: DmaArea,
    tx_ring: DmaArea,
    rx_cookies: Vec<Option<u64>>,
    rx_head: usize,
    rx_tail: usize,
    rx_count: usize,
    tx_head: usize,
    tx_tail: usize,
    tx_used: usize,
    tx_inflight: VecDeque<TxInFlight>,
    mac: [u8; 6],
    started: bool,
    removed: bool,
    /// The last RX completion lacked EOP: the next ones up to and including
    /// the EOP belong to the same (impossible under RLPML) multi-buffer frame
    /// and are reported as errors so no fragment reaches the guest as a frame.
    rx_in_fragment: bool,
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
        let ring = |iova: &mut IovaAllocator, n: usize| -> Result<DmaArea, DriverError> {
            let len = n * DESC_SIZE as usize;
            let at = iova.alloc(len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
            let area = DmaArea::new(at, len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
            mapper.map(area.mem()).map_err(DriverError::DmaMap)?;
            Ok(area)
        };
        let rx_ring = ring(&mut iova, RX_RING_SIZE)?;
        let tx_ring = ring(&mut iova, TX_RING_SIZE)?;
        let mut igb = Igb {
            regs,
            rx_ring,
            tx_ring,
            rx_cookies: vec![None; RX_RING_SIZE],
            rx_head: 0,
            rx_tail: 0,
            rx_count: 0,
            tx_head: 0,
            tx_tail: 0,
            tx_used: 0,
            tx_inflight: VecDeque::new(),
            mac: cfg.mac,
            started: false,
            removed: false,
            rx_in_fragment: false,
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
        let v = self.regs.read32(off);
        // STATUS/CTRL never read as all ones on a live 82576.
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
        self.regs.write32(EIMC, u32::MAX);
        self.regs.write32(IMC, u32::MAX);
    }

    fn mdic_write(&mut self, reg: u32, value: u32) -> Result<(), DriverError> {
        let cmd = (value & MDIC_DATA_MASK)
            | (reg << MDIC_REG_SHIFT)
            | (PHY_ADDR << MDIC_PHY_SHIFT)
            | MDIC_OP_WRITE;
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

    /// Global reset and the static configuration (everything but queue enable).
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
        let ext = self.regs.read32(CTRL_EXT);
        self.regs.write32(CTRL_EXT, ext | CTRL_EXT_DRV_LOAD);
        let ctrl = self.read(CTRL)?;
        self.regs.write32(CTRL, ctrl | CTRL_SLU | CTRL_FD);
        // QEMU's igb (and a PHY after FLR) keeps the link down until
        // autonegotiation is restarted.
        self.mdic_write(PHY_CTRL, PHY_CTRL_AUTONEG_RESTART)?;

        // Receive: stopped; descriptor ring, buffer size, frame cap.
        self.regs.write32(RCTL, 0);
        self.regs.write32(RXDCTL0, 0);
        let rx = self.rx_ring.iova();
        self.regs.write32(RDBAL0, rx as u32);
        self.regs.write32(RDBAH0, (rx >> 32) as u32);
        self.regs.write32(RDLEN0, (RX_RING_SIZE as u64 * DESC_SIZE) as u32);
        self.regs.write32(
            SRRCTL0,
            ((RX_BUF_SIZE / SRRCTL_BSIZEPKT_UNIT) << SRRCTL_BSIZEPKT_SHIFT)
                | SRRCTL_DESCTYPE_ADV_ONEBUF
                | SRRCTL_DROP_EN,
        );
        self.regs.write32(RLPML, RX_MAX_FRAME);
        self.regs.write32(RDH0, 0);
        self.regs.write32(RDT0, 0);

        // Transmit: stopped.
        self.regs.write32(TCTL, 0);
        self.regs.write32(TXDCTL0, 0);
        let tx = self.tx_ring.iova();
        self.regs.write32(TDBAL0, tx as u32);
        self.regs.write32(TDBAH0, (tx >> 32) as u32);
        self.regs.write32(TDLEN0, (TX_RING_SIZE as u64 * DESC_SIZE) as u32);
        self.regs.write32(TDH0, 0);
        self.regs.write32(TDT0, 0);

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
        self.rx_cookies.iter_mut().for_each(|c| *c = None);
        self.rx_in_fragment = false;
        self.rx_head = 0;
        self.rx_tail = 0;
        self.rx_count = 0;
        self.tx_head = 0;
        self.tx_tail = 0;
        self.tx_used = 0;
        self.tx_inflight.clear();
        let zero = vec![0u8; self.rx_ring.len()];
        let _ = self.rx_ring.write(0, &zero);
        let zero = vec![0u8; self.tx_ring.len()];
        let _ = self.tx_ring.write(0, &zero);
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
        self.regs.write32(RDH0, 0);
        self.regs.write32(RDT0, 0);
        self.regs.write32(TDH0, 0);
        self.regs.write32(TDT0, 0);
        self.enable_queue(RXDCTL0, RXDCTL_ENABLE, "RXDCTL.ENABLE to read back set")?;
        self.enable_queue(TXDCTL0, TXDCTL_ENABLE, "TXDCTL.ENABLE to read back set")?;
        let rctl = self.regs.read32(RCTL);
        self.regs
            .write32(RCTL, rctl | RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_LPE | RCTL_MPE);
        self.regs.write32(
            TCTL,
            TCTL_EN | TCTL_PSP | (0x0f << TCTL_CT_SHIFT) | (0x3f << TCTL_COLD_SHIFT),
        );
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
        // Read format: packet address, header address 0 (which also clears DD).
        let r = self
            .rx_ring
            .store(off, iova, Ordering::Relaxed)
            .and_then(|_| self.rx_ring.store(off + 8, 0u64, Ordering::Relaxed));
        r.map_err(|e| DriverError::BadBuffer(e.to_string()))?;
        self.rx_cookies[slot] = Some(cookie);
        self.rx_tail = (slot + 1) % RX_RING_SIZE;
        self.rx_count += 1;
        Ok(())
    }

    fn flush_rx(&mut self) -> Result<(), DriverError> {
        if !self.started {
            return Ok(());
        }
        // Descriptors must be in memory before the NIC sees the new tail.
        fence(Ordering::Release);
        self.regs.write32(RDT0, self.rx_tail as u32);
        Ok(())
    }

    fn reap_rx(&mut self, out: &mut Vec<RxCompletion>) -> Result<(), DriverError> {
        while self.rx_count > 0 {
            let slot = self.rx_head;
            let off = slot as u64 * DESC_SIZE;
            let staterr: u32 = self
                .rx_ring
                .load(off + RXD_STATUS_OFF, Ordering::Acquire)
                .map_err(|e| DriverError::BadBuffer(e.to_string()))?;
            if staterr & RXD_STAT_DD == 0 {
                break;
            }
            let len: u16 = self
                .rx_ring
                .load(off + RXD_LEN_OFF, Ordering::Acquire)
                .map_err(|e| DriverError::BadBuffer(e.to_string()))?;
            let cookie = self.rx_cookies[slot].take();
            self.rx_head = (slot + 1) % RX_RING_SIZE;
            self.rx_count -= 1;
            let eop = staterr & RXD_STAT_EOP != 0;
            let fragment = self.rx_in_fragment;
            self.rx_in_fragment = !eop;
            if let Some(cookie) = cookie {
                out.push(RxCompletion {
                    cookie,
                    // Never report more than the NIC may write (defence in depth).
                    len: u32::from(len).min(RX_MAX_FRAME),
                    eop,
                    error: fragment || staterr & RXD_ERR_FRAME != 0 || u32::from(len) > RX_MAX_FRAME,
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
            return Err(DriverError::TooManySegments {
                got: segs.len(),
                max: TX_MAX_SEGS,
            });
        }
        let total: u64 = segs.iter().map(|s| u64::from(s.1)).sum();
        if total > u64::from(TX_MAX_FRAME) || segs.iter().any(|s| s.1 == 0 || s.1 > TX_MAX_SEG_LEN) {
            return Err(DriverError::BadBuffer(format!(
                "TX frame of {total} bytes (max {TX_MAX_FRAME}, no empty segment)"
            )));
        }
        if self.tx_free() < segs.len() {
            return Err(DriverError::RingFull("TX"));
        }
        let mut slot = self.tx_tail;
        let mut last = slot;
        for (i, (iova, len)) in segs.iter().enumerate() {
            let off = slot as u64 * DESC_SIZE;
            let mut cmd = len | TXD_DTYP_DATA | TXD_CMD_DEXT | TXD_CMD_IFCS;
            if i + 1 == segs.len() {
                cmd |= TXD_CMD_EOP | TXD_CMD_RS;
            }
            let olinfo = (total as u32) << TXD_PAYLEN_SHIFT;
            self.tx_ring
                .store(off, *iova, Ordering::Relaxed)
                .and_then(|_| self.tx_ring.store(off + 8, cmd, Ordering::Relaxed))
                .and_then(|_| self.tx_ring.store(off + 12, olinfo, Ordering::Relaxed))
                .map_err(|e| DriverError::BadBuffer(e.to_string()))?;
            last = slot;
            slot = (slot + 1) % TX_RING_SIZE;
        }
        self.tx_tail = slot;
        self.tx_used += segs.len();
        self.tx_inflight.push_back(TxInFlight {
            last,
            ndesc: segs.len(),
            cookie,
        });
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
            self.tx_head = (f.last + 1) % TX_RING_SIZE;
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
        let lo = u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]);
        let hi = u32::from(u16::from_le_bytes([mac[4], mac[5]])) | RAH_AV;
        self.regs.write32(RAL0, lo);
        self.regs.write32(RAH0, hi);
        for i in 1..RA_ENTRIES {
            self.regs.write32(RAL0 + 8 * i, 0);
            self.regs.write32(RAH0 + 8 * i, 0);
        }
        for i in 0..MTA_ENTRIES {
            self.regs.write32(MTA + 4 * i, 0);
        }
        // Unicast to `mac` only; broadcast and all multicast accepted.
        let rctl = self.regs.read32(RCTL);
        self.regs
            .write32(RCTL, (rctl & !RCTL_UPE) | RCTL_BAM | RCTL_MPE);
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
        if let Some(nic) = &self.nic {
            // Belt and braces: no DMA while the function resets.
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
        let at = self.iova.alloc(len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
        let area = DmaArea::new(at, len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
        self.mapper.map(area.mem()).map_err(DriverError::DmaMap)?;
        Ok(area)
    }
}

impl<R: RegisterAccess> Drop for Igb<R> {
    fn drop(&mut self) {
        // Stop DMA into buffers we are about to forget; then reset so the NIC
        // is idle before the IOMMU mappings go away (VfioNic's drop).
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
