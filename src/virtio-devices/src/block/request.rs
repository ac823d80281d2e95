//! Turning an untrusted descriptor chain into a checked virtio-blk request
//! (VIRTIO 1.2, 5.2.6).
//!
//! The chain is treated as two byte streams, as the spec asks (no assumptions
//! about framing): the device-readable descriptors (header, then OUT data) and
//! the device-writable ones that follow (IN data, then the status byte, which
//! is the last writable byte). Every descriptor is checked against guest
//! memory before anything is read or written.

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use crate::GuestMemory;

/// `struct virtio_blk_outhdr`: type, reserved, sector (little endian).
pub const HEADER_LEN: u64 = 16;
/// More descriptors than this in one request is treated as a broken chain
/// (bounds work per request even with huge indirect tables).
pub const MAX_DESCRIPTORS: usize = 1024;

pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

/// A contiguous piece of guest memory, already checked to be inside guest RAM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    Unsupported(u32),
}

/// A well-formed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub kind: RequestType,
    pub sector: u64,
    /// OUT: the readable bytes after the header; IN/GET_ID: the writable bytes
    /// before the status byte; empty otherwise.
    pub data: Vec<Segment>,
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain was rejected (keys of the `malformed` metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Malformed {
    /// The head descriptor (or an indirect table) could not be read.
    BadDescriptor,
    /// A descriptor points outside guest memory.
    BadAddress,
    /// A zero-length descriptor.
    ZeroLength,
    /// A readable descriptor after a writable one, or data flowing the wrong
    /// way for the request type (e.g. writable data on an OUT request).
    WrongDirection,
    /// A loop, too many descriptors, or a `next` index out of range.
    ChainTooLong,
    /// No writable byte at the end of the chain for the status.
    MissingStatus,
    /// Fewer than 16 readable bytes for the request header.
    ShortHeader,
}

impl Malformed {
    pub const ALL: [Malformed; 7] = [
        Malformed::BadDescriptor,
        Malformed::BadAddress,
        Malformed::ZeroLength,
        Malformed::WrongDirection,
        Malformed::ChainTooLong,
        Malformed::MissingStatus,
        Malformed::ShortHeader,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Malformed::BadDescriptor => "bad_descriptor",
            Malformed::BadAddress => "bad_address",
            Malformed::ZeroLength => "zero_length",
            Malformed::WrongDirection => "wrong_direction",
            Malformed::ChainTooLong => "chain_too_long",
            Malformed::MissingStatus => "missing_status",
            Malformed::ShortHeader => "short_header",
        }
    }
}

/// A rejected chain, with the status byte's address when it is safe to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub reason: Malformed,
    pub status: Option<GuestAddress>,
}

