//! igb driver against a register-file fake: checks the programming sequence
//! and the descriptor formats, not a NIC's data path (that is the testbed's job).

use std::sync::atomic::Ordering;

use super::*;
use crate::driver::testing::DriverTestExt;
use crate::driver::{DriverError, PnicDriver, RxCompletion, TxCompletion};
use crate::e1000_common::driver::Family;
use crate::e1000_common::testutil::{bring_up, FakeRegs, RegState};

/// The 82576's own register behaviour: a stuck RX queue never reads back
/// RXDCTL.ENABLE clear.
fn quirk(s: &mut RegState, off: u32, v: u32) -> Option<u32> {
    (off == RXDCTL0 && s.stuck && v & RXDCTL_ENABLE == 0).then_some(v | RXDCTL_ENABLE)
}

fn igb() -> (Igb<FakeRegs>, FakeRegs) {
    bring_up(quirk, Igb::new)
}

#[test]
fn bring_up_programs_frame_cap_and_filters() {
    let (mut d, r) = igb();
    assert!(!r.writes_to(CTRL).is_empty() && r.writes_to(CTRL)[0] & CTRL_RST != 0);
    assert_eq!(r.writes_to(EIMC)[0], u32::MAX, "interrupts masked first");
    assert!(r
        .writes_to(MDIC)
        .iter()
        .any(|v| v & MDIC_DATA_MASK == 0x1340 && v & MDIC_OP_WRITE != 0 && (v >> MDIC_PHY_SHIFT) & 0x1f == PHY_ADDR));
    assert_eq!(r.get(RLPML), 1518, "MTU 1500: 1514 bytes and the CRC");
    assert_eq!(r.get(SRRCTL0), 2 | SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN);
    assert_eq!(r.get(RXCSUM), RXCSUM_IPOFLD | RXCSUM_TUOFLD, "RX checksums checked (GUEST_CSUM)");
    let l = d.limits();
    assert_eq!((l.rx_max_write, l.rx_max_frame), (1518, 1518), "one buffer per frame");
    assert_eq!(r.get(RDLEN0), 4096);
    let rx_iova = u64::from(r.get(RDBAL0)) | (u64::from(r.get(RDBAH0)) << 32);
    assert!(rx_iova >= 0x10_0000, "ring IOVA must lie above guest RAM");
    assert_eq!(r.get(RAL0), 0x1200_5452);
    assert_eq!(r.get(RAH0), 0x5634 | RAH_AV);
    assert_eq!(r.get(RCTL) & RCTL_EN, 0, "RX stays off until start");
    assert_eq!(d.rx_free(), 0);
    d.start().unwrap();
    let rctl = r.get(RCTL);
    for bit in [RCTL_EN, RCTL_BAM, RCTL_SECRC, RCTL_LPE, RCTL_MPE] {
        assert_ne!(rctl & bit, 0, "RCTL bit {bit:#x}");
    }
    assert_eq!(rctl & RCTL_UPE, 0, "no unicast promiscuous");
    assert_ne!(r.get(RXDCTL0) & RXDCTL_ENABLE, 0);
    assert_ne!(r.get(TCTL) & (TCTL_EN | TCTL_PSP), 0);
    assert!(d.link_up().unwrap());
    assert_eq!(d.rx_free(), RX_RING_SIZE - 1);
}

