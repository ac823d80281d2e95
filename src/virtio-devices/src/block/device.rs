//! The virtio-blk device: one request queue served on the event-loop thread,
//! synchronously, straight between the image file and guest memory.

use std::sync::Arc;

use event_manager::{EventOps, EventSet, Events, MutEventSubscriber};
use log::{debug, error, warn};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::disk::{BlockConfig, BlockError, Disk, ID_BYTES, SECTOR_SIZE};
use super::metrics::BlockMetrics;
use super::request::{Request, RequestType, VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP};
use crate::interrupt::Interrupt;
use crate::rate_limiter::RateLimiter;
use crate::{ActivateContext, ActivateError, GuestMemory, VirtioDevice, TYPE_BLOCK};

/// Size of the single request queue.
pub const QUEUE_SIZE: u16 = 256;

/// Feature bits (VIRTIO 1.2, 5.2.3 and 6).
pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// `struct virtio_blk_config` fields we fill (VIRTIO 1.2, 5.2.4).
const CONFIG_CAPACITY: usize = 0;
const CONFIG_SEG_MAX: usize = 12;
const CONFIG_BLK_SIZE: usize = 20;
/// Up to and including blk_size; later fields belong to features not offered.
pub const CONFIG_LEN: usize = 24;
/// Data segments per request the driver may use: the queue size minus the
/// header and status descriptors.
const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;

/// Requests served per queue kick before the device yields the event loop
/// (and kicks itself to come back): with synchronous I/O and fdatasync on
/// the thread that also serves the network, signals and the API's exits, a
/// guest that keeps the queue full must not hold that thread. At most
/// QUEUE_SIZE-sized requests of SEG_MAX segments, so a pass is bounded.
pub const REQUEST_BUDGET: u32 = 32;

/// What the device holds once the driver set DRIVER_OK.
struct Active {
    mem: GuestMemory,
    queue: Queue,
    interrupt: Arc<Interrupt>,
    /// The guest broke the queue; nothing is processed until reset.
    broken: bool,
}

/// A virtio-blk device on a raw image.
pub struct Block {
    disk: Disk,
    id: [u8; ID_BYTES],
    avail_features: u64,
    acked_features: u64,
    config: [u8; CONFIG_LEN],
    queue_max_sizes: [u16; 1],
    queue_events: [EventFd; 1],
    active: Option<Active>,
    metrics: BlockMetrics,
    /// Requests per pass ([`REQUEST_BUDGET`]; smaller in tests).
    budget: u32,
    /// Token buckets on requests (ops) and their data (bytes); without
    /// buckets until configured. Its timerfd is watched from the start, so
    /// a PATCH may add buckets to a running drive.
    limiter: RateLimiter,
}

/// Event tokens: the queue kick (index 0, its queue) and the rate
/// limiter's timer.
const EV_RATE_LIMITER: u32 = 1;

impl Block {
    pub fn new(cfg: BlockConfig) -> Result<Block, BlockError> {
        if cfg.id.len() > ID_BYTES {
            return Err(BlockError::IdTooLong { len: cfg.id.len(), id: cfg.id });
        }
        let disk = Disk::open_with(&cfg.path, cfg.read_only, cfg.allow_block_device)?;
        let mut id = [0u8; ID_BYTES];
        id[..cfg.id.len()].copy_from_slice(cfg.id.as_bytes());

        let mut avail_features = VIRTIO_F_VERSION_1
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_BLK_F_FLUSH
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_BLK_SIZE;
        if cfg.read_only {
            avail_features |= VIRTIO_BLK_F_RO;
        }
        let mut config = [0u8; CONFIG_LEN];
        config[CONFIG_CAPACITY..CONFIG_CAPACITY + 8].copy_from_slice(&disk.sectors().to_le_bytes());
        config[CONFIG_SEG_MAX..CONFIG_SEG_MAX + 4].copy_from_slice(&SEG_MAX.to_le_bytes());
        config[CONFIG_BLK_SIZE..CONFIG_BLK_SIZE + 4].copy_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
        let queue_event = EventFd::new(EFD_NONBLOCK).map_err(BlockError::EventFd)?;
        let limiter = RateLimiter::new(None).map_err(|e| BlockError::EventFd(std::io::Error::other(e)))?;
        Ok(Block {
            disk,
            id,
            avail_features,
            acked_features: 0,
            config,
            queue_max_sizes: [QUEUE_SIZE],
            queue_events: [queue_event],
            active: None,
            metrics: BlockMetrics::default(),
            budget: REQUEST_BUDGET,
            limiter,
        })
    }

    /// Sets the token buckets on this drive's requests (`None` removes
    /// them); takes effect at once, also on a running drive.
    pub fn set_rate_limiter(&mut self, cfg: Option<&vmm_config::RateLimiter>) {
        self.limiter.set(cfg);
    }

