//! Command-line arguments and their translation into a [`vmm::VmConfig`].

use std::path::PathBuf;

use clap::Parser;
use vmm::config::{self, DiskConfig, NetBackendConfig, NetConfig, VmConfig};

#[derive(Parser, Debug)]
#[command(name = "shimvmm", version, about = "A lightweight KVM VMM with a zero-copy physical-NIC network path")]
pub struct Args {
    /// Guest kernel: a bzImage or an ELF vmlinux. With it the VM boots at once.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,
    /// Initial ramdisk.
    #[arg(long, value_name = "PATH")]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, value_name = "STR")]
    pub cmdline: Option<String>,
    /// Number of vCPUs (1-255).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u8).range(1..))]
    pub vcpus: Option<u8>,
    /// Guest memory in MiB.
    #[arg(long, value_name = "MiB")]
    pub mem: Option<u64>,
    /// A virtio-blk disk: path=PATH[,readonly=on][,root=on][,id=NAME]. Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub disk: Vec<String>,
    /// A virtio-net NIC: tap=NAME[,mac=MAC][,id=NAME] or vfio=BDF[,mac=MAC][,id=NAME]. Repeatable.
    #[arg(long, value_name = "SPEC")]
    pub net: Vec<String>,
    /// Write device counters as JSON to FILE when shimvmm exits (and on FlushMetrics).
    #[arg(long, value_name = "FILE")]
    pub metrics_path: Option<PathBuf>,
    /// error, warn, info, debug or trace.
    #[arg(long, value_name = "LEVEL", default_value = "warn")]
    pub log_level: log::LevelFilter,
    /// Serve the REST API on this Unix socket.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,
    /// Boot from a JSON file with the API's objects (boot-source, machine-config, drives, network-interfaces).
    #[arg(long, value_name = "FILE")]
    pub config_file: Option<PathBuf>,
    /// Run without an API socket.
    #[arg(long)]
    pub no_api: bool,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CliError {
    #[error("--disk {spec:?}: {problem}")]
    Disk { spec: String, problem: String },
    #[error("--net {spec:?}: {problem}")]
    Net { spec: String, problem: String },
    #[error(transparent)]
    Config(#[from] config::ConfigError),
}

/// Splits `a=b,c=d` into pairs; a bare word is an error.
fn pairs(spec: &str) -> Result<Vec<(&str, &str)>, String> {
    spec.split(',').map(|kv| kv.split_once('=').ok_or_else(|| format!("expected key=value, got {kv:?}"))).collect()
}

fn on_off(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("{key} must be on or off, got {v:?}")),
    }
}

pub fn parse_disk(spec: &str, index: usize) -> Result<DiskConfig, CliError> {
    let err = |problem: String| CliError::Disk { spec: spec.to_string(), problem };
    let mut d = DiskConfig { id: format!("disk{index}"), path: PathBuf::new(), read_only: false, root: false };
    let mut have_path = false;
    for (k, v) in pairs(spec).map_err(err)? {
        match k {
            "path" => {
                d.path = PathBuf::from(v);
                have_path = !v.is_empty();
            }
            "readonly" | "ro" => d.read_only = on_off(k, v).map_err(err)?,
            "root" => d.root = on_off(k, v).map_err(err)?,
            "id" if !v.is_empty() => d.id = v.to_string(),
            _ => return Err(err(format!("unknown key {k:?} (known: path, readonly, root, id)"))),
        }
    }
    if !have_path {
        return Err(err("path=PATH is required".into()));
    }
    Ok(d)
}

pub fn parse_net(spec: &str, index: usize) -> Result<NetConfig, CliError> {
    let err = |problem: String| CliError::Net { spec: spec.to_string(), problem };
    let mut backend = None;
    let mut mac = None;
    let mut id = format!("net{index}");
    for (k, v) in pairs(spec).map_err(err)? {
        let set = |b: NetBackendConfig, backend: &mut Option<NetBackendConfig>| {
            if backend.replace(b).is_some() {
                Err(err("give exactly one of tap=NAME or vfio=BDF".into()))
            } else {
                Ok(())
            }
        };
        match k {
            "tap" if !v.is_empty() && v.len() < 16 => set(NetBackendConfig::Tap { name: v.to_string() }, &mut backend)?,
            "tap" => return Err(err(format!("tap name {v:?} must be 1-15 characters"))),
            "vfio" if !v.is_empty() => set(NetBackendConfig::Vfio { bdf: v.to_string() }, &mut backend)?,
            "mac" => mac = Some(config::parse_mac(v)?),
            "id" if !v.is_empty() => id = v.to_string(),
            _ => return Err(err(format!("unknown or empty key {k:?} (known: tap, vfio, mac, id)"))),
        }
    }
    let backend = backend.ok_or_else(|| err("give exactly one of tap=NAME or vfio=BDF".into()))?;
    Ok(NetConfig { id, backend, mac })
}

impl Args {
    /// The VM described by the command line alone (requires --kernel).
    pub fn vm_config(&self, kernel: PathBuf) -> Result<VmConfig, CliError> {
        let c = VmConfig {
            kernel,
            initrd: self.initrd.clone(),
            cmdline: self.cmdline.clone().unwrap_or_else(|| config::DEFAULT_CMDLINE.to_string()),
            vcpus: self.vcpus.unwrap_or(config::DEFAULT_VCPUS),
            mem_mib: self.mem.unwrap_or(config::DEFAULT_MEM_MIB),
            disks: self.disk.iter().enumerate().map(|(i, s)| parse_disk(s, i)).collect::<Result<_, _>>()?,
            nets: self.net.iter().enumerate().map(|(i, s)| parse_net(s, i)).collect::<Result<_, _>>()?,
            metrics_path: self.metrics_path.clone(),
        };
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disks() {
        let d = parse_disk("path=/a.img,readonly=on,root=on", 0).unwrap();
        assert_eq!((d.path.to_str().unwrap(), d.read_only, d.root, d.id.as_str()), ("/a.img", true, true, "disk0"));
        assert!(parse_disk("readonly=on", 0).unwrap_err().to_string().contains("path=PATH is required"));
        assert!(parse_disk("path=/a,bogus=1", 0).unwrap_err().to_string().contains("unknown key"));
        assert!(parse_disk("path=/a,root=maybe", 0).unwrap_err().to_string().contains("on or off"));
        assert!(parse_disk("/a.img", 0).unwrap_err().to_string().contains("key=value"));
    }

    #[test]
    fn nets() {
        let n = parse_net("tap=tap0,mac=02:00:00:00:00:01", 0).unwrap();
        assert_eq!(n.backend, NetBackendConfig::Tap { name: "tap0".into() });
        assert_eq!(n.mac, Some([2, 0, 0, 0, 0, 1]));
        let v = parse_net("vfio=0000:01:00.0", 1).unwrap();
        assert_eq!((v.backend, v.id.as_str()), (NetBackendConfig::Vfio { bdf: "0000:01:00.0".into() }, "net1"));
        assert!(parse_net("tap=a,vfio=b", 0).is_err());
        assert!(parse_net("mac=02:00:00:00:00:01", 0).is_err());
        assert!(parse_net("tap=averyveryverylongname", 0).is_err());
        assert!(matches!(parse_net("tap=t,mac=zz", 0), Err(CliError::Config(_))));
    }
}
