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

use std::time::Duration;

use vm_memory::GuestMemoryMmap;

use crate::bdf::Bdf;
use crate::driver::{DriverError, RegisterAccess};
use crate::e1000_common::driver::{self as family, Family, E1000};
use crate::e1000_common::ring::DescLayout;
use crate::e1000_common::{self as common, poll_until, NicConfig, OpenError, RxGeometry, ETH_MTU};
use crate::vfio::MmioRegs;
use regs::*;

pub const RX_RING_SIZE: usize = 256;
pub const TX_RING_SIZE: usize = 256;
/// Largest frame the NIC accepts with RCTL.LPE clear (1518 + VLAN tag).
pub const RX_MAX_FRAME: u32 = 1522;
pub const TX_MAX_FRAME: u32 = 1522;
pub const TX_MAX_SEGS: usize = 8;

const MASTER_TIMEOUT: Duration = Duration::from_millis(200);

/// The 82574L driver over any register access.
pub type E1000e<R> = E1000<E1000e82574, R>;

/// Open `bdf` through VFIO, map `guest` and bring the 82574L up.
pub fn open_vfio(bdf: Bdf, guest: &GuestMemoryMmap, cfg: NicConfig) -> Result<E1000e<MmioRegs>, OpenError> {
    family::open_vfio(bdf, guest, cfg)
}

/// The 82574L's legacy descriptors: RX length at byte 8, status at 12 with
/// the errors byte above it; TX command byte in the word at 8, no PAYLEN.
pub struct LegacyDesc;

impl DescLayout for LegacyDesc {
    const RXD_STATUS_OFF: u64 = RXD_STATUS_OFF;
    const RXD_LEN_OFF: u64 = RXD_LEN_OFF;
    const RXD_ERR_FRAME: u32 = RXD_ERR_FRAME;
    const RXD_L4_CHECKED: u32 = RXD_STAT_TCPCS | RXD_STAT_UDPCS;
    const RXD_CSUM_ERR: u32 = RXD_ERR_TCPE | RXD_ERR_IPE;
    fn tx_words(len: u32, last: bool, _frame_len: u32) -> [u32; 2] {
        let mut cmd = len | TXD_CMD_IFCS;
        if last {
            cmd |= TXD_CMD_EOP | TXD_CMD_RS;
        }
        // The word at TXD_CMD_OFF, then status (cleared) and special.
        [cmd, 0]
    }
}

/// What the 82574L does its own way: legacy interrupts routed through one
/// IVAR, buffer size and frame cap in RCTL, and no queue-enable bits (DMA
/// stops through the GIO master handshake).
pub struct E1000e82574;

impl Family for E1000e82574 {
    type Desc = LegacyDesc;
    const NAME: &'static str = "e1000e";
    const RX_RING_SIZE: usize = RX_RING_SIZE;
    const TX_RING_SIZE: usize = TX_RING_SIZE;
    const RX_MAX_FRAME: u32 = RX_MAX_FRAME;
    const TX_MAX_FRAME: u32 = TX_MAX_FRAME;
    const TX_MAX_SEGS: usize = TX_MAX_SEGS;

    /// MTU 1500 at most: the 82574L has no programmable frame cap (no
    /// RLPML; RCTL.LPE lets frames up to its fixed jumbo limit in), so the
    /// MTU could not bound what lands in the guest's buffers. Below 1500 the
    /// cap stays 1522 (frames up to a 1500-byte payload still come in).
    fn rx_geometry(mtu: u16) -> Result<RxGeometry, DriverError> {
        if mtu > ETH_MTU {
            return Err(DriverError::Unsupported(format!(
                "e1000e: MTU {mtu} is not supported: the 82574L has no programmable frame cap (RLPML), so \
                 shimvmm runs it at MTU {ETH_MTU} at most; use an 82576 for jumbo frames"
            )));
        }
        Ok(RxGeometry { max_frame: RX_MAX_FRAME, buf_size: 2048 })
    }

