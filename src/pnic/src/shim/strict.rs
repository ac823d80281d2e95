//! Strict DMA (`--net vfio=BDF,dma=strict`): a guest page is in the NIC's
//! IOMMU domain only while the NIC owns a buffer on it.
//!
//! By default the whole of guest RAM is mapped once (IOVA = GPA), so a NIC
//! that writes a buffer after the guest got it back, or anywhere else in
//! guest RAM, corrupts the guest silently. [`StrictDma`] wraps the driver
//! instead: every guest buffer the shim hands to the NIC (an RX buffer at
//! post, a TX frame's segments at queue) has its pages mapped first, IOVA =
//! GPA, page granular and refcounted ([`PageRefs`]: buffers share pages);
//! they are unmapped when the driver hands the buffer back (the NIC wrote
//! its descriptor's done bit, so its DMA there is over) and before the shim
//! sees the completion, and all of them when the queues stop (quiesce,
//! reset, drop). A NIC write anywhere else is then an IOMMU fault the host
//! kernel logs ("DMAR: [DMA Write ...] fault addr" on VT-d) instead of a
//! write into guest memory. The VMM's own DMA areas (rings, bounce buffers,
//! header copies) lie above guest RAM and stay mapped as they are.
//!
//! This is the only place that knows about strict mode: the shim's datapath
//! is the same code over `StrictDma<Pnic>` as over `Pnic`, so the default
//! mode pays nothing for it.

use std::collections::HashMap;
use std::os::unix::io::RawFd;
use std::sync::Arc;

use serde::Serialize;
use vm_memory::GuestMemoryMmap;

use crate::dma::{in_guest_ram, DmaArea, DmaMapper, PAGE_SIZE};
use crate::driver::{DriverError, DriverLimits, PnicDriver, RxCompletion, RxRunError, TxCompletion};

/// What the strict mapper did (under `strict_dma` in the shim's metrics).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct StrictDmaMetrics {
    /// Guest pages put into the IOMMU (a page shared by buffers once).
    pub page_maps: u64,
    /// Guest pages taken out of it again.
    pub page_unmaps: u64,
    /// Guest pages mapped right now (`page_maps - page_unmaps`).
    pub pages_mapped: u64,
    /// Buffers refused because their pages could not be mapped.
    pub map_errors: u64,
    /// Unmaps the IOMMU refused (the page may still be reachable).
    pub unmap_errors: u64,
}

/// Refcounted single-page IOMMU mappings of guest RAM, IOVA = GPA.
pub struct PageRefs {
    mapper: Arc<dyn DmaMapper>,
    guest: GuestMemoryMmap,
    refs: HashMap<u64, u32>,
    metrics: StrictDmaMetrics,
}

/// The page-aligned start of every page `[iova, iova + len)` touches.
fn pages(iova: u64, len: u64) -> impl Iterator<Item = u64> {
    let first = iova & !(PAGE_SIZE - 1);
    let end = iova.saturating_add(len.max(1));
    (first..end).step_by(PAGE_SIZE as usize)
}

impl PageRefs {
    pub fn new(mapper: Arc<dyn DmaMapper>, guest: &GuestMemoryMmap) -> Self {
        PageRefs { mapper, guest: guest.clone(), refs: HashMap::new(), metrics: StrictDmaMetrics::default() }
    }

    /// Take a reference on every page of `[iova, iova + len)`, mapping the
    /// ones that were not; all or nothing.
    pub fn map(&mut self, iova: u64, len: u64) -> Result<(), DriverError> {
        for (i, page) in pages(iova, len).enumerate() {
            if let Err(e) = self.get(page) {
                pages(iova, len).take(i).for_each(|p| self.put(p));
                self.metrics.map_errors += 1;
                return Err(DriverError::DmaMap(e));
            }
        }
        Ok(())
    }

    /// Drop a reference on every page of `[iova, iova + len)`, unmapping
    /// the ones no buffer uses any more.
    pub fn unmap(&mut self, iova: u64, len: u64) {
        pages(iova, len).for_each(|p| self.put(p));
    }

    fn get(&mut self, page: u64) -> Result<(), String> {
        if let Some(n) = self.refs.get_mut(&page) {
            *n += 1;
            return Ok(());
        }
        self.mapper.map_page(&self.guest, page)?;
        self.refs.insert(page, 1);
        self.metrics.page_maps += 1;
        self.metrics.pages_mapped += 1;
        Ok(())
    }

