//! Counters of the shim backend (merged into the virtio-net device's metrics).

use serde::Serialize;
use virtio_devices::net::backend::DropReason;
use virtio_devices::net::metrics::DropCounters;

/// Frames that took a copy through a bounce buffer, and their payload bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CopyFallback {
    pub frames: u64,
    pub bytes: u64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ShimMetrics {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// RX packets the NIC wrote straight into guest buffers.
    pub rx_zero_copy: u64,
    /// RX packets that went through a bounce buffer and a copy.
    pub rx_copy_fallback: CopyFallback,
    /// RX frames delivered over several guest buffers (jumbo frames,
    /// `num_buffers` > 1), and the buffers they took.
    pub rx_multi_buffer_frames: u64,
    pub rx_multi_buffer_buffers: u64,
    /// Bytes the VMM moved inside guest buffers: with jumbo frames the NIC
    /// writes every buffer at its start, so a frame's first buffer (at most
    /// 1 KiB) is moved up by the 12-byte virtio-net header (a copy, also in
    /// `vmm_copied_bytes`); its other buffers are not touched.
    pub rx_shifted_bytes: u64,
    /// Reaping passes that ended in the middle of a frame: the NIC had not
    /// yet written its last part, so the parts reaped so far wait for the
    /// next pass (the NIC writes a frame one descriptor at a time).
    pub rx_parts_carried: u64,
    /// RX frames whose TCP/UDP checksum the NIC validated, delivered with
    /// VIRTIO_NET_HDR_F_DATA_VALID (GUEST_CSUM negotiated).
    pub rx_csum_valid: u64,
    /// TX packets the NIC read straight from guest buffers.
    pub tx_zero_copy: u64,
    /// TX packets copied into a bounce buffer (too many segments).
    pub tx_copy_fallback: CopyFallback,
    /// Header bytes copied out of guest TX frames: the Ethernet header for
    /// the wire policy (14 per frame: checked and sent from the VMM's
    /// copy), and for a TSO frame its whole Ethernet + IP + TCP header
    /// (prepared for the NIC in the VMM's copy, see `shim::tx_offload`).
    pub tx_header_bytes: u64,
    /// TX frames whose TCP/UDP checksum the NIC inserted (context
    /// descriptor, zero-copy).
    pub tx_csum_offload: u64,
    /// TX frames whose checksum the shim finished in software, in a bounce
    /// buffer (a layout the NIC has no context for); also counted in
    /// `tx_copy_fallback`.
    pub tx_sw_csum: u64,
    /// TSO frames the NIC segmented (each up to 64 KiB), and the segments
    /// it was asked to make of them.
    pub tx_tso_frames: u64,
    pub tx_tso_segments: u64,
    /// Bytes the VMM copied, every way: both copy fallbacks and the TX
    /// header copies (`tx_header_bytes`); the zero-copy path copies nothing
    /// else.
    pub vmm_copied_bytes: u64,
    /// RX completions flagged bad by the NIC (buffer recycled, packet dropped).
    pub rx_nic_errors: u64,
    /// NIC failures (surprise removal, timeouts, unknown completions).
    pub nic_errors: u64,
    /// Times the NIC broke an invariant (a completion longer than it may
    /// write): each one fails the NIC for good.
    pub nic_invariant_breaks: u64,
    /// Buffers the NIC held when it failed without proof that its DMA
    /// stopped: never handed back to the guest (see `DmaNotStopped`).
    pub dma_held_buffers: u64,
    /// Device resets that stopped the NIC's queues before the guest's
    /// buffers were forgotten (each one is logged at info level).
    pub quiesces: u64,
    /// Guest RX/TX buffers the NIC still held at those resets.
    pub quiesce_forgotten_buffers: u64,
    pub drops: DropCounters,
}

impl ShimMetrics {
    pub fn drop(&mut self, r: DropReason) {
        self.drops.add(r);
    }

    pub fn drops_of(&self, r: DropReason) -> u64 {
        self.drops.get(r)
    }

    /// A packet of `bytes` payload bytes copied through an RX bounce buffer.
    pub fn rx_copied(&mut self, bytes: u64) {
        self.rx_copy_fallback.frames += 1;
        self.rx_copy_fallback.bytes += bytes;
        self.vmm_copied_bytes += bytes;
    }

    /// `bytes` of a jumbo frame's first buffer moved up by the header.
    #[inline(always)]
    pub fn rx_shifted(&mut self, bytes: u64) {
        self.rx_shifted_bytes += bytes;
        self.vmm_copied_bytes += bytes;
    }

    /// A TX frame's Ethernet header copied (`bytes` bytes).
    #[inline(always)]
    pub fn tx_header_copied(&mut self, bytes: u64) {
        self.tx_header_bytes += bytes;
        self.vmm_copied_bytes += bytes;
    }

    /// A packet of `bytes` payload bytes copied into a TX bounce buffer.
    pub fn tx_copied(&mut self, bytes: u64) {
        self.tx_copy_fallback.frames += 1;
        self.tx_copy_fallback.bytes += bytes;
        self.vmm_copied_bytes += bytes;
    }
}
