//! The metadata service on a virtio-net interface: guest frames for the
//! MMDS address are taken off the TX queue before the backend sees them
//! ([`take_if_mmds`], called by [`super::TxQueue::pop`]) and handed to the
//! interface's [`MmdsStack`]; its answers are copied into guest RX buffers
//! ([`super::Net::inject_mmds`]).
//!
//! RX buffers: a backend may hold every buffer the guest posted (the tap
//! keeps up to its limit posted, the shim gives them all to its NIC, where
//! they stay until wire traffic comes), so the device keeps buffers of its
//! own in reserve, taken from the ring before each backend pass, and writes
//! answers into them at once. How many: a Linux guest refills its RX ring
//! only once more than 32 buffers are used (half its NAPI budget of 64), so
//! a reserve of one would be spent at the first answer and never come back
//! while the backend sits on the rest; [`MMDS_RX_RESERVE`] (48) lets MMDS
//! answer past that point, and the refill goes to the reserve first (guest
//! kicks stay on while it is short).

use log::warn;
use mmds::frame::CLASSIFY_LEN;
use mmds::stack::MAX_FRAME;
use mmds::MmdsStack;
use vm_memory::GuestAddress;

use super::backend::{RxBuffer, RxHeader, VNET_HDR_LEN};
use super::device::Net;
use super::direct::{RxNext, RxQueue};
use super::metrics::NetMetrics;
use crate::mem::RamMap;

/// RX buffers the device keeps for MMDS answers (at most half the ring):
/// more than a Linux guest uses before it refills (32).
pub const MMDS_RX_RESERVE: usize = 48;

/// Offset of `gso_type` in `struct virtio_net_hdr_v1`.
const HDR_GSO_TYPE_OFFSET: usize = 1;
/// `gso_type` of a frame without segmentation offload.
const GSO_NONE: u8 = 0;

/// Reads `buf.len()` bytes of the chain `segs` from byte `offset` on;
/// false if the chain is shorter or a segment cannot be read.
fn read_chain(ram: &RamMap, segs: &[(GuestAddress, u32)], mut offset: usize, buf: &mut [u8]) -> bool {
    let mut done = 0;
    for &(addr, len) in segs {
        let len = len as usize;
        if offset >= len {
            offset -= len;
            continue;
        }
        let n = (len - offset).min(buf.len() - done);
        if !ram.read(addr.0 + offset as u64, &mut buf[done..done + n]) {
            return false;
        }
        done += n;
        offset = 0;
        if done == buf.len() {
            return true;
        }
    }
    done == buf.len()
}

/// Writes `parts`, one after the other, at the start of the chain `segs`;
/// false if they do not fit or a segment cannot be written.
fn write_chain(ram: &RamMap, segs: &[(GuestAddress, u32)], parts: &[&[u8]]) -> bool {
    let mut seg = 0;
    let mut at = 0usize;
    for part in parts {
        let mut part = *part;
        while !part.is_empty() {
            let Some(&(addr, len)) = segs.get(seg) else { return false };
            let room = len as usize - at;
            if room == 0 {
                seg += 1;
                at = 0;
                continue;
            }
            let n = room.min(part.len());
            if !ram.write(addr.0 + at as u64, &part[..n]) {
                return false;
            }
            at += n;
            part = &part[n..];
        }
    }
    true
}

/// If the TX frame `segs` (`len` bytes with its virtio-net header) is for
/// the metadata service, hands it to `stack` and returns true: the caller
/// completes it without sending it. Frames the stack cannot take (GSO,
/// larger than an Ethernet frame) are dropped and counted, never sent.
pub(super) fn take_if_mmds(
    ram: &RamMap,
    segs: &[(GuestAddress, u32)],
    len: u32,
    stack: &mut MmdsStack,
    metrics: &mut NetMetrics,
) -> bool {
    let mut head = [0u8; VNET_HDR_LEN + CLASSIFY_LEN];
    if (len as usize) < head.len() || !read_chain(ram, segs, 0, &mut head) {
        return false;
    }
    if !stack.wants(&head[VNET_HDR_LEN..]) {
        return false;
    }
    let frame_len = len as usize - VNET_HDR_LEN;
    if head[HDR_GSO_TYPE_OFFSET] != GSO_NONE || frame_len > MAX_FRAME {
        metrics.mmds_frames_dropped += 1;
        return true;
    }
    let mut frame = vec![0u8; frame_len];
    if !read_chain(ram, segs, VNET_HDR_LEN, &mut frame) {
        metrics.mmds_frames_dropped += 1;
        return true;
    }
    metrics.mmds_frames_intercepted += 1;
    stack.receive(frame);
    true
}

