//! The shim against the NIC model: addresses given to the NIC, headers, used
//! lengths, TX segmentation, copy fallback, quiesce and NIC failure.

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::model::{DmaAccess, InjectOutcome, ModelConfig, ModelHandle, NicModel};
use virtio_devices::net::backend::{ChainRef, RxBuffer};

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0x01];
const RAM: u64 = 0x10_0000;

fn setup() -> (ShimBackend<NicModel>, ModelHandle, GuestMemoryMmap) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let (model, h) = NicModel::new(&mem, ModelConfig::default()).unwrap();
    let shim = ShimBackend::new(model, &mem, MAC).unwrap();
    (shim, h, mem)
}

fn rxbuf(head: u16, segs: &[(u64, u32)]) -> RxBuffer {
    RxBuffer {
        head,
        segs: segs.iter().map(|(a, l)| (GuestAddress(*a), *l)).collect(),
        len: segs.iter().map(|s| s.1).sum(),
    }
}

fn txframe(head: u16, segs: &[(u64, u32)]) -> TxFrame {
    TxFrame {
        head,
        segs: segs.iter().map(|(a, l)| (GuestAddress(*a), *l)).collect(),
        len: segs.iter().map(|s| s.1).sum(),
    }
}

/// A frame the VM may send (wire policy): from its MAC, to a peer, IPv4.
fn tx_eth(len: usize, seed: u8) -> Vec<u8> {
    let mut f = eth(len, seed);
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f[6..12].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// Whether `d` is a header copy: 14 bytes in the VMM's DMA space.
fn is_hdr_copy(d: &DmaAccess) -> bool {
    d.iova >= RAM && d.len == 14
}

fn eth(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect();
    f[..6].copy_from_slice(&MAC);
    f
}

#[test]
fn zero_copy_rx_posts_gpa_plus_12_and_writes_header() {
    let (mut s, h, mem) = setup();
    let bufs = [(0x1000u64, 1536u32), (0x2000, 2048), (0x3000, 4096), (0x8040, 1600)];
    for (i, (a, l)) in bufs.iter().enumerate() {
        s.post_rx(&mem, rxbuf(i as u16, &[(*a, *l)])).unwrap();
    }
    let posted = h.posted_rx();
    assert_eq!(posted.len(), 4);
    for ((a, l), p) in bufs.iter().zip(&posted) {
        assert_eq!(p.iova, a + 12, "descriptor address is GPA + 12");
        assert_eq!(p.len, u64::from((l - 12).min(2048)));
    }
    // Poison the header area to see the shim write it.
    mem.write_slice(&[0xee; 12], GuestAddress(0x2000)).unwrap();
    let f1 = eth(60, 1);
    let f2 = eth(1514, 2);
    assert!(matches!(h.inject_rx(&f1), InjectOutcome::Delivered { iova: 0x100c, .. }));
    assert!(matches!(h.inject_rx(&f2), InjectOutcome::Delivered { iova: 0x200c, .. }));
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 0, len: 72 }, Used { head: 1, len: 12 + 1514 }]);
    let mut hdr = [0u8; 12];
    mem.read_slice(&mut hdr, GuestAddress(0x2000)).unwrap();
    assert_eq!(hdr, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "flags 0, gso none, num_buffers 1");
    let mut got = vec![0u8; 1514];
    mem.read_slice(&mut got, GuestAddress(0x200c)).unwrap();
    assert_eq!(got, f2);
    // The model never wrote anywhere but GPA + 12 of posted buffers.
    assert_eq!(h.writes(), vec![DmaAccess { iova: 0x100c, len: 60 }, DmaAccess { iova: 0x200c, len: 1514 }]);
    let m = s.shim_metrics();
    assert_eq!((m.rx_zero_copy, m.rx_copy_fallback.frames, m.rx_packets, m.rx_bytes), (2, 0, 2, 1574));
    assert_eq!(m.vmm_copied_bytes, 0, "zero-copy: the VMM copied no payload byte");
    assert!(h.faults().is_empty());
}

