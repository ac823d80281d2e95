//! The shim under the real virtio-net device, as the VMM runs it: the device
//! lends its RX queue to the shim (direct RX), the NIC model DMAs into the
//! guest buffers, and a simulated guest driver reads the used ring. What the
//! shim's own tests check through `post_rx`/`reap_rx`, checked here through
//! the path the datapath actually takes.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use virtio_devices::net::config::{F_MRG_RXBUF, F_VERSION_1};
use virtio_devices::net::device::RX_QUEUE;
use virtio_devices::net::Net;
use virtio_devices::{ActivateContext, Interrupt, VirtioDevice};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::rx::LENT_COOKIE;
use super::*;
use crate::model::{InjectOutcome, ModelConfig, ModelHandle, NicModel};

pub(super) const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0x02];
pub(super) const RAM: u64 = 0x40_0000;
pub(super) const QSIZE: u16 = 64;
/// Queue rings, per queue: descriptor table, avail ring, used ring.
pub(super) const RXQ: u64 = 0x1000;
pub(super) const TXQ: u64 = 0x3000;
pub(super) const F_WRITE: u16 = 2;
const F_NEXT: u16 = 1;

/// The driver side of one queue (table at `base`, avail after it, used after
/// that), with no notification suppression.
pub(super) struct GuestQueue {
    pub(super) base: u64,
    pub(super) next_desc: u16,
    pub(super) avail_idx: u16,
    pub(super) used_seen: u16,
}

impl GuestQueue {
    fn avail(&self) -> u64 {
        self.base + 16 * u64::from(QSIZE)
    }

    fn used(&self) -> u64 {
        (self.avail() + 6 + 2 * u64::from(QSIZE)).next_multiple_of(4)
    }

    pub(super) fn queue(&self) -> Queue {
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(self.base as u32), Some(0));
        q.set_avail_ring_address(Some(self.avail() as u32), Some(0));
        q.set_used_ring_address(Some(self.used() as u32), Some(0));
        q.set_ready(true);
        q
    }

    /// Publish a chain of (addr, len, flags) descriptors; returns its head.
    pub(super) fn offer(&mut self, mem: &GuestMemoryMmap, segs: &[(u64, u32, u16)]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in segs.iter().enumerate() {
            let slot = (head + i as u16) % QSIZE;
            let more = i + 1 < segs.len();
            let d = SplitDescriptor::new(addr, len, if more { flags | F_NEXT } else { flags }, (slot + 1) % QSIZE);
            mem.write_obj(RawDescriptor::from(d), GuestAddress(self.base + 16 * u64::from(slot))).unwrap();
        }
        self.next_desc = (head + segs.len() as u16) % QSIZE;
        let entry = self.avail() + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head, GuestAddress(entry)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.write_obj(self.avail_idx, GuestAddress(self.avail() + 2)).unwrap();
        head
    }

    /// Used entries since the last call: (head, len).
    pub(super) fn take_used(&mut self, mem: &GuestMemoryMmap) -> Vec<(u32, u32)> {
        let idx: u16 = mem.read_obj(GuestAddress(self.used() + 2)).unwrap();
        let mut out = Vec::new();
        while self.used_seen != idx {
            let e = self.used() + 4 + 8 * u64::from(self.used_seen % QSIZE);
            out.push((mem.read_obj(GuestAddress(e)).unwrap(), mem.read_obj(GuestAddress(e + 4)).unwrap()));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        out
    }
}

struct Vm {
    mem: GuestMemoryMmap,
    nic: ModelHandle,
    net: Arc<Mutex<Net>>,
    em: EventManager<Arc<Mutex<Net>>>,
    rx: GuestQueue,
    tx: GuestQueue,
}

impl Vm {
    fn new() -> Vm {
        Vm::with_dma(PnicDma::Ram)
    }

