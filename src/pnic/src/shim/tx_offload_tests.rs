//! TX offloads end to end: guest frames with virtio-net headers through the
//! shim and the product's igb driver into the 82576 model, which parses
//! the context descriptors and segments and checksums as the NIC does;
//! the tests check the context fields and the bytes on the wire.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::tx_offload::{
    VnetTxHdr, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
};
use super::*;
use crate::igb::regs::*;
use crate::igb::Igb;
use crate::model::igb_hw::{igb_on_model, IgbHw, IgbHwRegs};
use crate::model::{ModelConfig, NicModel};
use virtio_devices::net::config::{F_HOST_ECN, F_HOST_UFO, F_VERSION_1};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0x0f];
const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const RAM: u64 = 0x40_0000;
const OFFLOADS: u64 = F_VERSION_1 | VIRTIO_NET_F_MRG_RXBUF | F_CSUM | F_HOST_TSO4 | F_HOST_TSO6;
const V4_SRC: [u8; 4] = [192, 0, 2, 10];
const V4_DST: [u8; 4] = [192, 0, 2, 1];
const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10];
const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01];
const SEQ0: u32 = 0x0102_0304;

fn shim() -> (ShimBackend<Igb<IgbHwRegs>>, IgbHw, GuestMemoryMmap) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let (igb, hw) = igb_on_model(&mem, MAC).unwrap();
    let mut s = ShimBackend::new(igb, &mem, MAC).unwrap();
    s.set_features(OFFLOADS).unwrap();
    (s, hw, mem)
}

// An independent ones'-complement sum (not the shim's or the model's).
fn sum(data: &[u8]) -> u32 {
    let mut s: u32 = 0;
    for w in data.chunks(2) {
        s += u32::from(w[0]) << 8 | u32::from(*w.get(1).unwrap_or(&0));
    }
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s
}

fn pseudo(v6: bool, f: &[u8], proto: u8, len: usize) -> u32 {
    let addrs = if v6 { &f[22..54] } else { &f[26..34] };
    sum(addrs) + u32::from(proto) + len as u32
}

fn folded(s: u32) -> u16 {
    let mut s = s;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// An Ethernet + IP + TCP (`opts` option bytes) frame with `payload`
/// bytes, laid out as a Linux guest sends a CHECKSUM_PARTIAL frame: the TCP
/// checksum field holds the pseudo-header sum over the whole length.
fn tcp_frame(v6: bool, opts: usize, payload: usize) -> Vec<u8> {
    let l4 = 20 + opts + payload;
    let mut f = Vec::new();
    f.extend_from_slice(&PEER);
    f.extend_from_slice(&MAC);
    if v6 {
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4 as u16).to_be_bytes());
        f.extend_from_slice(&[6, 64]);
        f.extend_from_slice(&V6_SRC);
        f.extend_from_slice(&V6_DST);
    } else {
        f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
        f.extend_from_slice(&((20 + l4) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&V4_SRC);
        f.extend_from_slice(&V4_DST);
        let c = !folded(sum(&f[14..34]));
        f[24..26].copy_from_slice(&c.to_be_bytes());
    }
    let start = f.len();
    f.extend_from_slice(&40000u16.to_be_bytes());
    f.extend_from_slice(&5201u16.to_be_bytes());
    f.extend_from_slice(&SEQ0.to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes());
    f.push((((20 + opts) / 4) as u8) << 4);
    f.push(0x18); // ACK | PSH
    f.extend_from_slice(&[0x01, 0xf6, 0, 0, 0, 0]);
    f.extend(std::iter::repeat_n(1u8, opts)); // NOPs
    f.extend((0..payload).map(|i| (i * 7 + 3) as u8));
    let p = folded(pseudo(v6, &f, 6, l4));
    f[start + 16..start + 18].copy_from_slice(&p.to_be_bytes());
    f
}

