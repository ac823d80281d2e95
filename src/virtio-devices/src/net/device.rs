//! The virtio-net device: one RX/TX queue pair, VERSION_1 only.
//!
//! The device owns the virtqueues, through its own split-ring code
//! ([`super::ring`]: rings resolved to host addresses once, at activation).
//! It pops chains, validates them ([`super::ring::SplitRing::parse`]) and
//! hands them to a [`NetBackend`] as [`RxBuffer`](super::backend::RxBuffer)s /
//! [`TxFrame`](super::backend::TxFrame)s; completions go back to the used rings. All queue and backend
//! work happens on the event-loop thread (`MutEventSubscriber::process`); the
//! transport's vCPU-thread calls (`activate`, `reset`, config access) only
//! store state and wake the loop through `activate_evt`.

use std::os::unix::io::RawFd;
use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{debug, error, warn};
use virtio_queue::QueueT;
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::backend::{ChainRef, DropReason, NetBackend, Used, VNET_HDR_LEN};
use super::chain::{addr_at, Direction, MAX_CHAIN_DESCS};
use super::config::{
    config_bytes, random_mac, read_window, BACKEND_OFFLOAD_MASK, DEVICE_FEATURES, F_MRG_RXBUF, F_STATUS,
};
use super::direct::{Held, RxQueue};
use super::metrics::NetMetrics;
use super::ring::SplitRing;
use crate::mem::RamMap;
use crate::{ActivateContext, ActivateError, GuestMemory, Interrupt, VirtioDevice, TYPE_NET};

/// Queue indices.
pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
/// Maximum (and default) queue size: 256 buffers of >= 1536 B hold a few
/// 64 KiB GSO frames with MRG_RXBUF.
pub const QUEUE_SIZE: u16 = 256;
const QUEUE_SIZES: [u16; 2] = [QUEUE_SIZE, QUEUE_SIZE];

/// Offset of `num_buffers` in `struct virtio_net_hdr_v1`.
pub const HDR_NUM_BUFFERS_OFFSET: usize = 10;

/// Event tokens (`Events::data`) this device registers.
const EV_RX_QUEUE: u32 = 0;
const EV_TX_QUEUE: u32 = 1;
const EV_ACTIVATE: u32 = 2;
/// Backend fd `i` of `NetBackend::event_fds()` uses token `EV_BACKEND_BASE + i`.
const EV_BACKEND_BASE: u32 = 16;

/// Most TX chains handled per kick before yielding to other events (the rest
/// is picked up by re-signalling our own TX eventfd).
const TX_BUDGET: usize = 512;
/// Most refill/process rounds for one backend event while it is stalled.
const STALL_ROUNDS: usize = 8;

/// Where the two bytes of num_buffers live in an RX buffer (frame counting
/// with MRG_RXBUF); a driver may split the header anywhere.
type NumBuffersAt = [GuestAddress; 2];

