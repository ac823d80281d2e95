//! Tests of the virtio-net device with a simulated guest driver (virtio-queue's
//! MockSplitQueue on real guest memory), the real event manager, and an
//! in-test backend that copies frames (fine for a fake; the real backends
//! never copy).

use std::collections::VecDeque;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::backend::{DropReason, NetBackend, RxBuffer, RxPass, Used, VNET_HDR_LEN};
use super::chain::MAX_CHAIN_DESCS;
use super::config::*;
use super::device::{Net, QUEUE_SIZE, RX_QUEUE, TX_QUEUE};
use super::direct::{RxNext, RxQueue, TxQueue};
use crate::interrupt::{INT_CONFIG, INT_VRING};
use crate::{ActivateContext, GuestMemory, Interrupt, VirtioDevice, TYPE_NET};

const W: u16 = VRING_DESC_F_WRITE as u16;
const N: u16 = VRING_DESC_F_NEXT as u16;
const MEM_SIZE: u64 = 0x100_0000;
const RXQ_AT: u64 = 0x0;
const TXQ_AT: u64 = 0x1_0000;
const BUF_AT: u64 = 0x10_0000;

#[derive(Default)]
struct FakeState {
    posted: VecDeque<RxBuffer>,
    /// Frames (without header) waiting to reach the guest.
    inbox: VecDeque<Vec<u8>>,
    /// Filled buffers, each with whether it is the first of its frame.
    done: Vec<(Used, bool)>,
    /// Frames the guest sent, header included.
    sent: Vec<Vec<u8>>,
    acked: u64,
    link_up: bool,
    room: usize,
    /// Stall instead of dropping when the posted buffers are too small.
    stall_mode: bool,
    stalled: bool,
    send_error: Option<DropReason>,
    discards: usize,
    quiesces: usize,
    process_calls: usize,
    /// Report a completion for a head never posted.
    bogus_head: Option<u16>,
    /// Buffers taken in each RX pass that took any (one tail write each).
    batches: Vec<usize>,
    /// Frames popped in each TX pass that popped any.
    tx_batches: Vec<usize>,
    /// Frames never span buffers (as the shim's), even with MRG_RXBUF.
    direct: bool,
    /// Refuse the next this many buffers (`RxQueue::refuse`).
    refuse: usize,
    /// Refuse this head at the next refill, held or not.
    bogus_refuse: Option<u16>,
    /// The buffers taken as `RxNext::One`, with their host address.
    direct_ones: Vec<(u16, u64, u32, usize)>,
}

struct FakeBackend {
    st: Arc<Mutex<FakeState>>,
    evt: EventFd,
}

impl FakeBackend {
    fn deliver(st: &mut FakeState, mem: &GuestMemory) {
        let mrg = st.acked & F_MRG_RXBUF != 0 && !st.direct;
        while let Some(frame) = st.inbox.front() {
            let total = VNET_HDR_LEN + frame.len();
            let mut bytes = vec![0u8; VNET_HDR_LEN];
            bytes.extend_from_slice(frame);
            // Buffers needed.
            let mut k = 0;
            let mut cap = 0usize;
            for b in &st.posted {
                k += 1;
                cap += b.len as usize;
                if cap >= total || !mrg {
                    break;
                }
            }
            if cap < total {
                if st.stall_mode && mrg {
                    st.stalled = true;
                    return;
                }
                if st.posted.is_empty() {
                    st.stalled = true;
                    return;
                }
                st.inbox.pop_front();
                continue;
            }
            bytes[10..12].copy_from_slice(&(k as u16).to_le_bytes());
            let mut off = 0;
            for i in 0..k {
                let b = st.posted.pop_front().unwrap();
                let start = off;
                for (addr, len) in &b.segs {
                    let n = (*len as usize).min(total - off);
                    mem.write_slice(&bytes[off..off + n], *addr).unwrap();
                    off += n;
                }
                st.done.push((Used { head: b.head, len: (off - start) as u32 }, i == 0));
            }
            st.inbox.pop_front();
        }
        st.stalled = false;
    }
}

impl NetBackend for FakeBackend {
    fn features(&self) -> u64 {
        F_CSUM | F_GUEST_CSUM | (1 << 40) // an unknown bit the device must not offer
    }
    fn set_features(&mut self, acked: u64) -> std::io::Result<()> {
        self.st.lock().unwrap().acked = acked;
        Ok(())
    }
    fn event_fds(&self) -> Vec<std::os::unix::io::RawFd> {
        vec![self.evt.as_raw_fd()]
    }
    fn process_event(&mut self, mem: &GuestMemory, _index: usize) {
        let _ = self.evt.read();
        let mut st = self.st.lock().unwrap();
        st.process_calls += 1;
        Self::deliver(&mut st, mem);
        if let Some(h) = st.bogus_head.take() {
            st.done.push((Used { head: h, len: 20 }, true));
        }
    }
    fn rx(&mut self, q: &mut RxQueue<'_>) -> RxPass {
        let mut st = self.st.lock().unwrap();
        for (u, first) in std::mem::take(&mut st.done) {
            q.complete_part(u.head, u.len, first);
        }
        if let Some(h) = st.bogus_refuse.take() {
            q.refuse(h, DropReason::BackendError);
        }
        let mut posted = 0;
        while st.room > st.posted.len() {
            let Some(next) = q.pop() else { break };
            let buf = match next {
                RxNext::One(d) => {
                    st.direct_ones.push((d.head(), d.gpa(), d.len(), d.host().as_ptr() as usize));
                    RxBuffer { head: d.head(), segs: vec![(GuestAddress(d.gpa()), d.len())], len: d.len() }
                }
                RxNext::Chain(c) => c.to_rx_buffer(),
            };
            if st.refuse > 0 {
                st.refuse -= 1;
                q.refuse(buf.head, DropReason::NoBuffer);
                continue;
            }
            st.posted.push_back(buf);
            posted += 1;
        }
        if posted > 0 {
            st.batches.push(posted);
        }
        RxPass { posted, full: st.room <= st.posted.len() }
    }
    fn tx(&mut self, q: &mut TxQueue<'_>) {
        let mem = q.ram().mem().clone();
        let mut st = self.st.lock().unwrap();
        let mut n = 0;
        while let Some(frame) = q.pop() {
            n += 1;
            let head = frame.head;
            if let Some(r) = st.send_error {
                q.drop_frame(head, r);
                continue;
            }
            let mut v = Vec::new();
            for (addr, len) in frame.segs {
                let mut b = vec![0u8; *len as usize];
                mem.read_slice(&mut b, *addr).unwrap();
                v.extend(b);
            }
            assert_eq!(v.len(), frame.len as usize);
            st.sent.push(v);
            q.complete(head);
        }
        if n > 0 {
            st.tx_batches.push(n);
        }
    }
    fn quiesce(&mut self) {
        let mut st = self.st.lock().unwrap();
        st.posted.clear();
        st.done.clear();
        st.quiesces += 1;
    }
    fn link_up(&self) -> bool {
        self.st.lock().unwrap().link_up
    }
    fn rx_stalled(&self) -> bool {
        self.st.lock().unwrap().stalled
    }
    fn discard_pending(&mut self, _index: usize) {
        let _ = self.evt.read();
        let mut st = self.st.lock().unwrap();
        st.inbox.clear();
        st.discards += 1;
    }
    fn metrics(&self) -> serde_json::Value {
        serde_json::json!({"kind": "fake", "vmm_copied_bytes": 0})
    }
}

/// Both ways the device hands RX buffers to a backend.
const MODES: [bool; 2] = [false, true];

struct Harness {
    mem: &'static GuestMemory,
    rxq: MockSplitQueue<'static, GuestMemory>,
    txq: MockSplitQueue<'static, GuestMemory>,
    net: Arc<Mutex<Net>>,
    em: EventManager<Arc<Mutex<Net>>>,
    st: Arc<Mutex<FakeState>>,
    backend_evt: EventFd,
    irq: Arc<Interrupt>,
    next_desc: [u16; 2],
    used_seen: [u16; 2],
    next_buf: u64,
}

impl Harness {
    /// A device, registered with an event manager, not yet activated.
    fn new() -> Harness {
        Harness::new_in(false)
    }

