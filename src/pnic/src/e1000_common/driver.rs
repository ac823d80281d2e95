//! The one [`PnicDriver`] implementation of the e1000 family: ring posting and
//! reaping, start/quiesce/reset sequencing, removal detection and DMA
//! allocation, over a [`Family`] that supplies what differs between NICs
//! (interrupt setup, queue enable/disable handshake, receive configuration).

use std::marker::PhantomData;
use std::os::unix::io::{AsRawFd, RawFd};
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use super::moderation::Moderation;
use super::regs::*;
use super::ring::{DescLayout, RxRing, TxRing};
use super::{
    alloc_dma, check_alive, global_reset, poll_until, read_checked, reset_on_drop, write_mac_filter, NicConfig,
    OpenError, PciControl, RxGeometry, ETH_MTU,
};
use crate::bdf::Bdf;
use crate::dma::{DmaArea, DmaMapper, IovaAllocator};
use crate::driver::{
    DriverError, DriverLimits, PnicDriver, RegisterAccess, RxCompletion, RxRunError, TxCompletion, TxOffload,
    TxOffloadCaps,
};
use crate::vfio::{MmioRegs, VfioNic};

/// What one e1000-family NIC does its own way. The hooks run with the
/// driver's state at hand; everything else is [`E1000`]'s.
pub trait Family: Sized + 'static {
    type Desc: DescLayout;
    /// Short name for logs and metrics.
    const NAME: &'static str;
    const RX_RING_SIZE: usize;
    const TX_RING_SIZE: usize;
    /// The most the NIC writes into one RX buffer (its programmed frame cap).
    const RX_MAX_FRAME: u32;
    const TX_MAX_FRAME: u32;
    const TX_MAX_SEGS: usize;
    /// The TX offloads the family's descriptors express (none: the
    /// layout's `tx_context` is `None`).
    const TX_OFFLOADS: TxOffloadCaps = TxOffloadCaps { csum: false, tso: false, tso_max_frame: 0, max_segs: 0 };
    /// MSI-X vectors `open_vfio` asks VFIO for (fewer if the function has
    /// fewer).
    const MSIX_VECTORS: u32 = 2;
    /// Whether `open_vfio` resets the function through VFIO (FLR) first; a
    /// family whose own bring-up resets it (an SR-IOV VF: VTCTRL.RST and the
    /// PF handshake) may skip it.
    const VFIO_RESET: bool = true;
    /// Whether the family's own reset stops the queues before it asks
    /// anyone else for anything (an SR-IOV VF: VTCTRL.RST, then the PF's
    /// mailbox). A reset whose function reset completed but whose
    /// configuration then failed (the PF did not answer) left no DMA
    /// running: it is not latched, and the family's recovery tries again.
    const RESET_STOPS_DMA_FIRST: bool = false;
    /// The throttling register of the queue vector in 82576 EITR format,
    /// when the family has one: the driver adapts its rate to the traffic
    /// (`moderation`). `configure` programs it at `moderation::Rate::Latency`.
    const QUEUE_EITR: Option<u32> = None;
    /// How the NIC receives for `mtu`: frame cap and buffer size. The
    /// default takes Ethernet's MTU and less only, one buffer per frame
    /// ([`Family::RX_MAX_FRAME`] in a 2 KiB buffer).
    fn rx_geometry(mtu: u16) -> Result<RxGeometry, DriverError> {
        if mtu > ETH_MTU {
            return Err(DriverError::Unsupported(format!(
                "{}: MTU {mtu} is not supported by this NIC's driver (at most {ETH_MTU})",
                Self::NAME
            )));
        }
        Ok(RxGeometry { max_frame: Self::RX_MAX_FRAME, buf_size: 2048 })
    }
    /// Mask every interrupt cause.
    fn mask_irqs(regs: &impl RegisterAccess);
    /// After the global reset: link, PHY, stopped queues, rings
    /// (`program_rings`), receive filter, MSI-X routing.
    fn configure<R: RegisterAccess>(d: &mut E1000<Self, R>) -> Result<(), DriverError>;
    /// Enable both queues and the receiver/transmitter (the NIC is alive).
    fn start<R: RegisterAccess>(d: &mut E1000<Self, R>) -> Result<(), DriverError>;
    /// Stop both queues; an error means the NIC did not confirm that DMA
    /// stopped, and the driver then resets it.
    fn stop<R: RegisterAccess>(d: &mut E1000<Self, R>) -> Result<(), DriverError>;
    /// React to MSI-X vector `index` (its eventfd already drained).
    fn handle_irq<R: RegisterAccess>(d: &mut E1000<Self, R>, index: usize) -> Result<(), DriverError>;
}

