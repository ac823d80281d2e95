//! Unit tests of the virtio-mmio transport, driven like a guest driver would.

use std::sync::{Arc, Mutex};

use virtio_queue::QueueT;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::regs::*;
use super::MmioTransport;
use crate::interrupt::{Interrupt, INT_CONFIG, INT_VRING};
use crate::{ActivateContext, ActivateError, GuestMemory, VirtioDevice};

const EVENT_IDX: u64 = 1 << 29;
const FEATURE_A: u64 = 1 << 3;
const MEM_SIZE: usize = 0x10_0000;

/// A device that records what the transport does to it.
struct FakeDevice {
    max_sizes: Vec<u16>,
    features: u64,
    acked: Option<u64>,
    config: Vec<u8>,
    events: Vec<EventFd>,
    activated: Option<ActivateContext>,
    fail_activate: bool,
    resets: u32,
}

impl FakeDevice {
    fn new() -> Self {
        FakeDevice {
            max_sizes: vec![16, 8],
            features: VIRTIO_F_VERSION_1 | EVENT_IDX | FEATURE_A,
            acked: None,
            config: (0u8..16).collect(),
            events: (0..2).map(|_| EventFd::new(EFD_NONBLOCK).unwrap()).collect(),
            activated: None,
            fail_activate: false,
            resets: 0,
        }
    }
}

impl VirtioDevice for FakeDevice {
    fn device_type(&self) -> u32 {
        crate::TYPE_BLOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }
    fn avail_features(&self) -> u64 {
        self.features
    }
    fn set_acked_features(&mut self, features: u64) {
        self.acked = Some(features);
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let start = offset as usize;
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.config.get(start + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        for (i, b) in data.iter().enumerate() {
            if let Some(c) = self.config.get_mut(start + i) {
                *c = *b;
            }
        }
    }
    fn queue_events(&self) -> &[EventFd] {
        &self.events
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::Backend("fake failure".into()));
        }
        self.activated = Some(ctx);
        Ok(())
    }
    fn is_activated(&self) -> bool {
        self.activated.is_some()
    }
    fn reset(&mut self) {
        self.activated = None;
        self.acked = None;
        self.resets += 1;
    }
}

struct Fixture {
    dev: Arc<Mutex<FakeDevice>>,
    t: MmioTransport,
    irq: Arc<Interrupt>,
}

fn fixture_with(dev: FakeDevice) -> Fixture {
    let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
    let dev = Arc::new(Mutex::new(dev));
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let t = MmioTransport::new(dev.clone(), mem, irq.clone());
    Fixture { dev, t, irq }
}

fn fixture() -> Fixture {
    fixture_with(FakeDevice::new())
}

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn features(t: &mut MmioTransport) -> u64 {
    wr(t, DEVICE_FEATURES_SEL, 0);
    let lo = rd(t, DEVICE_FEATURES);
    wr(t, DEVICE_FEATURES_SEL, 1);
    let hi = rd(t, DEVICE_FEATURES);
    u64::from(lo) | (u64::from(hi) << 32)
}

fn ack_features(t: &mut MmioTransport, f: u64) {
    wr(t, DRIVER_FEATURES_SEL, 0);
    wr(t, DRIVER_FEATURES, f as u32);
    wr(t, DRIVER_FEATURES_SEL, 1);
    wr(t, DRIVER_FEATURES, (f >> 32) as u32);
}