fn udp_frame(payload: usize) -> Vec<u8> {
    let l4 = 8 + payload;
    let mut f = Vec::new();
    f.extend_from_slice(&PEER);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&((20 + l4) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 1, 0, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&V4_SRC);
    f.extend_from_slice(&V4_DST);
    let c = !folded(sum(&f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&5353u16.to_be_bytes());
    f.extend_from_slice(&53u16.to_be_bytes());
    f.extend_from_slice(&(l4 as u16).to_be_bytes());
    let p = folded(pseudo(false, &f, 17, l4));
    f.extend_from_slice(&p.to_be_bytes());
    f.extend((0..payload).map(|i| (i * 13 + 5) as u8));
    f
}

fn vnet(gso_type: u8, gso_size: u16, hdr_len: u16, start: u16, offset: u16) -> [u8; VNET_HDR_LEN] {
    let h = VnetTxHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len,
        gso_size,
        csum_start: start,
        csum_offset: offset,
    };
    let mut b = [0u8; VNET_HDR_LEN];
    b[..10].copy_from_slice(&h.to_bytes());
    b
}

/// Put header + frame in guest RAM at `at`, cut into segments after the
/// byte offsets `cuts` (of header + frame), as a TX chain.
fn put(mem: &GuestMemoryMmap, head: u16, at: u64, hdr: &[u8], frame: &[u8], cuts: &[usize]) -> TxFrame {
    let mut all = hdr.to_vec();
    all.extend_from_slice(frame);
    let mut segs = Vec::new();
    let mut from = 0;
    for (i, &to) in cuts.iter().chain(std::iter::once(&all.len())).enumerate() {
        // Segments 64 KiB apart: not contiguous in guest RAM.
        let gpa = at + i as u64 * 0x1_0000 + from as u64 % 8;
        mem.write_slice(&all[from..to], GuestAddress(gpa)).unwrap();
        segs.push((GuestAddress(gpa), (to - from) as u32));
        from = to;
    }
    TxFrame { head, segs, len: all.len() as u32 }
}

fn wire(hw: &IgbHw) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    hw.complete_tx(|f| out.push(f.to_vec()));
    out
}

/// Check one TCP segment on the wire: lengths and both checksums valid;
/// returns its sequence number, flags and payload.
fn check_tcp_segment(seg: &[u8], v6: bool, l4_hdr: usize) -> (u32, u8, Vec<u8>) {
    let start = if v6 { 54 } else { 34 };
    let l4 = seg.len() - start;
    if v6 {
        assert_eq!(usize::from(u16::from_be_bytes([seg[18], seg[19]])), l4, "IPv6 payload length");
    } else {
        assert_eq!(usize::from(u16::from_be_bytes([seg[16], seg[17]])), seg.len() - 14, "IPv4 total length");
        assert_eq!(folded(sum(&seg[14..34])), 0xffff, "IPv4 header checksum");
    }
    assert_eq!(folded(pseudo(v6, seg, 6, l4) + sum(&seg[start..])), 0xffff, "TCP checksum");
    let seq = u32::from_be_bytes(seg[start + 4..start + 8].try_into().unwrap());
    (seq, seg[start + 13], seg[start + l4_hdr..].to_vec())
}

