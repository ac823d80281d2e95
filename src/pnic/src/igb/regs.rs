//! Intel 82576 register offsets and bits (datasheet names, section 8): the
//! e1000 family's common ones plus the 82576's own.

pub use crate::e1000_common::regs::*;

// Extended (MSI-X) interrupts.
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
/// Interrupt vector allocation: `IVAR[n]` maps RX queue n (bits 7:0) and
/// TX queue n (bits 15:8) for n < 8.
pub const IVAR0: u32 = 0x1700;
pub const IVAR_MISC: u32 = 0x1740;
pub const IVAR_VALID: u32 = 0x80;
pub const IVAR_TX_SHIFT: u32 = 8;
/// IVAR_MISC: "other cause" (link change) vector in bits 15:8.
pub const IVAR_MISC_OTHER_SHIFT: u32 = 8;
pub const EITR0: u32 = 0x1680;
// EITR's values: e1000_common::moderation (the PF's and a VF's alike).

// Receive queue extras.
/// Maximum accepted frame length when RCTL.LPE is set.
pub const RLPML: u32 = 0x5004;
pub const SRRCTL0: u32 = 0x280c;
pub const RXDCTL0: u32 = 0x2828;
/// SRRCTL.BSIZEPACKET in 1 KiB units (bits 6:0).
pub const SRRCTL_BSIZEPKT_SHIFT: u32 = 0;
pub const SRRCTL_BSIZEPKT_UNIT: u32 = 1024;
/// SRRCTL.DESCTYPE = advanced, one buffer.
pub const SRRCTL_DESCTYPE_ADV_ONEBUF: u32 = 1 << 25;
pub const SRRCTL_DROP_EN: u32 = 1 << 31;
pub const RXDCTL_ENABLE: u32 = 1 << 25;

// Transmit queue extras.
pub const TXDCTL0: u32 = 0x3828;
pub const TXDCTL_ENABLE: u32 = 1 << 25;

// Advanced RX descriptor, write-back format (byte offsets in the 16 bytes).
pub const RXD_STATUS_OFF: u64 = 8;
pub const RXD_LEN_OFF: u64 = 12;
/// Extended errors (bits 31:20 of the status/error word): CE (24), SE (25),
/// SEQ (26), CXE (28), RXE (31). Bits 29 and 30 are the checksum errors
/// (TCPE, IPE): a frame with a bad checksum is delivered, not dropped.
pub const RXD_ERR_FRAME: u32 = (1 << 24) | (1 << 25) | (1 << 26) | (1 << 28) | (1 << 31);
/// Status: UDP checksum checked (UDPCS), TCP (or UDP) checksum checked (TCPCS).
pub const RXD_STAT_UDPCS: u32 = 1 << 4;
pub const RXD_STAT_TCPCS: u32 = 1 << 5;
/// Errors: TCP/UDP checksum error (TCPE), IPv4 header checksum error (IPE).
pub const RXD_ERR_TCPE: u32 = 1 << 29;
pub const RXD_ERR_IPE: u32 = 1 << 30;

/// Receive checksum control: IPv4 header (IPOFLD) and TCP/UDP (TUOFLD)
/// checksum checks on receive, reported in the write-back.
pub const RXCSUM: u32 = 0x5000;
pub const RXCSUM_IPOFLD: u32 = 1 << 8;
pub const RXCSUM_TUOFLD: u32 = 1 << 9;

// Advanced TX data descriptor.
pub const TXD_CMD_DEXT: u32 = 1 << 29;
pub const TXD_DTYP_DATA: u32 = 0x3 << 20;
pub const TXD_PAYLEN_SHIFT: u32 = 14;
pub const TXD_CMD_TSE: u32 = 1 << 31;
/// POPTS (olinfo bits 13:8): insert the IPv4 header checksum (IXSM) and
/// the TCP/UDP checksum (TXSM).
pub const TXD_POPTS_IXSM: u32 = 1 << 8;
pub const TXD_POPTS_TXSM: u32 = 1 << 9;

// Advanced TX context descriptor (datasheet 7.2.2.2): words 0 (VLAN,
// MACLEN, IPLEN), 1 (seed), 2 (DTYP, TUCMD), 3 (MSS, L4LEN, IDX).
pub const TXD_DTYP_CTXT: u32 = 0x2 << 20;
pub const TXCTX_MACLEN_SHIFT: u32 = 9;
/// IPLEN is bits 8:0, MACLEN bits 15:9.
pub const TXCTX_IPLEN_MAX: u16 = 0x1ff;
pub const TXCTX_MACLEN_MAX: u8 = 0x7f;
pub const TXCTX_TUCMD_IPV4: u32 = 1 << 10;
pub const TXCTX_TUCMD_L4T_TCP: u32 = 1 << 11;
/// L4T = 00: UDP.
pub const TXCTX_TUCMD_L4T_UDP: u32 = 0;
pub const TXCTX_L4LEN_SHIFT: u32 = 8;
pub const TXCTX_MSS_SHIFT: u32 = 16;
/// Context index (bit 4 of word 3 and of the data descriptors' olinfo):
/// the shim uses context 0 only.
pub const TXCTX_IDX_SHIFT: u32 = 4;