    /// The shim in DMA mode `dma` (strict: over `StrictDma`, the model's
    /// IOMMU starting with no guest RAM mapped).
    fn with_dma(dma: PnicDma) -> Vm {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let (model, nic) = NicModel::new(&mem, ModelConfig { dma, ..Default::default() }).unwrap();
        let backend: Box<dyn NetBackend> = match dma {
            PnicDma::Ram => Box::new(ShimBackend::new(model, &mem, MAC).unwrap()),
            PnicDma::Strict => {
                let driver = super::strict::StrictDma::new(model, nic.mapper(), &mem);
                Box::new(ShimBackend::new(driver, &mem, MAC).unwrap())
            }
        };
        let net = Arc::new(Mutex::new(Net::new(backend, Some(MAC), "shim0".into())));
        let mut em = EventManager::<Arc<Mutex<Net>>>::new().unwrap();
        em.add_subscriber(net.clone());
        let rx = GuestQueue { base: RXQ, next_desc: 0, avail_idx: 0, used_seen: 0 };
        let tx = GuestQueue { base: TXQ, next_desc: 0, avail_idx: 0, used_seen: 0 };
        {
            let mut n = net.lock().unwrap();
            n.set_acked_features(F_VERSION_1 | F_MRG_RXBUF);
            let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
            let ctx = ActivateContext { mem: mem.clone(), queues: vec![rx.queue(), tx.queue()], interrupt: irq };
            n.activate(ctx).unwrap();
        }
        let mut vm = Vm { mem, nic, net, em, rx, tx };
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

    fn metrics(&self) -> serde_json::Value {
        self.net.lock().unwrap().metrics().unwrap()
    }
}

fn frame(len: usize, seed: u8) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed)).collect();
    f[..6].copy_from_slice(&MAC);
    f
}

#[test]
fn frames_reach_guest_buffers_zero_copy_through_the_device() {
    let mut vm = Vm::new();
    let bufs: Vec<u64> = (0..8u64).map(|i| 0x10_0000 + 0x1000 * i).collect();
    let heads: Vec<u16> = bufs.iter().map(|&a| vm.rx.offer(&vm.mem, &[(a, 2048, F_WRITE)])).collect();
    vm.kick_rx();
    let posted = vm.nic.posted_rx();
    assert_eq!(posted.iter().map(|p| p.iova).collect::<Vec<_>>(), bufs.iter().map(|a| a + 12).collect::<Vec<_>>());
    assert_eq!(vm.nic.rx_flush_count(), 1, "one tail write for the refill");
    let frames: Vec<Vec<u8>> = (0..8).map(|i| frame(60 + 200 * i, i as u8)).collect();
    for f in &frames {
        vm.nic.inject_rx(f);
    }
    vm.run();
    let used = vm.rx.take_used(&vm.mem);
    let want: Vec<(u32, u32)> = heads.iter().zip(&frames).map(|(h, f)| (u32::from(*h), 12 + f.len() as u32)).collect();
    assert_eq!(used, want);
    for (a, f) in bufs.iter().zip(&frames) {
        let mut got = vec![0u8; 12 + f.len()];
        vm.mem.read_slice(&mut got, GuestAddress(*a)).unwrap();
        assert_eq!(got[..12], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0], "header: num_buffers 1");
        assert_eq!(&got[12..], &f[..]);
    }
    let m = vm.metrics();
    assert_eq!(m["rx_packets"], 8);
    assert_eq!(m["rx_bytes"].as_u64().unwrap(), frames.iter().map(|f| f.len() as u64).sum::<u64>());
    assert_eq!(m["backend"]["rx_zero_copy"], 8);
    assert_eq!(m["vmm_copied_bytes"], 0);
    assert!(m["rx_passes"].as_u64().unwrap() >= 2, "the shim runs RX on the lent queue: {m}");
    // The used buffers come back: the device posts them again.
    for &a in &bufs {
        vm.rx.offer(&vm.mem, &[(a, 2048, F_WRITE)]);
    }
    vm.kick_rx();
    assert_eq!(vm.nic.posted_rx().len(), 16);
}