#[test]
fn out_of_ram_guest_addresses_are_never_posted() {
    let (mut s, h, mem) = setup();
    for (i, seg) in [
        (RAM, 2048u32),         // just past the end
        (RAM - 1000, 2048),     // straddles the end
        (u64::MAX - 100, 2048), // wraps
        (0x5_0000_0000, 2048),  // far away
    ]
    .iter()
    .enumerate()
    {
        let r = s.post_rx(&mem, rxbuf(i as u16, &[*seg]));
        assert_eq!(r.unwrap_err().1, DropReason::BadAddress, "{seg:x?}");
    }
    // A chain whose second segment is outside RAM.
    let r = s.post_rx(&mem, rxbuf(9, &[(0x1000, 100), (RAM + 0x1000, 2000)]));
    assert_eq!(r.unwrap_err().1, DropReason::BadAddress);
    assert!(h.posted_rx().is_empty());
    // TX too.
    let r = s.send(&mem, txframe(1, &[(0x1000, 12), (RAM - 10, 100)]));
    assert_eq!(r, Err(DropReason::BadAddress));
    assert!(h.posted_tx().is_empty());
    assert_eq!(s.shim_metrics().drops_of(DropReason::BadAddress), 6);
}

#[test]
fn random_buffers_only_ever_expose_guest_ram_or_bounce_memory() {
    let (mut s, h, mem) = setup();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..2000u32 {
        let nseg = (next() % 3 + 1) as usize;
        let segs: Vec<(u64, u32)> = (0..nseg)
            .map(|_| {
                let a = match next() % 4 {
                    0 => next(),
                    1 => RAM - (next() % 4096),
                    _ => next() % RAM,
                };
                (a, (next() % 5000) as u32)
            })
            .collect();
        if i % 2 == 0 {
            let _ = s.post_rx(&mem, rxbuf(i as u16, &segs));
            if s.rx_room() == 0 {
                let _ = h.inject_rx(&eth(1514, 0));
                let mut u = Vec::new();
                s.reap_rx(&mem, &mut u);
                s.quiesce();
            }
        } else {
            let _ = s.send(&mem, txframe(i as u16, &segs));
            let mut u = Vec::new();
            s.reap_tx(&mut u);
        }
    }
    let bounce = RAM..u64::MAX;
    for p in h.posted_rx() {
        let in_ram = p.iova >= 12 && crate::dma::in_guest_ram(&mem, p.iova - 12, 12 + 1522);
        assert!(in_ram || bounce.contains(&p.iova), "{p:x?}");
        if in_ram {
            assert!(p.iova + p.len <= RAM);
        }
    }
    for p in h.posted_tx() {
        assert!(crate::dma::in_guest_ram(&mem, p.iova, p.len) || p.iova >= RAM, "{p:x?}");
    }
    assert!(h.faults().is_empty(), "the NIC never hit unmapped memory");
}

#[test]
fn copy_fallback_is_counted_and_correct() {
    let (mut s, h, mem) = setup();
    // Chained (header segment + data), small single (1530 = no MRG_RXBUF),
    // misaligned for the NIC (odd GPA).
    s.post_rx(&mem, rxbuf(0, &[(0x1000, 12), (0x2000, 1518)])).unwrap();
    s.post_rx(&mem, rxbuf(1, &[(0x3000, 1530)])).unwrap();
    s.post_rx(&mem, rxbuf(2, &[(0x4001, 2048)])).unwrap();
    for p in h.posted_rx() {
        assert!(p.iova >= RAM, "fallback buffers are bounce memory, not guest RAM: {p:x?}");
    }
    let frames = [eth(1000, 3), eth(1514, 4), eth(64, 5)];
    for f in &frames {
        assert!(matches!(h.inject_rx(f), InjectOutcome::Delivered { .. }));
    }
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 0, len: 1012 }, Used { head: 1, len: 1526 }, Used { head: 2, len: 76 }]);
    let mut b = vec![0u8; 1000];
    mem.read_slice(&mut b, GuestAddress(0x2000)).unwrap();
    assert_eq!(b, frames[0], "frame follows the header segment");
    let mut hdr = [0u8; 12];
    mem.read_slice(&mut hdr, GuestAddress(0x1000)).unwrap();
    assert_eq!(hdr[10], 1);
    let mut b = vec![0u8; 64];
    mem.read_slice(&mut b, GuestAddress(0x400d)).unwrap();
    assert_eq!(b, frames[2]);
    let m = s.shim_metrics();
    assert_eq!(m.rx_copy_fallback.frames, 3);
    assert_eq!(m.rx_copy_fallback.bytes, 1000 + 1514 + 64);
    assert_eq!(m.vmm_copied_bytes, 1000 + 1514 + 64, "every bounced payload byte is counted");
    assert_eq!(s.metrics()["vmm_copied_bytes"], 1000 + 1514 + 64);
    assert_eq!(m.rx_zero_copy, 0);
}

