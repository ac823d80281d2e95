//! Command-line arguments and their translation into a [`VmSpec`].
//!
//! The command line fills in the same configuration objects as the API and
//! the config file, and the same rules (`VmConfig::validate`) check them;
//! only the names in an error are the command line's (`--disk`, `root`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Largest `--metadata` file read (its JSON, whitespace included; the
/// document's own limit is `--mmds-size-limit`).
const MAX_METADATA_FILE_BYTES: u64 = 16 * 1024 * 1024;

use clap::Parser;
use vmm::config::Vsock;
use vmm::config::{
    BdfError, BootSource, Drive, LogLevel, Logger, MacAddr, MacError, MachineConfig, Metrics, NetworkInterface, PciBdf,
    PnicDma, ValidationError, VmConfig, VmSpec,
};

/// Firecracker's instance id when none is given.
pub const DEFAULT_INSTANCE_ID: &str = "anonymous-instance";
/// Firecracker's API socket when neither `--api-sock` nor `--no-api` is given.
pub const DEFAULT_API_SOCK: &str = "/run/firecracker.socket";
/// Longest `--id` (Firecracker's limit).
pub const MAX_INSTANCE_ID_LEN: usize = 64;

/// The command line: shimvmm's own options, and Firecracker's (v1.12) so
/// that shimvmm runs where an orchestrator expects `firecracker`.
#[derive(Parser, Debug)]
#[command(
    name = "shimvmm",
    disable_version_flag = true,
    about = "A lightweight KVM VMM with a zero-copy physical-NIC network path; \
             its API and command line are Firecracker's (v1.12)"
)]
pub struct Args {
    /// Guest kernel: a bzImage or an ELF vmlinux. With it the VM boots at once.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line [default: console=ttyS0 reboot=k panic=-1].
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs (1-32) [default: 1].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub vcpus: Option<u32>,
    /// Guest memory in MiB [default: 128].
    #[arg(long, value_name = "MiB")]
    pub mem: Option<u64>,
    /// A virtio-blk disk: path=PATH[,readonly=on][,root=on][,id=NAME]. Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<String>,
    /// A virtio-net NIC: tap=NAME[,mac=MAC][,mtu=N][,id=NAME] or
    /// vfio=BDF[,mac=MAC][,mtu=N][,id=NAME][,dma=ram|strict] (mtu 68..=9000, default 1500;
    /// dma=strict: a guest buffer is in the IOMMU only while the NIC owns it). Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub net: Vec<String>,
    /// A virtio-vsock device: cid=N,uds=PATH (host processes connect to PATH and send "CONNECT <port>\n";
    /// guest connections to host port P reach PATH_P).
    #[arg(long, value_name = "SPEC")]
    pub vsock: Option<String>,
    /// Write metrics to this file or FIFO, one Firecracker-format JSON line every 60 s, on FlushMetrics and
    /// at exit (a missing file is created).
    #[arg(long, value_name = "FILE")]
    pub metrics_path: Option<PathBuf>,
    /// error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    pub log_level: log::LevelFilter,
    /// Serve the REST API on this Unix socket [Firecracker's default /run/firecracker.socket with --id or
    /// --config-file].
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Boot from a JSON file with the API's objects (boot-source, machine-config, drives, network-interfaces,
    /// logger, metrics).
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Run without an API socket.
    #[arg(long)]
    pub no_api: bool,
    /// The microVM's id, shown by GET / and in every log line (letters, digits and '-', at most 64)
    /// [default: anonymous-instance].
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Firecracker's boot timer device; accepted and ignored (shimvmm logs no boot time yet).
    #[arg(long)]
    pub boot_timer: bool,
    /// Firecracker's (v1.13+) switch to virtio over PCI. shimvmm has no virtio-pci transport: accepted with a
    /// warning, the devices stay on virtio-mmio (the guest learns of them from the DSDT, as always).
    #[arg(long)]
    pub enable_pci: bool,
    /// Send the log, in Firecracker's line format, to this file or FIFO (created if missing).
    #[arg(long, value_name = "PATH")]
    pub log_path: Option<PathBuf>,
    /// Log level, as Firecracker names it: Off, Error, Warning, Info, Debug or Trace (overrides --log-level).
    #[arg(long, value_name = "LEVEL")]
    pub level: Option<LogLevel>,
    /// Put the level in each log line.
    #[arg(long)]
    pub show_level: bool,
    /// Put the source file and line in each log line.
    #[arg(long)]
    pub show_log_origin: bool,
    /// Only log from modules whose path starts with this.
    #[arg(long, value_name = "MODULE")]
    pub module: Option<String>,
    /// The MMDS document to start with (a JSON file).
    #[arg(long, value_name = "FILE")]
    pub metadata: Option<PathBuf>,
    /// Largest API request body in bytes [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub http_api_max_payload_size: Option<usize>,
    /// Largest MMDS document in bytes of JSON [default: 51200].
    #[arg(long, value_name = "BYTES")]
    pub mmds_size_limit: Option<usize>,
    /// Run without seccomp filters (they are on by default; see docs/security.md).
    #[arg(long)]
    pub no_seccomp: bool,
    /// Process start time, passed by Firecracker's jailer; accepted and ignored.
    #[arg(long, value_name = "US", hide = true)]
    pub start_time_us: Option<u64>,
    /// Process start CPU time, passed by Firecracker's jailer; accepted and ignored.
    #[arg(long, value_name = "US", hide = true)]
    pub start_time_cpu_us: Option<u64>,
    /// Parent process CPU time, passed by Firecracker's jailer; accepted and ignored.
    #[arg(long, value_name = "US", hide = true)]
    pub parent_cpu_time_us: Option<u64>,
    /// Print the version in Firecracker's format (first line `Firecracker v<API version>`) and exit.
    #[arg(long)]
    pub version: bool,
    /// Accept host block devices as disk images (default: regular files only).
    #[arg(long)]
    pub allow_block_devices: bool,
    /// Test hook: install the seccomp filter of a thread kind (boot, vmm, api,
    /// vcpu) on a new thread, make a syscall none of them allows (getppid), and
    /// report what happened. The process should die naming the syscall.
    #[arg(long, value_name = "KIND", hide = true)]
    pub seccomp_self_test: Option<vmm::seccomp::ThreadKind>,
}

