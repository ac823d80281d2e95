//! Registers and descriptor bits the whole Intel e1000 family (82574L, 82576,
//! ...) has at the same offsets with the same meaning. Each family's `regs`
//! module re-exports these and adds its own.

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

// Legacy interrupt cause / mask registers.
pub const ICR: u32 = 0x00c0;
pub const IMS: u32 = 0x00d0;
pub const IMC: u32 = 0x00d8;
pub const ICR_LSC: u32 = 1 << 2;

// Receive control and queue 0.
pub const RCTL: u32 = 0x0100;
pub const RCTL_EN: u32 = 1 << 1;
pub const RCTL_UPE: u32 = 1 << 3;
pub const RCTL_MPE: u32 = 1 << 4;
/// Long packets: frames over 1522 bytes are dropped while it is clear.
pub const RCTL_LPE: u32 = 1 << 5;
pub const RCTL_BAM: u32 = 1 << 15;
pub const RCTL_SECRC: u32 = 1 << 26;
pub const RDBAL0: u32 = 0x2800;
pub const RDBAH0: u32 = 0x2804;
pub const RDLEN0: u32 = 0x2808;
pub const RDH0: u32 = 0x2810;
pub const RDT0: u32 = 0x2818;

// Transmit control and queue 0.
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

// Address filtering.
pub const MTA: u32 = 0x5200;
pub const MTA_ENTRIES: u32 = 128;
pub const RAL0: u32 = 0x5400;
pub const RAH0: u32 = 0x5404;
pub const RA_ENTRIES: u32 = 16;
pub const RAH_AV: u32 = 1 << 31;

// Descriptor bits common to legacy and advanced descriptors (the status
// word's position differs per layout, its low bits do not).
pub const RXD_STAT_DD: u32 = 1 << 0;
pub const RXD_STAT_EOP: u32 = 1 << 1;
pub const TXD_CMD_EOP: u32 = 1 << 24;
pub const TXD_CMD_IFCS: u32 = 1 << 25;
pub const TXD_CMD_RS: u32 = 1 << 27;
/// TX descriptor status (DD) lives at byte 12 in both layouts.
pub const TXD_STATUS_OFF: u64 = 12;
pub const TXD_STAT_DD: u32 = 1 << 0;

/// Size of one descriptor (legacy and advanced alike).
pub const DESC_SIZE: u64 = 16;