impl Net {
    /// Serves the metadata service on this interface with `stack`. Before
    /// activation.
    pub fn set_mmds(&mut self, stack: MmdsStack) {
        self.mmds = Some(Box::new(stack));
    }

    /// The interface's metadata-service stack, if it has one.
    pub fn mmds(&self) -> Option<&MmdsStack> {
        self.mmds.as_deref()
    }

    /// Copies the metadata service's pending frames into guest RX buffers
    /// (the reserve, then the next ones the guest posted), and keeps a
    /// buffer in reserve for the next. Runs before every backend RX pass and
    /// after every event.
    pub(super) fn inject_mmds(&mut self) {
        let (Some(stack), Some(a)) = (self.mmds.as_deref_mut(), self.active.as_mut()) else { return };
        let want = MMDS_RX_RESERVE.min(usize::from(a.rx.size()) / 2).max(1);
        if a.mmds_reserve.len() >= want && !stack.has_frames() {
            return;
        }
        let (mut injected, mut bytes, mut dropped) = (0u64, 0u64, 0u64);
        let mut q = RxQueue::new(&mut a.rx, &mut a.rx_held, &mut self.metrics, &mut self.seg_buf, &self.id);
        loop {
            // Top the reserve up first: the backend gets what is left.
            while a.mmds_reserve.len() < want {
                match q.pop() {
                    Some(RxNext::One(d)) => a.mmds_reserve.push_back(RxBuffer {
                        head: d.head(),
                        segs: vec![(GuestAddress(d.gpa()), d.len())],
                        len: d.len(),
                    }),
                    Some(RxNext::Chain(c)) => a.mmds_reserve.push_back(c.to_rx_buffer()),
                    None => break,
                }
            }
            let Some(buf) = a.mmds_reserve.pop_front() else { break };
            let Some(frame) = stack.pop_frame() else {
                a.mmds_reserve.push_front(buf);
                break;
            };
            let total = frame.len() + VNET_HDR_LEN;
            if total > buf.len as usize {
                // Cannot happen with a Linux guest (its buffers hold a
                // whole Ethernet frame); the buffer stays in reserve.
                dropped += 1;
                a.mmds_reserve.push_front(buf);
                continue;
            }
            let hdr = RxHeader::ONE.bytes();
            if !write_chain(q.ram(), &buf.segs, &[&hdr, &frame]) {
                warn!("virtio-net {}: cannot write an MMDS frame into RX buffer {}", self.id, buf.head);
                dropped += 1;
                stack.unpop_frame(frame);
                q.refuse(buf.head, super::backend::DropReason::BadAddress);
                break;
            }
            q.complete(buf.head, total as u32);
            injected += 1;
            bytes += total as u64;
        }
        let added = q.added();
        drop(q);
        a.rx_added |= added;
        self.metrics.mmds_frames_injected += injected;
        self.metrics.mmds_copied_bytes += bytes;
        self.metrics.mmds_frames_dropped += dropped;
        if a.mmds_reserve.len() < want && a.rx.enable_notification() {
            // Buffers came in while kicks were off: another round for them.
            if let Err(e) = self.queue_evts[super::device::RX_QUEUE].write(1) {
                warn!("virtio-net {}: cannot re-arm RX: {e}", self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_reads_and_writes_cross_segments() {
        let mem = crate::GuestMemory::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let ram = RamMap::new(&mem);
        let segs = [(GuestAddress(0x1000), 3), (GuestAddress(0x2000), 5), (GuestAddress(0x3000), 4)];
        assert!(write_chain(&ram, &segs, &[b"ab", b"cdefgh", b"ij"]));
        let mut all = [0u8; 10];
        assert!(read_chain(&ram, &segs, 0, &mut all));
        assert_eq!(&all, b"abcdefghij");
        let mut mid = [0u8; 4];
        assert!(read_chain(&ram, &segs, 2, &mut mid));
        assert_eq!(&mid, b"cdef");
        assert!(!read_chain(&ram, &segs, 10, &mut mid), "past the chain");
        assert!(!write_chain(&ram, &segs, &[&[0u8; 13]]), "larger than the chain");
    }
}
