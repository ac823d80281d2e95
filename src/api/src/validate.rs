//! Validation rules for every configuration object.
//!
//! All input is untrusted (API clients, config files): each rule names the
//! field and the problem, so one line tells the user what to fix. Checks
//! that need the host (does the file exist, is the NIC bound to vfio-pci)
//! are the VMM's job at InstanceStart; here everything is structural.

use std::collections::HashSet;
use std::path::Path;

use crate::spec::VmConfig;
use crate::types::{BootSource, Drive, MachineConfig, Metrics, NetworkInterface};

/// Most vCPUs a VM may have.
pub const MAX_VCPUS: u32 = 32;
/// Least guest memory: below this not even a minimal kernel and initrd fit.
pub const MIN_MEM_SIZE_MIB: u64 = 16;
/// Most guest memory (256 GiB): a bound on what an API call can make us mmap.
pub const MAX_MEM_SIZE_MIB: u64 = 256 * 1024;
/// Most drives: each takes a virtio-mmio slot and an interrupt line.
pub const MAX_DRIVES: usize = 16;
/// Most network interfaces, for the same reason.
pub const MAX_NETWORK_INTERFACES: usize = 8;
/// Longest drive or interface id.
pub const MAX_ID_LEN: usize = 64;
/// Longest kernel command line the user may pass (x86 COMMAND_LINE_SIZE).
pub const MAX_BOOT_ARGS_LEN: usize = 2048;
/// Longest host path (Linux PATH_MAX).
pub const MAX_PATH_LEN: usize = 4096;
/// Longest network device name (Linux IFNAMSIZ minus the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// A configuration value that breaks a rule: `field: problem`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct ValidationError {
    /// Where: `vcpu_count`, `drives[1].path_on_host`, ...
    pub field: String,
    /// What is wrong and, where useful, what is expected instead.
    pub problem: String,
}

impl ValidationError {
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        ValidationError { field: field.into(), problem: problem.into() }
    }

    /// Prefix the field with the object it belongs to (`drives[0]`).
    pub fn within(mut self, prefix: &str) -> Self {
        self.field = format!("{prefix}.{}", self.field);
        self
    }
}

type Result<T = ()> = std::result::Result<T, ValidationError>;

/// Drive and interface ids: short, and safe to show in paths and logs.
pub fn check_id(field: &str, id: &str) -> Result {
    if id.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(ValidationError::new(field, format!("is {} bytes long; at most {MAX_ID_LEN} allowed", id.len())));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        return Err(ValidationError::new(
            field,
            format!("\"{}\" may only contain ASCII letters, digits, '_' and '-'", id.escape_debug()),
        ));
    }
    Ok(())
}

/// A host path: present, bounded, and without the NUL byte no syscall accepts.
fn check_path(field: &str, path: &Path) -> Result {
    let bytes = path.as_os_str().as_encoded_bytes();
    if bytes.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if bytes.len() > MAX_PATH_LEN {
        return Err(ValidationError::new(
            field,
            format!("is {} bytes long; at most {MAX_PATH_LEN} allowed", bytes.len()),
        ));
    }
    if bytes.contains(&0) {
        return Err(ValidationError::new(field, "contains a NUL byte"));
    }
    Ok(())
}

