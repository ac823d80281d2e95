//! Shim RX/TX cost per frame against the NIC model, with the model's own
//! "DMA" time reported apart from the VMM's work (shim calls only).
//!
//!   cargo bench -p pnic --bench shim_rx            (SHIM_BENCH_FRAMES=N to resize)

use std::time::{Duration, Instant};

use pnic::model::{ModelConfig, ModelHandle, NicModel};
use pnic::shim::ShimBackend;
use virtio_devices::net::backend::{RxBuffer, TxFrame, Used};
use virtio_devices::GuestMemory;
use vm_memory::GuestAddress;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0, 0, 1];
const BATCH: usize = 255;

struct Result {
    frames: u64,
    bytes: u64,
    vmm: Duration,
    dma: Duration,
}

impl Result {
    fn print(&self, name: &str) {
        let f = self.frames as f64;
        println!(
            "{name:<28} {:>8} frames  VMM {:>7.1} ns/frame  model-DMA {:>7.1} ns/frame  VMM-only rate {:>6.2} Gbit/s",
            self.frames,
            self.vmm.as_nanos() as f64 / f,
            self.dma.as_nanos() as f64 / f,
            self.bytes as f64 * 8.0 / self.vmm.as_secs_f64() / 1e9,
        );
    }
}

fn setup() -> (ShimBackend<NicModel>, ModelHandle, GuestMemory) {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
    let (m, h) = NicModel::new(&mem, ModelConfig::default()).unwrap();
    (ShimBackend::new(m, &mem, MAC).unwrap(), h, mem)
}

fn frame(len: usize) -> Vec<u8> {
    let mut f = vec![0x5a; len];
    f[..6].copy_from_slice(&MAC);
    f
}

/// `chained`: buffers of header + data segments (copy fallback), else one
/// 2048-byte segment each (zero copy).
fn rx(frames: u64, len: usize, chained: bool) -> Result {
    let (mut s, h, mem) = setup();
    let f = frame(len);
    let buf = |i: usize| -> RxBuffer {
        let a = 0x10_0000 + i as u64 * 0x1000;
        if chained {
            RxBuffer { head: i as u16, segs: vec![(GuestAddress(a), 12), (GuestAddress(a + 0x800), 1518)], len: 1530 }
        } else {
            RxBuffer { head: i as u16, segs: vec![(GuestAddress(a), 2048)], len: 2048 }
        }
    };
    let mut vmm = Duration::ZERO;
    let mut dma = Duration::ZERO;
    let mut done = 0u64;
    let mut used: Vec<Used> = Vec::with_capacity(BATCH);
    let t = Instant::now();
    for i in 0..BATCH {
        s.post_rx(&mem, buf(i)).unwrap();
    }
    vmm += t.elapsed();
    while done < frames {
        for _ in 0..BATCH {
            h.inject_rx(&f);
        }
        used.clear();
        let t = Instant::now();
        s.reap_rx(&mem, &mut used);
        for u in &used {
            s.post_rx(&mem, buf(u.head as usize)).unwrap();
        }
        vmm += t.elapsed();
        done += used.len() as u64;
        dma += h.dma_stats().0;
        h.clear_records();
    }
    Result { frames: done, bytes: done * len as u64, vmm, dma }
}

fn tx(frames: u64, len: usize) -> Result {
    let (mut s, h, mem) = setup();
    let mut vmm = Duration::ZERO;
    let mut dma = Duration::ZERO;
    let mut done = 0u64;
    let mut used = Vec::with_capacity(BATCH);
    while done < frames {
        let t = Instant::now();
        for i in 0..BATCH {
            let a = 0x10_0000 + i as u64 * 0x1000;
            let fr = TxFrame { head: i as u16, segs: vec![(GuestAddress(a), 12 + len as u32)], len: 12 + len as u32 };
            s.send(&mem, fr).unwrap();
        }
        used.clear();
        s.reap_tx(&mut used);
        vmm += t.elapsed();
        done += used.len() as u64;
        dma += h.dma_stats().0;
        h.clear_records();
    }
    Result { frames: done, bytes: done * len as u64, vmm, dma }
}

fn main() {
    let n: u64 = std::env::var("SHIM_BENCH_FRAMES").ok().and_then(|v| v.parse().ok()).unwrap_or(200_000);
    println!("shim over the NIC model; VMM = time inside ShimBackend calls, model-DMA = the model's copies");
    rx(n, 1514, false).print("rx zero-copy 1514 B");
    rx(n, 64, false).print("rx zero-copy 64 B");
    rx(n, 1514, true).print("rx copy-fallback 1514 B");
    rx(n, 64, true).print("rx copy-fallback 64 B");
    tx(n, 1514).print("tx zero-copy 1514 B");
    tx(n, 64).print("tx zero-copy 64 B");
}