    fn put(&mut self, page: u64) {
        let Some(n) = self.refs.get_mut(&page) else { return };
        *n -= 1;
        if *n == 0 {
            self.refs.remove(&page);
            self.unmap_page(page);
        }
    }

    fn unmap_page(&mut self, page: u64) {
        self.metrics.page_unmaps += 1;
        self.metrics.pages_mapped -= 1;
        if let Err(e) = self.mapper.unmap_page(page) {
            self.metrics.unmap_errors += 1;
            log::error!("strict DMA: {e}");
        }
    }

    /// Unmap every page, whatever its references.
    pub fn unmap_all(&mut self) {
        let all: Vec<u64> = self.refs.drain().map(|(p, _)| p).collect();
        all.into_iter().for_each(|p| self.unmap_page(p));
    }

    /// Whether guest page `page` is mapped.
    pub fn is_mapped(&self, page: u64) -> bool {
        self.refs.contains_key(&(page & !(PAGE_SIZE - 1)))
    }

    /// References on guest page `page` (0: not mapped).
    pub fn refs(&self, page: u64) -> u32 {
        self.refs.get(&(page & !(PAGE_SIZE - 1))).copied().unwrap_or(0)
    }

    pub fn metrics(&self) -> &StrictDmaMetrics {
        &self.metrics
    }

    fn in_guest(&self, iova: u64, len: u64) -> bool {
        in_guest_ram(&self.guest, iova, len)
    }
}

/// A [`PnicDriver`] whose guest buffers are in the IOMMU only while the NIC
/// owns them (see the module documentation). The NIC must have been opened
/// without guest RAM mapped (`NicConfig::dma` strict).
pub struct StrictDma<D: PnicDriver> {
    inner: D,
    pages: PageRefs,
    /// The guest IOVA of each RX buffer the NIC holds, by cookie.
    rx: HashMap<u64, u64>,
    /// The guest segments of each TX frame the NIC holds, by cookie.
    tx: HashMap<u64, Vec<(u64, u32)>>,
    /// Bytes the NIC may write at an RX IOVA: what is mapped there.
    rx_len: u64,
}

impl<D: PnicDriver> StrictDma<D> {
    /// `mapper` is the NIC's IOMMU domain, in which no guest RAM is mapped.
    pub fn new(inner: D, mapper: Arc<dyn DmaMapper>, guest: &GuestMemoryMmap) -> Self {
        let rx_len = u64::from(inner.limits().rx_max_write);
        StrictDma { inner, pages: PageRefs::new(mapper, guest), rx: HashMap::new(), tx: HashMap::new(), rx_len }
    }

    pub fn inner(&self) -> &D {
        &self.inner
    }

    pub fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    pub fn pages(&self) -> &PageRefs {
        &self.pages
    }

    /// The queues stopped (or the NIC was reset): the NIC owns nothing any
    /// more, so nothing of guest RAM stays mapped. Also after a stop that
    /// did not confirm DMA stopped: the IOMMU then keeps the NIC out of the
    /// buffers the shim still holds.
    fn release_all(&mut self) {
        self.rx.clear();
        self.tx.clear();
        self.pages.unmap_all();
    }

    fn release_tx(&mut self, cookie: u64) {
        if let Some(segs) = self.tx.remove(&cookie) {
            segs.iter().for_each(|(iova, len)| self.pages.unmap(*iova, u64::from(*len)));
        }
    }
}

impl<D: PnicDriver> Drop for StrictDma<D> {
    fn drop(&mut self) {
        if !self.rx.is_empty() || !self.tx.is_empty() {
            // Stop the queues before their buffers leave the IOMMU, so an
            // orderly exit logs no fault.
            let _ = self.inner.quiesce();
        }
        self.release_all();
    }
}

