//! The virtio-net datapath natively (no KVM): a simulated guest driver posts
//! split-virtqueue RX/TX buffers in a guest memory region and the real
//! `virtio_devices::net::Net` device moves frames through either
//! - `tap`: `TapBackend` on a real tap device, frames injected/consumed on the
//!   host side through an AF_PACKET socket bound to the tap, or
//! - `shim`: the binary's configuration: `ShimBackend<Pnic<_>>` (the same
//!   enum dispatch over NIC families as `pnic::shim::VfioShim`) holding the
//!   product's igb driver with two MSI-X vectors (queues, other causes), which
//!   runs on a software 82576 (`pnic::model::igb_hw`: registers, descriptor
//!   rings in DMA memory); the model's "DMA" writes frames straight into the
//!   posted guest buffers (GPA + 12). The VMM side is thus the code that drives
//!   a real NIC; only the register access is the model's instead of MMIO.
//!
//! The simulated guest behaves like Linux's virtio-net with EVENT_IDX: after
//! reaping used entries it writes `used_event` = the next used index it
//! expects (an interrupt for the next entry), and the interrupts the device
//! raises are counted on its irqfd. Per frame the bench reports the NIC
//! register reads and writes (counted in the model), the guest interrupts,
//! and the payload bytes the VMM copied (the device's `vmm_copied_bytes`
//! counter, which includes the backend's).
//!
//! What is timed as "VMM" is only `bench_vmm_work` (the event loop: device +
//! backend, including the tap's readv/writev syscalls); the simulated guest
//! and the NIC side (`bench_nic_work`: AF_PACKET send/recv, or the model
//! hardware's descriptor processing and DMA) are timed apart. Under `valgrind --tool=callgrind` the two functions'
//! inclusive instruction counts give instructions per packet (tools/bench).
//!
//!   cargo bench -p pnic --bench net_datapath -- [--frames N] [SCENARIO...]
//!   SCENARIO = {tap,shim}-{rx,tx}-{64,512,1500,9000}[-bBURST] or
//!   {tap,shim}-tso-SIZE[-bBURST]; default: all rx/tx at burst 64, and
//!   tso-64000. BURST: frames the wire delivers (RX) or the guest posts
//!   (TX) per event-loop pass. `tso`: the guest sends TCP/IPv4 frames of
//!   SIZE bytes as TSO frames (VIRTIO_NET_F_CSUM + HOST_TSO4 acked, MSS
//!   1448), one descriptor each; the shim's NIC model cuts them into
//!   segments, the tap's kernel takes them whole.
//! Prints one JSON object per scenario on stdout.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use pnic::model::igb_hw::{igb_on_model_mtu, HwRx, IgbHw};
use pnic::shim::ShimBackend;
use pnic::Pnic;
use virtio_devices::net::config::{F_CSUM, F_EVENT_IDX, F_HOST_TSO4, F_MRG_RXBUF, F_VERSION_1};
use virtio_devices::net::device::{RX_QUEUE, TX_QUEUE};
use virtio_devices::net::{Net, NetBackend, TapBackend};
use virtio_devices::{ActivateContext, GuestMemory, Interrupt, VirtioDevice};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