#[test]
fn a_buffer_straddling_two_ram_regions_takes_the_copy_fallback() {
    // Two adjacent regions: one 2 KiB buffer across their boundary is guest
    // RAM, but not one mapping, so the NIC must not write it directly.
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x8000), (GuestAddress(0x8000), 0x8000)]).unwrap();
    let (model, h) = NicModel::new(&mem, ModelConfig::default()).unwrap();
    let mut s = ShimBackend::new(model, &mem, MAC).unwrap();
    s.post_rx(&mem, rxbuf(4, &[(0x7c00, 2048)])).unwrap();
    s.post_rx(&mem, rxbuf(5, &[(0x1000, 2048)])).unwrap();
    let posted = h.posted_rx();
    assert!(posted[0].iova >= 0x1_0000, "straddling buffer is bounced: {posted:x?}");
    assert_eq!(posted[1].iova, 0x100c, "the other one is zero-copy");
    let f = eth(1514, 9);
    assert!(matches!(h.inject_rx(&f), InjectOutcome::Delivered { .. }));
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 4, len: 1526 }]);
    let mut b = vec![0u8; 1514];
    mem.read_slice(&mut b, GuestAddress(0x7c00 + 12)).unwrap();
    assert_eq!(b, f, "the frame crosses the region boundary intact");
    assert_eq!(s.shim_metrics().rx_copy_fallback.frames, 1);
}

#[test]
fn frame_larger_than_a_fallback_buffer_is_dropped_and_buffer_recycled() {
    let (mut s, h, mem) = setup();
    s.post_rx(&mem, rxbuf(7, &[(0x1000, 200)])).unwrap();
    assert!(matches!(h.inject_rx(&eth(300, 1)), InjectOutcome::Delivered { .. }));
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert!(used.is_empty(), "guest sees nothing");
    assert_eq!(s.shim_metrics().drops_of(DropReason::BufferTooSmall), 1);
    assert_eq!(s.rx_posted(), 1, "buffer went back to the NIC");
    let f = eth(100, 2);
    h.inject_rx(&f);
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 7, len: 112 }]);
}

#[test]
fn tx_segments_exclude_the_header() {
    let (mut s, h, mem) = setup();
    let payload = tx_eth(100, 9);
    // Header in its own segment.
    mem.write_slice(&payload, GuestAddress(0x2000)).unwrap();
    assert_eq!(s.send(&mem, txframe(1, &[(0x1000, 12), (0x2000, 100)])), Ok(false));
    // Header and payload in one segment.
    mem.write_slice(&payload, GuestAddress(0x300c)).unwrap();
    assert_eq!(s.send(&mem, txframe(2, &[(0x3000, 112)])), Ok(false));
    // A segment spanning the virtio header boundary is split, and the
    // Ethernet header is gathered across the two.
    mem.write_slice(&payload[..2], GuestAddress(0x400c)).unwrap();
    mem.write_slice(&payload[2..], GuestAddress(0x5000)).unwrap();
    assert_eq!(s.send(&mem, txframe(3, &[(0x4000, 14), (0x5000, 98)])), Ok(false));
    let p = h.posted_tx();
    assert_eq!(p.len(), 6, "{p:?}");
    assert!(p.iter().step_by(2).all(is_hdr_copy), "every frame starts with the VMM's header copy: {p:?}");
    assert_eq!(
        p.iter().skip(1).step_by(2).copied().collect::<Vec<_>>(),
        vec![
            DmaAccess { iova: 0x200e, len: 86 },
            DmaAccess { iova: 0x301a, len: 86 },
            DmaAccess { iova: 0x500c, len: 86 },
        ],
        "the rest of the frame zero-copy from the guest"
    );
    assert_eq!(h.sent(), vec![payload.clone(); 3]);
    let mut used = Vec::new();
    s.reap_tx(&mut used);
    let heads: Vec<u16> = used.iter().map(|u| u.head).collect();
    assert_eq!(heads, vec![1, 2, 3]);
    assert!(used.iter().all(|u| u.len == 0));
    let m = s.shim_metrics();
    assert_eq!((m.tx_zero_copy, m.tx_packets, m.tx_bytes), (3, 3, 300));
    assert_eq!((m.tx_header_bytes, m.vmm_copied_bytes), (42, 42), "the header copies are VMM copies");
    // Bad frames.
    assert_eq!(s.send(&mem, txframe(5, &[(0x1000, 12)])), Err(DropReason::ShortHeader));
    assert_eq!(s.send(&mem, txframe(6, &[(0x1000, 12 + 1600)])), Err(DropReason::FrameTooLong));
    assert_eq!(s.send(&mem, txframe(7, &[(0x2ff2, 12 + 13)])), Err(DropReason::RuntFrame));
}