fn tso_case(v6: bool, mss: u16) {
    let (mut s, hw, mem) = shim();
    let opts = 12; // timestamps, as Linux sends them
    let payload = 10_000;
    let f = tcp_frame(v6, opts, payload);
    let start: u16 = if v6 { 54 } else { 34 };
    let hlen = usize::from(start) + 20 + opts;
    // hdr_len as Linux sets it without GUEST_HDRLEN: the linear part.
    let h = vnet(if v6 { VIRTIO_NET_HDR_GSO_TCPV6 } else { VIRTIO_NET_HDR_GSO_TCPV4 }, mss, 200, start, 16);
    // The header split across the chain's first two segments.
    let tx = put(&mem, 3, 0x1_0000, &h, &f, &[12 + 20, 12 + 200, 12 + 4096]);
    let before: Vec<Vec<u8>> = tx
        .segs
        .iter()
        .map(|(a, l)| {
            let mut b = vec![0u8; *l as usize];
            mem.read_slice(&mut b, *a).unwrap();
            b
        })
        .collect();
    assert_eq!(s.send(&mem, tx.clone()), Ok(false));
    let out = wire(&hw);
    let n = payload.div_ceil(usize::from(mss));
    assert_eq!(out.len(), n, "MSS-sized segments on the wire");
    let mut got = Vec::new();
    for (i, seg) in out.iter().enumerate() {
        assert!(seg.len() <= hlen + usize::from(mss));
        assert_eq!(seg[..hlen - 20 - opts - if v6 { 40 } else { 20 }], f[..14], "the VMM's Ethernet header copy");
        let (seq, flags, p) = check_tcp_segment(seg, v6, 20 + opts);
        assert_eq!(seq, SEQ0 + (i * usize::from(mss)) as u32, "segment {i}");
        assert_eq!(flags & 0x08 != 0, i + 1 == n, "PSH only on the last segment");
        got.extend(p);
    }
    assert_eq!(got, f[hlen..], "the payload, in order, unchanged");
    let tucmd = TXD_CMD_DEXT | TXD_DTYP_CTXT | TXCTX_TUCMD_L4T_TCP | if v6 { 0 } else { TXCTX_TUCMD_IPV4 };
    let iplen = u32::from(start) - 14;
    assert_eq!(
        hw.tx_contexts(),
        vec![[14 << TXCTX_MACLEN_SHIFT | iplen, 0, tucmd, u32::from(mss) << TXCTX_MSS_SHIFT | (20 + opts as u32) << 8]],
        "one context: MACLEN 14, IPLEN, TCP (and IPV4), MSS, L4LEN, IDX 0"
    );
    let m = s.shim_metrics().clone();
    assert_eq!((m.tx_tso_frames, m.tx_tso_segments), (1, n as u64));
    assert_eq!(m.vmm_copied_bytes, hlen as u64, "only the header copied, no payload byte");
    assert_eq!((m.tx_copy_fallback.frames, m.tx_sw_csum, m.drops.total()), (0, 0, 0));
    assert_eq!(hw.stats().tx_bad_offloads, 0);
    // The guest's buffers are as the guest wrote them.
    for ((a, l), b) in tx.segs.iter().zip(&before) {
        let mut now = vec![0u8; *l as usize];
        mem.read_slice(&mut now, *a).unwrap();
        assert_eq!(&now, b, "guest memory at {a:?} unchanged");
    }
    let mut used = Vec::new();
    s.reap_tx(&mut used);
    assert_eq!(used, vec![Used { head: 3, len: 0 }]);
    assert_eq!(s.shim_metrics().tx_bytes, f.len() as u64);
}

#[test]
fn tcpv4_tso_frame_leaves_as_mss_segments_with_valid_checksums() {
    tso_case(false, 1448);
}

#[test]
fn tcpv6_tso_frame_leaves_as_mss_segments_with_valid_checksums() {
    tso_case(true, 1428);
}

#[test]
fn udp_checksum_is_inserted_by_the_nic_zero_copy() {
    let (mut s, hw, mem) = shim();
    let f = udp_frame(300);
    let h = vnet(VIRTIO_NET_HDR_GSO_NONE, 0, 0, 34, 6);
    assert_eq!(s.send(&mem, put(&mem, 1, 0x1_0000, &h, &f, &[])), Ok(false));
    let out = wire(&hw);
    assert_eq!(out.len(), 1);
    let w = &out[0];
    assert_eq!(folded(pseudo(false, w, 17, 308) + sum(&w[34..])), 0xffff, "UDP checksum valid");
    assert_ne!(w[40..42], f[40..42], "the checksum was inserted");
    assert_eq!(w[..40], f[..40]);
    assert_eq!(w[42..], f[42..]);
    assert_eq!(
        hw.tx_contexts(),
        vec![[14 << TXCTX_MACLEN_SHIFT | 20, 0, TXD_CMD_DEXT | TXD_DTYP_CTXT | TXCTX_TUCMD_IPV4, 0]]
    );
    let m = s.shim_metrics();
    assert_eq!((m.tx_csum_offload, m.tx_sw_csum, m.vmm_copied_bytes), (1, 0, 14));
    assert_eq!(hw.stats().tx_l4_csums, 1);
}

