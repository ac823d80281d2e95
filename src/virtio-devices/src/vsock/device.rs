//! The virtio-vsock device: three queues (RX, TX, event), an 8-byte config
//! space holding the guest's CID, and the [`Muxer`] behind them. Runs on
//! the event-loop thread; the transport calls `activate`/`reset` under the
//! same lock.

use std::path::Path;
use std::sync::Arc;

use log::{debug, error, warn};
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::metrics::VsockMetrics;
use super::packet::{read_tx, RxBuffers, MAX_PAYLOAD};
use super::unix::{BackendError, Muxer};
use super::TYPE_VSOCK;
use crate::interrupt::Interrupt;
use crate::{ActivateContext, ActivateError, GuestMemory, VirtioDevice};

pub const RX_QUEUE: usize = 0;
pub const TX_QUEUE: usize = 1;
pub const EVENT_QUEUE: usize = 2;
pub const QUEUE_SIZE: u16 = 256;
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// The event queue's one event (struct virtio_vsock_event.id).
const EVENT_TRANSPORT_RESET: u32 = 0;

pub(super) struct Active {
    pub(super) mem: GuestMemory,
    pub(super) queues: Vec<Queue>,
    pub(super) interrupt: Arc<Interrupt>,
    pub(super) broken: bool,
}

/// A virtio-vsock device.
pub struct Vsock {
    cid: u64,
    acked_features: u64,
    queue_max_sizes: [u16; 3],
    pub(super) queue_events: [EventFd; 3],
    /// Wakes the event loop for work `reset` leaves to it (closing sockets).
    pub(super) housekeeping: EventFd,
    /// Ticks once a second: host-initiated connections time out. Armed
    /// here, at build time (the VMM thread's filter has no timerfd_settime).
    pub(super) timer: TimerFd,
    pub(super) active: Option<Active>,
    pub(super) muxer: Muxer,
    /// Connections were dropped by a reset: tell the next driver (TRANSPORT_RESET).
    transport_reset_pending: bool,
    scratch: Vec<u8>,
}

impl Vsock {
    /// A device for guest `cid`, listening on `uds_path`.
    pub fn new(cid: u64, uds_path: &Path) -> Result<Vsock, BackendError> {
        let muxer = Muxer::new(cid, uds_path)?;
        let evt = || EventFd::new(EFD_NONBLOCK).map_err(BackendError::EventFd);
        Ok(Vsock {
            cid,
            acked_features: 0,
            queue_max_sizes: [QUEUE_SIZE; 3],
            queue_events: [evt()?, evt()?, evt()?],
            housekeeping: evt()?,
            timer: {
                let mut t = TimerFd::new().map_err(|e| BackendError::EventFd(e.into()))?;
                let tick = std::time::Duration::from_secs(1);
                t.reset(tick, Some(tick)).map_err(|e| BackendError::EventFd(e.into()))?;
                t
            },
            active: None,
            muxer,
            transport_reset_pending: false,
            scratch: vec![0u8; MAX_PAYLOAD],
        })
    }

    pub fn vsock_metrics(&self) -> VsockMetrics {
        self.muxer.metrics.clone()
    }

    pub fn muxer(&self) -> &Muxer {
        &self.muxer
    }

    fn signal(active: &Active) {
        if let Err(e) = active.interrupt.signal_used_queue() {
            error!("virtio-vsock: cannot interrupt the guest: {e}");
        }
    }

    fn queue_broken(active: &mut Active, metrics: &mut VsockMetrics, which: &str, e: impl std::fmt::Display) {
        warn!("virtio-vsock: {which} queue: {e}; device stopped until the driver resets it");
        active.broken = true;
        metrics.queue_errors += 1;
    }