/// Frames the VM must not put on the wire are dropped and counted, checked
/// on the VMM's copy: a guest rewriting its header after the check does not
/// change what the NIC sends.
#[test]
fn wire_policy_drops_and_counts_and_sends_the_checked_copy() {
    let cfg = ModelConfig { auto_tx: false, ..Default::default() };
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let (model, h) = NicModel::new(&mem, cfg).unwrap();
    let mut s = ShimBackend::new(model, &mem, MAC).unwrap();
    let bad = |f: &mut Vec<u8>, which: u8| match which {
        0 => f[11] ^= 1,
        1 => f[12..14].copy_from_slice(&[0x81, 0x00]),
        2 => f[12..14].copy_from_slice(&[0x88, 0x08]),
        3 => f[12..14].copy_from_slice(&[0x88, 0xcc]),
        _ => f[..6].copy_from_slice(&[0x01, 0x80, 0xc2, 0, 0, 0]),
    };
    let want = [
        DropReason::SpoofedSource,
        DropReason::VlanTagged,
        DropReason::MacControl,
        DropReason::LinkLocal,
        DropReason::LinkLocal,
    ];
    for (i, reason) in want.iter().enumerate() {
        let mut f = tx_eth(60, 3);
        bad(&mut f, i as u8);
        // One segment (the fast path) and a split chain (the general one).
        mem.write_slice(&f, GuestAddress(0x100c)).unwrap();
        assert_eq!(s.send(&mem, txframe(i as u16, &[(0x1000, 72)])), Err(*reason), "{i}");
        mem.write_slice(&f, GuestAddress(0x2000)).unwrap();
        assert_eq!(s.send(&mem, txframe(i as u16, &[(0x1000, 12), (0x2000, 60)])), Err(*reason), "{i}");
    }
    assert!(h.posted_tx().is_empty(), "nothing of them reached the NIC");
    let m = s.shim_metrics();
    assert_eq!(m.drops_of(DropReason::SpoofedSource), 2);
    assert_eq!(m.drops_of(DropReason::VlanTagged), 2);
    assert_eq!(m.drops_of(DropReason::MacControl), 2);
    assert_eq!(m.drops_of(DropReason::LinkLocal), 4);
    let j = s.metrics();
    assert_eq!(j["drops"]["spoofed_source"], 2);
    assert_eq!(j["drops"]["vlan_tagged"], 2);
    assert_eq!(j["drops"]["mac_control"], 2);
    // A good frame, then the guest spoofs its source after the check, before
    // the NIC reads the frame: the wire sees the checked header.
    let good = tx_eth(60, 5);
    mem.write_slice(&good, GuestAddress(0x100c)).unwrap();
    assert_eq!(s.send(&mem, txframe(9, &[(0x1000, 72)])), Ok(false));
    mem.write_slice(&[0xee; 14], GuestAddress(0x100c)).unwrap();
    h.complete_tx();
    let sent = h.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0][..14], good[..14], "the header came from the VMM's copy");
    assert_eq!(sent[0][14..], good[14..]);
}