    /// `new`, over a backend that does direct RX when `direct`.
    fn new_in(direct: bool) -> Harness {
        let mem: &'static GuestMemory =
            Box::leak(Box::new(GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap()));
        let st = Arc::new(Mutex::new(FakeState { link_up: true, room: 1024, direct, ..Default::default() }));
        let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let backend = FakeBackend { st: st.clone(), evt: evt.try_clone().unwrap() };
        let net = Arc::new(Mutex::new(Net::new(Box::new(backend), Some([2, 0, 0, 0, 0, 1]), "net0".into())));
        let mut em = EventManager::<Arc<Mutex<Net>>>::new().unwrap();
        em.add_subscriber(net.clone());
        Harness {
            mem,
            rxq: MockSplitQueue::create(mem, GuestAddress(RXQ_AT), QUEUE_SIZE),
            txq: MockSplitQueue::create(mem, GuestAddress(TXQ_AT), QUEUE_SIZE),
            net,
            em,
            st,
            backend_evt: evt,
            irq: Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap())),
            next_desc: [0, 0],
            used_seen: [0, 0],
            next_buf: BUF_AT,
        }
    }

    /// Negotiates `extra` features on top of VERSION_1 and activates.
    fn activated(extra: u64) -> Harness {
        Harness::activated_in(extra, false)
    }

    /// `activated`, over a direct-RX backend when `direct`.
    fn activated_in(extra: u64, direct: bool) -> Harness {
        let mut h = Harness::new_in(direct);
        h.activate(extra);
        h
    }

    fn activate(&mut self, extra: u64) {
        let queues: Vec<Queue> = vec![self.rxq.create_queue().unwrap(), self.txq.create_queue().unwrap()];
        {
            let mut n = self.net.lock().unwrap();
            n.set_acked_features(F_VERSION_1 | extra);
            n.activate(ActivateContext { mem: self.mem.clone(), queues, interrupt: self.irq.clone() }).unwrap();
        }
        self.run();
    }

    fn run(&mut self) {
        for _ in 0..100 {
            if self.em.run_with_timeout(0).unwrap() == 0 {
                return;
            }
        }
        panic!("event loop did not settle");
    }

    fn q(&self, qi: usize) -> &MockSplitQueue<'static, GuestMemory> {
        if qi == RX_QUEUE {
            &self.rxq
        } else {
            &self.txq
        }
    }

    fn alloc(&mut self, len: u32) -> u64 {
        let a = self.next_buf;
        self.next_buf += u64::from(len).next_multiple_of(64);
        a
    }

    /// Makes a chain of (addr, len, flags) available; NEXT links are added.
    fn add_chain(&mut self, qi: usize, segs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc[qi];
        let descs: Vec<RawDescriptor> = segs
            .iter()
            .enumerate()
            .map(|(i, &(a, l, f))| {
                let last = i == segs.len() - 1;
                let next = (head + i as u16 + 1) % QUEUE_SIZE;
                RawDescriptor::from(SplitDescriptor::new(
                    a,
                    l,
                    if last { f } else { f | N },
                    if last { 0 } else { next },
                ))
            })
            .collect();
        self.add_raw(qi, &descs)
    }

    /// Makes `descs` (stored as given, at the next free table slots) available
    /// as one chain headed by the first. (Written by hand: the mock's
    /// add_desc_chains does not wrap the avail ring index.)
    fn add_raw(&mut self, qi: usize, descs: &[RawDescriptor]) -> u16 {
        let head = self.next_desc[qi];
        let (table, avail) = (self.q(qi).desc_table_addr().0, self.q(qi).avail_addr().0);
        for (i, d) in descs.iter().enumerate() {
            let slot = (head + i as u16) % QUEUE_SIZE;
            self.mem.write_obj(*d, GuestAddress(table + 16 * u64::from(slot))).unwrap();
        }
        let idx: u16 = self.mem.read_obj(GuestAddress(avail + 2)).unwrap();
        let slot = avail + 4 + 2 * u64::from(idx % QUEUE_SIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.mem.write_obj(idx.wrapping_add(1), GuestAddress(avail + 2)).unwrap();
        self.next_desc[qi] = (head + descs.len() as u16) % QUEUE_SIZE;
        head
    }

    /// A fresh writable RX buffer of `len` bytes as one descriptor.
    fn add_rx_buf(&mut self, len: u32) -> (u16, u64) {
        let a = self.alloc(len);
        (self.add_chain(RX_QUEUE, &[(a, len, W)]), a)
    }

    /// A TX frame: header then payload in a second descriptor.
    fn add_tx_frame(&mut self, payload: &[u8]) -> u16 {
        let h = self.alloc(VNET_HDR_LEN as u32);
        let p = self.alloc(payload.len() as u32);
        self.mem.write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(h)).unwrap();
        self.mem.write_slice(payload, GuestAddress(p)).unwrap();
        self.add_chain(TX_QUEUE, &[(h, VNET_HDR_LEN as u32, 0), (p, payload.len() as u32, 0)])
    }

    fn kick(&mut self, qi: usize) {
        self.net.lock().unwrap().queue_events()[qi].write(1).unwrap();
        self.run();
    }

    fn backend_event(&mut self) {
        self.backend_evt.write(1).unwrap();
        self.run();
    }

    fn push_frame(&mut self, frame: Vec<u8>) {
        self.push_frames(vec![frame]);
    }

    /// Frames that arrive together: one backend event for all of them.
    fn push_frames(&mut self, frames: Vec<Vec<u8>>) {
        self.st.lock().unwrap().inbox.extend(frames);
        self.backend_event();
    }

    /// Used entries added since the last call: (head, len).
    fn new_used(&mut self, qi: usize) -> Vec<(u32, u32)> {
        let q = self.q(qi);
        let idx = q.used().idx().load();
        let mut out = Vec::new();
        let mut i = self.used_seen[qi];
        while i != idx {
            let e = q.used().ring().ref_at((i % QUEUE_SIZE) as usize).unwrap().load();
            out.push((e.id(), e.len()));
            i = i.wrapping_add(1);
        }
        self.used_seen[qi] = idx;
        out
    }

    /// Interrupts raised since the last call.
    fn irqs(&self) -> u64 {
        self.irq.irqfd().read().unwrap_or(0)
    }

    fn metrics(&self) -> serde_json::Value {
        self.net.lock().unwrap().metrics().unwrap()
    }

    /// Sets the driver's used_event (avail ring tail) for queue `qi`.
    fn set_used_event(&self, qi: usize, v: u16) {
        let at = self.q(qi).avail_addr().0 + 4 + 2 * u64::from(QUEUE_SIZE);
        self.mem.write_obj(v, GuestAddress(at)).unwrap();
    }

    /// The device's avail_event (used ring tail) for queue `qi`.
    fn avail_event(&self, qi: usize) -> u16 {
        let at = self.q(qi).used_addr().0 + 4 + 8 * u64::from(QUEUE_SIZE);
        self.mem.read_obj(GuestAddress(at)).unwrap()
    }

    fn read(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }
}

/// Makes one (malformed) chain available, returning its head.
type AddChain = Box<dyn Fn(&mut Harness) -> u16>;

fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
}

#[test]
fn identity_features_and_config() {
    let h = Harness::new();
    let n = h.net.lock().unwrap();
    assert_eq!(n.device_type(), TYPE_NET);
    assert_eq!(n.queue_max_sizes(), &[QUEUE_SIZE, QUEUE_SIZE]);
    let f = n.avail_features();
    for bit in [F_VERSION_1, F_MAC, F_STATUS, F_MRG_RXBUF, F_EVENT_IDX, F_CSUM, F_GUEST_CSUM] {
        assert_ne!(f & bit, 0, "missing {bit:#x}");
    }
    assert_eq!(f & (1 << 40), 0, "unknown backend bit leaked");
    let mut cfg = [0u8; 8];
    n.read_config(0, &mut cfg);
    assert_eq!(cfg, [2, 0, 0, 0, 0, 1, 1, 0]);
    assert!(!n.is_activated());
    drop(n);
    // Config writes are ignored (the MAC stays), counted, never a panic.
    let mut n = h.net.lock().unwrap();
    n.write_config(0, &[9; 6]);
    n.write_config(u64::MAX, &[1]);
    n.read_config(0, &mut cfg);
    assert_eq!(&cfg[..6], &[2, 0, 0, 0, 0, 1]);
    assert_eq!(n.metrics().unwrap()["config_writes_ignored"], 2);
}