#[test]
fn chained_and_small_buffers_take_the_copy_fallback_through_the_device() {
    let mut vm = Vm::new();
    let a = 0x20_0000;
    let chained = vm.rx.offer(&vm.mem, &[(a, 12, F_WRITE), (a + 0x100, 1600, F_WRITE)]);
    let small = vm.rx.offer(&vm.mem, &[(0x21_0000, 1000, F_WRITE)]);
    vm.kick_rx();
    let f1 = frame(1000, 1);
    let f2 = frame(200, 2);
    vm.nic.inject_rx(&f1);
    vm.nic.inject_rx(&f2);
    vm.run();
    assert_eq!(vm.rx.take_used(&vm.mem), vec![(u32::from(chained), 1012), (u32::from(small), 212)]);
    let mut got = vec![0u8; 1000];
    vm.mem.read_slice(&mut got, GuestAddress(a + 0x100)).unwrap();
    assert_eq!(got, f1, "the frame follows the header into the second descriptor");
    let m = vm.metrics();
    assert_eq!(m["backend"]["rx_copy_fallback"]["frames"], 2);
    assert_eq!(m["vmm_copied_bytes"], 1000 + 200, "the device reports the bounced bytes");
    assert_eq!(m["backend"]["rx_zero_copy"], 0);
    assert_eq!(m["rx_packets"], 2);
}

#[test]
fn a_nic_that_vanishes_gets_no_more_buffers_and_the_guest_gets_them_back_empty() {
    let mut vm = Vm::new();
    let first = vm.rx.offer(&vm.mem, &[(0x10_0000, 2048, F_WRITE)]);
    vm.kick_rx();
    assert_eq!(vm.nic.posted_rx().len(), 1);
    vm.nic.remove();
    let later: Vec<u16> = (1..4u64).map(|i| vm.rx.offer(&vm.mem, &[(0x10_0000 + 0x1000 * i, 2048, F_WRITE)])).collect();
    vm.kick_rx();
    vm.run();
    assert_eq!(vm.nic.posted_rx().len(), 1, "nothing reached the vanished NIC");
    let mut used = vm.rx.take_used(&vm.mem);
    used.sort();
    let mut all: Vec<(u32, u32)> = std::iter::once(first).chain(later).map(|h| (u32::from(h), 0)).collect();
    all.sort();
    assert_eq!(used, all, "every buffer back empty, once");
    assert!(!vm.net.lock().unwrap().link_up());
}

#[test]
fn buffers_outside_ram_never_reach_the_nic() {
    let mut vm = Vm::new();
    let bad = vm.rx.offer(&vm.mem, &[(RAM - 100, 2048, F_WRITE)]);
    let good = vm.rx.offer(&vm.mem, &[(0x10_0000, 2048, F_WRITE)]);
    vm.kick_rx();
    assert_eq!(vm.nic.posted_rx().iter().map(|p| p.iova).collect::<Vec<_>>(), vec![0x10_000c]);
    assert_eq!(vm.rx.take_used(&vm.mem), vec![(u32::from(bad), 0)]);
    assert_eq!(vm.metrics()["rx_drops"]["bad_address"], 1);
    vm.nic.inject_rx(&frame(100, 3));
    vm.run();
    assert_eq!(vm.rx.take_used(&vm.mem), vec![(u32::from(good), 112)]);
    assert!(vm.nic.faults().is_empty());
}

