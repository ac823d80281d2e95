//! The tap backend: frames move between a Linux tap and guest buffers with
//! readv/writev on guest memory itself. The kernel makes the only copy; the
//! VMM copies no payload byte (the tap adds nothing to `vmm_copied_bytes`).
//!
//! RX: posted guest buffers are kept in order with their iovecs prepared once.
//! On a readable tap, each frame is read straight into them: without
//! MRG_RXBUF into the first buffer alone; with it across as many buffers as
//! the frame needs, num_buffers written into the first one's header. Reading
//! waits (the backend reports `rx_stalled`) until the posted buffers hold a
//! maximum-size frame, since a frame's size is only known once it is read and
//! a truncated frame is lost.
//!
//! Link state: the link is up while the tap interface is administratively up
//! (IFF_UP, re-read on every rtnetlink link notification, so `ip link set
//! down/up` reaches the guest at once). A tap whose interface was deleted
//! fails with EBADFD (also ENODEV, ENXIO, EPIPE): the link goes down for good
//! and frames are dropped. A write failing with EIO (interface down) also
//! takes the link down until the interface is up again or I/O succeeds.

use std::collections::VecDeque;
use std::io;

use serde::Serialize;

use super::backend::{ChainRef, DropReason, NetBackend, RxPass, Used, VNET_HDR_LEN};
#[cfg(any(test, feature = "testing"))]
use super::backend::{RxBuffer, TxFrame};
use super::chain::addr_at;
use super::config::{
    F_CSUM, F_GUEST_CSUM, F_GUEST_ECN, F_GUEST_TSO4, F_GUEST_TSO6, F_GUEST_UFO, F_HOST_ECN, F_HOST_TSO4, F_HOST_TSO6,
    F_HOST_UFO, F_MRG_RXBUF, GUEST_GSO_MASK,
};
use super::device::HDR_NUM_BUFFERS_OFFSET;
use super::direct::{RxNext, RxQueue, TxQueue};
use super::iov::{IovecBuf, IOV_MAX};
use super::link_monitor::LinkMonitor;
use super::metrics::DropCounters;
use super::tap_dev::TapDev;
pub use super::tap_dev::TapError;
use crate::mem::RamMap;
use crate::GuestMemory;
use vm_memory::GuestAddress;

/// Offset of `flags` in the virtio-net header.
const HDR_FLAGS_OFFSET: usize = 0;
const ETH_HLEN: usize = 14;
const VLAN_HLEN: usize = 4;
/// Largest GSO frame a tap hands over: 64 KiB of IP plus link headers.
pub const MAX_GSO_FRAME: usize = 65536 + ETH_HLEN + VLAN_HLEN;
/// Largest frame (header included) accepted for TX.
pub const MAX_TX_LEN: usize = VNET_HDR_LEN + MAX_GSO_FRAME;
/// Most RX buffers held at once (more than any queue we offer).
pub const MAX_POSTED_RX: usize = 1024;
/// Most frames read per event before other events get a turn (the tap fd is
/// level-triggered, so the rest fires again at once).
pub const RX_BATCH: usize = 256;
/// Most frames dropped per `discard_pending` call.
const DISCARD_BATCH: usize = 1024;
/// Used when the MTU cannot be read.
const DEFAULT_MTU: u32 = 1500;

/// Offloads offered when the kernel accepts TUN_F_UFO (checked at open).
const UFO_FEATURES: u64 = F_GUEST_UFO | F_HOST_UFO;
const BASE_FEATURES: u64 =
    F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_ECN | F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_ECN;

/// Maps the guest's receive offloads to TUNSETOFFLOAD flags (what the kernel
/// may hand us unchecksummed / unsegmented). The kernel ignores TSO/UFO
/// without CSUM, as virtio requires GUEST_CSUM for them too.
pub fn tun_offload_flags(acked: u64) -> u32 {
    let mut f = 0;
    if acked & F_GUEST_CSUM != 0 {
        f |= libc::TUN_F_CSUM;
        if acked & F_GUEST_TSO4 != 0 {
            f |= libc::TUN_F_TSO4;
        }
        if acked & F_GUEST_TSO6 != 0 {
            f |= libc::TUN_F_TSO6;
        }
        if acked & F_GUEST_ECN != 0 && acked & (F_GUEST_TSO4 | F_GUEST_TSO6) != 0 {
            f |= libc::TUN_F_TSO_ECN;
        }
        if acked & F_GUEST_UFO != 0 {
            f |= libc::TUN_F_UFO;
        }
    }
    f
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Up,
    /// Writes fail with EIO (interface down) or an unexpected error; comes
    /// back on the next successful read/write.
    Down,
    /// The interface is gone (EBADFD...): permanent.
    Gone,
}

