//! The virtio-mmio register file of one device (VIRTIO 1.2, 4.2.2-4.2.3).
//!
//! Runs on vCPU threads: every guest access to the device's 4 KiB window ends up
//! in [`MmioTransport::read`] / [`MmioTransport::write`]. The guest driver is
//! untrusted, so every access it makes is checked (width, alignment, offset,
//! device state); a bad one is logged with `warn!` and ignored.

use std::sync::{Arc, Mutex, MutexGuard};

use log::{debug, error, warn};
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

use super::regs::*;
use crate::interrupt::Interrupt;
use crate::{ActivateContext, ActivateError, GuestMemory, VirtioDevice};

/// `VIRTIO_RING_F_EVENT_IDX`: the transport turns it on in each queue it hands over.
const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;

/// Which half of a 64-bit queue address a register write sets.
#[derive(Clone, Copy)]
enum Half {
    Low,
    High,
}

/// Which queue address a register write sets.
#[derive(Clone, Copy)]
enum QueueArea {
    Desc,
    Driver,
    Device,
}

/// One device behind a virtio-mmio window.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemory,
    interrupt: Arc<Interrupt>,

    /// Cached once: the device's identity and offer never change.
    device_type: u32,
    device_features: u64,

    device_status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    shm_sel: u32,
    /// The transport's view of each queue, as configured by the driver. Copies
    /// go to the device on DRIVER_OK; these stay readable until reset.
    queues: Vec<Queue>,
    config_generation: u32,
}

impl MmioTransport {
    pub fn new(device: Arc<Mutex<dyn VirtioDevice>>, mem: GuestMemory, interrupt: Arc<Interrupt>) -> Self {
        let (device_type, device_features, max_sizes) = {
            let dev = lock(&device);
            (dev.device_type(), dev.avail_features(), dev.queue_max_sizes().to_vec())
        };
        if device_features & VIRTIO_F_VERSION_1 == 0 {
            warn!(
                "virtio-mmio: device type {device_type} does not offer VIRTIO_F_VERSION_1; \
                 the transport adds it (modern interface only)"
            );
        }
        let queues = max_sizes.iter().enumerate().map(|(i, &max)| new_queue(i, max)).collect();
        MmioTransport {
            device,
            mem,
            interrupt,
            device_type,
            device_features: device_features | VIRTIO_F_VERSION_1,
            device_status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            shm_sel: 0,
            queues,
            config_generation: 0,
        }
    }

    /// The device status register as the driver sees it.
    pub fn device_status(&self) -> u32 {
        self.device_status
    }

    /// The interrupt this transport raises (its status backs InterruptStatus).
    pub fn interrupt(&self) -> &Arc<Interrupt> {
        &self.interrupt
    }

    /// The device behind this transport.
    pub fn device(&self) -> &Arc<Mutex<dyn VirtioDevice>> {
        &self.device
    }

    /// Bumps ConfigGeneration and raises a configuration change interrupt; for
    /// the VMM when it changed the device's configuration space (e.g. resize).
    pub fn notify_config_change(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if let Err(e) = self.interrupt.signal_config_change() {
            error!("virtio-mmio: cannot raise config interrupt: {e}");
        }
    }