/// What is wrong with one `--disk` or `--net` value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SpecError {
    #[error("expected key=value, got {0:?}")]
    NotKeyValue(String),
    #[error("unknown key {key:?} (known: {known})")]
    UnknownKey { key: String, known: &'static str },
    #[error("{key} must be on or off, got {value:?}")]
    NotOnOff { key: String, value: String },
    #[error("{0} is given twice")]
    Repeated(String),
    #[error("path=PATH is required")]
    PathRequired,
    #[error(transparent)]
    Mac(#[from] MacError),
    #[error(transparent)]
    Bdf(#[from] BdfError),
    #[error("dma: {0}")]
    Dma(String),
    #[error("mtu must be a number of bytes (68..=9000), got {0:?}")]
    Mtu(String),
    /// A configuration rule, with the field named as the command line does.
    #[error(transparent)]
    Invalid(ValidationError),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CliError {
    #[error("--disk {spec:?}: {source}")]
    Disk { spec: String, source: SpecError },
    #[error("--net {spec:?}: {source}")]
    Net { spec: String, source: SpecError },
    #[error("--vsock {spec:?}: {source}")]
    Vsock { spec: String, source: SpecError },
    /// A configuration rule broken by one of the other options.
    #[error(transparent)]
    Invalid(ValidationError),
}

/// `--disk` keys by the [`Drive`] field they set.
const DISK_KEYS: &[(&str, &str)] =
    &[("drive_id", "id"), ("path_on_host", "path"), ("is_root_device", "root"), ("is_read_only", "readonly")];
/// `--net` keys by the [`NetworkInterface`] field they set.
const NET_KEYS: &[(&str, &str)] = &[
    ("iface_id", "id"),
    ("host_dev_name", "tap"),
    ("pnic_bdf", "vfio"),
    ("guest_mac", "mac"),
    ("pnic_dma", "dma"),
    ("mtu", "mtu"),
];
/// Options by the configuration field they set.
const OPTIONS: &[(&str, &str)] = &[
    ("boot-source.kernel_image_path", "--kernel"),
    ("boot-source.initrd_path", "--initrd"),
    ("boot-source.boot_args", "--cmdline"),
    ("machine-config.vcpu_count", "--vcpus"),
    ("machine-config.mem_size_mib", "--mem"),
    ("metrics.metrics_path", "--metrics-path"),
    ("drives", "--disk"),
    ("network-interfaces", "--net"),
];

/// `text` with every whole word found in `names` (config name, CLI name)
/// renamed, except inside double quotes (the user's own values).
fn rename_words(text: &str, names: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let (mut quoted, mut escaped) = (false, false);
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    for c in text.chars().chain(std::iter::once('\0')) {
        if is_word(c) {
            word.push(c);
            escaped = false;
            continue;
        }
        let renamed = names.iter().find(|(from, _)| !quoted && *from == word).map(|(_, to)| *to);
        out.push_str(renamed.unwrap_or(&word));
        word.clear();
        quoted ^= c == '"' && !escaped;
        escaped = c == '\\' && !escaped;
        if c != '\0' {
            out.push(c);
        }
    }
    out
}

/// A rule broken inside one `--disk`/`--net` value, in that value's words.
fn in_spec_words(err: ValidationError, keys: &[(&str, &str)]) -> SpecError {
    SpecError::Invalid(ValidationError::new(rename_words(&err.field, keys), rename_words(&err.problem, keys)))
}

/// Splits `a=b,c=d` into pairs; a bare word is an error.
fn pairs(spec: &str) -> Result<Vec<(&str, &str)>, SpecError> {
    spec.split(',').map(|kv| kv.split_once('=').ok_or_else(|| SpecError::NotKeyValue(kv.to_string()))).collect()
}

fn on_off(key: &str, value: &str) -> Result<bool, SpecError> {
    match value {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(SpecError::NotOnOff { key: key.to_string(), value: value.to_string() }),
    }
}

/// Sets `slot` once; a second `key=` is an error.
fn set_once<T>(slot: &mut Option<T>, key: &str, value: T) -> Result<(), SpecError> {
    match slot.replace(value) {
        Some(_) => Err(SpecError::Repeated(format!("{key}="))),
        None => Ok(()),
    }
}

fn parse_disk_keys(spec: &str, index: usize) -> Result<Drive, SpecError> {
    let (mut id, mut path, mut read_only, mut root) = (None, None, None, None);
    for (k, v) in pairs(spec)? {
        match k {
            "path" => set_once(&mut path, k, PathBuf::from(v))?,
            "readonly" | "ro" => set_once(&mut read_only, k, on_off(k, v)?)?,
            "root" => set_once(&mut root, k, on_off(k, v)?)?,
            "id" => set_once(&mut id, k, v.to_string())?,
            _ => return Err(SpecError::UnknownKey { key: k.to_string(), known: "path, readonly, root, id" }),
        }
    }
    Ok(Drive {
        drive_id: id.unwrap_or_else(|| format!("disk{index}")),
        path_on_host: path.ok_or(SpecError::PathRequired)?,
        is_root_device: root.unwrap_or(false),
        is_read_only: read_only.unwrap_or(false),
        ..Default::default()
    })
}

fn parse_net_keys(spec: &str, index: usize) -> Result<NetworkInterface, SpecError> {
    let (mut id, mut tap, mut bdf, mut mac, mut dma, mut mtu) = (None, None, None, None, None, None);
    for (k, v) in pairs(spec)? {
        match k {
            "tap" => set_once(&mut tap, k, v.to_string())?,
            "vfio" => set_once(&mut bdf, k, v.parse::<PciBdf>()?)?,
            "mac" => set_once(&mut mac, k, v.parse::<MacAddr>()?)?,
            "id" => set_once(&mut id, k, v.to_string())?,
            "dma" => set_once(&mut dma, k, v.parse::<PnicDma>().map_err(SpecError::Dma)?)?,
            "mtu" => set_once(&mut mtu, k, v.parse::<u16>().map_err(|_| SpecError::Mtu(v.to_string()))?)?,
            _ => return Err(SpecError::UnknownKey { key: k.to_string(), known: "tap, vfio, mac, mtu, id, dma" }),
        }
    }
    Ok(NetworkInterface {
        iface_id: id.unwrap_or_else(|| format!("net{index}")),
        host_dev_name: tap,
        pnic_bdf: bdf,
        pnic_dma: dma,
        guest_mac: mac,
        mtu,
        ..Default::default()
    })
}

/// `--vsock` keys by the [`Vsock`] field they set.
const VSOCK_KEYS: &[(&str, &str)] = &[("guest_cid", "cid"), ("uds_path", "uds")];

fn parse_vsock_keys(spec: &str) -> Result<Vsock, SpecError> {
    let (mut cid, mut uds) = (None, None);
    for (k, v) in pairs(spec)? {
        match k {
            "cid" => {
                let n = v.parse::<u32>().map_err(|_| {
                    SpecError::Invalid(ValidationError::new(
                        "cid",
                        format!("{v:?} is not a number from 3 to 4294967294"),
                    ))
                })?;
                set_once(&mut cid, k, n)?
            }
            "uds" => set_once(&mut uds, k, PathBuf::from(v))?,
            _ => return Err(SpecError::UnknownKey { key: k.to_string(), known: "cid, uds" }),
        }
    }
    let vsock = Vsock {
        vsock_id: None,
        guest_cid: cid.ok_or_else(|| SpecError::Invalid(ValidationError::new("cid", "cid=N is required")))?,
        uds_path: uds.ok_or_else(|| SpecError::Invalid(ValidationError::new("uds", "uds=PATH is required")))?,
    };
    vsock.validate().map_err(|e| in_spec_words(e, VSOCK_KEYS))?;
    Ok(vsock)
}

/// The `--vsock` value as a [`Vsock`].
pub fn parse_vsock(spec: &str) -> Result<Vsock, CliError> {
    parse_vsock_keys(spec).map_err(|source| CliError::Vsock { spec: spec.to_string(), source })
}

/// The `index`-th `--disk` value as a [`Drive`] (checked with the others, by
/// [`Args::vm_spec`]).
pub fn parse_disk(spec: &str, index: usize) -> Result<Drive, CliError> {
    parse_disk_keys(spec, index).map_err(|source| CliError::Disk { spec: spec.to_string(), source })
}

/// The `index`-th `--net` value as a [`NetworkInterface`] (checked with the
/// others, by [`Args::vm_spec`]).
pub fn parse_net(spec: &str, index: usize) -> Result<NetworkInterface, CliError> {
    parse_net_keys(spec, index).map_err(|source| CliError::Net { spec: spec.to_string(), source })
}

/// `--version`: Firecracker's layout, which orchestrators parse (Kata takes
/// the second word of the first line as a semantic version and requires at
/// least 0.21.1), then what this binary really is.
pub fn version_text() -> String {
    format!(
        "Firecracker v{}\n\nshimvmm {}: implements the Firecracker v{} API and command line\n",
        api::FIRECRACKER_API_VERSION,
        api::VMM_VERSION,
        api::FIRECRACKER_API_VERSION
    )
}

impl Args {
    /// The instance id (`--id`), checked as Firecracker checks it.
    pub fn instance_id(&self) -> Result<String, String> {
        let id = self.id.as_deref().unwrap_or(DEFAULT_INSTANCE_ID);
        if id.is_empty()
            || id.len() > MAX_INSTANCE_ID_LEN
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(format!(
                "--id {:?}: an instance id is 1 to {MAX_INSTANCE_ID_LEN} ASCII letters, digits or '-'",
                id.escape_debug().to_string()
            ));
        }
        Ok(id.to_string())
    }

    /// Where the API listens: `--api-sock`, none with `--no-api` or
    /// `--kernel`, else Firecracker's default when the command line is
    /// Firecracker's (`--id` or `--config-file`); `None` otherwise.
    pub fn api_socket(&self) -> Option<PathBuf> {
        if self.no_api {
            return None;
        }
        if let Some(sock) = &self.api_sock {
            return Some(sock.clone());
        }
        if self.kernel.is_none() && (self.id.is_some() || self.config_file.is_some()) {
            return Some(PathBuf::from(DEFAULT_API_SOCK));
        }
        None
    }

    /// The log level: `--level` (Firecracker's), else `--log-level`.
    pub fn log_filter(&self) -> log::LevelFilter {
        match self.level {
            Some(level) => crate::logger::level_filter(level),
            None => self.log_level,
        }
    }

    /// The logger the `--log-path` family of flags describes, if any flag of
    /// it is given.
    pub fn logger(&self) -> Option<Logger> {
        let given = self.log_path.is_some()
            || self.level.is_some()
            || self.show_level
            || self.show_log_origin
            || self.module.is_some();
        given.then(|| Logger {
            log_path: self.log_path.clone(),
            level: self.level,
            show_level: self.show_level.then_some(true),
            show_log_origin: self.show_log_origin.then_some(true),
            module: self.module.clone(),
        })
    }

    /// Options that name a feature shimvmm lacks: one line saying so.
    pub fn check_unsupported(&self) -> Result<(), String> {
        if self.no_api && self.api_sock.is_some() {
            return Err("--no-api and --api-sock contradict each other: give one".into());
        }
        Ok(())
    }

    /// Host-side build choices from the command line.
    pub fn build_options(&self, mmds: &Arc<Mutex<mmds::Mmds>>) -> vmm::BuildOptions {
        vmm::BuildOptions { allow_block_devices: self.allow_block_devices, mmds: Some(mmds.clone()) }
    }

    /// The MMDS store: `--mmds-size-limit`, filled from `--metadata`.
    pub fn mmds_store(&self) -> Result<Arc<Mutex<mmds::Mmds>>, String> {
        let mut store = mmds::Mmds::new(self.mmds_size_limit.unwrap_or(vmm::config::MMDS_DEFAULT_SIZE_LIMIT));
        if let Some(path) = &self.metadata {
            let shown = path.display();
            let file = std::fs::File::open(path).map_err(|e| format!("--metadata: cannot open {shown}: {e}"))?;
            // Bounded: the path may be a FIFO or a device that never ends.
            let mut text = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_METADATA_FILE_BYTES + 1), &mut text)
                .map_err(|e| format!("--metadata: cannot read {shown}: {e}"))?;
            if text.len() as u64 > MAX_METADATA_FILE_BYTES {
                return Err(format!("--metadata: {shown} is larger than {MAX_METADATA_FILE_BYTES} bytes"));
            }
            let doc: serde_json::Value =
                vmm::config::parse_json(&text).map_err(|e| format!("--metadata: {shown}: {e}"))?;
            store.put(doc).map_err(|e| format!("--metadata: {shown}: {e}"))?;
        }
        Ok(Arc::new(Mutex::new(store)))
    }

    /// The VM described by the command line alone (requires --kernel).
    pub fn vm_spec(&self, kernel: PathBuf) -> Result<VmSpec, CliError> {
        let defaults = MachineConfig::default();
        let config = VmConfig {
            boot_source: Some(BootSource {
                kernel_image_path: kernel,
                boot_args: self.cmdline.clone(),
                initrd_path: self.initrd.clone(),
            }),
            machine_config: MachineConfig {
                vcpu_count: self.vcpus.unwrap_or(defaults.vcpu_count),
                mem_size_mib: self.mem.unwrap_or(defaults.mem_size_mib),
                ..defaults
            },
            drives: self.disk.iter().enumerate().map(|(i, s)| parse_disk(s, i)).collect::<Result<_, _>>()?,
            network_interfaces: self.net.iter().enumerate().map(|(i, s)| parse_net(s, i)).collect::<Result<_, _>>()?,
            metrics: self.metrics_path.clone().map(|metrics_path| Metrics { metrics_path }),
            vsock: self.vsock.as_deref().map(parse_vsock).transpose()?,
            ..Default::default()
        };
        VmSpec::try_from(config).map_err(|e| self.in_cli_words(e))
    }

    /// `spec` with `--metrics-path` as its metrics path, unless it has one.
    pub fn with_metrics_path(&self, spec: VmSpec) -> Result<VmSpec, CliError> {
        match (&spec.metrics, &self.metrics_path) {
            (None, Some(path)) => {
                let config = VmConfig { metrics: Some(Metrics { metrics_path: path.clone() }), ..spec.into() };
                VmSpec::try_from(config).map_err(|e| self.in_cli_words(e))
            }
            _ => Ok(spec),
        }
    }

    /// A rule broken by the configuration the options make, named as they are.
    fn in_cli_words(&self, err: ValidationError) -> CliError {
        // `drives[1].is_root_device` -> the second --disk value, key `root`.
        let item = |list: &str| -> Option<(usize, &str)> {
            let rest = err.field.strip_prefix(list)?.strip_prefix('[')?;
            let (index, rest) = rest.split_once(']')?;
            Some((index.parse().ok()?, rest.strip_prefix('.').unwrap_or(rest)))
        };
        if let Some((i, field)) = item("drives") {
            if let Some(spec) = self.disk.get(i) {
                let source = in_spec_words(ValidationError::new(field, err.problem.clone()), DISK_KEYS);
                return CliError::Disk { spec: spec.clone(), source };
            }
        }
        if let Some((i, field)) = item("network-interfaces") {
            if let Some(spec) = self.net.get(i) {
                let source = in_spec_words(ValidationError::new(field, err.problem.clone()), NET_KEYS);
                return CliError::Net { spec: spec.clone(), source };
            }
        }
        let field = OPTIONS.iter().find(|(from, _)| *from == err.field).map_or(err.field.as_str(), |(_, to)| to);
        CliError::Invalid(ValidationError::new(field, err.problem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(["shimvmm", "--kernel", "/k"].iter().chain(extra))
    }

    /// The spec, or the error as the user sees it.
    fn spec_of(extra: &[&str]) -> Result<VmSpec, CliError> {
        let a = args(extra);
        a.vm_spec(a.kernel.clone().unwrap())
    }

    #[test]
    fn vsock_flag() {
        let spec = spec_of(&["--vsock", "cid=3,uds=/run/v.sock"]).unwrap();
        let v = spec.vsock.unwrap();
        assert_eq!((v.guest_cid, v.uds_path.to_str()), (3, Some("/run/v.sock")));
        for (flag, want) in [
            ("cid=2,uds=/v", "--vsock \"cid=2,uds=/v\": cid: 2 is reserved"),
            ("cid=x,uds=/v", "cid: \"x\" is not a number"),
            ("uds=/v", "cid: cid=N is required"),
            ("cid=3", "uds: uds=PATH is required"),
            ("cid=3,uds=/v,port=1", "unknown key \"port\""),
            ("cid=3,cid=4,uds=/v", "cid= is given twice"),
        ] {
            let e = spec_of(&["--vsock", flag]).unwrap_err().to_string();
            assert!(e.contains(want), "{flag}: {e}");
        }
    }

    #[test]
    fn disks() {
        let d = parse_disk("path=/a.img,readonly=on,root=on", 0).unwrap();
        assert_eq!(
            (d.path_on_host.to_str().unwrap(), d.is_read_only, d.is_root_device, d.drive_id.as_str()),
            ("/a.img", true, true, "disk0")
        );
        assert!(parse_disk("readonly=on", 0).unwrap_err().to_string().contains("path=PATH is required"));
        assert!(parse_disk("path=/a,bogus=1", 0).unwrap_err().to_string().contains("unknown key"));
        assert!(parse_disk("path=/a,root=maybe", 0).unwrap_err().to_string().contains("on or off"));
        assert!(parse_disk("/a.img", 0).unwrap_err().to_string().contains("key=value"));
        assert_eq!(
            parse_disk("path=/a,path=/b", 0).unwrap_err().to_string(),
            "--disk \"path=/a,path=/b\": path= is given twice"
        );
        assert_eq!(
            spec_of(&["--disk", "path=/a,id=a b"]).unwrap_err().to_string(),
            "--disk \"path=/a,id=a b\": id: \"a b\" may only contain ASCII letters, digits, '_' and '-'"
        );
    }

    #[test]
    fn net_mtu_is_parsed_and_checked() {
        let n = parse_net("vfio=0000:01:00.0,mtu=9000", 0).unwrap();
        assert_eq!(n.mtu, Some(9000));
        assert_eq!(parse_net("tap=t", 0).unwrap().mtu, None);
        let e = parse_net("tap=t,mtu=big", 0).unwrap_err().to_string();
        assert!(e.contains("mtu must be a number"), "{e}");
        let e = spec_of(&["--net", "tap=t,mtu=9001"]).unwrap_err().to_string();
        assert!(e.contains("mtu") && e.contains("68..=9000"), "{e}");
    }

    #[test]
    fn nets() {
        let n = parse_net("tap=tap0,mac=02:00:00:00:00:01", 0).unwrap();
        assert_eq!((n.host_dev_name.as_deref(), n.pnic_bdf), (Some("tap0"), None));
        assert_eq!(n.guest_mac.unwrap().octets(), [2, 0, 0, 0, 0, 1]);
        let v = parse_net("vfio=0000:01:00.0", 1).unwrap();
        assert_eq!((v.pnic_bdf.unwrap().to_string(), v.iface_id.as_str()), ("0000:01:00.0".into(), "net1"));
        assert_eq!(
            spec_of(&["--net", "tap=a,vfio=01:00.0"]).unwrap_err().to_string(),
            "--net \"tap=a,vfio=01:00.0\": tap: give exactly one of tap (a tap device) or vfio (a vfio-pci NIC), not both"
        );
        let e = spec_of(&["--net", "mac=02:00:00:00:00:01"]).unwrap_err().to_string();
        assert!(e.contains("exactly one of tap"), "{e}");
        let e = spec_of(&["--net", "tap=averyveryverylongname"]).unwrap_err().to_string();
        assert!(e.contains("tap: \"averyveryverylongname\" is 21 bytes long; Linux allows at most 15"), "{e}");
        assert!(matches!(parse_net("tap=t,mac=zz", 0), Err(CliError::Net { source: SpecError::Mac(_), .. })));
        let e = parse_net("vfio=zz:zz", 0).unwrap_err().to_string();
        assert!(e.starts_with("--net \"vfio=zz:zz\": invalid PCI address \"zz:zz\""), "{e}");
    }

    #[test]
    fn rules_across_options_name_the_option() {
        let e = spec_of(&["--disk", "path=/a,root=on", "--disk", "path=/b,root=on"]).unwrap_err().to_string();
        assert_eq!(
            e,
            "--disk \"path=/b,root=on\": root: drive \"disk0\" is already the root device; only one drive can be"
        );
        let s = parse_net("vfio=01:00.0,dma=strict", 0).unwrap();
        assert_eq!(s.pnic_dma, Some(PnicDma::Strict));
        assert_eq!(parse_net("vfio=01:00.0", 0).unwrap().pnic_dma, None);
        let e = parse_net("vfio=01:00.0,dma=on", 0).unwrap_err().to_string();
        assert!(e.contains("dma: \"on\" is not a DMA mode"), "{e}");
        let e = spec_of(&["--net", "tap=t0,dma=strict"]).unwrap_err().to_string();
        assert_eq!(e, "--net \"tap=t0,dma=strict\": dma: applies to a pNIC (vfio) only; remove it for a tap device");
        let e = spec_of(&["--net", "tap=t0", "--net", "tap=t0"]).unwrap_err().to_string();
        assert_eq!(e, "--net \"tap=t0\": tap: tap \"t0\" is used by two interfaces");
        assert_eq!(
            spec_of(&["--mem", "1"]).unwrap_err().to_string(),
            "--mem: 1 MiB is too small; the guest needs at least 64"
        );
        assert_eq!(
            spec_of(&["--vcpus", "33"]).unwrap_err().to_string(),
            "--vcpus: 33 is out of range; expected 1 to 32"
        );
        assert!(spec_of(&["--cmdline", "a\nb"])
            .unwrap_err()
            .to_string()
            .starts_with("--cmdline: contains a control character"));
    }

    #[test]
    fn the_spec_puts_the_root_disk_first_and_takes_defaults() {
        let spec = spec_of(&["--disk", "path=/data", "--disk", "path=/root,root=on"]).unwrap();
        assert_eq!(spec.root_drive().unwrap().drive_id, "disk1");
        assert_eq!(spec.machine_config, MachineConfig::default());
        assert_eq!(spec.boot_source.boot_args, None);
        let a = args(&["--metrics-path", "/m"]);
        let from_file = args(&[]).vm_spec("/k".into()).unwrap();
        assert_eq!(a.with_metrics_path(from_file).unwrap().metrics.unwrap().metrics_path, PathBuf::from("/m"));
    }

    #[test]
    fn firecracker_flags() {
        let a = Args::parse_from(["shimvmm", "--id", "vm-1", "--config-file", "/c.json", "--boot-timer"]);
        assert_eq!(a.instance_id().unwrap(), "vm-1");
        assert!(!a.enable_pci);
        // microheart's command line (Firecracker v1.13+'s PCI switch).
        let pci = Args::parse_from(["shimvmm", "--api-sock", "/s", "--config-file", "/c.json", "--enable-pci"]);
        assert!(pci.enable_pci);
        assert_eq!(a.api_socket(), Some(PathBuf::from(DEFAULT_API_SOCK)));
        assert!(a.logger().is_none());
        let a = Args::parse_from(["shimvmm", "--config-file", "/c.json", "--no-api", "--no-seccomp"]);
        assert_eq!((a.api_socket(), a.instance_id().unwrap().as_str()), (None, DEFAULT_INSTANCE_ID));
        let a = Args::parse_from(["shimvmm", "--kernel", "/k"]);
        assert_eq!(a.api_socket(), None);
        let a = Args::parse_from(["shimvmm", "--id", "a_b"]);
        assert!(a.instance_id().unwrap_err().contains("letters, digits or '-'"));
        let a = Args::parse_from(["shimvmm", "--level", "warn", "--show-level", "--log-path", "/l"]);
        let l = a.logger().unwrap();
        assert_eq!((l.level, l.show_level, l.show_log_origin), (Some(LogLevel::Warning), Some(true), None));
        assert_eq!(a.log_filter(), log::LevelFilter::Warn);
        assert!(Args::try_parse_from(["shimvmm", "--level", "loud"]).is_err());
        let a = Args::parse_from(["shimvmm", "--metadata", "/no/m.json"]);
        assert!(a.check_unsupported().is_ok());
        assert!(a.mmds_store().unwrap_err().starts_with("--metadata: cannot open /no/m.json"));
        let m = std::env::temp_dir().join(format!("cli-metadata-{}.json", std::process::id()));
        std::fs::write(&m, r#"{"latest": {"meta-data": {"id": "i-7"}}}"#).unwrap();
        let a = Args::parse_from(["shimvmm", "--metadata", m.to_str().unwrap()]);
        let store = a.mmds_store().unwrap();
        assert_eq!(store.lock().unwrap().get("/latest/meta-data/id", mmds::OutputFormat::Imds).unwrap(), "i-7");
        let a = Args::parse_from(["shimvmm", "--metadata", m.to_str().unwrap(), "--mmds-size-limit", "10"]);
        assert!(a.mmds_store().unwrap_err().contains("larger than its limit of 10 bytes"));
        std::fs::remove_file(&m).unwrap();
        let first = version_text().lines().next().unwrap().to_string();
        assert_eq!(first, format!("Firecracker v{}", api::FIRECRACKER_API_VERSION));
        let a = Args::parse_from(["shimvmm", "--version"]);
        assert!(a.version);
    }

    #[test]
    fn renaming_is_by_whole_word() {
        assert_eq!(rename_words("host_dev_name: x host_dev_names pnic_bdf.", NET_KEYS), "tap: x host_dev_names vfio.");
        assert_eq!(rename_words("tap \"pnic_bdf\" pnic_bdf", NET_KEYS), "tap \"pnic_bdf\" vfio");
        assert_eq!(rename_words(r#"id "a\"pnic_bdf" pnic_bdf"#, NET_KEYS), r#"id "a\"pnic_bdf" vfio"#);
        assert_eq!(rename_words(r#""a\nb" pnic_bdf"#, NET_KEYS), r#""a\nb" vfio"#);
    }
}