/// What kind of failure an errno is.
fn classify(e: &io::Error) -> Link {
    match e.raw_os_error() {
        Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::ENXIO) | Some(libc::EPIPE) | Some(libc::EBADF) => {
            Link::Gone
        }
        _ => Link::Down,
    }
}

#[derive(Debug, Default, Serialize)]
struct TapMetrics {
    rx_packets: u64,
    rx_bytes: u64,
    tx_packets: u64,
    tx_bytes: u64,
    rx_drops: DropCounters,
    tx_drops: DropCounters,
    /// Frames dropped because they came while the device was not running.
    rx_discarded_inactive: u64,
    read_errors: u64,
    write_errors: u64,
    /// Writes the kernel refused as malformed (EINVAL: bad GSO header...).
    tx_invalid: u64,
    readv_calls: u64,
    writev_calls: u64,
    /// IFF_UP re-reads (link notifications).
    link_checks: u64,
}

/// A posted guest buffer. Its segments live only as iovecs in `rx_iov`;
/// what completion needs besides is kept here (no allocation per buffer).
struct Posted {
    head: u16,
    len: u32,
    /// How many entries of `rx_iov` belong to this buffer.
    iovs: usize,
    /// Guest addresses of the header's flags byte and the two bytes of
    /// num_buffers (a driver may split the header anywhere); None past the
    /// buffer's end.
    hdr_at: [Option<GuestAddress>; 3],
}

/// The tap backend. See the module docs.
pub struct TapBackend {
    tap: TapDev,
    /// Link notifications (event fd index 1); None if netlink is unavailable
    /// (then only I/O errors and successes move the link state).
    monitor: Option<LinkMonitor>,
    features: u64,
    /// Posted buffers in guest order and their iovecs, back to back.
    rx: VecDeque<Posted>,
    rx_iov: IovecBuf,
    /// Entries of rx_iov before this index belong to completed buffers
    /// (dropped in bulk, so completing a buffer is O(1)).
    rx_iov_start: usize,
    /// Scratch list for one readv (a prefix of rx_iov plus the probe byte).
    rd_iov: IovecBuf,
    rx_posted_bytes: usize,
    /// Keeps the guest memory behind `rx_iov` mapped while buffers are held.
    rx_mem: Option<GuestMemory>,
    /// Guest RAM's layout for iovecs and header fix-ups, built on first use
    /// after activation (dropped by `quiesce`).
    ram: Option<RamMap>,
    /// Buffers filled by the last reads, for the next `rx` pass: each
    /// with whether it is the first of its frame.
    rx_done: Vec<(Used, bool)>,
    tx_iov: IovecBuf,
    mrg_rxbuf: bool,
    guest_csum: bool,
    mtu: u32,
    /// Bytes of posted buffers needed before reading (MRG_RXBUF only).
    rx_need: usize,
    stalled: bool,
    link: Link,
    last_error: Option<String>,
    m: TapMetrics,
}

impl TapBackend {
    /// The tap's MTU (`--net tap=...,mtu=N`): set on the host interface, so
    /// the host sends the guest frames up to it (and the RX buffer need
    /// follows).
    pub fn set_mtu(&mut self, mtu: u16) -> Result<(), TapError> {
        self.tap.set_mtu(mtu)?;
        self.mtu = u32::from(mtu);
        Ok(())
    }

    /// Opens (creating if needed) the tap `name` with a 12-byte virtio-net
    /// header, non-blocking, offloads off until the guest acks some.
    pub fn open(name: &str) -> Result<TapBackend, TapError> {
        let tap = TapDev::open(name)?;
        // Probe UFO support: older kernels refuse TUN_F_UFO.
        let mut features = BASE_FEATURES;
        if tap.set_offload(libc::TUN_F_CSUM | libc::TUN_F_UFO).is_ok() {
            features |= UFO_FEATURES;
        }
        tap.set_offload(0)?;
        let mtu = tap.mtu().unwrap_or(DEFAULT_MTU);
        let monitor = LinkMonitor::new()
            .map_err(|e| {
                log::warn!("tap {}: no link notifications ({e}); link state follows I/O errors only", tap.name())
            })
            .ok();
        let mut b = TapBackend {
            tap,
            monitor,
            features,
            rx: VecDeque::new(),
            rx_iov: IovecBuf::default(),
            rx_iov_start: 0,
            rd_iov: IovecBuf::default(),
            rx_posted_bytes: 0,
            rx_mem: None,
            ram: None,
            rx_done: Vec::new(),
            tx_iov: IovecBuf::default(),
            mrg_rxbuf: false,
            guest_csum: false,
            mtu,
            rx_need: 0,
            stalled: false,
            link: Link::Up,
            last_error: None,
            m: TapMetrics::default(),
        };
        b.rx_need = b.compute_rx_need(0);
        b.refresh_link();
        Ok(b)
    }

