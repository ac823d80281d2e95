//! Metrics in Firecracker's format: one JSON object per line, appended to
//! the `--metrics-path` / `PUT /metrics` file or FIFO every 60 s and on
//! FlushMetrics (and once more at exit).
//!
//! Firecracker's keys where shimvmm has a counterpart (`utc_timestamp_ms`,
//! `block`, `net` and the per-device `block_<id>` / `net_<id>`, `vsock`, with
//! Firecracker's counter names), each counter being, as in Firecracker, the
//! change since the previous line; shimvmm's own cumulative counters beside
//! them under `shimvmm` (what `GET /metrics` serves).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

/// How often metrics are written without a FlushMetrics.
pub const PERIOD: Duration = Duration::from_secs(60);

/// Firecracker block counter <- shimvmm block counter.
const BLOCK_KEYS: &[(&str, &str)] = &[
    ("read_bytes", "read_bytes"),
    ("write_bytes", "write_bytes"),
    ("read_count", "reads"),
    ("write_count", "writes"),
    ("flush_count", "flushes"),
    ("invalid_reqs_count", "malformed_total"),
    ("execute_fails", "errors"),
    ("rate_limiter_throttled_events", "rate_limiter_throttled"),
    ("rate_limiter_event_count", "rate_limiter_events"),
];

/// Firecracker net counter <- shimvmm net counter.
const NET_KEYS: &[(&str, &str)] = &[
    ("rx_bytes_count", "rx_bytes"),
    ("rx_packets_count", "rx_packets"),
    ("tx_bytes_count", "tx_bytes"),
    ("tx_packets_count", "tx_packets"),
    ("rx_queue_event_count", "rx_queue_kicks"),
    ("tx_queue_event_count", "tx_queue_kicks"),
    ("rx_rate_limiter_throttled", "rx_rate_limiter_throttled"),
    ("tx_rate_limiter_throttled", "tx_rate_limiter_throttled"),
    ("rx_event_rate_limiter_count", "rx_rate_limiter_events"),
    ("tx_rate_limiter_event_count", "tx_rate_limiter_events"),
];

/// Firecracker's `vsock` group (one device, no per-device key): shimvmm's
/// vsock counters already carry these names.
const VSOCK_KEYS: &[&str] = &[
    "rx_queue_event_count",
    "tx_queue_event_count",
    "rx_bytes_count",
    "tx_bytes_count",
    "rx_packets_count",
    "tx_packets_count",
    "conns_added",
    "conns_killed",
    "conns_removed",
    "tx_write_fails",
    "rx_read_fails",
];

/// An open metrics destination and the totals of the last line written.
pub struct MetricsSink {
    path: PathBuf,
    file: File,
    last: BTreeMap<String, u64>,
}

