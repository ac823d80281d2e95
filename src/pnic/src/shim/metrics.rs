//! Counters of the shim backend (merged into the virtio-net device's metrics).

use std::collections::BTreeMap;

use virtio_devices::net::backend::DropReason;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ShimMetrics {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// RX frames the NIC wrote straight into guest buffers.
    pub rx_zero_copy: u64,
    /// RX frames that went through a bounce buffer and a copy.
    pub rx_copy_fallback_frames: u64,
    pub rx_copy_fallback_bytes: u64,
    /// TX frames the NIC read straight from guest buffers.
    pub tx_zero_copy: u64,
    /// TX frames copied into a bounce buffer (too many segments).
    pub tx_copy_fallback_frames: u64,
    pub tx_copy_fallback_bytes: u64,
    /// RX completions flagged bad by the NIC (buffer recycled, frame dropped).
    pub rx_nic_errors: u64,
    /// NIC failures (surprise removal, timeouts, unknown completions).
    pub nic_errors: u64,
    /// Device resets that stopped the NIC's queues before the guest's
    /// buffers were forgotten (each one is logged at info level).
    pub quiesces: u64,
    /// Guest RX/TX buffers the NIC still held at those resets.
    pub quiesce_forgotten_buffers: u64,
    pub drops: BTreeMap<&'static str, u64>,
}

impl ShimMetrics {
    pub fn drop(&mut self, r: DropReason) {
        *self.drops.entry(r.as_str()).or_default() += 1;
    }

    pub fn drops_of(&self, r: DropReason) -> u64 {
        self.drops.get(r.as_str()).copied().unwrap_or(0)
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "rx_packets": self.rx_packets,
            "rx_bytes": self.rx_bytes,
            "tx_packets": self.tx_packets,
            "tx_bytes": self.tx_bytes,
            "rx_zero_copy": self.rx_zero_copy,
            "rx_copy_fallback": {
                "frames": self.rx_copy_fallback_frames,
                "bytes": self.rx_copy_fallback_bytes,
            },
            "tx_zero_copy": self.tx_zero_copy,
            "tx_copy_fallback": {
                "frames": self.tx_copy_fallback_frames,
                "bytes": self.tx_copy_fallback_bytes,
            },
            "rx_nic_errors": self.rx_nic_errors,
            "nic_errors": self.nic_errors,
            "quiesces": self.quiesces,
            "quiesce_forgotten_buffers": self.quiesce_forgotten_buffers,
            "drops": self.drops,
        })
    }
}
