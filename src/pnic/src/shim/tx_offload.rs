//! TX offloads: what a guest frame's virtio-net header asks for (a checksum
//! to finish, TCP segmentation), checked against the frame and the
//! negotiated features, and turned into what the NIC does
//! ([`TxOffload`]: one advanced context descriptor on the 82576).
//!
//! The header is guest input: every field is checked before anything is
//! given to the NIC, and a header that contradicts its frame or asks for
//! what was not negotiated is refused (`bad_vnet_header`), never sent.
//! Checksums the NIC cannot insert (a layout it has no context for) are
//! finished in software in a bounce buffer; a TSO frame the NIC cannot
//! segment is dropped (`offload_unsupported`): segmenting 64 KiB in
//! software is the host kernel's job, not the VMM's.
//!
//! For TSO the NIC needs the header (Ethernet, IP, TCP) prepared in a way a
//! virtio guest does not prepare it (IPv4 total length and checksum 0, IPv6
//! payload length 0, the TCP checksum field the pseudo-header sum without
//! the length), and it reads the header once per segment. The shim never
//! writes guest memory a guest could race, so the header is copied into the
//! VMM's header slot (as the Ethernet header always is, for the wire
//! policy), prepared there and given to the NIC as the frame's first
//! descriptor; the payload stays zero-copy.

use virtio_devices::net::backend::DropReason;
use virtio_devices::net::config::{F_CSUM, F_HOST_TSO4, F_HOST_TSO6};

use super::wire::ETH_HDR;
use crate::driver::{CsumLayout, L4Proto, TxOffload};

/// `flags`: the checksum from `csum_start` to the end is left to the device.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `flags`: meaningful on RX only; ignored on TX.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// The ECN bit of `gso_type` (needs VIRTIO_NET_F_HOST_ECN, not offered).
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;
/// The TX fields of `struct virtio_net_hdr_v1` (flags .. csum_offset; the
/// last two bytes, num_buffers, are RX only).
pub const VNET_TX_FIELDS: usize = 10;
/// Smallest gso_size taken (Linux's `tcp_min_snd_mss` default): a smaller
/// one would make the NIC send over a thousand frames per guest frame.
pub const MIN_GSO_SIZE: u16 = 48;
/// Largest TSO header the shim prepares (in its header slot).
pub const MAX_TSO_HDR: usize = super::wire::HDR_SLOT;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const IPV4_MIN_HDR: u16 = 20;
const IPV6_HDR: u16 = 40;
const TCP_MIN_HDR: usize = 20;
/// Offsets of the checksum fields in the TCP and UDP headers.
const TCP_CSUM_OFF: u16 = 16;
const UDP_CSUM_OFF: u16 = 6;
/// The Ethernet header is all the 82576's MACLEN covers here (tagged
/// frames never pass the wire policy).
const MAC_LEN: u8 = ETH_HDR as u8;

/// The TX fields of a guest frame's virtio-net header, as read once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetTxHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetTxHdr {
    /// The fields from the header's first [`VNET_TX_FIELDS`] bytes
    /// (little-endian: VIRTIO_F_VERSION_1).
    pub fn from_bytes(b: &[u8; VNET_TX_FIELDS]) -> Self {
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetTxHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        }
    }

    pub fn to_bytes(self) -> [u8; VNET_TX_FIELDS] {
        let mut b = [0u8; VNET_TX_FIELDS];
        b[0] = self.flags;
        b[1] = self.gso_type;
        for (i, v) in [(2, self.hdr_len), (4, self.gso_size), (6, self.csum_start), (8, self.csum_offset)] {
            b[i..i + 2].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Asks for nothing: the frame is sent as it is.
    #[inline(always)]
    pub fn is_plain(&self) -> bool {
        self.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 && self.gso_type == VIRTIO_NET_HDR_GSO_NONE
    }
}

/// What a checked header asks of the shim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxRequest {
    /// Finish the checksum over `start..` and store it at `start + offset`.
    Csum { start: u16, offset: u16 },
    /// TCP segmentation into `mss`-byte segments, the TCP header at `start`.
    Tso { v6: bool, mss: u16, start: u16 },
}

/// The feature bits that make the shim read TX headers at all.
pub const TX_OFFLOAD_FEATURES: u64 = F_CSUM | F_HOST_TSO4 | F_HOST_TSO6;

