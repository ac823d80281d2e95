//! Turning a guest descriptor chain into a validated list of segments.
//!
//! Everything here is guest-controlled: the chain is walked once, each
//! descriptor's (address, length) is copied out and checked against guest RAM
//! before anything is handed to a backend, so a later change of the descriptor
//! table by the guest cannot affect what was validated.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::GuestAddress;

use super::backend::{DropReason, VNET_HDR_LEN};
use crate::mem::range_in_ram;
use crate::GuestMemory;

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

/// A validated chain: all segments inside guest RAM, right direction,
/// non-zero, at most [`MAX_CHAIN_DESCS`], total at least the net header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedChain {
    pub head: u16,
    pub segs: Vec<(GuestAddress, u32)>,
    pub len: u32,
}

/// What [`parse_chain_into`] found besides the segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChainInfo {
    pub head: u16,
    /// Sum of the segment lengths.
    pub len: u32,
}

/// Walks `chain` and validates it for `dir`. On failure returns the head (to
/// complete with length 0) and why it was rejected. Allocates the segment
/// list; the device's path uses [`parse_chain_into`].
pub fn parse_chain<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMemory,
    dir: Direction,
) -> Result<ParsedChain, (u16, DropReason)>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let mut segs = Vec::new();
    let info = parse_chain_into(chain, mem, dir, &mut segs)?;
    Ok(ParsedChain {
        head: info.head,
        segs,
        len: info.len,
    })
}