    /// Capacity in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.sectors()
    }

    pub fn read_only(&self) -> bool {
        self.disk.read_only()
    }

    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// A copy of the counters.
    pub fn block_metrics(&self) -> BlockMetrics {
        self.metrics.clone()
    }

    /// Sets the per-pass request budget (tests).
    #[cfg(test)]
    pub(crate) fn set_budget(&mut self, budget: u32) {
        self.budget = budget.max(1);
    }

    /// Serves the available requests, at most the budget of them, then
    /// interrupts the guest if the notification suppression rules (EVENT_IDX)
    /// say so. With requests left over it writes its own queue eventfd, so
    /// the event loop comes back after the other sources had their turn.
    /// Normally called from `process()` on a queue kick.
    pub fn process_queue(&mut self) {
        let Block { disk, id, active, metrics, queue_events, budget, limiter, .. } = self;
        let mut limiter = limiter.is_active().then_some(limiter);
        let Some(active) = active.as_mut() else {
            return;
        };
        if active.broken {
            return;
        }
        let Active { mem, queue, interrupt, broken } = active;
        let mut completed = 0u32;
        let mut served = 0u32;
        // This round follows an enable_notification that saw more chains.
        let mut rechecked = false;
        'outer: loop {
            let served_before = served;
            if let Err(e) = queue.disable_notification(mem) {
                queue_broken(broken, metrics, "cannot disable notifications", &e);
                break;
            }
            loop {
                let chain = match next_chain(queue, mem) {
                    Ok(Some(c)) => c,
                    Ok(None) => break,
                    Err(e) => {
                        queue_broken(broken, metrics, "bad available ring", &e);
                        break 'outer;
                    }
                };
                if served == *budget {
                    // Leave this chain for the next pass (not popped: the
                    // queue's next_avail goes back by one).
                    queue.go_to_previous_position();
                    metrics.budget_yields += 1;
                    if let Err(e) = queue_events[0].write(1) {
                        error!("virtio-blk: cannot re-arm the queue: {e}");
                    }
                    break 'outer;
                }
                let head = chain.head_index();
                let req = Request::parse(chain, mem);
                if let (Some(l), Ok(r)) = (limiter.as_deref_mut(), &req) {
                    let bytes = if matches!(r.kind, RequestType::In | RequestType::Out) { r.data_len } else { 0 };
                    if !l.consume(bytes, 1) {
                        // It stays in the ring (as for the budget); the
                        // limiter's timer brings the device back.
                        queue.go_to_previous_position();
                        metrics.rate_limiter_throttled += 1;
                        break 'outer;
                    }
                }
                served += 1;
                let used_len = handle_request(disk, id, mem, req, metrics);
                match queue.add_used(mem, head, used_len) {
                    Ok(()) => completed += 1,
                    Err(virtio_queue::Error::InvalidDescriptorIndex) => {
                        // The avail ring named a head beyond the queue: there is no
                        // chain to give back (already counted as skipped).
                        debug!("virtio-blk: head index {head} out of range; dropped");
                    }
                    Err(e) => {
                        queue_broken(broken, metrics, "cannot write used ring", &e);
                        break 'outer;
                    }
                }
            }
            match queue.enable_notification(mem) {
                // The avail index said "more" twice running and the ring
                // gave nothing in between: the driver's rings are not
                // consistent (e.g. a used ring whose flags overlap the avail
                // index, flipped by our own notification writes). Stop with
                // kicks on rather than spin on the event loop.
                Ok(true) if rechecked && served == served_before => {
                    debug!("virtio-blk: avail index moves with no chain behind it; pass ended");
                    break;
                }
                Ok(true) => {
                    rechecked = true;
                    continue;
                }
                Ok(false) => break,
                Err(e) => {
                    queue_broken(broken, metrics, "cannot enable notifications", &e);
                    break;
                }
            }
        }
        if completed > 0 {
            // On error, interrupt anyway: a spurious interrupt is harmless, a lost one hangs I/O.
            if queue.needs_notification(mem).unwrap_or(true) {
                if let Err(e) = interrupt.signal_used_queue() {
                    error!("virtio-blk: cannot interrupt the guest: {e}");
                }
            }
        }
    }
}

/// The next available chain, or the reason the available ring is unusable.
fn next_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemory,
) -> Result<Option<DescriptorChain<&'m GuestMemory>>, virtio_queue::Error> {
    let mut iter = queue.iter(mem)?;
    Ok(iter.next())
}

fn queue_broken(broken: &mut bool, metrics: &mut BlockMetrics, what: &str, e: &virtio_queue::Error) {
    warn!("virtio-blk: {what}: {e}; queue stopped until the driver resets the device");
    *broken = true;
    metrics.queue_errors += 1;
}

