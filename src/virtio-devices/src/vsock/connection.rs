//! One stream connection between a guest socket and a host Unix stream: the
//! state machine and credit-based flow control of VIRTIO 1.2, 5.10.6.3-6.
//!
//! "Local" is the host side, "peer" the guest. The connection never buffers
//! more than [`BUF_ALLOC`] bytes from the guest (the credit it advertised);
//! a guest that sends past its credit, or sends data or a reply the state
//! does not allow, gets an RST and the connection is dropped.

use std::io::{ErrorKind, Read, Write};
use std::num::Wrapping;
use std::time::{Duration, Instant};

use super::packet::{
    Header, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_F_RCV,
    SHUTDOWN_F_SEND,
};

/// Guest-to-host bytes a connection buffers at most (its `buf_alloc`).
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Forwarded bytes after which the guest is told its credit grew. Any value
/// up to BUF_ALLOC guarantees progress: a guest out of credit has BUF_ALLOC
/// bytes unacknowledged, and forwarding them crosses this threshold.
pub const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;
/// How long the guest has to accept a host-initiated connection (Firecracker's 2 s).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// The host connected and asked for a guest port: REQUEST sent (or
    /// pending), waiting for the guest's RESPONSE.
    LocalInit,
    Established,
    /// An RST is to be sent (or was received); the connection is dropped
    /// once it is gone.
    Killed,
}

/// What the guest's packet did to the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// The connection must be reset (RST queued) because of a protocol violation or a host error.
    Kill,
    /// The guest reset it: drop it now, send nothing.
    Gone,
}

/// A packet the connection wants to send, without CIDs (the muxer adds them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RxPacket {
    pub op: u16,
    pub flags: u32,
    /// Payload bytes written to the caller's buffer (OP_RW only).
    pub len: usize,
}

pub struct Connection<S> {
    stream: S,
    pub local_port: u32,
    pub peer_port: u32,
    state: State,
    // Control packets owed to the guest.
    send_request: bool,
    send_response: bool,
    send_credit_update: bool,
    send_shutdown: bool,
    send_rst: bool,
    // Host to guest.
    rx_cnt: Wrapping<u32>,
    peer_buf_alloc: u32,
    peer_fwd_cnt: Wrapping<u32>,
    /// The host stream has data (or EOF) to read: a hint from epoll.
    readable: bool,
    local_eof: bool,
    // Guest to host.
    /// Written to the host before guest data ("OK <port>\n").
    prefix: Vec<u8>,
    tx_buf: Vec<u8>,
    tx_start: usize,
    fwd_cnt: Wrapping<u32>,
    last_fwd_cnt_sent: Wrapping<u32>,
    peer_shut_send: bool,
    peer_shut_rcv: bool,
    write_shut: bool,
    /// Reading the host socket failed (the connection was reset for it).
    pub read_failed: bool,
    created: Instant,
}

impl<S: Read + Write + ShutdownWrite> Connection<S> {
    fn new(stream: S, local_port: u32, peer_port: u32, state: State) -> Self {
        Connection {
            stream,
            local_port,
            peer_port,
            state,
            send_request: false,
            send_response: false,
            send_credit_update: false,
            send_shutdown: false,
            send_rst: false,
            rx_cnt: Wrapping(0),
            peer_buf_alloc: 0,
            peer_fwd_cnt: Wrapping(0),
            readable: false,
            local_eof: false,
            prefix: Vec::new(),
            tx_buf: Vec::new(),
            tx_start: 0,
            fwd_cnt: Wrapping(0),
            last_fwd_cnt_sent: Wrapping(0),
            peer_shut_send: false,
            peer_shut_rcv: false,
            write_shut: false,
            read_failed: false,
            created: Instant::now(),
        }
    }

    /// The host connected to `uds_path` and asked for guest port `peer_port`.
    pub fn new_local(stream: S, local_port: u32, peer_port: u32) -> Self {
        let mut c = Self::new(stream, local_port, peer_port, State::LocalInit);
        c.send_request = true;
        c
    }

    /// The guest's REQUEST reached a host listener: established at once.
    pub fn new_peer(stream: S, local_port: u32, req: &Header) -> Self {
        let mut c = Self::new(stream, local_port, req.src_port, State::Established);
        c.peer_buf_alloc = req.buf_alloc;
        c.peer_fwd_cnt = Wrapping(req.fwd_cnt);
        c.send_response = true;
        c
    }

