//! The virtio-blk device's request path (block/device.rs, block/request.rs):
//! the chains virtio-queue pops from a split ring the fuzzer wrote, parsed
//! into requests and served against a real 64 KiB disk image, over several
//! passes with guest writes to the rings in between.
//!
//! Asserts: no panic; every used element names a head inside the queue and
//! reports at most the bytes its chain could hold; the disk image never
//! grows (no write past its end); host accesses stay in guest RAM (guard
//! pages).
#![no_main]

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use shimvmm_fuzz::{guest_memory, ring_layout, split_script, used_elems, used_idx, Reader};
use virtio_devices::block::{Block, BlockConfig, VIRTIO_BLK_F_FLUSH, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};
use virtio_devices::{ActivateContext, Interrupt, VirtioDevice};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const DISK_BYTES: u64 = 64 * 1024;

/// The disk image, one per process, in the temp dir (tmpfs on CI makes
/// the flushes cheap).
fn disk() -> &'static PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("shimvmm-fuzz-disk-{}", std::process::id()));
        let mut f = std::fs::File::create(&p).expect("fuzz disk image");
        f.write_all(&vec![0x33u8; DISK_BYTES as usize]).expect("fuzz disk image");
        p
    })
}

fn queue(size: u16, addrs: (u64, u64, u64), event_idx: bool) -> Queue {
    let mut q = Queue::new(256).expect("queue");
    q.set_size(size);
    q.set_desc_table_address(Some(addrs.0 as u32), Some((addrs.0 >> 32) as u32));
    q.set_avail_ring_address(Some(addrs.1 as u32), Some((addrs.1 >> 32) as u32));
    q.set_used_ring_address(Some(addrs.2 as u32), Some((addrs.2 >> 32) as u32));
    q.set_event_idx(event_idx);
    q.set_ready(true);
    q
}

fn rings_end(size: u16) -> u64 {
    ring_layout(&[size, 1])[1].0
}

/// Whether a descriptor of the table lets the device write below
/// `rings_end` (data or status the guest aimed at its own rings, which the
/// device then writes as asked) or is indirect (not scanned): then what the
/// used ring holds afterwards is not only the device's used elements.
fn may_write_rings(mem: &vm_memory::GuestMemoryMmap, desc: u64, size: u16, rings_end: u64) -> bool {
    (0..u64::from(size)).any(|i| {
        let at = GuestAddress(desc + 16 * i);
        let addr: u64 = mem.read_obj(at).unwrap_or(0);
        let flags: u16 = mem.read_obj(GuestAddress(at.0 + 12)).unwrap_or(0);
        flags & 4 != 0 || (flags & 2 != 0 && addr < rings_end)
    })
}

fuzz_target!(|data: &[u8]| {
    let (script, image) = split_script(data);
    let mut r = Reader::new(script);
    let cfg = r.u8();
    let size = 1u16 << (cfg % 9);
    let event_idx = cfg & 0x10 != 0;
    let read_only = cfg & 0x20 != 0;
    let mut acked = VIRTIO_F_VERSION_1 | VIRTIO_BLK_F_FLUSH;
    if event_idx {
        acked |= VIRTIO_RING_F_EVENT_IDX;
    }
    let fixed = cfg & 0x40 == 0;
    let addrs = if fixed { ring_layout(&[size])[0] } else { (r.u64(), r.u64(), r.u64()) };

    let mem = guest_memory(image);
    if fixed {
        let _ = mem.write_slice(&vec![0u8; 6 + 8 * usize::from(size)], GuestAddress(addrs.2));
    }
    let Ok(mut blk) =
        Block::new(BlockConfig { path: disk().clone(), read_only, id: "fuzz".into(), allow_block_device: false })
    else {
        panic!("cannot open the fuzz disk image");
    };
    blk.set_acked_features(acked);
    let ctx = ActivateContext {
        mem: mem.clone(),
        queues: vec![queue(size, addrs, event_idx)],
        interrupt: Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd"))),
    };
    if blk.activate(ctx).is_err() {
        return;
    }
    let mut seen = 0u16;
    // Whether the used ring in memory holds only what the device wrote as
    // used elements: false after a pass whose chains could write into the
    // rings, until a clean pass rewrites the used index (the elements and
    // index such a pass left behind are data, not used elements).
    let mut trusted = fixed;
    for _ in 0..16 {
        let clear = fixed && !may_write_rings(&mem, addrs.0, size, rings_end(size));
        let before = used_idx(&mem, addrs.2);
        blk.process_queue();
        let idx = used_idx(&mem, addrs.2);
        if !clear {
            trusted = false;
        } else if !trusted {
            // A clean pass that completed something wrote the device's own
            // used index: from here on the ring is the device's again.
            trusted = idx != before;
            seen = idx;
        } else {
            if idx.wrapping_sub(seen) <= size {
                for (id, len) in used_elems(&mem, addrs.2, size, seen, idx) {
                    assert!(id < u32::from(size), "used element names head {id} of a {size}-entry queue");
                    // A request's data and status fit in guest RAM.
                    assert!(u64::from(len) <= 0x1_0000 + 0x9000, "used length {len} beyond guest RAM");
                }
            }
            seen = idx;
        }
        if r.is_empty() {
            break;
        }
        // The guest moves on: 16-bit writes to the descriptor table and
        // avail ring (not the used ring, the device's).
        for _ in 0..(r.u8() % 4) {
            let at = (u64::from(r.u16()) % 0x2000) & !1;
            let v = r.u16();
            if !(fixed && at >= addrs.2 && at < addrs.2 + 6 + 8 * u64::from(size)) {
                let _ = mem.write_obj(v, GuestAddress(at));
            }
        }
    }
    blk.reset();
    let len = std::fs::metadata(disk()).map(|m| m.len()).unwrap_or(0);
    assert_eq!(len, DISK_BYTES, "the disk image changed size");
});
