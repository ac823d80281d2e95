//! virtio-vsock (VIRTIO 1.2, 5.10) with Firecracker's host-side model:
//! stream sockets between the guest and host processes talking to Unix
//! sockets (see [`unix`]).
//!
//! - [`packet`]: the header and moving packets in and out of descriptor chains;
//! - [`connection`]: one connection's state machine and credit accounting;
//! - [`unix`]: the host sockets and the routing of packets to connections;
//! - [`device`]: the virtio device (queues, config space, reset);
//! - `event_handler`: the event-loop glue;
//! - [`metrics`]: the counters.

pub mod connection;
pub mod device;
mod event_handler;
pub mod metrics;
pub mod packet;
pub mod unix;

pub use device::Vsock;
pub use metrics::VsockMetrics;
pub use unix::BackendError;

/// virtio device id of a socket device.
pub const TYPE_VSOCK: u32 = 19;
/// The host's CID (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;

#[cfg(test)]
mod tests;