    /// A guest read of `data.len()` bytes at `offset` into the window.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG {
            if !config_access_ok(offset, data.len()) {
                warn!("virtio-mmio: bad config read of {} bytes at {offset:#x}", data.len());
                data.fill(0);
                return;
            }
            lock(&self.device).read_config(offset - CONFIG, data);
            return;
        }
        if !register_access_ok(offset, data.len()) {
            warn!("virtio-mmio: bad register read of {} bytes at {offset:#x} (must be 4 bytes, aligned)", data.len());
            data.fill(0);
            return;
        }
        let value = match self.read_register(offset) {
            Some(v) => v,
            None => {
                warn!("virtio-mmio: read of write-only or unknown register {offset:#x}");
                0
            }
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    /// A guest write of `data` at `offset` into the window.
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG {
            if !config_access_ok(offset, data.len()) {
                warn!("virtio-mmio: bad config write of {} bytes at {offset:#x}", data.len());
                return;
            }
            lock(&self.device).write_config(offset - CONFIG, data);
            return;
        }
        if !register_access_ok(offset, data.len()) {
            warn!("virtio-mmio: bad register write of {} bytes at {offset:#x} (must be 4 bytes, aligned)", data.len());
            return;
        }
        let mut bytes = [0u8; 4];
        bytes.copy_from_slice(data);
        self.write_register(offset, u32::from_le_bytes(bytes));
    }

    fn read_register(&mut self, offset: u64) -> Option<u32> {
        let v = match offset {
            MAGIC_VALUE => MMIO_MAGIC,
            VERSION => MMIO_VERSION_MODERN,
            DEVICE_ID => self.device_type,
            VENDOR_ID => MMIO_VENDOR_ID,
            DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            // Write-only in the spec; reading back what was written helps debugging.
            QUEUE_NUM => self.selected_queue().map_or(0, |q| u32::from(q.size())),
            QUEUE_DESC_LOW => self.selected_queue().map_or(0, |q| q.desc_table() as u32),
            QUEUE_DESC_HIGH => self.selected_queue().map_or(0, |q| (q.desc_table() >> 32) as u32),
            QUEUE_DRIVER_LOW => self.selected_queue().map_or(0, |q| q.avail_ring() as u32),
            QUEUE_DRIVER_HIGH => self.selected_queue().map_or(0, |q| (q.avail_ring() >> 32) as u32),
            QUEUE_DEVICE_LOW => self.selected_queue().map_or(0, |q| q.used_ring() as u32),
            QUEUE_DEVICE_HIGH => self.selected_queue().map_or(0, |q| (q.used_ring() >> 32) as u32),
            INTERRUPT_STATUS => self.interrupt.status(),
            STATUS => self.device_status,
            // No shared memory regions: all ones means "does not exist" (4.2.2).
            SHM_LEN_LOW | SHM_LEN_HIGH | SHM_BASE_LOW | SHM_BASE_HIGH => u32::MAX,
            QUEUE_RESET => 0,
            CONFIG_GENERATION => self.config_generation,
            _ => return None,
        };
        Some(v)
    }

    fn write_register(&mut self, offset: u64, v: u32) {
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_sel = v,
            DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            DRIVER_FEATURES => self.write_driver_features(v),
            QUEUE_SEL => self.queue_sel = v,
            QUEUE_NUM => self.write_queue_num(v),
            QUEUE_READY => self.write_queue_ready(v),
            QUEUE_DESC_LOW => self.write_queue_addr(QueueArea::Desc, Half::Low, v),
            QUEUE_DESC_HIGH => self.write_queue_addr(QueueArea::Desc, Half::High, v),
            QUEUE_DRIVER_LOW => self.write_queue_addr(QueueArea::Driver, Half::Low, v),
            QUEUE_DRIVER_HIGH => self.write_queue_addr(QueueArea::Driver, Half::High, v),
            QUEUE_DEVICE_LOW => self.write_queue_addr(QueueArea::Device, Half::Low, v),
            QUEUE_DEVICE_HIGH => self.write_queue_addr(QueueArea::Device, Half::High, v),
            QUEUE_NOTIFY => self.write_queue_notify(v),
            INTERRUPT_ACK => self.interrupt.ack(v),
            STATUS => self.write_status(v),
            SHM_SEL => self.shm_sel = v,
            _ => warn!("virtio-mmio: write {v:#x} to read-only or unknown register {offset:#x}"),
        }
    }

    fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    fn write_driver_features(&mut self, v: u32) {
        if self.device_status & (STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK)
            != (STATUS_ACKNOWLEDGE | STATUS_DRIVER)
        {
            warn!(
                "virtio-mmio: DriverFeatures write {v:#x} in status {:#x} ignored \
                 (only allowed after DRIVER and before FEATURES_OK)",
                self.device_status
            );
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v),
            1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32),
            sel if v != 0 => {
                warn!("virtio-mmio: driver accepts features {v:#x} in page {sel}, which offers none")
            }
            _ => {}
        }
    }

    /// The selected queue, if the driver may configure queues now: after
    /// FEATURES_OK, before DRIVER_OK, and only while the queue is not ready.
    fn configurable_queue(&mut self, what: &str) -> Option<&mut Queue> {
        if self.device_status & (STATUS_FEATURES_OK | STATUS_DRIVER_OK | STATUS_FAILED) != STATUS_FEATURES_OK {
            warn!(
                "virtio-mmio: {what} write in status {:#x} ignored (queues are set up after \
                 FEATURES_OK and before DRIVER_OK)",
                self.device_status
            );
            return None;
        }
        let sel = self.queue_sel;
        let Some(q) = self.queues.get_mut(sel as usize) else {
            warn!("virtio-mmio: {what} write for queue {sel}, which does not exist");
            return None;
        };
        if q.ready() {
            warn!("virtio-mmio: {what} write for queue {sel} while it is ready ignored");
            return None;
        }
        Some(q)
    }

    fn write_queue_num(&mut self, v: u32) {
        let sel = self.queue_sel;
        if let Some(q) = self.configurable_queue("QueueNum") {
            let ok = u16::try_from(v).is_ok_and(|size| q.try_set_size(size).is_ok());
            if !ok {
                warn!("virtio-mmio: queue {sel} size {v} refused (must be a power of two, 1..={})", q.max_size());
            }
        }
    }

    fn write_queue_ready(&mut self, v: u32) {
        let sel = self.queue_sel;
        match v {
            0 => {
                // Drivers clear QueueReady when tearing queues down, also after a
                // reset; that's harmless whenever the device isn't running.
                if self.device_status & STATUS_DRIVER_OK != 0 {
                    warn!("virtio-mmio: QueueReady=0 for queue {sel} after DRIVER_OK ignored");
                } else if let Some(q) = self.queues.get_mut(sel as usize) {
                    q.set_ready(false);
                }
            }
            1 => {
                if let Some(q) = self.configurable_queue("QueueReady") {
                    q.set_ready(true);
                }
            }
            _ => warn!("virtio-mmio: QueueReady value {v} for queue {sel} ignored (0 or 1)"),
        }
    }

    fn write_queue_addr(&mut self, area: QueueArea, half: Half, v: u32) {
        let sel = self.queue_sel;
        let Some(q) = self.configurable_queue("queue address") else {
            return;
        };
        let old = match area {
            QueueArea::Desc => q.desc_table(),
            QueueArea::Driver => q.avail_ring(),
            QueueArea::Device => q.used_ring(),
        };
        let new = match half {
            Half::Low => (old & !0xffff_ffff) | u64::from(v),
            Half::High => (old & 0xffff_ffff) | (u64::from(v) << 32),
        };
        let res = match area {
            QueueArea::Desc => q.try_set_desc_table_address(GuestAddress(new)),
            QueueArea::Driver => q.try_set_avail_ring_address(GuestAddress(new)),
            QueueArea::Device => q.try_set_used_ring_address(GuestAddress(new)),
        };
        if let Err(e) = res {
            warn!("virtio-mmio: queue {sel} address {new:#x} refused: {e}");
        }
    }

    fn write_queue_notify(&mut self, v: u32) {
        // Normally KVM's ioeventfd catches this write; forward it if it didn't.
        if self.device_status & STATUS_DRIVER_OK == 0 {
            debug!("virtio-mmio: QueueNotify {v} before DRIVER_OK");
        }
        let dev = lock(&self.device);
        match dev.queue_events().get(v as usize) {
            Some(evt) => {
                if let Err(e) = evt.write(1) {
                    error!("virtio-mmio: cannot signal queue {v} event: {e}");
                }
            }
            None => warn!("virtio-mmio: QueueNotify for queue {v}, which does not exist"),
        }
    }

    fn write_status(&mut self, v: u32) {
        if v == 0 {
            self.reset();
            return;
        }
        // DEVICE_NEEDS_RESET is the device's bit: the driver echoing it is fine.
        let old = self.device_status;
        let v = (v & !STATUS_DEVICE_NEEDS_RESET) | (old & STATUS_DEVICE_NEEDS_RESET);
        if old & !v != 0 {
            warn!("virtio-mmio: status {v:#x} would clear bits of {old:#x}; ignored (write 0 to reset)");
            return;
        }
        let new_bits = v & !old;
        if new_bits & STATUS_FAILED != 0 {
            warn!("virtio-mmio: driver set FAILED on device type {}", self.device_type);
            self.device_status |= STATUS_FAILED;
        }
        // Take the remaining new bits in the order the spec's init sequence sets them.
        for bit in [STATUS_ACKNOWLEDGE, STATUS_DRIVER, STATUS_FEATURES_OK, STATUS_DRIVER_OK] {
            if new_bits & bit == 0 {
                continue;
            }
            if !self.set_status_bit(bit) {
                return;
            }
        }
        let unknown =
            new_bits & !(STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK | STATUS_FAILED);
        if unknown != 0 {
            warn!("virtio-mmio: unknown status bits {unknown:#x} ignored");
        }
    }

    /// Applies one status bit; false if the driver got the sequence wrong.
    fn set_status_bit(&mut self, bit: u32) -> bool {
        let s = self.device_status;
        let (needed, name) = match bit {
            STATUS_ACKNOWLEDGE => (0, "ACKNOWLEDGE"),
            STATUS_DRIVER => (STATUS_ACKNOWLEDGE, "DRIVER"),
            STATUS_FEATURES_OK => (STATUS_ACKNOWLEDGE | STATUS_DRIVER, "FEATURES_OK"),
            _ => (STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK, "DRIVER_OK"),
        };
        if s & needed != needed || s & (STATUS_FAILED | STATUS_DEVICE_NEEDS_RESET) != 0 {
            warn!("virtio-mmio: {name} set in status {s:#x} ignored (out of sequence)");
            return false;
        }
        match bit {
            STATUS_FEATURES_OK => self.features_ok(),
            STATUS_DRIVER_OK => self.driver_ok(),
            _ => {
                self.device_status |= bit;
                true
            }
        }
    }

    /// Accepts the driver's features if they are a subset of the offer and
    /// include VERSION_1; otherwise FEATURES_OK stays clear, which tells the
    /// driver the device refused them.
    fn features_ok(&mut self) -> bool {
        let unoffered = self.driver_features & !self.device_features;
        if unoffered != 0 {
            warn!(
                "virtio-mmio: driver accepted features {unoffered:#x} the device does not offer; \
                 FEATURES_OK refused"
            );
            return false;
        }
        if self.driver_features & VIRTIO_F_VERSION_1 == 0 {
            warn!("virtio-mmio: driver did not accept VIRTIO_F_VERSION_1 (legacy drivers are not supported); FEATURES_OK refused");
            return false;
        }
        lock(&self.device).set_acked_features(self.driver_features);
        self.device_status |= STATUS_FEATURES_OK;
        true
    }

    /// Hands copies of the queues to the device and starts it.
    fn driver_ok(&mut self) -> bool {
        match self.activate() {
            Ok(()) => {
                self.device_status |= STATUS_DRIVER_OK;
                true
            }
            Err(e) => {
                error!("virtio-mmio: activating device type {} failed: {e}; device needs reset", self.device_type);
                self.device_status |= STATUS_DEVICE_NEEDS_RESET;
                if let Err(e) = self.interrupt.signal_config_change() {
                    error!("virtio-mmio: cannot raise config interrupt: {e}");
                }
                false
            }
        }
    }

    fn activate(&mut self) -> Result<(), ActivateError> {
        let event_idx = self.driver_features & VIRTIO_RING_F_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter_mut().enumerate() {
            if q.ready() && !q.is_valid(&self.mem) {
                return Err(ActivateError::InvalidQueue(i));
            }
            q.set_event_idx(event_idx);
            queues.push(Queue::try_from(q.state()).map_err(|_| ActivateError::InvalidQueue(i))?);
        }
        let ctx = ActivateContext { mem: self.mem.clone(), queues, interrupt: self.interrupt.clone() };
        lock(&self.device).activate(ctx)
    }

    /// Device reset (status 0): stops the device and forgets all driver state.
    fn reset(&mut self) {
        lock(&self.device).reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.interrupt.clear();
        self.device_status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.shm_sel = 0;
    }
}

/// Locks the device. A poisoned lock (a panic on another thread) must not take
/// the vCPU thread down as well, so the guard is recovered.
fn lock(device: &Arc<Mutex<dyn VirtioDevice>>) -> MutexGuard<'_, dyn VirtioDevice + 'static> {
    device.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn new_queue(index: usize, max_size: u16) -> Queue {
    Queue::new(max_size).unwrap_or_else(|e| {
        error!("virtio-mmio: queue {index} max size {max_size} is invalid ({e}); queue disabled");
        // max_size 0: QueueNumMax reads 0, so drivers see the queue as absent.
        Queue::default()
    })
}

/// Control registers: aligned 32-bit accesses only (4.2.2.2).
fn register_access_ok(offset: u64, len: usize) -> bool {
    len == 4 && offset.is_multiple_of(4)
}

/// Config space: naturally aligned 1, 2, 4 or 8 byte accesses inside the window.
fn config_access_ok(offset: u64, len: usize) -> bool {
    matches!(len, 1 | 2 | 4 | 8)
        && (offset - CONFIG).is_multiple_of(len as u64)
        && offset.checked_add(len as u64).is_some_and(|end| end <= MMIO_WINDOW_SIZE)
}