#[test]
fn the_mtu_is_offered_only_once_set_and_read_from_the_config_space() {
    let h = Harness::new();
    let mut n = h.net.lock().unwrap();
    assert_eq!(n.avail_features() & super::config::F_MTU, 0, "no MTU feature by default");
    n.set_mtu(9000);
    assert_ne!(n.avail_features() & super::config::F_MTU, 0);
    let mut mtu = [0u8; 2];
    n.read_config(super::config::CFG_MTU as u64, &mut mtu);
    assert_eq!(u16::from_le_bytes(mtu), 9000);
    assert_eq!(n.mtu(), 9000);
}

#[test]
fn random_mac_when_none_given() {
    let st = Arc::new(Mutex::new(FakeState { link_up: true, ..Default::default() }));
    let evt = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let n = Net::new(Box::new(FakeBackend { st, evt }), None, "n".into());
    assert_eq!(n.mac()[0] & 0x03, 0x02);
}

#[test]
fn rx_delivers_frame_with_used_length() {
    for direct in MODES {
        let mut h = Harness::activated_in(0, direct);
        let (head, addr) = h.add_rx_buf(1530);
        h.kick(RX_QUEUE);
        assert_eq!(h.st.lock().unwrap().posted.len(), 1);
        assert_eq!(h.irqs(), 0);
        let f = frame(100, 1);
        h.push_frame(f.clone());
        assert_eq!(h.new_used(RX_QUEUE), vec![(u32::from(head), 112)]);
        let hdr = h.read(addr, VNET_HDR_LEN);
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1);
        assert_eq!(h.read(addr + 12, 100), f);
        assert_eq!(h.irqs(), 1);
        assert_ne!(h.irq.status() & INT_VRING, 0);
        let m = h.metrics();
        assert_eq!(m["rx_packets"], 1);
        assert_eq!(m["rx_bytes"], 100);
        assert_eq!(m["vmm_copied_bytes"], 0);
        assert_eq!(m["backend"]["kind"], "fake");
        assert!(m["rx_passes"].as_u64().unwrap() > 0, "RX runs on the lent queue");
    }
}

