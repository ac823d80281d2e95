//! The RX offloads through the real virtio-net device over the 82576 model
//! and the product's igb driver: GUEST_CSUM (DATA_VALID for frames the NIC
//! validated), the MTU's frame cap, and jumbo frames delivered over several
//! guest buffers (MRG_RXBUF `num_buffers`), the NIC never writing outside a
//! buffer it was given.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use virtio_devices::net::config::{F_GUEST_CSUM, F_MRG_RXBUF, F_VERSION_1};
use virtio_devices::net::device::RX_QUEUE;
use virtio_devices::net::Net;
use virtio_devices::{ActivateContext, Interrupt, VirtioDevice};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::device_tests::{GuestQueue, F_WRITE, MAC, RAM, RXQ, TXQ};
use super::*;
use crate::e1000_common::NicConfig;
use crate::igb::Igb;
use crate::model::igb_hw::{igb_hw_model, HwRx, IgbHw, L4Csum};

/// What fills guest memory outside the buffers: must never change.
const GUARD: u8 = 0xa5;

struct Vm {
    mem: GuestMemoryMmap,
    hw: IgbHw,
    net: Arc<Mutex<Net>>,
    em: EventManager<Arc<Mutex<Net>>>,
    rx: GuestQueue,
}

impl Vm {
    /// A guest with the shim over the 82576 model at `mtu`, the driver
    /// acking `features` (besides VERSION_1 and MRG_RXBUF).
    fn new(mtu: u16, features: u64) -> Vm {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        mem.write_slice(&vec![GUARD; (RAM - 0x10_0000) as usize], GuestAddress(0x10_0000)).unwrap();
        let (regs, hw, mapper, irqs) = igb_hw_model(&mem, 1).unwrap();
        let mut cfg = NicConfig::new(MAC);
        cfg.link_timeout = std::time::Duration::from_millis(100);
        cfg.mtu = mtu;
        let mut igb = Igb::new(regs, mapper, crate::dma::IovaAllocator::above(&mem), cfg, irqs.len()).unwrap();
        igb.set_model_irqs(irqs);
        let shim = ShimBackend::new(igb, &mem, MAC).unwrap();
        let mut net = Net::new(Box::new(shim), Some(MAC), "shim0".into());
        net.set_mtu(mtu);
        let net = Arc::new(Mutex::new(net));
        let mut em = EventManager::<Arc<Mutex<Net>>>::new().unwrap();
        em.add_subscriber(net.clone());
        let rx = GuestQueue { base: RXQ, next_desc: 0, avail_idx: 0, used_seen: 0 };
        let tx = GuestQueue { base: TXQ, next_desc: 0, avail_idx: 0, used_seen: 0 };
        {
            let mut n = net.lock().unwrap();
            n.set_acked_features(F_VERSION_1 | F_MRG_RXBUF | features);
            let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
            let ctx = ActivateContext { mem: mem.clone(), queues: vec![rx.queue(), tx.queue()], interrupt: irq };
            n.activate(ctx).unwrap();
        }
        let mut vm = Vm { mem, hw, net, em, rx };
        vm.run();
        vm
    }

    fn run(&mut self) {
        for _ in 0..100 {
            if self.em.run_with_timeout(0).unwrap() == 0 {
                return;
            }
        }
        panic!("event loop did not settle");
    }

    fn kick_rx(&mut self) {
        self.net.lock().unwrap().queue_events()[RX_QUEUE].write(1).unwrap();
        self.run();
    }

    /// Offer `n` one-descriptor buffers of `len` bytes, 8 KiB apart (guard
    /// bytes between them), and let the shim post them.
    fn offer(&mut self, n: u64, len: u32) -> Vec<(u16, u64)> {
        let bufs: Vec<(u16, u64)> = (0..n)
            .map(|i| {
                let a = 0x10_0000 + 0x2000 * i;
                (self.rx.offer(&self.mem, &[(a, len, F_WRITE)]), a)
            })
            .collect();
        self.kick_rx();
        bufs
    }

