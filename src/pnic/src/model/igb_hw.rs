//! A software 82576 (the hardware side, not a driver) so that the product's
//! own [`Igb`] driver can run without a NIC: in benchmarks (the shim's VMM
//! cost is then the real driver's cost, not a stand-in's) and in tests.
//!
//! What it models is what the driver relies on: the register file (reset,
//! PHY, queue enables, interrupt causes), the RX and TX descriptor rings in
//! DMA memory that the driver programs through RDBA/RDLEN/RDH/RDT and their
//! TX twins, advanced RX write-back (status DD/EOP and length; a frame
//! larger than SRRCTL.BSIZEPACKET spread over as many descriptors, EOP on
//! the last; the checksum status TCPCS/UDPCS and TCPE when RXCSUM.TUOFLD is
//! set), TX write-back (DD on RS descriptors), TX offloads from advanced
//! context descriptors (TCP/UDP checksum insertion, IPv4 header checksum, TCP
//! segmentation with the header rewritten per segment as the datasheet says),
//! the receive filter (receive address 0, broadcast, multicast with RCTL.MPE)
//! and the frame cap (RLPML with RCTL.LPE, counting the CRC, as QEMU's igb). Every
//! DMA goes through a [`ModelIommu`], so the model reaches only what the
//! driver mapped (guest RAM and its rings), like the NIC behind VFIO.
//!
//! The tail registers are atomics: a tail write is one store, as the MMIO
//! write is on the NIC, so the driver's hot path is measured as it runs on
//! hardware. The rest of the register file sits behind a mutex (slow path).

use std::collections::HashMap;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::ModelIommu;
use crate::dma::{DmaMapper, IovaAllocator};
use crate::driver::{DriverError, RegisterAccess};
use crate::e1000_common::regs::DESC_SIZE;
use crate::e1000_common::{NicConfig, PciControl};
use crate::igb::regs::*;
use crate::igb::Igb;
use vmm_config::sync::lock_unpoisoned as lock;

/// The 16-byte advanced descriptors' fields the model reads and writes.
const DESC_ADDR_OFF: u64 = 0;
const TXD_CMD_OFF: u64 = 8;
const TXD_LEN_MASK: u32 = 0xffff;
/// RX write-back error bit the model sets when its DMA write faults (RXE).
const RXD_ERR_RXE: u32 = 1 << 31;
/// RX write-back error bit of a CRC error (CE).
const RXD_ERR_CE: u32 = 1 << 24;
/// The CRC the wire frame had (stripped, RCTL.SECRC, but counted by RLPML).
const FCS_LEN: usize = 4;
/// Largest frame without RCTL.LPE: 1518 + a VLAN tag.
const NO_LPE_MAX: usize = 1522;

/// Counters of what the model's hardware did (its own work, not the driver's).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct IgbHwStats {
    /// Frames written into posted RX buffers.
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames dropped for want of a posted buffer (RDH == RDT), as MPC counts.
    pub rx_no_buffer: u64,
    /// Frames the receive filter or the frame cap dropped.
    pub rx_filtered: u64,
    pub rx_oversized: u64,
    /// DMA accesses the IOMMU refused.
    pub dma_faults: u64,
    /// Frames transmitted (each TSO segment is one).
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// TSO frames segmented, checksums inserted (TCP/UDP, IPv4 header).
    pub tx_tso_frames: u64,
    pub tx_l4_csums: u64,
    pub tx_ip_csums: u64,
    /// Offloaded frames the model refused (a context that does not fit
    /// the frame, PAYLEN not the frame's): not sent, as a NIC would send
    /// garbage or hang; tests assert this stays 0.
    pub tx_bad_offloads: u64,
}

/// The words of one advanced TX context descriptor as the NIC read it.
pub type TxContext = [u32; 4];

struct Inner {
    /// Configuration registers (slow path).
    regs: Mutex<HashMap<u32, u32>>,
    rdh: AtomicU32,
    rdt: AtomicU32,
    tdh: AtomicU32,
    tdt: AtomicU32,
    /// Interrupt cause bits not yet read (EICR is clear-on-read).
    eicr: AtomicU32,
    resets: AtomicU64,
    /// Register reads and writes the driver made (what MMIO accesses would
    /// cost on hardware: each one a PCIe round trip or posted write).
    reads: AtomicU64,
    writes: AtomicU64,
    iommu: Arc<ModelIommu>,
    /// MSI-X vectors: 0 for the queues, 1 (if wired) for other causes.
    irqs: Vec<Arc<EventFd>>,
    stats: Mutex<IgbHwStats>,
    /// PCI command register's bus master bit: no DMA at all while clear.
    bus_master: AtomicBool,
    /// Injected failures: the queue enable bits never clear (stop fails),
    /// CTRL.RST never clears (reset fails), the function reset fails.
    stuck_queues: AtomicBool,
    stuck_reset: AtomicBool,
    flr_fails: AtomicBool,
    /// The context descriptors read, in order (tests check their fields).
    tx_contexts: Mutex<Vec<TxContext>>,
}

/// BAR0 of the model, given to the driver.
#[derive(Clone)]
pub struct IgbHwRegs(Arc<Inner>);