#[test]
fn tx_sends_frame_and_completes() {
    let mut h = Harness::activated(0);
    let p = frame(60, 9);
    let head = h.add_tx_frame(&p);
    h.kick(TX_QUEUE);
    let sent = h.st.lock().unwrap().sent.clone();
    assert_eq!(sent.len(), 1);
    assert_eq!(&sent[0][..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
    assert_eq!(&sent[0][VNET_HDR_LEN..], &p[..]);
    assert_eq!(h.new_used(TX_QUEUE), vec![(u32::from(head), 0)]);
    assert_eq!(h.irqs(), 1);
    let m = h.metrics();
    assert_eq!(m["tx_packets"], 1);
    assert_eq!(m["tx_bytes"], 60);
}

#[test]
fn tx_backend_refusal_is_counted_and_completed() {
    let mut h = Harness::activated(0);
    h.st.lock().unwrap().send_error = Some(DropReason::BackendError);
    let head = h.add_tx_frame(&frame(60, 0));
    h.kick(TX_QUEUE);
    assert_eq!(h.new_used(TX_QUEUE), vec![(u32::from(head), 0)]);
    assert_eq!(h.metrics()["tx_drops"]["backend_error"], 1);
    h.st.lock().unwrap().send_error = None;
    h.add_tx_frame(&frame(60, 0));
    h.kick(TX_QUEUE);
    assert_eq!(h.metrics()["tx_packets"], 1);
}

#[test]
fn mrg_rxbuf_spreads_frame_and_sets_num_buffers() {
    let mut h = Harness::activated(F_MRG_RXBUF);
    let bufs: Vec<_> = (0..4).map(|_| h.add_rx_buf(256)).collect();
    h.kick(RX_QUEUE);
    let f = frame(600, 3);
    h.push_frame(f.clone());
    let used = h.new_used(RX_QUEUE);
    assert_eq!(used, vec![(u32::from(bufs[0].0), 256), (u32::from(bufs[1].0), 256), (u32::from(bufs[2].0), 100)]);
    let hdr = h.read(bufs[0].1, VNET_HDR_LEN);
    assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 3);
    let mut got = h.read(bufs[0].1 + 12, 244);
    got.extend(h.read(bufs[1].1, 256));
    got.extend(h.read(bufs[2].1, 100));
    assert_eq!(got, f);
    // A second, small frame takes the last buffer alone.
    h.push_frame(frame(50, 4));
    assert_eq!(h.new_used(RX_QUEUE), vec![(u32::from(bufs[3].0), 62)]);
    let m = h.metrics();
    assert_eq!(m["rx_packets"], 2);
    assert_eq!(m["rx_buffers_used"], 4);
    assert_eq!(m["rx_bytes"], 650);
}

#[test]
fn mrg_frames_counted_when_header_is_split_across_descriptors() {
    let mut h = Harness::activated(F_MRG_RXBUF);
    // num_buffers straddles the first two descriptors of each buffer.
    // The segments are apart, and the byte after the first one is junk.
    for _ in 0..3 {
        let a = h.alloc(320);
        h.mem.write_obj(0xffu8, GuestAddress(a + 11)).unwrap();
        h.add_chain(RX_QUEUE, &[(a, 11, W), (a + 64, 245, W)]);
    }
    h.kick(RX_QUEUE);
    h.push_frame(frame(400, 1));
    h.push_frame(frame(100, 2));
    assert_eq!(h.new_used(RX_QUEUE).iter().map(|u| u.1).collect::<Vec<_>>(), vec![256, 156, 112]);
    let m = h.metrics();
    assert_eq!(m["rx_packets"], 2);
    assert_eq!(m["rx_bytes"], 500);
}

#[test]
fn event_idx_suppresses_interrupts_and_kicks() {
    for direct in MODES {
        let mut h = Harness::activated_in(F_EVENT_IDX, direct);
        // used_event = 0: the first completion interrupts.
        h.set_used_event(TX_QUEUE, 0);
        h.add_tx_frame(&frame(60, 0));
        h.kick(TX_QUEUE);
        assert_eq!(h.irqs(), 1);
        // The device asked to be kicked at the next new chain (avail_event).
        assert_eq!(h.avail_event(TX_QUEUE), 1);
        // Driver only wants to hear after the 10th used entry: a batch of three
        // is completed without an interrupt.
        h.set_used_event(TX_QUEUE, 10);
        for _ in 0..3 {
            h.add_tx_frame(&frame(60, 1));
        }
        h.kick(TX_QUEUE);
        assert_eq!(h.new_used(TX_QUEUE).len(), 4);
        assert_eq!(h.irqs(), 0);
        assert_eq!(h.avail_event(TX_QUEUE), 4);
        let m = h.metrics();
        assert_eq!(m["used_irqs"], 1);
        assert_eq!(m["used_irqs_suppressed"], 1);
        // Crossing used_event interrupts again: 7 more frames take used idx
        // from 4 to 11, past 10.
        for _ in 0..7 {
            h.add_tx_frame(&frame(60, 2));
        }
        h.kick(TX_QUEUE);
        assert_eq!(h.irqs(), 1);
        // RX with EVENT_IDX: several frames in one backend event, one interrupt
        // at most, none if used_event is far ahead.
        h.set_used_event(RX_QUEUE, 100);
        for _ in 0..3 {
            h.add_rx_buf(1530);
        }
        h.kick(RX_QUEUE);
        h.push_frames(vec![frame(64, 0), frame(64, 1)]);
        assert_eq!(h.new_used(RX_QUEUE).len(), 2);
        assert_eq!(h.irqs(), 0);
    }
}

#[test]
fn without_event_idx_every_batch_interrupts_once() {
    let mut h = Harness::activated(0);
    for _ in 0..5 {
        h.add_tx_frame(&frame(60, 0));
    }
    h.kick(TX_QUEUE);
    assert_eq!(h.new_used(TX_QUEUE).len(), 5);
    // One batch, one interrupt.
    assert_eq!(h.irqs(), 1);
}

/// Each malformed RX chain is completed with length 0, counted, and a good
/// buffer afterwards still receives a frame.
#[test]
fn malformed_rx_chains_are_dropped_and_counted() {
    let cases: Vec<(&str, DropReason, AddChain)> = vec![
        ("outside RAM", DropReason::BadAddress, Box::new(|h| h.add_chain(RX_QUEUE, &[(MEM_SIZE + 0x1000, 1530, W)]))),
        (
            "straddles RAM end",
            DropReason::BadAddress,
            Box::new(|h| h.add_chain(RX_QUEUE, &[(MEM_SIZE - 100, 1530, W)])),
        ),
        (
            "readable in RX",
            DropReason::WrongDirection,
            Box::new(|h| {
                let a = h.alloc(1530);
                h.add_chain(RX_QUEUE, &[(a, 12, W), (a + 12, 1518, 0)])
            }),
        ),
        (
            "zero length",
            DropReason::ZeroLength,
            Box::new(|h| {
                let a = h.alloc(1530);
                h.add_chain(RX_QUEUE, &[(a, 1530, W), (a, 0, W)])
            }),
        ),
        (
            "short header",
            DropReason::ShortHeader,
            Box::new(|h| {
                let a = h.alloc(64);
                h.add_chain(RX_QUEUE, &[(a, 10, W)])
            }),
        ),
        (
            "loop",
            DropReason::ChainTooLong,
            Box::new(|h| {
                let a = h.alloc(64);
                let s = h.next_desc[RX_QUEUE];
                let d = [
                    RawDescriptor::from(SplitDescriptor::new(a, 32, W | N, s + 1)),
                    RawDescriptor::from(SplitDescriptor::new(a + 32, 32, W | N, s)),
                ];
                h.add_raw(RX_QUEUE, &d)
            }),
        ),
        (
            "too long",
            DropReason::ChainTooLong,
            Box::new(|h| {
                let a = h.alloc(64 * 200);
                let segs: Vec<_> = (0..=MAX_CHAIN_DESCS as u64).map(|i| (a + 64 * i, 64, W)).collect();
                h.add_chain(RX_QUEUE, &segs)
            }),
        ),
    ];
    for ((name, reason, add), direct) in cases.iter().flat_map(|c| MODES.map(|d| (c, d))) {
        let mut h = Harness::activated_in(0, direct);
        let bad = add(&mut h);
        h.kick(RX_QUEUE);
        assert_eq!(h.new_used(RX_QUEUE), vec![(u32::from(bad), 0)], "{name}");
        assert_eq!(h.metrics()["rx_drops"][reason.as_str()], 1, "{name}");
        assert!(h.st.lock().unwrap().posted.is_empty(), "{name}: bad buffer reached the backend");
        // Still works.
        let (good, addr) = h.add_rx_buf(1530);
        h.kick(RX_QUEUE);
        let f = frame(80, 5);
        h.push_frame(f.clone());
        assert_eq!(h.new_used(RX_QUEUE), vec![(u32::from(good), 92)], "{name}");
        assert_eq!(h.read(addr + 12, 80), f, "{name}");
    }
}

#[test]
fn malformed_tx_chains_are_dropped_and_counted() {
    let cases: Vec<(&str, DropReason, AddChain)> = vec![
        ("outside RAM", DropReason::BadAddress, Box::new(|h| h.add_chain(TX_QUEUE, &[(u64::MAX - 8, 64, 0)]))),
        (
            "writable in TX",
            DropReason::WrongDirection,
            Box::new(|h| {
                let a = h.alloc(64);
                h.add_chain(TX_QUEUE, &[(a, 12, 0), (a + 12, 52, W)])
            }),
        ),
        (
            "zero length",
            DropReason::ZeroLength,
            Box::new(|h| {
                let a = h.alloc(64);
                h.add_chain(TX_QUEUE, &[(a, 0, 0)])
            }),
        ),
        (
            "short header",
            DropReason::ShortHeader,
            Box::new(|h| {
                let a = h.alloc(64);
                h.add_chain(TX_QUEUE, &[(a, 6, 0), (a + 6, 5, 0)])
            }),
        ),
        (
            "self loop",
            DropReason::ChainTooLong,
            Box::new(|h| {
                let a = h.alloc(64);
                let s = h.next_desc[TX_QUEUE];
                h.add_raw(TX_QUEUE, &[RawDescriptor::from(SplitDescriptor::new(a, 64, N, s))])
            }),
        ),
    ];
    for (name, reason, add) in cases {
        let mut h = Harness::activated(0);
        let bad = add(&mut h);
        let good = h.add_tx_frame(&frame(60, 1));
        h.kick(TX_QUEUE);
        assert_eq!(h.new_used(TX_QUEUE), vec![(u32::from(bad), 0), (u32::from(good), 0)], "{name}");
        assert_eq!(h.metrics()["tx_drops"][reason.as_str()], 1, "{name}");
        assert_eq!(h.st.lock().unwrap().sent.len(), 1, "{name}");
    }
}

#[test]
fn head_index_out_of_range_does_not_panic() {
    for direct in MODES {
        let mut h = Harness::activated_in(0, direct);
        // The avail ring names descriptor 300 in a 256-entry queue.
        let avail = h.rxq.avail_addr().0;
        let idx: u16 = h.mem.read_obj(GuestAddress(avail + 2)).unwrap();
        h.mem.write_obj(300u16, GuestAddress(avail + 4 + 2 * u64::from(idx))).unwrap();
        h.mem.write_obj(idx + 1, GuestAddress(avail + 2)).unwrap();
        h.kick(RX_QUEUE);
        assert_eq!(h.metrics()["rx_drops"]["bad_address"], 1);
        assert!(h.new_used(RX_QUEUE).is_empty());
    }
}

#[test]
fn events_before_activation_are_drained_and_ignored() {
    let mut h = Harness::new();
    h.add_rx_buf(1530);
    h.kick(RX_QUEUE);
    h.kick(TX_QUEUE);
    h.push_frame(frame(64, 0));
    // The fd is no longer watched: more data does not spin the loop.
    h.push_frame(frame(64, 1));
    {
        let st = h.st.lock().unwrap();
        assert!(st.posted.is_empty());
        assert_eq!(st.discards, 1);
        assert_eq!(st.process_calls, 0);
    }
    assert_eq!(h.irqs(), 0);
    // Activation posts the buffer made available before and takes the frame
    // that arrived while the fd was not watched.
    h.activate(0);
    assert_eq!(h.new_used(RX_QUEUE).len(), 1);
    h.add_rx_buf(1530);
    h.kick(RX_QUEUE);
    h.push_frame(frame(64, 2));
    assert_eq!(h.new_used(RX_QUEUE).len(), 1);
}

#[test]
fn link_down_updates_status_and_raises_config_interrupt() {
    let mut h = Harness::activated(F_STATUS);
    let mut s = [0u8; 2];
    h.net.lock().unwrap().read_config(CFG_STATUS as u64, &mut s);
    assert_eq!(s, [1, 0]);
    h.st.lock().unwrap().link_up = false;
    h.backend_event();
    h.net.lock().unwrap().read_config(CFG_STATUS as u64, &mut s);
    assert_eq!(s, [0, 0]);
    assert_ne!(h.irq.status() & INT_CONFIG, 0);
    assert_eq!(h.metrics()["link_down_events"], 1);
    assert_eq!(h.metrics()["link_up"], false);
    // The device keeps running: TX still completes (the backend decides).
    h.add_tx_frame(&frame(60, 0));
    h.kick(TX_QUEUE);
    assert_eq!(h.new_used(TX_QUEUE).len(), 1);
}

#[test]
fn stalled_backend_resumes_after_guest_adds_buffers() {
    let mut h = Harness::activated(F_MRG_RXBUF);
    h.st.lock().unwrap().stall_mode = true;
    h.add_rx_buf(256);
    h.kick(RX_QUEUE);
    // 1000-byte frame needs 4 buffers of 256; only one is posted.
    h.push_frame(frame(1000, 7));
    assert!(h.new_used(RX_QUEUE).is_empty());
    assert_eq!(h.metrics()["rx_stalls"], 1);
    let calls = h.st.lock().unwrap().process_calls;
    // While stalled the backend fd is not watched: an event is not processed.
    h.backend_event();
    assert_eq!(h.st.lock().unwrap().process_calls, calls);
    // The guest adds buffers and kicks: the device retries the backend.
    for _ in 0..4 {
        h.add_rx_buf(256);
    }
    h.kick(RX_QUEUE);
    let used = h.new_used(RX_QUEUE);
    assert_eq!(used.iter().map(|u| u.1).collect::<Vec<_>>(), vec![256, 256, 256, 244]);
    assert_eq!(h.metrics()["rx_packets"], 1);
    // Watching again: a new frame is delivered on the backend event.
    h.push_frame(frame(100, 8));
    assert_eq!(h.new_used(RX_QUEUE), vec![(4, 112)]);
}

#[test]
fn backend_full_stops_posting_and_refills_later() {
    for direct in MODES {
        let mut h = Harness::activated_in(0, direct);
        h.st.lock().unwrap().room = 2;
        for _ in 0..5 {
            h.add_rx_buf(1530);
        }
        h.kick(RX_QUEUE);
        assert_eq!(h.st.lock().unwrap().posted.len(), 2);
        // Two frames consume both buffers; the device refills from the ring.
        h.push_frames(vec![frame(64, 0), frame(64, 1)]);
        assert_eq!(h.new_used(RX_QUEUE).len(), 2);
        assert_eq!(h.st.lock().unwrap().posted.len(), 2);
    }
}

#[test]
fn bogus_backend_completion_is_ignored() {
    for direct in MODES {
        let mut h = Harness::activated_in(0, direct);
        h.st.lock().unwrap().bogus_head = Some(7);
        h.backend_event();
        assert!(h.new_used(RX_QUEUE).is_empty());
        assert_eq!(h.metrics()["backend_bogus_completions"], 1);
    }
}

#[test]
fn duplicate_head_while_posted_is_ignored() {
    for direct in MODES {
        let mut h = Harness::activated_in(0, direct);
        let (head, _) = h.add_rx_buf(1530);
        h.kick(RX_QUEUE);
        // The guest makes the same head available again while the backend has it.
        let avail = h.rxq.avail_addr().0;
        let idx: u16 = h.mem.read_obj(GuestAddress(avail + 2)).unwrap();
        h.mem.write_obj(head, GuestAddress(avail + 4 + 2 * u64::from(idx))).unwrap();
        h.mem.write_obj(idx + 1, GuestAddress(avail + 2)).unwrap();
        h.kick(RX_QUEUE);
        assert_eq!(h.st.lock().unwrap().posted.len(), 1);
        assert_eq!(h.metrics()["duplicate_heads"], 1);
    }
}

#[test]
fn reset_quiesces_backend_and_reactivation_works() {
    for direct in MODES {
        let mut h = Harness::activated_in(0, direct);
        h.add_rx_buf(1530);
        h.kick(RX_QUEUE);
        h.net.lock().unwrap().reset();
        assert!(!h.net.lock().unwrap().is_activated());
        {
            let st = h.st.lock().unwrap();
            assert_eq!(st.quiesces, 1);
            assert!(st.posted.is_empty());
        }
        // Fresh driver queues after reset.
        h.rxq = MockSplitQueue::create(h.mem, GuestAddress(RXQ_AT), QUEUE_SIZE);
        h.txq = MockSplitQueue::create(h.mem, GuestAddress(TXQ_AT), QUEUE_SIZE);
        h.next_desc = [0, 0];
        h.used_seen = [0, 0];
        h.activate(F_MRG_RXBUF);
        h.add_rx_buf(1530);
        h.kick(RX_QUEUE);
        h.push_frame(frame(64, 0));
        assert_eq!(h.new_used(RX_QUEUE), vec![(0, 76)]);
    }
}

#[test]
fn activation_rejects_wrong_queue_count() {
    let h = Harness::new();
    let q: Queue = h.rxq.create_queue().unwrap();
    let mut n = h.net.lock().unwrap();
    let e = n.activate(ActivateContext { mem: h.mem.clone(), queues: vec![q], interrupt: h.irq.clone() }).unwrap_err();
    assert!(e.to_string().contains("needs 2"), "{e}");
    assert!(!n.is_activated());
}

/// Writes an indirect descriptor table at `at` and returns the head
/// descriptor pointing to it.
fn indirect(h: &Harness, at: u64, table: &[(u64, u32, u16)]) -> RawDescriptor {
    for (i, &(a, l, f)) in table.iter().enumerate() {
        let last = i == table.len() - 1;
        let d = SplitDescriptor::new(a, l, if last { f } else { f | N }, if last { 0 } else { i as u16 + 1 });
        h.mem.write_obj(RawDescriptor::from(d), GuestAddress(at + 16 * i as u64)).unwrap();
    }
    RawDescriptor::from(SplitDescriptor::new(at, 16 * table.len() as u32, VRING_DESC_F_INDIRECT as u16, 0))
}

#[test]
fn indirect_descriptor_tables_work_both_ways() {
    for direct in MODES {
        let mut h = Harness::activated_in(F_INDIRECT_DESC, direct);
        assert_ne!(h.net.lock().unwrap().avail_features() & F_INDIRECT_DESC, 0);
        // TX: header and payload through an indirect table.
        let p = frame(300, 2);
        let (ha, pa, table) = (h.alloc(12), h.alloc(300), h.alloc(64));
        h.mem.write_slice(&[0u8; 12], GuestAddress(ha)).unwrap();
        h.mem.write_slice(&p, GuestAddress(pa)).unwrap();
        let d = indirect(&h, table, &[(ha, 12, 0), (pa, 300, 0)]);
        let head = h.add_raw(TX_QUEUE, &[d]);
        h.kick(TX_QUEUE);
        assert_eq!(h.new_used(TX_QUEUE), vec![(u32::from(head), 0)]);
        assert_eq!(&h.st.lock().unwrap().sent[0][12..], &p[..]);
        // RX: a header segment then a data segment, indirect.
        let (ra, rb, table) = (h.alloc(12), h.alloc(1518), h.alloc(64));
        let d = indirect(&h, table, &[(ra, 12, W), (rb, 1518, W)]);
        let head = h.add_raw(RX_QUEUE, &[d]);
        h.kick(RX_QUEUE);
        let f = frame(500, 3);
        h.push_frame(f.clone());
        assert_eq!(h.new_used(RX_QUEUE), vec![(u32::from(head), 512)]);
        assert_eq!(h.read(rb, 500), f);
        assert_eq!(h.metrics()["rx_packets"], 1);
    }
}

#[test]
fn broken_indirect_tables_are_dropped() {
    let mut h = Harness::activated(F_INDIRECT_DESC);
    // Table outside guest RAM.
    let d = RawDescriptor::from(SplitDescriptor::new(MEM_SIZE + 0x1000, 32, VRING_DESC_F_INDIRECT as u16, 0));
    let bad1 = h.add_raw(TX_QUEUE, &[d]);
    // An indirect descriptor inside an indirect table.
    let (inner, table) = (h.alloc(64), h.alloc(64));
    let d = indirect(&h, table, &[(inner, 32, VRING_DESC_F_INDIRECT as u16)]);
    let bad2 = h.add_raw(TX_QUEUE, &[d]);
    // A table entry outside guest RAM.
    let table = h.alloc(64);
    let d = indirect(&h, table, &[(MEM_SIZE, 64, 0)]);
    let bad3 = h.add_raw(TX_QUEUE, &[d]);
    let good = h.add_tx_frame(&frame(60, 0));
    h.kick(TX_QUEUE);
    let used = h.new_used(TX_QUEUE);
    assert_eq!(used, vec![(u32::from(bad1), 0), (u32::from(bad2), 0), (u32::from(bad3), 0), (u32::from(good), 0)]);
    assert_eq!(h.metrics()["tx_drops"]["bad_address"], 3);
    assert_eq!(h.st.lock().unwrap().sent.len(), 1);
}

/// A hostile driver: random descriptor tables (addresses in and out of RAM,
/// random flags including INDIRECT, random next indices) and random avail
/// entries (heads beyond the queue too), on both queues, with frames flowing.
/// The device must not panic, every used entry must name a valid head, and
/// it must still work afterwards.
#[test]
fn random_hostile_chains_never_panic() {
    for direct in MODES {
        let mut h = Harness::activated_in(F_MRG_RXBUF | F_EVENT_IDX | F_INDIRECT_DESC, direct);
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for round in 0..200 {
            for qi in [RX_QUEUE, TX_QUEUE] {
                let q = h.q(qi);
                let (table, avail) = (q.desc_table_addr().0, q.avail_addr().0);
                for i in 0..u64::from(QUEUE_SIZE) {
                    let r = rnd();
                    let addr = match r % 4 {
                        0 => rnd() % MEM_SIZE,
                        1 => MEM_SIZE - (rnd() % 64),
                        2 => rnd(),
                        _ => BUF_AT + (rnd() % 0x10_0000),
                    };
                    let len = match (r >> 8) % 4 {
                        0 => 0,
                        1 => (rnd() % 16) as u32,
                        2 => (rnd() % 4096) as u32,
                        _ => rnd() as u32,
                    };
                    let flags = ((r >> 16) % 8) as u16; // NEXT | WRITE | INDIRECT
                    let next = ((r >> 24) % 300) as u16;
                    let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next));
                    h.mem.write_obj(d, GuestAddress(table + 16 * i)).unwrap();
                }
                let idx: u16 = h.mem.read_obj(GuestAddress(avail + 2)).unwrap();
                let n = (rnd() % 40) as u16;
                for k in 0..n {
                    let head = (rnd() % 300) as u16;
                    let slot = avail + 4 + 2 * u64::from(idx.wrapping_add(k) % QUEUE_SIZE);
                    h.mem.write_obj(head, GuestAddress(slot)).unwrap();
                }
                h.mem.write_obj(idx.wrapping_add(n), GuestAddress(avail + 2)).unwrap();
                // Random used_event too.
                h.set_used_event(qi, rnd() as u16);
            }
            h.kick(RX_QUEUE);
            h.kick(TX_QUEUE);
            {
                let mut st = h.st.lock().unwrap();
                for _ in 0..(round % 5) {
                    st.inbox.push_back(frame((rnd() % 3000) as usize + 14, round as u8));
                }
            }
            h.backend_event();
            for qi in [RX_QUEUE, TX_QUEUE] {
                for (id, len) in h.new_used(qi) {
                    assert!(id < u32::from(QUEUE_SIZE), "used head {id}");
                    if qi == TX_QUEUE {
                        assert_eq!(len, 0);
                    }
                }
            }
        }
        let m = h.metrics();
        let drops = |k: &str| -> u64 { m[k].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum() };
        assert!(drops("rx_drops") > 0 && drops("tx_drops") > 0, "{m}");
        // Still works: a clean TX frame goes out.
        h.st.lock().unwrap().sent.clear();
        h.next_desc[TX_QUEUE] = 0;
        let p = frame(100, 42);
        h.add_tx_frame(&p);
        h.kick(TX_QUEUE);
        let sent = h.st.lock().unwrap().sent.clone();
        assert_eq!(sent.last().map(|f| &f[12..]), Some(&p[..]), "{m}");
    }
}

