//! DMA teardown that a failure cannot undo: the shim over the product's igb
//! driver on the 82576 model with injected hangs (stop, reset, function
//! reset), an oversize completion as a fatal invariant break, and the guard
//! page between guest RAM and the VMM's DMA areas in IOVA space.

use std::sync::atomic::Ordering;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::driver::testing::DriverTestExt;
use crate::driver::{RegisterAccess, RxCompletion};
use crate::e1000_common::regs::{RDBAH0, RDBAL0, TDBAH0, TDBAL0};
use crate::igb::regs::{RXD_LEN_OFF, RXD_STATUS_OFF};
use crate::igb::Igb;
use crate::model::igb_hw::{igb_on_model, IgbHw, IgbHwRegs};
use crate::model::{InjectOutcome, ModelConfig, ModelHandle, NicModel};
use virtio_devices::net::backend::RxBuffer;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0x07];
const RAM: u64 = 0x40_0000;
const RX_STAT_DD_EOP: u32 = 0b11;

fn rxbuf(head: u16, gpa: u64) -> RxBuffer {
    RxBuffer { head, segs: [(GuestAddress(gpa), 2048)].into_iter().collect(), len: 2048 }
}

fn txframe(head: u16, gpa: u64, len: u32) -> TxFrame {
    TxFrame { head, segs: [(GuestAddress(gpa), len)].into_iter().collect(), len }
}