const QSIZE: u16 = 256;
/// VIRTQ_DESC_F_WRITE: the device writes this buffer (RX).
const DESC_F_WRITE: u16 = 2;
/// Guest RX buffer size: one 2 KiB descriptor per buffer (what a Linux guest
/// with MRG_RXBUF posts, rounded to the NIC's 1 KiB granularity).
const RX_BUF: u32 = 2048;
const VNET_HDR: usize = 12;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
const RX_BASE: u64 = 0x10_0000;
const TX_BASE: u64 = 0x80_0000;
/// TX slot stride: a 12-byte header plus a 9000-byte frame fits.
const TX_STRIDE: u64 = 0x4000;
/// TX slot stride of TSO frames (up to 64 KiB).
const TSO_STRIDE: u64 = 0x1_0000;
/// The MSS of the bench's TSO frames (a 1500-byte MTU with timestamps).
const TSO_MSS: u16 = 1448;
/// Frames per event-loop pass unless the scenario says otherwise.
const DEFAULT_BURST: usize = 64;
/// MSI-X vectors the shim's NIC has, as in production (igb/e1000e
/// `open_vfio`).
const PRODUCTION_VECTORS: usize = 2;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// (user, system) CPU time of this thread so far.
fn thread_rusage() -> (Duration, Duration) {
    // SAFETY: rusage is plain old data; getrusage fills the one we own.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_THREAD is valid on Linux.
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (tv(ru.ru_utime), tv(ru.ru_stime))
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
        (Driver { mem: mem.clone(), desc, avail, used, avail_idx: 0, used_seen: 0 }, q)
    }

    fn push(&mut self, head: u16, addr: u64, len: u32, flags: u16) {
        let d = RawDescriptor::from(SplitDescriptor::new(addr, len, flags, 0));
        self.mem.write_obj(d, GuestAddress(self.desc + 16 * u64::from(head))).unwrap();
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
    }

    /// Publishes pushed chains; true when the device asked for a kick (EVENT_IDX).
    fn publish(&mut self, old: u16) -> bool {
        fence(Ordering::SeqCst);
        self.mem.write_obj(self.avail_idx, GuestAddress(self.avail + 2)).unwrap();
        fence(Ordering::SeqCst);
        let event: u16 = self.mem.read_obj(GuestAddress(self.used + 4 + 8 * u64::from(QSIZE))).unwrap();
        self.avail_idx.wrapping_sub(event).wrapping_sub(1) < self.avail_idx.wrapping_sub(old)
    }

    /// Takes the new used entries, then asks for an interrupt at the next
    /// one (`used_event`, as Linux's virtqueue_enable_cb does).
    fn reap(&mut self, out: &mut Vec<(u16, u32)>) {
        let idx: u16 = self.mem.read_obj(GuestAddress(self.used + 2)).unwrap();
        while self.used_seen != idx {
            let e = self.used + 4 + 8 * u64::from(self.used_seen % QSIZE);
            let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
            out.push((id as u16, len));
            self.used_seen = self.used_seen.wrapping_add(1);
        }
        let used_event = self.avail + 4 + 2 * u64::from(QSIZE);
        self.mem.write_obj(self.used_seen, GuestAddress(used_event)).unwrap();
        fence(Ordering::SeqCst);
    }
}

/// The host side of the tap: an AF_PACKET socket bound to it.
struct HostEnd {
    fd: OwnedFd,
}

impl HostEnd {
    fn new(ifname: &str) -> HostEnd {
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket(2); the fd is owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
        assert!(fd >= 0, "AF_PACKET socket: {}", std::io::Error::last_os_error());
        // SAFETY: fd is a fresh socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cname = std::ffi::CString::new(ifname).unwrap();
        // SAFETY: NUL-terminated name.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        assert!(ifindex != 0, "no interface {ifname}");
        // SAFETY: sockaddr_ll is plain old data.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto as u16;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: binds our socket to a sockaddr_ll of the right size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(r, 0, "bind: {}", std::io::Error::last_os_error());
        let big: libc::c_int = 8 << 20;
        for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
            // SAFETY: setsockopt reads one c_int we own.
            unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &big as *const libc::c_int as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as u32,
                )
            };
        }
        HostEnd { fd }
    }

    fn send(&self, frame: &[u8]) -> bool {
        // SAFETY: send(2) reads frame.len() bytes of a live slice.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), libc::MSG_DONTWAIT) };
        n == frame.len() as isize
    }

    /// Drains what the tap sent out; returns the number of frames of `len`.
    fn drain(&self, buf: &mut [u8], len: usize) -> u64 {
        let mut n = 0;
        loop {
            // SAFETY: recv(2) writes at most buf.len() bytes into buf.
            let r = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
            if r < 0 {
                return n;
            }
            if len == 0 || r as usize == len {
                n += 1;
            }
        }
    }
}

enum Nic {
    Tap { host: HostEnd },
    Igb(IgbHw),
}

struct Bench {
    net: Arc<Mutex<Net>>,
    /// The device's interrupt line (irqfd): its counter is the number of
    /// guest interrupts.
    irqfd: EventFd,
    em: EventManager<Arc<Mutex<Net>>>,
    rx: Driver,
    tx: Driver,
    mem: GuestMemory,
    nic: Nic,
    vmm_ns: u64,
    nic_ns: u64,
    ru0: (Duration, Duration),
}