/// The largest frame sent: the family's, or the MTU's frame if larger (a
/// jumbo MTU goes both ways).
fn tx_max_frame<F: Family>(geo: &RxGeometry) -> u32 {
    F::TX_MAX_FRAME.max(geo.max_frame)
}

/// An e1000-family NIC with one RX and one TX queue, over any register access.
pub struct E1000<F: Family, R: RegisterAccess> {
    pub(crate) regs: R,
    pub(crate) rx_ring: RxRing<F::Desc>,
    pub(crate) tx_ring: TxRing<F::Desc>,
    pub(crate) mac: [u8; 6],
    /// Frame cap and buffer size for the configured MTU.
    pub(crate) rx_geo: RxGeometry,
    pub(crate) started: bool,
    pub(crate) removed: bool,
    /// MSI-X vectors wired to eventfds (0 when polling only).
    pub(crate) msix_vectors: usize,
    mapper: Arc<dyn DmaMapper>,
    iova: IovaAllocator,
    /// The VFIO handle when running on hardware; dropped last.
    nic: Option<VfioNic>,
    /// Interrupt eventfds of a NIC that is not behind VFIO (a hardware
    /// model in benchmarks and tests); unused when `nic` is set.
    model_irqs: Vec<Arc<EventFd>>,
    /// PCI control of a NIC that is not behind VFIO (the model); unused
    /// when `nic` is set.
    model_pci: Option<Box<dyn PciControl>>,
    /// Set when the NIC would neither stop nor reset: the error every later
    /// start, reset and quiesce returns. Bus mastering is never turned back
    /// on and the rings are left as they are (the NIC may still read them).
    latched: Option<DriverError>,
    /// The queue vector's adaptive rate (families with `QUEUE_EITR`).
    pub(crate) moderation: Moderation,
    family: PhantomData<fn() -> F>,
}

/// Open `bdf` through VFIO, map `guest` for DMA and bring the NIC up with
/// `cfg.mac` as its only unicast address.
pub fn open_vfio<F: Family>(
    bdf: Bdf,
    guest: &GuestMemoryMmap,
    cfg: NicConfig,
) -> Result<E1000<F, MmioRegs>, OpenError> {
    let mut nic = VfioNic::open(bdf, guest, cfg.dma)?;
    if F::VFIO_RESET {
        nic.device_reset()?;
    } else {
        nic.set_bus_master(true)?;
    }
    let vectors = nic.enable_msix(F::MSIX_VECTORS)?;
    let mut d = E1000::new(nic.regs(), nic.dma_mapper(), IovaAllocator::above(guest), cfg, vectors)
        .map_err(|source| OpenError::Driver { family: F::NAME, source })?;
    d.nic = Some(nic);
    Ok(d)
}

impl<F: Family, R: RegisterAccess> E1000<F, R> {
    /// The IOMMU domain the NIC's DMA goes through (strict DMA maps guest
    /// pages into it one by one).
    pub fn dma_mapper(&self) -> Arc<dyn DmaMapper> {
        self.mapper.clone()
    }