impl MetricsSink {
    pub fn open(path: &Path) -> std::io::Result<MetricsSink> {
        let file = crate::logger::open_sink(path)?;
        Ok(MetricsSink { path: path.to_owned(), file, last: BTreeMap::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append one line made from shimvmm's counters (`VmmHandle::metrics`).
    pub fn write(&mut self, shimvmm: &Value) -> std::io::Result<()> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut line = fc_line(now.as_millis() as u64, shimvmm, &mut self.last).to_string();
        line.push('\n');
        crate::logger::write_line(&self.file, line.as_bytes())
    }
}

/// Counter `key` of a device's shimvmm metrics, 0 when absent.
fn counter(dev: &Value, key: &str) -> u64 {
    dev.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// The Firecracker-format object for one flush; `last` holds the totals of
/// the previous one so each counter is the change since then.
pub fn fc_line(utc_ms: u64, shimvmm: &Value, last: &mut BTreeMap<String, u64>) -> Value {
    let mut out = Map::new();
    out.insert("utc_timestamp_ms".into(), json!(utc_ms));
    for (kind, keys) in [("block", BLOCK_KEYS), ("net", NET_KEYS)] {
        let mut sum: BTreeMap<&str, u64> = keys.iter().map(|(fc, _)| (*fc, 0)).collect();
        let devices = shimvmm.get(kind).and_then(Value::as_object).cloned().unwrap_or_default();
        for (id, dev) in &devices {
            let mut per = Map::new();
            for (fc, ours) in keys {
                let total = counter(dev, ours);
                let prev = last.insert(format!("{kind}_{id}.{fc}"), total).unwrap_or(0);
                let delta = total.saturating_sub(prev);
                per.insert((*fc).into(), json!(delta));
                *sum.entry(fc).or_default() += delta;
            }
            out.insert(format!("{kind}_{id}"), Value::Object(per));
        }
        out.insert(kind.into(), json!(sum));
    }
    if let Some(dev) = shimvmm.pointer("/vsock/vsock") {
        let mut group = Map::new();
        for key in VSOCK_KEYS {
            let total = counter(dev, key);
            let prev = last.insert(format!("vsock.{key}"), total).unwrap_or(0);
            group.insert((*key).into(), json!(total.saturating_sub(prev)));
        }
        out.insert("vsock".into(), Value::Object(group));
    }
    out.insert("shimvmm".into(), shimvmm.clone());
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_firecracker_names_as_deltas_and_shimvmms_totals() {
        let mut last = BTreeMap::new();
        let m = json!({"block": {"rootfs": {"reads": 10, "read_bytes": 4096}}, "net": {"eth0": {"rx_packets": 3}}});
        let l = fc_line(1, &m, &mut last);
        assert_eq!(l["utc_timestamp_ms"], 1);
        assert_eq!(l["block"]["read_count"], 10);
        assert_eq!(l["block_rootfs"]["read_bytes"], 4096);
        assert_eq!(l["net"]["rx_packets_count"], 3);
        assert_eq!(l["net_eth0"]["tx_bytes_count"], 0);
        assert_eq!(l["shimvmm"], m);
        let m2 = json!({"block": {"rootfs": {"reads": 15, "read_bytes": 4096}}, "net": {"eth0": {"rx_packets": 3}}});
        let l = fc_line(2, &m2, &mut last);
        assert_eq!((l["block"]["read_count"].as_u64(), l["block"]["read_bytes"].as_u64()), (Some(5), Some(0)));
        // The vsock device: Firecracker's one `vsock` group, as deltas.
        let v = json!({"vsock": {"vsock": {"rx_bytes_count": 100, "conns_added": 1, "malformed_packets": 2}}});
        let mut last = BTreeMap::new();
        let l = fc_line(4, &v, &mut last);
        assert_eq!((l["vsock"]["rx_bytes_count"].as_u64(), l["vsock"]["conns_added"].as_u64()), (Some(100), Some(1)));
        assert!(l["vsock"].get("malformed_packets").is_none(), "shimvmm's own names stay under shimvmm");
        let v = json!({"vsock": {"vsock": {"rx_bytes_count": 150, "conns_added": 1}}});
        assert_eq!(fc_line(5, &v, &mut last)["vsock"]["rx_bytes_count"], 50);
        // No devices: the kinds are still there, all zero.
        let l = fc_line(3, &json!({}), &mut BTreeMap::new());
        assert_eq!(l["net"]["tx_packets_count"], 0);
        assert!(!l.to_string().contains('\n'));
    }

    #[test]
    fn writes_append_one_line_per_flush() {
        let dir = std::env::temp_dir().join(format!("shimvmm-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("m");
        std::fs::write(&p, b"").unwrap();
        let mut s = MetricsSink::open(&p).unwrap();
        s.write(&json!({})).unwrap();
        s.write(&json!({})).unwrap();
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.lines().count(), 2);
        for l in text.lines() {
            assert!(serde_json::from_str::<Value>(l).unwrap()["utc_timestamp_ms"].is_u64());
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