/// The VMM's work: run the event loop (device + backend) until idle.
#[inline(never)]
fn bench_vmm_work(em: &mut EventManager<Arc<Mutex<Net>>>) {
    while em.run_with_timeout(0).unwrap() > 0 {}
}

/// The NIC's work: the wire delivers `n` frames (tap: AF_PACKET sends; shim:
/// the 82576 model takes RX descriptors and DMAs into their buffers), or
/// completes TX (tap: the host reads what the tap sent; shim: the model walks
/// the TX descriptors and reads their segments).
#[inline(never)]
fn bench_nic_work(nic: &Nic, frame: &[u8], n: usize, rx: bool, scratch: &mut [u8]) -> u64 {
    match (nic, rx) {
        (Nic::Tap { host, .. }, true) => (0..n).filter(|_| host.send(frame)).count() as u64,
        (Nic::Tap { host, .. }, false) => host.drain(scratch, frame.len()),
        // An empty `frame`: count every frame (TSO segments).
        (Nic::Igb(hw), true) => (0..n).filter(|_| matches!(hw.inject_rx(frame), HwRx::Delivered { .. })).count() as u64,
        (Nic::Igb(hw), false) => {
            let want = frame.len();
            let mut good = 0;
            hw.complete_tx(|f| good += u64::from(want == 0 || f.len() == want));
            good
        }
    }
}

