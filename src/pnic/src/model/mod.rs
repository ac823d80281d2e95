//! A software NIC implementing [`PnicDriver`] for unit tests and benchmarks.
//!
//! It behaves like the NIC behind the IOMMU: injected frames are "DMA"-written
//! into posted RX buffers through an emulated IOMMU (only mapped memory is
//! reachable, and never more than the posted length), TX segments are read the
//! same way. It records every posted descriptor and every DMA access so tests
//! can assert on addresses, and it times its own DMA work so benchmarks can
//! report it apart from the VMM's.

pub mod igb_hw;
pub mod igbvf_hw;
pub mod iommu;

use std::collections::VecDeque;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::dma::{DmaArea, DmaMapper, IovaAllocator};
use crate::driver::{DriverError, DriverLimits, PnicDriver, RxCompletion, RxRunError, TxCompletion};
pub use iommu::ModelIommu;
use vmm_config::sync::lock_unpoisoned as lock;

/// The model's limits (defaults mirror the igb driver's).
#[derive(Debug, Clone, Copy)]
pub struct ModelConfig {
    pub limits: DriverLimits,
    /// Complete TX as soon as it is posted (else wait for `complete_tx`).
    pub auto_tx: bool,
    /// What of guest RAM the model's IOMMU maps at creation: all of it, or
    /// nothing (strict DMA maps pages as buffers are handed over).
    pub dma: vmm_config::PnicDma,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            limits: DriverLimits {
                rx_capacity: 255,
                tx_capacity: 255,
                rx_max_write: crate::igb::RX_MAX_FRAME,
                rx_max_frame: crate::igb::RX_MAX_FRAME,
                rx_align: 2,
                tx_max_frame: crate::igb::TX_MAX_FRAME,
                tx_max_segs: crate::igb::TX_MAX_SEGS,
            },
            auto_tx: true,
            dma: vmm_config::PnicDma::Ram,
        }
    }
}

/// One DMA access the model made (or tried to make).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaAccess {
    pub iova: u64,
    pub len: u64,
}

/// What happened to an injected frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectOutcome {
    /// Written into the buffer posted with this cookie at this IOVA.
    Delivered { cookie: u64, iova: u64 },
    /// No RX buffer posted (or queue stopped): dropped in the NIC.
    NoBuffer,
    /// Destination MAC not accepted by the filter.
    Filtered,
    /// Longer than the frame cap: dropped in the NIC.
    Oversized,
    /// The IOMMU refused the write (buffer completed with error).
    Fault,
    /// Link down or NIC removed.
    Down,
}

#[derive(Debug, Clone, Copy)]
struct PostedRx {
    iova: u64,
    len: u32,
    cookie: u64,
}

#[derive(Default)]
struct State {
    started: bool,
    link: bool,
    removed: bool,
    mac: Option<[u8; 6]>,
    /// Posted RX buffers in ring order; the first `rx_tail` are visible to
    /// the "hardware" (before the tail register, as on the NIC).
    rx_posted: VecDeque<PostedRx>,
    rx_tail: usize,
    rx_done: VecDeque<RxCompletion>,
    /// Posted TX frames: (segment count, cookie); their segments, in order,
    /// are in `tx_posted_segs` (one flat ring, like the NIC's descriptors).
    tx_posted: VecDeque<(usize, u64)>,
    tx_posted_segs: VecDeque<(u64, u32)>,
    tx_done: VecDeque<TxCompletion>,
    // Records.
    posted_rx_log: Vec<DmaAccess>,
    posted_tx_log: Vec<DmaAccess>,
    writes: Vec<DmaAccess>,
    reads: Vec<DmaAccess>,
    faults: Vec<DmaAccess>,
    sent: Vec<Vec<u8>>,
    dma_time: Duration,
    dma_bytes: u64,
    quiesces: u64,
    /// `flush_rx` calls (RX tail writes on a real NIC).
    rx_flushes: u64,
    /// Frames of `tx_posted` the driver made visible (its TX tail), and
    /// `flush_tx` calls (TX tail writes).
    tx_tail: usize,
    tx_flushes: u64,
}

/// The NIC model as a driver (give it to the shim).
pub struct NicModel {
    state: Arc<Mutex<State>>,
    iommu: Arc<ModelIommu>,
    iova: IovaAllocator,
    irq: Arc<EventFd>,
    cfg: ModelConfig,
}

/// The test/bench side of the model: inject frames, complete TX, read records.
#[derive(Clone)]
pub struct ModelHandle {
    state: Arc<Mutex<State>>,
    iommu: Arc<ModelIommu>,
    irq: Arc<EventFd>,
    cfg: ModelConfig,
}

