//! Intel 82576 virtual function registers (datasheet section 8.28, "Virtual
//! Function Device Registers") and the PF/VF mailbox protocol's message ids
//! and flags (as Linux's igbvf `e1000_mbx.h` names them).
//!
//! The VF's BAR0 is a window onto its own slice of the NIC: control
//! (VTCTRL, at the PF's CTRL offset), status, its interrupt registers and
//! queue 0/1 registers at the same offsets as the PF's queue 0/1. What the
//! PF owns (RCTL, TCTL, receive addresses, the PHY) is not there.

pub use crate::e1000_common::regs::{
    CTRL, CTRL_RST, RDBAH0, RDBAL0, RDH0, RDLEN0, RDT0, STATUS, STATUS_LU, TDBAH0, TDBAL0, TDH0, TDLEN0, TDT0,
};
pub use crate::igb::regs::{
    RXDCTL0, RXDCTL_ENABLE, RXD_ERR_FRAME, RXD_LEN_OFF, RXD_STATUS_OFF, SRRCTL0, SRRCTL_BSIZEPKT_SHIFT,
    SRRCTL_BSIZEPKT_UNIT, SRRCTL_DESCTYPE_ADV_ONEBUF, SRRCTL_DROP_EN, TXDCTL0, TXDCTL_ENABLE, TXD_CMD_DEXT,
    TXD_DTYP_DATA, TXD_PAYLEN_SHIFT,
};

// VF interrupt registers (VTEICS..VTEICR; same offsets as the PF's EICS..).
pub const VTEIMS: u32 = 0x1524;
pub const VTEIMC: u32 = 0x1528;
pub const VTEIAC: u32 = 0x152c;
pub const VTEIAM: u32 = 0x1530;
pub const VTEICR: u32 = 0x1580;
/// Interrupt throttling of VF vector n: `VTEITR0 + 4 * n`.
pub const VTEITR0: u32 = 0x1680;
/// Queue-to-vector map: RX queue 0 in bits 7:0, TX queue 0 in 15:8.
pub const VTIVAR0: u32 = 0x1700;
/// Mailbox ("other cause") vector in bits 7:0.
pub const VTIVAR_MISC: u32 = 0x1740;
pub const VTIVAR_VALID: u32 = 0x80;
pub const VTIVAR_TX_SHIFT: u32 = 8;
/// The VF has three MSI-X vectors; EICR/EIMS bit n is vector n.
pub const VF_MSIX_VECTORS: u32 = 3;
pub const VF_EICR_ALL: u32 = (1 << VF_MSIX_VECTORS) - 1;

// The mailbox: a control register and 16 words of shared memory.
pub const V2PMAILBOX: u32 = 0x0c40;
pub const VMBMEM: u32 = 0x0800;
pub const MBX_WORDS: usize = 16;
/// V2PMAILBOX bits. REQ: VF posts a message; ACK: VF read the PF's message;
/// VFU/PFU: who holds the buffer; PFSTS: the PF posted a message; PFACK:
/// the PF read ours; RSTI: the PF is resetting (the VF must wait); RSTD:
/// the PF finished a reset. PFSTS, PFACK and RSTD clear when read.
pub const MBX_REQ: u32 = 1 << 0;
pub const MBX_ACK: u32 = 1 << 1;
pub const MBX_VFU: u32 = 1 << 2;
pub const MBX_PFU: u32 = 1 << 3;
pub const MBX_PFSTS: u32 = 1 << 4;
pub const MBX_PFACK: u32 = 1 << 5;
pub const MBX_RSTI: u32 = 1 << 6;
pub const MBX_RSTD: u32 = 1 << 7;

// Message word 0: id in bits 15:0, info in 23:16, type flags on top.
pub const MSG_ID_MASK: u32 = 0xffff;
pub const MSGINFO_SHIFT: u32 = 16;
pub const MSGTYPE_ACK: u32 = 1 << 31;
pub const MSGTYPE_NACK: u32 = 1 << 30;
pub const MSGTYPE_CTS: u32 = 1 << 29;
pub const VF_RESET: u32 = 0x01;
pub const VF_SET_MULTICAST: u32 = 0x03;
pub const VF_SET_LPE: u32 = 0x05;
pub const VF_SET_PROMISC: u32 = 0x06;
/// SET_PROMISC info flag: all multicast.
pub const VF_SET_PROMISC_MULTICAST: u32 = 0x02 << MSGINFO_SHIFT;
/// Unsolicited PF message (a ping after link or reset events).
pub const PF_CONTROL_MSG: u32 = 0x0100;
