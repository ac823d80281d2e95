//! Address → device dispatch for port I/O and MMIO exits from vCPU threads.

use std::sync::{Arc, Mutex};
use vmm_config::sync::lock_unpoisoned;

/// A device on a bus. `offset` is relative to the device's base address.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error)]
#[error("bus range {base:#x}+{len:#x} overlaps an existing device or is empty")]
pub struct BusOverlap {
    pub base: u64,
    pub len: u64,
}

struct Entry {
    base: u64,
    len: u64,
    dev: Arc<Mutex<dyn BusDevice>>,
}

/// A sorted set of non-overlapping ranges. Accesses to unclaimed addresses
/// read as all-ones and are ignored on write, as on real hardware.
#[derive(Default)]
pub struct Bus {
    entries: Vec<Entry>,
}

impl Bus {
    pub fn insert(&mut self, dev: Arc<Mutex<dyn BusDevice>>, base: u64, len: u64) -> Result<(), BusOverlap> {
        let end = base.checked_add(len).filter(|_| len > 0).ok_or(BusOverlap { base, len })?;
        if self.entries.iter().any(|e| base < e.base + e.len && e.base < end) {
            return Err(BusOverlap { base, len });
        }
        let pos = self.entries.partition_point(|e| e.base < base);
        self.entries.insert(pos, Entry { base, len, dev });
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(&Entry, u64)> {
        let idx = self.entries.partition_point(|e| e.base <= addr).checked_sub(1)?;
        let e = &self.entries[idx];
        let off = addr - e.base;
        // The whole access must fall inside the device's range.
        (off.checked_add(size as u64)? <= e.len).then_some((e, off))
    }

    /// Returns false when no device claims the access.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, off)) => {
                lock_unpoisoned(&e.dev).read(off, data);
                true
            }
            None => {
                data.fill(0xff);
                false
            }
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((e, off)) => {
                lock_unpoisoned(&e.dev).write(off, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(self.0 + offset as u8);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn dispatch_and_bounds() {
        let mut bus = Bus::default();
        bus.insert(Arc::new(Mutex::new(Reg(1))), 0x10, 4).unwrap();
        bus.insert(Arc::new(Mutex::new(Reg(9))), 0x20, 4).unwrap();
        assert!(bus.insert(Arc::new(Mutex::new(Reg(0))), 0x12, 4).is_err());
        assert!(bus.insert(Arc::new(Mutex::new(Reg(0))), 0x30, 0).is_err());
        assert!(bus.insert(Arc::new(Mutex::new(Reg(0))), u64::MAX, 2).is_err());
        let mut b = [0u8; 1];
        assert!(bus.read(0x12, &mut b));
        assert_eq!(b[0], 3);
        assert!(bus.write(0x20, &[7]));
        assert!(bus.read(0x20, &mut b));
        assert_eq!(b[0], 7);
        // Straddling the end of a device is not claimed.
        let mut w = [0u8; 4];
        assert!(!bus.read(0x12, &mut w));
        assert_eq!(w, [0xff; 4]);
        assert!(!bus.read(0x0, &mut b));
    }
}
