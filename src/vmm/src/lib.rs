//! The VMM: KVM VM and vCPUs (`vstate`), guest memory, direct Linux boot
//! (`boot`), legacy devices, and the event loop that runs it all (`builder`).

pub mod boot;
pub mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod layout;
pub mod memory;
pub mod signals;
pub mod stdin;
pub mod vstate;

pub use builder::{build, BuildError, Vmm, VmmHandle};
pub use config::VmConfig;
pub use exit::ExitReason;
