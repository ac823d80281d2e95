//! 82574L driver against a register-file fake: programming sequence,
//! descriptor formats, quiesce through the GIO master.

use std::sync::atomic::Ordering;

use super::*;
use crate::driver::testing::DriverTestExt;
use crate::driver::{DriverError, PnicDriver, RxCompletion, TxCompletion};
use crate::e1000_common::testutil::{bring_up, FakeRegs, RegState};

/// The 82574L's own register behaviour: CTRL.GIO_MASTER_DISABLE clears
/// STATUS.GIO_MASTER_EN unless the master is stuck; any other CTRL write sets
/// it. The common CTRL handling (reset completes at once) still applies.
fn quirk(s: &mut RegState, off: u32, v: u32) -> Option<u32> {
    if off == CTRL {
        let st = s.regs.get(&STATUS).copied().unwrap_or(0);
        let master = if v & CTRL_GIO_MASTER_DISABLE != 0 && !s.stuck {
            st & !STATUS_GIO_MASTER_EN
        } else {
            st | STATUS_GIO_MASTER_EN
        };
        s.regs.insert(STATUS, master);
    }
    None
}

fn dev() -> (E1000e<FakeRegs>, FakeRegs) {
    bring_up(quirk, E1000e::new)
}

#[test]
fn bring_up_caps_frames_and_uses_legacy_descriptors() {
    let (mut d, r) = dev();
    assert_eq!(r.resets(), 1);
    assert_eq!(r.get(RFCTL) & RFCTL_EXTEN, 0);
    assert_eq!(r.get(RDLEN0), 4096);
    assert_eq!(r.get(RAL0), 0x1200_5452);
    assert_eq!(r.get(RAH0), 0x5634 | RAH_AV);
    assert_eq!(r.get(IVAR), 0x8 | (0x8 << 8) | (0x9 << 16));
    d.start().unwrap();
    let rctl = r.get(RCTL);
    for bit in [RCTL_EN, RCTL_BAM, RCTL_SECRC, RCTL_MPE] {
        assert_ne!(rctl & bit, 0, "{bit:#x}");
    }
    assert_eq!(rctl & (RCTL_LPE | RCTL_UPE | RCTL_BSEX | RCTL_BSIZE_MASK), 0, "2 KiB buffers, 1522-byte cap");
    assert_eq!(r.get(RXCSUM), RXCSUM_IPOFL | RXCSUM_TUOFL, "RX checksums checked (GUEST_CSUM)");
    assert!(d.link_up().unwrap());
}

#[test]
fn checksum_status_from_the_legacy_status_and_errors_bytes() {
    let (mut d, _r) = dev();
    d.start().unwrap();
    for i in 0..3u64 {
        d.post_rx(0x1000 * (i + 1), 2048, i).unwrap();
    }
    let eop = RXD_STAT_DD | RXD_STAT_EOP;
    for (slot, st) in [eop | RXD_STAT_TCPCS, eop | RXD_STAT_TCPCS | RXD_ERR_TCPE, eop | RXD_STAT_UDPCS | RXD_ERR_IPE]
        .iter()
        .enumerate()
    {
        d.rx_ring.area().store(slot as u64 * 16 + RXD_STATUS_OFF, *st, Ordering::Relaxed).unwrap();
        d.rx_ring.area().store(slot as u64 * 16 + RXD_LEN_OFF, 60u16, Ordering::Relaxed).unwrap();
    }
    let mut out = Vec::new();
    d.reap_rx(&mut out).unwrap();
    let got: Vec<(bool, bool)> = out.iter().map(|c| (c.error, c.csum_ok)).collect();
    assert_eq!(got, vec![(false, true), (false, false), (false, false)], "bad checksums are delivered, not validated");
}

#[test]
fn a_jumbo_mtu_is_refused_with_the_reason() {
    let e = <E1000e82574 as crate::e1000_common::driver::Family>::rx_geometry(9000).unwrap_err();
    assert!(matches!(e, DriverError::Unsupported(ref m) if m.contains("9000") && m.contains("1500")), "{e}");
}

#[test]
fn legacy_descriptor_formats() {
    let (mut d, r) = dev();
    d.start().unwrap();
    d.post_rx(0x100c, 1524, 1).unwrap();
    d.flush_rx().unwrap();
    assert_eq!(r.get(RDT0), 1);
    assert_eq!(d.rx_ring.area().load::<u64>(0, Ordering::Relaxed).unwrap(), 0x100c);
    d.rx_ring.area().store(RXD_LEN_OFF, 60u16, Ordering::Relaxed).unwrap();
    d.rx_ring.area().store(RXD_STATUS_OFF, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
    let mut out = Vec::new();
    d.reap_rx(&mut out).unwrap();
    assert_eq!(out, vec![RxCompletion { cookie: 1, len: 60, eop: true, error: false, csum_ok: false }]);

    d.post_tx(&[(0x2000, 14), (0x3000, 46)], 5).unwrap();
    let c0: u32 = d.tx_ring.area().load(TXD_CMD_OFF, Ordering::Relaxed).unwrap();
    let c1: u32 = d.tx_ring.area().load(16 + TXD_CMD_OFF, Ordering::Relaxed).unwrap();
    assert_eq!(c0, 14 | TXD_CMD_IFCS);
    assert_eq!(c1, 46 | TXD_CMD_IFCS | TXD_CMD_EOP | TXD_CMD_RS);
    assert_eq!(r.get(TDT0), 2);
    d.tx_ring.area().store(16 + TXD_STATUS_OFF, TXD_STAT_DD, Ordering::Relaxed).unwrap();
    let mut done = Vec::new();
    d.reap_tx(&mut done).unwrap();
    assert_eq!(done, vec![TxCompletion { cookie: 5 }]);
}

#[test]
fn quiesce_waits_for_the_gio_master_or_resets() {
    let (mut d, r) = dev();
    d.start().unwrap();
    d.post_rx(0x100c, 2036, 1).unwrap();
    d.quiesce().unwrap();
    assert_eq!(r.get(RCTL) & RCTL_EN, 0);
    assert_eq!(r.get(TCTL) & TCTL_EN, 0);
    assert_eq!(r.get(STATUS) & STATUS_GIO_MASTER_EN, 0);
    d.start().unwrap();
    assert_eq!(r.get(CTRL) & CTRL_GIO_MASTER_DISABLE, 0, "DMA allowed again");
    r.0.lock().unwrap().stuck = true;
    let n = r.resets();
    assert!(matches!(d.quiesce(), Err(DriverError::Timeout(_))));
    assert_eq!(r.resets(), n + 1);
}

#[test]
fn removal_is_an_error() {
    let (mut d, r) = dev();
    d.start().unwrap();
    r.0.lock().unwrap().removed = true;
    assert_eq!(d.link_up(), Err(DriverError::Removed));
    assert_eq!(d.handle_irq(0), Err(DriverError::Removed));
}

#[test]
fn a_bring_up_failure_names_the_82574l_family_not_igb() {
    use crate::e1000_common::OpenError;
    let e = OpenError::Driver { family: E1000e82574::NAME, source: DriverError::Removed };
    let msg = e.to_string();
    assert!(msg.starts_with("e1000e bring-up failed"), "{msg}");
    assert!(!msg.contains("igb"), "{msg}");
}