    /// Takes every packet the guest sent.
    pub fn process_tx(&mut self) {
        let Vsock { active, muxer, .. } = self;
        let Some(a) = active.as_mut().filter(|a| !a.broken) else {
            return;
        };
        let mut used = false;
        loop {
            let chain = match a.queues[TX_QUEUE].iter(&a.mem).map(|mut it| it.next()) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    Self::queue_broken(a, &mut muxer.metrics, "TX", e);
                    return;
                }
            };
            let head = chain.head_index();
            match read_tx(&a.mem, chain) {
                Ok(pkt) => {
                    muxer.metrics.tx_packets_count += 1;
                    muxer.metrics.tx_bytes_count += pkt.payload.len() as u64;
                    muxer.on_guest_packet(&pkt);
                }
                Err(e) => {
                    debug!("virtio-vsock: TX packet dropped: {e}");
                    muxer.metrics.malformed_packets += 1;
                }
            }
            if let Err(e) = a.queues[TX_QUEUE].add_used(&a.mem, head, 0) {
                Self::queue_broken(a, &mut muxer.metrics, "TX", e);
                return;
            }
            used = true;
        }
        if used && a.queues[TX_QUEUE].needs_notification(&a.mem).unwrap_or(true) {
            Self::signal(a);
        }
    }

    /// Fills RX buffers with what the connections have for the guest.
    pub fn process_rx(&mut self) {
        let Vsock { active, muxer, scratch, .. } = self;
        let Some(a) = active.as_mut().filter(|a| !a.broken) else {
            return;
        };
        let mut used = false;
        while muxer.has_rx() {
            let chain = match a.queues[RX_QUEUE].iter(&a.mem).map(|mut it| it.next()) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    Self::queue_broken(a, &mut muxer.metrics, "RX", e);
                    return;
                }
            };
            let head = chain.head_index();
            let len = match RxBuffers::new(&a.mem, chain) {
                Ok(bufs) => {
                    let cap = bufs.payload_capacity();
                    match muxer.next_rx(&mut scratch[..cap]) {
                        Some(hdr) => {
                            let payload = &scratch[..hdr.len as usize];
                            match bufs.write(&a.mem, &hdr, payload) {
                                Ok(n) => {
                                    muxer.metrics.rx_packets_count += 1;
                                    muxer.metrics.rx_bytes_count += u64::from(hdr.len);
                                    n
                                }
                                Err(e) => {
                                    // Checked in RxBuffers::new; cannot happen.
                                    warn!("virtio-vsock: RX write failed: {e}");
                                    muxer.metrics.rx_bad_buffers += 1;
                                    0
                                }
                            }
                        }
                        None => {
                            // Nothing after all: give the buffer back.
                            a.queues[RX_QUEUE].go_to_previous_position();
                            break;
                        }
                    }
                }
                Err(e) => {
                    debug!("virtio-vsock: RX buffer dropped: {e}");
                    muxer.metrics.rx_bad_buffers += 1;
                    0
                }
            };
            if let Err(e) = a.queues[RX_QUEUE].add_used(&a.mem, head, len) {
                Self::queue_broken(a, &mut muxer.metrics, "RX", e);
                return;
            }
            used = true;
        }
        if used && a.queues[RX_QUEUE].needs_notification(&a.mem).unwrap_or(true) {
            Self::signal(a);
        }
    }

    /// Posts a pending TRANSPORT_RESET if the driver gave an event buffer.
    pub fn process_event_queue(&mut self) {
        if !self.transport_reset_pending {
            return;
        }
        let Vsock { active, muxer, transport_reset_pending, .. } = self;
        let Some(a) = active.as_mut().filter(|a| !a.broken) else {
            return;
        };
        let chain = match a.queues[EVENT_QUEUE].iter(&a.mem).map(|mut it| it.next()) {
            Ok(Some(c)) => c,
            Ok(None) => return,
            Err(e) => return Self::queue_broken(a, &mut muxer.metrics, "event", e),
        };
        let head = chain.head_index();
        let dest = chain.writable().next().filter(|d| d.len() >= 4).map(|d| d.addr());
        let len = match dest.map(|at| a.mem.write_obj(EVENT_TRANSPORT_RESET.to_le(), GuestAddress(at.0))) {
            Some(Ok(())) => {
                *transport_reset_pending = false;
                muxer.metrics.transport_resets_sent += 1;
                4
            }
            _ => {
                muxer.metrics.rx_bad_buffers += 1;
                0
            }
        };
        if let Err(e) = a.queues[EVENT_QUEUE].add_used(&a.mem, head, len) {
            return Self::queue_broken(a, &mut muxer.metrics, "event", e);
        }
        if a.queues[EVENT_QUEUE].needs_notification(&a.mem).unwrap_or(true) {
            Self::signal(a);
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & VIRTIO_F_VERSION_1;
    }

    /// `struct virtio_vsock_config { le64 guest_cid; }`.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let cfg = self.cid.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|o| cfg.get(o))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        warn!("virtio-vsock: config write of {} bytes at {offset:#x} ignored (read-only)", data.len());
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let ActivateContext { mem, queues, interrupt } = ctx;
        if queues.len() != 3 {
            return Err(ActivateError::QueueCount { got: queues.len(), want: 3 });
        }
        for (i, q) in queues.iter().enumerate() {
            if !q.is_valid(&mem) {
                return Err(ActivateError::InvalidQueue(i));
            }
        }
        self.active = Some(Active { mem, queues, interrupt, broken: false });
        // Buffers posted before DRIVER_OK would otherwise wait for the next kick.
        for (i, e) in self.queue_events.iter().enumerate() {
            if let Err(err) = e.write(1) {
                warn!("virtio-vsock: cannot self-kick queue {i} after activation: {err}");
            }
        }
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        // Packets are moved synchronously under the device lock: once
        // `active` is gone nothing touches guest memory.
        self.active = None;
        self.acked_features = 0;
        if self.muxer.connection_count() > 0 {
            self.transport_reset_pending = true;
        }
        // Dropped now, so a new driver's connections are never caught up in
        // it; their sockets are deregistered and closed on the event-loop
        // thread, which the housekeeping event wakes.
        self.muxer.drop_connections();
        if let Err(e) = self.housekeeping.write(1) {
            error!("virtio-vsock: cannot wake the event loop to close connections: {e}");
        }
    }

    fn metrics(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.muxer.metrics).ok()
    }
}