struct Active {
    mem: GuestMemory,
    rx: SplitRing,
    tx: SplitRing,
    interrupt: Arc<Interrupt>,
    /// Indexed by head: the RX buffers the backend holds (see [`Held`]).
    rx_held: Vec<Held>,
    /// Indexed by head: where a held buffer's num_buffers is. Kept only for
    /// backends that merge buffers (`single_buffer_frames` false).
    rx_num_buffers_at: Vec<NumBuffersAt>,
    /// Indexed by head: TX frames currently with the backend (their length).
    tx_slots: Vec<Option<u32>>,
    /// Used entries added since the last notification decision.
    rx_added: bool,
    tx_added: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Watch {
    /// Registered for EPOLLIN.
    On,
    /// Registered with an empty event set (not activated, or backend stalled).
    Paused,
    /// Removed from epoll after it reported an error/hang-up.
    Removed,
}

/// A virtio-net device (device type 1) over a [`NetBackend`].
pub struct Net {
    id: String,
    mac: [u8; 6],
    backend: Box<dyn NetBackend>,
    avail_features: u64,
    acked_features: u64,
    queue_evts: Vec<EventFd>,
    activate_evt: EventFd,
    active: Option<Active>,
    link_up: bool,
    backend_fds: Vec<RawFd>,
    watch: Vec<Watch>,
    stalled: bool,
    metrics: NetMetrics,
    used_buf: Vec<Used>,
    /// Segments of the chain being handed to the backend, reused for every
    /// chain (lent to the backend as a `ChainRef`): no allocation per packet.
    seg_buf: Vec<(GuestAddress, u32)>,
    /// The backend never spreads a frame over several buffers
    /// ([`NetBackend::single_buffer_frames`]): no num_buffers bookkeeping.
    single_buffer_frames: bool,
}

impl Net {
    /// A device over `backend`. `mac`: the guest's MAC, a random locally
    /// administered one when `None`. `id` names the device in logs/metrics.
    ///
    /// Panics only if eventfds cannot be created (fd exhaustion at VMM setup).
    pub fn new(backend: Box<dyn NetBackend>, mac: Option<[u8; 6]>, id: String) -> Net {
        let mk = || EventFd::new(libc::EFD_NONBLOCK).expect("virtio-net: cannot create an eventfd");
        let backend_fds = backend.event_fds();
        let avail_features = DEVICE_FEATURES | (backend.features() & BACKEND_OFFLOAD_MASK);
        let link_up = backend.link_up();
        let single_buffer_frames = backend.single_buffer_frames();
        Net {
            id,
            mac: mac.unwrap_or_else(random_mac),
            avail_features,
            acked_features: 0,
            queue_evts: vec![mk(), mk()],
            activate_evt: mk(),
            active: None,
            link_up,
            watch: vec![Watch::On; backend_fds.len()],
            backend_fds,
            stalled: false,
            backend,
            metrics: NetMetrics::default(),
            used_buf: Vec::with_capacity(QUEUE_SIZE as usize),
            seg_buf: Vec::with_capacity(MAX_CHAIN_DESCS),
            single_buffer_frames,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The link state the guest sees in the config space.
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// The device's own counters (tests, API).
    pub fn net_metrics(&self) -> &NetMetrics {
        &self.metrics
    }

    // ---------------------------------------------------------------- RX ---

    /// Posts guest RX buffers to the backend while it has room. Returns how
    /// many were posted. Leaves RX notifications on when it ran out of guest
    /// buffers (so the guest kicks when it adds some), off when the backend is
    /// full.
    fn refill_rx(&mut self) -> usize {
        if self.single_buffer_frames {
            if let Some(posted) = self.refill_rx_direct() {
                return posted;
            }
        }
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        let mut posted = 0;
        let single = self.single_buffer_frames;
        let backend = self.backend.as_mut();
        let metrics = &mut self.metrics;
        loop {
            // Asked once per round, not per buffer: each post takes at most one
            // unit of room (NetBackend::rx_room).
            let mut room = backend.rx_room();
            let mut avail = 0u16;
            while room > 0 {
                if avail == 0 {
                    // Re-read the guest's index once per run, not per buffer.
                    avail = a.rx.avail_count();
                    if avail == 0 {
                        break;
                    }
                }
                avail -= 1;
                let head = a.rx.pop_counted();
                let i = usize::from(head);
                let Some(held) = a.rx_held.get(i).map(|h| h.len) else {
                    // Cannot even be completed (the used ring would reject it).
                    metrics.rx_drops.add(DropReason::BadAddress);
                    continue;
                };
                if held != 0 {
                    metrics.duplicate_heads += 1;
                    continue;
                }
                let one;
                let (segs, len) = if let Some((addr, len)) = a.rx.single(head, Direction::DeviceWrites) {
                    // The common shape: no segment list to build.
                    one = [(addr, len)];
                    (&one[..], len)
                } else {
                    match a.rx.parse(head, Direction::DeviceWrites, &mut self.seg_buf) {
                        Ok(p) => (&self.seg_buf[..], p.len),
                        Err(reason) => {
                            metrics.rx_drops.add(reason);
                            a.rx.add_used(head, 0);
                            a.rx_added = true;
                            continue;
                        }
                    }
                };
                if !single {
                    // len >= VNET_HDR_LEN was checked, so the field exists.
                    let byte = |k| addr_at(segs, HDR_NUM_BUFFERS_OFFSET + k).unwrap_or(segs[0].0);
                    a.rx_num_buffers_at[i] = [byte(0), byte(1)];
                }
                a.rx_held[i] = Held::of_len(len);
                match backend.post_rx_chain(&a.mem, ChainRef { head, segs, len }) {
                    Ok(()) => {
                        posted += 1;
                        room -= 1;
                    }
                    Err(reason) => {
                        a.rx_held[i].release();
                        metrics.rx_drops.add(reason);
                        a.rx.add_used(head, 0);
                        a.rx_added = true;
                    }
                }
            }
            if !refill_again(backend, &mut a.rx) {
                break;
            }
        }
        if posted > 0 {
            // One tail write for the whole refill (NetBackend batch contract).
            backend.rx_posted_batch_done();
        }
        posted
    }

    /// `refill_rx` for a backend that takes buffers from the queue itself
    /// ([`NetBackend::refill_direct`]); `None` if it does not.
    fn refill_rx_direct(&mut self) -> Option<usize> {
        let a = self.active.as_mut()?;
        let backend = self.backend.as_mut();
        let mut posted = 0;
        let mut first = true;
        loop {
            let mut q = RxQueue::new(&mut a.rx, &mut a.rx_held, &mut self.metrics, &mut self.seg_buf, &self.id);
            let n = match backend.refill_direct(&mut q) {
                Some(n) => n,
                None if first => return None,
                None => 0,
            };
            first = false;
            let (added, popped) = (q.added(), q.popped());
            drop(q);
            self.metrics.rx_direct_passes += 1;
            a.rx_added |= added;
            posted += n;
            if !refill_again(backend, &mut a.rx) {
                break;
            }
            // Buffers are there, but a backend that took none of them with
            // room left ends the refill (no spinning on it).
            if popped == 0 {
                break;
            }
        }
        if posted > 0 {
            backend.rx_posted_batch_done();
        }
        Some(posted)
    }

    /// Moves the backend's RX completions to the used ring.
    fn complete_rx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if self.single_buffer_frames {
            let mut q = RxQueue::new(&mut a.rx, &mut a.rx_held, &mut self.metrics, &mut self.seg_buf, &self.id);
            let done = self.backend.complete_direct(&mut q);
            let added = q.added();
            drop(q);
            if done {
                a.rx_added |= added;
                self.metrics.rx_direct_passes += 1;
                return;
            }
        }
        self.used_buf.clear();
        self.backend.reap_rx(&a.mem, &mut self.used_buf);
        // Whether a frame may span buffers (then its first one's header says
        // how many).
        let mrg = self.acked_features & F_MRG_RXBUF != 0 && !self.single_buffer_frames;
        // Buffers still expected for the current frame (MRG_RXBUF).
        let mut rest: u32 = 0;
        for u in self.used_buf.drain(..) {
            let i = usize::from(u.head);
            let held = match a.rx_held.get_mut(i) {
                Some(h) if h.len != 0 => h.release(),
                _ => {
                    self.metrics.backend_bogus_completions += 1;
                    error!("virtio-net {}: backend completed RX head {} it does not hold", self.id, u.head);
                    continue;
                }
            };
            let mut len = u.len;
            if len > held {
                self.metrics.backend_bogus_completions += 1;
                error!("virtio-net {}: backend reported {} bytes in a {}-byte buffer", self.id, len, held);
                len = held;
            }
            if rest == 0 {
                if len as usize >= VNET_HDR_LEN {
                    if mrg {
                        rest = u32::from(read_num_buffers(a.rx.ram(), a.rx_num_buffers_at[i])) - 1;
                    }
                    self.metrics.rx_packets += 1;
                    self.metrics.rx_bytes += u64::from(len) - VNET_HDR_LEN as u64;
                }
            } else {
                rest -= 1;
                self.metrics.rx_bytes += u64::from(len);
            }
            self.metrics.rx_buffers_used += 1;
            a.rx.add_used(u.head, len);
            a.rx_added = true;
        }
    }

    // ---------------------------------------------------------------- TX ---

    fn process_tx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let mut done = 0usize;
        'outer: loop {
            a.tx.disable_notification();
            while let Some(head) = a.tx.pop_head() {
                done += 1;
                if head as usize >= a.tx_slots.len() {
                    self.metrics.tx_drops.add(DropReason::BadAddress);
                    continue;
                }
                if a.tx_slots[head as usize].is_some() {
                    // Still in flight with an asynchronous backend: ignore the
                    // duplicate rather than complete the head twice.
                    self.metrics.duplicate_heads += 1;
                    continue;
                }
                let one;
                let parsed = match a.tx.single(head, Direction::DeviceReads) {
                    // The common shape: no segment list to build.
                    Some(seg) => {
                        one = [seg];
                        Ok((&one[..], seg.1))
                    }
                    None => {
                        a.tx.parse(head, Direction::DeviceReads, &mut self.seg_buf).map(|p| (&self.seg_buf[..], p.len))
                    }
                };
                match parsed {
                    Err(reason) => {
                        self.metrics.tx_drops.add(reason);
                        a.tx.add_used(head, 0);
                        a.tx_added = true;
                    }
                    Ok((segs, len)) => {
                        let frame = ChainRef { head, segs, len };
                        match self.backend.send_chain(&a.mem, frame) {
                            Ok(true) => {
                                self.metrics.tx_packets += 1;
                                self.metrics.tx_bytes += u64::from(len) - VNET_HDR_LEN as u64;
                                a.tx.add_used(head, 0);
                                a.tx_added = true;
                            }
                            Ok(false) => a.tx_slots[head as usize] = Some(len),
                            Err(reason) => {
                                self.metrics.tx_drops.add(reason);
                                a.tx.add_used(head, 0);
                                a.tx_added = true;
                            }
                        }
                    }
                }
                if done >= TX_BUDGET {
                    // Come back after other events had their turn.
                    if let Err(e) = self.queue_evts[TX_QUEUE].write(1) {
                        error!("virtio-net {}: cannot re-arm TX: {e}", self.id);
                    }
                    break 'outer;
                }
            }
            if !a.tx.enable_notification() {
                break;
            }
        }
        if done > 0 {
            // One tail write for the whole batch (NetBackend batch contract).
            self.backend.tx_batch_done();
        }
        self.complete_tx();
    }