/// The wire side of the model: frames arrive, transmissions complete.
#[derive(Clone)]
pub struct IgbHw(Arc<Inner>);

impl RegisterAccess for IgbHwRegs {
    fn read32(&self, off: u32) -> u32 {
        let h = &self.0;
        h.reads.fetch_add(1, Ordering::Relaxed);
        match off {
            RDH0 => h.rdh.load(Ordering::Acquire),
            RDT0 => h.rdt.load(Ordering::Acquire),
            TDH0 => h.tdh.load(Ordering::Acquire),
            TDT0 => h.tdt.load(Ordering::Acquire),
            EICR | ICR => h.eicr.swap(0, Ordering::AcqRel),
            _ => lock(&h.regs).get(&off).copied().unwrap_or(0),
        }
    }

    fn write32(&self, off: u32, v: u32) {
        let h = &self.0;
        h.writes.fetch_add(1, Ordering::Relaxed);
        match off {
            RDT0 => h.rdt.store(v, Ordering::Release),
            TDT0 => h.tdt.store(v, Ordering::Release),
            RDH0 => h.rdh.store(v, Ordering::Release),
            TDH0 => h.tdh.store(v, Ordering::Release),
            CTRL if v & CTRL_RST != 0 && h.stuck_reset.load(Ordering::Relaxed) => {
                // A hung reset: CTRL.RST never self-clears.
                lock(&h.regs).insert(CTRL, v);
            }
            RXDCTL0 | TXDCTL0 if h.stuck_queues.load(Ordering::Relaxed) => {
                // A hung queue: its enable bit does not clear.
                let mut r = lock(&h.regs);
                let was = r.get(&off).copied().unwrap_or(0) & (RXDCTL_ENABLE | TXDCTL_ENABLE);
                r.insert(off, v | was);
            }
            CTRL if v & CTRL_RST != 0 => {
                // A global reset: queues off, rings forgotten, link down until
                // the PHY is told to negotiate again; completes at once.
                h.hw_reset(v & !CTRL_RST);
            }
            MDIC => {
                // The PHY answers at once; restarting autonegotiation brings
                // the link up.
                let mut r = lock(&h.regs);
                let restart = (v >> MDIC_REG_SHIFT) & 0x1f == PHY_CTRL
                    && v & MDIC_DATA_MASK == PHY_CTRL_AUTONEG_RESTART
                    && v & MDIC_OP_WRITE != 0;
                if restart {
                    *r.entry(STATUS).or_default() |= STATUS_LU;
                }
                r.insert(MDIC, v | MDIC_READY);
            }
            _ => {
                lock(&h.regs).insert(off, v);
            }
        }
    }
}

impl Inner {
    /// What CTRL.RST and a function reset do: queues off, rings forgotten.
    fn hw_reset(&self, ctrl: u32) {
        let mut r = lock(&self.regs);
        r.clear();
        r.insert(CTRL, ctrl);
        for a in [&self.rdh, &self.rdt, &self.tdh, &self.tdt, &self.eicr] {
            a.store(0, Ordering::Release);
        }
        self.resets.fetch_add(1, Ordering::Relaxed);
    }

    fn reg(&self, r: &HashMap<u32, u32>, off: u32) -> u32 {
        r.get(&off).copied().unwrap_or(0)
    }

    fn ring(&self, r: &HashMap<u32, u32>, bal: u32, bah: u32, len: u32) -> (u64, u32) {
        let base = u64::from(self.reg(r, bal)) | (u64::from(self.reg(r, bah)) << 32);
        (base, self.reg(r, len) / DESC_SIZE as u32)
    }

    /// The queue interrupt (vector 0).
    fn signal(&self) {
        self.eicr.fetch_or(1, Ordering::AcqRel);
        let _ = self.irqs[0].write(1);
    }
}

fn accepts(r: &HashMap<u32, u32>, rctl: u32, dst: &[u8]) -> bool {
    if dst[0] & 1 == 1 {
        // Broadcast needs BAM, other multicast MPE (the driver sets both).
        let bcast = dst.iter().all(|b| *b == 0xff);
        return if bcast { rctl & RCTL_BAM != 0 } else { rctl & RCTL_MPE != 0 };
    }
    if rctl & RCTL_UPE != 0 {
        return true;
    }
    let ral = r.get(&RAL0).copied().unwrap_or(0).to_le_bytes();
    let rah = r.get(&RAH0).copied().unwrap_or(0);
    rah & RAH_AV != 0 && dst[..4] == ral && dst[4..6] == rah.to_le_bytes()[..2]
}

/// Outcome of one frame offered to the model's receive side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwRx {
    /// Written into the buffer of this RX descriptor.
    Delivered {
        desc: u32,
        buffer: u64,
    },
    /// RX disabled or no descriptor between RDH and RDT: dropped.
    NoBuffer,
    Filtered,
    Oversized,
    /// The buffer address was not mapped: the descriptor is written back
    /// with an error and nothing lands in memory.
    Fault,
}

/// What the wire says about a frame's TCP/UDP checksum (the model does not
/// parse frames: the test says what the NIC's checker would find).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Csum {
    /// Not TCP or UDP: nothing checked.
    None,
    Good,
    Bad,
}

