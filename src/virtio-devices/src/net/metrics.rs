//! Per-device virtio-net counters. Plain integers: the device lives behind a
//! Mutex and only the event-loop thread (or a reader holding the lock) touches
//! them.

use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
#[cfg(test)]
use serde_json::json;
use serde_json::Value;

use super::backend::DropReason;

/// Drops counted per [`DropReason`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DropCounters([u64; DropReason::ALL.len()]);

impl DropCounters {
    pub fn add(&mut self, reason: DropReason) {
        self.0[Self::slot(reason)] += 1;
    }

    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[Self::slot(reason)]
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    fn slot(reason: DropReason) -> usize {
        // ALL holds every variant, so the position always exists.
        DropReason::ALL.iter().position(|r| *r == reason).unwrap_or(0)
    }
}

/// `{ "bad_address": n, ... }` with every reason present: the one shape of
/// drop counters in the metrics (device, tap, shim).
impl Serialize for DropCounters {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(DropReason::ALL.len()))?;
        for r in DropReason::ALL {
            m.serialize_entry(r.as_str(), &self.get(r))?;
        }
        m.end()
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct NetMetrics {
    /// Frames and bytes (without the 12-byte header) handed to the guest.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Used-ring entries on the RX queue (> rx_packets with MRG_RXBUF).
    pub rx_buffers_used: u64,
    /// Frames and bytes (without header) the guest sent that the backend took.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Chains rejected by the device (validation, backend refusals).
    pub rx_drops: DropCounters,
    pub tx_drops: DropCounters,
    pub link_down_events: u64,
    pub rx_queue_kicks: u64,
    pub tx_queue_kicks: u64,
    pub backend_events: u64,
    /// Used-buffer interrupts raised / skipped thanks to EVENT_IDX.
    pub used_irqs: u64,
    pub used_irqs_suppressed: u64,
    pub config_irqs: u64,
    /// Times the backend stalled for lack of RX buffers.
    pub rx_stalls: u64,
    /// The guest made available a head the backend still holds (ignored).
    pub duplicate_heads: u64,
    /// RX passes the backend ran on the lent queue (`NetBackend::rx`).
    pub rx_passes: u64,
    /// The backend reported a head or length it was not given (ignored).
    pub backend_bogus_completions: u64,
    /// Driver writes to the (read-only) config space.
    pub config_writes_ignored: u64,
    /// Guest frames for the metadata service, taken on TX before the
    /// backend (never sent; not in tx_packets).
    pub mmds_frames_intercepted: u64,
    /// Frames of the metadata service written into guest RX buffers (also
    /// in rx_packets), and their bytes with the virtio-net header: a
    /// control-plane copy, apart from the backend's `vmm_copied_bytes`.
    pub mmds_frames_injected: u64,
    pub mmds_copied_bytes: u64,
    /// Metadata-service frames dropped: GSO or oversized from the guest,
    /// too large for the guest's buffer the other way.
    pub mmds_frames_dropped: u64,
}

impl NetMetrics {
    /// The JSON document for `VirtioDevice::metrics()`: these counters,
    /// the backend's under "backend", and at the top `vmm_copied_bytes`,
    /// the payload bytes the VMM copied, which only a backend does (the
    /// device never copies payload): the backend's own counter of that name.
    pub fn to_json(&self, id: &str, link_up: bool, backend: Value) -> Value {
        #[derive(Serialize)]
        struct Doc<'a> {
            id: &'a str,
            link_up: bool,
            #[serde(flatten)]
            counters: &'a NetMetrics,
            vmm_copied_bytes: u64,
            backend: Value,
        }
        let vmm_copied_bytes = backend.get("vmm_copied_bytes").and_then(Value::as_u64).unwrap_or(0);
        let doc = Doc { id, link_up, counters: self, vmm_copied_bytes, backend };
        // Plain integers, strings and a JSON value: cannot fail.
        serde_json::to_value(doc).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_by_reason_and_merge() {
        let mut m = NetMetrics::default();
        m.rx_drops.add(DropReason::BadAddress);
        m.rx_drops.add(DropReason::BadAddress);
        m.tx_drops.add(DropReason::ShortHeader);
        assert_eq!(m.rx_drops.total(), 2);
        let v = m.to_json("net0", true, json!({"vmm_copied_bytes": 5, "kind": "x"}));
        assert_eq!(v["rx_drops"]["bad_address"], 2);
        assert_eq!(v["rx_drops"]["frame_too_long"], 0);
        assert_eq!(v["tx_drops"]["short_header"], 1);
        assert_eq!(v["vmm_copied_bytes"], 5);
        assert_eq!(v["backend"]["kind"], "x");
        assert_eq!(v["id"], "net0");
    }
}