    /// Reset and initialise the NIC; queues stay stopped until `start`.
    /// `msix_vectors` is how many MSI-X vectors are wired to eventfds.
    pub fn new(
        regs: R,
        mapper: Arc<dyn DmaMapper>,
        mut iova: IovaAllocator,
        cfg: NicConfig,
        msix_vectors: usize,
    ) -> Result<Self, DriverError> {
        let desc = DESC_SIZE as usize;
        let rx_geo = F::rx_geometry(cfg.mtu)?;
        let rx = alloc_dma(mapper.as_ref(), &mut iova, F::RX_RING_SIZE * desc)?;
        let tx = alloc_dma(mapper.as_ref(), &mut iova, F::TX_RING_SIZE * desc)?;
        let mut d = E1000 {
            regs,
            rx_ring: RxRing::new(rx, F::RX_RING_SIZE, rx_geo.max_write()),
            tx_ring: TxRing::new(tx, F::TX_RING_SIZE, tx_max_frame::<F>(&rx_geo), F::TX_MAX_SEGS),
            mac: cfg.mac,
            rx_geo,
            started: false,
            removed: false,
            msix_vectors,
            mapper,
            iova,
            nic: None,
            model_irqs: Vec::new(),
            model_pci: None,
            latched: None,
            moderation: Moderation::default(),
            family: PhantomData,
        };
        d.init_hw()?;
        if !poll_until(cfg.link_timeout, || d.regs.read32(STATUS) & STATUS_LU != 0) {
            log::warn!("{}: link still down after {:?}; frames flow once it comes up", F::NAME, cfg.link_timeout);
        }
        Ok(d)
    }

    /// Read a register, noticing a vanished NIC (see [`read_checked`]).
    pub(crate) fn read(&mut self, off: u32) -> Result<u32, DriverError> {
        read_checked(&self.regs, &mut self.removed, off)
    }

    pub(crate) fn check_alive(&mut self) -> Result<(), DriverError> {
        check_alive(&self.regs, &mut self.removed)
    }

    /// Global reset and the static configuration (everything but queue enable).
    fn init_hw(&mut self) -> Result<(), DriverError> {
        self.init_hw_staged().map_err(|(e, _)| e)
    }

    /// [`Self::init_hw`], the error saying whether the function reset itself
    /// completed (only the configuration after it failed).
    fn init_hw_staged(&mut self) -> Result<(), (DriverError, bool)> {
        F::mask_irqs(&self.regs);
        global_reset(&self.regs, &mut self.removed).map_err(|e| (e, false))?;
        F::mask_irqs(&self.regs);
        F::configure(self).map_err(|e| (e, true))?;
        self.moderation.reset();
        self.reset_ring_state();
        self.started = false;
        Ok(())
    }

    fn reset_ring_state(&mut self) {
        self.rx_ring.reset();
        self.tx_ring.reset();
    }

    /// At an interrupt of the queue vector: the rate for what the last
    /// interval carried, written only when it changes (one MMIO write).
    fn moderate(&mut self) {
        let Some(eitr) = F::QUEUE_EITR else { return };
        if self.msix_vectors == 0 || !self.started || self.removed || self.latched.is_some() {
            return;
        }
        if let Some(rate) = self.moderation.at_interrupt(std::time::Instant::now()) {
            self.regs.write32(eitr, rate.eitr());
        }
    }

    /// Posting needs running queues and a NIC that is still there.
    fn check_postable(&self) -> Result<(), DriverError> {
        if !self.started {
            return Err(DriverError::Stopped);
        }
        if self.removed {
            return Err(DriverError::Removed);
        }
        Ok(())
    }

