//! The transport and virtio-blk together, as the VMM wires them: a simulated
//! guest driver programs the registers, builds a split virtqueue by hand in
//! guest memory, kicks through QueueNotify, and the event manager serves it.

use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::regs::*;
use super::MmioTransport;
use crate::block::test_util::image;
use crate::block::{Block, BlockConfig, VIRTIO_BLK_F_FLUSH, VIRTIO_RING_F_EVENT_IDX};
use crate::interrupt::{Interrupt, INT_VRING};
use crate::{GuestMemory, VirtioDevice};

const QSIZE: u16 = 8;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const HDR: u64 = 0x4000;
const BUF: u64 = 0x5000;
const STATUS_BYTE: u64 = 0x6000;
const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

fn rd(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn wr(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn put_desc(mem: &GuestMemory, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let base = GuestAddress(DESC + 16 * u64::from(i));
    mem.write_obj(addr, base).unwrap();
    mem.write_obj(len, GuestAddress(base.0 + 8)).unwrap();
    mem.write_obj(flags, GuestAddress(base.0 + 12)).unwrap();
    mem.write_obj(next, GuestAddress(base.0 + 14)).unwrap();
}

/// Publishes head `head` as available entry `n` (idx becomes n + 1).
fn make_available(mem: &GuestMemory, n: u16, head: u16) {
    mem.write_obj(head, GuestAddress(AVAIL + 4 + 2 * u64::from(n % QSIZE))).unwrap();
    mem.write_obj(n + 1, GuestAddress(AVAIL + 2)).unwrap();
}

#[test]
fn guest_driver_reads_sector_through_mmio_and_event_loop() {
    let data: Vec<u8> = (0..4096u32).map(|i| (i / 512 + 1) as u8).collect();
    let (_dir, path) = image(&data);
    let blk = Arc::new(Mutex::new(
        Block::new(BlockConfig { path, read_only: false, id: "e2e".into(), allow_block_device: false }).unwrap(),
    ));
    let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).unwrap()));
    let mut t = MmioTransport::new(blk.clone(), mem.clone(), irq.clone());
    let mut em = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new().unwrap();
    em.add_subscriber(blk.clone());

    // Probe and negotiate like Linux's virtio_mmio + virtio core.
    assert_eq!(rd(&mut t, MAGIC_VALUE), MMIO_MAGIC);
    assert_eq!(rd(&mut t, VERSION), 2);
    assert_eq!(rd(&mut t, DEVICE_ID), crate::TYPE_BLOCK);
    wr(&mut t, STATUS, STATUS_ACKNOWLEDGE);
    wr(&mut t, STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    wr(&mut t, DEVICE_FEATURES_SEL, 1);
    let hi = rd(&mut t, DEVICE_FEATURES);
    wr(&mut t, DEVICE_FEATURES_SEL, 0);
    let lo = rd(&mut t, DEVICE_FEATURES);
    let offered = u64::from(lo) | (u64::from(hi) << 32);
    let wanted = VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH | VIRTIO_RING_F_EVENT_IDX;
    assert_eq!(offered & wanted, wanted);
    wr(&mut t, DRIVER_FEATURES_SEL, 1);
    wr(&mut t, DRIVER_FEATURES, (wanted >> 32) as u32);
    wr(&mut t, DRIVER_FEATURES_SEL, 0);
    wr(&mut t, DRIVER_FEATURES, wanted as u32);
    let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
    wr(&mut t, STATUS, s);
    assert_eq!(rd(&mut t, STATUS), s);
    // Capacity from config space, as two 32-bit reads.
    assert_eq!(rd(&mut t, CONFIG), 8);
    assert_eq!(rd(&mut t, CONFIG + 4), 0);

    wr(&mut t, QUEUE_SEL, 0);
    assert_eq!(rd(&mut t, QUEUE_READY), 0);
    assert!(rd(&mut t, QUEUE_NUM_MAX) >= u32::from(QSIZE));
    wr(&mut t, QUEUE_NUM, u32::from(QSIZE));
    wr(&mut t, QUEUE_DESC_LOW, DESC as u32);
    wr(&mut t, QUEUE_DESC_HIGH, 0);
    wr(&mut t, QUEUE_DRIVER_LOW, AVAIL as u32);
    wr(&mut t, QUEUE_DRIVER_HIGH, 0);
    wr(&mut t, QUEUE_DEVICE_LOW, USED as u32);
    wr(&mut t, QUEUE_DEVICE_HIGH, 0);
    wr(&mut t, QUEUE_READY, 1);
    wr(&mut t, STATUS, s | STATUS_DRIVER_OK);
    assert_eq!(rd(&mut t, STATUS), s | STATUS_DRIVER_OK);
    assert!(blk.lock().unwrap().is_activated());
    // The self-kick on activation finds an empty queue.
    em.run_with_timeout(100).unwrap();

    // Read sector 5 (bytes of value 6).
    let mut hdr = [0u8; 16];
    hdr[8..16].copy_from_slice(&5u64.to_le_bytes());
    mem.write_slice(&hdr, GuestAddress(HDR)).unwrap();
    put_desc(&mem, 0, HDR, 16, VRING_DESC_F_NEXT, 1);
    put_desc(&mem, 1, BUF, 512, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2);
    put_desc(&mem, 2, STATUS_BYTE, 1, VRING_DESC_F_WRITE, 0);
    mem.write_obj(0xffu8, GuestAddress(STATUS_BYTE)).unwrap();
    make_available(&mem, 0, 0);
    // The ioeventfd missed it (no KVM here): the write reaches the transport.
    wr(&mut t, QUEUE_NOTIFY, 0);
    assert_eq!(em.run_with_timeout(1000).unwrap(), 1);

    assert_eq!(mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 1);
    assert_eq!(mem.read_obj::<u32>(GuestAddress(USED + 4)).unwrap(), 0);
    assert_eq!(mem.read_obj::<u32>(GuestAddress(USED + 8)).unwrap(), 513);
    assert_eq!(mem.read_obj::<u8>(GuestAddress(STATUS_BYTE)).unwrap(), 0);
    let mut buf = [0u8; 512];
    mem.read_slice(&mut buf, GuestAddress(BUF)).unwrap();
    assert_eq!(buf, [6u8; 512]);

    // The guest's interrupt handler.
    assert_eq!(irq.irqfd().read().unwrap(), 1);
    assert_eq!(rd(&mut t, INTERRUPT_STATUS), INT_VRING);
    wr(&mut t, INTERRUPT_ACK, INT_VRING);
    assert_eq!(rd(&mut t, INTERRUPT_STATUS), 0);
    let m = VirtioDevice::metrics(&*blk.lock().unwrap()).unwrap();
    assert_eq!(m["reads"], 1);

    // Reset: the device stops; later kicks are not served.
    wr(&mut t, STATUS, 0);
    assert!(!blk.lock().unwrap().is_activated());
    make_available(&mem, 1, 0);
    wr(&mut t, QUEUE_NOTIFY, 0);
    em.run_with_timeout(100).unwrap();
    assert_eq!(mem.read_obj::<u16>(GuestAddress(USED + 2)).unwrap(), 1);
}
