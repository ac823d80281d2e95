//! The virtio-net device's split rings and chain walk (net/ring.rs) as the
//! device lends them to a backend (net/direct.rs), end to end: guest RAM and
//! the rings are the fuzzer's, so is every backend action (pop, complete
//! with any length, complete_frame, refuse, completions of heads never
//! popped) and every guest write between passes.
//!
//! Asserts: no panic; every buffer or frame the device hands out is inside
//! guest RAM and as long as it says (the backend writes every byte of each
//! RX buffer through the host address the device gave, so a wrong one hits a
//! guard page); no head is lent twice at once; every used element names a
//! head inside the queue.
#![no_main]

use std::os::unix::io::RawFd;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::fuzz_target;
use shimvmm_fuzz::{guest_memory, in_ram, ring_layout, split_script, used_elems, used_idx, Reader};
use virtio_devices::net::config::{F_EVENT_IDX, F_MRG_RXBUF, F_VERSION_1};
use virtio_devices::net::{DropReason, NetBackend, RxNext, RxPass, RxQueue, TxQueue};
use virtio_devices::{ActivateContext, GuestMemory, Interrupt, VirtioDevice};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

/// One backend action of a pass.
#[derive(Clone, Copy, Debug)]
enum Op {
    Pop(u8),
    PopIf(bool),
    Complete(u8, u32),
    CompletePart(u8, u32),
    CompleteFrame(u8, u32),
    Refuse(u8),
    Bogus(u16, u32),
    TxPop(u8),
    TxComplete(u8),
    TxDrop(u8),
    TxBogus(u16),
}

#[derive(Default)]
struct State {
    mem: Option<GuestMemory>,
    rx_ops: Vec<Op>,
    tx_ops: Vec<Op>,
    /// Heads the backend holds: (head, host-writable length).
    rx_held: Vec<(u16, u32)>,
    tx_held: Vec<u16>,
    rx_size: u16,
    tx_size: u16,
    /// The rings lie below this guest address: the backend's writes into
    /// buffers stay above it, so what the harness reads back from the used
    /// rings is what the device wrote.
    rings_end: u64,
    /// A lent RX buffer overlapped the rings: the device's own header write
    /// (`complete_frame`) may then land in a used ring, as the guest asked,
    /// and the used-ring check is off for the input.
    overlap: bool,
}

/// The backend's "DMA" into an RX buffer the device lent as an RxDesc:
/// every byte through the host address the device gave (a wrong address or
/// length hits a guard page), except where the buffer overlaps the rings
/// (there only its last byte when that is above them).
fn fill(gpa: u64, len: u32, host: *mut u8, rings_end: u64) {
    let skip = rings_end.saturating_sub(gpa).min(u64::from(len)) as usize;
    // SAFETY: the device vouches for `len` bytes at `host`; a wrong claim
    // hits a guard page (which is what this checks).
    unsafe { std::ptr::write_bytes(host.add(skip), 0xa5, len as usize - skip) };
}

struct FuzzBackend(Arc<Mutex<State>>);

fn check_segs(mem: &GuestMemory, segs: &[(GuestAddress, u32)], len: u32) {
    let mut total = 0u64;
    for &(a, l) in segs {
        assert!(l > 0, "empty segment lent");
        assert!(in_ram(a.0, u64::from(l)), "segment {:#x}+{l} outside guest RAM", a.0);
        total += u64::from(l);
    }
    assert_eq!(total, u64::from(len), "chain length is not the sum of its segments");
    let _ = mem;
}

