//! The virtio-vsock packet header (VIRTIO 1.2, 5.10.6) and moving packets
//! between descriptor chains and the host.
//!
//! Everything here reads guest-controlled memory: a TX chain's header and
//! payload are copied out after checking that the chain's readable buffers
//! hold them; an RX chain is checked (writable, inside guest memory) before
//! a packet is put together for it, so writing it cannot fail half-way.

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress};

use crate::GuestMemory;

/// Size of `struct virtio_vsock_hdr`.
pub const HDR_SIZE: usize = 44;
/// Most payload one packet carries, in either direction: Linux sends at
/// most 64 KiB per packet (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE); a guest claiming
/// more is refused before anything is copied.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// `type`: stream sockets, the only type the device offers.
pub const TYPE_STREAM: u16 = 1;

/// `op` values.
pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flags: the sender will receive / send no more data.
pub const SHUTDOWN_F_RCV: u32 = 1;
pub const SHUTDOWN_F_SEND: u32 = 2;

/// The header, host byte order (little-endian on the wire).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Header {
        let u64_at =
            |o: usize| u64::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3], b[o + 4], b[o + 5], b[o + 6], b[o + 7]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        }
    }

    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a TX chain was not taken as a packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("chain has {0} readable bytes, less than the {HDR_SIZE}-byte header")]
    ShortHeader(usize),
    #[error("header claims {0} payload bytes; at most {MAX_PAYLOAD} are allowed")]
    PayloadTooLarge(u32),
    #[error("header claims {claimed} payload bytes but the chain has {present} after the header")]
    ShortPayload { claimed: u32, present: usize },
    #[error("buffer at {0:#x} is outside guest memory")]
    BadBuffer(u64),
    #[error("descriptor chain is malformed")]
    BadChain,
}

/// A packet the guest sent: its header and its payload (`hdr.len` bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxPacket {
    pub hdr: Header,
    pub payload: Vec<u8>,
}

/// The (address, length) of each buffer of one kind in a chain. The chain
/// iterator stops at a malformed link (a loop is cut by its length limit),
/// so a broken chain reads as a short one.
fn buffers(chain: DescriptorChain<&GuestMemory>, writable: bool) -> Vec<(u64, usize)> {
    chain.filter(|d| d.is_write_only() == writable).map(|d| (d.addr().0, d.len() as usize)).collect()
}

/// Copies `dst.len()` bytes starting `skip` bytes into `bufs` into `dst`;
/// an error if the buffers are shorter or outside guest memory.
fn gather(mem: &GuestMemory, bufs: &[(u64, usize)], mut skip: usize, dst: &mut [u8]) -> Result<(), PacketError> {
    let mut done = 0;
    for &(addr, len) in bufs {
        if done == dst.len() {
            break;
        }
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = (len - skip).min(dst.len() - done);
        let at = addr.checked_add(skip as u64).ok_or(PacketError::BadBuffer(addr))?;
        mem.read_slice(&mut dst[done..done + n], GuestAddress(at)).map_err(|_| PacketError::BadBuffer(at))?;
        done += n;
        skip = 0;
    }
    if done == dst.len() {
        Ok(())
    } else {
        Err(PacketError::BadChain)
    }
}

/// Reads the packet in a TX chain, checking every length against the chain.
pub fn read_tx(mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> Result<TxPacket, PacketError> {
    let bufs = buffers(chain, false);
    let total = bufs.iter().fold(0usize, |acc, &(_, l)| acc.saturating_add(l));
    if total < HDR_SIZE {
        return Err(PacketError::ShortHeader(total));
    }
    let mut h = [0u8; HDR_SIZE];
    gather(mem, &bufs, 0, &mut h)?;
    let hdr = Header::from_bytes(&h);
    if hdr.len as usize > MAX_PAYLOAD {
        return Err(PacketError::PayloadTooLarge(hdr.len));
    }
    let present = total - HDR_SIZE;
    if hdr.len as usize > present {
        return Err(PacketError::ShortPayload { claimed: hdr.len, present });
    }
    let mut payload = vec![0u8; hdr.len as usize];
    gather(mem, &bufs, HDR_SIZE, &mut payload)?;
    Ok(TxPacket { hdr, payload })
}

/// An RX chain checked for writing: its writable buffers, all inside guest memory.
pub struct RxBuffers {
    bufs: Vec<(u64, usize)>,
    capacity: usize,
}

impl RxBuffers {
    /// The chain's writable buffers, if they hold at least a header and all
    /// lie in guest memory.
    pub fn new(mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> Result<RxBuffers, PacketError> {
        let bufs = buffers(chain, true);
        let mut capacity = 0usize;
        for &(addr, len) in &bufs {
            if !crate::mem::range_in_ram(mem, GuestAddress(addr), len) {
                return Err(PacketError::BadBuffer(addr));
            }
            capacity = capacity.saturating_add(len);
        }
        if capacity < HDR_SIZE {
            return Err(PacketError::ShortHeader(capacity));
        }
        Ok(RxBuffers { bufs, capacity })
    }

    /// Payload bytes one packet in these buffers can carry.
    pub fn payload_capacity(&self) -> usize {
        (self.capacity - HDR_SIZE).min(MAX_PAYLOAD)
    }

    /// Writes the header and `payload` (at most `payload_capacity()` bytes);
    /// returns the bytes written, the used length.
    pub fn write(&self, mem: &GuestMemory, hdr: &Header, payload: &[u8]) -> Result<u32, PacketError> {
        let h = hdr.to_bytes();
        let mut parts: [&[u8]; 2] = [&h, payload];
        let mut written = 0usize;
        for &(addr, len) in &self.bufs {
            let mut off = 0usize;
            while off < len {
                let Some(part) = parts.iter_mut().find(|p| !p.is_empty()) else {
                    break;
                };
                let n = part.len().min(len - off);
                let at = GuestAddress(addr + off as u64);
                mem.write_slice(&part[..n], at).map_err(|_| PacketError::BadBuffer(at.0))?;
                *part = &part[n..];
                off += n;
                written += n;
            }
        }
        if parts.iter().any(|p| !p.is_empty()) {
            return Err(PacketError::BadChain);
        }
        // At most HDR_SIZE + MAX_PAYLOAD.
        Ok(written as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_little_endian() {
        let h = Header {
            src_cid: 3,
            dst_cid: 2,
            src_port: 1024,
            dst_port: 52,
            len: 7,
            type_: TYPE_STREAM,
            op: OP_RW,
            flags: 0,
            buf_alloc: 65536,
            fwd_cnt: 9,
        };
        let b = h.to_bytes();
        assert_eq!(&b[0..8], &3u64.to_le_bytes());
        assert_eq!(&b[30..32], &OP_RW.to_le_bytes());
        assert_eq!(Header::from_bytes(&b), h);
    }
}
