//! virtio-rng (VIRTIO 1.2, 5.4): Firecracker's "entropy" device. One
//! request queue; every writable buffer the driver posts is filled from the
//! host's getrandom(2), on the event-loop thread, within its rate limiter
//! (ops: requests, bandwidth: the bytes a request asks for).

use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{debug, error, warn};
use serde::Serialize;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::interrupt::Interrupt;
use crate::rate_limiter::RateLimiter;
use crate::{ActivateContext, ActivateError, GuestMemory, VirtioDevice};

/// virtio device id of an entropy source.
pub const TYPE_RNG: u32 = 4;
/// Size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;
/// Most bytes one request gets: bounds the work a single kick causes (the
/// driver asks again for more).
pub const MAX_BYTES_PER_REQUEST: usize = 64 * 1024;
const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// The device's counters (`GET /metrics`, the metrics file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RngMetrics {
    /// Requests completed.
    pub requests: u64,
    /// Random bytes written into guest buffers.
    pub bytes: u64,
    /// Requests that got no bytes: getrandom failed, or a buffer outside guest memory.
    pub errors: u64,
    /// The guest broke the queue (it stays stopped until reset).
    pub queue_errors: u64,
    pub kicks_before_activation: u64,
    /// Times the rate limiter stopped the queue (a request waited in the
    /// ring for the limiter's timer).
    pub rate_limiter_throttled: u64,
    /// Throttled periods that ended (the limiter's timer events).
    pub rate_limiter_events: u64,
}

/// Event tokens: the queue kick and the rate limiter's timer.
const EV_QUEUE: u32 = 0;
const EV_RATE_LIMITER: u32 = 1;

struct Active {
    mem: GuestMemory,
    queue: Queue,
    interrupt: Arc<Interrupt>,
    broken: bool,
}

/// A virtio-rng device.
pub struct Rng {
    acked_features: u64,
    queue_max_sizes: [u16; 1],
    queue_events: [EventFd; 1],
    active: Option<Active>,
    metrics: RngMetrics,
    /// Without buckets until configured (its timerfd is watched from the start).
    limiter: RateLimiter,
}

impl Rng {
    pub fn new() -> std::io::Result<Rng> {
        Ok(Rng {
            acked_features: 0,
            queue_max_sizes: [QUEUE_SIZE],
            queue_events: [EventFd::new(EFD_NONBLOCK)?],
            active: None,
            metrics: RngMetrics::default(),
            limiter: RateLimiter::new(None).map_err(std::io::Error::other)?,
        })
    }

    /// Sets the token buckets on requests (`None` removes them).
    pub fn set_rate_limiter(&mut self, cfg: Option<&vmm_config::RateLimiter>) {
        self.limiter.set(cfg);
    }

    pub fn rng_metrics(&self) -> RngMetrics {
        self.metrics.clone()
    }

    /// Serves every available request, then interrupts the guest.
    pub fn process_queue(&mut self) {
        let Rng { active, metrics, limiter, .. } = self;
        let Some(Active { mem, queue, interrupt, broken }) = active.as_mut() else {
            return;
        };
        let mut limiter = limiter.is_active().then_some(limiter);
        if *broken {
            return;
        }
        let mut completed = 0u32;
        loop {
            let chain = match queue.iter(&*mem).map(|mut it| it.next()) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    warn!("virtio-rng: bad available ring: {e}; queue stopped until the driver resets the device");
                    *broken = true;
                    metrics.queue_errors += 1;
                    break;
                }
            };
            if let Some(l) = limiter.as_deref_mut() {
                let asked: usize = chain.clone().writable().map(|d| d.len() as usize).sum();
                if !l.consume(asked.min(MAX_BYTES_PER_REQUEST) as u64, 1) {
                    // It stays in the ring; the limiter's timer comes back.
                    queue.go_to_previous_position();
                    metrics.rate_limiter_throttled += 1;
                    break;
                }
            }
            let head = chain.head_index();
            let len = fill_chain(mem, chain, metrics);
            match queue.add_used(&*mem, head, len) {
                Ok(()) => completed += 1,
                Err(virtio_queue::Error::InvalidDescriptorIndex) => debug!("virtio-rng: head {head} out of range"),
                Err(e) => {
                    warn!("virtio-rng: cannot write used ring: {e}; queue stopped until the driver resets the device");
                    *broken = true;
                    metrics.queue_errors += 1;
                    break;
                }
            }
        }
        if completed > 0 && queue.needs_notification(&*mem).unwrap_or(true) {
            if let Err(e) = interrupt.signal_used_queue() {
                error!("virtio-rng: cannot interrupt the guest: {e}");
            }
        }
    }
}