/// ACKNOWLEDGE, DRIVER, features, FEATURES_OK; returns the status read back.
fn negotiate(t: &mut MmioTransport, f: u64) -> u32 {
    wr(t, STATUS, STATUS_ACKNOWLEDGE);
    wr(t, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    ack_features(t, f);
    wr(t, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK);
    rd(t, STATUS)
}

fn setup_queue(t: &mut MmioTransport, idx: u32, size: u32, base: u64) {
    wr(t, QUEUE_SEL, idx);
    assert_eq!(rd(t, QUEUE_READY), 0);
    assert!(rd(t, QUEUE_NUM_MAX) >= size);
    wr(t, QUEUE_NUM, size);
    let (desc, avail, used) = (base, base + 0x1000, base + 0x2000);
    wr(t, QUEUE_DESC_LOW, desc as u32);
    wr(t, QUEUE_DESC_HIGH, (desc >> 32) as u32);
    wr(t, QUEUE_DRIVER_LOW, avail as u32);
    wr(t, QUEUE_DRIVER_HIGH, (avail >> 32) as u32);
    wr(t, QUEUE_DEVICE_LOW, used as u32);
    wr(t, QUEUE_DEVICE_HIGH, (used >> 32) as u32);
    wr(t, QUEUE_READY, 1);
    assert_eq!(rd(t, QUEUE_READY), 1);
    assert_eq!(rd(t, QUEUE_NUM), size);
    assert_eq!(rd(t, QUEUE_DESC_LOW), desc as u32);
    assert_eq!(rd(t, QUEUE_DRIVER_LOW), avail as u32);
    assert_eq!(rd(t, QUEUE_DEVICE_LOW), used as u32);
    assert_eq!(rd(t, QUEUE_DEVICE_HIGH), (used >> 32) as u32);
}

const FEATURES_OK_STATUS: u32 = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
const RUNNING_STATUS: u32 = FEATURES_OK_STATUS | STATUS_DRIVER_OK;

/// The whole Linux-style init sequence up to DRIVER_OK.
fn bring_up(f: &mut Fixture, acked: u64) {
    assert_eq!(negotiate(&mut f.t, acked), FEATURES_OK_STATUS);
    setup_queue(&mut f.t, 0, 16, 0x1_0000);
    setup_queue(&mut f.t, 1, 8, 0x2_0000);
    wr(&mut f.t, STATUS, RUNNING_STATUS);
}

#[test]
fn identity_registers() {
    let mut f = fixture();
    assert_eq!(rd(&mut f.t, MAGIC_VALUE), 0x7472_6976);
    assert_eq!(rd(&mut f.t, VERSION), 2);
    assert_eq!(rd(&mut f.t, DEVICE_ID), crate::TYPE_BLOCK);
    assert_eq!(rd(&mut f.t, VENDOR_ID), MMIO_VENDOR_ID);
    assert_eq!(rd(&mut f.t, STATUS), 0);
    assert_eq!(features(&mut f.t), VIRTIO_F_VERSION_1 | EVENT_IDX | FEATURE_A);
    wr(&mut f.t, DEVICE_FEATURES_SEL, 7);
    assert_eq!(rd(&mut f.t, DEVICE_FEATURES), 0);
    // No shared memory regions: length reads all ones.
    assert_eq!(rd(&mut f.t, SHM_LEN_LOW), u32::MAX);
    assert_eq!(rd(&mut f.t, SHM_LEN_HIGH), u32::MAX);
}

#[test]
fn full_init_sequence_activates_device_with_configured_queues() {
    let mut f = fixture();
    bring_up(&mut f, VIRTIO_F_VERSION_1 | EVENT_IDX);
    assert_eq!(rd(&mut f.t, STATUS), RUNNING_STATUS);
    let dev = f.dev.lock().unwrap();
    assert_eq!(dev.acked, Some(VIRTIO_F_VERSION_1 | EVENT_IDX));
    let ctx = dev.activated.as_ref().expect("device activated on DRIVER_OK");
    assert_eq!(ctx.queues.len(), 2);
    let q0 = &ctx.queues[0];
    assert!(q0.ready());
    assert_eq!(q0.size(), 16);
    assert_eq!(q0.desc_table(), 0x1_0000);
    assert_eq!(q0.avail_ring(), 0x1_1000);
    assert_eq!(q0.used_ring(), 0x1_2000);
    assert!(q0.event_idx_enabled());
    assert_eq!(ctx.queues[1].size(), 8);
    assert_eq!(ctx.queues[1].desc_table(), 0x2_0000);
}

#[test]
fn event_idx_off_unless_negotiated() {
    let mut f = fixture();
    bring_up(&mut f, VIRTIO_F_VERSION_1);
    let dev = f.dev.lock().unwrap();
    assert!(!dev.activated.as_ref().unwrap().queues[0].event_idx_enabled());
}

#[test]
fn features_ok_refused_for_unoffered_features() {
    let mut f = fixture();
    let status = negotiate(&mut f.t, VIRTIO_F_VERSION_1 | (1 << 7));
    assert_eq!(status & STATUS_FEATURES_OK, 0);
    assert_eq!(f.dev.lock().unwrap().acked, None);
    // Without FEATURES_OK, DRIVER_OK must not start the device.
    wr(&mut f.t, STATUS, RUNNING_STATUS);
    assert!(!f.dev.lock().unwrap().is_activated());
}

#[test]
fn features_ok_refused_without_version_1() {
    let mut f = fixture();
    let status = negotiate(&mut f.t, FEATURE_A);
    assert_eq!(status & STATUS_FEATURES_OK, 0);
    assert_eq!(f.dev.lock().unwrap().acked, None);
}

#[test]
fn driver_features_only_writable_between_driver_and_features_ok() {
    let mut f = fixture();
    // Before DRIVER: ignored.
    ack_features(&mut f.t, VIRTIO_F_VERSION_1 | FEATURE_A);
    wr(&mut f.t, STATUS, STATUS_ACKNOWLEDGE);
    wr(&mut f.t, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(&mut f.t, STATUS, FEATURES_OK_STATUS);
    // Nothing was accepted, so VERSION_1 is missing and FEATURES_OK refused.
    assert_eq!(rd(&mut f.t, STATUS) & STATUS_FEATURES_OK, 0);

    let mut f = fixture();
    assert_eq!(negotiate(&mut f.t, VIRTIO_F_VERSION_1), FEATURES_OK_STATUS);
    // After FEATURES_OK: ignored, the device keeps the negotiated set.
    ack_features(&mut f.t, VIRTIO_F_VERSION_1 | FEATURE_A);
    setup_queue(&mut f.t, 0, 16, 0x1_0000);
    wr(&mut f.t, STATUS, RUNNING_STATUS);
    assert_eq!(f.dev.lock().unwrap().acked, Some(VIRTIO_F_VERSION_1));
}

#[test]
fn status_out_of_sequence_is_ignored() {
    let mut f = fixture();
    // DRIVER without ACKNOWLEDGE.
    wr(&mut f.t, STATUS, STATUS_DRIVER);
    assert_eq!(rd(&mut f.t, STATUS), 0);
    // DRIVER_OK straight after DRIVER.
    wr(&mut f.t, STATUS, STATUS_ACKNOWLEDGE);
    wr(&mut f.t, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(&mut f.t, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK);
    assert_eq!(rd(&mut f.t, STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    assert!(!f.dev.lock().unwrap().is_activated());
    // Clearing a bit without a reset.
    wr(&mut f.t, STATUS, STATUS_ACKNOWLEDGE);
    assert_eq!(rd(&mut f.t, STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
}

#[test]
fn several_status_bits_in_one_write() {
    let mut f = fixture();
    wr(&mut f.t, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    assert_eq!(rd(&mut f.t, STATUS), STATUS_ACKNOWLEDGE | STATUS_DRIVER);
}

#[test]
fn queue_setup_refused_outside_features_ok_window() {
    let mut f = fixture();
    wr(&mut f.t, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(&mut f.t, QUEUE_SEL, 0);
    wr(&mut f.t, QUEUE_NUM, 4);
    wr(&mut f.t, QUEUE_READY, 1);
    assert_eq!(rd(&mut f.t, QUEUE_READY), 0, "queue setup before FEATURES_OK");

    bring_up(&mut f, VIRTIO_F_VERSION_1);
    // After DRIVER_OK the layout is frozen.
    wr(&mut f.t, QUEUE_SEL, 0);
    wr(&mut f.t, QUEUE_DESC_LOW, 0x5_0000);
    wr(&mut f.t, QUEUE_READY, 0);
    assert_eq!(rd(&mut f.t, QUEUE_READY), 1);
    let dev = f.dev.lock().unwrap();
    assert_eq!(dev.activated.as_ref().unwrap().queues[0].desc_table(), 0x1_0000);
}

#[test]
fn bad_queue_parameters_are_refused() {
    let mut f = fixture();
    negotiate(&mut f.t, VIRTIO_F_VERSION_1);
    wr(&mut f.t, QUEUE_SEL, 0);
    for bad in [0, 3, 32, 0x1_0010] {
        wr(&mut f.t, QUEUE_NUM, bad);
    }
    wr(&mut f.t, QUEUE_NUM, 4);
    // Misaligned ring addresses are refused, the old value stays.
    wr(&mut f.t, QUEUE_DESC_LOW, 0x1_0008);
    wr(&mut f.t, QUEUE_DRIVER_LOW, 0x1_1001);
    wr(&mut f.t, QUEUE_DEVICE_LOW, 0x1_2002);
    wr(&mut f.t, QUEUE_DESC_LOW, 0x1_0000);
    wr(&mut f.t, QUEUE_DRIVER_LOW, 0x1_1000);
    wr(&mut f.t, QUEUE_DEVICE_LOW, 0x1_2000);
    wr(&mut f.t, QUEUE_READY, 1);
    // Writes to a ready queue are refused.
    wr(&mut f.t, QUEUE_NUM, 8);
    // A queue that does not exist.
    wr(&mut f.t, QUEUE_SEL, 5);
    assert_eq!(rd(&mut f.t, QUEUE_NUM_MAX), 0);
    assert_eq!(rd(&mut f.t, QUEUE_READY), 0);
    wr(&mut f.t, QUEUE_NUM, 4);
    wr(&mut f.t, QUEUE_READY, 1);
    wr(&mut f.t, QUEUE_READY, 2);
    wr(&mut f.t, STATUS, RUNNING_STATUS);
    let dev = f.dev.lock().unwrap();
    let q = &dev.activated.as_ref().expect("activated").queues[0];
    assert_eq!(q.size(), 4);
    assert_eq!((q.desc_table(), q.avail_ring(), q.used_ring()), (0x1_0000, 0x1_1000, 0x1_2000));
    assert!(!dev.activated.as_ref().unwrap().queues[1].ready());
}

#[test]
fn queue_outside_guest_memory_fails_activation() {
    let mut f = fixture();
    negotiate(&mut f.t, VIRTIO_F_VERSION_1);
    setup_queue(&mut f.t, 0, 16, (MEM_SIZE as u64) - 0x1000);
    wr(&mut f.t, STATUS, RUNNING_STATUS);
    assert!(!f.dev.lock().unwrap().is_activated());
    let status = rd(&mut f.t, STATUS);
    assert_eq!(status & STATUS_DEVICE_NEEDS_RESET, STATUS_DEVICE_NEEDS_RESET);
    assert_eq!(status & STATUS_DRIVER_OK, 0);
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS) & INT_CONFIG, INT_CONFIG);
}

#[test]
fn activation_error_sets_needs_reset_and_config_interrupt() {
    let mut dev = FakeDevice::new();
    dev.fail_activate = true;
    let mut f = fixture_with(dev);
    bring_up(&mut f, VIRTIO_F_VERSION_1);
    let status = rd(&mut f.t, STATUS);
    assert_eq!(status, FEATURES_OK_STATUS | STATUS_DEVICE_NEEDS_RESET);
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS), INT_CONFIG);
    assert_eq!(f.irq.irqfd().read().unwrap(), 1, "irqfd was signalled");
    // The driver echoing NEEDS_RESET with DRIVER_OK again changes nothing.
    wr(&mut f.t, STATUS, status | STATUS_DRIVER_OK);
    assert_eq!(rd(&mut f.t, STATUS), status);
    // A reset recovers.
    wr(&mut f.t, STATUS, 0);
    assert_eq!(rd(&mut f.t, STATUS), 0);
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS), 0);
}

#[test]
fn reset_stops_device_and_clears_state() {
    let mut f = fixture();
    bring_up(&mut f, VIRTIO_F_VERSION_1 | EVENT_IDX);
    f.irq.signal_used_queue().unwrap();
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS), INT_VRING);
    wr(&mut f.t, STATUS, 0);
    {
        let dev = f.dev.lock().unwrap();
        assert_eq!(dev.resets, 1);
        assert!(!dev.is_activated());
    }
    assert_eq!(rd(&mut f.t, STATUS), 0);
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS), 0);
    for (i, max) in [(0, 16), (1, 8)] {
        wr(&mut f.t, QUEUE_SEL, i);
        assert_eq!(rd(&mut f.t, QUEUE_READY), 0);
        assert_eq!(rd(&mut f.t, QUEUE_NUM_MAX), max);
    }
    // Linux tears queues down after reset: QueueReady=0 is accepted silently.
    wr(&mut f.t, QUEUE_READY, 0);
    // And the device can be brought up again, with the new features only.
    bring_up(&mut f, VIRTIO_F_VERSION_1);
    let dev = f.dev.lock().unwrap();
    assert_eq!(dev.acked, Some(VIRTIO_F_VERSION_1));
    assert!(!dev.activated.as_ref().unwrap().queues[0].event_idx_enabled());
    assert_eq!(dev.activated.as_ref().unwrap().queues[0].next_avail(), 0);
}