/// Check `h` for a frame of `frame_len` bytes (after the virtio-net
/// header) against the `acked` features: `None` for a plain frame.
pub fn check_request(h: &VnetTxHdr, acked: u64, frame_len: u32) -> Result<Option<TxRequest>, DropReason> {
    if h.is_plain() {
        return Ok(None);
    }
    let bad = Err(DropReason::BadVnetHeader);
    if h.flags & !(VIRTIO_NET_HDR_F_NEEDS_CSUM | VIRTIO_NET_HDR_F_DATA_VALID) != 0 {
        return bad;
    }
    // Every GSO frame needs its checksum finished (virtio 5.1.6.2).
    if h.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM == 0 || acked & F_CSUM == 0 {
        return bad;
    }
    let (start, offset) = (h.csum_start, h.csum_offset);
    if usize::from(start) < ETH_HDR || u32::from(start) + u32::from(offset) + 2 > frame_len {
        return bad;
    }
    let v6 = match h.gso_type {
        VIRTIO_NET_HDR_GSO_NONE => return Ok(Some(TxRequest::Csum { start, offset })),
        VIRTIO_NET_HDR_GSO_TCPV4 if acked & F_HOST_TSO4 != 0 => false,
        VIRTIO_NET_HDR_GSO_TCPV6 if acked & F_HOST_TSO6 != 0 => true,
        // UDP (UFO), ECN, unknown types, or a TSO not negotiated.
        _ => return bad,
    };
    if offset != TCP_CSUM_OFF || h.gso_size < MIN_GSO_SIZE || u32::from(h.hdr_len) > frame_len {
        return bad;
    }
    Ok(Some(TxRequest::Tso { v6, mss: h.gso_size, start }))
}

/// The context for the NIC to insert the checksum of a frame whose
/// Ethernet header (the VMM's copy) is `eth`, as `start`/`offset` ask;
/// `None` when the NIC has no context for that layout (finish it in
/// software).
pub fn csum_layout(eth: &[u8; ETH_HDR], start: u16, offset: u16) -> Option<CsumLayout> {
    let (ipv4, min_ip) = match u16::from_be_bytes([eth[12], eth[13]]) {
        ETHERTYPE_IPV4 => (true, IPV4_MIN_HDR),
        ETHERTYPE_IPV6 => (false, IPV6_HDR),
        _ => return None,
    };
    let ip_len = start.checked_sub(u16::from(MAC_LEN))?;
    if ip_len < min_ip || ip_len > crate::igb::regs::TXCTX_IPLEN_MAX {
        return None;
    }
    let l4 = match offset {
        TCP_CSUM_OFF => L4Proto::Tcp,
        UDP_CSUM_OFF => L4Proto::Udp,
        _ => return None,
    };
    Some(CsumLayout { l4, ipv4, mac_len: MAC_LEN, ip_len })
}

/// The TCP header's length from its data offset, the header's first
/// [`tcp_doff_at`] + 1 bytes being in `hdr` (`start` = where it begins).
pub fn tcp_hdr_len(hdr: &[u8], start: usize) -> Option<usize> {
    let l = usize::from(hdr.get(tcp_doff_at(start))? >> 4) * 4;
    (l >= TCP_MIN_HDR).then_some(l)
}

/// Byte of the frame holding the TCP data offset.
pub fn tcp_doff_at(start: usize) -> usize {
    start + 12
}