impl IgbHw {
    /// A frame arrives from the wire (not TCP or UDP: no checksum status).
    pub fn inject_rx(&self, frame: &[u8]) -> HwRx {
        self.inject_rx_csum(frame, L4Csum::None)
    }

    /// A frame arrives from the wire; with RXCSUM.TUOFLD the EOP write-back
    /// reports its TCP/UDP checksum as `csum` says (TCPCS, and TCPE if bad).
    /// A frame over BSIZEPACKET fills as many descriptors as it needs, each
    /// written back with DD, the last with EOP (and the status); without
    /// enough descriptors it is dropped whole, as QEMU's igb does.
    pub fn inject_rx_csum(&self, frame: &[u8], csum: L4Csum) -> HwRx {
        self.inject(frame, csum, 0, None)
    }

    /// [`IgbHw::inject_rx`] with a pause after the first `parts` descriptors
    /// (written back with DD, no EOP, head advanced, interrupt raised):
    /// `between` runs there, as a driver that polls while the NIC is still
    /// writing the frame would (QEMU's igb writes a frame one descriptor at
    /// a time while the VMM's threads run).
    pub fn inject_rx_paused(&self, frame: &[u8], parts: usize, between: &mut dyn FnMut()) -> HwRx {
        self.inject(frame, L4Csum::None, 0, Some((parts, between)))
    }

    /// A frame that arrives with a bad CRC: written like any other, its EOP
    /// write-back flagged CE (what the driver must drop).
    pub fn inject_rx_bad_crc(&self, frame: &[u8]) -> HwRx {
        self.inject(frame, L4Csum::None, RXD_ERR_CE, None)
    }

    fn inject(
        &self,
        frame: &[u8],
        csum: L4Csum,
        eop_errors: u32,
        mut pause: Option<(usize, &mut dyn FnMut())>,
    ) -> HwRx {
        let h = &self.0;
        if !h.bus_master.load(Ordering::Acquire) {
            lock(&h.stats).rx_no_buffer += 1;
            return HwRx::NoBuffer;
        }
        let (base, size, cap, bsize, ok_filter, rxcsum) = {
            let r = lock(&h.regs);
            let rctl = h.reg(&r, RCTL);
            let on = rctl & RCTL_EN != 0 && h.reg(&r, RXDCTL0) & RXDCTL_ENABLE != 0;
            if !on {
                lock(&h.stats).rx_no_buffer += 1;
                return HwRx::NoBuffer;
            }
            let (base, size) = h.ring(&r, RDBAL0, RDBAH0, RDLEN0);
            let bsize = ((h.reg(&r, SRRCTL0) >> SRRCTL_BSIZEPKT_SHIFT) & 0x7f) * SRRCTL_BSIZEPKT_UNIT;
            let ok = frame.len() >= 14 && accepts(&r, rctl, &frame[..6]);
            // With LPE, RLPML counts the CRC (QEMU: size + 4 > RLPML drops).
            let cap =
                if rctl & RCTL_LPE != 0 { (h.reg(&r, RLPML) as usize).saturating_sub(FCS_LEN) } else { NO_LPE_MAX };
            (base, size, cap, bsize as usize, ok, h.reg(&r, RXCSUM))
        };
        if !ok_filter {
            lock(&h.stats).rx_filtered += 1;
            return HwRx::Filtered;
        }
        if frame.len() > cap {
            lock(&h.stats).rx_oversized += 1;
            return HwRx::Oversized;
        }
        let head = h.rdh.load(Ordering::Acquire);
        let tail = h.rdt.load(Ordering::Acquire);
        let avail = if tail >= head { tail - head } else { size.wrapping_sub(head) + tail };
        let need = frame.len().div_ceil(bsize.max(1)).max(1) as u32;
        if size == 0 || bsize == 0 || head == tail || tail >= size || avail < need {
            lock(&h.stats).rx_no_buffer += 1;
            return HwRx::NoBuffer;
        }
        let mut status_eop = RXD_STAT_DD | RXD_STAT_EOP | eop_errors;
        if rxcsum & RXCSUM_TUOFLD != 0 {
            status_eop |= match csum {
                L4Csum::None => 0,
                L4Csum::Good => RXD_STAT_TCPCS,
                L4Csum::Bad => RXD_STAT_TCPCS | RXD_ERR_TCPE,
            };
        }
        let mut first = None;
        let mut all_landed = true;
        let mut slot = head;
        for (k, part) in frame.chunks(bsize).enumerate() {
            let desc = base + u64::from(slot) * DESC_SIZE;
            let mut addr = [0u8; 8];
            if !h.iommu.read(desc + DESC_ADDR_OFF, &mut addr) {
                lock(&h.stats).dma_faults += 1;
                return HwRx::Fault;
            }
            let buffer = u64::from_le_bytes(addr);
            first.get_or_insert(buffer);
            let landed = h.iommu.write(buffer, part);
            all_landed &= landed;
            // Write-back: the whole descriptor is rewritten; length first,
            // then the status word with DD, which is what the driver polls.
            let mut wb = [0u8; DESC_SIZE as usize];
            let len = if landed { part.len() as u16 } else { 0 };
            wb[RXD_LEN_OFF as usize..RXD_LEN_OFF as usize + 2].copy_from_slice(&len.to_le_bytes());
            let _ = h.iommu.write(desc, &wb[..RXD_STATUS_OFF as usize]);
            let _ = h.iommu.write(desc + RXD_LEN_OFF, &wb[RXD_LEN_OFF as usize..]);
            fence(Ordering::Release);
            let last = (k + 1) as u32 == need;
            let mut status = if last { status_eop } else { RXD_STAT_DD };
            if !landed {
                status |= RXD_ERR_RXE;
            }
            let _ = h.iommu.write(desc + RXD_STATUS_OFF, &status.to_le_bytes());
            slot = (slot + 1) % size;
            if let Some((_, between)) = pause.take_if(|(parts, _)| *parts == k + 1 && !last) {
                h.rdh.store(slot, Ordering::Release);
                h.signal();
                between();
            }
        }
        h.rdh.store(slot, Ordering::Release);
        {
            let mut st = lock(&h.stats);
            if all_landed {
                st.rx_frames += 1;
                st.rx_bytes += frame.len() as u64;
            } else {
                st.dma_faults += 1;
            }
        }
        h.signal();
        match (all_landed, first) {
            (true, Some(buffer)) => HwRx::Delivered { desc: head, buffer },
            _ => HwRx::Fault,
        }
    }