#[test]
fn tcp_checksum_only_frames_get_a_context_and_no_segmentation() {
    for v6 in [false, true] {
        let (mut s, hw, mem) = shim();
        let f = tcp_frame(v6, 0, 1000);
        let start: u16 = if v6 { 54 } else { 34 };
        let h = vnet(VIRTIO_NET_HDR_GSO_NONE, 0, 0, start, 16);
        assert_eq!(s.send(&mem, put(&mem, 1, 0x1_0000, &h, &f, &[12 + 100])), Ok(false));
        let out = wire(&hw);
        assert_eq!(out.len(), 1, "v6 {v6}");
        let (seq, _, p) = check_tcp_segment(&out[0], v6, 20);
        assert_eq!((seq, p.as_slice()), (SEQ0, &f[usize::from(start) + 20..]));
        let tucmd = TXD_CMD_DEXT | TXD_DTYP_CTXT | TXCTX_TUCMD_L4T_TCP | if v6 { 0 } else { TXCTX_TUCMD_IPV4 };
        assert_eq!(hw.tx_contexts(), vec![[14 << TXCTX_MACLEN_SHIFT | (u32::from(start) - 14), 0, tucmd, 0]]);
        let m = s.shim_metrics();
        assert_eq!((m.tx_csum_offload, m.tx_tso_frames, m.vmm_copied_bytes), (1, 0, 14));
    }
}

#[test]
fn a_checksum_the_nic_has_no_context_for_is_finished_in_a_bounce_buffer() {
    let (mut s, hw, mem) = shim();
    // ICMP-like: the checksum at offset 2 of the L4 header.
    let mut f = udp_frame(100);
    f[23] = 1;
    let h = vnet(VIRTIO_NET_HDR_GSO_NONE, 0, 0, 34, 2);
    let tx = put(&mem, 2, 0x1_0000, &h, &f, &[]);
    assert_eq!(s.send(&mem, tx.clone()), Ok(false));
    let out = wire(&hw);
    assert_eq!(out.len(), 1);
    let w = &out[0];
    let mut expect = f.clone();
    let c = !folded(sum(&f[34..]));
    expect[36..38].copy_from_slice(&c.to_be_bytes());
    assert_eq!(w, &expect, "the checksum over csum_start.. at csum_start + csum_offset");
    let m = s.shim_metrics();
    assert_eq!((m.tx_sw_csum, m.tx_copy_fallback.frames, m.tx_csum_offload), (1, 1, 0));
    assert!(hw.tx_contexts().is_empty(), "no context for a software checksum");
    let mut g = vec![0u8; f.len()];
    mem.read_slice(&mut g, GuestAddress(tx.segs[0].0 .0 + 12)).unwrap();
    assert_eq!(g, f, "the guest's frame is not written");
}

#[test]
fn malformed_headers_are_refused_counted_and_never_sent() {
    let (mut s, hw, mem) = shim();
    let f = tcp_frame(false, 0, 3000);
    let cases = [
        ("csum_start past the frame", vnet(VIRTIO_NET_HDR_GSO_NONE, 0, 0, f.len() as u16, 16)),
        ("checksum field past the frame", vnet(VIRTIO_NET_HDR_GSO_NONE, 0, 0, f.len() as u16 - 17, 16)),
        ("gso_size 0", vnet(VIRTIO_NET_HDR_GSO_TCPV4, 0, 54, 34, 16)),
        ("hdr_len beyond the frame", vnet(VIRTIO_NET_HDR_GSO_TCPV4, 1448, f.len() as u16 + 1, 34, 16)),
        ("unknown gso_type", vnet(0x42, 1448, 54, 34, 16)),
        ("TCPv6 on an IPv4 frame", vnet(VIRTIO_NET_HDR_GSO_TCPV6, 1448, 54, 34, 16)),
        ("segments larger than the wire", vnet(VIRTIO_NET_HDR_GSO_TCPV4, 9000, 54, 34, 16)),
    ];
    for (i, (what, h)) in cases.iter().enumerate() {
        let r = s.send(&mem, put(&mem, i as u16, 0x1_0000, h, &f, &[]));
        assert_eq!(r, Err(DropReason::BadVnetHeader), "{what}");
    }
    assert!(wire(&hw).is_empty(), "nothing reached the wire");
    assert!(hw.tx_contexts().is_empty());
    let m = s.shim_metrics();
    assert_eq!(m.drops_of(DropReason::BadVnetHeader), cases.len() as u64);
    assert_eq!((m.tx_zero_copy, m.tx_tso_frames, m.tx_csum_offload), (0, 0, 0));
    // The ring is untouched: a good frame after them goes out.
    let h = vnet(VIRTIO_NET_HDR_GSO_TCPV4, 1448, 54, 34, 16);
    assert_eq!(s.send(&mem, put(&mem, 9, 0x1_0000, &h, &f, &[])), Ok(false));
    assert_eq!(wire(&hw).len(), 3);
}

