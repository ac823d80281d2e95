//! Firecracker-compatible REST API over a Unix socket, and the config-file
//! format that carries the same objects.
//!
//! The crate knows nothing of KVM: it collects the pre-boot configuration
//! (the `vmm_config` types, validated by their own rules), and calls a
//! [`VmmController`] (implemented by the binary) for InstanceStart and the
//! other actions.
//!
//! ```no_run
//! # use std::sync::Arc;
//! # fn demo(controller: Arc<dyn api::VmmController>) -> Result<(), api::ApiError> {
//! let server = api::serve(std::path::Path::new("/run/shimvmm.sock"), controller, "vm0".into())?;
//! // ... the VMM runs; dropping `server` stops the API and removes the socket.
//! # drop(server); Ok(()) }
//! ```

mod controller;
mod error;
mod router;
mod server;
mod socket;
mod types;

pub use controller::{ControllerError, Preflight, VmmController};
pub use error::ApiError;
pub use router::{routes, status, unsupported_routes, Api, ApiResponse, Route};
pub use server::{
    serve, serve_with, ApiServerHandle, ServeOptions, ThreadInit, DEFAULT_BODY_READ_TIMEOUT,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_CONNECTIONS, DEFAULT_WRITE_TIMEOUT,
};
pub use socket::{MAX_SOCKET_PATH_LEN, SOCKET_MODE};
pub use types::{
    ActionType, Fault, FirecrackerVersion, InstanceActionInfo, InstanceInfo, RequestedVmState, VmState, VmStateUpdate,
    APP_NAME, FIRECRACKER_API_VERSION, VMM_VERSION,
};
// The configuration objects the API (de)serializes are the VMM's own.
pub use vmm_config::{
    check_id, not_supported_yet, BootSource, ConfigError, Drive, DriveUpdate, Entropy, LogLevel, Logger, MacAddr,
    MachineConfig, MachineConfigUpdate, Metrics, NetBackendSpec, NetworkInterface, NetworkInterfaceUpdate, PciBdf,
    RateLimiter, TokenBucket, ValidationError, VmConfig, VmSpec, DEFAULT_MEM_SIZE_MIB, DEFAULT_VCPU_COUNT,
    MAX_BOOT_ARGS_LEN, MAX_CONFIG_FILE_BYTES, MAX_DRIVES, MAX_ID_LEN, MAX_IFNAME_LEN, MAX_MEM_SIZE_MIB,
    MAX_NETWORK_INTERFACES, MAX_PATH_LEN, MAX_VCPUS, MIN_MEM_SIZE_MIB,
};

pub use vmm_config::Vsock;

#[cfg(feature = "testing")]
pub mod testing;