#[test]
fn rx_refill_ends_each_batch_with_one_batch_done() {
    for direct in MODES {
        let mut h = Harness::activated_in(F_MRG_RXBUF, direct);
        assert!(h.st.lock().unwrap().batches.is_empty(), "no batch without a post");
        for _ in 0..5 {
            h.add_rx_buf(1536);
        }
        h.kick(RX_QUEUE);
        assert_eq!(h.st.lock().unwrap().batches, vec![5], "one batch-done for the whole refill");
        // A kick with nothing new posts nothing and ends no batch.
        h.kick(RX_QUEUE);
        assert_eq!(h.st.lock().unwrap().batches, vec![5]);
        // Backend room runs out mid-refill: what was posted is still flushed.
        h.st.lock().unwrap().room = 7;
        for _ in 0..4 {
            h.add_rx_buf(1536);
        }
        h.kick(RX_QUEUE);
        let st = h.st.lock().unwrap();
        assert_eq!(st.batches, vec![5, 2]);
    }
}

#[test]
fn backend_length_beyond_the_buffer_is_clamped_and_counted() {
    for direct in MODES {
        let mut h = Harness::activated_in(0, direct);
        let (head, _) = h.add_rx_buf(1530);
        h.kick(RX_QUEUE);
        {
            let mut st = h.st.lock().unwrap();
            st.posted.clear();
            st.done.push((Used { head, len: 5000 }, true));
        }
        h.backend_event();
        assert_eq!(h.new_used(RX_QUEUE), vec![(u32::from(head), 1530)], "direct {direct}");
        assert_eq!(h.metrics()["backend_bogus_completions"], 1, "direct {direct}");
        // The head is free again: completing it twice is refused.
        h.st.lock().unwrap().done.push((Used { head, len: 100 }, true));
        h.backend_event();
        assert!(h.new_used(RX_QUEUE).is_empty(), "direct {direct}");
        assert_eq!(h.metrics()["backend_bogus_completions"], 2, "direct {direct}");
    }
}