#[test]
fn offloads_not_negotiated_are_refused_and_headers_ignored_without_any() {
    let (mut s, hw, mem) = shim();
    s.set_features(F_VERSION_1 | F_CSUM).unwrap();
    let f = tcp_frame(false, 0, 3000);
    let h = vnet(VIRTIO_NET_HDR_GSO_TCPV4, 1448, 54, 34, 16);
    assert_eq!(s.send(&mem, put(&mem, 1, 0x1_0000, &h, &f, &[])), Err(DropReason::BadVnetHeader));
    // No offload acked: the header is not read; a 1514-byte frame goes as is.
    s.set_features(F_VERSION_1).unwrap();
    let f = tcp_frame(false, 0, 1460);
    assert_eq!(s.send(&mem, put(&mem, 2, 0x1_0000, &h, &f, &[])), Ok(false));
    assert_eq!(wire(&hw), vec![f]);
    assert!(hw.tx_contexts().is_empty());
}

#[test]
fn tso_frames_wait_for_ring_room_counting_context_and_header_descriptors() {
    let (mut s, hw, mem) = shim();
    let f = tcp_frame(false, 0, 20_000);
    let h = vnet(VIRTIO_NET_HDR_GSO_TCPV4, 1448, 54, 34, 16);
    // 4 guest segments: context + header copy + 4 = 6 descriptors each
    // (the first segment holds vnet header + Ethernet + IP + TCP + payload).
    let cuts = [12 + 100, 12 + 5000, 12 + 10000];
    let free0 = crate::igb::TX_RING_SIZE - 1;
    let frames = free0 / 6 + 3;
    for i in 0..frames {
        let tx = put(&mem, i as u16, 0x1_0000 + i as u64 * 0x4_0000 % (RAM - 0x5_0000), &h, &f, &cuts);
        assert_eq!(s.send(&mem, tx), Ok(false), "frame {i}");
    }
    assert_eq!(s.driver().tx_free(), free0 % 6, "the ring holds whole frames: {free0} slots");
    assert_eq!(s.backlog.len(), 3, "the rest wait");
    let mut used = Vec::new();
    let mut sent = 0;
    while used.len() < frames {
        sent += wire(&hw).len();
        s.reap_tx(&mut used);
    }
    sent += wire(&hw).len();
    assert_eq!(sent, frames * 20_000usize.div_ceil(1448));
    assert_eq!(s.shim_metrics().tx_tso_frames, frames as u64);
    assert_eq!(s.driver().tx_free(), free0);
}

#[test]
fn offered_features_follow_the_nic() {
    let (s, _hw, _mem) = shim();
    let f = s.features();
    assert_eq!(f & (F_CSUM | F_HOST_TSO4 | F_HOST_TSO6), F_CSUM | F_HOST_TSO4 | F_HOST_TSO6);
    assert_eq!(f & (F_HOST_ECN | F_HOST_UFO), 0, "no ECN, no UFO");
    // A NIC without TX offloads (the generic model, as the 82574L driver):
    // none of the TX bits. GUEST_CSUM is offered on every NIC (the RX
    // side, docs/vfio-nic.md 3b): a NIC that validates nothing just never
    // sets DATA_VALID.
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let (model, _h) = NicModel::new(&mem, ModelConfig::default()).unwrap();
    let s = ShimBackend::new(model, &mem, MAC).unwrap();
    assert_eq!(s.features(), VIRTIO_NET_F_MRG_RXBUF | F_GUEST_CSUM);
}