    fn read(&self, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
        v
    }

    fn metrics(&self) -> serde_json::Value {
        self.net.lock().unwrap().metrics().unwrap()
    }

    /// Every byte outside `[a, a + len)` of the offered buffers (same
    /// spacing as `offer`) still holds the guard.
    fn assert_guards(&self, n: u64, len: u32) {
        for i in 0..n {
            let end = 0x10_0000 + 0x2000 * i + u64::from(len);
            let gap = self.read(end, (0x2000 - u64::from(len)) as usize);
            assert!(gap.iter().all(|b| *b == GUARD), "bytes after buffer {i} changed");
        }
    }
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    f[..6].copy_from_slice(&MAC);
    f
}

#[test]
fn guest_csum_sets_data_valid_only_for_frames_the_nic_validated() {
    let mut vm = Vm::new(1500, F_GUEST_CSUM);
    let bufs = vm.offer(3, 1536);
    for (csum, seed) in [(L4Csum::Good, 1), (L4Csum::Bad, 2), (L4Csum::None, 3)] {
        assert!(matches!(vm.hw.inject_rx_csum(&frame(200, seed), csum), HwRx::Delivered { .. }));
    }
    vm.run();
    let used = vm.rx.take_used(&vm.mem);
    assert_eq!(used.len(), 3, "a bad checksum is the guest's to see, not a dropped frame: {used:?}");
    let flags: Vec<u8> = bufs.iter().map(|(_, a)| vm.read(*a, 1)[0]).collect();
    assert_eq!(flags, vec![2, 0, 0], "DATA_VALID for the validated frame only");
    for (_, a) in &bufs {
        assert_eq!(vm.read(a + 10, 2), vec![1, 0], "num_buffers 1");
    }
    let m = vm.metrics();
    assert_eq!(m["backend"]["rx_csum_valid"], 1);
    assert_eq!(m["backend"]["rx_nic_errors"], 0);
    assert_eq!(m["vmm_copied_bytes"], 0);
}

#[test]
fn without_guest_csum_no_frame_gets_data_valid() {
    let mut vm = Vm::new(1500, 0);
    let bufs = vm.offer(1, 1536);
    vm.hw.inject_rx_csum(&frame(200, 1), L4Csum::Good);
    vm.run();
    assert_eq!(vm.rx.take_used(&vm.mem).len(), 1);
    assert_eq!(vm.read(bufs[0].1, 1)[0], 0);
    assert_eq!(vm.metrics()["backend"]["rx_csum_valid"], 0);
}

#[test]
fn a_frame_one_byte_over_the_mtu_is_dropped_by_the_nic_and_nothing_changes() {
    for (mtu, len) in [(1500u16, 1536u32), (9000, 1536)] {
        let mut vm = Vm::new(mtu, 0);
        let n = 12;
        vm.offer(n, len);
        let over = usize::from(mtu) + 14 + 1;
        assert_eq!(vm.hw.inject_rx(&frame(over, 1)), HwRx::Oversized, "MTU {mtu}");
        assert_eq!(vm.hw.stats().rx_oversized, 1);
        vm.run();
        assert!(vm.rx.take_used(&vm.mem).is_empty());
        for i in 0..n {
            let a = 0x10_0000 + 0x2000 * i;
            assert!(vm.read(a, len as usize).iter().all(|b| *b == GUARD), "MTU {mtu}: buffer {i} written");
        }
        vm.assert_guards(n, len);
        // The largest frame the MTU allows still comes in.
        assert!(matches!(vm.hw.inject_rx(&frame(over - 1, 2)), HwRx::Delivered { .. }), "MTU {mtu}");
        vm.run();
        assert_eq!(vm.rx.take_used(&vm.mem).len(), if mtu > 1500 { over.div_ceil(1024) } else { 1 });
        vm.assert_guards(n, len);
    }
}

