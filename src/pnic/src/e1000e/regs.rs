//! Intel 82574L register offsets and bits (datasheet names, section 10).

pub const CTRL: u32 = 0x0000;
pub const CTRL_FD: u32 = 1 << 0;
/// Stop issuing new master (DMA) requests; STATUS.GIO_MASTER_EN clears when done.
pub const CTRL_GIO_MASTER_DISABLE: u32 = 1 << 2;
pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
pub const STATUS: u32 = 0x0008;
pub const STATUS_LU: u32 = 1 << 1;
pub const STATUS_GIO_MASTER_EN: u32 = 1 << 19;
pub const CTRL_EXT: u32 = 0x0018;
pub const CTRL_EXT_DRV_LOAD: u32 = 1 << 28;
pub const CTRL_EXT_PBA_SUPPORT: u32 = 1 << 31;

pub const MDIC: u32 = 0x0020;
pub const MDIC_DATA_MASK: u32 = 0xffff;
pub const MDIC_REG_SHIFT: u32 = 16;
pub const MDIC_PHY_SHIFT: u32 = 21;
pub const MDIC_OP_WRITE: u32 = 1 << 26;
pub const MDIC_READY: u32 = 1 << 28;
pub const MDIC_ERROR: u32 = 1 << 30;
pub const PHY_ADDR: u32 = 1;
pub const PHY_CTRL: u32 = 0;
/// PHY_CTRL: 1000 Mb/s, full duplex, autonegotiation enable + restart.
pub const PHY_CTRL_AUTONEG_RESTART: u32 = 0x1340;

pub const ICR: u32 = 0x00c0;
pub const ITR: u32 = 0x00c4;
pub const IMS: u32 = 0x00d0;
pub const IMC: u32 = 0x00d8;
/// MSI-X auto-clear of ICR causes.
pub const EIAC: u32 = 0x00dc;
pub const IVAR: u32 = 0x00e4;
pub const ICR_LSC: u32 = 1 << 2;
pub const ICR_RXQ0: u32 = 1 << 20;
pub const ICR_TXQ0: u32 = 1 << 22;
pub const ICR_OTHER: u32 = 1 << 24;
/// IVAR: 4-bit fields (vector in bits 2:0, valid bit 3) for RXQ0, TXQ0, other.
pub const IVAR_VALID: u32 = 0x8;
pub const IVAR_RXQ0_SHIFT: u32 = 0;
pub const IVAR_TXQ0_SHIFT: u32 = 8;
pub const IVAR_OTHER_SHIFT: u32 = 16;

pub const RCTL: u32 = 0x0100;
pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
/// Long packets; left clear so frames over 1522 bytes are dropped by the NIC.
pub const RCTL_LPE: u32 = 1 << 5;
pub const RCTL_BAM: u32 = 1 << 15;
/// RCTL.BSIZE (bits 17:16) = 00 with BSEX clear: 2048-byte buffers.
pub const RCTL_BSIZE_MASK: u32 = 3 << 16;
pub const RCTL_BSEX: u32 = 1 << 25;
pub const RCTL_SECRC: u32 = 1 << 26;
pub const RFCTL: u32 = 0x5008;
/// RFCTL.EXTEN: extended RX descriptors; left clear (legacy descriptors).
pub const RFCTL_EXTEN: u32 = 1 << 15;

pub const RDBAL0: u32 = 0x2800;
pub const RDBAH0: u32 = 0x2804;
pub const RDLEN0: u32 = 0x2808;
pub const RDH0: u32 = 0x2810;
pub const RDT0: u32 = 0x2818;

pub const TCTL: u32 = 0x0400;
pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;
pub const TCTL_CT_SHIFT: u32 = 4;
pub const TCTL_COLD_SHIFT: u32 = 12;
pub const TIPG: u32 = 0x0410;
/// IPGT 8, IPGR1 8, IPGR2 6 (copper).
pub const TIPG_DEFAULT: u32 = 8 | (8 << 10) | (6 << 20);
pub const TDBAL0: u32 = 0x3800;
pub const TDBAH0: u32 = 0x3804;
pub const TDLEN0: u32 = 0x3808;
pub const TDH0: u32 = 0x3810;
pub const TDT0: u32 = 0x3818;

pub const MTA: u32 = 0x5200;
pub const MTA_ENTRIES: u32 = 128;
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
pub const RA_ENTRIES: u32 = 16;
pub const RAH_AV: u32 = 1 << 31;

// Legacy RX descriptor: address @0, length @8 (u16), status @12 (u8),
// errors @13 (u8).
pub const RXD_LEN_OFF: u64 = 8;
pub const RXD_STATUS_OFF: u64 = 12;
pub const RXD_STAT_DD: u32 = 1 << 0;
pub const RXD_STAT_EOP: u32 = 1 << 1;
/// Errors byte (bits 15:8 of the status word): CE, SE, SEQ, CXE, RXE.
pub const RXD_ERR_FRAME: u32 = (1 | 2 | 4 | 0x10 | 0x80) << 8;

// Legacy TX descriptor: address @0, length @8 (u16), CSO @10, CMD @11,
// status @12.
pub const TXD_CMD_OFF: u64 = 8;
pub const TXD_CMD_EOP: u32 = 1 << 24;
pub const TXD_CMD_IFCS: u32 = 1 << 25;
pub const TXD_CMD_RS: u32 = 1 << 27;
pub const TXD_STATUS_OFF: u64 = 12;
pub const TXD_STAT_DD: u32 = 1 << 0;

pub const DESC_SIZE: u64 = 16;
