//! Benchmark of the tap datapath through the whole device (ignored by
//! default; the baseline the zero-copy shim is compared with):
//!
//! `cargo test -p virtio-devices --release -- --ignored --nocapture tap_bench`
//!
//! A simulated guest driver keeps the RX ring full / the TX ring busy and
//! recycles used buffers, honouring EVENT_IDX for its kicks. The host end of
//! the tap is an AF_PACKET socket. Only the VMM side is timed: the thread CPU
//! time spent in the event loop (device work plus the readv/writev syscalls,
//! i.e. the kernel's copy) per frame.

use std::sync::atomic::Ordering as AtomicOrdering;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, SubscriberOps};
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::config::*;
use super::device::{Net, RX_QUEUE, TX_QUEUE};
use super::tap::TapBackend;
use super::tap_tests::{
    gso_hdr, set_up, taps_available, tcp_frame, test_frame, unique_name, HostEnd,
};
use crate::{ActivateContext, GuestMemory, Interrupt, VirtioDevice};

const QSIZE: u16 = 256;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The driver side of one split virtqueue, enough to recycle buffers.
struct Driver {
    mem: GuestMemory,
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    used_seen: u16,
}

impl Driver {
    fn new(mem: &GuestMemory, base: u64) -> (Driver, Queue) {
        let desc = base;
        let avail = desc + 16 * u64::from(QSIZE);
        let used = (avail + 6 + 2 * u64::from(QSIZE)).next_multiple_of(4);
        let mut q = Queue::new(QSIZE).unwrap();
        q.set_size(QSIZE);
        q.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        q.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        q.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        q.set_ready(true);
        (
            Driver {
                mem: mem.clone(),
                desc,
                avail,
                used,
                avail_idx: 0,
                used_seen: 0,
            },
            q,
        )
    }

    /// Makes a one-descriptor chain available (not yet published).
    fn push(&mut self, head: u16, addr: u64, len: u32, flags: u16) {
        let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0));
        self.mem
            .write_obj(d, GuestAddress(self.desc + 16 * u64::from(head)))
            .unwrap();
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Publishes pushed chains; returns whether the device wants a kick
    /// (EVENT_IDX: avail_event crossed).
    fn publish(&mut self, old: u16) -> bool {
        std::sync::atomic::fence(AtomicOrdering::SeqCst);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(self.avail + 2))
            .unwrap();
        std::sync::atomic::fence(AtomicOrdering::SeqCst);
        let event: u16 = self
            .mem
            .read_obj(GuestAddress(self.used + 4 + 8 * u64::from(QSIZE)))
            .unwrap();
        self.avail_idx.wrapping_sub(event).wrapping_sub(1) < self.avail_idx.wrapping_sub(old)
    }

    fn reap(&mut self, out: &mut Vec<(u16, u32)>) {
        let idx: u16 = self.mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        while self.used_seen != idx {
            let e = self.used + 4 + 8 * u64::from(self.used_seen % QSIZE);
            let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
            out.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
    }
}

struct Bench {
    net: Arc<Mutex<Net>>,
    em: EventManager<Arc<Mutex<Net>>>,
    rx: Driver,
    tx: Driver,
    mem: GuestMemory,
    cpu_ns: u64,
    name: String,
}

impl Bench {
    fn new(features: u64) -> Bench {
        let name = unique_name();
        let tap = TapBackend::open(&name).unwrap();
        set_up(&name);
        let mem: GuestMemory =
            GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let (rx, rxq) = Driver::new(&mem, 0);
        let (tx, txq) = Driver::new(&mem, 0x1_0000);
        let net = Arc::new(Mutex::new(Net::new(Box::new(tap), None, "bench".into())));
        let mut em = EventManager::<Arc<Mutex<Net>>>::new().unwrap();
        em.add_subscriber(net.clone());
        {
            let mut n = net.lock().unwrap();
            n.set_acked_features(F_VERSION_1 | F_EVENT_IDX | features);
            let irq = Arc::new(Interrupt::new(EventFd::new(libc::EFD_NONBLOCK).unwrap()));
            n.activate(ActivateContext {
                mem: mem.clone(),
                queues: vec![rxq, txq],
                interrupt: irq,
            })
            .unwrap();
        }
        let mut b = Bench {
            net,
            em,
            rx,
            tx,
            mem,
            cpu_ns: 0,
            name,
        };
        b.run();
        b
    }

    /// Runs the event loop until idle, timing it.
    fn run(&mut self) {
        let t0 = thread_cpu_ns();
        while self.em.run_with_timeout(0).unwrap() > 0 {}
        self.cpu_ns += thread_cpu_ns() - t0;
    }

    fn kick(&mut self, q: usize) {
        self.net.lock().unwrap().queue_events()[q].write(1).unwrap();
    }

    fn metrics(&self) -> serde_json::Value {
        self.net.lock().unwrap().metrics().unwrap()
    }