impl BootSource {
    pub fn validate(&self) -> Result {
        check_path("kernel_image_path", &self.kernel_image_path)?;
        if let Some(initrd) = &self.initrd_path {
            check_path("initrd_path", initrd)?;
        }
        if let Some(args) = &self.boot_args {
            if args.len() > MAX_BOOT_ARGS_LEN {
                return Err(ValidationError::new(
                    "boot_args",
                    format!("is {} bytes long; at most {MAX_BOOT_ARGS_LEN} allowed", args.len()),
                ));
            }
            if args.chars().any(char::is_control) {
                return Err(ValidationError::new("boot_args", "contains a control character (newline, tab, NUL, ...)"));
            }
        }
        Ok(())
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
        if !(MIN_MEM_SIZE_MIB..=MAX_MEM_SIZE_MIB).contains(&self.mem_size_mib) {
            return Err(ValidationError::new(
                "mem_size_mib",
                format!("{} is out of range; expected {MIN_MEM_SIZE_MIB} to {MAX_MEM_SIZE_MIB}", self.mem_size_mib),
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

impl Drive {
    pub fn validate(&self) -> Result {
        check_id("drive_id", &self.drive_id)?;
        check_path("path_on_host", &self.path_on_host)
    }
}

impl NetworkInterface {
    pub fn validate(&self) -> Result {
        check_id("iface_id", &self.iface_id)?;
        match (&self.host_dev_name, &self.pnic_bdf) {
            (Some(_), Some(_)) => Err(ValidationError::new(
                "host_dev_name",
                "give either host_dev_name (a tap device) or pnic_bdf (a vfio-pci NIC), not both",
            )),
            (None, None) => Err(ValidationError::new(
                "host_dev_name",
                "missing: give host_dev_name (a tap device) or pnic_bdf (a vfio-pci NIC)",
            )),
            (Some(name), None) => check_ifname(name),
            // PciBdf and MacAddr were checked when parsed.
            (None, Some(_)) => Ok(()),
        }
    }
}

/// A Linux network device name as the kernel accepts it (dev_valid_name).
fn check_ifname(name: &str) -> Result {
    const FIELD: &str = "host_dev_name";
    if name.is_empty() {
        return Err(ValidationError::new(FIELD, "must not be empty"));
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err(ValidationError::new(
            FIELD,
            format!("\"{}\" is {} bytes long; Linux allows at most {MAX_IFNAME_LEN}", name.escape_debug(), name.len()),
        ));
    }
    if name == "." || name == ".." || name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(ValidationError::new(
            FIELD,
            format!(
                "\"{}\" is not a valid Linux interface name (no '/', ':', spaces, \".\" or \"..\")",
                name.escape_debug()
            ),
        ));
    }
    Ok(())
}

impl Metrics {
    pub fn validate(&self) -> Result {
        check_path("metrics_path", &self.metrics_path)
    }
}

/// Every object of `cfg` on its own, then the rules that span objects.
pub(crate) fn check_config(cfg: &VmConfig) -> Result {
    if let Some(boot) = &cfg.boot_source {
        boot.validate().map_err(|e| e.within("boot-source"))?;
    }
    cfg.machine_config.validate().map_err(|e| e.within("machine-config"))?;
    if let Some(metrics) = &cfg.metrics {
        metrics.validate().map_err(|e| e.within("metrics"))?;
    }

    if cfg.drives.len() > MAX_DRIVES {
        return Err(ValidationError::new(
            "drives",
            format!("{} drives given; at most {MAX_DRIVES} allowed", cfg.drives.len()),
        ));
    }
    let mut ids = HashSet::new();
    let mut root: Option<&str> = None;
    for (i, drive) in cfg.drives.iter().enumerate() {
        let at = format!("drives[{i}]");
        drive.validate().map_err(|e| e.within(&at))?;
        if !ids.insert(drive.drive_id.as_str()) {
            return Err(ValidationError::new(
                format!("{at}.drive_id"),
                format!("\"{}\" is used by two drives", drive.drive_id),
            ));
        }
        if drive.is_root_device {
            if let Some(other) = root {
                return Err(ValidationError::new(
                    format!("{at}.is_root_device"),
                    format!("drive \"{other}\" is already the root device; only one drive can be"),
                ));
            }
            root = Some(&drive.drive_id);
        }
    }

    if cfg.network_interfaces.len() > MAX_NETWORK_INTERFACES {
        return Err(ValidationError::new(
            "network-interfaces",
            format!("{} interfaces given; at most {MAX_NETWORK_INTERFACES} allowed", cfg.network_interfaces.len()),
        ));
    }
    let (mut ids, mut taps, mut bdfs, mut macs) = (HashSet::new(), HashSet::new(), HashSet::new(), HashSet::new());
    for (i, iface) in cfg.network_interfaces.iter().enumerate() {
        let at = format!("network-interfaces[{i}]");
        iface.validate().map_err(|e| e.within(&at))?;
        if !ids.insert(iface.iface_id.as_str()) {
            return Err(ValidationError::new(
                format!("{at}.iface_id"),
                format!("\"{}\" is used by two interfaces", iface.iface_id),
            ));
        }
        if let Some(tap) = &iface.host_dev_name {
            if !taps.insert(tap.as_str()) {
                return Err(ValidationError::new(
                    format!("{at}.host_dev_name"),
                    format!("tap \"{tap}\" is used by two interfaces"),
                ));
            }
        }
        if let Some(bdf) = iface.pnic_bdf {
            if !bdfs.insert(bdf) {
                return Err(ValidationError::new(
                    format!("{at}.pnic_bdf"),
                    format!("NIC {bdf} is used by two interfaces"),
                ));
            }
        }
        if let Some(mac) = iface.guest_mac {
            if !macs.insert(mac) {
                return Err(ValidationError::new(
                    format!("{at}.guest_mac"),
                    format!("{mac} is used by two interfaces"),
                ));
            }
        }
    }
    Ok(())
}

/// Explain a deserialization failure with the path of the offending field.
pub(crate) fn describe_json_error(err: serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = err.path().to_string();
    let inner = err.into_inner();
    let what = if inner.is_eof() {
        "the JSON ends early (truncated body?)".to_string()
    } else if inner.is_syntax() {
        format!("malformed JSON: {inner}")
    } else {
        inner.to_string()
    };
    if path.is_empty() || path == "." {
        what
    } else {
        format!("{path}: {what}")
    }
}

/// Parse `body` as `T`, naming the field that is wrong when it fails.
pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> std::result::Result<T, String> {
    // serde would also take a struct as an array of its fields; nobody means that.
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => {}
        None => return Err("the JSON ends early (empty body?)".into()),
        Some(_) => return Err("expected a JSON object ({...})".into()),
    }
    let de = &mut serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut *de).map_err(describe_json_error)?;
    // Trailing garbage after the object is as malformed as a bad object.
    de.end().map_err(|e| format!("malformed JSON: {e}"))?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn drive(id: &str, root: bool) -> Drive {
        Drive { drive_id: id.into(), path_on_host: PathBuf::from("/img"), is_root_device: root, is_read_only: false }
    }

    fn tap(id: &str, name: &str) -> NetworkInterface {
        NetworkInterface { iface_id: id.into(), host_dev_name: Some(name.into()), pnic_bdf: None, guest_mac: None }
    }

    #[test]
    fn ids_are_checked() {
        assert!(check_id("drive_id", "rootfs_1-a").is_ok());
        assert_eq!(check_id("drive_id", "").unwrap_err().to_string(), "drive_id: must not be empty");
        assert!(check_id("drive_id", "a/b").unwrap_err().to_string().contains("may only contain"));
        assert!(check_id("iface_id", &"x".repeat(65)).unwrap_err().to_string().contains("at most 64"));
    }

    #[test]
    fn machine_config_ranges_and_unsupported_features() {
        let ok = MachineConfig { vcpu_count: 2, mem_size_mib: 256, ..Default::default() };
        assert!(ok.validate().is_ok());
        let e = MachineConfig { vcpu_count: 0, ..ok.clone() }.validate().unwrap_err();
        assert_eq!(e.field, "vcpu_count");
        assert!(e.problem.contains("out of range"));
        assert_eq!(MachineConfig { vcpu_count: 33, ..ok.clone() }.validate().unwrap_err().field, "vcpu_count");
        assert_eq!(MachineConfig { mem_size_mib: 1, ..ok.clone() }.validate().unwrap_err().field, "mem_size_mib");
        assert_eq!(
            MachineConfig { mem_size_mib: u64::MAX, ..ok.clone() }.validate().unwrap_err().field,
            "mem_size_mib"
        );
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

    #[test]
    fn boot_source_rules() {
        let b =
            BootSource { kernel_image_path: "/k".into(), boot_args: Some("console=ttyS0".into()), initrd_path: None };
        assert!(b.validate().is_ok());
        assert_eq!(
            BootSource { kernel_image_path: "".into(), ..b.clone() }.validate().unwrap_err().field,
            "kernel_image_path"
        );
        assert_eq!(
            BootSource { initrd_path: Some("a\0b".into()), ..b.clone() }.validate().unwrap_err().field,
            "initrd_path"
        );
        assert_eq!(
            BootSource { boot_args: Some("a\nb".into()), ..b.clone() }.validate().unwrap_err().field,
            "boot_args"
        );
        let long = BootSource { boot_args: Some("x".repeat(MAX_BOOT_ARGS_LEN + 1)), ..b };
        assert!(long.validate().unwrap_err().problem.contains("at most 2048"));
    }

    #[test]
    fn interface_needs_exactly_one_backend_and_a_sane_tap_name() {
        assert!(tap("eth0", "tap0").validate().is_ok());
        let mut both = tap("eth0", "tap0");
        both.pnic_bdf = Some("0000:01:00.0".parse().unwrap());
        assert!(both.validate().unwrap_err().problem.contains("not both"));
        let neither = NetworkInterface { host_dev_name: None, ..tap("eth0", "x") };
        assert!(neither.validate().unwrap_err().problem.contains("missing"));
        assert!(tap("eth0", "a-very-long-tapname").validate().unwrap_err().problem.contains("at most 15"));
        for bad in ["..", "a/b", "a b", "a:1"] {
            assert!(tap("eth0", bad).validate().unwrap_err().problem.contains("not a valid"), "{bad}");
        }
    }

    #[test]
    fn config_cross_checks() {
        let mut cfg = VmConfig { drives: vec![drive("a", true), drive("b", false)], ..Default::default() };
        assert!(check_config(&cfg).is_ok());
        cfg.drives.push(drive("c", true));
        let e = check_config(&cfg).unwrap_err();
        assert_eq!(e.field, "drives[2].is_root_device");
        assert!(e.problem.contains("\"a\" is already the root device"));
        cfg.drives = vec![drive("a", false), drive("a", false)];
        assert_eq!(check_config(&cfg).unwrap_err().field, "drives[1].drive_id");
        cfg.drives.clear();

        cfg.network_interfaces = vec![tap("eth0", "tap0"), tap("eth1", "tap0")];
        assert_eq!(check_config(&cfg).unwrap_err().field, "network-interfaces[1].host_dev_name");
        let mut p1 = tap("eth0", "x");
        p1.host_dev_name = None;
        p1.pnic_bdf = Some("01:00.0".parse().unwrap());
        let mut p2 = p1.clone();
        p2.iface_id = "eth1".into();
        cfg.network_interfaces = vec![p1, p2];
        assert_eq!(check_config(&cfg).unwrap_err().field, "network-interfaces[1].pnic_bdf");
        let mut m1 = tap("eth0", "tap0");
        m1.guest_mac = Some("02:00:00:00:00:01".parse().unwrap());
        let mut m2 = tap("eth1", "tap1");
        m2.guest_mac = m1.guest_mac;
        cfg.network_interfaces = vec![m1, m2];
        assert_eq!(check_config(&cfg).unwrap_err().field, "network-interfaces[1].guest_mac");

        cfg.network_interfaces =
            (0..=MAX_NETWORK_INTERFACES).map(|i| tap(&format!("e{i}"), &format!("t{i}"))).collect();
        assert_eq!(check_config(&cfg).unwrap_err().field, "network-interfaces");
    }

    #[test]
    fn json_errors_name_the_field() {
        let e = parse_json::<MachineConfig>(br#"{"vcpu_count":"2","mem_size_mib":128}"#).unwrap_err();
        assert!(e.starts_with("vcpu_count: invalid type: string"), "{e}");
        let e = parse_json::<crate::spec::VmConfig>(
            br#"{"drives":[{"drive_id":"a","path_on_host":"/x","is_root_device":1}]}"#,
        )
        .unwrap_err();
        assert!(e.starts_with("drives[0].is_root_device: invalid type"), "{e}");
        let e = parse_json::<MachineConfig>(br#"{"vcpu_count":2,"#).unwrap_err();
        assert!(e.contains("ends early"), "{e}");
        let e = parse_json::<MachineConfig>(br#"{"vcpu_count":2,"mem_size_mib":128} x"#).unwrap_err();
        assert!(e.contains("malformed JSON"), "{e}");
        let e = parse_json::<MachineConfig>(br#"{"vcpu_count":2,"mem_size_mib":128,"bogus":1}"#).unwrap_err();
        assert!(e.contains("unknown field `bogus`"), "{e}");
        let e = parse_json::<NetworkInterface>(br#"{"iface_id":"e","guest_mac":"nope"}"#).unwrap_err();
        assert!(e.starts_with("guest_mac: \"nope\" is not a MAC address"), "{e}");
    }
}
