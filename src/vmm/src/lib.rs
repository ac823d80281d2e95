//! The VMM: KVM VM and vCPUs, guest memory, direct Linux boot, legacy devices, event loop.

pub mod boot;
pub mod devices;