    fn complete_tx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        self.used_buf.clear();
        self.backend.reap_tx(&mut self.used_buf);
        for u in self.used_buf.drain(..) {
            let Some(len) = a.tx_slots.get_mut(u.head as usize).and_then(Option::take) else {
                self.metrics.backend_bogus_completions += 1;
                error!("virtio-net {}: backend completed TX head {} it does not hold", self.id, u.head);
                continue;
            };
            self.metrics.tx_packets += 1;
            self.metrics.tx_bytes += u64::from(len).saturating_sub(VNET_HDR_LEN as u64);
            a.tx.add_used(u.head, 0);
            a.tx_added = true;
        }
    }

    // ----------------------------------------------------------- backend ---

    /// Runs the backend for fd `index`, collects completions and refills; if
    /// the backend stalled for lack of buffers and more were posted, runs it
    /// again (bounded).
    fn service_backend(&mut self, indices: &[usize]) {
        for round in 0..STALL_ROUNDS {
            if let Some(a) = self.active.as_ref() {
                for &i in indices {
                    self.backend.process_event(&a.mem, i);
                }
            }
            self.complete_rx();
            self.complete_tx();
            let posted = self.refill_rx();
            if !(self.backend.rx_stalled() && posted > 0) {
                break;
            }
            debug!("virtio-net {}: backend stalled, round {round}, posted {posted}", self.id);
        }
    }

    fn backend_indices(&self) -> Vec<usize> {
        (0..self.backend_fds.len()).filter(|&i| self.watch[i] != Watch::Removed).collect()
    }

    fn set_watch(&mut self, ops: &mut EventOps, i: usize, want: Watch) {
        if self.watch[i] == want || self.watch[i] == Watch::Removed {
            return;
        }
        let fd = self.backend_fds[i];
        let data = EV_BACKEND_BASE + i as u32;
        let r = match want {
            Watch::On => ops.modify(Events::with_data_raw(fd, data, EventSet::IN)),
            Watch::Paused => ops.modify(Events::with_data_raw(fd, data, EventSet::empty())),
            Watch::Removed => ops.remove(Events::with_data_raw(fd, data, EventSet::empty())),
        };
        match r {
            Ok(()) => self.watch[i] = want,
            Err(e) => error!("virtio-net {}: cannot change watch of backend fd {fd}: {e}", self.id),
        }
    }

    /// Watch backend fds unless the backend is stalled or the device is not
    /// running.
    fn update_watch(&mut self, ops: &mut EventOps) {
        let stalled = self.active.is_some() && self.backend.rx_stalled();
        if stalled && !self.stalled {
            self.metrics.rx_stalls += 1;
        }
        self.stalled = stalled;
        let want = if self.active.is_some() && !stalled { Watch::On } else { Watch::Paused };
        for i in 0..self.backend_fds.len() {
            self.set_watch(ops, i, want);
        }
    }

    // ------------------------------------------------------------ common ---

    /// Raises the used-buffer interrupt if either queue got entries and the
    /// driver wants to hear about them (EVENT_IDX suppression).
    fn signal_used(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        if !a.rx_added && !a.tx_added {
            return;
        }
        let mut need = false;
        for (added, q) in [(&mut a.rx_added, &mut a.rx), (&mut a.tx_added, &mut a.tx)] {
            if *added {
                *added = false;
                need |= q.needs_notification();
            }
        }
        if need {
            self.metrics.used_irqs += 1;
            if let Err(e) = a.interrupt.signal_used_queue() {
                error!("virtio-net {}: cannot signal used queue: {e}", self.id);
            }
        } else {
            self.metrics.used_irqs_suppressed += 1;
        }
    }

    /// Reflects the backend's link state in the config space; a change raises
    /// the config interrupt when the driver negotiated STATUS.
    fn check_link(&mut self) {
        let up = self.backend.link_up();
        if up == self.link_up {
            return;
        }
        self.link_up = up;
        if up {
            warn!("virtio-net {}: link up", self.id);
        } else {
            warn!("virtio-net {}: link down (backend failed); the VM keeps running", self.id);
            self.metrics.link_down_events += 1;
        }
        if let Some(a) = self.active.as_ref() {
            if self.acked_features & F_STATUS != 0 {
                self.metrics.config_irqs += 1;
                if let Err(e) = a.interrupt.signal_config_change() {
                    error!("virtio-net {}: cannot signal config change: {e}", self.id);
                }
            }
        }
    }

    fn after_work(&mut self, ops: &mut EventOps) {
        self.signal_used();
        self.check_link();
        self.update_watch(ops);
    }
}

