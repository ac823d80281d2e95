//! The wire policy: what a guest may put on the physical wire.
//!
//! TX is zero-copy, so a check on guest memory would be a TOCTOU (the guest
//! may rewrite the header after the check, before the NIC reads it). The
//! shim therefore copies the Ethernet header of every frame into a slot of a
//! DMA area the VMM owns ([`HdrSlots`]), checks *that copy* with
//! [`check_header`], and gives the NIC the copy as the frame's first TX
//! segment; only the rest of the frame is read from guest memory.
//!
//! Dropped (each counted under its own reason in the drop counters):
//! - a source MAC other than the VM's (`spoofed_source`): no ARP poisoning
//!   or MAC flooding of the LAN under another station's address;
//! - an 802.1Q or 802.1ad tag, outer or QinQ (`vlan_tagged`): no VLAN can be
//!   configured for the shim, so a tagged frame would hop into a VLAN the
//!   guest was never given;
//! - MAC control, ethertype 0x8808 (`mac_control`): PAUSE/PFC would stall
//!   the switch port for everyone behind it;
//! - link-local control protocols (`link_local`): frames to the IEEE 802.1
//!   reserved group 01:80:C2:00:00:00..0F (STP BPDUs, which can make a
//!   switch's BPDU guard shut the host's port; 802.1X; LLDP; ...) and the
//!   ethertypes 0x8809 (slow protocols: LACP, marker, OAM), 0x88CC (LLDP)
//!   and 0x888E (EAPOL) whatever their destination: the port and its link
//!   belong to the host, the guest is a station behind it, not a bridge;
//! - frames shorter than an Ethernet header (`runt_frame`).
//!
//! Everything else (IPv4, IPv6, ARP, any other ethertype, 802.3 length/LLC
//! frames to non-reserved destinations) goes out.

use std::ptr::NonNull;

use virtio_devices::net::backend::DropReason;

use crate::dma::DmaArea;

/// Bytes of an untagged Ethernet header: destination, source, ethertype.
pub const ETH_HDR: usize = 14;
/// Bytes per header slot: room for a TSO frame's whole header (Ethernet,
/// IP with options, TCP with options: at most 14 + 60 + 60), 8-byte aligned.
pub const HDR_SLOT: usize = 256;

const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88a8;
/// Pre-standard QinQ outer tag some switches still accept.
const ETHERTYPE_QINQ_OLD: u16 = 0x9100;
const ETHERTYPE_MAC_CONTROL: u16 = 0x8808;
const ETHERTYPE_SLOW: u16 = 0x8809;
const ETHERTYPE_LLDP: u16 = 0x88cc;
const ETHERTYPE_EAPOL: u16 = 0x888e;
/// 01:80:C2:00:00:0X: the IEEE 802.1 reserved link-local group.
const LINK_LOCAL_PREFIX: [u8; 3] = [0x01, 0x80, 0xc2];

/// An Ethernet header as two little-endian words: `lo` = bytes 0..8
/// (destination, first two source bytes), `hi` = bytes 6..14 (source,
/// ethertype). The checks are a few word compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthWords {
    pub lo: u64,
    pub hi: u64,
}

impl EthWords {
    #[inline(always)]
    pub fn from_bytes(h: &[u8; ETH_HDR]) -> Self {
        let lo = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
        let hi = u64::from_le_bytes([h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13]]);
        EthWords { lo, hi }
    }

    pub fn to_bytes(self) -> [u8; ETH_HDR] {
        let mut h = [0u8; ETH_HDR];
        h[..8].copy_from_slice(&self.lo.to_le_bytes());
        h[6..].copy_from_slice(&self.hi.to_le_bytes());
        h
    }
}

/// `mac` as the low 48 bits of a little-endian word (what
/// [`check_words`] compares the source with).
pub fn mac_word(mac: &[u8; 6]) -> u64 {
    u64::from_le_bytes([mac[0], mac[1], mac[2], mac[3], mac[4], mac[5], 0, 0])
}

/// The verdict on a frame whose first [`ETH_HDR`] bytes are `h`, sent by
/// the VM whose MAC is `mac`: `Ok` means it may go on the wire.
pub fn check_header(h: &[u8; ETH_HDR], mac: &[u8; 6]) -> Result<(), DropReason> {
    check_words(EthWords::from_bytes(h), mac_word(mac))
}