    /// The register accessor (tests and diagnostics).
    pub fn regs(&self) -> &R {
        &self.regs
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// Wire the interrupts of a NIC without VFIO (a hardware model): vector
    /// `i` is `irqs[i]`, as MSI-X vectors are on hardware.
    pub fn set_model_irqs(&mut self, irqs: Vec<Arc<EventFd>>) {
        self.model_irqs = irqs;
    }

    /// Use `pci` for bus mastering and function reset (a NIC model; a NIC
    /// behind VFIO uses VFIO).
    pub fn set_model_pci(&mut self, pci: Box<dyn PciControl>) {
        self.model_pci = Some(pci);
    }

    fn pci(&self) -> Option<&dyn PciControl> {
        match &self.nic {
            Some(n) => Some(n),
            None => self.model_pci.as_deref(),
        }
    }

    /// Whether the NIC is latched failed (it would neither stop nor reset).
    pub fn latched(&self) -> bool {
        self.latched.is_some()
    }

    /// The NIC would neither stop its queues nor reset (`why`): latch it
    /// failed. Bus mastering goes off and stays off; then a function-level
    /// reset is tried. If that worked, DMA is stopped (`Failed`); if not,
    /// nothing proves it stopped (`DmaNotStopped`: the caller holds on to
    /// every buffer the NIC had). The rings are not touched: a NIC still
    /// running would read whatever was written there.
    #[cold]
    fn latch(&mut self, why: &DriverError) -> DriverError {
        self.started = false;
        let (master, flr) = match self.pci() {
            Some(p) => {
                let master = p.set_bus_master(false);
                let flr = p.function_reset();
                // The reset clears bus mastering; make sure it stays clear.
                let master = p.set_bus_master(false).or(master);
                (master, flr)
            }
            None => (Err("no PCI control".to_string()), Err("no PCI control".to_string())),
        };
        let master = match master {
            Ok(()) => "bus mastering off".to_string(),
            Err(e) => format!("bus mastering could not be turned off ({e})"),
        };
        let err = match flr {
            Ok(()) => DriverError::Failed(format!("{why}; function reset done, {master}")),
            Err(e) => DriverError::DmaNotStopped(format!("{why}; function reset failed ({e}), {master}")),
        };
        log::error!("{}: {err}", F::NAME);
        self.latched = Some(err.clone());
        err
    }
}

impl<F: Family, R: RegisterAccess> PnicDriver for E1000<F, R> {
    fn name(&self) -> &'static str {
        F::NAME
    }

    fn limits(&self) -> DriverLimits {
        DriverLimits {
            rx_capacity: F::RX_RING_SIZE - 1,
            tx_capacity: F::TX_RING_SIZE - 1,
            rx_max_write: self.rx_geo.max_write(),
            rx_max_frame: self.rx_geo.max_frame,
            rx_align: 2,
            tx_max_frame: tx_max_frame::<F>(&self.rx_geo),
            tx_max_segs: F::TX_MAX_SEGS,
        }
    }

    fn start(&mut self) -> Result<(), DriverError> {
        if let Some(e) = &self.latched {
            return Err(e.clone());
        }
        if self.started {
            return Ok(());
        }
        self.check_alive()?;
        F::start(self)?;
        self.started = true;
        Ok(())
    }

    fn rx_free(&self) -> usize {
        if self.started {
            self.rx_ring.free()
        } else {
            0
        }
    }

    #[inline(always)]
    fn post_rx_with<G: FnMut() -> Option<(u64, u64)>>(&mut self, len: u32, next: G) -> (usize, Result<(), RxRunError>) {
        if let Err(error) = self.check_postable() {
            return (0, Err(RxRunError { refused: None, error }));
        }
        self.rx_ring.post_run(len, next)
    }

    fn rx_posted_with<G: FnMut(u64)>(&self, f: G) {
        self.rx_ring.posted_cookies(f)
    }

    fn flush_rx(&mut self) -> Result<(), DriverError> {
        if !self.started {
            return Ok(());
        }
        // Descriptors must be in memory before the NIC sees the new tail.
        fence(Ordering::Release);
        self.regs.write32(RDT0, self.rx_ring.tail());
        Ok(())
    }

    #[inline(always)]
    fn reap_rx_with<G: FnMut(RxCompletion)>(&mut self, mut f: G) -> Result<(), DriverError> {
        let m = &mut self.moderation;
        self.rx_ring.reap_each(|c| {
            m.count_rx(c.len);
            f(c)
        });
        Ok(())
    }

    fn tx_free(&self) -> usize {
        if self.started {
            self.tx_ring.free()
        } else {
            0
        }
    }