impl NicModel {
    /// A model NIC whose IOMMU maps all of `guest` (IOVA = GPA), or none
    /// of it with `cfg.dma` strict; link up.
    pub fn new(guest: &GuestMemoryMmap, cfg: ModelConfig) -> Result<(NicModel, ModelHandle), DriverError> {
        let iommu = Arc::new(ModelIommu::new());
        if cfg.dma == vmm_config::PnicDma::Ram {
            iommu.map(guest).map_err(DriverError::DmaMap)?;
        }
        let irq = Arc::new(EventFd::new(EFD_NONBLOCK).map_err(|e| DriverError::DmaMap(e.to_string()))?);
        let state = Arc::new(Mutex::new(State { link: true, ..Default::default() }));
        let h = ModelHandle { state: state.clone(), iommu: iommu.clone(), irq: irq.clone(), cfg };
        Ok((NicModel { state, iommu, iova: IovaAllocator::above(guest), irq, cfg }, h))
    }
}

fn mac_accepts(mac: Option<[u8; 6]>, frame: &[u8]) -> bool {
    if frame.len() < 6 {
        return false;
    }
    let dst = &frame[..6];
    dst[0] & 1 == 1 || mac.is_some_and(|m| m == dst)
}

impl ModelHandle {
    /// A frame arrives from the wire.
    pub fn inject_rx(&self, frame: &[u8]) -> InjectOutcome {
        self.receive(frame, false)
    }

    /// A frame arrives damaged (a CRC error): the model writes it into the
    /// next buffer, as a NIC does, and flags the completion as an error.
    pub fn inject_rx_corrupt(&self, frame: &[u8]) -> InjectOutcome {
        self.receive(frame, true)
    }

    fn receive(&self, frame: &[u8], corrupt: bool) -> InjectOutcome {
        let mut s = lock(&self.state);
        if s.removed || !s.link {
            return InjectOutcome::Down;
        }
        if !mac_accepts(s.mac, frame) {
            return InjectOutcome::Filtered;
        }
        if frame.len() as u64 > u64::from(self.cfg.limits.rx_max_write) {
            return InjectOutcome::Oversized;
        }
        if !s.started {
            return InjectOutcome::NoBuffer;
        }
        if s.rx_tail == 0 {
            return InjectOutcome::NoBuffer;
        }
        let Some(b) = s.rx_posted.pop_front() else {
            return InjectOutcome::NoBuffer;
        };
        s.rx_tail -= 1;
        // A real NIC writes at most the programmed buffer size; the model
        // additionally refuses to exceed what was posted.
        let acc = DmaAccess { iova: b.iova, len: frame.len() as u64 };
        let ok = frame.len() <= b.len as usize && {
            let t = Instant::now();
            let ok = self.iommu.write(b.iova, frame);
            s.dma_time += t.elapsed();
            ok
        };
        let out = if ok {
            s.writes.push(acc);
            s.dma_bytes += acc.len;
            InjectOutcome::Delivered { cookie: b.cookie, iova: b.iova }
        } else {
            s.faults.push(acc);
            InjectOutcome::Fault
        };
        s.rx_done.push_back(RxCompletion {
            cookie: b.cookie,
            len: if ok { frame.len() as u32 } else { 0 },
            eop: true,
            error: !ok || corrupt,
            csum_ok: false,
        });
        let _ = self.irq.write(1);
        out
    }

    /// Transmit everything posted: read the segments through the IOMMU.
    pub fn complete_tx(&self) -> usize {
        let mut s = lock(&self.state);
        complete_tx_locked(&mut s, &self.iommu);
        let _ = self.irq.write(1);
        s.tx_done.len()
    }

    /// A misbehaving NIC: report an RX completion for whatever cookie the
    /// test chooses (posted or not), as the next one.
    pub fn inject_rx_completion(&self, c: RxCompletion) {
        lock(&self.state).rx_done.push_back(c);
        let _ = self.irq.write(1);
    }

    /// A misbehaving NIC: report a TX completion for any cookie.
    pub fn inject_tx_completion(&self, cookie: u64) {
        lock(&self.state).tx_done.push_back(TxCompletion { cookie });
        let _ = self.irq.write(1);
    }