#[test]
fn rx_descriptors_carry_the_posted_iova_and_complete_on_dd() {
    let (mut d, r) = igb();
    d.start().unwrap();
    d.post_rx(0x1000 + 12, 1524, 7).unwrap();
    d.post_rx(0x2000 + 12, 1524, 8).unwrap();
    assert_eq!(d.rx_ring.area().load::<u64>(0, Ordering::Relaxed).unwrap(), 0x100c);
    assert_eq!(d.rx_ring.area().load::<u64>(16, Ordering::Relaxed).unwrap(), 0x200c);
    d.flush_rx().unwrap();
    assert_eq!(r.get(RDT0), 2);
    let mut out = Vec::new();
    d.reap_rx(&mut out).unwrap();
    assert!(out.is_empty(), "nothing done before DD");
    // NIC write-back of slot 0: length 60, DD|EOP.
    d.rx_ring.area().store(RXD_STATUS_OFF, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
    d.rx_ring.area().store(RXD_LEN_OFF, 60u16, Ordering::Relaxed).unwrap();
    d.reap_rx(&mut out).unwrap();
    assert_eq!(out, vec![RxCompletion { cookie: 7, len: 60, eop: true, error: false, csum_ok: false }]);
    // An error bit and a bogus oversized length are both flagged.
    d.rx_ring.area().store(16 + RXD_STATUS_OFF, RXD_STAT_DD | RXD_STAT_EOP | (1 << 31), Ordering::Relaxed).unwrap();
    d.rx_ring.area().store(16 + RXD_LEN_OFF, 9000u16, Ordering::Relaxed).unwrap();
    out.clear();
    d.reap_rx(&mut out).unwrap();
    assert_eq!(out[0].cookie, 8);
    assert!(out[0].error);
    assert_eq!(out[0].len, 9000, "reported as written: above RX_MAX_FRAME ({RX_MAX_FRAME}) is the caller's to see");
}

#[test]
fn rx_rejects_short_or_odd_buffers_and_full_ring() {
    let (mut d, _r) = igb();
    assert_eq!(d.post_rx(0x1000, 2048, 1), Err(DriverError::Stopped));
    d.start().unwrap();
    let max = d.limits().rx_max_write;
    assert!(matches!(d.post_rx(0x1000, max - 1, 1), Err(DriverError::BadBuffer(_))));
    assert!(matches!(d.post_rx(0x1001, 2048, 1), Err(DriverError::BadBuffer(_))));
    for i in 0..RX_RING_SIZE - 1 {
        d.post_rx(0x1000, 2048, i as u64).unwrap();
    }
    assert_eq!(d.post_rx(0x1000, 2048, 999), Err(DriverError::RingFull("RX")));
}

#[test]
fn tx_descriptor_format() {
    let (mut d, r) = igb();
    d.start().unwrap();
    d.post_tx(&[(0x1000, 14), (0x3000, 50)], 42).unwrap();
    assert_eq!(r.get(TDT0), 2);
    let c0: u32 = d.tx_ring.area().load(8, Ordering::Relaxed).unwrap();
    let c1: u32 = d.tx_ring.area().load(24, Ordering::Relaxed).unwrap();
    assert_eq!(c0 & 0xffff, 14);
    assert_eq!(c0 & (TXD_CMD_EOP | TXD_CMD_RS), 0, "EOP/RS only on the last");
    assert_eq!(c1 & 0xffff, 50);
    for b in [TXD_CMD_EOP, TXD_CMD_RS, TXD_CMD_IFCS, TXD_CMD_DEXT, TXD_DTYP_DATA] {
        assert_eq!(c1 & b, b);
    }
    let ol: u32 = d.tx_ring.area().load(12, Ordering::Relaxed).unwrap();
    assert_eq!(ol >> TXD_PAYLEN_SHIFT, 64);
    assert_eq!(d.tx_ring.area().load::<u64>(16, Ordering::Relaxed).unwrap(), 0x3000);
    let mut out = Vec::new();
    d.reap_tx(&mut out).unwrap();
    assert!(out.is_empty());
    d.tx_ring.area().store(16 + TXD_STATUS_OFF, TXD_STAT_DD, Ordering::Relaxed).unwrap();
    d.reap_tx(&mut out).unwrap();
    assert_eq!(out, vec![TxCompletion { cookie: 42 }]);
    assert_eq!(d.tx_free(), TX_RING_SIZE - 1);
    assert!(matches!(d.post_tx(&[(0, 1); 9], 1), Err(DriverError::TooManySegments { .. })));
    assert!(matches!(d.post_tx(&[(0, 1600)], 1), Err(DriverError::BadBuffer(_))));
}

#[test]
fn quiesce_stops_queues_and_forgets_buffers() {
    let (mut d, r) = igb();
    d.start().unwrap();
    d.post_rx(0x1000, 2048, 1).unwrap();
    d.flush_rx().unwrap();
    d.quiesce().unwrap();
    assert_eq!(r.get(RXDCTL0) & RXDCTL_ENABLE, 0);
    assert_eq!(r.get(TXDCTL0) & TXDCTL_ENABLE, 0);
    assert_eq!(r.get(RCTL) & RCTL_EN, 0);
    // A late write-back is not reported: the buffer was forgotten.
    d.rx_ring.area().store(RXD_STATUS_OFF, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
    let mut out = Vec::new();
    d.reap_rx(&mut out).unwrap();
    assert!(out.is_empty());
    d.start().unwrap();
    assert_eq!(r.get(RDT0), 0);
}

#[test]
fn quiesce_that_does_not_stop_resets_the_nic() {
    let (mut d, r) = igb();
    d.start().unwrap();
    r.0.lock().unwrap().stuck = true;
    let n = r.writes_to(CTRL).iter().filter(|v| *v & CTRL_RST != 0).count();
    assert!(matches!(d.quiesce(), Err(DriverError::Timeout(_))));
    let m = r.writes_to(CTRL).iter().filter(|v| *v & CTRL_RST != 0).count();
    assert_eq!(m, n + 1, "a full reset followed");
}

#[test]
fn surprise_removal_is_an_error_not_a_panic() {
    let (mut d, r) = igb();
    d.start().unwrap();
    r.0.lock().unwrap().removed = true;
    assert_eq!(d.link_up(), Err(DriverError::Removed));
    assert_eq!(d.post_rx(0x1000, 2048, 1), Err(DriverError::Removed));
    assert_eq!(d.handle_irq(0), Err(DriverError::Removed));
}

#[test]
fn jumbo_mtu_programs_1k_buffers_and_the_frame_cap() {
    let (d, r) = bring_up(quirk, |regs, m, iova, mut cfg, v| {
        cfg.mtu = 9000;
        Igb::new(regs, m, iova, cfg, v)
    });
    assert_eq!(r.get(RLPML), 9018, "9000 + Ethernet header + CRC");
    assert_eq!(r.get(SRRCTL0), 1 | SRRCTL_DESCTYPE_ADV_ONEBUF | SRRCTL_DROP_EN, "BSIZEPACKET 1 KiB");
    let l = d.limits();
    assert_eq!(
        (l.rx_max_write, l.rx_max_frame),
        (1024, 9018),
        "1 KiB per buffer, 9000 + header + a VLAN tag at most (CRC stripped)"
    );
    for bad in [67u16, 9001] {
        let e = <Igb82576 as Family>::rx_geometry(bad);
        assert!(matches!(e, Err(DriverError::Unsupported(ref m)) if m.contains(&bad.to_string())), "MTU {bad}");
    }
}

#[test]
fn checksum_status_is_reported_and_a_bad_checksum_is_not_a_frame_error() {
    let (mut d, _r) = igb();
    d.start().unwrap();
    for i in 0..3u64 {
        d.post_rx(0x1000 * (i + 1), 2048, i).unwrap();
    }
    let eop = RXD_STAT_DD | RXD_STAT_EOP;
    for (slot, st) in
        [eop | RXD_STAT_TCPCS, eop | RXD_STAT_TCPCS | RXD_STAT_UDPCS | RXD_ERR_TCPE, eop].iter().enumerate()
    {
        d.rx_ring.area().store(slot as u64 * 16 + RXD_STATUS_OFF, *st, Ordering::Relaxed).unwrap();
        d.rx_ring.area().store(slot as u64 * 16 + RXD_LEN_OFF, 60u16, Ordering::Relaxed).unwrap();
    }
    let mut out = Vec::new();
    d.reap_rx(&mut out).unwrap();
    let got: Vec<(bool, bool)> = out.iter().map(|c| (c.error, c.csum_ok)).collect();
    assert_eq!(got, vec![(false, true), (false, false), (false, false)]);
}

#[test]
fn a_multi_buffer_frame_comes_back_in_parts_for_the_caller_to_join() {
    let (mut d, _r) = igb();
    d.start().unwrap();
    for i in 0..3u64 {
        d.post_rx(0x1000 * (i + 1), 2048, i).unwrap();
    }
    d.flush_rx().unwrap();
    // Slot 0 without EOP, slot 1 its EOP tail, slot 2 a normal frame.
    d.rx_ring.area().store(RXD_STATUS_OFF, RXD_STAT_DD, Ordering::Relaxed).unwrap();
    d.rx_ring.area().store(16 + RXD_STATUS_OFF, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
    d.rx_ring.area().store(32 + RXD_STATUS_OFF, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
    for i in 0..3 {
        d.rx_ring.area().store(i * 16 + RXD_LEN_OFF, 100u16, Ordering::Relaxed).unwrap();
    }
    let mut out = Vec::new();
    d.reap_rx(&mut out).unwrap();
    assert!(!out[0].eop && !out[0].error);
    assert!(out[1].eop && !out[1].error, "the shim knows the tail by the part before it");
    assert!(out[2].eop && !out[2].error);
}
