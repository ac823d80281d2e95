//! The shim's transmit side: guest frames from the lent [`TxQueue`] into NIC
//! TX descriptors (their segments after the virtio-net header, zero-copy;
//! through a bounce buffer when the NIC takes too few segments), a backlog
//! while the ring is full, and NIC completions back to the guest.
//!
//! [`TxQueue`]: virtio_devices::net::direct::TxQueue

use virtio_devices::mem::RamMap;
use virtio_devices::net::backend::{ChainRef, DropReason, VNET_HDR_LEN};
use vm_memory::{Bytes, GuestAddress};

use super::wire::{check_header, check_words, read_header, ETH_HDR};
use super::{in_ram, ShimBackend, HDR, TX_BACKLOG};
use crate::driver::{DriverError, PnicDriver};

#[derive(Debug)]
pub(super) struct TxSlot {
    pub(super) head: u16,
    pub(super) bytes: u32,
    pub(super) bounce: Option<u32>,
}

/// The NIC-visible segments of a TX chain, everything after the header,
/// into `out` (cleared first).
pub(super) fn tx_payload_segments(
    ram: &RamMap,
    frame: &ChainRef<'_>,
    out: &mut Vec<(u64, u32)>,
) -> Result<(), DropReason> {
    let mut skip = HDR;
    out.clear();
    for (addr, len) in frame.segs {
        let len = u64::from(*len);
        if len == 0 {
            return Err(DropReason::ZeroLength);
        }
        if skip >= len {
            skip -= len;
            continue;
        }
        let start = addr.0.checked_add(skip).ok_or(DropReason::BadAddress)?;
        let l = len - skip;
        skip = 0;
        if !in_ram(ram, start, l) {
            return Err(DropReason::BadAddress);
        }
        out.push((start, l as u32));
    }
    if skip > 0 {
        return Err(DropReason::ShortHeader);
    }
    Ok(())
}

impl<D: PnicDriver> ShimBackend<D> {
    /// Start sending the TX frames queued since the last flush: one tail
    /// write for all of them.
    pub(super) fn flush_tx_queued(&mut self) {
        if !self.tx_unflushed {
            return;
        }
        self.tx_unflushed = false;
        if let Err(e) = self.driver.flush_tx() {
            self.driver_err(e);
        }
    }

    /// The common shape, the frame in one piece of guest RAM at `start`
    /// (`host` in the VMM): [`Self::submit_tx`] without its segment walk.
    #[inline(always)]
    pub(super) fn submit_tx_one(&mut self, head: u16, start: u64, len: u32, host: *const u8) -> Result<(), DropReason> {
        if (len as usize) < ETH_HDR {
            return Err(DropReason::RuntFrame);
        }
        let slot = self.tx.vacant_index();
        if slot >= self.tx_hdrs.slots() {
            return Err(DropReason::NoBuffer);
        }
        // SAFETY: `host` is the host address of the `len` (>= 14) bytes at
        // `start`, inside one guest RAM mapping (`one_segment_payload`) that
        // `self.ram` keeps alive.
        let h = unsafe { read_header(host) };
        self.metrics.tx_header_copied(ETH_HDR as u64);
        // The one check, on the VMM's copy: the guest cannot change it now.
        check_words(h, self.mac_word)?;
        self.tx_hdrs.store_words(slot, h);
        let hdr = (self.tx_hdrs.iova(slot), ETH_HDR as u32);
        if len > ETH_HDR as u32 {
            self.queue_frame(head, len, &[hdr, (start + ETH_HDR as u64, len - ETH_HDR as u32)])
        } else {
            self.queue_frame(head, len, &[hdr])
        }
    }

    /// Queue one checked frame on the NIC (started by the next
    /// `flush_tx_queued`), its Ethernet header from the VMM's copy (the wire
    /// policy, see [`super::wire`]); a frame in more segments than the NIC
    /// takes is copied into a bounce buffer first. `segs` is the frame after
    /// the virtio-net header, in guest RAM (checked).
    pub(super) fn submit_tx(&mut self, head: u16, segs: &[(u64, u32)]) -> Result<(), DropReason> {
        // The TX entry this frame will get, and with it its header slot.
        let slot = self.tx.vacant_index();
        if slot >= self.tx_hdrs.slots() {
            return Err(DropReason::NoBuffer);
        }
        let mut h = [0u8; ETH_HDR];
        self.gather_header(segs, &mut h)?;
        self.metrics.tx_header_copied(ETH_HDR as u64);
        // The one check, on the VMM's copy: the guest cannot change it now.
        check_header(&h, &self.mac)?;
        self.tx_hdrs.store(slot, &h);
        let hdr = (self.tx_hdrs.iova(slot), ETH_HDR as u32);
        let mut nic = std::mem::take(&mut self.tx_nic_segs);
        nic.clear();
        nic.push(hdr);
        let mut skip = ETH_HDR as u32;
        let mut bytes = 0u32;
        for &(a, l) in segs {
            bytes += l;
            if skip >= l {
                skip -= l;
                continue;
            }
            nic.push((a + u64::from(skip), l - skip));
            skip = 0;
        }
        let r = if nic.len() > self.limits.tx_max_segs {
            self.submit_tx_bounced(head, &h, &nic[1..], bytes)
        } else {
            self.queue_frame(head, bytes, &nic)
        };
        self.tx_nic_segs = nic;
        r
    }