impl NetBackend for FuzzBackend {
    fn features(&self) -> u64 {
        0
    }
    fn set_features(&mut self, _acked: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn event_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    fn process_event(&mut self, _mem: &GuestMemory, _index: usize) {}
    fn discard_pending(&mut self, _index: usize) {}

    fn rx(&mut self, q: &mut RxQueue<'_>) -> RxPass {
        let mut st = self.0.lock().unwrap();
        let st = &mut *st;
        let mem = st.mem.clone().expect("activated");
        let mut posted = 0;
        for op in std::mem::take(&mut st.rx_ops) {
            match op {
                Op::Pop(n) => {
                    for _ in 0..n {
                        let Some(next) = q.pop() else { break };
                        let (head, len, start) = match next {
                            RxNext::One(d) => {
                                assert!(d.len() as usize >= virtio_devices::net::VNET_HDR_LEN);
                                assert!(in_ram(d.gpa(), u64::from(d.len())), "RxDesc outside guest RAM");
                                let host = mem.get_host_address(GuestAddress(d.gpa())).expect("gpa in RAM");
                                assert_eq!(host, d.host().as_ptr(), "RxDesc host address is not its GPA's");
                                fill(d.gpa(), d.len(), d.host().as_ptr(), st.rings_end);
                                (d.head(), d.len(), d.gpa())
                            }
                            RxNext::Chain(c) => {
                                check_segs(&mem, c.segs, c.len);
                                for &(a, l) in c.segs {
                                    if a.0 >= st.rings_end {
                                        mem.write_slice(&vec![0x5a; l as usize], a).expect("lent segment writable");
                                    }
                                }
                                (c.head, c.len, c.segs.iter().map(|sg| sg.0 .0).min().unwrap_or(0))
                            }
                        };
                        assert!(head < st.rx_size, "RX head {head} beyond the queue");
                        st.overlap |= start < st.rings_end;
                        assert!(!st.rx_held.iter().any(|h| h.0 == head), "RX head {head} lent twice");
                        st.rx_held.push((head, len));
                        posted += 1;
                    }
                }
                Op::PopIf(accept) => {
                    if let Some(d) = q.pop_if(|_| accept) {
                        assert!(accept);
                        assert!(in_ram(d.gpa(), u64::from(d.len())));
                        fill(d.gpa(), d.len(), d.host().as_ptr(), st.rings_end);
                        assert!(!st.rx_held.iter().any(|h| h.0 == d.head()), "RX head lent twice");
                        st.overlap |= d.gpa() < st.rings_end;
                        st.rx_held.push((d.head(), d.len()));
                        posted += 1;
                    }
                }
                Op::Complete(i, _) | Op::CompletePart(i, _) | Op::CompleteFrame(i, _) | Op::Refuse(i) => {
                    if st.rx_held.is_empty() {
                        continue;
                    }
                    let (head, _) = st.rx_held.remove(usize::from(i) % st.rx_held.len());
                    match op {
                        Op::Complete(_, len) => q.complete(head, len),
                        Op::CompletePart(_, len) => q.complete_part(head, len, len & 1 == 0),
                        Op::CompleteFrame(_, len) => q.complete_frame(head, len),
                        _ => q.refuse(head, DropReason::BadAddress),
                    }
                }
                Op::Bogus(head, len) => {
                    // A head the backend does not hold (or holds: then the
                    // book must still agree).
                    st.rx_held.retain(|h| h.0 != head);
                    q.complete(head, len);
                }
                _ => {}
            }
        }
        RxPass { posted, full: false }
    }

    fn rx_stalled(&self) -> bool {
        false
    }

    fn tx(&mut self, q: &mut TxQueue<'_>) {
        let mut st = self.0.lock().unwrap();
        let st = &mut *st;
        let mem = st.mem.clone().expect("activated");
        for op in std::mem::take(&mut st.tx_ops) {
            match op {
                Op::TxPop(n) => {
                    for _ in 0..n {
                        let Some(c) = q.pop() else { break };
                        check_segs(&mem, c.segs, c.len);
                        for &(a, l) in c.segs {
                            let mut buf = vec![0u8; l as usize];
                            mem.read_slice(&mut buf, a).expect("lent frame readable");
                        }
                        assert!(c.head < st.tx_size, "TX head beyond the queue");
                        assert!(!st.tx_held.contains(&c.head), "TX head {} lent twice", c.head);
                        st.tx_held.push(c.head);
                    }
                }
                Op::TxComplete(i) | Op::TxDrop(i) => {
                    if st.tx_held.is_empty() {
                        continue;
                    }
                    let head = st.tx_held.remove(usize::from(i) % st.tx_held.len());
                    match op {
                        Op::TxComplete(_) => q.complete(head),
                        _ => q.drop_frame(head, DropReason::BadAddress),
                    }
                }
                Op::TxBogus(head) => {
                    st.tx_held.retain(|h| *h != head);
                    q.complete(head);
                }
                _ => {}
            }
        }
    }

    fn quiesce(&mut self) {
        let mut st = self.0.lock().unwrap();
        st.rx_held.clear();
        st.tx_held.clear();
    }
    fn link_up(&self) -> bool {
        true
    }
    fn metrics(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

/// A queue as a driver would set it up (`addrs`: desc, avail, used).
fn queue(size: u16, addrs: (u64, u64, u64), event_idx: bool) -> Queue {
    let mut q = Queue::new(256).expect("queue");
    q.set_size(size);
    q.set_desc_table_address(Some(addrs.0 as u32), Some((addrs.0 >> 32) as u32));
    q.set_avail_ring_address(Some(addrs.1 as u32), Some((addrs.1 >> 32) as u32));
    q.set_used_ring_address(Some(addrs.2 as u32), Some((addrs.2 >> 32) as u32));
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q
}

fn parse_op(r: &mut Reader) -> Option<Op> {
    Some(match r.u8() % 11 {
        0 => Op::Pop(r.u8() % 16),
        1 => Op::PopIf(r.u8() & 1 == 0),
        2 => Op::Complete(r.u8(), r.u32()),
        3 => Op::CompletePart(r.u8(), r.u32()),
        4 => Op::CompleteFrame(r.u8(), r.u32()),
        5 => Op::Refuse(r.u8()),
        6 => Op::Bogus(r.u16(), r.u32()),
        7 => Op::TxPop(r.u8() % 16),
        8 => Op::TxComplete(r.u8()),
        9 => Op::TxDrop(r.u8()),
        _ => Op::TxBogus(r.u16()),
    })
}

fuzz_target!(|data: &[u8]| {
    let (script, image) = split_script(data);
    let mut r = Reader::new(script);
    let cfg = r.u8();
    let rx_size = 1u16 << (cfg % 9);
    let tx_size = 1u16 << ((cfg >> 4) % 9);
    let feats = r.u8();
    let event_idx = feats & 1 != 0;
    let mut acked = F_VERSION_1;
    if event_idx {
        acked |= F_EVENT_IDX;
    }
    if feats & 2 != 0 {
        acked |= F_MRG_RXBUF;
    }
    // Bit 2: the driver places the rings itself (any address).
    let fixed = feats & 4 == 0;
    let (rxa, txa) = if fixed {
        let l = ring_layout(&[rx_size, tx_size]);
        (l[0], l[1])
    } else {
        ((r.u64(), r.u64(), r.u64()), (r.u64(), r.u64(), r.u64()))
    };
    let rings_end = if fixed { ring_layout(&[rx_size, tx_size, 1])[2].0 } else { 0 };

    let mem = guest_memory(image);
    if fixed {
        // The driver hands over zeroed used rings (Linux allocates them
        // zeroed): what the harness reads there later is the device's.
        for (used, n) in [(rxa.2, rx_size), (txa.2, tx_size)] {
            let _ = mem.write_slice(&vec![0u8; 6 + 8 * usize::from(n)], GuestAddress(used));
        }
    }
    let st = Arc::new(Mutex::new(State { mem: Some(mem.clone()), rx_size, tx_size, rings_end, ..State::default() }));
    let mut net =
        virtio_devices::net::Net::new(Box::new(FuzzBackend(st.clone())), Some([2, 0, 0, 0, 0, 1]), "fuzz".into());
    net.set_acked_features(acked);
    let irq = EventFd::new(EFD_NONBLOCK).expect("eventfd");
    let ctx = ActivateContext {
        mem: mem.clone(),
        queues: vec![queue(rx_size, rxa, event_idx), queue(tx_size, txa, event_idx)],
        interrupt: Arc::new(Interrupt::new(irq)),
    };
    if net.activate(ctx).is_err() {
        return;
    }
    let (mut rx_seen, mut tx_seen) = (0u16, 0u16);
    // Passes: backend actions for RX and TX, then guest writes.
    for _ in 0..32 {
        if r.is_empty() {
            break;
        }
        let n = r.u8() % 8;
        let mut rx_ops = Vec::new();
        let mut tx_ops = Vec::new();
        for _ in 0..n {
            match parse_op(&mut r) {
                Some(op @ (Op::TxPop(_) | Op::TxComplete(_) | Op::TxDrop(_) | Op::TxBogus(_))) => tx_ops.push(op),
                Some(op) => rx_ops.push(op),
                None => {}
            }
        }
        {
            let mut s = st.lock().unwrap();
            s.rx_ops = rx_ops;
            s.tx_ops = tx_ops;
        }
        net.service_for_test();
        // Every used element published names a head inside its queue (with
        // rings the driver placed anywhere they may overlap: not checked).
        for (used, size, seen) in [(rxa.2, rx_size, &mut rx_seen), (txa.2, tx_size, &mut tx_seen)] {
            let idx = used_idx(&mem, used);
            let overlap = st.lock().unwrap().overlap;
            if fixed && !overlap && idx.wrapping_sub(*seen) <= size {
                for (id, _len) in used_elems(&mem, used, size, *seen, idx) {
                    assert!(id < u32::from(size), "used element names head {id} of a {size}-entry queue");
                }
            }
            *seen = idx;
        }
        // The guest moves on: a few 16-bit writes anywhere in the rings but
        // their used rings (the device's to write).
        for _ in 0..(r.u8() % 4) {
            let at = (u64::from(r.u16()) % 0x4000) & !1;
            let v = r.u16();
            let in_used = |u: u64, n: u16| at >= u && at < u + 4 + 8 * u64::from(n);
            if !in_used(rxa.2, rx_size) && !in_used(txa.2, tx_size) {
                let _ = mem.write_obj(v, GuestAddress(at));
            }
        }
    }
    net.reset();
});