/// The end of a refill round: whether to run another. No, with guest kicks
/// off, when the backend is full; no, with kicks on, when the guest has no
/// buffers left (re-checked after asking, for buffers added before the
/// request became visible); yes otherwise.
fn refill_again(backend: &dyn NetBackend, rx: &mut SplitRing) -> bool {
    if backend.rx_room() == 0 {
        rx.disable_notification();
        return false;
    }
    rx.enable_notification()
}

/// Whether `fd` still reports an error or hang-up (after its owner handled
/// the event).
fn still_broken(fd: RawFd) -> bool {
    let mut p = libc::pollfd { fd, events: 0, revents: 0 };
    // SAFETY: poll reads and writes one pollfd that we own; a zero timeout
    // never blocks.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0
}

/// num_buffers of a filled buffer (at least 1). The guest may scribble on it;
/// it only feeds the frame counters.
fn read_num_buffers(ram: &RamMap, at: [GuestAddress; 2]) -> u16 {
    let mut b = [0u8; 2];
    let ok = if at[0].0.checked_add(1) == Some(at[1].0) {
        ram.read(at[0].0, &mut b)
    } else {
        ram.read(at[0].0, &mut b[..1]) && ram.read(at[1].0, &mut b[1..])
    };
    let v = ok.then(|| u16::from_le_bytes(b));
    v.unwrap_or(1).max(1)
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &QUEUE_SIZES
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn set_acked_features(&mut self, features: u64) {
        let unknown = features & !self.avail_features;
        if unknown != 0 {
            warn!("virtio-net {}: driver acked unoffered features {unknown:#x}; ignored", self.id);
        }
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_window(&config_bytes(self.mac, self.link_up), offset, data);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // VERSION_1 drivers may not write the MAC (no CTRL_MAC_ADDR offered).
        // Guest-triggered: log the first one only.
        self.metrics.config_writes_ignored += 1;
        if self.metrics.config_writes_ignored == 1 {
            warn!(
                "virtio-net {}: ignored config write of {} bytes at {offset:#x} (further ones are only counted)",
                self.id,
                data.len()
            );
        }
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_evts
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if self.active.is_some() {
            // Not expected from the transport; never leave stale buffers with
            // the backend.
            warn!("virtio-net {}: activated twice without reset", self.id);
            self.backend.quiesce();
            self.active = None;
        }
        if ctx.queues.len() != QUEUE_SIZES.len() {
            return Err(ActivateError::QueueCount { got: ctx.queues.len(), want: QUEUE_SIZES.len() });
        }
        for (i, q) in ctx.queues.iter().enumerate() {
            if !q.is_valid(&ctx.mem) {
                return Err(ActivateError::InvalidQueue(i));
            }
        }
        self.backend
            .set_features(self.acked_features)
            .map_err(|e| ActivateError::Backend(format!("setting offloads {:#x}: {e}", self.acked_features)))?;
        let event_idx = self.acked_features & super::config::F_EVENT_IDX != 0;
        let ring = |i: usize| {
            SplitRing::new(&ctx.queues[i], &ctx.mem, event_idx).map_err(|e| {
                error!("virtio-net {}: queue {i}: {e}", self.id);
                ActivateError::InvalidQueue(i)
            })
        };
        let (rx, tx) = (ring(RX_QUEUE)?, ring(TX_QUEUE)?);
        let (rxn, txn) = (rx.size() as usize, tx.size() as usize);
        self.active = Some(Active {
            mem: ctx.mem,
            rx,
            tx,
            interrupt: ctx.interrupt,
            rx_held: vec![Held::NONE; rxn],
            rx_num_buffers_at: vec![[GuestAddress(0); 2]; rxn],
            tx_slots: vec![None; txn],
            rx_added: false,
            tx_added: false,
        });
        self.activate_evt.write(1).map_err(|e| ActivateError::Backend(format!("waking the event loop: {e}")))?;
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        // The backend stops all I/O into guest memory before we forget it.
        self.backend.quiesce();
        self.active = None;
        self.acked_features = 0;
        self.stalled = false;
    }

    fn metrics(&self) -> Option<serde_json::Value> {
        let mut v = self.metrics.to_json(&self.id, self.link_up, self.backend.metrics());
        let watch: Vec<&str> = self
            .watch
            .iter()
            .map(|w| match w {
                Watch::On => "watched",
                Watch::Paused => "paused",
                Watch::Removed => "removed",
            })
            .collect();
        v["backend_fds"] = serde_json::json!(watch);
        Some(v)
    }
}

