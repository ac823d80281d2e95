//! User-space driver for the Intel 82576 (igb, 8086:10c9): one RX and one TX
//! queue with advanced descriptors.
//!
//! Safety argument for the zero-copy shim: RCTL.LPE + RLPML cap every
//! accepted frame at the MTU plus the Ethernet header and CRC (the NIC adds a
//! VLAN tag's 4 bytes by itself), and CRC stripping is on. Up to MTU 1500
//! the packet buffer size (SRRCTL.BSIZEPACKET, 2 KiB) is above the cap: one
//! buffer per frame, never more than the cap written at a posted address.
//! Above 1500 (jumbo frames) the buffer size is 1 KiB and a frame spans
//! several descriptors, the NIC writing at most 1 KiB into each.
//! Interrupts are wakeups only: completions are found by polling the
//! descriptors' DD bits.

pub mod regs;

use std::time::Duration;

use vm_memory::GuestMemoryMmap;

use crate::bdf::Bdf;
use crate::driver::{DriverError, L4Proto, RegisterAccess, TxOffload, TxOffloadCaps};
use crate::e1000_common::driver::{self as family, Family, E1000};
use crate::e1000_common::moderation::Rate;
use crate::e1000_common::ring::DescLayout;
use crate::e1000_common::{
    self as common, poll_until, NicConfig, OpenError, RxGeometry, ETH_FCS_LEN, ETH_HLEN, ETH_MTU, VLAN_HLEN,
};
use crate::vfio::MmioRegs;
use regs::*;

/// RX descriptors in the ring (ring bytes must be a multiple of 128).
pub const RX_RING_SIZE: usize = 256;
pub const TX_RING_SIZE: usize = 256;
/// Frame cap programmed in RLPML: an Ethernet frame with one VLAN tag and
/// without CRC (1514 + 4) plus slack for a CRC counted by RLPML; the most the NIC
/// writes into one RX buffer.
pub const RX_MAX_FRAME: u32 = 1522;
/// NIC packet buffer size (SRRCTL.BSIZEPACKET), in bytes, up to MTU 1500.
pub const RX_BUF_SIZE: u32 = 2048;
/// NIC packet buffer size for jumbo frames: the smallest the 82576 takes,
/// so that every guest buffer of 12 + 1 KiB or more can take a part.
pub const RX_JUMBO_BUF_SIZE: u32 = 1024;
/// Largest MTU the driver programs (a 9018-byte frame, 9 descriptors).
pub const MAX_MTU: u16 = 9000;
/// Largest frame we ask the NIC to transmit without TSO at MTU 1500.
pub const TX_MAX_FRAME: u32 = 1522;
pub const TX_MAX_SEGS: usize = 8;
/// Largest TSO frame (header included): 64 KiB, what a virtio-net guest
/// sends at most (PAYLEN itself has 18 bits).
pub const TSO_MAX_FRAME: u32 = 64 * 1024;
/// Most data descriptors of an offloaded frame (the header copy and the
/// guest's segments; a Linux guest uses at most MAX_SKB_FRAGS + 1 = 18
/// for a 64 KiB frame). QEMU's 82576 takes 64.
pub const TX_MAX_OFFLOAD_SEGS: usize = 32;
/// The 82576's TX offloads through advanced context descriptors (its VF's
/// too): TCP/UDP checksums and TCP segmentation, IPv4 and IPv6.
pub const TX_OFFLOADS: TxOffloadCaps =
    TxOffloadCaps { csum: true, tso: true, tso_max_frame: TSO_MAX_FRAME, max_segs: TX_MAX_OFFLOAD_SEGS };
/// Per-descriptor buffer length limit (DTALEN is 16 bits).
pub use crate::e1000_common::ring::TX_MAX_SEG_LEN;

const QUEUE_TIMEOUT: Duration = Duration::from_millis(200);

/// The 82576 driver over any register access.
pub type Igb<R> = E1000<Igb82576, R>;