    /// Send everything between TDH and TDT; `sink` gets each frame as the
    /// wire sees it. Returns the frames sent.
    pub fn complete_tx(&self, mut sink: impl FnMut(&[u8])) -> usize {
        let h = &self.0;
        let (base, size, on) = {
            let r = lock(&h.regs);
            let (base, size) = h.ring(&r, TDBAL0, TDBAH0, TDLEN0);
            (base, size, h.reg(&r, TCTL) & TCTL_EN != 0 && h.reg(&r, TXDCTL0) & TXDCTL_ENABLE != 0)
        };
        let tail = h.tdt.load(Ordering::Acquire);
        if !on || size == 0 || tail >= size || !h.bus_master.load(Ordering::Acquire) {
            return 0;
        }
        let mut head = h.tdh.load(Ordering::Acquire);
        let mut frame = Vec::new();
        let mut sent = 0;
        let mut ok = true;
        // The context (index 0; the driver uses no other) and the first
        // data descriptor's command and olinfo words of the frame.
        let mut ctx: TxContext = [0; 4];
        let mut first: Option<(u32, u32)> = None;
        while head != tail {
            let desc = base + u64::from(head) * DESC_SIZE;
            let mut d = [0u8; DESC_SIZE as usize];
            if !h.iommu.read(desc, &mut d) {
                lock(&h.stats).dma_faults += 1;
                break;
            }
            let word = |i: usize| u32::from_le_bytes(d[4 * i..4 * i + 4].try_into().unwrap());
            let addr = u64::from_le_bytes(d[..8].try_into().unwrap());
            let cmd = u32::from_le_bytes(d[TXD_CMD_OFF as usize..TXD_CMD_OFF as usize + 4].try_into().unwrap());
            if cmd & TXD_CMD_DEXT != 0 && cmd & TXD_DTYP_MASK == TXD_DTYP_CTXT {
                ctx = [word(0), word(1), word(2), word(3)];
                lock(&h.tx_contexts).push(ctx);
                head = (head + 1) % size;
                continue;
            }
            first.get_or_insert((cmd, word(3)));
            let len = (cmd & TXD_LEN_MASK) as usize;
            let at = frame.len();
            frame.resize(at + len, 0);
            if !h.iommu.read(addr, &mut frame[at..]) {
                lock(&h.stats).dma_faults += 1;
                ok = false;
            }
            if cmd & TXD_CMD_RS != 0 {
                fence(Ordering::Release);
                let _ = h.iommu.write(desc + TXD_STATUS_OFF, &TXD_STAT_DD.to_le_bytes());
            }
            head = (head + 1) % size;
            if cmd & TXD_CMD_EOP != 0 {
                if ok {
                    let (cmd0, olinfo) = first.unwrap_or((cmd, 0));
                    let mut st = lock(&h.stats);
                    match offload(&mut frame, &ctx, cmd0, olinfo, &mut st) {
                        Some(wire) => {
                            for f in wire.iter() {
                                sink(f);
                                st.tx_frames += 1;
                                st.tx_bytes += f.len() as u64;
                                sent += 1;
                            }
                        }
                        None => st.tx_bad_offloads += 1,
                    }
                }
                frame.clear();
                first = None;
                ok = true;
            }
        }
        h.tdh.store(head, Ordering::Release);
        if sent > 0 {
            h.signal();
        }
        sent
    }

    /// Every TX context descriptor the model read, in order.
    pub fn tx_contexts(&self) -> Vec<TxContext> {
        lock(&self.0.tx_contexts).clone()
    }

    pub fn stats(&self) -> IgbHwStats {
        *lock(&self.0.stats)
    }