impl MutEventSubscriber for Net {
    fn init(&mut self, ops: &mut EventOps) {
        let mut add = |fd: RawFd, data: u32| {
            if let Err(e) = ops.add(Events::with_data_raw(fd, data, EventSet::IN)) {
                error!("virtio-net {}: cannot watch fd {fd}: {e}", self.id);
            }
        };
        use std::os::unix::io::AsRawFd;
        add(self.queue_evts[RX_QUEUE].as_raw_fd(), EV_RX_QUEUE);
        add(self.queue_evts[TX_QUEUE].as_raw_fd(), EV_TX_QUEUE);
        add(self.activate_evt.as_raw_fd(), EV_ACTIVATE);
        for (i, &fd) in self.backend_fds.iter().enumerate() {
            add(fd, EV_BACKEND_BASE + i as u32);
        }
    }

    fn process(&mut self, events: Events, ops: &mut EventOps) {
        let data = events.data();
        let set = events.event_set();
        match data {
            EV_RX_QUEUE | EV_TX_QUEUE | EV_ACTIVATE => {
                let evt = match data {
                    EV_RX_QUEUE => &self.queue_evts[RX_QUEUE],
                    EV_TX_QUEUE => &self.queue_evts[TX_QUEUE],
                    _ => &self.activate_evt,
                };
                // Draining: EAGAIN just means another wakeup consumed it.
                let _ = evt.read();
                if self.active.is_none() {
                    return;
                }
                match data {
                    EV_RX_QUEUE => {
                        self.metrics.rx_queue_kicks += 1;
                        let posted = self.refill_rx();
                        if self.stalled && posted > 0 {
                            let idx = self.backend_indices();
                            self.service_backend(&idx);
                        }
                    }
                    EV_TX_QUEUE => {
                        self.metrics.tx_queue_kicks += 1;
                        self.process_tx();
                    }
                    _ => {
                        // Just activated: post buffers, take pending frames
                        // from both sides.
                        let idx = self.backend_indices();
                        self.refill_rx();
                        self.service_backend(&idx);
                        self.process_tx();
                    }
                }
            }
            d if d >= EV_BACKEND_BASE && ((d - EV_BACKEND_BASE) as usize) < self.backend_fds.len() => {
                let i = (d - EV_BACKEND_BASE) as usize;
                self.metrics.backend_events += 1;
                let broken = set.intersects(EventSet::ERROR | EventSet::HANG_UP);
                if self.active.is_some() {
                    self.service_backend(&[i]);
                } else {
                    self.backend.discard_pending(i);
                    self.set_watch(ops, i, Watch::Paused);
                }
                if broken && still_broken(self.backend_fds[i]) {
                    // A tap whose interface was deleted polls as EPOLLERR
                    // forever: stop watching it (the backend marked the link
                    // down when its read failed). A transient error that the
                    // backend consumed (e.g. a netlink overrun) keeps it.
                    warn!(
                        "virtio-net {}: backend fd {} reported {:?}; no longer watched",
                        self.id, self.backend_fds[i], set
                    );
                    self.set_watch(ops, i, Watch::Removed);
                }
            }
            _ => warn!("virtio-net {}: unexpected event token {data}", self.id),
        }
        self.after_work(ops);
    }
}
