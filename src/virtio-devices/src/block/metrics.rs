//! Counters of one virtio-blk device, reported through `VirtioDevice::metrics()`.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::request::Malformed;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BlockMetrics {
    /// Completed VIRTIO_BLK_T_IN requests and the bytes they moved.
    pub reads: u64,
    pub read_bytes: u64,
    /// Completed VIRTIO_BLK_T_OUT requests and the bytes they moved.
    pub writes: u64,
    pub write_bytes: u64,
    pub flushes: u64,
    pub get_ids: u64,
    /// Requests answered with VIRTIO_BLK_S_IOERR (malformed ones included).
    pub io_errors: u64,
    /// Writes refused because the disk is read-only (also in `io_errors`).
    pub read_only_refusals: u64,
    /// Requests answered with VIRTIO_BLK_S_UNSUPP.
    pub unsupported: u64,
    /// Rejected descriptor chains, by reason.
    pub malformed: HashMap<Malformed, u64>,
    /// Malformed chains whose status byte could not be written (completed
    /// with length 0, or dropped if even the head index was out of range).
    pub skipped: u64,
    /// Queue kicks that arrived before the driver set DRIVER_OK.
    pub kicks_before_activation: u64,
    /// The guest broke the queue itself (bad available index, used ring
    /// unwritable): the device stops until the driver resets it.
    pub queue_errors: u64,
}

impl BlockMetrics {
    pub fn malformed_total(&self) -> u64 {
        self.malformed.values().sum()
    }

    pub fn count_malformed(&mut self, reason: Malformed) {
        *self.malformed.entry(reason).or_default() += 1;
    }

    pub fn to_json(&self) -> Value {
        let malformed: serde_json::Map<String, Value> = Malformed::ALL
            .iter()
            .map(|r| (r.as_str().to_string(), json!(self.malformed.get(r).copied().unwrap_or(0))))
            .collect();
        json!({
            "reads": self.reads,
            "read_bytes": self.read_bytes,
            "writes": self.writes,
            "write_bytes": self.write_bytes,
            "flushes": self.flushes,
            "get_ids": self.get_ids,
            "errors": self.io_errors,
            "read_only_refusals": self.read_only_refusals,
            "unsupported": self.unsupported,
            "malformed_total": self.malformed_total(),
            "malformed": malformed,
            "skipped": self.skipped,
            "kicks_before_activation": self.kicks_before_activation,
            "queue_errors": self.queue_errors,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lists_every_malformed_reason() {
        let mut m = BlockMetrics::default();
        m.count_malformed(Malformed::ZeroLength);
        m.count_malformed(Malformed::ZeroLength);
        m.reads = 3;
        let j = m.to_json();
        assert_eq!(j["reads"], 3);
        assert_eq!(j["malformed"]["zero_length"], 2);
        assert_eq!(j["malformed"]["bad_address"], 0);
        assert_eq!(j["malformed_total"], 2);
        assert_eq!(j["malformed"].as_object().unwrap().len(), Malformed::ALL.len());
    }
}