/// Executes and completes one parsed chain. Returns the used-ring length:
/// bytes written into the chain, status byte included (0 if even that was impossible).
fn handle_request(
    disk: &Disk,
    id: &[u8; ID_BYTES],
    mem: &GuestMemory,
    parsed: Result<Request, super::request::ParseError>,
    metrics: &mut BlockMetrics,
) -> u32 {
    let req = match parsed {
        Ok(r) => r,
        Err(e) => {
            debug!("virtio-blk: malformed request ({})", e.reason.as_str());
            metrics.count_malformed(e.reason);
            return match e.status {
                Some(addr) => {
                    metrics.io_errors += 1;
                    write_status(mem, addr, VIRTIO_BLK_S_IOERR);
                    1
                }
                None => {
                    metrics.skipped += 1;
                    0
                }
            };
        }
    };
    let (status, written) = execute(disk, id, mem, &req, metrics);
    write_status(mem, req.status, status);
    u32::try_from(written + 1).unwrap_or(u32::MAX)
}

/// Runs a checked request; returns its status and the bytes written to the guest.
fn execute(
    disk: &Disk,
    id: &[u8; ID_BYTES],
    mem: &GuestMemory,
    req: &Request,
    metrics: &mut BlockMetrics,
) -> (u8, u64) {
    let ioerr = |metrics: &mut BlockMetrics| {
        metrics.io_errors += 1;
        (VIRTIO_BLK_S_IOERR, 0)
    };
    match req.kind {
        RequestType::In | RequestType::Out => {
            let Some(pos) = checked_range(disk, req.sector, req.data_len) else {
                debug!(
                    "virtio-blk: {:?} of {} bytes at sector {} outside the disk ({} sectors) or not sector-sized",
                    req.kind,
                    req.data_len,
                    req.sector,
                    disk.sectors()
                );
                return ioerr(metrics);
            };
            if req.kind == RequestType::Out && disk.read_only() {
                metrics.read_only_refusals += 1;
                return ioerr(metrics);
            }
            let res = if req.kind == RequestType::In {
                disk.read_to_guest(mem, &req.data, pos)
            } else {
                disk.write_from_guest(mem, &req.data, pos)
            };
            if let Err(e) = res {
                warn!("virtio-blk: {:?} at sector {} of {}: {e}", req.kind, req.sector, disk.path().display());
                return ioerr(metrics);
            }
            if req.kind == RequestType::In {
                metrics.reads += 1;
                metrics.read_bytes += req.data_len;
                (VIRTIO_BLK_S_OK, req.data_len)
            } else {
                metrics.writes += 1;
                metrics.write_bytes += req.data_len;
                (VIRTIO_BLK_S_OK, 0)
            }
        }
        RequestType::Flush => match disk.flush() {
            Ok(()) => {
                metrics.flushes += 1;
                (VIRTIO_BLK_S_OK, 0)
            }
            Err(e) => {
                warn!("virtio-blk: flush of {}: {e}", disk.path().display());
                ioerr(metrics)
            }
        },
        RequestType::GetId => {
            let mut left: &[u8] = &id[..ID_BYTES.min(req.data_len as usize)];
            let written = left.len() as u64;
            for s in &req.data {
                if left.is_empty() {
                    break;
                }
                let n = left.len().min(s.len as usize);
                if mem.write_slice(&left[..n], s.addr).is_err() {
                    return ioerr(metrics);
                }
                left = &left[n..];
            }
            metrics.get_ids += 1;
            (VIRTIO_BLK_S_OK, written)
        }
        RequestType::Unsupported(t) => {
            debug!("virtio-blk: unsupported request type {t}");
            metrics.unsupported += 1;
            (VIRTIO_BLK_S_UNSUPP, 0)
        }
    }
}

/// The disk byte offset of a data transfer, if it is whole sectors and fits on the disk.
fn checked_range(disk: &Disk, sector: u64, len: u64) -> Option<u64> {
    if !len.is_multiple_of(SECTOR_SIZE) {
        return None;
    }
    let end_sector = sector.checked_add(len / SECTOR_SIZE)?;
    (end_sector <= disk.sectors()).then(|| sector * SECTOR_SIZE)
}

