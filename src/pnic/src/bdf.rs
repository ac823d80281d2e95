//! PCI addresses ("BDF"): the workspace's one PCI address type and parser,
//! `vmm_config::PciBdf`, under the name the driver code uses.

pub use vmm_config::{BdfError, PciBdf as Bdf};
