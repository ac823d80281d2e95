//! `metrics`: where the VMM writes its counters.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::validate::{check_path, Result};

/// `PUT /metrics`, `"metrics"` in a config file, `--metrics-path` on the
/// command line: where FlushMetrics (and the VMM's exit) writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

impl Metrics {
    pub fn validate(&self) -> Result {
        check_path("metrics_path", &self.metrics_path)
    }
}