#[test]
fn fragmented_tx_takes_the_counted_copy_fallback() {
    let (mut s, h, mem) = setup();
    let payload = tx_eth(120, 4);
    let mut segs = vec![(0x1000u64, 12u32)];
    for i in 0..12u64 {
        let a = 0x2000 + i * 0x100;
        mem.write_slice(&payload[(i * 10) as usize..(i * 10 + 10) as usize], GuestAddress(a)).unwrap();
        segs.push((a, 10));
    }
    assert_eq!(s.send(&mem, txframe(1, &segs)), Ok(false));
    assert_eq!(h.sent(), vec![payload]);
    let p = h.posted_tx();
    assert_eq!(p.len(), 1);
    assert!(p[0].iova >= RAM);
    assert_eq!(s.shim_metrics().tx_copy_fallback.frames, 1);
    assert_eq!(s.shim_metrics().vmm_copied_bytes, 14 + 120, "the header copy and the bounced frame are counted");
    assert_eq!(s.shim_metrics().tx_zero_copy, 0);
}

#[test]
fn after_quiesce_no_write_lands_in_a_previously_posted_buffer() {
    let (mut s, h, mem) = setup();
    let bufs: Vec<(u64, u32)> = (0..16).map(|i| (0x1_0000 + i * 0x1000, 2048)).collect();
    for (i, b) in bufs.iter().enumerate() {
        s.post_rx(&mem, rxbuf(i as u16, &[*b])).unwrap();
    }
    h.inject_rx(&eth(60, 1));
    s.quiesce();
    assert_eq!(s.shim_metrics().quiesces, 1);
    assert_eq!(s.shim_metrics().quiesce_forgotten_buffers, 16, "the NIC held all 16 buffers");
    assert_eq!(s.metrics()["quiesces"], 1);
    for (a, l) in &bufs {
        mem.write_slice(&vec![0x5a; *l as usize], GuestAddress(*a)).unwrap();
    }
    let before = h.writes().len();
    for _ in 0..32 {
        assert_eq!(h.inject_rx(&eth(60, 2)), InjectOutcome::NoBuffer);
    }
    assert_eq!(h.writes().len(), before, "no DMA after quiesce");
    for (a, l) in &bufs {
        let mut b = vec![0u8; *l as usize];
        mem.read_slice(&mut b, GuestAddress(*a)).unwrap();
        assert!(b.iter().all(|x| *x == 0x5a));
    }
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert!(used.is_empty(), "forgotten buffers are not completed");
    // The device works again after the reset.
    s.post_rx(&mem, rxbuf(0, &[(0x2_0000, 2048)])).unwrap();
    assert!(matches!(h.inject_rx(&eth(60, 3)), InjectOutcome::Delivered { iova: 0x2_000c, .. }));
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 0, len: 72 }]);
}

#[test]
fn surprise_removal_downs_the_link_and_returns_buffers() {
    let (mut s, h, mem) = setup();
    assert!(s.link_up());
    s.post_rx(&mem, rxbuf(3, &[(0x1000, 2048)])).unwrap();
    h.remove();
    s.process_event(&mem, 0);
    assert!(!s.link_up());
    assert!(s.shim_metrics().nic_errors >= 1);
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 3, len: 0 }]);
    assert_eq!(s.post_rx(&mem, rxbuf(4, &[(0x1000, 2048)])).unwrap_err().1, DropReason::BackendError);
    assert_eq!(s.send(&mem, txframe(1, &[(0x1000, 112)])), Err(DropReason::BackendError));
    assert_eq!(s.rx_room(), 0);
    let m = s.metrics();
    assert_eq!(m["link_up"], false);
    assert!(m["nic_errors"].as_u64().unwrap() >= 1);
}