/// hdr_len past the chain's first segment (and past the real header): a
/// hint, not a malformed header. Without VIRTIO_NET_F_GUEST_HDRLEN the
/// device must not rely on it (virtio 1.2, 5.1.6.2.1), and Linux sets it to
/// the skb's linear length, which may hold payload. The shim takes the
/// header's length from the frame (the TCP data offset), gathers it across
/// the guest's segments into its own copy, and sends the payload zero-copy.
#[test]
fn hdr_len_past_the_first_segment_is_a_hint_and_the_header_comes_from_the_frame() {
    let f = tcp_frame(false, 0, 3000);
    for hdr_len in [54u16, 200, f.len() as u16] {
        let (mut s, hw, mem) = shim();
        let h = vnet(VIRTIO_NET_HDR_GSO_TCPV4, 1448, hdr_len, 34, 16);
        // First segment: the virtio-net header and 20 frame bytes (inside
        // the IP header); the TCP header is split across the next two.
        let tx = put(&mem, 1, 0x1_0000, &h, &f, &[12 + 20, 12 + 40]);
        assert_eq!(s.send(&mem, tx), Ok(false), "hdr_len {hdr_len}");
        let out = wire(&hw);
        assert_eq!(out.len(), 3, "hdr_len {hdr_len}: 3000 bytes in 1448-byte segments");
        let got: Vec<u8> = out.iter().flat_map(|seg| check_tcp_segment(seg, false, 20).2).collect();
        assert_eq!(got, f[54..], "hdr_len {hdr_len}");
        let m = s.shim_metrics();
        assert_eq!((m.tx_tso_frames, m.vmm_copied_bytes, m.drops.total()), (1, 54, 0), "hdr_len {hdr_len}");
    }
}

/// A TSO header the frame itself contradicts is refused and counted, and
/// nothing reaches the NIC: a TCP data offset under 5 words, a TCP header
/// that leaves no payload (it runs to or past the frame's end), an IPv4
/// header whose IHL does not end at csum_start, a TSO frame that is not
/// TCP.
#[test]
fn tso_headers_the_frame_contradicts_are_refused_counted_and_never_sent() {
    let (mut s, hw, mem) = shim();
    let good = tcp_frame(false, 0, 3000);
    let h = vnet(VIRTIO_NET_HDR_GSO_TCPV4, 1448, 54, 34, 16);
    let mut doff_short = good.clone();
    doff_short[34 + 12] = 4 << 4;
    let no_payload = tcp_frame(false, 40, 0);
    assert_eq!(no_payload[34 + 12] >> 4, 15, "a 60-byte TCP header and no payload byte");
    let mut ihl = good.clone();
    ihl[14] = 0x46;
    let mut udp = good.clone();
    udp[23] = 17;
    let cases = [
        ("TCP data offset 4", &doff_short),
        ("TCP header past the frame", &no_payload),
        ("IHL not ending at csum_start", &ihl),
        ("IP protocol UDP", &udp),
    ];
    for (i, (what, f)) in cases.iter().enumerate() {
        let r = s.send(&mem, put(&mem, i as u16, 0x1_0000, &h, f, &[]));
        assert_eq!(r, Err(DropReason::BadVnetHeader), "{what}");
    }
    assert!(wire(&hw).is_empty(), "nothing reached the wire");
    assert!(hw.tx_contexts().is_empty());
    let m = s.shim_metrics();
    assert_eq!(m.drops_of(DropReason::BadVnetHeader), cases.len() as u64);
    assert_eq!((m.tx_zero_copy, m.tx_tso_frames), (0, 0));
    assert_eq!(s.send(&mem, put(&mem, 9, 0x1_0000, &h, &good, &[])), Ok(false));
    assert_eq!(wire(&hw).len(), 3);
}
