//! Intel 82576 register offsets and bits (datasheet names, section 8).

// General control and status.
pub const CTRL: u32 = 0x0000;
pub const CTRL_FD: u32 = 1 << 0;
pub const CTRL_SLU: u32 = 1 << 6;
pub const CTRL_RST: u32 = 1 << 26;
pub const STATUS: u32 = 0x0008;
pub const STATUS_LU: u32 = 1 << 1;
pub const CTRL_EXT: u32 = 0x0018;
pub const CTRL_EXT_DRV_LOAD: u32 = 1 << 28;

// PHY access through the MDI control register.
pub const MDIC: u32 = 0x0020;
pub const MDIC_DATA_MASK: u32 = 0xffff;
pub const MDIC_REG_SHIFT: u32 = 16;
pub const MDIC_PHY_SHIFT: u32 = 21;
pub const MDIC_OP_WRITE: u32 = 1 << 26;
pub const MDIC_OP_READ: u32 = 2 << 26;
pub const MDIC_READY: u32 = 1 << 28;
pub const MDIC_ERROR: u32 = 1 << 30;
/// The internal PHY's MDIO address.
pub const PHY_ADDR: u32 = 1;
/// PHY control register (IEEE 802.3 register 0).
pub const PHY_CTRL: u32 = 0;
/// PHY_CTRL value: 1000 Mb/s, full duplex, autonegotiation enable + restart.
pub const PHY_CTRL_AUTONEG_RESTART: u32 = 0x1340;

// Interrupts.
pub const ICR: u32 = 0x00c0;
pub const IMS: u32 = 0x00d0;
pub const IMC: u32 = 0x00d8;
pub const ICR_LSC: u32 = 1 << 2;
pub const EICS: u32 = 0x1520;
pub const EIMS: u32 = 0x1524;
pub const EIMC: u32 = 0x1528;
pub const EIAC: u32 = 0x152c;
pub const EIAM: u32 = 0x1530;
pub const EICR: u32 = 0x1580;
pub const GPIE: u32 = 0x1514;
pub const GPIE_NSICR: u32 = 1 << 0;
pub const GPIE_MULTIPLE_MSIX: u32 = 1 << 4;
pub const GPIE_EIAME: u32 = 1 << 30;
pub const GPIE_PBA: u32 = 1 << 31;
/// Interrupt vector allocation: IVAR[n] maps RX queue n (bits 7:0) and
/// TX queue n (bits 15:8) for n < 8.
pub const IVAR0: u32 = 0x1700;
pub const IVAR_MISC: u32 = 0x1740;
pub const IVAR_VALID: u32 = 0x80;
pub const IVAR_TX_SHIFT: u32 = 8;
/// IVAR_MISC: "other cause" (link change) vector in bits 15:8.
pub const IVAR_MISC_OTHER_SHIFT: u32 = 8;
pub const EITR0: u32 = 0x1680;

// Receive.
pub const RCTL: u32 = 0x0100;
pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
pub const RCTL_LPE: u32 = 1 << 5;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_SECRC: u32 = 1 << 26;
/// Maximum accepted frame length when RCTL.LPE is set.
pub const RLPML: u32 = 0x5004;
pub const RDBAL0: u32 = 0x2800;
pub const RDBAH0: u32 = 0x2804;
pub const RDLEN0: u32 = 0x2808;
pub const SRRCTL0: u32 = 0x280c;
pub const RDH0: u32 = 0x2810;
pub const RDT0: u32 = 0x2818;
pub const RXDCTL0: u32 = 0x2828;
/// SRRCTL.BSIZEPACKET in 1 KiB units (bits 6:0).
pub const SRRCTL_BSIZEPKT_SHIFT: u32 = 0;
pub const SRRCTL_BSIZEPKT_UNIT: u32 = 1024;
/// SRRCTL.DESCTYPE = advanced, one buffer.
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
pub const SRRCTL_DROP_EN: u32 = 1 << 31;
pub const RXDCTL_ENABLE: u32 = 1 << 25;

// Transmit.
pub const TCTL: u32 = 0x0400;
pub const TCTL_EN: u32 = 1 << 1;
pub const TCTL_PSP: u32 = 1 << 3;
pub const TCTL_CT_SHIFT: u32 = 4;
pub const TCTL_COLD_SHIFT: u32 = 12;
pub const TDBAL0: u32 = 0x3800;
pub const TDBAH0: u32 = 0x3804;
pub const TDLEN0: u32 = 0x3808;
pub const TDH0: u32 = 0x3810;
pub const TDT0: u32 = 0x3818;
pub const TXDCTL0: u32 = 0x3828;
pub const TXDCTL_ENABLE: u32 = 1 << 25;

// Address filtering.
pub const MTA: u32 = 0x5200;
pub const MTA_ENTRIES: u32 = 128;
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
pub const RA_ENTRIES: u32 = 16;
pub const RAH_AV: u32 = 1 << 31;

// Advanced RX descriptor, write-back format (byte offsets in the 16 bytes).
pub const RXD_STATUS_OFF: u64 = 8;
pub const RXD_LEN_OFF: u64 = 12;
pub const RXD_STAT_DD: u32 = 1 << 0;
pub const RXD_STAT_EOP: u32 = 1 << 1;
/// Extended errors (bits 31:20 of the status/error word): CE, SE, SEQ, CXE, RXE.
pub const RXD_ERR_FRAME: u32 = (1 << 24) | (1 << 25) | (1 << 26) | (1 << 28) | (1 << 29);

// Advanced TX data descriptor.
pub const TXD_CMD_EOP: u32 = 1 << 24;
pub const TXD_CMD_IFCS: u32 = 1 << 25;
pub const TXD_CMD_RS: u32 = 1 << 27;
pub const TXD_CMD_DEXT: u32 = 1 << 29;
pub const TXD_DTYP_DATA: u32 = 0x3 << 20;
pub const TXD_PAYLEN_SHIFT: u32 = 14;
pub const TXD_STATUS_OFF: u64 = 12;
pub const TXD_STAT_DD: u32 = 1 << 0;

/// Size of one advanced descriptor.
pub const DESC_SIZE: u64 = 16;