#[test]
fn a_nic_that_vanishes_mid_run_refuses_the_rest_of_the_run_at_once() {
    let (mut s, h, mem) = setup();
    s.post_rx(&mem, rxbuf(0, &[(0x1000, 2048)])).unwrap();
    let posted = h.posted_rx().len();
    h.remove();
    // A run of one-segment buffers, as the device posts them in one refill.
    let mut refused = Vec::new();
    for i in 1..6u16 {
        let seg = [(GuestAddress(0x1000 * u64::from(i + 1)), 2048)];
        if let Err(r) = s.post_rx_chain(ChainRef { head: i, segs: &seg, len: 2048 }) {
            refused.push((i, r));
        }
    }
    s.flush_rx();
    let heads: Vec<u16> = refused.iter().map(|r| r.0).collect();
    assert_eq!(heads, vec![1, 2, 3, 4, 5]);
    assert!(refused.iter().all(|r| r.1 == DropReason::BackendError), "{refused:?}");
    assert_eq!(s.shim_metrics().nic_errors, 1, "one driver error, then no more driver calls");
    assert_eq!(h.posted_rx().len(), posted, "nothing reached the vanished NIC");
    assert!(!s.link_up());
}

#[test]
fn link_state_and_mac_filter() {
    let (mut s, h, mem) = setup();
    assert_eq!(h.mac(), Some(MAC));
    h.set_link(false);
    s.process_event(&mem, 0);
    assert!(!s.link_up());
    h.set_link(true);
    s.process_event(&mem, 0);
    assert!(s.link_up());
    assert_eq!(s.features() & VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MRG_RXBUF);
    assert_eq!(s.event_fds().len(), 1);
    let m = s.metrics();
    for k in ["rx_packets", "tx_packets", "rx_zero_copy", "rx_copy_fallback", "tx_zero_copy", "drops", "nic_errors"] {
        assert!(m.get(k).is_some(), "{k}");
    }
}

#[test]
fn tx_backlog_when_the_ring_is_full() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let cfg = ModelConfig { auto_tx: false, ..Default::default() };
    let (model, h) = NicModel::new(&mem, cfg).unwrap();
    let mut s = ShimBackend::new(model, &mem, MAC).unwrap();
    mem.write_slice(&tx_eth(100, 1), GuestAddress(0x100c)).unwrap();
    for i in 0..300u16 {
        assert_eq!(s.send(&mem, txframe(i, &[(0x1000, 112)])), Ok(false));
    }
    // Two descriptors a frame (header copy and the rest): 127 fit the ring.
    assert_eq!(h.posted_tx().len(), 254);
    h.complete_tx();
    let mut used = Vec::new();
    s.reap_tx(&mut used);
    assert_eq!(used.len(), 127);
    assert_eq!(h.posted_tx().len(), 508, "backlog went out once there was room");
    for _ in 0..3 {
        h.complete_tx();
        s.reap_tx(&mut used);
    }
    assert_eq!(h.posted_tx().len(), 600, "the whole backlog went out");
    assert_eq!(used.len(), 300);
    let mut heads: Vec<u16> = used.iter().map(|u| u.head).collect();
    heads.sort();
    heads.dedup();
    assert_eq!(heads.len(), 300, "every frame completed exactly once");
}

#[test]
fn tx_chains_start_with_one_tail_write_per_batch() {
    let (mut s, h, mem) = setup();
    let payload = tx_eth(100, 4);
    for i in 0..3u64 {
        mem.write_slice(&payload, GuestAddress(0x1_000c + i * 0x1000)).unwrap();
    }
    let flushes = h.tx_flush_count();
    for i in 0..3u16 {
        let seg = [(GuestAddress(0x1_0000 + u64::from(i) * 0x1000), 112)];
        assert_eq!(s.send_chain(ChainRef { head: i, segs: &seg, len: 112 }), Ok(false));
    }
    assert_eq!(h.posted_tx().len(), 6, "queued in the NIC ring (header copy and the rest)");
    assert!(h.sent().is_empty(), "but not sent before the batch ends");
    assert_eq!(h.tx_flush_count(), flushes);
    s.flush_tx();
    assert_eq!(h.tx_flush_count(), flushes + 1, "one tail write for the batch");
    assert_eq!(h.sent(), vec![payload.clone(); 3]);
    s.flush_tx();
    assert_eq!(h.tx_flush_count(), flushes + 1, "nothing queued, no tail write");
    // `send` is a batch of its own.
    mem.write_slice(&payload, GuestAddress(0x2_000c)).unwrap();
    assert_eq!(s.send(&mem, txframe(9, &[(0x2_0000, 112)])), Ok(false));
    assert_eq!(h.tx_flush_count(), flushes + 2);
    assert_eq!(h.sent().len(), 4);
    let mut used = Vec::new();
    s.reap_tx(&mut used);
    let heads: Vec<u16> = used.iter().map(|u| u.head).collect();
    assert_eq!(heads, vec![0, 1, 2, 9]);
}

