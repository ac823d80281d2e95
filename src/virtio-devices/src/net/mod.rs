//! virtio-net. The device ([`device`]) owns the virtqueues and lends them to
//! a backend, which moves frames ([`direct`]: `RxQueue`, `TxQueue`).
//! A received frame's path: backend event (tap readable / pNIC interrupt)
//! → `NetBackend::rx` with the lent `RxQueue` → used ring → guest interrupt.

pub mod backend;
pub mod chain;
pub mod config;
pub mod device;
pub mod direct;
mod event_handler;
pub mod iov;
pub mod link_monitor;
pub mod metrics;
pub mod mmds;
pub mod ring;
pub mod tap;
pub mod tap_dev;

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod tap_tests;

pub use backend::{ChainRef, DropReason, NetBackend, RxBuffer, RxPass, TxFrame, Used, VNET_HDR_LEN};
pub use device::Net;
pub use direct::{RxDesc, RxNext, RxQueue, TxQueue};
pub use tap::TapBackend;
pub use tap_dev::TapError;
