//! The microVM metadata service (MMDS), as Firecracker has it.
//!
//! - [`Mmds`] ([`data_store`]): the JSON document the host PUTs and
//!   PATCHes through the API, its size limit, the protocol version, and
//!   the session tokens ([`token`]) V2 requires;
//! - [`service`]: what a guest's HTTP request ([`http`]) is answered;
//! - [`MmdsStack`] ([`stack`]): one interface's TCP/IP endpoint (smoltcp)
//!   at the MMDS address, fed with the guest frames virtio-net intercepts
//!   on TX ([`frame::is_mmds_frame`]) and producing frames for its RX queue.

pub mod data_store;
pub mod frame;
pub mod http;
pub mod service;
pub mod stack;
pub mod token;

pub use data_store::{DataStoreError, Mmds, OutputFormat};
pub use stack::{MmdsStack, StackStats, MMDS_MAC};
pub use token::TokenError;
pub use vmm_config::{MmdsConfig, MmdsVersion};