/// Prepare the TSO header `hdr` (the frame's first `hdr.len()` bytes: the
/// VMM's copy, Ethernet + IP + TCP) as the NIC wants it and give the
/// context. The IP header must be what `gso_type` said, with the TCP header
/// right after it at `start`; an IPv6 frame with extension headers is
/// `OffloadUnsupported`.
pub fn prepare_tso(hdr: &mut [u8], v6: bool, start: u16, mss: u16) -> Result<TxOffload, DropReason> {
    let bad = Err(DropReason::BadVnetHeader);
    let start = usize::from(start);
    if hdr.len() < start + TCP_MIN_HDR {
        return bad;
    }
    let l4_len = hdr.len() - start;
    let ip = ETH_HDR;
    let ethertype = u16::from_be_bytes([hdr[12], hdr[13]]);
    let ip_len = (start - ip) as u16;
    if !v6 {
        let ihl = u16::from(hdr[ip] & 0x0f) * 4;
        if ethertype != ETHERTYPE_IPV4 || hdr[ip] >> 4 != 4 || ihl < IPV4_MIN_HDR || ihl != ip_len {
            return bad;
        }
        if hdr[ip + 9] != IPPROTO_TCP {
            return bad;
        }
        // Total length and header checksum: the NIC writes them per segment.
        hdr[ip + 2..ip + 4].fill(0);
        hdr[ip + 10..ip + 12].fill(0);
        let pseudo = csum_add(csum_add(0, &hdr[ip + 12..ip + 20]), &[0, IPPROTO_TCP]);
        hdr[start + 16..start + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
    } else {
        if ethertype != ETHERTYPE_IPV6 || hdr[ip] >> 4 != 6 || ip_len < IPV6_HDR {
            return bad;
        }
        if ip_len != IPV6_HDR || hdr[ip + 6] != IPPROTO_TCP {
            // Extension headers: the pseudo-header's addresses may come
            // from a routing header; not segmented here.
            return Err(DropReason::OffloadUnsupported);
        }
        hdr[ip + 4..ip + 6].fill(0);
        let pseudo = csum_add(csum_add(0, &hdr[ip + 8..ip + 40]), &[0, IPPROTO_TCP]);
        hdr[start + 16..start + 18].copy_from_slice(&fold(pseudo).to_be_bytes());
    }
    if ip_len > crate::igb::regs::TXCTX_IPLEN_MAX {
        return Err(DropReason::OffloadUnsupported);
    }
    let layout = CsumLayout { l4: L4Proto::Tcp, ipv4: !v6, mac_len: MAC_LEN, ip_len };
    Ok(TxOffload::Tso { layout, l4_len: l4_len as u8, mss })
}

/// Add `data` to a ones'-complement sum (16-bit big-endian words, an odd
/// last byte padded with zero).
pub fn csum_add(mut sum: u64, data: &[u8]) -> u64 {
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [b] = words.remainder() {
        sum += u64::from(*b) << 8;
    }
    sum
}

/// Fold a sum to 16 bits (not complemented).
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Finish the checksum of `frame` as virtio's NEEDS_CSUM asks: the
/// ones'-complement sum of `start..` (the field holds the pseudo-header
/// sum) complemented into `start + offset` (0 sent as 0xffff, as Linux
/// does). The caller checked that the field lies inside `frame`.
pub fn finish_csum(frame: &mut [u8], start: usize, offset: usize) {
    let c = !fold(csum_add(0, &frame[start..]));
    let c = if c == 0 { 0xffff } else { c };
    frame[start + offset..start + offset + 2].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = TX_OFFLOAD_FEATURES;

    fn csum_hdr(start: u16, offset: u16) -> VnetTxHdr {
        VnetTxHdr { flags: VIRTIO_NET_HDR_F_NEEDS_CSUM, csum_start: start, csum_offset: offset, ..Default::default() }
    }

    fn tso_hdr(gso_type: u8, mss: u16) -> VnetTxHdr {
        VnetTxHdr { gso_type, gso_size: mss, hdr_len: 66, ..csum_hdr(34, 16) }
    }

    #[test]
    fn header_bytes_round_trip_little_endian() {
        let h = VnetTxHdr { flags: 1, gso_type: 4, hdr_len: 0x1234, gso_size: 1448, csum_start: 54, csum_offset: 16 };
        let b = h.to_bytes();
        assert_eq!(&b[2..4], &[0x34, 0x12]);
        assert_eq!(VnetTxHdr::from_bytes(&b), h);
    }

    #[test]
    fn requests_the_frame_and_the_features_allow() {
        assert_eq!(check_request(&VnetTxHdr::default(), 0, 60), Ok(None));
        assert_eq!(check_request(&csum_hdr(34, 16), ALL, 60), Ok(Some(TxRequest::Csum { start: 34, offset: 16 })));
        assert_eq!(
            check_request(&tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4, 1448), ALL, 30000),
            Ok(Some(TxRequest::Tso { v6: false, mss: 1448, start: 34 }))
        );
        assert_eq!(
            check_request(&tso_hdr(VIRTIO_NET_HDR_GSO_TCPV6, 1428), F_CSUM | F_HOST_TSO6, 30000),
            Ok(Some(TxRequest::Tso { v6: true, mss: 1428, start: 34 }))
        );
    }

    #[test]
    fn malformed_or_unnegotiated_headers_are_refused() {
        let bad = Err(DropReason::BadVnetHeader);
        // Checksum field past the frame (start + offset + 2 > len).
        assert_eq!(check_request(&csum_hdr(50, 16), ALL, 67), bad);
        assert_eq!(check_request(&csum_hdr(50, 16), ALL, 68), Ok(Some(TxRequest::Csum { start: 50, offset: 16 })));
        assert_eq!(check_request(&csum_hdr(u16::MAX, u16::MAX), ALL, 70000), bad);
        // Inside the Ethernet header.
        assert_eq!(check_request(&csum_hdr(10, 2), ALL, 60), bad);
        // Not negotiated.
        assert_eq!(check_request(&csum_hdr(34, 16), 0, 60), bad);
        assert_eq!(check_request(&tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4, 1448), F_CSUM | F_HOST_TSO6, 30000), bad);
        // gso_size 0 or absurdly small.
        assert_eq!(check_request(&tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4, 0), ALL, 30000), bad);
        assert_eq!(check_request(&tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4, MIN_GSO_SIZE - 1), ALL, 30000), bad);
        // hdr_len past the frame.
        let h = VnetTxHdr { hdr_len: 3000, ..tso_hdr(VIRTIO_NET_HDR_GSO_TCPV4, 1448) };
        assert_eq!(check_request(&h, ALL, 2999), bad);
        // GSO without NEEDS_CSUM, UFO, ECN, unknown type, unknown flag.
        assert_eq!(check_request(&VnetTxHdr { flags: 0, ..tso_hdr(1, 1448) }, ALL, 30000), bad);
        for t in [3, 5, VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_ECN, 0x42] {
            assert_eq!(check_request(&tso_hdr(t, 1448), ALL, 30000), bad, "gso_type {t:#x}");
        }
        assert_eq!(check_request(&VnetTxHdr { flags: 0x81, ..csum_hdr(34, 16) }, ALL, 60), bad);
        // TSO whose checksum is not TCP's.
        assert_eq!(check_request(&VnetTxHdr { csum_offset: 6, ..tso_hdr(1, 1448) }, ALL, 30000), bad);
    }

    #[test]
    fn csum_layouts_the_nic_has_and_those_left_to_software() {
        let mut eth = [0u8; ETH_HDR];
        eth[12..].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let l = csum_layout(&eth, 34, 16).unwrap();
        assert_eq!(l, CsumLayout { l4: L4Proto::Tcp, ipv4: true, mac_len: 14, ip_len: 20 });
        assert_eq!(csum_layout(&eth, 34, 6).unwrap().l4, L4Proto::Udp);
        assert_eq!(csum_layout(&eth, 34, 2), None, "ICMP-like offset");
        assert_eq!(csum_layout(&eth, 20, 16), None, "IP header too short");
        eth[12..].copy_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        assert_eq!(
            csum_layout(&eth, 54, 6).unwrap(),
            CsumLayout { l4: L4Proto::Udp, ipv4: false, mac_len: 14, ip_len: 40 }
        );
        eth[12..].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(csum_layout(&eth, 34, 16), None, "not IP");
    }

    #[test]
    fn software_checksum_matches_a_known_udp_frame() {
        // IPv4 UDP 10.0.0.1:1000 -> 10.0.0.2:2000, payload "hi": checksum
        // field pre-seeded with the pseudo-header sum as a guest does.
        let mut f = vec![0u8; 14 + 20 + 8 + 2];
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        f[14] = 0x45;
        f[23] = 17;
        f[26..30].copy_from_slice(&[10, 0, 0, 1]);
        f[30..34].copy_from_slice(&[10, 0, 0, 2]);
        f[34..36].copy_from_slice(&1000u16.to_be_bytes());
        f[36..38].copy_from_slice(&2000u16.to_be_bytes());
        f[38..40].copy_from_slice(&10u16.to_be_bytes());
        f[42..44].copy_from_slice(b"hi");
        let pseudo = csum_add(csum_add(0, &f[26..34]), &[0, 17, 0, 10]);
        f[40..42].copy_from_slice(&fold(pseudo).to_be_bytes());
        finish_csum(&mut f, 34, 6);
        // Verify: pseudo-header + UDP segment sums to 0xffff.
        let total = csum_add(csum_add(csum_add(0, &f[26..34]), &[0, 17, 0, 10]), &f[34..]);
        assert_eq!(fold(total), 0xffff);
    }
}