#[test]
fn discard_pending_drains_the_interrupt_fd() {
    let (mut s, h, mem) = setup();
    s.post_rx(&mem, rxbuf(0, &[(0x1000, 2048)])).unwrap();
    h.inject_rx(&eth(60, 1));
    let fd = s.event_fds()[0];
    let readable = |fd| {
        let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut p, 1, 0) == 1 }
    };
    assert!(readable(fd));
    s.discard_pending(0);
    assert!(!readable(fd));
}

#[test]
fn chain_posts_become_visible_to_the_nic_with_one_tail_write_per_batch() {
    let (mut s, h, mem) = setup();
    let segs: Vec<[(GuestAddress, u32); 1]> =
        (0..8u64).map(|i| [(GuestAddress(0x1_0000 + i * 0x1000), 2048)]).collect();
    for (i, seg) in segs.iter().enumerate() {
        s.post_rx_chain(ChainRef { head: i as u16, segs: seg, len: 2048 }).unwrap();
        assert_eq!(h.rx_unflushed(), i + 1, "buffer {i} waits for the batch's tail write");
    }
    assert!(matches!(h.inject_rx(&eth(60, 1)), InjectOutcome::NoBuffer), "the NIC sees nothing before the tail write");
    assert_eq!(h.rx_flush_count(), 0);
    s.flush_rx();
    assert_eq!(h.rx_unflushed(), 0, "the batch is visible");
    assert_eq!(h.rx_flush_count(), 1, "one tail write for the batch");
    s.flush_rx();
    assert_eq!(h.rx_flush_count(), 1, "nothing left unflushed: no extra tail write");
    assert!(matches!(h.inject_rx(&eth(60, 1)), InjectOutcome::Delivered { .. }));
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 0, len: 72 }]);
    // A frame the shim drops (NIC error) recycles its buffer: reap_rx itself
    // makes it visible again.
    let flushes = h.rx_flush_count();
    assert!(matches!(h.inject_rx(&eth(1600, 1)), InjectOutcome::Oversized));
    s.post_rx_chain(ChainRef { head: 100, segs: &[(GuestAddress(0x9_0000), 200)], len: 200 }).unwrap();
    s.flush_rx();
    // The bounce buffer for head 100 is last in the NIC's queue; fill the 7
    // zero-copy ones first, then a frame too big for head 100's 200 bytes.
    for i in 0..7u8 {
        assert!(matches!(h.inject_rx(&eth(60, i)), InjectOutcome::Delivered { .. }));
    }
    assert!(matches!(h.inject_rx(&eth(500, 9)), InjectOutcome::Delivered { .. }));
    used.clear();
    s.reap_rx(&mem, &mut used);
    assert_eq!(used.len(), 7, "the oversized-for-its-buffer frame is dropped");
    assert_eq!(s.shim_metrics().drops_of(DropReason::BufferTooSmall), 1);
    assert_eq!(h.rx_unflushed(), 0, "the recycled buffer was flushed by reap_rx");
    assert_eq!(h.rx_flush_count(), flushes + 2);
    assert!(matches!(h.inject_rx(&eth(100, 3)), InjectOutcome::Delivered { .. }));
    used.clear();
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 100, len: 112 }]);
}