fn write_status(mem: &GuestMemory, addr: GuestAddress, status: u8) {
    // The address was checked at parse time; a failure here is not the guest's
    // to see, so it is only logged.
    if let Err(e) = mem.write_obj(status, addr) {
        warn!("virtio-blk: cannot write status at {:#x}: {e}", addr.0);
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_max_sizes
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn set_acked_features(&mut self, features: u64) {
        self.acked_features = features & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Ok(start) = usize::try_from(offset) else {
            return;
        };
        if start >= CONFIG_LEN {
            debug!("virtio-blk: config read at {offset:#x} beyond the fields offered");
            return;
        }
        let end = (start + data.len()).min(CONFIG_LEN);
        data[..end - start].copy_from_slice(&self.config[start..end]);
    }

    fn write_config(&mut self, offset: u64, data: &[u8]) {
        // Only `writeback` is writable, and only with CONFIG_WCE, not offered.
        warn!("virtio-blk: config write of {} bytes at {offset:#x} ignored (read-only)", data.len());
    }

    fn queue_events(&self) -> &[EventFd] {
        &self.queue_events
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        let (mem, queue, interrupt) = ctx.into_single_queue()?;
        self.active = Some(Active { mem, queue, interrupt, broken: false });
        // Requests the driver queued before DRIVER_OK would otherwise wait
        // for the next kick.
        if let Err(e) = self.queue_events[0].write(1) {
            warn!("virtio-blk: cannot self-kick the queue after activation: {e}");
        }
        Ok(())
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn reset(&mut self) {
        // I/O is synchronous under the device lock, so once the state is
        // dropped nothing writes guest memory any more.
        self.active = None;
        self.acked_features = 0;
    }

    fn metrics(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.metrics).ok()
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
}

impl MutEventSubscriber for Block {
    fn init(&mut self, ops: &mut EventOps) {
        for (i, evt) in self.queue_events.iter().enumerate() {
            if let Err(e) = ops.add(Events::with_data(evt, i as u32, EventSet::IN)) {
                error!("virtio-blk: cannot register queue {i} eventfd: {e}");
            }
        }
        if let Err(e) = ops.add(Events::with_data(&self.limiter, EV_RATE_LIMITER, EventSet::IN)) {
            error!("virtio-blk: cannot register the rate limiter's timer: {e}");
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
        let index = events.data() as usize;
        let Some(evt) = self.queue_events.get(index) else {
            warn!("virtio-blk: event for unknown source {index}");
            return;
        };
        // Drain the kick; EAGAIN just means it was already consumed.
        let _ = evt.read();
        if self.active.is_none() {
            self.metrics.kicks_before_activation += 1;
            return;
        }
        self.process_queue();
    }
}

impl Block {
    /// Puts the image at `path` behind this device (Firecracker's
    /// `PATCH /drives/{id}` on a running VM): opened like the first one, with
    /// the same read-only mode; the capacity is updated and, once the driver
    /// is up, a configuration-change interrupt makes the guest re-read it.
    /// Requests are served under the device lock, so none straddles the swap.
    /// On error the old image stays.
    pub fn replace_disk(&mut self, path: &std::path::Path) -> Result<(), BlockError> {
        let disk = Disk::open(path, self.disk.read_only())?;
        let old = std::mem::replace(&mut self.disk, disk);
        self.config[CONFIG_CAPACITY..CONFIG_CAPACITY + 8].copy_from_slice(&self.disk.sectors().to_le_bytes());
        log::info!(
            "virtio-blk: {} replaced by {} ({} sectors)",
            old.path().display(),
            self.disk.path().display(),
            self.disk.sectors()
        );
        if let Some(active) = &self.active {
            if let Err(e) = active.interrupt.signal_config_change() {
                error!("virtio-blk: cannot tell the guest its disk changed: {e}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod replace_disk_tests {
    use super::super::test_util::image;
    use super::*;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    #[test]
    fn a_new_image_brings_its_capacity_and_a_config_interrupt() {
        let (_d1, first) = image(&[1u8; 4 * 512]);
        let (_d2, second) = image(&[2u8; 16 * 512]);
        let mut blk =
            Block::new(BlockConfig { path: first, read_only: true, id: "d".into(), allow_block_device: false })
                .unwrap();
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let vq = MockSplitQueue::new(&mem, 16);
        let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
        blk.set_acked_features(VIRTIO_F_VERSION_1);
        let q: Queue = vq.create_queue().unwrap();
        blk.activate(ActivateContext { mem, queues: vec![q], interrupt: irq.clone() }).unwrap();

        blk.replace_disk(&second).unwrap();
        assert_eq!(blk.capacity(), 16);
        let mut cap = [0u8; 8];
        blk.read_config(0, &mut cap);
        assert_eq!(u64::from_le_bytes(cap), 16);
        assert!(blk.read_only(), "the drive keeps its read-only mode");
        assert_eq!(irq.irqfd().read().unwrap(), 1);
        assert_ne!(irq.status() & 2, 0, "VIRTIO_MMIO_INT_CONFIG is set");

        // A path that cannot be opened leaves the current image in place.
        let e = blk.replace_disk(std::path::Path::new("/nonexistent/disk.img")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/disk.img"), "{e}");
        assert_eq!(blk.capacity(), 16);
    }
}