/// [`parse_chain`] into a caller-owned segment list (cleared first), so a
/// caller that reuses one list allocates nothing per chain. On error the
/// list's contents are unspecified.
pub fn parse_chain_into<M>(
    chain: DescriptorChain<M>,
    mem: &GuestMemory,
    dir: Direction,
    segs: &mut Vec<(GuestAddress, u32)>,
) -> Result<ChainInfo, (u16, DropReason)>
where
    M: Deref,
    M::Target: vm_memory::GuestMemory,
{
    let head = chain.head_index();
    segs.clear();
    let mut total: u64 = 0;
    // Whether the last descriptor seen asked for a successor: if the iterator
    // ends while this is set, it stopped on a loop (its TTL ran out), an
    // out-of-range next index, an unreadable descriptor or a bad indirect table.
    let mut wants_next = false;
    let mut count = 0usize;
    for desc in chain {
        count += 1;
        if count > MAX_CHAIN_DESCS {
            return Err((head, DropReason::ChainTooLong));
        }
        let writable = desc.is_write_only();
        if writable != (dir == Direction::DeviceWrites) {
            return Err((head, DropReason::WrongDirection));
        }
        let len = desc.len();
        if len == 0 {
            return Err((head, DropReason::ZeroLength));
        }
        if !range_in_ram(mem, desc.addr(), len as usize) {
            return Err((head, DropReason::BadAddress));
        }
        total += u64::from(len);
        segs.push((desc.addr(), len));
        wants_next = desc.has_next();
    }
    if count == 0 {
        return Err((head, DropReason::BadAddress));
    }
    if wants_next {
        return Err((head, DropReason::ChainTooLong));
    }
    if total < VNET_HDR_LEN as u64 {
        return Err((head, DropReason::ShortHeader));
    }
    // The iterator stops before 2^32 bytes, so this cannot fail; stay
    // defensive anyway rather than truncate.
    let len = u32::try_from(total).map_err(|_| (head, DropReason::ChainTooLong))?;
    Ok(ChainInfo { head, len })
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
    use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use virtio_queue::{Queue, QueueOwnedT};
    use vm_memory::GuestMemoryMmap;

    const W: u16 = VRING_DESC_F_WRITE as u16;

    fn mem() -> GuestMemory {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x20_0000)]).unwrap()
    }

    fn desc(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    /// Puts `descs` at the start of the table as one chain (heads derived from
    /// the NEXT flags) and parses the first chain.
    fn parse(
        m: &GuestMemory,
        descs: &[RawDescriptor],
        dir: Direction,
    ) -> Result<ParsedChain, (u16, DropReason)> {
        let vq = MockSplitQueue::new(m, 16);
        vq.add_desc_chains(descs, 0).unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let chain = q.iter(m).unwrap().next().unwrap();
        parse_chain(chain, m, dir)
    }

    #[test]
    fn accepts_good_rx_and_tx_chains() {
        let m = mem();
        let p = parse(
            &m,
            &[
                desc(0x1_0000, 12, W | VRING_DESC_F_NEXT as u16, 1),
                desc(0x2_0000, 1500, W, 0),
            ],
            Direction::DeviceWrites,
        )
        .unwrap();
        assert_eq!(p.head, 0);
        assert_eq!(
            p.segs,
            vec![(GuestAddress(0x1_0000), 12), (GuestAddress(0x2_0000), 1500)]
        );
        assert_eq!(p.len, 1512);
        let p = parse(&m, &[desc(0x1_0000, 100, 0, 0)], Direction::DeviceReads).unwrap();
        assert_eq!(p.len, 100);
    }

    #[test]
    fn rejects_each_malformed_case() {
        let m = mem();
        let n = VRING_DESC_F_NEXT as u16;
        // Outside guest RAM, and straddling its end.
        assert_eq!(
            parse(&m, &[desc(0x4000_0000, 64, W, 0)], Direction::DeviceWrites)
                .unwrap_err()
                .1,
            DropReason::BadAddress
        );
        assert_eq!(
            parse(
                &m,
                &[desc(0x20_0000 - 8, 64, W, 0)],
                Direction::DeviceWrites
            )
            .unwrap_err()
            .1,
            DropReason::BadAddress
        );
        assert_eq!(
            parse(&m, &[desc(u64::MAX - 4, 64, W, 0)], Direction::DeviceWrites)
                .unwrap_err()
                .1,
            DropReason::BadAddress
        );
        // Wrong direction both ways, also in a later descriptor.
        assert_eq!(
            parse(&m, &[desc(0x1_0000, 64, 0, 0)], Direction::DeviceWrites)
                .unwrap_err()
                .1,
            DropReason::WrongDirection
        );
        assert_eq!(
            parse(
                &m,
                &[desc(0x1_0000, 64, n, 1), desc(0x2_0000, 64, W, 0)],
                Direction::DeviceReads
            )
            .unwrap_err()
            .1,
            DropReason::WrongDirection
        );
        // Zero length.
        assert_eq!(
            parse(
                &m,
                &[desc(0x1_0000, 64, W | n, 1), desc(0x2_0000, 0, W, 0)],
                Direction::DeviceWrites
            )
            .unwrap_err()
            .1,
            DropReason::ZeroLength
        );
        // Shorter than the header in total.
        assert_eq!(
            parse(&m, &[desc(0x1_0000, 11, 0, 0)], Direction::DeviceReads)
                .unwrap_err()
                .1,
            DropReason::ShortHeader
        );
        assert_eq!(
            parse(
                &m,
                &[desc(0x1_0000, 4, n, 1), desc(0x2_0000, 7, 0, 0)],
                Direction::DeviceReads
            )
            .unwrap_err()
            .1,
            DropReason::ShortHeader
        );
    }

    #[test]
    fn rejects_loops_and_long_chains() {
        let m = mem();
        let n = VRING_DESC_F_NEXT as u16;
        // 0 -> 1 -> 0 -> ...: add_desc_chains keeps our next fields.
        let looped = [desc(0x1_0000, 64, W | n, 1), desc(0x2_0000, 64, W | n, 0)];
        assert_eq!(
            parse(&m, &looped, Direction::DeviceWrites).unwrap_err().1,
            DropReason::ChainTooLong
        );
        // Self loop.
        assert_eq!(
            parse(&m, &[desc(0x1_0000, 64, W | n, 0)], Direction::DeviceWrites)
                .unwrap_err()
                .1,
            DropReason::ChainTooLong
        );
        // Next index beyond the queue.
        assert_eq!(
            parse(
                &m,
                &[desc(0x1_0000, 64, W | n, 200)],
                Direction::DeviceWrites
            )
            .unwrap_err()
            .1,
            DropReason::ChainTooLong
        );
    }

    #[test]
    fn rejects_chain_longer_than_the_bound() {
        let m = mem();
        let n = VRING_DESC_F_NEXT as u16;
        let qlen = 256u16;
        let chain_of = |k: usize| -> Vec<RawDescriptor> {
            (0..k as u16)
                .map(|i| {
                    let last = i as usize == k - 1;
                    desc(
                        0x10_0000 + u64::from(i) * 64,
                        64,
                        if last { 0 } else { n },
                        i + 1,
                    )
                })
                .collect()
        };
        for (k, ok) in [(MAX_CHAIN_DESCS + 1, false), (MAX_CHAIN_DESCS, true)] {
            let vq = MockSplitQueue::new(&m, qlen);
            vq.add_desc_chains(&chain_of(k), 0).unwrap();
            let mut q: Queue = vq.create_queue().unwrap();
            let chain = q.iter(&m).unwrap().next().unwrap();
            let r = parse_chain(chain, &m, Direction::DeviceReads);
            if ok {
                assert_eq!(r.unwrap().segs.len(), MAX_CHAIN_DESCS);
            } else {
                assert_eq!(r.unwrap_err().1, DropReason::ChainTooLong);
            }
        }
    }

    #[test]
    fn parse_chain_into_reuses_and_clears_the_list() {
        let m = mem();
        let vq = MockSplitQueue::new(&m, 16);
        vq.add_desc_chains(
            &[
                desc(0x1_0000, 12, W | VRING_DESC_F_NEXT as u16, 1),
                desc(0x2_0000, 1500, W, 0),
                desc(0x3_0000, 2048, W, 0),
            ],
            0,
        )
        .unwrap();
        let mut q: Queue = vq.create_queue().unwrap();
        let mut segs = Vec::with_capacity(MAX_CHAIN_DESCS);
        let cap = segs.capacity();
        let mut it = q.iter(&m).unwrap();
        let c = it.next().unwrap();
        let info = parse_chain_into(c, &m, Direction::DeviceWrites, &mut segs).unwrap();
        assert_eq!(info, ChainInfo { head: 0, len: 1512 });
        assert_eq!(segs.len(), 2);
        let c = it.next().unwrap();
        let info = parse_chain_into(c, &m, Direction::DeviceWrites, &mut segs).unwrap();
        assert_eq!(info, ChainInfo { head: 2, len: 2048 });
        assert_eq!(segs, vec![(GuestAddress(0x3_0000), 2048)], "cleared first");
        assert_eq!(segs.capacity(), cap, "no reallocation");
    }

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
