//! The virtio-mmio transport (transport/mmio.rs): any sequence of register
//! and config-space reads and writes (any offset, length and value) a guest
//! can make, against a real virtio-blk or virtio-net device, with the
//! device's queues served after every QueueNotify, on guest RAM the fuzzer
//! fills.
//!
//! Asserts: no panic; a transport showing DRIVER_OK has an activated
//! device, one reset to status 0 has none; reads fill exactly the bytes
//! asked for; host accesses stay in guest RAM (guard pages).
#![no_main]

use std::io::Write;
use std::os::unix::io::RawFd;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use shimvmm_fuzz::{guest_memory, split_script, Reader};
use virtio_devices::block::{Block, BlockConfig};
use virtio_devices::net::{DropReason, Net, NetBackend, RxNext, RxPass, RxQueue, TxQueue};
use virtio_devices::transport::regs::{QUEUE_NOTIFY, STATUS_DRIVER_OK};
use virtio_devices::transport::MmioTransport;
use virtio_devices::{GuestMemory, Interrupt, VirtioDevice};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

fn disk() -> &'static PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let p = std::env::temp_dir().join(format!("shimvmm-fuzz-mmio-disk-{}", std::process::id()));
        let mut f = std::fs::File::create(&p).expect("fuzz disk image");
        f.write_all(&[0x33u8; 16 * 1024]).expect("fuzz disk image");
        p
    })
}

/// A backend that takes every buffer and frame and gives each back at once
/// (RX refused, TX sent).
struct Loopless;

impl NetBackend for Loopless {
    fn features(&self) -> u64 {
        0
    }
    fn set_features(&mut self, _acked: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn event_fds(&self) -> Vec<RawFd> {
        Vec::new()
    }
    fn process_event(&mut self, _mem: &GuestMemory, _index: usize) {}
    fn discard_pending(&mut self, _index: usize) {}
    fn rx(&mut self, q: &mut RxQueue<'_>) -> RxPass {
        let mut heads = Vec::new();
        while let Some(next) = q.pop() {
            heads.push(match next {
                RxNext::One(d) => d.head(),
                RxNext::Chain(c) => c.head,
            });
        }
        let posted = heads.len();
        for h in heads {
            q.refuse(h, DropReason::BadAddress);
        }
        RxPass { posted, full: false }
    }
    fn rx_stalled(&self) -> bool {
        false
    }
    fn tx(&mut self, q: &mut TxQueue<'_>) {
        let mut heads = Vec::new();
        while let Some(c) = q.pop() {
            heads.push(c.head);
        }
        for h in heads {
            q.complete(h);
        }
    }
    fn quiesce(&mut self) {}
    fn link_up(&self) -> bool {
        true
    }
    fn metrics(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
}

enum Dev {
    Block(Arc<Mutex<Block>>),
    Net(Arc<Mutex<Net>>),
}

impl Dev {
    fn serve(&self) {
        match self {
            Dev::Block(b) => b.lock().unwrap().process_queue(),
            Dev::Net(n) => n.lock().unwrap().service_for_test(),
        }
    }
    fn activated(&self) -> bool {
        match self {
            Dev::Block(b) => b.lock().unwrap().is_activated(),
            Dev::Net(n) => n.lock().unwrap().is_activated(),
        }
    }
}

/// An offset into the window: a register (most inputs) or any byte.
fn offset(r: &mut Reader) -> u64 {
    let b = r.u8();
    if b < 0xc0 {
        u64::from(b & 0x3f) * 4 + if b & 0x40 != 0 { 0x100 } else { 0 }
    } else {
        u64::from(r.u16()) % 0x1010
    }
}

fuzz_target!(|data: &[u8]| {
    let (script, image) = split_script(data);
    let mut r = Reader::new(script);
    let mem = guest_memory(image);
    let irq = Arc::new(Interrupt::new(EventFd::new(EFD_NONBLOCK).expect("eventfd")));
    let (dev, handle): (Dev, Arc<Mutex<dyn VirtioDevice>>) = if r.u8() & 1 == 0 {
        let cfg = BlockConfig { path: disk().clone(), read_only: false, id: "fuzz".into(), allow_block_device: false };
        let b = Arc::new(Mutex::new(Block::new(cfg).expect("fuzz disk")));
        (Dev::Block(b.clone()), b)
    } else {
        let n = Arc::new(Mutex::new(Net::new(Box::new(Loopless), Some([2, 0, 0, 0, 0, 2]), "fuzz".into())));
        (Dev::Net(n.clone()), n)
    };
    let mut t = MmioTransport::new(handle, mem, irq);
    for _ in 0..256 {
        if r.is_empty() {
            break;
        }
        let op = r.u8();
        let off = offset(&mut r);
        let len = [4usize, 1, 2, 8][usize::from(op >> 6)];
        if op & 1 == 0 {
            let v = r.u64().to_le_bytes();
            t.write(off, &v[..len]);
            if off == QUEUE_NOTIFY {
                dev.serve();
            }
        } else {
            let mut buf = [0xeeu8; 9];
            t.read(off, &mut buf[..len]);
            assert_eq!(buf[len], 0xee, "a {len}-byte read at {off:#x} wrote past its buffer");
        }
        let status = t.device_status();
        if status & STATUS_DRIVER_OK != 0 {
            assert!(dev.activated(), "DRIVER_OK shown ({status:#x}) with the device not activated");
        }
        if status == 0 {
            assert!(!dev.activated(), "status 0 (reset) with the device still activated");
        }
    }
    // What the VMM does at exit.
    t.write(virtio_devices::transport::regs::STATUS, &0u32.to_le_bytes());
    assert!(!dev.activated());
});
