//! [`Pnic`]: whichever NIC family the PCI id selected, as one type.
//!
//! The shim is generic over its driver; production gives it a `Pnic`, whose
//! [`PnicDriver`] methods are one `match` over the families with each arm
//! the family's own (inlined) code. The closures of the batch methods are
//! therefore inlined into the ring loops exactly as in a shim over one
//! family, with no call through a pointer per buffer or completion.

use std::os::unix::io::RawFd;

use vm_memory::GuestMemoryMmap;

use crate::bdf::Bdf;
use crate::dma::DmaArea;
use crate::driver::{
    DriverError, DriverLimits, PnicDriver, RegisterAccess, RxCompletion, RxRunError, TxCompletion, TxOffload,
    TxOffloadCaps,
};
use crate::e1000_common::{NicConfig, OpenError};
use crate::e1000e::{self, E1000e};
use crate::igb::{self, Igb};
use crate::igbvf::{self, Igbvf};
use crate::vfio::{precheck, HostPaths, MmioRegs, DEVICE_82574L, DEVICE_82576_VF};

/// A supported physical NIC over register access `R` (`MmioRegs` on
/// hardware, a model in tests and benchmarks).
pub enum Pnic<R: RegisterAccess = MmioRegs> {
    /// Intel 82576.
    Igb(Igb<R>),
    /// Intel 82574L.
    E1000e(E1000e<R>),
    /// Intel 82576 SR-IOV virtual function.
    Igbvf(Igbvf<R>),
}

impl Pnic {
    /// Open the NIC at `bdf` through VFIO with the driver its PCI id calls
    /// for (82576, 82574L or 82576 VF), map `guest` for DMA (IOVA = GPA) and bring it
    /// up with `cfg`. Every host-setup problem is reported before the NIC is
    /// touched.
    pub fn open_vfio(bdf: Bdf, guest: &GuestMemoryMmap, cfg: NicConfig) -> Result<Pnic, OpenError> {
        let info = precheck(&HostPaths::default(), bdf)?;
        Ok(match info.device {
            DEVICE_82574L => Pnic::E1000e(e1000e::open_vfio(bdf, guest, cfg)?),
            DEVICE_82576_VF => Pnic::Igbvf(igbvf::open_vfio(bdf, guest, cfg)?),
            _ => Pnic::Igb(igb::open_vfio(bdf, guest, cfg)?),
        })
    }
}

/// `$body` with `$d` bound to the family's driver.
macro_rules! each {
    ($self:expr, $d:ident => $body:expr) => {
        match $self {
            Pnic::Igb($d) => $body,
            Pnic::E1000e($d) => $body,
            Pnic::Igbvf($d) => $body,
        }
    };
}

impl<R: RegisterAccess> From<Igb<R>> for Pnic<R> {
    fn from(d: Igb<R>) -> Self {
        Pnic::Igb(d)
    }
}

impl<R: RegisterAccess> From<E1000e<R>> for Pnic<R> {
    fn from(d: E1000e<R>) -> Self {
        Pnic::E1000e(d)
    }
}

impl<R: RegisterAccess> From<Igbvf<R>> for Pnic<R> {
    fn from(d: Igbvf<R>) -> Self {
        Pnic::Igbvf(d)
    }
}

impl<R: RegisterAccess> Pnic<R> {
    /// The MAC the NIC must use whatever the guest asks for: an SR-IOV VF's
    /// is assigned by its PF. `None` for a whole NIC (any MAC can be set).
    pub fn assigned_mac(&self) -> Option<[u8; 6]> {
        match self {
            Pnic::Igbvf(d) => Some(d.mac()),
            _ => None,
        }
    }

    /// The NIC's IOMMU domain (see [`crate::e1000_common::driver::E1000::dma_mapper`]).
    pub fn dma_mapper(&self) -> std::sync::Arc<dyn crate::dma::DmaMapper> {
        each!(self, d => d.dma_mapper())
    }
}

impl<R: RegisterAccess> PnicDriver for Pnic<R> {
    fn name(&self) -> &'static str {
        each!(self, d => d.name())
    }
    fn irq_rate_changes(&self) -> Option<u64> {
        each!(self, d => d.irq_rate_changes())
    }
    fn limits(&self) -> DriverLimits {
        each!(self, d => d.limits())
    }
    fn start(&mut self) -> Result<(), DriverError> {
        each!(self, d => d.start())
    }
    fn quiesce(&mut self) -> Result<(), DriverError> {
        each!(self, d => d.quiesce())
    }
    fn reset(&mut self) -> Result<(), DriverError> {
        each!(self, d => d.reset())
    }
    fn link_up(&mut self) -> Result<bool, DriverError> {
        each!(self, d => d.link_up())
    }
    fn set_mac_filter(&mut self, mac: [u8; 6]) -> Result<(), DriverError> {
        each!(self, d => d.set_mac_filter(mac))
    }
    fn irq_fds(&self) -> Vec<RawFd> {
        each!(self, d => d.irq_fds())
    }
    fn handle_irq(&mut self, index: usize) -> Result<(), DriverError> {
        each!(self, d => d.handle_irq(index))
    }
    fn alloc_dma(&mut self, len: usize) -> Result<DmaArea, DriverError> {
        each!(self, d => d.alloc_dma(len))
    }
    #[inline(always)]
    fn rx_free(&self) -> usize {
        each!(self, d => d.rx_free())
    }
    #[inline(always)]
    fn post_rx_with<F: FnMut() -> Option<(u64, u64)>>(&mut self, len: u32, next: F) -> (usize, Result<(), RxRunError>) {
        each!(self, d => d.post_rx_with(len, next))
    }
    #[inline(always)]
    fn flush_rx(&mut self) -> Result<(), DriverError> {
        each!(self, d => d.flush_rx())
    }
    #[inline(always)]
    fn reap_rx_with<F: FnMut(RxCompletion)>(&mut self, f: F) -> Result<(), DriverError> {
        each!(self, d => d.reap_rx_with(f))
    }
    fn rx_posted_with<F: FnMut(u64)>(&self, f: F) {
        each!(self, d => d.rx_posted_with(f))
    }
    #[inline(always)]
    fn tx_free(&self) -> usize {
        each!(self, d => d.tx_free())
    }
    #[inline(always)]
    fn queue_tx(&mut self, segs: &[(u64, u32)], cookie: u64) -> Result<(), DriverError> {
        each!(self, d => d.queue_tx(segs, cookie))
    }
    fn tx_offload_caps(&self) -> TxOffloadCaps {
        each!(self, d => d.tx_offload_caps())
    }
    #[inline(always)]
    fn queue_tx_offload(&mut self, segs: &[(u64, u32)], off: &TxOffload, cookie: u64) -> Result<(), DriverError> {
        each!(self, d => d.queue_tx_offload(segs, off, cookie))
    }
    #[inline(always)]
    fn flush_tx(&mut self) -> Result<(), DriverError> {
        each!(self, d => d.flush_tx())
    }
    #[inline(always)]
    fn reap_tx_with<F: FnMut(TxCompletion)>(&mut self, f: F) -> Result<(), DriverError> {
        each!(self, d => d.reap_tx_with(f))
    }
}