    /// The first [`ETH_HDR`] bytes of the frame in `segs` (guest RAM),
    /// wherever they are split.
    fn gather_header(&self, segs: &[(u64, u32)], h: &mut [u8; ETH_HDR]) -> Result<(), DropReason> {
        let mut got = 0usize;
        for &(a, l) in segs {
            if got == ETH_HDR {
                break;
            }
            let n = (l as usize).min(ETH_HDR - got);
            if !self.ram.read(a, &mut h[got..got + n]) {
                return Err(DropReason::BadAddress);
            }
            got += n;
        }
        if got < ETH_HDR {
            return Err(DropReason::RuntFrame);
        }
        Ok(())
    }

    /// Queue `nic` (the header copy, then guest segments) as one frame of
    /// `bytes`.
    #[inline(always)]
    fn queue_frame(&mut self, head: u16, bytes: u32, nic: &[(u64, u32)]) -> Result<(), DropReason> {
        let cookie = self.tx.insert(TxSlot { head, bytes, bounce: None });
        match self.driver.queue_tx(nic, cookie) {
            Ok(()) => {
                self.tx_unflushed = true;
                self.metrics.tx_zero_copy += 1;
                Ok(())
            }
            Err(e) => Err(self.tx_refused(cookie, e)),
        }
    }

    /// Too fragmented for the NIC: the checked header `h` and the guest
    /// segments `rest` after it copied into one bounce buffer, queued as one.
    #[cold]
    pub(super) fn submit_tx_bounced(
        &mut self,
        head: u16,
        h: &[u8; ETH_HDR],
        rest: &[(u64, u32)],
        bytes: u32,
    ) -> Result<(), DropReason> {
        let Some(i) = self.tx_bounce.alloc() else {
            return Err(DropReason::NoBuffer);
        };
        let mut tmp = vec![0u8; bytes as usize];
        tmp[..ETH_HDR].copy_from_slice(h);
        let mut off = ETH_HDR;
        for (a, l) in rest {
            let end = off + *l as usize;
            if end > tmp.len() || self.mem.read_slice(&mut tmp[off..end], GuestAddress(*a)).is_err() {
                self.tx_bounce.release(i);
                return Err(DropReason::BadAddress);
            }
            off = end;
        }
        if self.tx_bounce.write(i, 0, &tmp).is_err() {
            self.tx_bounce.release(i);
            return Err(DropReason::FrameTooLong);
        }
        self.metrics.tx_copied(u64::from(bytes));
        let cookie = self.tx.insert(TxSlot { head, bytes, bounce: Some(i) });
        match self.driver.queue_tx(&[(self.tx_bounce.iova(i), bytes)], cookie) {
            Ok(()) => {
                self.tx_unflushed = true;
                Ok(())
            }
            Err(e) => Err(self.tx_refused(cookie, e)),
        }
    }

    /// The driver refused frame `cookie`: forget it.
    #[cold]
    pub(super) fn tx_refused(&mut self, cookie: u64, e: DriverError) -> DropReason {
        if let Some(TxSlot { bounce: Some(i), .. }) = self.tx.remove(cookie) {
            self.tx_bounce.release(i);
        }
        self.driver_err(e);
        DropReason::BackendError
    }

    /// The NIC segment of a one-descriptor TX frame that passes every check
    /// of `validate_tx` (header and at least one byte, no more than the NIC
    /// sends, all in one mapping of guest RAM), and its host address; `None`
    /// sends it through `validate_tx`, which gives the verdict.
    #[inline(always)]
    pub(super) fn one_segment_payload(&self, gpa: GuestAddress, len: u32) -> Option<(u64, u32, *const u8)> {
        let payload = len.checked_sub(HDR as u32).filter(|&p| p > 0 && p <= self.limits.tx_max_frame)?;
        let start = gpa.0.checked_add(HDR)?;
        let host = self.ram.host_range(start, u64::from(payload))?;
        Some((start, payload, host))
    }

    /// The NIC segments of a guest frame, checked, into `segs`.
    pub(super) fn validate_tx(&self, frame: &ChainRef<'_>, segs: &mut Vec<(u64, u32)>) -> Result<(), DropReason> {
        if (frame.len as usize) <= VNET_HDR_LEN {
            return Err(DropReason::ShortHeader);
        }
        if u64::from(frame.len) - HDR > u64::from(self.limits.tx_max_frame) {
            return Err(DropReason::FrameTooLong);
        }
        tx_payload_segments(&self.ram, frame, segs)?;
        // Trust the segments, not the summary (`frame.len`).
        let bytes: u64 = segs.iter().map(|s| u64::from(s.1)).sum();
        if bytes > u64::from(self.limits.tx_max_frame) {
            return Err(DropReason::FrameTooLong);
        }
        Ok(())
    }