    fn mask_irqs(regs: &impl RegisterAccess) {
        regs.write32(IMC, u32::MAX);
    }

    fn configure<R: RegisterAccess>(d: &mut E1000e<R>) -> Result<(), DriverError> {
        let _ = d.regs.read32(ICR);
        let ext = d.regs.read32(CTRL_EXT);
        d.regs.write32(CTRL_EXT, ext | CTRL_EXT_DRV_LOAD | CTRL_EXT_PBA_SUPPORT);
        let ctrl = d.read(CTRL)?;
        d.regs.write32(CTRL, (ctrl | CTRL_SLU | CTRL_FD) & !CTRL_GIO_MASTER_DISABLE);
        common::mdic_write(&d.regs, PHY_CTRL, PHY_CTRL_AUTONEG_RESTART)?;

        d.regs.write32(RCTL, 0);
        d.regs.write32(TCTL, 0);
        // Legacy RX descriptors.
        let rfctl = d.regs.read32(RFCTL);
        d.regs.write32(RFCTL, rfctl & !RFCTL_EXTEN);
        common::program_rings(&d.regs, &d.rx_ring, &d.tx_ring);
        // TCP/UDP and IPv4 checksums checked on receive (GUEST_CSUM).
        d.regs.write32(RXCSUM, RXCSUM_IPOFL | RXCSUM_TUOFL);
        d.regs.write32(TIPG, TIPG_DEFAULT);
        common::write_mac_filter(&d.regs, d.mac);
        if d.msix_vectors > 0 {
            let other = if d.msix_vectors > 1 { 1 } else { 0 };
            d.regs.write32(
                IVAR,
                (IVAR_VALID << IVAR_RXQ0_SHIFT)
                    | (IVAR_VALID << IVAR_TXQ0_SHIFT)
                    | ((IVAR_VALID | other) << IVAR_OTHER_SHIFT),
            );
            d.regs.write32(EIAC, ICR_RXQ0 | ICR_TXQ0 | ICR_OTHER);
            d.regs.write32(ITR, 0);
            d.regs.write32(IMS, ICR_RXQ0 | ICR_TXQ0 | ICR_OTHER | ICR_LSC);
        }
        Ok(())
    }

    fn start<R: RegisterAccess>(d: &mut E1000e<R>) -> Result<(), DriverError> {
        let ctrl = d.regs.read32(CTRL);
        d.regs.write32(CTRL, ctrl & !CTRL_GIO_MASTER_DISABLE);
        common::zero_heads_and_tails(&d.regs);
        let rctl = d.regs.read32(RCTL) & !(RCTL_BSIZE_MASK | RCTL_BSEX | RCTL_LPE | RCTL_UPE);
        d.regs.write32(RCTL, rctl | RCTL_EN | RCTL_BAM | RCTL_SECRC | RCTL_MPE);
        d.regs.write32(TCTL, common::TCTL_START);
        Ok(())
    }

    fn stop<R: RegisterAccess>(d: &mut E1000e<R>) -> Result<(), DriverError> {
        let rctl = d.regs.read32(RCTL);
        d.regs.write32(RCTL, rctl & !RCTL_EN);
        let tctl = d.regs.read32(TCTL);
        d.regs.write32(TCTL, tctl & !TCTL_EN);
        let ctrl = d.regs.read32(CTRL);
        d.regs.write32(CTRL, ctrl | CTRL_GIO_MASTER_DISABLE);
        if !poll_until(MASTER_TIMEOUT, || d.regs.read32(STATUS) & STATUS_GIO_MASTER_EN == 0) {
            return Err(DriverError::Timeout("STATUS.GIO_MASTER_EN to clear"));
        }
        Ok(())
    }

    fn handle_irq<R: RegisterAccess>(d: &mut E1000e<R>, _index: usize) -> Result<(), DriverError> {
        let icr = d.regs.read32(ICR);
        if icr == u32::MAX {
            d.check_alive()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
