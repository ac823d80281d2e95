//! Devices the VMM emulates itself (virtio devices live in the virtio-devices crate).

pub mod bus;
pub mod legacy;