/// [`check_header`] on the header's words, the VM's MAC as [`mac_word`].
#[inline(always)]
pub fn check_words(h: EthWords, mac: u64) -> Result<(), DropReason> {
    if h.hi & 0xffff_ffff_ffff != mac {
        return Err(DropReason::SpoofedSource);
    }
    let ethertype = ((h.hi >> 48) as u16).swap_bytes();
    // Every ethertype dropped is >= 0x8100; IPv4 and ARP are below.
    if ethertype >= ETHERTYPE_VLAN {
        match ethertype {
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_OLD => return Err(DropReason::VlanTagged),
            ETHERTYPE_MAC_CONTROL => return Err(DropReason::MacControl),
            ETHERTYPE_SLOW | ETHERTYPE_LLDP | ETHERTYPE_EAPOL => return Err(DropReason::LinkLocal),
            _ => {}
        }
    }
    // 01:80:C2:00:00:0X: the first five bytes and the high nibble of the sixth.
    let ll = u64::from_le_bytes([LINK_LOCAL_PREFIX[0], LINK_LOCAL_PREFIX[1], LINK_LOCAL_PREFIX[2], 0, 0, 0, 0, 0]);
    if h.lo & 0xf0_ff_ff_ff_ff_ff == ll {
        return Err(DropReason::LinkLocal);
    }
    Ok(())
}

/// Copy the [`ETH_HDR`] bytes at `src` out of guest memory, each read once
/// (volatile: the guest may be writing them; the copy is what is checked
/// and sent). Two-byte aligned (how Linux lays out its TX frames): seven
/// 16-bit loads; else fourteen byte loads.
///
/// # Safety
/// `src` must be valid for reads of [`ETH_HDR`] bytes for the whole call.
#[inline(always)]
pub unsafe fn read_header(src: *const u8) -> EthWords {
    if src as usize & 1 == 0 {
        let w = src.cast::<u16>();
        // SAFETY: seven 2-byte loads covering exactly the 14 bytes the
        // caller vouches for; 2-byte aligned (checked above).
        let [w0, w1, w2, w3, w4, w5, w6] =
            unsafe { [0, 1, 2, 3, 4, 5, 6].map(|i| u64::from(w.add(i).read_volatile())) };
        // The words hold bytes in memory order on a little-endian host; on a
        // big-endian one, swap each back.
        let le = |v: u64| if cfg!(target_endian = "big") { u64::from((v as u16).swap_bytes()) } else { v };
        let (w0, w1, w2, w3, w4, w5, w6) = (le(w0), le(w1), le(w2), le(w3), le(w4), le(w5), le(w6));
        EthWords { lo: w0 | w1 << 16 | w2 << 32 | w3 << 48, hi: w3 | w4 << 16 | w5 << 32 | w6 << 48 }
    } else {
        let mut h = [0u8; ETH_HDR];
        for (i, b) in h.iter_mut().enumerate() {
            // SAFETY: i < 14: inside the bytes the caller vouches for.
            *b = unsafe { src.add(i).read_volatile() };
        }
        EthWords::from_bytes(&h)
    }
}

/// One header slot per TX frame the shim can have on the NIC, in a DMA area
/// the VMM owns and the NIC reads from. Slot `i` belongs to the TX entry with
/// index `i` (see `CookieSlab::vacant_index`) for as long as that entry is
/// occupied, i.e. until the NIC's completion for the frame was reaped, or
/// the NIC's queues were stopped.
pub struct HdrSlots {
    area: DmaArea,
    slots: usize,
    host: NonNull<u8>,
}

// SAFETY: `host` points into the mapping `area` owns (DmaArea is Send and
// Sync); a slot is only written while no frame using it is on the NIC.
unsafe impl Send for HdrSlots {}

impl HdrSlots {
    /// `area` split into slots of [`HDR_SLOT`] bytes.
    pub fn new(area: DmaArea) -> Self {
        let slots = area.len() / HDR_SLOT;
        let host = area.host_ptr();
        HdrSlots { area, slots, host }
    }

    pub fn slots(&self) -> usize {
        self.slots
    }

    /// IOVA of slot `i` (`i` < `slots()`).
    #[inline(always)]
    pub fn iova(&self, i: usize) -> u64 {
        self.area.iova() + (i * HDR_SLOT) as u64
    }

    /// Store `h` in slot `i` (ignored if there is no such slot; callers
    /// check `i < slots()` first).
    pub fn store(&self, i: usize, h: &[u8; ETH_HDR]) {
        self.store_words(i, EthWords::from_bytes(h));
    }

    /// [`Self::store`] from the header's words: two 8-byte stores.
    #[inline(always)]
    pub fn store_words(&self, i: usize, h: EthWords) {
        if i >= self.slots {
            return;
        }
        // SAFETY: slot i lies inside the area's mapping (i < slots, and
        // slots * HDR_SLOT <= len), which lives as long as `self`; the two
        // unaligned 8-byte stores cover its bytes 0..8 and 6..14. The NIC
        // only reads a slot while the frame that owns it is queued (after
        // the release fence of the tail write), and the shim only stores
        // into the slot of a vacant TX entry, so nothing reads these bytes
        // concurrently.
        unsafe {
            let at = self.host.as_ptr().add(i * HDR_SLOT);
            at.cast::<u64>().write_unaligned(h.lo.to_le());
            at.add(6).cast::<u64>().write_unaligned(h.hi.to_le());
        }
    }