    pub fn state(&self) -> State {
        self.state
    }

    pub fn stream(&self) -> &S {
        &self.stream
    }

    #[cfg(test)]
    pub fn stream_mut_for_tests(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Bytes the guest can still take: its buffer minus what is in flight.
    /// A guest reporting more forwarded than was sent gets no credit.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = (self.rx_cnt - self.peer_fwd_cnt).0;
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Guest bytes buffered for the host.
    pub fn buffered(&self) -> usize {
        self.tx_buf.len() - self.tx_start
    }

    /// A host-initiated connection the guest has not answered within
    /// [`CONNECT_TIMEOUT`] of `now`.
    pub fn connect_expired(&self, now: Instant) -> bool {
        self.state == State::LocalInit && now.saturating_duration_since(self.created) >= CONNECT_TIMEOUT
    }

    /// The connection is to be reset: RST owed to the guest.
    pub fn kill(&mut self) {
        self.state = State::Killed;
        self.send_rst = true;
    }

    /// Takes the RST owed to the guest, if any: the caller sends it and
    /// drops the connection at once (its host socket need not wait for the
    /// guest's RX buffers).
    pub fn take_rst(&mut self) -> bool {
        std::mem::take(&mut self.send_rst)
    }

    /// Finished: RST sent (or received), or both directions closed.
    pub fn is_done(&self) -> bool {
        self.state == State::Killed && !self.send_rst
    }

    /// epoll interest: (read, write).
    pub fn interest(&self) -> (bool, bool) {
        let read = self.state == State::Established && !self.readable && self.wants_host_data();
        let write = !self.prefix.is_empty() || self.buffered() > 0;
        (read, write)
    }

    fn wants_host_data(&self) -> bool {
        !self.local_eof && !self.peer_shut_rcv && self.peer_credit() > 0
    }

    /// The host stream became readable (or hung up).
    pub fn set_readable(&mut self) {
        self.readable = true;
    }

    /// Something to send to the guest now.
    pub fn has_rx(&self) -> bool {
        self.send_rst
            || (self.state != State::Killed
                && (self.send_request
                    || self.send_response
                    || self.send_credit_update
                    || self.send_shutdown
                    || (self.state == State::Established && self.readable && self.wants_host_data())))
    }

    /// Stamps our credit on a header going to the guest.
    pub fn credit_fields(&mut self) -> (u32, u32) {
        self.last_fwd_cnt_sent = self.fwd_cnt;
        (BUF_ALLOC, self.fwd_cnt.0)
    }

    /// The next packet for the guest; OP_RW payload is read from the host
    /// stream into `buf` (at most the guest's credit).
    pub fn next_rx(&mut self, buf: &mut [u8]) -> Option<RxPacket> {
        let ctl = |op, flags| Some(RxPacket { op, flags, len: 0 });
        if self.send_rst {
            self.send_rst = false;
            self.state = State::Killed;
            return ctl(OP_RST, 0);
        }
        if self.state == State::Killed {
            return None;
        }
        if std::mem::take(&mut self.send_request) {
            return ctl(OP_REQUEST, 0);
        }
        if std::mem::take(&mut self.send_response) {
            return ctl(OP_RESPONSE, 0);
        }
        if std::mem::take(&mut self.send_credit_update) {
            return ctl(OP_CREDIT_UPDATE, 0);
        }
        if self.state == State::Established && self.readable && self.wants_host_data() {
            let want = buf.len().min(self.peer_credit() as usize);
            if want > 0 {
                match self.stream.read(&mut buf[..want]) {
                    Ok(0) => {
                        self.local_eof = true;
                        self.readable = false;
                        self.send_shutdown = true;
                    }
                    Ok(n) => {
                        // n <= want <= u32::MAX (credit is a u32).
                        self.rx_cnt += Wrapping(n as u32);
                        return Some(RxPacket { op: OP_RW, flags: 0, len: n });
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => {
                        self.read_failed = true;
                        self.state = State::Killed;
                        return ctl(OP_RST, 0);
                    }
                }
            }
        }
        if std::mem::take(&mut self.send_shutdown) {
            let pkt = ctl(OP_SHUTDOWN, SHUTDOWN_F_SEND);
            self.check_closed();
            return pkt;
        }
        None
    }

    /// A packet from the guest for this connection (header fields already
    /// checked by the muxer: CIDs, type, length against the chain).
    pub fn on_packet(&mut self, hdr: &Header, payload: &[u8]) -> Verdict {
        if hdr.op == OP_RST {
            self.state = State::Killed;
            self.send_rst = false;
            return Verdict::Gone;
        }
        if self.state == State::Killed {
            return Verdict::Ok;
        }
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = Wrapping(hdr.fwd_cnt);
        match (self.state, hdr.op) {
            (State::LocalInit, OP_RESPONSE) => {
                self.state = State::Established;
                self.prefix = format!("OK {}\n", self.local_port).into_bytes();
                self.flush()
            }
            (State::Established, OP_RW) => self.on_data(payload),
            (State::Established, OP_CREDIT_UPDATE) => Verdict::Ok,
            (State::Established, OP_CREDIT_REQUEST) => {
                self.send_credit_update = true;
                Verdict::Ok
            }
            (State::Established, OP_SHUTDOWN) => {
                self.peer_shut_rcv |= hdr.flags & SHUTDOWN_F_RCV != 0;
                self.peer_shut_send |= hdr.flags & SHUTDOWN_F_SEND != 0;
                let v = self.flush();
                if v == Verdict::Ok {
                    self.check_closed();
                }
                v
            }
            _ => self.fail(),
        }
    }

    fn fail(&mut self) -> Verdict {
        self.kill();
        Verdict::Kill
    }

    fn on_data(&mut self, payload: &[u8]) -> Verdict {
        if self.peer_shut_send {
            return self.fail();
        }
        // The guest may have at most BUF_ALLOC bytes in flight.
        if self.buffered() + payload.len() > BUF_ALLOC as usize {
            return self.fail();
        }
        if self.tx_start > 0 && self.tx_start == self.tx_buf.len() {
            self.tx_buf.clear();
            self.tx_start = 0;
        }
        self.tx_buf.extend_from_slice(payload);
        self.flush()
    }

    /// Writes what is buffered for the host; the stream became writable.
    pub fn flush(&mut self) -> Verdict {
        while !self.prefix.is_empty() {
            match self.stream.write(&self.prefix) {
                Ok(0) => return self.fail(),
                Ok(n) => {
                    self.prefix.drain(..n);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Verdict::Ok,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(),
            }
        }
        while self.buffered() > 0 {
            match self.stream.write(&self.tx_buf[self.tx_start..]) {
                Ok(0) => return self.fail(),
                Ok(n) => {
                    self.tx_start += n;
                    // n <= BUF_ALLOC.
                    self.fwd_cnt += Wrapping(n as u32);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.fail(),
            }
        }
        if self.buffered() == 0 {
            self.tx_buf.clear();
            self.tx_start = 0;
        } else if self.tx_start > self.tx_buf.len() / 2 {
            self.tx_buf.drain(..self.tx_start);
            self.tx_start = 0;
        }
        if (self.fwd_cnt - self.last_fwd_cnt_sent).0 >= CREDIT_UPDATE_THRESHOLD {
            self.send_credit_update = true;
        }
        if self.peer_shut_send && self.buffered() == 0 && self.prefix.is_empty() && !self.write_shut {
            self.write_shut = true;
            let _ = self.stream.shutdown_write();
        }
        self.check_closed();
        Verdict::Ok
    }

    /// Both directions are finished: reset the connection, as the spec's
    /// clean disconnect ends.
    fn check_closed(&mut self) {
        let host_done = (self.local_eof && !self.send_shutdown) || self.peer_shut_rcv;
        let guest_done = self.peer_shut_send && self.write_shut;
        if self.state == State::Established && host_done && guest_done {
            self.kill();
        }
    }
}

/// Closing the write half of a host stream (a Unix stream in the device;
/// an in-memory pipe in tests).
pub trait ShutdownWrite {
    fn shutdown_write(&mut self) -> std::io::Result<()>;
}

impl ShutdownWrite for std::os::unix::net::UnixStream {
    fn shutdown_write(&mut self) -> std::io::Result<()> {
        self.shutdown(std::net::Shutdown::Write)
    }
}

/// A packet's header for the muxer to fill in: ops the guest may send on an
/// existing connection.
pub fn is_known_op(op: u16) -> bool {
    (OP_REQUEST..=OP_CREDIT_REQUEST).contains(&op)
}