/// Fill `buf` from getrandom(2).
fn getrandom(buf: &mut [u8]) -> std::io::Result<()> {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: the kernel writes at most `rest.len()` bytes into `rest`,
        // which we own mutably for the call.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        done += n as usize;
    }
    Ok(())
}

/// Writes random bytes into the chain's writable buffers (at most
/// [`MAX_BYTES_PER_REQUEST`]); returns how many.
fn fill_chain(mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>, metrics: &mut RngMetrics) -> u32 {
    let mut written = 0usize;
    let mut buf = Vec::new();
    for desc in chain.writable() {
        let want = (desc.len() as usize).min(MAX_BYTES_PER_REQUEST - written);
        if want == 0 {
            break;
        }
        buf.resize(want, 0);
        let ok = getrandom(&mut buf)
            .map_err(|e| warn!("virtio-rng: getrandom failed: {e}"))
            .and_then(|()| {
                mem.write_slice(&buf, GuestAddress(desc.addr().0))
                    .map_err(|e| debug!("virtio-rng: buffer at {:#x}: {e}", desc.addr().0))
            })
            .is_ok();
        if !ok {
            break;
        }
        written += want;
    }
    metrics.requests += 1;
    if written == 0 {
        metrics.errors += 1;
    }
    metrics.bytes += written as u64;
    // At most MAX_BYTES_PER_REQUEST, so it fits.
    written as u32
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
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

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // virtio-rng has no configuration space.
        debug!("virtio-rng: config read at {offset:#x}");
        data.fill(0);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        warn!("virtio-rng: config write of {} bytes at {offset:#x} ignored (no config space)", data.len());
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let (mem, queue, interrupt) = ctx.into_single_queue()?;
        self.active = Some(Active { mem, queue, interrupt, broken: false });
        // Buffers posted before DRIVER_OK would otherwise wait for the next kick.
        if let Err(e) = self.queue_events[0].write(1) {
            warn!("virtio-rng: cannot self-kick the queue after activation: {e}");
        }
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        // Requests are served synchronously under the device lock.
        self.active = None;
        self.acked_features = 0;
    }

    fn metrics(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.metrics).ok()
    }
}