    /// Send `frame` now, or queue it behind the frames already waiting for
    /// room in the NIC ring. `segs` is scratch space for its NIC segments.
    pub(super) fn send_checked(
        &mut self,
        frame: &ChainRef<'_>,
        segs: &mut Vec<(u64, u32)>,
    ) -> Result<bool, DropReason> {
        self.validate_tx(frame, segs).inspect_err(|r| self.metrics.drop(*r))?;
        // One more descriptor for the header copy.
        let need = (segs.len() + 1).min(self.limits.tx_max_segs);
        let mut free = self.driver.tx_free();
        if !self.backlog.is_empty() || free < need {
            // The ring was full: make room, oldest frames first (this path
            // may allocate a scratch list; the common one does not).
            self.reap_tx_completions(false);
            self.drain_backlog();
            free = self.driver.tx_free();
        }
        if self.backlog.is_empty() && free >= need {
            self.submit_tx(frame.head, segs).inspect_err(|r| self.metrics.drop(*r))?;
            return Ok(false);
        }
        if self.backlog.len() >= TX_BACKLOG {
            self.metrics.drop(DropReason::NoBuffer);
            return Err(DropReason::NoBuffer);
        }
        self.backlog.push_back(frame.to_tx_frame());
        Ok(false)
    }

    /// Send queued frames while the NIC ring has room; dropped ones are
    /// completed through `tx_returned`.
    pub(super) fn drain_backlog(&mut self) {
        if self.backlog.is_empty() {
            return;
        }
        let mut segs = std::mem::take(&mut self.tx_segs);
        while let Some(f) = self.backlog.front() {
            let chain = ChainRef { head: f.head, segs: &f.segs, len: f.len };
            match self.validate_tx(&chain, &mut segs) {
                Ok(()) => {}
                Err(r) => {
                    let f = self.backlog.pop_front().expect("front exists");
                    self.metrics.drop(r);
                    self.tx_returned.push((f.head, Some(r)));
                    continue;
                }
            };
            let need = (segs.len() + 1).min(self.limits.tx_max_segs);
            if self.driver.tx_free() < need {
                break;
            }
            let f = self.backlog.pop_front().expect("front exists");
            let head = f.head;
            if let Err(r) = self.submit_tx(head, &segs) {
                self.metrics.drop(r);
                self.tx_returned.push((head, Some(r)));
            }
        }
        self.tx_segs = segs;
    }

    /// Copies the segment list only when the frame has to wait in the backlog.
    pub(super) fn send_chain(&mut self, frame: ChainRef<'_>) -> Result<bool, DropReason> {
        if !self.ensure_started() {
            self.metrics.drop(DropReason::BackendError);
            return Err(DropReason::BackendError);
        }
        if let [(gpa, len)] = frame.segs {
            // The common shape: header and frame in one descriptor.
            if let Some((start, len, host)) = self.one_segment_payload(*gpa, *len) {
                // Two descriptors: the header copy and the rest.
                if self.backlog.is_empty() && self.driver.tx_free() >= 2 {
                    self.submit_tx_one(frame.head, start, len, host).inspect_err(|r| self.metrics.drop(*r))?;
                    return Ok(false);
                }
            }
        }
        let mut segs = std::mem::take(&mut self.tx_segs);
        let r = self.send_checked(&frame, &mut segs);
        self.tx_segs = segs;
        r
    }

    /// Collect the NIC's TX completions; a driver error is handled (counted,
    /// removal fails the NIC) only when `report` is set.
    pub(super) fn reap_tx_completions(&mut self, report: bool) {
        let mut out = std::mem::take(&mut self.tx_returned);
        self.reap_tx_into(report, |head| out.push((head, None)));
        self.tx_returned = out;
    }

    /// Hand the head of every frame the NIC finished to `emit`.
    #[inline(always)]
    pub(super) fn reap_tx_into(&mut self, report: bool, mut emit: impl FnMut(u16)) {
        let (tx, bounce, metrics) = (&mut self.tx, &mut self.tx_bounce, &mut self.metrics);
        let r = self.driver.reap_tx_with(
            #[inline(always)]
            |c| match tx.remove(c.cookie) {
                Some(t) => {
                    if let Some(i) = t.bounce {
                        bounce.release(i);
                    }
                    metrics.tx_packets += 1;
                    metrics.tx_bytes += u64::from(t.bytes);
                    emit(t.head);
                }
                // Not a frame we queued (or a stale cookie): ignored.
                None => metrics.nic_errors += 1,
            },
        );
        if let Err(e) = r {
            if report {
                self.driver_err(e);
            }
        }
    }
}
