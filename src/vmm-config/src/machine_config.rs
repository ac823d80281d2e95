//! `machine-config`: vCPUs and memory.

use serde::{Deserialize, Serialize};

use crate::validate::{Result, ValidationError, MAX_MEM_SIZE_MIB, MAX_VCPUS, MIN_MEM_SIZE_MIB};

/// Firecracker's default vCPU count when machine-config is never set.
pub const DEFAULT_VCPU_COUNT: u32 = 1;
/// Firecracker's default guest memory when machine-config is never set.
pub const DEFAULT_MEM_SIZE_MIB: u64 = 128;

/// `PUT /machine-config`, `GET /machine-config`, `"machine-config"` in a
/// config file, `--vcpus` and `--mem` on the command line.
///
/// `smt`, `track_dirty_pages`, `cpu_template` and `huge_pages` exist so that
/// Firecracker clients sending their defaults keep working; any non-default
/// value is refused because shimvmm does not implement it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u32,
    pub mem_size_mib: u64,
    #[serde(default)]
    pub smt: bool,
    #[serde(default)]
    pub track_dirty_pages: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    /// Reported as `"None"` when unset, as Firecracker does.
    #[serde(default, serialize_with = "huge_pages_or_none", deserialize_with = "none_is_unset")]
    pub huge_pages: Option<String>,
}

fn huge_pages_or_none<S: serde::Serializer>(v: &Option<String>, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(v.as_deref().unwrap_or("None"))
}

/// `"None"` (Firecracker's spelling of "no huge pages") is the same as unset.
fn none_is_unset<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<String>, D::Error> {
    let v: Option<String> = Deserialize::deserialize(d)?;
    Ok(v.filter(|s| s != "None"))
}

impl Default for MachineConfig {
    fn default() -> Self {
        MachineConfig {
            vcpu_count: DEFAULT_VCPU_COUNT,
            mem_size_mib: DEFAULT_MEM_SIZE_MIB,
            smt: false,
            track_dirty_pages: false,
            cpu_template: None,
            huge_pages: None,
        }
    }
}

impl MachineConfig {
    pub fn validate(&self) -> Result {
        if !(1..=MAX_VCPUS).contains(&self.vcpu_count) {
            return Err(ValidationError::new(
                "vcpu_count",
                format!("{} is out of range; expected 1 to {MAX_VCPUS}", self.vcpu_count),
            ));
        }
        if self.mem_size_mib < MIN_MEM_SIZE_MIB {
            return Err(ValidationError::new(
                "mem_size_mib",
                format!("{} MiB is too small; the guest needs at least {MIN_MEM_SIZE_MIB}", self.mem_size_mib),
            ));
        }
        if self.mem_size_mib > MAX_MEM_SIZE_MIB {
            return Err(ValidationError::new(
                "mem_size_mib",
                format!("{} MiB is too large; at most {MAX_MEM_SIZE_MIB} is supported", self.mem_size_mib),
            ));
        }
        if self.smt {
            return Err(ValidationError::new(
                "smt",
                "simultaneous multithreading is not supported; omit it or set false",
            ));
        }
        if self.track_dirty_pages {
            return Err(ValidationError::new(
                "track_dirty_pages",
                "dirty page tracking is not supported; omit it or set false",
            ));
        }
        for (field, value) in [("cpu_template", &self.cpu_template), ("huge_pages", &self.huge_pages)] {
            if let Some(v) = value {
                if v != "None" {
                    return Err(ValidationError::new(
                        field,
                        format!("\"{}\" is not supported; omit it or use \"None\"", v.escape_debug()),
                    ));
                }
            }
        }
        Ok(())
    }
}

/// `PATCH /machine-config`: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfigUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu_count: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mem_size_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smt: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_dirty_pages: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_template: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_pages: Option<String>,
}

impl MachineConfigUpdate {
    /// True when no field is given (Firecracker refuses such a PATCH).
    pub fn is_empty(&self) -> bool {
        *self == MachineConfigUpdate::default()
    }

    /// The configuration that results from applying this update to `base`.
    pub fn apply_to(&self, base: &MachineConfig) -> MachineConfig {
        MachineConfig {
            vcpu_count: self.vcpu_count.unwrap_or(base.vcpu_count),
            mem_size_mib: self.mem_size_mib.unwrap_or(base.mem_size_mib),
            smt: self.smt.unwrap_or(base.smt),
            track_dirty_pages: self.track_dirty_pages.unwrap_or(base.track_dirty_pages),
            cpu_template: self.cpu_template.clone().or_else(|| base.cpu_template.clone()),
            huge_pages: self.huge_pages.clone().or_else(|| base.huge_pages.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_patch() {
        let mc: MachineConfig = serde_json::from_str(r#"{"vcpu_count":2,"mem_size_mib":256}"#).unwrap();
        assert!(!mc.smt && !mc.track_dirty_pages);
        let patched = MachineConfigUpdate { mem_size_mib: Some(512), ..Default::default() }.apply_to(&mc);
        assert_eq!((patched.vcpu_count, patched.mem_size_mib), (2, 512));
        assert_eq!(MachineConfig::default().mem_size_mib, DEFAULT_MEM_SIZE_MIB);
        assert!(MachineConfig::default().validate().is_ok());
    }

    #[test]
    fn ranges_and_unsupported_features() {
        let ok = MachineConfig { vcpu_count: 2, mem_size_mib: 256, ..Default::default() };
        assert!(ok.validate().is_ok());
        let e = MachineConfig { vcpu_count: 0, ..ok.clone() }.validate().unwrap_err();
        assert_eq!(e.to_string(), "vcpu_count: 0 is out of range; expected 1 to 32");
        assert_eq!(MachineConfig { vcpu_count: 33, ..ok.clone() }.validate().unwrap_err().field, "vcpu_count");
        let e = MachineConfig { mem_size_mib: 1, ..ok.clone() }.validate().unwrap_err();
        assert_eq!(e.to_string(), "mem_size_mib: 1 MiB is too small; the guest needs at least 64");
        assert!(MachineConfig { mem_size_mib: MIN_MEM_SIZE_MIB, ..ok.clone() }.validate().is_ok());
        let e = MachineConfig { mem_size_mib: u64::MAX, ..ok.clone() }.validate().unwrap_err();
        assert_eq!(e.field, "mem_size_mib");
        assert!(e.problem.contains("too large"), "{e}");
        assert_eq!(MachineConfig { smt: true, ..ok.clone() }.validate().unwrap_err().field, "smt");
        assert_eq!(
            MachineConfig { track_dirty_pages: true, ..ok.clone() }.validate().unwrap_err().field,
            "track_dirty_pages"
        );
        assert!(MachineConfig { cpu_template: Some("None".into()), ..ok.clone() }.validate().is_ok());
        assert_eq!(
            MachineConfig { cpu_template: Some("T2".into()), ..ok.clone() }.validate().unwrap_err().field,
            "cpu_template"
        );
        assert_eq!(MachineConfig { huge_pages: Some("2M".into()), ..ok }.validate().unwrap_err().field, "huge_pages");
    }
}
