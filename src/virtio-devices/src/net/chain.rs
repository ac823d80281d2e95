//! What a validated descriptor chain is ([`super::ring::SplitRing::parse`]
//! walks and checks it): everything in it is guest-controlled, so each
//! descriptor's (address, length) is copied out once and checked against
//! guest RAM before anything is handed to a backend; a later change of the
//! descriptor table by the guest cannot affect what was validated.

use vm_memory::GuestAddress;

/// Upper bound on descriptors in one chain. Linux uses at most
/// MAX_SKB_FRAGS + 2 (19 by default, 47 with CONFIG_MAX_SKB_FRAGS=45) for a
/// TX frame or a "big" RX buffer; anything far longer is a broken or hostile
/// driver, and the bound keeps each chain's work (and iovec count) small.
pub const MAX_CHAIN_DESCS: usize = 128;

/// Which way the device uses a chain's buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// RX: every descriptor must be device-writable.
    DeviceWrites,
    /// TX: every descriptor must be device-readable.
    DeviceReads,
}

/// A validated chain, besides its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainInfo {
    pub head: u16,
    /// Sum of the segment lengths.
    pub len: u32,
}

/// The guest address of byte `offset` of the buffer made of `segs`, if the
/// buffer is that long (used to find header fields such as num_buffers, which
/// a driver may split across descriptors).
pub fn addr_at(segs: &[(GuestAddress, u32)], mut offset: usize) -> Option<GuestAddress> {
    for &(addr, len) in segs {
        let len = len as usize;
        if offset < len {
            return addr.0.checked_add(offset as u64).map(GuestAddress);
        }
        offset -= len;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_at_walks_segments() {
        let segs = [(GuestAddress(0x1000), 4), (GuestAddress(0x9000), 8)];
        assert_eq!(addr_at(&segs, 0), Some(GuestAddress(0x1000)));
        assert_eq!(addr_at(&segs, 3), Some(GuestAddress(0x1003)));
        assert_eq!(addr_at(&segs, 4), Some(GuestAddress(0x9000)));
        assert_eq!(addr_at(&segs, 10), Some(GuestAddress(0x9006)));
        assert_eq!(addr_at(&segs, 12), None);
    }
}