    /// The interface name.
    pub fn name(&self) -> &str {
        self.tap.name()
    }

    fn compute_rx_need(&self, acked: u64) -> usize {
        if acked & F_MRG_RXBUF == 0 {
            return 0;
        }
        let frame = if acked & GUEST_GSO_MASK != 0 { MAX_GSO_FRAME } else { self.mtu as usize + ETH_HLEN + VLAN_HLEN };
        VNET_HDR_LEN + frame
    }

    fn note_error(&mut self, what: &str, e: &io::Error) {
        let kind = classify(e);
        if kind == Link::Gone || self.link == Link::Up {
            log::warn!(
                "tap {}: {what} failed: {e}; link {}",
                self.tap.name(),
                if kind == Link::Gone { "gone" } else { "down" }
            );
        }
        if self.link != Link::Gone {
            self.link = kind;
        }
        self.last_error = Some(format!("{what}: {e}"));
    }

    /// Re-reads IFF_UP after a link notification (or at open/activation).
    fn refresh_link(&mut self) {
        if let Some(m) = &self.monitor {
            m.drain();
        }
        self.m.link_checks += 1;
        match self.tap.admin_up() {
            Ok(true) if self.link == Link::Down => {
                log::info!("tap {}: interface up; link up", self.tap.name());
                self.link = Link::Up;
            }
            Ok(false) if self.link == Link::Up => {
                log::warn!("tap {}: interface is down; link down", self.tap.name());
                self.link = Link::Down;
            }
            // Deleted (ENODEV) shows as EBADFD on the next read or write.
            _ => {}
        }
    }

    fn note_success(&mut self) {
        if self.link == Link::Down {
            log::info!("tap {}: I/O works again; link up", self.tap.name());
            self.link = Link::Up;
        }
    }

