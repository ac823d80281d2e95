//! igbvf against the VF model (`model::igbvf_hw`): the PF handshake, the
//! MAC rule, a PF that misbehaves, and a PF-initiated reset during traffic.

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::*;
use crate::driver::testing::DriverTestExt;
use crate::model::igb_hw::HwRx;
use crate::model::igbvf_hw::{igbvf_on_model, VfPf, VfRegs};

const PF_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0x00, 0x01];
const GUEST: usize = 1 << 20;

fn guest() -> GuestMemoryMmap {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST)]).unwrap()
}

fn vf() -> (Igbvf<VfRegs>, VfPf, GuestMemoryMmap) {
    let g = guest();
    let (d, pf) = igbvf_on_model(&g, Some(PF_MAC)).unwrap();
    (d, pf, g)
}

/// A frame to `dst` of `len` bytes whose payload is `fill`.
fn frame(dst: [u8; 6], len: usize, fill: u8) -> Vec<u8> {
    let mut f = vec![fill; len];
    f[..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 9]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

fn buf(i: u64) -> u64 {
    0x1_0000 + i * 0x1000
}

#[test]
fn bring_up_is_the_pf_handshake_and_takes_the_pf_assigned_mac() {
    let (mut d, pf, _g) = vf();
    let ids: Vec<u32> = pf.messages().iter().map(|m| m & MSG_ID_MASK).collect();
    assert_eq!(ids, vec![VF_RESET, VF_SET_MULTICAST, VF_SET_PROMISC, VF_SET_LPE]);
    assert_ne!(pf.messages()[2] & VF_SET_PROMISC_MULTICAST, 0, "all multicast asked for");
    assert_eq!(pf.vf_resets(), 1, "one VF reset before the handshake");
    assert_eq!(d.mac(), PF_MAC, "the MAC is the PF's, not the configured one");
    assert_eq!(d.regs().read32(crate::igb::regs::RLPML), RX_MAX_FRAME, "the PF applied SET_LPE");
    assert_eq!(d.name(), "igbvf");
    // The filter is the PF's: only the assigned MAC is accepted.
    let e = d.set_mac_filter([0x52, 0x54, 0, 0, 0, 2]).unwrap_err();
    assert!(matches!(e, DriverError::Pf(_)), "{e}");
    assert!(e.to_string().contains("52:54:00:aa:00:01"), "{e}");
    d.set_mac_filter(PF_MAC).unwrap();
    assert!(d.link_up().unwrap());
    assert_eq!(d.irq_fds().len(), 4, "the VF's three MSI-X vectors and the recovery watchdog");
    // MSI-X: queues on vector 0, the mailbox on vector 2.
    assert_eq!(d.regs().read32(VTIVAR0), VTIVAR_VALID | (VTIVAR_VALID << VTIVAR_TX_SHIFT));
    assert_eq!(d.regs().read32(VTIVAR_MISC), VTIVAR_VALID | MAILBOX_VECTOR);
    assert_eq!(
        d.regs().read32(VTEITR0),
        Rate::Latency.eitr(),
        "the queue vector is moderated (~20 000 interrupts/s at most)"
    );
}

#[test]
fn frames_flow_both_ways_zero_copy_through_the_vf() {
    let (mut d, pf, _g) = vf();
    d.start().unwrap();
    for i in 0..4 {
        d.post_rx(buf(i), 2048, i).unwrap();
    }
    d.flush_rx().unwrap();
    assert_eq!(pf.hw.inject_rx(&frame(PF_MAC, 100, 1)), HwRx::Delivered { desc: 0, buffer: buf(0) });
    assert_eq!(pf.hw.inject_rx(&frame([0x52, 0x54, 0, 0, 0, 7], 100, 1)), HwRx::Filtered, "not our MAC");
    let mut out = Vec::new();
    d.reap_rx(&mut out).unwrap();
    assert_eq!(out, vec![RxCompletion { cookie: 0, len: 100, eop: true, error: false, csum_ok: false }]);
    d.post_tx(&[(buf(10), 60)], 77).unwrap();
    assert_eq!(pf.hw.complete_tx(|_| {}), 1);
    let mut tx = Vec::new();
    d.reap_tx(&mut tx).unwrap();
    assert_eq!(tx, vec![TxCompletion { cookie: 77 }]);
}

#[test]
fn a_pf_without_a_mac_for_the_vf_is_a_clear_error() {
    let g = guest();
    let e = igbvf_on_model(&g, None).err().unwrap();
    assert!(matches!(e, DriverError::Pf(_)), "{e}");
    assert!(e.to_string().contains("ip link set"), "{e}");
}

#[test]
fn a_pf_that_does_not_answer_or_answers_nonsense_is_an_error_not_a_hang_or_panic() {
    let (mut d, pf, _g) = vf();
    pf.set_deaf(true);
    let e = d.reset().unwrap_err();
    assert!(matches!(e, DriverError::Timeout(_)), "{e}");
    assert!(d.recovering());
    assert!(!d.link_up().unwrap(), "link down while the VF is not set up");
    pf.set_deaf(false);
    for garbage in [0, u32::MAX, VF_SET_LPE | MSGTYPE_ACK, VF_RESET | MSGTYPE_NACK | MSGTYPE_ACK] {
        pf.set_garbage(Some(garbage));
        let e = d.reset().unwrap_err();
        assert!(matches!(e, DriverError::Pf(_) | DriverError::Timeout(_)), "{garbage:#x}: {e}");
    }
    pf.set_garbage(None);
    d.reset().unwrap();
    assert!(d.link_up().unwrap());
}

#[test]
fn a_refused_all_multicast_is_not_fatal() {
    let g = guest();
    let (vf, parts) = crate::model::igbvf_hw::vf_model(&g, Some(PF_MAC)).unwrap();
    parts.handle.set_refuse_promisc(true);
    let d = Igbvf::new(vf, parts.mapper, IovaAllocator::above(&g), NicConfig::new(PF_MAC), 3).unwrap();
    assert_eq!(d.mac(), PF_MAC);
}

/// The PF resets the VF while the NIC holds RX buffers (some filled, some
/// not) and TX frames: nothing is handed back before the queues are
/// confirmed stopped, nothing is lost, the unfilled buffers go back to the
/// NIC (same IOVA, same cookie) and traffic resumes.
#[test]
fn a_pf_reset_during_traffic_loses_no_buffer_and_traffic_resumes() {
    let (mut d, pf, _g) = vf();
    d.start().unwrap();
    for i in 0..8 {
        d.post_rx(buf(i), 2048, 100 + i).unwrap();
    }
    d.flush_rx().unwrap();
    for _ in 0..3 {
        assert!(matches!(pf.hw.inject_rx(&frame(PF_MAC, 200, 5)), HwRx::Delivered { .. }));
    }
    d.post_tx(&[(buf(20), 60)], 1).unwrap();
    d.post_tx(&[(buf(21), 60), (buf(22), 40)], 2).unwrap();

    // The PF goes into reset: the VF's queues stop in the NIC at once.
    pf.pf_reset_begin();
    assert_eq!(pf.hw.inject_rx(&frame(PF_MAC, 200, 6)), HwRx::NoBuffer, "the NIC's VF queues are down");
    // The mailbox interrupt: the driver stops its side and harvests, but
    // cannot finish while the PF is still in reset.
    d.handle_irq(MAILBOX_VECTOR as usize).unwrap();
    assert!(d.recovering());
    assert!(!d.link_up().unwrap());
    assert_eq!(d.rx_free(), 0, "nothing posted while recovering");
    assert_eq!(d.post_rx(buf(30), 2048, 999), Err(DriverError::Stopped));
    // Every lent buffer is still accounted for: 3 finished, 5 to re-post.
    assert_eq!(d.rx_posted_cookies(), (100..108).collect::<Vec<_>>());

    // The three frames that landed before the reset are ordinary completions
    // (the NIC stopped before they were handed out); the rest are not.
    let mut out = Vec::new();
    d.reap_rx(&mut out).unwrap();
    assert_eq!(out.iter().map(|c| (c.cookie, c.len)).collect::<Vec<_>>(), vec![(100, 200), (101, 200), (102, 200)]);
    assert_eq!(d.rx_posted_cookies(), (103..108).collect::<Vec<_>>());
    // TX frames the reset caught are completed (the NIC no longer reads them).
    let mut tx = Vec::new();
    d.reap_tx(&mut tx).unwrap();
    assert_eq!(tx, vec![TxCompletion { cookie: 1 }, TxCompletion { cookie: 2 }]);

    // The PF is back: RSTD and a ping without clear-to-send.
    pf.pf_reset_end();
    d.handle_irq(MAILBOX_VECTOR as usize).unwrap();
    assert!(!d.recovering(), "recovered");
    assert_eq!(d.recoveries(), 1);
    assert!(d.link_up().unwrap());
    assert_eq!(d.mac(), PF_MAC);
    assert_eq!(d.rx_posted_cookies(), (103..108).collect::<Vec<_>>(), "the unfilled buffers are the NIC's again");
    // Traffic resumes into the re-posted buffers, in order, same IOVAs.
    assert_eq!(pf.hw.inject_rx(&frame(PF_MAC, 300, 7)), HwRx::Delivered { desc: 0, buffer: buf(3) });
    assert_eq!(pf.hw.inject_rx(&frame(PF_MAC, 301, 7)), HwRx::Delivered { desc: 1, buffer: buf(4) });
    out.clear();
    d.reap_rx(&mut out).unwrap();
    assert_eq!(out.iter().map(|c| (c.cookie, c.len)).collect::<Vec<_>>(), vec![(103, 300), (104, 301)]);
    d.post_rx(buf(8), 2048, 108).unwrap();
    d.flush_rx().unwrap();
    d.post_tx(&[(buf(23), 60)], 3).unwrap();
    assert_eq!(pf.hw.complete_tx(|_| {}), 1);
    tx.clear();
    d.reap_tx(&mut tx).unwrap();
    assert_eq!(tx, vec![TxCompletion { cookie: 3 }]);
    assert_eq!(d.rx_posted_cookies(), vec![105, 106, 107, 108]);
}

/// Who holds each guest buffer, checked against every DMA access the model
/// NIC makes (its IOMMU's log): the NIC may touch a buffer only while it is
/// lent (posted and not handed back yet).
#[derive(Default)]
struct Ledger {
    /// cookie -> (address, length) of every buffer ever lent; addresses are
    /// never reused, so an access names at most one buffer.
    bufs: std::collections::BTreeMap<u64, (u64, u64)>,
    lent: std::collections::BTreeSet<u64>,
    /// Next fresh buffer (2 KiB apart from 0x1_0000).
    next: u64,
    returned: u64,
    accesses_checked: u64,
}

/// TX cookies start here (RX cookies are buffer numbers).
const TX_COOKIE: u64 = 1 << 32;

impl Ledger {
    fn fresh(&mut self) -> (u64, u64) {
        let (n, addr) = (self.next, 0x1_0000 + self.next * 0x800);
        assert!(addr + 0x800 <= GUEST as u64, "the test ran out of fresh buffers");
        self.next += 1;
        (n, addr)
    }
    fn post_rx(&mut self, d: &mut Igbvf<VfRegs>, n: usize) {
        for _ in 0..n {
            let (cookie, addr) = self.fresh();
            d.post_rx(addr, 2048, cookie).unwrap();
            self.bufs.insert(cookie, (addr, 2048));
            self.lent.insert(cookie);
        }
        d.flush_rx().unwrap();
    }
    fn post_tx(&mut self, d: &mut Igbvf<VfRegs>) {
        let (n, addr) = self.fresh();
        d.post_tx(&[(addr, 60)], TX_COOKIE + n).unwrap();
        self.bufs.insert(TX_COOKIE + n, (addr, 60));
        self.lent.insert(TX_COOKIE + n);
    }
    fn give_back(&mut self, cookie: u64, step: &str) {
        assert!(self.lent.remove(&cookie), "{step}: buffer {cookie:#x} handed back twice or never lent");
        self.returned += 1;
    }
    /// Everything the driver hands back now.
    fn reap(&mut self, d: &mut Igbvf<VfRegs>, step: &str) -> usize {
        let (mut rx, mut tx) = (Vec::new(), Vec::new());
        d.reap_rx(&mut rx).unwrap();
        d.reap_tx(&mut tx).unwrap();
        rx.iter().for_each(|c| self.give_back(c.cookie, step));
        tx.iter().for_each(|c| self.give_back(c.cookie, step));
        rx.len() + tx.len()
    }
    /// The NIC's accesses since the last check touched guest RAM only
    /// inside lent buffers (the rest of its accesses are its rings, which
    /// lie above guest RAM).
    fn check(&mut self, pf: &VfPf, step: &str) {
        for a in pf.hw.iommu().take_log() {
            if !a.overlaps(0, GUEST as u64) {
                continue;
            }
            self.accesses_checked += 1;
            for (cookie, (addr, len)) in &self.bufs {
                assert!(
                    self.lent.contains(cookie) || !a.overlaps(*addr, *len),
                    "{step}: the NIC's {a:?} touched buffer {cookie:#x} at {addr:#x} after it was handed back"
                );
            }
            let inside = self.lent.iter().any(|c| {
                let (addr, len) = self.bufs[c];
                a.iova >= addr && a.iova + a.len as u64 <= addr + len
            });
            assert!(inside, "{step}: the NIC's {a:?} reached guest RAM outside every lent buffer");
        }
    }
    /// A frame from the wire, then the check.
    fn wire_rx(&mut self, pf: &VfPf, step: &str) -> HwRx {
        let r = pf.hw.inject_rx(&frame(PF_MAC, 200, 0x5a));
        self.check(pf, step);
        r
    }
    fn wire_tx(&mut self, pf: &VfPf, step: &str) -> usize {
        let n = pf.hw.complete_tx(|_| {});
        self.check(pf, step);
        n
    }
}

/// The unit test of "no DMA into returned buffers across a VF reset": the
/// model's IOMMU logs every access the NIC makes, and after each step the
/// accesses are checked against which guest buffers the driver has handed
/// back. The frames keep coming through every phase of two PF-initiated
/// resets: the PF's ping without clear-to-send while the VF's queues still
/// run (Linux's igb pings first, then stops the VF and resets), queues that
/// do not confirm the stop for a while, the PF held in reset (RSTI), and the
/// traffic after it. Every buffer is handed back once, or still lent at the
/// end, and the NIC reached none after it was handed back.
#[test]
fn across_pf_resets_the_nic_never_touches_a_buffer_after_it_was_handed_back() {
    let (mut d, pf, _g) = vf();
    pf.hw.iommu().start_log();
    let mut l = Ledger::default();
    d.start().unwrap();
    l.post_rx(&mut d, 8);
    for _ in 0..3 {
        assert!(matches!(l.wire_rx(&pf, "before"), HwRx::Delivered { .. }));
    }
    l.post_tx(&mut d);
    l.post_tx(&mut d);

    // 1. The PF pings without clear-to-send; the queues still run, frames
    //    still land (in lent buffers). The driver stops its queues, resets
    //    the VF, redoes the handshake (the PF answers) and re-posts.
    pf.pf_ping_without_cts();
    assert!(matches!(l.wire_rx(&pf, "1: ping, queues running"), HwRx::Delivered { .. }));
    d.handle_irq(MAILBOX_VECTOR as usize).unwrap();
    assert!(!d.recovering(), "the PF answered: recovered at once");
    assert_eq!(d.recoveries(), 1);
    assert_eq!(l.wire_tx(&pf, "1: after the VF reset"), 0, "the TX frames the reset caught are gone");
    assert_eq!(l.reap(&mut d, "1: reap"), 4 + 2, "4 frames and 2 lost TX frames handed back");
    for _ in 0..2 {
        assert!(matches!(l.wire_rx(&pf, "1: after the recovery"), HwRx::Delivered { .. }));
    }
    l.post_rx(&mut d, 4);
    l.post_tx(&mut d);

    // 2. The next reset: the VF's queues do not confirm the stop at first.
    //    Nothing comes back while the NIC may still write.
    pf.hw.inject_hang(true, false, false);
    pf.pf_ping_without_cts();
    d.handle_irq(MAILBOX_VECTOR as usize).unwrap();
    assert!(d.recovering(), "queues not confirmed stopped: recovery pending");
    let lent_before = l.lent.clone();
    // What the NIC finished is done (it never writes a finished descriptor
    // again); nothing it may still write is handed back.
    l.reap(&mut d, "2: reap while wedged");
    assert!(matches!(l.wire_rx(&pf, "2: queues wedged"), HwRx::Delivered { .. }));
    assert_eq!(l.wire_tx(&pf, "2: queues wedged"), 1);
    l.reap(&mut d, "2: reap while wedged");
    assert!(matches!(l.wire_rx(&pf, "2: queues wedged"), HwRx::Delivered { .. }));
    // RX buffers 0..8 and 10..14 were posted (8 and 9 went to TX); 0..=6
    // were filled and handed back, 7 is filled and not reaped yet.
    assert_eq!(d.rx_posted_cookies(), vec![7, 10, 11, 12, 13], "the unfinished RX buffers stay lent");
    assert!(l.lent.is_subset(&lent_before));
    assert!(!l.lent.is_empty());
    // Then the PF resets the NIC and holds RSTI; the queues are down.
    pf.hw.inject_hang(false, false, false);
    pf.pf_reset_begin();
    assert_eq!(l.wire_rx(&pf, "2: PF in reset"), HwRx::NoBuffer);
    d.handle_irq(MAILBOX_VECTOR as usize).unwrap();
    assert!(d.recovering(), "the PF is still in reset");
    l.reap(&mut d, "2: reap during the PF reset");
    assert_eq!(l.wire_rx(&pf, "2: PF in reset"), HwRx::NoBuffer);
    assert_eq!(l.wire_tx(&pf, "2: PF in reset"), 0);
    assert_eq!(d.post_rx(0xf_0000, 2048, 9999), Err(DriverError::Stopped), "nothing posted while recovering");
    pf.pf_reset_end();
    d.handle_irq(MAILBOX_VECTOR as usize).unwrap();
    assert!(!d.recovering());
    assert_eq!(d.recoveries(), 2);

    // 3. Traffic after it: the frames land in the re-posted buffers and the
    //    fresh ones only.
    for round in 0..40 {
        let step = format!("3: round {round}");
        let _ = l.wire_rx(&pf, &step);
        if round % 3 == 0 {
            l.post_tx(&mut d);
            l.wire_tx(&pf, &step);
        }
        if round % 4 == 0 {
            l.reap(&mut d, &step);
            l.post_rx(&mut d, 3);
        }
    }
    l.reap(&mut d, "end");
    let mut posted = d.rx_posted_cookies();
    posted.sort();
    assert_eq!(posted, l.lent.iter().copied().collect::<Vec<_>>(), "every buffer handed back or still lent");
    assert!(
        l.returned > 40 && l.accesses_checked > 50,
        "the test proved little: {} returned, {} accesses",
        l.returned,
        l.accesses_checked
    );
    assert_eq!(pf.hw.stats().dma_faults, 0);
}

/// Whether `fd` becomes readable within `ms` milliseconds.
fn readable_within(fd: std::os::unix::io::RawFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd; poll only writes revents.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// What the testbed showed (`ip link set <PF> down`, `up`): Linux's igb
/// pings without clear-to-send, then stops answering (the VF's VF_RESET
/// times out) and ends its reset with RSTD alone, which raises no
/// interrupt. The mailbox vector stays armed through the failed handshake
/// and the watchdog timer (the last event fd) retries until the PF answers.
#[test]
fn a_pf_that_goes_quiet_during_recovery_is_retried_by_the_watchdog() {
    let (mut d, pf, _g) = vf();
    d.start().unwrap();
    for i in 0..4 {
        d.post_rx(buf(i), 2048, i).unwrap();
    }
    d.flush_rx().unwrap();
    let fds = d.irq_fds();
    let watchdog = fds.len() - 1;
    assert!(!readable_within(fds[watchdog], 0), "no watchdog while all is well");
    // The PF pings, then answers nothing: the handshake times out.
    pf.set_deaf(true);
    pf.pf_ping_without_cts();
    d.handle_irq(MAILBOX_VECTOR as usize).unwrap();
    assert!(d.recovering());
    assert_ne!(d.regs().read32(VTEIMS) & (1 << MAILBOX_VECTOR), 0, "mailbox vector armed after the failed handshake");
    assert_eq!(d.rx_posted_cookies(), vec![0, 1, 2, 3], "every buffer still accounted for");
    // The PF resets and comes back with RSTD alone.
    pf.pf_reset_begin();
    pf.set_deaf(false);
    pf.pf_reset_end_quiet();
    assert!(readable_within(fds[watchdog], 3000), "the watchdog fires while the recovery is pending");
    d.handle_irq(watchdog).unwrap();
    assert!(!d.recovering(), "recovered on the watchdog's tick");
    assert!(d.link_up().unwrap());
    assert_eq!(d.rx_posted_cookies(), vec![0, 1, 2, 3]);
    assert!(matches!(pf.hw.inject_rx(&frame(PF_MAC, 100, 1)), HwRx::Delivered { buffer, .. } if buffer == buf(0)));
    // Disarmed again: no tick after the recovery.
    assert!(!readable_within(fds[watchdog], 1500), "the watchdog stops once recovered");
}

/// A reset announced while the queues were stopped (no buffers) is handled
/// at the next start; the admin's new MAC is taken (and logged).
#[test]
fn a_pf_reset_while_stopped_is_handled_at_start_with_the_new_mac() {
    let (mut d, pf, _g) = vf();
    pf.pf_reset_begin();
    pf.set_mac(Some([0x52, 0x54, 0, 0xbb, 0, 2]));
    pf.pf_reset_end();
    assert!(d.link_up().is_ok());
    d.start().unwrap();
    assert_eq!(d.mac(), [0x52, 0x54, 0, 0xbb, 0, 2]);
    d.post_rx(buf(0), 2048, 1).unwrap();
    d.flush_rx().unwrap();
    assert!(matches!(pf.hw.inject_rx(&frame([0x52, 0x54, 0, 0xbb, 0, 2], 64, 1)), HwRx::Delivered { .. }));
}

/// A quiesce forgets what a pending recovery kept, as it forgets posted buffers.
#[test]
fn quiesce_during_a_pending_recovery_forgets_everything() {
    let (mut d, pf, _g) = vf();
    d.start().unwrap();
    for i in 0..4 {
        d.post_rx(buf(i), 2048, i).unwrap();
    }
    d.flush_rx().unwrap();
    pf.pf_reset_begin();
    d.handle_irq(MAILBOX_VECTOR as usize).unwrap();
    assert_eq!(d.rx_posted_cookies().len(), 4);
    let _ = d.quiesce();
    assert!(d.rx_posted_cookies().is_empty());
    pf.pf_reset_end();
    d.handle_irq(MAILBOX_VECTOR as usize).unwrap();
    d.start().unwrap();
    assert!(d.rx_posted_cookies().is_empty(), "nothing forgotten comes back");
    assert!(d.link_up().unwrap());
}

/// The same PF reset as the shim sees it (the production `Pnic` in a
/// `ShimBackend`): the guest's buffers the NIC holds stay lent across the
/// reset (none handed back empty, none lost), frames that landed before it
/// reach the guest, the link is down until the VF is set up again, and the
/// next frames land zero-copy in the re-posted guest buffers (GPA + 12).
#[test]
fn through_the_shim_a_pf_reset_keeps_every_lent_guest_buffer_and_traffic_resumes() {
    use crate::nic::Pnic;
    use crate::shim::ShimBackend;
    use virtio_devices::net::backend::{NetBackend, RxBuffer, Used};

    let g = guest();
    let (d, pf) = igbvf_on_model(&g, Some(PF_MAC)).unwrap();
    let mut s = ShimBackend::new(Pnic::from(d), &g, PF_MAC).unwrap();
    let gpa = |i: u16| 0x2_0000 + u64::from(i) * 0x1000;
    for head in 0..8u16 {
        let b = RxBuffer { head, segs: vec![(GuestAddress(gpa(head)), 2048)], len: 2048 };
        s.post_rx(&g, b).unwrap();
    }
    assert_eq!(s.rx_posted(), 8);
    for _ in 0..3 {
        assert!(matches!(pf.hw.inject_rx(&frame(PF_MAC, 200, 5)), HwRx::Delivered { .. }));
    }
    pf.pf_reset_begin();
    s.process_event(&g, MAILBOX_VECTOR as usize);
    assert!(!s.link_up(), "link down while the PF is in reset");
    assert_eq!(s.rx_posted(), 8, "every guest buffer still accounted to the NIC");
    let mut used = Vec::new();
    s.reap_rx(&g, &mut used);
    assert_eq!(used, vec![Used { head: 0, len: 212 }, Used { head: 1, len: 212 }, Used { head: 2, len: 212 }]);
    assert_eq!(s.rx_posted(), 5, "the other five stay lent (none returned empty)");
    assert_eq!(s.shim_metrics().nic_errors, 0);

    pf.pf_reset_end();
    s.process_event(&g, MAILBOX_VECTOR as usize);
    assert!(s.link_up(), "link up again after the recovery");
    assert_eq!(s.rx_posted(), 5);
    assert_eq!(pf.hw.inject_rx(&frame(PF_MAC, 300, 6)), HwRx::Delivered { desc: 0, buffer: gpa(3) + 12 });
    used.clear();
    s.reap_rx(&g, &mut used);
    assert_eq!(used, vec![Used { head: 3, len: 312 }]);
    assert_eq!(s.shim_metrics().rx_zero_copy, 4, "{:?}", s.shim_metrics());
}

/// A VF whose BAR0 nothing decodes: every read is zero.
struct Undecoded;

impl RegisterAccess for Undecoded {
    fn read32(&self, _: u32) -> u32 {
        0
    }
    fn write32(&self, _: u32, _: u32) {}
}

#[test]
fn a_vf_bar0_that_reads_all_zeros_is_named_as_such() {
    let e = super::pf_handshake(&Undecoded).unwrap_err();
    assert!(matches!(e, DriverError::Timeout(super::mbx::UNDECODED_BAR0)), "{e}");
    assert!(e.to_string().contains("BAR0 reads all zeros"), "{e}");
}