    /// Store `h` (at most [`HDR_SLOT`] bytes) at the start of slot `i`
    /// (ignored if there is no such slot or `h` is longer; callers check).
    pub fn store_bytes(&self, i: usize, h: &[u8]) {
        if i >= self.slots || h.len() > HDR_SLOT {
            return;
        }
        // The same ownership argument as `store_words`: the slot of a
        // vacant TX entry, which the NIC does not read.
        let _ = self.area.write((i * HDR_SLOT) as u64, h);
    }

    /// What slot `i` holds (tests).
    #[cfg(test)]
    pub fn load(&self, i: usize) -> [u8; ETH_HDR] {
        let mut h = [0u8; ETH_HDR];
        let _ = self.area.read((i * HDR_SLOT) as u64, &mut h);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    fn hdr(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> [u8; ETH_HDR] {
        let mut h = [0u8; ETH_HDR];
        h[..6].copy_from_slice(&dst);
        h[6..12].copy_from_slice(&src);
        h[12..].copy_from_slice(&ethertype.to_be_bytes());
        h
    }

    #[test]
    fn ordinary_frames_pass() {
        for (dst, et) in [
            ([0xff; 6], 0x0806),
            ([0x02, 0, 0, 0, 0, 9], 0x0800),
            ([0x33, 0x33, 0, 0, 0, 1], 0x86dd),
            ([0x01, 0x00, 0x5e, 0, 0, 1], 0x0800),
            // 802.3 length + LLC to an ordinary address.
            ([0x02, 0, 0, 0, 0, 9], 0x0040),
            // Just outside the reserved group.
            ([0x01, 0x80, 0xc2, 0, 0, 0x10], 0x0800),
        ] {
            assert_eq!(check_header(&hdr(dst, MAC, et), &MAC), Ok(()), "{dst:x?} {et:#x}");
        }
    }

    #[test]
    fn policy_drops_with_its_reason() {
        let peer = [0x02, 0, 0, 0, 0, 9];
        let cases = [
            (hdr(peer, [0x52, 0x54, 0, 0x12, 0x34, 0x57], 0x0800), DropReason::SpoofedSource),
            (hdr(peer, [0xff; 6], 0x0806), DropReason::SpoofedSource),
            (hdr(peer, MAC, 0x8100), DropReason::VlanTagged),
            (hdr(peer, MAC, 0x88a8), DropReason::VlanTagged),
            (hdr(peer, MAC, 0x9100), DropReason::VlanTagged),
            (hdr([0x01, 0x80, 0xc2, 0, 0, 1], MAC, 0x8808), DropReason::MacControl),
            (hdr(peer, MAC, 0x8808), DropReason::MacControl),
            (hdr([0x01, 0x80, 0xc2, 0, 0, 2], MAC, 0x8809), DropReason::LinkLocal),
            (hdr([0x01, 0x80, 0xc2, 0, 0, 0x0e], MAC, 0x88cc), DropReason::LinkLocal),
            (hdr(peer, MAC, 0x888e), DropReason::LinkLocal),
            // An STP BPDU: 802.3 length, to 01:80:C2:00:00:00.
            (hdr([0x01, 0x80, 0xc2, 0, 0, 0], MAC, 0x0026), DropReason::LinkLocal),
            (hdr([0x01, 0x80, 0xc2, 0, 0, 0x0f], MAC, 0x0800), DropReason::LinkLocal),
        ];
        for (h, want) in cases {
            assert_eq!(check_header(&h, &MAC), Err(want), "{h:x?}");
        }
    }

    #[test]
    fn header_reads_at_any_alignment() {
        let mut buf = [0u8; 32];
        for (i, b) in buf.iter_mut().enumerate() {
            *b = i as u8;
        }
        for off in [0usize, 1, 2, 3] {
            // SAFETY: off + 14 <= 32 bytes of `buf`.
            let h = unsafe { read_header(buf.as_ptr().add(off)) };
            assert_eq!(h.to_bytes()[..], buf[off..off + ETH_HDR]);
        }
    }

    #[test]
    fn slots_are_apart_and_bounded() {
        let s = HdrSlots::new(DmaArea::new(0x4000_0000, 4096).unwrap());
        assert_eq!(s.slots(), 4096 / HDR_SLOT);
        let last = s.slots() - 1;
        let h = hdr([1; 6], MAC, 0x0800);
        s.store(last, &h);
        s.store(last + 1, &h);
        assert_eq!(s.load(last), h);
        assert_eq!(s.iova(1) - s.iova(0), HDR_SLOT as u64);
    }
}