    #[inline]
    fn queue_tx(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<(), DriverError> {
        self.check_postable()?;
        let bytes = self.tx_ring.post(segs, cookie)?;
        self.moderation.count_tx(bytes);
        Ok(())
    }

    fn tx_offload_caps(&self) -> TxOffloadCaps {
        F::TX_OFFLOADS
    }

    fn irq_rate_changes(&self) -> Option<u64> {
        F::QUEUE_EITR.map(|_| self.moderation.changes())
    }

    #[inline]
    fn queue_tx_offload(&mut self, segs: &[(u64, u32)], off: &TxOffload, cookie: u64) -> Result<(), DriverError> {
        self.check_postable()?;
        let caps = F::TX_OFFLOADS;
        let (ok, max_frame) = match off {
            TxOffload::Csum(_) => (caps.csum, tx_max_frame::<F>(&self.rx_geo)),
            TxOffload::Tso { .. } => (caps.tso, caps.tso_max_frame),
        };
        if !ok {
            return Err(DriverError::OffloadUnsupported(*off));
        }
        let bytes = self.tx_ring.post_offload(segs, off, cookie, max_frame, caps.max_segs)?;
        self.moderation.count_tx(bytes);
        Ok(())
    }

    fn flush_tx(&mut self) -> Result<(), DriverError> {
        if !self.started {
            return Ok(());
        }
        // Descriptors must be in memory before the NIC sees the new tail.
        fence(Ordering::Release);
        self.regs.write32(TDT0, self.tx_ring.tail());
        Ok(())
    }

    #[inline(always)]
    fn reap_tx_with<G: FnMut(TxCompletion)>(&mut self, f: G) -> Result<(), DriverError> {
        self.tx_ring.reap_each(f);
        Ok(())
    }

    fn link_up(&mut self) -> Result<bool, DriverError> {
        if self.removed {
            return Err(DriverError::Removed);
        }
        Ok(self.read(STATUS)? & STATUS_LU != 0)
    }

    fn set_mac_filter(&mut self, mac: [u8; 6]) -> Result<(), DriverError> {
        self.mac = mac;
        write_mac_filter(&self.regs, mac);
        Ok(())
    }

    fn quiesce(&mut self) -> Result<(), DriverError> {
        if let Some(e) = &self.latched {
            return Err(e.clone());
        }
        let stopped = F::stop(self);
        self.started = false;
        if let Err(e) = stopped {
            // The NIC did not confirm it stopped: a full reset stops all DMA;
            // if that fails too, the NIC is latched failed (`reset`).
            log::error!("{} quiesce: {e}; resetting the NIC", F::NAME);
            self.reset()?;
            return Err(e);
        }
        self.reset_ring_state();
        Ok(())
    }

    fn reset(&mut self) -> Result<(), DriverError> {
        self.started = false;
        if let Some(e) = &self.latched {
            return Err(e.clone());
        }
        // No DMA while the function resets; back on only if the reset worked.
        if let Some(p) = self.pci() {
            if let Err(e) = p.set_bus_master(false) {
                log::warn!("{}: bus mastering off before reset: {e}", F::NAME);
            }
        }
        if let Err((e, reset_done)) = self.init_hw_staged() {
            if reset_done && F::RESET_STOPS_DMA_FIRST {
                return Err(e);
            }
            return Err(self.latch(&e));
        }
        if let Some(p) = self.pci() {
            if let Err(e) = p.set_bus_master(true) {
                return Err(self.latch(&DriverError::Failed(format!("bus mastering back on after reset: {e}"))));
            }
        }
        Ok(())
    }

    fn irq_fds(&self) -> Vec<RawFd> {
        match &self.nic {
            Some(n) => n.raw_irq_fds(),
            None => self.model_irqs.iter().map(|e| e.as_raw_fd()).collect(),
        }
    }

    fn handle_irq(&mut self, index: usize) -> Result<(), DriverError> {
        if let Some(fd) = self.nic.as_ref().and_then(|n| n.irq_fds().get(index)) {
            let _ = fd.read();
        } else if let Some(fd) = self.model_irqs.get(index) {
            let _ = fd.read();
        }
        F::handle_irq(self, index)?;
        if index == 0 {
            self.moderate();
        }
        Ok(())
    }

    fn alloc_dma(&mut self, len: usize) -> Result<DmaArea, DriverError> {
        alloc_dma(self.mapper.as_ref(), &mut self.iova, len)
    }
}

impl<F: Family, R: RegisterAccess> Drop for E1000<F, R> {
    fn drop(&mut self) {
        // Stop DMA into buffers we are about to forget; then reset so the NIC
        // is idle before the IOMMU mappings go away (VfioNic's drop).
        if !self.removed && self.latched.is_none() {
            let _ = self.quiesce();
            F::mask_irqs(&self.regs);
            reset_on_drop(&self.regs);
        }
    }
}
