//! The virtio-net device: one RX/TX queue pair, VERSION_1 only.
//!
//! The device owns the virtqueues, through its own split-ring code
//! ([`super::ring`]: rings resolved to host addresses once, at activation).
//! It lends them to a [`NetBackend`] one pass at a time ([`RxQueue`],
//! [`TxQueue`]), which validate every chain the backend pops and every
//! completion it makes, and publish the used rings. All queue and backend
//! work happens on the event-loop thread (`MutEventSubscriber::process`); the
//! transport's vCPU-thread calls (`activate`, `reset`, config access) only
//! store state and wake the loop through `activate_evt`.

use std::os::unix::io::RawFd;
use std::sync::Arc;

use log::{error, warn};

use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EventFd;

use super::backend::NetBackend;
use super::chain::MAX_CHAIN_DESCS;
use super::config::{
    config_bytes, random_mac, read_window, BACKEND_OFFLOAD_MASK, DEVICE_FEATURES, F_MTU, F_STATUS, MTU_DEFAULT,
};
use super::direct::{Held, RxQueue, TxQueue};
use super::event_handler::Watch;
use super::metrics::NetMetrics;
use super::ring::SplitRing;
use crate::rate_limiter::RateLimiter;
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

/// Most TX chains handled per kick before yielding to other events (the rest
/// is picked up by re-signalling our own TX eventfd).
const TX_BUDGET: usize = 512;

/// Most RX passes per call of `run_rx` (each takes at most one lap of the
/// ring) before yielding to other events, as TX does with its budget.
const RX_PASSES: usize = 4;

pub(super) struct Active {
    pub(super) mem: GuestMemory,
    pub(super) rx: SplitRing,
    tx: SplitRing,
    interrupt: Arc<Interrupt>,
    /// Indexed by head: the RX buffers the backend holds (see [`Held`]).
    pub(super) rx_held: Vec<Held>,
    /// Indexed by head: TX frames currently with the backend (their length).
    tx_slots: Vec<Option<u32>>,
    /// Used entries added since the last notification decision.
    pub(super) rx_added: bool,
    tx_added: bool,
    /// The RX buffers the device keeps for metadata-service frames (see
    /// [`super::mmds`]); only with MMDS on this interface.
    pub(super) mmds_reserve: std::collections::VecDeque<super::backend::RxBuffer>,
}