    pub fn set_link(&self, up: bool) {
        lock(&self.state).link = up;
    }
    /// Simulate surprise removal: every later driver call fails.
    pub fn remove(&self) {
        lock(&self.state).removed = true;
    }
    /// Every RX descriptor ever posted (IOVA, length given to the NIC).
    pub fn posted_rx(&self) -> Vec<DmaAccess> {
        lock(&self.state).posted_rx_log.clone()
    }
    /// Every TX segment ever posted.
    pub fn posted_tx(&self) -> Vec<DmaAccess> {
        lock(&self.state).posted_tx_log.clone()
    }
    /// Every DMA write that landed.
    pub fn writes(&self) -> Vec<DmaAccess> {
        lock(&self.state).writes.clone()
    }
    pub fn reads(&self) -> Vec<DmaAccess> {
        lock(&self.state).reads.clone()
    }
    /// Accesses the IOMMU refused.
    pub fn faults(&self) -> Vec<DmaAccess> {
        lock(&self.state).faults.clone()
    }
    /// Frames transmitted, as the wire saw them.
    pub fn sent(&self) -> Vec<Vec<u8>> {
        lock(&self.state).sent.clone()
    }
    pub fn rx_buffers_held(&self) -> usize {
        let s = lock(&self.state);
        s.rx_posted.len()
    }
    pub fn mac(&self) -> Option<[u8; 6]> {
        lock(&self.state).mac
    }
    pub fn quiesce_count(&self) -> u64 {
        lock(&self.state).quiesces
    }
    /// How often the driver made posted RX buffers visible (`flush_rx`).
    pub fn rx_flush_count(&self) -> u64 {
        lock(&self.state).rx_flushes
    }
    /// How often the driver started queued TX frames (`flush_tx`).
    pub fn tx_flush_count(&self) -> u64 {
        lock(&self.state).tx_flushes
    }
    /// RX buffers posted but not yet made visible by `flush_rx`.
    pub fn rx_unflushed(&self) -> usize {
        let s = lock(&self.state);
        s.rx_posted.len() - s.rx_tail
    }
    /// Time and bytes of the model's own "DMA" (kept apart from VMM work).
    pub fn dma_stats(&self) -> (Duration, u64) {
        let s = lock(&self.state);
        (s.dma_time, s.dma_bytes)
    }
    /// Forget records (benchmarks call this between rounds).
    pub fn clear_records(&self) {
        let mut s = lock(&self.state);
        s.posted_rx_log.clear();
        s.posted_tx_log.clear();
        s.writes.clear();
        s.reads.clear();
        s.faults.clear();
        s.sent.clear();
        s.dma_time = Duration::ZERO;
        s.dma_bytes = 0;
    }
    /// Stop recording per-access logs (benchmarks: keeps memory flat).
    pub fn iommu(&self) -> &ModelIommu {
        &self.iommu
    }

    /// The model's IOMMU as the driver side maps into it.
    pub fn mapper(&self) -> Arc<dyn DmaMapper> {
        self.iommu.clone()
    }
}

fn complete_tx_locked(s: &mut State, iommu: &ModelIommu) {
    // Only frames behind the tail: a queued, unflushed frame is not sent.
    while s.tx_tail > 0 {
        let Some((nseg, cookie)) = s.tx_posted.pop_front() else {
            break;
        };
        s.tx_tail -= 1;
        let mut frame = Vec::new();
        let t = Instant::now();
        let mut ok = true;
        let segs: Vec<(u64, u32)> = s.tx_posted_segs.drain(..nseg).collect();
        for (iova, len) in &segs {
            let start = frame.len();
            frame.resize(start + *len as usize, 0);
            let acc = DmaAccess { iova: *iova, len: u64::from(*len) };
            if iommu.read(*iova, &mut frame[start..]) {
                s.reads.push(acc);
            } else {
                s.faults.push(acc);
                ok = false;
            }
        }
        s.dma_time += t.elapsed();
        if ok {
            s.dma_bytes += frame.len() as u64;
            s.sent.push(frame);
        }
        s.tx_done.push_back(TxCompletion { cookie });
    }
}

fn rx_free_locked(s: &State, cfg: &ModelConfig) -> usize {
    if !s.started {
        return 0;
    }
    cfg.limits.rx_capacity - s.rx_posted.len() - s.rx_done.len()
}

fn tx_free_locked(s: &State, cfg: &ModelConfig) -> usize {
    if !s.started {
        return 0;
    }
    // One descriptor per posted segment, one per finished frame not reaped.
    cfg.limits.tx_capacity.saturating_sub(s.tx_posted_segs.len() + s.tx_done.len())
}

