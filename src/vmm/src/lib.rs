//! The VMM: KVM VM and vCPUs (`vstate`), guest memory, direct Linux boot
//! (`boot`), legacy devices, and the event loop that runs it all (`builder`).

pub mod boot;
pub mod builder;
pub mod devices;
pub mod exit;
pub mod files;
pub mod layout;
pub mod memory;
pub mod pause;
pub mod seccomp;
pub mod signals;
pub mod stdin;
pub mod vstate;

pub use builder::{
    build, build_with, BuildError, BuildOptions, MetricsWriteError, NoSuchInterface, ReplaceDriveError, VmMetrics, Vmm,
    VmmHandle,
};
pub use exit::ExitReason;
/// The VM configuration the builder takes (one type per resource, shared
/// with the API and the command line).
pub use vmm_config as config;
pub use vmm_config::VmSpec;