    /// Register (reads, writes) the driver made so far.
    pub fn register_accesses(&self) -> (u64, u64) {
        (self.0.reads.load(Ordering::Relaxed), self.0.writes.load(Ordering::Relaxed))
    }

    /// Global resets the driver issued.
    pub fn resets(&self) -> u64 {
        self.0.resets.load(Ordering::Relaxed)
    }

    /// Make the queues' stop handshake (`stuck_queues`) and the global reset
    /// (`stuck_reset`) hang, as a wedged NIC does; `flr_fails`: the
    /// function-level reset fails too.
    pub fn inject_hang(&self, stuck_queues: bool, stuck_reset: bool, flr_fails: bool) {
        self.0.stuck_queues.store(stuck_queues, Ordering::Relaxed);
        self.0.stuck_reset.store(stuck_reset, Ordering::Relaxed);
        self.0.flr_fails.store(flr_fails, Ordering::Relaxed);
    }

    /// Whether the PCI bus master bit is set (the model DMAs only then).
    pub fn bus_master(&self) -> bool {
        self.0.bus_master.load(Ordering::Acquire)
    }

    /// The emulated IOMMU in front of the model (what it can reach).
    pub fn iommu(&self) -> &ModelIommu {
        &self.0.iommu
    }
}

const TXD_DTYP_MASK: u32 = 0xf << 20;
const TXD_POPTS_MASK: u32 = TXD_POPTS_IXSM | TXD_POPTS_TXSM;
const ETHERTYPE_IPV4: u16 = 0x0800;
const TCP_FIN_PSH: u8 = 0x01 | 0x08;