/// Open `bdf` through VFIO, map `guest` for DMA and bring the 82576 up with
/// `mac` as its only unicast address.
pub fn open_vfio(bdf: Bdf, guest: &GuestMemoryMmap, cfg: NicConfig) -> Result<Igb<MmioRegs>, OpenError> {
    family::open_vfio(bdf, guest, cfg)
}

/// RLPML for `geo`: the largest frame with its CRC and without a VLAN tag
/// (MTU + 18); the NIC counts a tag on top (Linux's igb programs it so),
/// which is why `max_frame` includes one.
pub fn rlpml(geo: &RxGeometry) -> u32 {
    geo.max_frame - VLAN_HLEN + ETH_FCS_LEN
}

/// Set `bit` in queue control register `reg` and wait for it to read back set.
pub(crate) fn enable_queue(
    regs: &impl RegisterAccess,
    reg: u32,
    bit: u32,
    what: &'static str,
) -> Result<(), DriverError> {
    let v = regs.read32(reg);
    regs.write32(reg, v | bit);
    if !poll_until(QUEUE_TIMEOUT, || regs.read32(reg) & bit != 0) {
        return Err(DriverError::Timeout(what));
    }
    Ok(())
}

/// Clear `bit` in `reg` and wait for it to read back clear (the queue's DMA stopped).
pub(crate) fn disable_queue(
    regs: &impl RegisterAccess,
    reg: u32,
    bit: u32,
    what: &'static str,
) -> Result<(), DriverError> {
    let v = regs.read32(reg);
    regs.write32(reg, v & !bit);
    if !poll_until(QUEUE_TIMEOUT, || regs.read32(reg) & bit == 0) {
        return Err(DriverError::Timeout(what));
    }
    Ok(())
}

/// The 82576's advanced descriptors: RX write-back status/errors at byte 8,
/// length at 12; TX data descriptors carry DTYP/DEXT and the frame's PAYLEN.
pub struct AdvancedDesc;

impl DescLayout for AdvancedDesc {
    const RXD_STATUS_OFF: u64 = RXD_STATUS_OFF;
    const RXD_LEN_OFF: u64 = RXD_LEN_OFF;
    const RXD_ERR_FRAME: u32 = RXD_ERR_FRAME;
    const RXD_L4_CHECKED: u32 = RXD_STAT_TCPCS | RXD_STAT_UDPCS;
    const RXD_CSUM_ERR: u32 = RXD_ERR_TCPE | RXD_ERR_IPE;
    fn tx_words(len: u32, last: bool, frame_len: u32) -> [u32; 2] {
        let mut cmd = len | TXD_DTYP_DATA | TXD_CMD_DEXT | TXD_CMD_IFCS;
        if last {
            cmd |= TXD_CMD_EOP | TXD_CMD_RS;
        }
        [cmd, frame_len << TXD_PAYLEN_SHIFT]
    }

    fn tx_context(off: &TxOffload) -> Option<[u32; 4]> {
        Some(context_words(off))
    }

    /// As Linux's igb: TSE on every descriptor of a TSO frame; PAYLEN and
    /// POPTS (TXSM, and IXSM for IPv4 TSO) on the first, olinfo 0 after.
    fn tx_offload_words(len: u32, first: bool, last: bool, paylen: u32, off: &TxOffload) -> [u32; 2] {
        let mut cmd = len | TXD_DTYP_DATA | TXD_CMD_DEXT | TXD_CMD_IFCS;
        let mut popts = TXD_POPTS_TXSM;
        if let TxOffload::Tso { layout, .. } = off {
            cmd |= TXD_CMD_TSE;
            if layout.ipv4 {
                popts |= TXD_POPTS_IXSM;
            }
        }
        if last {
            cmd |= TXD_CMD_EOP | TXD_CMD_RS;
        }
        let olinfo = if first { paylen << TXD_PAYLEN_SHIFT | popts } else { 0 };
        [cmd, olinfo]
    }
}