    fn report(&self, what: &str, frames: u64, bytes: u64) {
        let ns = self.cpu_ns as f64 / frames.max(1) as f64;
        let gbps = bytes as f64 * 8.0 / self.cpu_ns.max(1) as f64;
        println!(
            "tap_bench {what}: {frames} frames, {bytes} payload bytes; VMM thread CPU {:.1} ms = {ns:.0} ns/frame = {gbps:.2} Gbit/s per VMM core; vmm_copied_bytes {}",
            self.cpu_ns as f64 / 1e6,
            self.metrics()["vmm_copied_bytes"]
        );
    }
}

/// Host -> guest: the guest keeps 256 x 1536-byte mergeable buffers posted.
fn bench_rx(frames: u64, gso: bool) {
    let feats = F_MRG_RXBUF | if gso { F_GUEST_CSUM | F_GUEST_TSO4 } else { 0 };
    let mut b = Bench::new(feats);
    const BUF: u32 = 1536;
    let buf_addr = |h: u16| 0x10_0000 + u64::from(h) * 0x800;
    let old = b.rx.avail_idx;
    for h in 0..QSIZE {
        b.rx.push(h, buf_addr(h), BUF, VRING_DESC_F_WRITE as u16);
    }
    if b.rx.publish(old) {
        b.kick(RX_QUEUE);
    }
    b.run();
    let host = HostEnd::new(&b.name);
    let host = if gso { host.with_vnet_hdr() } else { host };
    let (msg, burst) = if gso {
        let mut m = gso_hdr().to_vec();
        m.extend(tcp_frame(65_000 - 54, 1));
        (m, 4)
    } else {
        (test_frame(1514, 1), 64)
    };
    let mut used = Vec::new();
    let mut delivered = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while delivered < frames {
        assert!(
            std::time::Instant::now() < deadline,
            "RX bench stuck: {}",
            b.metrics()
        );
        for _ in 0..burst {
            host.send(&msg);
        }
        b.run();
        used.clear();
        b.rx.reap(&mut used);
        let old = b.rx.avail_idx;
        for &(h, _) in &used {
            b.rx.push(h, buf_addr(h), BUF, VRING_DESC_F_WRITE as u16);
        }
        if !used.is_empty() && b.rx.publish(old) {
            b.kick(RX_QUEUE);
            b.run();
        }
        delivered = b.net.lock().unwrap().net_metrics().rx_packets;
    }
    let m = b.metrics();
    b.report(
        if gso { "RX 64K GSO" } else { "RX 1514B" },
        m["rx_packets"].as_u64().unwrap(),
        m["rx_bytes"].as_u64().unwrap(),
    );
}

/// Guest -> host: frames prepared once in guest memory, resubmitted as soon
/// as they come back used.
fn bench_tx(frames: u64, gso: bool) {
    let mut b = Bench::new(if gso { F_CSUM | F_HOST_TSO4 } else { 0 });
    let (frame, slots, stride) = if gso {
        let mut f = gso_hdr().to_vec();
        f.extend([0, 0]);
        f.extend(tcp_frame(65_000 - 54, 2));
        (f, 64u16, 0x1_0000u64 + 0x1000)
    } else {
        let mut f = vec![0u8; 12];
        f.extend(test_frame(1514, 2));
        (f, QSIZE, 0x800)
    };
    let slot_addr = |h: u16| 0x20_0000 + u64::from(h) * stride;
    for h in 0..slots {
        b.mem
            .write_slice(&frame, GuestAddress(slot_addr(h)))
            .unwrap();
    }
    let mut free: Vec<u16> = (0..slots).collect();
    let mut used = Vec::new();
    let mut sent = 0u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while sent < frames {
        assert!(
            std::time::Instant::now() < deadline,
            "TX bench stuck: {}",
            b.metrics()
        );
        let old = b.tx.avail_idx;
        for h in free.drain(..) {
            b.tx.push(h, slot_addr(h), frame.len() as u32, 0);
        }
        if b.tx.publish(old) {
            b.kick(TX_QUEUE);
        }
        b.run();
        used.clear();
        b.tx.reap(&mut used);
        free.extend(used.iter().map(|u| u.0));
        sent = b.net.lock().unwrap().net_metrics().tx_packets;
    }
    let m = b.metrics();
    assert_eq!(m["tx_drops"]["backend_error"], 0, "{m}");
    b.report(
        if gso { "TX 64K GSO" } else { "TX 1514B" },
        m["tx_packets"].as_u64().unwrap(),
        m["tx_bytes"].as_u64().unwrap(),
    );
}

#[test]
#[ignore = "benchmark: cargo test -p virtio-devices --release -- --ignored --nocapture tap_bench"]
fn tap_bench() {
    if !taps_available("tap_bench") {
        return;
    }
    bench_rx(100_000, false);
    bench_rx(5_000, true);
    bench_tx(100_000, false);
    bench_tx(5_000, true);
}
