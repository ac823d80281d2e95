//! Strict DMA against the NIC model, whose IOMMU starts with no guest RAM
//! mapped: a guest buffer is reachable by the NIC exactly while the NIC owns
//! it; pages shared by buffers stay mapped until the last one is back; a
//! stop, a reset and teardown unmap everything.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::strict::StrictDma;
use super::*;
use crate::model::{InjectOutcome, ModelConfig, ModelHandle, NicModel};
use virtio_devices::net::backend::RxBuffer;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0x02];
const RAM: u64 = 0x10_0000;

type Strict = ShimBackend<StrictDma<NicModel>>;

fn setup(auto_tx: bool) -> (Strict, ModelHandle, GuestMemoryMmap) {
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
    let cfg = ModelConfig { auto_tx, dma: PnicDma::Strict, ..Default::default() };
    let (model, h) = NicModel::new(&mem, cfg).unwrap();
    let shim = ShimBackend::new(StrictDma::new(model, h.mapper(), &mem), &mem, MAC).unwrap();
    (shim, h, mem)
}

fn rxbuf(head: u16, gpa: u64, len: u32) -> RxBuffer {
    RxBuffer { head, segs: [(GuestAddress(gpa), len)].into_iter().collect(), len }
}

fn eth(len: usize, src_is_vm: bool) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len).map(|i| i as u8).collect();
    if src_is_vm {
        f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x99]);
        f[6..12].copy_from_slice(&MAC);
    } else {
        f[..6].copy_from_slice(&MAC);
    }
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

#[test]
fn no_guest_page_is_mapped_before_a_buffer_is_posted() {
    let (_s, h, _mem) = setup(true);
    assert_eq!(h.iommu().pages(), 0);
    assert_eq!(h.iommu().windows(), 3, "only the VMM's own areas (bounce RX/TX, header slots)");
    assert!(!h.iommu().write(0x1000, &[1]), "guest RAM is out of the NIC's reach");
}

#[test]
fn an_rx_buffer_is_mapped_exactly_while_the_nic_owns_it() {
    let (mut s, h, mem) = setup(true);
    s.post_rx(&mem, rxbuf(0, 0x1000, 2048)).unwrap();
    assert!(h.iommu().page_mapped(0x1000), "posted: mapped");
    assert!(!h.iommu().page_mapped(0x2000), "a page of no posted buffer stays out");
    assert!(!h.iommu().write(0x5000, &[1]), "a NIC write elsewhere faults");
    assert!(matches!(h.inject_rx(&eth(1514, false)), InjectOutcome::Delivered { iova: 0x100c, .. }));
    let mut used = Vec::new();
    s.reap_rx(&mem, &mut used);
    assert_eq!(used, vec![Used { head: 0, len: 12 + 1514 }]);
    assert!(!h.iommu().page_mapped(0x1000), "back with the guest: unmapped");
    // The NIC writing the buffer after the guest got it back faults and
    // leaves the guest's bytes alone.
    let before: [u8; 4] = mem.read_obj(GuestAddress(0x100c)).unwrap();
    assert!(!h.iommu().write(0x100c, &[0xee; 4]));
    assert_eq!(mem.read_obj::<[u8; 4]>(GuestAddress(0x100c)).unwrap(), before);
    assert!(h.faults().is_empty(), "the shim's own traffic never faulted");
    let m = s.driver().pages().metrics();
    assert_eq!((m.page_maps, m.page_unmaps, m.pages_mapped), (1, 1, 0));
}

#[test]
fn buffers_sharing_a_page_keep_it_until_the_last_is_back() {
    let (mut s, h, mem) = setup(true);
    // NIC areas 0x200c..0x25fe and 0x260c..0x2bfe: both in page 0x2000;
    // the second also reaches no further page.
    s.post_rx(&mem, rxbuf(0, 0x2000, 1536)).unwrap();
    s.post_rx(&mem, rxbuf(1, 0x2600, 1536)).unwrap();
    // One crossing into page 0x4000: 0x3f0c + 1522 > 0x4000.
    s.post_rx(&mem, rxbuf(2, 0x3f00, 1536)).unwrap();
    let pages = s.driver().pages();
    assert_eq!((pages.refs(0x2000), pages.refs(0x3000), pages.refs(0x4000)), (2, 1, 1));
    assert_eq!(pages.metrics().page_maps, 3, "a shared page is mapped once");
    let mut used = Vec::new();
    assert!(matches!(h.inject_rx(&eth(100, false)), InjectOutcome::Delivered { iova: 0x200c, .. }));
    s.reap_rx(&mem, &mut used);
    assert!(h.iommu().page_mapped(0x2000), "buffer 1 is still on it");
    assert_eq!(s.driver().pages().refs(0x2000), 1);
    assert!(matches!(h.inject_rx(&eth(100, false)), InjectOutcome::Delivered { iova: 0x260c, .. }));
    s.reap_rx(&mem, &mut used);
    assert!(!h.iommu().page_mapped(0x2000), "the last buffer on it is back");
    assert!(h.iommu().page_mapped(0x3000) && h.iommu().page_mapped(0x4000));
    assert_eq!(used.len(), 2);
}

