//! Intel 82574L register offsets and bits (datasheet names, section 10): the
//! e1000 family's common ones plus the 82574L's own.

pub use crate::e1000_common::regs::*;

/// Stop issuing new master (DMA) requests; STATUS.GIO_MASTER_EN clears when done.
pub const CTRL_GIO_MASTER_DISABLE: u32 = 1 << 2;
pub const STATUS_GIO_MASTER_EN: u32 = 1 << 19;
pub const CTRL_EXT_PBA_SUPPORT: u32 = 1 << 31;

pub const ITR: u32 = 0x00c4;
/// MSI-X auto-clear of ICR causes.
pub const EIAC: u32 = 0x00dc;
pub const IVAR: u32 = 0x00e4;
pub const ICR_RXQ0: u32 = 1 << 20;
pub const ICR_TXQ0: u32 = 1 << 22;
pub const ICR_OTHER: u32 = 1 << 24;
/// IVAR: 4-bit fields (vector in bits 2:0, valid bit 3) for RXQ0, TXQ0, other.
pub const IVAR_VALID: u32 = 0x8;
pub const IVAR_RXQ0_SHIFT: u32 = 0;
pub const IVAR_TXQ0_SHIFT: u32 = 8;
pub const IVAR_OTHER_SHIFT: u32 = 16;

/// RCTL.BSIZE (bits 17:16) = 00 with BSEX clear: 2048-byte buffers.
pub const RCTL_BSIZE_MASK: u32 = 3 << 16;
pub const RCTL_BSEX: u32 = 1 << 25;
pub const RFCTL: u32 = 0x5008;
/// RFCTL.EXTEN: extended RX descriptors; left clear (legacy descriptors).
pub const RFCTL_EXTEN: u32 = 1 << 15;

pub const TIPG: u32 = 0x0410;
/// IPGT 8, IPGR1 8, IPGR2 6 (copper).
pub const TIPG_DEFAULT: u32 = 8 | (8 << 10) | (6 << 20);

// Legacy RX descriptor: address @0, length @8 (u16), status @12 (u8),
// errors @13 (u8).
pub const RXD_LEN_OFF: u64 = 8;
pub const RXD_STATUS_OFF: u64 = 12;
/// Errors byte (bits 15:8 of the status word): CE, SE, SEQ, CXE, RXE.
pub const RXD_ERR_FRAME: u32 = (1 | 2 | 4 | 0x10 | 0x80) << 8;
/// Status byte: UDP checksum checked (UDPCS), TCP/UDP checksum checked (TCPCS).
pub const RXD_STAT_UDPCS: u32 = 0x10;
pub const RXD_STAT_TCPCS: u32 = 0x20;
/// Errors byte: TCP/UDP checksum error (TCPE), IPv4 checksum error (IPE).
pub const RXD_ERR_TCPE: u32 = 0x20 << 8;
pub const RXD_ERR_IPE: u32 = 0x40 << 8;
/// Receive checksum control: IPv4 (IPOFL) and TCP/UDP (TUOFL) checks.
pub const RXCSUM: u32 = 0x5000;
pub const RXCSUM_IPOFL: u32 = 1 << 8;
pub const RXCSUM_TUOFL: u32 = 1 << 9;

// Legacy TX descriptor: address @0, length @8 (u16), CSO @10, CMD @11,
// status @12.
pub const TXD_CMD_OFF: u64 = 8;