    /// Reads frames into posted buffers until EAGAIN, the batch limit, or too
    /// little buffer space.
    fn rx_frames(&mut self, mem: &GuestMemory) {
        self.stalled = false;
        for _ in 0..RX_BATCH {
            if self.rx.is_empty() || (self.mrg_rxbuf && self.rx_posted_bytes < self.rx_need) {
                self.stalled = true;
                return;
            }
            // Which buffers (and iovecs) this read may fill.
            let (mut nbufs, mut niov, mut cap) = (0usize, 0usize, 0usize);
            for p in &self.rx {
                // One iovec slot stays free for the truncation probe.
                if niov + p.iovs > IOV_MAX - 1 {
                    break;
                }
                nbufs += 1;
                niov += p.iovs;
                cap += p.len as usize;
                if !self.mrg_rxbuf || cap >= self.rx_need {
                    break;
                }
            }
            if nbufs == 0 {
                // A single buffer with more than IOV_MAX pieces cannot be
                // read into; give it back empty.
                self.complete_front(0, true);
                self.m.rx_drops.add(DropReason::BufferTooSmall);
                continue;
            }
            // The tap truncates a frame that does not fit and returns only
            // the bytes copied; a spare byte after the buffers tells a
            // truncated frame (n > cap) from one that fits exactly.
            let mut probe = [0u8; 1];
            let start = self.rx_iov_start;
            self.rd_iov.set_from(&self.rx_iov.as_slice()[start..start + niov]);
            self.rd_iov.push_raw(probe.as_mut_ptr(), probe.len());
            self.m.readv_calls += 1;
            // SAFETY: rd_iov describes validated guest RAM of posted buffers
            // (rx_mem keeps that mapping alive) plus `probe`, which lives on
            // this stack frame until after the call. niov <= IOV_MAX - 1, so
            // the list has at most IOV_MAX entries.
            let r = unsafe { self.tap.readv(self.rd_iov.as_slice()) };
            self.rd_iov.clear();
            match r {
                Ok(n) => {
                    self.note_success();
                    if n > cap {
                        // Truncated: the frame is lost; the buffers stay
                        // posted and the next frame overwrites them.
                        self.m.rx_drops.add(DropReason::BufferTooSmall);
                        continue;
                    }
                    if n < VNET_HDR_LEN {
                        self.m.rx_drops.add(DropReason::BackendError);
                        continue;
                    }
                    self.deliver(mem, n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.m.read_errors += 1;
                    self.note_error("read", &e);
                    return;
                }
            }
        }
    }

    /// A frame of `n` bytes (header included) sits at the front buffers:
    /// fix up its header and complete the buffers it used.
    fn deliver(&mut self, mem: &GuestMemory, n: usize) {
        let mut k = 0usize;
        let mut left = n;
        for p in &self.rx {
            k += 1;
            left = left.saturating_sub(p.len as usize);
            if left == 0 {
                break;
            }
        }
        let [flags_at, nb0, nb1] = self.rx[0].hdr_at;
        // The tap writes a 10-byte header and skips num_buffers. A failed
        // write means the guest's buffer left RAM: nothing to repair.
        // Byte stores through guest RAM's resolved layout, not vm-memory's
        // general slice path (which cost more than the rest of the frame).
        let ram = self.ram.get_or_insert_with(|| RamMap::new(mem));
        let nb = (k as u16).to_le_bytes();
        match (nb0, nb1) {
            (Some(a), Some(b)) if a.0.checked_add(1) == Some(b.0) => {
                let _ = ram.write(a.0, &nb);
            }
            _ => {
                for (at, b) in [(nb0, nb[0]), (nb1, nb[1])] {
                    if let Some(at) = at {
                        let _ = ram.write(at.0, &[b]);
                    }
                }
            }
        }
        if !self.guest_csum {
            // DATA_VALID may only be set when GUEST_CSUM was negotiated.
            if let Some(at) = flags_at {
                let _ = ram.write(at.0, &[0]);
            }
        }
        let mut left = n;
        for i in 0..k {
            let len = left.min(self.rx[0].len as usize);
            left -= len;
            self.complete_front(len as u32, i == 0);
        }
        self.m.rx_packets += 1;
        self.m.rx_bytes += n.saturating_sub(VNET_HDR_LEN) as u64;
    }

    /// The front buffer holds `len` bytes of a frame (`first`: its first
    /// buffer, with the header).
    fn complete_front(&mut self, len: u32, first: bool) {
        if let Some(p) = self.rx.pop_front() {
            self.rx_iov_start += p.iovs;
            self.rx_posted_bytes -= p.len as usize;
            self.rx_done.push((Used { head: p.head, len }, first));
        }
        if self.rx.is_empty() {
            self.rx_iov.clear();
            self.rx_iov_start = 0;
            self.rx_mem = None;
        } else if self.rx_iov_start >= 256 && self.rx_iov_start * 2 >= self.rx_iov.len() {
            self.rx_iov.drain_front(self.rx_iov_start);
            self.rx_iov_start = 0;
        }
    }
    /// Keep guest buffer `chain` to read frames into (its segments as
    /// iovecs). Needs `ram` (set by the first pass).
    fn take_rx(&mut self, chain: ChainRef<'_>) -> Result<(), DropReason> {
        let Some(ram) = self.ram.as_ref() else {
            return Err(DropReason::BackendError);
        };
        if self.rx.len() >= MAX_POSTED_RX {
            return Err(DropReason::NoBuffer);
        }
        let before = self.rx_iov.len();
        // Generous limit: a buffer is at most MAX_CHAIN_DESCS segments, each
        // split only at memory-region boundaries.
        if self.rx_iov.push_segs_in(ram, chain.segs, usize::MAX).is_none() {
            return Err(DropReason::BadAddress);
        }
        let iovs = self.rx_iov.len() - before;
        if self.rx_mem.is_none() {
            self.rx_mem = Some(ram.mem().clone());
        }
        self.rx_posted_bytes += chain.len as usize;
        let at = |off| addr_at(chain.segs, off);
        self.rx.push_back(Posted {
            head: chain.head,
            len: chain.len,
            iovs,
            hdr_at: [at(HDR_FLAGS_OFFSET), at(HDR_NUM_BUFFERS_OFFSET), at(HDR_NUM_BUFFERS_OFFSET + 1)],
        });
        Ok(())
    }

    /// Write guest frame `frame` (header included) to the tap. Needs `ram`.
    fn write_frame(&mut self, frame: ChainRef<'_>) -> Result<(), DropReason> {
        let fail = |m: &mut TapMetrics, r| {
            m.tx_drops.add(r);
            Err(r)
        };
        if self.link == Link::Gone {
            return fail(&mut self.m, DropReason::BackendError);
        }
        if frame.len as usize > MAX_TX_LEN {
            return fail(&mut self.m, DropReason::FrameTooLong);
        }
        self.tx_iov.clear();
        let Some(ram) = self.ram.as_ref() else {
            return fail(&mut self.m, DropReason::BackendError);
        };
        if self.tx_iov.push_segs_in(ram, frame.segs, IOV_MAX).is_none() {
            self.tx_iov.clear();
            return fail(&mut self.m, DropReason::BadAddress);
        }
        self.m.writev_calls += 1;
        // SAFETY: tx_iov describes the frame's validated guest RAM, kept
        // mapped by `ram` for the duration of the call.
        let r = unsafe { self.tap.writev(self.tx_iov.as_slice()) };
        self.tx_iov.clear();
        match r {
            Ok(_) => {
                self.note_success();
                self.m.tx_packets += 1;
                self.m.tx_bytes += u64::from(frame.len).saturating_sub(VNET_HDR_LEN as u64);
                Ok(())
            }
            Err(e) => {
                self.m.write_errors += 1;
                match e.raw_os_error() {
                    // Malformed frame (bad GSO fields, runt): the guest's
                    // problem, the link is fine.
                    Some(libc::EINVAL) => self.m.tx_invalid += 1,
                    Some(libc::EAGAIN) | Some(libc::ENOBUFS) | Some(libc::ENOMEM) => {}
                    _ => self.note_error("write", &e),
                }
                fail(&mut self.m, DropReason::BackendError)
            }
        }
    }
}

/// Owned-buffer conveniences for tests and benchmarks (a buffer or frame at
/// a time, without a queue).
#[cfg(any(test, feature = "testing"))]
impl TapBackend {
    fn use_mem(&mut self, mem: &GuestMemory) {
        if self.ram.is_none() {
            self.ram = Some(RamMap::new(mem));
        }
    }

