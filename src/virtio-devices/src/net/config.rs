//! virtio-net feature bits and the device configuration space (VIRTIO 1.2,
//! 5.1.3-5.1.4).

use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN, VIRTIO_NET_F_GUEST_TSO4,
    VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_GUEST_UFO, VIRTIO_NET_F_HOST_ECN, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_HOST_UFO, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_NET_F_MTU,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

pub const F_VERSION_1: u64 = 1 << VIRTIO_F_VERSION_1;
pub const F_EVENT_IDX: u64 = 1 << VIRTIO_RING_F_EVENT_IDX;
pub const F_INDIRECT_DESC: u64 = 1 << VIRTIO_RING_F_INDIRECT_DESC;
pub const F_MAC: u64 = 1 << VIRTIO_NET_F_MAC;
pub const F_STATUS: u64 = 1 << VIRTIO_NET_F_STATUS;
pub const F_MRG_RXBUF: u64 = 1 << VIRTIO_NET_F_MRG_RXBUF;
/// The device reports the MTU it supports in the config space (`mtu`).
pub const F_MTU: u64 = 1 << VIRTIO_NET_F_MTU;
pub const F_CSUM: u64 = 1 << VIRTIO_NET_F_CSUM;
pub const F_GUEST_CSUM: u64 = 1 << VIRTIO_NET_F_GUEST_CSUM;
pub const F_GUEST_TSO4: u64 = 1 << VIRTIO_NET_F_GUEST_TSO4;
pub const F_GUEST_TSO6: u64 = 1 << VIRTIO_NET_F_GUEST_TSO6;
pub const F_GUEST_ECN: u64 = 1 << VIRTIO_NET_F_GUEST_ECN;
pub const F_GUEST_UFO: u64 = 1 << VIRTIO_NET_F_GUEST_UFO;
pub const F_HOST_TSO4: u64 = 1 << VIRTIO_NET_F_HOST_TSO4;
pub const F_HOST_TSO6: u64 = 1 << VIRTIO_NET_F_HOST_TSO6;
pub const F_HOST_ECN: u64 = 1 << VIRTIO_NET_F_HOST_ECN;
pub const F_HOST_UFO: u64 = 1 << VIRTIO_NET_F_HOST_UFO;

/// Offload bits a backend may add to what the device offers; anything else in
/// `NetBackend::features()` is ignored (the device implements the rest).
pub const BACKEND_OFFLOAD_MASK: u64 = F_CSUM
    | F_GUEST_CSUM
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_GUEST_ECN
    | F_GUEST_UFO
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_HOST_ECN
    | F_HOST_UFO;

/// Guest-receive offloads that let a backend hand over GSO frames up to 64 KiB.
pub const GUEST_GSO_MASK: u64 = F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_UFO;

/// Features the device itself implements, whatever the backend.
pub const DEVICE_FEATURES: u64 = F_VERSION_1 | F_MAC | F_STATUS | F_MRG_RXBUF | F_EVENT_IDX | F_INDIRECT_DESC;

/// Config space byte offsets (`struct virtio_net_config`).
pub const CFG_MAC: usize = 0;
pub const CFG_STATUS: usize = 6;
pub const CFG_MAX_VQ_PAIRS: usize = 8;
pub const CFG_MTU: usize = 10;
/// The part of the config space this device exposes (mac, status,
/// max_virtqueue_pairs, mtu); reads beyond it return zeros.
pub const CFG_LEN: usize = 12;

/// The `mtu` field before one is set (Ethernet's; the range a
/// configuration may ask for is `vmm_config::net`'s).
pub const MTU_DEFAULT: u16 = 1500;

/// `status` bit: the link is up.
pub const STATUS_LINK_UP: u16 = VIRTIO_NET_S_LINK_UP as u16;

/// The config space as bytes (`mtu` is read by the driver only when
/// VIRTIO_NET_F_MTU was offered).
pub fn config_bytes(mac: [u8; 6], link_up: bool, mtu: u16) -> [u8; CFG_LEN] {
    let mut c = [0u8; CFG_LEN];
    c[CFG_MAC..CFG_MAC + 6].copy_from_slice(&mac);
    let status = if link_up { STATUS_LINK_UP } else { 0 };
    c[CFG_STATUS..CFG_STATUS + 2].copy_from_slice(&status.to_le_bytes());
    c[CFG_MAX_VQ_PAIRS..CFG_MAX_VQ_PAIRS + 2].copy_from_slice(&1u16.to_le_bytes());
    c[CFG_MTU..CFG_MTU + 2].copy_from_slice(&mtu.to_le_bytes());
    c
}

/// Copies the window `[offset, offset + data.len())` of `cfg` into `data`,
/// zero-filling whatever lies outside (the offset is guest-controlled).
pub fn read_window(cfg: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i as u64)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| cfg.get(o).copied())
            .unwrap_or(0);
    }
}

/// A random locally administered unicast MAC (02:xx:...).
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    // SAFETY: getrandom writes at most `mac.len()` bytes into the buffer we own.
    let n = unsafe { libc::getrandom(mac.as_mut_ptr().cast(), mac.len(), 0) };
    if n != mac.len() as isize {
        // Fall back to time and pid: uniqueness matters, not unpredictability.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
            ^ (u128::from(std::process::id()) << 32);
        mac.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    mac[0] = (mac[0] & !0x01) | 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_layout_and_windows() {
        let c = config_bytes([1, 2, 3, 4, 5, 6], true, 9000);
        let mut d = [0u8; 8];
        read_window(&c, 0, &mut d);
        assert_eq!(d, [1, 2, 3, 4, 5, 6, 1, 0]);
        let mut s = [0xffu8; 2];
        read_window(&config_bytes([0; 6], false, 1500), 6, &mut s);
        assert_eq!(s, [0, 0]);
        let mut s = [0xffu8; 4];
        read_window(&c, 8, &mut s);
        assert_eq!(s, [1, 0, 0x28, 0x23], "max_virtqueue_pairs 1, then mtu 9000 (le16)");
        read_window(&c, u64::MAX, &mut s);
        assert_eq!(s, [0; 4]);
    }

    #[test]
    fn random_mac_is_local_unicast() {
        for _ in 0..16 {
            let m = random_mac();
            assert_eq!(m[0] & 0x03, 0x02);
        }
        assert_ne!(random_mac(), random_mac());
    }

    #[test]
    fn feature_bits() {
        assert_eq!(F_VERSION_1, 1 << 32);
        assert_eq!(F_MRG_RXBUF, 1 << 15);
        assert_eq!(F_EVENT_IDX, 1 << 29);
        assert_eq!(DEVICE_FEATURES & BACKEND_OFFLOAD_MASK, 0);
    }
}