/// What the NIC puts on the wire for the gathered `frame` whose first data
/// descriptor had `cmd` and `olinfo`, under context `ctx`: the frame with
/// its checksums inserted, or its TSO segments; `None` when the offload
/// does not fit the frame.
fn offload(frame: &mut [u8], ctx: &TxContext, cmd: u32, olinfo: u32, st: &mut IgbHwStats) -> Option<Vec<Vec<u8>>> {
    let popts = olinfo & TXD_POPTS_MASK;
    if cmd & TXD_CMD_TSE == 0 && popts == 0 {
        return Some(vec![frame.to_vec()]);
    }
    let ip_at = ((ctx[0] >> TXCTX_MACLEN_SHIFT) & u32::from(TXCTX_MACLEN_MAX)) as usize;
    let l4_at = ip_at + (ctx[0] & u32::from(TXCTX_IPLEN_MAX)) as usize;
    let ipv4 = ctx[2] & TXCTX_TUCMD_IPV4 != 0;
    let tcp = ctx[2] & TXCTX_TUCMD_L4T_TCP != 0;
    let csum_at = l4_at + if tcp { 16 } else { 6 };
    let paylen = (olinfo >> TXD_PAYLEN_SHIFT) as usize;
    if cmd & TXD_CMD_TSE == 0 {
        if paylen != frame.len() || csum_at + 2 > frame.len() || (ipv4 && ip_at + 20 > l4_at) {
            return None;
        }
        if popts & TXD_POPTS_IXSM != 0 {
            ip_checksum(&mut frame[ip_at..l4_at]);
            st.tx_ip_csums += 1;
        }
        if popts & TXD_POPTS_TXSM != 0 {
            l4_checksum(&mut frame[l4_at..], csum_at - l4_at, 0);
            st.tx_l4_csums += 1;
        }
        return Some(vec![frame.to_vec()]);
    }
    // TSO (datasheet 7.2.4): header = MACLEN + IPLEN + L4LEN, replicated.
    let l4_len = ((ctx[3] >> TXCTX_L4LEN_SHIFT) & 0xff) as usize;
    let mss = (ctx[3] >> TXCTX_MSS_SHIFT) as usize;
    let hdr = l4_at + l4_len;
    if !tcp || mss == 0 || l4_len < 20 || hdr > frame.len() || paylen != frame.len() - hdr || paylen == 0 {
        return None;
    }
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    if ipv4 != (ethertype == ETHERTYPE_IPV4) {
        return None;
    }
    let (h, payload) = frame.split_at(hdr);
    let id0 = u16::from_be_bytes([h[ip_at + 4], h[ip_at + 5]]);
    let seq0 = u32::from_be_bytes(h[l4_at + 4..l4_at + 8].try_into().ok()?);
    let n = payload.len().div_ceil(mss);
    let mut out = Vec::with_capacity(n);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let mut seg = Vec::with_capacity(hdr + chunk.len());
        seg.extend_from_slice(h);
        seg.extend_from_slice(chunk);
        let l4_total = l4_len + chunk.len();
        if ipv4 {
            let tot = (l4_at - ip_at + l4_total) as u16;
            seg[ip_at + 2..ip_at + 4].copy_from_slice(&tot.to_be_bytes());
            seg[ip_at + 4..ip_at + 6].copy_from_slice(&id0.wrapping_add(i as u16).to_be_bytes());
            ip_checksum(&mut seg[ip_at..l4_at]);
        } else {
            let pl = (l4_at - ip_at - 40 + l4_total) as u16;
            seg[ip_at + 4..ip_at + 6].copy_from_slice(&pl.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[l4_at + 4..l4_at + 8].copy_from_slice(&seq.to_be_bytes());
        if i + 1 < n {
            seg[l4_at + 13] &= !TCP_FIN_PSH;
        }
        // The field holds the pseudo-header sum without the length.
        l4_checksum(&mut seg[l4_at..], 16, l4_total as u32);
        out.push(seg);
    }
    st.tx_tso_frames += 1;
    Some(out)
}

/// The IPv4 header checksum of `ip` (its field zeroed first).
fn ip_checksum(ip: &mut [u8]) {
    ip[10..12].fill(0);
    let c = !fold(sum16(ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Insert the checksum at `at` of the L4 segment `l4` whose field holds
/// the pseudo-header sum (plus `len`, the length the hardware adds for TSO).
fn l4_checksum(l4: &mut [u8], at: usize, len: u32) {
    let c = !fold(sum16(l4) + u64::from(len));
    let c = if c == 0 { 0xffff } else { c };
    l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

fn sum16(b: &[u8]) -> u64 {
    b.chunks(2).map(|w| u64::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum()
}

fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The model's PCI function: bus mastering and function-level reset.
struct ModelPci(Arc<Inner>);

impl PciControl for ModelPci {
    fn set_bus_master(&self, on: bool) -> Result<(), String> {
        self.0.bus_master.store(on, Ordering::Release);
        Ok(())
    }

    fn function_reset(&self) -> Result<(), String> {
        let h = &self.0;
        if h.flr_fails.load(Ordering::Relaxed) {
            return Err("the model's function reset fails (injected)".into());
        }
        // Everything back to power-on: hangs cleared, bus mastering off.
        h.stuck_queues.store(false, Ordering::Relaxed);
        h.stuck_reset.store(false, Ordering::Relaxed);
        h.bus_master.store(false, Ordering::Release);
        h.hw_reset(0);
        Ok(())
    }
}

/// The product's igb driver over a fresh model whose IOMMU maps all of
/// `guest` (IOVA = GPA), with one interrupt vector; link up.
pub fn igb_on_model(guest: &GuestMemoryMmap, mac: [u8; 6]) -> Result<(Igb<IgbHwRegs>, IgbHw), DriverError> {
    igb_on_model_msix(guest, mac, 1)
}

/// [`igb_on_model`] with `vectors` (1 or 2) MSI-X vectors wired, as
/// production wires two (queues on 0, link and other causes on 1).
pub fn igb_on_model_msix(
    guest: &GuestMemoryMmap,
    mac: [u8; 6],
    vectors: usize,
) -> Result<(Igb<IgbHwRegs>, IgbHw), DriverError> {
    igb_on_model_mtu(guest, mac, vectors, crate::e1000_common::ETH_MTU)
}

/// [`igb_on_model_msix`] opened for a guest MTU of `mtu` (above 1500: jumbo
/// frames over several buffers, as `--net vfio=BDF,mtu=N` opens the NIC).
pub fn igb_on_model_mtu(
    guest: &GuestMemoryMmap,
    mac: [u8; 6],
    vectors: usize,
    mtu: u16,
) -> Result<(Igb<IgbHwRegs>, IgbHw), DriverError> {
    let (regs, hw, mapper, irqs) = igb_hw_model(guest, vectors.clamp(1, 2))?;
    let mut cfg = NicConfig::new(mac);
    cfg.link_timeout = Duration::from_millis(100);
    cfg.mtu = mtu;
    let mut d = Igb::new(regs, mapper, IovaAllocator::above(guest), cfg, irqs.len())?;
    d.set_model_irqs(irqs);
    d.set_model_pci(Box::new(ModelPci(hw.0.clone())));
    Ok((d, hw))
}

/// A model's BAR, wire side, DMA mapper and interrupt eventfds.
pub type IgbHwParts = (IgbHwRegs, IgbHw, Arc<dyn DmaMapper>, Vec<Arc<EventFd>>);

/// A fresh model without a driver: its BAR, its wire side, its IOMMU (which
/// maps all of `guest`, IOVA = GPA) and `vectors` (at least one) interrupt
/// eventfds, queue interrupts on the first. For models built on this one
/// (the SR-IOV VF's).
pub fn igb_hw_model(guest: &GuestMemoryMmap, vectors: usize) -> Result<IgbHwParts, DriverError> {
    let iommu = Arc::new(ModelIommu::new());
    iommu.map(guest).map_err(DriverError::DmaMap)?;
    let irqs = (0..vectors.max(1))
        .map(|_| EventFd::new(EFD_NONBLOCK).map(Arc::new).map_err(|e| DriverError::DmaMap(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let inner = Arc::new(Inner {
        regs: Mutex::default(),
        rdh: AtomicU32::new(0),
        rdt: AtomicU32::new(0),
        tdh: AtomicU32::new(0),
        tdt: AtomicU32::new(0),
        eicr: AtomicU32::new(0),
        resets: AtomicU64::new(0),
        reads: AtomicU64::new(0),
        writes: AtomicU64::new(0),
        iommu: iommu.clone(),
        irqs: irqs.clone(),
        stats: Mutex::default(),
        bus_master: AtomicBool::new(true),
        stuck_queues: AtomicBool::new(false),
        stuck_reset: AtomicBool::new(false),
        flr_fails: AtomicBool::new(false),
        tx_contexts: Mutex::default(),
    });
    let mapper: Arc<dyn DmaMapper> = iommu;
    Ok((IgbHwRegs(inner.clone()), IgbHw(inner), mapper, irqs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::testing::DriverTestExt;
    use crate::driver::{PnicDriver, RxCompletion, TxCompletion};
    use crate::e1000_common::moderation::{EITR_CNT_IGNR, EITR_INTERVAL_20K};
    use vm_memory::{Bytes, GuestAddress};

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn setup() -> (GuestMemoryMmap, Igb<IgbHwRegs>, IgbHw) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (mut d, hw) = igb_on_model(&mem, MAC).unwrap();
        d.start().unwrap();
        (mem, d, hw)
    }

    fn frame(dst: [u8; 6], len: usize) -> Vec<u8> {
        let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
        f[..6].copy_from_slice(&dst);
        f
    }

    #[test]
    fn rx_lands_in_the_posted_buffer_and_completes_with_its_cookie() {
        let (mem, mut d, hw) = setup();
        assert_eq!(hw.inject_rx(&frame(MAC, 100)), HwRx::NoBuffer, "nothing posted yet");
        d.post_rx(0x1000, 2048, 7).unwrap();
        assert_eq!(hw.inject_rx(&frame(MAC, 100)), HwRx::NoBuffer, "posted but the tail is not written");
        d.flush_rx().unwrap();
        d.post_rx(0x2000, 2048, 8).unwrap();
        d.flush_rx().unwrap();
        let f = frame(MAC, 1514);
        assert_eq!(hw.inject_rx(&f), HwRx::Delivered { desc: 0, buffer: 0x1000 });
        assert_eq!(hw.inject_rx(&frame([0xff; 6], 60)), HwRx::Delivered { desc: 1, buffer: 0x2000 });
        assert_eq!(hw.inject_rx(&frame(MAC, 60)), HwRx::NoBuffer, "ring drained");
        let mut got = vec![0u8; f.len()];
        mem.read_slice(&mut got, GuestAddress(0x1000)).unwrap();
        assert_eq!(got, f);
        let mut out = Vec::new();
        d.reap_rx(&mut out).unwrap();
        assert_eq!(
            out,
            vec![
                RxCompletion { cookie: 7, len: 1514, eop: true, error: false, csum_ok: false },
                RxCompletion { cookie: 8, len: 60, eop: true, error: false, csum_ok: false }
            ]
        );
        assert_eq!(hw.stats().rx_no_buffer, 3);
    }

    #[test]
    fn rx_filter_and_frame_cap_drop_in_the_nic() {
        let (_mem, mut d, hw) = setup();
        d.post_rx(0x1000, 2048, 1).unwrap();
        d.flush_rx().unwrap();
        assert_eq!(hw.inject_rx(&frame([0x52, 0x54, 0, 0, 0, 9], 100)), HwRx::Filtered);
        assert_eq!(hw.inject_rx(&frame(MAC, crate::igb::RX_MAX_FRAME as usize + 1)), HwRx::Oversized);
        let mut out = Vec::new();
        d.reap_rx(&mut out).unwrap();
        assert!(out.is_empty());
        d.set_mac_filter([0x52, 0x54, 0, 0, 0, 9]).unwrap();
        assert!(matches!(hw.inject_rx(&frame([0x52, 0x54, 0, 0, 0, 9], 100)), HwRx::Delivered { .. }));
    }

    #[test]
    fn rx_to_an_unmapped_buffer_faults_and_completes_with_an_error() {
        let (_mem, mut d, hw) = setup();
        // Above the 1 MiB of guest RAM the IOMMU maps (and not a ring).
        d.post_rx(0x40_0000_0000, 2048, 3).unwrap();
        d.flush_rx().unwrap();
        assert_eq!(hw.inject_rx(&frame(MAC, 64)), HwRx::Fault);
        let mut out = Vec::new();
        d.reap_rx(&mut out).unwrap();
        assert_eq!(out.len(), 1);
        assert!(out[0].error && out[0].cookie == 3, "{out:?}");
        assert_eq!(hw.stats().dma_faults, 1);
    }

    #[test]
    fn tx_frames_are_gathered_from_their_segments_and_completed() {
        let (mem, mut d, hw) = setup();
        let f = frame([0xff; 6], 300);
        mem.write_slice(&f[..100], GuestAddress(0x3000)).unwrap();
        mem.write_slice(&f[100..], GuestAddress(0x5000)).unwrap();
        d.post_tx(&[(0x3000, 100), (0x5000, 200)], 11).unwrap();
        d.post_tx(&[(0x3000, 60)], 12).unwrap();
        let mut wire = Vec::new();
        assert_eq!(hw.complete_tx(|fr| wire.push(fr.to_vec())), 2);
        assert_eq!(wire, vec![f.clone(), f[..60].to_vec()]);
        let mut out = Vec::new();
        d.reap_tx(&mut out).unwrap();
        assert_eq!(out, vec![TxCompletion { cookie: 11 }, TxCompletion { cookie: 12 }]);
        assert_eq!(hw.complete_tx(|_| {}), 0, "nothing new between TDH and TDT");
    }

    #[test]
    fn quiesce_stops_rx_and_the_interrupt_fd_is_the_drivers() {
        let (_mem, mut d, hw) = setup();
        assert_eq!(d.irq_fds().len(), 1);
        d.post_rx(0x1000, 2048, 1).unwrap();
        d.flush_rx().unwrap();
        d.quiesce().unwrap();
        assert_eq!(hw.inject_rx(&frame(MAC, 64)), HwRx::NoBuffer, "queues stopped");
        d.start().unwrap();
        d.post_rx(0x1000, 2048, 2).unwrap();
        d.flush_rx().unwrap();
        assert!(matches!(hw.inject_rx(&frame(MAC, 64)), HwRx::Delivered { .. }));
        d.handle_irq(0).unwrap();
        let mut out = Vec::new();
        d.reap_rx(&mut out).unwrap();
        assert_eq!(out[0].cookie, 2, "the buffer posted before quiesce is forgotten");
    }

    #[test]
    fn two_vectors_as_in_production_queue_interrupts_on_vector_0_and_one_register_read() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (mut d, hw) = igb_on_model_msix(&mem, MAC, 2).unwrap();
        d.start().unwrap();
        let fds = d.irq_fds();
        assert_eq!(fds.len(), 2);
        d.post_rx(0x1000, 2048, 1).unwrap();
        d.flush_rx().unwrap();
        assert!(matches!(hw.inject_rx(&frame(MAC, 64)), HwRx::Delivered { .. }));
        let pending = |fd| {
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd, zero timeout.
            unsafe { libc::poll(&mut p, 1, 0) == 1 }
        };
        assert!(pending(fds[0]) && !pending(fds[1]), "the queue cause goes to vector 0 only");
        let (r0, w0) = hw.register_accesses();
        d.handle_irq(0).unwrap();
        let (r1, w1) = hw.register_accesses();
        assert_eq!((r1 - r0, w1 - w0), (1, 0), "vector 0: EICR only (no ICR, as with one vector)");
        assert!(!pending(fds[0]), "the eventfd is drained");
        assert_eq!(
            d.regs.read32(EITR0),
            EITR_INTERVAL_20K | EITR_CNT_IGNR,
            "the queue vector is moderated (~20 000 interrupts/s at most)"
        );
    }

    /// One interrupt interval: frames of `lens` bytes arrive in fresh
    /// buffers, are reaped, and the queue vector's interrupt is handled.
    /// Returns the queue vector's EITR afterwards.
    fn interval(d: &mut Igb<IgbHwRegs>, hw: &IgbHw, next: &mut u64, lens: &[usize]) -> u32 {
        for _ in lens {
            d.post_rx(0x1000 + (*next % 256) * 0x800, 2048, *next).unwrap();
            *next += 1;
        }
        d.flush_rx().unwrap();
        for &len in lens {
            assert!(matches!(hw.inject_rx(&frame(MAC, len)), HwRx::Delivered { .. }));
        }
        let mut out = Vec::new();
        d.reap_rx(&mut out).unwrap();
        assert_eq!(out.len(), lens.len());
        d.handle_irq(0).unwrap();
        d.regs.read32(EITR0)
    }

    #[test]
    fn the_queue_vector_goes_to_the_bulk_rate_for_a_stream_of_full_frames_and_back_for_pings() {
        use crate::e1000_common::moderation::{Rate, EITR_INTERVAL_4K};
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let (mut d, hw) = igb_on_model_msix(&mem, MAC, 2).unwrap();
        d.start().unwrap();
        let mut next = 0;
        let latency = EITR_INTERVAL_20K | EITR_CNT_IGNR;
        assert_eq!(interval(&mut d, &hw, &mut next, &[1514]), latency, "one frame is not a stream yet");
        let (_, w0) = hw.register_accesses();
        assert_eq!(interval(&mut d, &hw, &mut next, &[1514, 1514]), EITR_INTERVAL_4K | EITR_CNT_IGNR);
        let (_, w1) = hw.register_accesses();
        // post_rx's tail write, and the EITR write.
        assert_eq!(w1 - w0, 2, "the new rate is one register write");
        assert_eq!(interval(&mut d, &hw, &mut next, &[1514, 66]), Rate::Bulk.eitr(), "stays bulk");
        let (_, w2) = hw.register_accesses();
        assert_eq!(w2 - w1, 1, "no EITR write while the rate holds (the tail write only)");
        assert_eq!(interval(&mut d, &hw, &mut next, &[98, 98]), latency, "pings bring the low-latency rate back");
        assert_eq!(d.irq_rate_changes(), Some(2));
        // A reset reprograms the NIC at the low-latency rate, and the driver
        // starts over from there.
        interval(&mut d, &hw, &mut next, &[1514]);
        assert_eq!(interval(&mut d, &hw, &mut next, &[1514]), Rate::Bulk.eitr());
        d.reset().unwrap();
        assert_eq!(d.regs.read32(EITR0), latency);
        assert_eq!(d.moderation.rate(), Rate::Latency);
    }
}