    /// Keep `buf` to read frames into; `Err` gives it back with the reason.
    pub fn post_rx(&mut self, mem: &GuestMemory, buf: RxBuffer) -> Result<(), (RxBuffer, DropReason)> {
        self.use_mem(mem);
        let r = self.take_rx(ChainRef { head: buf.head, segs: &buf.segs, len: buf.len });
        r.map_err(|reason| (buf, reason))
    }

    /// The buffers filled since the last call, in order.
    pub fn reap_rx(&mut self, _mem: &GuestMemory, out: &mut Vec<Used>) {
        out.extend(self.rx_done.drain(..).map(|(u, _)| u));
    }

    /// Write `frame` to the tap (`Ok(true)`: sent).
    pub fn send(&mut self, mem: &GuestMemory, frame: TxFrame) -> Result<bool, DropReason> {
        self.use_mem(mem);
        self.write_frame(ChainRef { head: frame.head, segs: &frame.segs, len: frame.len }).map(|()| true)
    }
}

impl NetBackend for TapBackend {
    fn features(&self) -> u64 {
        self.features
    }

    fn set_features(&mut self, acked: u64) -> io::Result<()> {
        let flags = tun_offload_flags(acked & self.features);
        self.tap.set_offload(flags).map_err(io::Error::other)?;
        self.mrg_rxbuf = acked & F_MRG_RXBUF != 0;
        self.guest_csum = acked & F_GUEST_CSUM != 0;
        self.mtu = self.tap.mtu().unwrap_or(self.mtu);
        self.rx_need = self.compute_rx_need(acked);
        self.refresh_link();
        Ok(())
    }

    /// [tap fd, rtnetlink link-notification socket (if available)].
    fn event_fds(&self) -> Vec<std::os::unix::io::RawFd> {
        let mut v = vec![self.tap.fd()];
        v.extend(self.monitor.as_ref().map(LinkMonitor::fd));
        v
    }

    fn process_event(&mut self, mem: &GuestMemory, index: usize) {
        match index {
            0 if self.link != Link::Gone => self.rx_frames(mem),
            1 => self.refresh_link(),
            _ => {}
        }
    }