#[test]
fn a_frame_the_nic_flags_bad_never_reaches_the_guest_and_its_buffer_goes_back_to_the_nic() {
    let mut vm = Vm::new();
    let head = vm.rx.offer(&vm.mem, &[(0x10_0000, 2048, F_WRITE)]);
    vm.kick_rx();
    assert!(matches!(vm.nic.inject_rx_corrupt(&frame(100, 1)), InjectOutcome::Delivered { .. }));
    vm.run();
    assert!(vm.rx.take_used(&vm.mem).is_empty(), "the guest sees nothing");
    let iovas: Vec<u64> = vm.nic.posted_rx().iter().map(|p| p.iova).collect();
    assert_eq!(iovas, vec![0x10_000c, 0x10_000c], "the same buffer, posted again");
    let f = frame(200, 2);
    assert!(matches!(vm.nic.inject_rx(&f), InjectOutcome::Delivered { .. }));
    vm.run();
    assert_eq!(vm.rx.take_used(&vm.mem), vec![(u32::from(head), 212)]);
    let mut got = vec![0u8; 200];
    vm.mem.read_slice(&mut got, GuestAddress(0x10_000c)).unwrap();
    assert_eq!(got, f);
    let m = vm.metrics();
    assert_eq!((m["backend"]["rx_nic_errors"].as_u64(), m["rx_packets"].as_u64()), (Some(1), Some(1)), "{m:#}");
}

#[test]
fn completions_for_lent_buffers_the_nic_does_not_hold_are_counted_and_ignored() {
    let mut vm = Vm::new();
    let head = vm.rx.offer(&vm.mem, &[(0x10_0000, 2048, F_WRITE)]);
    vm.kick_rx();
    let good = |cookie| RxCompletion { cookie, len: 100, eop: true, error: false, csum_ok: false };
    // A head the guest never posted, a lent cookie with stray bits, and a
    // bad frame for a head that is not held.
    vm.nic.inject_rx_completion(good(LENT_COOKIE | 77));
    vm.nic.inject_rx_completion(good(LENT_COOKIE | 1 << 40 | u64::from(head)));
    vm.nic.inject_rx_completion(RxCompletion { error: true, ..good(LENT_COOKIE | 78) });
    vm.run();
    assert!(vm.rx.take_used(&vm.mem).is_empty());
    let m = vm.metrics();
    assert_eq!(m["backend_bogus_completions"], 1, "{m:#}");
    assert_eq!(m["backend"]["nic_errors"], 2, "{m:#}");
    // The real buffer still works.
    assert!(matches!(vm.nic.inject_rx(&frame(60, 3)), InjectOutcome::Delivered { .. }));
    vm.run();
    assert_eq!(vm.rx.take_used(&vm.mem), vec![(u32::from(head), 72)]);
}

#[test]
fn buffers_the_nic_holds_are_counted_and_forgotten_at_a_device_reset() {
    let mut vm = Vm::new();
    for i in 0..3u64 {
        vm.rx.offer(&vm.mem, &[(0x10_0000 + 0x1000 * i, 2048, F_WRITE)]);
    }
    vm.kick_rx();
    assert_eq!(vm.nic.rx_buffers_held(), 3);
    vm.net.lock().unwrap().reset();
    let m = vm.metrics();
    assert_eq!(m["backend"]["quiesce_forgotten_buffers"], 3, "{m:#}");
    assert_eq!(vm.nic.rx_buffers_held(), 0);
}

#[test]
fn an_oversize_completion_for_a_lent_buffer_fails_the_nic_and_no_frame_reaches_the_guest() {
    let mut vm = Vm::new();
    let heads: Vec<u16> = (0..3u64).map(|i| vm.rx.offer(&vm.mem, &[(0x10_0000 + 0x1000 * i, 2048, F_WRITE)])).collect();
    vm.kick_rx();
    assert_eq!(vm.nic.rx_buffers_held(), 3);
    // The NIC claims it wrote 4000 bytes into a buffer it may fill with 1522.
    let c =
        RxCompletion { cookie: LENT_COOKIE | u64::from(heads[0]), len: 4000, eop: true, error: false, csum_ok: false };
    vm.nic.inject_rx_completion(c);
    vm.run();
    let used = vm.rx.take_used(&vm.mem);
    assert!(used.iter().all(|u| u.1 == 0), "no frame reaches the guest: {used:?}");
    let mut back: Vec<u16> = used.iter().map(|u| u.0 as u16).collect();
    back.sort_unstable();
    back.dedup();
    assert_eq!(back, heads, "the model stopped its DMA: every buffer goes back empty");
    let m = vm.metrics();
    assert_eq!(m["backend"]["nic_invariant_breaks"], 1, "{m:#}");
    assert_eq!(m["link_up"], false, "{m:#}");
    assert_eq!(vm.nic.quiesce_count(), 1);
    // A failed NIC takes no more buffers.
    vm.rx.offer(&vm.mem, &[(0x10_8000, 2048, F_WRITE)]);
    vm.kick_rx();
    assert_eq!(vm.nic.rx_buffers_held(), 0);
}

