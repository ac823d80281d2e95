//! virtio-net. The device ([`device`]) owns the virtqueues; a backend moves frames.
//! A received frame's path: backend event (tap readable / pNIC interrupt)
//! → `NetBackend::reap_rx` → used ring → guest interrupt.

pub mod backend;