/// The backend filled up exactly when the guest ran out of buffers; once
/// completions make room, the device must ask the guest to kick again
/// (otherwise the guest's next buffers sit unseen).
#[test]
fn room_freed_with_no_guest_buffers_left_asks_for_a_kick() {
    for direct in MODES {
        for event_idx in [false, true] {
            let mut h = Harness::activated_in(if event_idx { F_EVENT_IDX } else { 0 }, direct);
            h.st.lock().unwrap().room = 2;
            h.add_rx_buf(1530);
            h.add_rx_buf(1530);
            h.kick(RX_QUEUE);
            assert_eq!(h.st.lock().unwrap().posted.len(), 2);
            h.push_frames(vec![frame(64, 0), frame(64, 1)]);
            assert_eq!(h.new_used(RX_QUEUE).len(), 2, "direct {direct} event_idx {event_idx}");
            let used_flags: u16 = h.mem.read_obj(h.rxq.used_addr()).unwrap();
            if event_idx {
                assert_eq!(h.avail_event(RX_QUEUE), 2, "direct {direct}: kick on the next buffer");
            } else {
                assert_eq!(used_flags & 1, 0, "direct {direct}: NO_NOTIFY cleared");
            }
        }
    }
}

#[test]
fn direct_rx_hands_out_validated_buffers_with_their_host_address() {
    let mut h = Harness::activated_in(0, true);
    let (head, addr) = h.add_rx_buf(1530);
    let a = h.alloc(1530);
    let chained = h.add_chain(RX_QUEUE, &[(a, 12, W), (a + 12, 1518, W)]);
    h.kick(RX_QUEUE);
    let host = vm_memory::GuestMemoryBackend::get_host_address(h.mem, GuestAddress(addr)).unwrap() as usize;
    let st = h.st.lock().unwrap();
    assert_eq!(st.direct_ones, vec![(head, addr, 1530, host)], "the lone buffer comes as One");
    let posted: Vec<(u16, u32)> = st.posted.iter().map(|b| (b.head, b.len)).collect();
    assert_eq!(posted, vec![(head, 1530), (chained, 1530)], "the chain comes as Chain");
    assert_eq!(st.posted[1].segs, vec![(GuestAddress(a), 12), (GuestAddress(a + 12), 1518)]);
    assert_eq!(st.batches, vec![2], "one batch-done for the refill");
}

#[test]
fn direct_rx_refusing_a_head_not_held_is_ignored_and_counted() {
    let mut h = Harness::activated_in(0, true);
    let (held, _) = h.add_rx_buf(1530);
    h.kick(RX_QUEUE);
    for bogus in [held + 1, 300] {
        h.st.lock().unwrap().bogus_refuse = Some(bogus);
        h.kick(RX_QUEUE);
        assert!(h.new_used(RX_QUEUE).is_empty(), "head {bogus}");
    }
    assert_eq!(h.metrics()["backend_bogus_completions"], 2);
    assert_eq!(h.metrics()["rx_drops"]["backend_error"], 0);
}