#[test]
fn interrupt_status_and_ack() {
    let mut f = fixture();
    f.irq.signal_used_queue().unwrap();
    f.irq.signal_config_change().unwrap();
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS), INT_VRING | INT_CONFIG);
    wr(&mut f.t, INTERRUPT_ACK, INT_VRING);
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS), INT_CONFIG);
    wr(&mut f.t, INTERRUPT_ACK, INT_CONFIG);
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS), 0);
    // InterruptStatus is read-only.
    wr(&mut f.t, INTERRUPT_STATUS, 3);
    assert_eq!(rd(&mut f.t, INTERRUPT_STATUS), 0);
}

#[test]
fn queue_notify_write_signals_queue_event() {
    let mut f = fixture();
    bring_up(&mut f, VIRTIO_F_VERSION_1);
    wr(&mut f.t, QUEUE_NOTIFY, 1);
    wr(&mut f.t, QUEUE_NOTIFY, 9); // no such queue: ignored
    let dev = f.dev.lock().unwrap();
    assert_eq!(dev.events[1].read().unwrap(), 1);
    assert!(dev.events[0].read().is_err(), "queue 0 was not kicked");
}

#[test]
fn config_space_is_passed_through_with_offset() {
    let mut f = fixture();
    let mut b4 = [0u8; 4];
    f.t.read(CONFIG + 4, &mut b4);
    assert_eq!(b4, [4, 5, 6, 7]);
    let mut b1 = [0u8; 1];
    f.t.read(CONFIG + 3, &mut b1);
    assert_eq!(b1, [3]);
    let mut b8 = [0u8; 8];
    f.t.read(CONFIG + 8, &mut b8);
    assert_eq!(b8, [8, 9, 10, 11, 12, 13, 14, 15]);
    f.t.write(CONFIG + 2, &[0xaa, 0xbb]);
    let mut b2 = [0u8; 2];
    f.t.read(CONFIG + 2, &mut b2);
    assert_eq!(b2, [0xaa, 0xbb]);
}

