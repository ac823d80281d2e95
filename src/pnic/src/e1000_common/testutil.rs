//! Test fixture for the e1000-family drivers: a register file that records
//! writes and answers the way the hardware does for reset, the PHY and
//! removal; each family adds its own quirks through a [`Quirk`] hook.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::regs::*;
use super::NicConfig;
use crate::dma::{DmaMapper, IovaAllocator};
use crate::driver::{DriverError, RegisterAccess};

#[derive(Default)]
pub(crate) struct RegState {
    pub regs: HashMap<u32, u32>,
    pub writes: Vec<(u32, u32)>,
    /// Every read returns all ones (surprise removal).
    pub removed: bool,
    /// The family's DMA-stop handshake never completes (a hung queue or
    /// GIO master); what that means is up to the family's quirk.
    pub stuck: bool,
}

/// A family's own register behaviour: `Some(v)` is what a write of `value` to
/// `off` leaves in the register; `None` falls back to the common behaviour.
pub(crate) type Quirk = fn(&mut RegState, u32, u32) -> Option<u32>;

#[derive(Clone)]
pub(crate) struct FakeRegs(pub Arc<Mutex<RegState>>, Quirk);

impl FakeRegs {
    pub fn new(quirk: Quirk) -> Self {
        FakeRegs(Arc::default(), quirk)
    }
    pub fn get(&self, off: u32) -> u32 {
        *self.0.lock().unwrap().regs.get(&off).unwrap_or(&0)
    }
    pub fn writes_to(&self, off: u32) -> Vec<u32> {
        self.0.lock().unwrap().writes.iter().filter(|w| w.0 == off).map(|w| w.1).collect()
    }
    /// Global resets issued so far.
    pub fn resets(&self) -> usize {
        self.writes_to(CTRL).iter().filter(|v| *v & CTRL_RST != 0).count()
    }
}

impl RegisterAccess for FakeRegs {
    fn read32(&self, off: u32) -> u32 {
        let s = self.0.lock().unwrap();
        if s.removed {
            return u32::MAX;
        }
        *s.regs.get(&off).unwrap_or(&0)
    }
    fn write32(&self, off: u32, v: u32) {
        let mut s = self.0.lock().unwrap();
        s.writes.push((off, v));
        let stored = match (self.1)(&mut s, off, v) {
            Some(stored) => stored,
            // Reset completes at once.
            None if off == CTRL => v & !CTRL_RST,
            // The PHY answers at once; restarting autonegotiation brings the link up.
            None if off == MDIC => {
                if (v >> MDIC_REG_SHIFT) & 0x1f == PHY_CTRL && v & MDIC_DATA_MASK == PHY_CTRL_AUTONEG_RESTART {
                    let st = s.regs.get(&STATUS).copied().unwrap_or(0);
                    s.regs.insert(STATUS, st | STATUS_LU);
                }
                v | MDIC_READY
            }
            None => v,
        };
        s.regs.insert(off, stored);
    }
}

struct NoIommu;
impl DmaMapper for NoIommu {
    fn map(&self, _: &GuestMemoryMmap) -> Result<(), String> {
        Ok(())
    }
    fn unmap(&self, _: &GuestMemoryMmap) -> Result<(), String> {
        Ok(())
    }
    fn map_page(&self, _: &GuestMemoryMmap, _: u64) -> Result<(), String> {
        Ok(())
    }
    fn unmap_page(&self, _: u64) -> Result<(), String> {
        Ok(())
    }
}

pub(crate) const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// A driver built by `new` over a fresh fake with `quirk`, for 1 MiB of guest
/// RAM, MAC [`MAC`], two MSI-X vectors and a short link wait.
pub(crate) fn bring_up<D>(
    quirk: Quirk,
    new: impl FnOnce(FakeRegs, Arc<dyn DmaMapper>, IovaAllocator, NicConfig, usize) -> Result<D, DriverError>,
) -> (D, FakeRegs) {
    let regs = FakeRegs::new(quirk);
    let guest = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let mut cfg = NicConfig::new(MAC);
    cfg.link_timeout = Duration::from_millis(10);
    let d = new(regs.clone(), Arc::new(NoIommu), IovaAllocator::above(&guest), cfg, 2).unwrap();
    (d, regs)
}