/// A virtio-net device (device type 1) over a [`NetBackend`].
pub struct Net {
    pub(super) id: String,
    mac: [u8; 6],
    /// The MTU in the config space (offered with VIRTIO_NET_F_MTU once set).
    mtu: u16,
    pub(super) backend: Box<dyn NetBackend>,
    avail_features: u64,
    acked_features: u64,
    pub(super) queue_evts: Vec<EventFd>,
    pub(super) activate_evt: EventFd,
    pub(super) active: Option<Active>,
    link_up: bool,
    pub(super) backend_fds: Vec<RawFd>,
    pub(super) watch: Vec<Watch>,
    pub(super) stalled: bool,
    pub(super) metrics: NetMetrics,
    /// Segments of the chain being lent to the backend, reused for every
    /// chain (a `ChainRef`): no allocation per packet.
    pub(super) seg_buf: Vec<(GuestAddress, u32)>,
    /// The metadata service, on an interface `mmds-config` names.
    pub(super) mmds: Option<Box<mmds::MmdsStack>>,
    /// Token buckets on what the guest receives and sends (without buckets
    /// until configured; their timerfds are watched from the start so a
    /// PATCH can add buckets to a running device).
    pub(super) rx_limiter: RateLimiter,
    pub(super) tx_limiter: RateLimiter,
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
        Net {
            id,
            mac: mac.unwrap_or_else(random_mac),
            mtu: MTU_DEFAULT,
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
            seg_buf: Vec::with_capacity(MAX_CHAIN_DESCS),
            mmds: None,
            rx_limiter: RateLimiter::new(None).expect("virtio-net: cannot create a timerfd"),
            tx_limiter: RateLimiter::new(None).expect("virtio-net: cannot create a timerfd"),
        }
    }

    /// Sets the token buckets on received (`rx`) and sent (`tx`) frames;
    /// `None` removes them. Takes effect at once, also on a running device.
    pub fn set_rate_limiters(&mut self, rx: Option<&vmm_config::RateLimiter>, tx: Option<&vmm_config::RateLimiter>) {
        self.rx_limiter.set(rx);
        self.tx_limiter.set(tx);
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Offer VIRTIO_NET_F_MTU with `mtu` (the backend was opened for it:
    /// the NIC's frame cap or the tap's MTU). Before activation only.
    pub fn set_mtu(&mut self, mtu: u16) {
        self.mtu = mtu;
        self.avail_features |= F_MTU;
    }

    /// The MTU the config space reports.
    pub fn mtu(&self) -> u16 {
        self.mtu
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

    // ---------------------------------------------------------- queues ---

    /// Lends the RX queue to the backend: it completes the buffers whose
    /// frames are in and takes new ones while it has room. Returns how many
    /// it took. Leaves RX kicks on when the guest ran out of buffers (so it
    /// kicks when it adds some), off when the backend is full.
    pub(super) fn run_rx(&mut self) -> usize {
        // The metadata service's reserve buffer before the backend's.
        self.inject_mmds();
        let Some(a) = self.active.as_mut() else {
            return 0;
        };
        let mut posted = 0;
        for round in 1.. {
            let limit = self.rx_limiter.is_active().then_some(&mut self.rx_limiter);
            let mut q =
                RxQueue::new(&mut a.rx, &mut a.rx_held, &mut self.metrics, &mut self.seg_buf, &self.id).limited(limit);
            let pass = self.backend.rx(&mut q);
            let (added, popped) = (q.added(), q.popped());
            drop(q);
            self.metrics.rx_passes += 1;
            a.rx_added |= added;
            posted += pass.posted;
            if pass.full {
                a.rx.disable_notification();
                break;
            }
            // Kicks on; re-checked for buffers added before the request
            // became visible. A backend that took none of the buffers there
            // with room left ends the refill (no spinning on it).
            if !a.rx.enable_notification() || popped == 0 {
                break;
            }
            if round == RX_PASSES {
                // More is there still: the rest after the other events had
                // their turn (a ring whose heads never run out, e.g. one the
                // device's own used-ring writes refill, cannot hold the loop).
                if let Err(e) = self.queue_evts[RX_QUEUE].write(1) {
                    error!("virtio-net {}: cannot re-arm RX: {e}", self.id);
                }
                break;
            }
        }
        posted
    }

    /// Lends the TX queue to the backend: it completes what finished and
    /// sends what the guest made available (at most [`TX_BUDGET`] heads;
    /// the rest after other events had their turn).
    pub(super) fn run_tx(&mut self) {
        let Some(a) = self.active.as_mut() else {
            return;
        };
        let limit = self.tx_limiter.is_active().then_some(&mut self.tx_limiter);
        let mut q = TxQueue::new(&mut a.tx, &mut a.tx_slots, &mut self.metrics, &mut self.seg_buf, &self.id, TX_BUDGET)
            .limited(limit)
            .intercepting(self.mmds.as_deref_mut());
        self.backend.tx(&mut q);
        let (added, over_budget) = (q.added(), q.over_budget());
        drop(q);
        a.tx_added |= added;
        if over_budget {
            if let Err(e) = self.queue_evts[TX_QUEUE].write(1) {
                error!("virtio-net {}: cannot re-arm TX: {e}", self.id);
            }
        }
    }

    // ----------------------------------------------------------- backend ---

    // ------------------------------------------------------------ common ---

    /// Raises the used-buffer interrupt if either queue got entries and the
    /// driver wants to hear about them (EVENT_IDX suppression).
    pub(super) fn signal_used(&mut self) {
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
    pub(super) fn check_link(&mut self) {
        let up = self.backend.link_up();
        if up == self.link_up {
            return;
        }
        self.link_up = up;
        if up {
            warn!("virtio-net {}: link up", self.id);
        } else {
            warn!(
                "virtio-net {}: link down (the backend reports no link: failed, or recovering); the VM keeps running",
                self.id
            );
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
        read_window(&config_bytes(self.mac, self.link_up, self.mtu), offset, data);
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
        ctx.check_queues(QUEUE_SIZES.len())?;
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
            tx_slots: vec![None; txn],
            rx_added: false,
            tx_added: false,
            mmds_reserve: std::collections::VecDeque::new(),
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
        v["rx_rate_limiter_throttled"] = self.rx_limiter.throttled().into();
        v["tx_rate_limiter_throttled"] = self.tx_limiter.throttled().into();
        v["rx_rate_limiter_events"] = self.rx_limiter.timer_events().into();
        v["tx_rate_limiter_events"] = self.tx_limiter.timer_events().into();
        if let Some(stack) = self.mmds.as_deref() {
            v["mmds"] = serde_json::to_value(stack.stats()).unwrap_or_default();
        }
        Some(v)
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}