impl MutEventSubscriber for Rng {
    fn init(&mut self, ops: &mut EventOps) {
        if let Err(e) = ops.add(Events::with_data(&self.queue_events[0], EV_QUEUE, EventSet::IN)) {
            error!("virtio-rng: cannot register the queue eventfd: {e}");
        }
        if let Err(e) = ops.add(Events::with_data(&self.limiter, EV_RATE_LIMITER, EventSet::IN)) {
            error!("virtio-rng: cannot register the rate limiter's timer: {e}");
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        if events.data() == EV_RATE_LIMITER {
            if self.limiter.timer_event() {
                self.metrics.rate_limiter_events += 1;
                self.process_queue();
            }
            return;
        }
        // Drain the kick; EAGAIN just means it was already consumed.
        let _ = self.queue_events[0].read();
        if self.active.is_none() {
            self.metrics.kicks_before_activation += 1;
            return;
        }
        self.process_queue();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::desc::split::Descriptor as SplitDescriptor;
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const USED_RING: u64 = 0x8000;
    const BUF: u64 = 0x2_0000;

    fn setup(mem: &GuestMemory, vq: &MockSplitQueue<GuestMemory>) -> (Rng, Arc<Interrupt>) {
        let mut rng = Rng::new().unwrap();
        rng.set_acked_features(VIRTIO_F_VERSION_1);
        let mut q: Queue = vq.create_queue().unwrap();
        // The mock's used ring overlaps its available ring (see block/tests.rs).
        q.set_used_ring_address(Some(USED_RING as u32), Some(0));
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        rng.activate(ActivateContext { mem: mem.clone(), queues: vec![q], interrupt: irq.clone() }).unwrap();
        let _ = rng.queue_events()[0].read();
        (rng, irq)
    }

    fn used(mem: &GuestMemory, i: u64) -> (u32, u32) {
        let at = |off: u64| mem.read_obj::<u32>(GuestAddress(USED_RING + 4 + 8 * i + off)).unwrap();
        (at(0), at(4))
    }

    #[test]
    fn writable_buffers_get_random_bytes() {
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let (mut rng, irq) = setup(&mem, &vq);
        // Two writable buffers in one chain (flags: NEXT=1, WRITE=2).
        let descs = [
            RawDescriptor::from(SplitDescriptor::new(BUF, 64, 2 | 1, 1)),
            RawDescriptor::from(SplitDescriptor::new(BUF + 0x1000, 32, 2, 0)),
        ];
        vq.add_desc_chains(&descs, 0).unwrap();
        rng.process_queue();
        assert_eq!(used(&mem, 0), (0, 96));
        let mut a = [0u8; 64];
        mem.read_slice(&mut a, GuestAddress(BUF)).unwrap();
        assert!(a.iter().any(|&b| b != 0), "64 random bytes are not all zero");
        assert_eq!(irq.irqfd().read().unwrap(), 1);
        let m = rng.rng_metrics();
        assert_eq!((m.requests, m.bytes, m.errors), (1, 96, 0));
    }

    #[test]
    fn requests_are_capped_and_bad_buffers_get_nothing() {
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let (mut rng, _irq) = setup(&mem, &vq);
        let big = RawDescriptor::from(SplitDescriptor::new(BUF, 0x8_0000, 2, 0));
        vq.add_desc_chains(&[big], 0).unwrap();
        rng.process_queue();
        assert_eq!(used(&mem, 0), (0, MAX_BYTES_PER_REQUEST as u32));
        // A buffer outside guest memory, and a read-only one: 0 bytes, no crash.
        let outside = RawDescriptor::from(SplitDescriptor::new(0x4000_0000, 16, 2, 0));
        vq.add_desc_chains(&[outside], 1).unwrap();
        rng.process_queue();
        assert_eq!(used(&mem, 1), (1, 0));
        let readable = RawDescriptor::from(SplitDescriptor::new(BUF, 16, 0, 0));
        vq.add_desc_chains(&[readable], 2).unwrap();
        rng.process_queue();
        assert_eq!(used(&mem, 2), (2, 0));
        assert_eq!(rng.rng_metrics().errors, 2);
        assert_eq!(rng.device_type(), TYPE_RNG);
    }

    #[test]
    fn the_rate_limiter_holds_requests_until_its_timer() {
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let (mut rng, _irq) = setup(&mem, &vq);
        // 100 bytes per 100 ms.
        let tb = vmm_config::TokenBucket { size: 100, one_time_burst: None, refill_time: 100 };
        rng.set_rate_limiter(Some(&vmm_config::RateLimiter { bandwidth: Some(tb), ops: None }));
        for i in 0..2u16 {
            let d = RawDescriptor::from(SplitDescriptor::new(BUF + 0x1000 * u64::from(i), 64, 2, 0));
            vq.add_desc_chains(&[d], i).unwrap();
        }
        let rng = Arc::new(std::sync::Mutex::new(rng));
        let mut em = event_manager::EventManager::<Arc<std::sync::Mutex<Rng>>>::new().unwrap();
        event_manager::SubscriberOps::add_subscriber(&mut em, rng.clone());
        let t0 = std::time::Instant::now();
        rng.lock().unwrap().process_queue();
        assert_eq!(rng.lock().unwrap().rng_metrics().requests, 1, "64 of 100 bytes: the second waits");
        assert_eq!(rng.lock().unwrap().rng_metrics().rate_limiter_throttled, 1);
        while rng.lock().unwrap().rng_metrics().requests < 2 {
            assert!(t0.elapsed() < std::time::Duration::from_secs(2), "the held request was never served");
            em.run_with_timeout(50).unwrap();
        }
        assert!(t0.elapsed() >= std::time::Duration::from_millis(25), "served early: {:?}", t0.elapsed());
        assert_eq!(used(&mem, 1), (1, 64));
        assert_eq!(rng.lock().unwrap().rng_metrics().rate_limiter_events, 1);
    }
}