#[test]
fn bad_accesses_are_ignored() {
    let mut f = fixture();
    // Wrong width on control registers reads zeros.
    let mut b2 = [0xffu8; 2];
    f.t.read(MAGIC_VALUE, &mut b2);
    assert_eq!(b2, [0, 0]);
    let mut b8 = [0xffu8; 8];
    f.t.read(MAGIC_VALUE, &mut b8);
    assert_eq!(b8, [0; 8]);
    // Unaligned.
    let mut b4 = [0xffu8; 4];
    f.t.read(MAGIC_VALUE + 1, &mut b4);
    assert_eq!(b4, [0; 4]);
    // Empty access.
    f.t.read(STATUS, &mut []);
    f.t.write(STATUS, &[]);
    // Write-only and unknown registers read as zero.
    for off in [QUEUE_NOTIFY, INTERRUPT_ACK, DRIVER_FEATURES, 0x0c4, 0x0f0, 0x0f8] {
        assert_eq!(rd(&mut f.t, off), 0, "offset {off:#x}");
    }
    // Writes of the wrong width change nothing.
    f.t.write(STATUS, &[1]);
    f.t.write(STATUS, &[1, 0]);
    f.t.write(STATUS + 2, &1u32.to_le_bytes());
    assert_eq!(rd(&mut f.t, STATUS), 0);
    // Read-only and unknown registers.
    wr(&mut f.t, MAGIC_VALUE, 0);
    wr(&mut f.t, VERSION, 1);
    wr(&mut f.t, 0x0f0, 1);
    wr(&mut f.t, QUEUE_RESET, 1);
    assert_eq!(rd(&mut f.t, MAGIC_VALUE), MMIO_MAGIC);
    assert_eq!(rd(&mut f.t, VERSION), 2);
    // Config accesses: misaligned, odd width, past the window.
    let mut b3 = [0xffu8; 3];
    f.t.read(CONFIG, &mut b3);
    assert_eq!(b3, [0; 3]);
    f.t.read(CONFIG + 1, &mut b4);
    assert_eq!(b4, [0; 4]);
    f.t.read(MMIO_WINDOW_SIZE - 2, &mut b4);
    assert_eq!(b4, [0; 4]);
    f.t.read(MMIO_WINDOW_SIZE, &mut b4);
    f.t.read(u64::MAX - 1, &mut b4);
    f.t.write(u64::MAX - 1, &[0; 4]);
    f.t.write(MMIO_WINDOW_SIZE + 4, &[0; 4]);
    f.t.write(CONFIG + 1, &[1, 2]);
    let dev = f.dev.lock().unwrap();
    assert_eq!(&dev.config[..4], &[0, 1, 2, 3]);
}

