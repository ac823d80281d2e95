//! The NIC completion parse of the e1000-family drivers
//! (pnic/src/e1000_common/ring.rs, which both the igb and the e1000e driver
//! reap through): RX and TX rings in DMA memory whose descriptors the NIC
//! writes back. The fuzzer is the NIC: it writes any bytes into any
//! descriptor, in either family's layout (advanced for the 82576, legacy for
//! the 82574L), between the driver's posts and reaps.
//!
//! Asserts: no panic; completions come back in the order the buffers and
//! frames were posted, each once, with the cookie it was posted with (never
//! one the NIC made up); an RX length above the frame cap is flagged an
//! error; what the ring says is still posted, and its free count, match
//! what was posted and not reaped.
#![no_main]

use std::collections::VecDeque;

use libfuzzer_sys::fuzz_target;
use pnic::dma::DmaArea;
use pnic::e1000_common::regs::{RXD_STAT_DD, RXD_STAT_EOP, TXD_STATUS_OFF, TXD_STAT_DD};
use pnic::e1000_common::ring::{DescLayout, RxRing, TxRing};
use shimvmm_fuzz::Reader;

const DESC: u64 = 16;

fn run<L: DescLayout>(r: &mut Reader, size: usize, max_frame: u32, max_segs: usize) {
    let rx_area = DmaArea::new(0x1_0000_0000, size * DESC as usize).expect("RX ring memory");
    let tx_area = DmaArea::new(0x1_0001_0000, size * DESC as usize).expect("TX ring memory");
    let mut rx = RxRing::<L>::new(rx_area, size, max_frame);
    let mut tx = TxRing::<L>::new(tx_area, size, max_frame, max_segs);
    // Posted and not reaped, oldest first: RX cookies; TX (cookie, descriptors).
    let mut rx_out: VecDeque<u64> = VecDeque::new();
    let mut tx_out: VecDeque<(u64, usize)> = VecDeque::new();
    let mut cookie = 0u64;
    for _ in 0..512 {
        if r.is_empty() {
            break;
        }
        match r.u8() % 9 {
            0 => {
                // The driver posts a run of RX buffers.
                let n = r.u8() % 8;
                let len = if r.u8() & 1 == 0 { max_frame } else { u32::from(r.u16()) };
                let iovas: Vec<u64> = (0..n).map(|_| r.u64() & !0xfff | u64::from(r.u8() & 3)).collect();
                let mut it = iovas.iter();
                let first = cookie;
                let (posted, res) = rx.post_run(len, || {
                    let iova = *it.next()?;
                    cookie += 1;
                    Some((iova, cookie))
                });
                for k in 0..posted as u64 {
                    rx_out.push_back(first + 1 + k);
                }
                if let Err(e) = res {
                    // Refused: the buffer the run stopped at, if any, is not posted.
                    if let Some(c) = e.refused {
                        assert!(!rx_out.contains(&c), "a refused RX buffer counted as posted");
                    }
                }
            }
            1 => {
                // The NIC writes any bytes into an RX descriptor.
                let at = u64::from(r.u16()) % (size as u64 * DESC);
                let v = r.u32();
                let _ = rx.area().write(at & !3, &v.to_le_bytes());
            }
            2 => {
                // The NIC completes an RX buffer the usual way.
                let slot = u64::from(r.u8()) % size as u64;
                let len = r.u16();
                let status = RXD_STAT_DD | if r.u8() & 1 == 0 { RXD_STAT_EOP } else { 0 };
                let _ = rx.area().write(slot * DESC + L::RXD_STATUS_OFF, &status.to_le_bytes());
                let _ = rx.area().write(slot * DESC + L::RXD_LEN_OFF, &len.to_le_bytes());
            }
            3 => {
                let mut got = Vec::new();
                rx.reap_each(|c| got.push(c));
                for c in got {
                    let want = rx_out.pop_front();
                    assert_eq!(Some(c.cookie), want, "RX completion out of posting order or not posted");
                    if c.len > max_frame {
                        assert!(c.error, "RX length {} above the {max_frame}-byte cap not flagged", c.len);
                    }
                }
            }
            4 => {
                // The driver queues a TX frame.
                let n = usize::from(r.u8() % 10);
                let segs: Vec<(u64, u32)> = (0..n).map(|_| (r.u64(), u32::from(r.u16()) % 2000)).collect();
                cookie += 1;
                if tx.post(&segs, cookie).is_ok() {
                    tx_out.push_back((cookie, n));
                }
            }
            5 => {
                let at = u64::from(r.u16()) % (size as u64 * DESC);
                let v = r.u32();
                let _ = tx.area().write(at & !3, &v.to_le_bytes());
            }
            6 => {
                let slot = u64::from(r.u8()) % size as u64;
                let _ = tx.area().write(slot * DESC + TXD_STATUS_OFF, &TXD_STAT_DD.to_le_bytes());
            }
            7 => {
                let mut got = Vec::new();
                tx.reap_each(|c| got.push(c.cookie));
                for c in got {
                    let want = tx_out.pop_front().map(|w| w.0);
                    assert_eq!(Some(c), want, "TX completion out of posting order or not posted");
                }
            }
            _ => {
                // The NIC was stopped: the driver forgets everything.
                rx.reset();
                tx.reset();
                rx_out.clear();
                tx_out.clear();
            }
        }
        let mut posted = Vec::new();
        rx.posted_cookies(|c| posted.push(c));
        assert!(posted.iter().eq(rx_out.iter()), "RX ring's posted cookies differ from the posts");
        assert_eq!(rx.free(), size - 1 - rx_out.len(), "RX free count");
        let mut posted = Vec::new();
        tx.posted_cookies(|c| posted.push(c));
        assert!(posted.iter().eq(tx_out.iter().map(|t| &t.0)), "TX ring's queued cookies differ from the posts");
        let used: usize = tx_out.iter().map(|t| t.1).sum();
        assert_eq!(tx.free(), size - 1 - used, "TX free count");
    }
}

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new(data);
    let cfg = r.u8();
    let size = 2usize << (cfg % 8);
    if cfg & 0x80 == 0 {
        run::<pnic::igb::AdvancedDesc>(&mut r, size, pnic::igb::RX_MAX_FRAME, pnic::igb::TX_MAX_SEGS);
    } else {
        run::<pnic::e1000e::LegacyDesc>(&mut r, size, pnic::e1000e::RX_MAX_FRAME, pnic::e1000e::TX_MAX_SEGS);
    }
});
