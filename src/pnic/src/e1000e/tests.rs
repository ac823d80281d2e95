//! 82574L driver against a register-file fake: programming sequence,
//! descriptor formats, quiesce through the GIO master.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vm_memory::{GuestAddress, GuestMemoryMmap};

use super::*;

#[derive(Default)]
struct RegState {
    regs: HashMap<u32, u32>,
    writes: Vec<(u32, u32)>,
    removed: bool,
    master_stuck: bool,
}

#[derive(Clone, Default)]
struct FakeRegs(Arc<Mutex<RegState>>);

impl FakeRegs {
    fn get(&self, off: u32) -> u32 {
        *self.0.lock().unwrap().regs.get(&off).unwrap_or(&0)
    }
    fn resets(&self) -> usize {
        self.0.lock().unwrap().writes.iter().filter(|w| w.0 == CTRL && w.1 & CTRL_RST != 0).count()
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
        let st = s.regs.get(&STATUS).copied().unwrap_or(0);
        let stored = match off {
            CTRL => {
                let master = if v & CTRL_GIO_MASTER_DISABLE != 0 && !s.master_stuck {
                    st & !STATUS_GIO_MASTER_EN
                } else {
                    st | STATUS_GIO_MASTER_EN
                };
                s.regs.insert(STATUS, master);
                v & !CTRL_RST
            }
            MDIC => {
                if v & MDIC_DATA_MASK == PHY_CTRL_AUTONEG_RESTART {
                    let st = s.regs.get(&STATUS).copied().unwrap_or(0);
                    s.regs.insert(STATUS, st | STATUS_LU);
                }
                v | MDIC_READY
            }
            _ => v,
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
}

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

fn dev() -> (E1000e<FakeRegs>, FakeRegs) {
    let regs = FakeRegs::default();
    let guest = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let mut cfg = NicConfig::new(MAC);
    cfg.link_timeout = Duration::from_millis(10);
    let d = E1000e::new(regs.clone(), Arc::new(NoIommu), IovaAllocator::above(&guest), cfg, 2).unwrap();
    (d, regs)
}

#[test]
fn bring_up_caps_frames_and_uses_legacy_descriptors() {
    let (mut d, r) = dev();
    assert_eq!(r.resets(), 1);
    assert_eq!(r.get(RFCTL) & RFCTL_EXTEN, 0);
    assert_eq!(r.get(RDLEN0), 4096);
    assert_eq!(r.get(RAL0), 0x1200_5452);
    assert_eq!(r.get(RAH0), 0x5634 | RAH_AV);
    assert_eq!(r.get(IVAR), 0x8 | (0x8 << 8) | (0x9 << 16));
    d.start().unwrap();
    let rctl = r.get(RCTL);
    for bit in [RCTL_EN, RCTL_BAM, RCTL_SECRC, RCTL_MPE] {
        assert_ne!(rctl & bit, 0, "{bit:#x}");
    }
    assert_eq!(rctl & (RCTL_LPE | RCTL_UPE | RCTL_BSEX | RCTL_BSIZE_MASK), 0, "2 KiB buffers, 1522-byte cap");
    assert!(d.link_up().unwrap());
}

#[test]
fn legacy_descriptor_formats() {
    let (mut d, r) = dev();
    d.start().unwrap();
    d.post_rx(0x100c, 1524, 1).unwrap();
    d.flush_rx().unwrap();
    assert_eq!(r.get(RDT0), 1);
    assert_eq!(d.rx_ring.load::<u64>(0, Ordering::Relaxed).unwrap(), 0x100c);
    d.rx_ring.store(RXD_LEN_OFF, 60u16, Ordering::Relaxed).unwrap();
    d.rx_ring.store(RXD_STATUS_OFF, RXD_STAT_DD | RXD_STAT_EOP, Ordering::Relaxed).unwrap();
    let mut out = Vec::new();
    d.reap_rx(&mut out).unwrap();
    assert_eq!(out, vec![RxCompletion { cookie: 1, len: 60, eop: true, error: false }]);

    d.post_tx(&[(0x2000, 14), (0x3000, 46)], 5).unwrap();
    let c0: u32 = d.tx_ring.load(TXD_CMD_OFF, Ordering::Relaxed).unwrap();
    let c1: u32 = d.tx_ring.load(16 + TXD_CMD_OFF, Ordering::Relaxed).unwrap();
    assert_eq!(c0, 14 | TXD_CMD_IFCS);
    assert_eq!(c1, 46 | TXD_CMD_IFCS | TXD_CMD_EOP | TXD_CMD_RS);
    assert_eq!(r.get(TDT0), 2);
    d.tx_ring.store(16 + TXD_STATUS_OFF, TXD_STAT_DD, Ordering::Relaxed).unwrap();
    let mut done = Vec::new();
    d.reap_tx(&mut done).unwrap();
    assert_eq!(done, vec![TxCompletion { cookie: 5 }]);
}

#[test]
fn quiesce_waits_for_the_gio_master_or_resets() {
    let (mut d, r) = dev();
    d.start().unwrap();
    d.post_rx(0x100c, 2036, 1).unwrap();
    d.quiesce().unwrap();
    assert_eq!(r.get(RCTL) & RCTL_EN, 0);
    assert_eq!(r.get(TCTL) & TCTL_EN, 0);
    assert_eq!(r.get(STATUS) & STATUS_GIO_MASTER_EN, 0);
    d.start().unwrap();
    assert_eq!(r.get(CTRL) & CTRL_GIO_MASTER_DISABLE, 0, "DMA allowed again");
    r.0.lock().unwrap().master_stuck = true;
    let n = r.resets();
    assert!(matches!(d.quiesce(), Err(DriverError::Timeout(_))));
    assert_eq!(r.resets(), n + 1);
}

#[test]
fn removal_is_an_error() {
    let (mut d, r) = dev();
    d.start().unwrap();
    r.0.lock().unwrap().removed = true;
    assert_eq!(d.link_up(), Err(DriverError::Removed));
    assert_eq!(d.handle_irq(0), Err(DriverError::Removed));
}