fn test_frame(len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
    f[..6].copy_from_slice(&MAC);
    f[6..12].copy_from_slice(&[0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
    // A local experimental ethertype: nothing in the host stack answers it.
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes());
    f
}

impl Bench {
    /// `offloads`: the guest acks CSUM and HOST_TSO4 (its TX frames may be
    /// TSO frames).
    fn new(path: &str, frame_len: usize, offloads: bool) -> Bench {
        let mem: GuestMemory = GuestMemory::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let (backend, nic): (Box<dyn NetBackend>, Nic) = if path == "tap" {
            let tap = TapBackend::open("shbench%d").expect("cannot create a tap (needs root and /dev/net/tun)");
            let name = tap.name().to_string();
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6"), "1");
            let mtu = (frame_len.max(1514) - 14).to_string();
            let st = std::process::Command::new("ip")
                .args(["link", "set", "dev", &name, "mtu", &mtu, "up"])
                .status()
                .expect("run ip");
            assert!(st.success(), "ip link set {name} mtu {mtu} up failed");
            let host = HostEnd::new(&name);
            (Box::new(tap), Nic::Tap { host })
        } else {
            // Frames above 1514 bytes: the NIC opened for MTU 9000, as
            // `--net vfio=BDF,mtu=9000` opens it (jumbo frames over several buffers).
            let mtu = if frame_len > 1514 && !offloads { pnic::igb::MAX_MTU } else { pnic::e1000_common::ETH_MTU };
            let (igb, hw) = igb_on_model_mtu(&mem, MAC, PRODUCTION_VECTORS, mtu)
                .expect("igb driver bring-up on the 82576 model");
            let shim: ShimBackend<Pnic<_>> = ShimBackend::new(Pnic::Igb(igb), &mem, MAC).unwrap();
            (Box::new(shim), Nic::Igb(hw))
        };
        let (rx, rxq) = Driver::new(&mem, 0);
        let (tx, txq) = Driver::new(&mem, 0x1_0000);
        let mut net = Net::new(backend, Some(MAC), "bench".into());
        if frame_len > 1514 && !offloads {
            net.set_mtu(pnic::igb::MAX_MTU);
        }
        let net = Arc::new(Mutex::new(net));
        let mut em = EventManager::<Arc<Mutex<Net>>>::new().unwrap();
        em.add_subscriber(net.clone());
        let irqfd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        {
            let mut n = net.lock().unwrap();
            let wanted = F_VERSION_1 | F_EVENT_IDX | F_MRG_RXBUF | if offloads { F_CSUM | F_HOST_TSO4 } else { 0 };
            let feats = n.avail_features() & wanted;
            assert_eq!(feats, wanted, "the {path} backend does not offer the features the scenario needs");
            n.set_acked_features(feats);
            let irq = Arc::new(Interrupt::new(irqfd.try_clone().unwrap()));
            n.activate(ActivateContext { mem: mem.clone(), queues: vec![rxq, txq], interrupt: irq }).unwrap();
        }
        bench_vmm_work(&mut em);
        Bench { net, irqfd, em, rx, tx, mem, nic, vmm_ns: 0, nic_ns: 0, ru0: thread_rusage() }
    }

    fn vmm(&mut self) {
        let t = thread_cpu_ns();
        bench_vmm_work(&mut self.em);
        self.vmm_ns += thread_cpu_ns() - t;
    }

    fn nic(&mut self, frame: &[u8], n: usize, rx: bool, scratch: &mut [u8]) -> u64 {
        let t = thread_cpu_ns();
        let r = bench_nic_work(&self.nic, frame, n, rx, scratch);
        self.nic_ns += thread_cpu_ns() - t;
        r
    }

    fn kick(&mut self, q: usize) {
        self.net.lock().unwrap().queue_events()[q].write(1).unwrap();
    }

    fn metrics(&self) -> serde_json::Value {
        self.net.lock().unwrap().metrics().unwrap()
    }

    /// Guest interrupts raised since the last call (the irqfd's counter).
    fn take_irqs(&self) -> u64 {
        self.irqfd.read().unwrap_or(0)
    }

    /// NIC register (reads, writes) so far; (0, 0) for the tap.
    fn registers(&self) -> (u64, u64) {
        match &self.nic {
            Nic::Igb(hw) => hw.register_accesses(),
            Nic::Tap { .. } => (0, 0),
        }
    }
}

/// What the measured loop cost besides time: guest interrupts and NIC
/// register accesses.
#[derive(Default)]
struct Counts {
    irqs: u64,
    reads: u64,
    writes: u64,
}

impl Counts {
    /// Starts counting (drops what setup raised).
    fn start(b: &Bench) -> Counts {
        b.take_irqs();
        let (reads, writes) = b.registers();
        Counts { irqs: 0, reads, writes }
    }

    fn stop(self, b: &Bench) -> Counts {
        let (reads, writes) = b.registers();
        Counts { irqs: b.take_irqs(), reads: reads - self.reads, writes: writes - self.writes }
    }
}

struct Outcome {
    frames: u64,
    wall: Duration,
    counts: Counts,
}

fn run_rx(b: &mut Bench, frame_len: usize, frames: u64, burst: usize) -> Outcome {
    let buf_addr = |h: u16| RX_BASE + u64::from(h) * u64::from(RX_BUF);
    let counts = Counts::start(b);
    let old = b.rx.avail_idx;
    for h in 0..QSIZE {
        b.rx.push(h, buf_addr(h), RX_BUF, DESC_F_WRITE);
    }
    if b.rx.publish(old) {
        b.kick(RX_QUEUE);
    }
    b.vmm();
    let frame = test_frame(frame_len);
    let mut used = Vec::new();
    let mut delivered = 0u64;
    let mut scratch = [0u8; 0];
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(300);
    let mut checked = false;
    while delivered < frames {
        assert!(Instant::now() < deadline, "RX bench stuck: {}", b.metrics());
        b.nic(&frame, burst, true, &mut scratch);
        b.vmm();
        used.clear();
        b.rx.reap(&mut used);
        if !checked {
            // The payload really landed in the guest buffer (first complete
            // one-buffer frame).
            if let Some(&(h, _)) = used.iter().find(|&&(h, len)| {
                len as usize == VNET_HDR + frame_len
                    && b.mem.read_obj::<u16>(GuestAddress(buf_addr(h) + 10)).unwrap() == 1
            }) {
                let mut got = vec![0u8; frame_len];
                b.mem.read_slice(&mut got, GuestAddress(buf_addr(h) + VNET_HDR as u64)).unwrap();
                assert_eq!(got, frame, "RX payload differs in guest memory");
                checked = true;
            }
        }
        // Frames, not buffers (a 9000-byte frame spans several merged buffers).
        delivered = b.net.lock().unwrap().net_metrics().rx_packets;
        let old = b.rx.avail_idx;
        for &(h, _) in &used {
            b.rx.push(h, buf_addr(h), RX_BUF, DESC_F_WRITE);
        }
        if !used.is_empty() && b.rx.publish(old) {
            b.kick(RX_QUEUE);
            b.vmm();
        }
    }
    assert!(checked || frame_len + VNET_HDR > RX_BUF as usize, "no frame verified in guest memory");
    let counts = counts.stop(b);
    Outcome { frames: delivered, wall: t0.elapsed(), counts }
}

/// A TSO frame of `len` bytes as a Linux guest sends it: virtio-net header
/// (NEEDS_CSUM, GSO_TCPV4, MSS), Ethernet from the VM's MAC, IPv4, TCP with
/// 12 option bytes, the TCP checksum field the pseudo-header sum.
fn tso_msg(len: usize) -> Vec<u8> {
    const HLEN: usize = 14 + 20 + 32;
    let mut f = test_frame(len);
    f.copy_within(0..6, 6);
    f[..6].copy_from_slice(&[0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip = [0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 10, 192, 0, 2, 1];
    f[14..34].copy_from_slice(&ip);
    f[16..18].copy_from_slice(&((len - 14) as u16).to_be_bytes());
    let sum = |b: &[u8]| b.chunks(2).map(|w| u32::from(w[0]) << 8 | u32::from(w[1])).sum::<u32>();
    let fold = |mut s: u32| {
        while s > 0xffff {
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    };
    let c = !fold(sum(&f[14..34]));
    f[24..26].copy_from_slice(&c.to_be_bytes());
    let tcp = [0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x80, 0x18, 0x01, 0xf6, 0, 0, 0, 0];
    f[34..54].copy_from_slice(&tcp);
    f[54..HLEN].fill(1);
    let pseudo = fold(sum(&f[26..34]) + 6 + (len - 34) as u32);
    f[50..52].copy_from_slice(&pseudo.to_be_bytes());
    let mut msg = vec![0u8; VNET_HDR];
    msg[0] = 1; // NEEDS_CSUM
    msg[1] = 1; // GSO_TCPV4
    msg[2..4].copy_from_slice(&(HLEN as u16).to_le_bytes());
    msg[4..6].copy_from_slice(&TSO_MSS.to_le_bytes());
    msg[6..8].copy_from_slice(&34u16.to_le_bytes());
    msg[8..10].copy_from_slice(&16u16.to_le_bytes());
    msg.extend(f);
    msg
}

fn run_tx(b: &mut Bench, frame_len: usize, frames: u64, burst: usize, tso: bool) -> Outcome {
    let mut msg = vec![0u8; VNET_HDR];
    // From the VM's MAC (the shim's wire policy drops anything else).
    let mut frame = test_frame(frame_len);
    frame.copy_within(0..6, 6);
    frame[..6].copy_from_slice(&[0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc]);
    msg.extend(frame);
    if tso {
        msg = tso_msg(frame_len);
    }
    let stride = if tso { TSO_STRIDE } else { TX_STRIDE };
    let slot = |h: u16| TX_BASE + u64::from(h) * stride;
    for h in 0..QSIZE {
        b.mem.write_slice(&msg, GuestAddress(slot(h))).unwrap();
    }
    let mut free: Vec<u16> = (0..QSIZE).collect();
    let mut used = Vec::new();
    let mut sent = 0u64;
    let mut on_wire = 0u64;
    let mut scratch = vec![0u8; 1 << 17];
    // TSO: the wire sees segments (shim) or the whole frame (tap): count all.
    let wire_frame: &[u8] = if tso { &[] } else { &msg[VNET_HDR..] };
    let counts = Counts::start(b);
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(300);
    while sent < frames {
        assert!(Instant::now() < deadline, "TX bench stuck: {}", b.metrics());
        let old = b.tx.avail_idx;
        let n = burst.min(free.len());
        for h in free.drain(..n) {
            b.tx.push(h, slot(h), msg.len() as u32, 0);
        }
        if b.tx.publish(old) {
            b.kick(TX_QUEUE);
        }
        b.vmm();
        on_wire += b.nic(wire_frame, 0, false, &mut scratch);
        b.vmm();
        used.clear();
        b.tx.reap(&mut used);
        sent += used.len() as u64;
        free.extend(used.iter().map(|u| u.0));
    }
    let m = b.metrics();
    assert_eq!(m["tx_drops"]["backend_error"], 0, "{m}");
    assert_eq!(m["tx_drops"]["bad_vnet_header"], 0, "{m}");
    assert_eq!(m["tx_drops"]["spoofed_source"], 0, "the bench frames are the VM's own: {m}");
    // The tap's kernel queue may drop under load; the model never does.
    assert!(on_wire > 0, "no frame reached the wire: {m}");
    let counts = counts.stop(b);
    Outcome { frames: sent, wall: t0.elapsed(), counts }
}

fn scenario(name: &str, frames: u64) -> Option<serde_json::Value> {
    let parts: Vec<&str> = name.split('-').collect();
    let (path, dir, size, burst) = match parts[..] {
        [path, dir, size] => (path, dir, size, DEFAULT_BURST),
        [path, dir, size, b] => {
            let burst = b.strip_prefix('b').and_then(|n| n.parse().ok()).filter(|&n| n > 0);
            (path, dir, size, burst.unwrap_or_else(|| panic!("bad burst in {name}: want bN, e.g. b8")))
        }
        _ => panic!("bad scenario {name}: want PATH-DIR-SIZE[-bBURST], e.g. shim-rx-1500-b8"),
    };
    let size: usize = size.parse().unwrap_or_else(|_| panic!("bad frame size in {name}"));
    assert!(matches!(path, "tap" | "shim") && matches!(dir, "rx" | "tx" | "tso"), "bad scenario {name}");
    let tso = dir == "tso";
    assert!(!tso || (1500..=65_000).contains(&size), "TSO frames of 1500..=65000 bytes: {name}");
    let mut b = Bench::new(path, size, tso);
    let out = if dir == "rx" { run_rx(&mut b, size, frames, burst) } else { run_tx(&mut b, size, frames, burst, tso) };
    let ru = thread_rusage();
    let m = b.metrics();
    let f = out.frames.max(1) as f64;
    let copied = m["vmm_copied_bytes"].as_u64().expect("the device reports vmm_copied_bytes");
    let c = &out.counts;
    let v = serde_json::json!({
        "scenario": name, "path": path, "dir": dir, "size": size, "burst": burst,
        "frames": out.frames,
        "vmm_ns_per_pkt": b.vmm_ns as f64 / f,
        "nic_ns_per_pkt": b.nic_ns as f64 / f,
        "vmm_pps": f / (b.vmm_ns as f64 / 1e9),
        "wall_pps": f / out.wall.as_secs_f64(),
        "thread_user_ns_per_pkt": (ru.0 - b.ru0.0).as_nanos() as f64 / f,
        "thread_sys_ns_per_pkt": (ru.1 - b.ru0.1).as_nanos() as f64 / f,
        "vmm_copied_bytes_per_pkt": copied as f64 / f,
        // Per byte: the guest's frames (TSO: the 64 KiB frame, not its segments).
        "vmm_ns_per_kib": b.vmm_ns as f64 / (f * size as f64 / 1024.0),
        "guest_irqs_per_pkt": c.irqs as f64 / f,
        "nic_reg_reads_per_pkt": c.reads as f64 / f,
        "nic_reg_writes_per_pkt": c.writes as f64 / f,
        "metrics": m,
    });
    Some(v)
}

fn main() {
    let mut frames: u64 = 100_000;
    let mut names = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--frames" => frames = args.next().and_then(|v| v.parse().ok()).expect("--frames N"),
            "--bench" => {}
            s if s.starts_with("--") => {}
            s => names.push(s.to_string()),
        }
    }
    if names.is_empty() {
        for path in ["tap", "shim"] {
            for dir in ["rx", "tx"] {
                for size in [64, 512, 1500, 9000] {
                    names.push(format!("{path}-{dir}-{size}"));
                }
            }
            names.push(format!("{path}-tso-64000"));
        }
    }
    for n in &names {
        if let Some(v) = scenario(n, frames) {
            println!("{v}");
        }
    }
}
