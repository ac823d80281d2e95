//! The shim's transmit side: guest frames from the lent [`TxQueue`] into NIC
//! TX descriptors (their segments after the virtio-net header, zero-copy;
//! through a bounce buffer when the NIC takes too few segments), a backlog
//! while the ring is full, and NIC completions back to the guest.
//!
//! [`TxQueue`]: virtio_devices::net::direct::TxQueue

use virtio_devices::mem::RamMap;
use virtio_devices::net::backend::{ChainRef, DropReason, VNET_HDR_LEN};
use vm_memory::{Bytes, GuestAddress};

use super::tx_offload::{
    self, check_request, csum_layout, prepare_tso, tcp_doff_at, tcp_hdr_len, TxRequest, VnetTxHdr, MAX_TSO_HDR,
    TX_OFFLOAD_FEATURES, VNET_TX_FIELDS,
};
use super::wire::{check_header, check_words, read_header, ETH_HDR};
use super::{in_ram, ShimBackend, HDR, TX_BACKLOG};
use crate::driver::{DriverError, PnicDriver, TxOffload};

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

/// The segments of `segs` after its first `skip` bytes.
fn payload_after(segs: &[(u64, u32)], mut skip: usize) -> smallvec::SmallVec<[(u64, u32); 20]> {
    let mut out = smallvec::SmallVec::new();
    for &(a, l) in segs {
        let l = l as usize;
        if skip >= l {
            skip -= l;
            continue;
        }
        out.push((a + skip as u64, (l - skip) as u32));
        skip = 0;
    }
    out
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
            self.submit_tx_bounced(head, &h, &nic[1..], bytes, None)
        } else {
            self.queue_frame(head, bytes, &nic)
        };
        self.tx_nic_segs = nic;
        r
    }

    /// The first [`ETH_HDR`] bytes of the frame in `segs` (guest RAM),
    /// wherever they are split.
    fn gather_header(&self, segs: &[(u64, u32)], h: &mut [u8; ETH_HDR]) -> Result<(), DropReason> {
        self.gather_frame(segs, 0, h)
    }

    /// `out.len()` bytes of the frame in `segs` (guest RAM) from byte
    /// `offset`, wherever they are split (`RuntFrame` if it is shorter).
    fn gather_frame(&self, segs: &[(u64, u32)], mut offset: usize, out: &mut [u8]) -> Result<(), DropReason> {
        let mut got = 0usize;
        for &(a, l) in segs {
            if got == out.len() {
                break;
            }
            let l = l as usize;
            if offset >= l {
                offset -= l;
                continue;
            }
            let n = (l - offset).min(out.len() - got);
            if !self.ram.read(a + offset as u64, &mut out[got..got + n]) {
                return Err(DropReason::BadAddress);
            }
            got += n;
            offset = 0;
        }
        if got < out.len() {
            return Err(DropReason::RuntFrame);
        }
        Ok(())
    }

    /// The TX fields of the virtio-net header of the chain `segs` (the
    /// header may be split across descriptors).
    fn read_vnet_hdr(&self, segs: &[(GuestAddress, u32)]) -> Result<VnetTxHdr, DropReason> {
        let mut b = [0u8; VNET_TX_FIELDS];
        let mut got = 0usize;
        for &(a, l) in segs {
            if got == b.len() {
                break;
            }
            let n = (l as usize).min(b.len() - got);
            if !self.ram.read(a.0, &mut b[got..got + n]) {
                return Err(DropReason::BadAddress);
            }
            got += n;
        }
        if got < b.len() {
            return Err(DropReason::ShortHeader);
        }
        Ok(VnetTxHdr::from_bytes(&b))
    }

    /// What the frame's virtio-net header asks for, checked; `None` (a
    /// plain frame, the header not even read) unless TX offloads were
    /// negotiated.
    pub(super) fn tx_request(&self, frame: &ChainRef<'_>) -> Result<Option<TxRequest>, DropReason> {
        if self.acked & TX_OFFLOAD_FEATURES == 0 {
            return Ok(None);
        }
        let h = self.read_vnet_hdr(frame.segs)?;
        let len = frame.len.checked_sub(VNET_HDR_LEN as u32).ok_or(DropReason::ShortHeader)?;
        check_request(&h, self.acked, len)
    }

    /// Largest frame (after the virtio-net header) for `req`.
    fn tx_frame_limit(&self, req: Option<TxRequest>) -> u32 {
        match req {
            Some(TxRequest::Tso { .. }) => self.driver.tx_offload_caps().tso_max_frame.max(self.limits.tx_max_frame),
            _ => self.limits.tx_max_frame,
        }
    }

    /// NIC descriptors a frame of `n` guest segments needs for `req` (at
    /// most): the header copy and the segments, plus the context for an
    /// offload; a plain frame in more segments than the NIC takes is
    /// bounced into one.
    fn tx_need(&self, n: usize, req: Option<TxRequest>) -> usize {
        match req {
            None => (n + 1).min(self.limits.tx_max_segs),
            Some(_) => n + 2,
        }
    }

    /// Queue a checked frame as `req` asks (`None`: plain).
    fn submit_prepared(&mut self, head: u16, segs: &[(u64, u32)], req: Option<TxRequest>) -> Result<(), DropReason> {
        match req {
            None => self.submit_tx(head, segs),
            Some(r) => self.submit_offload(head, segs, r),
        }
    }

    /// Queue a frame whose header asked for an offload: the NIC's context
    /// when it has one (zero-copy but the headers), a checksum finished in
    /// a bounce buffer when it has none; a TSO it cannot do is dropped.
    fn submit_offload(&mut self, head: u16, segs: &[(u64, u32)], req: TxRequest) -> Result<(), DropReason> {
        let slot = self.tx.vacant_index();
        if slot >= self.tx_hdrs.slots() {
            return Err(DropReason::NoBuffer);
        }
        let bytes: u32 = segs.iter().map(|s| s.1).sum();
        let caps = self.driver.tx_offload_caps();
        let (hlen, off) = match req {
            TxRequest::Csum { start, offset } => {
                let mut h = [0u8; ETH_HDR];
                self.gather_header(segs, &mut h)?;
                self.metrics.tx_header_copied(ETH_HDR as u64);
                check_header(&h, &self.mac)?;
                let layout = csum_layout(&h, start, offset).filter(|_| caps.csum && segs.len() < caps.max_segs);
                let Some(layout) = layout else {
                    return self.submit_tx_bounced(
                        head,
                        &h,
                        &payload_after(segs, ETH_HDR),
                        bytes,
                        Some((start, offset)),
                    );
                };
                self.tx_hdrs.store(slot, &h);
                (ETH_HDR, TxOffload::Csum(layout))
            }
            TxRequest::Tso { v6, mss, start } => {
                let start_at = usize::from(start);
                let first = tcp_doff_at(start_at) + 1;
                if !caps.tso || first > MAX_TSO_HDR {
                    return Err(DropReason::OffloadUnsupported);
                }
                let mut hdr = [0u8; MAX_TSO_HDR];
                self.gather_frame(segs, 0, &mut hdr[..first])?;
                let l4 = tcp_hdr_len(&hdr, start_at).ok_or(DropReason::BadVnetHeader)?;
                let hlen = start_at + l4;
                if hlen > MAX_TSO_HDR {
                    return Err(DropReason::OffloadUnsupported);
                }
                // A payload, and segments no longer than the wire takes.
                if hlen as u32 >= bytes || hlen as u32 + u32::from(mss) > self.limits.tx_max_frame {
                    return Err(DropReason::BadVnetHeader);
                }
                if hlen > first {
                    self.gather_frame(segs, first, &mut hdr[first..hlen])?;
                }
                self.metrics.tx_header_copied(hlen as u64);
                let mut eth = [0u8; ETH_HDR];
                eth.copy_from_slice(&hdr[..ETH_HDR]);
                check_header(&eth, &self.mac)?;
                let off = prepare_tso(&mut hdr[..hlen], v6, start, mss)?;
                self.tx_hdrs.store_bytes(slot, &hdr[..hlen]);
                (hlen, off)
            }
        };
        let mut nic = std::mem::take(&mut self.tx_nic_segs);
        nic.clear();
        nic.push((self.tx_hdrs.iova(slot), hlen as u32));
        nic.extend(payload_after(segs, hlen));
        let r = if nic.len() > caps.max_segs {
            Err(DropReason::OffloadUnsupported)
        } else {
            self.queue_frame_offload(head, bytes, &nic, &off)
        };
        self.tx_nic_segs = nic;
        r?;
        match off {
            TxOffload::Csum(_) => self.metrics.tx_csum_offload += 1,
            TxOffload::Tso { mss, .. } => {
                self.metrics.tx_tso_frames += 1;
                self.metrics.tx_tso_segments += u64::from((bytes - hlen as u32).div_ceil(u32::from(mss)));
            }
        }
        Ok(())
    }

    /// [`Self::queue_frame`] with the NIC doing `off`.
    fn queue_frame_offload(
        &mut self,
        head: u16,
        bytes: u32,
        nic: &[(u64, u32)],
        off: &TxOffload,
    ) -> Result<(), DropReason> {
        let cookie = self.tx.insert(TxSlot { head, bytes, bounce: None });
        match self.driver.queue_tx_offload(nic, off, cookie) {
            Ok(()) => {
                self.tx_unflushed = true;
                self.metrics.tx_zero_copy += 1;
                Ok(())
            }
            Err(e) => Err(self.tx_refused(cookie, e)),
        }
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

    /// Too fragmented for the NIC, or a checksum it cannot insert: the
    /// checked header `h` and the guest segments `rest` after it copied
    /// into one bounce buffer, queued as one; `csum` (start, offset): the
    /// checksum finished there, in the VMM's copy (never in guest memory,
    /// which the guest could change under the NIC).
    #[cold]
    pub(super) fn submit_tx_bounced(
        &mut self,
        head: u16,
        h: &[u8; ETH_HDR],
        rest: &[(u64, u32)],
        bytes: u32,
        csum: Option<(u16, u16)>,
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
        if let Some((start, offset)) = csum {
            // check_request put start + offset + 2 inside the frame.
            if usize::from(start) + usize::from(offset) + 2 > tmp.len() {
                self.tx_bounce.release(i);
                return Err(DropReason::BadVnetHeader);
            }
            tx_offload::finish_csum(&mut tmp, usize::from(start), usize::from(offset));
            self.metrics.tx_sw_csum += 1;
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

    /// The NIC segments of a guest frame of at most `max` bytes (after
    /// the virtio-net header), checked, into `segs`.
    pub(super) fn validate_tx(
        &self,
        frame: &ChainRef<'_>,
        segs: &mut Vec<(u64, u32)>,
        max: u32,
    ) -> Result<(), DropReason> {
        if (frame.len as usize) <= VNET_HDR_LEN {
            return Err(DropReason::ShortHeader);
        }
        if u64::from(frame.len) - HDR > u64::from(max) {
            return Err(DropReason::FrameTooLong);
        }
        tx_payload_segments(&self.ram, frame, segs)?;
        // Trust the segments, not the summary (`frame.len`).
        let bytes: u64 = segs.iter().map(|s| u64::from(s.1)).sum();
        if bytes > u64::from(max) {
            return Err(DropReason::FrameTooLong);
        }
        Ok(())
    }

    /// Check `frame` (its header's request and its segments, into `segs`)
    /// and the NIC descriptors it needs.
    fn prepare_tx(
        &self,
        frame: &ChainRef<'_>,
        segs: &mut Vec<(u64, u32)>,
    ) -> Result<(Option<TxRequest>, usize), DropReason> {
        let req = self.tx_request(frame)?;
        self.validate_tx(frame, segs, self.tx_frame_limit(req))?;
        Ok((req, self.tx_need(segs.len(), req)))
    }

    /// Send `frame`, whose header asked for `req` ([`Self::tx_request`]),
    /// now, or queue it behind the frames already waiting for room in the
    /// NIC ring (where it is checked again). `segs` is scratch space for
    /// its NIC segments.
    pub(super) fn send_checked(
        &mut self,
        frame: &ChainRef<'_>,
        segs: &mut Vec<(u64, u32)>,
        req: Option<TxRequest>,
    ) -> Result<bool, DropReason> {
        self.validate_tx(frame, segs, self.tx_frame_limit(req)).inspect_err(|r| self.metrics.drop(*r))?;
        let need = self.tx_need(segs.len(), req);
        let mut free = self.driver.tx_free();
        if !self.backlog.is_empty() || free < need {
            // The ring was full: make room, oldest frames first (this path
            // may allocate a scratch list; the common one does not).
            self.reap_tx_completions(false);
            self.drain_backlog();
            free = self.driver.tx_free();
        }
        if self.backlog.is_empty() && free >= need {
            self.submit_prepared(frame.head, segs, req).inspect_err(|r| self.metrics.drop(*r))?;
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
            // Checked again: the guest may have changed it meanwhile.
            let (req, need) = match self.prepare_tx(&chain, &mut segs) {
                Ok(p) => p,
                Err(r) => {
                    let f = self.backlog.pop_front().expect("front exists");
                    self.metrics.drop(r);
                    self.tx_returned.push((f.head, Some(r)));
                    continue;
                }
            };
            if self.driver.tx_free() < need {
                break;
            }
            let f = self.backlog.pop_front().expect("front exists");
            let head = f.head;
            if let Err(r) = self.submit_prepared(head, &segs, req) {
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
        // A header asking for an offload takes the general path.
        match self.tx_request(&frame) {
            Ok(None) => {}
            Ok(req @ Some(_)) => {
                let mut segs = std::mem::take(&mut self.tx_segs);
                let r = self.send_checked(&frame, &mut segs, req);
                self.tx_segs = segs;
                return r;
            }
            Err(r) => {
                self.metrics.drop(r);
                return Err(r);
            }
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
        let r = self.send_checked(&frame, &mut segs, None);
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