impl Request {
    /// Parses and checks a chain popped from the request queue.
    pub fn parse<M>(chain: DescriptorChain<M>, mem: &GuestMemory) -> Result<Request, ParseError>
    where
        M: Deref<Target = GuestMemory>,
    {
        let mut descs = Vec::new();
        let mut truncated = false;
        for d in chain {
            if descs.len() == MAX_DESCRIPTORS {
                truncated = true;
                break;
            }
            descs.push(d);
        }
        // The iterator stops silently on a loop (its TTL runs out), on a `next`
        // out of range and on unreadable entries; the last descriptor still
        // saying "next" gives it away.
        truncated |= descs.last().is_some_and(|d| d.has_next());
        if descs.is_empty() {
            return Err(ParseError { reason: Malformed::BadDescriptor, status: None });
        }

        // The status byte is the last byte of the last descriptor, if that one
        // is writable and really in guest memory: only then may an error be
        // reported through it.
        let last = descs[descs.len() - 1];
        let status = (last.is_write_only() && last.len() > 0)
            .then(|| last.addr().checked_add(u64::from(last.len()) - 1))
            .flatten()
            .filter(|&a| mem.check_range(a, 1));
        let fail = |reason| Err(ParseError { reason, status });

        if truncated {
            return fail(Malformed::ChainTooLong);
        }
        let mut readable = Vec::new();
        let mut writable = Vec::new();
        for d in &descs {
            if d.len() == 0 {
                return fail(Malformed::ZeroLength);
            }
            if !mem.check_range(d.addr(), d.len() as usize) {
                return fail(Malformed::BadAddress);
            }
            let seg = Segment { addr: d.addr(), len: d.len() };
            if d.is_write_only() {
                writable.push(seg);
            } else if !writable.is_empty() {
                return fail(Malformed::WrongDirection);
            } else {
                readable.push(seg);
            }
        }
        let Some(status) = status else {
            return fail(Malformed::MissingStatus);
        };

        let readable_len: u64 = readable.iter().map(|s| u64::from(s.len)).sum();
        if readable_len < HEADER_LEN {
            return fail(Malformed::ShortHeader);
        }
        let mut header = [0u8; HEADER_LEN as usize];
        let (head_segs, out_data) = split_at(&readable, HEADER_LEN);
        let mut filled = 0usize;
        for s in head_segs {
            let end = filled + s.len as usize;
            if mem.read_slice(&mut header[filled..end], s.addr).is_err() {
                return fail(Malformed::BadAddress);
            }
            filled = end;
        }
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());

        let writable_len: u64 = writable.iter().map(|s| u64::from(s.len)).sum();
        let (in_data, _status_seg) = split_at(&writable, writable_len - 1);
        let extra_readable = readable_len > HEADER_LEN;
        let extra_writable = writable_len > 1;

        let (kind, data, data_len) = match kind {
            VIRTIO_BLK_T_IN | VIRTIO_BLK_T_GET_ID => {
                if extra_readable {
                    return fail(Malformed::WrongDirection);
                }
                let k = if kind == VIRTIO_BLK_T_IN { RequestType::In } else { RequestType::GetId };
                (k, in_data, writable_len - 1)
            }
            VIRTIO_BLK_T_OUT => {
                if extra_writable {
                    return fail(Malformed::WrongDirection);
                }
                (RequestType::Out, out_data, readable_len - HEADER_LEN)
            }
            VIRTIO_BLK_T_FLUSH => (RequestType::Flush, Vec::new(), 0),
            other => (RequestType::Unsupported(other), Vec::new(), 0),
        };
        Ok(Request { kind, sector, data, data_len, status })
    }
}

/// Splits a segment list at byte `at` of its stream.
fn split_at(segs: &[Segment], at: u64) -> (Vec<Segment>, Vec<Segment>) {
    let mut front = Vec::new();
    let mut back = Vec::new();
    let mut pos = 0u64;
    for s in segs {
        let len = u64::from(s.len);
        if pos + len <= at {
            front.push(*s);
        } else if pos >= at {
            back.push(*s);
        } else {
            let cut = (at - pos) as u32;
            front.push(Segment { addr: s.addr, len: cut });
            back.push(Segment { addr: s.addr.unchecked_add(u64::from(cut)), len: s.len - cut });
        }
        pos += len;
    }
    (front, back)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(addr: u64, len: u32) -> Segment {
        Segment { addr: GuestAddress(addr), len }
    }

    #[test]
    fn split_at_cuts_inside_and_between_segments() {
        let segs = [seg(0x100, 10), seg(0x200, 6), seg(0x300, 4)];
        assert_eq!(split_at(&segs, 16), (vec![seg(0x100, 10), seg(0x200, 6)], vec![seg(0x300, 4)]));
        assert_eq!(split_at(&segs, 12), (vec![seg(0x100, 10), seg(0x200, 2)], vec![seg(0x202, 4), seg(0x300, 4)]));
        assert_eq!(split_at(&segs, 0), (vec![], segs.to_vec()));
        assert_eq!(split_at(&segs, 20), (segs.to_vec(), vec![]));
    }
}