    /// The buffers the last reads filled go to the guest; then new buffers
    /// are taken, their segments kept as iovecs only (no allocation per
    /// buffer), up to [`MAX_POSTED_RX`].
    fn rx(&mut self, q: &mut RxQueue<'_>) -> RxPass {
        for (u, first) in self.rx_done.drain(..) {
            q.complete_part(u.head, u.len, first);
        }
        if self.ram.is_none() {
            self.ram = Some(q.ram().clone());
        }
        let mut posted = 0;
        while self.rx.len() < MAX_POSTED_RX {
            let Some(next) = q.pop() else { break };
            let (head, r) = match next {
                RxNext::One(d) => {
                    let seg = [(GuestAddress(d.gpa()), d.len())];
                    (d.head(), self.take_rx(ChainRef { head: d.head(), segs: &seg, len: d.len() }))
                }
                RxNext::Chain(c) => (c.head, self.take_rx(c)),
            };
            match r {
                Ok(()) => posted += 1,
                Err(reason) => q.refuse(head, reason),
            }
        }
        RxPass { posted, full: self.rx.len() >= MAX_POSTED_RX }
    }

    /// writev straight from the lent segments: no allocation per frame.
    fn tx(&mut self, q: &mut TxQueue<'_>) {
        if self.ram.is_none() {
            self.ram = Some(q.ram().clone());
        }
        while let Some(frame) = q.pop() {
            let head = frame.head;
            match self.write_frame(frame) {
                Ok(()) => q.complete(head),
                Err(reason) => q.drop_frame(head, reason),
            }
        }
    }

    fn quiesce(&mut self) {
        // readv/writev are synchronous: once the lists are dropped nothing
        // can write guest memory.
        self.rx.clear();
        self.rx_iov.clear();
        self.rx_iov_start = 0;
        self.rd_iov.clear();
        self.rx_posted_bytes = 0;
        self.rx_done.clear();
        self.rx_mem = None;
        self.ram = None;
        self.tx_iov.clear();
        self.stalled = false;
    }

    fn link_up(&self) -> bool {
        self.link == Link::Up
    }

    fn rx_stalled(&self) -> bool {
        self.stalled && self.link != Link::Gone
    }

    fn discard_pending(&mut self, index: usize) {
        if index == 1 {
            self.refresh_link();
            return;
        }
        if index != 0 || self.link == Link::Gone {
            return;
        }
        for _ in 0..DISCARD_BATCH {
            match self.tap.read_discard() {
                Ok(_) => {
                    self.note_success();
                    self.m.rx_discarded_inactive += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.m.read_errors += 1;
                    self.note_error("read", &e);
                    return;
                }
            }
        }
    }

    /// No `vmm_copied_bytes`: readv/writev on guest memory, so the only
    /// copy is the kernel's, and the VMM copies no payload byte.
    fn metrics(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Doc<'a> {
            kind: &'static str,
            tap: &'a str,
            link: &'static str,
            #[serde(flatten)]
            counters: &'a TapMetrics,
            rx_posted: usize,
            rx_posted_bytes: usize,
            rx_need: usize,
            mtu: u32,
            last_error: &'a Option<String>,
        }
        let doc = Doc {
            kind: "tap",
            tap: self.tap.name(),
            link: match self.link {
                Link::Up => "up",
                Link::Down => "down",
                Link::Gone => "gone",
            },
            counters: &self.m,
            rx_posted: self.rx.len(),
            rx_posted_bytes: self.rx_posted_bytes,
            rx_need: self.rx_need,
            mtu: self.mtu,
            last_error: &self.last_error,
        };
        // Integers and strings: cannot fail.
        serde_json::to_value(doc).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offload_mapping() {
        assert_eq!(tun_offload_flags(0), 0);
        // TSO without GUEST_CSUM is meaningless: nothing.
        assert_eq!(tun_offload_flags(F_GUEST_TSO4), 0);
        assert_eq!(tun_offload_flags(F_GUEST_CSUM), libc::TUN_F_CSUM);
        assert_eq!(
            tun_offload_flags(F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_ECN | F_GUEST_UFO),
            libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN | libc::TUN_F_UFO
        );
        // Host-side offloads never change what the tap may give us.
        assert_eq!(tun_offload_flags(F_CSUM | F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_UFO), 0);
    }

    #[test]
    fn errno_classes() {
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::EBADFD)), Link::Gone);
        assert_eq!(classify(&io::Error::from_raw_os_error(libc::EIO)), Link::Down);
    }
}
