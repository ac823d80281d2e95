//! Counters of one virtio-blk device, reported through `VirtioDevice::metrics()`.

use std::collections::HashMap;

use serde::{Serialize, Serializer};

use super::request::Malformed;

/// Serialized as the `VirtioDevice::metrics()` JSON; the field names are the
/// JSON keys.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
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
    #[serde(rename = "errors")]
    pub io_errors: u64,
    /// Writes refused because the disk is read-only (also in `io_errors`).
    pub read_only_refusals: u64,
    /// Requests answered with VIRTIO_BLK_S_UNSUPP.
    pub unsupported: u64,
    /// Rejected descriptor chains, by reason (every reason is listed).
    #[serde(serialize_with = "every_reason")]
    pub malformed: HashMap<Malformed, u64>,
    /// The sum of `malformed`, kept by [`BlockMetrics::count_malformed`].
    malformed_total: u64,
    /// Malformed chains whose status byte could not be written (completed
    /// with length 0, or dropped if even the head index was out of range).
    pub skipped: u64,
    /// Queue kicks that arrived before the driver set DRIVER_OK.
    pub kicks_before_activation: u64,
    /// Passes that stopped at the request budget with requests left (the
    /// device re-kicked itself to yield the event loop).
    pub budget_yields: u64,
    /// The guest broke the queue itself (bad available index, used ring
    /// unwritable): the device stops until the driver resets it.
    pub queue_errors: u64,
    /// Times the rate limiter stopped the queue (a request found a bucket
    /// short and waited in the ring for the limiter's timer).
    pub rate_limiter_throttled: u64,
    /// Throttled periods that ended (the limiter's timer events).
    pub rate_limiter_events: u64,
}

/// `malformed` as a map with every reason, zero counts included.
fn every_reason<S: Serializer>(counts: &HashMap<Malformed, u64>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(Malformed::ALL.iter().map(|r| (r.as_str(), counts.get(r).copied().unwrap_or(0))))
}

impl BlockMetrics {
    pub fn malformed_total(&self) -> u64 {
        self.malformed_total
    }

    pub fn count_malformed(&mut self, reason: Malformed) {
        *self.malformed.entry(reason).or_default() += 1;
        self.malformed_total += 1;
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
        let j = serde_json::to_value(&m).unwrap();
        assert_eq!(j["reads"], 3);
        assert_eq!(j["malformed"]["zero_length"], 2);
        assert_eq!(j["malformed"]["bad_address"], 0);
        assert_eq!(j["malformed_total"], 2);
        assert_eq!(j["malformed"].as_object().unwrap().len(), Malformed::ALL.len());
        // The keys the metrics file has always had.
        let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "budget_yields",
                "errors",
                "flushes",
                "get_ids",
                "kicks_before_activation",
                "malformed",
                "malformed_total",
                "queue_errors",
                "rate_limiter_events",
                "rate_limiter_throttled",
                "read_bytes",
                "read_only_refusals",
                "reads",
                "skipped",
                "unsupported",
                "write_bytes",
                "writes"
            ]
        );
    }
}