#[test]
fn strict_dma_maps_lent_buffers_only_while_the_nic_holds_them_through_the_device() {
    let mut vm = Vm::with_dma(PnicDma::Strict);
    let bufs: Vec<u64> = (0..4u64).map(|i| 0x10_0000 + 0x1000 * i).collect();
    let heads: Vec<u16> = bufs.iter().map(|&a| vm.rx.offer(&vm.mem, &[(a, 2048, F_WRITE)])).collect();
    // A page the guest never gave the NIC.
    assert!(!vm.nic.iommu().page_mapped(0x10_4000));
    vm.kick_rx();
    assert!(bufs.iter().all(|&a| vm.nic.iommu().page_mapped(a)), "lent (zero-copy run): mapped");
    assert!(!vm.nic.iommu().write(0x10_4000, &[1]), "elsewhere: a fault");
    let f = frame(300, 4);
    for _ in 0..2 {
        assert!(matches!(vm.nic.inject_rx(&f), InjectOutcome::Delivered { .. }));
    }
    vm.run();
    let used = vm.rx.take_used(&vm.mem);
    assert_eq!(used, vec![(u32::from(heads[0]), 312), (u32::from(heads[1]), 312)]);
    assert!(!vm.nic.iommu().page_mapped(bufs[0]) && !vm.nic.iommu().page_mapped(bufs[1]), "back: unmapped");
    assert!(vm.nic.iommu().page_mapped(bufs[2]) && vm.nic.iommu().page_mapped(bufs[3]), "still lent");
    assert!(!vm.nic.iommu().write(bufs[0] + 12, &[0xee]), "the NIC cannot write a returned buffer");
    let m = vm.metrics();
    assert_eq!(m["backend"]["strict_dma"]["page_maps"], 4, "{m:#}");
    assert_eq!(m["backend"]["strict_dma"]["page_unmaps"], 2, "{m:#}");
    assert_eq!(m["backend"]["rx_zero_copy"], 2, "{m:#}");
    // A device reset forgets the rest, and they leave the IOMMU.
    vm.net.lock().unwrap().reset();
    assert_eq!(vm.nic.iommu().pages(), 0);
    assert!(vm.nic.faults().is_empty());
}

/// A bandwidth bucket of `bytes_per_100ms` (no ops bucket).
fn bandwidth(bytes_per_100ms: u64) -> vmm_config::RateLimiter {
    let tb = vmm_config::TokenBucket { size: bytes_per_100ms, one_time_burst: None, refill_time: 100 };
    vmm_config::RateLimiter { bandwidth: Some(tb), ops: None }
}

/// Frame bytes per second moved by `step` (which returns the frame bytes it
/// moved) between 0.5 s and 2.5 s of running it: after the bucket's initial
/// burst, as a steady sender would see it.
fn steady_rate(vm: &mut Vm, mut step: impl FnMut(&mut Vm) -> u64) -> f64 {
    let t0 = std::time::Instant::now();
    let (mut from, mut bytes) = (None, 0u64);
    while t0.elapsed() < std::time::Duration::from_millis(2500) {
        let moved = step(vm);
        vm.em.run_with_timeout(2).unwrap();
        if t0.elapsed() >= std::time::Duration::from_millis(500) {
            from.get_or_insert_with(std::time::Instant::now);
            bytes += moved;
        }
    }
    bytes as f64 / from.map_or(1.0, |f| f.elapsed().as_secs_f64())
}

