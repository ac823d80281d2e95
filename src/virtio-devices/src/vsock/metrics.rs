//! The vsock device's counters (`GET /metrics`, the metrics file). Names
//! follow Firecracker's `vsock` metrics where one exists.

use serde::Serialize;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VsockMetrics {
    /// RX / TX queue kicks handled.
    pub rx_queue_event_count: u64,
    pub tx_queue_event_count: u64,
    /// Packets and payload bytes written to the guest (RX) / taken from it (TX).
    pub rx_packets_count: u64,
    pub rx_bytes_count: u64,
    pub tx_packets_count: u64,
    pub tx_bytes_count: u64,
    /// Connections made (either side initiating) and dropped.
    pub conns_added: u64,
    pub conns_removed: u64,
    /// Connections the device reset (an RST sent on a connection: a guest
    /// protocol violation or a host socket error).
    pub conns_killed: u64,
    /// Guest-to-host bytes the host socket refused (write error: connection reset).
    pub tx_write_fails: u64,
    /// Host socket read errors (connection reset).
    pub rx_read_fails: u64,
    /// shimvmm's own: TX packets dropped as malformed (short header, payload
    /// longer than the chain or than 64 KiB, buffers outside guest memory,
    /// wrong source CID).
    pub malformed_packets: u64,
    /// RST packets sent, for any reason.
    pub rst_sent: u64,
    /// RSTs not sent because too many were queued (the guest is not reading).
    pub rst_dropped: u64,
    /// Guest connection requests to a host port nobody listens on.
    pub conns_refused: u64,
    /// Host connections closed for a bad `CONNECT <port>` line (or too many pending).
    pub handshake_errors: u64,
    pub credit_updates_sent: u64,
    /// Host connections reset because the guest did not accept them in 2 s.
    pub connect_timeouts: u64,
    /// TRANSPORT_RESET events posted on the event queue.
    pub transport_resets_sent: u64,
    /// RX chains dropped: not writable, shorter than a header, or outside guest memory.
    pub rx_bad_buffers: u64,
    /// The guest broke a queue (it stays stopped until reset).
    pub queue_errors: u64,
    pub kicks_before_activation: u64,
}