impl<D: PnicDriver> PnicDriver for StrictDma<D> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }
    fn limits(&self) -> DriverLimits {
        self.inner.limits()
    }
    fn start(&mut self) -> Result<(), DriverError> {
        self.inner.start()
    }
    fn quiesce(&mut self) -> Result<(), DriverError> {
        let r = self.inner.quiesce();
        self.release_all();
        r
    }
    fn reset(&mut self) -> Result<(), DriverError> {
        let r = self.inner.reset();
        self.release_all();
        r
    }
    fn link_up(&mut self) -> Result<bool, DriverError> {
        self.inner.link_up()
    }
    fn set_mac_filter(&mut self, mac: [u8; 6]) -> Result<(), DriverError> {
        self.inner.set_mac_filter(mac)
    }
    fn irq_fds(&self) -> Vec<RawFd> {
        self.inner.irq_fds()
    }
    fn handle_irq(&mut self, index: usize) -> Result<(), DriverError> {
        self.inner.handle_irq(index)
    }
    fn alloc_dma(&mut self, len: usize) -> Result<DmaArea, DriverError> {
        self.inner.alloc_dma(len)
    }
    fn strict_dma(&self) -> Option<&StrictDmaMetrics> {
        Some(self.pages.metrics())
    }
    fn irq_rate_changes(&self) -> Option<u64> {
        self.inner.irq_rate_changes()
    }

    fn rx_free(&self) -> usize {
        self.inner.rx_free()
    }

    /// Each guest buffer's pages are mapped before the driver sees it; a
    /// buffer whose pages cannot be mapped ends the run, refused.
    fn post_rx_with<F: FnMut() -> Option<(u64, u64)>>(
        &mut self,
        len: u32,
        mut next: F,
    ) -> (usize, Result<(), RxRunError>) {
        let (pages, rx, rx_len) = (&mut self.pages, &mut self.rx, self.rx_len);
        let mut refused = None;
        let (posted, r) = self.inner.post_rx_with(len, || {
            let (iova, cookie) = next()?;
            if pages.in_guest(iova, rx_len) {
                if let Err(e) = pages.map(iova, rx_len) {
                    refused = Some(RxRunError { refused: Some(cookie), error: e });
                    return None;
                }
                rx.insert(cookie, iova);
            }
            Some((iova, cookie))
        });
        if let Err(RxRunError { refused: Some(cookie), .. }) = &r {
            // Yielded and mapped, but not posted.
            if let Some(iova) = self.rx.remove(cookie) {
                self.pages.unmap(iova, rx_len);
            }
        }
        match (r, refused) {
            (Ok(()), Some(e)) => (posted, Err(e)),
            (r, _) => (posted, r),
        }
    }
    fn flush_rx(&mut self) -> Result<(), DriverError> {
        self.inner.flush_rx()
    }
    /// A finished buffer leaves the IOMMU before its completion goes on.
    fn reap_rx_with<F: FnMut(RxCompletion)>(&mut self, mut f: F) -> Result<(), DriverError> {
        let (pages, rx, rx_len) = (&mut self.pages, &mut self.rx, self.rx_len);
        self.inner.reap_rx_with(|c| {
            if let Some(iova) = rx.remove(&c.cookie) {
                pages.unmap(iova, rx_len);
            }
            f(c)
        })
    }
    fn rx_posted_with<F: FnMut(u64)>(&self, f: F) {
        self.inner.rx_posted_with(f)
    }

    fn tx_free(&self) -> usize {
        self.inner.tx_free()
    }
    /// The frame's guest segments are mapped before the driver queues it.
    fn queue_tx(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<(), DriverError> {
        let mut mapped = Vec::with_capacity(segs.len());
        for &(iova, len) in segs {
            if !self.pages.in_guest(iova, u64::from(len)) {
                continue;
            }
            if let Err(e) = self.pages.map(iova, u64::from(len)) {
                mapped.iter().for_each(|(i, l)| self.pages.unmap(*i, u64::from(*l)));
                return Err(e);
            }
            mapped.push((iova, len));
        }
        if !mapped.is_empty() {
            self.tx.insert(cookie, mapped);
        }
        let r = self.inner.queue_tx(segs, cookie);
        if r.is_err() {
            self.release_tx(cookie);
        }
        r
    }
    fn flush_tx(&mut self) -> Result<(), DriverError> {
        self.inner.flush_tx()
    }
    /// A sent frame leaves the IOMMU before its completion goes on.
    fn reap_tx_with<F: FnMut(TxCompletion)>(&mut self, mut f: F) -> Result<(), DriverError> {
        let (pages, tx) = (&mut self.pages, &mut self.tx);
        self.inner.reap_tx_with(|c| {
            if let Some(segs) = tx.remove(&c.cookie) {
                segs.iter().for_each(|(iova, len)| pages.unmap(*iova, u64::from(*len)));
            }
            f(c)
        })
    }
}