#[test]
fn unknown_and_stale_cookies_from_the_nic_are_ignored_and_counted() {
    use crate::driver::RxCompletion;
    let (mut s, h, mem) = setup();
    for i in 0..4u16 {
        s.post_rx(&mem, rxbuf(i, &[(0x1_0000 + u64::from(i) * 0x1000, 2048)])).unwrap();
    }
    let InjectOutcome::Delivered { cookie, .. } = h.inject_rx(&eth(60, 1)) else {
        panic!("not delivered");
    };
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 0, len: 72 }]);
    // Head 0's entry is reused by the next post: its old cookie is stale.
    s.post_rx(&mem, rxbuf(0, &[(0x1_0000, 2048)])).unwrap();
    let errors = s.shim_metrics().nic_errors;
    let bogus = [cookie, 0, u64::MAX, cookie ^ (1 << 32), cookie + 1000, 1 << 63 | 2, 0xffff_ffff];
    for c in bogus {
        h.inject_rx_completion(RxCompletion { cookie: c, len: 60, eop: true, error: false, csum_ok: false });
        h.inject_tx_completion(c);
    }
    used.clear();
    s.process_event(&mem, 0);
    s.reap_rx(&mem, &mut used);
    s.reap_tx(&mut used);
    assert!(used.is_empty(), "no used entry for a cookie the shim did not issue: {used:?}");
    assert_eq!(s.shim_metrics().nic_errors, errors + 2 * bogus.len() as u64);
    assert_eq!(s.rx_posted(), 4, "the real buffers are untouched");
    // They still work.
    for i in 0..4u8 {
        assert!(matches!(h.inject_rx(&eth(60, i)), InjectOutcome::Delivered { .. }));
    }
    s.reap_rx(&mem, &mut used);
    assert_eq!(used.len(), 4);
}

#[test]
fn tx_length_comes_from_the_segments_not_the_summary() {
    let (mut s, h, mem) = setup();
    // Claims 100 bytes, describes a 12-byte header and 4 x 4000 bytes.
    let segs: Vec<(GuestAddress, u32)> = std::iter::once((GuestAddress(0x1000), 12))
        .chain((0..4u64).map(|i| (GuestAddress(0x2_0000 + i * 0x1000), 4000)))
        .collect();
    let lie = TxFrame { head: 3, segs, len: 100 };
    assert_eq!(s.send(&mem, lie), Err(DropReason::FrameTooLong));
    assert!(h.posted_tx().is_empty(), "nothing reached the NIC");
    assert_eq!(s.shim_metrics().drops_of(DropReason::FrameTooLong), 1);
}

#[test]
fn a_nic_that_vanishes_while_a_dropped_frame_is_recycled_loses_no_buffer() {
    let (mut s, h, mem) = setup();
    // Head 0: 200 bytes, so it takes a bounce buffer; heads 1-3 zero-copy.
    s.post_rx(&mem, rxbuf(0, &[(0x9_0000, 200)])).unwrap();
    for i in 1..4u16 {
        s.post_rx(&mem, rxbuf(i, &[(0x1_0000 + u64::from(i) * 0x1000, 2048)])).unwrap();
    }
    // A frame too big for head 0: the shim drops it and gives the buffer
    // back to the NIC, which has vanished by then.
    assert!(matches!(h.inject_rx(&eth(500, 1)), InjectOutcome::Delivered { .. }));
    h.remove();
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    let mut heads: Vec<u16> = used.iter().map(|u| u.head).collect();
    heads.sort_unstable();
    assert_eq!(heads, vec![0, 1, 2, 3], "every buffer comes back: {used:?}");
    assert!(used.iter().all(|u| u.len == 0), "{used:?}");
    assert!(!s.link_up());
}

#[test]
fn a_vf_dictates_the_guest_mac_and_a_different_configured_one_is_a_clear_error() {
    use super::{pick_mac, ShimError};
    let bdf: crate::bdf::Bdf = "0000:01:10.0".parse().unwrap();
    let (vf, other, random) = ([0x52, 0x54, 0, 0xaa, 0, 1], [0x52, 0x54, 0, 0xaa, 0, 2], [0x02, 0, 0, 0, 0, 3]);
    assert_eq!(pick_mac(bdf, Some(vf), None, random).unwrap(), vf, "no MAC configured: the VF's");
    assert_eq!(pick_mac(bdf, Some(vf), Some(vf), random).unwrap(), vf);
    assert_eq!(pick_mac(bdf, None, Some(other), random).unwrap(), other, "a whole NIC takes the guest's");
    assert_eq!(pick_mac(bdf, None, None, random).unwrap(), random);
    let e = pick_mac(bdf, Some(vf), Some(other), random).unwrap_err();
    assert!(matches!(e, ShimError::MacMismatch { .. }));
    let msg = e.to_string();
    assert!(msg.contains("52:54:00:aa:00:01") && msg.contains("52:54:00:aa:00:02") && msg.contains("SR-IOV"), "{msg}");
}