#[test]
fn a_jumbo_frame_spans_buffers_with_num_buffers_and_nothing_past_them_changes() {
    let mut vm = Vm::new(9000, F_GUEST_CSUM);
    let len = 1536;
    let bufs = vm.offer(20, len);
    assert_eq!(vm.hw.stats().rx_no_buffer, 0);
    let big = frame(9014, 7);
    let small = frame(60, 8);
    assert!(
        matches!(vm.hw.inject_rx_csum(&big, L4Csum::Good), HwRx::Delivered { buffer, .. } if buffer == bufs[0].1),
        "the NIC writes at GPA + 0"
    );
    assert!(matches!(vm.hw.inject_rx(&small), HwRx::Delivered { .. }));
    vm.run();
    let used = vm.rx.take_used(&vm.mem);
    let mut want: Vec<(u32, u32)> = vec![(u32::from(bufs[0].0), 12 + 1024)];
    want.extend((1..8).map(|i| (u32::from(bufs[i].0), 1024)));
    want.push((u32::from(bufs[8].0), 9014 - 8 * 1024));
    want.push((u32::from(bufs[9].0), 12 + 60));
    assert_eq!(used, want, "9 buffers in order, then the small frame in one");
    let hdr = vm.read(bufs[0].1, 12);
    assert_eq!(hdr, vec![2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0], "DATA_VALID, num_buffers 9");
    // The guest's view: header, then each buffer's used bytes in order.
    let mut got = vm.read(bufs[0].1 + 12, 1024);
    for (i, &(_, l)) in used[1..9].iter().enumerate() {
        got.extend(vm.read(bufs[i + 1].1, l as usize));
    }
    assert_eq!(got, big);
    assert_eq!(vm.read(bufs[9].1, 12), vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]);
    assert_eq!(vm.read(bufs[9].1 + 12, 60), small);
    vm.assert_guards(20, len);
    let m = vm.metrics();
    let b = &m["backend"];
    assert_eq!((b["rx_multi_buffer_frames"].as_u64(), b["rx_multi_buffer_buffers"].as_u64()), (Some(1), Some(9)));
    assert_eq!(b["rx_shifted_bytes"], 1024 + 60, "the first buffer of each frame, at most 1 KiB");
    assert_eq!(m["vmm_copied_bytes"], 1024 + 60);
    assert_eq!(b["rx_csum_valid"], 1);
    assert_eq!((m["rx_packets"].as_u64(), m["rx_bytes"].as_u64()), (Some(2), Some(9014 + 60)));
    assert_eq!(b["rx_zero_copy"], 2);
}

