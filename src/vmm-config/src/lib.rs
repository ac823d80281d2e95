//! The VM configuration: one type per resource, used from the front ends
//! (the command line, the `--config-file` JSON, the REST API) down to the
//! VMM's builder, with every rule checked in one place.
//!
//! - [`BootSource`], [`MachineConfig`], [`Drive`], [`NetworkInterface`],
//!   [`Metrics`]: the resources, with Firecracker's field names; each
//!   checks its own fields (`validate`).
//! - [`VmConfig`]: the resources as they are being assembled;
//!   [`VmConfig::validate`] adds the rules that span resources (unique ids,
//!   one root drive, device counts).
//! - [`VmSpec`]: a complete, validated configuration, what the VMM builds.
//! - [`PciBdf`] and [`MacAddr`]: the one PCI address type and the one MAC
//!   parser of the workspace.
//!
//! A leaf crate (serde and thiserror only), so the API crate, the binary, the
//! VMM and the pNIC driver share these types without depending on each other.

mod boot_source;
mod drive;
mod entropy;
mod ids;
mod json;
mod logger;
mod machine_config;
mod metrics;
mod mmds;
mod net;
mod rate_limiter;
pub mod sync;
mod validate;
mod vm;
mod vsock;

pub use boot_source::{BootSource, DEFAULT_BOOT_ARGS};
pub use drive::{CacheType, Drive, DriveUpdate, IoEngine, MAX_DRIVE_ID_LEN};
pub use entropy::Entropy;
pub use ids::{BdfError, MacAddr, MacError, PciBdf};
pub use json::{parse_json, JsonError};
pub use logger::{LogLevel, Logger};
pub use machine_config::{MachineConfig, MachineConfigUpdate, DEFAULT_MEM_SIZE_MIB, DEFAULT_VCPU_COUNT};
pub use metrics::Metrics;
pub use mmds::{MmdsConfig, MmdsVersion, MMDS_DEFAULT_IPV4, MMDS_DEFAULT_SIZE_LIMIT};
pub use net::{
    check_ifname, NetBackendSpec, NetworkInterface, NetworkInterfaceUpdate, PnicDma, MTU_DEFAULT, MTU_MAX, MTU_MIN,
};
pub use rate_limiter::{RateLimiter, TokenBucket};
pub use validate::{
    check_id, ValidationError, MAX_BOOT_ARGS_LEN, MAX_DRIVES, MAX_ID_LEN, MAX_IFNAME_LEN, MAX_MEM_SIZE_MIB,
    MAX_NETWORK_INTERFACES, MAX_PATH_LEN, MAX_VCPUS, MAX_VIRTIO_DEVICES, MIN_MEM_SIZE_MIB,
};
pub use vm::{not_supported_yet, ConfigError, VmConfig, VmSpec, MAX_CONFIG_FILE_BYTES, UNSUPPORTED_SECTIONS};
pub use vsock::{Vsock, MAX_UDS_PATH_LEN, MIN_GUEST_CID};
