//! Physical NICs owned through VFIO and driven from user space, and the
//! zero-copy shim that turns one into a virtio-net backend.
//!
//! - [`vfio`]: open a PCI function through VFIO, map guest RAM (IOVA = GPA).
//! - [`driver`]: the NIC-independent driver interface the shim uses;
//!   [`nic::Pnic`]: the supported families as one type (enum dispatch).
//! - [`igb`]: Intel 82576 driver; [`e1000e`]: Intel 82574L driver; both are
//!   [`e1000_common`] (rings, registers, driver logic) plus their own parts.
//! - [`model`]: a software NIC for unit tests and benchmarks.
//! - [`shim`]: `ShimBackend`, the `NetBackend` over any driver.

pub mod bdf;
pub mod dma;
pub mod driver;
pub mod e1000_common;
pub mod e1000e;
pub mod igb;
pub mod igbvf;
pub mod model;
pub mod nic;
pub mod shim;
pub mod vfio;

pub use bdf::Bdf;
pub use driver::PnicDriver;
pub use nic::Pnic;
pub use vmm_config::PnicDma;