fn frame_from_vm(len: usize) -> Vec<u8> {
    let mut f = vec![0x5a; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
    f[6..12].copy_from_slice(&MAC);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// A shim over the igb driver on the model, holding 8 RX buffers and one TX
/// frame in flight.
fn busy_igb_shim() -> (ShimBackend<Igb<IgbHwRegs>>, IgbHw, GuestMemoryMmap) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let (igb, hw) = igb_on_model(&mem, MAC).unwrap();
    let mut s = ShimBackend::new(igb, &mem, MAC).unwrap();
    for i in 0..8u16 {
        s.post_rx(&mem, rxbuf(i, 0x1_0000 + u64::from(i) * 0x1000)).unwrap();
    }
    mem.write_slice(&frame_from_vm(100), GuestAddress(0x3_000c)).unwrap();
    assert_eq!(s.send(&mem, txframe(40, 0x3_0000, 112)), Ok(false));
    assert!(hw.bus_master());
    (s, hw, mem)
}

/// The NIC writes back RX descriptor 0 as done with `len` bytes.
fn nic_reports_rx0(s: &ShimBackend<Igb<IgbHwRegs>>, len: u16) {
    let area = s.driver().rx_ring.area();
    area.store(RXD_LEN_OFF, len, Ordering::Relaxed).unwrap();
    area.store(RXD_STATUS_OFF, RX_STAT_DD_EOP, Ordering::Release).unwrap();
}

#[test]
fn stop_and_reset_both_failing_leave_bus_mastering_off_and_every_buffer_held() {
    let (mut s, hw, mem) = busy_igb_shim();
    // The NIC wedges: its queues do not stop, its reset does not complete,
    // and neither does a function-level reset.
    hw.inject_hang(true, true, true);
    // Then it reports a frame longer than it may write: fatal.
    nic_reports_rx0(&s, 4000);
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    s.reap_tx(&mut used);
    assert!(used.is_empty(), "no buffer goes back to the guest while the NIC may still DMA: {used:?}");
    assert!(!hw.bus_master(), "bus mastering is off");
    assert!(s.driver().latched());
    assert!(!s.link_up());
    let m = s.shim_metrics().clone();
    assert_eq!(m.nic_invariant_breaks, 1);
    assert_eq!(m.dma_held_buffers, 7 + 1, "the other RX buffers and the TX frame are held");
    // Nothing turns bus mastering back on: not another pass, not the
    // guest's device reset, not a start.
    s.process_event(&mem, 0);
    s.reap_rx(&mem, &mut used);
    s.reap_tx(&mut used);
    assert!(used.is_empty(), "{used:?}");
    assert!(s.post_rx(&mem, rxbuf(9, 0x2_0000)).is_err(), "a failed NIC takes no buffer");
    s.quiesce();
    assert!(!hw.bus_master(), "still off after the device reset");
    assert!(matches!(s.driver_mut().start(), Err(DriverError::DmaNotStopped(_))));
    assert!(matches!(s.driver_mut().reset(), Err(DriverError::DmaNotStopped(_))));
    assert!(!hw.bus_master(), "still off after a reset attempt");
    assert_eq!(hw.inject_rx(&frame_from_vm(60)), crate::model::igb_hw::HwRx::NoBuffer, "no DMA");
}

#[test]
fn a_function_reset_that_works_stops_dma_and_then_the_buffers_go_back() {
    let (mut s, hw, mem) = busy_igb_shim();
    // Queues and the NIC's own reset hang; the function reset works.
    hw.inject_hang(true, true, false);
    nic_reports_rx0(&s, 4000);
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    s.reap_tx(&mut used);
    let mut heads: Vec<u16> = used.iter().map(|u| u.head).collect();
    heads.sort_unstable();
    assert_eq!(heads, vec![0, 1, 2, 3, 4, 5, 6, 7, 40], "DMA stopped: every buffer back, once");
    assert!(used.iter().all(|u| u.len == 0), "empty: {used:?}");
    assert!(!hw.bus_master(), "bus mastering stays off on a latched NIC");
    assert!(s.driver().latched());
    assert!(matches!(s.driver_mut().start(), Err(DriverError::Failed(_))));
    assert_eq!(s.shim_metrics().dma_held_buffers, 0);
}

#[test]
fn a_reset_that_works_turns_bus_mastering_back_on() {
    let (mut s, hw, _mem) = busy_igb_shim();
    // Only the queues hang: the reset stops DMA and the NIC is usable again.
    hw.inject_hang(true, false, false);
    assert!(matches!(s.driver_mut().quiesce(), Err(DriverError::Timeout(_))));
    assert!(hw.bus_master());
    assert!(!s.driver().latched());
    hw.inject_hang(false, false, false);
    s.driver_mut().start().unwrap();
}

#[test]
fn an_oversize_completion_fails_the_nic() {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let (model, h): (NicModel, ModelHandle) = NicModel::new(&mem, ModelConfig::default()).unwrap();
    let mut s = ShimBackend::new(model, &mem, MAC).unwrap();
    for i in 0..4u16 {
        s.post_rx(&mem, rxbuf(i, 0x1_0000 + u64::from(i) * 0x1000)).unwrap();
    }
    let cookies = s.driver().rx_posted_cookies();
    let max = s.driver().limits().rx_max_write;
    h.inject_rx_completion(RxCompletion { cookie: cookies[0], len: max + 1, eop: true, error: true, csum_ok: false });
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert!(!s.link_up(), "the NIC failed");
    assert_eq!(s.shim_metrics().nic_invariant_breaks, 1);
    assert_eq!(h.quiesce_count(), 1, "its queues were stopped");
    let mut heads: Vec<u16> = used.iter().map(|u| u.head).collect();
    heads.sort_unstable();
    assert_eq!(heads, vec![0, 1, 2, 3], "the model stopped: the buffers go back empty");
    assert!(used.iter().all(|u| u.len == 0));
    assert_eq!(s.rx_room_now(), 0, "and it takes no more");
    let mut bcast = frame_from_vm(60);
    bcast[..6].copy_from_slice(&[0xff; 6]);
    assert_eq!(h.inject_rx(&bcast), InjectOutcome::NoBuffer);
    // The limit itself is fine.
    let (mut s, h, mem) = {
        let (model, h) = NicModel::new(&mem, ModelConfig::default()).unwrap();
        (ShimBackend::new(model, &mem, MAC).unwrap(), h, mem)
    };
    s.post_rx(&mem, rxbuf(0, 0x1_0000)).unwrap();
    let c = s.driver().rx_posted_cookies()[0];
    h.inject_rx_completion(RxCompletion { cookie: c, len: max, eop: true, error: false, csum_ok: false });
    used.clear();
    s.reap_rx(&mem, &mut used);
    assert!(s.link_up());
    assert_eq!(used, vec![Used { head: 0, len: max + 12 }]);
}

/// Guest RAM of `mib` MiB from 0: the first VMM DMA area (the RX ring,
/// allocated first) starts at least a page above the end of RAM, and nothing
/// is mapped for the NIC at the end of RAM.
fn guard_page_for(mib: u64) {
    let ram_end = mib << 20;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), ram_end as usize)]).unwrap();
    let (igb, hw) = igb_on_model(&mem, MAC).unwrap();
    let s = ShimBackend::new(igb, &mem, MAC).unwrap();
    let regs = s.driver().regs();
    let rdba = u64::from(regs.read32(RDBAL0)) | u64::from(regs.read32(RDBAH0)) << 32;
    let tdba = u64::from(regs.read32(TDBAL0)) | u64::from(regs.read32(TDBAH0)) << 32;
    assert!(rdba >= ram_end + 4096, "{mib} MiB: RX ring at {rdba:#x}, RAM ends at {ram_end:#x}");
    assert!(tdba > rdba);
    assert!(hw.iommu().write(ram_end - 1, &[0]), "the last guest byte is mapped");
    for at in [ram_end, ram_end + 4095, rdba - 1] {
        assert!(!hw.iommu().write(at, &[0]), "{mib} MiB: {at:#x} must not be mapped");
    }
    assert!(hw.iommu().write(rdba, &[0]), "the ring itself is mapped");
}

#[test]
fn a_guard_page_separates_guest_ram_from_dma_areas_1024_mib() {
    guard_page_for(1024);
}

#[test]
fn a_guard_page_separates_guest_ram_from_dma_areas_2048_mib() {
    guard_page_for(2048);
}