/// The advanced context descriptor's four words for `off` (context 0).
/// MACLEN and IPLEN are masked to their fields; the shim checks they fit.
pub fn context_words(off: &TxOffload) -> [u32; 4] {
    let l = off.layout();
    let lens = u32::from(l.ip_len & TXCTX_IPLEN_MAX) | u32::from(l.mac_len & TXCTX_MACLEN_MAX) << TXCTX_MACLEN_SHIFT;
    let mut tucmd = TXD_CMD_DEXT | TXD_DTYP_CTXT;
    if l.ipv4 {
        tucmd |= TXCTX_TUCMD_IPV4;
    }
    tucmd |= match l.l4 {
        L4Proto::Tcp => TXCTX_TUCMD_L4T_TCP,
        L4Proto::Udp => TXCTX_TUCMD_L4T_UDP,
    };
    let mss_l4len = match off {
        TxOffload::Csum(_) => 0,
        TxOffload::Tso { l4_len, mss, .. } => {
            u32::from(*mss) << TXCTX_MSS_SHIFT | u32::from(*l4_len) << TXCTX_L4LEN_SHIFT
        }
    };
    [lens, 0, tucmd, mss_l4len]
}

/// What the 82576 does its own way: extended (MSI-X) interrupts, SRRCTL and
/// RLPML for the frame cap, per-queue enable bits that read back.
pub struct Igb82576;

impl Family for Igb82576 {
    type Desc = AdvancedDesc;
    const NAME: &'static str = "igb";
    const RX_RING_SIZE: usize = RX_RING_SIZE;
    const TX_RING_SIZE: usize = TX_RING_SIZE;
    const RX_MAX_FRAME: u32 = RX_MAX_FRAME;
    const TX_MAX_FRAME: u32 = TX_MAX_FRAME;
    const TX_MAX_SEGS: usize = TX_MAX_SEGS;
    const TX_OFFLOADS: TxOffloadCaps = TX_OFFLOADS;
    const QUEUE_EITR: Option<u32> = Some(EITR0);

    fn rx_geometry(mtu: u16) -> Result<RxGeometry, DriverError> {
        if !(68..=MAX_MTU).contains(&mtu) {
            return Err(DriverError::Unsupported(format!("igb: MTU {mtu} is outside 68..={MAX_MTU}")));
        }
        // Bytes written for the largest frame: header, payload and a VLAN
        // tag the NIC may let through on top of RLPML (CRC stripped).
        let max_frame = u32::from(mtu) + ETH_HLEN + VLAN_HLEN;
        let buf_size = if mtu <= ETH_MTU { RX_BUF_SIZE } else { RX_JUMBO_BUF_SIZE };
        Ok(RxGeometry { max_frame, buf_size })
    }

    fn mask_irqs(regs: &impl RegisterAccess) {
        regs.write32(EIMC, u32::MAX);
        regs.write32(IMC, u32::MAX);
    }