#[test]
fn direct_rx_refused_buffers_go_back_empty_and_counted() {
    let mut h = Harness::activated_in(0, true);
    h.st.lock().unwrap().refuse = 1;
    let (first, _) = h.add_rx_buf(1530);
    let (second, addr) = h.add_rx_buf(1530);
    h.kick(RX_QUEUE);
    assert_eq!(h.new_used(RX_QUEUE), vec![(u32::from(first), 0)]);
    assert_eq!(h.metrics()["rx_drops"]["no_buffer"], 1);
    // The refused head is free: the guest may post it again.
    assert_eq!(h.st.lock().unwrap().posted.len(), 1);
    let f = frame(200, 9);
    h.push_frame(f.clone());
    assert_eq!(h.new_used(RX_QUEUE), vec![(u32::from(second), 212)]);
    assert_eq!(h.read(addr + 12, 200), f);
    let m = h.metrics();
    assert_eq!(
        (m["rx_packets"].as_u64(), m["rx_bytes"].as_u64(), m["rx_buffers_used"].as_u64()),
        (Some(1), Some(200), Some(1))
    );
}

#[test]
fn tx_processing_ends_each_batch_with_one_batch_done() {
    let mut h = Harness::activated(0);
    for i in 0..4 {
        h.add_tx_frame(&frame(60, i));
    }
    h.kick(TX_QUEUE);
    let st = h.st.lock().unwrap();
    assert_eq!(st.sent.len(), 4);
    assert_eq!(st.tx_batches, vec![4], "one pass for the four frames");
    drop(st);
    h.kick(TX_QUEUE);
    assert_eq!(h.st.lock().unwrap().tx_batches, vec![4], "nothing popped, no batch-done");
}

/// A backend that takes every RX buffer it is offered and gives it back at
/// once (what keeps a device with a self-refilling ring busiest).
struct TakeAll;

impl NetBackend for TakeAll {
    fn features(&self) -> u64 {
        0
    }
    fn set_features(&mut self, _acked: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn event_fds(&self) -> Vec<std::os::unix::io::RawFd> {
        Vec::new()
    }
    fn process_event(&mut self, _mem: &GuestMemory, _index: usize) {}
    fn discard_pending(&mut self, _index: usize) {}
    fn rx(&mut self, q: &mut RxQueue<'_>) -> RxPass {
        let mut heads = Vec::new();
        while let Some(next) = q.pop() {
            heads.push(match next {
                RxNext::One(d) => d.head(),
                RxNext::Chain(c) => c.head,
            });
        }
        for &h in &heads {
            q.refuse(h, DropReason::BadAddress);
        }
        RxPass { posted: heads.len(), full: false }
    }
    fn rx_stalled(&self) -> bool {
        false
    }
    fn tx(&mut self, _q: &mut TxQueue<'_>) {}
    fn quiesce(&mut self) {}
    fn link_up(&self) -> bool {
        true
    }
    fn metrics(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// Found by fuzzing (fuzz/ virtio_mmio; the guest RAM image of its input is
/// testdata/rx_rings_at_zero.bin): an 8-entry RX queue whose descriptor
/// table, avail ring and used ring all sit at GPA 0, so the used index the
/// device publishes is the avail index it reads, and its used elements are
/// avail entries. The ring never ran dry: `RxQueue::pop` and `run_rx` looped
/// forever on the event-loop thread. Now a pass takes at most one lap of the
/// ring and `run_rx` at most RX_PASSES passes, then re-arms its queue event.
#[test]
fn rx_ring_refilled_by_our_own_used_writes_does_not_hold_the_loop() {
    // The fuzz targets' guest RAM layout (fuzz/src/lib.rs).
    let regions = [(GuestAddress(0), 0x8000), (GuestAddress(0x8000), 0x1000), (GuestAddress(0x1_0000), 0x1000)];
    let mem = GuestMemoryMmap::from_ranges(&regions).unwrap();
    mem.write_slice(include_bytes!("testdata/rx_rings_at_zero.bin"), GuestAddress(0)).unwrap();
    let net = Arc::new(Mutex::new(Net::new(Box::new(TakeAll), Some([2, 0, 0, 0, 0, 1]), "net0".into())));
    let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
    let mut t = crate::transport::MmioTransport::new(net.clone(), mem, irq);
    // The input's register writes (1-byte ones, which the transport ignores,
    // left out): RX queue of 8 with every ring at 0, TX queue of 8 elsewhere.
    let writes: &[(u64, u32)] = &[
        (0x70, 5),
        (0x70, 3),
        (0x24, 1),
        (0x20, 1),
        (0x24, 0),
        (0x20, 0x18020),
        (0x70, 0xb),
        (0x30, 0),
        (0x38, 8),
        (0x80, 0),
        (0x44, 1),
        (0x30, 1),
        (0x38, 8),
        (0x80, 0xe0),
        (0x90, 0x160),
        (0xa0, 0x178),
        (0x44, 1),
        (0x70, 0xf),
    ];
    for &(off, v) in writes {
        t.write(off, &v.to_le_bytes());
    }
    assert!(net.lock().unwrap().is_activated());
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Two QueueNotify writes (a queue that does not exist, then TX),
        // each followed by what the event loop does for it.
        for q in [0x100_0000u32, 1] {
            t.write(crate::transport::QUEUE_NOTIFY_OFFSET, &q.to_le_bytes());
            net.lock().unwrap().service_for_test();
        }
        let net = net.lock().unwrap();
        let _ = done_tx.send((net.metrics.rx_drops.total(), net.queue_evts[RX_QUEUE].read().is_ok()));
    });
    let (dropped, rearmed) = done_rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("run_rx did not return: the self-refilling RX ring holds the event loop");
    // Malformed chains, completed empty as they came, more than a lap of them.
    assert!(dropped > 8, "only {dropped} malformed chains seen");
    assert!(rearmed, "run_rx stopped with buffers left and must come back through its queue event");
}

fn limiter(bandwidth: Option<(u64, u64)>, ops: Option<(u64, u64)>) -> vmm_config::RateLimiter {
    let tb = |(size, refill_time)| vmm_config::TokenBucket { size, one_time_burst: None, refill_time };
    vmm_config::RateLimiter { bandwidth: bandwidth.map(tb), ops: ops.map(tb) }
}

impl Harness {
    /// Runs the event loop (waiting for timers) until `done` or 2 s passed.
    fn run_until(&mut self, done: impl Fn(&Harness) -> bool) -> std::time::Duration {
        let t0 = std::time::Instant::now();
        while !done(self) {
            assert!(t0.elapsed() < std::time::Duration::from_secs(2), "not done within 2 s");
            self.em.run_with_timeout(50).unwrap();
        }
        t0.elapsed()
    }
}

#[test]
fn tx_rate_limiter_leaves_frames_in_the_ring_until_its_timer() {
    let mut h = Harness::activated(0);
    // Two frames per 100 ms.
    h.net.lock().unwrap().set_rate_limiters(None, Some(&limiter(None, Some((2, 100)))));
    let heads: Vec<u16> = (0..5).map(|i| h.add_tx_frame(&frame(60, i))).collect();
    h.kick(TX_QUEUE);
    assert_eq!(h.st.lock().unwrap().sent.len(), 2, "the bucket held two frames");
    assert_eq!(h.new_used(TX_QUEUE).len(), 2);
    assert_eq!(h.metrics()["tx_rate_limiter_throttled"], 1);
    // A kick while throttled sends nothing.
    h.kick(TX_QUEUE);
    assert_eq!(h.st.lock().unwrap().sent.len(), 2);
    // The timer resumes the queue: three more frames at one per 50 ms.
    let took = h.run_until(|h| h.st.lock().unwrap().sent.len() == 5);
    assert!(took >= std::time::Duration::from_millis(140), "sent too early: {took:?}");
    let used: Vec<u32> = h.new_used(TX_QUEUE).iter().map(|u| u.0).collect();
    assert_eq!(used, heads[2..].iter().map(|&x| u32::from(x)).collect::<Vec<_>>(), "in order, none lost");
    let m = h.metrics();
    assert_eq!(m["tx_packets"], 5);
    assert!(m["tx_rate_limiter_events"].as_u64().unwrap() >= 3, "{m}");
}

#[test]
fn tx_bandwidth_counts_frame_bytes() {
    let mut h = Harness::activated(0);
    // 1000 bytes per 100 ms: three 400-byte frames do not fit at once.
    h.net.lock().unwrap().set_rate_limiters(None, Some(&limiter(Some((1000, 100)), None)));
    for i in 0..3 {
        h.add_tx_frame(&frame(400, i));
    }
    h.kick(TX_QUEUE);
    assert_eq!(h.st.lock().unwrap().sent.len(), 2);
    h.run_until(|h| h.st.lock().unwrap().sent.len() == 3);
    // Removing the limiter lets everything through at once.
    h.net.lock().unwrap().set_rate_limiters(None, None);
    for i in 0..20 {
        h.add_tx_frame(&frame(400, i));
    }
    h.kick(TX_QUEUE);
    assert_eq!(h.st.lock().unwrap().sent.len(), 23);
}

#[test]
fn rx_rate_limiter_stops_posting_buffers_until_its_timer() {
    for direct in MODES {
        let mut h = Harness::activated_in(0, direct);
        // 1000 bytes per 100 ms.
        h.net.lock().unwrap().set_rate_limiters(Some(&limiter(Some((1000, 100)), None)), None);
        for _ in 0..3 {
            h.add_rx_buf(1530);
        }
        h.kick(RX_QUEUE);
        assert_eq!(h.st.lock().unwrap().posted.len(), 3, "budget left: buffers go to the backend");
        // 1800 bytes received: 800 of debt.
        h.push_frames(vec![frame(600, 1), frame(600, 2), frame(600, 3)]);
        assert_eq!(h.new_used(RX_QUEUE).len(), 3, "what was received is delivered");
        for _ in 0..2 {
            h.add_rx_buf(1530);
        }
        h.kick(RX_QUEUE);
        assert_eq!(h.st.lock().unwrap().posted.len(), 0, "no budget: no buffer handed out");
        assert_eq!(h.metrics()["rx_rate_limiter_throttled"], 1);
        let took = h.run_until(|h| h.st.lock().unwrap().posted.len() == 2);
        assert!(took >= std::time::Duration::from_millis(70), "posted too early: {took:?}");
        assert_eq!(h.metrics()["rx_rate_limiter_events"], 1);
    }
}

// ------------------------------------------------------------- MMDS ---

const MMDS_IP: [u8; 4] = [169, 254, 169, 254];
const GUEST_MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];
const GUEST_IP: [u8; 4] = [10, 0, 0, 2];

/// A device serving MMDS (V1, with a nested document) on its interface.
fn mmds_harness(direct: bool) -> Harness {
    let mut h = Harness::new_in(direct);
    let store = Arc::new(Mutex::new(mmds::Mmds::default()));
    store.lock().unwrap().put(serde_json::json!({"latest": {"meta-data": {"id": "i-1"}}})).unwrap();
    h.net.lock().unwrap().set_mmds(mmds::MmdsStack::new(store, MMDS_IP.into()));
    h.activate(F_MRG_RXBUF);
    h
}

/// The guest's ARP request for the MMDS address.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&GUEST_IP);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&MMDS_IP);
    f
}