#[test]
fn a_jumbo_frame_reaped_over_two_passes_is_delivered_whole_and_once() {
    let mut vm = Vm::new(9000, 0);
    let len = 1536;
    let bufs = vm.offer(20, len);
    let big = frame(9014, 3);
    let hw = vm.hw.clone();
    let mut seen_between = None;
    // The shim reaps the first 4 parts while the NIC still writes the rest.
    let r = hw.inject_rx_paused(&big, 4, &mut || {
        vm.run();
        seen_between = Some(vm.rx.take_used(&vm.mem));
    });
    assert!(matches!(r, HwRx::Delivered { .. }));
    assert_eq!(seen_between, Some(vec![]), "no part of an unfinished frame reaches the guest");
    assert_eq!(vm.metrics()["backend"]["rx_parts_carried"], 1);
    vm.run();
    let used = vm.rx.take_used(&vm.mem);
    let heads: Vec<u32> = used.iter().map(|&(h, _)| h).collect();
    assert_eq!(heads, bufs[..9].iter().map(|&(h, _)| u32::from(h)).collect::<Vec<_>>(), "9 buffers, in order, once");
    assert_eq!(vm.read(bufs[0].1, 12), vec![0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0], "num_buffers 9");
    let mut got = vm.read(bufs[0].1 + 12, 1024);
    for (i, &(_, l)) in used[1..].iter().enumerate() {
        got.extend(vm.read(bufs[i + 1].1, l as usize));
    }
    assert_eq!(got, big);
    vm.assert_guards(20, len);
    let m = vm.metrics();
    assert_eq!(
        (m["backend"]["rx_multi_buffer_frames"].as_u64(), m["backend"]["rx_parts_carried"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(m["backend"]["nic_errors"], 0);
}

#[test]
fn a_buffer_at_gpa_0_is_never_a_null_address_to_the_nic() {
    let mut vm = Vm::new(9000, 0);
    // Jumbo buffers go to the NIC at GPA + 0: this one would be address 0,
    // which the NIC skips; it takes the copy path instead.
    vm.rx.offer(&vm.mem, &[(0, 1536, F_WRITE)]);
    vm.kick_rx();
    let small = frame(60, 5);
    match vm.hw.inject_rx(&small) {
        HwRx::Delivered { buffer, .. } => assert_ne!(buffer, 0, "GPA 0 was posted"),
        other => panic!("{other:?}"),
    }
    vm.run();
    assert_eq!(vm.rx.take_used(&vm.mem), vec![(0, 12 + 60)]);
    assert_eq!(vm.read(12, 60), small);
}

#[test]
fn jumbo_buffers_come_back_to_the_nic_and_frames_keep_flowing() {
    let mut vm = Vm::new(9000, 0);
    let len = 4096;
    let mut addr_of: std::collections::HashMap<u32, u64> =
        vm.offer(30, len).into_iter().map(|(h, a)| (u32::from(h), a)).collect();
    for round in 0..5u8 {
        let f = frame(8000 + usize::from(round) * 200, round);
        assert!(matches!(vm.hw.inject_rx(&f), HwRx::Delivered { .. }), "round {round}");
        vm.run();
        let used = vm.rx.take_used(&vm.mem);
        assert_eq!(used.len(), f.len().div_ceil(1024), "round {round}");
        // The guest posts the buffers again.
        for (head, l) in used {
            let a = addr_of.remove(&head).unwrap();
            assert!(l <= len);
            let h = vm.rx.offer(&vm.mem, &[(a, len, F_WRITE)]);
            addr_of.insert(u32::from(h), a);
        }
        vm.kick_rx();
    }
    vm.assert_guards(30, len);
    assert_eq!(vm.metrics()["backend"]["rx_multi_buffer_frames"], 5);
    assert_eq!(vm.hw.stats().rx_no_buffer, 0);
}

#[test]
fn a_bad_jumbo_frame_is_dropped_whole_and_its_buffers_go_back_to_the_nic() {
    let mut vm = Vm::new(9000, 0);
    let bufs = vm.offer(20, 1536);
    let bad = frame(9014, 1);
    assert!(matches!(vm.hw.inject_rx_bad_crc(&bad), HwRx::Delivered { .. }));
    vm.run();
    assert!(vm.rx.take_used(&vm.mem).is_empty(), "no part of a bad frame reaches the guest");
    let m = vm.metrics();
    assert_eq!(m["backend"]["rx_nic_errors"], 1, "one frame, counted once: {m}");
    assert_eq!(m["backend"]["rx_multi_buffer_frames"], 0);
    // Its 9 buffers went back to the NIC: 20 are posted again, and a good
    // frame fills them.
    let good = frame(9014, 2);
    for _ in 0..2 {
        assert!(matches!(vm.hw.inject_rx(&good), HwRx::Delivered { .. }));
    }
    vm.run();
    let used = vm.rx.take_used(&vm.mem);
    assert_eq!(used.len(), 18, "two frames of 9 buffers, from the recycled ones: {used:?}");
    assert_eq!(vm.hw.stats().rx_no_buffer, 0);
    vm.assert_guards(20, 1536);
    let first = bufs.iter().find(|(h, _)| u32::from(*h) == used[0].0).unwrap().1;
    assert_eq!(vm.read(first + 10, 2), vec![9, 0], "num_buffers 9");
}