    fn configure<R: RegisterAccess>(d: &mut Igb<R>) -> Result<(), DriverError> {
        let ext = d.regs.read32(CTRL_EXT);
        d.regs.write32(CTRL_EXT, ext | CTRL_EXT_DRV_LOAD);
        let ctrl = d.read(CTRL)?;
        d.regs.write32(CTRL, ctrl | CTRL_SLU | CTRL_FD);
        // QEMU's igb (and a PHY after FLR) keeps the link down until
        // autonegotiation is restarted.
        common::mdic_write(&d.regs, PHY_CTRL, PHY_CTRL_AUTONEG_RESTART)?;

        // Both queues stopped; descriptor rings, buffer size, frame cap.
        d.regs.write32(RCTL, 0);
        d.regs.write32(RXDCTL0, 0);
        d.regs.write32(TCTL, 0);
        d.regs.write32(TXDCTL0, 0);
        common::program_rings(&d.regs, &d.rx_ring, &d.tx_ring);
        d.regs.write32(
            SRRCTL0,
            ((d.rx_geo.buf_size / SRRCTL_BSIZEPKT_UNIT) << SRRCTL_BSIZEPKT_SHIFT)
                | SRRCTL_DESCTYPE_ADV_ONEBUF
                | SRRCTL_DROP_EN,
        );
        d.regs.write32(RLPML, rlpml(&d.rx_geo));
        // TCP/UDP and IPv4 checksums checked on receive (GUEST_CSUM).
        d.regs.write32(RXCSUM, RXCSUM_IPOFLD | RXCSUM_TUOFLD);
        common::write_mac_filter(&d.regs, d.mac);

        // MSI-X: vector 0 = RX0 + TX0, vector 1 = other causes (link).
        if d.msix_vectors > 0 {
            d.regs.write32(GPIE, GPIE_NSICR | GPIE_MULTIPLE_MSIX | GPIE_EIAME | GPIE_PBA);
            d.regs.write32(IVAR0, IVAR_VALID | (IVAR_VALID << IVAR_TX_SHIFT));
            let mut mask = 1u32;
            if d.msix_vectors > 1 {
                d.regs.write32(IVAR_MISC, (IVAR_VALID | 1) << IVAR_MISC_OTHER_SHIFT);
                mask |= 1 << 1;
                d.regs.write32(IMS, ICR_LSC);
            }
            d.regs.write32(EIAC, mask);
            d.regs.write32(EIAM, 0);
            // Interrupt moderation on the queue vector: without it the NIC
            // raises one MSI per frame and per TX write-back, and each costs
            // a host interrupt, a wakeup of this thread and often a guest
            // interrupt. It starts at the low-latency rate; the driver moves
            // it with the traffic (e1000_common::moderation).
            d.regs.write32(EITR0, Rate::Latency.eitr());
            d.regs.write32(EIMS, mask);
        }
        Ok(())
    }

    fn start<R: RegisterAccess>(d: &mut Igb<R>) -> Result<(), DriverError> {
        common::zero_heads_and_tails(&d.regs);
        enable_queue(&d.regs, RXDCTL0, RXDCTL_ENABLE, "RXDCTL.ENABLE to read back set")?;
        enable_queue(&d.regs, TXDCTL0, TXDCTL_ENABLE, "TXDCTL.ENABLE to read back set")?;
        let rctl = d.regs.read32(RCTL);
        d.regs.write32(RCTL, rctl | RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_LPE | RCTL_MPE);
        d.regs.write32(TCTL, common::TCTL_START);
        Ok(())
    }

    fn stop<R: RegisterAccess>(d: &mut Igb<R>) -> Result<(), DriverError> {
        let rctl = d.regs.read32(RCTL);
        d.regs.write32(RCTL, rctl & !RCTL_EN);
        let r1 = disable_queue(&d.regs, RXDCTL0, RXDCTL_ENABLE, "RXDCTL.ENABLE to read back clear");
        let r2 = disable_queue(&d.regs, TXDCTL0, TXDCTL_ENABLE, "TXDCTL.ENABLE to read back clear");
        let tctl = d.regs.read32(TCTL);
        d.regs.write32(TCTL, tctl & !TCTL_EN);
        r1.and(r2)
    }

    fn handle_irq<R: RegisterAccess>(d: &mut Igb<R>, index: usize) -> Result<(), DriverError> {
        // Vector 0 (queues): EIAC already cleared the cause; one read tells a
        // live NIC from a vanished one. Vector 1: read ICR for the link cause.
        let eicr = d.regs.read32(EICR);
        let icr = if index > 0 || d.msix_vectors < 2 { d.regs.read32(ICR) } else { 0 };
        if eicr == u32::MAX {
            d.check_alive()?;
        }
        if icr & ICR_LSC != 0 {
            log::info!("igb: link changed, now {}", if d.regs.read32(STATUS) & STATUS_LU != 0 { "up" } else { "down" });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