/// The guest's TCP SYN to MMDS port 80 (checksums left to the device, as
/// with VIRTIO_NET_F_CSUM).
fn tcp_syn() -> Vec<u8> {
    let mut f = mmds::MMDS_MAC.to_vec();
    f.extend_from_slice(&GUEST_MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    // IPv4: version/IHL, TOS, total length 40, id, flags DF, TTL 64, TCP.
    f.extend_from_slice(&[0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0]);
    f.extend_from_slice(&GUEST_IP);
    f.extend_from_slice(&MMDS_IP);
    // TCP: port 40000 -> 80, seq 1000, ack 0, data offset 5, SYN, window.
    f.extend_from_slice(&[0x9c, 0x40, 0, 80, 0, 0, 0x03, 0xe8, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    f
}

/// The frame (without virtio-net header) in RX buffer `addr` of `len` bytes.
fn rx_frame(h: &Harness, addr: u64, len: u32) -> Vec<u8> {
    h.read(addr + VNET_HDR_LEN as u64, len as usize - VNET_HDR_LEN)
}

#[test]
fn mmds_frames_are_answered_by_the_vmm_and_never_reach_the_backend() {
    for direct in MODES {
        let mut h = mmds_harness(direct);
        let bufs: Vec<(u16, u64)> = (0..4).map(|_| h.add_rx_buf(1526)).collect();
        h.kick(RX_QUEUE);
        h.add_tx_frame(&arp_request());
        h.kick(TX_QUEUE);
        assert!(h.st.lock().unwrap().sent.is_empty(), "an MMDS frame reached the backend");
        assert_eq!(h.new_used(TX_QUEUE).len(), 1, "the intercepted frame is completed");
        let used = h.new_used(RX_QUEUE);
        assert_eq!(used.len(), 1, "one ARP reply");
        let (head, len) = used[0];
        let addr = bufs.iter().find(|b| u32::from(b.0) == head).unwrap().1;
        let hdr = h.read(addr, VNET_HDR_LEN);
        assert_eq!(u16::from_le_bytes([hdr[10], hdr[11]]), 1, "num_buffers");
        let reply = rx_frame(&h, addr, len);
        assert_eq!(&reply[0..6], &GUEST_MAC, "to the guest");
        assert_eq!(&reply[12..14], &[0x08, 0x06]);
        assert_eq!(&reply[20..22], &[0, 2], "an ARP reply");
        assert_eq!(&reply[22..28], &mmds::MMDS_MAC);
        assert_eq!(&reply[28..32], &MMDS_IP);

        // A SYN to port 80 is answered with SYN-ACK, in the next buffer.
        h.add_tx_frame(&tcp_syn());
        h.kick(TX_QUEUE);
        let used = h.new_used(RX_QUEUE);
        assert_eq!(used.len(), 1, "one SYN-ACK");
        let addr = bufs.iter().find(|b| u32::from(b.0) == used[0].0).unwrap().1;
        let synack = rx_frame(&h, addr, used[0].1);
        assert_eq!(&synack[26..30], &MMDS_IP, "from MMDS");
        assert_eq!(&synack[34..36], &[0, 80]);
        assert_eq!(synack[47] & 0x12, 0x12, "SYN and ACK set");

        // Other traffic still goes to the backend.
        let mut other = arp_request();
        other[38..42].copy_from_slice(&[10, 0, 0, 1]);
        h.add_tx_frame(&other);
        h.kick(TX_QUEUE);
        assert_eq!(h.st.lock().unwrap().sent.len(), 1);

        let m = h.metrics();
        assert_eq!(m["mmds_frames_intercepted"], 2);
        assert_eq!(m["mmds_frames_injected"], 2);
        assert_eq!(m["tx_packets"], 1, "intercepted frames are not sent");
        assert_eq!(m["mmds"]["frames_in"], 2);
        assert!(m["mmds_copied_bytes"].as_u64().unwrap() >= 2 * 54, "{m}");
    }
}

#[test]
fn mmds_keeps_a_reserve_when_the_backend_takes_all_and_waits_for_more() {
    use super::mmds::MMDS_RX_RESERVE;
    // The direct backend (as the shim) takes every buffer it is offered.
    let mut h = mmds_harness(true);
    let bufs: Vec<(u16, u64)> = (0..MMDS_RX_RESERVE + 12).map(|_| h.add_rx_buf(1526)).collect();
    h.kick(RX_QUEUE);
    assert_eq!(h.st.lock().unwrap().posted.len(), 12, "the device kept its reserve");
    h.add_tx_frame(&arp_request());
    h.kick(TX_QUEUE);
    let used = h.new_used(RX_QUEUE);
    assert_eq!(used.len(), 1);
    assert_eq!(used[0].0, u32::from(bufs[0].0), "the answer is in the first reserve buffer");
    assert_eq!(&rx_frame(&h, bufs[0].1, used[0].1)[20..22], &[0, 2]);
    // More answers than a Linux guest takes before it refills (32) all go
    // out; past the reserve they wait for the guest's next buffers.
    for _ in 0..MMDS_RX_RESERVE + 1 {
        h.add_tx_frame(&arp_request());
    }
    h.kick(TX_QUEUE);
    assert_eq!(h.new_used(RX_QUEUE).len(), MMDS_RX_RESERVE - 1);
    let next: Vec<u32> = (0..2).map(|_| u32::from(h.add_rx_buf(1526).0)).collect();
    h.kick(RX_QUEUE);
    assert_eq!(h.new_used(RX_QUEUE).iter().map(|u| u.0).collect::<Vec<_>>(), next);
    assert_eq!(h.st.lock().unwrap().posted.len(), 12, "the backend was never given MMDS's buffers");
    assert_eq!(h.metrics()["mmds_frames_injected"], MMDS_RX_RESERVE as u64 + 2);
}