#[test]
fn an_rx_rate_limiter_holds_the_shim_to_its_rate() {
    let mut vm = Vm::new();
    // 100000 bytes per 100 ms: 1 MB/s (8 Mbit/s).
    vm.net.lock().unwrap().set_rate_limiters(Some(&bandwidth(100_000)), None);
    let mut addr_of = std::collections::HashMap::new();
    for i in 0..32u64 {
        let a = 0x10_0000 + 0x1000 * i;
        addr_of.insert(vm.rx.offer(&vm.mem, &[(a, 2048, F_WRITE)]), a);
    }
    vm.kick_rx();
    let f = frame(1500, 7);
    // The wire fills every buffer the NIC holds; the guest takes each frame
    // and gives its buffer back at once.
    let rate = steady_rate(&mut vm, |vm| {
        for _ in 0..vm.nic.rx_buffers_held() {
            vm.nic.inject_rx(&f);
        }
        vm.run();
        let used = vm.rx.take_used(&vm.mem);
        for &(head, _) in &used {
            let a = addr_of.remove(&(head as u16)).expect("a buffer we offered");
            addr_of.insert(vm.rx.offer(&vm.mem, &[(a, 2048, F_WRITE)]), a);
        }
        vm.kick_rx();
        used.iter().map(|&(_, len)| u64::from(len) - 12).sum()
    });
    let m = vm.metrics();
    eprintln!("shim RX under a 1 MB/s limiter: {:.0} B/s; {m}", rate);
    assert!((rate - 1e6).abs() <= 1e5, "RX rate {rate:.0} B/s is not within 10 % of 1 MB/s");
    assert!(m["rx_rate_limiter_throttled"].as_u64().unwrap() > 0, "{m}");
    assert!(m["rx_rate_limiter_events"].as_u64().unwrap() > 0, "{m}");
}

#[test]
fn a_tx_rate_limiter_holds_the_shim_to_its_rate() {
    let mut vm = Vm::new();
    vm.net.lock().unwrap().set_rate_limiters(None, Some(&bandwidth(100_000)));
    // virtio-net header, then a frame from the VM's MAC (the wire policy's rule).
    let mut f = vec![0u8; 12];
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x08, 0x00]);
    f.resize(12 + 1500, 0x5a);
    let mut addr_of = std::collections::HashMap::new();
    for i in 0..32u64 {
        let a = 0x20_0000 + 0x1000 * i;
        vm.mem.write_slice(&f, GuestAddress(a)).unwrap();
        addr_of.insert(vm.tx.offer(&vm.mem, &[(a, f.len() as u32, 0)]), a);
    }
    let rate = steady_rate(&mut vm, |vm| {
        vm.net.lock().unwrap().queue_events()[virtio_devices::net::device::TX_QUEUE].write(1).unwrap();
        vm.run();
        vm.nic.complete_tx();
        vm.run();
        let used = vm.tx.take_used(&vm.mem);
        for &(head, _) in &used {
            let a = addr_of.remove(&(head as u16)).expect("a frame we offered");
            addr_of.insert(vm.tx.offer(&vm.mem, &[(a, f.len() as u32, 0)]), a);
        }
        used.len() as u64 * 1500
    });
    let m = vm.metrics();
    eprintln!("shim TX under a 1 MB/s limiter: {:.0} B/s; {m}", rate);
    assert!((rate - 1e6).abs() <= 1e5, "TX rate {rate:.0} B/s is not within 10 % of 1 MB/s");
    assert!(m["tx_rate_limiter_throttled"].as_u64().unwrap() > 0, "{m}");
    assert_eq!(m["tx_drops"]["spoofed_source"], 0, "{m}");
}