impl NicModel {
    /// One RX buffer of a run (`post_rx_with`), with the checks a NIC driver makes.
    fn post_one_rx(&mut self, iova: u64, len: u32, cookie: u64) -> Result<(), DriverError> {
        let mut s = lock(&self.state);
        let free = rx_free_locked(&s, &self.cfg);
        if s.removed {
            return Err(DriverError::Removed);
        }
        if !s.started {
            return Err(DriverError::Stopped);
        }
        if len < self.cfg.limits.rx_max_write || iova & (self.cfg.limits.rx_align - 1) != 0 {
            return Err(DriverError::BadBuffer(format!("RX buffer {iova:#x}+{len}")));
        }
        if free == 0 {
            return Err(DriverError::RingFull("RX"));
        }
        s.posted_rx_log.push(DmaAccess { iova, len: u64::from(len) });
        s.rx_posted.push_back(PostedRx { iova, len, cookie });
        Ok(())
    }
}

impl PnicDriver for NicModel {
    fn name(&self) -> &'static str {
        "model"
    }

    fn limits(&self) -> DriverLimits {
        self.cfg.limits
    }

    fn start(&mut self) -> Result<(), DriverError> {
        let mut s = lock(&self.state);
        if s.removed {
            return Err(DriverError::Removed);
        }
        s.started = true;
        Ok(())
    }

    fn rx_free(&self) -> usize {
        rx_free_locked(&lock(&self.state), &self.cfg)
    }

    fn post_rx_with<F: FnMut() -> Option<(u64, u64)>>(
        &mut self,
        len: u32,
        mut next: F,
    ) -> (usize, Result<(), RxRunError>) {
        let mut posted = 0;
        while self.rx_free() > 0 {
            let Some((iova, cookie)) = next() else { break };
            if let Err(error) = self.post_one_rx(iova, len, cookie) {
                return (posted, Err(RxRunError { refused: Some(cookie), error }));
            }
            posted += 1;
        }
        (posted, Ok(()))
    }

    fn flush_rx(&mut self) -> Result<(), DriverError> {
        // A tail-register write: everything posted so far becomes visible.
        let mut s = lock(&self.state);
        s.rx_flushes += 1;
        s.rx_tail = s.rx_posted.len();
        Ok(())
    }

    fn rx_posted_with<F: FnMut(u64)>(&self, f: F) {
        let s = lock(&self.state);
        s.rx_done.iter().map(|c| c.cookie).chain(s.rx_posted.iter().map(|p| p.cookie)).for_each(f);
    }

    fn reap_rx_with<F: FnMut(RxCompletion)>(&mut self, f: F) -> Result<(), DriverError> {
        let done: Vec<RxCompletion> = lock(&self.state).rx_done.drain(..).collect();
        done.into_iter().for_each(f);
        Ok(())
    }

    fn tx_free(&self) -> usize {
        tx_free_locked(&lock(&self.state), &self.cfg)
    }

    fn flush_tx(&mut self) -> Result<(), DriverError> {
        // A tail-register write: every queued frame is sent.
        let mut s = lock(&self.state);
        s.tx_flushes += 1;
        s.tx_tail = s.tx_posted.len();
        if self.cfg.auto_tx {
            complete_tx_locked(&mut s, &self.iommu);
        }
        Ok(())
    }

    fn queue_tx(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<(), DriverError> {
        let mut s = lock(&self.state);
        let free = tx_free_locked(&s, &self.cfg);
        if s.removed {
            return Err(DriverError::Removed);
        }
        if !s.started {
            return Err(DriverError::Stopped);
        }
        if segs.is_empty() || segs.len() > self.cfg.limits.tx_max_segs {
            return Err(DriverError::TooManySegments { got: segs.len(), max: self.cfg.limits.tx_max_segs });
        }
        let total: u64 = segs.iter().map(|s| u64::from(s.1)).sum();
        if total > u64::from(self.cfg.limits.tx_max_frame) {
            return Err(DriverError::BadBuffer(format!("TX frame of {total} bytes")));
        }
        if free < segs.len() {
            return Err(DriverError::RingFull("TX"));
        }
        for (iova, len) in segs {
            s.posted_tx_log.push(DmaAccess { iova: *iova, len: u64::from(*len) });
        }
        s.tx_posted.push_back((segs.len(), cookie));
        s.tx_posted_segs.extend(segs.iter().copied());
        Ok(())
    }

    fn reap_tx_with<F: FnMut(TxCompletion)>(&mut self, f: F) -> Result<(), DriverError> {
        let done: Vec<TxCompletion> = lock(&self.state).tx_done.drain(..).collect();
        done.into_iter().for_each(f);
        Ok(())
    }

    fn link_up(&mut self) -> Result<bool, DriverError> {
        let s = lock(&self.state);
        if s.removed {
            return Err(DriverError::Removed);
        }
        Ok(s.link)
    }

    fn set_mac_filter(&mut self, mac: [u8; 6]) -> Result<(), DriverError> {
        lock(&self.state).mac = Some(mac);
        Ok(())
    }

    fn quiesce(&mut self) -> Result<(), DriverError> {
        let mut s = lock(&self.state);
        s.started = false;
        s.rx_posted.clear();
        s.rx_tail = 0;
        s.rx_done.clear();
        s.tx_posted.clear();
        s.tx_posted_segs.clear();
        s.tx_tail = 0;
        s.tx_done.clear();
        s.quiesces += 1;
        Ok(())
    }

    fn reset(&mut self) -> Result<(), DriverError> {
        self.quiesce()
    }

    fn irq_fds(&self) -> Vec<RawFd> {
        vec![self.irq.as_raw_fd()]
    }

    fn handle_irq(&mut self, _index: usize) -> Result<(), DriverError> {
        let _ = self.irq.read();
        if lock(&self.state).removed {
            return Err(DriverError::Removed);
        }
        Ok(())
    }

    fn alloc_dma(&mut self, len: usize) -> Result<DmaArea, DriverError> {
        let at = self.iova.alloc(len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
        let area = DmaArea::new(at, len).map_err(|e| DriverError::DmaMap(e.to_string()))?;
        self.iommu.map(area.mem()).map_err(DriverError::DmaMap)?;
        Ok(area)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::driver::testing::DriverTestExt;
    use vm_memory::{Bytes, GuestAddress};

    fn guest() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 1];

    fn frame(dst: [u8; 6], len: usize) -> Vec<u8> {
        let mut f = vec![0xab; len];
        f[..6].copy_from_slice(&dst);
        f
    }

    #[test]
    fn rx_lands_at_posted_iova_and_is_recorded() {
        let g = guest();
        let (mut m, h) = NicModel::new(&g, ModelConfig::default()).unwrap();
        m.set_mac_filter(MAC).unwrap();
        m.start().unwrap();
        m.post_rx(0x100c, 2036, 5).unwrap();
        assert_eq!(h.inject_rx(&frame(MAC, 60)), InjectOutcome::NoBuffer, "not flushed yet");
        m.flush_rx().unwrap();
        assert_eq!(h.inject_rx(&frame([8; 6], 60)), InjectOutcome::Filtered);
        assert_eq!(h.inject_rx(&frame(MAC, 1600)), InjectOutcome::Oversized);
        assert_eq!(h.inject_rx(&frame(MAC, 60)), InjectOutcome::Delivered { cookie: 5, iova: 0x100c });
        let mut b = [0u8; 6];
        g.read_slice(&mut b, GuestAddress(0x100c)).unwrap();
        assert_eq!(b, MAC);
        assert_eq!(h.writes(), vec![DmaAccess { iova: 0x100c, len: 60 }]);
        let mut out = Vec::new();
        m.reap_rx(&mut out).unwrap();
        assert_eq!(out, vec![RxCompletion { cookie: 5, len: 60, eop: true, error: false, csum_ok: false }]);
    }

    #[test]
    fn unmapped_iova_faults_instead_of_writing() {
        let g = guest();
        let (mut m, h) = NicModel::new(&g, ModelConfig::default()).unwrap();
        m.start().unwrap();
        m.post_rx(0x20_0000, 2048, 1).unwrap();
        m.flush_rx().unwrap();
        assert_eq!(h.inject_rx(&frame([0xff; 6], 60)), InjectOutcome::Fault);
        assert_eq!(h.faults().len(), 1);
        assert!(h.writes().is_empty());
    }

    #[test]
    fn tx_reads_segments_and_quiesce_forgets() {
        let g = guest();
        let (mut m, h) = NicModel::new(&g, ModelConfig::default()).unwrap();
        m.start().unwrap();
        g.write_slice(&[1, 2, 3], GuestAddress(0x2000)).unwrap();
        g.write_slice(&[4, 5], GuestAddress(0x3000)).unwrap();
        m.post_tx(&[(0x2000, 3), (0x3000, 2)], 9).unwrap();
        assert_eq!(h.sent(), vec![vec![1, 2, 3, 4, 5]]);
        let mut out = Vec::new();
        m.reap_tx(&mut out).unwrap();
        assert_eq!(out, vec![TxCompletion { cookie: 9 }]);
        m.post_rx(0x100c, 2036, 5).unwrap();
        m.flush_rx().unwrap();
        m.quiesce().unwrap();
        assert_eq!(h.inject_rx(&frame([0xff; 6], 60)), InjectOutcome::NoBuffer);
        assert_eq!(h.rx_buffers_held(), 0);
        let area = m.alloc_dma(4096).unwrap();
        assert!(area.iova() >= 0x10_0000);
        assert!(h.iommu().write(area.iova(), &[1]));
    }
}