#[test]
fn a_tx_frame_is_mapped_until_the_nic_sent_it() {
    let (mut s, h, mem) = setup(false);
    mem.write_slice(&eth(600, true), GuestAddress(0x500c)).unwrap();
    let frame = TxFrame { head: 3, segs: [(GuestAddress(0x5000), 612)].into_iter().collect(), len: 612 };
    assert_eq!(s.send(&mem, frame), Ok(false));
    assert!(h.iommu().page_mapped(0x5000), "queued: the NIC may read it");
    assert_eq!(h.complete_tx(), 1);
    assert_eq!(h.sent(), vec![eth(600, true)], "the NIC read the whole frame through the IOMMU");
    let mut done = Vec::new();
    s.reap_tx(&mut done);
    assert_eq!(done, vec![Used { head: 3, len: 0 }]);
    assert!(!h.iommu().page_mapped(0x5000), "sent: unmapped");
    assert!(h.faults().is_empty());
}

#[test]
fn a_device_reset_and_teardown_unmap_everything() {
    let (mut s, h, mem) = setup(false);
    for i in 0..8u16 {
        s.post_rx(&mem, rxbuf(i, 0x10000 + u64::from(i) * 0x1000, 2048)).unwrap();
    }
    mem.write_slice(&eth(60, true), GuestAddress(0x3000c)).unwrap();
    let frame = TxFrame { head: 9, segs: [(GuestAddress(0x30000), 72)].into_iter().collect(), len: 72 };
    assert_eq!(s.send(&mem, frame), Ok(false));
    assert_eq!(h.iommu().pages(), 9);
    NetBackend::quiesce(&mut s);
    assert_eq!(h.iommu().pages(), 0, "the queues stopped: nothing of the guest stays mapped");
    let m = s.driver().pages().metrics().clone();
    assert_eq!((m.page_maps, m.page_unmaps, m.pages_mapped), (9, 9, 0));
    // Teardown with buffers posted: the queues stop, then everything goes.
    s.post_rx(&mem, rxbuf(0, 0x10000, 2048)).unwrap();
    assert_eq!(h.iommu().pages(), 1);
    let quiesces = h.quiesce_count();
    drop(s);
    assert_eq!(h.iommu().pages(), 0);
    assert!(h.quiesce_count() > quiesces, "the NIC was stopped before its buffers were unmapped");
}

#[test]
fn metrics_show_the_strict_mapper_and_only_in_strict_mode() {
    let (mut s, h, mem) = setup(true);
    s.post_rx(&mem, rxbuf(0, 0x1000, 2048)).unwrap();
    assert!(matches!(h.inject_rx(&eth(60, false)), InjectOutcome::Delivered { .. }));
    s.reap_rx(&mem, &mut Vec::new());
    let j = NetBackend::metrics(&s);
    assert_eq!(j["strict_dma"]["page_maps"], 1, "{j:#}");
    assert_eq!(j["strict_dma"]["page_unmaps"], 1, "{j:#}");
    assert_eq!(j["strict_dma"]["pages_mapped"], 0, "{j:#}");
    let (model, _h) = NicModel::new(&mem, ModelConfig::default()).unwrap();
    let plain = ShimBackend::new(model, &mem, MAC).unwrap();
    assert!(NetBackend::metrics(&plain).get("strict_dma").is_none());
}

#[test]
fn a_buffer_whose_page_cannot_be_mapped_is_refused_and_leaves_nothing_mapped() {
    let (mut s, h, mem) = setup(true);
    // Map the page behind the shim's back: the strict mapper's own map of it
    // then fails, as a full IOMMU or a VFIO error would.
    let mapper: Arc<dyn crate::dma::DmaMapper> = h.mapper();
    mapper.map_page(&mem, 0x7000).unwrap();
    assert_eq!(s.post_rx(&mem, rxbuf(4, 0x7000, 2048)).map_err(|e| e.1), Err(DropReason::BackendError));
    assert_eq!(s.driver().pages().metrics().map_errors, 1);
    assert_eq!(s.driver().pages().metrics().pages_mapped, 0);
    assert_eq!(s.rx_posted(), 0, "the NIC never got it");
}
