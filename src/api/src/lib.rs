//! Firecracker-compatible REST API over a Unix socket.