#[test]
fn failed_bit_blocks_further_progress_until_reset() {
    let mut f = fixture();
    negotiate(&mut f.t, VIRTIO_F_VERSION_1);
    wr(&mut f.t, STATUS, FEATURES_OK_STATUS | STATUS_FAILED);
    assert_eq!(rd(&mut f.t, STATUS), FEATURES_OK_STATUS | STATUS_FAILED);
    setup_queue_expect_refused(&mut f.t);
    wr(&mut f.t, STATUS, FEATURES_OK_STATUS | STATUS_FAILED | STATUS_DRIVER_OK);
    assert!(!f.dev.lock().unwrap().is_activated());
    wr(&mut f.t, STATUS, 0);
    assert_eq!(rd(&mut f.t, STATUS), 0);
}

fn setup_queue_expect_refused(t: &mut MmioTransport) {
    wr(t, QUEUE_SEL, 0);
    wr(t, QUEUE_NUM, 4);
    wr(t, QUEUE_READY, 1);
    assert_eq!(rd(t, QUEUE_READY), 0);
}

#[test]
fn poisoned_device_lock_does_not_panic_the_vcpu() {
    let f = fixture();
    let dev = f.dev.clone();
    let _ = std::thread::spawn(move || {
        let _g = dev.lock().unwrap();
        panic!("poison the lock");
    })
    .join();
    let mut t = f.t;
    let mut b = [0u8; 4];
    t.read(CONFIG, &mut b);
    assert_eq!(b, [0, 1, 2, 3]);
}
