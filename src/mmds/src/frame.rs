//! Which guest frames are for MMDS: decided from the first bytes of a
//! frame, before the backend sees it.

use std::net::Ipv4Addr;

/// Bytes of a frame [`is_mmds_frame`] looks at: an Ethernet header and an
/// ARP body (the IPv4 destination lies within them too).
pub const CLASSIFY_LEN: usize = 42;

const ETHERTYPE: std::ops::Range<usize> = 12..14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];
/// The IPv4 destination address (Ethernet header + 16).
const IPV4_DST: std::ops::Range<usize> = 30..34;
/// ARP's target protocol address (Ethernet header + 24).
const ARP_TPA: std::ops::Range<usize> = 38..42;

/// Whether `frame` (its first [`CLASSIFY_LEN`] bytes at least, else it is
/// not) is an ARP packet about `ip` or an IPv4 packet to `ip`: traffic for
/// the metadata service, which must not reach the wire.
pub fn is_mmds_frame(frame: &[u8], ip: Ipv4Addr) -> bool {
    if frame.len() < CLASSIFY_LEN {
        return false;
    }
    let ip = ip.octets();
    match [frame[ETHERTYPE.start], frame[ETHERTYPE.start + 1]] {
        ETHERTYPE_IPV4 => frame[IPV4_DST] == ip,
        ETHERTYPE_ARP => frame[ARP_TPA] == ip,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

    fn frame(ethertype: [u8; 2], at: std::ops::Range<usize>, ip: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[12..14].copy_from_slice(&ethertype);
        f[at].copy_from_slice(&ip.octets());
        f
    }

    #[test]
    fn arp_and_ipv4_for_the_address_only() {
        assert!(is_mmds_frame(&frame(ETHERTYPE_ARP, ARP_TPA, IP), IP));
        assert!(is_mmds_frame(&frame(ETHERTYPE_IPV4, IPV4_DST, IP), IP));
        let other = Ipv4Addr::new(10, 0, 0, 1);
        assert!(!is_mmds_frame(&frame(ETHERTYPE_ARP, ARP_TPA, other), IP));
        assert!(!is_mmds_frame(&frame(ETHERTYPE_IPV4, IPV4_DST, other), IP));
        assert!(!is_mmds_frame(&frame([0x86, 0xdd], IPV4_DST, IP), IP), "IPv6 is not MMDS");
        assert!(!is_mmds_frame(&frame(ETHERTYPE_IPV4, IPV4_DST, IP)[..CLASSIFY_LEN - 1], IP));
    }
}
